#ifndef DTX_HTTP_DETAIL_REQUEST_HANDLER_HPP
#define DTX_HTTP_DETAIL_REQUEST_HANDLER_HPP

// What the server does with one request, without sockets: a parsed request in, an answer out:
// the health endpoint, a participant's branch call, or an application route. The server drives it
// for every request it reads; the fuzz target drives it with requests parsed from arbitrary bytes.
//
// Every refusal is a JSON error body from protocol.hpp's error_body: a stable code and a message
// that names the problem without repeating what the request sent.

#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/http/detail/json_body.hpp>
#include <dtx/http/detail/request_target.hpp>
#include <dtx/http/detail/router.hpp>
#include <dtx/http/protocol.hpp>
#include <dtx/http/route.hpp>
#include <dtx/http/server_options.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/version.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
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
    /// What the handler threw, as valid UTF-8 with control characters escaped.
    std::string exception;
    /// The pattern of the application route that matched.
    std::string route;
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
inline beast_response problem_response(const problem& p, unsigned version, request_notes& notes) {
    notes.error = p.code;
    return json_response(p.status, error_body(p.code, p.message), version);
}

inline problem body_too_large(std::uint64_t limit) {
    return {413, "body_too_large", "the body exceeds " + std::to_string(limit) + " bytes"};
}

/// The answer for a request the server could not read, or empty if there is nobody to answer
/// (the client went away, or the connection failed).
/// `body_limit`: the request's, if its route has one of its own.
inline std::optional<problem> read_problem(const boost::system::error_code& ec,
                                           const server_options& opts,
                                           std::optional<std::uint64_t> body_limit = {}) {
    using he = beast::http::error;
    if (ec == he::header_limit)
        return problem{431, "header_too_large",
                       "the request line and header fields exceed " +
                           std::to_string(opts.header_limit) + " bytes"};
    if (ec == he::body_limit)
        return body_too_large(body_limit.value_or(opts.body_limit));
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

/// What a handler threw, for the log only: valid UTF-8 with control characters escaped.
inline std::string exception_text(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return dtx::detail::safe_text(x.what(), std::string_view::npos,
                                      dtx::detail::text_controls::escape);
    } catch (...) {
        return "an exception that is not a std::exception";
    }
}

/// The answer when an application route's handler failed (threw, or answered what cannot be
/// sent): the reason is in the log only.
inline problem internal_problem() {
    return {500, "internal", "the request could not be handled"};
}

/// Why an application route's reply cannot be sent as it is, or empty.
inline std::optional<std::string> unsendable(const reply& r) {
    namespace bh = beast::http;
    if (r.status < 200 || r.status > 599)
        return "has a status outside 200 to 599";
    if ((r.status == 204 || r.status == 304) && !r.body.empty())
        return "has a body with status 204 or 304";
    const auto clean = [](std::string_view v) {
        return std::none_of(v.begin(), v.end(), [](char c) {
            const auto u = static_cast<unsigned char>(c);
            return (u < 0x20 && c != '\t') || u == 0x7f;
        });
    };
    const auto token = [](std::string_view n) {
        constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
        return !n.empty() && std::all_of(n.begin(), n.end(), [&](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   extra.find(c) != std::string_view::npos;
        });
    };
    if (!clean(r.content_type))
        return "has a content type with a control character";
    for (const auto& [name, value] : r.headers) {
        if (!token(name) || !clean(value))
            return "has a header field whose name is not a token or whose value holds a control "
                   "character";
        const bh::field f = bh::string_to_field(name);
        if (f == bh::field::content_length || f == bh::field::transfer_encoding ||
            f == bh::field::connection)
            return "sets Content-Length, Transfer-Encoding or Connection, which the server sets";
    }
    return std::nullopt;
}

/// An application route's reply as an HTTP answer, or 500 if it cannot be sent as it is.
inline beast_response route_answer(reply r, unsigned version, request_notes& notes) {
    if (const auto why = unsendable(r)) {
        notes.exception = "the handler's reply " + *why;
        return problem_response(internal_problem(), version, notes);
    }
    beast_response res{static_cast<beast::http::status>(r.status), version == 10 ? 10u : 11u};
    res.set(beast::http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers)
        res.set(name, value);
    res.body() = std::move(r.body);
    if (r.status != 204 && r.status != 304)
        res.prepare_payload();
    return res;
}

