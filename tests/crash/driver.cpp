// The real-crash test: runs the workload (dtx_crash_workload) over one data directory again and
// again, killing it with SIGKILL each time, and checks that recovery leaves everything consistent.
//
//   dtx_crash_driver [--kills K] [--seed S] [--workload PATH] [--dir D] [--keep]
//                    [--check-every N] [--concurrency C] [--watchdog-ms MS] [--verbose]
//   dtx_crash_driver --check-only --dir D
//
// Each run of the workload ends in one of three ways, chosen at random:
//   - random:  the driver kills it (kill -9) a random few to tens of milliseconds after starting it;
//   - point:   it kills itself (raise(SIGKILL)) at the N-th occurrence of a named fault point,
//              the names cycling over every journal write and branch call of TCC, sagas and
//              recovery (crash_common.hpp);
//   - any:     it kills itself at its N-th fault point of any kind.
// Only a death by SIGKILL counts as a kill. Every --check-every kills, and at the end, the
// workload runs once more in --recover-only mode, and the driver checks, reading the SQLite files:
//   - the journal holds no unfinished transaction, and every confirmed one has branches at both
//     of its kind's participants;
//   - per gid and branch, the participants' ledgers hold exactly what the outcome requires
//     (TCC confirmed: try+confirm; cancelled: nothing, or try+cancel; saga confirmed: action;
//     cancelled: nothing, or action+compensate), and no ledger row lacks its journal branch;
//   - no handler ever ran twice or found the state inconsistent (`anomalies` empty, and no
//     "ANOMALY" in the workload's output);
//   - balances, stock and points equal what the confirmed transactions' payloads imply, money and
//     stock are conserved, nothing is frozen or reserved, no barrier row is unfinished.
// Prints one line at the end: "crash test: K kills (…), T transactions (…), invariants hold"
// ("random" counts every kill by the driver, including the watchdog's, when a target was not
// reached within --watchdog-ms). Exits non-zero with the violated invariants otherwise, keeping
// the data directory. Without --dir it works in a fresh directory under $TMPDIR (or /tmp),
// removed after a success unless --keep.

#include "crash_common.hpp"

#include <dtx/sqlite_db.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using namespace dtx::crash;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

struct settings {
    int kills = 200;
    std::uint64_t seed = 0;
    bool seed_given = false;
    fs::path workload;
    fs::path dir;
    bool keep = false;
    int check_every = 100;
    int concurrency = 16;
    int watchdog_ms = 3000;
    bool verbose = false;
    bool check_only = false;
    bool own_dir = false; // the driver chose the data directory (and removes it after a success)
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "dtx_crash_driver: " << why
              << "\nusage: dtx_crash_driver [--kills K] [--seed S] [--workload PATH] [--dir D] [--keep]"
                 " [--check-every N] [--concurrency C] [--watchdog-ms MS] [--verbose]\n"
                 "       dtx_crash_driver --check-only --dir D   (checks a kept data directory as it is)\n";
    std::exit(2);
}

long parse_long(std::string_view s, const char* what) {
    auto v = parse_number(s);
    if (!v) usage(std::string("bad number for ") + what + ": " + std::string(s));
    return *v;
}

settings parse(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= argc) usage(std::string(a) + " needs a value");
            return argv[++i];
        };
        if (a == "--kills")
            s.kills = static_cast<int>(parse_long(value(), "--kills"));
        else if (a == "--seed") {
            s.seed = static_cast<std::uint64_t>(parse_long(value(), "--seed"));
            s.seed_given = true;
        } else if (a == "--workload")
            s.workload = std::string(value());
        else if (a == "--dir")
            s.dir = std::string(value());
        else if (a == "--keep")
            s.keep = true;
        else if (a == "--check-every")
            s.check_every = static_cast<int>(parse_long(value(), "--check-every"));
        else if (a == "--concurrency")
            s.concurrency = static_cast<int>(parse_long(value(), "--concurrency"));
        else if (a == "--watchdog-ms")
            s.watchdog_ms = static_cast<int>(parse_long(value(), "--watchdog-ms"));
        else if (a == "--verbose")
            s.verbose = true;
        else if (a == "--check-only")
            s.check_only = true;
        else
            usage("unknown argument " + std::string(a));
    }
    if (s.kills < 1) usage("--kills must be at least 1");
    if (s.check_every < 1) usage("--check-every must be at least 1");
    if (!s.seed_given) s.seed = std::random_device{}() % 1'000'000'000u;
    if (s.workload.empty()) {
        // Next to this executable by default.
        s.workload = fs::read_symlink("/proc/self/exe").parent_path() / "dtx_crash_workload";
    }
    return s;
}

