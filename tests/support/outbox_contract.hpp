#ifndef DTX_TESTS_SUPPORT_OUTBOX_CONTRACT_HPP
#define DTX_TESTS_SUPPORT_OUTBOX_CONTRACT_HPP

// What every outbox and inbox owes the relay and the consumers, whatever the database, as doctest
// checks. Each takes fresh objects over an empty database; `Outbox::run` and `Outbox::add` are
// called with the database's own connection type, hence the generic lambdas.

#include <dtx/relay.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "model.hpp"
#include "relay_test.hpp"

namespace dtx::test {

/// A rolled-back transaction sends nothing, a committed one is delivered, once. `rows()` counts
/// the outbox's rows.
template <class Outbox>
void check_commit_and_rollback(Outbox& outbox, const std::function<std::int64_t()>& rows) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    auto failing = [&](auto& db) -> int {
        db.exec("CREATE TABLE IF NOT EXISTS orders (note TEXT)");
        db.exec("INSERT INTO orders VALUES ('x')");
        outbox.add(db, {.destination = "d", .key = "k"});
        throw std::runtime_error("the business change fails after the message was added");
    };
    CHECK_THROWS_AS(run(ioc, outbox.template run<int>(failing)), std::runtime_error);
    auto good = [&](auto& db) {
        db.exec("CREATE TABLE IF NOT EXISTS orders (note TEXT)");
        db.exec("INSERT INTO orders VALUES ('x')");
        return outbox.add(db, {.destination = "d", .key = "k"});
    };
    const std::string id = run(ioc, outbox.template run<std::string>(good));
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 5s)));
    run(ioc, wait_until([] { return false; }, 50ms));
    CHECK(pub.delivered == std::vector<std::string>{id});
    CHECK(rows() == 1);
    run(ioc, stopped(r));
}

/// add() refuses a message outside a transaction (on `idle`, a connection with none open) or
/// over the limits, and stores nothing. `rows()` counts the outbox's rows.
template <class Outbox, class Connection>
void check_add_refuses(Outbox& outbox, Connection& idle,
                       const std::function<std::int64_t()>& rows) {
    asio::io_context ioc;
    CHECK_THROWS_AS(outbox.add(idle, {.destination = "d"}), std::logic_error);
    auto bad = [&](auto& c) {
        int refused = 0;
        for (message m : {message{.destination = ""}, message{.destination = "d", .key = "a\nb"},
                          message{.id = "x;\x01", .destination = "d"},
                          message{.destination = "d", .headers = {{"bad name", "v"}}},
                          message{.destination = "d", .payload = "\xff"}}) {
            try {
                outbox.add(c, m);
            } catch (const std::invalid_argument&) {
                ++refused;
            }
        }
        return refused;
    };
    CHECK(run(ioc, outbox.template run<int>(bad)) == 5);
    CHECK(rows() == 0);
}

/// Two relays (two outbox objects over one database: two processes' worth) never deliver a
/// message at once, nor twice, and keep the order of each key.
///
/// Both relays must take part, or the test proves nothing: half the messages are there before the
/// relays start, each relay may hold only half the keys at once, and no publish completes before
/// both relays have one under way. The other half is added while they run.
template <class Outbox>
void check_two_relays(Outbox& a, Outbox& b) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    const int keys = 10, per_key = 20;
    std::set<std::string> in_flight;
    std::map<std::string, int> deliveries;
    std::map<std::string, std::vector<int>> order; // per key, the sequence numbers delivered
    int overlaps = 0;
    bool a_started = false, b_started = false;
    auto publish_as = [&](bool& started) {
        return [&](const envelope& e) -> asio::awaitable<delivery_result> {
            overlaps += !in_flight.insert(e.id).second;
            started = true;
            co_await wait_until([&] { return a_started && b_started; }, 10s);
            asio::steady_timer t(co_await asio::this_coro::executor, 1ms);
            co_await t.async_wait(asio::use_awaitable);
            in_flight.erase(e.id);
            ++deliveries[e.id];
            order[e.key].push_back(e.payload.at("n").get<int>());
            co_return delivery_result::delivered();
        };
    };
    function_publisher pa(publish_as(a_started));
    function_publisher pb(publish_as(b_started));
    const relay_options opts{.batch = 8, .max_in_flight = keys / 2, .poll_interval = 10s};
    relay ra(ioc.get_executor(), a, pa, opts);
    relay rb(ioc.get_executor(), b, pb, opts);
    auto add_round = [&](int n) {
        Outbox& by = n % 2 ? a : b;
        auto add = [&, n](auto& db) {
            for (int k = 0; k < keys; ++k)
                by.add(db,
                       {.destination = "d", .key = "k" + std::to_string(k), .payload = {{"n", n}}});
            return 0;
        };
        run(ioc, by.template run<int>(add));
    };
    for (int n = 0; n < per_key / 2; ++n)
        add_round(n);
    ra.start();
    rb.start();
    for (int n = per_key / 2; n < per_key; ++n)
        add_round(n);
    CHECK(run(ioc, wait_until([&] { return deliveries.size() == keys * per_key; }, 20s)));
    run(ioc, wait_until([] { return false; }, 50ms));
    CHECK(a_started);
    CHECK(b_started);
    CHECK(overlaps == 0);
    for (const auto& [id, times] : deliveries)
        CHECK(times == 1);
    std::vector<int> expected(per_key);
    for (int i = 0; i < per_key; ++i)
        expected[static_cast<std::size_t>(i)] = i;
    for (const auto& [key, ns] : order)
        CHECK(ns == expected);
    CHECK(ra.stats().delivered > 0);
    CHECK(rb.stats().delivered > 0);
    run(ioc, stopped(ra));
    run(ioc, stopped(rb));
}