/// What a request's method and path ask of its header: the bearer token, and a body limit.
struct header_rules {
    bool token_required = false;
    std::uint64_t body_limit = 0;
};

class request_handler {
public:
    /// `participants`: null for a server of application routes only.
    request_handler(const participant_registry* participants, const server_options& opts)
        : participants_(participants)
        , opts_(opts)
        , base_(opts.base_path) {
        while (!base_.empty() && base_.back() == '/')
            base_.pop_back();
    }
    request_handler(const participant_registry& participants, const server_options& opts)
        : request_handler(&participants, opts) {}

    /// Adds an application route (server::route, which says what is refused).
    void add_route(verb method, std::string_view pattern, route_handler handler,
                   route_options options) {
        const auto refuse = [&](const std::string& why) {
            return std::invalid_argument(
                "dtx::http::server: route " +
                dtx::detail::safe_text(pattern, 200, dtx::detail::text_controls::escape) + ": " +
                why);
        };
        if (method == verb::unknown)
            throw refuse("unknown method");
        if (!handler)
            throw refuse("no handler");
        if (options.body_limit && *options.body_limit > opts_.body_limit)
            throw refuse("its body_limit is over the server's");
        std::vector<pattern_segment> segments = parse_pattern(pattern);
        if (!opts_.health_path.empty() &&
            could_take(segments, path_segments(opts_.health_path), false))
            throw refuse("it could take the health endpoint's path");
        if (participants_ && could_take(segments, path_segments(base_), true))
            throw refuse("it could take the participants' paths (base_path and below)");
        routes_.add({method, std::string(pattern), std::move(segments), std::move(handler),
                     std::move(options)});
    }

    /// What the request line of a request asks of its header, decided before its body is read.
    header_rules rules_for(verb method, std::string_view target) const {
        const std::string_view path = split_target(target).first;
        header_rules rules{opts_.bearer_token.has_value(), opts_.body_limit};
        if (!opts_.health_path.empty() && path == opts_.health_path) {
            rules.token_required = false;
        } else if (!participants_ || !under_base(path)) {
            const route_match m = routes_.match(method, path);
            if (m.entry && !m.entry->options.require_token)
                rules.token_required = false;
            if (m.entry && m.entry->options.body_limit)
                rules.body_limit = *m.entry->options.body_limit;
        }
        return rules;
    }

