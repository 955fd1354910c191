#ifndef DTX_HTTP_ROUTE_HPP
#define DTX_HTTP_ROUTE_HPP

// Application routes: a service's own HTTP API, served by dtx::http::server beside its
// participants, with the same limits, authentication, timeouts, log hook and JSON errors
// (server.hpp, docs/protocol.md). A route is a method, a path pattern and a coroutine that
// answers a request:
//
//   dtx::http::server api(ioc, {.port = 8080}); // application routes only (or: ioc, participants, options)
//   api.route(dtx::http::verb::get, "/orders/{id}",
//             [](const dtx::http::request& req) -> asio::awaitable<dtx::http::reply> {
//                 const std::string& id = req.param("id"); // percent-decoded, valid UTF-8
//                 if (id == "o-0")
//                     throw dtx::http::error_reply(404, "unknown_order", "no such order");
//                 co_return dtx::http::reply::json(200, {{"id", id}, {"state", "paid"}});
//             });
//   api.route(dtx::http::verb::post, "/orders",
//             [](const dtx::http::request& req) -> asio::awaitable<dtx::http::reply> {
//                 const nlohmann::json order = req.json(); // 400 if the body is not JSON
//                 co_return dtx::http::reply::json(201, order);
//             },
//             {.body_limit = 16 * 1024});
//   api.route(dtx::http::verb::get, "/version",
//             [](const dtx::http::request&) -> asio::awaitable<dtx::http::reply> {
//                 co_return dtx::http::reply::text(200, "1.0\n");
//             },
//             {.require_token = false}); // public even when the server has a bearer_token
//   api.start();
//
// Patterns. A pattern is a path of segments: literal text (`orders`) or a parameter (`{id}`: one
// whole, non-empty segment, its name made of letters, digits and '_'). A request matches a
// pattern with as many segments, segment by segment, after each of its segments is
// percent-decoded; a literal segment beats a parameter where two patterns match (`/orders/new`
// before `/orders/{id}`). route() throws std::invalid_argument for an invalid pattern, for one
// registered twice for a method (`/orders/{id}` and `/orders/{key}` are the same pattern), and
// for one that could take a path of the participants (base_path and below) or the health
// endpoint; and std::logic_error once the server has started.
//
// What the server answers before a handler runs:
//   400 bad_path            a segment of the path is not percent-encoded UTF-8 without control
//                           characters (a raw 0xFF byte, %FF, %0A): every parameter a handler
//                           reads is valid UTF-8
//   401 unauthorized        the server has a bearer_token and the route does not say
//                           require_token = false (decided on the header: the body is not read)
//   404 not_found           no route has this path
//   405 method_not_allowed  routes have this path with other methods, listed in Allow
//   413 body_too_large      over the route's body_limit (or the server's), decided on the header
//                           when the request has a Content-Length
// and every answer of server.hpp's table (400 on framing, 408, 431, 503...).
//
// What a handler answers: the reply it returns; a throw of error_reply, its status with
// the JSON body {"error":code,"message":text}; any other exception, 500 {"error":"internal",...}
// with the exception's text in the log hook's `exception` only, never in the answer; a handler
// still running at the server's handler_timeout is cancelled (Asio cancellation) and answered 503
// handler_timeout. Every text the server builds is valid UTF-8: reply::json() and text()
// replace invalid UTF-8 with U+FFFD rather than throw; a reply the handler builds by hand is
// sent as it is, and one with a status outside 200-599 or a header field with line breaks is
// answered 500 instead. The connection goes on after all of these.
//
// Handlers run on the server's executor, one request of a connection at a time (pipelined
// requests are answered in order); the request and its views are valid until the handler's
// coroutine completes.

#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/http/detail/json_body.hpp>
#include <dtx/http/detail/request_target.hpp>
#include <dtx/http/protocol.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace http {

/// HTTP methods: verb::get, verb::post, verb::put, verb::delete_, verb::patch...
using verb = boost::beast::http::verb;

/// Thrown by a route's handler (or by request::json(), request::query()) to answer with an error:
/// `status` (400 to 599) and the JSON body {"error":code,"message":message}. The message is sent
/// to the client: it should name what is wrong without repeating what the request sent.
class error_reply : public std::exception {
public:
    /// Throws std::invalid_argument if `status` is not 400 to 599.
    error_reply(unsigned status, std::string code, std::string message)
        : problem_{status, std::move(code), std::move(message)} {
        if (status < 400 || status > 599)
            throw std::invalid_argument("dtx::http::error_reply: status must be 400 to 599");
    }
    explicit error_reply(problem p)
        : error_reply(p.status, std::move(p.code), std::move(p.message)) {}

    unsigned status() const noexcept { return problem_.status; }
    const std::string& code() const noexcept { return problem_.code; }
    const std::string& message() const noexcept { return problem_.message; }
    const char* what() const noexcept override { return problem_.message.c_str(); }
    const problem& details() const noexcept { return problem_; }

private:
    problem problem_;
};

/// What a route's handler answers.
struct reply {
    unsigned status = 200;
    /// Sent as it is (see json() and text() for bodies that are always valid UTF-8).
    std::string body{};
    std::string content_type = "application/json";
    /// Further header fields (Location, Cache-Control...). The server sets Content-Length,
    /// Connection and Content-Type itself.
    std::vector<std::pair<std::string, std::string>> headers{};

