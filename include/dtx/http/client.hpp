#ifndef DTX_HTTP_CLIENT_HPP
#define DTX_HTTP_CLIENT_HPP

// The HTTP client that calls remote participants: POST requests over kept-alive connections.
//
//   dtx::http::client http(ioc.get_executor());
//   const dtx::http::url stock = dtx::http::make_url("http://127.0.0.1:8081/dtx/stock");
//   const std::string body = R"({"sku":"A-1","qty":3})";
//   dtx::http::response r =
//       co_await http.post(stock, "gid=g-1&trans_type=tcc&branch_id=01&op=try", body);
//
// Connections are pooled per scheme and endpoint (host:port): a request takes the most recently
// used idle connection, and gives it back when the answer allows keep-alive. A connection the
// server closed while it was idle is noticed before it is used; if the server closes it as the
// request goes out (before any byte of an answer arrives), the request is sent once more on a new
// connection. Branch calls are idempotent by protocol, so that repeat is harmless; use this client
// only for requests of which the same holds.
//
// Every request is bounded by `client_options::request_timeout`, and by Asio cancellation: a
// terminal cancellation of the awaiting coroutine (the coordinator's call timeout sends one) ends
// the request at once and closes its connection, which is never reused after an error.
//
// https:// URLs need TLS settings (client_options::tls, from <dtx/http/tls.hpp>, which brings
// OpenSSL); TLS connections are pooled and reused like plain ones, and a pooled one is closed with
// TLS close_notify. A client without them refuses an https:// URL with an error, and its
// includers pay nothing for TLS.
//
// Threads: like an Asio I/O object, a client works on one executor (the coordinator's), and its
// requests are awaited by coroutines running there. It must outlive them, and be destroyed before
// its execution context.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/socket.h> // recv, MSG_PEEK, MSG_DONTWAIT
#endif

#include <dtx/detail/config.hpp>
#include <dtx/error.hpp>
#include <dtx/http/url.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/version.hpp>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http {

namespace detail {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using http_request = beast::http::request<beast::http::string_body>;
using response_parser = beast::http::response_parser<beast::http::string_body>;

/// The TLS layer of one client connection, over its TCP stream (implemented in tls.hpp). Its
/// operations are bounded by the TCP stream's expiry, and cancelled as the caller is.
class tls_layer {
public:
    using io_result = std::pair<boost::system::error_code, std::size_t>;
    /// The handshake's error, and what its message does not say (the certificate check's reason).
    using handshake_result = std::pair<boost::system::error_code, std::string>;

    virtual ~tls_layer() = default;
    virtual asio::awaitable<handshake_result> handshake() = 0;
    virtual asio::awaitable<io_result> write(http_request& req) = 0;
    virtual asio::awaitable<io_result> read(beast::flat_buffer& buffer,
                                            response_parser& parser) = 0;
    /// Sends TLS close_notify, without waiting for the server's and without blocking (if the
    /// socket cannot take it at once, it is not sent).
    virtual void close_notify() noexcept = 0;
};

} // namespace detail

/// TLS settings of a client (client_options::tls): made by make_client_tls() of
/// <dtx/http/tls.hpp>. Shared by every connection of the clients that hold them.
class client_tls {
public:
    virtual ~client_tls() = default;
    /// A TLS layer over `tcp` for a connection to `to`, ready for its handshake.
    virtual std::unique_ptr<detail::tls_layer> wrap(boost::beast::tcp_stream& tcp,
                                                    const url& to) const = 0;
};

struct client_options {
    /// Idle kept-alive connections kept per endpoint; a connection given back beyond that is
    /// closed.
    std::size_t max_idle_per_endpoint = 32;
    /// Longest wait for a TCP connection, and then for its TLS handshake.
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(2);
    /// Longest time to send a request and read its whole answer; also bounds the resolution of
    /// a host name (an IP address needs none).
    std::chrono::milliseconds request_timeout = std::chrono::seconds(10);
    /// An idle connection older than this is closed instead of reused. Keep it below the servers'
    /// own keep-alive timeout (dtx's server: 60 s).
    std::chrono::milliseconds idle_timeout = std::chrono::seconds(30);
    /// If set, every request carries `Authorization: Bearer <token>`.
    std::optional<std::string> bearer_token{};
    std::string user_agent = "dtx/" DTX_VERSION_STRING;
    /// A larger answer body is an error (for a branch call: an unknown result).
    std::size_t max_response_body = 1024 * 1024;
    /// Settings for https:// URLs (make_client_tls() of <dtx/http/tls.hpp>); without them, a
    /// request to an https:// URL fails with an error that says so.
    std::shared_ptr<const client_tls> tls{};
};

