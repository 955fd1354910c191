// The consumer endpoint (<dtx/http/consumer.hpp>): a producer's outbox and relay deliver through
// the HTTP publisher to a route of dtx::http::server in front of a SQLite inbox. End to end with
// a retry, duplicates acknowledged without a second effect, a poison message parked while other
// keys flow, bad input refused with a JSON error while the server keeps serving, and the bearer
// token; and a PostgreSQL inbox behind the same route.
#include <dtx/http/client.hpp>
#include <dtx/http/consumer.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/http/server.hpp>
#include <dtx/postgres/inbox.hpp>
#include <dtx/relay.hpp>
#include <dtx/sqlite/inbox.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "support/http_server.hpp"
#include "support/messaging.hpp"
#include "support/model.hpp"
#include "support/pg_server.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

namespace {

using parcel_row = std::tuple<std::string, std::string, std::int64_t>; // message id, key, seq

/// What the shipping service's handler does: {"poison":true} can never be shipped (failure),
/// `busy` calls are answered pending first; the others insert a parcel.
struct shipping {
    std::atomic<int> busy{0};
    std::atomic<int> runs{0}; // parcels inserted (handlers that answered success)

    sqlite::inbox_handler handler() {
        return [this](sqlite::connection& db, const envelope& e) {
            if (e.payload.value("poison", false))
                return failure("cannot ship that");
            if (busy.fetch_sub(1) > 0)
                return pending("the warehouse is busy");
            db.prepare("INSERT INTO parcels (msg_id, key, seq) VALUES (?, ?, ?)")
                .bind(e.id, e.key, e.payload.value("seq", std::int64_t{0}))
                .run();
            ++runs;
            return success();
        };
    }
};

void create_parcels(asio::io_context& ioc, sqlite::inbox& inbox) {
    run(ioc, inbox.run<int>([](sqlite::connection& db) {
        db.exec("CREATE TABLE IF NOT EXISTS parcels (n INTEGER PRIMARY KEY, msg_id TEXT, key TEXT, "
                "seq INTEGER)");
        return 0;
    }));
}

/// A producer (outbox, relay, HTTP publisher) and a consumer (server, route "/events", inbox)
/// on one io_context.
struct shop {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox{{.path = dir.file("orders.db")}};
    sqlite::inbox inbox{{.path = dir.file("shipping.db")}};
    shipping ship;
    std::vector<std::pair<std::string, consume_result>> results; // what on_result heard
    http::server srv;
    http::client client;
    http::publisher pub{client};
    relay r;

    explicit shop(http::server_options so = {}, http::client_options co = {},
                  const std::function<void(http::server&)>& more_routes = {})
        : srv(ioc, std::move(so))
        , client(ioc.get_executor(), std::move(co))
        , r(ioc.get_executor(), outbox, pub,
            {.schedule = delivery_schedule::fixed({20ms, 20ms, 20ms}), .poll_interval = 10s}) {
        create_parcels(ioc, inbox);
        http::add_consumer(srv, "/events", inbox, "shipping", ship.handler(),
                           {.on_result = [this](std::string_view id, const consume_result& c) {
                               results.emplace_back(std::string(id), c);
                           }});
        if (more_routes)
            more_routes(srv);
        srv.start();
    }
    ~shop() { run(ioc, stop()); }

    asio::awaitable<int> stop() {
        co_await r.stop();
        co_await srv.async_stop();
        co_return 0;
    }

    std::string url(const char* path = "/events") const {
        return "http://127.0.0.1:" + std::to_string(srv.port()) + path;
    }

    /// Adds `messages` in one committed transaction (to "/events" unless they say otherwise).
    std::vector<std::string> add(std::vector<message> messages) {
        auto job = [&](sqlite::connection& db) {
            std::vector<std::string> ids;
            for (message& m : messages) {
                if (m.destination.empty())
                    m.destination = url();
                ids.push_back(outbox.add(db, m));
            }
            return ids;
        };
        return run(ioc, outbox.run<std::vector<std::string>>(job));
    }

    std::vector<parcel_row> parcels() {
        return run(ioc, inbox.run<std::vector<parcel_row>>([](sqlite::connection& db) {
            std::vector<parcel_row> rows;
            auto& st = db.prepare("SELECT msg_id, key, seq FROM parcels ORDER BY n");
            while (st.step())
                rows.emplace_back(st.text(0), st.text(1), st.integer(2));
            return rows;
        }));
    }

    http::response post(const std::string& body) {
        return run(ioc, client.post(http::make_url(url()), "", body));
    }

