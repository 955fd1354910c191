// The messages crash test: a producer process commits orders with an outbox message each (some
// of its transactions roll back after adding theirs) and runs the relay, which delivers over HTTP
// to a consumer process whose handler runs behind an inbox; the driver kills them with SIGKILL
// again and again, then lets the relay drain the outbox and checks, reading both SQLite files:
//   - every committed order's message was processed by the consumer exactly once;
//   - no message of a rolled-back transaction was ever processed;
//   - per key, messages were processed in commit order (the handler also checks, as they come);
//   - nothing was parked, nothing is left pending.
//
//   dtx_messages_crash [--kills K] [--seed S] [--dir D] [--keep] [--break inbox]
//
// Each round restarts one process (producer or consumer) and ends it one of two ways:
//   - random: the driver kills it a random few to hundreds of milliseconds later;
//   - point:  it kills itself at the N-th passage of a named point: "producer-after-commit"
//             (the business transaction and its message committed, before any delivery),
//             "relay-after-delivery" (the consumer answered, before the relay marks it
//             delivered), "consumer-after-commit" (the inbox transaction committed, before the
//             answer is written).
// With --break inbox the consumer runs its handler without the inbox, and the test must fail
// (messages processed twice): it proves the checks can see what the inbox prevents.
// Prints "messages crash test: ..., invariants hold", or the violations and exits 1.

#include <dtx/http/client.hpp>
#include <dtx/http/consumer.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/http/server.hpp>
#include <dtx/relay.hpp>
#include <dtx/sqlite/inbox.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
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
    int nth = 0, kills = 200;
    unsigned short port = 0;
    std::uint64_t seed = std::random_device{}();
    bool drain = false, keep = false;
};

args parse(int argc, char** argv) {
    const crash::command_line c(
        argc, argv,
        {"--role", "--dir", "--kill-at", "--nth", "--port", "--kills", "--seed", "--break"},
        {"--drain", "--keep"});
    args a;
    a.role = c.text("--role", a.role);
    a.dir = c.text("--dir");
    a.kill_at = c.text("--kill-at");
    a.nth = c.number("--nth", 0);
    a.port = static_cast<unsigned short>(c.number("--port", 0));
    a.kills = c.number("--kills", a.kills);
    a.seed = c.seed(a.seed);
    a.broken = c.text("--break");
    a.drain = c.has("--drain");
    a.keep = c.has("--keep");
    return a;
}

using crash::kill_point;

std::int64_t scalar(sqlite::connection& db, const std::string& sql) {
    sqlite::statement st(db, sql.c_str());
    return st.step() ? st.integer(0) : 0;
}

/// Passes the relay's batches to the HTTP publisher; may die between delivery and settlement.
struct killing_publisher : publisher {
    http::publisher& inner;
    kill_point& kp;
    killing_publisher(http::publisher& p, kill_point& k)
        : inner(p)
        , kp(k) {}
    asio::awaitable<std::vector<delivery_result>> publish(std::span<const envelope> b) override {
        auto results = co_await inner.publish(b);
        for (const auto& r : results)
            if (r.status == delivery_status::delivered)
                kp.pass("relay-after-delivery");
        co_return results;
    }
};

int producer(const args& a) {
    asio::io_context ioc;
    kill_point kp{a.kill_at, a.nth};
    sqlite::outbox outbox({.path = a.dir + "/producer.db", .synchronous_full = false});
    http::client client(ioc.get_executor(), {.connect_timeout = 300ms, .request_timeout = 1s});
    http::publisher http_pub(client);
    killing_publisher pub(http_pub, kp);
    relay r(ioc.get_executor(), outbox, pub,
            {.schedule = delivery_schedule::backoff(
                 {.immediate = 0, .initial = 20ms, .max = 200ms, .max_attempts = 1'000'000}),
             .batch = 16,
             .lease = 1s,
             .poll_interval = 200ms});
    const std::string url = "http://127.0.0.1:" + std::to_string(a.port) + "/events";
    std::ofstream rolled_back(a.dir + "/rolled_back.log", std::ios::app);
    std::mt19937_64 rng(a.seed);
    auto work = [&]() -> asio::awaitable<void> {
        auto schema = [](sqlite::connection& db) {
            db.exec("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, msg_id TEXT, "
                    "key TEXT, seq INTEGER); CREATE TABLE IF NOT EXISTS keyseq (key TEXT "
                    "PRIMARY KEY, next INTEGER)");
            return 0;
        };
        co_await outbox.run<int>(schema);
        r.start();
        asio::steady_timer t(ioc);
        while (!a.drain) {
            const std::string key = "k" + std::to_string(rng() % 8);
            const bool roll_back = rng() % 4 == 0;
            std::string id;
            auto order = [&](sqlite::connection& db) {
                const std::int64_t seq =
                    1 + scalar(db, "SELECT COALESCE(MAX(next), 0) FROM keyseq WHERE key = '" + key +
                                       "'");
                db.prepare("INSERT OR REPLACE INTO keyseq VALUES (?, ?)").bind(key, seq).run();
                id = outbox.add(
                    db, {.destination = url, .key = key, .payload = {{"key", key}, {"seq", seq}}});
                db.prepare("INSERT INTO orders (msg_id, key, seq) VALUES (?, ?, ?)")
                    .bind(id, key, seq)
                    .run();
                if (roll_back)
                    throw std::runtime_error("rolled back");
                return 0;
            };
            try {
                co_await outbox.run<int>(order);
                kp.pass("producer-after-commit");
            } catch (const std::runtime_error&) {
                rolled_back << id << "\n" << std::flush;
            }
            t.expires_after(2ms);
            co_await t.async_wait(asio::use_awaitable);
        }
        // Drain: wait until nothing is pending, then stop.
        for (;;) {
            auto pending = [](sqlite::connection& db) {
                return scalar(db, "SELECT COUNT(*) FROM dtx_outbox WHERE state = 0");
            };
            if (co_await outbox.run<std::int64_t>(pending) == 0)
                break;
            t.expires_after(50ms);
            co_await t.async_wait(asio::use_awaitable);
        }
        co_await r.stop();
    };
    return crash::run_to_end(ioc, work(), "producer");
}

