// The HTTP participant server, driven by a raw client over 127.0.0.1: every answer status, keep-
// alive, pipelining, concurrency, limits, timeouts, disconnects, authentication, graceful
// shutdown, the log hook, and calls written as DTM's coordinator writes them.
#include <dtx/dtx.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/remote_participant.hpp>
#include <dtx/http/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/http_server.hpp"
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

// The plain HTTP headers bring no TLS: an includer that does not ask for it (tls.hpp) pays nothing.
#if defined(OPENSSL_SSL_H) || defined(HEADER_SSL_H) || defined(BOOST_ASIO_SSL_STREAM_HPP)
#error "a plain HTTP header included OpenSSL or Asio's ssl stream"
#endif

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

/// The request handler's answer to `req`, without a server (`stopping`: during a shutdown).
http::detail::beast_response handled(const participant_registry& participants,
                                     const http::detail::beast_request& req, bool stopping) {
    const http::server_options o;
    const http::detail::request_handler h(participants, o);
    http::detail::request_notes notes;
    asio::io_context ioc;
    std::optional<http::detail::beast_response> res;
    asio::co_spawn(ioc, h.handle(req, notes, stopping),
                   [&](std::exception_ptr, http::detail::beast_response r) { res = std::move(r); });
    ioc.run();
    REQUIRE(res);
    return std::move(*res);
}

} // namespace

TEST_CASE("calls written as DTM's coordinator writes them get DTM's answers") {
    running_server s;
    raw_client c(s.port());
    // DTM sends the query sorted by name, with parameters of its own.
    answer a = c.exchange(call(
        "stock", "branch_id=01&dtm=http%3A%2F%2Fdtm%3A36789%2Fapi&gid=9x7Kq&op=try&trans_type=tcc",
        R"({"amount":30,"user":"u1"})"));
    CHECK(a.result_int() == 200);
    CHECK(a.body() == R"({"dtm_result":"SUCCESS"})");
    CHECK(a[beast::http::field::content_type] == "application/json");
    CHECK(a.keep_alive());

    a = c.exchange(
        call("stock", "branch_id=02&gid=9x7Kq&op=try&trans_type=tcc", R"({"answer":"failure"})"));
    CHECK(a.result_int() == 409);
    CHECK(a.body() == R"({"dtm_result":"FAILURE","message":"out of stock"})");

    a = c.exchange(
        call("stock", "branch_id=03&gid=9x7Kq&op=try&trans_type=tcc", R"({"answer":"pending"})"));
    CHECK(a.result_int() == 425);
    CHECK(a.reason() == "Too Early");
    CHECK(a.body() == R"({"dtm_result":"ONGOING"})");

    a = c.exchange(call("stock", "branch_id=01&gid=9x7Kq&op=confirm&trans_type=tcc"));
    CHECK(a.result_int() == 200);
    a = c.exchange(call("stock", "branch_id=02&gid=9x7Kq&op=cancel&trans_type=tcc"));
    CHECK(a.result_int() == 200);
    a = c.exchange(call("payment", "branch_id=01&gid=s-1&op=action&trans_type=saga",
                        R"({"answer":"failure"})"));
    CHECK(a.result_int() == 409);
    a = c.exchange(call("payment", "branch_id=01&gid=s-1&op=compensate&trans_type=saga"));
    CHECK(a.result_int() == 200);

    // What the client reads from each answer is the outcome the participant gave.
    CHECK(http::outcome_of(200, R"({"dtm_result":"SUCCESS"})") == success());

    const auto calls = s.parts.calls();
    REQUIRE(calls.size() == 7);
    CHECK(calls[0].participant == "stock");
    CHECK(calls[0].gid == "9x7Kq");
    CHECK(calls[0].branch_id == "01");
    CHECK(calls[0].op == branch_op::try_);
    CHECK(calls[0].payload == nlohmann::json{{"amount", 30}, {"user", "u1"}});
    CHECK(calls[3].op == branch_op::confirm);
    CHECK(calls[4].op == branch_op::cancel);
    CHECK(calls[5].participant == "payment");
    CHECK(calls[5].op == branch_op::action);
    CHECK(calls[6].op == branch_op::compensate);
}

TEST_CASE("a query built by branch_query_string is routed; names are percent-decoded; an empty "
          "body is null") {
    running_server s;
    raw_client c(s.port());
    const std::string q = http::branch_query_string("g:1/2+3&=?", "b/1", branch_op::try_);
    answer a = c.exchange(post("/dtx/red%20apples?" + q, ""));
    CHECK(a.result_int() == 200);
    const auto calls = s.parts.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].participant == "red apples");
    CHECK(calls[0].gid == "g:1/2+3&=?");
    CHECK(calls[0].branch_id == "b/1");
    CHECK(calls[0].payload.is_null());
}

TEST_CASE("DTM's GET without a body, for a branch whose payload is empty, is a null payload") {
    running_server s;
    raw_client c(s.port());
    // As resty writes it for DTM (dtmsvr/trans_status.go): GET, the JSON headers, no body.
    const std::string dtm_get =
        "GET /dtx/stock?branch_id=01&gid=9x7Kq&op=confirm&trans_type=tcc HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nUser-Agent: go-resty/2.7.0 (https://github.com/go-resty/resty)\r\n"
        "Accept: application/json\r\nContent-Type: application/json\r\n"
        "Accept-Encoding: gzip\r\n\r\n";
    answer a = c.exchange(dtm_get);
    CHECK(a.result_int() == 200);
    CHECK(a.body() == R"({"dtm_result":"SUCCESS"})");
    a = c.exchange(get("/dtx/payment?branch_id=01&gid=s-2&op=compensate&trans_type=saga"));
    CHECK(a.result_int() == 200);
    const auto calls = s.parts.calls();
    REQUIRE(calls.size() == 2);
    CHECK(calls[0].op == branch_op::confirm);
    CHECK(calls[0].payload.is_null());
    CHECK(calls[1].participant == "payment");
    CHECK(calls[1].payload.is_null());
    // A GET is checked like a POST.
    a = c.exchange(get("/dtx/stock?gid=g1&trans_type=tcc&op=try"));
    CHECK(a.result_int() == 400);
    CHECK(error_of(a) == "missing_parameter");
}