    bool wait(std::function<bool()> done, std::chrono::milliseconds limit = 5s) {
        return run(ioc, wait_until(std::move(done), limit));
    }
};

message to_ship(std::string key, int seq, bool poison = false) {
    return {.key = std::move(key), .payload = {{"seq", seq}, {"poison", poison}}};
}

nlohmann::json json_body(const std::string& body) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    REQUIRE_MESSAGE(j.is_object(), body);
    return j;
}

} // namespace

TEST_CASE("consumer endpoint: outbox to inbox over HTTP, in key order, a 503 retried") {
    shop s;
    s.ship.busy = 1; // the first message is answered pending: 503, and sent again
    s.add({to_ship("a", 1), to_ship("b", 1), to_ship("a", 2), to_ship("c", 1), to_ship("a", 3),
           to_ship("b", 2)});
    s.r.start();
    REQUIRE(s.wait([&] { return s.r.stats().delivered == 6; }));
    CHECK(s.r.stats().retried == 1);
    CHECK(s.r.stats().dead_letters == 0);

    const auto parcels = s.parcels();
    REQUIRE(parcels.size() == 6);
    std::map<std::string, std::int64_t> last;
    std::map<std::string, int> times;
    for (const auto& [id, key, seq] : parcels) {
        CHECK(++times[id] == 1);
        CHECK(seq == last[key] + 1); // commit order per key
        last[key] = seq;
    }
    CHECK(last == std::map<std::string, std::int64_t>{{"a", 3}, {"b", 2}, {"c", 1}});
    CHECK(s.ship.runs == 6);
    REQUIRE(s.results.size() == 7);
    int retries = 0;
    for (const auto& [id, result] : s.results)
        if (result.status == consume_status::retry) {
            ++retries;
            CHECK(result.error == "the warehouse is busy"); // told the hook, not the producer
        }
    CHECK(retries == 1);
}

TEST_CASE("consumer endpoint: many messages in flight reuse the client's kept-alive connections") {
    shop s({}, {.max_idle_per_endpoint = 4});
    std::vector<message> batch;
    for (int i = 0; i < 300; ++i)
        batch.push_back(to_ship("k" + std::to_string(i), 1)); // 300 keys: all may go at once
    s.add(std::move(batch));
    s.r.start();
    REQUIRE(s.wait([&] { return s.r.stats().delivered == 300; }, 20s));
    // At most 4 requests at once to the consumer, on the 4 connections the client keeps: none
    // opened for one request and closed after.
    CHECK(s.client.stats().connections <= 4);
    CHECK(s.client.stats().requests == 300);
    CHECK(s.ship.runs == 300);
}

TEST_CASE("consumer endpoint: a duplicate is answered 200 without a second effect") {
    shop s;
    envelope e{
        .id = make_message_id(), .key = "a", .destination = s.url(), .payload = {{"seq", 1}}};

    s.ship.busy = 1;
    http::response a = s.post(e.to_json());
    CHECK(a.status == 503);
    CHECK(json_body(a.body)["error"] == "retry_later");
    CHECK(a.body.find("warehouse") == std::string::npos); // the reason stays with the consumer

    a = s.post(e.to_json());
    CHECK(a.status == 200);
    CHECK(json_body(a.body) == nlohmann::json{{"status", "processed"}});
    e.attempt = 2; // the relay sends it again: it died before marking it delivered
    a = s.post(e.to_json());
    CHECK(a.status == 200);
    CHECK(json_body(a.body) == nlohmann::json{{"status", "duplicate"}});
    CHECK(run(s.ioc, s.pub.deliver(e)).status == delivery_status::delivered);
    CHECK(s.ship.runs == 1);
    CHECK(s.parcels().size() == 1);
}

TEST_CASE("consumer endpoint: a poison message is parked at once; other keys flow past it") {
    shop s;
    auto ids = s.add({to_ship("bad", 1, true),
                      to_ship("bad", 2),
                      to_ship("a", 1),
                      to_ship("b", 1),
                      {.destination = "ftp://nowhere", .key = "x"}});
    s.r.start();
    REQUIRE(s.wait([&] { return s.r.stats().delivered == 2 && s.r.stats().dead_letters == 2; }));
    s.wait([] { return false; }, 100ms); // nothing more happens
    CHECK(s.r.stats().rejected == 2);
    CHECK(s.r.stats().retried == 0); // parked at once, not retried
    auto dead = run(s.ioc, s.r.dead_letters());
    REQUIRE(dead.size() == 2);
    CHECK(dead[0].message.id == ids[0]);
    CHECK(dead[0].last_error.find("HTTP 422") != std::string::npos);
    CHECK(dead[0].last_error.find("cannot ship that") != std::string::npos);
    CHECK(dead[1].message.id == ids[4]);
    CHECK(dead[1].last_error.find("not an http") != std::string::npos);
    auto parcels = s.parcels();
    REQUIRE(parcels.size() == 2);
    CHECK(std::get<1>(parcels[0]) != "bad");
    CHECK(std::get<1>(parcels[1]) != "bad");

    // The later message of its key waits for the operator; discarding the poison frees it.
    CHECK(run(s.ioc, s.r.discard(ids[0])));
    REQUIRE(s.wait([&] { return s.r.stats().delivered == 3; }));
    CHECK(std::get<0>(s.parcels().back()) == ids[1]);
}

