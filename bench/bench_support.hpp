// What the bench_* programs share: the trivial participants, the transaction bodies, the worker
// loop, sizing a measurement by time, percentiles, and the command-line options every benchmark
// understands. Each benchmark is one translation unit that includes this header.
//
// (g++ 12 miscompiles some temporaries inside co_await / co_return: braced lists and conditional
// operands. Everything awaited here is built in a statement of its own.)

#ifndef DTX_BENCH_SUPPORT_HPP
#define DTX_BENCH_SUPPORT_HPP

#include <dtx/dtx.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <stdlib.h> // mkdtemp
#ifdef __linux__
#include <sys/vfs.h> // statfs
#include <time.h>    // clock_gettime
#include <unistd.h>  // gettid
#endif

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

inline counters g_count;

/// A trivial in-process handler: bumps a counter and answers success.
inline dtx::branch_handler counting(long counters::*field) {
    return [field](const dtx::branch_request&) -> asio::awaitable<dtx::outcome> {
        ++(g_count.*field);
        co_return dtx::success();
    };
}

inline constexpr std::size_t n_participants = 3;
inline const std::array<std::string, n_participants> tcc_names{"stock", "payment", "shipping"};
inline const std::array<std::string, n_participants> saga_names{"book_flight", "book_hotel",
                                                                "book_car"};

/// The handlers, kept here so that a baseline can call the same function objects the registry
/// holds.
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

// ---- one transaction through dtx ---------------------------------------------------------------

enum class tx_kind { tcc, saga };

constexpr std::string_view to_string(tx_kind k) {
    return k == tx_kind::tcc ? "tcc" : "saga";
}

/// True if the handlers saw exactly what `count` committed transactions of `kind` make them see.
inline bool all_calls_made(tx_kind kind, std::size_t count) {
    const long n = static_cast<long>(count) * static_cast<long>(n_participants);
    return kind == tx_kind::tcc
               ? g_count.tries == n && g_count.confirms == n && g_count.cancels == 0
               : g_count.actions == n && g_count.compensations == 0;
}

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

