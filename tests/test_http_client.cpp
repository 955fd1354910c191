// The HTTP client and remote participants, against a DTM-style participant written here with
// plain Beast (its own query parsing, no dtx server code): outcomes per status, connection reuse,
// reconnects, timeouts, cancellation, and whole TCC transactions, sagas and recovery over HTTP;
// then the same coordinator against dtx's own server.
#include <dtx/detail/utf8.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/remote_participant.hpp>
#include <dtx/http/server.hpp>
#include <dtx/http/url.hpp>
#include <dtx/trace_context.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

/// What the test participant does with one request.
enum class reply {
    ok,          ///< 200 {"dtm_result":"SUCCESS"}
    fail,        ///< 409 {"dtm_result":"FAILURE","message":"no stock"}
    fail_in_200, ///< 200 {"dtm_result":"FAILURE"}: how some DTM participants say no
    pending,     ///< 425 {"dtm_result":"ONGOING"}
    error,       ///< 500 {"error":"boom"}
    big,         ///< 200 with a 64 KiB body
    custom,      ///< state::custom_status with state::custom_body
    hang,        ///< never answers (waits for the next request on the connection)
    drop,        ///< closes the connection without an answer
};

/// One request the participant received.
struct received {
    std::size_t seq = 0;           ///< order among every request of every test participant
    std::size_t connection = 0;    ///< which accepted connection it came on (1-based)
    std::size_t on_connection = 0; ///< its number on that connection (1-based)
    std::string path, gid, trans_type, branch_id, op;
    nlohmann::json body;
    std::string traceparent, authorization, user_agent, content_type;
};

std::size_t next_seq() {
    static std::size_t seq = 0;
    return ++seq;
}

int unhex(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 0;
}

/// Query parameters as DTM's Go participants read them (url.Values), simplified.
std::map<std::string, std::string> query_params(std::string_view q) {
    std::map<std::string, std::string> out;
    while (!q.empty()) {
        std::string_view pair = q.substr(0, q.find('&'));
        q.remove_prefix(std::min(q.size(), pair.size() + 1));
        std::string key(pair.substr(0, pair.find('='))), value;
        const std::string_view raw =
            pair.find('=') == std::string_view::npos ? "" : pair.substr(pair.find('=') + 1);
        for (std::size_t i = 0; i < raw.size(); ++i) {
            if (raw[i] == '%' && i + 2 < raw.size()) {
                value += static_cast<char>(unhex(raw[i + 1]) * 16 + unhex(raw[i + 2]));
                i += 2;
            } else {
                value += raw[i] == '+' ? ' ' : raw[i];
            }
        }
        out[key] = value;
    }
    return out;
}

/// A DTM-style participant server on 127.0.0.1: answers per `decide`, and records every request.
class test_participant {
public:
    struct state {
        explicit state(asio::io_context& ioc)
            : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
        tcp::acceptor acceptor;
        std::function<reply(const received&)> decide = [](const received&) { return reply::ok; };
        std::function<void(const received&)> on_request;
        bool answer_close = false; ///< answers carry Connection: close
        bool http10 = false;       ///< answers are HTTP/1.0 without keep-alive
        bool quiet_close = false;  ///< closes each connection after its answer, without saying so
        unsigned custom_status = 200; ///< for reply::custom
        std::string custom_body;      ///< for reply::custom
        std::vector<received> requests;
        std::size_t accepted = 0;
        std::size_t closed_by_client = 0;
        std::size_t closed_by_server = 0;
    };

    explicit test_participant(asio::io_context& ioc)
        : st_(std::make_shared<state>(ioc)) {
        asio::co_spawn(ioc, accept_loop(st_), asio::detached);
    }
    ~test_participant() {
        boost::system::error_code ignored;
        st_->acceptor.close(ignored);
    }

    state* operator->() { return st_.get(); }
    const state* operator->() const { return st_.get(); }
    std::string url(std::string_view path) const {
        return "http://127.0.0.1:" + std::to_string(st_->acceptor.local_endpoint().port()) +
               std::string(path);
    }