TEST_CASE("every gid DTM sends is accepted: spaces, UTF-8, punctuation; controls and invalid "
          "UTF-8 are refused") {
    running_server s;
    raw_client c(s.port());
    std::string longest;
    for (int i = 0; i < 128; ++i)
        longest += "\xC3\xA9"; // 128 characters of 'é', 256 bytes
    const std::string accepted[] = {
        "order 17",
        "\xE8\xAE\xA2\xE5\x8D\x95-17", // 订单-17
        "a:b/c?d&e=f#g'h\"i<j>k{}|\\^~[]@!$%*()+,`",
        "FAILURE ONGOING",
        longest,
    };
    for (const std::string& gid : accepted) {
        CAPTURE(gid);
        const std::string q = http::branch_query_string(gid, "01", branch_op::try_);
        CHECK(c.exchange(call("stock", q)).result_int() == 200);
    }
    const auto calls = s.parts.calls();
    REQUIRE(calls.size() == std::size(accepted));
    for (std::size_t i = 0; i < calls.size(); ++i)
        CHECK(calls[i].gid == accepted[i]);

    const std::string refused[] = {
        "g%0Ax", "g%0Dx", "g%00x",    "g%09x",       "g%7Fx",          "g%C2%85x",    "g%E2%80%A8x",
        "g%FFx", "g%C3",  "g%C0%AFx", "g%ED%A0%80x", "g%F4%90%80%80x", longest + "x",
    };
    for (const std::string& gid : refused) {
        CAPTURE(gid);
        const answer a =
            c.exchange(call("stock", "gid=" + gid + "&trans_type=tcc&branch_id=01&op=try"));
        CHECK(a.result_int() == 400);
        CHECK(error_of(a) == "invalid_gid");
    }
    CHECK(s.parts.calls().size() == std::size(accepted));
    // The log hears the gids as they were.
    REQUIRE(eventually([&] { return s.log().size() == std::size(accepted) + std::size(refused); }));
    CHECK(s.log()[1].gid == accepted[1]);
}

TEST_CASE("a failure message reads as a failure for DTM too: ONGOING in it is escaped, and it is "
          "valid UTF-8") {
    running_server s;
    raw_client c(s.port());
    answer a = c.exchange(
        call("stock", try_query, R"({"answer":"failure","message":"ONGOING review: no stock"})"));
    CHECK(a.result_int() == 409);
    CHECK(a.body().find("ONGOING") == std::string::npos); // DTM would read pending, and retry
    CHECK(nlohmann::json::parse(a.body())["message"] == "ONGOING review: no stock");
    CHECK(http::outcome_of(a.result_int(), a.body()) == failure("ONGOING review: no stock"));

    // A handler's message with bytes that are not UTF-8 is sent with U+FFFD in their place.
    participant_registry reg;
    const branch_handler unused = [](const branch_request&) -> asio::awaitable<outcome> {
        co_return success();
    };
    reg.add_tcc("bytes", {.on_try = [](const branch_request&) -> asio::awaitable<outcome> {
                              co_return failure("caf\xE9 \xFF");
                          },
                          .on_confirm = unused,
                          .on_cancel = unused});
    const auto res = handled(reg, {beast::http::verb::post, "/dtx/bytes?" + try_query, 11}, false);
    CHECK(res.result_int() == 409);
    const auto body = nlohmann::json::parse(res.body(), nullptr, false);
    REQUIRE(body.is_object());
    CHECK(body["message"] == "caf\xEF\xBF\xBD \xEF\xBF\xBD");
}

TEST_CASE("a handler's exception, the path and the traceparent reach the log as valid UTF-8 on "
          "one line") {
    running_server s;
    raw_client c(s.port());
    const answer a = c.exchange(call(
        "stock", try_query, R"({"answer":"throw","message":"bad\r\n200 forged entry \u00ff"})"));
    CHECK(a.result_int() == 500);
    REQUIRE(eventually([&] { return s.log().size() == 1; }));
    CHECK(s.log()[0].exception == "bad\\r\\n200 forged entry \xC3\xBF");

    // Bytes of a path and a header that are not UTF-8, or a C1 control, reach the log escaped.
    const answer b =
        c.exchange(post("/dtx/st\xFFock\xC2\x85?" + try_query, "{}", "traceparent: 00-\xFF\r\n"));
    CHECK(b.result_int() == 404);
    REQUIRE(eventually([&] { return s.log().size() == 2; }));
    CHECK(s.log()[1].path == "/dtx/st\xEF\xBF\xBDock\\u0085");
    CHECK(s.log()[1].traceparent == "00-\xEF\xBF\xBD");
}

TEST_CASE("duplicate requests all reach the participant: idempotency is its job") {
    running_server s;
    raw_client c(s.port());
    for (int i = 0; i < 3; ++i)
        CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(s.parts.calls().size() == 3);
}