// ---- running the workload ---------------------------------------------------------------------

struct exit_status {
    bool killed = false; // died by SIGKILL
    int signal = 0;      // another signal
    int code = -1;       // exit code, if it exited
    bool timed_out = false;
};

std::string describe(const exit_status& e) {
    if (e.killed) return "killed by SIGKILL";
    if (e.signal) return "died of signal " + std::to_string(e.signal) + " (" + strsignal(e.signal) + ")";
    if (e.timed_out) return "did not finish in time";
    return "exited with code " + std::to_string(e.code);
}

class workload_process {
public:
    workload_process(const settings& s, const std::vector<std::string>& extra) {
        std::vector<std::string> args = {s.workload.string(), "--dir", s.dir.string(), "--concurrency",
                                         std::to_string(s.concurrency)};
        args.insert(args.end(), extra.begin(), extra.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);

        const std::string log = (s.dir / "workload.log").string();
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
        const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw std::runtime_error("cannot start " + args[0] + ": " + std::strerror(rc));
        started_ = steady::now();
    }
    workload_process(const workload_process&) = delete;
    workload_process& operator=(const workload_process&) = delete;
    ~workload_process() {
        if (!reaped_) {
            ::kill(pid_, SIGKILL);
            int st = 0;
            ::waitpid(pid_, &st, 0);
        }
    }

    /// Waits until the process ends or `until` passes; empty if it is still running.
    std::optional<exit_status> wait_until(steady::time_point until) {
        for (;;) {
            int st = 0;
            const pid_t r = ::waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                reaped_ = true;
                exit_status e;
                if (WIFSIGNALED(st)) {
                    e.killed = WTERMSIG(st) == SIGKILL;
                    if (!e.killed) e.signal = WTERMSIG(st);
                } else if (WIFEXITED(st)) {
                    e.code = WEXITSTATUS(st);
                }
                return e;
            }
            if (r < 0) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
            if (steady::now() >= until) return std::nullopt;
            std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    exit_status kill() {
        ::kill(pid_, SIGKILL);
        return *wait_until(steady::time_point::max());
    }

    steady::time_point started() const { return started_; }

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
    steady::time_point started_;
};

std::string tail(const fs::path& file, std::size_t lines) {
    std::ifstream in(file);
    std::vector<std::string> all;
    for (std::string l; std::getline(in, l);) all.push_back(std::move(l));
    std::string out;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
        out += "  | " + all[i] + "\n";
    return out;
}

// ---- reading what the processes left ------------------------------------------------------------

/// Opens a database for reading only (the workload is not running while the driver reads).
struct reader {
    dtx::sqlite::connection db;
    explicit reader(const fs::path& p) : db(p.string()) { db.exec("PRAGMA query_only = 1"); }
};

struct journal_branch {
    std::string participant;
    nlohmann::json payload;
};
struct journal_tx {
    std::string kind;
    std::string status;
    std::map<std::string, journal_branch> branches;
};

std::map<std::string, journal_tx> read_journal(const fs::path& dir) {
    reader r(dir / journal_file);
    std::map<std::string, journal_tx> out;
    auto& txs = r.db.prepare("SELECT gid, kind, status FROM dtx_transaction");
    txs.bind();
    while (txs.step())
        out[std::string(txs.text(0))] = journal_tx{std::string(txs.text(1)), std::string(txs.text(2)), {}};
    auto& brs = r.db.prepare("SELECT gid, branch_id, participant, payload FROM dtx_branch");
    brs.bind();
    while (brs.step()) {
        const std::string gid(brs.text(0));
        out[gid].branches[std::string(brs.text(1))] =
            journal_branch{std::string(brs.text(2)), nlohmann::json::parse(brs.text(3))};
    }
    return out;
}

struct ledger_entry {
    std::set<std::string> ops;
    std::set<std::string> participants;
};
using ledger = std::map<std::pair<std::string, std::string>, ledger_entry>;

/// The invariants, checked once the workload has recovered everything.
class checker {
public:
    explicit checker(fs::path dir) : dir_(std::move(dir)) {}