    /// The ops received for (gid, branch), in order.
    std::vector<std::string> ops(std::string_view gid, std::string_view branch) const {
        std::vector<std::string> out;
        for (const auto& r : st_->requests)
            if (r.gid == gid && r.branch_id == branch)
                out.push_back(r.op);
        return out;
    }

private:
    static asio::awaitable<void> accept_loop(std::shared_ptr<state> st) {
        for (;;) {
            auto [ec, socket] =
                co_await st->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec)
                co_return;
            ++st->accepted;
            asio::co_spawn(st->acceptor.get_executor(), serve(st, std::move(socket), st->accepted),
                           asio::detached);
        }
    }

    static asio::awaitable<void> serve(std::shared_ptr<state> st, tcp::socket socket,
                                       std::size_t connection) {
        boost::beast::flat_buffer buffer;
        for (std::size_t n = 1;; ++n) {
            bhttp::request<bhttp::string_body> req;
            auto [ec, bytes] = co_await bhttp::async_read(socket, buffer, req,
                                                          asio::as_tuple(asio::use_awaitable));
            if (ec) {
                if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                    ec == asio::error::connection_reset)
                    ++st->closed_by_client;
                co_return;
            }
            received r;
            r.seq = next_seq();
            r.connection = connection;
            r.on_connection = n;
            const std::string_view target = req.target();
            r.path = std::string(target.substr(0, target.find('?')));
            auto q = query_params(target.find('?') == std::string_view::npos
                                      ? ""
                                      : target.substr(target.find('?') + 1));
            r.gid = q["gid"];
            r.trans_type = q["trans_type"];
            r.branch_id = q["branch_id"];
            r.op = q["op"];
            r.body = nlohmann::json::parse(req.body(), nullptr, false);
            r.traceparent = std::string(req["traceparent"]);
            r.authorization = std::string(req[bhttp::field::authorization]);
            r.user_agent = std::string(req[bhttp::field::user_agent]);
            r.content_type = std::string(req[bhttp::field::content_type]);
            st->requests.push_back(r);
            if (st->on_request)
                st->on_request(r);
            const reply what = st->decide(r);
            if (what == reply::drop) {
                ++st->closed_by_server;
                co_return;
            }
            if (what == reply::hang)
                continue;

            bhttp::response<bhttp::string_body> res;
            res.version(st->http10 ? 10 : 11);
            switch (what) {
            case reply::ok:
                res.result(200), res.body() = R"({"dtm_result":"SUCCESS"})";
                break;
            case reply::fail:
                res.result(409), res.body() = R"({"dtm_result":"FAILURE","message":"no stock"})";
                break;
            case reply::fail_in_200:
                res.result(200), res.body() = R"({"dtm_result":"FAILURE"})";
                break;
            case reply::pending:
                res.result(425), res.body() = R"({"dtm_result":"ONGOING"})";
                break;
            case reply::error:
                res.result(500), res.body() = R"({"error":"boom"})";
                break;
            case reply::big:
                res.result(200), res.body() = std::string(64 * 1024, ' ');
                break;
            case reply::custom:
                res.result(st->custom_status), res.body() = st->custom_body;
                break;
            default:
                break;
            }
            res.set(bhttp::field::content_type, "application/json");
            res.keep_alive(!st->answer_close && !st->http10);
            res.prepare_payload();
            auto [wec, wbytes] =
                co_await bhttp::async_write(socket, res, asio::as_tuple(asio::use_awaitable));
            if (wec || !res.keep_alive() || st->quiet_close) {
                ++st->closed_by_server;
                co_return;
            }
        }
    }

    std::shared_ptr<state> st_;
};

struct fixture {
    asio::io_context ioc;
    test_participant server{ioc};

    template <class T>
    T run(asio::awaitable<T> a) {
        return dtx::test::run(ioc, std::move(a));
    }

    /// Runs the io_context until `done()` holds (or nothing happens for 5 s).
    bool run_until(const std::function<bool()>& done) {
        ioc.restart();
        while (!done() && ioc.run_one_for(std::chrono::seconds(5)) > 0) {
        }
        return done();
    }

    /// What the request threw, or "" if it completed.
    std::string error_of(asio::awaitable<http::response> a) {
        try {
            run(std::move(a));
        } catch (const std::exception& e) {
            return e.what();
        }
        return {};
    }
};

/// One call of a remote participant, as the coordinator makes it.
outcome call(fixture& f, participant& p, branch_op op, std::string_view traceparent) {
    const nlohmann::json payload{{"qty", 2}};
    const branch_request r{"g-1", "07", op, payload, traceparent};
    return f.run(p.call(r));
}

std::string call_error(fixture& f, participant& p) {
    try {
        call(f, p, branch_op::try_, {});
    } catch (const std::exception& e) {
        return e.what();
    }
    return {};
}

bool contains(std::string_view s, std::string_view part) {
    return s.find(part) != std::string_view::npos;
}

/// A port nothing listens on (it was free a moment ago).
std::uint16_t closed_port(asio::io_context& ioc) {
    tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    return a.local_endpoint().port();
}