TEST_CASE("bad queries, ids and bodies get 400 naming the problem, and the connection goes on") {
    running_server s;
    raw_client c(s.port());
    const std::pair<std::string, std::string> cases[] = {
        {call("stock", "trans_type=tcc&branch_id=01&op=try"), "missing_parameter"},
        {call("stock", "gid=g1&trans_type=tcc&op=try"), "missing_parameter"},
        {call("stock", "gid=g1&trans_type=tcc&branch_id=01"), "missing_parameter"},
        {call("stock", "gid=&trans_type=tcc&branch_id=01&op=try"), "missing_parameter"},
        {call("stock", "gid=g1&trans_type=xa&branch_id=01&op=try"), "invalid_trans_type"},
        {call("stock", "gid=g1&trans_type=tcc&branch_id=01&op=commit"), "invalid_op"},
        {call("stock", "gid=g1&trans_type=tcc&branch_id=01&op=action"), "op_mismatch"},
        {call("stock", "gid=" + std::string(200, 'g') + "&trans_type=tcc&branch_id=01&op=try"),
         "invalid_gid"},
        {call("stock", "gid=g1&trans_type=tcc&branch_id=%01&op=try"), "invalid_branch_id"},
        {call("stock", "gid=g1&gid=g2&trans_type=tcc&branch_id=01&op=try"), "duplicate_parameter"},
        {call("stock", "gid=g%zz&trans_type=tcc&branch_id=01&op=try"), "bad_encoding"},
        {call("stock", try_query, R"({"qty":)"), "invalid_json"},
        {call("stock", try_query, "FAILURE"), "invalid_json"},
        {call("stock", try_query, std::string(65, '[') + std::string(65, ']')), "json_too_deep"},
        {call("stock", try_query, std::string(100000, '[')), "json_too_deep"},
        {call("stock", "gid=g1&trans_type=saga&branch_id=01&op=action"), "wrong_participant_kind"},
        {call("payment", try_query), "wrong_participant_kind"},
        {post("/dtx/red%zzapples?" + try_query, "{}"), "bad_encoding"},
    };
    for (const auto& kase : cases) {
        const std::string& req = kase.first;
        const std::string& code = kase.second;
        CAPTURE(req);
        const answer a = c.exchange(req);
        CHECK(a.result_int() == 400);
        CHECK(error_of(a) == code);
        CHECK(a.keep_alive());
        // Never read as an outcome, whatever the request held.
        CHECK(a.body().find("FAILURE") == std::string::npos);
        CHECK(!http::outcome_of(a.result_int(), a.body()));
    }
    CHECK(s.parts.calls().empty());
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    // 64 levels are fine, and brackets inside strings do not count.
    CHECK(c.exchange(call("stock", try_query, std::string(64, '[') + std::string(64, ']')))
              .result_int() == 200);
    CHECK(c.exchange(call("stock", try_query, R"({"s":")" + std::string(100, '[') + R"(\"{"})"))
              .result_int() == 200);
}

