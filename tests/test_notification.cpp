// Best-effort notifications (<dtx/notification.hpp>, <dtx/http/notification_query.hpp>): a
// receiver that is down for the whole (shortened) schedule gets the attempts it says, then each
// notification is one dead letter, with one alert per cooldown window; other messages of the
// outbox keep the relay's own schedule; requeued, they are delivered; the query endpoint answers
// the result for an id.
#include <dtx/envelope.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/notification_query.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/http/server.hpp>
#include <dtx/notification.hpp>
#include <dtx/relay.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "support/http_server.hpp"
#include "support/messaging.hpp"
#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

namespace {

/// A merchant's callback endpoint: answers 503 while `down`, else 200; records every attempt.
struct receiver {
    struct attempt {
        std::string message_id, notification_id;
        unsigned n;
        std::chrono::steady_clock::time_point at;
        nlohmann::json payload;
    };
    bool down = true;
    std::vector<attempt> attempts;

    http::route_handler handler() {
        return [this](const http::request& req) -> asio::awaitable<http::reply> {
            envelope_parse p = parse_envelope(req.body());
            CHECK_MESSAGE(p, p.error);
            if (!p)
                throw http::error_reply(400, "invalid_envelope", p.error);
            const envelope& e = *p.value;
            const auto h = e.headers.find("dtx-notification");
            attempts.push_back({e.id, h == e.headers.end() ? "" : h->second, e.attempt,
                                std::chrono::steady_clock::now(), e.payload});
            if (down)
                throw http::error_reply(503, "starting", "the merchant is deploying");
            co_return http::reply::json(200, {{"ok", true}});
        };
    }

    std::vector<attempt> of(const std::string& message_id) const {
        std::vector<attempt> out;
        for (const attempt& a : attempts)
            if (a.message_id == message_id)
                out.push_back(a);
        return out;
    }
};

asio::awaitable<int> stop_all(relay& r, http::server& srv) {
    co_await r.stop();
    co_await srv.async_stop();
    co_return 0;
}

} // namespace

TEST_CASE("notifications: the schedule, then one dead letter each and one alert per window; "
          "requeued, they are delivered") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("payments.db")});
    receiver merchant;
    http::server merchant_srv(ioc, http::server_options{});
    merchant_srv.route(http::verb::post, "/callbacks", merchant.handler());
    merchant_srv.route(http::verb::post, "/events", merchant.handler());
    merchant_srv.start();
    const std::string base = "http://127.0.0.1:" + std::to_string(merchant_srv.port());

    http::client client(ioc.get_executor());
    http::publisher pub(client);
    struct heard {
        std::string destination;
        bool dead_letter;
        unsigned attempts;
    };
    std::vector<heard> alerts;
    relay_options o{.schedule = delivery_schedule::fixed({10ms}),
                    .poll_interval = 10s,
                    .alert_after = 0,
                    .alert_cooldown = 1h,
                    .on_alert = [&](const delivery_alert& a) {
                        alerts.push_back({std::string(a.destination), a.dead_letter, a.attempts});
                    }};
    relay r(ioc.get_executor(), outbox, pub,
            with_notifications(std::move(o), delivery_schedule::fixed({30ms, 60ms, 90ms})));

    auto add = [&](sqlite::connection& db) {
        std::vector<std::string> ids;
        for (const char* id : {"p-1", "p-2"})
            ids.push_back(notify(outbox, db,
                                 {.receiver = base + "/callbacks",
                                  .id = id,
                                  .result = {{"state", "paid"}, {"payment", id}}}));
        ids.push_back(outbox.add(db, {.destination = base + "/events", .key = "p-1"}));
        return ids;
    };
    const auto ids = run(ioc, outbox.run<std::vector<std::string>>(add));
    r.start();
    auto wait = [&](auto done, std::chrono::milliseconds limit = 5s) {
        return run(ioc, wait_until(done, limit));
    };
    REQUIRE(wait([&] { return r.stats().dead_letters == 3; }));
    wait([] { return false; }, 200ms); // nothing more happens: dead letters are not sent again

    // Each notification: 4 attempts (the first, then after 30, 60 and 90 ms), numbered 1 to 4.
    for (int i = 0; i < 2; ++i) {
        const auto tries = merchant.of(ids[i]);
        REQUIRE(tries.size() == 4);
        const std::chrono::milliseconds gaps[] = {30ms, 60ms, 90ms};
        for (std::size_t k = 0; k < tries.size(); ++k) {
            CHECK(tries[k].n == k + 1);
            CHECK(tries[k].notification_id == (i == 0 ? "p-1" : "p-2"));
            if (k > 0)
                CHECK(tries[k].at - tries[k - 1].at >= gaps[k - 1]);
        }
        CHECK(tries[0].payload ==
              notification_payload(i == 0 ? "p-1" : "p-2",
                                   {{"state", "paid"}, {"payment", i == 0 ? "p-1" : "p-2"}}));
    }
    // The other message keeps the relay's own schedule (2 attempts), though its key is "p-1".
    CHECK(merchant.of(ids[2]).size() == 2);
    CHECK(merchant.of(ids[2])[0].notification_id.empty());

    auto dead = run(ioc, r.dead_letters());
    REQUIRE(dead.size() == 3);
    CHECK(dead[0].last_error.find("HTTP 503") != std::string::npos);
    // One alert per destination and window: the two notifications share the callback URL.
    CHECK(r.stats().alerts == 2);
    CHECK(r.stats().alerts_suppressed == 1);
    REQUIRE(alerts.size() == 2);
    CHECK(alerts[0].destination == base + "/events"); // parked first: 2 attempts, 10 ms
    CHECK(alerts[0].attempts == 2);
    CHECK(alerts[1].destination == base + "/callbacks");
    CHECK(alerts[1].dead_letter);
    CHECK(alerts[1].attempts == 4);

    merchant.down = false;
    for (const auto& id : ids)
        CHECK(run(ioc, r.requeue(id)));
    REQUIRE(wait([&] { return r.stats().delivered == 3; }));
    CHECK(merchant.of(ids[0]).back().n == 1); // attempts start again after a requeue
    CHECK(run(ioc, r.dead_letters()).empty());
    run(ioc, stop_all(r, merchant_srv));
}

