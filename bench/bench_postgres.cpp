// PostgreSQL journal benchmark: in-process TCC and sagas with three participants, journaled in
// dtx::postgres::journal on a throwaway PostgreSQL server, against raw libpq single-row commits on
// the same server, in the same run.
//
//   bench_postgres [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list]
//                  [--connections=N] [--unprepared]
//
// Every measurement prints one JSON object on a line of its own (stdout); progress and errors go to
// stderr. Arguments as for bench_core; --connections and --unprepared set the journal's options
// `connections` and `prepare_statements` (false) for every line. When the PostgreSQL server
// binaries are not installed (or the benchmark was built without libpq), it prints one line saying
// it skipped, and exits 0.
//
// The server is started for the run (tests/support/pg_server.sh, default settings: fsync and
// synchronous_commit on) in a new directory under $DTX_BENCH_DIR, else $TMPDIR, else /var/tmp,
// listens on 127.0.0.1 only, and is stopped and removed at the end, also after an error or a
// SIGINT/SIGTERM. The directory must be on the disk to measure.
//
// What is measured:
//   - framework: `concurrency` worker coroutines on one io_context (one thread) each loop
//     `co_await coord.tcc(body)` (or `coord.saga`), as in bench_core and bench_sqlite, with the
//     same trivial participants; the coordinator journals in a postgres::journal (its own thread
//     and connection, or several: the writes queued meanwhile go to the server as one statement and
//     one commit).
//   - baseline, measured just before each line: `clients` threads (8 for the concurrent lines, 1
//     for the concurrency-1 lines), each with its own libpq connection, loop a prepared
//     `INSERT INTO bench_baseline VALUES ($1, $2)` in autocommit: one commit (one WAL flush,
//     shared by commits that wait at the same time) each.
//   - commits_per_tx: statements (= server transactions) the journal committed per dtx
//     transaction (postgres::journal::stats()).
//   - io_cpu_us_per_tx, journal_cpu_us_per_tx, server_cpu_us_per_tx: CPU time of the io_context
//     thread, of the journal's thread, and of the server's processes during the run, per
//     transaction. The server and the benchmark share the machine's cores.

#include <iostream>

#include "bench_support.hpp"

#ifdef DTX_BENCH_HAVE_POSTGRES

#include <dtx/postgres/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench_postgres_support.hpp"

