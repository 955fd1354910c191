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
// startup recovery does not reach ends the run with exit code 75 instead. --recover-only stops
// after the startup recovery; --print-points prints how often each point was reached (with
// --transactions, to tune the driver's targets).
//
// Every handler appends (gid, branch, op) to its database's `applied` ledger in the same local
// transaction as its business change; a second execution of the same operation is recorded in
// `anomalies` (the driver fails on any).

#include <dtx/coordinator.hpp>
#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include "participants.hpp"
#include "sqlite_access.hpp"
#include "workload_common.hpp"

namespace {

using namespace dtx;
using namespace dtx::crash;
using namespace std::chrono_literals;

struct settings : workload_settings {
    long transactions = -1; // < 0: until killed
    bool recover_only = false;
    bool print_points = false;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "dtx_crash_workload: " << why
              << "\nusage: dtx_crash_workload --dir D --seed S [--transactions M] [--concurrency C]"
                 " [--fault POINT:N | --fault-any N] [--recover-only] [--print-points]\n";
    std::exit(2);
}

settings parse(int argc, char** argv) {
    settings s;
    command_line cl(argc, argv, usage);
    auto options = s.options();
    options.push_back(value_option("--transactions", s.transactions));
    options.push_back(flag_option("--recover-only", s.recover_only));
    options.push_back(flag_option("--print-points", s.print_points));
    parse_options(cl, options);
    s.check(cl);
    return s;
}

int run_workload(const settings& s) {
    std::unordered_set<std::string> live;
    fault_killer killer(s.fault, s.dir / fault_log_file, live);

    const auto file = [&](const char* name) { return (s.dir / name).string(); };
    sqlite::journal journal(
        {.path = file(journal_file), .retention = std::chrono::hours(24 * 365)});
    sqlite::barrier accounts({.path = file(accounts_file)});
    sqlite::barrier stock({.path = file(stock_file)});
    sqlite::barrier points({.path = file(points_file)});

    participant_registry reg;
    register_participants<sqlite::connection>(reg, accounts, stock, points);

    asio::io_context ioc;
    tally t;
    bool target_missed = false;
    {
        coordinator coord(ioc.get_executor(), journal, reg, crash_options(killer));
        shared_run run{coord, live, t, s.transactions};
        workload_plan plan{
            .concurrency = s.concurrency, .seed = s.seed, .recovery = true, .go_on = [&] {
                if (s.recover_only)
                    return false;
                target_missed = killer.recovery_target();
                return !target_missed;
            }};
        run_workload_lanes(ioc, run, plan);
    }
    std::cout << "workload: " << t.recovered << " recovered in " << t.recovery_passes << " passes; "
              << t.started << " run (" << t.confirmed << " confirmed, " << t.cancelled
              << " cancelled, " << t.other << " left to recovery)" << std::endl;
    if (s.print_points)
        std::cout << "fault points reached:\n" << killer.counts() << std::flush;
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
