#ifndef DTX_TESTS_CRASH_WORKLOAD_COMMON_HPP
#define DTX_TESTS_CRASH_WORKLOAD_COMMON_HPP

// What the crash-test workloads share, whatever their journal and participants' database: the
// fault points they kill themselves at, and the transactions they run (drawn from a seed, some
// meant to fail, in lanes that run concurrently on one coordinator).

#include <dtx/coordinator.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "crash_common.hpp"
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

namespace dtx::crash {

using namespace std::chrono_literals;

// ---- fault points -----------------------------------------------------------------------------

/// Where a workload kills itself: at the `nth` occurrence of the named `point`, or at its `any`-th
/// fault point of any kind (0: neither).
struct fault_settings {
    std::string point; // empty: none
    long nth = 0;
    long any = 0;
};

/// The options "--fault POINT:N" and "--fault-any N", reading into `f`.
inline std::vector<option> fault_options(fault_settings& f) {
    return {
        {"--fault",
         [&f](command_line& cl) {
             const std::string_view v = cl.value();
             const auto colon = v.rfind(':');
             const auto n =
                 colon == std::string_view::npos ? std::nullopt : parse_number(v.substr(colon + 1));
             if (!n)
                 cl.fail("--fault wants POINT:N");
             f.point = std::string(v.substr(0, colon));
             f.nth = *n;
         }},
        value_option("--fault-any", f.any),
    };
}

/// The options every workload takes: its data directory, seed, concurrency and fault.
struct workload_settings {
    std::filesystem::path dir;
    std::uint64_t seed = 1;
    int concurrency = 16;
    fault_settings fault;

    /// The options of every workload, reading into this; a workload appends its own.
    std::vector<option> options() {
        auto o = fault_options(fault);
        o.insert(o.end(), {
                              value_option("--dir", dir),
                              value_option("--seed", seed),
                              value_option("--concurrency", concurrency),
                          });
        return o;
    }

    /// After parsing: what every workload needs.
    void check(command_line& cl) const {
        cl.require(!dir.empty(), "--dir is required");
        cl.require(concurrency >= 1, "--concurrency must be at least 1");
    }
};

/// Names fault points, counts them, and kills the process at the chosen one.
class fault_killer {
public:
    /// Appends the point it kills at to `log` (the driver's tally).
    fault_killer(const fault_settings& s, const std::filesystem::path& log,
                 const std::unordered_set<std::string>& live)
        : s_(s)
        , live_(live) {
        const auto path = log.string();
        log_fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd_ < 0)
            throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    }
    ~fault_killer() { ::close(log_fd_); }
    fault_killer(const fault_killer&) = delete;
    fault_killer& operator=(const fault_killer&) = delete;

    /// The hook (runs on the coordinator's thread). Never returns true: it kills instead.
    bool operator()(const fault_point& p) {
        const std::string name = name_of(p);
        ++any_;
        const long nth = ++counts_[name];
        if (s_.any > 0 && any_ == s_.any)
            die(name, any_, p);
        if (!s_.point.empty() && nth == s_.nth && name == s_.point)
            die(name, nth, p);
        return false;
    }

    /// How often each point was reached, one "name count" per line (for tuning the driver).
    std::string counts() const {
        std::map<std::string, long> sorted(counts_.begin(), counts_.end());
        std::string out;
        for (const auto& [name, n] : sorted)
            out += "  " + name + " " + std::to_string(n) + "\n";
        return out;
    }

