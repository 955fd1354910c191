// The messages crash test on PostgreSQL: several node processes share one database; each adds
// orders with an outbox message in its business transactions (some roll back, some messages are
// poison that the consumer rejects), and runs a relay that delivers into an inbox consumer in the
// same database. The driver kills nodes with SIGKILL again and again, at random moments and at
// named points ("after-commit": the order committed, before any delivery; "after-delivery": the
// consumer committed, before the relay marks the message delivered), then lets nodes drain the
// outbox and checks:
//   - every committed order's message was processed exactly once, none of a rolled-back one;
//   - per key, messages were processed in commit order (the handler checks, as they come);
//   - no message was being delivered by two relays at once while the first one's claim was
//     leased (checked at each delivery against the claim's lease end);
//   - every poison message is parked as a dead letter and was never published after it was
//     parked; nothing is left pending.
//
//   dtx_postgres_messages_crash [--kills K] [--nodes N] [--seed S] [--keep] [--break inbox]
//
// Prints "postgres messages crash test: ..., invariants hold", or the violations and exits 1.
// With --break inbox the consumer runs its handler without the inbox, and the test must fail
// (CTest: postgres_messages_crash_without_inbox): the checks can see a message processed twice.

#include <dtx/postgres/inbox.hpp>
#include <dtx/postgres/outbox.hpp>
#include <dtx/relay.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../support/pg_server.hpp"
#include "child_main.hpp"
#include "child_process.hpp"