/// An extra request header. The views must stay valid until the request completes.
struct header {
    std::string_view name;
    std::string_view value;
};

/// An answer: its status and body.
struct response {
    unsigned status = 0;
    std::string body;
};

/// What a client has done so far, for tests and monitoring.
struct client_stats {
    std::uint64_t requests = 0;    ///< requests completed with an answer
    std::uint64_t connections = 0; ///< connections opened
    std::uint64_t reused = 0;      ///< requests sent on a pooled connection
    std::uint64_t repeated = 0;    ///< requests sent again because a pooled connection was closed
};

namespace detail {

/// One connection, pooled while it is idle.
struct connection {
    explicit connection(const asio::any_io_executor& ex)
        : stream(ex) {}
    beast::tcp_stream stream;
    std::unique_ptr<tls_layer> tls; // over `stream`, for https:// (declared after it: ends first)
    beast::flat_buffer buffer;
    std::chrono::steady_clock::time_point idle_since{};
};

/// Waits for an operation that `start` launches with a completion handler taking
/// (error_code, Result), for at most `limit`; a terminal cancellation of the caller ends the wait
/// at once, with asio::error::operation_aborted, and a timeout gives beast::error::timeout. The
/// operation may outlive the wait (the system's name resolver cannot be interrupted): its late
/// result is dropped.
template <class Result, class Start>
asio::awaitable<std::pair<boost::system::error_code, Result>>
detached_within(asio::any_io_executor ex, std::chrono::milliseconds limit, Start start) {
    struct shared_state {
        explicit shared_state(asio::any_io_executor e)
            : wake(std::move(e)) {}
        asio::steady_timer wake;
        bool done = false;
        boost::system::error_code ec;
        Result result{};
    };
    auto state = std::make_shared<shared_state>(std::move(ex));
    state->wake.expires_after(limit);
    start([state](boost::system::error_code ec, Result r) {
        state->ec = ec;
        state->result = std::move(r);
        state->done = true;
        state->wake.cancel();
    });
    auto [ec] = co_await state->wake.async_wait(asio::as_tuple(asio::use_awaitable));
    std::pair<boost::system::error_code, Result> out;
    if (state->done)
        out = {state->ec, std::move(state->result)};
    else
        out.first = ec ? ec : boost::system::error_code(beast::error::timeout);
    co_return out;
}

/// A request that failed: where, and why.
inline error request_error(const url& to, std::string_view stage,
                           const boost::system::error_code& ec, std::chrono::milliseconds timeout) {
    std::string why;
    if (ec == beast::error::timeout)
        why = "no answer within " + std::to_string(timeout.count()) + " ms";
    else if (ec == asio::error::operation_aborted)
        why = "cancelled";
    else
        why = ec.message();
    return error(std::error_code(ec), "POST " + to.text() + ": " + std::string(stage) + ": " + why);
}

/// Errors that mean the server closed a connection it had kept alive.
inline bool closed_by_peer(const boost::system::error_code& ec) noexcept {
    return ec == beast::http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_aborted;
}

/// The pools and settings a client and its remote participants share.
class client_core {
public:
    client_core(asio::any_io_executor ex, client_options o)
        : ex_(std::move(ex))
        , opts_(std::move(o)) {}

    const asio::any_io_executor& executor() const noexcept { return ex_; }
    const client_options& options() const noexcept { return opts_; }
    const client_stats& stats() const noexcept { return stats_; }

    std::size_t idle_connections() const noexcept {
        std::size_t n = 0;
        for (const auto& [key, idle] : pools_)
            n += idle.size();
        return n;
    }
    void close_idle() {
        for (auto& [key, idle] : pools_)
            for (auto& c : idle)
                close_cleanly(*c);
        pools_.clear();
    }

    http_request make_request(const url& to, std::string_view query, std::string_view body,
                              std::span<const header> headers) const {
        std::string target = to.target;
        if (!query.empty()) {
            target += target.find('?') == std::string::npos ? '?' : '&';
            target += query;
        }
        http_request req(beast::http::verb::post, target, 11);
        req.set(beast::http::field::host, to.host_header());
        req.set(beast::http::field::user_agent, opts_.user_agent);
        req.set(beast::http::field::content_type, "application/json");
        if (opts_.bearer_token)
            req.set(beast::http::field::authorization, "Bearer " + *opts_.bearer_token);
        for (const header& h : headers)
            req.set(h.name, h.value);
        req.body() = body;
        req.prepare_payload();
        return req;
    }

