// The HTTP failure test: transactions between processes over HTTP, through a proxy that injects
// faults, while processes are killed with SIGKILL.
//
//   dtx_http_chaos [--kills K] [--transactions N] [--seed S] [--concurrency C] [--check-every N]
//                  [--dir D] [--keep] [--verbose] [--no-faults] [--break barrier|recovery]
//
// It has five parts:
//   - three participant processes (this executable, "participant" role), each serving over HTTP
//     (dtx::http::server) the participants of its own SQLite database behind the SQLite barrier:
//     "accounts" (TCC), "stock" (TCC) with "stock-saga" (saga), and "points" (saga), the crash
//     tests' participants of participants.hpp, with their ledgers;
//   - one coordinator process ("coordinator" role) with a SQLite journal, running TCC
//     transactions, sagas and planned sagas (coord.saga(steps)) against the participants by URL
//     (dtx::http::url_resolver), so the journal holds URLs and recovery in a restarted process
//     calls them again;
//   - three fault-injecting proxies (tests/support/fault_proxy.hpp) in this process, one in front
//     of each participant process: every request the coordinator sends goes through one. On a
//     schedule drawn from the seed they delay requests and answers, drop requests, drop answers
//     after the participant executed (the coordinator retries: a duplicate), send requests twice,
//     and hold requests back to forward them after the coordinator moved on (a try after its
//     cancel);
//   - the kill loop: every 100 to 700 ms it kills, with SIGKILL, either the coordinator (started
//     again at once; its startup recovery finishes what its previous life left, over HTTP) or one
//     participant process (started again on the same port after up to 300 ms, meanwhile the proxy
//     answers 502). A quarter of the coordinators it starts again kill themselves at a random
//     journal write or branch call (--fault-any, crash_common.hpp). It goes on until K kills are
//     done and the journal holds N transactions;
//   - the checks, every --check-every kills and at the end: the coordinator is killed, a
//     coordinator that only recovers runs until nothing is unfinished (faults still on), the
//     proxies finish what they hold back, and the invariants of invariants.hpp are checked over
//     the journal and the participants' databases: every transaction confirmed or cancelled at
//     every participant as its outcome requires (journal against the ledgers), no operation
//     executed twice or out of order (the barrier), money and stock conserved, nothing frozen
//     or reserved, no anomaly in any process's log. The recovering coordinator must finish within
//     --watchdog-ms (default 120 s).
// The last line counts transactions, kills of each kind and faults of each kind, with the seed:
//   http chaos test: seed S, T transactions (…), K kills (…), proxies: R requests, …, invariants
//   hold
// The seed gives the same transactions and the same schedule of proxy faults; the timing of the
// processes, and so what a fault or kill strikes, differs from run to run.
//
// --break barrier runs the participants without their barrier, --break recovery the coordinator
// without recovery: the checks must then fail (a way to see that they can). --no-faults switches
// the proxies' faults off. --workload names the executable that plays the roles (this one by
// default). On a violated invariant the data directory is kept (logs of every
// process in it). scripts/soak.sh --http runs a longer test.
//
// The roles the driver starts (not meant to be run by hand):
//   dtx_http_chaos participant --dir D --serve accounts|stock|points --port P [--no-barrier]
//   dtx_http_chaos coordinator --dir D --seed S --accounts URL --stock URL --points URL
//                  [--concurrency C] [--fault-any N] [--recover-only] [--no-recovery]

#include <dtx/coordinator.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/remote_participant.hpp>
#include <dtx/http/server.hpp>
#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "../support/fault_proxy.hpp"
#include "child_process.hpp"
#include "crash_common.hpp"
#include "invariants.hpp"
#include "participants.hpp"
#include "sqlite_access.hpp"
#include "sqlite_data.hpp"
#include "workload_common.hpp"
#include <unistd.h>

