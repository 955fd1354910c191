#ifndef DTX_HTTP_DETAIL_JSON_BODY_HPP
#define DTX_HTTP_DETAIL_JSON_BODY_HPP

// Reading a request body as JSON, the same way for a participant's payload and for an application
// route's request::json(): too deep a nesting and invalid JSON are refused with a problem (400)
// that names what is wrong without repeating the body.

#include <dtx/detail/json_depth.hpp>
#include <dtx/http/protocol.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// `body` parsed as JSON (strings are valid UTF-8: the parser checks them), or why it cannot be:
/// 400 json_too_deep beyond `depth_limit` levels, 400 invalid_json otherwise.
inline std::variant<nlohmann::json, problem> parse_json_body(std::string_view body,
                                                             std::size_t depth_limit) {
    if (dtx::detail::nested_deeper_than(body, depth_limit))
        return bad("json_too_deep", "the body nests arrays and objects deeper than " +
                                        std::to_string(depth_limit) + " levels");
    nlohmann::json value = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded())
        return bad("invalid_json", "the body is not valid JSON");
    return value;
}

} // namespace http::detail
DTX_NAMESPACE_END

#endif