/// A lease left by a relay that died is taken over when it expires, and the dead relay's late
/// settlement no longer applies. `delivered()` counts the outbox's delivered rows.
template <class Outbox>
void check_lease_takeover(Outbox& outbox, const std::function<std::int64_t()>& delivered) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    auto add = [&](auto& db) { return outbox.add(db, {.destination = "d"}); };
    const std::string id = run(ioc, outbox.template run<std::string>(add));
    outbox_claim dead = run(ioc, outbox.claim("dead-relay", 200ms, 10));
    REQUIRE(dead.messages.size() == 1);
    CHECK(dead.messages[0].attempt == 1);
    outbox_claim other = run(ioc, outbox.claim("other", 200ms, 10));
    CHECK(other.messages.empty()); // leased
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 50ms});
    r.start();
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 5s)));
    CHECK(pub.delivered[0] == id);
    run(ioc, settled(outbox, "dead-relay", {id, delivery_status::rejected, "late", {}}));
    CHECK(delivered() == 1);
    run(ioc, stopped(r));
}

/// The relay delivers into an idempotent consumer: every message arrives twice, as after a relay
/// that died before marking it delivered, and is processed once. `Handler` is the inbox's
/// handler type.
template <class Handler, class Outbox, class Inbox>
void check_outbox_to_inbox(Outbox& outbox, Inbox& inbox) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    std::atomic<int> ran{0};
    Handler h = [&](auto&, const envelope&) {
        ++ran;
        return success();
    };
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        co_await inbox.consume("shipping", e, h);
        consume_result again = co_await inbox.consume("shipping", e, h);
        co_return again.delivery();
    });
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    auto add = [&](auto& db) {
        for (int i = 0; i < 5; ++i)
            outbox.add(db, {.destination = "shipping", .key = "k"});
        return 0;
    };
    run(ioc, outbox.template run<int>(add));
    CHECK(run(ioc, wait_until([&] { return r.stats().delivered == 5; }, 5s)));
    CHECK(ran == 5);
    run(ioc, stopped(r));
}

/// Adds `count` messages of key `key` (destination "d", payload {"n": first, first + 1, ...}), a
/// thousand to a transaction.
template <class Outbox>
void add_many(asio::io_context& ioc, Outbox& outbox, const std::string& key, int first, int count) {
    for (int done = 0; done < count; done += 1000) {
        auto add = [&, done](auto& db) {
            for (int n = done; n < std::min(count, done + 1000); ++n)
                outbox.add(db, {.destination = "d", .key = key, .payload = {{"n", first + n}}});
            return 0;
        };
        run(ioc, outbox.template run<int>(add));
    }
}

/// A key with a large backlog (`backlog` messages) behind a dead letter holds only itself: other
/// keys' messages, each committed alone, are claimed and delivered, and no claim takes a message
/// of the held key; requeueing the dead letter then delivers the whole backlog, in order.
/// `count(where)` counts the outbox's rows.
template <class Outbox>
void check_backlog_behind_dead_letter(Outbox& outbox, int backlog,
                                      const std::function<std::int64_t(const char*)>& count) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    bool reject = true;
    std::vector<int> held; // the held key's messages delivered, in order
    std::vector<std::string> others;
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        if (e.key != "held")
            others.push_back(e.key);
        else if (reject && e.payload.at("n") == 0)
            co_return delivery_result::rejected("cannot process message 0");
        else
            held.push_back(e.payload.at("n").get<int>());
        co_return delivery_result::delivered();
    });
    add_many(ioc, outbox, "held", 0, backlog + 1); // message 0 becomes the dead letter
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    REQUIRE(run(ioc, wait_until([&] { return r.stats().dead_letters == 1; }, 5s)));
    const int other_keys = 100;
    for (int i = 0; i < other_keys; ++i) {
        auto add = [&, i](auto& db) {
            return outbox.add(db, {.destination = "d", .key = "other-" + std::to_string(i)});
        };
        run(ioc, outbox.template run<std::string>(add));
    }
    CHECK(run(ioc, wait_until([&] { return others.size() == other_keys; }, 20s)));
    run(ioc, wait_until([] { return false; }, 50ms));
    CHECK(held.empty());
    CHECK(r.stats().claimed == 1 + other_keys); // the dead letter and the other keys, no more
    CHECK(count("state = 0") == backlog);
    auto parked = run(ioc, r.dead_letters());
    REQUIRE(parked.size() == 1);
    reject = false;
    CHECK(run(ioc, r.requeue(parked[0].message.id)));
    CHECK(run(ioc, wait_until([&] { return held.size() == std::size_t(backlog) + 1; }, 60s)));
    std::vector<int> expected(static_cast<std::size_t>(backlog) + 1);
    for (std::size_t n = 0; n < expected.size(); ++n)
        expected[n] = static_cast<int>(n);
    CHECK(held == expected);
    CHECK(r.stats().claimed == std::uint64_t(2 + other_keys + backlog));
    CHECK(count("state <> 1") == 0);
    run(ioc, stopped(r));
}