/// A registry that knows participants only by URL.
struct url_registry {
    explicit url_registry(asio::io_context& ioc, http::client_options o = {})
        : client(ioc.get_executor(), std::move(o)) {
        registry.set_resolver(http::url_resolver(client));
    }
    http::client client;
    participant_registry registry;
};

} // namespace

TEST_CASE("answers map to outcomes: 200 success, 409 failure, 425 pending, anything else unknown") {
    fixture f;
    http::client client(f.ioc.get_executor());
    http::remote_participant p(client, http::make_url(f.server.url("/dtx/stock")));
    CHECK_FALSE(p.kind());

    reply next = reply::ok;
    f.server->decide = [&](const received&) { return next; };
    const std::string trace(trace_context::for_gid("g-1").traceparent());
    CHECK(call(f, p, branch_op::try_, trace) == success());
    REQUIRE(f.server->requests.size() == 1);
    const received& r = f.server->requests.back();
    CHECK(r.path == "/dtx/stock");
    CHECK(r.gid == "g-1");
    CHECK(r.trans_type == "tcc");
    CHECK(r.branch_id == "07");
    CHECK(r.op == "try");
    CHECK(r.body == nlohmann::json{{"qty", 2}});
    CHECK(r.content_type == "application/json");
    CHECK(r.traceparent == trace);
    CHECK(r.authorization.empty()); // no token configured
    CHECK(r.user_agent.starts_with("dtx/"));

    next = reply::fail;
    CHECK(call(f, p, branch_op::compensate, {}) == failure("no stock"));
    CHECK(f.server->requests.back().trans_type == "saga");
    CHECK(f.server->requests.back().op == "compensate");
    CHECK(f.server->requests.back().traceparent.empty());
    next = reply::fail_in_200;
    CHECK(call(f, p, branch_op::action, {}).is_failure());
    next = reply::pending;
    CHECK(call(f, p, branch_op::try_, {}).is_pending());

    next = reply::error;
    const std::string e = call_error(f, p);
    CHECK(contains(e, "gid g-1 branch 07 try"));
    CHECK(contains(e, f.server.url("/dtx/stock")));
    CHECK(contains(e, "answered 500 {\"error\":\"boom\"}"));

    next = reply::big; // over max_response_body (set small below)
    http::client small(f.ioc.get_executor(), http::client_options{.max_response_body = 1024});
    http::remote_participant q(small, http::make_url(f.server.url("/dtx/stock")));
    CHECK(contains(call_error(f, q), "reading the answer"));
    CHECK(call(f, p, branch_op::try_, {}) == success()); // the default limit is larger
    CHECK(f.server->accepted == 2);                      // one connection per client, kept alive
}

TEST_CASE("answers are read in DTM's order: ONGOING first, then FAILURE, then exactly 200") {
    fixture f;
    http::client client(f.ioc.get_executor());
    http::remote_participant p(client, http::make_url(f.server.url("/dtx/stock")));
    f.server->decide = [](const received&) { return reply::custom; };
    auto answered = [&](unsigned status, std::string body) {
        f.server->custom_status = status;
        f.server->custom_body = std::move(body);
        try {
            return std::optional<outcome>(call(f, p, branch_op::try_, {}));
        } catch (const dtx::error&) {
            return std::optional<outcome>();
        }
    };
    // A 409 whose body holds ONGOING is pending, as DTM reads it.
    CHECK(answered(409, R"({"dtm_result":"FAILURE","message":"ONGOING"})") == pending("ONGOING"));
    CHECK(answered(200, R"({"dtm_result":"ONGOING"})")->is_pending());
    CHECK(answered(500, "ONGOING")->is_pending());
    CHECK(answered(503, "FAILURE")->is_failure());
    // DTM's WrapHandler puts its text under "error".
    CHECK(answered(409, R"({"error":"insufficient balance"})") == failure("insufficient balance"));
    CHECK(answered(425, R"({"dtm_result":"ONGOING","message":"in review"})") ==
          pending("in review"));
    // Success is exactly 200.
    CHECK(answered(200, "null") == success());
    CHECK_FALSE(answered(201, R"({"dtm_result":"SUCCESS"})"));
    CHECK_FALSE(answered(204, ""));
}

