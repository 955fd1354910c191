// SQLite journal benchmark: in-process TCC and sagas with three participants, journaled durably in
// dtx::sqlite::journal, against raw SQLite single-row commits on the same disk, in the same run.
//
//   bench_sqlite [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list] [--dir=DIR]
//
// Every measurement prints one JSON object on a line of its own (stdout); progress and errors go to
// stderr. A measurement runs for about S seconds (default 1; DTX_BENCH_SECONDS sets the default;
// --quick is 0.1 s, a smoke run), after a warm-up that also sizes it. --tx=N runs exactly N
// transactions (and N baseline commits) per measurement instead, without warm-up (for profilers).
//
// The database files go to DIR (default: $DTX_BENCH_DIR, else a new directory under $TMPDIR, else
// under /var/tmp, removed at the end). Each run uses fresh files and deletes them afterwards. The
// directory must be on a real disk: on tmpfs an fsync costs nothing and the figures mean nothing
// (the benchmark warns, and names the filesystem in every line).
//
// What is measured:
//   - framework: `concurrency` worker coroutines on one io_context (one thread) each loop
//     `co_await coord.tcc(body)` (or `coord.saga`), exactly as in bench_core, with the same trivial
//     participants, but the coordinator journals in a sqlite::journal (WAL mode, synchronous FULL
//     by default). The journal's writer thread group-commits the writes queued by all workers. Each
//     run starts on a fresh file and is timed after 500 or more transactions
//     (warm_up_transactions).
//   - baseline, with the same synchronous setting: one thread loops `INSERT INTO t VALUES(?)` as
//     autocommit statements on a separate database file in the same directory (WAL mode, SQLite's
//     default locking), timed after 1,100 of them (see warm_up_commits): one SQLite commit each,
//     which with FULL is one fsync of the WAL. It is measured in 4 slices that
//     alternate with 4 slices of the transactions (one slice each with --tx), so that a drift of
//     the disk's latency weighs on both alike; a line's figures are those of its slices together.
//   - commits_per_tx: SQLite transactions the journal committed per dtx transaction (its stats()
//     before and after the run). With FULL each is one fsync; WAL checkpoints add a few more.
//   - io_cpu_us_per_tx, writer_cpu_us_per_tx: CPU time of the io_context thread and of the
//     journal's writer thread during the run, per transaction. When one of them comes close to
//     us_per_tx, that thread is what limits the throughput.

#include <dtx/sqlite/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include <sqlite3.h>
#include <stdlib.h> // mkdtemp
#include <time.h>   // clock_gettime
#include <unistd.h> // gettid

namespace bench {

namespace fs = std::filesystem;

// ---- files -------------------------------------------------------------------------------------

/// Removes a database file and its WAL companions when it goes out of scope (and when made, so a
/// run never starts from the leftovers of an interrupted one).
class scoped_db_files {
public:
    explicit scoped_db_files(std::string path)
        : path_(std::move(path)) {
        remove();
    }
    scoped_db_files(const scoped_db_files&) = delete;
    scoped_db_files& operator=(const scoped_db_files&) = delete;
    ~scoped_db_files() { remove(); }
    const std::string& path() const noexcept { return path_; }

private:
    void remove() const {
        std::error_code ec;
        for (const char* suffix : {"", "-wal", "-shm", "-journal"})
            fs::remove(path_ + suffix, ec);
    }
    std::string path_;
};

/// The type of the filesystem that holds `dir`, from /proc/self/mounts (the longest mount point
/// that contains it); "unknown" if that cannot be read.
std::string filesystem_of(const std::string& dir) {
    std::error_code ec;
    const fs::path target = fs::canonical(dir, ec);
    std::ifstream mounts("/proc/self/mounts");
    if (ec || !mounts)
        return "unknown";
    // Mount points escape blanks as octal (\040); decode them before comparing.
    auto unescape = [](const std::string& s) {
        std::string out;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '\\' && i + 3 < s.size()) {
                out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
                i += 3;
            } else {
                out += s[i];
            }
        }
        return out;
    };
    std::string best_type = "unknown";
    std::size_t best_len = 0;
    std::string line;
    const std::string t = target.string();
    while (std::getline(mounts, line)) {
        std::istringstream fields(line);
        std::string device, mount_point, type;
        if (!(fields >> device >> mount_point >> type))
            continue;
        const std::string mp = unescape(mount_point);
        const bool contains = mp == "/" || t == mp || (t.starts_with(mp) && t[mp.size()] == '/');
        if (contains && mp.size() >= best_len) { // later mounts of the same point hide earlier ones
            best_len = mp.size();
            best_type = type;
        }
    }
    return best_type;
}

