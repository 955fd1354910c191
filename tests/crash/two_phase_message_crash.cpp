// The 2-phase message crash test: a service process sends 2-phase messages (an order row
// committed with the message's barrier row in orders.db, then two deliveries to a receiver whose
// action writes an effect row behind a saga barrier in receiver.db) over a SQLite journal; the
// driver kills it with SIGKILL again and again, then lets a last run recover everything and
// checks, reading the three files:
//   - every message whose order committed is confirmed, and each of its branches took effect
//     exactly once;
//   - no message whose order did not commit took effect anywhere, and it is cancelled;
//   - nothing is left unfinished in the journal.
//
//   dtx_two_phase_message_crash [--kills K] [--seed S] [--dir D] [--keep] [--break check-back]
//
// Each round starts the service and ends it one of three ways: it kills itself at the N-th
// passage of "after-prepare" (the message is durable, its local transaction has not run) or of
// "after-local-commit" (committed, not yet submitted), or the driver kills it at a random moment.
// Messages have a short deadline, and a second coordinator in the service runs recovery, so the
// check-back of a message whose local transaction is slow to start races that transaction (it
// then finds the check-back's row and rolls back). With --break check-back, the check-back only
// reads the row and writes none (DTM's QueryPrepared without its insert-ignore): such a late
// local transaction then commits after the check-back said it had not, and the test must fail.

#include <dtx/coordinator.hpp>
#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "child_main.hpp"
#include "child_process.hpp"

