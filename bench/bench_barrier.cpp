// Barrier benchmark: what the participant-side barrier adds to one branch call, for SQLite
// (dtx::sqlite::barrier) and PostgreSQL (dtx::postgres::barrier), against the same local
// transaction doing the same business update without the barrier, in the same run.
//
//   bench_barrier [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list]
//
// Every measurement prints one JSON object on a line of its own (stdout); progress and errors go to
// stderr. Arguments as for bench_core (--tx=N: exactly N calls per measurement). The SQLite files
// and the throwaway PostgreSQL server (started with tests/support/pg_server.sh, default settings,
// 127.0.0.1 only) go to a new directory under $DTX_BENCH_DIR, else $TMPDIR, else /var/tmp, removed
// at the end. Without the PostgreSQL server binaries (or libpq) the PostgreSQL lines print one
// line saying they were skipped.
//
// The branch call is a TCC try that reserves 1 unit of an account:
//   UPDATE account SET balance = balance - 1, frozen = frozen + 1 WHERE id = ? AND balance >= 1
// with a new gid per call, its payload (account, amount) parsed from JSON. Three ways, on the same
// database, back to back:
//   - barrier: `co_await barrier.guard(request, handler)`, the handler wrapped by the barrier's
//     typed_handler<reserve> (dtx::sqlite:: or dtx::postgres::): the barrier row and the update in
//     one local transaction on the barrier's database thread (SQLite: group-committed with the
//     calls queued meanwhile, each in a savepoint; PostgreSQL: one transaction per call on a pool
//     of 4 connections).
//   - baseline: `co_await barrier.run<outcome>(fn)`: the same local transaction on the same
//     thread(s), with the same update and payload parsing, without the barrier row.
//   - direct (concurrency 1 only): the same update in BEGIN ... COMMIT on a connection of the
//     calling thread, with no dtx at all (no thread hand-off).
// ratio = us_per_call / baseline_us_per_call; added_us_per_call is the difference.

#include <dtx/sqlite/barrier.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench_support.hpp"

#ifdef DTX_BENCH_HAVE_POSTGRES
#include <dtx/postgres/barrier.hpp>

#include "bench_postgres_support.hpp"
#endif

namespace bench {

/// The branch payload.
struct reserve {
    std::int64_t account = 0;
    int amount = 1;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reserve, account, amount)

constexpr std::int64_t n_accounts = 1000;
constexpr std::int64_t opening_balance = 1'000'000'000;

/// The next branch request: a new gid, the try of branch 01, the next account in turn.
struct request_source {
    std::int64_t next = 0;
    nlohmann::json payload() { return reserve{next++ % n_accounts, 1}; }
};

// ---- the business update, per database ---------------------------------------------------------

struct sqlite_db {
    using connection = dtx::sqlite::connection;
    using barrier = dtx::sqlite::barrier;

    static dtx::outcome reserve_in(connection& db, const reserve& r) {
        db.prepare("UPDATE account SET balance = balance - ?1, frozen = frozen + ?1 "
                   "WHERE id = ?2 AND balance >= ?1")
            .bind(r.amount, r.account)
            .run();
        return db.changes() ? dtx::success() : dtx::failure("insufficient funds");
    }
    static dtx::sqlite::barrier_handler handler() {
        return dtx::sqlite::typed_handler<reserve>([](connection& db, const dtx::branch_request&,
                                                      reserve r) { return reserve_in(db, r); });
    }
    static int create(connection& db) {
        db.exec("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, "
                "frozen INTEGER NOT NULL)");
        auto& ins = db.prepare("INSERT INTO account VALUES (?, ?, 0)");
        for (std::int64_t i = 0; i < n_accounts; ++i)
            ins.bind(i, opening_balance).run();
        return 0;
    }
    /// Barrier rows and units reserved so far.
    static std::pair<std::int64_t, std::int64_t> totals(connection& db) {
        auto& rows = db.prepare("SELECT count(*) FROM dtx_barrier");
        rows.bind();
        rows.step();
        const std::int64_t n = rows.integer(0);
        auto& frozen = db.prepare("SELECT sum(frozen) FROM account");
        frozen.bind();
        frozen.step();
        const std::int64_t f = frozen.integer(0);
        db.reset_statements();
        return {n, f};
    }
};

#ifdef DTX_BENCH_HAVE_POSTGRES
struct postgres_db {
    using connection = dtx::postgres::connection;
    using barrier = dtx::postgres::barrier;