/// The directory the database files go to. Made (with its parents) if missing; a directory this
/// benchmark made under $TMPDIR or /var/tmp is removed at the end, if empty.
class work_dir {
public:
    explicit work_dir(std::string requested) {
        if (!requested.empty()) {
            fs::create_directories(requested);
            path_ = std::move(requested);
            return;
        }
        const char* tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/var/tmp") + "/dtx-bench-XXXXXX";
        if (!mkdtemp(pattern.data()))
            throw std::runtime_error("cannot make a directory like " + pattern);
        path_ = std::move(pattern);
        owned_ = true;
    }
    work_dir(const work_dir&) = delete;
    work_dir& operator=(const work_dir&) = delete;
    ~work_dir() {
        std::error_code ec;
        if (owned_)
            fs::remove(path_, ec); // only if empty: never anything but our own files
    }
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
    bool owned_ = false;
};

// ---- CPU time per thread -----------------------------------------------------------------------

/// CPU time (ns) of the calling thread.
std::int64_t own_cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// CPU time (ns) of every other thread of the process: while a run is on, that is the journal's
/// writer thread (the io_context runs on the calling thread). Linux: the CPU clock of a thread is
/// addressed by its tid, as pthread_getcpuclockid does. -1 if it cannot be read.
std::int64_t other_threads_cpu_ns() {
#ifdef __linux__
    std::error_code ec;
    std::int64_t sum = 0;
    const pid_t self = gettid();
    for (const auto& e : fs::directory_iterator("/proc/self/task", ec)) {
        const pid_t tid = static_cast<pid_t>(std::atol(e.path().filename().c_str()));
        if (tid <= 0 || tid == self)
            continue;
        const auto clock = static_cast<clockid_t>((~static_cast<unsigned>(tid) << 3) | 6u);
        timespec ts{};
        if (clock_gettime(clock, &ts) == 0)
            sum += std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
    }
    return ec ? -1 : sum;
#else
    return -1;
#endif
}

// ---- baseline: raw SQLite single-row commits ---------------------------------------------------

class raw_db {
public:
    explicit raw_db(const std::string& path) {
        const int rc = sqlite3_open_v2(
            path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
            nullptr);
        if (rc != SQLITE_OK) {
            const std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            throw std::runtime_error("cannot open " + path + ": " + msg);
        }
    }
    raw_db(const raw_db&) = delete;
    raw_db& operator=(const raw_db&) = delete;
    ~raw_db() { sqlite3_close_v2(db_); }

    sqlite3* get() const noexcept { return db_; }
    void check(int rc, std::string_view what) const {
        if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
            throw std::runtime_error("baseline: " + std::string(what) + ": " + sqlite3_errmsg(db_));
    }
    void exec(const char* sql) { check(sqlite3_exec(db_, sql, nullptr, nullptr, nullptr), sql); }

private:
    sqlite3* db_ = nullptr;
};

class raw_statement {
public:
    raw_statement(raw_db& db, const char* sql)
        : db_(db) {
        db.check(sqlite3_prepare_v2(db.get(), sql, -1, &st_, nullptr), sql);
    }
    raw_statement(const raw_statement&) = delete;
    raw_statement& operator=(const raw_statement&) = delete;
    ~raw_statement() { sqlite3_finalize(st_); }
    sqlite3_stmt* get() const noexcept { return st_; }
    int step() {
        const int rc = sqlite3_step(st_);
        db_.check(rc, sqlite3_sql(st_));
        return rc;
    }

private:
    raw_db& db_;
    sqlite3_stmt* st_ = nullptr;
};

/// Commits made on a fresh database before the clock starts. SQLite recycles the WAL after its
/// first checkpoint (at 1,000 pages); until then every commit also grows the file, which on ext4
/// costs a second write per fsync (a commit then takes about half as long again). A long-running
/// service's journal is past that point, so both sides are measured there.
constexpr std::size_t warm_up_commits = 1'100;
/// Transactions run through a fresh journal before the clock starts, for the same reason: 500,
/// and 40 per worker at high concurrency (a transaction writes about 5 pages at concurrency 1,
/// fewer when many share a commit).
std::size_t warm_up_transactions(std::size_t concurrency) {
    return std::max<std::size_t>(500, 40 * concurrency);
}