namespace {

using namespace dtx;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr int keys = 8;
constexpr auto lease = 2s;

struct args {
    std::string role = "driver", dir, conninfo, kill_at, broken;
    int nth = 0, kills = 40, nodes = 3;
    std::uint64_t seed = std::random_device{}();
    bool drain = false, keep = false;
};

args parse(int argc, char** argv) {
    const crash::command_line c(argc, argv,
                                {"--role", "--dir", "--conninfo", "--kill-at", "--nth", "--kills",
                                 "--nodes", "--seed", "--break"},
                                {"--drain", "--keep"});
    args a;
    a.role = c.text("--role", a.role);
    a.dir = c.text("--dir");
    a.conninfo = c.text("--conninfo");
    a.kill_at = c.text("--kill-at");
    a.nth = c.number("--nth", 0);
    a.kills = c.number("--kills", a.kills);
    a.nodes = std::max(1, c.number("--nodes", a.nodes));
    a.seed = c.seed(a.seed);
    a.broken = c.text("--break");
    if (!a.broken.empty() && a.broken != "inbox")
        throw std::invalid_argument("--break takes 'inbox'");
    a.drain = c.has("--drain");
    a.keep = c.has("--keep");
    return a;
}

using crash::kill_point;

std::int64_t now_ms() {
    return detail::to_ms(std::chrono::system_clock::now());
}

/// The consumer's handler: records the message, and any break of per-key order.
outcome handle(postgres::connection& db, const envelope& e) {
    const std::string key = e.payload.at("key").get<std::string>();
    const std::int64_t seq = e.payload.at("seq").get<std::int64_t>();
    const auto last =
        db.exec("SELECT COALESCE(MAX(seq), 0) FROM received WHERE key = $1", {key}).integer(0, 0);
    if (seq != last + 1)
        db.exec("INSERT INTO anomalies VALUES ($1)",
                {"key " + key + ": seq " + std::to_string(seq) + " after " + std::to_string(last)});
    db.exec("INSERT INTO received (msg_id, key, seq) VALUES ($1, $2, $3::bigint)",
            {e.id, key, std::to_string(seq)});
    return success();
}

int node(const args& a) {
    asio::io_context ioc;
    kill_point kp{a.kill_at, a.nth};
    postgres::outbox outbox({.conninfo = a.conninfo});
    postgres::inbox inbox({.conninfo = a.conninfo, .connections = 2});
    const postgres::inbox_handler handler = handle;
    // Publishes into the inbox, and catches two relays delivering at once: each delivery holds
    // an in_flight row until its claim's lease ends. A delivery whose lease has ended (another
    // relay may have claimed the message since: the row counts another attempt) is not checked;
    // going on past it is allowed, and is why consumers need an inbox.
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        const std::string id = e.id;
        auto take = [id, attempt = e.attempt](postgres::connection& db) -> std::int64_t {
            const auto t = now_ms();
            auto claim = db.exec("SELECT lease_ms FROM dtx_outbox WHERE id = $1 AND attempts = "
                                 "$2::bigint AND lease_ms IS NOT NULL",
                                 {id, std::to_string(attempt)});
            if (claim.rows() == 0 || claim.integer(0, 0) <= t)
                return 0;
            const std::string until = std::to_string(claim.integer(0, 0));
            // A lease ending at T is over at T: a claim at T may take the message (the claim's
            // `ready_ms <= now`), so a delivery held until T no longer holds it at T.
            auto r =
                db.exec("INSERT INTO in_flight VALUES ($1, $2::bigint, $3::bigint) ON CONFLICT "
                        "(msg_id) DO UPDATE SET until_ms = EXCLUDED.until_ms, attempt = "
                        "EXCLUDED.attempt WHERE in_flight.until_ms <= $4::bigint RETURNING 1",
                        {id, until, std::to_string(attempt), std::to_string(t)});
            if (r.rows() == 0) {
                auto held =
                    db.exec("SELECT until_ms, attempt FROM in_flight WHERE msg_id = $1", {id});
                db.exec("INSERT INTO anomalies VALUES ($1)",
                        {"message " + id + " delivered by two relays at once: attempt " +
                         std::string(held.text(0, 1)) + " holds it until " +
                         std::string(held.text(0, 0)) + ", attempt " + std::to_string(attempt) +
                         " started at " + std::to_string(t)});
            }
            return claim.integer(0, 0);
        };
        const std::int64_t until = co_await inbox.run<std::int64_t>(take);
        delivery_result result = delivery_result::delivered();
        if (e.payload.value("poison", false)) {
            auto publish = [id](postgres::connection& db) {
                db.exec("INSERT INTO poison_publishes VALUES ($1, $2::bigint)",
                        {id, std::to_string(now_ms())});
                return 0;
            };
            co_await inbox.run<int>(publish);
            result = delivery_result::rejected("poison");
        } else if (a.broken == "inbox") { // the handler alone: a redelivery runs it again
            auto direct = [&e](postgres::connection& db) { return handle(db, e).is_success(); };
            co_await inbox.run<bool>(direct);
            kp.pass("after-delivery");
        } else {
            auto r = co_await inbox.consume("consumer", e, handler);
            if (r.status == consume_status::processed)
                kp.pass("after-delivery");
            result = r.delivery();
        }
        auto release = [id, until](postgres::connection& db) {
            db.exec("DELETE FROM in_flight WHERE msg_id = $1 AND until_ms = $2::bigint",
                    {id, std::to_string(until)});
            return 0;
        };
        if (until != 0)
            co_await inbox.run<int>(release);
        co_return result;
    });
    relay r(ioc.get_executor(), outbox, pub,
            {.schedule = delivery_schedule::backoff(
                 {.immediate = 0, .initial = 20ms, .max = 200ms, .max_attempts = 1'000'000}),
             .batch = 16,
             .lease = lease,
             .poll_interval = 200ms});
    std::ofstream rolled_back(a.dir + "/rolled_back.log", std::ios::app);
    std::mt19937_64 rng(a.seed);
    auto work = [&]() -> asio::awaitable<void> {
        r.start();
        asio::steady_timer t(ioc);
        while (!a.drain) {
            const std::string key = "k" + std::to_string(rng() % keys);
            const bool roll_back = rng() % 4 == 0, poison = rng() % 20 == 0;
            std::vector<std::string> ids;
            auto order = [&](postgres::connection& db) {
                // The business row of the key: its lock orders the key's transactions.
                const auto seq =
                    db.exec("UPDATE keyseq SET next = next + 1 WHERE key = $1 RETURNING next",
                            {key})
                        .integer(0, 0);
                ids.push_back(outbox.add(db, {.destination = "consumer",
                                              .key = key,
                                              .payload = {{"key", key}, {"seq", seq}}}));
                db.exec("INSERT INTO orders VALUES ($1, $2, $3::bigint)",
                        {ids.back(), key, std::to_string(seq)});
                if (poison) {
                    const std::string id = make_message_id();
                    ids.push_back(outbox.add(db, {.id = id,
                                                  .destination = "consumer",
                                                  .key = "poison-" + id,
                                                  .payload = {{"poison", true}}}));
                    db.exec("INSERT INTO poison VALUES ($1)", {id});
                }
                if (roll_back)
                    throw std::runtime_error("rolled back");
                return 0;
            };
            try {
                co_await outbox.run<int>(order);
                kp.pass("after-commit");
            } catch (const std::runtime_error&) {
                for (const auto& id : ids)
                    rolled_back << id << "\n";
                rolled_back << std::flush;
            }
            t.expires_after(std::chrono::milliseconds(2 + rng() % 5));
            co_await t.async_wait(asio::use_awaitable);
        }
        for (;;) { // drain: until nothing is pending
            auto pending = [](postgres::connection& db) {
                return db.exec("SELECT COUNT(*) FROM dtx_outbox WHERE state = 0").integer(0, 0);
            };
            if (co_await outbox.run<std::int64_t>(pending) == 0)
                break;
            t.expires_after(50ms);
            co_await t.async_wait(asio::use_awaitable);
        }
        co_await r.stop();
    };
    return crash::run_to_end(ioc, work(), "node");
}