TEST_CASE("an unknown answer's excerpt in the error is valid UTF-8, cut on a character boundary") {
    fixture f;
    http::client client(f.ioc.get_executor());
    http::remote_participant p(client, http::make_url(f.server.url("/dtx/stock")));
    f.server->decide = [](const received&) { return reply::custom; };
    f.server->custom_status = 503;
    f.server->custom_body = std::string(199, 'x') + "\xC3\xA9"; // 'é' across the 200th byte
    std::string e = call_error(f, p);
    CHECK(contains(e, "answered 503 " + std::string(199, 'x') + "..."));
    CHECK(dtx::detail::valid_utf8(e));
    CHECK_NOTHROW((void)nlohmann::json(e).dump()); // as a stored reason is written later

    f.server->custom_body = "bad \xFF\xC3 bytes\r\nforged: line";
    e = call_error(f, p);
    CHECK(contains(e, "answered 503 bad \xEF\xBF\xBD\xEF\xBF\xBD bytes\\r\\nforged: line"));
    CHECK(dtx::detail::valid_utf8(e));
}

TEST_CASE("kept-alive connections are reused; Connection: close and HTTP/1.0 answers close them") {
    fixture f;
    http::client client(f.ioc.get_executor(), http::client_options{.bearer_token = "s3cret"});
    const http::url to = http::make_url(f.server.url("/x?tenant=7"));
    for (int i = 0; i < 3; ++i)
        CHECK(f.run(client.post(to, "a=1", "{}")).status == 200);
    CHECK(f.server->accepted == 1);
    CHECK(client.stats().connections == 1);
    CHECK(client.stats().reused == 2);
    CHECK(client.idle_connections() == 1);
    CHECK(f.server->requests.back().path == "/x");
    CHECK(f.server->requests.back().authorization == "Bearer s3cret");

    f.server->answer_close = true;
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    CHECK(client.idle_connections() == 0);
    f.server->answer_close = false;
    f.server->http10 = true;
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    CHECK(client.idle_connections() == 0);
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    CHECK(f.server->accepted == 3);
    f.server->http10 = false;
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    CHECK(f.server->accepted == 4);
    CHECK(f.server->closed_by_server == 3); // after each answer that said so
}

TEST_CASE("a connection the server closed while idle is not used; one closed under a request is "
          "repeated once") {
    fixture f;
    http::client client(f.ioc.get_executor());
    const http::url to = http::make_url(f.server.url("/x"));

    SUBCASE("closed while idle: noticed before the request goes out") {
        f.server->quiet_close = true;
        CHECK(f.run(client.post(to, "", "{}")).status == 200);
        CHECK(f.run_until([&] { return f.server->closed_by_server == 1; }));
        CHECK(client.idle_connections() == 1); // the client does not know yet
        CHECK(f.run(client.post(to, "", "{}")).status == 200);
        CHECK(f.server->accepted == 2);
        CHECK(client.stats().repeated == 0);
        CHECK(f.server->requests.size() == 2);
    }
    SUBCASE("closed as the request arrives: repeated on a new connection") {
        // The second request on the first connection is dropped unanswered.
        f.server->decide = [](const received& r) {
            return r.connection == 1 && r.on_connection == 2 ? reply::drop : reply::ok;
        };
        CHECK(f.run(client.post(to, "", "{}")).status == 200);
        CHECK(f.run(client.post(to, "", "{}")).status == 200);
        CHECK(f.server->accepted == 2);
        CHECK(client.stats().repeated == 1);
        REQUIRE(f.server->requests.size() == 3);
        CHECK(f.server->requests[2].connection == 2);
    }
    SUBCASE("closed under a request on a new connection: not repeated, an error") {
        f.server->decide = [](const received&) { return reply::drop; };
        const std::string e = f.error_of(client.post(to, "", "{}"));
        CHECK(contains(e, "POST " + to.text() + ": reading the answer"));
        CHECK(f.server->requests.size() == 1);
        CHECK(client.stats().repeated == 0);
    }
    SUBCASE("dropped twice: repeated once only") {
        CHECK(f.run(client.post(to, "", "{}")).status == 200);
        f.server->decide = [](const received&) { return reply::drop; };
        CHECK_FALSE(f.error_of(client.post(to, "", "{}")).empty());
        CHECK(f.server->requests.size() == 3);
        CHECK(client.stats().repeated == 1);
    }
}

TEST_CASE("the request timeout ends a call to a server that does not answer, and its connection is "
          "closed") {
    fixture f;
    http::client client(f.ioc.get_executor(),
                        http::client_options{.request_timeout = std::chrono::milliseconds(50)});
    const http::url to = http::make_url(f.server.url("/x"));
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    f.server->decide = [](const received&) { return reply::hang; };
    const std::string e = f.error_of(client.post(to, "", "{}"));
    CHECK(contains(e, "POST " + to.text() + ": reading the answer: no answer within 50 ms"));
    CHECK(client.idle_connections() == 0);
    CHECK(f.run_until([&] { return f.server->closed_by_client == 1; }));
    f.server->decide = [](const received&) { return reply::ok; };
    CHECK(f.run(client.post(to, "", "{}")).status == 200);
    CHECK(f.server->accepted == 2);
}