namespace {

using namespace dtx;
using namespace dtx::crash;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

/// The participant processes: each serves the participants of one database.
constexpr std::array<const char*, 3> processes = {"accounts", "stock", "points"};

const char* database_of(std::string_view process) {
    if (process == "accounts")
        return accounts_file;
    if (process == "stock")
        return stock_file;
    return points_file;
}

/// The process that serves a participant ("stock-saga" is served with "stock").
std::size_t process_of(std::string_view participant) {
    if (participant == "accounts")
        return 0;
    if (participant == "stock" || participant == "stock-saga")
        return 1;
    return 2;
}

[[noreturn]] void usage(const std::string& why) {
    std::cerr
        << "dtx_http_chaos: " << why
        << "\nusage: dtx_http_chaos [--kills K] [--transactions N] [--seed S] [--concurrency C]"
           " [--check-every N] [--dir D] [--keep] [--verbose] [--no-faults] [--break "
           "barrier|recovery]"
           " [--workload PATH] [--watchdog-ms MS]\n";
    std::exit(2);
}

// ---- the participant role ---------------------------------------------------------------------

/// The participants without their barrier (--break barrier): each operation runs in a local
/// transaction of the participant's database, but nothing screens duplicates, compensations
/// without their action, or tries after their cancel.
class unguarded : public dtx::detail::barrier_registration<unguarded, sqlite::connection> {
public:
    explicit unguarded(sqlite::barrier& db)
        : db_(db) {}

    asio::awaitable<outcome> guard(const branch_request& r,
                                   const sqlite::barrier_handler& handler) {
        auto job = [req = dtx::detail::owned_request(r), &handler](sqlite::connection& db) {
            outcome o = handler(db, req.view());
            if (!o.is_success())
                throw refused{o}; // undo what the handler did
            return o;
        };
        outcome answer;
        try {
            answer = co_await db_.run<outcome>(std::move(job));
        } catch (const refused& x) {
            answer = x.answer;
        }
        co_return answer;
    }

private:
    struct refused {
        outcome answer;
    };
    sqlite::barrier& db_;
};

struct participant_settings {
    fs::path dir;
    std::string serve;
    std::uint16_t port = 0;
    bool no_barrier = false;
};

template <class Barrier>
void register_process(participant_registry& reg, std::string_view process, Barrier& b) {
    if (process == "accounts")
        register_accounts<sqlite::connection>(reg, b);
    else if (process == "stock")
        register_stock<sqlite::connection>(reg, b);
    else
        register_points<sqlite::connection>(reg, b);
}

int run_participant(const participant_settings& s) {
    sqlite::barrier barrier({.path = (s.dir / database_of(s.serve)).string()});
    unguarded loose(barrier);
    participant_registry reg;
    if (s.no_barrier)
        register_process(reg, s.serve, loose);
    else
        register_process(reg, s.serve, barrier);

    asio::io_context ioc;
    http::server_options o;
    o.port = s.port;
    // The port of a killed predecessor may still be held for a moment: try again for a while.
    std::optional<http::server> srv;
    for (int attempt = 1;; ++attempt) {
        try {
            srv.emplace(ioc, reg, o);
            srv->start();
            break;
        } catch (const boost::system::system_error& e) {
            srv.reset();
            if (attempt == 200)
                throw;
            std::this_thread::sleep_for(25ms);
        }
    }
    asio::signal_set signals(ioc, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) {
        asio::co_spawn(ioc, srv->async_stop(), asio::detached);
    });
    std::cout << "serving " << s.serve << " on port " << srv->port()
              << (s.no_barrier ? " WITHOUT the barrier" : "") << std::endl;
    ioc.run();
    return 0;
}

// ---- the coordinator role ---------------------------------------------------------------------

struct coordinator_settings : workload_settings {
    std::array<std::string, processes.size()> base_urls; // http://127.0.0.1:port/dtx
    bool recover_only = false;
    bool no_recovery = false;
};

int run_coordinator(const coordinator_settings& s) {
    std::unordered_set<std::string> live;
    fault_killer killer(s.fault, s.dir / fault_log_file, live);
    // Shared, not exclusive: the driver counts the journal's transactions while this process runs.
    sqlite::journal journal({.path = (s.dir / journal_file).string(),
                             .retention = std::chrono::hours(24 * 365),
                             .exclusive = false});

    asio::io_context ioc;
    http::client_options co;
    co.connect_timeout = 1s;
    co.request_timeout = 3s;
    http::client client(ioc.get_executor(), co);
    participant_registry reg;
    reg.set_resolver(http::url_resolver(client));

    tally t;
    {
        coordinator coord(ioc.get_executor(), journal, reg, crash_options(killer));
        shared_run run{coord, live, t, -1, [&](const std::string& name) {
                           return s.base_urls[process_of(name)] + "/" + name;
                       }};
        workload_plan plan{
            .concurrency = s.concurrency, .seed = s.seed, .recovery = !s.no_recovery, .go_on = [&] {
                std::cout << "startup recovery: " << t.recovered << " finished in "
                          << t.recovery_passes << " passes" << std::endl;
                return !s.recover_only;
            }};
        run_workload_lanes(ioc, run, plan);
    }
    return 0;
}