void create_schema(const std::string& conninfo) {
    postgres::outbox outbox({.conninfo = conninfo, .connections = 1});
    postgres::inbox inbox({.conninfo = conninfo, .connections = 1});
    postgres::connection db(conninfo);
    for (const char* sql :
         {"CREATE TABLE orders (msg_id text PRIMARY KEY, key text, seq bigint)",
          "CREATE TABLE keyseq (key text PRIMARY KEY, next bigint NOT NULL)",
          "CREATE TABLE received (n bigserial PRIMARY KEY, msg_id text, key text, seq bigint)",
          "CREATE TABLE anomalies (what text)",
          "CREATE TABLE in_flight (msg_id text PRIMARY KEY, until_ms bigint NOT NULL, attempt "
          "bigint)",
          "CREATE TABLE poison (msg_id text PRIMARY KEY)",
          "CREATE TABLE poison_publishes (msg_id text, at_ms bigint)"})
        db.exec(sql);
    for (int k = 0; k < keys; ++k)
        db.exec("INSERT INTO keyseq VALUES ($1, 0)", {"k" + std::to_string(k)});
}

std::vector<std::string> check(const std::string& conninfo, const std::string& dir,
                               std::size_t& committed, std::size_t& parked) {
    std::vector<std::string> bad;
    postgres::connection db(conninfo);
    std::set<std::string> rolled;
    {
        std::ifstream in(dir + "/rolled_back.log");
        for (std::string l; std::getline(in, l);)
            if (!l.empty())
                rolled.insert(l);
    }
    auto orders = db.exec("SELECT msg_id FROM orders");
    committed = static_cast<std::size_t>(orders.rows());
    std::set<std::string> ordered;
    for (int i = 0; i < orders.rows(); ++i)
        ordered.emplace(orders.text(i, 0));
    std::map<std::string, int> times;
    auto received = db.exec("SELECT msg_id FROM received ORDER BY n");
    for (int i = 0; i < received.rows(); ++i) {
        const std::string id(received.text(i, 0));
        if (++times[id] == 2)
            bad.push_back("message " + id + " processed more than once");
        if (rolled.count(id) || !ordered.count(id))
            bad.push_back("message " + id + " of a rolled-back transaction was processed");
    }
    for (const auto& id : ordered)
        if (!times.count(id))
            bad.push_back("committed message " + id + " was never processed");
    auto anomalies = db.exec("SELECT what FROM anomalies");
    for (int i = 0; i < anomalies.rows(); ++i)
        bad.emplace_back(anomalies.text(i, 0));
    if (auto n = db.exec("SELECT COUNT(*) FROM dtx_outbox WHERE state = 0").integer(0, 0))
        bad.push_back(std::to_string(n) + " messages pending after the drain");
    parked = static_cast<std::size_t>(
        db.exec("SELECT COUNT(*) FROM dtx_outbox WHERE state = 2").integer(0, 0));
    if (auto n = db.exec("SELECT COUNT(*) FROM dtx_outbox o JOIN poison p ON p.msg_id = o.id "
                         "WHERE o.state <> 2")
                     .integer(0, 0))
        bad.push_back(std::to_string(n) + " poison messages not parked");
    if (auto n = db.exec("SELECT COUNT(*) FROM dtx_outbox WHERE state = 2 AND id NOT IN "
                         "(SELECT msg_id FROM poison)")
                     .integer(0, 0))
        bad.push_back(std::to_string(n) + " good messages parked");
    if (auto n = db.exec("SELECT COUNT(*) FROM poison_publishes p JOIN dtx_outbox o ON o.id = "
                         "p.msg_id WHERE p.at_ms > o.done_ms")
                     .integer(0, 0))
        bad.push_back(std::to_string(n) + " publishes of a dead letter after it was parked");
    return bad;
}