TEST_CASE("a cancelled request ends at once and closes its connection") {
    fixture f;
    http::client client(f.ioc.get_executor());
    const http::url to = http::make_url(f.server.url("/x"));
    asio::cancellation_signal cancel;
    f.server->decide = [](const received&) { return reply::hang; };
    f.server->on_request = [&](const received&) {
        asio::post(f.ioc, [&] { cancel.emit(asio::cancellation_type::terminal); });
    };
    std::exception_ptr thrown;
    bool done = false;
    asio::co_spawn(
        f.ioc, client.post(to, "", "{}"),
        asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, http::response) {
            thrown = e;
            done = true;
        }));
    CHECK(f.run_until([&] { return done; }));
    REQUIRE(thrown);
    try {
        std::rethrow_exception(thrown);
    } catch (const std::exception& e) {
        CHECK(contains(e.what(), "reading the answer: cancelled"));
    }
    CHECK(client.idle_connections() == 0);
    CHECK(f.run_until([&] { return f.server->closed_by_client == 1; }));
}

TEST_CASE("host names are resolved; a refused connection is an error naming the URL") {
    fixture f;
    http::client client(f.ioc.get_executor());
    const std::string port = f.server.url("").substr(std::string_view("http://127.0.0.1").size());
    http::remote_participant named(client,
                                   http::make_url("http://localhost" + port + "/dtx/stock"));
    CHECK(call(f, named, branch_op::try_, {}) == success());
    CHECK(f.server->requests.back().path == "/dtx/stock");
    CHECK(client.stats().connections == 1);

    const std::string to = "http://127.0.0.1:" + std::to_string(closed_port(f.ioc)) + "/dtx/gone";
    http::remote_participant p(client, http::make_url(to));
    const std::string e = call_error(f, p);
    CHECK(contains(e, "gid g-1 branch 07 try: POST " + to + ": connecting: "));
    CHECK(client.stats().connections == 1);
}

TEST_CASE("waiting for a host name is bounded by the request timeout and ends when the call is "
          "cancelled") {
    // The system resolver cannot be interrupted; an operation that completes only when the test
    // lets it stands in for one that hangs.
    asio::io_context ioc;
    asio::steady_timer never(ioc, std::chrono::steady_clock::time_point::max());
    int late = 0;
    auto hang = [&](auto handler) {
        never.async_wait([&late, h = std::move(handler)](boost::system::error_code) mutable {
            ++late;
            h(asio::error::host_not_found, 7);
        });
    };
    using result = std::pair<boost::system::error_code, int>;
    std::optional<result> out;
    auto keep = [&](std::exception_ptr e, result r) {
        REQUIRE(!e);
        out = r;
    };

    const auto t0 = std::chrono::steady_clock::now();
    asio::co_spawn(
        ioc,
        http::detail::detached_within<int>(ioc.get_executor(), std::chrono::milliseconds(50), hang),
        keep);
    while (!out && ioc.run_one_for(std::chrono::seconds(5)) > 0) {
    }
    REQUIRE(out);
    CHECK(out->first == boost::beast::error::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));

    out.reset();
    asio::cancellation_signal cancel;
    asio::co_spawn(
        ioc, http::detail::detached_within<int>(ioc.get_executor(), std::chrono::hours(1), hang),
        asio::bind_cancellation_slot(cancel.slot(), keep));
    ioc.restart();
    ioc.poll();
    CHECK(!out);
    cancel.emit(asio::cancellation_type::terminal);
    ioc.restart();
    while (!out && ioc.run_one_for(std::chrono::seconds(5)) > 0) {
    }
    REQUIRE(out);
    CHECK(out->first == asio::error::operation_aborted);

    // The operations finish later: their results are dropped.
    CHECK(late == 0);
    never.cancel();
    ioc.restart();
    ioc.run();
    CHECK(late == 2);

    // One that completes in time gives its result.
    out.reset();
    auto at_once = [&](auto handler) {
        asio::post(ioc, [h = std::move(handler)]() mutable { h({}, 42); });
    };
    asio::co_spawn(
        ioc, http::detail::detached_within<int>(ioc.get_executor(), std::chrono::hours(1), at_once),
        keep);
    ioc.restart();
    ioc.run();
    REQUIRE(out);
    CHECK(!out->first);
    CHECK(out->second == 42);
}

