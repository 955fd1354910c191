// The PostgreSQL real-crash test: three coordinator processes (dtx_crash_postgres_workload) share
// one PostgreSQL journal and the participants' databases on one server, while this driver kills
// some of them with SIGKILL again and again and starts them again; the survivors' background
// recovery takes over a dead process's transactions once its leases have expired. At the end it
// checks that every transaction still ended exactly once.
//
//   dtx_crash_postgres_driver [--kills K] [--seed S] [--workload PATH] [--dir D] [--keep]
//                             [--processes P] [--concurrency C] [--check-every N]
//                             [--watchdog-ms MS] [--server CONNINFO] [--verbose]
//
// Without --server it starts a throwaway server (tests/support/pg_server.sh) and removes it
// afterwards; with --server ("host=127.0.0.1 port=5432 user=dtx") it creates the databases named
// in crash_common.hpp there (they must not exist) and leaves them for inspection.
//
// Each process starts with a way to die, chosen at random: the driver kills it at a random moment
// (every few hundred milliseconds it kills one process, sometimes two, never all), or it kills
// itself at the N-th occurrence of a named fault point (cycling over every journal write and branch
// call of TCC, sagas and recovery, crash_common.hpp) or at its N-th fault point of any kind. A
// killed process is started again after up to 300 ms. Every --check-every kills and at the end,
// the driver kills whatever still runs, starts P processes that only recover, waits until the
// journal holds nothing unfinished, stops them with SIGTERM, and checks:
//   - the invariants of invariants.hpp (outcomes, ledgers, no operation twice, conservation);
//   - from a trigger-fed history of every change to a transaction's status and lease: the status
//     only ever moves along the state machine (so nothing ends twice or is reopened), and a
//     transaction passes from one coordinator to another only once the first one's lease has
//     expired (so no two processes hold it at once).
// Prints one line at the end: "crash test (PostgreSQL, P processes): K kills (…), T transactions
// (…), N taken over by another process, invariants hold". Exits non-zero with the violated
// invariants otherwise, keeping the data directory (workload logs, fault logs).

#include <dtx/postgres/connection.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../support/pg_server.hpp"
#include "child_process.hpp"
#include "crash_common.hpp"
#include "invariants.hpp"
#include <unistd.h>

namespace {

using namespace dtx::crash;
namespace fs = std::filesystem;
using std::chrono::milliseconds;

struct settings : driver_settings {
    int processes = 3;
    std::string server;

    settings() {
        kills = 40;
        concurrency = 8;
        check_every = 0; // 0: only at the end
        watchdog_ms = 2000;
    }
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "dtx_crash_postgres_driver: " << why
              << "\nusage: dtx_crash_postgres_driver [--kills K] [--seed S] [--workload PATH] "
                 "[--dir D] [--keep]"
                 " [--processes P] [--concurrency C] [--check-every N] [--watchdog-ms MS] "
                 "[--server CONNINFO]"
                 " [--verbose]\n";
    std::exit(2);
}

settings parse(int argc, char** argv) {
    settings s;
    command_line cl(argc, argv, usage);
    auto options = s.options();
    options.push_back(value_option("--processes", s.processes));
    options.push_back(value_option("--server", s.server));
    parse_options(cl, options);
    cl.require(s.processes >= 2, "--processes must be at least 2 (one survives each kill)");
    cl.require(s.check_every >= 0, "--check-every must not be negative");
    cl.require(s.kills >= 1, "--kills must be at least 1");
    s.finish("dtx_crash_postgres_workload");
    return s;
}

// ---- the databases ----------------------------------------------------------------------------

std::string database(const settings& s, int which) {
    return pg_conninfo(s.server, pg_databases[which]);
}

/// Runs statements in one local transaction.
void run_all(dtx::postgres::connection& db, const std::vector<std::string>& statements) {
    db.exec("BEGIN");
    for (const auto& sql : statements)
        db.exec(sql.c_str());
    db.exec("COMMIT");
}

/// Every change to a transaction's status or lease, with the server's time, in the order the
/// changes to that row committed (they hold its row lock).
const std::vector<std::string> history_schema = {
    "CREATE TABLE lease_history (seq bigserial PRIMARY KEY, gid text NOT NULL, at_ms bigint NOT "
    "NULL, "
    "old_status text, new_status text NOT NULL, old_owner text, new_owner text, old_until bigint, "
    "new_until bigint NOT NULL)",
    R"sql(CREATE FUNCTION record_lease_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status OR NEW.lease_owner IS DISTINCT FROM OLD.lease_owner
       OR NEW.lease_until_ms IS DISTINCT FROM OLD.lease_until_ms THEN
        INSERT INTO lease_history (gid, at_ms, old_status, new_status, old_owner, new_owner, old_until, new_until)
        VALUES (NEW.gid, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
                CASE WHEN TG_OP = 'UPDATE' THEN OLD.lease_owner END, NEW.lease_owner,
                CASE WHEN TG_OP = 'UPDATE' THEN OLD.lease_until_ms END, NEW.lease_until_ms);
    END IF;
    RETURN NULL;
END $$)sql",
    "CREATE TRIGGER lease_history AFTER INSERT OR UPDATE ON dtx_transaction FOR EACH ROW "
    "EXECUTE FUNCTION record_lease_history()",
};

