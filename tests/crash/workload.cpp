// The crash-test workload: a coordinator over a SQLite journal and three participants that keep
// their state in SQLite databases of their own, behind barriers. It recovers whatever its previous
// life left, then runs transactions until it is killed (or has run --transactions of them).
//
//   dtx_crash_workload --dir D --seed S [--transactions M] [--concurrency C]
//                      [--fault POINT:N | --fault-any N] [--recover-only] [--print-points]
//
// --fault POINT:N kills the process with SIGKILL at the N-th time it reaches the named fault
// point (see crash_common.hpp); --fault-any N at the N-th fault point of any kind. Before dying it
// appends the point to faults.log, for the driver's tally. A recovery target ("rec/…") that the
// startup recovery does not reach ends the run with exit code 75 instead. --recover-only stops after
// the startup recovery; --print-points prints how often each point was reached (with
// --transactions, to tune the driver's targets).
//
// Every handler appends (gid, branch, op) to its database's `applied` ledger in the same local
// transaction as its business change; a second execution of the same operation is recorded in
// `anomalies` (the driver fails on any).

#include "crash_common.hpp"

#include <dtx/coordinator.hpp>
#include <dtx/sqlite_barrier.hpp>
#include <dtx/sqlite_journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

using namespace dtx;
using namespace dtx::crash;
using namespace std::chrono_literals;

struct settings {
    std::filesystem::path dir;
    std::uint64_t seed = 1;
    long transactions = -1; // < 0: until killed
    int concurrency = 16;
    std::string fault_point;  // empty: none
    long fault_nth = 0;
    long fault_any = 0;       // 0: none
    bool recover_only = false;
    bool print_points = false;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "dtx_crash_workload: " << why
              << "\nusage: dtx_crash_workload --dir D --seed S [--transactions M] [--concurrency C]"
                 " [--fault POINT:N | --fault-any N] [--recover-only] [--print-points]\n";
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
        if (a == "--dir")
            s.dir = std::string(value());
        else if (a == "--seed")
            s.seed = static_cast<std::uint64_t>(parse_long(value(), "--seed"));
        else if (a == "--transactions")
            s.transactions = parse_long(value(), "--transactions");
        else if (a == "--concurrency")
            s.concurrency = static_cast<int>(parse_long(value(), "--concurrency"));
        else if (a == "--fault") {
            std::string_view v = value();
            auto colon = v.rfind(':');
            if (colon == std::string_view::npos) usage("--fault wants POINT:N");
            s.fault_point = std::string(v.substr(0, colon));
            s.fault_nth = parse_long(v.substr(colon + 1), "--fault");
        } else if (a == "--fault-any")
            s.fault_any = parse_long(value(), "--fault-any");
        else if (a == "--recover-only")
            s.recover_only = true;
        else if (a == "--print-points")
            s.print_points = true;
        else
            usage("unknown argument " + std::string(a));
    }
    if (s.dir.empty()) usage("--dir is required");
    if (s.concurrency < 1) usage("--concurrency must be at least 1");
    return s;
}

// ---- fault points -----------------------------------------------------------------------------

/// Names fault points, counts them, and kills the process at the chosen one.
class fault_killer {
public:
    fault_killer(const settings& s, const std::unordered_set<std::string>& live) : s_(s), live_(live) {
        const auto path = (s.dir / fault_log_file).string();
        log_fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    }
    ~fault_killer() { ::close(log_fd_); }
    fault_killer(const fault_killer&) = delete;
    fault_killer& operator=(const fault_killer&) = delete;

    /// The hook (runs on the coordinator's thread). Never returns true: it kills instead.
    bool operator()(const fault_point& p) {
        const std::string name = name_of(p);
        ++any_;
        const long nth = ++counts_[name];
        if (s_.fault_any > 0 && any_ == s_.fault_any) die(name, any_, p);
        if (!s_.fault_point.empty() && nth == s_.fault_nth && name == s_.fault_point) die(name, nth, p);
        return false;
    }

