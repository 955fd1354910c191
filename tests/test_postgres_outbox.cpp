// The PostgreSQL outbox and inbox against a real server: messages commit and roll back with the
// business change; commits wake the relay in-process and, from other connections, by NOTIFY; per
// key, delivery follows commit order also when two transactions' sequence numbers would say
// otherwise; two relays (two outbox objects: two processes' connections) never deliver a
// message at once; dead letters hold their key until requeued or discarded; delivered rows are
// cleaned in batches; the inbox processes each message once, also when copies arrive together on
// two connections.
#include <dtx/postgres/barrier.hpp>
#include <dtx/postgres/inbox.hpp>
#include <dtx/postgres/outbox.hpp>
#include <dtx/relay.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "support/model.hpp"
#include "support/outbox_contract.hpp"
#include "support/pg_outbox.hpp"
#include "support/pg_server.hpp"
#include "support/relay_test.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

namespace {

/// Adds one message with `o` to the transaction open on `db`; returns its id.
std::string add_one(postgres::outbox& o, postgres::connection& db, std::string key,
                    nlohmann::json payload) {
    return o.add(db, {.destination = "d", .key = std::move(key), .payload = std::move(payload)});
}

} // namespace

TEST_CASE("postgres outbox: a rolled-back transaction sends nothing, a committed one is sent") {
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = fresh_pg_database()});
    check_commit_and_rollback(outbox, [&] { return count(ioc, outbox, "true"); });
    CHECK(count(ioc, outbox, "state = 1") == 1);
}

TEST_CASE("postgres outbox: add refuses a message outside a transaction or over the limits") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    postgres::connection db(conninfo);
    check_add_refuses(outbox, db, [&] { return count(ioc, outbox, "true"); });
}

TEST_CASE("postgres outbox: a barrier handler's commit wakes the relay in this process") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false}); // no NOTIFY: the hook only
    postgres::barrier barrier({.conninfo = conninfo});
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    run(ioc, wait_until([] { return false; }, 50ms)); // asleep in its poll
    const auto start = std::chrono::steady_clock::now();
    auto confirm = [&](postgres::connection& db) {
        return outbox.add(db, {.destination = "d", .key = "order-1", .payload = {{"paid", true}}});
    };
    const std::string id = run(ioc, barrier.run<std::string>(confirm));
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 5s)));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(pub.delivered == std::vector<std::string>{id});
    CHECK(outbox.notifications() == 0);
    run(ioc, stopped(r));
}

TEST_CASE("postgres outbox: a commit on another process's connection wakes the relay by NOTIFY") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    run(ioc, wait_until([] { return false; }, 50ms)); // asleep in its poll
    // Another process: its own outbox object (no relay) and a connection of its own, committed
    // with a plain COMMIT, which no hook of this process sees.
    postgres::outbox producer({.conninfo = conninfo, .listen = false});
    postgres::connection db(conninfo);
    db.exec("BEGIN");
    add_one(producer, db, "k", {{"n", 0}});
    db.exec("ROLLBACK");
    run(ioc, wait_until([] { return false; }, 200ms));
    CHECK(outbox.notifications() == 0); // a rolled-back NOTIFY is never delivered
    const auto start = std::chrono::steady_clock::now();
    db.exec("BEGIN");
    const std::string id = add_one(producer, db, "k", {{"n", 1}});
    db.exec("COMMIT");
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 5s)));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(pub.delivered == std::vector<std::string>{id});
    CHECK(outbox.notifications() >= 1);
    CHECK(r.stats().wakes >= 1);
    run(ioc, stopped(r));
}

TEST_CASE("postgres outbox: per key, commit order, also when sequence order would say otherwise") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    // T1 adds its message first (it would draw the smaller sequence number), T2 adds and commits
    // while T1 is open, then T1 commits. Whatever the database lets happen, the relay must
    // deliver in the order the two commits took effect.
    std::atomic<bool> t2_committed{false};
    postgres::connection c1(conninfo), c2(conninfo);
    c1.exec("BEGIN");
    add_one(outbox, c1, "order-7", {{"from", "T1"}});
    auto t2 = std::async(std::launch::async, [&] {
        c2.exec("BEGIN");
        add_one(outbox, c2, "order-7", {{"from", "T2"}});
        add_one(outbox, c2, "order-8", {{"from", "T2"}});
        c2.exec("COMMIT");
        t2_committed = true;
    });
    // Other keys never wait: a third transaction on another key commits while T1 is open.
    postgres::connection c3(conninfo);
    c3.exec("BEGIN");
    add_one(outbox, c3, "order-9", {{"from", "T3"}});
    c3.exec("COMMIT");
    std::this_thread::sleep_for(300ms);
    // T2 has committed by now, or it is waiting for T1 and will commit after it.
    const bool t2_first = t2_committed.load();
    c1.exec("COMMIT");
    t2.get();

    std::map<std::string, std::vector<std::string>> got; // per key, who sent it
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        got[e.key].push_back(e.payload.at("from").get<std::string>());
        co_return delivery_result::delivered();
    });
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 50ms});
    r.start();
    CHECK(run(ioc, wait_until([&] { return r.stats().delivered == 4; }, 5s)));
    const std::vector<std::string> commit_order =
        t2_first ? std::vector<std::string>{"T2", "T1"} : std::vector<std::string>{"T1", "T2"};
    CHECK(got["order-7"] == commit_order);
    CHECK(got["order-8"] == std::vector<std::string>{"T2"});
    CHECK(got["order-9"] == std::vector<std::string>{"T3"});
    run(ioc, stopped(r));
}