int driver(const args& a, const char* self) {
    const std::string dir =
        (fs::temp_directory_path() / ("dtx-pgmsg-crash-" + make_gid())).string();
    fs::create_directories(dir);
    const std::string conninfo = test::fresh_pg_database();
    create_schema(conninfo);
    std::mt19937_64 rng(a.seed);
    auto start = [&](int n, const std::string& kill_at, int nth, bool drain = false) {
        std::vector<std::string> argv{self,     "--role", "node",
                                      "--dir",  dir,      "--conninfo",
                                      conninfo, "--seed", std::to_string(rng())};
        if (!kill_at.empty())
            argv.insert(argv.end(), {"--kill-at", kill_at, "--nth", std::to_string(nth)});
        if (drain)
            argv.push_back("--drain");
        if (!a.broken.empty())
            argv.insert(argv.end(), {"--break", a.broken});
        return std::make_unique<crash::child_process>(argv,
                                                      dir + "/node" + std::to_string(n) + ".log");
    };
    std::vector<std::unique_ptr<crash::child_process>> nodes;
    for (int n = 0; n < a.nodes; ++n)
        nodes.push_back(start(n, "", 0));
    std::map<std::string, int> kills;
    int total = 0;
    while (total < a.kills) {
        const int n = static_cast<int>(rng() % static_cast<std::uint64_t>(a.nodes));
        const bool point = rng() % 2 == 0;
        const std::string name = point ? (rng() % 2 ? "after-commit" : "after-delivery") : "";
        nodes[static_cast<std::size_t>(n)].reset();
        auto& victim = nodes[static_cast<std::size_t>(n)] =
            start(n, name, 1 + static_cast<int>(rng() % 20));
        const auto wait = point ? 3000ms : std::chrono::milliseconds(50 + rng() % 400);
        auto ended = victim->wait_until(crash::steady::now() + wait);
        crash::exit_status how = ended ? *ended : victim->kill();
        if (!how.killed) {
            std::cerr << "postgres messages crash test FAILED: node " << crash::describe(how)
                      << "\n"
                      << crash::tail(dir + "/node" + std::to_string(n) + ".log", 20);
            return 1;
        }
        ++kills[ended && point ? name : "random"];
        ++total;
        victim = start(n, "", 0);
    }
    for (int n = 0; n < a.nodes; ++n) { // stop producing; every node drains
        nodes[static_cast<std::size_t>(n)].reset();
        nodes[static_cast<std::size_t>(n)] = start(n, "", 0, true);
    }
    for (int n = 0; n < a.nodes; ++n) {
        auto done = nodes[static_cast<std::size_t>(n)]->wait_until(crash::steady::now() + 60s);
        if (!done || done->killed || done->code != 0) {
            std::cerr << "postgres messages crash test FAILED: node " << n << "'s drain "
                      << (done ? "ended: " + crash::describe(*done) : "did not finish in 60 s")
                      << " (logs kept in " << dir << ")\n"
                      << crash::tail(dir + "/node" + std::to_string(n) + ".log", 20);
            return 1;
        }
    }
    std::size_t committed = 0, parked = 0;
    auto bad = check(conninfo, dir, committed, parked);
    std::string counts;
    for (const auto& [name, k] : kills)
        counts += (counts.empty() ? "" : ", ") + name + " " + std::to_string(k);
    if (!bad.empty()) {
        std::cerr << "postgres messages crash test FAILED (" << total << " kills: " << counts
                  << "; " << committed << " committed): " << bad.size()
                  << " invariant violations\n";
        for (std::size_t i = 0; i < bad.size() && i < 20; ++i)
            std::cerr << "  " << bad[i] << "\n";
        std::cerr << "logs kept in " << dir << "\n";
        return 1;
    }
    std::cout << "postgres messages crash test: " << a.nodes << " nodes, " << total << " kills ("
              << counts << "), " << committed << " orders committed, " << parked
              << " dead letters, every committed message processed exactly once in key order, "
                 "invariants hold\n";
    if (!a.keep)
        fs::remove_all(dir);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    try {
        const args a = parse(argc, argv);
        if (a.role == "node")
            return node(a);
        return driver(a, argv[0]);
    } catch (const std::exception& e) {
        std::cerr << "dtx_postgres_messages_crash: " << e.what() << "\n";
        return 2;
    }
}
