#ifndef DTX_HTTP_DETAIL_CONNECTION_ADMISSION_HPP
#define DTX_HTTP_DETAIL_CONNECTION_ADMISSION_HPP

// Which new connection the participant server serves when it is full: a client over its share
// (max_connections_per_client), or any client when max_connections are served, takes the place of
// the connection that has waited longest for its next request; only when none waits is it
// refused. So idle keep-alive connections cannot starve new clients, and one client cannot take
// the whole server.

#include <dtx/http/detail/server_state.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/ip/address.hpp>

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// The connection that has waited longest for its next request (from `peer` only, if given),
/// or null if none waits.
inline server_connection* oldest_idle(const server_state& st, const asio::ip::address* peer) {
    server_connection* oldest = nullptr;
    for (const auto& c : st.connections)
        if (c->between_requests && !c->evicted && (!peer || c->peer == *peer) &&
            (!oldest || c->idle_since < oldest->idle_since))
            oldest = c.get();
    return oldest;
}

/// Closes the idle connection `c` so that a new client can be served in its place.
inline void evict(server_state& st, server_connection& c) {
    c.evicted = true;
    stop_counting(st, c);
    if (c.tls) {
        c.io.emit(asio::cancellation_type::terminal); // its coroutine says close_notify
    } else {
        boost::system::error_code ignored;
        c.socket.close(ignored); // its descriptor is free at once
    }
}

/// Why a new connection from `peer` cannot be served, after closing an idle connection to make
/// room if one must and can be closed.
inline refusal admission(server_state& st, const asio::ip::address& peer) {
    const auto from_peer = st.served_per_client.find(peer);
    const bool client_full = from_peer != st.served_per_client.end() &&
                             from_peer->second >= st.opts.max_connections_per_client;
    const bool full = st.served >= st.opts.max_connections;
    if (!client_full && !full)
        return refusal::none;
    server_connection* idle = oldest_idle(st, client_full ? &peer : nullptr);
    if (!idle)
        return full && !oldest_idle(st, nullptr) ? refusal::full : refusal::client_full;
    evict(st, *idle); // the client's own if it holds its share, else anyone's
    return refusal::none;
}

} // namespace http::detail
DTX_NAMESPACE_END

#endif
