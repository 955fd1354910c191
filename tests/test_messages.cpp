// Messages: the envelope and its parser, delivery schedules, the alert throttle, and the relay
// (over the SQLite outbox): wake at commit, per-key order across retries, poison messages,
// dead letters, requeue and discard, cleanup; what the HTTP publisher makes of answers (its way
// into a consumer's inbox is in test_http_consumer.cpp).
#include <dtx/delivery_alert.hpp>
#include <dtx/delivery_schedule.hpp>
#include <dtx/envelope.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/relay.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <doctest/doctest.h>

#include <map>
#include <set>

#include "support/messaging.hpp"
#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

namespace {

envelope sample_envelope() {
    envelope e;
    e.id = make_message_id();
    e.key = "order-42";
    e.destination = "http://127.0.0.1:1/events";
    e.headers = {{"type", "order_completed"}};
    e.payload = {{"order", 42}};
    e.attempt = 2;
    e.produced_at = 1767225600000;
    return e;
}

asio::awaitable<int> stopped(relay& r) {
    co_await r.stop();
    co_return 0;
}

/// A publisher that records every attempt and answers as `answer` says.
struct recording_publisher : publisher {
    struct attempt {
        std::string id, key;
        unsigned n;
        std::chrono::steady_clock::time_point at;
    };
    std::vector<attempt> attempts;
    std::vector<std::string> delivered; // ids, in delivery order
    std::function<delivery_result(const envelope&)> answer = [](const envelope&) {
        return delivery_result::delivered();
    };

    asio::awaitable<std::vector<delivery_result>>
    publish(std::span<const envelope> batch) override {
        std::set<std::string> keys;
        std::vector<delivery_result> out;
        for (const envelope& e : batch) {
            CHECK((e.key.empty() || keys.insert(e.key).second)); // one per key in a batch
            attempts.push_back({e.id, e.key, e.attempt, std::chrono::steady_clock::now()});
            out.push_back(answer(e));
            if (out.back().status == delivery_status::delivered)
                delivered.push_back(e.id);
        }
        co_return out;
    }
};

/// An outbox, a publisher and a relay over them, on one io_context.
struct setup {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox{{.path = dir.file("orders.db")}};
    recording_publisher pub;
    std::vector<std::string> alerts;
    std::unique_ptr<relay> r;

    explicit setup(relay_options o = {}) {
        if (!o.on_alert)
            o.on_alert = [this](const delivery_alert& a) { alerts.emplace_back(a.message_id); };
        r = std::make_unique<relay>(ioc.get_executor(), outbox, pub, std::move(o));
    }
    ~setup() { run(ioc, stopped(*r)); }

    /// Adds messages (destination "d") in one committed transaction; returns their ids.
    std::vector<std::string> add(std::vector<std::string> keys) {
        return run(ioc, outbox.run<std::vector<std::string>>([this, keys](sqlite::connection& db) {
            std::vector<std::string> ids;
            for (const auto& k : keys)
                ids.push_back(
                    outbox.add(db, {.destination = "d", .key = k, .payload = {{"k", k}}}));
            return ids;
        }));
    }
    bool wait(std::function<bool()> done, std::chrono::milliseconds limit = 5s) {
        return run(ioc, wait_until(std::move(done), limit));
    }
};

} // namespace

TEST_CASE("an envelope reads back what it wrote") {
    const envelope e = sample_envelope();
    envelope_parse p = parse_envelope(e.to_json());
    REQUIRE(p);
    CHECK(p.value->id == e.id);
    CHECK(p.value->key == e.key);
    CHECK(p.value->destination == e.destination);
    CHECK(p.value->headers == e.headers);
    CHECK(p.value->payload == e.payload);
    CHECK(p.value->attempt == 2);
    CHECK(p.value->produced_at == e.produced_at);
}