snapshot read_snapshot(const settings& s) {
    snapshot out;
    {
        dtx::postgres::connection db(database(s, 0));
        auto txs = db.exec("SELECT gid, kind, status FROM dtx_transaction");
        for (int i = 0; i < txs.rows(); ++i)
            out.journal[std::string(txs.text(i, 0))] =
                journal_tx{std::string(txs.text(i, 1)), std::string(txs.text(i, 2)), {}};
        auto brs = db.exec("SELECT gid, branch_id, participant, payload::text FROM dtx_branch");
        for (int i = 0; i < brs.rows(); ++i)
            out.journal[std::string(brs.text(i, 0))].branches[std::string(brs.text(i, 1))] =
                journal_branch{std::string(brs.text(i, 2)), nlohmann::json::parse(brs.text(i, 3))};
    }
    for (int which = 1; which <= 3; ++which) {
        const std::string name = pg_databases[which];
        dtx::postgres::connection db(database(s, which));
        auto led = db.exec("SELECT gid, branch_id, op, participant FROM applied");
        for (int i = 0; i < led.rows(); ++i)
            out.add_ledger_row(std::string(led.text(i, 0)), std::string(led.text(i, 1)),
                               std::string(led.text(i, 2)), std::string(led.text(i, 3)));
        auto an = db.exec("SELECT gid, branch_id, op, what FROM anomalies");
        for (int i = 0; i < an.rows(); ++i)
            out.problems.push_back(name + ": gid " + std::string(an.text(i, 0)) + " branch " +
                                   std::string(an.text(i, 1)) + " " + std::string(an.text(i, 2)) +
                                   ": " + std::string(an.text(i, 3)));
        auto br = db.exec("SELECT count(*) FROM dtx_barrier WHERE state <> 'done'");
        if (br.text(0, 0) != "0")
            out.problems.push_back(name + ": " + std::string(br.text(0, 0)) +
                                   " barrier rows not done");
        const auto number = [](const dtx::postgres::connection::result& r, int row, int col) {
            return std::stoll(std::string(r.text(row, col)));
        };
        if (which == 1) {
            auto r = db.exec("SELECT id, balance, frozen FROM accounts ORDER BY id");
            for (int i = 0; i < r.rows(); ++i)
                out.accounts.push_back({number(r, i, 0), number(r, i, 1), number(r, i, 2)});
        } else if (which == 2) {
            auto r = db.exec("SELECT sku, available, reserved, sold FROM stock ORDER BY sku");
            for (int i = 0; i < r.rows(); ++i)
                out.stock.push_back(
                    {number(r, i, 0), number(r, i, 1), number(r, i, 2), number(r, i, 3)});
        } else {
            auto r = db.exec("SELECT customer, total FROM points ORDER BY customer");
            for (int i = 0; i < r.rows(); ++i)
                out.points.push_back({number(r, i, 0), number(r, i, 1)});
        }
    }
    return out;
}

struct history_summary {
    long changes = 0;
    long moved = 0; // transactions held by more than one coordinator over their life
};

