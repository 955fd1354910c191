#ifndef DTX_TESTS_SUPPORT_FAULT_PROXY_HPP
#define DTX_TESTS_SUPPORT_FAULT_PROXY_HPP

// A fault-injecting HTTP/1.1 proxy for tests. It listens on loopback, forwards each request to one
// upstream server (a participant) and, on a seeded random schedule, misbehaves as a network and a
// crashing peer do:
//
//   delay_request    holds the request a little before forwarding it (a slow network)
//   delay_response   holds the answer a little before sending it back
//   drop_request     closes the client's connection without forwarding: the request is lost
//   drop_response    forwards, lets the server execute, then closes the client's connection
//                    instead of answering: the answer is lost, the caller retries (a duplicate)
//   duplicate        sends the request to the server twice (the copy on a connection of its own)
//   reorder          closes the client's connection at once and forwards the request only later,
//                    on a connection of its own, after the caller has given up on it and moved on
//                    (a try that arrives after its cancel)
//
// At most one fault strikes a request. Faults are drawn, in the order the requests arrive, from
// one generator seeded with the proxy's seed: a seed gives the same schedule of faults again (the
// timing of the processes around the proxy is not reproducible). If the server cannot be reached
// or breaks the connection, the client gets 502 (an unknown result for a coordinator).
//
//   asio::io_context ioc;
//   dtx::test::fault_proxy proxy(ioc.get_executor(), participant_port, seed);
//   proxy.start();               // proxy.port(): where the coordinator sends its requests
//   std::thread t([&] { ioc.run(); });
//   ...
//   proxy.set_faults(false);     // let everything settle
//   while (proxy.in_flight()) ...
//   proxy.stop(); ioc.stop(); t.join();
//
// counters(), in_flight() and set_faults() may be used from any thread; the rest runs on the
// proxy's executor, which must not run handlers concurrently (one thread).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string_view>

namespace dtx::test {

namespace asio = boost::asio;

enum class proxy_fault : std::size_t {
    delay_request,
    delay_response,
    drop_request,
    drop_response,
    duplicate,
    reorder
};
inline constexpr std::size_t proxy_fault_count = 6;

inline const char* to_string(proxy_fault f) noexcept {
    switch (f) {
    case proxy_fault::delay_request:
        return "delayed requests";
    case proxy_fault::delay_response:
        return "delayed responses";
    case proxy_fault::drop_request:
        return "dropped requests";
    case proxy_fault::drop_response:
        return "dropped responses";
    case proxy_fault::duplicate:
        return "duplicated requests";
    case proxy_fault::reorder:
        return "reordered requests";
    }
    return "?";
}

/// How often each fault strikes (a chance per request; together at most 1) and how long the
/// delays are.
struct fault_schedule {
    double delay_request = 0.08;
    double delay_response = 0.08;
    double drop_request = 0.02;
    double drop_response = 0.03;
    double duplicate = 0.03;
    double reorder = 0.015;
    /// A delayed request or answer waits up to this long.
    std::chrono::milliseconds max_delay{30};
    /// A reordered request is forwarded after up to this long.
    std::chrono::milliseconds max_late{600};
    /// Longest wait for a connection to the server and for its answer; then the client gets 502.
    std::chrono::milliseconds upstream_timeout{5'000};
};

/// What the proxy has done so far.
struct fault_proxy_counters {
    std::atomic<std::uint64_t> requests{0};    ///< requests read from clients
    std::atomic<std::uint64_t> forwarded{0};   ///< requests sent to the server, copies included
    std::atomic<std::uint64_t> unreachable{0}; ///< answered 502: the server was down or broke off
    std::array<std::atomic<std::uint64_t>, proxy_fault_count> faults{};
    /// Reordered tries and actions the server refused (409) when they came: their cancel (or
    /// compensation) came first, or the business said no to the original too.
    std::atomic<std::uint64_t> late_refused{0};

    std::uint64_t count(proxy_fault f) const noexcept {
        return faults[static_cast<std::size_t>(f)];
    }
};

namespace detail {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using proxy_request = beast::http::request<beast::http::string_body>;
using proxy_response = beast::http::response<beast::http::string_body>;

struct proxy_state {
    proxy_state(asio::any_io_executor e, std::uint16_t upstream_port, std::uint64_t seed,
                fault_schedule s)
        : ex(std::move(e))
        , acceptor(ex)
        , upstream(asio::ip::make_address("127.0.0.1"), upstream_port)
        , rng(seed)
        , schedule(s) {}