TEST_CASE("consumer endpoint: bad input gets a 4xx JSON error naming the field; nothing is "
          "processed and the server keeps serving") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::inbox inbox({.path = dir.file("shipping.db")});
    create_parcels(ioc, inbox);
    shipping ship;
    http::consumer_options o;
    o.limits.max_payload = 1000;
    o.limits.max_headers = 4;
    const std::size_t limit = envelope_size_limit(o.limits);
    running_server srv(
        {},
        [&](http::server& server) {
            http::add_consumer(server, "/events", inbox, "shipping", ship.handler(), o);
        },
        false);
    raw_client c(srv.port());

    const std::string tail = R"("destination":"d","attempt":1,"produced_at":0})";
    auto refused = [&](const std::string& body, const char* field) {
        const answer a = c.exchange(post("/events", body));
        CHECK_MESSAGE(a.result_int() == 400, body);
        CHECK(a.keep_alive());
        const nlohmann::json j = json_body(a.body());
        CHECK(j["error"] == "invalid_envelope");
        CHECK(j["message"].is_string());
        CHECK(dtx::detail::valid_utf8(a.body()));
        if (field)
            CHECK_MESSAGE(j.value("field", "") == field, body);
        else
            CHECK(!j.contains("field"));
        return j["message"].get<std::string>();
    };
    CHECK(refused("{\"id\":", nullptr).find("not JSON") != std::string::npos);
    CHECK(refused("", nullptr).find("not JSON") != std::string::npos);
    CHECK(refused("[1,2]", nullptr).find("not a JSON object") != std::string::npos);
    CHECK(refused("{" + tail, "id").find("\"id\"") != std::string::npos);
    refused(R"({"id":7,)" + tail, "id");
    refused(R"({"id":"",)" + tail, "id");
    refused(R"({"id":"a\nb",)" + tail, "id");
    refused(R"({"id":"m-1","attempt":"1","destination":"d","produced_at":0})", "attempt");
    refused(R"({"id":"m-1","attempt":1,"destination":"d"})", "produced_at");
    refused(R"({"id":"m-1","key":["k"],)" + tail, "key");
    refused(R"({"id":"m-1","headers":{"type":1},)" + tail, "headers");
    // What the request sent is never repeated.
    CHECK(refused(R"({"id":"m-1","headers":{"FAILURE ONGOING":"x"},)" + tail, "headers")
              .find("FAILURE") == std::string::npos);
    refused(R"({"id":"m-1","destination":"","attempt":1,"produced_at":0})", "destination");
    refused(R"({"id":"m-1","payload":")" + std::string(1200, 'x') + "\"," + tail, "payload");
    // Invalid UTF-8 in a string (a raw 0xFF byte; a lone surrogate) is not JSON.
    refused("{\"id\":\"m-\xff\"," + tail, nullptr);
    refused(R"({"id":"m-\ud800",)" + tail, nullptr);
    CHECK(c.exchange(get("/events")).result_int() == 405);
    CHECK(ship.runs == 0);

    // Over the largest envelope: 413 on the header, before the body is read.
    {
        raw_client big(srv.port());
        big.send("POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: " +
                 std::to_string(limit + 1) + "\r\n\r\n");
        const answer a = big.read();
        CHECK(a.result_int() == 413);
        CHECK(json_body(a.body())["message"] ==
              "the body exceeds " + std::to_string(limit) + " bytes");
        CHECK(big.closed());
    }

    // The server still serves, on the connection that sent the bad requests too.
    envelope e{.id = make_message_id(), .destination = "d", .payload = {{"seq", 1}}};
    answer a = c.exchange(post("/events", e.to_json()));
    CHECK(a.result_int() == 200);
    CHECK(json_body(a.body()) == nlohmann::json{{"status", "processed"}});
    CHECK(ship.runs == 1);
    // The log hook hears each answer once it was written.
    CHECK(eventually([&] {
        const auto log = srv.log();
        return !log.empty() && log.back().status == 200;
    }));
    const auto log = srv.log();
    CHECK(log.front().route == "/events");
    CHECK(log.front().status == 400);
}