/// `count` autocommit single-row INSERTs on a fresh WAL-mode database: one SQLite commit each.
sample run_baseline(const std::string& dir, bool synchronous_full, std::size_t count) {
    const scoped_db_files files(dir + "/dtx_bench_baseline.db");
    std::vector<std::uint32_t> latency_ns;
    latency_ns.reserve(count);
    steady::time_point t0, t1;
    {
        raw_db db(files.path());
        {
            raw_statement wal(db, "PRAGMA journal_mode=WAL");
            if (wal.step() != SQLITE_ROW || std::string_view(reinterpret_cast<const char*>(
                                                sqlite3_column_text(wal.get(), 0))) != "wal")
                throw std::runtime_error("baseline: cannot switch to WAL mode");
        }
        db.exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        db.exec("CREATE TABLE t(x INTEGER)");
        raw_statement insert(db, "INSERT INTO t VALUES(?)");
        for (std::size_t i = 0; i < warm_up_commits; ++i) {
            db.check(sqlite3_bind_int64(insert.get(), 1, -1), "bind");
            insert.step();
            sqlite3_reset(insert.get());
        }
        t0 = steady::now();
        for (std::size_t i = 0; i < count; ++i) {
            const auto a = steady::now();
            db.check(sqlite3_bind_int64(insert.get(), 1, static_cast<sqlite3_int64>(i)), "bind");
            insert.step();
            sqlite3_reset(insert.get());
            const auto b = steady::now();
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
            latency_ns.push_back(
                static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX)));
        }
        t1 = steady::now();
    }
    sample s;
    s.tx = count;
    s.seconds = std::chrono::duration<double>(t1 - t0).count();
    s.latency_ns = std::move(latency_ns);
    std::sort(s.latency_ns.begin(), s.latency_ns.end());
    return s;
}

// ---- framework: dtx with the SQLite journal ----------------------------------------------------

/// What a benchmark line varies.
struct scenario {
    std::string name; // without the _c<N> suffix
    tx_kind kind;
    bool batch =
        false; // TCC: add the three branches with one add_branches call; saga: planned steps
    bool synchronous_full = true;
    std::vector<std::size_t> concurrencies;
};

/// Asks the journal for every unfinished transaction (ignoring deadlines), as recovery would.
asio::awaitable<void> count_unfinished(dtx::journal* j, std::size_t* out) {
    dtx::claim_request r;
    r.now = dtx::wall_clock::now();
    r.owner = "bench_sqlite";
    r.limit = 1'000'000;
    r.take_over = true; // every unfinished one, whatever its deadline and lease
    const std::vector<dtx::transaction_record> found = co_await j->claim(r);
    *out = found.size();
}

struct dtx_sample {
    sample s;
    std::uint64_t commits = 0;      // journal commits during the run
    std::int64_t io_cpu_ns = 0;     // CPU time of the io_context thread during the run
    std::int64_t writer_cpu_ns = 0; // of the journal's writer thread; -1: unknown
};

