#ifndef DTX_HTTP_DETAIL_HEADER_CHECKS_HPP
#define DTX_HTTP_DETAIL_HEADER_CHECKS_HPP

// What the server decides on a request's header alone, before it reads the body or sends 100
// Continue: framing it cannot read safely, a missing or ambiguous Host or Authorization, a
// missing or wrong bearer token. A body is never read for a request refused here, so a
// client without the token cannot make the server hold memory.

#include <dtx/detail/config.hpp>
#include <dtx/http/detail/request_handler.hpp>
#include <dtx/http/server_options.hpp>
#include <dtx/version.hpp>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>

#include <cstddef>
#include <optional>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// Why the framing of a request with Transfer-Encoding cannot be trusted, or empty if it is the
/// one coding the server reads: exactly `chunked`. RFC 9112 §6.3: when chunked is not the final
/// coding the body's length is unknown (400, and the connection closes, or what follows could be
/// read as a request of its own); chunked twice is not allowed (§7); in HTTP/1.0 the field is a
/// sign of a faulty intermediary (§6.1). A final chunked after other codings (`gzip, chunked`)
/// frames the body, but the server would have to decode codings it does not implement: 501, as
/// §6.1 says for a coding a server does not understand. `read_as_chunked`: the parser reads the
/// body as chunked; a list this check accepts and the parser reads otherwise is refused too.
inline std::optional<problem> transfer_coding_problem(const beast::http::request_header<>& head,
                                                      bool read_as_chunked) {
    namespace bh = beast::http;
    std::size_t codings = 0;
    std::size_t chunked = 0;
    bool chunked_last = false;
    // Every Transfer-Encoding field, in order: find() and equal_range() walk the fields in their
    // order, other fields between them included.
    for (const auto& field : head) {
        if (field.name() != bh::field::transfer_encoding)
            continue;
        std::string_view list = field.value();
        while (!list.empty()) { // a list: codings separated by commas, with optional whitespace
            const std::size_t comma = list.find(',');
            std::string_view coding = list.substr(0, comma);
            list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t'))
                coding.remove_prefix(1);
            while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t'))
                coding.remove_suffix(1);
            if (coding.empty())
                continue;
            ++codings;
            chunked_last = beast::iequals(coding, "chunked");
            chunked += chunked_last ? 1 : 0;
        }
    }
    if (head.find(bh::field::transfer_encoding) == head.end())
        return std::nullopt;
    if (head.version() < 11)
        return bad("bad_transfer_encoding", "Transfer-Encoding is not allowed in HTTP/1.0");
    if (!chunked_last || chunked > 1 || (codings == 1 && !read_as_chunked))
        return bad("bad_transfer_encoding",
                   "the body's length cannot be known: Transfer-Encoding must end in chunked, "
                   "once");
    if (codings > 1)
        return problem{501, "unsupported_transfer_coding",
                       "the only transfer coding the server reads is chunked alone"};
    return std::nullopt;
}

/// The reason to refuse `head` before its body is read, or empty if the request may go on
/// (`read_as_chunked`: as transfer_coding_problem; `rules`: what its route asks, from
/// request_handler::rules_for). Framing problems come first: the connection cannot go on after
/// them.
inline std::optional<problem> header_problem(const beast::http::request_header<>& head,
                                             bool read_as_chunked, const server_options& opts,
                                             const header_rules& rules) {
    namespace bh = beast::http;
    if (auto p = transfer_coding_problem(head, read_as_chunked))
        return p;
    const std::size_t hosts = head.count(bh::field::host);
    if (hosts > 1 || (hosts == 0 && head.version() >= 11))
        return bad("bad_host", "an HTTP/1.1 request must have exactly one Host header field");
    if (head.count(bh::field::authorization) > 1)
        return bad("duplicate_authorization", "the request has more than one Authorization field");
    if (rules.token_required && !bearer_matches(head[bh::field::authorization], *opts.bearer_token))
        return problem{401, "unauthorized", "a valid bearer token is required"};
    return std::nullopt;
}

} // namespace http::detail
DTX_NAMESPACE_END

#endif
