// Application routes on the HTTP server, driven by a raw client over 127.0.0.1: routing, path
// parameters, percent-decoding, 404/405, authentication and body limits per route, what a
// handler throws or answers, the handler timeout, and keep-alive and pipelining across
// participant and application routes on one connection.
#include <dtx/http/route.hpp>
#include <dtx/http/server.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

#include "support/http_server.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;
namespace bh = boost::beast::http;

namespace {

using route_result = asio::awaitable<http::reply>;

/// The routes the tests call.
void add_routes(http::server& srv) {
    srv.route(http::verb::get, "/orders/{id}", [](const http::request& r) -> route_result {
        co_return http::reply::json(200, {{"id", r.param("id")}, {"route", r.route()}});
    });
    srv.route(http::verb::get, "/orders/new", [](const http::request&) -> route_result {
        co_return http::reply::json(200, {{"form", true}});
    });
    srv.route(http::verb::delete_, "/orders/{id}", [](const http::request&) -> route_result {
        co_return http::reply{204, "", "application/json", {}};
    });
    srv.route(http::verb::post, "/orders", [](const http::request& r) -> route_result {
        http::reply res = http::reply::json(201, {{"got", r.json()}});
        res.headers.emplace_back("Location", "/orders/1");
        co_return res;
    });
    srv.route(http::verb::get, "/shops/{shop}/items/{item}",
              [](const http::request& r) -> route_result {
                  co_return http::reply::text(200, r.param("shop") + "|" + r.param("item"));
              });
    srv.route(http::verb::get, "/search", [](const http::request& r) -> route_result {
        const std::optional<std::string> q = r.query("q");
        co_return http::reply::json(200, {{"q", q ? nlohmann::json(*q) : nlohmann::json()}});
    });
    srv.route(http::verb::get, "/who", [](const http::request& r) -> route_result {
        co_return http::reply::json(200, {{"client", r.client().to_string()},
                                          {"traceparent", r.traceparent()},
                                          {"x-test", r.header("x-test")},
                                          {"path", r.path()}});
    });
    srv.route(http::verb::post, "/small",
              [](const http::request& r) -> route_result {
                  co_return http::reply::json(200, {{"size", r.body().size()}});
              },
              {.body_limit = 16});
    srv.route(
        http::verb::get, "/public",
        [](const http::request&) -> route_result { co_return http::reply::text(200, "open"); },
        {.require_token = false});
    srv.route(http::verb::get, "/refuse", [](const http::request&) -> route_result {
        throw http::error_reply(409, "conflict", "the order exists with another body");
        co_return http::reply{};
    });
    srv.route(http::verb::get, "/boom", [](const http::request&) -> route_result {
        throw std::runtime_error("secret \xFF detail\ninjected line");
        co_return http::reply{};
    });
    srv.route(http::verb::get, "/missing-param", [](const http::request& r) -> route_result {
        co_return http::reply::text(200, r.param("nope"));
    });
    srv.route(http::verb::get, "/bad-utf8", [](const http::request&) -> route_result {
        co_return http::reply::json(200, {{"s", "caf\xC3"}});
    });
    srv.route(http::verb::get, "/bad-dump", [](const http::request&) -> route_result {
        const nlohmann::json j{{"s", "caf\xC3"}};
        co_return http::reply{200, j.dump(), "application/json", {}};
    });
    srv.route(http::verb::get, "/bad-header", [](const http::request&) -> route_result {
        co_return http::reply{200, "{}", "application/json", {{"X-Echo", "a\r\nInjected: 1"}}};
    });
    srv.route(http::verb::get, "/slow", [](const http::request&) -> route_result {
        asio::steady_timer forever(co_await asio::this_coro::executor,
                                   std::chrono::steady_clock::time_point::max());
        co_await forever.async_wait(asio::use_awaitable);
        co_return http::reply{};
    });
}

nlohmann::json json_of(const answer& a) {
    const auto j = nlohmann::json::parse(a.body(), nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), a.body());
    return j;
}

} // namespace