namespace {

using namespace dtx;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct args {
    std::string role = "driver", dir, kill_at, broken;
    int nth = 0, kills = 100;
    std::uint64_t seed = std::random_device{}();
    bool drain = false, keep = false;
};

args parse(int argc, char** argv) {
    const crash::command_line c(
        argc, argv, {"--role", "--dir", "--kill-at", "--nth", "--kills", "--seed", "--break"},
        {"--drain", "--keep"});
    args a;
    a.role = c.text("--role", a.role);
    a.dir = c.text("--dir");
    a.kill_at = c.text("--kill-at");
    a.nth = c.number("--nth", 0);
    a.kills = c.number("--kills", a.kills);
    a.seed = c.seed(a.seed);
    a.broken = c.text("--break");
    a.drain = c.has("--drain");
    a.keep = c.has("--keep");
    return a;
}

asio::awaitable<void> sleep(std::chrono::milliseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
}

int service(const args& a) {
    asio::io_context ioc;
    crash::kill_point kp{a.kill_at, a.nth};
    // synchronous=NORMAL: a killed process loses nothing the OS has (only a power cut would).
    sqlite::journal journal({.path = a.dir + "/journal.db", .synchronous_full = false});
    sqlite::barrier orders({.path = a.dir + "/orders.db", .synchronous_full = false});
    // The check-back answers through a connection of its own, as another process would.
    sqlite::barrier asked({.path = a.dir + "/orders.db", .synchronous_full = false});
    sqlite::barrier receiver({.path = a.dir + "/receiver.db", .synchronous_full = false});
    participant_registry registry;
    if (a.broken == "check-back")
        registry.add_check_back("orders", [&](const branch_request& r) {
            auto read = [gid = std::string(r.gid)](sqlite::connection& db) {
                auto& st = db.prepare("SELECT origin FROM dtx_barrier WHERE gid = ? AND "
                                      "branch_id = '00' AND op = 'msg'");
                st.bind(gid);
                return st.step() && st.text(0) == "msg" ? success() : failure("no row");
            };
            return asked.run<outcome>(read);
        });
    else
        registry.add_check_back("orders", asked.check_back());
    registry.add_saga(
        "receiver",
        receiver.saga(
            {.on_action =
                 [](sqlite::connection& db, const branch_request& r) {
                     db.prepare("INSERT INTO effects VALUES (?, ?)").bind(r.gid, r.branch_id).run();
                     return success();
                 },
             .on_compensate =
                 [](sqlite::connection&, const branch_request&) {
                     return failure("a message is never compensated");
                 }}));
    coordinator_options o;
    o.call_timeout = 2s;
    o.phase_two = retry_policy{.initial_backoff = 5ms, .max_backoff = 50ms};
    o.recovery_retry =
        retry_policy{.initial_backoff = 5ms, .max_backoff = 50ms, .max_attempts = 50};
    o.lease = 300ms;
    o.recovery_interval = 40ms;
    coordinator live(ioc.get_executor(), journal, registry, o);
    coordinator recoverer(ioc.get_executor(), journal, registry, o);
    std::mt19937_64 rng(a.seed);

    // Messages in `lanes` concurrent lanes, each one after the other.
    constexpr int lanes = 4;
    auto send_messages = [&](int lane) -> asio::awaitable<void> {
        for (int n = lane; n < 100'000; n += lanes) {
            const bool slow = rng() % 5 == 0;   // starts its local transaction past the deadline
            const bool refuse = rng() % 8 == 0; // a business "no"
            message_local_transaction local =
                [&, slow, refuse](std::string gid) -> asio::awaitable<outcome> {
                kp.pass("after-prepare");
                if (slow)
                    co_await sleep(250ms);
                auto change = [gid, refuse](sqlite::connection& db) {
                    db.prepare("INSERT INTO orders VALUES (?)").bind(gid).run();
                    return refuse ? failure("refused") : success();
                };
                const outcome o = co_await orders.message_local(gid, change);
                if (o.is_success())
                    kp.pass("after-local-commit");
                co_return o;
            };
            two_phase_message m;
            m.check_back = "orders";
            m.branches.push_back({"receiver", nlohmann::json{{"n", n}}});
            m.branches.push_back({"receiver", nlohmann::json{{"n", n}}});
            tx_options to;
            to.timeout = 100ms;
            co_await live.prepare_and_submit(std::move(m), local, std::move(to));
        }
    };
    auto work = [&]() -> asio::awaitable<void> {
        auto schema = [](sqlite::connection& db) {
            db.exec("CREATE TABLE IF NOT EXISTS orders (gid TEXT PRIMARY KEY)");
            db.exec("CREATE TABLE IF NOT EXISTS effects (gid TEXT, branch TEXT)"); // no key
            return 0;
        };
        co_await orders.run<int>(schema);
        co_await receiver.run<int>(schema);
        // This is the journal's only process: take over whatever the last one left.
        recovery_options ro;
        ro.take_over = true;
        for (int pass = 1;; ++pass) {
            const recovery_report rep = co_await recoverer.recover(ro);
            if (rep.unfinished == 0 && rep.skipped == 0)
                break;
            if (pass == 1000)
                throw std::runtime_error("messages still unfinished after 1000 recovery passes");
        }
        if (a.drain) {
            std::cout << "drained\n";
            co_return;
        }
        recoverer.start_recovery();
        for (int lane = 1; lane < lanes; ++lane)
            asio::co_spawn(ioc, send_messages(lane), asio::detached);
        co_await send_messages(0);
    };
    return crash::run_to_end(ioc, work(), "service");
}

std::vector<std::string> check(const std::string& dir, std::size_t& committed,
                               std::size_t& aborted) {
    std::vector<std::string> bad;
    sqlite::connection j(dir + "/journal.db"), o(dir + "/orders.db"), r(dir + "/receiver.db");
    std::set<std::string> ordered;
    {
        sqlite::statement st(o, "SELECT gid FROM orders");
        while (st.step())
            ordered.emplace(st.text(0));
    }
    std::map<std::string, std::string> status;
    {
        sqlite::statement st(j, "SELECT gid, status FROM dtx_transaction WHERE kind = 'msg'");
        while (st.step())
            status[std::string(st.text(0))] = std::string(st.text(1));
    }
    std::map<std::pair<std::string, std::string>, int> effects;
    {
        sqlite::statement st(r, "SELECT gid, branch FROM effects");
        while (st.step())
            ++effects[{std::string(st.text(0)), std::string(st.text(1))}];
    }
    for (const auto& [gid, s] : status) {
        const bool did = ordered.count(gid) != 0;
        committed += did;
        aborted += !did;
        if (did && s != "confirmed")
            bad.push_back("message " + gid + ": its order committed but it is " + s);
        if (!did && s != "cancelled")
            bad.push_back("message " + gid + ": its order did not commit but it is " + s);
        for (const char* b : {"01", "02"}) {
            const int n = effects.count({gid, b}) ? effects[{gid, b}] : 0;
            if (did && n != 1)
                bad.push_back("message " + gid + " branch " + b + ": took effect " +
                              std::to_string(n) + " times, its order committed");
            if (!did && n != 0)
                bad.push_back("message " + gid + " branch " + b +
                              ": took effect, its order did not commit");
        }
    }
    for (const auto& gid : ordered)
        if (!status.count(gid))
            bad.push_back("order " + gid + " has no message in the journal");
    return bad;
}

int driver(const args& a, const char* self) {
    const std::string dir =
        a.dir.empty() ? (fs::temp_directory_path() / ("dtx-2pm-crash-" + make_gid())).string()
                      : a.dir;
    fs::create_directories(dir);
    std::mt19937_64 rng(a.seed);
    auto start = [&](const std::string& kill_at, int nth, bool drain) {
        std::vector<std::string> argv{
            self, "--role", "service", "--dir", dir, "--seed", std::to_string(rng())};
        if (!kill_at.empty())
            argv.insert(argv.end(), {"--kill-at", kill_at, "--nth", std::to_string(nth)});
        if (!a.broken.empty())
            argv.insert(argv.end(), {"--break", a.broken});
        if (drain)
            argv.push_back("--drain");
        return std::make_unique<crash::child_process>(argv, dir + "/service.log");
    };
    std::map<std::string, int> kills;
    for (int total = 0; total < a.kills; ++total) {
        const unsigned pick = static_cast<unsigned>(rng() % 3);
        const std::string name = pick == 0   ? "after-prepare"
                                 : pick == 1 ? "after-local-commit"
                                             : "";
        auto svc = start(name, 1 + static_cast<int>(rng() % 8), false);
        const auto wait = name.empty() ? std::chrono::milliseconds(20 + rng() % 300) : 5000ms;
        auto ended = svc->wait_until(crash::steady::now() + wait);
        const crash::exit_status how = ended ? *ended : svc->kill();
        if (!how.killed) {
            std::cerr << "two-phase message crash test FAILED: the service " << crash::describe(how)
                      << "\n"
                      << crash::tail(dir + "/service.log", 20);
            return 1;
        }
        ++kills[ended && !name.empty() ? name : "random"];
    }
    auto drain = start("", 0, true);
    auto done = drain->wait_until(crash::steady::now() + 60s);
    if (!done || done->killed || done->code != 0) {
        std::cerr << "two-phase message crash test FAILED: the last recovery did not finish\n"
                  << crash::tail(dir + "/service.log", 20);
        return 1;
    }
    std::size_t committed = 0, aborted = 0;
    const auto bad = check(dir, committed, aborted);
    std::string counts;
    for (const auto& [name, n] : kills)
        counts += (counts.empty() ? "" : ", ") + name + " " + std::to_string(n);
    if (!bad.empty()) {
        std::cerr << "two-phase message crash test FAILED (" << a.kills << " kills: " << counts
                  << "; " << committed << " committed): " << bad.size()
                  << " invariant violations\n";
        for (std::size_t i = 0; i < bad.size() && i < 20; ++i)
            std::cerr << "  " << bad[i] << "\n";
        std::cerr << "data kept in " << dir << "\n";
        return 1;
    }
    std::cout << "two-phase message crash test: " << a.kills << " kills (" << counts << "), "
              << committed << " messages committed and delivered exactly once per branch, "
              << aborted << " aborted and never delivered, invariants hold\n";
    if (!a.keep)
        fs::remove_all(dir);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    return dtx::crash::main_of("dtx_two_phase_message_crash", [&] {
        const args a = parse(argc, argv);
        return a.role == "service" ? service(a) : driver(a, argv[0]);
    });
}
