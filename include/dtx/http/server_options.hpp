#ifndef DTX_HTTP_SERVER_OPTIONS_HPP
#define DTX_HTTP_SERVER_OPTIONS_HPP

// Settings of an HTTP server (participants and application routes), and what it tells its log
// hook about each request.

#include <dtx/transaction_status.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace http {

namespace detail {
struct server_state;
struct server_connection;
} // namespace detail

/// HTTPS settings of a server (server_options::tls): made by make_server_tls() of
/// <dtx/http/tls.hpp>, which brings OpenSSL (CMake: dtx::tls). A server without them speaks plain
/// HTTP and its includers pay nothing for TLS.
class server_tls {
public:
    virtual ~server_tls() = default;
    /// Serves a connection: the handshake, then its requests.
    virtual boost::asio::awaitable<void>
    serve(std::shared_ptr<detail::server_state> st,
          std::shared_ptr<detail::server_connection> c) const = 0;
    /// Answers a connection over the limit: the handshake, then 503.
    virtual boost::asio::awaitable<void>
    refuse(std::shared_ptr<detail::server_state> st,
           std::shared_ptr<detail::server_connection> c) const = 0;
};

/// One request the server answered (or gave up on), for a log hook. The views are valid during
/// the call only. Fields the request did not get as far as are empty. Every text is valid UTF-8
/// without control characters (what a request sent otherwise is escaped).
struct log_record {
    std::string_view method;
    /// The path of the request target (without the query).
    std::string_view path;
    /// The participant named in the path, once it was found.
    std::string_view participant;
    /// The pattern of the application route that matched (e.g. "/orders/{id}"), once found.
    std::string_view route;
    std::string_view gid;
    std::string_view branch_id;
    std::optional<branch_op> op;
    /// The status sent; 0 if the client went away before an answer could be sent.
    unsigned status = 0;
    /// The error code of the answer's body (4xx, 5xx), e.g. "invalid_gid"; empty otherwise.
    std::string_view error;
    /// What a handler (a participant's or a route's) threw, or why a route's response could not
    /// be sent (the answer is 500), for the log only: it is never sent to the client.
    std::string_view exception;
    /// The request's W3C `traceparent` header, if it had one.
    std::string_view traceparent;
    /// From the first byte of the request to the last byte of the answer.
    std::chrono::nanoseconds duration{};
};

struct server_options {
    /// Address to listen on. Only loopback by default: exposing participants is a decision.
    std::string address = "127.0.0.1";
    /// Port to listen on; 0 picks a free one (`server::port()` tells which).
    std::uint16_t port = 0;
    /// Participants are served at POST (or GET) {base_path}/{participant name}.
    std::string base_path = "/dtx";
    /// GET here answers 200 {"status":"ok"} (503 {"status":"stopping"} during shutdown). It needs
    /// no token, so that load balancers can ask. Empty: no health endpoint.
    std::string health_path = "/health";

