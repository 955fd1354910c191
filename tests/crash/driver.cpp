// The real-crash test: runs the workload (dtx_crash_workload) over one data directory again and
// again, killing it with SIGKILL each time, and checks that recovery leaves everything consistent.
//
//   dtx_crash_driver [--kills K] [--seed S] [--workload PATH] [--dir D] [--keep]
//                    [--check-every N] [--concurrency C] [--watchdog-ms MS] [--verbose]
//   dtx_crash_driver --check-only --dir D
//
// Each run of the workload ends in one of three ways, chosen at random:
//   - random:  the driver kills it (kill -9) a random few to tens of milliseconds after starting
//   it;
//   - point:   it kills itself (raise(SIGKILL)) at the N-th occurrence of a named fault point,
//              the names cycling over every journal write and branch call of TCC, sagas and
//              recovery (crash_common.hpp);
//   - any:     it kills itself at its N-th fault point of any kind.
// Only a death by SIGKILL counts as a kill. Every --check-every kills, and at the end, the
// workload runs once more in --recover-only mode, and the driver checks, reading the SQLite files:
//   - the journal holds no unfinished transaction, and every confirmed one has branches at both
//     of its kind's participants;
//   - per gid and branch, the participants' ledgers hold exactly what the outcome requires
//     (TCC confirmed: try+confirm; cancelled: nothing, or try+cancel; saga confirmed: action;
//     cancelled: nothing, or action+compensate), and no ledger row lacks its journal branch;
//   - no handler ever ran twice or found the state inconsistent (`anomalies` empty, and no
//     "ANOMALY" in the workload's output);
//   - balances, stock and points equal what the confirmed transactions' payloads imply, money and
//     stock are conserved, nothing is frozen or reserved, no barrier row is unfinished.
// Prints one line at the end: "crash test: K kills (…), T transactions (…), invariants hold"
// ("random" counts every kill by the driver, including the watchdog's, when a target was not
// reached within --watchdog-ms). Exits non-zero with the violated invariants otherwise, keeping
// the data directory. Without --dir it works in a fresh directory under $TMPDIR (or /tmp),
// removed after a success unless --keep.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "child_process.hpp"
#include "crash_common.hpp"
#include "invariants.hpp"
#include "sqlite_data.hpp"
#include <unistd.h>

namespace {

using namespace dtx::crash;
namespace fs = std::filesystem;

struct settings : driver_settings {
    bool check_only = false;

