// Core benchmark: in-process TCC and sagas with three participants and the in-memory journal, on
// one thread, against a baseline that co_awaits the very same handlers directly.
//
//   bench_core [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list]
//
// Every measurement prints one JSON object on a line of its own (stdout); progress and errors go to
// stderr. A measurement runs for about S seconds (default 1; DTX_BENCH_SECONDS sets the default;
// --quick is 0.1 s, a smoke run), after a warm-up that also sizes it. --tx=N runs exactly N
// transactions per measurement instead, without warm-up (for profilers: callgrind, perf).
//
// What is measured:
//   - framework: `concurrency` worker coroutines on one io_context (one thread) each loop
//     `co_await coord.tcc(body)` (or `coord.saga`) until the transaction count is reached. The body
//     adds three branches, one per participant; the tries and confirms (or saga actions) are
//     trivial coroutines that bump a counter and answer success.
//   - baseline: the same workers, but each transaction co_awaits the same three tries and then the
//     same three confirms (or the three actions) directly, with the same payloads: no gid, no
//     journal, no strand, no timers. Those calls never suspend, so at concurrency 64 the baseline
//     workers simply run one after another.
// The difference is what dtx costs per transaction: overhead_us_per_tx.
//
// (g++ 12 miscompiles some temporaries inside co_await / co_return: braced lists and conditional
// operands. Everything awaited here is built in a statement of its own.)

#include <dtx/dtx.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bench {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

// ---- participants ------------------------------------------------------------------------------

/// The payload of every branch: what a caller would pass as a typed struct.
struct item {
    int qty = 1;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(item, qty)

/// What the handlers did; checked after every run so that a benchmark cannot measure a no-op.
struct counters {
    long tries = 0, confirms = 0, cancels = 0, actions = 0, compensations = 0;
};

counters g_count;

/// A trivial in-process handler: bumps a counter and answers success.
dtx::branch_handler counting(long counters::*field) {
    return [field](const dtx::branch_request&) -> asio::awaitable<dtx::outcome> {
        ++(g_count.*field);
        co_return dtx::success();
    };
}

constexpr std::size_t n_participants = 3;
const std::array<std::string, n_participants> tcc_names{"stock", "payment", "shipping"};
const std::array<std::string, n_participants> saga_names{"book_flight", "book_hotel", "book_car"};
const std::array<std::string, n_participants> branch_ids{"01", "02", "03"};
constexpr std::string_view direct_gid = "direct";

/// The handlers, kept here so that the baseline calls the same function objects the registry holds.
struct participants {
    std::array<dtx::tcc_handlers, n_participants> tcc;
    std::array<dtx::saga_handlers, n_participants> saga;
    dtx::participant_registry registry;

    participants() {
        for (std::size_t i = 0; i < n_participants; ++i) {
            tcc[i] = dtx::tcc_handlers{.on_try = counting(&counters::tries),
                                       .on_confirm = counting(&counters::confirms),
                                       .on_cancel = counting(&counters::cancels)};
            saga[i] = dtx::saga_handlers{.on_action = counting(&counters::actions),
                                         .on_compensate = counting(&counters::compensations)};
            // The registry copies the std::function objects; the copies share nothing mutable
            // (all state is in g_count), so calling either is calling the same handler.
            registry.add_tcc(tcc_names[i], tcc[i]);
            registry.add_saga(saga_names[i], saga[i]);
        }
    }
};

// ---- one transaction, through dtx or directly -------------------------------------------------

enum class tx_kind { tcc, saga };

/// A TCC body: three branches, added one by one (each its own journal write and try) or all at
/// once (one journal write, tries run concurrently).
struct tcc_body {
    bool batch = false;

    asio::awaitable<void> operator()(dtx::tcc_transaction& tx) const {
        if (batch) {
            std::vector<dtx::branch_spec> specs;
            specs.reserve(n_participants);
            for (const auto& name : tcc_names) {
                dtx::branch_spec spec{name, item{1}};
                specs.push_back(std::move(spec));
            }
            co_await tx.add_branches(std::move(specs));
        } else {
            for (const auto& name : tcc_names) {
                const item payload{1};
                co_await tx.add_branch(name, payload);
            }
        }
    }
};

struct saga_body {
    asio::awaitable<void> operator()(dtx::saga_transaction& tx) const {
        for (const auto& name : saga_names) {
            const item payload{1};
            co_await tx.add_step(name, payload);
        }
    }
};

/// One transaction through the coordinator. Answers whether it committed.
struct through_dtx {
    dtx::coordinator* coord;
    tx_kind kind;
    bool batch;

