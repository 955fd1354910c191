// The PostgreSQL outbox when things go wrong around it, against a real server: the relay's
// listening connection is killed by the server (it reconnects, listens again and is woken by the
// next commit); a producer that sends no NOTIFY is found by the relay's poll; two transactions
// adding the same two keys in opposite orders are caught by PostgreSQL's deadlock detection, and
// the one it aborts sends nothing.
#include <dtx/error.hpp>
#include <dtx/postgres/outbox.hpp>
#include <dtx/relay.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <future>
#include <string>
#include <vector>

#include "support/model.hpp"
#include "support/pg_server.hpp"
#include "support/relay_test.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

namespace {

/// The process ids of the server's backends now running `LISTEN dtx_outbox`.
std::vector<std::string> listeners(postgres::connection& admin) {
    auto r = admin.exec("SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN dtx_outbox'");
    std::vector<std::string> pids;
    for (int i = 0; i < r.rows(); ++i)
        pids.emplace_back(r.text(i, 0));
    return pids;
}

/// Commits one message on a connection of its own, as another process would.
std::string commit_one(const std::string& conninfo, bool notify, nlohmann::json payload) {
    postgres::outbox producer({.conninfo = conninfo, .notify = notify, .listen = false});
    postgres::connection db(conninfo);
    db.exec("BEGIN");
    std::string id = producer.add(db, {.destination = "d", .key = "k", .payload = payload});
    db.exec("COMMIT");
    return id;
}

} // namespace

TEST_CASE("postgres outbox: a listening connection the server kills is re-established") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 60s}); // the poll stays out of it
    r.start();
    postgres::connection admin(conninfo);
    std::vector<std::string> before;
    REQUIRE(run(ioc, wait_until([&] { return (before = listeners(admin)).size() == 1; }, 5s)));

    const std::string kill = "SELECT pg_terminate_backend(" + before[0] + ")";
    admin.exec(kill.c_str());
    // The listener reconnects within about a second, as a new backend.
    std::vector<std::string> after;
    CHECK(run(ioc, wait_until(
                       [&] {
                           after = listeners(admin);
                           return after.size() == 1 && after != before;
                       },
                       10s)));

    // A commit by another process now wakes the relay again, long before its poll would.
    const std::string id = commit_one(conninfo, true, {{"n", 1}});
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 10s)));
    CHECK(pub.delivered == std::vector<std::string>{id});
    CHECK(outbox.notifications() >= 1);
    run(ioc, stopped(r));
}

TEST_CASE("postgres outbox: without NOTIFY, other processes' commits are found by the poll") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 300ms});
    r.start();
    run(ioc, wait_until([] { return false; }, 100ms)); // listening, asleep in its poll

    const std::string id = commit_one(conninfo, false, {{"n", 1}});
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 10s)));
    CHECK(pub.delivered == std::vector<std::string>{id});
    CHECK(outbox.notifications() == 0); // found by the poll: nothing was notified
    run(ioc, stopped(r));
}

TEST_CASE("postgres outbox: keys added in opposite orders deadlock, and the aborted side sends "
          "nothing") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    postgres::connection a(conninfo);
    postgres::connection b(conninfo);
    a.exec("BEGIN");
    b.exec("BEGIN");
    const std::string a1 = outbox.add(a, {.destination = "d", .key = "x", .payload = {{"a", 1}}});
    const std::string b1 = outbox.add(b, {.destination = "d", .key = "y", .payload = {{"b", 1}}});
    // Each now adds the other's key: a waits for b's lock on "y", b for a's on "x". PostgreSQL
    // aborts one of the two after deadlock_timeout (1 s by default).
    auto second = [&](postgres::connection& db, std::string key) {
        return std::async(std::launch::async, [&db, &outbox, key] {
            try {
                outbox.add(db, {.destination = "d", .key = key, .payload = {{"then", key}}});
                db.exec("COMMIT");
                return std::string();
            } catch (const dtx::error& e) {
                db.exec("ROLLBACK");
                return std::string(e.what());
            }
        });
    };
    auto fa = second(a, "y");
    auto fb = second(b, "x");
    REQUIRE(fa.wait_for(30s) == std::future_status::ready);
    REQUIRE(fb.wait_for(30s) == std::future_status::ready);
    const std::string ea = fa.get();
    const std::string eb = fb.get();
    INFO("a: " << ea << " | b: " << eb);
    REQUIRE((ea.empty() != eb.empty())); // exactly one was aborted
    CHECK((ea + eb).find("deadlock") != std::string::npos);

    // Only the committed side's two messages exist, and a relay delivers just those.
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 100ms});
    r.start();
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() >= 2; }, 10s)));
    run(ioc, wait_until([] { return false; }, 300ms)); // nothing more arrives
    run(ioc, stopped(r));
    CHECK(pub.delivered.size() == 2);
    const std::string survivor = ea.empty() ? a1 : b1;
    const std::string aborted = ea.empty() ? b1 : a1;
    CHECK(std::find(pub.delivered.begin(), pub.delivered.end(), survivor) != pub.delivered.end());
    CHECK(std::find(pub.delivered.begin(), pub.delivered.end(), aborted) == pub.delivered.end());
}