    /// How often each point was reached, one "name count" per line (for tuning the driver).
    std::string counts() const {
        std::map<std::string, long> sorted(counts_.begin(), counts_.end());
        std::string out;
        for (const auto& [name, n] : sorted) out += "  " + name + " " + std::to_string(n) + "\n";
        return out;
    }

    /// Whether the target is a recovery point that can still be reached by startup recovery only.
    bool recovery_target() const { return s_.fault_point.starts_with("rec/"); }

private:
    std::string name_of(const fault_point& p) const {
        std::string name;
        const bool live = p.what != "claim" && live_.contains(std::string(p.gid));
        name += live ? "tx/" : "rec/";
        name += p.what == "claim" ? "any" : kind_of_gid(p.gid);
        name += '/';
        if (p.site == fault_site::branch_call) {
            name += "call-";
            name += to_string(p.op);
        } else {
            name += p.what;
            if (p.what == "decide" || p.what == "end" || p.what == "done") {
                name += '-';
                name += to_string(p.op);
            }
        }
        return name;
    }

    [[noreturn]] void die(const std::string& name, long nth, const fault_point& p) {
        std::string line = name + " " + std::to_string(nth) + " " + std::string(p.gid) + " " +
                           std::string(p.branch_id) + "\n";
        // A plain write(2): it reaches the file (the page cache) even though the process dies next.
        [[maybe_unused]] auto n = ::write(log_fd_, line.data(), line.size());
        ::raise(SIGKILL);
        std::abort(); // not reached
    }

    const settings& s_;
    const std::unordered_set<std::string>& live_;
    int log_fd_ = -1;
    long any_ = 0;
    std::unordered_map<std::string, long> counts_;
};

// ---- participants -----------------------------------------------------------------------------

/// Phase-2 attempts per (gid, branch, op) in this process, for chaos::fail_first. Each barrier's
/// handlers run on that barrier's database thread only, so one counter set per participant
/// database needs no lock.
class attempt_counter {
public:
    int next(const branch_request& r) {
        std::string key(r.gid);
        key += '/';
        key += r.branch_id;
        key += '/';
        key += to_string(r.op);
        return ++counts_[key];
    }

private:
    std::unordered_map<std::string, int> counts_;
};

/// Records something a handler found wrong, in the same local transaction.
void anomaly(sqlite::connection& db, const branch_request& r, const std::string& what) {
    std::cerr << "ANOMALY " << db.path() << ": gid " << r.gid << " branch " << r.branch_id << " "
              << to_string(r.op) << ": " << what << std::endl;
    db.prepare("INSERT INTO anomalies (gid, branch_id, op, what) VALUES (?, ?, ?, ?)")
        .bind(r.gid, r.branch_id, to_string(r.op), what)
        .run();
}

bool ledger_has(sqlite::connection& db, const branch_request& r, branch_op op) {
    auto& st = db.prepare("SELECT 1 FROM applied WHERE gid = ? AND branch_id = ? AND op = ?");
    st.bind(r.gid, r.branch_id, to_string(op));
    const bool found = st.step();
    st.bind(); // reset: no statement stays open in the savepoint
    return found;
}