namespace bench {

constexpr std::size_t concurrent_baseline_clients = 8;
const std::string bench_db = "dtx_bench";

/// The journal's options the command line sets.
struct journal_settings {
    std::size_t connections = 1;
    bool prepare_statements = true;
};

// ---- baseline: raw libpq single-row commits ----------------------------------------------------

struct baseline_sample {
    sample s;
    std::int64_t server_cpu_ns = 0; // of the server's processes during the run; -1: unknown
};

/// `count` single-row INSERTs (autocommit) spread over `clients` threads, each on its own
/// connection. The table is emptied first.
baseline_sample run_baseline(const pg::server& server, const std::string& conninfo,
                             std::size_t clients, std::size_t count) {
    {
        dtx::postgres::connection admin(conninfo);
        admin.exec("CREATE TABLE IF NOT EXISTS bench_baseline (client int, n bigint, "
                   "PRIMARY KEY (client, n))");
        admin.exec("TRUNCATE bench_baseline");
    }
    // Connected before, and closed after, the server's CPU time is read: a backend that has
    // exited no longer shows it.
    std::vector<std::unique_ptr<pg::raw_client>> conns;
    for (std::size_t t = 0; t < clients; ++t)
        conns.push_back(std::make_unique<pg::raw_client>(
            conninfo, "INSERT INTO bench_baseline VALUES ($1::int, $2::bigint)", 2));
    auto setup = [&conns](std::size_t t) {
        return [c = conns[t].get(), client = std::to_string(t), n = std::int64_t{0}]() mutable {
            const std::string row = std::to_string(n++);
            if (c->run({client.c_str(), row.c_str()}) != 1)
                throw std::runtime_error("baseline: INSERT changed no row");
        };
    };
    baseline_sample b;
    const std::int64_t before = server.cpu_ns();
    b.s = run_on_threads(clients, count, setup);
    const std::int64_t after = server.cpu_ns();
    b.server_cpu_ns = before < 0 || after < 0 ? -1 : after - before;
    return b;
}

// ---- framework: dtx with the PostgreSQL journal ------------------------------------------------

/// What a benchmark line varies.
struct scenario {
    std::string name; // without the _c<N> suffix
    tx_kind kind;
    bool batch = false; // TCC: add the three branches with one add_branches call
    std::vector<std::size_t> concurrencies;
};

struct dtx_sample {
    sample s;
    std::uint64_t commits = 0;       // journal statements (server transactions) during the run
    std::uint64_t operations = 0;    // journal operations in them
    std::int64_t io_cpu_ns = 0;      // CPU time of the io_context thread during the run
    std::int64_t journal_cpu_ns = 0; // of the journal's thread; -1: unknown
    std::int64_t server_cpu_ns = 0;  // of the server's processes; -1: unknown
};

/// Runs `count` transactions on `concurrency` workers through a coordinator whose journal is a
/// postgres::journal on emptied journal tables.
dtx_sample run_dtx(participants& parts, const scenario& sc, const pg::server& server,
                   const journal_settings& js, std::size_t concurrency, std::size_t count) {
    const std::string conninfo = server.conninfo(bench_db);
    dtx::postgres::journal_options jo;
    jo.conninfo = conninfo;
    jo.connections = js.connections;
    jo.prepare_statements = js.prepare_statements;
    dtx::postgres::journal journal(std::move(jo)); // creates the schema on the first run
    {
        dtx::postgres::connection admin(conninfo);
        admin.exec("TRUNCATE dtx_transaction");
    }
    dtx::postgres::journal_stats before, after;
    std::int64_t journal_before = 0, server_before = 0, io_before = 0;
    dtx_sample d;
    auto started = [&] {
        before = journal.stats();
        journal_before = cpu::other_threads_ns();
        server_before = server.cpu_ns();
        io_before = cpu::this_thread_ns();
    };
    auto stopped = [&] {
        d.io_cpu_ns = cpu::this_thread_ns() - io_before;
        const std::int64_t server_after = server.cpu_ns();
        const std::int64_t journal_after = cpu::other_threads_ns();
        after = journal.stats();
        d.journal_cpu_ns =
            journal_before < 0 || journal_after < 0 ? -1 : journal_after - journal_before;
        d.server_cpu_ns = server_before < 0 || server_after < 0 ? -1 : server_after - server_before;
    };
    d.s = run_through_journal(journal, parts, sc.kind, sc.batch, concurrency, count, sc.name,
                              started, stopped);
    if (const auto failed = journal.stats().failed_batches; failed != 0)
        throw std::runtime_error(sc.name + ": " + std::to_string(failed) +
                                 " journal batches failed");
    d.commits = after.commits - before.commits;
    d.operations = after.operations - before.operations;
    return d;
}

// ---- reporting ---------------------------------------------------------------------------------

nlohmann::ordered_json line(const scenario& sc, std::size_t concurrency, const dtx_sample& fw,
                            const baseline_sample& bs, std::size_t clients,
                            const journal_settings& js,
                            const nlohmann::ordered_json& server_settings,
                            const std::string& filesystem) {
    const sample& base = bs.s;
    const figures f = figures_of(fw.s);
    const figures b = figures_of(base);
    const auto tx = static_cast<double>(fw.s.tx);
    nlohmann::ordered_json j = tx_line(sc.name, sc.kind, concurrency, fw.s);
    j["baseline_clients"] = clients;
    j["baseline_commits"] = base.tx;
    j["baseline_commits_per_s"] = std::llround(b.tx_per_s);
    j["baseline_p50_us"] = round_to(b.p50_us, 3);
    j["baseline_p99_us"] = round_to(b.p99_us, 3);
    j["baseline_server_cpu_us_per_commit"] = per_tx_us(bs.server_cpu_ns, base.tx);
    j["ratio"] = round_to(f.tx_per_s / b.tx_per_s, 4);
    j["p50_ratio"] = round_to(f.p50_us / b.p50_us, 4);
    j["commits_per_tx"] = round_to(static_cast<double>(fw.commits) / tx, 4);
    j["writes_per_commit"] =
        fw.commits
            ? round_to(static_cast<double>(fw.operations) / static_cast<double>(fw.commits), 2)
            : 0.0;
    j["io_cpu_us_per_tx"] = per_tx_us(fw.io_cpu_ns, fw.s.tx);
    j["journal_cpu_us_per_tx"] = per_tx_us(fw.journal_cpu_ns, fw.s.tx);
    j["server_cpu_us_per_tx"] = per_tx_us(fw.server_cpu_ns, fw.s.tx);
    j["journal_connections"] = js.connections;
    j["prepared_statements"] = js.prepare_statements;
    j["server"] = server_settings;
    j["filesystem"] = filesystem;
    add_default_settings(j, sc.batch);
    return j;
}

// ---- main --------------------------------------------------------------------------------------

std::vector<scenario> scenarios() {
    return {
        // The coordinator's and the journal's defaults. Journal writes per transaction: TCC with
        // three add_branch calls, 4 sync + 1 lazy; TCC with one add_branches call, 2 sync + 1
        // lazy; a saga of three add_step calls, 4 sync (its last one is its end).
        {.name = "tcc_postgres", .kind = tx_kind::tcc, .concurrencies = {1, 64}},
        {.name = "tcc_postgres_batch",
         .kind = tx_kind::tcc,
         .batch = true,
         .concurrencies = {1, 64}},
        {.name = "saga_postgres", .kind = tx_kind::saga, .concurrencies = {1, 64}},
    };
}

int main(int argc, char** argv) {
    cli_options opt;
    journal_settings js;
    auto extra = [&js](std::string_view a) {
        if (a.starts_with("--connections=")) {
            js.connections = std::max<std::size_t>(
                1, static_cast<std::size_t>(std::strtoull(a.data() + 14, nullptr, 10)));
            return true;
        }
        if (a == "--unprepared") {
            js.prepare_statements = false;
            return true;
        }
        return false;
    };
    if (auto code = parse_cli(
            argc, argv, "bench_postgres", opt, extra, " [--connections=N] [--unprepared]",
            "  --connections=N  journal connections (postgres::journal_options::connections)\n"
            "  --unprepared     the journal without prepared statements\n"))
        return *code;

    if (opt.list) {
        print_names(scenarios(), opt);
        return 0;
    }

    try {
        std::optional<pg::server> server;
        try {
            server.emplace();
        } catch (const pg::unavailable& e) {
            nlohmann::ordered_json j;
            j["bench"] = "postgres";
            j["skipped"] = true;
            j["reason"] = e.what();
            std::cout << j.dump() << std::endl;
            return 0;
        }
        const std::string filesystem = filesystem_type(server->dir());
        std::cerr << "bench_postgres: server in " << server->dir() << " (" << filesystem << ")\n";
        if (filesystem == "tmpfs" || filesystem == "ramfs")
            std::cerr << "bench_postgres: warning: " << server->dir() << " is on " << filesystem
                      << ", where a WAL flush costs nothing; set DTX_BENCH_DIR to a real disk\n";
        nlohmann::ordered_json server_settings;
        {
            dtx::postgres::connection admin(server->conninfo());
            admin.exec(("CREATE DATABASE " + bench_db).c_str());
            server_settings = pg::settings(admin);
        }
        std::cerr << "bench_postgres: server settings (PostgreSQL's defaults, as a user has them): "
                  << server_settings.dump() << "\n";
        const std::string conninfo = server->conninfo(bench_db);

        participants parts;
        for (const scenario& sc : scenarios()) {
            for (std::size_t c : sc.concurrencies) {
                const std::string name = sc.name + "_c" + std::to_string(c);
                if (!opt.selected(name))
                    continue;
                std::cerr << "bench_postgres: " << name << "\n";
                // The baseline is measured next to each line: commit latency drifts over time.
                const std::size_t clients = c == 1 ? 1 : concurrent_baseline_clients;
                baseline_sample base;
                auto run_base = [&](std::size_t n) {
                    base = run_baseline(*server, conninfo, clients, n);
                    return base.s;
                };
                // The last run is the measured one, and `base` holds its figures.
                measure_by_time(run_base, clients, 64, opt.seconds, opt.fixed_tx);
                dtx_sample fw;
                auto run_fw = [&](std::size_t n) {
                    fw = run_dtx(parts, sc, *server, js, c, n);
                    return fw.s;
                };
                // The last run is the measured one, and `fw` holds its counts.
                measure_by_time(run_fw, c, std::max<std::size_t>(c * 4, 32), opt.seconds,
                                opt.fixed_tx);
                std::cout << line(sc, c, fw, base, clients, js, server_settings, filesystem).dump()
                          << std::endl;
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "bench_postgres: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

} // namespace bench

#else // built without libpq

namespace bench {
int main(int, char**) {
    std::cout << R"({"bench":"postgres","skipped":true,"reason":"built without libpq"})"
              << std::endl;
    return 0;
}
} // namespace bench

#endif

int main(int argc, char** argv) {
    return bench::main(argc, argv);
}
