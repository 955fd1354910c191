#ifndef DTX_HTTP_DETAIL_SERVER_CONNECTION_HPP
#define DTX_HTTP_DETAIL_SERVER_CONNECTION_HPP

// The server's coroutines: the accept loop, one coroutine per connection, and the
// refusal of connections over the limit.
//
// The request loop is a template on its stream: here it runs on the TCP socket itself; tls.hpp
// instantiates it for an ssl::stream over that socket, after a handshake, so that a plain server
// neither includes OpenSSL nor goes through another layer.
//
// Every phase of a connection (waiting for a request, reading it, the participant's handler,
// writing the answer, the final drain) is timed by one deadline_watch entry that the server's
// single timer serves. Socket operations are bound to the connection's `io` signal, so that a
// timeout cancels them without touching the coroutine's own cancellation state. With a
// handler_timeout, the participant's handler runs in a coroutine of its own (handler_run), so that
// its connection can answer at the timeout even if the handler ignores its cancellation; without
// one, it runs in the connection's coroutine, whose `signal` cancels whatever it awaits. A forced
// stop emits every signal and closes the sockets.
//
// Not thread-safe: everything runs on the server's executor (one thread, or a strand).

#include <dtx/http/detail/connection_admission.hpp>
#include <dtx/http/detail/descriptor_reserve.hpp>
#include <dtx/http/detail/header_checks.hpp>
#include <dtx/http/detail/read_request.hpp>
#include <dtx/http/detail/request_handler.hpp>
#include <dtx/http/detail/server_state.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
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
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// Longest time a closing connection reads what its client still sends, so that the client
/// reads the answer before the close (closing with unread input would reset the connection).
inline constexpr std::chrono::milliseconds linger_limit = std::chrono::seconds{2};

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
        if (c_.refused != refusal::none)
            --st_.refusing;
        else if (!c_.evicted)
            stop_counting(st_, c_);
        st_.connections.erase(c_.pos); // may destroy c_
        if (st_.stopping && st_.connections.empty() && st_.handlers.empty()) {
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
    r.route = notes.route;
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

/// Longest wait for a handler to return once cancelled at its timeout, before its connection
/// answers without it (and closes, since the handler is still running).
inline constexpr std::chrono::milliseconds handler_cancel_grace = std::chrono::seconds{1};

inline asio::awaitable<void> run_handler(std::shared_ptr<server_state> st,
                                         std::shared_ptr<handler_run> run) {
    run->res = co_await st->handler.handle(*run->req, run->notes, st->stopping, run->peer);
    run->done = true;
    run->finished.cancel();
    st->handlers.erase(run->pos);
    if (st->stopping && st->connections.empty() && st->handlers.empty()) {
        st->drained.cancel();
        st->watch.release_if_idle();
    }
}

/// The answer to `req` and whether the connection may go on after it: the participant's
/// handler's, or 503 at the handler timeout. A handler that ignores the timeout's cancellation
/// is left to finish on its own, and its connection closes.
inline asio::awaitable<std::pair<beast_response, bool>>
answer(server_state& st, server_connection& c, const std::shared_ptr<const beast_request>& req,
       request_notes& notes) {
    if (!st.opts.handler_timeout) {
        st.watch.remove(c.deadline);
        co_return std::pair{co_await st.handler.handle(*req, notes, st.stopping, c.peer), true};
    }
    auto run = std::make_shared<handler_run>(st.executor, req, c.peer);
    st.handlers.push_front(run);
    run->pos = st.handlers.begin();
    asio::co_spawn(st.executor, run_handler(st.shared_from_this(), run),
                   asio::bind_cancellation_slot(run->cancel.slot(), [run](std::exception_ptr) {}));
    // co_spawn runs the handler at once up to its first wait: it may have finished already.
    watch_phase(st, c, *st.opts.handler_timeout, c.io);
    if (!run->done)
        co_await run->finished.async_wait(io_token(c));
    const bool expired = phase_expired(st, c);
    if (!run->done) { // the timeout, or a forced stop
        run->cancel.emit(asio::cancellation_type::terminal);
        watch_phase(st, c, std::min(handler_cancel_grace, *st.opts.handler_timeout), c.io);
        if (!run->done)
            co_await run->finished.async_wait(io_token(c));
        phase_expired(st, c);
    }
    notes = run->notes; // a copy: a handler still running may write to its own
    if (run->done && !expired)
        co_return std::pair{std::move(*run->res), true};
    const std::string within =
        " did not finish within " + std::to_string(st.opts.handler_timeout->count()) + " ms";
    const problem late{503, "handler_timeout",
                       notes.route.empty()
                           ? "the participant's handler" + within + "; the result is unknown"
                           : "the handler" + within};
    co_return std::pair{problem_response(late, req->version(), notes), run->done};
}

/// True if the connection may serve another request after its answer number `answered` + 1
/// (else that answer says Connection: close).
inline bool may_go_on(const server_state& st, const server_connection& c, std::size_t answered) {
    return !st.stopping && answered + 1 < st.opts.max_requests_per_connection &&
           steady::now() - c.accepted < st.opts.max_connection_lifetime;
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
    for (std::size_t answered = 0;; ++answered) {
        if (answered > 0) {
            if (buffer.size() == 0) {
                // Idle until the next request, but not past the connection's lifetime.
                const auto lifetime_left = c.accepted + o.max_connection_lifetime - steady::now();
                watch_phase(
                    st, c, std::min<std::chrono::nanoseconds>(o.idle_timeout, lifetime_left), c.io);
                c.idle = c.between_requests = true;
                c.idle_since = steady::now();
                // The first bytes of the next request go into the buffer: one read, as the
                // parser's.
                auto [ec, n] = co_await stream.async_read_some(buffer.prepare(4096), io_token(c));
                buffer.commit(n);
                c.idle = c.between_requests = false;
                const bool expired = phase_expired(st, c);
                if (c.evicted)
                    co_return loop_end::done; // closed to make room for a new client
                if (ec && ec != asio::error::operation_aborted)
                    co_return loop_end::close;
                if (ec || expired || st.stopping)
                    co_return loop_end::done; // a timeout, or a stop
            }
            watch_phase(st, c, o.read_timeout, c.io);
        }
        const steady::time_point started = steady::now();
        body_reservation body(st); // given back after the request and its answer
        request_parser parser;
        parser.header_limit(o.header_limit);
        parser.body_limit(o.body_limit);
        const auto [ec, refused, body_read, body_limit] =
            co_await read_request(st, c, stream, buffer, parser, body);
        request_notes notes;
        if (ec) {
            const std::optional<problem> p =
                ec == asio::error::timed_out ? timeout_problem(o) : read_problem(ec, o, body_limit);
            const beast::http::request_header<>* head =
                parser.is_header_done() ? &parser.get() : nullptr;
            if (!p) {
                if (parser.got_some())
                    log_request(st, head, notes, 0, started); // gone mid-request
                co_return loop_end::close;
            }
            beast_response res = problem_response(*p, head ? head->version() : 11, notes);
            res.keep_alive(false);
            const boost::system::error_code wec = co_await write_answer(st, c, stream, res);
            log_request(st, head, notes, wec ? 0 : p->status, started);
            const loop_end how = wec ? loop_end::close : loop_end::linger;
            co_return how;
        }
        if (refused) {
            const beast::http::request_header<>& head = parser.get();
            beast_response res = problem_response(*refused, head.version(), notes);
            if (refused->status == 401)
                res.set(beast::http::field::www_authenticate, "Bearer");
            // Only a request whose body was read leaves the connection where the next one starts.
            const bool keep = body_read && refused->status == 401 && parser.keep_alive() &&
                              may_go_on(st, c, answered);
            res.keep_alive(keep);
            const boost::system::error_code wec = co_await write_answer(st, c, stream, res);
            log_request(st, &head, notes, wec ? 0 : refused->status, started);
            if (wec)
                co_return loop_end::close;
            if (!keep)
                co_return loop_end::linger;
            continue;
        }
        const auto req = std::make_shared<const beast_request>(parser.release());
        auto [res, clean] = co_await answer(st, c, req, notes);
        const bool keep = clean && req->keep_alive() && may_go_on(st, c, answered);
        res.keep_alive(keep);
        const boost::system::error_code wec = co_await write_answer(st, c, stream, res);
        log_request(st, req.get(), notes, wec ? 0 : res.result_int(), started);
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
    const problem full =
        c.refused == refusal::client_full
            ? problem{503, "too_many_connections",
                      "this client holds as many connections as the server allows one client; "
                      "reuse them"}
        : c.refused == refusal::out_of_descriptors
            ? problem{503, "overloaded",
                      "the server has no file descriptor left for a connection; try again later"}
            : problem{503, "overloaded",
                      "the server is serving its maximum number of connections; try again later"};
    beast_response res = problem_response(full, 11, notes);
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

/// Serves a new connection, or answers it 503 (`refused`: why, if already known).
inline void spawn_connection(const std::shared_ptr<server_state>& st, tcp::socket socket,
                             refusal refused = refusal::none) {
    boost::system::error_code ec;
    const asio::ip::address peer = socket.remote_endpoint(ec).address();
    if (ec)
        return; // gone already
    if (refused == refusal::none)
        refused = admission(*st, peer);
    if (refused != refusal::none && st->refusing >= max_refusing(st->opts.max_connections))
        return; // not even a 503 for this one
    socket.set_option(tcp::no_delay(true), ec);
    auto c = std::make_shared<server_connection>(std::move(socket), peer);
    c->refused = refused;
    c->tls = st->opts.tls != nullptr;
    const bool over = refused != refusal::none;
    if (over) {
        ++st->refusing;
    } else {
        ++st->served;
        ++st->served_per_client[peer];
    }
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

/// True if `ec` says the process or the system has no descriptor left.
inline bool out_of_descriptors(const boost::system::error_code& ec) {
    return ec == asio::error::no_descriptors || ec == boost::system::errc::too_many_files_open ||
           ec == boost::system::errc::too_many_files_open_in_system;
}

/// Accepts the client waiting in the backlog with the descriptor held in reserve, to answer it
/// 503: a client is told the server is overloaded rather than left waiting. The reserve is taken
/// again by the accept loop once a descriptor is free.
inline void refuse_with_reserve(const std::shared_ptr<server_state>& st) {
    if (!st->reserve.held())
        return;
    st->reserve.release();
    boost::system::error_code ec;
    st->acceptor.non_blocking(true, ec); // if the client has gone since, do not wait for another
    tcp::socket socket(st->executor);
    st->acceptor.accept(socket, ec);
    if (!ec)
        spawn_connection(st, std::move(socket), refusal::out_of_descriptors);
}

inline asio::awaitable<void> accept_loop(std::shared_ptr<server_state> st) {
    for (;;) {
        st->reserve.take(); // if it was used, and a descriptor is free again
        auto [ec, socket] = co_await st->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
        if (st->stopping)
            co_return;
        if (ec) {
            if (out_of_descriptors(ec))
                refuse_with_reserve(st);
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
    const std::vector<std::shared_ptr<handler_run>> running(st.handlers.begin(), st.handlers.end());
    for (auto& run : running)
        run->cancel.emit(asio::cancellation_type::terminal);
}

} // namespace http::detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