    settings() {
        kills = 200;
        check_every = 100;
        concurrency = 16;
        watchdog_ms = 3000;
    }
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr
        << "dtx_crash_driver: " << why
        << "\nusage: dtx_crash_driver [--kills K] [--seed S] [--workload PATH] [--dir D] [--keep]"
           " [--check-every N] [--concurrency C] [--watchdog-ms MS] [--verbose]\n"
           "       dtx_crash_driver --check-only --dir D   (checks a kept data directory as it "
           "is)\n";
    std::exit(2);
}

settings parse(int argc, char** argv) {
    settings s;
    command_line cl(argc, argv, usage);
    auto options = s.options();
    options.push_back(flag_option("--check-only", s.check_only));
    parse_options(cl, options);
    cl.require(s.check_every >= 1, "--check-every must be at least 1");
    cl.require(s.kills >= 1, "--kills must be at least 1");
    s.finish("dtx_crash_workload");
    return s;
}

// ---- running the workload ---------------------------------------------------------------------

/// Starts the workload in the data directory, its output appended to workload.log.
std::unique_ptr<child_process> start_workload(const settings& s,
                                              const std::vector<std::string>& extra) {
    std::vector<std::string> args = {s.workload.string(), "--dir", s.dir.string(), "--concurrency",
                                     std::to_string(s.concurrency)};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<child_process>(std::move(args), s.dir / "workload.log");
}

/// The invariants (invariants.hpp), checked once the workload has recovered everything.
violations check(const fs::path& dir, check_summary& sum) {
    violations v;
    sum = {};
    checker(v).check(read_snapshot(dir), sum);
    check_log(dir / "workload.log", v);
    return v;
}

// ---- the kill loop ----------------------------------------------------------------------------

int run(const settings& s) {
    const auto t0 = steady::now();
    std::cout << "crash test: seed " << s.seed << ", " << s.kills << " kills, data in "
              << s.dir.string() << std::endl;
    create_participant_databases(s.dir);

    std::mt19937_64 rng(s.seed);
    auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const auto& targets = fault_targets();
    std::size_t next_target = 0;
    const fault_target* again = nullptr; // a recovery target to aim at again
    int again_tries = 0;
    bool force_run_kill = false;

    int kills = 0, random_kills = 0, watchdog_kills = 0, point_kills = 0, misses = 0, runs = 0,
        checks = 0;
    std::map<std::string, int> by_point; // kills per fault point
    std::map<std::string, int> missed;   // targets not reached
    fault_log faults{s.dir / fault_log_file, 0};
    check_summary sum;

    const auto fail = [&](const std::string& why) {
        std::cerr << "crash test FAILED (seed " << s.seed << ", after " << kills
                  << " kills): " << why << "\nlast workload output:\n"
                  << tail(s.dir / "workload.log", 30) << "data kept in " << s.dir.string()
                  << std::endl;
        return 1;
    };

    const auto recover_and_check = [&]() -> std::optional<std::string> {
        ++checks;
        auto w = start_workload(s, {"--seed", std::to_string(s.seed), "--recover-only"});
        auto e = w->wait_until(steady::now() + std::chrono::seconds(60));
        if (!e)
            return "the recover-only run did not finish within 60 s";
        if (e->killed || e->signal || e->code != 0)
            return "the recover-only run " + describe(*e);
        const violations v = check(s.dir, sum);
        if (v.empty())
            return std::nullopt;
        return v.report();
    };

    while (kills < s.kills) {
        ++runs;
        const std::uint64_t wseed = s.seed * 1'000'003u + static_cast<std::uint64_t>(runs);
        std::vector<std::string> args = {"--seed", std::to_string(wseed)};
        enum class mode { random, point, any } m;
        const fault_target* t = nullptr;
        int delay_min_us = 2'000;
        if (force_run_kill) {
            // The last recovery target found nothing to recover: leave it something first.
            m = mode::random;
            delay_min_us = 20'000;
            force_run_kill = false;
        } else if (again) {
            m = mode::point;
            t = again;
            again = nullptr;
        } else {
            const int dice = uniform(0, 99);
            m = dice < 35 ? mode::random : dice < 80 ? mode::point : mode::any;
            if (m == mode::point) {
                t = &targets[next_target++ % targets.size()];
                again_tries = 0;
            }
        }
        std::string target;
        if (m == mode::point) {
            target = t->name;
            args.push_back("--fault");
            args.push_back(target + ":" + std::to_string(uniform(1, t->max_nth)));
        } else if (m == mode::any) {
            args.push_back("--fault-any");
            args.push_back(std::to_string(uniform(1, 400)));
        }

        auto w = start_workload(s, args);
        std::optional<exit_status> e;
        bool by_driver = false;
        if (m == mode::random) {
            // A few to tens of milliseconds: in startup, recovery, or the middle of the run.
            e = w->wait_until(w->started() +
                              std::chrono::microseconds(uniform(delay_min_us, 80'000)));
            if (!e) {
                e = w->kill();
                by_driver = true;
            }
        } else {
            e = w->wait_until(w->started() + std::chrono::milliseconds(s.watchdog_ms));
            if (!e) {
                e = w->kill();
                by_driver = true;
            }
        }

        const auto lines = faults.fresh();
        if (e->killed) {
            ++kills;
            if (!lines.empty()) {
                ++point_kills;
                const std::string name = lines.back().substr(0, lines.back().find(' '));
                ++by_point[name];
                if (s.verbose)
                    std::cout << "  kill " << kills << " at " << lines.back() << std::endl;
            } else if (by_driver && m == mode::random) {
                ++random_kills;
                if (s.verbose)
                    std::cout << "  kill " << kills << " at random" << std::endl;
            } else {
                ++watchdog_kills;
                ++missed[m == mode::point ? target : "any"];
                if (s.verbose)
                    std::cout << "  kill " << kills << " by the watchdog (" << target << ")"
                              << std::endl;
            }
        } else if (m == mode::point && e->code == exit_target_not_reached &&
                   target.starts_with("rec/")) {
            ++misses;
            if (s.verbose)
                std::cout << "  " << target << " not reached by recovery" << std::endl;
            if (++again_tries <= 3) {
                again = t; // after a kill that leaves something to recover
                force_run_kill = true;
            } else {
                ++missed[target];
            }
        } else {
            const std::string what = m == mode::random  ? "random kill"
                                     : m == mode::point ? target
                                                        : "any point";
            return fail("a workload run (" + what + ") " + describe(*e));
        }

        if (kills % s.check_every == 0 && kills > 0 && kills < s.kills && e->killed) {
            if (auto v = recover_and_check())
                return fail(*v);
            const double secs = std::chrono::duration<double>(steady::now() - t0).count();
            std::cout << "  " << kills << " kills, " << sum.transactions
                      << " transactions, invariants hold (" << static_cast<int>(secs) << " s)"
                      << std::endl;
        }
    }
    if (auto v = recover_and_check())
        return fail(*v);

    const double secs = std::chrono::duration<double>(steady::now() - t0).count();
    std::cout << "kills at fault points:";
    for (const auto& [name, n] : by_point)
        std::cout << "\n  " << name << ": " << n;
    std::cout << "\ntargets not reached (no kill there, or the watchdog killed instead):";
    if (missed.empty())
        std::cout << " none";
    for (const auto& [name, n] : missed)
        std::cout << "\n  " << name << ": " << n;
    std::cout << "\n"
              << runs << " runs (" << misses << " found nothing to recover), " << watchdog_kills
              << " watchdog kills, " << checks << " recover-and-check rounds, " << sum.ledger_rows
              << " handler executions in the ledgers, " << static_cast<int>(secs) << " s\n";
    std::cout << "crash test: " << kills << " kills (" << random_kills + watchdog_kills
              << " random, " << point_kills << " at fault points), " << sum.transactions
              << " transactions (" << sum.confirmed << " confirmed, " << sum.cancelled
              << " cancelled; TCC " << sum.tcc_confirmed << "/" << sum.tcc_cancelled << ", sagas "
              << sum.saga_confirmed << "/" << sum.saga_cancelled << "), invariants hold"
              << std::endl;
    if (s.own_dir && !s.keep) {
        std::error_code ec;
        fs::remove_all(s.dir, ec);
    }
    return 0;
}

} // namespace

/// Checks a kept data directory as it is (after a failure, or by hand).
int check_only(const settings& s) {
    check_summary sum;
    const violations v = check(s.dir, sum);
    for (const auto& x : v.all())
        std::cout << "  " << x << "\n";
    std::cout << sum.transactions << " transactions (" << sum.confirmed << " confirmed, "
              << sum.cancelled << " cancelled), "
              << (v.empty() ? "invariants hold" : std::to_string(v.size()) + " violation(s)")
              << std::endl;
    return v.empty() ? 0 : 1;
}

int main(int argc, char** argv) {
    settings s = parse(argc, argv);
    if (s.check_only) {
        if (s.dir.empty())
            usage("--check-only needs --dir");
        try {
            return check_only(s);
        } catch (const std::exception& e) {
            std::cerr << "dtx_crash_driver: " << e.what() << std::endl;
            return 1;
        }
    }
    s.own_dir = s.dir.empty();
    if (s.own_dir)
        s.dir = fs::temp_directory_path() /
                ("dtx-crash-" + std::to_string(::getpid()) + "-" + std::to_string(s.seed));
    if (fs::exists(s.dir) && !fs::is_empty(s.dir))
        usage(s.dir.string() + " is not empty");
    if (!fs::exists(s.workload))
        usage("no workload executable at " + s.workload.string() + " (give --workload)");
    try {
        return run(s);
    } catch (const std::exception& e) {
        std::cerr << "crash test FAILED: " << e.what() << " (data kept in " << s.dir.string() << ")"
                  << std::endl;
        return 1;
    }
}