/// A saga body: three steps, added one by one.
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
    bool batch; // TCC: one add_branches call; saga: planned steps (coord.saga(steps))

    asio::awaitable<bool> operator()() const {
        if (kind == tx_kind::tcc) {
            const tcc_body body{batch};
            const dtx::tx_result r = co_await coord->tcc(body);
            co_return r.status == dtx::tx_status::confirmed;
        }
        if (batch) { // a saga of planned steps
            std::vector<dtx::branch_spec> steps;
            steps.reserve(n_participants);
            for (const auto& name : saga_names) {
                dtx::branch_spec spec{name, item{1}};
                steps.push_back(std::move(spec));
            }
            const dtx::tx_result r = co_await coord->saga(std::move(steps));
            co_return r.status == dtx::tx_status::confirmed;
        }
        const saga_body body{};
        const dtx::tx_result r = co_await coord->saga(body);
        co_return r.status == dtx::tx_status::confirmed;
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

/// Loops `op` until `rs->remaining` transactions have been started, recording each latency.
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

/// Spawns `concurrency` workers looping `op` on `ioc` (an exception escaping one is rethrown from
/// `ioc.run()`).
template <class Op>
void spawn_workers(asio::io_context& ioc, const Op& op, std::size_t concurrency, run_state* rs) {
    auto rethrow = [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    };
    for (std::size_t w = 0; w < concurrency; ++w)
        asio::co_spawn(ioc, worker(op, rs), rethrow);
}

/// The sample of a finished run: its latencies, sorted.
inline sample sample_of(run_state& rs, steady::time_point t0, steady::time_point t1,
                        std::size_t count) {
    sample s;
    s.tx = count;
    s.seconds = std::chrono::duration<double>(t1 - t0).count();
    s.failures = rs.failures;
    s.latency_ns = std::move(rs.latency_ns);
    std::sort(s.latency_ns.begin(), s.latency_ns.end());
    return s;
}

/// Runs `count` operations on `concurrency` worker coroutines on a new io_context run by the
/// calling thread (`op()` answers whether the operation succeeded). Throws if one did not.
template <class Op>
sample run_workers(Op op, std::size_t concurrency, std::size_t count, const std::string& what) {
    asio::io_context ioc(1);
    run_state rs;
    rs.remaining = count;
    rs.latency_ns.reserve(count);
    const auto t0 = steady::now();
    spawn_workers(ioc, op, concurrency, &rs);
    ioc.run();
    const auto t1 = steady::now();
    if (rs.failures != 0)
        throw std::runtime_error(what + ": " + std::to_string(rs.failures) + " of " +
                                 std::to_string(count) + " operations did not succeed");
    return sample_of(rs, t0, t1, count);
}

// ---- transactions through a durable journal ----------------------------------------------------

/// Asks `j` for every unfinished transaction (ignoring deadlines and leases), as recovery in the
/// journal's only coordinator would, and stores how many it found.
inline asio::awaitable<void> claim_unfinished(dtx::journal* j, std::size_t* out) {
    dtx::claim_request r;
    r.now = dtx::wall_clock::now();
    r.owner = "bench";
    r.limit = 1'000'000;
    r.take_over = true;
    const std::vector<dtx::transaction_record> found = co_await j->claim(r);
    *out = found.size();
}

/// Restarts `ioc` and queues on it the claim of every unfinished transaction of `j`: once `ioc`
/// has run, `*out` holds how many there were.
inline void queue_claim_unfinished(asio::io_context& ioc, dtx::journal& j, std::size_t* out) {
    ioc.restart();
    asio::co_spawn(ioc, claim_unfinished(&j, out), [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    });
}

/// Runs `count` transactions (`kind`, TCC branches one by one or in one `batch`) on `concurrency`
/// workers on one io_context thread, through a coordinator with default options on `journal`.
/// `started()` runs just before the first transaction and `stopped()` just after the last one
/// returned (to read clocks and counters). Then checks that every transaction committed, every
/// handler ran, and the journal holds nothing unfinished (the claim runs after the lazy end
/// records still queued); throws naming `name` if not.
template <class Started, class Stopped>
sample run_through_journal(dtx::journal& journal, participants& parts, tx_kind kind, bool batch,
                           std::size_t concurrency, std::size_t count, const std::string& name,
                           Started started, Stopped stopped) {
    g_count = counters{};
    asio::io_context ioc(1);
    std::optional<dtx::coordinator> coord;
    coord.emplace(ioc.get_executor(), journal, parts.registry);
    run_state rs;
    rs.remaining = count;
    rs.latency_ns.reserve(count);
    started();
    const auto t0 = steady::now();
    spawn_workers(ioc, through_dtx{&*coord, kind, batch}, concurrency, &rs);
    ioc.run();
    const auto t1 = steady::now();
    stopped();

    std::size_t unfinished = 0;
    queue_claim_unfinished(ioc, journal, &unfinished);
    coord.reset(); // posts its stop; let that run too
    ioc.run();
    if (rs.failures != 0 || !all_calls_made(kind, count) || unfinished != 0)
        throw std::runtime_error(name + ": transactions did not all commit cleanly (failures " +
                                 std::to_string(rs.failures) + ", unfinished " +
                                 std::to_string(unfinished) + ")");
    return sample_of(rs, t0, t1, count);
}

/// Warms up (starting at `first_count` and doubling until a run takes a tenth of the target), then
/// runs for about `target_seconds`. With `fixed_tx`, runs exactly that many, without a warm-up.
/// `run(n)` runs n transactions on `concurrency` workers and returns their sample.
template <class Run>
sample measure_by_time(Run run, std::size_t concurrency, std::size_t first_count,
                       double target_seconds, std::size_t fixed_tx) {
    if (fixed_tx != 0)
        return run(fixed_tx);
    std::size_t n = first_count;
    sample warm;
    for (;;) {
        warm = run(n);
        if (warm.seconds >= target_seconds / 10 || n >= (std::size_t{1} << 26))
            break;
        n *= 2;
    }
    const double rate = static_cast<double>(warm.tx) / std::max(warm.seconds, 1e-9);
    const auto count =
        static_cast<std::size_t>(std::max(rate * target_seconds, static_cast<double>(concurrency)));
    return run(std::max<std::size_t>(count, 100));
}

/// A measurement taken in slices that alternate with other measurements, so that a load that
/// drifts (other work on the machine, fsync latency) weighs on all of them alike. The first slice
/// is sized to `seconds` by measure_by_time (after its warm-up); later ones repeat its count.
template <class Run>
class sliced {
public:
    sliced(Run run, std::size_t concurrency, std::size_t first_count, double seconds,
           std::size_t fixed)
        : run_(std::move(run))
        , concurrency_(concurrency)
        , first_(first_count)
        , seconds_(seconds)
        , fixed_(fixed) {}

    /// Runs the next slice.
    void next() {
        sample s =
            count_ ? run_(count_) : measure_by_time(run_, concurrency_, first_, seconds_, fixed_);
        count_ = s.tx;
        total_.tx += s.tx;
        total_.seconds += s.seconds;
        total_.failures += s.failures;
        const auto middle = static_cast<std::ptrdiff_t>(total_.latency_ns.size());
        total_.latency_ns.insert(total_.latency_ns.end(), s.latency_ns.begin(), s.latency_ns.end());
        std::inplace_merge(total_.latency_ns.begin(), total_.latency_ns.begin() + middle,
                           total_.latency_ns.end());
    }
    /// The slices so far, as one sample.
    const sample& total() const noexcept { return total_; }

private:
    Run run_;
    std::size_t concurrency_, first_;
    double seconds_;
    std::size_t fixed_, count_ = 0;
    sample total_;
};

/// Runs `count` operations on `threads` threads (each its share, in a loop of `op(thread_index)`),
/// timing each one. `setup(thread_index)` runs on each thread before the clock starts (opening a
/// connection, preparing statements) and returns the operation for that thread.
template <class Setup>
sample run_on_threads(std::size_t threads, std::size_t count, Setup setup) {
    std::vector<std::vector<std::uint32_t>> per_thread(threads);
    std::vector<std::thread> pool;
    std::size_t ready = 0;
    std::mutex mu;
    std::condition_variable cv;
    bool go = false;
    std::exception_ptr failed;
    steady::time_point t0;
    for (std::size_t t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            const std::size_t share = count / threads + (t < count % threads ? 1 : 0);
            auto& lat = per_thread[t];
            lat.reserve(share);
            try {
                auto op = setup(t);
                {
                    std::unique_lock lock(mu);
                    ++ready;
                    cv.notify_all();
                    cv.wait(lock, [&] { return go; });
                }
                for (std::size_t i = 0; i < share; ++i) {
                    const auto a = steady::now();
                    op();
                    const auto ns =
                        std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - a)
                            .count();
                    lat.push_back(
                        static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX)));
                }
            } catch (...) {
                std::lock_guard lock(mu);
                if (!failed)
                    failed = std::current_exception();
                if (!go)
                    ++ready; // let the others start and finish
                cv.notify_all();
            }
        });
    {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return ready == threads; });
        go = true;
        t0 = steady::now();
    }
    cv.notify_all();
    for (auto& th : pool)
        th.join();
    const auto t1 = steady::now();
    if (failed)
        std::rethrow_exception(failed);
    sample s;
    for (auto& lat : per_thread)
        s.latency_ns.insert(s.latency_ns.end(), lat.begin(), lat.end());
    s.tx = s.latency_ns.size();
    s.seconds = std::chrono::duration<double>(t1 - t0).count();
    std::sort(s.latency_ns.begin(), s.latency_ns.end());
    return s;
}

