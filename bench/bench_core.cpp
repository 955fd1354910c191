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

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench_support.hpp"

namespace bench {

// The participants, the bodies, through_dtx, the worker loop and the reporting helpers are in
// bench_support.hpp.

const std::array<std::string, n_participants> branch_ids{"01", "02", "03"};
constexpr std::string_view direct_gid = "direct";

// ---- one transaction, through dtx or directly -------------------------------------------------

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

/// What a benchmark line varies.
struct scenario {
    std::string name; // without the _c<N> suffix
    tx_kind kind;
    bool batch = false; // TCC: add the three branches with one add_branches call
    bool concurrent_phase_two = true;
    std::chrono::milliseconds call_timeout{10'000};
};

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
    const auto t0 = steady::now();
    if (framework)
        spawn_workers(ioc, through_dtx{&*coord, sc.kind, sc.batch}, concurrency, &rs);
    else
        spawn_workers(ioc, direct{&parts, sc.kind}, concurrency, &rs);
    ioc.run();
    const auto t1 = steady::now();

    coord.reset(); // posts its stop; let that run
    ioc.restart();
    ioc.run();

    // Sanity: every transaction committed, every handler ran, and the journal kept nothing.
    if (rs.failures != 0 || !all_calls_made(sc.kind, count) || journal.unfinished() != 0 ||
        !journal.all().empty())
        throw std::runtime_error(sc.name + (framework ? "" : " (baseline)") +
                                 ": transactions did not all commit cleanly (failures " +
                                 std::to_string(rs.failures) + ", journal holds " +
                                 std::to_string(journal.all().size()) + ")");

    return sample_of(rs, t0, t1, count);
}

/// Sized by time (see measure_by_time), after a warm-up that starts at 256 transactions.
sample measure(participants& parts, const scenario& sc, bool framework, std::size_t concurrency,
               double target_seconds, std::size_t fixed_tx) {
    auto run_n = [&](std::size_t n) { return run(parts, sc, framework, concurrency, n); };
    return measure_by_time(run_n, concurrency, std::max<std::size_t>(concurrency * 4, 256),
                           target_seconds, fixed_tx);
}

// ---- reporting ---------------------------------------------------------------------------------

nlohmann::ordered_json line(const scenario& sc, std::size_t concurrency, const sample& fw,
                            const sample& base) {
    const figures f = figures_of(fw);
    const figures b = figures_of(base);
    nlohmann::ordered_json j = tx_line(sc.name, sc.kind, concurrency, fw);
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

int main(int argc, char** argv) {
    cli_options opt;
    if (auto code =
            parse_cli(argc, argv, "bench_core", opt, [](std::string_view) { return false; }))
        return *code;

    const std::array<std::size_t, 2> concurrencies{1, 64};
    participants parts;
    // Baselines depend only on the kind and the concurrency: measured once, shared by the variants.
    std::map<std::pair<tx_kind, std::size_t>, sample> baselines;
    try {
        for (const scenario& sc : scenarios()) {
            for (std::size_t c : concurrencies) {
                const std::string name = sc.name + "_c" + std::to_string(c);
                if (!opt.selected(name))
                    continue;
                if (opt.list) {
                    std::cout << name << "\n";
                    continue;
                }
                std::cerr << "bench_core: " << name << "\n";
                auto key = std::make_pair(sc.kind, c);
                if (!baselines.count(key))
                    baselines.emplace(key, measure(parts, sc, false, c, opt.seconds, opt.fixed_tx));
                const sample fw = measure(parts, sc, true, c, opt.seconds, opt.fixed_tx);
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
