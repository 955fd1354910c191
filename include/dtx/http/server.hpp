#ifndef DTX_HTTP_SERVER_HPP
#define DTX_HTTP_SERVER_HPP

// The HTTP server: serves the participants of a registry to coordinators in other processes,
// with DTM's branch conventions (protocol.hpp; docs/protocol.md for curl users), and a service's
// own API as application routes (route.hpp), all with the same limits.
//
//   dtx::http::server srv(ioc.get_executor(), participants, {.port = 8081});
//   srv.start(); // POST /dtx/<participant>?gid=..&trans_type=..&branch_id=..&op=..
//   ...
//   co_await srv.async_stop();    // stop accepting, let requests in flight finish, close
//
// Application routes are added before start(), and answered as route.hpp says (a server of
// routes only is made without a registry):
//
//   dtx::http::server api(ioc, {.port = 8080});
//   api.route(dtx::http::verb::get, "/ping",
//             [](const dtx::http::request&) -> asio::awaitable<dtx::http::reply> {
//                 co_return dtx::http::reply::json(200, {{"pong", true}});
//             });
//   api.start();
//
// Routes: POST {base_path}/{participant name} runs one branch operation on a participant
// registered under that name (the registry's resolver is never asked, so a request cannot make
// the server call a URL); GET there does the same with a null payload, as DTM calls a branch
// whose payload is empty; GET {health_path} answers 200 {"status":"ok"}. Answers:
//
//   200 / 409 / 425    success / failure / pending, bodies as in protocol.hpp
//   400                bad query, ids, op, JSON body, or a participant of the other kind; no
//                      Host, two Host or Authorization fields, a Transfer-Encoding other than
//                      chunked (the connection closes)
//   401                bearer token required and missing or wrong (decided on the header: the
//                      body is not read)
//   404                no such route, or no participant under that name
//   405                wrong method on a known route (with an Allow header listing the methods)
//   408                the request did not arrive within read_timeout (the connection closes)
//   413 / 431          body / request line and header fields over their limits (connection closes)
//   500                the handler threw: for a participant an unknown result, retried
//   501                a transfer coding before chunked (gzip, chunked): the connection closes
//   503                over max_connections (or per client), out of descriptors, over the
//                      body_budget, or the handler_timeout passed: unknown, retried
//
// Every error body is {"error":"<code>","message":"..."} and never repeats request values.
// Connections are kept alive as HTTP/1.1 says; one coroutine serves each, and handlers
// (participants and routes) run on the server's executor. Like an Asio I/O object, a server works
// on one executor that does not run handlers concurrently: a single-threaded io_context's, or a
// strand. The registry (and its participants), and what route handlers refer to, must outlive the
// server's last request: until async_stop() has completed.
//
// Link with dtx::http (CMake). Nothing but Boost (Asio, Beast) is needed. HTTPS:
// server_options::tls, from <dtx/http/tls.hpp> (dtx::tls, OpenSSL).

#include <dtx/detail/config.hpp>
#include <dtx/http/detail/server_connection.hpp>
#include <dtx/http/route.hpp>
#include <dtx/http/server_options.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/version.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string_view>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http {

class server {
public:
    /// A server for the participants of `participants` (and the application routes added with
    /// route()), on `ex`. Nothing happens until start().
    server(asio::any_io_executor ex, const participant_registry& participants,
           server_options options)
        : st_(std::make_shared<detail::server_state>(std::move(ex), &participants,
                                                     std::move(options))) {}
    server(asio::any_io_executor ex, const participant_registry& participants)
        : server(std::move(ex), participants, server_options{}) {}
    server(asio::io_context& ioc, const participant_registry& participants, server_options options)
        : server(ioc.get_executor(), participants, std::move(options)) {}
    server(asio::io_context& ioc, const participant_registry& participants)
        : server(ioc.get_executor(), participants, server_options{}) {}

    /// A server of application routes only (route()): no participants, base_path is not served.
    server(asio::any_io_executor ex, server_options options)
        : st_(std::make_shared<detail::server_state>(std::move(ex), nullptr, std::move(options))) {}
    server(asio::io_context& ioc, server_options options)
        : server(ioc.get_executor(), std::move(options)) {}

    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Closes every connection at once (prefer async_stop()). Handlers in flight are cancelled
    /// and finish on their own; the registry must outlive them.
    ~server() {
        if (st_->stopping)
            return;
        st_->stopping = true;
        boost::system::error_code ignored;
        st_->acceptor.close(ignored);
        detail::force_close(*st_);
        st_->watch.release_if_idle();
    }

