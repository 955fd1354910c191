#ifndef DTX_HTTP_DETAIL_REQUEST_HANDLER_HPP
#define DTX_HTTP_DETAIL_REQUEST_HANDLER_HPP

// What the participant server does with one request, without sockets: a parsed request in, an
// answer out. The server drives it for every request it reads; the fuzz target drives it with
// requests parsed from arbitrary bytes.
//
// Every refusal is a JSON error body from protocol.hpp's error_body: a stable code and a message
// that names the problem without repeating what the request sent.

#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/http/protocol.hpp>
#include <dtx/http/server_options.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/version.hpp>

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http::detail {

namespace beast = boost::beast;

using beast_request = beast::http::request<beast::http::string_body>;
using beast_response = beast::http::response<beast::http::string_body>;

/// What handling learned about a request, for the log hook.
struct request_notes {
    std::string participant;
    std::optional<branch_query> query;
    /// The error code of the answer's body, if the answer is an error.
    std::string error;
    /// What the participant's handler threw, as valid UTF-8 with control characters escaped.
    std::string exception;
};

/// An answer with a JSON body. `version` is the request's (10 or 11).
inline beast_response json_response(unsigned status, std::string body, unsigned version) {
    beast_response res{static_cast<beast::http::status>(status), version == 10 ? 10u : 11u};
    if (status == 425)
        res.reason("Too Early"); // RFC 8470; Beast has no name for it
    res.set(beast::http::field::content_type, "application/json");
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

/// An error answer; `notes.error` records its code.
inline beast_response error_response(const problem& p, unsigned version, request_notes& notes) {
    notes.error = p.code;
    return json_response(p.status, error_body(p.code, p.message), version);
}

/// The answer for a request the server could not read, or empty if there is nobody to answer
/// (the client went away, or the connection failed).
inline std::optional<problem> read_problem(const boost::system::error_code& ec,
                                           const server_options& opts) {
    using he = beast::http::error;
    if (ec == he::header_limit)
        return problem{431, "header_too_large",
                       "the request line and header fields exceed " +
                           std::to_string(opts.header_limit) + " bytes"};
    if (ec == he::body_limit)
        return problem{413, "body_too_large",
                       "the body exceeds " + std::to_string(opts.body_limit) + " bytes"};
    if (ec.category() == beast::http::make_error_code(he::bad_method).category() &&
        ec != he::end_of_stream && ec != he::partial_message && ec != he::need_more &&
        ec != he::buffer_overflow)
        return problem{400, "malformed_request",
                       "the request is not valid HTTP/1.1: " + ec.message()};
    return std::nullopt;
}

/// The answer when a request was not received within the read timeout.
inline problem timeout_problem(const server_options& opts) {
    return {408, "request_timeout",
            "the request was not received within " + std::to_string(opts.read_timeout.count()) +
                " ms"};
}

/// True if `given` equals `expected`, in a time that depends only on their lengths.
inline bool same_secret(std::string_view given, std::string_view expected) noexcept {
    unsigned char diff = given.size() == expected.size() ? 0 : 1;
    for (std::size_t i = 0; i < expected.size(); ++i)
        diff |= static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ expected[i]);
    return diff == 0;
}

/// True if `authorization` is "Bearer <token>" (the scheme in any case) with the expected token.
inline bool bearer_matches(std::string_view authorization, std::string_view token) noexcept {
    constexpr std::string_view scheme = "bearer";
    if (authorization.size() <= scheme.size())
        return false;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        const char c = authorization[i];
        if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != scheme[i])
            return false;
    }
    std::string_view rest = authorization.substr(scheme.size());
    if (rest.front() != ' ')
        return false;
    while (!rest.empty() && rest.front() == ' ')
        rest.remove_prefix(1);
    return same_secret(rest, token);
}

/// The path and query of a request target (origin form, or absolute form as proxies send).
inline std::pair<std::string_view, std::string_view> split_target(std::string_view target) {
    for (std::string_view scheme : {std::string_view{"http://"}, std::string_view{"https://"}}) {
        if (target.substr(0, scheme.size()) != scheme)
            continue;
        const std::size_t slash = target.find_first_of("/?", scheme.size());
        target = slash == std::string_view::npos ? std::string_view{"/"} : target.substr(slash);
        break;
    }
    const std::size_t q = target.find('?');
    if (q == std::string_view::npos)
        return {target, {}};
    return {target.substr(0, q), target.substr(q + 1)};
}

/// True if the JSON text `body` nests arrays and objects deeper than `limit`. Deep nesting parses
/// fine, but a handler that walks the payload recursively (dump(), conversions) would exhaust its
/// stack; this scan stops the request first. Strings are skipped; the text need not be valid.
inline bool nested_deeper_than(std::string_view body, std::size_t limit) noexcept {
    std::size_t depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < body.size(); ++i) {
        const char c = body[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limit)
                return true;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return false;
}

class request_handler {
public:
    request_handler(const participant_registry& participants, const server_options& opts)
        : participants_(participants)
        , opts_(opts)
        , base_(opts.base_path) {
        while (!base_.empty() && base_.back() == '/')
            base_.pop_back();
    }