TEST_CASE("a malformed envelope gets an error that says what is wrong") {
    auto error_of = [](std::string_view text) {
        envelope_parse p = parse_envelope(text);
        CHECK(!p);
        return p.error;
    };
    const std::string ok_tail = R"(,"destination":"d","attempt":1,"produced_at":0})";
    CHECK(error_of("not json").find("not JSON") != std::string::npos);
    CHECK(error_of("[1]").find("not a JSON object") != std::string::npos);
    CHECK(error_of(R"({"destination":"d","attempt":1,"produced_at":0})").find("\"id\"") !=
          std::string::npos);
    CHECK(error_of(R"({"id":7)" + ok_tail).find("\"id\"") != std::string::npos);
    CHECK(error_of(R"({"id":""})" + ok_tail.substr(0, 0) + R"()").find("malformed") == 0);
    CHECK(error_of(R"({"id":"a\nb")" + ok_tail).find("message id") != std::string::npos);
    CHECK(error_of(R"({"id":")" + std::string(129, 'x') + "\"" + ok_tail).find("message id") !=
          std::string::npos);
    CHECK(error_of(R"({"id":"m","attempt":0,"destination":"d","produced_at":0})")
              .find("\"attempt\"") != std::string::npos);
    CHECK(error_of(R"({"id":"m","attempt":-1,"destination":"d","produced_at":0})")
              .find("\"attempt\"") != std::string::npos);
    CHECK(error_of(R"({"id":"m","destination":"d","attempt":1})").find("produced_at") !=
          std::string::npos);
    CHECK(error_of(R"({"id":"m","headers":{"a b":"x"})" + ok_tail).find("header name") !=
          std::string::npos);
    CHECK(error_of(R"({"id":"m","headers":{"a":1})" + ok_tail).find("header values") !=
          std::string::npos);
    CHECK(error_of(R"({"id":"m","key":5)" + ok_tail).find("\"key\"") != std::string::npos);
    CHECK(error_of(R"({"id":"m","payload":)" + std::string(100, '[') + std::string(100, ']') +
                   ok_tail)
              .find("deeper") != std::string::npos);
    CHECK(error_of(R"({"id":"\xff")" + ok_tail).find("not JSON") != std::string::npos);
    // `field` names the field at fault, or none when the text as a whole is.
    CHECK(parse_envelope(R"({"destination":"d","attempt":1,"produced_at":0})").field == "id");
    CHECK(parse_envelope(R"({"id":"m","attempt":0,"destination":"d","produced_at":0})").field ==
          "attempt");
    CHECK(parse_envelope(R"({"id":"m","headers":{"a b":"x"})" + ok_tail).field == "headers");
    CHECK(parse_envelope("not json").field.empty());
    message_limits small;
    small.max_payload = 10;
    envelope_parse big = parse_envelope(
        R"({"id":"m","payload":"0123456789abcdef","destination":"d","attempt":1,"produced_at":0})",
        small);
    CHECK(!big);
    CHECK(big.error.find("payload") != std::string::npos);
}

TEST_CASE("delivery schedules: fixed delays, the notification preset, jittered backoff") {
    auto fixed = delivery_schedule::fixed({10ms, 20ms});
    CHECK(fixed.max_attempts() == 3);
    CHECK(fixed.delay_after(1) == 10ms);
    CHECK(fixed.delay_after(2) == 20ms);
    CHECK(!fixed.delay_after(3));
    CHECK(fixed.horizon() == 30ms);

    auto n = delivery_schedule::notifications();
    CHECK(n.max_attempts() == 17);
    CHECK(n.delay_after(1) == 15s);
    CHECK(n.delay_after(4) == 3min);
    CHECK(n.delay_after(16) == 24h);
    CHECK(!n.delay_after(17));
    CHECK(n.horizon() > 47h);
    CHECK(n.horizon() < 49h);

    auto b = delivery_schedule::backoff(
        {.immediate = 2, .initial = 100ms, .max = 1s, .multiplier = 2.0, .max_attempts = 10});
    CHECK(b.delay_after(1) == 0ms);
    CHECK(b.delay_after(2) == 0ms);
    for (int i = 0; i < 100; ++i) {
        auto d3 = *b.delay_after(3); // first backoff: [50, 100]
        CHECK(d3 >= 50ms);
        CHECK(d3 <= 100ms);
        auto d9 = *b.delay_after(9); // capped: [500, 1000]
        CHECK(d9 >= 500ms);
        CHECK(d9 <= 1s);
    }
    CHECK(!b.delay_after(10));
}