TEST_CASE(
    "idle connections: at most max_idle_per_endpoint are kept, and expired ones are not reused") {
    fixture f;
    http::client client(f.ioc.get_executor(), http::client_options{.max_idle_per_endpoint = 2});
    const http::url to = http::make_url(f.server.url("/x"));
    auto four_at_once = [&] {
        int done = 0;
        for (int i = 0; i < 4; ++i)
            asio::co_spawn(f.ioc, client.post(to, "", "{}"),
                           [&](std::exception_ptr e, http::response r) {
                               CHECK_FALSE(e);
                               CHECK(r.status == 200);
                               ++done;
                           });
        CHECK(f.run_until([&] { return done == 4; }));
    };
    four_at_once();
    CHECK(f.server->accepted == 4);
    CHECK(client.idle_connections() == 2);
    CHECK(f.run_until([&] { return f.server->closed_by_client == 2; }));
    four_at_once(); // two reused, two new
    CHECK(f.server->accepted == 6);
    CHECK(client.stats().reused == 2);

    http::client brief(f.ioc.get_executor(),
                       http::client_options{.idle_timeout = std::chrono::milliseconds(1)});
    CHECK(f.run(brief.post(to, "", "{}")).status == 200);
    asio::steady_timer later(f.ioc, std::chrono::milliseconds(5));
    f.run(later.async_wait(asio::as_tuple(asio::use_awaitable)));
    CHECK(f.run(brief.post(to, "", "{}")).status == 200);
    CHECK(brief.stats().connections == 2);
    CHECK(brief.stats().reused == 0);
}

namespace {

/// Three participants in two services, known to the coordinator only by URL.
struct http_world : fixture {
    test_participant other{ioc};
    memory_journal journal{memory_journal::options{.keep_ended = true}};
    std::string inventory = server.url("/dtx/inventory"), payment = server.url("/dtx/payment"),
                shipping = other.url("/dtx/shipping");

    std::vector<received> all() const {
        std::vector<received> out = server->requests;
        const auto& more = other->requests;
        out.insert(out.end(), more.begin(), more.end());
        std::sort(out.begin(), out.end(),
                  [](const received& a, const received& b) { return a.seq < b.seq; });
        return out;
    }
    std::vector<std::string> ops(std::string_view gid, std::string_view branch) const {
        std::vector<std::string> out;
        for (const auto& r : all())
            if (r.gid == gid && r.branch_id == branch)
                out.push_back(r.op);
        return out;
    }
    /// A TCC transaction over the three: inventory and payment tried together, then shipping.
    tx_result tcc(coordinator& coord, tx_options o) {
        return run(coord.tcc(
            [this](tcc_transaction& tx) -> asio::awaitable<void> {
                std::vector<branch_spec> both;
                both.push_back({inventory, qty_payload{2}});
                both.push_back({payment, qty_payload{40}});
                co_await tx.add_branches(std::move(both));
                co_await tx.add_branch(shipping, qty_payload{1});
            },
            std::move(o)));
    }
};

using strings = std::vector<std::string>;

} // namespace