    /// Serves `handler` for requests with `method` whose path matches `pattern` (route.hpp says
    /// how, and what a handler reads and answers), with the server's limits and those of
    /// `options`. Call before start(). Throws std::invalid_argument for an invalid pattern, one
    /// registered twice for `method`, one that could take the health endpoint's path or the
    /// participants' (base_path and below), or a body_limit over options().body_limit;
    /// std::logic_error after start().
    void route(verb method, std::string_view pattern, route_handler handler,
               route_options options = {}) {
        if (started_)
            throw std::logic_error("dtx::http::server: routes are added before start()");
        st_->handler.add_route(method, pattern, std::move(handler), std::move(options));
    }

    /// Binds options().address and options().port, listens, and starts accepting. Throws
    /// boost::system::system_error if the address cannot be bound, std::invalid_argument if
    /// body_budget is under body_limit. Call once. Limits left to the server (max_connections,
    /// max_connections_per_client) are set now, from the process's descriptor limit.
    void start() {
        started_ = true;
        server_options& o = st_->opts;
        if (o.body_budget < o.body_limit)
            throw std::invalid_argument("dtx::http::server: body_budget is under body_limit");
        if (o.max_connections == 0)
            o.max_connections = detail::default_max_connections(detail::descriptor_limit());
        if (o.max_connections_per_client == 0)
            o.max_connections_per_client = std::max<std::size_t>(1, o.max_connections / 2);
        const detail::tcp::endpoint ep{asio::ip::make_address(st_->opts.address), st_->opts.port};
        auto& acceptor = st_->acceptor;
        acceptor.open(ep.protocol());
        acceptor.set_option(detail::tcp::acceptor::reuse_address(true));
        acceptor.bind(ep);
        acceptor.listen(asio::socket_base::max_listen_connections);
        port_ = acceptor.local_endpoint().port();
        asio::co_spawn(st_->executor, detail::accept_loop(st_), asio::detached);
    }

    /// The port the server listens on (the chosen one if options().port was 0); 0 before start().
    std::uint16_t port() const noexcept { return port_; }

    /// Connections being served now (refused ones not counted).
    std::size_t connections() const noexcept { return st_->served; }

    const server_options& options() const noexcept { return st_->opts; }

    /// Stops the server: closes the listening socket (new connections are refused) and idle
    /// kept-alive connections (over TLS, after a close_notify), lets the requests in flight
    /// finish within `grace` (their answers say Connection: close), then cancels the handlers
    /// still running and closes everything. Completes when every connection and every handler has
    /// ended (also one whose connection answered without it at handler_timeout): a handler that
    /// ignores cancellation delays it until it returns. A stop is not cancelled by its
    /// caller's cancellation. Calling it again, during or after a stop, waits for that stop.
    asio::awaitable<void> async_stop(std::chrono::milliseconds grace) {
        const std::shared_ptr<detail::server_state> st = st_;
        co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
        if (st->stopping) { // another call stops the server: wait for it
            while (!st->stop_done)
                co_await st->stopped.async_wait(asio::as_tuple(asio::use_awaitable));
            co_return;
        }
        st->stopping = true;
        boost::system::error_code ignored;
        st->acceptor.close(ignored);
        for (const auto& c : st->connections) {
            if (!c->idle)
                continue;
            if (c->tls)
                c->io.emit(asio::cancellation_type::terminal); // its coroutine says close_notify
            else
                c->socket.close(ignored);
        }
        if (!st->connections.empty() || !st->handlers.empty()) {
            st->drained.expires_after(grace);
            co_await st->drained.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        if (!st->connections.empty() || !st->handlers.empty())
            detail::force_close(*st);
        while (!st->connections.empty() || !st->handlers.empty()) {
            st->drained.expires_at(std::chrono::steady_clock::time_point::max());
            co_await st->drained.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        st->watch.release_if_idle();
        st->stop_done = true;
        st->stopped.cancel();
    }

    /// async_stop(options().shutdown_grace).
    asio::awaitable<void> async_stop() { return async_stop(st_->opts.shutdown_grace); }

private:
    std::shared_ptr<detail::server_state> st_;
    std::uint16_t port_ = 0;
    bool started_ = false;
};

} // namespace http
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