/// Runs `count` transactions on `concurrency` workers through a coordinator whose journal is a
/// fresh sqlite::journal in `dir`.
dtx_sample run_dtx(participants& parts, const scenario& sc, const std::string& dir,
                   std::size_t concurrency, std::size_t count) {
    g_count = counters{};
    const scoped_db_files files(dir + "/dtx_bench_journal.db");
    asio::io_context ioc(1); // one thread runs it; the journal has its writer thread
    dtx::sqlite::journal_options jo;
    jo.path = files.path();
    jo.synchronous_full = sc.synchronous_full;
    dtx::sqlite::journal journal(std::move(jo));
    std::optional<dtx::coordinator> coord;
    coord.emplace(ioc.get_executor(), journal, parts.registry);

    const through_dtx op{&*coord, sc.kind, sc.batch};
    run_state warm; // see warm_up_transactions
    warm.remaining = warm_up_transactions(concurrency);
    spawn_workers(ioc, op, concurrency, &warm);
    ioc.run();
    ioc.restart();
    if (warm.failures != 0 || !all_calls_made(sc.kind, warm_up_transactions(concurrency)))
        throw std::runtime_error(sc.name + ": the warm-up transactions did not all commit");
    g_count = counters{};

    run_state rs;
    rs.remaining = count;
    rs.latency_ns.reserve(count);
    auto rethrow = [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    };
    const std::uint64_t commits_before = journal.stats().commits;
    const std::int64_t writer_before = other_threads_cpu_ns();
    const std::int64_t io_before = own_cpu_ns();
    const auto t0 = steady::now();
    spawn_workers(ioc, op, concurrency, &rs);
    ioc.run();
    const auto t1 = steady::now();
    const std::int64_t io_after = own_cpu_ns();
    const std::int64_t writer_after = other_threads_cpu_ns();
    const std::uint64_t commits_after = journal.stats().commits;

    // Sanity: every transaction committed, every handler ran, no batch failed, and the journal
    // holds nothing unfinished (the claim runs after the lazy end records still queued).
    std::size_t unfinished = 0;
    ioc.restart();
    asio::co_spawn(ioc, count_unfinished(&journal, &unfinished), rethrow);
    coord.reset(); // posts its stop; let that run too
    ioc.run();
    const auto st = journal.stats();
    if (rs.failures != 0 || !all_calls_made(sc.kind, count) || st.failed_batches != 0 ||
        unfinished != 0)
        throw std::runtime_error(sc.name + ": transactions did not all commit cleanly (failures " +
                                 std::to_string(rs.failures) + ", failed batches " +
                                 std::to_string(st.failed_batches) + ", unfinished " +
                                 std::to_string(unfinished) + ")");

    dtx_sample d;
    d.s.tx = count;
    d.s.seconds = std::chrono::duration<double>(t1 - t0).count();
    d.s.failures = rs.failures;
    d.s.latency_ns = std::move(rs.latency_ns);
    std::sort(d.s.latency_ns.begin(), d.s.latency_ns.end());
    d.commits = commits_after - commits_before;
    d.io_cpu_ns = io_after - io_before;
    d.writer_cpu_ns = writer_before < 0 || writer_after < 0 ? -1 : writer_after - writer_before;
    return d;
}

// ---- reporting ---------------------------------------------------------------------------------

nlohmann::ordered_json line(const scenario& sc, std::size_t concurrency, const dtx_sample& fw,
                            const sample& base, const std::string& filesystem) {
    const figures f = figures_of(fw.s);
    const figures b = figures_of(base);
    nlohmann::ordered_json j;
    j["bench"] = sc.name + "_c" + std::to_string(concurrency);
    j["kind"] = to_string(sc.kind);
    j["concurrency"] = concurrency;
    j["tx"] = fw.s.tx;
    j["tx_per_s"] = std::llround(f.tx_per_s);
    j["us_per_tx"] = round_to(f.us_per_tx, 3);
    j["p50_us"] = round_to(f.p50_us, 3);
    j["p99_us"] = round_to(f.p99_us, 3);
    j["baseline_commits"] = base.tx;
    j["baseline_commits_per_s"] = std::llround(b.tx_per_s);
    j["baseline_us_per_commit"] = round_to(b.us_per_tx, 3);
    j["baseline_p50_us"] = round_to(b.p50_us, 3);
    j["baseline_p99_us"] = round_to(b.p99_us, 3);
    j["ratio"] = round_to(f.tx_per_s / b.tx_per_s, 4);
    j["p50_ratio"] = round_to(f.p50_us / b.p50_us, 4);
    j["commits_per_tx"] =
        round_to(static_cast<double>(fw.commits) / static_cast<double>(fw.s.tx), 4);
    const auto tx = static_cast<double>(fw.s.tx);
    j["io_cpu_us_per_tx"] = round_to(static_cast<double>(fw.io_cpu_ns) / 1e3 / tx, 3);
    if (fw.writer_cpu_ns >= 0)
        j["writer_cpu_us_per_tx"] = round_to(static_cast<double>(fw.writer_cpu_ns) / 1e3 / tx, 3);
    else
        j["writer_cpu_us_per_tx"] = nullptr;
    j["synchronous_full"] = sc.synchronous_full;
    j["filesystem"] = filesystem;
    j["branches_per_write"] = sc.batch ? n_participants : 1;
    const dtx::coordinator_options defaults; // the benchmark runs the coordinator's defaults
    j["concurrent_phase_two"] = defaults.concurrent_phase_two;
    j["call_timeout_ms"] = defaults.call_timeout.count();
    j["threads"] = 1;
    return j;
}

// ---- main --------------------------------------------------------------------------------------

/// Slices of each measurement per line (see `sliced`).
constexpr std::size_t slices = 4;