TEST_CASE("consumer endpoint: the server's bearer token is required, and the publisher sends it") {
    std::vector<std::string> seen_ids; // the Dtx-Message-Id header of each request to "/ids"
    auto ids_route = [&](http::server& srv) {
        srv.route(http::verb::post, "/ids",
                  [&](const http::request& req) -> asio::awaitable<http::reply> {
                      seen_ids.emplace_back(req.header("Dtx-Message-Id"));
                      co_return http::reply::json(200, {{"status", "processed"}});
                  });
    };
    shop s({.bearer_token = "s3cret"}, {.bearer_token = "s3cret"}, ids_route);
    envelope e{
        .id = make_message_id(), .key = "a", .destination = s.url(), .payload = {{"seq", 1}}};

    http::client anonymous(s.ioc.get_executor());
    http::publisher without_token(anonymous);
    delivery_result r = run(s.ioc, without_token.deliver(e));
    CHECK(r.status == delivery_status::rejected); // parked: the producer must be configured
    CHECK(r.error.find("HTTP 401") != std::string::npos);
    http::client guessing(s.ioc.get_executor(), {.bearer_token = "guess"});
    http::publisher wrong_token(guessing);
    CHECK(run(s.ioc, wrong_token.deliver(e)).status == delivery_status::rejected);
    CHECK(s.ship.runs == 0);
    CHECK(s.results.empty()); // refused on the header: the inbox never heard of it

    CHECK(run(s.ioc, s.pub.deliver(e)).status == delivery_status::delivered);
    CHECK(s.ship.runs == 1);

    e.destination = s.url("/ids");
    CHECK(run(s.ioc, s.pub.deliver(e)).status == delivery_status::delivered);
    CHECK(seen_ids == std::vector<std::string>{e.id});
}

TEST_CASE("consumer endpoint: a route without the token; an invalid consumer name is refused") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::inbox inbox({.path = dir.file("shipping.db")});
    create_parcels(ioc, inbox);
    shipping ship;
    running_server srv(
        {.bearer_token = "s3cret"},
        [&](http::server& server) {
            http::add_consumer(server, "/open", inbox, "shipping", ship.handler(),
                               {.require_token = false});
            CHECK_THROWS_AS(http::add_consumer(server, "/other", inbox, "", ship.handler()),
                            std::invalid_argument);
            CHECK_THROWS_AS(http::add_consumer(server, "/open", inbox, "again", ship.handler()),
                            std::invalid_argument); // the path is taken
        },
        false);
    raw_client c(srv.port());
    envelope e{.id = make_message_id(), .destination = "d", .payload = {{"seq", 1}}};
    CHECK(c.exchange(post("/open", e.to_json())).result_int() == 200);
    CHECK(ship.runs == 1);
}

TEST_CASE("consumer endpoint: a PostgreSQL inbox behind the route processes each message once") {
    const std::string conninfo = fresh_pg_database();
    postgres::inbox inbox({.conninfo = conninfo});
    std::atomic<int> runs{0};
    postgres::inbox_handler handler = [&](postgres::connection& db, const envelope& e) {
        if (e.payload.value("poison", false))
            return failure("cannot ship that");
        db.exec("INSERT INTO parcels (msg_id) VALUES ($1)", {e.id});
        ++runs;
        return success();
    };
    {
        postgres::connection db(conninfo);
        db.exec("CREATE TABLE parcels (msg_id text PRIMARY KEY)");
    }
    running_server srv(
        {},
        [&](http::server& server) {
            http::add_consumer(server, "/events", inbox, "ship", handler);
        },
        false);
    raw_client c(srv.port());
    envelope e{.id = make_message_id(), .destination = "d", .payload = {{"seq", 1}}};
    answer a = c.exchange(post("/events", e.to_json()));
    CHECK(a.result_int() == 200);
    CHECK(json_body(a.body()) == nlohmann::json{{"status", "processed"}});
    a = c.exchange(post("/events", e.to_json()));
    CHECK(a.result_int() == 200);
    CHECK(json_body(a.body()) == nlohmann::json{{"status", "duplicate"}});
    envelope poison{.id = make_message_id(), .destination = "d", .payload = {{"poison", true}}};
    a = c.exchange(post("/events", poison.to_json()));
    CHECK(a.result_int() == 422);
    CHECK(json_body(a.body())["message"] == "cannot ship that");
    CHECK(runs == 1);
}