/// Wraps a business handler: transient chaos, the ledger row (a second execution is an anomaly),
/// the protocol preconditions, and any constraint failure turned into an anomaly.
template <class T, class F>
local_handler ledgered(std::string participant, std::shared_ptr<attempt_counter> attempts, F business) {
    return typed_local<T>([participant = std::move(participant), attempts = std::move(attempts),
                           business = std::move(business)](sqlite::connection& db, const branch_request& r,
                                                           T p) -> outcome {
        const bool first_phase = r.op == branch_op::try_ || r.op == branch_op::action;
        if (!first_phase && p.c.fail_first > 0 && attempts->next(r) <= p.c.fail_first)
            throw std::runtime_error("transient failure (chaos)");
        db.prepare("INSERT OR IGNORE INTO applied (gid, branch_id, op, participant) VALUES (?, ?, ?, ?)")
            .bind(r.gid, r.branch_id, to_string(r.op), participant)
            .run();
        if (db.changes() == 0) {
            anomaly(db, r, "executed twice");
            return success();
        }
        const branch_op first = r.kind() == tx_kind::tcc ? branch_op::try_ : branch_op::action;
        if (!first_phase && !ledger_has(db, r, first)) {
            anomaly(db, r, std::string(to_string(r.op)) + " without a " + std::string(to_string(first)));
            return success();
        }
        if (r.op == branch_op::confirm && ledger_has(db, r, branch_op::cancel)) anomaly(db, r, "confirm after cancel");
        if (r.op == branch_op::cancel && ledger_has(db, r, branch_op::confirm)) anomaly(db, r, "cancel after confirm");
        try {
            outcome o = business(db, r, p);
            if (o.is_success() && first_phase && p.c.try_throws)
                throw std::runtime_error(std::string(to_string(r.op)) + " lost its answer (chaos)");
            return o;
        } catch (const dtx::error& e) {
            if (std::string_view(e.what()).find("constraint") == std::string_view::npos) throw;
            anomaly(db, r, std::string("constraint failed: ") + e.what());
            return success();
        }
    });
}

/// Runs a statement that must change exactly one row; if it changes none, the handler found the
/// state inconsistent with the protocol (less frozen than the transfer, say): an anomaly.
template <class... Args>
void must_change(sqlite::connection& db, const branch_request& r, const char* what, std::string_view sql,
                 const Args&... args) {
    db.prepare(sql).bind(args...).run();
    if (db.changes() != 1) anomaly(db, r, what);
}

// accounts (TCC): try freezes the amount in the payer's account, confirm pays it to the payee,
// cancel unfreezes it.

outcome freeze(sqlite::connection& db, const branch_request&, transfer t) {
    db.prepare("UPDATE accounts SET balance = balance - ?1, frozen = frozen + ?1 "
               "WHERE id = ?2 AND balance >= ?1")
        .bind(t.amount, t.payer)
        .run();
    if (db.changes() != 1) return failure("insufficient funds in account " + std::to_string(t.payer));
    return success();
}

outcome pay(sqlite::connection& db, const branch_request& r, transfer t) {
    must_change(db, r, "confirm found less frozen than the transfer",
                "UPDATE accounts SET frozen = frozen - ?1 WHERE id = ?2 AND frozen >= ?1", t.amount, t.payer);
    must_change(db, r, "confirm found no payee", "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
                t.amount, t.payee);
    return success();
}

outcome unfreeze(sqlite::connection& db, const branch_request& r, transfer t) {
    must_change(db, r, "cancel found less frozen than the transfer",
                "UPDATE accounts SET frozen = frozen - ?1, balance = balance + ?1 WHERE id = ?2 AND frozen >= ?1",
                t.amount, t.payer);
    return success();
}

// stock (TCC): try reserves, confirm sells the reservation, cancel releases it.

outcome reserve(sqlite::connection& db, const branch_request&, items it) {
    db.prepare("UPDATE stock SET available = available - ?1, reserved = reserved + ?1 "
               "WHERE sku = ?2 AND available >= ?1")
        .bind(it.qty, it.sku)
        .run();
    if (db.changes() != 1) return failure("not enough of sku " + std::to_string(it.sku));
    return success();
}

outcome sell_reserved(sqlite::connection& db, const branch_request& r, items it) {
    must_change(db, r, "confirm found less reserved than the order",
                "UPDATE stock SET reserved = reserved - ?1, sold = sold + ?1 WHERE sku = ?2 AND reserved >= ?1",
                it.qty, it.sku);
    return success();
}

outcome release(sqlite::connection& db, const branch_request& r, items it) {
    must_change(db, r, "cancel found less reserved than the order",
                "UPDATE stock SET reserved = reserved - ?1, available = available + ?1 "
                "WHERE sku = ?2 AND reserved >= ?1",
                it.qty, it.sku);
    return success();
}