// ---- the driver -------------------------------------------------------------------------------

struct settings : driver_settings {
    long transactions = 2000;
    bool faults = true;
    std::string broken; // "", "barrier" or "recovery"

    settings() {
        kills = 40;
        concurrency = 16;
        check_every = 0;       // at the end only
        watchdog_ms = 120'000; // for the recovering coordinator
    }
};

settings parse(command_line& cl) {
    settings s;
    auto options = s.options();
    options.insert(options.end(),
                   {
                       value_option("--transactions", s.transactions),
                       {"--no-faults", [&s](command_line&) { s.faults = false; }},
                       {"--break",
                        [&s](command_line& cl) {
                            s.broken = std::string(cl.value());
                            cl.require(s.broken == "barrier" || s.broken == "recovery",
                                       "--break wants barrier or recovery");
                        }},
                   });
    parse_options(cl, options);
    cl.require(s.kills >= 0 && s.check_every >= 0, "--kills and --check-every cannot be negative");
    s.finish(nullptr); // the workload is this executable, in its participant and coordinator roles
    return s;
}

/// A free port below the system's ephemeral range (an outgoing connection cannot take it while
/// its participant is down).
std::uint16_t free_port(std::mt19937_64& rng) {
    asio::io_context ioc;
    for (;;) {
        const auto port =
            static_cast<std::uint16_t>(std::uniform_int_distribution<int>(20'000, 32'000)(rng));
        asio::ip::tcp::acceptor a(ioc);
        boost::system::error_code ec;
        const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
        if (!a.open(ep.protocol(), ec) && !a.bind(ep, ec))
            return port;
    }
}

/// The proxies, on a thread of their own.
class proxy_set {
public:
    proxy_set(const std::array<std::uint16_t, processes.size()>& upstream, std::uint64_t seed,
              bool faults) {
        for (std::size_t i = 0; i < upstream.size(); ++i) {
            all_.push_back(std::make_unique<test::fault_proxy>(ioc_.get_executor(), upstream[i],
                                                               seed * 31 + i));
            all_.back()->set_faults(faults);
            all_.back()->start();
        }
        thread_ = std::thread([this] {
            ioc_.run();
            finished_ = true;
        });
    }
    /// Stops the proxies; the thread ends once their connections are closed (at once, if the
    /// requests held back were drained), or is stopped after 5 s.
    ~proxy_set() {
        for (auto& p : all_)
            p->stop();
        const auto until = steady::now() + 5s;
        while (!finished_ && steady::now() < until)
            std::this_thread::sleep_for(1ms);
        ioc_.stop();
        thread_.join();
    }
    proxy_set(const proxy_set&) = delete;
    proxy_set& operator=(const proxy_set&) = delete;

    std::uint16_t port(std::size_t i) const { return all_[i]->port(); }

    /// Waits until nothing is held back or being forwarded; false after `limit`.
    bool drain(std::chrono::milliseconds limit) const {
        const auto until = steady::now() + limit;
        for (;;) {
            std::size_t n = 0;
            for (const auto& p : all_)
                n += p->in_flight();
            if (n == 0)
                return true;
            if (steady::now() > until)
                return false;
            std::this_thread::sleep_for(5ms);
        }
    }

    /// "R requests, 502 answers U, delayed requests …" over all proxies.
    std::string summary() const {
        std::uint64_t requests = 0, unreachable = 0, late_refused = 0;
        std::array<std::uint64_t, test::proxy_fault_count> faults{};
        for (const auto& p : all_) {
            const auto& c = p->counters();
            requests += c.requests;
            unreachable += c.unreachable;
            late_refused += c.late_refused;
            for (std::size_t f = 0; f < faults.size(); ++f)
                faults[f] += c.faults[f];
        }
        std::string out = std::to_string(requests) + " requests";
        for (std::size_t f = 0; f < faults.size(); ++f)
            out += ", " + std::to_string(faults[f]) + " " +
                   test::to_string(static_cast<test::proxy_fault>(f));
        out += " (" + std::to_string(late_refused) + " late tries or actions refused), " +
               std::to_string(unreachable) + " answered 502 (participant down)";
        return out;
    }

private:
    asio::io_context ioc_;
    std::vector<std::unique_ptr<test::fault_proxy>> all_;
    std::atomic<bool> finished_{false};
    std::thread thread_;
};