    static dtx::outcome reserve_in(connection& db, const reserve& r) {
        const auto res =
            db.exec("UPDATE account SET balance = balance - $1::bigint, "
                    "frozen = frozen + $1::bigint WHERE id = $2::bigint AND balance >= "
                    "$1::bigint",
                    {std::to_string(r.amount), std::to_string(r.account)});
        return res.affected() ? dtx::success() : dtx::failure("insufficient funds");
    }
    static dtx::postgres::barrier_handler handler() {
        return dtx::postgres::typed_handler<reserve>([](connection& db, const dtx::branch_request&,
                                                        reserve r) { return reserve_in(db, r); });
    }
    static int create(connection& db) {
        db.exec("CREATE TABLE account (id bigint PRIMARY KEY, balance bigint NOT NULL, "
                "frozen bigint NOT NULL)");
        const std::string n = std::to_string(n_accounts), b = std::to_string(opening_balance);
        db.exec(
            "INSERT INTO account SELECT i, $2::bigint, 0 FROM generate_series(0, $1::bigint - 1) i",
            {n, b});
        return 0;
    }
    static std::pair<std::int64_t, std::int64_t> totals(connection& db) {
        auto r =
            db.exec("SELECT (SELECT count(*) FROM dtx_barrier), (SELECT sum(frozen) FROM account)");
        return {std::stoll(std::string(r.text(0, 0))), std::stoll(std::string(r.text(0, 1)))};
    }
};
#endif

// ---- one call, three ways ----------------------------------------------------------------------

/// A try through the barrier.
template <class Db>
struct through_barrier {
    typename Db::barrier* barrier;
    const dtx::barrier_handler<typename Db::connection>* handler;
    request_source* source;

    asio::awaitable<bool> operator()() const {
        const std::string gid = dtx::make_gid();
        const nlohmann::json payload = source->payload();
        const dtx::branch_request r{gid, "01", dtx::branch_op::try_, payload};
        const dtx::outcome o = co_await barrier->guard(r, *handler);
        co_return o.is_success();
    }
};

/// The same local transaction and update without the barrier.
template <class Db>
struct without_barrier {
    typename Db::barrier* barrier;
    request_source* source;