TEST_CASE("alerts: once per window and destination, with the count held back") {
    std::vector<std::pair<std::string, std::uint64_t>> heard;
    alert_throttle t(1min, [&](const delivery_alert& a) {
        heard.emplace_back(std::string(a.destination), a.suppressed);
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto report = [&](const char* dest, std::chrono::seconds after) {
        return t.report({dest, "m", "down", 1, false, 0}, t0 + after);
    };
    CHECK(report("a", 0s));
    CHECK(!report("a", 1s));
    CHECK(!report("a", 59s));
    CHECK(report("b", 2s)); // another destination has its own window
    CHECK(report("a", 61s));
    REQUIRE(heard.size() == 3);
    CHECK(heard[2] == std::pair<std::string, std::uint64_t>("a", 2));
}

TEST_CASE("relay: a commit wakes it, long before its poll") {
    setup s({.poll_interval = 10s});
    s.r->start();
    s.wait([] { return false; }, 50ms); // the relay is asleep, in its 10 s poll
    const auto start = std::chrono::steady_clock::now();
    auto ids = s.add({"k"});
    REQUIRE(s.wait([&] { return s.pub.delivered.size() == 1; }, 5s));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(s.pub.delivered[0] == ids[0]);
    CHECK(s.r->stats().wakes >= 1);
}

TEST_CASE("relay: per-key order holds across retries; other keys flow meanwhile") {
    setup s({.schedule = delivery_schedule::fixed({30ms, 30ms, 30ms}), .poll_interval = 10s});
    int failures_left = 2;
    std::string first;
    s.pub.answer = [&](const envelope& e) {
        if (e.id == first && failures_left > 0) {
            --failures_left;
            return delivery_result::retry_later("consumer restarting");
        }
        return delivery_result::delivered();
    };
    auto ids = s.add({"k", "k", "other", "k"});
    first = ids[0];
    s.r->start();
    REQUIRE(s.wait([&] { return s.pub.delivered.size() == 4; }));
    std::vector<std::string> k_order;
    for (const auto& id : s.pub.delivered)
        if (id != ids[2])
            k_order.push_back(id);
    CHECK(k_order == std::vector<std::string>{ids[0], ids[1], ids[3]});
    CHECK(s.pub.delivered[0] == ids[2]); // "other" did not wait for k's retries
    CHECK(s.r->stats().retried == 2);
    CHECK(s.pub.attempts[2].n == 2); // the first message's second attempt says so
}

TEST_CASE("relay: the schedule is followed, then exactly one dead letter and one alert") {
    setup s({.schedule = delivery_schedule::fixed({40ms, 80ms}),
             .poll_interval = 10s,
             .alert_after = 1,
             .alert_cooldown = 1h});
    s.pub.answer = [](const envelope&) { return delivery_result::retry_later("503 from d"); };
    auto ids = s.add({"k"});
    s.r->start();
    REQUIRE(s.wait([&] { return s.r->stats().dead_letters == 1; }));
    s.wait([] { return false; }, 100ms); // nothing more happens
    REQUIRE(s.pub.attempts.size() == 3);
    CHECK(s.pub.attempts[1].at - s.pub.attempts[0].at >= 40ms);
    CHECK(s.pub.attempts[2].at - s.pub.attempts[1].at >= 80ms);
    CHECK(s.r->stats().dead_letters == 1);
    CHECK(s.alerts.size() == 1); // two retries and the dead letter: one window
    CHECK(s.r->stats().alerts_suppressed == 2);
    auto dead = run(s.ioc, s.r->dead_letters());
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].message.id == ids[0]);
    CHECK(dead[0].message.attempt == 3);
    CHECK(dead[0].last_error == "503 from d");

    SUBCASE("requeue delivers it") {
        s.pub.answer = [](const envelope&) { return delivery_result::delivered(); };
        CHECK(run(s.ioc, s.r->requeue(ids[0])));
        REQUIRE(s.wait([&] { return s.pub.delivered.size() == 1; }));
        CHECK(run(s.ioc, s.r->dead_letters()).empty());
        CHECK(!run(s.ioc, s.r->requeue(ids[0]))); // no longer a dead letter
    }
    SUBCASE("discard removes it") {
        CHECK(run(s.ioc, s.r->discard(ids[0])));
        CHECK(run(s.ioc, s.r->dead_letters()).empty());
        CHECK(!run(s.ioc, s.r->discard(ids[0])));
        CHECK(run(s.ioc, s.outbox.run<std::int64_t>([](sqlite::connection& db) {
                  auto& st = db.prepare("SELECT COUNT(*) FROM dtx_outbox");
                  st.step();
                  return st.integer(0);
              })) == 0);
    }
}

