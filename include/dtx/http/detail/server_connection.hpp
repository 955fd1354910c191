#ifndef DTX_HTTP_DETAIL_SERVER_CONNECTION_HPP
#define DTX_HTTP_DETAIL_SERVER_CONNECTION_HPP

// The participant server's coroutines: the accept loop, one coroutine per connection, and the
// refusal of connections over the limit.
//
// The request loop is a template on its stream: here it runs on the TCP socket itself; tls.hpp
// instantiates it for an ssl::stream over that socket, after a handshake, so that a plain server
// neither includes OpenSSL nor goes through another layer.
//
// Every phase of a connection (waiting for a request, reading it, the participant's handler,
// writing the answer, the final drain) is timed by one deadline_watch entry that the server's
// single timer serves. Socket operations are bound to the connection's `io` signal, so that a
// timeout cancels them without touching the coroutine's own cancellation state; the handler phase
// uses the coroutine's `signal`, which cancels whatever the participant awaits. A forced stop
// emits both and closes the socket.
//
// Not thread-safe: everything runs on the server's executor (one thread, or a strand).

#include <dtx/detail/deadline_watch.hpp>
#include <dtx/http/detail/request_handler.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <array>
#include <chrono>
#include <list>
#include <memory>
#include <optional>
#include <string_view>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http::detail {

using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using request_parser = beast::http::request_parser<beast::http::string_body>;

/// Longest time a closing connection reads what its client still sends, so that the client
/// reads the answer before the close (closing with unread input would reset the connection).
inline constexpr std::chrono::milliseconds linger_limit = std::chrono::seconds{2};

struct server_connection {
    explicit server_connection(tcp::socket s)
        : socket(std::move(s)) {}

    tcp::socket socket;
    asio::cancellation_signal signal; // the coroutine's cancellation slot: cancels the handler
    asio::cancellation_signal io;     // bound to each socket operation
    dtx::detail::watch_entry deadline;
    std::list<std::shared_ptr<server_connection>>::iterator pos;
    bool idle = false;    // waiting for the next request on a kept-alive connection, or a handshake
    bool refused = false; // over the connection limit: answered 503 and closed
    bool tls = false;     // a stop ends an idle TLS connection through its coroutine (close_notify)
};

struct server_state {
    server_state(asio::any_io_executor ex, const participant_registry& participants,
                 server_options o)
        : executor(ex)
        , opts(std::move(o))
        , handler(participants, opts)
        , acceptor(ex)
        , watch(ex)
        , drained(ex)
        , stopped(ex, steady::time_point::max()) {}

    asio::any_io_executor executor;
    server_options opts;
    request_handler handler;
    tcp::acceptor acceptor;
    dtx::detail::deadline_watch watch;
    std::list<std::shared_ptr<server_connection>> connections; // served and refused
    std::size_t served = 0;
    std::size_t refusing = 0;
    bool stopping = false;
    bool stop_done = false;
    asio::steady_timer drained; // a stop waits on it; the last connection to end cancels it
    asio::steady_timer stopped; // later calls of async_stop wait on it; the first cancels it
};

/// Times the next phase of `c`: past `limit`, `sig` is emitted.
inline void watch_phase(server_state& st, server_connection& c, std::chrono::nanoseconds limit,
                        asio::cancellation_signal& sig) {
    st.watch.remove(c.deadline);
    st.watch.add(c.deadline, steady::now() + limit, sig);
}

/// Ends the timed phase of `c`: true if its deadline passed.
inline bool phase_expired(server_state& st, server_connection& c) {
    st.watch.remove(c.deadline);
    return c.deadline.expired();
}

/// The completion token of a socket operation of `c`: error codes as values, cancelled by `io`.
inline auto io_token(server_connection& c) {
    return asio::bind_cancellation_slot(c.io.slot(), asio::as_tuple(asio::use_awaitable));
}

/// Unlinks a connection when its coroutine ends, however it ends.
class connection_end {
public:
    connection_end(server_state& st, server_connection& c)
        : st_(st)
        , c_(c) {}
    connection_end(const connection_end&) = delete;
    connection_end& operator=(const connection_end&) = delete;
    ~connection_end() {
        st_.watch.remove(c_.deadline);
        boost::system::error_code ignored;
        c_.socket.close(ignored);
        --(c_.refused ? st_.refusing : st_.served);
        st_.connections.erase(c_.pos); // may destroy c_
        if (st_.stopping && st_.connections.empty()) {
            st_.drained.cancel();
            st_.watch.release_if_idle();
        }
    }

private:
    server_state& st_;
    server_connection& c_;
};

