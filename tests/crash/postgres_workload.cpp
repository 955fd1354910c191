// The PostgreSQL crash-test workload: one of several coordinator processes sharing a PostgreSQL
// journal; the participants keep their state in PostgreSQL databases of their own, behind
// PostgreSQL barriers, so every process reaches the same participants. It runs transactions and
// background recovery (which takes over what a dead process left once its leases have expired)
// until it is killed, or until SIGTERM.
//
//   dtx_crash_postgres_workload --server CONNINFO --dir D --slot N --seed S [--concurrency C]
//                               [--fault POINT:N | --fault-any N] [--drain | --setup]
//
// --server names the server (host, port, user); the databases are those of crash_common.hpp.
// The coordinator's lease owner is "coordinator-N": a restarted process has its predecessor's
// name, as a restarted service instance would. --fault POINT:N kills the process with SIGKILL at
// the N-th time it reaches the named fault point (crash_common.hpp), --fault-any N at its N-th
// fault point of any kind; before dying it appends the point to faults-N.log in D. --drain runs
// recovery only (no new transactions); --setup creates the journal and barrier tables and exits.
// SIGTERM stops new transactions and the background recovery; the process exits once the
// transactions in flight have ended.

#include <dtx/coordinator.hpp>
#include <dtx/postgres/barrier.hpp>
#include <dtx/postgres/journal.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_set>

#include "participants.hpp"
#include "workload_common.hpp"

/// How the participants (participants.hpp) run their SQL on PostgreSQL.
template <>
struct dtx::crash::sql_access<dtx::postgres::connection> {
    template <class Arg>
    static std::string text(const Arg& a) {
        if constexpr (std::is_arithmetic_v<Arg>)
            return std::to_string(a);
        else
            return std::string(a);
    }
    template <class... Args>
    static int changes(dtx::postgres::connection& db, const char* sql, const Args&... args) {
        return db.exec(sql, {std::string_view(text(args))...}).affected();
    }
    template <class... Args>
    static bool exists(dtx::postgres::connection& db, const char* sql, const Args&... args) {
        return db.exec(sql, {std::string_view(text(args))...}).rows() > 0;
    }
    /// A failed statement aborts the whole local transaction: the business change runs in a
    /// savepoint, rolled back to on an integrity constraint violation (SQLSTATE class 23).
    template <class F>
    static dtx::outcome protect(dtx::postgres::connection& db, F business, std::string& violated) {
        db.exec("SAVEPOINT business");
        try {
            dtx::outcome o = business();
            db.exec("RELEASE SAVEPOINT business");
            return o;
        } catch (const dtx::error& e) {
            if (std::string_view(e.what()).find("(SQLSTATE 23") == std::string_view::npos)
                throw;
            db.exec("ROLLBACK TO SAVEPOINT business");
            violated = e.what();
            return dtx::success();
        }
    }
};

namespace {

using namespace dtx;
using namespace dtx::crash;
using namespace std::chrono_literals;

struct settings : workload_settings {
    std::string server;
    int slot = 0;
    bool drain = false;
    bool setup = false;

    settings() { concurrency = 8; }
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "dtx_crash_postgres_workload: " << why
              << "\nusage: dtx_crash_postgres_workload --server CONNINFO --dir D --slot N --seed S "
                 "[--concurrency C]"
                 " [--fault POINT:N | --fault-any N] [--drain | --setup]\n";
    std::exit(2);
}

settings parse(int argc, char** argv) {
    settings s;
    command_line cl(argc, argv, usage);
    auto options = s.options();
    options.push_back(value_option("--server", s.server));
    options.push_back(value_option("--slot", s.slot));
    options.push_back(flag_option("--drain", s.drain));
    options.push_back(flag_option("--setup", s.setup));
    parse_options(cl, options);
    s.check(cl);
    cl.require(!s.server.empty(), "--server is required");
    return s;
}

coordinator_options postgres_options(const settings& s, fault_killer& killer) {
    coordinator_options o = crash_options(killer);
    o.owner = "coordinator-" + std::to_string(s.slot);
    // Long enough that the processes, the server and the sanitizers sharing two cores rarely
    // outlast them; short enough that the test sees many transactions move between processes.
    o.transaction_timeout = 1500ms;
    o.call_timeout = 300ms;
    o.lease = 800ms;
    o.recovery_interval = 100ms;
    o.recovery_batch = 32;
    return o;
}

int run_workload(const settings& s) {
    postgres::journal journal({.conninfo = pg_conninfo(s.server, pg_databases[0]),
                               .retention = std::chrono::hours(24 * 365)});
    const auto barrier = [&](const char* db) {
        return postgres::barrier_options{.conninfo = pg_conninfo(s.server, db), .connections = 2};
    };
    postgres::barrier accounts(barrier(pg_databases[1]));
    postgres::barrier stock(barrier(pg_databases[2]));
    postgres::barrier points(barrier(pg_databases[3]));
    if (s.setup)
        return 0;

    participant_registry reg;
    register_participants<postgres::connection>(reg, accounts, stock, points);

    std::unordered_set<std::string> live;
    fault_killer killer(s.fault, s.dir / ("faults-" + std::to_string(s.slot) + ".log"), live);
    asio::io_context ioc;
    tally t;
    std::exception_ptr failed;
    {
        coordinator coord(ioc.get_executor(), journal, reg, postgres_options(s, killer));
        shared_run run{coord, live, t, s.drain ? 0 : -1};
        asio::signal_set term(ioc, SIGTERM);
        term.async_wait([&](const boost::system::error_code& ec, int) {
            if (ec)
                return;
            run.remaining = 0; // the lanes end after their current transaction
            coord.stop();
        });
        start_background_recovery(coord);
        if (!s.drain)
            start_lanes(ioc.get_executor(), run, s.concurrency, s.seed, [&](std::exception_ptr e) {
                if (!e)
                    return;
                failed = e;
                ioc.stop();
            });
        ioc.run();
    }
    if (failed)
        std::rethrow_exception(failed);
    std::cout << "workload " << s.slot << ": " << t.started << " run (" << t.confirmed
              << " confirmed, " << t.cancelled << " cancelled, " << t.other << " left to recovery)"
              << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const settings s = parse(argc, argv);
    try {
        return run_workload(s);
    } catch (const std::exception& e) {
        std::cerr << "dtx_crash_postgres_workload: " << e.what() << std::endl;
        return 1;
    }
}
