// The HTTP participant server's cost: branch calls over kept-alive loopback connections to a
// dtx::http::server with a trivial participant, against the same-run baseline of a bare Beast
// coroutine server that reads each request and writes a fixed 200 answer (no routing, no query
// or JSON parsing, no participant). Server and clients run on one thread each.
//
//   bench_http_server [requests per run (default 200000)]
//
// One JSON line per concurrency: requests/s of both, and dtx's extra microseconds per request.
#include <dtx/http/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

namespace asio = dtx::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// The baseline: HTTP/1.1 with keep-alive, nothing more.
asio::awaitable<void> bare_session(tcp::socket s) {
    beast::flat_buffer buffer;
    for (;;) {
        beast::http::request<beast::http::string_body> req;
        auto [ec, n] = co_await beast::http::async_read(s, buffer, req, use_tuple);
        if (ec) co_return;
        beast::http::response<beast::http::string_body> res{beast::http::status::ok, 11};
        res.set(beast::http::field::content_type, "application/json");
        res.body() = R"({"dtm_result":"SUCCESS"})";
        res.prepare_payload();
        auto [wec, wn] = co_await beast::http::async_write(s, res, use_tuple);
        if (wec) co_return;
    }
}

asio::awaitable<void> bare_accept(tcp::acceptor& a) {
    for (;;) {
        auto [ec, s] = co_await a.async_accept(use_tuple);
        if (ec) co_return;
        asio::co_spawn(a.get_executor(), bare_session(std::move(s)), asio::detached);
    }
}

/// One client connection sending `count` branch calls one after another.
asio::awaitable<void> client(std::uint16_t port, std::size_t count, std::size_t* answered) {
    tcp::socket s(co_await asio::this_coro::executor);
    const tcp::endpoint to{asio::ip::make_address("127.0.0.1"), port};
    co_await s.async_connect(to, asio::use_awaitable);
    s.set_option(tcp::no_delay(true));
    beast::http::request<beast::http::string_body> req{beast::http::verb::post,
                                                       "/dtx/stock?gid=01a1fcb3-7d5e-7c3a-9f1e-5a2b7d8c9e0f&"
                                                       "trans_type=tcc&branch_id=01&op=try",
                                                       11};
    req.set(beast::http::field::host, "127.0.0.1");
    req.set(beast::http::field::content_type, "application/json");
    req.body() = R"({"sku":"apple","qty":3})";
    req.prepare_payload();
    beast::flat_buffer buffer;
    for (std::size_t i = 0; i < count; ++i) {
        co_await beast::http::async_write(s, req, asio::use_awaitable);
        beast::http::response<beast::http::string_body> res;
        co_await beast::http::async_read(s, buffer, res, asio::use_awaitable);
        if (res.result_int() != 200) throw std::runtime_error("answer " + std::to_string(res.result_int()));
        ++*answered;
    }
}

/// Seconds for `total` requests over `connections` connections to `port`.
double measure(std::uint16_t port, std::size_t connections, std::size_t total) {
    asio::io_context ioc;
    std::size_t answered = 0;
    for (std::size_t i = 0; i < connections; ++i)
        asio::co_spawn(ioc, client(port, total / connections, &answered), [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });
    const auto t0 = steady::now();
    ioc.run();
    const auto t1 = steady::now();
    if (answered != total / connections * connections) throw std::runtime_error("requests lost");
    return std::chrono::duration<double>(t1 - t0).count();
}

} // namespace

int main(int argc, char** argv) {
    const std::size_t total = argc > 1 ? std::stoul(argv[1]) : 200'000;

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
    tcp::acceptor bare(server_ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(server_ioc, bare_accept(bare), asio::detached);
    std::thread server_thread([&] { server_ioc.run(); });

    for (std::size_t connections : {1, 16, 64}) {
        measure(server.port(), connections, total / 10); // warm up
        const double base = measure(bare.local_endpoint().port(), connections, total);
        const double dtx = measure(server.port(), connections, total);
        nlohmann::ordered_json line;
        line["bench"] = "http_server";
        line["connections"] = connections;
        line["requests"] = total;
        line["dtx_req_per_s"] = static_cast<long>(total / dtx);
        line["baseline_req_per_s"] = static_cast<long>(total / base);
        line["ratio"] = std::round(base / dtx * 100) / 100; // dtx's rate as a fraction of the baseline's
        line["extra_us_per_request"] = std::round((dtx - base) / static_cast<double>(total) * 1e7) / 10;
        std::cout << line.dump() << std::endl;
    }

    asio::post(server_ioc, [&] {
        bare.close();
        asio::co_spawn(server_ioc, server.async_stop(), asio::detached);
        guard.reset();
    });
    server_thread.join();
    if (calls == 0) throw std::runtime_error("the participant was never called");
}