    asio::any_io_executor ex;
    tcp::acceptor acceptor;
    tcp::endpoint upstream;
    std::mt19937_64 rng;
    fault_schedule schedule;
    fault_proxy_counters counters;
    std::atomic<bool> faults_on{true};
    std::atomic<std::size_t> in_flight{0};
    std::set<beast::tcp_stream*> clients; // open client connections, for stop()
    bool stopping = false;
};

/// Counts a request (or a copy of one) as in flight while it lives.
class in_flight_mark {
public:
    explicit in_flight_mark(proxy_state& st)
        : st_(st) {
        ++st_.in_flight;
    }
    ~in_flight_mark() { --st_.in_flight; }
    in_flight_mark(const in_flight_mark&) = delete;
    in_flight_mark& operator=(const in_flight_mark&) = delete;

private:
    proxy_state& st_;
};

/// Keeps a client connection in the proxy's list while it is open.
class client_mark {
public:
    client_mark(proxy_state& st, beast::tcp_stream& s)
        : st_(st)
        , s_(&s) {
        st_.clients.insert(s_);
    }
    ~client_mark() { st_.clients.erase(s_); }
    client_mark(const client_mark&) = delete;
    client_mark& operator=(const client_mark&) = delete;

private:
    proxy_state& st_;
    beast::tcp_stream* s_;
};

struct decision {
    std::optional<proxy_fault> fault;
    std::chrono::milliseconds delay{0};
};

/// The next request's fault. Both numbers are drawn whether faults are on or not, so that the
/// schedule of a seed does not depend on when they were switched.
inline decision draw(proxy_state& st) {
    std::uniform_real_distribution<double> uniform(0, 1);
    const double which = uniform(st.rng);
    const double how_long = uniform(st.rng);
    decision d;
    if (!st.faults_on)
        return d;
    const fault_schedule& s = st.schedule;
    const double chances[proxy_fault_count] = {s.delay_request, s.delay_response, s.drop_request,
                                               s.drop_response, s.duplicate,      s.reorder};
    double sum = 0;
    for (std::size_t i = 0; i < proxy_fault_count; ++i) {
        sum += chances[i];
        if (which < sum) {
            d.fault = static_cast<proxy_fault>(i);
            break;
        }
    }
    const auto longest = d.fault == proxy_fault::reorder ? s.max_late : s.max_delay;
    d.delay = std::chrono::milliseconds(
        1 + static_cast<long>(how_long * static_cast<double>(longest.count())));
    return d;
}

inline bool first_phase(const proxy_request& req) {
    const std::string_view target(req.target().data(), req.target().size());
    return target.find("op=try") != std::string_view::npos ||
           target.find("op=action") != std::string_view::npos;
}

inline proxy_response bad_gateway(unsigned version) {
    proxy_response res(beast::http::status::bad_gateway, version);
    res.set(beast::http::field::content_type, "application/json");
    res.body() = R"({"error":"bad_gateway","message":"the participant cannot be reached"})";
    res.keep_alive(false);
    res.prepare_payload();
    return res;
}

inline asio::awaitable<void> pause(std::shared_ptr<proxy_state> st, std::chrono::milliseconds d) {
    asio::steady_timer t(st->ex, d);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

/// A connection to the server, kept alive between the requests of one client connection.
struct upstream_connection {
    explicit upstream_connection(const asio::any_io_executor& ex)
        : stream(ex) {}
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
};

/// Sends `req` to the server over `up` (connecting first if it is null) and reads the answer;
/// empty if the server cannot be reached or gives no answer. A kept-alive connection that turns
/// out closed before anything came back is replaced once. `up` is reset after any error.
inline asio::awaitable<std::optional<proxy_response>>
exchange(std::shared_ptr<proxy_state> st, std::unique_ptr<upstream_connection>& up,
         const proxy_request& req) {
    std::optional<proxy_response> out;
    for (int attempt = 0; attempt < 2 && !out; ++attempt) {
        const bool pooled = up != nullptr;
        if (!up) {
            up = std::make_unique<upstream_connection>(st->ex);
            up->stream.expires_after(st->schedule.upstream_timeout);
            auto [connect_ec] = co_await up->stream.async_connect(
                st->upstream, asio::as_tuple(asio::use_awaitable));
            if (connect_ec) {
                up.reset();
                break;
            }
            boost::system::error_code ignored;
            up->stream.socket().set_option(tcp::no_delay(true), ignored);
        }
        ++st->counters.forwarded;
        up->stream.expires_after(st->schedule.upstream_timeout);
        beast::http::response_parser<beast::http::string_body> parser;
        auto [write_ec, written] =
            co_await beast::http::async_write(up->stream, req, asio::as_tuple(asio::use_awaitable));
        boost::system::error_code ec = write_ec;
        if (!ec) {
            auto [read_ec, read] = co_await beast::http::async_read(
                up->stream, up->buffer, parser, asio::as_tuple(asio::use_awaitable));
            ec = read_ec;
        }
        if (!ec) {
            up->stream.expires_never();
            out.emplace(parser.release());
            if (!out->keep_alive())
                up.reset();
            break;
        }
        const bool nothing_arrived = !parser.got_some() && up->buffer.size() == 0;
        up.reset();
        if (!pooled || !nothing_arrived)
            break;
    }
    co_return out;
}

/// Sends a copy of a request on a connection of its own, `after` from now.
inline asio::awaitable<void> send_copy(std::shared_ptr<proxy_state> st, proxy_request req,
                                       std::chrono::milliseconds after, bool late) {
    in_flight_mark mark(*st);
    co_await pause(st, after);
    std::unique_ptr<upstream_connection> up;
    const std::optional<proxy_response> answer = co_await exchange(st, up, req);
    if (late && answer && answer->result_int() == 409 && first_phase(req))
        ++st->counters.late_refused;
}

/// Serves one client connection: each request read is forwarded, with its fault.
inline asio::awaitable<void> serve(std::shared_ptr<proxy_state> st, tcp::socket socket) {
    beast::tcp_stream client(std::move(socket));
    client_mark listed(*st, client);
    beast::flat_buffer buffer;
    std::unique_ptr<upstream_connection> up;
    for (;;) {
        proxy_request req;
        auto [read_ec, read] = co_await beast::http::async_read(
            client, buffer, req, asio::as_tuple(asio::use_awaitable));
        if (read_ec || st->stopping)
            co_return;
        in_flight_mark mark(*st);
        ++st->counters.requests;
        const decision d = draw(*st);
        if (d.fault)
            ++st->counters.faults[static_cast<std::size_t>(*d.fault)];
        // Leaving the coroutine closes the client's connection.
        if (d.fault == proxy_fault::drop_request)
            co_return;
        if (d.fault == proxy_fault::reorder) {
            proxy_request copy = req;
            asio::co_spawn(st->ex, send_copy(st, std::move(copy), d.delay, true), asio::detached);
            co_return;
        }
        if (d.fault == proxy_fault::delay_request)
            co_await pause(st, d.delay);
        if (d.fault == proxy_fault::duplicate) {
            proxy_request copy = req;
            asio::co_spawn(st->ex,
                           send_copy(st, std::move(copy), std::chrono::milliseconds(0), false),
                           asio::detached);
        }
        std::optional<proxy_response> answer = co_await exchange(st, up, req);
        if (!answer) {
            ++st->counters.unreachable;
            answer.emplace(bad_gateway(req.version()));
        }
        if (d.fault == proxy_fault::drop_response)
            co_return;
        if (d.fault == proxy_fault::delay_response)
            co_await pause(st, d.delay);
        const bool keep_alive = answer->keep_alive() && req.keep_alive();
        answer->keep_alive(keep_alive);
        auto [write_ec, written] =
            co_await beast::http::async_write(client, *answer, asio::as_tuple(asio::use_awaitable));
        if (write_ec || !keep_alive)
            co_return;
    }
}

inline asio::awaitable<void> accept_loop(std::shared_ptr<proxy_state> st) {
    for (;;) {
        auto [ec, socket] = co_await st->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
        if (st->stopping)
            co_return;
        if (ec) {
            co_await pause(st, std::chrono::milliseconds(1)); // out of descriptors, say
            continue;
        }
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        asio::co_spawn(st->ex, serve(st, std::move(socket)), asio::detached);
    }
}

} // namespace detail

class fault_proxy {
public:
    /// A proxy in front of the server at 127.0.0.1:`upstream_port`, its faults drawn from `seed`.
    fault_proxy(asio::any_io_executor ex, std::uint16_t upstream_port, std::uint64_t seed,
                fault_schedule s)
        : st_(std::make_shared<detail::proxy_state>(std::move(ex), upstream_port, seed, s)) {}
    fault_proxy(asio::any_io_executor ex, std::uint16_t upstream_port, std::uint64_t seed)
        : fault_proxy(std::move(ex), upstream_port, seed, fault_schedule{}) {}