    struct summary {
        long transactions = 0, confirmed = 0, cancelled = 0;
        long tcc_confirmed = 0, tcc_cancelled = 0, saga_confirmed = 0, saga_cancelled = 0;
        long applied_rows = 0;
    };

    /// Returns the violations (empty: every invariant holds).
    std::vector<std::string> check(summary& sum) {
        const auto journal = read_journal(dir_);
        ledger led;
        for (const char* f : {accounts_file, stock_file, points_file}) read_ledger(f, led, sum);

        // Expected business state, from the confirmed transactions' payloads.
        std::vector<std::int64_t> balance(account_count, initial_balance);
        std::vector<std::int64_t> sold(sku_count, 0);
        std::vector<std::int64_t> points(customer_count, 0);

        for (const auto& [gid, tx] : journal) {
            ++sum.transactions;
            const bool tcc = tx.kind == "tcc";
            const bool confirmed = tx.status == "confirmed";
            if (confirmed) {
                ++sum.confirmed;
                ++(tcc ? sum.tcc_confirmed : sum.saga_confirmed);
            } else if (tx.status == "cancelled") {
                ++sum.cancelled;
                ++(tcc ? sum.tcc_cancelled : sum.saga_cancelled);
            } else {
                violation("gid " + gid + " (" + tx.kind + ") is unfinished: " + tx.status);
                continue;
            }
            if (std::string_view(gid).substr(0, tx.kind.size() + 1) != tx.kind + "-")
                violation("gid " + gid + " is journaled as " + tx.kind);
            if (confirmed) {
                // Every plan has both of its kind's participants; a confirmed transaction without one
                // was decided before its body had added every branch.
                std::set<std::string> who;
                for (const auto& [bid, b] : tx.branches) who.insert(b.participant);
                const std::set<std::string> need =
                    tcc ? std::set<std::string>{"accounts", "stock"} : std::set<std::string>{"points", "stock-saga"};
                if (!std::includes(who.begin(), who.end(), need.begin(), need.end()))
                    violation("gid " + gid + " (" + tx.kind + ") is confirmed with branches at " + join_names(who) +
                              " only");
            }
            const std::string first = tcc ? "try" : "action";
            const std::string second = tcc ? (confirmed ? "confirm" : "cancel") : "compensate";
            for (const auto& [bid, b] : tx.branches) {
                auto it = led.find({gid, bid});
                const std::set<std::string> none;
                const std::set<std::string>& ops = it == led.end() ? none : it->second.ops;
                const bool elsewhere = it != led.end() && (it->second.participants.size() != 1 ||
                                                            *it->second.participants.begin() != b.participant);
                if (elsewhere)
                    violation("gid " + gid + " branch " + bid + ": ledger rows in the wrong participant (journal: " +
                              b.participant + ")");
                std::set<std::string> want_a, want_b;
                if (confirmed) {
                    want_a = tcc ? std::set<std::string>{first, second} : std::set<std::string>{first};
                    want_b = want_a;
                } else {
                    want_a = {};
                    want_b = {first, second};
                }
                if (ops != want_a && ops != want_b)
                    violation("gid " + gid + " (" + tx.kind + ", " + tx.status + ") branch " + bid + " (" +
                              b.participant + "): participant executed " + join(ops) + ", expected " + join(want_a) +
                              (want_a != want_b ? " or " + join(want_b) : ""));
                if (confirmed) apply(gid, bid, b, balance, sold, points);
            }
        }
        for (const auto& [key, e] : led)
            if (auto it = journal.find(key.first); it == journal.end() || !it->second.branches.contains(key.second))
                violation("gid " + key.first + " branch " + key.second + ": executed " + join(e.ops) +
                          " but the journal has no such branch");

        check_accounts(balance);
        check_stock(sold);
        check_points(points);
        for (const char* f : {accounts_file, stock_file, points_file}) check_side_tables(f);
        check_log();
        return std::move(violations_);
    }

private:
    /// Operations in protocol order ("try+cancel"), or "nothing".
    static std::string join(const std::set<std::string>& s) {
        static const char* const order[] = {"try", "action", "confirm", "cancel", "compensate"};
        std::string out;
        for (const char* op : order)
            if (s.contains(op)) out += (out.empty() ? "" : "+") + std::string(op);
        for (const auto& x : s)
            if (std::find(std::begin(order), std::end(order), x) == std::end(order))
                out += (out.empty() ? "" : "+") + x;
        return out.empty() ? "nothing" : out;
    }