// stock-saga (saga, same database): the action sells at once, compensation takes the goods back.

outcome sell(sqlite::connection& db, const branch_request&, items it) {
    db.prepare("UPDATE stock SET available = available - ?1, sold = sold + ?1 WHERE sku = ?2 AND available >= ?1")
        .bind(it.qty, it.sku)
        .run();
    if (db.changes() != 1) return failure("not enough of sku " + std::to_string(it.sku));
    return success();
}

outcome take_back(sqlite::connection& db, const branch_request& r, items it) {
    must_change(db, r, "compensate found less sold than the order",
                "UPDATE stock SET sold = sold - ?1, available = available + ?1 WHERE sku = ?2 AND sold >= ?1", it.qty,
                it.sku);
    return success();
}

// points (saga): the action awards points (refusing awards over the limit), compensation takes
// them back.

outcome grant(sqlite::connection& db, const branch_request&, award a) {
    if (a.points > max_award)
        return failure("an award of " + std::to_string(a.points) + " points is over the limit");
    db.prepare("UPDATE points SET total = total + ?1 WHERE customer = ?2").bind(a.points, a.customer).run();
    if (db.changes() != 1) return failure("no customer " + std::to_string(a.customer));
    return success();
}

outcome revoke(sqlite::connection& db, const branch_request& r, award a) {
    must_change(db, r, "compensate found fewer points than the award",
                "UPDATE points SET total = total - ?1 WHERE customer = ?2 AND total >= ?1", a.points, a.customer);
    return success();
}

local_tcc_handlers accounts_handlers() {
    auto attempts = std::make_shared<attempt_counter>();
    return {
        .on_try = ledgered<transfer>("accounts", attempts, freeze),
        .on_confirm = ledgered<transfer>("accounts", attempts, pay),
        .on_cancel = ledgered<transfer>("accounts", attempts, unfreeze),
    };
}

local_tcc_handlers stock_handlers(std::shared_ptr<attempt_counter> attempts) {
    return {
        .on_try = ledgered<items>("stock", attempts, reserve),
        .on_confirm = ledgered<items>("stock", attempts, sell_reserved),
        .on_cancel = ledgered<items>("stock", attempts, release),
    };
}

local_saga_handlers stock_saga_handlers(std::shared_ptr<attempt_counter> attempts) {
    return {
        .on_action = ledgered<items>("stock-saga", attempts, sell),
        .on_compensate = ledgered<items>("stock-saga", attempts, take_back),
    };
}

local_saga_handlers points_handlers() {
    auto attempts = std::make_shared<attempt_counter>();
    return {
        .on_action = ledgered<award>("points", attempts, grant),
        .on_compensate = ledgered<award>("points", attempts, revoke),
    };
}

// ---- transactions -----------------------------------------------------------------------------

struct tally {
    long recovered = 0;
    long recovery_passes = 0;
    long started = 0;
    long confirmed = 0;
    long cancelled = 0;
    long other = 0; // decided but left to recovery, or in doubt
};

/// Draws the transactions: what they move, and whether (and how) they are meant to fail.
class planner {
public:
    explicit planner(std::uint64_t seed) : rng_(seed) {}