TEST_CASE("relay: a poison message is parked at once, holds its key, and other keys flow") {
    setup s({.poll_interval = 10s});
    std::string poison;
    s.pub.answer = [&](const envelope& e) {
        return e.id == poison ? delivery_result::rejected("422: cannot parse payload")
                              : delivery_result::delivered();
    };
    auto ids = s.add({"bad", "bad", "a", "b"});
    poison = ids[0];
    s.r->start();
    REQUIRE(s.wait([&] { return s.pub.delivered.size() == 2; }));
    s.wait([] { return false; }, 100ms);
    CHECK(s.pub.delivered == std::vector<std::string>{ids[2], ids[3]});
    CHECK(s.r->stats().rejected == 1);
    CHECK(s.alerts == std::vector<std::string>{poison});
    // The later message of its key waits for the operator; discarding the poison frees it.
    CHECK(run(s.ioc, s.r->discard(poison)));
    REQUIRE(s.wait([&] { return s.pub.delivered.size() == 3; }));
    CHECK(s.pub.delivered[2] == ids[1]);
}

TEST_CASE("relay: a delayed message waits for its time; delivered rows are cleaned") {
    setup s({.poll_interval = 10s, .retention = 0ms, .cleanup_interval = 0ms});
    s.r->start();
    const auto start = std::chrono::steady_clock::now();
    run(s.ioc, s.outbox.run<int>([&](sqlite::connection& db) {
        s.outbox.add(db,
                     {.destination = "d", .deliver_at = std::chrono::system_clock::now() + 150ms});
        return 0;
    }));
    REQUIRE(s.wait([&] { return s.pub.delivered.size() == 1; }));
    CHECK(std::chrono::steady_clock::now() - start >= 140ms);
    s.add({"x", "y"});
    REQUIRE(s.wait([&] { return s.r->stats().cleaned == 3; }));
}

TEST_CASE("http publisher: what each answer means") {
    auto status_of = [](unsigned status) {
        return http::publisher::result_of("http://x/e", status, "body").status;
    };
    for (unsigned s : {200u, 201u, 202u, 204u})
        CHECK(status_of(s) == delivery_status::delivered);
    for (unsigned s : {400u, 401u, 403u, 404u, 409u, 410u, 413u, 422u})
        CHECK(status_of(s) == delivery_status::rejected);
    for (unsigned s : {100u, 302u, 408u, 425u, 429u, 500u, 502u, 503u, 504u})
        CHECK(status_of(s) == delivery_status::retry);
    delivery_result r = http::publisher::result_of("http://x/e", 503, "down\xff\n");
    CHECK(r.error == "POST http://x/e: HTTP 503: down\xef\xbf\xbd\\n");
}

TEST_CASE("http publisher: a destination that does not answer is retried") {
    asio::io_context ioc;
    http::client client(ioc.get_executor(), {.connect_timeout = 500ms});
    http::publisher pub(client);
    asio::ip::tcp::acceptor closed(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    const auto port = closed.local_endpoint().port();
    closed.close();
    envelope e = sample_envelope();
    e.destination = "http://127.0.0.1:" + std::to_string(port) + "/events";
    delivery_result r = run(ioc, pub.deliver(e));
    CHECK(r.status == delivery_status::retry);
    CHECK(r.error.find("127.0.0.1") != std::string::npos);
}

TEST_CASE("relay: a slow destination holds back only its own keys") {
    setup s({.poll_interval = 10s});
    struct slow_publisher : publisher {
        std::vector<std::string> delivered;
        asio::awaitable<std::vector<delivery_result>>
        publish(std::span<const envelope> batch) override {
            if (!batch.empty() && batch[0].key == "slow") {
                asio::steady_timer t(co_await asio::this_coro::executor, 1500ms);
                co_await t.async_wait(asio::use_awaitable);
            }
            for (const envelope& e : batch)
                delivered.push_back(e.key);
            co_return std::vector<delivery_result>(batch.size(), delivery_result::delivered());
        }
    } pub;
    relay r(s.ioc.get_executor(), s.outbox, pub, {.poll_interval = 10s});
    r.start();
    s.add({"slow"});
    s.wait([] { return false; }, 50ms); // its batch is under way
    s.add({"a", "b"});
    REQUIRE(s.wait([&] { return pub.delivered.size() == 2; }, 1s));
    CHECK(pub.delivered == std::vector<std::string>{"a", "b"});
    REQUIRE(s.wait([&] { return pub.delivered.size() == 3; }, 5s));
    run(s.ioc, stopped(r));
    CHECK(r.stats().delivered == 3);
}