    fault_proxy(const fault_proxy&) = delete;
    fault_proxy& operator=(const fault_proxy&) = delete;

    /// Listens on 127.0.0.1 (a port of the system's choice) and starts accepting. Call once,
    /// before the executor runs or on it.
    void start() {
        const detail::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
        auto& a = st_->acceptor;
        a.open(ep.protocol());
        a.bind(ep);
        a.listen(asio::socket_base::max_listen_connections);
        port_ = a.local_endpoint().port();
        asio::co_spawn(st_->ex, detail::accept_loop(st_), asio::detached);
    }

    std::uint16_t port() const noexcept { return port_; }

    /// Switches the faults on or off (requests are forwarded as they come while off).
    void set_faults(bool on) noexcept { st_->faults_on = on; }

    /// Requests being forwarded now, and copies waiting to be sent or answered.
    std::size_t in_flight() const noexcept { return st_->in_flight; }

    const fault_proxy_counters& counters() const noexcept { return st_->counters; }

    /// Stops accepting and closes every client connection (on the proxy's executor). Copies of
    /// requests still waiting go out all the same; wait for in_flight() to reach 0 first.
    void stop() {
        asio::post(st_->ex, [st = st_] {
            st->stopping = true;
            boost::system::error_code ignored;
            st->acceptor.close(ignored);
            for (auto* c : st->clients)
                c->socket().close(ignored);
        });
    }

private:
    std::shared_ptr<detail::proxy_state> st_;
    std::uint16_t port_ = 0;
};

} // namespace dtx::test

#endif