TEST_CASE(
    "postgres outbox: a message not yet committed is not overtaken by later ones of its key") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    std::vector<std::string> got;
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        got.push_back(e.payload.at("n").get<std::string>());
        co_return delivery_result::delivered();
    });
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 20ms});
    r.start();
    postgres::connection c1(conninfo), c2(conninfo);
    c1.exec("BEGIN");
    add_one(outbox, c1, "k", {{"n", "first"}});
    // The second transaction on the key waits for the first (its add is where it waits), so it
    // can neither commit first nor be claimed while the first is open.
    std::atomic<bool> second_added{false};
    auto t2 = std::async(std::launch::async, [&] {
        c2.exec("BEGIN");
        add_one(outbox, c2, "k", {{"n", "second"}});
        second_added = true;
        c2.exec("COMMIT");
    });
    run(ioc, wait_until([] { return false; }, 300ms)); // the relay polls meanwhile
    CHECK(got.empty());
    CHECK_FALSE(second_added.load());
    c1.exec("COMMIT");
    t2.get();
    CHECK(run(ioc, wait_until([&] { return got.size() == 2; }, 5s)));
    CHECK(got == std::vector<std::string>{"first", "second"});
    run(ioc, stopped(r));
}

TEST_CASE("postgres outbox: two relays never deliver a message at once, nor twice") {
    const std::string conninfo = fresh_pg_database();
    postgres::outbox a({.conninfo = conninfo});
    postgres::outbox b({.conninfo = conninfo});
    check_two_relays(a, b);
}

TEST_CASE("postgres outbox: concurrent claims lease each message to one owner") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .connections = 4});
    auto add = [&](postgres::connection& db) {
        for (int i = 0; i < 200; ++i)
            outbox.add(db, {.destination = "d"}); // no key: all claimable at once
        return 0;
    };
    run(ioc, outbox.run<int>(add));
    // Four claims at once, on four connections: SKIP LOCKED, not waiting, not sharing.
    std::vector<outbox_claim> claims(4);
    int done = 0;
    for (std::size_t i = 0; i < claims.size(); ++i)
        asio::co_spawn(ioc, outbox.claim("relay-" + std::to_string(i), 60s, 80),
                       [&, i](std::exception_ptr e, outbox_claim c) {
                           CHECK(!e);
                           claims[i] = std::move(c);
                           ++done;
                       });
    ioc.restart();
    ioc.run();
    REQUIRE(done == 4);
    std::set<std::string> seen;
    std::size_t total = 0;
    for (const auto& c : claims)
        for (const auto& e : c.messages) {
            ++total;
            seen.insert(e.id);
            CHECK(e.attempt == 1);
        }
    CHECK(total == seen.size());
    CHECK(total == 200);
}

TEST_CASE("postgres outbox: a lease left by a relay that died is taken over when it expires") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    check_lease_takeover(outbox, [&] { return count(ioc, outbox, "state = 1"); });
    // A claim that finds only leased messages says when the first lease ends.
    auto add = [&](postgres::connection& db) { return outbox.add(db, {.destination = "d"}); };
    run(ioc, outbox.run<std::string>(add));
    CHECK(run(ioc, outbox.claim("one", 10s, 10)).messages.size() == 1);
    outbox_claim other = run(ioc, outbox.claim("other", 10s, 10));
    CHECK(other.messages.empty());
    REQUIRE(other.next_due.has_value());
    CHECK(*other.next_due > std::chrono::system_clock::now() + 5s);
}