inline void log_request(const server_state& st, const beast::http::request_header<>* head,
                        const request_notes& notes, unsigned status, steady::time_point started) {
    if (!st.opts.on_request)
        return;
    log_record r;
    std::string path, traceparent; // what the request sent, made fit for a log if it is not
    if (head) {
        r.method = head->method_string();
        r.path = dtx::detail::loggable_text(split_target(head->target()).first, path);
        r.traceparent = dtx::detail::loggable_text((*head)["traceparent"], traceparent);
    }
    r.participant = notes.participant;
    if (notes.query) {
        r.gid = notes.query->gid;
        r.branch_id = notes.query->branch_id;
        r.op = notes.query->op;
    }
    r.status = status;
    r.error = notes.error;
    r.exception = notes.exception;
    r.duration = steady::now() - started;
    try {
        st.opts.on_request(r);
    } catch (...) {
        // A log hook that throws must not take the connection down.
    }
}

inline bool expects_continue(const beast::http::request_header<>& head) {
    const std::string_view expect = head[beast::http::field::expect];
    return beast::iequals(expect, "100-continue");
}

/// Reads one request into `parser` within the phase's deadline; a timeout is
/// asio::error::timed_out.
template <class Stream>
asio::awaitable<boost::system::error_code> read_request(server_state& st, server_connection& c,
                                                        Stream& stream, beast::flat_buffer& buffer,
                                                        request_parser& parser) {
    auto [ec, n] = co_await beast::http::async_read_header(stream, buffer, parser, io_token(c));
    if (!ec && !parser.is_done()) {
        if (expects_continue(parser.get())) {
            // Clients that ask wait for this before they send the body.
            beast::http::response<beast::http::empty_body> go_on{beast::http::status::continue_,
                                                                 11};
            auto [wec, wn] = co_await beast::http::async_write(stream, go_on, io_token(c));
            ec = wec;
        }
        if (!ec)
            std::tie(ec, n) = co_await beast::http::async_read(stream, buffer, parser, io_token(c));
    }
    if (phase_expired(st, c) && ec)
        ec = asio::error::timed_out;
    co_return ec;
}

/// Writes `res` within the read timeout.
template <class Stream>
asio::awaitable<boost::system::error_code> write_answer(server_state& st, server_connection& c,
                                                        Stream& stream, beast_response& res) {
    watch_phase(st, c, st.opts.read_timeout, c.io);
    auto [ec, n] = co_await beast::http::async_write(stream, res, io_token(c));
    if (phase_expired(st, c) && ec)
        ec = asio::error::timed_out;
    co_return ec;
}

/// Closes `c` after its last answer: stops sending, then reads (and drops) what the client still
/// sends until it closes too, or for at most linger_limit.
inline asio::awaitable<void> linger_close(server_state& st, server_connection& c) {
    boost::system::error_code ignored;
    c.socket.shutdown(tcp::socket::shutdown_send, ignored);
    watch_phase(st, c, std::min<std::chrono::nanoseconds>(linger_limit, st.opts.read_timeout),
                c.io);
    std::array<char, 2048> sink;
    for (;;) {
        auto [ec, n] = co_await c.socket.async_read_some(asio::buffer(sink), io_token(c));
        if (ec)
            break;
    }
    st.watch.remove(c.deadline);
    c.socket.close(ignored);
}

/// Runs the participant's handler for `req`, within the handler timeout if there is one.
inline asio::awaitable<beast_response> answer(server_state& st, server_connection& c,
                                              const beast_request& req, request_notes& notes) {
    if (st.opts.handler_timeout)
        watch_phase(st, c, *st.opts.handler_timeout, c.signal);
    else
        st.watch.remove(c.deadline);
    beast_response res = co_await st.handler.handle(req, notes, st.stopping);
    if (phase_expired(st, c)) {
        co_await asio::this_coro::reset_cancellation_state(); // the timeout's: the connection goes
                                                              // on
        const problem late{503, "handler_timeout",
                           "the participant's handler did not finish within " +
                               std::to_string(st.opts.handler_timeout->count()) +
                               " ms; the result is unknown"};
        res = error_response(late, req.version(), notes);
    }
    co_return res;
}

/// How the request loop left a connection.
enum class loop_end {
    close,  // close it now: the client went away, or a read or write failed
    done,   // the last answer was sent, an idle connection timed out, or the server stops
    linger, // an error answer was sent: close it as linger_close does
};