/// The consumer's inbox as its route sees it: the real one, which kills the process at
/// "consumer-after-commit" once a message's transaction committed; or, with --break inbox, one
/// that runs the handler without the inbox row, so that every copy is processed again.
struct crash_inbox {
    sqlite::inbox& real;
    kill_point& kp;
    bool without_inbox;

    asio::awaitable<consume_result> consume(std::string consumer, envelope e,
                                            sqlite::inbox_handler handler) {
        consume_result r;
        if (without_inbox) {
            auto job = [&](sqlite::connection& db) { return handler(db, e).is_success(); };
            co_await real.run<bool>(job);
            r.status = consume_status::processed;
        } else {
            r = co_await real.consume(std::move(consumer), std::move(e), std::move(handler));
        }
        if (r.status == consume_status::processed)
            kp.pass("consumer-after-commit");
        co_return r;
    }
};

int consumer(const args& a) {
    asio::io_context ioc;
    kill_point kp{a.kill_at, a.nth};
    sqlite::inbox inbox({.path = a.dir + "/consumer.db", .synchronous_full = false});
    {
        sqlite::connection db(a.dir + "/consumer.db");
        db.set_busy_timeout(5s);
        db.exec(
            "CREATE TABLE IF NOT EXISTS received (n INTEGER PRIMARY KEY, msg_id TEXT, key "
            "TEXT, seq INTEGER); CREATE INDEX IF NOT EXISTS received_key ON received (key, seq); "
            "CREATE TABLE IF NOT EXISTS anomalies (what TEXT)");
    }
    sqlite::inbox_handler handle = [](sqlite::connection& db, const envelope& e) {
        const std::string key = e.payload.at("key").get<std::string>();
        const std::int64_t seq = e.payload.at("seq").get<std::int64_t>();
        const std::int64_t last =
            scalar(db, "SELECT COALESCE(MAX(seq), 0) FROM received WHERE key = '" + key + "'");
        if (seq != last + 1)
            db.prepare("INSERT INTO anomalies VALUES (?)")
                .bind("key " + key + ": seq " + std::to_string(seq) + " after " +
                      std::to_string(last))
                .run();
        db.prepare("INSERT INTO received (msg_id, key, seq) VALUES (?, ?, ?)")
            .bind(e.id, key, seq)
            .run();
        return success();
    };
    crash_inbox box{inbox, kp, a.broken == "inbox"};
    http::server server(ioc, {.port = a.port});
    http::add_consumer(server, "/events", box, "consumer", handle);
    server.start();
    ioc.run();
    return 0;
}