TEST_CASE("unknown routes and participants get 404, wrong methods 405 with Allow") {
    running_server s;
    raw_client c(s.port());
    const std::pair<std::string, std::string> missing[] = {
        {call("nobody", try_query), "unknown_participant"},
        {post("/dtx/?" + try_query, "{}"), "not_found"},
        {post("/dtx?" + try_query, "{}"), "not_found"},
        {post("/dtx/stock/extra?" + try_query, "{}"), "not_found"},
        {post("/other/stock?" + try_query, "{}"), "not_found"},
        {get("/"), "not_found"},
        {get("/dtx/nobody"), "unknown_participant"},
    };
    for (const auto& kase : missing) {
        const std::string& req = kase.first;
        const std::string& code = kase.second;
        CAPTURE(req);
        const answer a = c.exchange(req);
        CHECK(a.result_int() == 404);
        CHECK(error_of(a) == code);
    }
    answer a = c.exchange("PUT /dtx/stock?" + try_query +
                          " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    CHECK(a.result_int() == 405);
    CHECK(error_of(a) == "method_not_allowed");
    CHECK(a[beast::http::field::allow] == "GET, POST");
    a = c.exchange("DELETE /dtx/stock?" + try_query + " HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(a.result_int() == 405);
    a = c.exchange(post("/health", "{}"));
    CHECK(a.result_int() == 405);
    CHECK(a[beast::http::field::allow] == "GET");
    CHECK(s.parts.calls().empty());
}

TEST_CASE("the health endpoint answers GET") {
    running_server s;
    raw_client c(s.port());
    const answer a = c.exchange(get("/health"));
    CHECK(a.result_int() == 200);
    CHECK(a.body() == R"({"status":"ok"})");
    // During a shutdown it says so (checked on the request handler, as new connections are
    // refused).
    const auto res = handled(participant_registry{}, {beast::http::verb::get, "/health", 11}, true);
    CHECK(res.result_int() == 503);
    CHECK(res.body() == R"({"status":"stopping"})");
}

TEST_CASE("a handler that throws gets 500 (unknown: retried) and the server goes on") {
    running_server s;
    raw_client c(s.port());
    answer a = c.exchange(call("stock", try_query, R"({"answer":"throw"})"));
    CHECK(a.result_int() == 500);
    CHECK(error_of(a) == "handler_error");
    // The exception's text stays in the log: it could read as an outcome.
    CHECK(a.body().find("FAILURE") == std::string::npos);
    CHECK(!http::outcome_of(a.result_int(), a.body()));
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    REQUIRE(eventually([&] { return s.log().size() == 2; })); // logged after the answer is written
    const auto log = s.log();
    CHECK(log[0].status == 500);
    CHECK(log[0].exception == "FAILURE inside the handler");
}

TEST_CASE("the participant and the log hook get the traceparent; the log hears gid, branch, op, "
          "status, error") {
    running_server s;
    raw_client c(s.port());
    const std::string tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    c.exchange(post("/dtx/stock?gid=g7&trans_type=tcc&branch_id=05&op=confirm", "{}",
                    "traceparent: " + tp + "\r\n"));
    c.exchange(call("stock", "gid=g7&trans_type=tcc&branch_id=05&op=bad"));
    c.exchange(
        post("/dtx/stock?" + try_query, "{}", "traceparent: 00-XYZ-b7ad6b7169203331-01\r\n"));
    const auto calls = s.parts.calls();
    REQUIRE(calls.size() == 2);
    CHECK(calls[0].traceparent == tp);
    CHECK(calls[1].traceparent.empty());                      // malformed: dropped
    REQUIRE(eventually([&] { return s.log().size() == 3; })); // logged after the answer is written
    const auto log = s.log();
    CHECK(log[0].method == "POST");
    CHECK(log[0].path == "/dtx/stock");
    CHECK(log[0].participant == "stock");
    CHECK(log[0].gid == "g7");
    CHECK(log[0].branch_id == "05");
    CHECK(log[0].op == branch_op::confirm);
    CHECK(log[0].status == 200);
    CHECK(log[0].error.empty());
    CHECK(log[0].traceparent == tp);
    CHECK(log[1].status == 400);
    CHECK(log[1].error == "invalid_op");
    CHECK(log[1].gid.empty());
}

TEST_CASE("keep-alive, Connection: close, HTTP/1.0 and pipelined requests") {
    running_server s;
    {
        raw_client c(s.port());
        for (int i = 0; i < 3; ++i)
            CHECK(c.exchange(call("stock", try_query)).keep_alive());
        const answer a = c.exchange(post("/dtx/stock?" + try_query, "{}", "Connection: close\r\n"));
        CHECK(a.result_int() == 200);
        CHECK(!a.keep_alive());
        CHECK(c.closed());
    }
    {
        raw_client c(s.port());
        const answer a =
            c.exchange("POST /dtx/stock?" + try_query + " HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}");
        CHECK(a.result_int() == 200);
        CHECK(a.version() == 10);
        CHECK(c.closed());
    }
    {
        raw_client c(s.port());
        c.send(call("stock", try_query, R"({"answer":"failure"})") + call("stock", try_query) +
               get("/health"));
        CHECK(c.read().result_int() == 409);
        CHECK(c.read().result_int() == 200);
        CHECK(c.read().body() == R"({"status":"ok"})");
    }
}

TEST_CASE("a client that sends Expect: 100-continue gets 100 before it sends the body") {
    running_server s;
    raw_client c(s.port());
    c.send("POST /dtx/stock?" + try_query +
           " HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n");
    CHECK(c.read().result_int() == 100);
    c.send(R"({"qty":1})");
    CHECK(c.read().result_int() == 200);
    REQUIRE(s.parts.calls().size() == 1);
    CHECK(s.parts.calls()[0].payload == nlohmann::json{{"qty", 1}});
}

TEST_CASE("concurrent connections are served at once") {
    running_server s;
    constexpr int n = 8;
    std::vector<std::unique_ptr<raw_client>> clients;
    for (int i = 0; i < n; ++i) {
        clients.push_back(std::make_unique<raw_client>(s.port()));
        clients.back()->send(
            call("stock", "gid=g" + std::to_string(i) + "&trans_type=tcc&branch_id=01&op=try",
                 R"({"answer":"wait"})"));
    }
    REQUIRE(
        eventually([&] { return s.parts.waiting() == n; })); // all n handlers in flight together
    s.on_server([&] {
        s.parts.release();
        return 0;
    });
    for (auto& c : clients)
        CHECK(c->read().result_int() == 200);
}

TEST_CASE("oversized bodies get 413, oversized headers 431, garbage 400; each closes and the "
          "server goes on") {
    http::server_options o;
    o.header_limit = 1024;
    o.body_limit = 100;
    running_server s(o);
    {
        raw_client c(s.port());
        const answer a = c.exchange(call("stock", try_query, "[" + std::string(200, '1') + "]"));
        CHECK(a.result_int() == 413);
        CHECK(error_of(a) == "body_too_large");
        CHECK(!a.keep_alive());
        CHECK(c.closed());
    }
    {
        raw_client c(s.port()); // chunked: the limit hits while reading the body
        std::string req = "POST /dtx/stock?" + try_query +
                          " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (int i = 0; i < 5; ++i)
            req += "20\r\n" + std::string(32, ' ') + "\r\n";
        req += "0\r\n\r\n";
        const answer a = c.exchange(req);
        CHECK(a.result_int() == 413);
        CHECK(c.closed());
    }
    {
        raw_client c(s.port());
        const answer a = c.exchange(
            post("/dtx/stock?" + try_query, "{}", "X-Padding: " + std::string(2000, 'p') + "\r\n"));
        CHECK(a.result_int() == 431);
        CHECK(error_of(a) == "header_too_large");
        CHECK(c.closed());
    }
    {
        raw_client c(s.port());
        const answer a =
            c.exchange("POST /dtx/stock?" + std::string(2000, 'q') + " HTTP/1.1\r\n\r\n");
        CHECK(a.result_int() == 431);
    }
    for (std::string garbage :
         {"NOT HTTP AT ALL\r\n\r\n", "POST /dtx/stock HTTP/1.1\r\nContent-Length: x\r\n\r\n",
          "POST /dtx/stock HTTP/1.1\r\nBad Header\r\n\r\n"}) {
        CAPTURE(garbage);
        raw_client c(s.port());
        const answer a = c.exchange(garbage);
        CHECK(a.result_int() == 400);
        CHECK(error_of(a) == "malformed_request");
        CHECK(c.closed());
    }
    raw_client c(s.port());
    CHECK(c.exchange(call("stock", try_query, "[" + std::string(90, '1') + "]")).result_int() ==
          200);
}

TEST_CASE("a client that sends its headers too slowly gets 408; an idle connection is closed") {
    http::server_options o;
    o.read_timeout = 200ms;
    o.idle_timeout = 200ms;
    running_server s(o);
    {
        raw_client c(s.port());
        c.send("POST /dtx/stock?" + try_query + " HTTP/1.1\r\nHost: x\r\n"); // and never the rest
        const answer a = c.read();
        CHECK(a.result_int() == 408);
        CHECK(error_of(a) == "request_timeout");
        CHECK(!a.keep_alive());
        CHECK(c.closed());
    }
    {
        raw_client c(s.port());
        CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
        CHECK(c.closed()); // nothing more was sent: closed after idle_timeout, without an answer
    }
    REQUIRE(eventually([&] { return s.log().size() == 2; })); // logged after the answer is written
    const auto log = s.log();
    CHECK(log[0].status == 408);
}

TEST_CASE("a client that disconnects mid-request does not disturb the next one") {
    running_server s;
    {
        raw_client c(s.port());
        const std::string req =
            call("stock", try_query, R"({"qty":1,"padding":"................"})");
        c.send(req.substr(0, req.size() - 10));
        c.close();
    }
    {
        raw_client c(s.port());
        c.send("POST /dtx/sto");
        c.close();
    }
    raw_client c(s.port());
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(s.parts.calls().size() == 1);
}

TEST_CASE("requests need the bearer token when one is set; the health endpoint does not") {
    http::server_options o;
    o.bearer_token = "s3cret-token";
    running_server s(o);
    raw_client c(s.port());
    for (std::string auth :
         {"", "Authorization: Bearer wrong\r\n", "Authorization: Bearer s3cret-toke\r\n",
          "Authorization: Bearer s3cret-token2\r\n", "Authorization: Basic s3cret-token\r\n",
          "Authorization: Bearer\r\n"}) {
        CAPTURE(auth);
        const answer a = c.exchange(post("/dtx/stock?" + try_query, "{}", auth));
        CHECK(a.result_int() == 401);
        CHECK(error_of(a) == "unauthorized");
        CHECK(a[beast::http::field::www_authenticate] == "Bearer");
    }
    CHECK(c.exchange(post("/dtx/nobody?" + try_query, "{}")).result_int() ==
          401); // names stay private
    CHECK(
        c.exchange(post("/dtx/stock?" + try_query, "{}", "Authorization: Bearer s3cret-token\r\n"))
            .result_int() == 200);
    CHECK(
        c.exchange(post("/dtx/stock?" + try_query, "{}", "Authorization: bearer  s3cret-token\r\n"))
            .result_int() == 200);
    CHECK(c.exchange(get("/health")).result_int() == 200);
    CHECK(s.parts.calls().size() == 2);
}

TEST_CASE("connections over max_connections get 503 while all are busy; the others are served") {
    http::server_options o;
    o.max_connections = 2;
    o.max_connections_per_client = 2;
    running_server s(o);
    raw_client a(s.port()), b(s.port());
    hold_in_handlers(s, {&a, &b});
    {
        raw_client over(s.port());
        over.send(call("stock", try_query));
        const answer r = over.read();
        CHECK(r.result_int() == 503);
        CHECK(error_of(r) == "overloaded");
        CHECK(over.closed());
    }
    s.release_waiting();
    CHECK(a.read().result_int() == 200);
    CHECK(b.read().result_int() == 200);
    CHECK(a.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(s.parts.calls().size() == 3);
}

TEST_CASE("a handler over handler_timeout is cancelled and answered 503") {
    http::server_options o;
    o.handler_timeout = 100ms;
    running_server s(o);
    raw_client c(s.port());
    const answer a = c.exchange(call("stock", try_query, R"({"answer":"wait"})"));
    CHECK(a.result_int() == 503);
    CHECK(error_of(a) == "handler_timeout");
    CHECK(s.parts.cancelled() == 1);
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200); // the connection goes on
}

TEST_CASE("a handler that ignores cancellation is answered 503 at handler_timeout all the same; "
          "its connection closes and the server goes on") {
    http::server_options o;
    o.handler_timeout = 100ms;
    running_server s(o);
    raw_client c(s.port());
    const auto t0 = std::chrono::steady_clock::now();
    const answer a = c.exchange(call("stock", try_query, R"({"answer":"stubborn"})"));
    CHECK(a.result_int() == 503);
    CHECK(error_of(a) == "handler_timeout");
    CHECK(!a.keep_alive());
    CHECK(c.closed());
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(s.parts.waiting() == 1); // still running on its own
    raw_client d(s.port());
    CHECK(d.exchange(call("stock", try_query)).result_int() == 200);
    std::future<void> stopped = s.begin_stop(10s);
    CHECK(stopped.wait_for(100ms) == std::future_status::timeout); // the stop waits for it
    s.release_waiting();
    stopped.get();
    CHECK(s.parts.waiting() == 0);
}

TEST_CASE("without a handler_timeout, handlers run in their connection's coroutine and a stop "
          "past its grace cancels them") {
    http::server_options o;
    o.handler_timeout.reset();
    running_server s(o);
    raw_client c(s.port());
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    c.send(call("stock", try_query, R"({"answer":"wait"})"));
    REQUIRE(eventually([&] { return s.parts.waiting() == 1; }));
    s.stop(50ms);
    CHECK(s.parts.cancelled() == 1);
    CHECK(c.closed());
}

TEST_CASE("graceful shutdown: no new connections, idle ones closed, requests in flight finish") {
    running_server s;
    raw_client idle(s.port());
    CHECK(idle.exchange(call("stock", try_query)).result_int() == 200);
    raw_client busy(s.port());
    busy.send(call("stock", try_query, R"({"answer":"wait"})"));
    REQUIRE(eventually([&] { return s.parts.waiting() == 1; }));

    std::future<void> stopped = s.begin_stop(10s);
    CHECK(idle.closed());
    CHECK_THROWS(raw_client(s.port()));
    CHECK(stopped.wait_for(0s) == std::future_status::timeout);

    s.on_server([&] {
        s.parts.release();
        return 0;
    });
    const answer a = busy.read();
    CHECK(a.result_int() == 200);
    CHECK(!a.keep_alive());
    CHECK(busy.closed());
    stopped.get();
    CHECK(s.parts.cancelled() == 0);
}

TEST_CASE(
    "shutdown past its grace cancels the handlers still running and closes their connections") {
    running_server s;
    raw_client busy(s.port());
    busy.send(call("stock", try_query, R"({"answer":"wait"})"));
    REQUIRE(eventually([&] { return s.parts.waiting() == 1; }));
    s.stop(50ms);
    CHECK(s.parts.cancelled() == 1);
    CHECK(busy.closed());
}

TEST_CASE("percent_decode keeps '+' in paths; branch_query_string round-trips through "
          "parse_branch_query") {
    CHECK(http::detail::percent_decode("a+b%2B") == "a b+");
    CHECK(http::detail::percent_decode("a+b%2B", false) == "a+b+");
    CHECK(!http::detail::percent_decode("%2"));
    for (branch_op op : {branch_op::try_, branch_op::confirm, branch_op::cancel, branch_op::action,
                         branch_op::compensate}) {
        const auto parsed =
            http::parse_branch_query(http::branch_query_string("g:1/2+3", "b&=?", op));
        REQUIRE(std::holds_alternative<http::branch_query>(parsed));
        const auto& q = std::get<http::branch_query>(parsed);
        CHECK(q.gid == "g:1/2+3");
        CHECK(q.branch_id == "b&=?");
        CHECK(q.op == op);
        CHECK(q.kind == kind_of(op));
    }
}

TEST_CASE("a coordinator reaches the server's participants through the HTTP client") {
    http::server_options o;
    o.bearer_token = "s3cret";
    running_server s(o);
    asio::io_context ioc;
    http::client client(ioc.get_executor(), http::client_options{.bearer_token = "s3cret"});
    participant_registry urls;
    urls.set_resolver(http::url_resolver(client));
    memory_journal journal;
    coordinator coord(ioc.get_executor(), journal, urls);
    const std::string stock = "http://127.0.0.1:" + std::to_string(s.port()) + "/dtx/stock";
    const std::string payment = "http://127.0.0.1:" + std::to_string(s.port()) + "/dtx/payment";

    auto run = [&](asio::awaitable<tx_result> a) {
        std::optional<tx_result> out;
        asio::co_spawn(ioc, std::move(a), [&](std::exception_ptr e, tx_result r) {
            REQUIRE(!e);
            out = std::move(r);
        });
        ioc.restart();
        while (!out && ioc.run_one() > 0) {
        }
        REQUIRE(out);
        return *out;
    };
    const tx_result ok = run(coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        nlohmann::json one{{"qty", 1}};
        co_await tx.add_branch(stock, std::move(one));
        nlohmann::json two{{"qty", 2}};
        co_await tx.add_branch(stock, std::move(two));
    }));
    CHECK(ok.status == tx_status::confirmed);
    const tx_result refused = run(coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        nlohmann::json one{{"qty", 1}};
        co_await tx.add_branch(stock, std::move(one));
        nlohmann::json no{{"answer", "failure"}};
        co_await tx.add_branch(stock, std::move(no));
    }));
    CHECK(refused.status == tx_status::cancelled);
    const tx_result saga = run(coord.saga([&](saga_transaction& tx) -> asio::awaitable<void> {
        nlohmann::json pay{{"amount", 5}};
        co_await tx.add_step(payment, std::move(pay));
    }));
    CHECK(saga.status == tx_status::confirmed);

    std::map<std::string, std::vector<branch_op>> ops;
    for (const received& r : s.parts.calls()) {
        ops[r.gid + "/" + r.branch_id].push_back(r.op);
        CHECK(r.traceparent.size() == trace_context::size);
    }
    using v = std::vector<branch_op>;
    CHECK(ops.size() == 5);
    CHECK(ops[ok.gid + "/01"] == v{branch_op::try_, branch_op::confirm});
    CHECK(ops[ok.gid + "/02"] == v{branch_op::try_, branch_op::confirm});
    CHECK(ops[refused.gid + "/01"] == v{branch_op::try_, branch_op::cancel});
    CHECK(ops[refused.gid + "/02"] == v{branch_op::try_, branch_op::cancel});
    CHECK(ops[saga.gid + "/01"] == v{branch_op::action});
    CHECK(client.stats().connections < 5); // kept alive between calls
}