    /// The answer to `req`. Never throws for anything a request holds; a participant's handler
    /// that throws is answered 500 (an unknown result: the coordinator asks again). `stopping`:
    /// the server is shutting down (the health endpoint says so).
    asio::awaitable<beast_response> handle(const beast_request& req, request_notes& notes,
                                           bool stopping) const {
        auto routed = route(req, notes, stopping);
        if (auto* early = std::get_if<beast_response>(&routed))
            co_return std::move(*early);
        const branch_call& c = std::get<branch_call>(routed);
        const branch_request br{c.query.gid, c.query.branch_id, c.query.op, c.payload,
                                c.traceparent};
        std::optional<answer> a;
        try {
            const outcome o = co_await c.target->call(br);
            a = answer_for(o);
        } catch (const std::exception& e) {
            notes.exception = dtx::detail::safe_text(e.what(), std::string_view::npos,
                                                     dtx::detail::text_controls::escape);
        } catch (...) {
            notes.exception = "an exception that is not a std::exception";
        }
        if (!a) {
            const problem threw{500, "handler_error",
                                "the participant's handler threw; the result is unknown"};
            co_return error_response(threw, req.version(), notes);
        }
        co_return json_response(a->status, std::move(a->body), req.version());
    }

private:
    /// A request that passed every check: the participant to call and what to call it with.
    struct branch_call {
        participant* target;
        branch_query query;
        nlohmann::json payload;
        std::string_view traceparent; // the request's, if it is a valid one
    };

    std::variant<beast_response, branch_call> route(const beast_request& req, request_notes& notes,
                                                    bool stopping) const {
        namespace bh = beast::http;
        const unsigned v = req.version();
        const auto [path, query] = split_target(req.target());

        if (!opts_.health_path.empty() && path == opts_.health_path) {
            if (req.method() != bh::verb::get)
                return not_allowed("GET", "the health endpoint answers GET", v, notes);
            if (stopping)
                return json_response(503, R"({"status":"stopping"})", v);
            return json_response(200, R"({"status":"ok"})", v);
        }
        if (opts_.bearer_token &&
            !bearer_matches(req[bh::field::authorization], *opts_.bearer_token)) {
            beast_response res =
                error_response({401, "unauthorized", "a valid bearer token is required"}, v, notes);
            res.set(bh::field::www_authenticate, "Bearer");
            return res;
        }
        const std::string_view rest = path.size() > base_.size() &&
                                              path.substr(0, base_.size()) == base_ &&
                                              path[base_.size()] == '/'
                                          ? path.substr(base_.size() + 1)
                                          : std::string_view{};
        if (rest.empty() || rest.find('/') != std::string_view::npos)
            return error_response(
                {404, "not_found",
                 "no route for this path (branch calls go to " + base_ + "/<participant>)"},
                v, notes);
        std::optional<std::string> name = percent_decode(rest, false);
        if (!name)
            return error_response(bad("bad_encoding",
                                      "the participant name in the path is not valid "
                                      "percent-encoding"),
                                  v, notes);
        participant* target = participants_.find_registered(*name);
        if (!target)
            return error_response(
                {404, "unknown_participant", "no participant is registered under this name"}, v,
                notes);
        notes.participant = std::move(*name);
        // DTM calls with GET and no body when a branch's payload is empty
        // (dtmsvr/trans_status.go, determineHTTPRequestMethod).
        if (req.method() != bh::verb::post && req.method() != bh::verb::get)
            return not_allowed("GET, POST", "branch calls use POST (or GET without a body)", v,
                               notes);

        auto parsed = parse_branch_query(query);
        if (auto* p = std::get_if<problem>(&parsed))
            return error_response(*p, v, notes);
        branch_query& q = std::get<branch_query>(parsed);
        notes.query = q;
        if (const auto kind = target->kind(); kind && *kind != q.kind)
            return error_response(bad("wrong_participant_kind", "the participant takes part in " +
                                                                    std::string(to_string(*kind)) +
                                                                    " transactions, not " +
                                                                    std::string(to_string(q.kind))),
                                  v, notes);
        nlohmann::json payload; // an empty body is a null payload
        if (!req.body().empty()) {
            if (nested_deeper_than(req.body(), opts_.json_depth_limit))
                return error_response(
                    bad("json_too_deep", "the body nests arrays and objects deeper than " +
                                             std::to_string(opts_.json_depth_limit) + " levels"),
                    v, notes);
            payload = nlohmann::json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
            if (payload.is_discarded())
                return error_response(bad("invalid_json", "the body is not valid JSON"), v, notes);
        }
        // A malformed trace context is dropped, as the W3C rules say.
        std::string_view traceparent = req["traceparent"];
        if (!trace_context::continuing(traceparent))
            traceparent = {};
        return branch_call{target, std::move(q), std::move(payload), traceparent};
    }

    static beast_response not_allowed(const char* allow, std::string message, unsigned version,
                                      request_notes& notes) {
        beast_response res =
            error_response({405, "method_not_allowed", std::move(message)}, version, notes);
        res.set(beast::http::field::allow, allow);
        return res;
    }

    const participant_registry& participants_;
    const server_options& opts_;
    std::string base_;
};

} // namespace http::detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
