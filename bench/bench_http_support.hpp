// What the HTTP benchmarks share: the baseline, a bare Beast coroutine server that reads each
// request and writes a fixed 200 answer (HTTP/1.1 keep-alive and nothing more: no routing, no
// query or JSON parsing, no participant, no timeouts; optionally some fixed work before each
// answer), and the keep-alive client loop that
// measures a request rate against it or against a dtx::http::server.
//
// (g++ 12 miscompiles some temporaries inside co_await / co_return: everything awaited here is
// built in a statement of its own.)

#ifndef DTX_BENCH_HTTP_SUPPORT_HPP
#define DTX_BENCH_HTTP_SUPPORT_HPP

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// What the plain bare server does before it answers: nothing.
struct no_work {
    void operator()() const noexcept {}
};

/// The baseline server's connection: reads requests and answers each with a fixed success, after
/// `work()` has run (nothing for the plain server; the protocol floor of bench_e2e_http commits).
template <class Work>
asio::awaitable<void> bare_session(tcp::socket s, Work work) {
    beast::flat_buffer buffer;
    for (;;) {
        beast::http::request<beast::http::string_body> req;
        auto [ec, n] = co_await beast::http::async_read(s, buffer, req, use_tuple);
        if (ec)
            co_return;
        work();
        beast::http::response<beast::http::string_body> res{beast::http::status::ok, 11};
        res.set(beast::http::field::content_type, "application/json");
        res.body() = R"({"dtm_result":"SUCCESS"})";
        res.prepare_payload();
        auto [wec, wn] = co_await beast::http::async_write(s, res, use_tuple);
        if (wec)
            co_return;
    }
}

/// Accepts connections on `a` until it is closed, each served by bare_session with `work`.
template <class Work>
asio::awaitable<void> bare_accept(tcp::acceptor& a, Work work) {
    for (;;) {
        auto [ec, s] = co_await a.async_accept(use_tuple);
        if (ec)
            co_return;
        asio::co_spawn(a.get_executor(), bare_session(std::move(s), work), asio::detached);
    }
}

/// Accepts connections on `a` until it is closed, each served by the plain bare_session.
inline asio::awaitable<void> bare_accept(tcp::acceptor& a) {
    return bare_accept(a, no_work{});
}

/// What a keep-alive client run measured.
struct request_run {
    std::size_t requests = 0;
    double seconds = 0;
    std::vector<std::uint32_t> latency_ns; // of every request, sorted
};

/// The branch call every benchmark client sends: a try with a small JSON body.
inline beast::http::request<beast::http::string_body> branch_call_request() {
    beast::http::request<beast::http::string_body> req{
        beast::http::verb::post,
        "/dtx/stock?gid=01a1fcb3-7d5e-7c3a-9f1e-5a2b7d8c9e0f&trans_type=tcc&branch_id=01&op=try",
        11};
    req.set(beast::http::field::host, "127.0.0.1");
    req.set(beast::http::field::content_type, "application/json");
    req.body() = R"({"sku":"apple","qty":3})";
    req.prepare_payload();
    return req;
}

/// One client connection to 127.0.0.1:`port` sending `count` branch calls one after another,
/// recording each one's round trip in `latency_ns`. When an answer closes the connection (a
/// server's max_requests_per_connection), the next call opens a new one, as a client pool does.
inline asio::awaitable<void> keep_alive_client(std::uint16_t port, std::size_t count,
                                               std::vector<std::uint32_t>* latency_ns) {
    tcp::socket s(co_await asio::this_coro::executor);
    const tcp::endpoint to{asio::ip::make_address("127.0.0.1"), port};
    const auto req = branch_call_request();
    beast::flat_buffer buffer;
    for (std::size_t i = 0; i < count; ++i) {
        if (!s.is_open()) {
            co_await s.async_connect(to, asio::use_awaitable);
            s.set_option(tcp::no_delay(true));
        }
        const auto t0 = std::chrono::steady_clock::now();
        co_await beast::http::async_write(s, req, asio::use_awaitable);
        beast::http::response<beast::http::string_body> res;
        co_await beast::http::async_read(s, buffer, res, asio::use_awaitable);
        if (res.result_int() != 200)
            throw std::runtime_error("answer " + std::to_string(res.result_int()));
        if (!res.keep_alive()) {
            s.close();
            buffer.clear();
        }
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        latency_ns->push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX)));
    }
}

/// `total` requests over `connections` kept-alive connections (connection i to
/// `ports[i % ports.size()]`), each connection one request at a time, all on one new io_context
/// run by the calling thread. Throws if a request did not get a 200.
inline request_run measure_requests(const std::vector<std::uint16_t>& ports,
                                    std::size_t connections, std::size_t total) {
    asio::io_context ioc(1);
    const std::size_t each = total / connections;
    std::vector<std::vector<std::uint32_t>> lat(connections);
    for (std::size_t i = 0; i < connections; ++i) {
        lat[i].reserve(each);
        asio::co_spawn(ioc, keep_alive_client(ports[i % ports.size()], each, &lat[i]),
                       [](std::exception_ptr e) {
                           if (e)
                               std::rethrow_exception(e);
                       });
    }
    const auto t0 = std::chrono::steady_clock::now();
    ioc.run();
    const auto t1 = std::chrono::steady_clock::now();
    request_run r;
    for (auto& l : lat)
        r.latency_ns.insert(r.latency_ns.end(), l.begin(), l.end());
    r.requests = r.latency_ns.size();
    if (r.requests != each * connections)
        throw std::runtime_error("requests lost");
    r.seconds = std::chrono::duration<double>(t1 - t0).count();
    std::sort(r.latency_ns.begin(), r.latency_ns.end());
    return r;
}

} // namespace bench::http

#endif