/// The status and lease history (see the top of this file).
void check_history(const settings& s, violations& v, history_summary& sum) {
    static const std::set<std::pair<std::string, std::string>> allowed = {
        {"trying", "confirming"},    {"trying", "confirmed"},     {"trying", "cancelling"},
        {"confirming", "confirmed"}, {"cancelling", "cancelled"},
    };
    dtx::postgres::connection db(database(s, 0));
    auto r = db.exec(
        "SELECT gid, at_ms, coalesce(old_status, ''), new_status, coalesce(old_owner, ''), "
        "coalesce(new_owner, ''), coalesce(old_until, 0) FROM lease_history ORDER BY gid, seq");
    sum.changes = r.rows();
    std::string gid;
    std::set<std::string> owners;
    for (int i = 0; i < r.rows(); ++i) {
        if (r.text(i, 0) != gid) {
            sum.moved += owners.size() > 1;
            gid = std::string(r.text(i, 0));
            owners.clear();
        }
        const std::string at(r.text(i, 1)), from(r.text(i, 2)), to(r.text(i, 3)),
            old_owner(r.text(i, 4)), new_owner(r.text(i, 5)), old_until(r.text(i, 6));
        if (!new_owner.empty())
            owners.insert(new_owner);
        if (from.empty() ? to != "trying" : from != to && !allowed.contains({from, to}))
            v.add("gid " + gid + ": status went from " + (from.empty() ? "nothing" : from) +
                  " to " + to);
        if (!old_owner.empty() && new_owner != old_owner && std::stoll(old_until) > std::stoll(at))
            v.add("gid " + gid + ": " + new_owner + " took it over at " + at + " ms while " +
                  old_owner + "'s lease ran until " + old_until + " ms");
    }
    sum.moved += owners.size() > 1;
}

long unfinished(const settings& s) {
    dtx::postgres::connection db(database(s, 0));
    return std::stol(std::string(
        db.exec("SELECT count(*) FROM dtx_transaction WHERE ended_ms IS NULL").text(0, 0)));
}

// ---- the processes ----------------------------------------------------------------------------

/// One coordinator process's place: the process running in it now, if any, and how it is to die.
struct slot {
    int index = 0;
    std::unique_ptr<child_process> proc;
    std::string target;                                       // "random", a fault point, or "any"
    std::optional<dtx::crash::steady::time_point> restart_at; // when a killed process comes back
    fault_log faults;
};

struct tally {
    int kills = 0, random = 0, at_points = 0, watchdog = 0, double_kills = 0, starts = 0,
        checks = 0;
    std::map<std::string, int> by_point;
    std::map<std::string, int> missed;
    check_summary sum;
    history_summary history;
};

class run {
public:
    explicit run(const settings& s)
        : s_(s)
        , rng_(s.seed) {
        for (int i = 0; i < s.processes; ++i) {
            slots_.push_back(
                slot{i, nullptr, {}, std::nullopt, fault_log{s.dir / fault_file(i), 0}});
        }
    }

    /// The kill loop and the checks; returns the process exit code.
    int go() {
        const auto t0 = steady::now();
        for (auto& sl : slots_)
            start(sl, false);
        auto next_kill = steady::now() + milliseconds(uniform(150, 700));
        int next_check = s_.check_every;
        while (t_.kills < s_.kills) {
            const auto now = steady::now();
            for (auto& sl : slots_) {
                if (sl.proc) {
                    if (auto e = sl.proc->poll()) {
                        if (!e->killed)
                            return fail("process " + std::to_string(sl.index) + " " + describe(*e));
                        const auto lines = sl.faults.fresh();
                        if (lines.empty())
                            return fail("process " + std::to_string(sl.index) +
                                        " was killed by someone else");
                        ++t_.at_points;
                        ++t_.by_point[lines.back().substr(0, lines.back().find(' '))];
                        died(sl, "at " + lines.back());
                    } else if (sl.target != "random" &&
                               now - sl.proc->started() > milliseconds(s_.watchdog_ms)) {
                        sl.proc->kill();
                        ++t_.watchdog;
                        ++t_.missed[sl.target];
                        died(sl, "by the watchdog (" + sl.target + ")");
                    }
                } else if (sl.restart_at && now >= *sl.restart_at) {
                    start(sl, false);
                }
            }
            if (now >= next_kill) {
                random_kills();
                next_kill = now + milliseconds(uniform(150, 700));
            }
            if (next_check > 0 && t_.kills >= next_check && t_.kills < s_.kills) {
                next_check += s_.check_every;
                if (auto v = drain_and_check())
                    return fail(*v);
                const double secs = std::chrono::duration<double>(steady::now() - t0).count();
                std::cout << "  " << t_.kills << " kills, " << t_.sum.transactions
                          << " transactions, invariants hold (" << static_cast<int>(secs) << " s)"
                          << std::endl;
                for (auto& sl : slots_)
                    start(sl, false);
            }
            std::this_thread::sleep_for(milliseconds(2));
        }
        if (auto v = drain_and_check())
            return fail(*v);

        const double secs = std::chrono::duration<double>(steady::now() - t0).count();
        std::cout << "kills at fault points:";
        for (const auto& [name, n] : t_.by_point)
            std::cout << "\n  " << name << ": " << n;
        std::cout << "\ntargets not reached (the watchdog killed instead):";
        if (t_.missed.empty())
            std::cout << " none";
        for (const auto& [name, n] : t_.missed)
            std::cout << "\n  " << name << ": " << n;
        std::cout << "\n"
                  << t_.starts << " process starts, " << t_.double_kills
                  << " times two processes killed at once, " << t_.checks
                  << " drain-and-check rounds, " << t_.sum.ledger_rows
                  << " handler executions in the ledgers, " << t_.history.changes
                  << " status and lease changes, " << static_cast<int>(secs) << " s\n";
        std::cout << "crash test (PostgreSQL, " << s_.processes << " processes): " << t_.kills
                  << " kills (" << t_.random + t_.watchdog << " random, " << t_.at_points
                  << " at fault points), " << t_.sum.transactions << " transactions ("
                  << t_.sum.confirmed << " confirmed, " << t_.sum.cancelled << " cancelled; TCC "
                  << t_.sum.tcc_confirmed << "/" << t_.sum.tcc_cancelled << ", sagas "
                  << t_.sum.saga_confirmed << "/" << t_.sum.saga_cancelled << "), "
                  << t_.history.moved << " taken over by another process, invariants hold"
                  << std::endl;
        return 0;
    }

private:
    static std::string fault_file(int i) { return "faults-" + std::to_string(i) + ".log"; }
    static std::string log_file(int i) { return "workload-" + std::to_string(i) + ".log"; }