TEST_CASE("postgres outbox: a dead letter holds its key until requeued or discarded") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    bool reject = true;
    std::vector<std::string> got;
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        const std::string what = e.payload.at("n").get<std::string>();
        if (reject && what.starts_with("poison"))
            co_return delivery_result::rejected("cannot process " + what);
        got.push_back(what);
        co_return delivery_result::delivered();
    });
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 20ms});
    r.start();
    auto add = [&](postgres::connection& db) {
        outbox.add(db, {.destination = "d", .key = "a", .payload = {{"n", "poison-a"}}});
        outbox.add(db, {.destination = "d", .key = "a", .payload = {{"n", "a2"}}});
        outbox.add(db, {.destination = "d", .key = "b", .payload = {{"n", "poison-b"}}});
        outbox.add(db, {.destination = "d", .key = "b", .payload = {{"n", "b2"}}});
        outbox.add(db, {.destination = "d", .key = "c", .payload = {{"n", "c1"}}});
        return 0;
    };
    run(ioc, outbox.run<int>(add));
    CHECK(run(ioc, wait_until([&] { return r.stats().dead_letters == 2; }, 5s)));
    run(ioc, wait_until([] { return false; }, 200ms));
    CHECK(got == std::vector<std::string>{"c1"}); // other keys flowed; a and b are held
    auto parked = run(ioc, r.dead_letters());
    REQUIRE(parked.size() == 2);
    CHECK(parked[0].message.payload.at("n") == "poison-a");
    CHECK(parked[0].last_error == "cannot process poison-a");
    CHECK(parked[0].message.attempt == 1);
    CHECK(run(ioc, r.dead_letters(10, parked[0].message.id)).size() == 1);
    reject = false;
    CHECK(run(ioc, r.requeue(parked[0].message.id)));
    CHECK(run(ioc, wait_until([&] { return got.size() == 3; }, 5s)));
    CHECK(got == std::vector<std::string>{"c1", "poison-a", "a2"});
    CHECK(run(ioc, r.discard(parked[1].message.id)));
    CHECK_FALSE(run(ioc, r.discard(parked[1].message.id)));
    CHECK_FALSE(run(ioc, r.requeue(parked[0].message.id))); // delivered, not a dead letter
    CHECK(run(ioc, wait_until([&] { return got.size() == 4; }, 5s)));
    CHECK(got.back() == "b2");
    CHECK(run(ioc, r.dead_letters()).empty());
    run(ioc, stopped(r));
}

TEST_CASE("postgres outbox: delivered rows are cleaned in batches after the retention") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo});
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 20ms});
    r.start();
    auto add = [&](postgres::connection& db) {
        for (int i = 0; i < 5; ++i)
            outbox.add(db, {.destination = "d", .key = "k"});
        outbox.add(db, {.destination = "d",
                        .key = "later",
                        .deliver_at = std::chrono::system_clock::now() + 1h});
        return 0;
    };
    run(ioc, outbox.run<int>(add));
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 5; }, 5s)));
    run(ioc, stopped(r));
    const auto now = std::chrono::system_clock::now();
    CHECK(run(ioc, outbox.clean_delivered(now - 1h, 2)) == 0); // not old enough
    CHECK(run(ioc, outbox.clean_delivered(now + 1s, 2)) == 2);
    CHECK(run(ioc, outbox.clean_delivered(now + 1s, 2)) == 2);
    CHECK(run(ioc, outbox.clean_delivered(now + 1s, 2)) == 1);
    CHECK(count(ioc, outbox, "true") == 1); // the pending one stays
}