TEST_CASE("notifications: the message of a notification, and the preset schedule by default") {
    const message m = notification_message({.receiver = "https://merchant.example/cb",
                                            .id = "p-9",
                                            .result = {{"state", "refunded"}}});
    CHECK(m.destination == "https://merchant.example/cb");
    CHECK(m.key == "notification:p-9");
    CHECK(m.headers.at("dtx-notification") == "p-9");
    CHECK(m.payload == nlohmann::json{{"id", "p-9"}, {"result", {{"state", "refunded"}}}});

    relay_options o = with_notifications({});
    envelope n{.id = "m-1", .headers = {{"dtx-notification", "p-9"}}};
    envelope other{.id = "m-2"};
    REQUIRE(o.schedule_for);
    const delivery_schedule* s = o.schedule_for(n);
    REQUIRE(s);
    CHECK(s->max_attempts() == delivery_schedule::notifications().max_attempts());
    CHECK(s->delay_after(1) == 15s);
    CHECK(o.schedule_for(other) == nullptr);
}

TEST_CASE("notification query: GET {prefix}/{id} answers the result a notification carries") {
    std::map<std::string, nlohmann::json> results{{"p-1", {{"state", "paid"}}},
                                                  {"p 2/ü", {{"state", "failed"}}}};
    http::result_lookup lookup =
        [&](std::string id) -> asio::awaitable<std::optional<nlohmann::json>> {
        const auto it = results.find(id);
        if (it == results.end())
            co_return std::nullopt;
        co_return it->second;
    };
    running_server srv(
        {.bearer_token = "s3cret"},
        [&](http::server& s) { http::add_notification_query(s, "/payments", lookup); }, false);
    raw_client c(srv.port());
    const std::string token = "Authorization: Bearer s3cret\r\n";

    answer a = c.exchange(get("/payments/p-1", token));
    CHECK(a.result_int() == 200);
    CHECK(nlohmann::json::parse(a.body()) == notification_payload("p-1", {{"state", "paid"}}));
    a = c.exchange(get("/payments/p%202%2F%C3%BC", token));
    CHECK(a.result_int() == 200);
    CHECK(nlohmann::json::parse(a.body())["id"] == "p 2/ü");
    a = c.exchange(get("/payments/p-3", token));
    CHECK(a.result_int() == 404);
    CHECK(error_of(a) == "unknown_id");
    CHECK(c.exchange(get("/payments/p-1")).result_int() == 401);
    CHECK(c.exchange(get("/payments/%FF", token)).result_int() == 400);
    CHECK(c.exchange(post("/payments/p-1", "{}", token)).result_int() == 405);
    CHECK(c.exchange(get("/payments/p-1", token)).result_int() == 200); // still serving
}
