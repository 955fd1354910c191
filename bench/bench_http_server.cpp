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

#include <nlohmann/json.hpp>

#include <cmath>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_http_support.hpp"

namespace {

namespace asio = dtx::asio;
using tcp = asio::ip::tcp;

/// Seconds for `total` requests over `connections` connections to `port`.
double measure(std::uint16_t port, std::size_t connections, std::size_t total) {
    const std::vector<std::uint16_t> ports{port};
    return bench::http::measure_requests(ports, connections, total).seconds;
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
    asio::co_spawn(server_ioc, bench::http::bare_accept(bare), asio::detached);
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