// ---- CPU time and the machine ------------------------------------------------------------------

namespace cpu {

inline std::int64_t ns_of(clockid_t clock) {
    timespec ts{};
    if (clock_gettime(clock, &ts) != 0)
        return -1;
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// CPU time (ns) of the calling thread.
inline std::int64_t this_thread_ns() {
    return ns_of(CLOCK_THREAD_CPUTIME_ID);
}

/// CPU time (ns) of every thread of this process but the calling one (while a run is on: the
/// threads of the journal or barrier under test). -1 if it cannot be read.
inline std::int64_t other_threads_ns() {
#ifdef __linux__
    // The whole process, less this thread: both clocks are read back to back.
    const std::int64_t process = ns_of(CLOCK_PROCESS_CPUTIME_ID);
    const std::int64_t self = this_thread_ns();
    return process < 0 || self < 0 ? -1 : process - self;
#else
    return -1;
#endif
}

/// Adds the CPU time spent between the readings `before` and `after` to `sum`; any of them
/// negative (unknown) makes the sum unknown (-1).
inline void add_spent(std::int64_t& sum, std::int64_t before, std::int64_t after) {
    sum = sum < 0 || before < 0 || after < 0 ? -1 : sum + (after - before);
}

} // namespace cpu

/// Where the benchmarks' database files go: $DTX_BENCH_DIR, else $TMPDIR, else /var/tmp. It must
/// be on the disk to measure: on tmpfs an fsync costs nothing.
inline std::string bench_parent_dir() {
    for (const char* var : {"DTX_BENCH_DIR", "TMPDIR"})
        if (const char* env = std::getenv(var); env && *env)
            return env;
    return "/var/tmp";
}

/// A new directory `<parent>/<prefix>XXXXXX` for the lifetime of the object, removed with
/// everything in it at the end (only the benchmark's own files are ever in it).
class scratch_dir {
public:
    explicit scratch_dir(const std::string& prefix,
                         const std::string& parent = bench_parent_dir()) {
        std::filesystem::create_directories(parent);
        std::string pattern = parent + "/" + prefix + "XXXXXX";
        if (!mkdtemp(pattern.data()))
            throw std::runtime_error("cannot make a directory like " + pattern);
        path_ = std::move(pattern);
    }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
};

/// The name of the filesystem type that holds `path` ("ext4", "tmpfs", ...), from statfs; its
/// magic number in hex if not one of the common ones.
inline std::string filesystem_type(const std::string& path) {
#ifdef __linux__
    struct statfs st {};
    if (statfs(path.c_str(), &st) != 0)
        return "unknown";
    const auto magic = static_cast<unsigned long>(st.f_type);
    switch (magic) {
    case 0xEF53:
        return "ext4"; // also ext2/ext3
    case 0x01021994:
        return "tmpfs";
    case 0x858458f6:
        return "ramfs";
    case 0x58465342:
        return "xfs";
    case 0x9123683e:
        return "btrfs";
    case 0x794c7630:
        return "overlayfs";
    case 0x2fc12fc1:
        return "zfs";
    default: {
        char buf[32];
        std::snprintf(buf, sizeof buf, "0x%lx", magic);
        return buf;
    }
    }
#else
    (void)path;
    return "unknown";
#endif
}

// ---- reporting ---------------------------------------------------------------------------------

inline double percentile_us(const std::vector<std::uint32_t>& sorted_ns, double p) {
    if (sorted_ns.empty())
        return 0;
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted_ns.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted_ns.size());
    return sorted_ns[rank - 1] / 1000.0;
}