/// Whether the data directory stays after a run ending with `rc`: after a failure (but not an
/// expected one, of a --break run), with --keep, or if it was given.
bool keeps_data(const settings& s, int rc) {
    return !s.own_dir || s.keep || (rc != 0 && s.broken.empty());
}

class driver {
public:
    explicit driver(const settings& s)
        : s_(s)
        , rng_(s.seed)
        , faults_{s.dir / fault_log_file, 0} {}

    int run() {
        const auto t0 = steady::now();
        std::cout << "http chaos test: seed " << s_.seed << ", " << s_.kills << " kills, "
                  << s_.transactions << " transactions" << (s_.faults ? "" : ", no proxy faults")
                  << (s_.broken.empty() ? "" : ", BROKEN " + s_.broken) << ", data in "
                  << s_.dir.string() << std::endl;
        create_participant_databases(s_.dir);
        std::array<std::uint16_t, processes.size()> ports{};
        for (auto& p : ports)
            p = free_port(rng_);
        proxies_.emplace(ports, s_.seed, s_.faults);
        for (std::size_t i = 0; i < processes.size(); ++i) {
            participant_args_[i] = {s_.workload.string(),
                                    "participant",
                                    "--dir",
                                    s_.dir.string(),
                                    "--serve",
                                    processes[i],
                                    "--port",
                                    std::to_string(ports[i])};
            if (s_.broken == "barrier")
                participant_args_[i].push_back("--no-barrier");
            start_participant(i);
        }
        start_coordinator(false);

        long journaled = 0;
        int next_check = s_.check_every;
        auto last_progress = steady::now();
        while (kills_ < s_.kills || journaled < s_.transactions) {
            if (auto why = wait(std::chrono::milliseconds(uniform(100, 700))))
                return fail(*why);
            if (uniform(0, 99) < 35) {
                kill_coordinator();
                start_coordinator(uniform(0, 99) < 25);
            } else {
                const auto i = static_cast<std::size_t>(uniform(0, processes.size() - 1));
                participants_[i]->kill();
                ++kills_;
                ++participant_kills_[i];
                if (s_.verbose)
                    std::cout << "  kill " << kills_ << ": participant " << processes[i]
                              << std::endl;
                std::this_thread::sleep_for(std::chrono::milliseconds(uniform(0, 300)));
                start_participant(i);
            }
            const long now = count_transactions(journaled);
            if (now > journaled)
                last_progress = steady::now();
            journaled = now;
            if (steady::now() - last_progress > 60s)
                return fail("no new transaction in the journal for 60 s");
            if (s_.check_every > 0 && kills_ >= next_check && kills_ < s_.kills) {
                next_check = kills_ + s_.check_every;
                if (auto v = settle_and_check())
                    return fail(*v);
                const double secs = std::chrono::duration<double>(steady::now() - t0).count();
                std::cout << "  " << kills_ << " kills, " << sum_.transactions
                          << " transactions, invariants hold (" << static_cast<int>(secs) << " s)"
                          << std::endl;
                start_coordinator(false);
            }
        }
        if (auto v = settle_and_check())
            return fail(*v);

        const double secs = std::chrono::duration<double>(steady::now() - t0).count();
        std::cout << recovered_at_startup()
                  << " transactions finished by coordinators' startup recovery, " << checks_
                  << " recover-and-check rounds, " << sum_.ledger_rows
                  << " handler executions in the ledgers, " << static_cast<int>(secs) << " s\n";
        std::cout << "http chaos test: seed " << s_.seed << ", " << sum_.transactions
                  << " transactions (" << sum_.confirmed << " confirmed, " << sum_.cancelled
                  << " cancelled; TCC " << sum_.tcc_confirmed << "/" << sum_.tcc_cancelled
                  << ", sagas " << sum_.saga_confirmed << "/" << sum_.saga_cancelled << "), "
                  << kills_ << " kills (coordinator " << coordinator_kills_ << " at random, "
                  << coordinator_fault_kills_ << " at fault points; participants accounts "
                  << participant_kills_[0] << ", stock " << participant_kills_[1] << ", points "
                  << participant_kills_[2] << "), proxies: " << proxies_->summary()
                  << ", invariants hold" << std::endl;
        return 0;
    }

private:
    int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
    int uniform(int lo, std::size_t hi) { return uniform(lo, static_cast<int>(hi)); }

    fs::path participant_log(std::size_t i) const {
        return s_.dir / ("participant-" + std::string(processes[i]) + ".log");
    }
    fs::path coordinator_log() const { return s_.dir / "coordinator.log"; }