// ---- hardening: framing, authentication before the body, and limits ---------------------------

namespace {

/// Resident memory of this process, where the servers of these tests run (from /proc).
std::size_t resident_bytes() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stoul(line.substr(6)) * 1024; // in kB
    return 0;
}

std::string head_of_post(std::string_view extra_headers, std::string_view version = "1.1") {
    return "POST /dtx/stock?" + try_query + " HTTP/" + std::string(version) + "\r\nHost: x\r\n" +
           std::string(extra_headers) + "\r\n";
}

} // namespace

TEST_CASE("a Transfer-Encoding other than chunked alone is refused, and its body is never served "
          "as a request") {
    running_server s;
    const std::string smuggled = call("stock", try_query);
    for (std::string te : {"identity", "xchunked", "chunked, identity", "chunked;x=1"}) {
        CAPTURE(te);
        raw_client c(s.port());
        const answer a = c.exchange(head_of_post("Transfer-Encoding: " + te + "\r\n") + smuggled);
        CHECK(a.result_int() == 400);
        CHECK(error_of(a) == "bad_transfer_encoding");
        CHECK(!a.keep_alive());
        CHECK(c.closed());
    }
    const std::string chunked_body = "9\r\n{\"qty\":1}\r\n0\r\n\r\n";
    for (std::string te :
         {"Transfer-Encoding: gzip, chunked\r\n",
          "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
          "Transfer-Encoding: gzip\r\nX-Between: 1\r\nTransfer-Encoding: chunked\r\n"}) {
        CAPTURE(te);
        raw_client c(s.port());
        const answer a = c.exchange(head_of_post(te) + chunked_body + smuggled);
        CHECK(a.result_int() == 501);
        CHECK(error_of(a) == "unsupported_transfer_coding");
        CHECK(c.closed());
    }
    {
        raw_client c(s.port()); // chunked twice, and chunked in HTTP/1.0: framing unknown
        const answer a =
            c.exchange(head_of_post("Transfer-Encoding: chunked, chunked\r\n") + chunked_body);
        CHECK(a.result_int() == 400);
        CHECK(c.closed());
        raw_client d(s.port());
        const answer b =
            d.exchange(head_of_post("Transfer-Encoding: chunked\r\n", "1.0") + chunked_body);
        CHECK(b.result_int() == 400);
        CHECK(d.closed());
    }
    CHECK(s.parts.calls().empty());
    raw_client c(s.port());
    CHECK(c.exchange(head_of_post("Transfer-Encoding: Chunked\r\n") + chunked_body).result_int() ==
          200);
    CHECK(s.parts.calls().size() == 1);
}