    /// The answer to `req` from `peer`. Never throws for anything a request holds; a handler
    /// that throws is answered 500 (for a participant, an unknown result: the coordinator asks
    /// again). `stopping`: the server is shutting down (the health endpoint says so).
    asio::awaitable<beast_response> handle(const beast_request& req, request_notes& notes,
                                           bool stopping, asio::ip::address peer = {}) const {
        auto routed = route(req, notes, stopping);
        if (auto* early = std::get_if<beast_response>(&routed))
            co_return std::move(*early);
        if (auto* r = std::get_if<route_call>(&routed))
            co_return co_await call_route(*r, req, peer, notes);
        const branch_call& c = std::get<branch_call>(routed);
        const branch_request br{c.query.gid, c.query.branch_id, c.query.op,
                                c.payload,   c.traceparent,     c.query.kind};
        std::optional<answer> a;
        try {
            const outcome o = co_await c.target->call(br);
            a = answer_for(o);
        } catch (...) {
            notes.exception = exception_text(std::current_exception());
        }
        if (!a) {
            const problem threw{500, "handler_error",
                                "the participant's handler threw; the result is unknown"};
            co_return problem_response(threw, req.version(), notes);
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

    /// A request for an application route.
    struct route_call {
        const route_entry* entry;
        request::parameters params;
    };

    bool under_base(std::string_view path) const {
        return path.substr(0, base_.size()) == base_ &&
               (path.size() == base_.size() || path[base_.size()] == '/');
    }

    asio::awaitable<beast_response> call_route(const route_call& r, const beast_request& req,
                                               const asio::ip::address& peer,
                                               request_notes& notes) const {
        const request view(req, r.entry->pattern, r.params, peer, opts_.json_depth_limit);
        std::optional<reply> res;
        std::optional<problem> refused;
        try {
            res = co_await r.entry->handler(view);
        } catch (const error_reply& e) {
            refused = e.details();
        } catch (...) {
            notes.exception = exception_text(std::current_exception());
        }
        if (refused)
            co_return problem_response(*refused, req.version(), notes);
        if (!res)
            co_return problem_response(internal_problem(), req.version(), notes);
        co_return route_answer(std::move(*res), req.version(), notes);
    }

    std::variant<beast_response, branch_call, route_call>
    route(const beast_request& req, request_notes& notes, bool stopping) const {
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
        if (rules_for(req.method(), req.target()).token_required &&
            !bearer_matches(req[bh::field::authorization], *opts_.bearer_token)) {
            beast_response res = problem_response(
                {401, "unauthorized", "a valid bearer token is required"}, v, notes);
            res.set(bh::field::www_authenticate, "Bearer");
            return res;
        }
        if (!participants_ || !under_base(path))
            return route_application(req, path, notes);
        const std::string_view rest =
            path.size() > base_.size() ? path.substr(base_.size() + 1) : std::string_view{};
        if (rest.empty() || rest.find('/') != std::string_view::npos)
            return not_found(v, notes);
        std::optional<std::string> name = percent_decode(rest, false);
        if (!name)
            return problem_response(bad("bad_encoding",
                                        "the participant name in the path is not valid "
                                        "percent-encoding"),
                                    v, notes);
        participant* target = participants_->find_registered(*name);
        if (!target)
            return problem_response(
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
            return problem_response(*p, v, notes);
        branch_query& q = std::get<branch_query>(parsed);
        notes.query = q;
        if (const auto kind = target->kind(); !serves(kind, q.kind, q.op))
            return problem_response(
                bad("wrong_participant_kind",
                    *kind == tx_kind::msg
                        ? std::string("the participant is a check-back: it "
                                      "answers op=msg&trans_type=msg only")
                        : "the participant takes part in " + std::string(to_string(*kind)) +
                              " transactions, not " + std::string(to_string(q.kind))),
                v, notes);
        if (q.op == branch_op::check_back && !req.body().empty())
            return problem_response(bad("unexpected_body", "a check-back (op=msg) has no body"), v,
                                    notes);
        nlohmann::json payload; // an empty body is a null payload
        if (!req.body().empty()) {
            auto body = parse_json_body(req.body(), opts_.json_depth_limit);
            if (auto* p = std::get_if<problem>(&body))
                return problem_response(*p, v, notes);
            payload = std::move(std::get<nlohmann::json>(body));
        }
        // A malformed trace context is dropped, as the W3C rules say.
        std::string_view traceparent = req["traceparent"];
        if (!trace_context::continuing(traceparent))
            traceparent = {};
        return branch_call{target, std::move(q), std::move(payload), traceparent};
    }

    std::variant<beast_response, branch_call, route_call>
    route_application(const beast_request& req, std::string_view path, request_notes& notes) const {
        const unsigned v = req.version();
        route_match m = routes_.match(req.method(), path);
        if (m.bad_path)
            return problem_response(bad("bad_path", "a segment of the path is not percent-encoded "
                                                    "UTF-8 without control characters"),
                                    v, notes);
        if (m.entry) {
            notes.route = m.entry->pattern;
            return route_call{m.entry, std::move(m.params)};
        }
        if (!m.allow.empty())
            return not_allowed(m.allow, "the route does not answer this method", v, notes);
        return not_found(v, notes);
    }

    beast_response not_found(unsigned version, request_notes& notes) const {
        return problem_response({404, "not_found",
                                 participants_ ? "no route for this path (branch calls go to " +
                                                     base_ + "/<participant>)"
                                               : std::string("no route for this path")},
                                version, notes);
    }

    static beast_response not_allowed(std::string_view allow, std::string message, unsigned version,
                                      request_notes& notes) {
        beast_response res =
            problem_response({405, "method_not_allowed", std::move(message)}, version, notes);
        res.set(beast::http::field::allow, allow);
        return res;
    }

    const participant_registry* participants_;
    const server_options& opts_;
    std::string base_;
    router routes_;
};

} // namespace http::detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