TEST_CASE("postgres inbox: each message is processed once, also when copies arrive together") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::inbox inbox({.conninfo = conninfo});
    run(ioc, inbox.run<int>([](postgres::connection& db) {
        db.exec("CREATE TABLE parcels (order_id int)");
        return 0;
    }));
    std::atomic<int> ran{0};
    postgres::inbox_handler ship = [&](postgres::connection& db, const envelope& e) {
        ++ran;
        db.exec("INSERT INTO parcels VALUES ($1::int)",
                {std::to_string(e.payload.at("order").get<int>())});
        return success();
    };
    auto parcels = [&](int order) {
        return run(ioc, inbox.run<std::int64_t>([order](postgres::connection& db) {
            return db
                .exec("SELECT COUNT(*) FROM parcels WHERE order_id = $1::int",
                      {std::to_string(order)})
                .integer(0, 0);
        }));
    };
    envelope e{.id = make_message_id(), .destination = "d", .payload = {{"order", 7}}};
    CHECK(run(ioc, inbox.consume("shipping", e, ship)).status == consume_status::processed);
    CHECK(run(ioc, inbox.consume("shipping", e, ship)).status == consume_status::duplicate);
    CHECK(run(ioc, inbox.consume("billing", e, ship)).status == consume_status::processed);
    CHECK(ran == 2);

    SUBCASE("copies at once, from two processes' connections") {
        postgres::inbox other({.conninfo = conninfo});
        envelope f{.id = make_message_id(), .destination = "d", .payload = {{"order", 9}}};
        std::atomic<int> processed{0}, duplicates{0};
        // Slow handlers: the second copy's INSERT meets the first's row while it is uncommitted.
        postgres::inbox_handler slow = [&](postgres::connection& db, const envelope& m) {
            ++ran;
            db.exec("SELECT pg_sleep(0.2)");
            db.exec("INSERT INTO parcels VALUES ($1::int)",
                    {std::to_string(m.payload.at("order").get<int>())});
            return success();
        };
        auto consume_on = [&](postgres::inbox& in) {
            asio::io_context own;
            auto r = run(own, in.consume("shipping", f, slow));
            (r.status == consume_status::processed ? processed : duplicates) += 1;
        };
        std::thread t1([&] { consume_on(inbox); });
        std::thread t2([&] { consume_on(other); });
        t1.join();
        t2.join();
        CHECK(processed == 1);
        CHECK(duplicates == 1);
        CHECK(ran == 3);
        CHECK(parcels(9) == 1);
    }
    SUBCASE("a copy waiting on a copy that rolls back is processed") {
        envelope g{.id = make_message_id(), .destination = "d", .payload = {{"order", 10}}};
        postgres::inbox other({.conninfo = conninfo});
        postgres::inbox_handler fails = [](postgres::connection& db, const envelope&) {
            db.exec("SELECT pg_sleep(0.2)");
            return pending("not now");
        };
        std::atomic<int> first{-1}, second{-1};
        std::thread t1([&] {
            asio::io_context own;
            first = static_cast<int>(run(own, inbox.consume("shipping", g, fails)).status);
        });
        std::this_thread::sleep_for(50ms);
        std::thread t2([&] {
            asio::io_context own;
            second = static_cast<int>(run(own, other.consume("shipping", g, ship)).status);
        });
        t1.join();
        t2.join();
        CHECK(first == static_cast<int>(consume_status::retry));
        CHECK(second == static_cast<int>(consume_status::processed));
        CHECK(parcels(10) == 1);
    }
}

TEST_CASE("postgres inbox: what cannot be processed is rejected, what fails now is retried") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::inbox inbox({.conninfo = conninfo});
    run(ioc, inbox.run<int>([](postgres::connection& db) {
        db.exec("CREATE TABLE parcels (order_id int)");
        return 0;
    }));
    auto parcels = [&] {
        return run(ioc, inbox.run<std::int64_t>([](postgres::connection& db) {
            return db.exec("SELECT COUNT(*) FROM parcels").integer(0, 0);
        }));
    };
    outcome answer = failure("no such order");
    bool throws = false;
    postgres::inbox_handler h = [&](postgres::connection& db, const envelope&) {
        db.exec("INSERT INTO parcels VALUES (1)");
        if (throws)
            throw std::runtime_error("database hiccup");
        return answer;
    };
    envelope e{.id = make_message_id(), .destination = "d"};
    consume_result r = run(ioc, inbox.consume("shipping", e, h));
    CHECK(r.status == consume_status::rejected);
    CHECK(r.error == "no such order");
    answer = pending("later");
    CHECK(run(ioc, inbox.consume("shipping", e, h)).status == consume_status::retry);
    throws = true;
    r = run(ioc, inbox.consume("shipping", e, h));
    CHECK(r.status == consume_status::retry);
    CHECK(r.error == "database hiccup");
    CHECK(parcels() == 0); // every refusal rolled back the handler's changes and the inbox row
    throws = false;
    answer = success();
    CHECK(run(ioc, inbox.consume("shipping", e, h)).status == consume_status::processed);
    CHECK(parcels() == 1);
    std::string body = "{\"id\":7}";
    CHECK(run(ioc, inbox.consume("shipping", std::string_view(body), h)).status ==
          consume_status::rejected);
    CHECK(run(ioc, inbox.consume("bad\nname", e, h)).status == consume_status::rejected);
    CHECK(parcels() == 1);
}

TEST_CASE("postgres inbox: rows older than the retention are cleaned") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::inbox inbox(
        {.conninfo = conninfo, .retention = 0ms, .cleanup_batch = 2, .cleanup_interval = 20ms});
    postgres::inbox_handler h = [](postgres::connection&, const envelope&) { return success(); };
    for (int i = 0; i < 5; ++i)
        run(ioc, inbox.consume("c", envelope{.id = make_message_id(), .destination = "d"}, h));
    CHECK(run(ioc, wait_until([&] { return inbox.cleaned() == 5; }, 5s)));
}

TEST_CASE("postgres outbox to inbox: the relay delivers into an idempotent consumer") {
    const std::string conninfo = fresh_pg_database();
    postgres::outbox outbox({.conninfo = conninfo});
    postgres::inbox inbox({.conninfo = conninfo});
    check_outbox_to_inbox<postgres::inbox_handler>(outbox, inbox);
}