TEST_CASE("requests without the token are refused on their header: no 100 Continue, no body "
          "read, and the server's memory stays flat") {
    http::server_options o;
    o.bearer_token = "s3cret-token";
    running_server s(o);
    const std::string head =
        head_of_post("Content-Length: " + std::to_string(o.body_limit) + "\r\n");
    {
        raw_client c(s.port());
        const answer a =
            c.exchange(head.substr(0, head.size() - 2) + "Expect: 100-continue\r\n\r\n");
        CHECK(a.result_int() == 401); // not 100
        CHECK(c.closed());
    }
    {
        raw_client c(s.port()); // with the token, 100 Continue as before
        c.send(head.substr(0, head.size() - 2) +
               "Authorization: Bearer s3cret-token\r\nExpect: 100-continue\r\n\r\n");
        CHECK(c.read().result_int() == 100);
    }
    // Each client sends all of its body but the last byte: a server that reads bodies before it
    // checks the token holds about body_limit for each of them until read_timeout.
    const std::string body(o.body_limit - 1, 'x');
    const std::size_t before = resident_bytes();
    constexpr int n = 100;
    asio::io_context io;
    std::vector<tcp::socket> clients;
    for (int i = 0; i < n; ++i) {
        tcp::socket& socket = clients.emplace_back(io);
        socket.connect({asio::ip::make_address("127.0.0.1"), s.port()});
        limit_reads(socket);
        boost::system::error_code ec; // the server may close before it has all of it
        asio::write(socket, asio::buffer(head), ec);
        asio::write(socket, asio::buffer(body), ec);
    }
    auto refused = [&] {
        const auto log = s.log();
        return std::count_if(log.begin(), log.end(), [](auto& e) { return e.status == 401; });
    };
    for (int i = 0; i < 3000 && refused() < n + 1; ++i)
        std::this_thread::sleep_for(1ms);
    const std::size_t after = resident_bytes();
    const double mib = 1024.0 * 1024.0;
    MESSAGE("resident memory with " << n << " unauthenticated bodies of " << o.body_limit
                                    << " bytes: " << before / mib << " MiB before, " << after / mib
                                    << " MiB after");
    // The server keeps per connection a coroutine frame, a read buffer of a few KiB and no body:
    // under 1 MiB for the 100, plus what the allocator keeps; the bodies would be 100 MiB.
    CHECK(after < before + 16 * 1024 * 1024);
    for (auto& socket : clients) {
        beast::flat_buffer buffer;
        answer a;
        boost::system::error_code ec;
        timed_reads reads{socket};
        beast::http::read(reads, buffer, a, ec);
        CHECK(!ec);
        CHECK(a.result_int() == 401);
        if (ec)
            break;
    }
    CHECK(s.parts.calls().empty());
}