    static std::string join_names(const std::set<std::string>& s) {
        std::string out;
        for (const auto& x : s) out += (out.empty() ? "" : ", ") + x;
        return out.empty() ? "no participant" : out;
    }

    void violation(std::string v) {
        if (violations_.size() < 50) violations_.push_back(std::move(v));
        else if (violations_.size() == 50) violations_.push_back("(more violations not shown)");
    }

    void read_ledger(const char* file, ledger& led, summary& sum) {
        reader r(dir_ / file);
        auto& st = r.db.prepare("SELECT gid, branch_id, op, participant FROM applied");
        st.bind();
        while (st.step()) {
            auto& e = led[{std::string(st.text(0)), std::string(st.text(1))}];
            e.ops.insert(std::string(st.text(2)));
            e.participants.insert(std::string(st.text(3)));
            ++sum.applied_rows;
        }
    }

    void apply(const std::string& gid, const std::string& bid, const journal_branch& b,
               std::vector<std::int64_t>& balance, std::vector<std::int64_t>& sold, std::vector<std::int64_t>& points) {
        try {
            if (b.participant == "accounts") {
                auto t = b.payload.get<transfer>();
                balance.at(static_cast<std::size_t>(t.payer)) -= t.amount;
                balance.at(static_cast<std::size_t>(t.payee)) += t.amount;
            } else if (b.participant == "stock" || b.participant == "stock-saga") {
                auto i = b.payload.get<items>();
                sold.at(static_cast<std::size_t>(i.sku)) += i.qty;
            } else if (b.participant == "points") {
                auto a = b.payload.get<award>();
                points.at(static_cast<std::size_t>(a.customer)) += a.points;
            } else {
                violation("gid " + gid + " branch " + bid + ": unknown participant " + b.participant);
            }
        } catch (const std::exception& e) {
            violation("gid " + gid + " branch " + bid + ": unreadable payload: " + e.what());
        }
    }

    void check_accounts(const std::vector<std::int64_t>& expected) {
        reader r(dir_ / accounts_file);
        auto& st = r.db.prepare("SELECT id, balance, frozen FROM accounts ORDER BY id");
        st.bind();
        std::int64_t total = 0;
        int rows = 0;
        while (st.step()) {
            const auto id = st.integer(0), bal = st.integer(1), frozen = st.integer(2);
            total += bal + frozen;
            ++rows;
            const std::string name = "account " + std::to_string(id);
            if (frozen != 0) violation(name + ": " + std::to_string(frozen) + " left frozen");
            const bool known = id >= 0 && id < account_count;
            const std::int64_t want = known ? expected[static_cast<std::size_t>(id)] : -1;
            if (!known || bal != want)
                violation(name + ": balance " + std::to_string(bal) + ", the confirmed transfers give " +
                          (known ? std::to_string(want) : "nothing (unknown account)"));
        }
        if (rows != account_count) violation("accounts: " + std::to_string(rows) + " rows");
        if (total != initial_balance * account_count)
            violation("money is not conserved: " + std::to_string(total) + " instead of " +
                      std::to_string(initial_balance * account_count));
    }