    /// Largest request line plus header fields; beyond: 431.
    std::uint32_t header_limit = 8 * 1024;
    /// Largest body; beyond: 413. An application route may have a smaller one (route_options).
    std::uint64_t body_limit = 1024 * 1024;
    /// Bytes of request bodies all connections together may hold at once: a request takes its
    /// Content-Length (a chunked one: body_limit) from it before its body is read, and gives it
    /// back once answered. When it cannot, the answer is 503 (`overloaded`) and the connection
    /// closes, without reading the body. 64 MiB: 64 bodies of the largest size at once, while a
    /// branch call's body is usually under a KiB, and the server's memory stays bounded whatever
    /// max_connections is. At least body_limit (start() throws std::invalid_argument otherwise).
    std::uint64_t body_budget = 64 * 1024 * 1024;
    /// Deepest nesting of arrays and objects in a body; beyond: 400 (json_too_deep), so that a
    /// handler that walks its payload recursively cannot run out of stack.
    std::size_t json_depth_limit = 64;
    /// Longest time to receive one whole request, from its first byte (from the connection's
    /// accept for its first request), headers included; beyond: 408 and the connection is
    /// closed. Also bounds writing an answer.
    std::chrono::milliseconds read_timeout = std::chrono::seconds{10};
    /// Longest wait for the next request on a kept-alive connection; beyond: the connection is
    /// closed without an answer.
    std::chrono::milliseconds idle_timeout = std::chrono::seconds{60};
    /// With TLS: longest time for the handshake, from the connection's accept; beyond, the
    /// connection is closed (it counts against max_connections until then).
    std::chrono::milliseconds handshake_timeout = std::chrono::seconds{5};
    /// Longest time a handler (a participant's or an application route's) may take; beyond: the
    /// handler is cancelled (through Asio's cancellation slot) and the answer is 503, for a
    /// participant an unknown result the coordinator retries.
    /// 30 s: far beyond a branch call's usual milliseconds and three times a dtx coordinator's
    /// call_timeout (10 s), whose caller has given up by then, so that a hung handler cannot hold
    /// its connection forever. A handler that ignores the cancellation is answered for all the
    /// same, at most a second later (min(1 s, handler_timeout)); it runs on, its connection is
    /// closed, and async_stop() waits for it. Empty: no limit (the handler runs in its
    /// connection's coroutine, cancelled only by a stop).
    std::optional<std::chrono::milliseconds> handler_timeout = std::chrono::seconds{30};
    /// Connections served at once. Beyond, a new connection takes the place of the one that has
    /// waited longest for its next request (which is closed); if every connection is busy, the
    /// new one is answered 503 and closed. 0 (the default): derived from the process's limit on
    /// open descriptors (RLIMIT_NOFILE's soft limit) when start() is called: three quarters of it,
    /// at most 10,000 (768 at the usual limit of 1,024), leaving the rest of the process
    /// descriptors for its files, its outgoing calls and the 503 answers. If the descriptors run
    /// out all the same, a client is answered 503 with a descriptor the server keeps in reserve.
    /// options() tells the value in use.
    std::size_t max_connections = 0;
    /// Connections one client address may hold at once. Beyond, a new one from that address
    /// takes the place of its connection that has waited longest for its next request, or is
    /// answered 503 (`too_many_connections`). 0 (the default): half of max_connections, so that
    /// one client cannot take the whole server. Behind a proxy that gathers every client under
    /// its own address, set it to max_connections.
    std::size_t max_connections_per_client = 0;
    /// Requests served on one connection; the last answer says Connection: close. 1,000 (as
    /// nginx's keepalive_requests): a client reconnects rarely, and a connection's memory and a
    /// load balancer's view of it are renewed now and then.
    std::size_t max_requests_per_connection = 1000;
    /// Longest life of a connection, from its accept: an answer after it says Connection: close,
    /// and an idle connection is closed when it ends. One hour (as nginx's keepalive_time): long
    /// lived connections cannot pin a client to this instance forever.
    std::chrono::milliseconds max_connection_lifetime = std::chrono::hours{1};
    /// Default time `async_stop()` lets requests in flight finish.
    std::chrono::milliseconds shutdown_grace = std::chrono::seconds{5};

    /// If set, every request except the health endpoint and the application routes registered
    /// with require_token = false must carry `Authorization: Bearer <token>` with this token;
    /// otherwise it is answered 401, before its body is read. Compared in constant time.
    std::optional<std::string> bearer_token{};

    /// Serve HTTPS with these settings (make_server_tls of <dtx/http/tls.hpp>); empty: plain
    /// HTTP.
    std::shared_ptr<const server_tls> tls{};

    /// Called once per request, after its answer was written (or the client went away). Runs on
    /// the server's executor: keep it short.
    std::function<void(const log_record&)> on_request{};
};

} // namespace http
DTX_NAMESPACE_END

#endif