    /// `value` as JSON; a string in it that is not valid UTF-8 is sent with U+FFFD in place of
    /// its bad bytes (nlohmann's dump() would throw).
    static reply json(unsigned status, const nlohmann::json& value) {
        return {status,
                value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                "application/json",
                {}};
    }

    /// `text` as text/plain in UTF-8 (bytes that are not valid UTF-8 become U+FFFD).
    static reply text(unsigned status, std::string_view text) {
        return {status, dtx::detail::safe_text(text), "text/plain; charset=utf-8", {}};
    }
};

/// A request as a route's handler reads it. Made by the server (a test of a handler can make one
/// too); views into the server's request, valid while the handler runs.
class request {
public:
    using message_type = boost::beast::http::request<boost::beast::http::string_body>;
    /// The path parameters: name and percent-decoded value, in the pattern's order.
    using parameters = std::vector<std::pair<std::string, std::string>>;

    request(const message_type& message, std::string_view route, parameters params,
            boost::asio::ip::address client = {}, std::size_t json_depth_limit = 64)
        : message_(&message)
        , route_(route)
        , params_(std::move(params))
        , client_(std::move(client))
        , json_depth_limit_(json_depth_limit) {}

    verb method() const noexcept { return message_->method(); }
    std::string_view method_string() const noexcept { return message_->method_string(); }
    /// The request target as sent: path and query, percent-encoded.
    std::string_view target() const noexcept { return message_->target(); }
    /// The path of the target as sent (percent-encoded, without the query). Use param() for the
    /// parts of it that vary: decoding the whole path would mix up '/' and "%2F".
    std::string_view path() const noexcept { return detail::split_target(target()).first; }
    /// The pattern of the route that matched, e.g. "/orders/{id}".
    std::string_view route() const noexcept { return route_; }

    /// The value of the path parameter `name` (percent-decoded, valid UTF-8 without control
    /// characters, not empty). Throws std::out_of_range if the route's pattern has no such
    /// parameter: a mistake in the program, answered 500.
    const std::string& param(std::string_view name) const {
        for (const auto& [key, value] : params_)
            if (key == name)
                return value;
        throw std::out_of_range("dtx::http::request: the route " + std::string(route_) +
                                " has no parameter " + std::string(name));
    }
    const parameters& params() const noexcept { return params_; }

    /// The query parameter `name`, percent-decoded ('+' is a space), or empty if the query does
    /// not have it. Throws error_reply (400) if it is given twice, or is not percent-encoded
    /// UTF-8 without control characters.
    std::optional<std::string> query(std::string_view name) const {
        std::string_view rest = detail::split_target(target()).second;
        std::optional<std::string> found;
        while (const auto pair = detail::next_query_pair(rest)) {
            if (pair->first != name)
                continue;
            if (found)
                throw error_reply(400, "duplicate_parameter",
                                  "query parameter '" + safe_name(name) + "' is given twice");
            found = detail::decode_text(pair->second, true);
            if (!found)
                throw error_reply(400, "bad_encoding",
                                  "query parameter '" + safe_name(name) +
                                      "' is not percent-encoded UTF-8 without control "
                                      "characters");
        }
        return found;
    }

    /// The value of header field `name` as sent (empty if the request has none).
    std::string_view header(std::string_view name) const { return (*message_)[name]; }
    std::string_view header(boost::beast::http::field name) const { return (*message_)[name]; }
    const std::string& body() const noexcept { return message_->body(); }

    /// The body parsed as JSON. Throws error_reply: 400 invalid_json (an empty body too), or
    /// 400 json_too_deep beyond the server's json_depth_limit.
    nlohmann::json json() const {
        auto parsed = detail::parse_json_body(body(), json_depth_limit_);
        if (auto* p = std::get_if<problem>(&parsed))
            throw error_reply(std::move(*p));
        return std::move(std::get<nlohmann::json>(parsed));
    }

    /// The client's address (the proxy's, behind a proxy).
    const boost::asio::ip::address& client() const noexcept { return client_; }
    /// The request's W3C traceparent header if it has a valid one, else empty.
    std::string_view traceparent() const noexcept {
        const std::string_view t = (*message_)["traceparent"];
        return trace_context::continuing(t) ? t : std::string_view{};
    }
    /// The whole Beast message, for what the accessors above do not give.
    const message_type& message() const noexcept { return *message_; }

private:
    static std::string safe_name(std::string_view name) {
        return dtx::detail::safe_text(name, 64, dtx::detail::text_controls::escape);
    }

    const message_type* message_;
    std::string_view route_;
    parameters params_;
    boost::asio::ip::address client_;
    std::size_t json_depth_limit_;
};

/// A route's handler: answers a request (or throws, see the top of this file).
using route_handler = std::function<boost::asio::awaitable<reply>(const request&)>;

/// Settings of one route (server::route).
struct route_options {
    /// If the server has a bearer_token: whether this route needs it. false: anyone may call the
    /// route, as the health endpoint.
    bool require_token = true;
    /// Largest body of a request to this route, at most the server's body_limit (the default);
    /// beyond: 413.
    std::optional<std::uint64_t> body_limit{};
};

} // namespace http
DTX_NAMESPACE_END

#endif