    void check_stock(const std::vector<std::int64_t>& expected_sold) {
        reader r(dir_ / stock_file);
        auto& st = r.db.prepare("SELECT sku, available, reserved, sold FROM stock ORDER BY sku");
        st.bind();
        int rows = 0;
        while (st.step()) {
            const auto sku = st.integer(0), avail = st.integer(1), reserved = st.integer(2), sold = st.integer(3);
            ++rows;
            const std::string name = "sku " + std::to_string(sku);
            if (reserved != 0) violation(name + ": " + std::to_string(reserved) + " left reserved");
            if (avail + reserved + sold != initial_stock)
                violation(name + ": stock is not conserved: " + std::to_string(avail) + " available + " +
                          std::to_string(reserved) + " reserved + " + std::to_string(sold) + " sold");
            const bool known = sku >= 0 && sku < sku_count;
            const std::int64_t want = known ? expected_sold[static_cast<std::size_t>(sku)] : -1;
            if (!known || sold != want)
                violation(name + ": " + std::to_string(sold) + " sold, the confirmed orders give " +
                          (known ? std::to_string(want) : "nothing (unknown sku)"));
        }
        if (rows != sku_count) violation("stock: " + std::to_string(rows) + " rows");
    }

    void check_points(const std::vector<std::int64_t>& expected) {
        reader r(dir_ / points_file);
        auto& st = r.db.prepare("SELECT customer, total FROM points ORDER BY customer");
        st.bind();
        int rows = 0;
        while (st.step()) {
            const auto c = st.integer(0), total = st.integer(1);
            ++rows;
            const bool known = c >= 0 && c < customer_count;
            const std::int64_t want = known ? expected[static_cast<std::size_t>(c)] : -1;
            if (!known || total != want)
                violation("customer " + std::to_string(c) + ": " + std::to_string(total) +
                          " points, the confirmed sagas give " +
                          (known ? std::to_string(want) : "nothing (unknown customer)"));
        }
        if (rows != customer_count) violation("points: " + std::to_string(rows) + " rows");
    }

    void check_side_tables(const char* file) {
        reader r(dir_ / file);
        auto& an = r.db.prepare("SELECT gid, branch_id, op, what FROM anomalies");
        an.bind();
        while (an.step())
            violation(std::string(file) + ": gid " + std::string(an.text(0)) + " branch " + std::string(an.text(1)) +
                      " " + std::string(an.text(2)) + ": " + std::string(an.text(3)));
        auto& br = r.db.prepare("SELECT count(*) FROM dtx_barrier WHERE state <> 'done'");
        br.bind();
        if (br.step() && br.integer(0) != 0)
            violation(std::string(file) + ": " + std::to_string(br.integer(0)) + " barrier rows not done");
    }

    void check_log() {
        std::ifstream in(dir_ / "workload.log");
        for (std::string l; std::getline(in, l);)
            if (l.find("ANOMALY") != std::string::npos || l.find("constraint") != std::string::npos)
                violation("the workload reported: " + l);
    }

    fs::path dir_;
    std::vector<std::string> violations_;
};

// ---- the kill loop ----------------------------------------------------------------------------

struct fault_log {
    fs::path path;
    std::uintmax_t offset = 0;