    /// Whether the target is a recovery point that can still be reached by startup recovery only.
    bool recovery_target() const { return s_.point.starts_with("rec/"); }

private:
    std::string name_of(const fault_point& p) const {
        std::string name;
        const bool live = p.what != fault_step::claim && live_.contains(std::string(p.gid));
        name += live ? "tx/" : "rec/";
        name += p.what == fault_step::claim ? "any" : kind_of_gid(p.gid);
        name += '/';
        if (p.site == fault_site::branch_call) {
            name += "call-";
            name += to_string(p.op);
        } else {
            name += to_string(p.what);
            if (p.what == fault_step::decide || p.what == fault_step::end ||
                p.what == fault_step::done) {
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

    const fault_settings& s_;
    const std::unordered_set<std::string>& live_;
    int log_fd_ = -1;
    long any_ = 0;
    std::unordered_map<std::string, long> counts_;
};

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
    explicit planner(std::uint64_t seed)
        : rng_(seed) {}

    bool coin(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

    chaos make_chaos() {
        chaos c;
        if (coin(0.06))
            c.fail_first = 1 + pick(4); // 1..4: past recovery's limit of 2 attempts, or the live 3
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
    bool planned = false;     // a saga of planned steps: coord.saga(steps)
    int shape = 0;            // how the branches are added
    bool body_throws = false; // the body throws after adding its branches
    std::vector<branch_spec> branches;
};

inline tx_plan make_plan(planner& pl) {
    tx_plan p;
    p.saga = pl.coin(0.45);
    p.shape = pl.pick(3);
    p.body_throws = pl.coin(0.01);
    p.planned = p.saga && pl.coin(0.4);
    if (!p.saga) {
        p.branches.push_back({"accounts", pl.make_transfer()});
        p.branches.push_back({"stock", pl.make_items()});
        if (p.shape == 2)
            p.branches.push_back({"accounts", pl.make_transfer()});
    } else {
        p.branches.push_back({"points", pl.make_award()});
        p.branches.push_back({"stock-saga", pl.make_items()});
        if (p.shape == 2)
            std::swap(p.branches[0], p.branches[1]);
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
    if (plan.body_throws)
        throw std::runtime_error("the body changed its mind");
}

inline asio::awaitable<tx_result> run_one(coordinator& coord, tx_plan plan, std::string gid) {
    tx_options opts;
    opts.gid = std::move(gid);
    if (!plan.saga) {
        auto body = [plan = std::move(plan)](tcc_transaction& tx) mutable -> asio::awaitable<void> {
            co_await add_all(tx, plan);
        };
        tx_result r = co_await coord.tcc(std::move(body), std::move(opts));
        co_return r;
    }
    if (plan.planned) {
        tx_result r = co_await coord.saga(std::move(plan.branches), std::move(opts));
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
    /// What a branch names its participant by in the journal (a URL, say); empty: its name.
    std::function<std::string(const std::string& name)> address{};
};

inline asio::awaitable<void> lane(shared_run& run, std::uint64_t seed) {
    planner pl(seed);
    while (run.remaining != 0) {
        if (run.remaining > 0)
            --run.remaining;
        tx_plan plan = make_plan(pl);
        if (run.address)
            for (auto& b : plan.branches)
                b.participant = run.address(b.participant);
        std::string gid = (plan.planned ? "plan-" : plan.saga ? "saga-" : "tcc-") + make_gid();
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

inline coordinator_options crash_options(fault_killer& killer) {
    coordinator_options o;
    o.transaction_timeout = 5s;
    o.call_timeout = 2s;
    // Phase 2 gives up after 3 attempts: the transaction is left to the background recovery.
    o.phase_two = retry_policy{.initial_backoff = 2ms, .max_backoff = 16ms, .max_attempts = 3};
    o.pending = retry_policy{.initial_backoff = 1ms, .max_backoff = 4ms};
    o.recovery_retry = retry_policy{.initial_backoff = 2ms, .max_backoff = 16ms, .max_attempts = 2};
    // Short: phase-2 retries renew it now and then, and the background recovery takes over what a
    // live transaction left within tens of milliseconds (a restarted process that is its journal's
    // only coordinator takes over everything at once, whatever the leases).
    o.lease = 10ms;
    o.recovery_interval = 20ms;
    o.on_fault = [&killer](const fault_point& p) { return killer(p); };
    return o;
}

/// Recovery passes (taking over everything unfinished: this is the journal's only coordinator)
/// until one leaves nothing unfinished.
inline asio::awaitable<void> recover_all(coordinator& coord, tally& t) {
    recovery_options ro;
    ro.take_over = true;
    for (int pass = 1;; ++pass) {
        recovery_report rep = co_await coord.recover(ro);
        ++t.recovery_passes;
        t.recovered += static_cast<long>(rep.finished);
        if (rep.unfinished == 0 && rep.skipped == 0)
            co_return;
        if (pass == 1000)
            throw std::runtime_error(
                "recovery still has unfinished transactions after 1000 passes");
    }
}

/// Starts the coordinator's background recovery; a failed pass is reported on stderr.
inline void start_background_recovery(coordinator& coord) {
    coord.start_recovery([](std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            std::cerr << "background recovery: " << x.what() << std::endl;
        }
    });
}

/// Spawns `concurrency` lanes on `ex` (the coordinator's executor). `finished` is called with the
/// exception of the first lane that throws, and with nullptr once every lane has returned.
inline void start_lanes(asio::any_io_executor ex, shared_run& run, int concurrency,
                        std::uint64_t seed, std::function<void(std::exception_ptr)> finished) {
    struct progress {
        int left;
        bool failed = false;
        std::function<void(std::exception_ptr)> finished;
    };
    auto p = std::make_shared<progress>(progress{concurrency, false, std::move(finished)});
    for (int i = 0; i < concurrency; ++i) {
        auto done = [p](std::exception_ptr e) {
            if (e && !p->failed) {
                p->failed = true;
                p->finished(e);
            }
            if (--p->left == 0 && !p->failed)
                p->finished(nullptr);
        };
        asio::co_spawn(ex, lane(run, seed * 1'000'003u + static_cast<std::uint64_t>(i)),
                       std::move(done));
    }
}

/// How a workload process runs its coordinator.
struct workload_plan {
    int concurrency = 16;
    std::uint64_t seed = 1;
    /// Recover what a previous life left before the lanes start, and in the background after.
    bool recovery = true;
    /// Asked once the startup recovery is done: false stops there (no lanes).
    std::function<bool()> go_on{};
};

/// Runs the coordinator of `run` on `ioc`: the startup recovery (taking over everything), then
/// the background recovery and the lanes until they have run their transactions (or forever).
/// Rethrows what a lane or the startup threw.
inline void run_workload_lanes(asio::io_context& ioc, shared_run& run, const workload_plan& p) {
    std::exception_ptr failed;
    auto startup = [&]() -> asio::awaitable<void> {
        if (p.recovery)
            co_await recover_all(run.coord, run.t);
        if (p.go_on && !p.go_on())
            co_return;
        if (p.recovery)
            start_background_recovery(run.coord);
        start_lanes(ioc.get_executor(), run, p.concurrency, p.seed, [&](std::exception_ptr e) {
            if (!e)
                return run.coord.stop();
            failed = e;
            ioc.stop();
        });
    };
    asio::co_spawn(ioc, startup(), [&](std::exception_ptr e) {
        if (e)
            failed = e;
    });
    ioc.run();
    if (failed)
        std::rethrow_exception(failed);
}

} // namespace dtx::crash

#endif