    /// Sends `req` to `to` and reads the answer; see the top of the file. Throws dtx::error.
    static asio::awaitable<response> exchange(std::shared_ptr<client_core> self, url to,
                                              http_request req) {
        const std::string key = std::string(to.scheme()) + to.endpoint();
        std::unique_ptr<connection> c = self->take(key);
        bool pooled = c != nullptr;
        for (;;) {
            if (!c) {
                c = std::make_unique<connection>(self->ex_);
                co_await self->connect(*c, to);
                pooled = false;
            } else {
                ++self->stats_.reused;
            }
            response_parser parser;
            parser.body_limit(self->opts_.max_response_body);
            c->stream.expires_after(self->opts_.request_timeout);
            std::string_view stage = "sending the request";
            boost::system::error_code ec;
            if (c->tls) {
                auto [write_ec, written] = co_await c->tls->write(req);
                ec = write_ec;
            } else {
                auto [write_ec, written] = co_await beast::http::async_write(
                    c->stream, req, asio::as_tuple(asio::use_awaitable));
                ec = write_ec;
            }
            if (!ec) {
                stage = "reading the answer";
                if (c->tls) {
                    auto [read_ec, read] = co_await c->tls->read(c->buffer, parser);
                    ec = read_ec;
                } else {
                    auto [read_ec, read] = co_await beast::http::async_read(
                        c->stream, c->buffer, parser, asio::as_tuple(asio::use_awaitable));
                    ec = read_ec;
                }
            }
            if (!ec) {
                c->stream.expires_never();
                ++self->stats_.requests;
                auto& answer = parser.get();
                response out;
                out.status = answer.result_int();
                out.body = std::move(answer.body());
                if (answer.keep_alive())
                    self->give_back(key, std::move(c));
                else
                    close_cleanly(*c);
                co_return out;
            }
            const bool nothing_arrived = !parser.got_some() && c->buffer.size() == 0;
            close(*c);
            c.reset();
            if (pooled && nothing_arrived && closed_by_peer(ec)) {
                ++self->stats_.repeated;
                pooled = false; // once only: the repeat goes out on a new connection
                continue;
            }
            throw request_error(to, stage, ec, self->opts_.request_timeout);
        }
    }

private:
    /// Closes `c` at once (after an error: the TLS session may be mid-record).
    static void close(connection& c) noexcept {
        boost::system::error_code ignored;
        c.stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        c.stream.socket().close(ignored);
    }
    /// Closes `c` between requests: a TLS session ends with close_notify, so that the server
    /// can tell the end from a truncation (an attack, or a crash).
    static void close_cleanly(connection& c) noexcept {
        if (c.tls)
            c.tls->close_notify();
        close(c);
    }