TEST_CASE("the bodies of all connections together stay within body_budget") {
    http::server_options o;
    o.body_limit = 1000;
    o.body_budget = 1000;
    running_server s(o);
    raw_client a(s.port());
    a.send(head_of_post("Content-Length: 800\r\nExpect: 100-continue\r\n"));
    REQUIRE(a.read().result_int() == 100); // its 800 bytes are reserved
    {
        raw_client b(s.port());
        const answer r = b.exchange(call("stock", try_query, std::string(300, ' ') + "{}"));
        CHECK(r.result_int() == 503);
        CHECK(error_of(r) == "overloaded");
        CHECK(b.closed());
    }
    CHECK(a.exchange(std::string(798, ' ') + "{}").result_int() == 200);
    raw_client b(s.port());
    CHECK(b.exchange(call("stock", try_query, std::string(300, ' ') + "{}")).result_int() == 200);
}

TEST_CASE("out of descriptors, the server answers 503 and serves again once descriptors are "
          "free") {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) { // the server, with room for about 20 connections
        ::close(pipe_fds[0]);
        try {
            int open = 0;
            for (int fd = 0; fd < 4096; ++fd)
                open += ::fcntl(fd, F_GETFD) != -1;
            rlimit limit{};
            ::getrlimit(RLIMIT_NOFILE, &limit);
            limit.rlim_cur = static_cast<rlim_t>(open + 24);
            ::setrlimit(RLIMIT_NOFILE, &limit);
            asio::io_context ioc;
            participants_under_test parts;
            http::server_options o;
            o.max_connections = 1000; // more than fit: the descriptors run out first
            o.max_connections_per_client = 1000;
            http::server srv(ioc, parts.registry, o);
            srv.start();
            const std::uint16_t port = srv.port();
            if (::write(pipe_fds[1], &port, sizeof port) != sizeof port)
                ::_exit(2);
            ioc.run();
        } catch (...) {
        }
        ::_exit(1);
    }
    ::close(pipe_fds[1]);
    std::uint16_t port = 0;
    const bool started = ::read(pipe_fds[0], &port, sizeof port) == sizeof port;
    ::close(pipe_fds[0]);
    struct reap {
        pid_t pid;
        ~reap() {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    } const reaper{child};
    REQUIRE(started);

    std::vector<std::unique_ptr<raw_client>> served;
    int refused = 0;
    bool all_answered = true;
    for (int i = 0; i < 40 && all_answered; ++i) {
        auto c = std::make_unique<raw_client>(port);
        try {
            const answer a = c->exchange(call("stock", try_query));
            if (a.result_int() == 200)
                served.push_back(std::move(c));
            else if (a.result_int() == 503 && error_of(a) == "overloaded")
                ++refused;
        } catch (const std::exception& e) {
            MESSAGE("connection " << i << " got no answer: " << std::string(e.what()));
            all_answered = false;
        }
    }
    MESSAGE(served.size() << " connections served, " << refused << " refused");
    CHECK(all_answered);
    CHECK(served.size() >= 5);
    CHECK(refused >= 1);
    CHECK(served.size() + static_cast<std::size_t>(refused) == 40);
    served.clear(); // their descriptors come free
    bool again = false;
    for (int i = 0; i < 50 && !again; ++i) {
        try {
            raw_client c(port);
            again = c.exchange(call("stock", try_query)).result_int() == 200;
        } catch (const std::exception&) {
        }
        if (!again)
            std::this_thread::sleep_for(100ms);
    }
    CHECK(again);
}