    asio::awaitable<bool> operator()() const {
        const std::string gid = dtx::make_gid(); // made, as for a real request, but not stored
        nlohmann::json payload = source->payload();
        auto fn = [payload = std::move(payload)](typename Db::connection& db) {
            return Db::reserve_in(db, payload.get<reserve>());
        };
        const dtx::outcome o = co_await barrier->template run<dtx::outcome>(std::move(fn));
        co_return o.is_success() && !gid.empty();
    }
};

// ---- measuring ---------------------------------------------------------------------------------

struct scenario {
    std::string name; // without the _c<N> suffix
    std::string database;
    bool synchronous_full = true; // SQLite only
    std::vector<std::size_t> concurrencies;
};

struct line_samples {
    sample barrier, baseline;
    std::optional<sample> direct;
    // SQLite: local transactions the barrier's thread committed in the measured runs
    std::uint64_t commits = 0, baseline_commits = 0;
};

/// Measures the three ways on one database (`make_direct(source)` gives the direct operation for
/// run_on_threads; `commits()` the local transactions committed by the barrier's thread so far).
/// `calls` and `guarded` count the units reserved and the barrier rows written.
template <class Db, class MakeDirect, class Commits>
line_samples measure_line(typename Db::barrier& barrier, std::size_t concurrency,
                          const cli_options& opt, MakeDirect make_direct, Commits commits,
                          std::int64_t& calls, std::int64_t& guarded) {
    request_source source;
    const auto handler = Db::handler();
    const std::size_t first = std::max<std::size_t>(concurrency * 4, 32);
    line_samples out;
    auto run_base = [&](std::size_t n) {
        calls += static_cast<std::int64_t>(n);
        const std::uint64_t c0 = commits();
        sample s = run_workers(without_barrier<Db>{&barrier, &source}, concurrency, n, "baseline");
        out.baseline_commits = commits() - c0; // the last run is the measured one
        return s;
    };
    out.baseline = measure_by_time(run_base, concurrency, first, opt.seconds, opt.fixed_tx);
    auto run_barrier = [&](std::size_t n) {
        calls += static_cast<std::int64_t>(n);
        guarded += static_cast<std::int64_t>(n);
        const std::uint64_t c0 = commits();
        sample s = run_workers(through_barrier<Db>{&barrier, &handler, &source}, concurrency, n,
                               "barrier");
        out.commits = commits() - c0;
        return s;
    };
    out.barrier = measure_by_time(run_barrier, concurrency, first, opt.seconds, opt.fixed_tx);
    if (concurrency == 1) {
        auto run_direct = [&](std::size_t n) {
            calls += static_cast<std::int64_t>(n);
            return run_on_threads(1, n, [&](std::size_t) { return make_direct(source); });
        };
        out.direct = measure_by_time(run_direct, 1, 32, opt.seconds, opt.fixed_tx);
    }
    return out;
}

void check_totals(const std::string& name, std::pair<std::int64_t, std::int64_t> found,
                  std::int64_t calls, std::int64_t guarded) {
    if (found.first != guarded || found.second != calls)
        throw std::runtime_error(name + ": expected " + std::to_string(guarded) +
                                 " barrier rows and " + std::to_string(calls) +
                                 " units reserved, found " + std::to_string(found.first) + " and " +
                                 std::to_string(found.second));
}

nlohmann::ordered_json line(const scenario& sc, std::size_t concurrency, const line_samples& m) {
    const figures f = figures_of(m.barrier);
    const figures b = figures_of(m.baseline);
    nlohmann::ordered_json j;
    j["bench"] = sc.name + "_c" + std::to_string(concurrency);
    j["database"] = sc.database;
    j["concurrency"] = concurrency;
    j["op"] = "try";
    j["calls"] = m.barrier.tx;
    j["calls_per_s"] = std::llround(f.tx_per_s);
    j["us_per_call"] = round_to(f.us_per_tx, 3);
    j["p50_us"] = round_to(f.p50_us, 3);
    j["p99_us"] = round_to(f.p99_us, 3);
    j["baseline_calls"] = m.baseline.tx;
    j["baseline_calls_per_s"] = std::llround(b.tx_per_s);
    j["baseline_us_per_call"] = round_to(b.us_per_tx, 3);
    j["baseline_p50_us"] = round_to(b.p50_us, 3);
    j["baseline_p99_us"] = round_to(b.p99_us, 3);
    j["ratio"] = round_to(f.us_per_tx / b.us_per_tx, 4);
    j["p50_ratio"] = round_to(f.p50_us / b.p50_us, 4);
    j["added_us_per_call"] = round_to(f.us_per_tx - b.us_per_tx, 3);
    j["added_p50_us"] = round_to(f.p50_us - b.p50_us, 3);
    if (m.direct) {
        const figures d = figures_of(*m.direct);
        j["direct_us_per_call"] = round_to(d.us_per_tx, 3);
        j["direct_p50_us"] = round_to(d.p50_us, 3);
        j["direct_p99_us"] = round_to(d.p99_us, 3);
        j["direct_ratio"] = round_to(f.us_per_tx / d.us_per_tx, 4);
    }
    if (sc.database == "sqlite") {
        j["commits_per_call"] =
            round_to(static_cast<double>(m.commits) / static_cast<double>(m.barrier.tx), 4);
        j["baseline_commits_per_call"] = round_to(
            static_cast<double>(m.baseline_commits) / static_cast<double>(m.baseline.tx), 4);
        j["synchronous"] = sc.synchronous_full ? "FULL" : "NORMAL";
    }
    return j;
}

// ---- SQLite ------------------------------------------------------------------------------------

void run_sqlite(const scenario& sc, std::size_t concurrency, const cli_options& opt,
                const std::string& dir, const std::string& filesystem) {
    const std::string path = dir + "/" + sc.name + "_c" + std::to_string(concurrency) + ".db";
    dtx::sqlite::barrier_options o;
    o.path = path;
    o.synchronous_full = sc.synchronous_full;
    dtx::sqlite::barrier barrier(std::move(o));
    auto create = [&barrier]() -> asio::awaitable<bool> {
        co_await barrier.run<int>(&sqlite_db::create);
        co_return true;
    };
    run_workers(create, 1, 1, "creating the accounts");
    // The direct way: its own connection to the same file, with the same settings.
    dtx::sqlite::connection direct_db(path);
    direct_db.exec(sc.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    direct_db.check(sqlite3_busy_timeout(direct_db.get(), 5000), "busy_timeout");
    auto make_direct = [&direct_db](request_source& source) {
        return [&direct_db, &source] {
            const std::string gid = dtx::make_gid();
            const nlohmann::json payload = source.payload();
            dtx::sqlite::transaction tx(direct_db);
            if (!sqlite_db::reserve_in(direct_db, payload.get<reserve>()).is_success() ||
                gid.empty())
                throw std::runtime_error("direct: no unit reserved");
            tx.commit();
        };
    };
    std::int64_t calls = 0, guarded = 0;
    auto commits = [&barrier] { return barrier.stats().commits; };
    const line_samples m =
        measure_line<sqlite_db>(barrier, concurrency, opt, make_direct, commits, calls, guarded);
    check_totals(sc.name, sqlite_db::totals(direct_db), calls, guarded);
    auto j = line(sc, concurrency, m);
    j["wal"] = true;
    j["filesystem"] = filesystem;
    std::cout << j.dump() << std::endl;
}

// ---- PostgreSQL --------------------------------------------------------------------------------

#ifdef DTX_BENCH_HAVE_POSTGRES
void run_postgres(const scenario& sc, std::size_t concurrency, const cli_options& opt,
                  const pg::server& server, const nlohmann::ordered_json& settings,
                  const std::string& filesystem) {
    // A fresh database per line.
    const std::string db_name = sc.name + "_c" + std::to_string(concurrency);
    {
        dtx::postgres::connection admin(server.conninfo());
        admin.exec(("CREATE DATABASE " + db_name).c_str());
    }
    const std::string conninfo = server.conninfo(db_name);
    dtx::postgres::barrier_options o;
    o.conninfo = conninfo;
    const std::size_t connections = o.connections;
    dtx::postgres::barrier barrier(std::move(o));
    {
        dtx::postgres::connection db(conninfo);
        postgres_db::create(db);
    }
    auto make_direct = [&conninfo](request_source& source) {
        auto c = std::make_shared<pg::raw_client>(
            conninfo,
            "UPDATE account SET balance = balance - $1::bigint, frozen = frozen + $1::bigint "
            "WHERE id = $2::bigint AND balance >= $1::bigint",
            2);
        return [c, &source] {
            const std::string gid = dtx::make_gid();
            const nlohmann::json payload = source.payload();
            const reserve r = payload.get<reserve>();
            const std::string amount = std::to_string(r.amount),
                              account = std::to_string(r.account);
            c->exec("BEGIN");
            if (c->run({amount.c_str(), account.c_str()}) != 1 || gid.empty())
                throw std::runtime_error("direct: no unit reserved");
            c->exec("COMMIT");
        };
    };
    std::int64_t calls = 0, guarded = 0;
    auto no_commits = [] { return std::uint64_t{0}; };
    const line_samples m = measure_line<postgres_db>(barrier, concurrency, opt, make_direct,
                                                     no_commits, calls, guarded);
    {
        dtx::postgres::connection db(conninfo);
        check_totals(sc.name, postgres_db::totals(db), calls, guarded);
    }
    auto j = line(sc, concurrency, m);
    j["connections"] = connections;
    j["server"] = settings;
    j["filesystem"] = filesystem;
    std::cout << j.dump() << std::endl;
}
#endif

// ---- main --------------------------------------------------------------------------------------

std::vector<scenario> scenarios() {
    return {
        {.name = "barrier_sqlite_full", .database = "sqlite", .concurrencies = {1, 16}},
        {.name = "barrier_sqlite_normal",
         .database = "sqlite",
         .synchronous_full = false,
         .concurrencies = {1, 16}},
        {.name = "barrier_postgres", .database = "postgres", .concurrencies = {1, 16}},
    };
}

void skip_postgres(const std::string& reason) {
    nlohmann::ordered_json j;
    j["bench"] = "barrier_postgres";
    j["skipped"] = true;
    j["reason"] = reason;
    std::cout << j.dump() << std::endl;
}

int main(int argc, char** argv) {
    cli_options opt;
    if (auto code =
            parse_cli(argc, argv, "bench_barrier", opt, [](std::string_view) { return false; }))
        return *code;

    std::vector<std::pair<const scenario*, std::size_t>> selected;
    const std::vector<scenario> all = scenarios();
    for (const scenario& sc : all)
        for (std::size_t c : sc.concurrencies)
            if (opt.selected(sc.name + "_c" + std::to_string(c)))
                selected.emplace_back(&sc, c);
    if (opt.list) {
        for (const auto& [sc, c] : selected)
            std::cout << sc->name << "_c" << c << "\n";
        return 0;
    }
    const bool want_postgres = std::any_of(selected.begin(), selected.end(), [](const auto& s) {
        return s.first->database == "postgres";
    });

    try {
        const scratch_dir dir("dtx-bench-barrier-");
        const std::string filesystem = filesystem_type(dir.path());
        std::cerr << "bench_barrier: files in " << dir.path() << " (" << filesystem << ")\n";
        if (filesystem == "tmpfs" || filesystem == "ramfs")
            std::cerr << "bench_barrier: warning: " << dir.path() << " is on " << filesystem
                      << ", where fsync costs nothing; set DTX_BENCH_DIR to a real disk\n";
#ifdef DTX_BENCH_HAVE_POSTGRES
        std::optional<pg::server> server;
        nlohmann::ordered_json settings;
        if (want_postgres) {
            try {
                server.emplace();
                dtx::postgres::connection admin(server->conninfo());
                settings = pg::settings(admin);
            } catch (const pg::unavailable& e) {
                skip_postgres(e.what());
            }
        }
#else
        if (want_postgres)
            skip_postgres("built without libpq");
#endif
        for (const auto& [sc, c] : selected) {
            const std::string name = sc->name + "_c" + std::to_string(c);
            if (sc->database == "sqlite") {
                std::cerr << "bench_barrier: " << name << "\n";
                run_sqlite(*sc, c, opt, dir.path(), filesystem);
            }
#ifdef DTX_BENCH_HAVE_POSTGRES
            else if (server) {
                std::cerr << "bench_barrier: " << name << "\n";
                run_postgres(*sc, c, opt, *server, settings, filesystem);
            }
#endif
        }
    } catch (const std::exception& e) {
        std::cerr << "bench_barrier: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

} // namespace bench

int main(int argc, char** argv) {
    return bench::main(argc, argv);
}
