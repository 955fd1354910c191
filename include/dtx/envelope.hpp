#ifndef DTX_ENVELOPE_HPP
#define DTX_ENVELOPE_HPP

// The envelope: a message as it travels from the relay to a consumer, whatever the transport (an
// HTTP body, a broker record's value). One JSON object:
//
//   {"id":"0190a1b2-...","key":"order-42","destination":"http://shop/events",
//    "headers":{"type":"order_completed"},"payload":{"order":42},
//    "attempt":1,"produced_at":1767225600000}
//
// `attempt` counts deliveries of this message (1 the first time; a consumer seeing 2 or more
// knows it may have processed it before), `produced_at` is when it was added (milliseconds since
// the epoch). Fields a newer dtx adds are ignored.
//
// parse_envelope() reads what arrives from outside, so it trusts nothing: a text that is not
// such an object, a missing or malformed id, a field of the wrong type or over the limits of
// <dtx/message.hpp> gives an error that says which (and `field` names it), and never an
// exception. Its texts never repeat what the envelope holds, so a consumer may send them back.
//
//   dtx::envelope_parse parsed = dtx::parse_envelope(R"({"id":"m-1","destination":"d",
//       "payload":{},"attempt":1,"produced_at":0})");
//   if (!parsed)
//       std::cout << "400: " << parsed.error << "\n";

#include <dtx/detail/json_depth.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/message.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN

struct envelope {
    std::string id{};
    std::string key{};
    std::string destination{};
    std::map<std::string, std::string> headers{};
    nlohmann::json payload{};
    unsigned attempt = 1;
    std::int64_t produced_at = 0; ///< milliseconds since the epoch

    /// The envelope's JSON text.
    std::string to_json() const {
        nlohmann::json j{{"id", id},
                         {"key", key},
                         {"destination", destination},
                         {"headers", headers},
                         {"payload", payload},
                         {"attempt", attempt},
                         {"produced_at", produced_at}};
        return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
};

/// What parse_envelope() found: the envelope, or why there is none.
struct envelope_parse {
    std::optional<envelope> value{};
    std::string error{};
    /// The field at fault ("id", "destination", "key", "headers", "payload", "attempt",
    /// "produced_at"); empty when the text as a whole is (not a JSON object, too large, too deep).
    std::string field{};
    explicit operator bool() const noexcept { return value.has_value(); }
};

namespace detail {

inline envelope_parse envelope_error(std::string why, std::string_view field = {}) {
    return {std::nullopt, "malformed message envelope: " + std::move(why), std::string(field)};
}

} // namespace detail

/// The largest JSON text of an envelope within `limits`: the payload's size and at most the
/// sizes of the other fields. A consumer refuses a larger body before reading it.
inline std::size_t envelope_size_limit(const message_limits& limits = {}) noexcept {
    return limits.max_payload + limits.max_destination + limits.max_key +
           limits.max_headers * (limits.max_header_name + limits.max_header_value + 8) + 1024;
}

/// Reads an envelope from its JSON text, checking it against `limits`.
inline envelope_parse parse_envelope(std::string_view text, const message_limits& limits = {}) {
    const std::size_t max_text = envelope_size_limit(limits);
    if (text.size() > max_text)
        return detail::envelope_error("the envelope is " + std::to_string(text.size()) +
                                      " bytes, more than " + std::to_string(max_text));
    if (detail::nested_deeper_than(text, limits.max_depth + 1))
        return detail::envelope_error("it nests deeper than " + std::to_string(limits.max_depth) +
                                      " levels");
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded())
        return detail::envelope_error("not JSON");
    if (!j.is_object())
        return detail::envelope_error("not a JSON object");

    message m;
    envelope e;
    auto text_field = [&](const char* name, std::string& out, bool required) -> bool {
        auto it = j.find(name);
        if (it == j.end() || it->is_null())
            return !required;
        if (!it->is_string())
            return false;
        out = it->get<std::string>();
        return true;
    };
    if (!text_field("id", m.id, true))
        return detail::envelope_error("\"id\" is missing or not a string", "id");
    if (!text_field("destination", m.destination, true))
        return detail::envelope_error("\"destination\" is missing or not a string", "destination");
    if (!text_field("key", m.key, false))
        return detail::envelope_error("\"key\" is not a string", "key");
    if (auto it = j.find("headers"); it != j.end() && !it->is_null()) {
        if (!it->is_object())
            return detail::envelope_error("\"headers\" is not an object", "headers");
        for (const auto& [name, value] : it->items()) {
            if (!value.is_string())
                return detail::envelope_error("header values must be strings", "headers");
            m.headers.emplace(name, value.get<std::string>());
        }
    }
    if (auto it = j.find("payload"); it != j.end())
        m.payload = std::move(*it);
    for (const char* name : {"attempt", "produced_at"}) {
        auto it = j.find(name);
        if (it == j.end() || !it->is_number_integer() ||
            (it->is_number_integer() && it->get<std::int64_t>() < 0))
            return detail::envelope_error(
                std::string("\"") + name + "\" is missing or not a non-negative integer", name);
    }
    const auto attempt = j["attempt"].get<std::int64_t>();
    if (attempt < 1 || attempt > 1'000'000)
        return detail::envelope_error("\"attempt\" is not between 1 and 1000000", "attempt");
    const std::size_t payload_size =
        m.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
    if (auto problem = detail::find_message_problem(m, payload_size, limits))
        return detail::envelope_error(std::move(problem->text), problem->field);

    e.id = std::move(m.id);
    e.key = std::move(m.key);
    e.destination = std::move(m.destination);
    e.headers = std::move(m.headers);
    e.payload = std::move(m.payload);
    e.attempt = static_cast<unsigned>(attempt);
    e.produced_at = j["produced_at"].get<std::int64_t>();
    return {std::move(e), {}, {}};
}

DTX_NAMESPACE_END

#endif