TEST_CASE("limits a production service keeps: their defaults") {
    const http::server_options o;
    CHECK(o.handler_timeout == std::optional<std::chrono::milliseconds>(30s));
    CHECK(o.max_requests_per_connection == 1000);
    CHECK(o.max_connection_lifetime == 1h);
    CHECK(o.body_budget == 64u * 1024 * 1024);
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    running_server s; // max_connections derived from the descriptor limit
    const std::size_t max = s.options().max_connections;
    CHECK(max >= 1);
    CHECK(max <= limit.rlim_cur * 3 / 4);
    CHECK(s.options().max_connections_per_client >= 1);
    CHECK(s.options().max_connections_per_client <= max / 2);
}

TEST_CASE("a connection is closed after max_requests_per_connection answers and after "
          "max_connection_lifetime") {
    {
        http::server_options o;
        o.max_requests_per_connection = 3;
        running_server s(o);
        raw_client c(s.port());
        CHECK(c.exchange(call("stock", try_query)).keep_alive());
        CHECK(c.exchange(call("stock", try_query)).keep_alive());
        const answer last = c.exchange(call("stock", try_query));
        CHECK(last.result_int() == 200);
        CHECK(!last.keep_alive());
        CHECK(c.closed());
    }
    {
        http::server_options o;
        o.max_connection_lifetime = 300ms;
        running_server s(o);
        raw_client c(s.port());
        CHECK(c.exchange(call("stock", try_query)).keep_alive());
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(c.closed()); // idle: closed when its lifetime ends, long before idle_timeout
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        raw_client d(s.port()); // busy: its answer says Connection: close
        d.send(call("stock", try_query, R"({"answer":"wait"})"));
        REQUIRE(eventually([&] { return s.parts.waiting() == 1; }));
        std::this_thread::sleep_for(400ms);
        s.release_waiting();
        const answer a = d.read();
        CHECK(a.result_int() == 200);
        CHECK(!a.keep_alive());
    }
}

TEST_CASE("one client cannot hold more than max_connections_per_client connections") {
    http::server_options o;
    o.max_connections = 10;
    o.max_connections_per_client = 2;
    running_server s(o);
    raw_client a(s.port()), b(s.port());
    hold_in_handlers(s, {&a, &b});
    {
        raw_client over(s.port());
        const answer r = over.exchange(call("stock", try_query));
        CHECK(r.result_int() == 503);
        CHECK(error_of(r) == "too_many_connections");
        CHECK(over.closed());
    }
    s.release_waiting();
    CHECK(a.read().result_int() == 200);
    CHECK(b.read().result_int() == 200);
    CHECK(b.exchange(call("stock", try_query)).result_int() == 200); // a has waited longer
    raw_client c(s.port()); // a and b are idle now: the older one makes room
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(a.closed());
    CHECK(b.exchange(call("stock", try_query)).result_int() == 200);
}

TEST_CASE("a full server closes its oldest idle connection to admit a new client") {
    http::server_options o;
    o.max_connections = 2;
    o.max_connections_per_client = 2;
    running_server s(o);
    raw_client a(s.port());
    CHECK(a.exchange(call("stock", try_query)).result_int() == 200);
    raw_client b(s.port());
    CHECK(b.exchange(call("stock", try_query)).result_int() == 200);
    raw_client c(s.port());
    CHECK(c.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(a.closed());
    CHECK(b.exchange(call("stock", try_query)).result_int() == 200);
    CHECK(s.parts.calls().size() == 4);
}

TEST_CASE("HTTP/1.1 without Host, two Host or Authorization fields, and differing Content-Lengths "
          "get 400") {
    http::server_options o;
    o.bearer_token = "t";
    running_server s(o);
    const std::string token = "Authorization: Bearer t\r\n";
    const std::string target = "/dtx/stock?" + try_query;
    struct bad_request {
        std::string bytes, error;
    };
    for (const bad_request& r :
         {bad_request{"POST " + target + " HTTP/1.1\r\n" + token + "Content-Length: 2\r\n\r\n{}",
                      "bad_host"},
          bad_request{"POST " + target + " HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + token +
                          "Content-Length: 2\r\n\r\n{}",
                      "bad_host"},
          bad_request{post(target, "{}", token + "Authorization: Bearer u\r\n"),
                      "duplicate_authorization"},
          bad_request{post(target, "{}", "Authorization: Bearer u\r\n" + token),
                      "duplicate_authorization"},
          bad_request{post(target, "{}", token + "Content-Length: 3\r\n"), "malformed_request"}}) {
        CAPTURE(r.bytes);
        raw_client c(s.port());
        const answer a = c.exchange(r.bytes);
        CHECK(a.result_int() == 400);
        CHECK(error_of(a) == r.error);
        CHECK(c.closed());
    }
    CHECK(s.parts.calls().empty());
    raw_client c(s.port());
    CHECK(c.exchange(post(target, "{}", token + "Content-Length: 2\r\n")).result_int() == 200);
    CHECK(c.exchange("POST " + target + " HTTP/1.0\r\n" + token + "Content-Length: 2\r\n\r\n{}")
              .result_int() == 200);
}