TEST_CASE("TCC over HTTP: every branch tried, then confirmed; trace context and token arrive") {
    http_world w;
    url_registry urls(w.ioc, http::client_options{.bearer_token = "s3cret"});
    coordinator coord(w.ioc.get_executor(), w.journal, urls.registry, fast_options());
    const std::string caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    tx_result r = w.tcc(coord, tx_options{.traceparent = caller});

    CHECK(r.status == tx_status::confirmed);
    CHECK(w.ops(r.gid, "01") == strings{"try", "confirm"});
    CHECK(w.ops(r.gid, "02") == strings{"try", "confirm"});
    CHECK(w.ops(r.gid, "03") == strings{"try", "confirm"});
    for (const received& q : w.all()) {
        CHECK(q.authorization == "Bearer s3cret");
        CHECK(q.traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        CHECK(q.traceparent != caller); // a span of its own
        CHECK(q.trans_type == "tcc");
    }
    const auto rec = w.journal.get(r.gid);
    REQUIRE(rec);
    REQUIRE(rec->branches.size() == 3);
    CHECK(rec->branches[0].participant == w.inventory);
    CHECK(rec->branches[2].participant == w.shipping);
    for (const received& q : w.all())
        CHECK(q.body == nlohmann::json{{"qty", q.path == "/dtx/inventory" ? 2
                                               : q.path == "/dtx/payment" ? 40
                                                                          : 1}});

    // Without a caller's trace, the gid is the trace id; connections are reused across
    // transactions.
    tx_result again = w.tcc(coord, tx_options{});
    CHECK(again.status == tx_status::confirmed);
    const std::string trace_id(trace_context::for_gid(again.gid).trace_id());
    for (const received& q : w.all())
        if (q.gid == again.gid)
            CHECK(q.traceparent.substr(3, 32) == trace_id);
    CHECK(urls.client.stats().reused > 0);
    CHECK(w.server->accepted + w.other->accepted == urls.client.stats().connections);
}

TEST_CASE(
    "TCC over HTTP: a 409 cancels every branch; an unreachable participant is an unknown result") {
    http_world w;
    url_registry urls(w.ioc);
    coordinator coord(w.ioc.get_executor(), w.journal, urls.registry, fast_options());

    w.other->decide = [](const received& r) { return r.op == "try" ? reply::fail : reply::ok; };
    tx_result r = w.tcc(coord, tx_options{});
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_failed);
    CHECK(contains(r.message, "branch 03 (" + w.shipping + ")"));
    CHECK(contains(r.message, "no stock"));
    CHECK(w.ops(r.gid, "01") == strings{"try", "cancel"});
    CHECK(w.ops(r.gid, "02") == strings{"try", "cancel"});
    CHECK(w.ops(r.gid, "03") == strings{"try", "cancel"});

    // A try that gets no answer: cancelled as unknown, and the cancel is retried until it succeeds.
    w.other->decide = [](const received& r) { return r.op == "try" ? reply::error : reply::ok; };
    w.server->decide = [n = 0](const received& r) mutable {
        return r.op == "cancel" && ++n <= 2 ? reply::drop : reply::ok;
    };
    r = w.tcc(coord, tx_options{});
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_error);
    CHECK(contains(r.message, "answered 500"));
    CHECK(w.ops(r.gid, "03") == strings{"try", "cancel"});
    CHECK(w.journal.get(r.gid)->status == tx_status::cancelled);

    const std::string gone = "http://127.0.0.1:" + std::to_string(closed_port(w.ioc)) + "/dtx/gone";
    auto limited = fast_options();
    limited.phase_two.max_attempts = 3;
    coordinator stubborn(w.ioc.get_executor(), w.journal, urls.registry, limited);
    r = w.run(stubborn.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch(w.inventory, qty_payload{1});
        co_await tx.add_branch(gone, qty_payload{1});
    }));
    CHECK(r.status == tx_status::cancelling); // the cancel of the unreachable branch is retried
    CHECK(r.reason == errc::branch_error);
    CHECK(contains(r.message, "POST " + gone + ": connecting"));
    CHECK(w.ops(r.gid, "01") == strings{"try", "cancel"});

    // A name that is not an URL is not found at all.
    r = w.run(coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("inventory", qty_payload{1});
    }));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::unknown_participant);
}

TEST_CASE("TCC over HTTP: the coordinator's call timeout cancels a hanging call and closes its "
          "connection") {
    http_world w;
    url_registry urls(w.ioc);
    auto opts = fast_options();
    opts.call_timeout = std::chrono::milliseconds(50);
    coordinator coord(w.ioc.get_executor(), w.journal, urls.registry, opts);
    w.other->decide = [](const received& r) { return r.op == "try" ? reply::hang : reply::ok; };
    tx_result r = w.tcc(coord, tx_options{});
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_timed_out);
    CHECK(w.ops(r.gid, "03") == strings{"try", "cancel"});
    CHECK(w.run_until([&] { return w.other->closed_by_client == 1; }));
    CHECK(w.other->accepted == 2); // the cancel went out on a new connection
}

TEST_CASE("sagas over HTTP: actions in order; a 409 compensates the steps newest first") {
    http_world w;
    url_registry urls(w.ioc);
    coordinator coord(w.ioc.get_executor(), w.journal, urls.registry, fast_options());
    auto saga = [&] {
        return w.run(coord.saga([&](saga_transaction& s) -> asio::awaitable<void> {
            co_await s.add_step(w.payment, qty_payload{40});
            co_await s.add_step(w.inventory, qty_payload{2});
            co_await s.add_step(w.shipping, qty_payload{1});
        }));
    };
    tx_result r = saga();
    CHECK(r.status == tx_status::confirmed);
    for (const char* b : {"01", "02", "03"})
        CHECK(w.ops(r.gid, b) == strings{"action"});

    w.other->decide = [](const received& q) { return q.op == "action" ? reply::fail : reply::ok; };
    r = saga();
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_failed);
    strings order;
    for (const received& q : w.all())
        if (q.gid == r.gid)
            order.push_back(q.branch_id + ":" + q.op + ":" + q.trans_type);
    CHECK(order == strings{"01:action:saga", "02:action:saga", "03:action:saga",
                           "03:compensate:saga", "02:compensate:saga", "01:compensate:saga"});

    // A planned saga: one journal write, then the actions in order.
    w.other->decide = [](const received&) { return reply::ok; };
    std::vector<branch_spec> steps;
    steps.push_back({w.payment, qty_payload{40}});
    steps.push_back({w.shipping, qty_payload{1}});
    r = w.run(coord.saga(std::move(steps)));
    CHECK(r.status == tx_status::confirmed);
    CHECK(w.ops(r.gid, "02") == strings{"action"});
}

