// libFuzzer target: arbitrary bytes as one HTTP request, through what the server does with a
// request: Beast's parser with the server's limits, then the request handler and a participant or
// an application route. Every answer must have a status the protocol knows, a JSON body in valid
// UTF-8, and no FAILURE or ONGOING in a body that is not that outcome (a coordinator would read it
// as one); every path parameter and query value a route reads must be valid UTF-8.
//
//   scripts/fuzz.sh [seconds]     builds with clang (-fsanitize=fuzzer,address,undefined), runs

#include <dtx/http/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http/parser.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string_view>

namespace {

namespace beast = boost::beast;
namespace http = dtx::http;
using dtx::asio::awaitable;

/// Answers as the payload says: {"answer": "failure" | "pending" | "throw", "message": "..."}.
awaitable<dtx::outcome> answer_as_asked(const dtx::branch_request& r) {
    const nlohmann::json& p = r.payload;
    const auto said = p.is_object() ? p.find("answer") : p.end();
    if (said != p.end() && said->is_string()) {
        const std::string message = p.value("message", nlohmann::json("no")).dump();
        if (*said == "failure")
            co_return dtx::failure(message);
        if (*said == "pending")
            co_return dtx::pending(message);
        if (*said == "throw")
            throw std::runtime_error("FAILURE ONGOING " + message);
    }
    co_return dtx::success();
}

/// A route's handler: answers the sizes of what it reads, after checking that it is UTF-8.
awaitable<http::reply> read_route(const http::request& r) {
    std::size_t size = 0;
    for (const auto& [name, value] : r.params())
        size += value.size();
    if (const auto q = r.query("q"))
        size += q->size();
    for (const auto& [name, value] : r.params())
        if (!dtx::detail::valid_utf8(value))
            std::abort();
    if (r.method() == http::verb::post)
        size += r.json().size();
    co_return http::reply::json(201, {{"size", size}});
}

struct harness {
    harness() {
        opts.header_limit = 2048;
        opts.body_limit = 4096;
        participants.add_tcc("stock", {.on_try = answer_as_asked,
                                       .on_confirm = answer_as_asked,
                                       .on_cancel = answer_as_asked});
        participants.add_saga("pay ment",
                              {.on_action = answer_as_asked, .on_compensate = answer_as_asked});
        handler.add_route(http::verb::get, "/orders/{id}", read_route, {});
        handler.add_route(http::verb::post, "/orders/{id}/items/{item}", read_route, {});
        handler.add_route(http::verb::get, "/search", read_route, {});
    }

    /// The server's answer to `bytes` as one request; empty if it would answer nothing (the
    /// request is incomplete: the client went away).
    std::optional<http::detail::beast_response> respond(std::string_view bytes) {
        http::detail::request_parser parser;
        parser.header_limit(opts.header_limit);
        parser.body_limit(opts.body_limit);
        parser.eager(true);
        boost::system::error_code ec;
        dtx::asio::const_buffer in(bytes.data(), bytes.size());
        while (!parser.is_done()) {
            const std::size_t used = parser.put(in, ec);
            in += used;
            if (ec && ec != beast::http::error::need_more)
                break;
            ec = {};
            if (used == 0) { // the parser wants more than there is: the client went away
                parser.put_eof(ec);
                break;
            }
        }
        http::detail::request_notes notes;
        if (ec) {
            auto p = http::detail::read_problem(ec, opts);
            if (!p)
                return std::nullopt;
            return http::detail::problem_response(*p, 11, notes);
        }
        if (!parser.is_done())
            return std::nullopt;
        const http::detail::beast_request req = parser.release();
        std::optional<http::detail::beast_response> res;
        dtx::asio::co_spawn(ioc, handler.handle(req, notes, false),
                            [&](std::exception_ptr e, http::detail::beast_response r) {
                                if (e)
                                    std::rethrow_exception(e); // handle() must not throw
                                res = std::move(r);
                            });
        ioc.restart();
        ioc.run();
        return res;
    }

    dtx::asio::io_context ioc;
    dtx::participant_registry participants;
    http::server_options opts;
    http::detail::request_handler handler{participants, opts};
};

[[noreturn]] void fail(const char* what, const http::detail::beast_response& res) {
    std::fprintf(stderr, "%s: %u %s\n", what, res.result_int(), res.body().c_str());
    std::abort();
}

void check(const http::detail::beast_response& res) {
    const unsigned status = res.result_int();
    switch (status) {
    case 200:
    case 201:
    case 400:
    case 401:
    case 404:
    case 405:
    case 409:
    case 413:
    case 425:
    case 431:
    case 500:
    case 503:
        break;
    default:
        fail("unexpected status", res);
    }
    const auto body = nlohmann::json::parse(res.body(), nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !dtx::detail::valid_utf8(res.body()))
        fail("body is not a JSON object in UTF-8", res);
    if (status != 409 && res.body().find("FAILURE") != std::string::npos)
        fail("FAILURE outside a 409", res);
    if (status != 425 && res.body().find("ONGOING") != std::string::npos)
        fail("ONGOING outside a 425", res);
    const std::optional<dtx::outcome> read = http::outcome_of(status, res.body());
    const bool consistent = status == 200   ? read && read->is_success()
                            : status == 409 ? read && read->is_failure()
                            : status == 425 ? read && read->is_pending()
                                            : !read;
    if (!consistent)
        fail("the answer does not read as its outcome", res);
    if (res[beast::http::field::content_length] != std::to_string(res.body().size()))
        fail("content-length", res);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static harness h;
    const auto res = h.respond({reinterpret_cast<const char*>(data), size});
    if (res)
        check(*res);
    return 0;
}