    bool coin(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

    chaos make_chaos() {
        chaos c;
        if (coin(0.06)) c.fail_first = 1 + pick(4); // 1..4: past recovery's limit of 2 attempts, or the live 3
        c.try_throws = coin(0.02);
        return c;
    }
    transfer make_transfer() {
        transfer t;
        t.payer = pick(account_count);
        t.payee = (t.payer + 1 + pick(account_count - 1)) % account_count;
        t.amount = coin(0.08) ? refused_amount : 1 + pick(100);
        t.c = make_chaos();
        return t;
    }
    items make_items() {
        items i;
        i.sku = pick(sku_count);
        i.qty = coin(0.06) ? refused_amount : 1 + pick(5);
        i.c = make_chaos();
        return i;
    }
    award make_award() {
        award a;
        a.customer = pick(customer_count);
        a.points = coin(0.06) ? max_award + 1 : 1 + pick(50);
        a.c = make_chaos();
        return a;
    }

private:
    std::mt19937_64 rng_;
};

struct tx_plan {
    bool saga = false;
    int shape = 0;           // how the branches are added
    bool body_throws = false; // the body throws after adding its branches
    std::vector<branch_spec> branches;
};

tx_plan make_plan(planner& pl) {
    tx_plan p;
    p.saga = pl.coin(0.45);
    p.shape = pl.pick(3);
    p.body_throws = pl.coin(0.01);
    if (!p.saga) {
        p.branches.push_back({"accounts", pl.make_transfer()});
        p.branches.push_back({"stock", pl.make_items()});
        if (p.shape == 2) p.branches.push_back({"accounts", pl.make_transfer()});
    } else {
        p.branches.push_back({"points", pl.make_award()});
        p.branches.push_back({"stock-saga", pl.make_items()});
        if (p.shape == 2) std::swap(p.branches[0], p.branches[1]);
    }
    return p;
}

/// Adds the plan's branches: one by one (shapes 0 and 2) or in one write (shape 1), then throws
/// if the plan says the body fails.
template <class Handle>
asio::awaitable<void> add_all(Handle& h, tx_plan& plan) {
    constexpr bool tcc = std::is_same_v<Handle, tcc_transaction>;
    if (plan.shape == 1) {
        std::vector<branch_spec> all = std::move(plan.branches);
        if constexpr (tcc)
            co_await h.add_branches(std::move(all));
        else
            co_await h.add_steps(std::move(all));
    } else {
        for (auto& b : plan.branches) {
            std::string who = std::move(b.participant);
            dtx::payload what = std::move(b.payload);
            if constexpr (tcc)
                co_await h.add_branch(std::move(who), std::move(what));
            else
                co_await h.add_step(std::move(who), std::move(what));
        }
    }
    if (plan.body_throws) throw std::runtime_error("the body changed its mind");
}

asio::awaitable<tx_result> run_one(coordinator& coord, tx_plan plan, std::string gid) {
    tx_options opts;
    opts.gid = std::move(gid);
    if (!plan.saga) {
        auto body = [plan = std::move(plan)](tcc_transaction& tx) mutable -> asio::awaitable<void> {
            co_await add_all(tx, plan);
        };
        tx_result r = co_await coord.tcc(std::move(body), std::move(opts));
        co_return r;
    }
    auto body = [plan = std::move(plan)](saga_transaction& s) mutable -> asio::awaitable<void> {
        co_await add_all(s, plan);
    };
    tx_result r = co_await coord.saga(std::move(body), std::move(opts));
    co_return r;
}

struct shared_run {
    coordinator& coord;
    std::unordered_set<std::string>& live;
    tally& t;
    long remaining; // < 0: unlimited
};

asio::awaitable<void> lane(shared_run& run, std::uint64_t seed) {
    planner pl(seed);
    while (run.remaining != 0) {
        if (run.remaining > 0) --run.remaining;
        tx_plan plan = make_plan(pl);
        std::string gid = (plan.saga ? "saga-" : "tcc-") + make_gid();
        run.live.insert(gid);
        ++run.t.started;
        std::string g = gid;
        tx_result r = co_await run_one(run.coord, std::move(plan), std::move(g));
        run.live.erase(gid);
        if (r.status == tx_status::confirmed)
            ++run.t.confirmed;
        else if (r.status == tx_status::cancelled)
            ++run.t.cancelled;
        else
            ++run.t.other;
    }
}

/// Recovery passes (taking over everything unfinished: this is the journal's only coordinator)
/// until one leaves nothing unfinished.
asio::awaitable<void> recover_all(coordinator& coord, tally& t) {
    recovery_options ro;
    ro.take_over = true;
    for (int pass = 1;; ++pass) {
        recovery_report rep = co_await coord.recover(ro);
        ++t.recovery_passes;
        t.recovered += static_cast<long>(rep.finished);
        if (rep.unfinished == 0 && rep.skipped == 0) co_return;
        if (pass == 1000) throw std::runtime_error("recovery still has unfinished transactions after 1000 passes");
    }
}

coordinator_options crash_options(fault_killer& killer) {
    coordinator_options o;
    o.transaction_timeout = 5s;
    o.call_timeout = 2s;
    // Phase 2 gives up after 3 attempts: the transaction is left to the background recovery.
    o.phase_two = retry_policy{.initial_backoff = 2ms, .max_backoff = 16ms, .max_attempts = 3};
    o.pending = retry_policy{.initial_backoff = 1ms, .max_backoff = 4ms};
    o.recovery_retry = retry_policy{.initial_backoff = 2ms, .max_backoff = 16ms, .max_attempts = 2};
    // Short: phase-2 retries renew it now and then, and the background recovery takes over what a
    // live transaction left within tens of milliseconds (a restarted process takes over
    // everything at once, whatever the leases).
    o.lease = 10ms;
    o.recovery_interval = 20ms;
    o.on_fault = [&killer](const fault_point& p) { return killer(p); };
    return o;
}

int run_workload(const settings& s) {
    std::unordered_set<std::string> live;
    fault_killer killer(s, live);

    const auto file = [&](const char* name) { return (s.dir / name).string(); };
    sqlite_journal journal({.path = file(journal_file), .retention = std::chrono::hours(24 * 365)});
    sqlite_barrier accounts({.path = file(accounts_file)});
    sqlite_barrier stock({.path = file(stock_file)});
    sqlite_barrier points({.path = file(points_file)});

    participant_registry reg;
    reg.add_tcc("accounts", accounts.tcc(accounts_handlers()));
    auto stock_attempts = std::make_shared<attempt_counter>();
    reg.add_tcc("stock", stock.tcc(stock_handlers(stock_attempts)));
    reg.add_saga("stock-saga", stock.saga(stock_saga_handlers(stock_attempts)));
    reg.add_saga("points", points.saga(points_handlers()));

    asio::io_context ioc;
    tally t;
    bool target_missed = false;
    std::exception_ptr failed;
    {
        coordinator coord(ioc.get_executor(), journal, reg, crash_options(killer));
        shared_run run{coord, live, t, s.transactions};
        auto startup = [&]() -> asio::awaitable<void> {
            co_await recover_all(coord, t);
            if (s.recover_only) co_return;
            if (killer.recovery_target()) {
                target_missed = true;
                co_return;
            }
            coord.start_recovery([](std::exception_ptr e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& x) {
                    std::cerr << "background recovery: " << x.what() << std::endl;
                }
            });
            auto left = std::make_shared<int>(s.concurrency);
            for (int i = 0; i < s.concurrency; ++i) {
                auto done = [&coord, left, &failed](std::exception_ptr e) {
                    if (e && !failed) failed = e;
                    if (--*left == 0) coord.stop();
                };
                asio::co_spawn(ioc, lane(run, s.seed * 1'000'003u + static_cast<std::uint64_t>(i)), std::move(done));
            }
        };
        asio::co_spawn(ioc, startup(), [&](std::exception_ptr e) {
            if (e) failed = e;
        });
        ioc.run();
    }
    if (failed) std::rethrow_exception(failed);
    std::cout << "workload: " << t.recovered << " recovered in " << t.recovery_passes << " passes; " << t.started
              << " run (" << t.confirmed << " confirmed, " << t.cancelled << " cancelled, " << t.other
              << " left to recovery)" << std::endl;
    if (s.print_points) std::cout << "fault points reached:\n" << killer.counts() << std::flush;
    return target_missed ? exit_target_not_reached : 0;
}

} // namespace

int main(int argc, char** argv) {
    const settings s = parse(argc, argv);
    try {
        return run_workload(s);
    } catch (const std::exception& e) {
        std::cerr << "dtx_crash_workload: " << e.what() << std::endl;
        return 1;
    }
}