/// A key whose head waits for its retries holds back its own messages only: the other keys'
/// messages, committed meanwhile, are delivered while the head keeps failing (it fails until
/// they all are; had they waited, it would become a dead letter), and the key's messages are
/// delivered in order once the head is.
template <class Outbox>
void check_retrying_head(Outbox& outbox) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    const std::size_t other_keys = 50, behind = 50;
    std::vector<int> slow; // the retrying key's messages delivered, in order
    std::size_t others = 0;
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        if (e.key != "slow") {
            ++others;
            co_return delivery_result::delivered();
        }
        if (e.payload.at("n") == 0 && others < other_keys)
            co_return delivery_result::retry_later("503 from d");
        slow.push_back(e.payload.at("n").get<int>());
        co_return delivery_result::delivered();
    });
    // At most 200 retries, 20 ms apart, before the head would be parked.
    relay r(
        ioc.get_executor(), outbox, pub,
        {.schedule = delivery_schedule::fixed(std::vector<std::chrono::milliseconds>(200, 20ms)),
         .poll_interval = 10s});
    add_many(ioc, outbox, "slow", 0, static_cast<int>(behind) + 1);
    r.start();
    REQUIRE(run(ioc, wait_until([&] { return r.stats().retried >= 1; }, 5s)));
    for (std::size_t i = 0; i < other_keys; ++i) {
        auto add = [&, i](auto& db) {
            return outbox.add(db, {.destination = "d", .key = "other-" + std::to_string(i)});
        };
        run(ioc, outbox.template run<std::string>(add));
    }
    CHECK(run(ioc, wait_until([&] { return slow.size() == behind + 1; }, 10s)));
    CHECK(others == other_keys);
    std::vector<int> expected(behind + 1);
    for (std::size_t n = 0; n < expected.size(); ++n)
        expected[n] = static_cast<int>(n);
    CHECK(slow == expected);
    CHECK(r.stats().dead_letters == 0);
    CHECK(r.stats().claimed == r.stats().retried + behind + 1 + other_keys);
    run(ioc, stopped(r));
}

/// An outbox opened over a table of schema 1 that held, in this order: a1 (key a, in flight: its
/// relay died, its lease ending soon), b1 (key b, a dead letter), a2, c1, b2, e1 (empty key),
/// a3 (pending), and c0 (delivered). Heads are a1, b1, c1 and e1; the relay delivers all but b2,
/// in order per key (a1 once its lease ends); requeueing b1 then delivers b1 and b2.
/// `count(where)` counts the outbox's rows.
template <class Outbox>
void check_schema_1_rows_delivered(Outbox& outbox,
                                   const std::function<std::int64_t(const char*)>& count) {
    using namespace std::chrono_literals;
    asio::io_context ioc;
    CHECK(count("head AND state <> 1") == 4);
    CHECK(count("ready_ms = lease_ms AND id = 'a1'") == 1);
    std::vector<std::string> got;
    function_publisher pub([&](const envelope& e) -> asio::awaitable<delivery_result> {
        got.push_back(e.id);
        co_return delivery_result::delivered();
    });
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    REQUIRE(run(ioc, wait_until([&] { return got.size() == 5; }, 5s)));
    run(ioc, wait_until([] { return false; }, 50ms));
    auto position = [&](const char* id) { return std::find(got.begin(), got.end(), id); };
    CHECK(position("a1") < position("a2"));
    CHECK(position("a2") < position("a3"));
    CHECK(position("c1") != got.end());
    CHECK(position("e1") != got.end());
    CHECK(position("b2") == got.end()); // held by its dead letter
    CHECK(run(ioc, r.requeue("b1")));
    REQUIRE(run(ioc, wait_until([&] { return got.size() == 7; }, 5s)));
    CHECK(std::vector<std::string>(got.begin() + 5, got.end()) ==
          std::vector<std::string>{"b1", "b2"});
    CHECK(count("state <> 1") == 0);
    run(ioc, stopped(r));
}

} // namespace dtx::test

#endif
