#ifndef DTX_HTTP_DETAIL_SERVER_STATE_HPP
#define DTX_HTTP_DETAIL_SERVER_STATE_HPP

// What the server knows about itself and each of its connections: the connections
// served and refused (in all and per client address), the handlers running, the bytes of bodies
// held, the deadlines of every phase. The coroutines that use it are in server_connection.hpp.
//
// Not thread-safe: everything runs on the server's executor (one thread, or a strand).

#include <dtx/detail/deadline_watch.hpp>
#include <dtx/http/detail/descriptor_reserve.hpp>
#include <dtx/http/detail/request_handler.hpp>
#include <dtx/http/server_options.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/version.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/parser.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>

DTX_NAMESPACE_BEGIN
namespace http::detail {

using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using request_parser = beast::http::request_parser<beast::http::string_body>;
/// Why a connection is answered 503 at once instead of being served.
enum class refusal {
    none,
    full,              // max_connections are served and none of them is idle
    client_full,       // its address holds max_connections_per_client, none of them idle
    out_of_descriptors // the process has no descriptor for it: accepted with the one in reserve
};

struct server_connection {
    server_connection(tcp::socket s, asio::ip::address from)
        : socket(std::move(s))
        , peer(std::move(from)) {}

    tcp::socket socket;
    asio::ip::address peer;
    asio::cancellation_signal signal; // the coroutine's cancellation slot: cancels the handler
    asio::cancellation_signal io;     // bound to each socket operation
    dtx::detail::watch_entry deadline;
    std::list<std::shared_ptr<server_connection>>::iterator pos;
    steady::time_point accepted = steady::now();
    steady::time_point idle_since{}; // while waiting for the next request
    bool idle = false; // waiting for the next request on a kept-alive connection, or a handshake
    bool between_requests = false;   // idle after an answer: may be closed to admit a new client
    bool evicted = false;            // closed to admit a new client; no longer counted as served
    refusal refused = refusal::none; // answered 503 and closed
    bool tls = false; // a stop ends an idle TLS connection through its coroutine (close_notify)
};

/// A handler (a participant's or a route's) answering one request, in a coroutine of its own, so
/// that its connection can answer at the handler timeout even if the handler ignores cancellation.
struct handler_run {
    handler_run(const asio::any_io_executor& ex, std::shared_ptr<const beast_request> r,
                asio::ip::address from)
        : req(std::move(r))
        , peer(std::move(from))
        , finished(ex, steady::time_point::max()) {}

    std::shared_ptr<const beast_request> req;
    asio::ip::address peer;
    request_notes notes;
    std::optional<beast_response> res;
    asio::cancellation_signal cancel;
    asio::steady_timer finished; // cancelled when the handler has returned
    bool done = false;
    std::list<std::shared_ptr<handler_run>>::iterator pos; // in server_state::handlers
};

struct server_state : std::enable_shared_from_this<server_state> {
    /// `participants`: null for a server of application routes only.
    server_state(asio::any_io_executor ex, const participant_registry* participants,
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
    std::list<std::shared_ptr<handler_run>> handlers;          // running, answered or not
    std::size_t served = 0;
    std::size_t refusing = 0;
    std::map<asio::ip::address, std::size_t> served_per_client;
    std::uint64_t body_bytes = 0; // reserved by the requests being read or answered
    descriptor_reserve reserve;
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

/// Counts `c` out of the served connections (when it ends, or is closed to make room).
inline void stop_counting(server_state& st, server_connection& c) {
    --st.served;
    const auto it = st.served_per_client.find(c.peer);
    if (it != st.served_per_client.end() && --it->second == 0)
        st.served_per_client.erase(it);
}

/// A request's share of server_options::body_budget, the bytes of bodies all connections may
/// hold at once: taken before the body is read, given back with the request.
class body_reservation {
public:
    explicit body_reservation(server_state& st)
        : st_(st) {}
    body_reservation(const body_reservation&) = delete;
    body_reservation& operator=(const body_reservation&) = delete;
    ~body_reservation() { st_.body_bytes -= bytes_; }

    /// Takes `n` more bytes: false if the budget has not that many left.
    bool take(std::uint64_t n) {
        if (n > st_.opts.body_budget - st_.body_bytes)
            return false;
        st_.body_bytes += n;
        bytes_ += n;
        return true;
    }

private:
    server_state& st_;
    std::uint64_t bytes_ = 0;
};

} // namespace http::detail
DTX_NAMESPACE_END

#endif
