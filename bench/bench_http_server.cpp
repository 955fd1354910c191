// The HTTP participant server's cost: branch calls over kept-alive loopback connections to a
// dtx::http::server with a trivial participant, against the same-run baseline of a bare Beast
// coroutine server that reads each request and writes a fixed 200 answer (no routing, no query
// or JSON parsing, no participant). Server and clients run on one thread each.
//
//   bench_http_server [requests per run (default 200000)]
//
// One JSON line per concurrency: requests/s of both, and dtx's extra microseconds per request;
// and the same server without handler_timeout, for what the default timeout costs. The sides are
// measured in five alternating slices; the line gives their medians.
// Where OpenSSL is available (dtx::tls), the same again over HTTPS ("tls": true): a
// dtx::http::server with make_server_tls against the bare server behind an ssl::stream, clients
// keeping their TLS connections alive (one handshake per connection, TLS 1.3, P-256 certificate).
#include <dtx/http/server.hpp>

#include <boost/asio/io_context.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_http_support.hpp"

#ifdef DTX_BENCH_HAVE_TLS
#include <dtx/http/tls.hpp>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include "../tests/support/certificates.hpp"
#endif

namespace {

namespace asio = dtx::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

/// Seconds for `total` requests over `connections` connections to `port`.
double measure(std::uint16_t port, std::size_t connections, std::size_t total) {
    const std::vector<std::uint16_t> ports{port};
    return bench::http::measure_requests(ports, connections, total).seconds;
}

/// Seconds per request of each side, measured in `slices` alternating slices (baseline, dtx, dtx
/// without handler_timeout, again and again), so that a drift of the machine touches all three.
struct sides {
    std::vector<double> base, dtx, untimed;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

void print(bool tls, std::size_t connections, std::size_t total, const sides& s) {
    const double base = median(s.base), dtx = median(s.dtx), untimed = median(s.untimed);
    nlohmann::ordered_json line;
    line["bench"] = "http_server";
    line["tls"] = tls;
    line["connections"] = connections;
    line["requests"] = total;
    line["slices"] = s.base.size();
    line["dtx_req_per_s"] = std::lround(1 / dtx);
    line["baseline_req_per_s"] = std::lround(1 / base);
    line["ratio"] =
        std::round(base / dtx * 100) / 100; // dtx's rate as a fraction of the baseline's
    line["extra_us_per_request"] = std::round((dtx - base) * 1e7) / 10;
    // The default handler_timeout (30 s) arms a timer and runs the handler in a coroutine of its
    // own; the same server without it, for what that costs.
    line["no_handler_timeout_req_per_s"] = std::lround(1 / untimed);
    line["handler_timeout_us_per_request"] = std::round((dtx - untimed) * 1e7) / 10;
    std::cout << line.dump() << std::endl;
}

#ifdef DTX_BENCH_HAVE_TLS
namespace ssl = asio::ssl;
using tls_stream = ssl::stream<tcp::socket>;

/// The baseline over TLS: the handshake, then bare_session's loop on the TLS stream.
asio::awaitable<void> bare_tls_session(tcp::socket s, ssl::context& ctx) {
    tls_stream stream(std::move(s), ctx);
    auto [hec] = co_await stream.async_handshake(ssl::stream_base::server, bench::http::use_tuple);
    if (hec)
        co_return;
    beast::flat_buffer buffer;
    for (;;) {
        beast::http::request<beast::http::string_body> req;
        auto [ec, n] =
            co_await beast::http::async_read(stream, buffer, req, bench::http::use_tuple);
        if (ec)
            co_return;
        beast::http::response<beast::http::string_body> res{beast::http::status::ok, 11};
        res.set(beast::http::field::content_type, "application/json");
        res.body() = R"({"dtm_result":"SUCCESS"})";
        res.prepare_payload();
        auto [wec, wn] = co_await beast::http::async_write(stream, res, bench::http::use_tuple);
        if (wec)
            co_return;
    }
}

asio::awaitable<void> bare_tls_accept(tcp::acceptor& a, ssl::context& ctx) {
    for (;;) {
        auto [ec, s] = co_await a.async_accept(bench::http::use_tuple);
        if (ec)
            co_return;
        asio::co_spawn(a.get_executor(), bare_tls_session(std::move(s), ctx), asio::detached);
    }
}

/// One TLS client sending `count` branch calls one after another. When an answer closes the
/// connection (the server's max_requests_per_connection), it shakes hands anew, as a pool does.
asio::awaitable<void> tls_client(std::uint16_t port, std::size_t count, ssl::context& ctx,
                                 std::size_t* answered) {
    const tcp::endpoint to{asio::ip::make_address("127.0.0.1"), port};
    const auto req = bench::http::branch_call_request();
    std::optional<tls_stream> stream;
    beast::flat_buffer buffer;
    for (std::size_t i = 0; i < count; ++i) {
        if (!stream) {
            stream.emplace(co_await asio::this_coro::executor, ctx);
            co_await stream->next_layer().async_connect(to, asio::use_awaitable);
            stream->next_layer().set_option(tcp::no_delay(true));
            co_await stream->async_handshake(ssl::stream_base::client, asio::use_awaitable);
            buffer.clear();
        }
        co_await beast::http::async_write(*stream, req, asio::use_awaitable);
        beast::http::response<beast::http::string_body> res;
        co_await beast::http::async_read(*stream, buffer, res, asio::use_awaitable);
        if (res.result_int() != 200)
            throw std::runtime_error("answer " + std::to_string(res.result_int()));
        ++*answered;
        if (!res.keep_alive())
            stream.reset();
    }
}

/// Seconds for `total` requests over `connections` TLS connections to `port`.
double measure_tls(std::uint16_t port, std::size_t connections, std::size_t total,
                   ssl::context& ctx) {
    asio::io_context ioc(1);
    std::size_t answered = 0;
    for (std::size_t i = 0; i < connections; ++i)
        asio::co_spawn(ioc, tls_client(port, total / connections, ctx, &answered),
                       [](std::exception_ptr e) {
                           if (e)
                               std::rethrow_exception(e);
                       });
    const auto t0 = steady::now();
    ioc.run();
    const auto t1 = steady::now();
    if (answered != total / connections * connections)
        throw std::runtime_error("requests lost");
    return std::chrono::duration<double>(t1 - t0).count();
}
#endif

} // namespace

int main(int argc, char** argv) {
    // bench_http_server [--quick | --requests=N | N]: requests per measurement (default 200,000).
    std::size_t total = 200'000;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--quick") {
            total = 20'000;
        } else if (a.starts_with("--requests=") ||
                   (!a.empty() && a.find_first_not_of("0123456789") == a.npos)) {
            total = std::stoul(std::string(a.substr(a.starts_with("--") ? 11 : 0)));
        } else {
            std::fprintf(stderr, "usage: %s [--quick | --requests=N | N]\n", argv[0]);
            return 2;
        }
    }

    asio::io_context server_ioc;
    auto guard = asio::make_work_guard(server_ioc);
    dtx::participant_registry participants;
    std::size_t calls = 0;
    auto ok = [&calls](const dtx::branch_request&) -> asio::awaitable<dtx::outcome> {
        ++calls;
        co_return dtx::success();
    };
    participants.add_tcc("stock", {.on_try = ok, .on_confirm = ok, .on_cancel = ok});
    dtx::http::server server(server_ioc, participants);
    server.start();
    dtx::http::server untimed(server_ioc, participants, {.handler_timeout = std::nullopt});
    untimed.start();
    tcp::acceptor bare(server_ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(server_ioc, bench::http::bare_accept(bare), asio::detached);
#ifdef DTX_BENCH_HAVE_TLS
    const dtx::test::identity ca = dtx::test::make_identity("bench CA", nullptr, nullptr);
    const dtx::test::identity cert = dtx::test::make_identity("localhost", "IP:127.0.0.1", &ca);
    ssl::context server_tls(ssl::context::tls_server);
    server_tls.use_certificate_chain(asio::buffer(cert.cert_pem));
    server_tls.use_private_key(asio::buffer(cert.key_pem), ssl::context::pem);
    ssl::context client_tls(ssl::context::tls_client);
    client_tls.add_certificate_authority(asio::buffer(ca.cert_pem));
    client_tls.set_verify_mode(ssl::verify_peer);
    dtx::http::server tls_server(server_ioc, participants,
                                 {.tls = dtx::http::make_server_tls(server_tls)});
    tls_server.start();
    dtx::http::server untimed_tls(
        server_ioc, participants,
        {.handler_timeout = std::nullopt, .tls = dtx::http::make_server_tls(server_tls)});
    untimed_tls.start();
    tcp::acceptor bare_tls(server_ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(server_ioc, bare_tls_accept(bare_tls, server_tls), asio::detached);
#endif
    std::thread server_thread([&] { server_ioc.run(); });

    constexpr std::size_t slices = 5;
    for (std::size_t connections : {1, 16, 64}) {
        measure(server.port(), connections, total / 10); // warm up
        const std::size_t n = total / slices;
        sides s;
        for (std::size_t i = 0; i < slices; ++i) {
            s.base.push_back(measure(bare.local_endpoint().port(), connections, n) / n);
            s.dtx.push_back(measure(server.port(), connections, n) / n);
            s.untimed.push_back(measure(untimed.port(), connections, n) / n);
        }
        print(false, connections, total, s);
    }

#ifdef DTX_BENCH_HAVE_TLS
    for (std::size_t connections : {1, 16, 64}) {
        measure_tls(tls_server.port(), connections, total / 10, client_tls); // warm up
        const std::size_t n = total / slices;
        sides s;
        for (std::size_t i = 0; i < slices; ++i) {
            s.base.push_back(
                measure_tls(bare_tls.local_endpoint().port(), connections, n, client_tls) / n);
            s.dtx.push_back(measure_tls(tls_server.port(), connections, n, client_tls) / n);
            s.untimed.push_back(measure_tls(untimed_tls.port(), connections, n, client_tls) / n);
        }
        print(true, connections, total, s);
    }
#endif

    asio::post(server_ioc, [&] {
        bare.close();
        asio::co_spawn(server_ioc, server.async_stop(), asio::detached);
        asio::co_spawn(server_ioc, untimed.async_stop(), asio::detached);
#ifdef DTX_BENCH_HAVE_TLS
        bare_tls.close();
        asio::co_spawn(server_ioc, tls_server.async_stop(), asio::detached);
        asio::co_spawn(server_ioc, untimed_tls.async_stop(), asio::detached);
#endif
        guard.reset();
    });
    server_thread.join();
    if (calls == 0)
        throw std::runtime_error("the participant was never called");
}