inline double round_to(double x, int decimals) {
    const double f = std::pow(10.0, decimals);
    return std::round(x * f) / f;
}

struct figures {
    double tx_per_s, us_per_tx, p50_us, p99_us;
};

inline figures figures_of(const sample& s) {
    const double tps = static_cast<double>(s.tx) / s.seconds;
    return {tps, 1e6 / tps, percentile_us(s.latency_ns, 0.50), percentile_us(s.latency_ns, 0.99)};
}

/// The first fields of a transaction line: bench, kind, concurrency, tx, tx_per_s, us_per_tx,
/// p50_us, p99_us.
inline nlohmann::ordered_json tx_line(const std::string& name, tx_kind kind,
                                      std::size_t concurrency, const sample& s) {
    const figures f = figures_of(s);
    nlohmann::ordered_json j;
    j["bench"] = name + "_c" + std::to_string(concurrency);
    j["kind"] = to_string(kind);
    j["concurrency"] = concurrency;
    j["tx"] = s.tx;
    j["tx_per_s"] = std::llround(f.tx_per_s);
    j["us_per_tx"] = round_to(f.us_per_tx, 3);
    j["p50_us"] = round_to(f.p50_us, 3);
    j["p99_us"] = round_to(f.p99_us, 3);
    return j;
}