TEST_CASE("application routes: path parameters, literals before parameters, query, JSON body") {
    running_server s({}, add_routes);
    raw_client c(s.port());

    answer a = c.exchange(get("/orders/o-17"));
    CHECK(a.result_int() == 200);
    CHECK(json_of(a) == nlohmann::json{{"id", "o-17"}, {"route", "/orders/{id}"}});
    CHECK(a[bh::field::content_type] == "application/json");
    CHECK(a.keep_alive());

    a = c.exchange(get("/orders/new"));
    CHECK(json_of(a) == nlohmann::json{{"form", true}});

    a = c.exchange(get("/shops/berlin/items/7"));
    CHECK(a.body() == "berlin|7");
    CHECK(a[bh::field::content_type] == "text/plain; charset=utf-8");

    a = c.exchange(post("/orders", R"({"qty":3})"));
    CHECK(a.result_int() == 201);
    CHECK(a[bh::field::location] == "/orders/1");
    CHECK(json_of(a) == nlohmann::json{{"got", {{"qty", 3}}}});

    a = c.exchange("DELETE /orders/9 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(a.result_int() == 204);
    CHECK(a.body().empty());

    a = c.exchange(get("/search?x=1&q=red+apples%21"));
    CHECK(json_of(a)["q"] == "red apples!");
    a = c.exchange(get("/search"));
    CHECK(json_of(a)["q"].is_null());
    a = c.exchange(get("/search?q=1&q=2"));
    CHECK(a.result_int() == 400);
    CHECK(error_of(a) == "duplicate_parameter");
    a = c.exchange(get("/search?q=%FF"));
    CHECK(a.result_int() == 400);
    CHECK(error_of(a) == "bad_encoding");

    const std::string tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    a = c.exchange(get("/who", "traceparent: " + tp + "\r\nX-Test: yes\r\n"));
    CHECK(json_of(a) ==
          nlohmann::json{
              {"client", "127.0.0.1"}, {"traceparent", tp}, {"x-test", "yes"}, {"path", "/who"}});

    // Bad JSON is the handler's request::json() refusing it: 400, named.
    a = c.exchange(post("/orders", R"({"qty":)"));
    CHECK(a.result_int() == 400);
    CHECK(error_of(a) == "invalid_json");
    a = c.exchange(post("/orders", std::string(100, '[')));
    CHECK(a.result_int() == 400);
    CHECK(error_of(a) == "json_too_deep");
    CHECK(a.keep_alive());

    const auto log = s.log();
    REQUIRE(!log.empty());
    CHECK(log.front().route == "/orders/{id}");
    CHECK(log.front().path == "/orders/o-17");
    CHECK(log.front().status == 200);
}

TEST_CASE("path parameters are percent-decoded; bad encoding or UTF-8 in the path is 400") {
    running_server s({}, add_routes);
    raw_client c(s.port());
    CHECK(json_of(c.exchange(get("/orders/a%20b+c")))["id"] == "a b+c");
    CHECK(json_of(c.exchange(get("/orders/caf%C3%A9")))["id"] == "caf\xC3\xA9");
    CHECK(json_of(c.exchange(get("/orders/caf\xC3\xA9")))["id"] == "caf\xC3\xA9");
    CHECK(json_of(c.exchange(get("/orders/a%2Fb")))["id"] == "a/b");
    for (const char* bad : {"/orders/%FF", "/orders/\xFF", "/orders/%C3", "/orders/a%0Ab",
                            "/orders/%00", "/orders/a%2", "/orders/%zz", "/nowhere/%FF"}) {
        CAPTURE(bad);
        const answer a = c.exchange(get(bad));
        CHECK(a.result_int() == 400);
        CHECK(error_of(a) == "bad_path");
        CHECK(dtx::detail::valid_utf8(a.body()));
        CHECK(a.keep_alive());
    }
    // The log shows the path as valid UTF-8, escaped.
    for (const auto& e : s.log())
        CHECK(dtx::detail::valid_utf8(e.path));
}

TEST_CASE("no route is 404; a path with routes for other methods is 405 with Allow") {
    running_server s({}, add_routes);
    raw_client c(s.port());
    for (const char* path : {"/nothing", "/orders/1/x", "/orders/", "/", "/orders//"}) {
        CAPTURE(path);
        const answer a = c.exchange(get(path));
        CHECK(a.result_int() == 404);
        CHECK(error_of(a) == "not_found");
    }
    answer a = c.exchange("PUT /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    CHECK(a.result_int() == 405);
    CHECK(error_of(a) == "method_not_allowed");
    CHECK(a[bh::field::allow] == "DELETE, GET");
    a = c.exchange(get("/orders"));
    CHECK(a.result_int() == 405);
    CHECK(a[bh::field::allow] == "POST");
    // The participants and the health endpoint are still where they were.
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(c.exchange(get("/health")).result_int() == 200);
}

TEST_CASE("a route needs the bearer token unless it says otherwise; 401 before the body is read") {
    http::server_options o;
    o.bearer_token = "s3cret";
    running_server s(o, add_routes);
    raw_client c(s.port());
    answer a = c.exchange(get("/public"));
    CHECK(a.result_int() == 200);
    CHECK(a.body() == "open");
    a = c.exchange(get("/orders/1"));
    CHECK(a.result_int() == 401);
    CHECK(a[bh::field::www_authenticate] == "Bearer");
    a = c.exchange(get("/orders/1", "Authorization: Bearer s3cret\r\n"));
    CHECK(a.result_int() == 200);
    // The token is the server's, for the method's route: POST /orders needs it.
    a = c.exchange(post("/orders", "{}"));
    CHECK(a.result_int() == 401);

    // Decided on the header: a large body that never comes is not waited for.
    raw_client big(s.port());
    big.send("POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: 900000\r\n\r\n");
    a = big.read();
    CHECK(a.result_int() == 401);
    CHECK(!a.keep_alive());
    CHECK(big.closed());
}

TEST_CASE("a route's body limit: 413 on the header, or on a chunked body, and the connection "
          "closes") {
    running_server s({}, add_routes);
    {
        raw_client c(s.port());
        CHECK(json_of(c.exchange(post("/small", "0123456789abcdef")))["size"] == 16);
        c.send("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n");
        const answer a = c.read();
        CHECK(a.result_int() == 413);
        CHECK(error_of(a) == "body_too_large");
        CHECK(json_of(a)["message"] == "the body exceeds 16 bytes");
        CHECK(!a.keep_alive());
        CHECK(c.closed());
    }
    {
        raw_client c(s.port());
        const answer a =
            c.exchange("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n10\r\n0123456789abcdef\r\n2\r\nxy\r\n0\r\n\r\n");
        CHECK(a.result_int() == 413);
        CHECK(json_of(a)["message"] == "the body exceeds 16 bytes");
    }
    {
        // Other routes keep the server's limit.
        raw_client c(s.port());
        CHECK(c.exchange(post("/orders", R"({"pad":")" + std::string(1000, 'x') + "\"}"))
                  .result_int() == 201);
    }
}

TEST_CASE("error_reply is its status and JSON; other exceptions are 500 with the text in the log "
          "only; the connection goes on") {
    running_server s({}, add_routes);
    raw_client c(s.port());
    answer a = c.exchange(get("/refuse"));
    CHECK(a.result_int() == 409);
    CHECK(json_of(a) ==
          nlohmann::json{{"error", "conflict"}, {"message", "the order exists with another body"}});
    CHECK(a.keep_alive());

    a = c.exchange(get("/boom"));
    CHECK(a.result_int() == 500);
    CHECK(error_of(a) == "internal");
    CHECK(a.body().find("secret") == std::string::npos);
    CHECK(a.keep_alive());

    a = c.exchange(get("/missing-param"));
    CHECK(a.result_int() == 500);

    CHECK(c.exchange(get("/orders/2")).result_int() == 200); // the same connection goes on

    REQUIRE(eventually([&] { return s.log().size() == 4; })); // logged after the answer
    const auto log = s.log();
    CHECK(log[0].error == "conflict");
    CHECK(log[1].error == "internal");
    CHECK(log[1].exception == "secret \xEF\xBF\xBD detail\\ninjected line");
    CHECK(log[1].route == "/boom");
    CHECK(log[2].exception.find("has no parameter nope") != std::string::npos);

    CHECK_THROWS_AS(http::error_reply(200, "ok", "not an error"), std::invalid_argument);
}

TEST_CASE("a reply with invalid UTF-8 or a broken header is still an answer") {
    running_server s({}, add_routes);
    raw_client c(s.port());
    answer a = c.exchange(get("/bad-utf8"));
    CHECK(a.result_int() == 200);
    CHECK(dtx::detail::valid_utf8(a.body()));
    CHECK(json_of(a)["s"] == "caf\xEF\xBF\xBD");

    a = c.exchange(get("/bad-dump")); // the handler's own dump() threw
    CHECK(a.result_int() == 500);
    CHECK(error_of(a) == "internal");
    CHECK(a.keep_alive());

    a = c.exchange(get("/bad-header"));
    CHECK(a.result_int() == 500);
    CHECK(a.find("Injected") == a.end());
    CHECK(a.keep_alive());

    CHECK(c.exchange(get("/orders/3")).result_int() == 200);
    REQUIRE(eventually([&] { return s.log().size() == 4; })); // logged after the answer
    const auto log = s.log();
    CHECK(log[1].exception.find("type_error") != std::string::npos);
    CHECK(log[2].exception.find("header field") != std::string::npos);
}

TEST_CASE("a route's handler still running at handler_timeout is cancelled and answered 503") {
    http::server_options o;
    o.handler_timeout = 200ms;
    running_server s(o, add_routes);
    raw_client c(s.port());
    const answer a = c.exchange(get("/slow"));
    CHECK(a.result_int() == 503);
    CHECK(error_of(a) == "handler_timeout");
    CHECK(json_of(a)["message"] == "the handler did not finish within 200 ms");
    CHECK(a.keep_alive()); // the handler ended when cancelled
    CHECK(c.exchange(get("/orders/4")).result_int() == 200);
}

TEST_CASE("participant and application routes share one kept-alive, pipelined connection") {
    running_server s({}, add_routes);
    raw_client c(s.port());
    c.send(call("stock", try_query) + get("/orders/5") + post("/orders", R"({"n":1})") +
           call("payment", "gid=s1&trans_type=saga&branch_id=01&op=action") + get("/health") +
           get("/nothing"));
    const unsigned expected[] = {200, 200, 201, 200, 200, 404};
    for (unsigned status : expected) {
        const answer a = c.read();
        CHECK(a.result_int() == status);
        CHECK(a.keep_alive());
    }
    CHECK(json_of(c.exchange(get("/orders/6")))["id"] == "6");
    CHECK(s.parts.calls().size() == 2);
}

TEST_CASE("a server of application routes only does not serve base_path") {
    running_server s({}, add_routes, /*participants=*/false);
    raw_client c(s.port());
    answer a = c.exchange(call("stock", try_query));
    CHECK(a.result_int() == 404);
    CHECK(json_of(a)["message"] == "no route for this path");
    CHECK(c.exchange(get("/orders/7")).result_int() == 200);
    CHECK(c.exchange(get("/health")).result_int() == 200);
}

TEST_CASE("route() refuses invalid patterns, duplicates, clashes, and calls after start()") {
    asio::io_context ioc;
    participant_registry participants;
    const auto h = [](const http::request&) -> route_result { co_return http::reply{}; };
    http::server srv(ioc, participants);
    for (const char* bad :
         {"", "orders", "/orders/{", "/orders/{}", "/orders/{id}/{id}", "/a//b", "/x/{a-b}",
          "/x/a{b}", "/x/%20", "/x/a b", "/dtx", "/dtx/{name}", "/{any}", "/{any}/x", "/health"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(srv.route(http::verb::get, bad, h), std::invalid_argument);
    }
    srv.route(http::verb::get, "/orders/{id}", h);
    CHECK_THROWS_AS(srv.route(http::verb::get, "/orders/{key}", h), std::invalid_argument);
    srv.route(http::verb::put, "/orders/{key}", h);
    srv.route(http::verb::get, "/dtx2/{x}", h);
    srv.route(http::verb::get, "/", h);
    CHECK_THROWS_AS(srv.route(http::verb::get, "/big", h, {.body_limit = 2 * 1024 * 1024}),
                    std::invalid_argument);
    CHECK_THROWS_AS(srv.route(http::verb::unknown, "/x", h), std::invalid_argument);
    CHECK_THROWS_AS(srv.route(http::verb::get, "/x", {}), std::invalid_argument);

    // Without participants, base_path is free; the health endpoint is still taken.
    http::server routes_only(ioc, http::server_options{});
    routes_only.route(http::verb::get, "/dtx/{name}", h);
    CHECK_THROWS_AS(routes_only.route(http::verb::get, "/{any}", h), std::invalid_argument);
    routes_only.start();
    CHECK_THROWS_AS(routes_only.route(http::verb::get, "/late", h), std::logic_error);
}

TEST_CASE("a request made by a test of a handler reads as the server's does") {
    http::request::message_type m{bh::verb::post, "/orders/o%2D1?q=a+b&q2=%E2%82%AC", 11};
    m.set("X-Test", "yes");
    m.body() = R"({"qty":2})";
    const http::request r(m, "/orders/{id}", {{"id", "o-1"}});
    CHECK(r.method() == http::verb::post);
    CHECK(r.path() == "/orders/o%2D1");
    CHECK(r.param("id") == "o-1");
    CHECK_THROWS_AS(r.param("other"), std::out_of_range);
    CHECK(r.query("q") == "a b");
    CHECK(r.query("q2") == "\xE2\x82\xAC");
    CHECK(!r.query("q3"));
    CHECK(r.header("x-test") == "yes");
    CHECK(r.json() == nlohmann::json{{"qty", 2}});
    CHECK(r.traceparent().empty());
    m.body() = "[[[1]]]";
    const http::request deep(m, "/orders/{id}", {}, {}, 2);
    try {
        (void)deep.json();
        FAIL("json() accepted a body nested too deep");
    } catch (const http::error_reply& e) {
        CHECK(e.status() == 400);
        CHECK(e.code() == "json_too_deep");
    }
}