unsigned short free_port() {
    asio::io_context ioc;
    asio::ip::tcp::acceptor acc(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    return acc.local_endpoint().port();
}

std::vector<std::string> check(const std::string& dir, std::size_t& committed,
                               std::size_t& rolled_back) {
    std::vector<std::string> bad;
    sqlite::connection p(dir + "/producer.db"), c(dir + "/consumer.db");
    std::map<std::string, std::string> orders; // msg_id -> key
    {
        sqlite::statement st(p, "SELECT msg_id, key FROM orders");
        while (st.step())
            orders.emplace(std::string(st.text(0)), std::string(st.text(1)));
    }
    committed = orders.size();
    std::set<std::string> rolled;
    {
        std::ifstream in(dir + "/rolled_back.log");
        for (std::string l; std::getline(in, l);)
            if (!l.empty())
                rolled.insert(l);
    }
    rolled_back = rolled.size();
    std::map<std::string, int> times;
    std::map<std::string, std::int64_t> last_seq;
    sqlite::statement st(c, "SELECT msg_id, key, seq FROM received ORDER BY n");
    while (st.step()) {
        const std::string id(st.text(0)), key(st.text(1));
        const std::int64_t seq = st.integer(2);
        if (++times[id] == 2)
            bad.push_back("message " + id + " processed more than once");
        if (rolled.count(id) || !orders.count(id))
            bad.push_back("message " + id + " of a rolled-back transaction was processed");
        if (seq != last_seq[key] + 1 && times[id] == 1)
            bad.push_back("key " + key + ": seq " + std::to_string(seq) + " after " +
                          std::to_string(last_seq[key]));
        last_seq[key] = std::max(last_seq[key], seq);
    }
    for (const auto& [id, key] : orders)
        if (!times.count(id))
            bad.push_back("committed message " + id + " was never processed");
    if (auto n = scalar(c, "SELECT COUNT(*) FROM anomalies"))
        bad.push_back(std::to_string(n) + " anomalies seen by the handler");
    if (auto n = scalar(p, "SELECT COUNT(*) FROM dtx_outbox WHERE state <> 1"))
        bad.push_back(std::to_string(n) + " messages pending or parked after the drain");
    return bad;
}

int driver(const args& a, const char* self) {
    const std::string dir =
        a.dir.empty() ? (fs::temp_directory_path() / ("dtx-msg-crash-" + make_gid())).string()
                      : a.dir;
    fs::create_directories(dir);
    const unsigned short port = free_port();
    std::mt19937_64 rng(a.seed);
    auto start = [&](const std::string& role, const std::string& kill_at, int nth,
                     bool drain = false) {
        std::vector<std::string> argv{self,
                                      "--role",
                                      role,
                                      "--dir",
                                      dir,
                                      "--port",
                                      std::to_string(port),
                                      "--seed",
                                      std::to_string(rng())};
        if (!kill_at.empty())
            argv.insert(argv.end(), {"--kill-at", kill_at, "--nth", std::to_string(nth)});
        if (!a.broken.empty())
            argv.insert(argv.end(), {"--break", a.broken});
        if (drain)
            argv.push_back("--drain");
        return std::make_unique<crash::child_process>(argv, dir + "/" + role + ".log");
    };
    auto cons = start("consumer", "", 0);
    auto prod = start("producer", "", 0);
    std::map<std::string, int> kills;
    int total = 0;
    while (total < a.kills) {
        const bool victim_producer = rng() % 2 == 0;
        const bool point = rng() % 2 == 0;
        std::string name;
        if (point)
            name = victim_producer ? (rng() % 2 ? "producer-after-commit" : "relay-after-delivery")
                                   : "consumer-after-commit";
        auto& victim = victim_producer ? prod : cons;
        const std::string role = victim_producer ? "producer" : "consumer";
        victim.reset();
        victim = start(role, name, 1 + static_cast<int>(rng() % 20));
        const auto wait = point ? 3000ms : std::chrono::milliseconds(5 + rng() % 300);
        auto ended = victim->wait_until(crash::steady::now() + wait);
        crash::exit_status how = ended ? *ended : victim->kill();
        if (!how.killed) {
            std::cerr << "messages crash test FAILED: " << role << " " << crash::describe(how)
                      << "\n"
                      << crash::tail(dir + "/" + role + ".log", 20);
            return 1;
        }
        ++kills[ended && point ? name : "random"];
        ++total;
        victim = start(role, "", 0);
    }
    prod.reset();
    auto drain = start("producer", "", 0, true);
    auto done = drain->wait_until(crash::steady::now() + 60s);
    if (!done || done->killed || done->code != 0) {
        std::cerr << "messages crash test FAILED: the drain "
                  << (done ? "ended: " + crash::describe(*done) : "did not finish in 60 s")
                  << " (logs kept in " << dir << ")\n"
                  << crash::tail(dir + "/producer.log", 20);
        return 1;
    }
    cons.reset();
    std::size_t committed = 0, rolled_back = 0;
    auto bad = check(dir, committed, rolled_back);
    std::string counts;
    for (const auto& [name, n] : kills)
        counts += (counts.empty() ? "" : ", ") + name + " " + std::to_string(n);
    if (!bad.empty()) {
        std::cerr << "messages crash test FAILED (" << total << " kills: " << counts << "; "
                  << committed << " committed): " << bad.size() << " invariant violations\n";
        for (std::size_t i = 0; i < bad.size() && i < 20; ++i)
            std::cerr << "  " << bad[i] << "\n";
        std::cerr << "data kept in " << dir << "\n";
        return 1;
    }
    std::cout << "messages crash test: " << total << " kills (" << counts << "), " << committed
              << " messages committed, " << rolled_back
              << " rolled back, every committed one processed exactly once in key order, "
                 "invariants hold\n";
    if (!a.keep)
        fs::remove_all(dir);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    try {
        const args a = parse(argc, argv);
        if (a.role == "producer")
            return producer(a);
        if (a.role == "consumer")
            return consumer(a);
        return driver(a, argv[0]);
    } catch (const std::exception& e) {
        std::cerr << "dtx_messages_crash: " << e.what() << "\n";
        return 2;
    }
}