/// The last fields of a transaction line run with the coordinator's default options on one
/// io_context thread: branches_per_write, concurrent_phase_two, call_timeout_ms, threads.
inline void add_default_settings(nlohmann::ordered_json& j, bool batch) {
    j["branches_per_write"] = batch ? n_participants : 1;
    const dtx::coordinator_options defaults;
    j["concurrent_phase_two"] = defaults.concurrent_phase_two;
    j["call_timeout_ms"] = defaults.call_timeout.count();
    j["threads"] = 1;
}

/// CPU time `ns` (negative: unknown) per transaction, in µs.
inline nlohmann::ordered_json per_tx_us(std::int64_t ns, std::size_t tx) {
    if (ns < 0)
        return nullptr;
    return round_to(static_cast<double>(ns) / 1e3 / static_cast<double>(tx), 3);
}

// ---- command line ------------------------------------------------------------------------------

/// The options every benchmark understands.
struct cli_options {
    double seconds = 1.0;     // per measurement
    std::size_t fixed_tx = 0; // nonzero: exactly this many transactions, no warm-up
    std::string filter;       // only the lines whose name contains it
    bool list = false;        // print the line names and exit

    bool selected(const std::string& name) const {
        return filter.empty() || name.find(filter) != std::string::npos;
    }
};

/// Prints the line names (`name_c<concurrency>`) of `scenarios` (each with a `name` and its
/// `concurrencies`) that `o` selects, one a line (--list).
template <class Scenario>
void print_names(const std::vector<Scenario>& scenarios, const cli_options& o) {
    for (const Scenario& sc : scenarios)
        for (std::size_t c : sc.concurrencies)
            if (const std::string name = sc.name + "_c" + std::to_string(c); o.selected(name))
                std::printf("%s\n", name.c_str());
}

/// Prints the usage of a benchmark that understands the common options plus its own:
/// `extra_synopsis` is appended to the synopsis line, `extra_help` (whole lines) to the list.
inline int usage(const char* argv0, int code, std::string_view extra_synopsis = "",
                 std::string_view extra_help = "") {
    std::FILE* out = code ? stderr : stdout;
    std::fprintf(out,
                 "usage: %s [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list]%.*s\n"
                 "  --quick       short smoke run (0.1 s per measurement)\n"
                 "  --seconds=S   seconds per measurement (default: $DTX_BENCH_SECONDS, else 1)\n"
                 "  --tx=N        exactly N transactions per measurement, no warm-up (profiling)\n"
                 "  --filter=S    only the benchmarks whose name contains S\n"
                 "  --list        print the benchmark names and exit\n"
                 "%.*s"
                 "Prints one JSON object per benchmark on stdout.\n",
                 argv0, static_cast<int>(extra_synopsis.size()), extra_synopsis.data(),
                 static_cast<int>(extra_help.size()), extra_help.data());
    return code;
}

/// Parses the common options (and $DTX_BENCH_SECONDS) into `o`. `extra(arg)` is offered every
/// other argument and answers whether it took it. Returns an exit code if the program should stop
/// now (--help, a bad argument), nothing otherwise. `name` prefixes the error messages.
template <class Extra>
std::optional<int> parse_cli(int argc, char** argv, const char* name, cli_options& o, Extra extra,
                             std::string_view extra_synopsis = "",
                             std::string_view extra_help = "") {
    if (const char* env = std::getenv("DTX_BENCH_SECONDS"); env && *env)
        o.seconds = std::atof(env);
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--quick")
            o.seconds = 0.1;
        else if (a.starts_with("--seconds="))
            o.seconds = std::atof(argv[i] + 10);
        else if (a.starts_with("--tx="))
            o.fixed_tx = static_cast<std::size_t>(std::strtoull(argv[i] + 5, nullptr, 10));
        else if (a.starts_with("--filter="))
            o.filter = std::string(a.substr(9));
        else if (a == "--list")
            o.list = true;
        else if (a == "--help" || a == "-h")
            return usage(argv[0], 0, extra_synopsis, extra_help);
        else if (!extra(a))
            return usage(argv[0], 2, extra_synopsis, extra_help);
    }
    if (!(o.seconds > 0)) {
        std::fprintf(stderr, "%s: seconds per measurement must be positive\n", name);
        return 2;
    }
    return std::nullopt;
}

} // namespace bench

#endif