TEST_CASE("recovery in a fresh coordinator calls the URLs the journal names") {
    http_world w;
    std::string gid;
    {
        // The first coordinator stops right after its confirm decision is durable, as if killed.
        url_registry urls(w.ioc);
        bool stopped = false;
        auto opts = halting_after_decision(gid, stopped);
        coordinator coord(w.ioc.get_executor(), w.journal, urls.registry, opts);
        asio::co_spawn(w.ioc, coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch(w.inventory, qty_payload{2});
            co_await tx.add_branch(w.shipping, qty_payload{1});
        }),
                       asio::detached);
        CHECK(w.run_until([&] { return stopped; }));
    }
    REQUIRE_FALSE(gid.empty());
    CHECK(w.journal.get(gid)->status == tx_status::confirming);
    CHECK(w.ops(gid, "01") == strings{"try"});

    // A new process: a new client, a registry that knows nothing but the URL resolver.
    url_registry urls(w.ioc);
    coordinator coord(w.ioc.get_executor(), w.journal, urls.registry, fast_options());
    recovery_report rep = w.run(coord.recover(recovery_options{.take_over = true}));
    CHECK(rep.finished == 1);
    CHECK(w.journal.get(gid)->status == tx_status::confirmed);
    CHECK(w.ops(gid, "01") == strings{"try", "confirm"});
    CHECK(w.ops(gid, "02") == strings{"try", "confirm"});
    const std::string trace_id(trace_context::for_gid(gid).trace_id());
    for (const received& q : w.all())
        CHECK(q.traceparent.substr(3, 32) == trace_id); // one trace, before and after
}

TEST_CASE("a coordinator and dtx's own server: transactions over HTTP leave every participant "
          "consistent") {
    asio::io_context ioc;
    resource a{"a"}, b{"b"}, c{"c"};
    participant_registry served;
    served.add_tcc("a", a.tcc());
    served.add_tcc("b", b.tcc());
    served.add_saga("c", c.saga());
    http::server srv(ioc, served, http::server_options{.bearer_token = "s3cret"});
    srv.start();
    const std::string base = "http://127.0.0.1:" + std::to_string(srv.port()) + "/dtx/";

    memory_journal journal{memory_journal::options{.keep_ended = true}};
    url_registry urls(ioc, http::client_options{.bearer_token = "s3cret"});
    coordinator coord(ioc.get_executor(), journal, urls.registry, fast_options());
    auto order = [&](int qty) {
        return coord.tcc([&base, qty](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch(base + "a", qty_payload{qty});
            co_await tx.add_branch(base + "b", qty_payload{qty});
        });
    };

    // Sixteen at once; every fourth asks for more than there is, and a refuses it.
    int done = 0, confirmed = 0;
    for (int i = 1; i <= 16; ++i)
        asio::co_spawn(ioc, order(i % 4 == 0 ? 2'000'000 : i),
                       [&](std::exception_ptr e, tx_result r) {
                           CHECK_FALSE(e);
                           confirmed += r.committed();
                           ++done;
                       });
    ioc.restart();
    while (done < 16 && ioc.run_one_for(std::chrono::seconds(5)) > 0) {
    }
    CHECK(done == 16);
    CHECK(confirmed == 12);
    CHECK(check_invariants({&a, &b}) == "");
    CHECK(a.taken() == 1 + 2 + 3 + 5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15);

    tx_result s = run(ioc, coord.saga([&](saga_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_step(base + "c", qty_payload{5});
    }));
    CHECK(s.status == tx_status::confirmed);
    CHECK(c.taken() == 5);

    // A wrong token: 401 is no outcome, so the try is unknown and the transaction cancelled.
    url_registry strangers(ioc, http::client_options{.bearer_token = "guess"});
    auto limited = fast_options();
    limited.phase_two.max_attempts = 2;
    coordinator outsider(ioc.get_executor(), journal, strangers.registry, limited);
    tx_result r = run(ioc, outsider.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch(base + "a", qty_payload{1});
    }));
    CHECK(r.aborted());
    CHECK(r.reason == errc::branch_error);
    CHECK(contains(r.message, "answered 401"));
    CHECK(a.ops(r.gid, "01").empty());
}