    int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

    void start(slot& sl, bool drain) {
        ++t_.starts;
        std::vector<std::string> args = {
            s_.workload.string(),
            "--server",
            s_.server,
            "--dir",
            s_.dir.string(),
            "--slot",
            std::to_string(sl.index),
            "--seed",
            std::to_string(s_.seed * 1'000'003u + static_cast<std::uint64_t>(t_.starts)),
            "--concurrency",
            std::to_string(s_.concurrency)};
        sl.target = "random";
        if (drain) {
            args.push_back("--drain");
        } else if (const int dice = uniform(0, 99); dice >= 40) {
            if (dice < 80) {
                const auto& t = fault_targets()[next_target_++ % fault_targets().size()];
                sl.target = t.name;
                args.push_back("--fault");
                args.push_back(sl.target + ":" + std::to_string(uniform(1, t.max_nth)));
            } else {
                sl.target = "any";
                args.push_back("--fault-any");
                args.push_back(std::to_string(uniform(1, 400)));
            }
        }
        sl.proc = std::make_unique<child_process>(std::move(args), s_.dir / log_file(sl.index));
        sl.restart_at.reset();
    }

    void died(slot& sl, const std::string& how) {
        ++t_.kills;
        if (s_.verbose)
            std::cout << "  kill " << t_.kills << ": process " << sl.index << " " << how
                      << std::endl;
        sl.proc.reset();
        sl.restart_at = steady::now() + milliseconds(uniform(0, 300));
    }

    /// Kills one running process at random, sometimes two; never every process.
    void random_kills() {
        std::vector<slot*> running;
        for (auto& sl : slots_)
            if (sl.proc)
                running.push_back(&sl);
        const std::size_t n = running.size() > 2 && uniform(0, 99) < 25 ? 2
                              : running.size() > 1                      ? 1
                                                                        : 0;
        std::shuffle(running.begin(), running.end(), rng_);
        if (n == 2)
            ++t_.double_kills;
        for (std::size_t i = 0; i < n; ++i) {
            slot& sl = *running[i];
            const auto e = sl.proc->kill();
            const auto lines = sl.faults.fresh(); // it may have reached its fault point meanwhile
            if (!lines.empty()) {
                ++t_.at_points;
                ++t_.by_point[lines.back().substr(0, lines.back().find(' '))];
            } else if (e.killed) {
                ++t_.random;
            }
            if (!e.killed && (e.signal || e.code != 0)) {
                std::cerr << "process " << sl.index << " " << describe(e)
                          << " before the driver killed it" << std::endl;
                failed_early_ = true;
            }
            died(sl, "at random");
        }
    }