    void start_participant(std::size_t i) {
        participants_[i] =
            std::make_unique<child_process>(participant_args_[i], participant_log(i));
    }

    std::vector<std::string> coordinator_args() const {
        std::vector<std::string> args = {
            s_.workload.string(), "coordinator",   "--dir",
            s_.dir.string(),      "--concurrency", std::to_string(s_.concurrency)};
        for (std::size_t i = 0; i < processes.size(); ++i) {
            args.push_back("--" + std::string(processes[i]));
            args.push_back("http://127.0.0.1:" + std::to_string(proxies_->port(i)) + "/dtx");
        }
        if (s_.broken == "recovery")
            args.push_back("--no-recovery");
        return args;
    }

    /// Starts a coordinator that runs transactions (drawn from a seed of its own), killing itself
    /// at a random fault point if `at_fault`.
    void start_coordinator(bool at_fault) {
        auto args = coordinator_args();
        const std::uint64_t seed = s_.seed * 1'000'003u + static_cast<std::uint64_t>(++lives_);
        args.insert(args.end(), {"--seed", std::to_string(seed)});
        if (at_fault)
            args.insert(args.end(), {"--fault-any", std::to_string(uniform(1, 400))});
        coordinator_ = std::make_unique<child_process>(std::move(args), coordinator_log());
    }

    void kill_coordinator() {
        if (!coordinator_)
            return;
        const exit_status e = coordinator_->kill();
        coordinator_.reset();
        if (!faults_.fresh().empty()) {
            ++coordinator_fault_kills_; // it had killed itself just before
        } else {
            ++coordinator_kills_;
            if (s_.verbose)
                std::cout << "  kill " << kills_ + 1 << ": coordinator (" << describe(e) << ")"
                          << std::endl;
        }
        ++kills_;
    }

    /// Waits `d`, watching the processes: a participant must not end, a coordinator only by
    /// killing itself at its fault point (it is started again). Why it failed, if it did.
    std::optional<std::string> wait(std::chrono::milliseconds d) {
        const auto until = steady::now() + d;
        while (steady::now() < until) {
            for (std::size_t i = 0; i < processes.size(); ++i)
                if (auto e = participants_[i]->poll())
                    return "participant " + std::string(processes[i]) + " " + describe(*e) + "\n" +
                           tail(participant_log(i), 20);
            if (auto e = coordinator_->poll()) {
                const auto lines = faults_.fresh();
                if (!e->killed || lines.empty())
                    return "the coordinator " + describe(*e) + "\n" + tail(coordinator_log(), 20);
                ++coordinator_fault_kills_;
                ++kills_;
                if (s_.verbose)
                    std::cout << "  kill " << kills_ << ": coordinator at " << lines.back()
                              << std::endl;
                start_coordinator(false);
            }
            std::this_thread::sleep_for(5ms);
        }
        return std::nullopt;
    }

    /// The transactions the coordinators' startup recoveries finished, from their log.
    long recovered_at_startup() const {
        std::ifstream in(coordinator_log());
        long n = 0;
        const std::string_view prefix = "startup recovery: ";
        for (std::string l; std::getline(in, l);) {
            if (!l.starts_with(prefix))
                continue;
            const std::string_view rest = std::string_view(l).substr(prefix.size());
            n += parse_number(rest.substr(0, rest.find(' '))).value_or(0);
        }
        return n;
    }

    long count_transactions(long before) const {
        try {
            return journaled_transactions(s_.dir);
        } catch (const std::exception&) {
            return before; // busy: a coordinator is recovering the file after a kill
        }
    }

    /// Kills the coordinator, lets a coordinator that only recovers finish everything, waits for
    /// the proxies' held-back requests, and checks the invariants. The violations, if any.
    std::optional<std::string> settle_and_check() {
        ++checks_;
        kill_coordinator();
        auto args = coordinator_args();
        args.push_back("--recover-only");
        child_process recovering(std::move(args), coordinator_log());
        const auto e =
            recovering.wait_until(steady::now() + std::chrono::milliseconds(s_.watchdog_ms));
        if (!e)
            return "the recover-only coordinator did not finish within " +
                   std::to_string(s_.watchdog_ms) + " ms";
        if (e->killed || e->signal || e->code != 0)
            return "the recover-only coordinator " + describe(*e) + "\n" +
                   tail(coordinator_log(), 20);
        if (!proxies_->drain(30s))
            return "the proxies still forward requests after 30 s";
        violations v;
        sum_ = {};
        checker(v).check(read_snapshot(s_.dir), sum_);
        check_log(coordinator_log(), v);
        for (std::size_t i = 0; i < processes.size(); ++i)
            check_log(participant_log(i), v);
        if (v.empty())
            return std::nullopt;
        return v.report();
    }