    asio::awaitable<bool> operator()() const {
        if (kind == tx_kind::tcc) {
            const tcc_body body{batch};
            const dtx::tx_result r = co_await coord->tcc(body);
            co_return r.status == dtx::tx_status::confirmed;
        }
        const saga_body body{};
        const dtx::tx_result r = co_await coord->saga(body);
        co_return r.status == dtx::tx_status::confirmed;
    }
};

/// The same transaction without dtx: three tries then three confirms (or three actions),
/// co_awaited one after another on the same handler objects, with the same payloads.
struct direct {
    const participants* parts;
    tx_kind kind;

    asio::awaitable<bool> operator()() const {
        std::array<nlohmann::json, n_participants> payloads;
        for (auto& p : payloads)
            p = item{1};
        if (kind == tx_kind::tcc) {
            for (std::size_t i = 0; i < n_participants; ++i) {
                const dtx::branch_request req{direct_gid, branch_ids[i], dtx::branch_op::try_,
                                              payloads[i]};
                const dtx::outcome o = co_await parts->tcc[i].on_try(req);
                if (!o.is_success())
                    co_return false;
            }
            for (std::size_t i = 0; i < n_participants; ++i) {
                const dtx::branch_request req{direct_gid, branch_ids[i], dtx::branch_op::confirm,
                                              payloads[i]};
                const dtx::outcome o = co_await parts->tcc[i].on_confirm(req);
                if (!o.is_success())
                    co_return false;
            }
            co_return true;
        }
        for (std::size_t i = 0; i < n_participants; ++i) {
            const dtx::branch_request req{direct_gid, branch_ids[i], dtx::branch_op::action,
                                          payloads[i]};
            const dtx::outcome o = co_await parts->saga[i].on_action(req);
            if (!o.is_success())
                co_return false;
        }
        co_return true;
    }
};

// ---- running N workers on one thread ----------------------------------------------------------

struct run_state {
    std::size_t remaining = 0;
    std::size_t failures = 0;
    std::vector<std::uint32_t> latency_ns;
};

struct sample {
    std::size_t tx = 0;
    double seconds = 0;
    std::size_t failures = 0;
    std::vector<std::uint32_t> latency_ns; // sorted
};

template <class Op>
asio::awaitable<void> worker(Op op, run_state* rs) {
    while (rs->remaining > 0) {
        --rs->remaining;
        const auto t0 = steady::now();
        const bool ok = co_await op();
        const auto t1 = steady::now();
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
        rs->latency_ns.push_back(
            static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX)));
        if (!ok)
            ++rs->failures;
    }
}