    /// Kills every process, lets `processes` recovery-only processes finish everything, stops
    /// them and checks; the violations, if any.
    std::optional<std::string> drain_and_check() {
        if (failed_early_)
            return "a process failed (see its log)";
        ++t_.checks;
        for (auto& sl : slots_)
            if (sl.proc) {
                sl.proc->kill();
                sl.faults.fresh();
                ++t_.kills;
                ++t_.random;
                sl.proc.reset();
            }
        for (auto& sl : slots_)
            start(sl, true);
        const auto until = steady::now() + std::chrono::seconds(120);
        while (unfinished(s_) > 0) {
            if (steady::now() > until)
                return "the journal still holds unfinished transactions after 120 s of recovery";
            for (auto& sl : slots_)
                if (auto e = sl.proc->poll())
                    return "a recovery-only process " + describe(*e);
            std::this_thread::sleep_for(milliseconds(50));
        }
        for (auto& sl : slots_)
            sl.proc->signal(SIGTERM);
        for (auto& sl : slots_) {
            auto e = sl.proc->wait_until(steady::now() + std::chrono::seconds(30));
            if (!e)
                return "a recovery-only process did not stop within 30 s of SIGTERM";
            if (e->killed || e->signal || e->code != 0)
                return "a recovery-only process " + describe(*e);
            sl.proc.reset();
        }
        violations v;
        t_.sum = {};
        checker(v).check(read_snapshot(s_), t_.sum);
        check_history(s_, v, t_.history);
        for (auto& sl : slots_)
            check_log(s_.dir / log_file(sl.index), v);
        if (v.empty())
            return std::nullopt;
        return v.report();
    }

    int fail(const std::string& why) {
        std::cerr << "crash test FAILED (seed " << s_.seed << ", after " << t_.kills
                  << " kills): " << why << "\n";
        for (auto& sl : slots_)
            std::cerr << "last output of process " << sl.index << ":\n"
                      << tail(s_.dir / log_file(sl.index), 15);
        std::cerr << "data kept in " << s_.dir.string() << std::endl;
        return 1;
    }

    const settings& s_;
    std::mt19937_64 rng_;
    std::vector<slot> slots_;
    std::size_t next_target_ = 0;
    bool failed_early_ = false;
    tally t_;
};

int run_test(settings& s) {
    std::optional<dtx::test::pg_server> server;
    if (s.server.empty()) {
        server.emplace();
        s.server =
            "host=127.0.0.1 port=" + std::to_string(server->port()) + " user=dtx connect_timeout=5";
    }
    std::cout << "crash test (PostgreSQL): seed " << s.seed << ", " << s.kills << " kills, "
              << s.processes << " processes, data in " << s.dir.string() << std::endl;
    fs::create_directories(s.dir);
    {
        dtx::postgres::connection admin(pg_conninfo(s.server, "postgres"));
        for (const char* name : pg_databases)
            admin.exec(("CREATE DATABASE " + std::string(name)).c_str());
    }
    for (int which = 1; which <= 3; ++which) {
        dtx::postgres::connection db(database(s, which));
        run_all(db, which == 1 ? accounts_schema() : which == 2 ? stock_schema() : points_schema());
    }
    {
        // The journal and barrier tables, as any workload creates them; then the history trigger.
        child_process setup(
            {s.workload.string(), "--server", s.server, "--dir", s.dir.string(), "--setup"},
            s.dir / "setup.log");
        const auto e = setup.wait_until(steady::time_point::max());
        if (e->killed || e->signal || e->code != 0)
            throw std::runtime_error("the setup run " + describe(*e) + ":\n" +
                                     tail(s.dir / "setup.log", 10));
        dtx::postgres::connection db(database(s, 0));
        run_all(db, history_schema);
    }
    const int rc = run(s).go();
    if (rc == 0 && s.own_dir && !s.keep) {
        std::error_code ec;
        fs::remove_all(s.dir, ec);
    }
    return rc;
}

} // namespace

int main(int argc, char** argv) {
    settings s = parse(argc, argv);
    s.own_dir = s.dir.empty();
    if (s.own_dir)
        s.dir = fs::temp_directory_path() /
                ("dtx-crash-pg-" + std::to_string(::getpid()) + "-" + std::to_string(s.seed));
    if (fs::exists(s.dir) && !fs::is_empty(s.dir))
        usage(s.dir.string() + " is not empty");
    if (!fs::exists(s.workload))
        usage("no workload executable at " + s.workload.string() + " (give --workload)");
    try {
        return run_test(s);
    } catch (const std::exception& e) {
        std::cerr << "crash test FAILED: " << e.what() << " (data kept in " << s.dir.string() << ")"
                  << std::endl;
        return 1;
    }
}