/// Serves the requests of one connection on `stream`, one after another, until either side ends
/// it. The first request is due within the deadline the caller set.
template <class Stream>
asio::awaitable<loop_end> serve_requests(server_state& st, server_connection& c, Stream& stream) {
    const server_options& o = st.opts;
    beast::flat_buffer buffer;
    for (bool first = true;; first = false) {
        if (!first) {
            if (buffer.size() == 0) {
                watch_phase(st, c, o.idle_timeout, c.io);
                c.idle = true;
                // The first bytes of the next request go into the buffer: one read, as the
                // parser's.
                auto [ec, n] = co_await stream.async_read_some(buffer.prepare(4096), io_token(c));
                buffer.commit(n);
                c.idle = false;
                const bool expired = phase_expired(st, c);
                if (ec && ec != asio::error::operation_aborted)
                    co_return loop_end::close;
                if (ec || expired || st.stopping)
                    co_return loop_end::done; // a timeout, or a stop
            }
            watch_phase(st, c, o.read_timeout, c.io);
        }
        const steady::time_point started = steady::now();
        request_parser parser;
        parser.header_limit(o.header_limit);
        parser.body_limit(o.body_limit);
        const boost::system::error_code ec = co_await read_request(st, c, stream, buffer, parser);
        request_notes notes;
        if (ec) {
            const std::optional<problem> p =
                ec == asio::error::timed_out ? timeout_problem(o) : read_problem(ec, o);
            const beast::http::request_header<>* head =
                parser.is_header_done() ? &parser.get() : nullptr;
            if (!p) {
                if (parser.got_some())
                    log_request(st, head, notes, 0, started); // gone mid-request
                co_return loop_end::close;
            }
            beast_response res = error_response(*p, head ? head->version() : 11, notes);
            res.keep_alive(false);
            const boost::system::error_code wec = co_await write_answer(st, c, stream, res);
            log_request(st, head, notes, wec ? 0 : p->status, started);
            const loop_end how = wec ? loop_end::close : loop_end::linger;
            co_return how;
        }
        const beast_request req = parser.release();
        beast_response res = co_await answer(st, c, req, notes);
        const bool keep = req.keep_alive() && !st.stopping;
        res.keep_alive(keep);
        const boost::system::error_code wec = co_await write_answer(st, c, stream, res);
        log_request(st, &req, notes, wec ? 0 : res.result_int(), started);
        if (wec)
            co_return loop_end::close;
        if (!keep)
            co_return loop_end::done;
    }
}

/// Serves a plain HTTP connection.
inline asio::awaitable<void> serve(std::shared_ptr<server_state> st,
                                   std::shared_ptr<server_connection> c) {
    const connection_end end(*st, *c);
    watch_phase(*st, *c, st->opts.read_timeout, c->io); // the first request is due from the accept
    const loop_end how = co_await serve_requests(*st, *c, c->socket);
    if (how == loop_end::linger)
        co_await linger_close(*st, *c);
}

/// Answers a connection over the limit with 503 on `stream`: true if the answer was sent.
template <class Stream>
asio::awaitable<bool> answer_overloaded(server_state& st, server_connection& c, Stream& stream) {
    const steady::time_point started = steady::now();
    request_notes notes;
    const problem full{503, "overloaded",
                       "the server is serving its maximum number of connections; try again later"};
    beast_response res = error_response(full, 11, notes);
    res.keep_alive(false);
    const boost::system::error_code ec = co_await write_answer(st, c, stream, res);
    log_request(st, nullptr, notes, ec ? 0 : 503, started);
    co_return !ec;
}

/// Answers a plain connection over the limit with 503 and closes it.
inline asio::awaitable<void> refuse(std::shared_ptr<server_state> st,
                                    std::shared_ptr<server_connection> c) {
    const connection_end end(*st, *c);
    const bool sent = co_await answer_overloaded(*st, *c, c->socket);
    if (sent)
        co_await linger_close(*st, *c);
}

inline void spawn_connection(const std::shared_ptr<server_state>& st, tcp::socket socket) {
    const bool over = st->served >= st->opts.max_connections;
    if (over && st->refusing >= st->opts.max_connections)
        return; // not even a 503 for this one
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto c = std::make_shared<server_connection>(std::move(socket));
    c->refused = over;
    c->tls = st->opts.tls != nullptr;
    ++(over ? st->refusing : st->served);
    st->connections.push_front(c);
    c->pos = st->connections.begin();
    auto keep = [c](std::exception_ptr) {}; // the signals live until the coroutine has completed
    auto token = asio::bind_cancellation_slot(c->signal.slot(), std::move(keep));
    if (c->tls)
        asio::co_spawn(st->executor,
                       over ? st->opts.tls->refuse(st, c) : st->opts.tls->serve(st, c),
                       std::move(token));
    else if (over)
        asio::co_spawn(st->executor, refuse(st, c), std::move(token));
    else
        asio::co_spawn(st->executor, serve(st, c), std::move(token));
}

inline asio::awaitable<void> accept_loop(std::shared_ptr<server_state> st) {
    for (;;) {
        auto [ec, socket] = co_await st->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
        if (st->stopping)
            co_return;
        if (ec) {
            // Out of descriptors or memory, or a connection reset before it was accepted: wait a
            // little rather than spin, then go on.
            asio::steady_timer pause(st->executor, std::chrono::milliseconds(20));
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
            if (st->stopping)
                co_return;
            continue;
        }
        spawn_connection(st, std::move(socket));
    }
}

/// Ends every connection at once: cancels what it awaits and closes its socket.
inline void force_close(server_state& st) {
    std::vector<std::shared_ptr<server_connection>> all(st.connections.begin(),
                                                        st.connections.end());
    boost::system::error_code ignored;
    for (auto& c : all) {
        c->signal.emit(asio::cancellation_type::terminal);
        c->io.emit(asio::cancellation_type::terminal);
        c->socket.close(ignored);
    }
}

} // namespace http::detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