/// What a benchmark line varies.
struct scenario {
    std::string name; // without the _c<N> suffix
    tx_kind kind;
    bool batch = false; // TCC: add the three branches with one add_branches call
    bool concurrent_phase_two = true;
    std::chrono::milliseconds call_timeout{10'000};
};

constexpr std::string_view to_string(tx_kind k) {
    return k == tx_kind::tcc ? "tcc" : "saga";
}

/// Runs `count` transactions on `concurrency` workers, through dtx (`framework`) or directly.
sample run(participants& parts, const scenario& sc, bool framework, std::size_t concurrency,
           std::size_t count) {
    g_count = counters{};
    asio::io_context ioc(1);     // one thread runs it
    dtx::memory_journal journal; // default options: ended transactions are dropped
    std::optional<dtx::coordinator> coord;
    if (framework) {
        dtx::coordinator_options o;
        o.concurrent_phase_two = sc.concurrent_phase_two;
        o.call_timeout = sc.call_timeout;
        coord.emplace(ioc.get_executor(), journal, parts.registry, std::move(o));
    }

    run_state rs;
    rs.remaining = count;
    rs.latency_ns.reserve(count);
    auto rethrow = [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    };
    const auto t0 = steady::now();
    for (std::size_t w = 0; w < concurrency; ++w) {
        if (framework)
            asio::co_spawn(ioc, worker(through_dtx{&*coord, sc.kind, sc.batch}, &rs), rethrow);
        else
            asio::co_spawn(ioc, worker(direct{&parts, sc.kind}, &rs), rethrow);
    }
    ioc.run();
    const auto t1 = steady::now();

    coord.reset(); // posts its stop; let that run
    ioc.restart();
    ioc.run();

    // Sanity: every transaction committed, every handler ran, and the journal kept nothing.
    const long n = static_cast<long>(count) * static_cast<long>(n_participants);
    const bool calls_ok = sc.kind == tx_kind::tcc
                              ? g_count.tries == n && g_count.confirms == n && g_count.cancels == 0
                              : g_count.actions == n && g_count.compensations == 0;
    if (rs.failures != 0 || !calls_ok || journal.unfinished() != 0 || !journal.all().empty())
        throw std::runtime_error(sc.name + (framework ? "" : " (baseline)") +
                                 ": transactions did not all commit cleanly (failures " +
                                 std::to_string(rs.failures) + ", journal holds " +
                                 std::to_string(journal.all().size()) + ")");

    sample s;
    s.tx = count;
    s.seconds = std::chrono::duration<double>(t1 - t0).count();
    s.failures = rs.failures;
    s.latency_ns = std::move(rs.latency_ns);
    std::sort(s.latency_ns.begin(), s.latency_ns.end());
    return s;
}

/// Warms up (doubling the count until a run takes a tenth of the target), then runs for about
/// `target_seconds`. With `fixed_tx`, runs exactly that many transactions, without a warm-up.
sample measure(participants& parts, const scenario& sc, bool framework, std::size_t concurrency,
               double target_seconds, std::size_t fixed_tx) {
    if (fixed_tx != 0)
        return run(parts, sc, framework, concurrency, fixed_tx);
    std::size_t n = std::max<std::size_t>(concurrency * 4, 256);
    sample warm;
    for (;;) {
        warm = run(parts, sc, framework, concurrency, n);
        if (warm.seconds >= target_seconds / 10 || n >= (std::size_t{1} << 26))
            break;
        n *= 2;
    }
    const double rate = static_cast<double>(warm.tx) / std::max(warm.seconds, 1e-9);
    const auto count =
        static_cast<std::size_t>(std::max(rate * target_seconds, static_cast<double>(concurrency)));
    return run(parts, sc, framework, concurrency, std::max<std::size_t>(count, 100));
}

// ---- reporting ---------------------------------------------------------------------------------

double percentile_us(const std::vector<std::uint32_t>& sorted_ns, double p) {
    if (sorted_ns.empty())
        return 0;
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted_ns.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted_ns.size());
    return sorted_ns[rank - 1] / 1000.0;
}

double round_to(double x, int decimals) {
    const double f = std::pow(10.0, decimals);
    return std::round(x * f) / f;
}

struct figures {
    double tx_per_s, us_per_tx, p50_us, p99_us;
};

figures figures_of(const sample& s) {
    const double tps = static_cast<double>(s.tx) / s.seconds;
    return {tps, 1e6 / tps, percentile_us(s.latency_ns, 0.50), percentile_us(s.latency_ns, 0.99)};
}

nlohmann::ordered_json line(const scenario& sc, std::size_t concurrency, const sample& fw,
                            const sample& base) {
    const figures f = figures_of(fw);
    const figures b = figures_of(base);
    nlohmann::ordered_json j;
    j["bench"] = sc.name + "_c" + std::to_string(concurrency);
    j["kind"] = to_string(sc.kind);
    j["concurrency"] = concurrency;
    j["tx"] = fw.tx;
    j["tx_per_s"] = std::llround(f.tx_per_s);
    j["us_per_tx"] = round_to(f.us_per_tx, 3);
    j["p50_us"] = round_to(f.p50_us, 3);
    j["p99_us"] = round_to(f.p99_us, 3);
    j["baseline_tx"] = base.tx;
    j["baseline_tx_per_s"] = std::llround(b.tx_per_s);
    j["baseline_us_per_tx"] = round_to(b.us_per_tx, 3);
    j["baseline_p50_us"] = round_to(b.p50_us, 3);
    j["baseline_p99_us"] = round_to(b.p99_us, 3);
    j["overhead_us_per_tx"] = round_to(f.us_per_tx - b.us_per_tx, 3);
    j["ratio"] = round_to(f.tx_per_s / b.tx_per_s, 4);
    j["branches_per_write"] = sc.batch ? n_participants : 1;
    j["concurrent_phase_two"] = sc.concurrent_phase_two;
    j["call_timeout_ms"] = sc.call_timeout.count();
    j["threads"] = 1;
    return j;
}