    /// True if nothing was received on the idle connection `c` and the server has not closed it.
    static bool still_open(connection& c) noexcept {
        auto& s = c.stream.socket();
        char byte;
#if defined(MSG_DONTWAIT)
        // One system call, and the socket's mode (which Asio caches) stays as it is.
        const auto n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
#else
        boost::system::error_code ec;
        s.non_blocking(true, ec);
        if (ec)
            return false;
        s.receive(asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
        const bool open = ec == asio::error::would_block;
        s.non_blocking(false, ec);
        return open && !ec;
#endif
    }

    /// The most recently used idle connection to `key` that is still good, or null.
    std::unique_ptr<connection> take(const std::string& key) {
        auto it = pools_.find(key);
        if (it == pools_.end())
            return nullptr;
        auto& idle = it->second;
        const auto now = std::chrono::steady_clock::now();
        while (!idle.empty()) {
            std::unique_ptr<connection> c = std::move(idle.back());
            idle.pop_back();
            if (now - c->idle_since < opts_.idle_timeout && still_open(*c))
                return c;
            close_cleanly(*c);
        }
        return nullptr;
    }

    void give_back(const std::string& key, std::unique_ptr<connection> c) {
        if (c->buffer.size() != 0 || opts_.max_idle_per_endpoint == 0) {
            close(*c); // bytes after an answer: the server does not speak HTTP/1.1 as we do
            return;
        }
        auto& idle = pools_[key];
        const auto now = std::chrono::steady_clock::now();
        // The oldest are in front: drop those that expired, and one more if the pool is full.
        std::size_t drop = 0;
        while (drop < idle.size() && now - idle[drop]->idle_since >= opts_.idle_timeout)
            ++drop;
        if (idle.size() - drop >= opts_.max_idle_per_endpoint)
            ++drop;
        for (std::size_t i = 0; i < drop; ++i)
            close_cleanly(*idle[i]);
        idle.erase(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(drop));
        c->idle_since = now;
        idle.push_back(std::move(c));
    }

    asio::awaitable<void> connect(connection& c, const url& to) {
        if (to.tls && !opts_.tls)
            throw error(
                std::make_error_code(std::errc::protocol_not_supported),
                "POST " + to.text() +
                    ": an https:// URL, but the client has no TLS settings (client_options::tls, "
                    "made by make_client_tls of <dtx/http/tls.hpp>)");
        boost::system::error_code ec;
        const asio::ip::address address = asio::ip::make_address(to.host, ec);
        if (!ec) {
            const tcp::endpoint target(address, to.port);
            c.stream.expires_after(opts_.connect_timeout);
            auto [connect_ec] =
                co_await c.stream.async_connect(target, asio::as_tuple(asio::use_awaitable));
            ec = connect_ec;
        } else {
            tcp::resolver resolver(ex_);
            const std::string port = std::to_string(to.port);
            auto start = [&resolver, &to, &port](auto handler) {
                resolver.async_resolve(to.host, port, std::move(handler));
            };
            asio::any_io_executor ex = ex_;
            auto [resolve_ec, found] = co_await detached_within<tcp::resolver::results_type>(
                std::move(ex), opts_.request_timeout, std::move(start));
            if (resolve_ec)
                throw request_error(to, "resolving the host", resolve_ec, opts_.request_timeout);
            c.stream.expires_after(opts_.connect_timeout);
            auto [connect_ec, at] =
                co_await c.stream.async_connect(found, asio::as_tuple(asio::use_awaitable));
            ec = connect_ec;
        }
        c.stream.expires_never();
        if (ec)
            throw request_error(to, "connecting", ec, opts_.connect_timeout);
        c.stream.socket().set_option(tcp::no_delay(true), ec); // small requests: no Nagle delay
        if (to.tls) {
            c.tls = opts_.tls->wrap(c.stream, to);
            c.stream.expires_after(opts_.connect_timeout);
            auto [handshake_ec, why] = co_await c.tls->handshake();
            c.stream.expires_never();
            if (handshake_ec == beast::error::timeout ||
                handshake_ec == asio::error::operation_aborted)
                throw request_error(to, "the TLS handshake", handshake_ec, opts_.connect_timeout);
            if (handshake_ec) // what() adds OpenSSL's message
                throw error(std::error_code(handshake_ec),
                            "POST " + to.text() + ": the TLS handshake with " + to.host +
                                " failed" + (why.empty() ? "" : ": " + why));
        }
        ++stats_.connections;
    }

    asio::any_io_executor ex_;
    client_options opts_;
    std::unordered_map<std::string, std::vector<std::unique_ptr<connection>>> pools_;
    client_stats stats_;
};

} // namespace detail

class remote_participant;
class client;
participant_registry::resolver url_resolver(client& c);

class client {
public:
    explicit client(asio::any_io_executor ex)
        : client(std::move(ex), client_options{}) {}
    client(asio::any_io_executor ex, client_options options)
        : core_(std::make_shared<detail::client_core>(std::move(ex), std::move(options))) {}

    client(const client&) = delete;
    client& operator=(const client&) = delete;
    ~client() { core_->close_idle(); }

    const asio::any_io_executor& get_executor() const noexcept { return core_->executor(); }
    const client_options& options() const noexcept { return core_->options(); }
    const client_stats& stats() const noexcept { return core_->stats(); }
    /// Connections kept alive for reuse.
    std::size_t idle_connections() const noexcept { return core_->idle_connections(); }
    /// Closes the connections kept alive for reuse.
    void close_idle() { core_->close_idle(); }

    /// POSTs the JSON `body` to `to`, with `query` (without '?') added to its target, and the
    /// extra `headers`. Any answer (whatever its status) is returned. Throws dtx::error naming the
    /// URL and the cause if there is none: connection refused or broken, the request timeout, a
    /// cancellation, an answer that is not HTTP or too large. The arguments are copied.
    asio::awaitable<response> post(const url& to, std::string_view query, std::string_view body,
                                   std::span<const header> headers) {
        return detail::client_core::exchange(core_, to,
                                             core_->make_request(to, query, body, headers));
    }
    asio::awaitable<response> post(const url& to, std::string_view query, std::string_view body) {
        return post(to, query, body, std::span<const header>{});
    }

private:
    friend class remote_participant;
    friend participant_registry::resolver url_resolver(client& c);
    std::shared_ptr<detail::client_core> core_;
};

} // namespace http
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
