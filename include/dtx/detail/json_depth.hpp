#ifndef DTX_DETAIL_JSON_DEPTH_HPP
#define DTX_DETAIL_JSON_DEPTH_HPP

// How deep JSON nests. Deep nesting parses fine, but whatever walks a value recursively (dump(),
// conversions, a handler) would exhaust its stack: text from outside is checked before it is
// parsed, and values before they are stored.

#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace detail {

/// True if the JSON text `body` nests arrays and objects deeper than `limit`. Strings are
/// skipped; the text need not be valid.
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

/// The nesting depth of the JSON value `j`, counted without recursion beyond `limit` + 1.
inline std::size_t json_depth(const nlohmann::json& j, std::size_t limit) {
    if (!j.is_structured())
        return 0;
    if (limit == 0)
        return 1;
    std::size_t deepest = 0;
    for (const auto& child : j) {
        const std::size_t d = json_depth(child, limit - 1);
        if (d > deepest)
            deepest = d;
        if (deepest >= limit)
            break;
    }
    return deepest + 1;
}

} // namespace detail
DTX_NAMESPACE_END

#endif