    int fail(const std::string& why) {
        std::cerr << "http chaos test FAILED (seed " << s_.seed << ", after " << kills_
                  << " kills): " << why << "\nproxies: " << proxies_->summary() << std::endl;
        if (keeps_data(s_, 1))
            std::cerr << "data kept in " << s_.dir.string() << std::endl;
        return 1;
    }

    const settings& s_;
    std::mt19937_64 rng_;
    fault_log faults_;
    std::optional<proxy_set> proxies_;
    std::array<std::vector<std::string>, processes.size()> participant_args_;
    std::array<std::unique_ptr<child_process>, processes.size()> participants_;
    std::unique_ptr<child_process> coordinator_;
    int lives_ = 0, kills_ = 0, checks_ = 0;
    int coordinator_kills_ = 0, coordinator_fault_kills_ = 0;
    std::array<int, processes.size()> participant_kills_{};
    check_summary sum_;
};

int run_driver(settings s) {
    s.own_dir = s.dir.empty();
    if (s.own_dir)
        s.dir = fs::temp_directory_path() /
                ("dtx-http-chaos-" + std::to_string(::getpid()) + "-" + std::to_string(s.seed));
    if (fs::exists(s.dir) && !fs::is_empty(s.dir))
        usage(s.dir.string() + " is not empty");
    int rc = 1;
    try {
        rc = driver(s).run();
    } catch (const std::exception& e) {
        std::cerr << "http chaos test FAILED: " << e.what() << " (data kept in " << s.dir.string()
                  << ")" << std::endl;
        return 1;
    }
    if (!keeps_data(s, rc)) {
        std::error_code ec;
        fs::remove_all(s.dir, ec);
    }
    return rc;
}

// ---- the command line -------------------------------------------------------------------------

std::uint16_t port_number(command_line& cl) {
    const long p = cl.number();
    if (p < 1 || p > 65535)
        cl.fail("--port must be from 1 to 65535");
    return static_cast<std::uint16_t>(p);
}

participant_settings parse_participant(command_line& cl) {
    participant_settings s;
    while (const auto next = cl.next()) {
        const std::string_view a = *next;
        if (a == "--dir")
            s.dir = std::string(cl.value());
        else if (a == "--serve")
            s.serve = std::string(cl.value());
        else if (a == "--port")
            s.port = port_number(cl);
        else if (a == "--no-barrier")
            s.no_barrier = true;
        else
            usage("unknown participant argument " + std::string(a));
    }
    if (s.dir.empty() || s.port == 0)
        usage("a participant needs --dir and --port");
    if (s.serve != "accounts" && s.serve != "stock" && s.serve != "points")
        usage("--serve wants accounts, stock or points");
    return s;
}

coordinator_settings parse_coordinator(command_line& cl) {
    coordinator_settings s;
    auto options = s.options();
    // Each process's base URL: --accounts, --stock, --points (in the order of `processes`).
    constexpr std::array<const char*, 3> url_options = {"--accounts", "--stock", "--points"};
    static_assert(url_options.size() == processes.size());
    for (std::size_t i = 0; i < processes.size(); ++i)
        options.push_back({url_options[i], [&s, i](command_line& cl) {
                               s.base_urls[i] = std::string(cl.value());
                           }});
    options.push_back(flag_option("--recover-only", s.recover_only));
    options.push_back(flag_option("--no-recovery", s.no_recovery));
    parse_options(cl, options);
    s.check(cl);
    for (const auto& u : s.base_urls)
        cl.require(!u.empty(), "a coordinator needs --accounts, --stock and --points");
    return s;
}

} // namespace

int main(int argc, char** argv) {
    const std::string_view role = argc > 1 ? argv[1] : "";
    const bool child = role == "participant" || role == "coordinator";
    // A role's options start after the role.
    command_line cl(child ? argc - 1 : argc, child ? argv + 1 : argv, usage);
    try {
        if (role == "participant")
            return run_participant(parse_participant(cl));
        if (role == "coordinator")
            return run_coordinator(parse_coordinator(cl));
    } catch (const std::exception& e) {
        std::cerr << "dtx_http_chaos " << role << ": " << e.what() << std::endl;
        return 1;
    }
    return run_driver(parse(cl));
}