std::vector<scenario> scenarios() {
    return {
        // Default coordinator and journal options (synchronous FULL): branches added one by one,
        // so a TCC transaction makes four sync writes (three branches, the decision) and one lazy
        // write (its end); a saga makes four sync writes (three steps, its end).
        {.name = "tcc_sqlite", .kind = tx_kind::tcc, .concurrencies = {1, 64}},
        // The three branches in one add_branches call: two sync writes and one lazy write.
        {.name = "tcc_sqlite_batch", .kind = tx_kind::tcc, .batch = true, .concurrencies = {1, 64}},
        {.name = "saga_sqlite", .kind = tx_kind::saga, .concurrencies = {1, 32}},
        // A saga of planned steps (coord.saga(steps)): one sync write (the three steps) and one
        // lazy write (its end).
        {.name = "saga_sqlite_planned",
         .kind = tx_kind::saga,
         .batch = true,
         .concurrencies = {1, 32}},
        // synchronous NORMAL: no fsync per commit (a power loss may lose the last transactions).
        // Against the FULL lines, these show what the fsyncs cost; at concurrency 1, what is left
        // is the cost of the journal without them.
        {.name = "tcc_sqlite_normal",
         .kind = tx_kind::tcc,
         .synchronous_full = false,
         .concurrencies = {1, 64}},
        {.name = "saga_sqlite_normal",
         .kind = tx_kind::saga,
         .synchronous_full = false,
         .concurrencies = {1, 32}},
    };
}

constexpr std::string_view dir_synopsis = " [--dir=DIR]";
constexpr std::string_view dir_help =
    "  --dir=DIR     directory for the database files, on the disk to measure (default:\n"
    "                $DTX_BENCH_DIR, else a new directory under $TMPDIR, else under /var/tmp)\n";

int main(int argc, char** argv) {
    cli_options opt;
    std::string dir;
    if (const char* env = std::getenv("DTX_BENCH_DIR"); env && *env)
        dir = env;
    auto take_dir = [&dir](std::string_view a) {
        if (!a.starts_with("--dir=") || a.size() == 6)
            return false;
        dir = std::string(a.substr(6));
        return true;
    };
    if (auto code = parse_cli(argc, argv, "bench_sqlite", opt, take_dir, dir_synopsis, dir_help))
        return *code;

    if (opt.list) {
        for (const scenario& sc : scenarios())
            for (std::size_t c : sc.concurrencies)
                if (const std::string name = sc.name + "_c" + std::to_string(c); opt.selected(name))
                    std::cout << name << "\n";
        return 0;
    }

    try {
        const work_dir wd(dir);
        const std::string filesystem = filesystem_of(wd.path());
        std::cerr << "bench_sqlite: database files in " << wd.path() << " (" << filesystem << ")\n";
        if (filesystem == "tmpfs" || filesystem == "ramfs")
            std::cerr << "bench_sqlite: warning: " << wd.path() << " is on " << filesystem
                      << ", where fsync costs nothing; use --dir on a real disk\n";

        participants parts;
        for (const scenario& sc : scenarios()) {
            for (std::size_t c : sc.concurrencies) {
                const std::string name = sc.name + "_c" + std::to_string(c);
                if (!opt.selected(name))
                    continue;
                std::cerr << "bench_sqlite: " << name << "\n";
                // The baseline and the transactions in alternating slices (one each with --tx):
                // fsync latency drifts over time, and then weighs on both alike.
                auto run_base = [&](std::size_t n) {
                    return run_baseline(wd.path(), sc.synchronous_full, n);
                };
                dtx_sample last; // of the latest run
                auto run_fw = [&](std::size_t n) {
                    last = run_dtx(parts, sc, wd.path(), c, n);
                    return last.s;
                };
                const std::size_t rounds = opt.fixed_tx ? 1 : slices;
                const double slice = opt.seconds / static_cast<double>(rounds);
                sliced base(run_base, 1, 64, slice, opt.fixed_tx);
                sliced framework(run_fw, c, std::max<std::size_t>(c * 4, 32), slice, opt.fixed_tx);
                dtx_sample fw; // the slices' counters, summed
                for (std::size_t r = 0; r < rounds; ++r) {
                    base.next();
                    framework.next(); // its last run is the slice: `last` holds its counters
                    fw.commits += last.commits;
                    fw.io_cpu_ns += last.io_cpu_ns;
                    fw.writer_cpu_ns = fw.writer_cpu_ns < 0 || last.writer_cpu_ns < 0
                                           ? -1
                                           : fw.writer_cpu_ns + last.writer_cpu_ns;
                }
                fw.s = framework.total();
                std::cout << line(sc, c, fw, base.total(), filesystem).dump() << std::endl;
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "bench_sqlite: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

} // namespace bench

int main(int argc, char** argv) {
    return bench::main(argc, argv);
}
