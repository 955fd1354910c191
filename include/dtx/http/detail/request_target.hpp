#ifndef DTX_HTTP_DETAIL_REQUEST_TARGET_HPP
#define DTX_HTTP_DETAIL_REQUEST_TARGET_HPP

// Reading a request target: its path and query, the path's segments, percent-decoding, and the
// query's name=value pairs. The branch protocol, the participant server and application routes
// all read targets through these.

#include <dtx/detail/utf8.hpp>
#include <dtx/version.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace http::detail {

inline int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/// Percent-decodes `in`; empty if an escape is malformed. In a query '+' is a space (as in
/// forms); in a path segment it is itself.
inline std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space = true) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        const char c = in[i];
        if (c == '+' && plus_is_space) {
            out += ' ';
        } else if (c == '%') {
            if (i + 2 >= in.size())
                return std::nullopt;
            const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return std::nullopt;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += c;
        }
    }
    return out;
}

/// `in` percent-decoded, if that is valid UTF-8 without control characters: what a path segment
/// or a query value of an application route may hold. Empty otherwise.
inline std::optional<std::string> decode_text(std::string_view in, bool plus_is_space) {
    std::optional<std::string> out = percent_decode(in, plus_is_space);
    if (!out)
        return std::nullopt;
    for (std::string_view rest = *out; !rest.empty();) {
        const std::size_t n = dtx::detail::utf8_sequence_length(rest);
        if (n == 0 || dtx::detail::control_character(dtx::detail::utf8_code_point(rest, n)))
            return std::nullopt;
        rest.remove_prefix(n);
    }
    return out;
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

/// The segments of `path` as sent: "/" has none, "/a/b" has "a" and "b", "/a/" has "a" and "".
inline std::vector<std::string_view> path_segments(std::string_view path) {
    std::vector<std::string_view> out;
    if (!path.empty() && path.front() == '/')
        path.remove_prefix(1);
    if (path.empty())
        return out;
    for (;;) {
        const std::size_t slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos)
            return out;
        path.remove_prefix(slash + 1);
    }
}

/// Takes the next name=value pair (both as sent) off the front of `query`; empty once none is
/// left. Empty pairs (`a=1&&b=2`) are skipped; a pair without '=' has an empty value.
inline std::optional<std::pair<std::string_view, std::string_view>>
next_query_pair(std::string_view& query) {
    while (!query.empty()) {
        const std::size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (pair.empty())
            continue;
        const std::size_t eq = pair.find('=');
        return std::pair{pair.substr(0, eq),
                         eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1)};
    }
    return std::nullopt;
}

} // namespace http::detail
DTX_NAMESPACE_END

#endif
