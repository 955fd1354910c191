#ifndef DTX_HTTP_DETAIL_ROUTER_HPP
#define DTX_HTTP_DETAIL_ROUTER_HPP

// The application routes of a server (route.hpp): patterns checked when a route is added, and
// the route a request's method and path select, with its path parameters.
//
// Not thread-safe: routes are added before the server starts, then only read.

#include <dtx/http/detail/request_target.hpp>
#include <dtx/http/route.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <cstddef>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// A segment of a pattern: literal text, or a parameter's name.
struct pattern_segment {
    std::string text;
    bool parameter = false;
};

struct route_entry {
    verb method;
    std::string pattern;
    std::vector<pattern_segment> segments;
    route_handler handler;
    route_options options;
};

inline bool parameter_name_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/// The segments of `pattern`; throws std::invalid_argument if it is not a valid pattern.
inline std::vector<pattern_segment> parse_pattern(std::string_view pattern) {
    const auto invalid = [&](const char* why) {
        return std::invalid_argument(
            "dtx::http::server: route pattern '" +
            dtx::detail::safe_text(pattern, 200, dtx::detail::text_controls::escape) + "': " + why);
    };
    if (pattern.empty() || pattern.front() != '/')
        throw invalid("must start with '/'");
    std::vector<pattern_segment> out;
    for (std::string_view s : path_segments(pattern)) {
        if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
            const std::string_view name = s.substr(1, s.size() - 2);
            if (name.empty() || !std::all_of(name.begin(), name.end(), parameter_name_char))
                throw invalid("a parameter's name is letters, digits and '_'");
            for (const pattern_segment& seen : out)
                if (seen.parameter && seen.text == name)
                    throw invalid("a parameter's name is used twice");
            out.push_back({std::string(name), true});
            continue;
        }
        if (s.empty())
            throw invalid("a segment is empty");
        for (char c : s)
            if (c == '{' || c == '}' || c == '%' || c == '?' || c == '#' ||
                static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
                throw invalid("a literal segment holds '{', '}', '%', '?', '#', a space or a "
                              "control character (a parameter is a whole segment: {name})");
        if (!dtx::detail::valid_utf8(s))
            throw invalid("a literal segment is not valid UTF-8");
        out.push_back({std::string(s), false});
    }
    return out;
}

/// True if a path of the segments `path` (decoded) could be taken by `pattern`: all of it, or
/// with `prefix`, its first segments (the pattern has at least as many).
inline bool could_take(const std::vector<pattern_segment>& pattern,
                       const std::vector<std::string_view>& path, bool prefix) {
    if (pattern.size() < path.size() || (!prefix && pattern.size() != path.size()))
        return false;
    for (std::size_t i = 0; i < path.size(); ++i)
        if (!pattern[i].parameter ? pattern[i].text != path[i] : path[i].empty())
            return false;
    return true;
}

/// What a request's method and path select.
struct route_match {
    /// The route, if one has this method and path.
    const route_entry* entry = nullptr;
    request::parameters params;
    /// Otherwise the methods of the routes that have this path ("GET, POST"), or empty (404).
    std::string allow;
    /// A segment of the path is not percent-encoded UTF-8 without control characters.
    bool bad_path = false;
};

class router {
public:
    /// Adds a route; throws std::invalid_argument if another one has the same method and pattern.
    void add(route_entry e) {
        for (const route_entry& r : routes_)
            if (r.method == e.method && same_shape(r.segments, e.segments))
                throw std::invalid_argument("dtx::http::server: route " +
                                            std::string(to_string(e.method)) + " " + e.pattern +
                                            " is registered twice");
        routes_.push_back(std::move(e));
    }

    bool empty() const noexcept { return routes_.empty(); }

    route_match match(verb method, std::string_view path) const {
        route_match m;
        if (routes_.empty())
            return m;
        const std::vector<std::string_view> raw = path_segments(path);
        std::vector<std::string> decoded;
        decoded.reserve(raw.size());
        for (std::string_view s : raw) {
            std::optional<std::string> d = decode_text(s, false);
            if (!d) {
                m.bad_path = true;
                return m;
            }
            decoded.push_back(std::move(*d));
        }
        const std::vector<std::string_view> segments(decoded.begin(), decoded.end());
        std::set<std::string_view> allowed;
        for (const route_entry& r : routes_) {
            if (!could_take(r.segments, segments, false))
                continue;
            if (r.method != method)
                allowed.insert(to_string(r.method));
            else if (!m.entry || more_literal(r.segments, m.entry->segments))
                m.entry = &r;
        }
        if (!m.entry) {
            for (std::string_view a : allowed)
                m.allow += (m.allow.empty() ? "" : ", ") + std::string(a);
            return m;
        }
        for (std::size_t i = 0; i < segments.size(); ++i)
            if (m.entry->segments[i].parameter)
                m.params.emplace_back(m.entry->segments[i].text, std::move(decoded[i]));
        return m;
    }

private:
    static bool same_shape(const std::vector<pattern_segment>& a,
                           const std::vector<pattern_segment>& b) {
        if (a.size() != b.size())
            return false;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (a[i].parameter != b[i].parameter || (!a[i].parameter && a[i].text != b[i].text))
                return false;
        return true;
    }

    /// True if `a` has a literal where `b` has a parameter, at the first segment they differ.
    static bool more_literal(const std::vector<pattern_segment>& a,
                             const std::vector<pattern_segment>& b) {
        for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
            if (a[i].parameter != b[i].parameter)
                return !a[i].parameter;
        return false;
    }

    std::vector<route_entry> routes_;
};

} // namespace http::detail
DTX_NAMESPACE_END

#endif