// ---- main --------------------------------------------------------------------------------------

std::vector<scenario> scenarios() {
    using std::chrono::milliseconds;
    return {
        // Defaults: call_timeout 10 s (a timer per branch call), concurrent phase 2.
        {.name = "tcc_memory", .kind = tx_kind::tcc},
        // Phase 2 confirms the branches one by one instead of concurrently.
        {.name = "tcc_memory_seq_phase2", .kind = tx_kind::tcc, .concurrent_phase_two = false},
        // call_timeout 0: confirms are co_awaited in place instead of raced against a timer. Tries
        // (and saga actions) are still raced against the transaction deadline, so there is no
        // saga line for this: a committed saga has no phase 2.
        {.name = "tcc_memory_no_call_timeout",
         .kind = tx_kind::tcc,
         .call_timeout = milliseconds(0)},
        // Both of the above: the cheapest configuration.
        {.name = "tcc_memory_seq_phase2_no_call_timeout",
         .kind = tx_kind::tcc,
         .concurrent_phase_two = false,
         .call_timeout = milliseconds(0)},
        // The three branches in one add_branches call: one journal write, tries run concurrently.
        {.name = "tcc_memory_batch", .kind = tx_kind::tcc, .batch = true},
        {.name = "saga_memory", .kind = tx_kind::saga},
    };
}

int usage(const char* argv0, int code) {
    std::fprintf(code ? stderr : stdout,
                 "usage: %s [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list]\n"
                 "  --quick       short smoke run (0.1 s per measurement)\n"
                 "  --seconds=S   seconds per measurement (default: $DTX_BENCH_SECONDS, else 1)\n"
                 "  --tx=N        exactly N transactions per measurement, no warm-up (profiling)\n"
                 "  --filter=S    only the benchmarks whose name contains S\n"
                 "  --list        print the benchmark names and exit\n"
                 "Prints one JSON object per benchmark on stdout.\n",
                 argv0);
    return code;
}

int main(int argc, char** argv) {
    double seconds = 1.0;
    if (const char* env = std::getenv("DTX_BENCH_SECONDS"); env && *env)
        seconds = std::atof(env);
    std::size_t fixed_tx = 0;
    std::string filter;
    bool list = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--quick")
            seconds = 0.1;
        else if (a.starts_with("--seconds="))
            seconds = std::atof(argv[i] + 10);
        else if (a.starts_with("--tx="))
            fixed_tx = static_cast<std::size_t>(std::strtoull(argv[i] + 5, nullptr, 10));
        else if (a.starts_with("--filter="))
            filter = std::string(a.substr(9));
        else if (a == "--list")
            list = true;
        else if (a == "--help" || a == "-h")
            return usage(argv[0], 0);
        else
            return usage(argv[0], 2);
    }
    if (!(seconds > 0)) {
        std::fprintf(stderr, "bench_core: seconds per measurement must be positive\n");
        return 2;
    }

    const std::array<std::size_t, 2> concurrencies{1, 64};
    participants parts;
    // Baselines depend only on the kind and the concurrency: measured once, shared by the variants.
    std::map<std::pair<tx_kind, std::size_t>, sample> baselines;
    try {
        for (const scenario& sc : scenarios()) {
            for (std::size_t c : concurrencies) {
                const std::string name = sc.name + "_c" + std::to_string(c);
                if (!filter.empty() && name.find(filter) == std::string::npos)
                    continue;
                if (list) {
                    std::cout << name << "\n";
                    continue;
                }
                std::cerr << "bench_core: " << name << "\n";
                auto key = std::make_pair(sc.kind, c);
                if (!baselines.count(key))
                    baselines.emplace(key, measure(parts, sc, false, c, seconds, fixed_tx));
                const sample fw = measure(parts, sc, true, c, seconds, fixed_tx);
                std::cout << line(sc, c, fw, baselines.at(key)).dump() << std::endl;
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "bench_core: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

} // namespace bench

int main(int argc, char** argv) {
    return bench::main(argc, argv);
}
