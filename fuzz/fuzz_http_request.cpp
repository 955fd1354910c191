// libFuzzer target: arbitrary bytes as one HTTP request, through what the server does with a
// request: Beast's parser with the server's limits, then the request handler and a participant, an
// application route, or a message consumer's route (<dtx/http/consumer.hpp>, POST /events, over
// an inbox in memory). Every answer must have a status the protocol knows, a JSON body in valid
// UTF-8, and no FAILURE or ONGOING in a body that is not that outcome (a coordinator would read it
// as one); every path parameter and query value a route reads must be valid UTF-8; a consumer
// processes only envelopes that keep to the limits, each once.
//
//   scripts/fuzz.sh [seconds]     builds with clang (-fsanitize=fuzzer,address,undefined), runs

#include <dtx/http/consumer.hpp>
#include <dtx/http/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
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

/// An inbox in memory: the handler runs once per message id, and answers as the payload says:
/// {"answer": "failure" | "pending"} (anything else: success).
struct memory_inbox {
    using handler = std::function<dtx::outcome(const dtx::envelope&)>;
    std::set<std::string> seen;

    awaitable<dtx::consume_result> consume(std::string consumer, dtx::envelope e, handler h) {
        if (consumer.empty() || !dtx::valid_gid(e.id) || e.attempt < 1)
            std::abort(); // the route passed on what it should have refused
        if (seen.size() > 10'000)
            seen.clear();
        if (seen.count(e.id))
            co_return dtx::consume_result{dtx::consume_status::duplicate, {}};
        const dtx::outcome o = h(e);
        if (o.is_success()) {
            seen.insert(e.id);
            co_return dtx::consume_result{dtx::consume_status::processed, {}};
        }
        co_return dtx::consume_result{o.is_failure() ? dtx::consume_status::rejected
                                                     : dtx::consume_status::retry,
                                      std::string(o.message())};
    }
};

dtx::outcome consume_as_asked(const dtx::envelope& e) {
    const nlohmann::json& p = e.payload;
    const auto said = p.is_object() ? p.find("answer") : p.end();
    if (said != p.end() && *said == "failure")
        return dtx::failure("cannot take it");
    if (said != p.end() && *said == "pending")
        return dtx::pending("not now");
    return dtx::success();
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
        http::consumer_route events =
            http::make_consumer_route(inbox, "events", memory_inbox::handler(consume_as_asked));
        events.options.body_limit = std::min(*events.options.body_limit, opts.body_limit);
        handler.add_route(http::verb::post, "/events", std::move(events.handler),
                          std::move(events.options));
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
    memory_inbox inbox;
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
    case 422:
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