    /// The lines appended since the last call.
    std::vector<std::string> fresh() {
        std::vector<std::string> out;
        std::ifstream in(path, std::ios::binary);
        if (!in) return out;
        in.seekg(static_cast<std::streamoff>(offset));
        for (std::string l; std::getline(in, l);) {
            offset += l.size() + 1;
            out.push_back(std::move(l));
        }
        return out;
    }
};

int run(const settings& s) {
    const auto t0 = steady::now();
    std::cout << "crash test: seed " << s.seed << ", " << s.kills << " kills, data in " << s.dir.string() << std::endl;
    fs::create_directories(s.dir);
    {
        dtx::sqlite::connection a((s.dir / accounts_file).string());
        init_accounts(a);
        dtx::sqlite::connection st((s.dir / stock_file).string());
        init_stock(st);
        dtx::sqlite::connection p((s.dir / points_file).string());
        init_points(p);
    }

    std::mt19937_64 rng(s.seed);
    auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const auto& targets = fault_targets();
    std::size_t next_target = 0;
    const fault_target* again = nullptr; // a recovery target to aim at again
    int again_tries = 0;
    bool force_run_kill = false;

    int kills = 0, random_kills = 0, watchdog_kills = 0, point_kills = 0, misses = 0, runs = 0, checks = 0;
    std::map<std::string, int> by_point;     // kills per fault point
    std::map<std::string, int> missed;       // targets not reached
    fault_log faults{s.dir / fault_log_file, 0};
    checker::summary sum;

    const auto fail = [&](const std::string& why) {
        std::cerr << "crash test FAILED (seed " << s.seed << ", after " << kills << " kills): " << why
                  << "\nlast workload output:\n"
                  << tail(s.dir / "workload.log", 30) << "data kept in " << s.dir.string() << std::endl;
        return 1;
    };

    const auto recover_and_check = [&]() -> std::optional<std::string> {
        ++checks;
        workload_process w(s, {"--seed", std::to_string(s.seed), "--recover-only"});
        auto e = w.wait_until(steady::now() + std::chrono::seconds(60));
        if (!e) return "the recover-only run did not finish within 60 s";
        if (e->killed || e->signal || e->code != 0) return "the recover-only run " + describe(*e);
        checker c(s.dir);
        sum = {};
        auto v = c.check(sum);
        if (v.empty()) return std::nullopt;
        std::string all = std::to_string(v.size()) + " invariant violation(s):";
        for (auto& x : v) all += "\n  " + x;
        return all;
    };

    while (kills < s.kills) {
        ++runs;
        const std::uint64_t wseed = s.seed * 1'000'003u + static_cast<std::uint64_t>(runs);
        std::vector<std::string> args = {"--seed", std::to_string(wseed)};
        enum class mode { random, point, any } m;
        const fault_target* t = nullptr;
        int delay_min_us = 2'000;
        if (force_run_kill) {
            // The last recovery target found nothing to recover: leave it something first.
            m = mode::random;
            delay_min_us = 20'000;
            force_run_kill = false;
        } else if (again) {
            m = mode::point;
            t = again;
            again = nullptr;
        } else {
            const int dice = uniform(0, 99);
            m = dice < 35 ? mode::random : dice < 80 ? mode::point : mode::any;
            if (m == mode::point) {
                t = &targets[next_target++ % targets.size()];
                again_tries = 0;
            }
        }
        std::string target;
        if (m == mode::point) {
            target = t->name;
            args.push_back("--fault");
            args.push_back(target + ":" + std::to_string(uniform(1, t->max_nth)));
        } else if (m == mode::any) {
            args.push_back("--fault-any");
            args.push_back(std::to_string(uniform(1, 400)));
        }

        workload_process w(s, args);
        std::optional<exit_status> e;
        bool by_driver = false;
        if (m == mode::random) {
            // A few to tens of milliseconds: in startup, recovery, or the middle of the run.
            e = w.wait_until(w.started() + std::chrono::microseconds(uniform(delay_min_us, 80'000)));
            if (!e) {
                e = w.kill();
                by_driver = true;
            }
        } else {
            e = w.wait_until(w.started() + std::chrono::milliseconds(s.watchdog_ms));
            if (!e) {
                e = w.kill();
                by_driver = true;
            }
        }

        const auto lines = faults.fresh();
        if (e->killed) {
            ++kills;
            if (!lines.empty()) {
                ++point_kills;
                const std::string name = lines.back().substr(0, lines.back().find(' '));
                ++by_point[name];
                if (s.verbose) std::cout << "  kill " << kills << " at " << lines.back() << std::endl;
            } else if (by_driver && m == mode::random) {
                ++random_kills;
                if (s.verbose) std::cout << "  kill " << kills << " at random" << std::endl;
            } else {
                ++watchdog_kills;
                ++missed[m == mode::point ? target : "any"];
                if (s.verbose) std::cout << "  kill " << kills << " by the watchdog (" << target << ")" << std::endl;
            }
        } else if (m == mode::point && e->code == exit_target_not_reached && target.starts_with("rec/")) {
            ++misses;
            if (s.verbose) std::cout << "  " << target << " not reached by recovery" << std::endl;
            if (++again_tries <= 3) {
                again = t; // after a kill that leaves something to recover
                force_run_kill = true;
            } else {
                ++missed[target];
            }
        } else {
            const std::string what = m == mode::random ? "random kill" : m == mode::point ? target : "any point";
            return fail("a workload run (" + what + ") " + describe(*e));
        }

        if (kills % s.check_every == 0 && kills > 0 && kills < s.kills && e->killed) {
            if (auto v = recover_and_check()) return fail(*v);
            const double secs = std::chrono::duration<double>(steady::now() - t0).count();
            std::cout << "  " << kills << " kills, " << sum.transactions << " transactions, invariants hold ("
                      << static_cast<int>(secs) << " s)" << std::endl;
        }
    }
    if (auto v = recover_and_check()) return fail(*v);

    const double secs = std::chrono::duration<double>(steady::now() - t0).count();
    std::cout << "kills at fault points:";
    for (const auto& [name, n] : by_point) std::cout << "\n  " << name << ": " << n;
    std::cout << "\ntargets not reached (no kill there, or the watchdog killed instead):";
    if (missed.empty()) std::cout << " none";
    for (const auto& [name, n] : missed) std::cout << "\n  " << name << ": " << n;
    std::cout << "\n" << runs << " runs (" << misses << " found nothing to recover), " << watchdog_kills
              << " watchdog kills, " << checks << " recover-and-check rounds, " << sum.applied_rows
              << " handler executions in the ledgers, " << static_cast<int>(secs) << " s\n";
    std::cout << "crash test: " << kills << " kills (" << random_kills + watchdog_kills << " random, " << point_kills
              << " at fault points), " << sum.transactions << " transactions (" << sum.confirmed << " confirmed, "
              << sum.cancelled << " cancelled; TCC " << sum.tcc_confirmed << "/" << sum.tcc_cancelled << ", sagas "
              << sum.saga_confirmed << "/" << sum.saga_cancelled << "), invariants hold" << std::endl;
    if (s.own_dir && !s.keep) {
        std::error_code ec;
        fs::remove_all(s.dir, ec);
    }
    return 0;
}

} // namespace

/// Checks a kept data directory as it is (after a failure, or by hand).
int check_only(const settings& s) {
    checker c(s.dir);
    checker::summary sum;
    const auto v = c.check(sum);
    for (const auto& x : v) std::cout << "  " << x << "\n";
    std::cout << sum.transactions << " transactions (" << sum.confirmed << " confirmed, " << sum.cancelled
              << " cancelled), " << (v.empty() ? "invariants hold" : std::to_string(v.size()) + " violation(s)")
              << std::endl;
    return v.empty() ? 0 : 1;
}

int main(int argc, char** argv) {
    settings s = parse(argc, argv);
    if (s.check_only) {
        if (s.dir.empty()) usage("--check-only needs --dir");
        try {
            return check_only(s);
        } catch (const std::exception& e) {
            std::cerr << "dtx_crash_driver: " << e.what() << std::endl;
            return 1;
        }
    }
    s.own_dir = s.dir.empty();
    if (s.own_dir)
        s.dir = fs::temp_directory_path() / ("dtx-crash-" + std::to_string(::getpid()) + "-" + std::to_string(s.seed));
    if (fs::exists(s.dir) && !fs::is_empty(s.dir)) usage(s.dir.string() + " is not empty");
    if (!fs::exists(s.workload)) usage("no workload executable at " + s.workload.string() + " (give --workload)");
    try {
        return run(s);
    } catch (const std::exception& e) {
        std::cerr << "crash test FAILED: " << e.what() << " (data kept in " << s.dir.string() << ")" << std::endl;
        return 1;
    }
}
