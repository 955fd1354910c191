#ifndef DTX_MESSAGE_HPP
#define DTX_MESSAGE_HPP

// A message: what a service adds to its outbox, in the same local transaction as its business
// change, for the relay to deliver at least once after the commit (see <dtx/relay.hpp>).
//
//   dtx::message m{.destination = "http://127.0.0.1:8090/orders/events",
//                  .key = "order-42",
//                  .payload = {{"event", "order_completed"}, {"order", 42}}};
//
// - `id` is made when the message is added (make_message_id(): UUIDv7 text, so ids sort by
//   creation time and are unique across processes). Give one yourself only for an idempotency
//   key of your own; consumers deduplicate by it (<dtx/sqlite/inbox.hpp>).
// - `destination` says where the publisher sends it (for the HTTP publisher, a URL).
// - `key` orders messages: those with the same key are delivered in commit order, also across
//   retries; messages with different keys never wait for each other. An empty key orders
//   nothing.
// - `deliver_at` delays the first attempt until then (later messages of its key wait for it, as
//   per-key order says).
//
// check_message() is what every outbox applies before it stores one: the limits below, and text
// that is valid UTF-8 without control characters (ids, keys and header values end up in logs).

#include <dtx/detail/json_depth.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/gid.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN

struct message {
    std::string id{}; ///< empty: made when the message is added
    std::string destination{};
    std::string key{};
    nlohmann::json payload{};
    std::map<std::string, std::string> headers{};
    std::optional<std::chrono::system_clock::time_point> deliver_at{};
};

/// A new message id: UUIDv7 text, like a gid.
inline std::string make_message_id() {
    return make_gid();
}

/// The sizes every message (and every envelope a consumer receives) must keep to.
struct message_limits {
    std::size_t max_destination = 2048; ///< bytes
    std::size_t max_key = 256;          ///< bytes
    std::size_t max_headers = 64;
    std::size_t max_header_name = 128;   ///< bytes, letters, digits and "-_."
    std::size_t max_header_value = 4096; ///< bytes
    std::size_t max_payload = 1 << 20;   ///< bytes of the payload's JSON text
    std::size_t max_depth = 64;          ///< nesting of the payload's arrays and objects
};

namespace detail {

/// True if `s` is valid UTF-8 without control characters (the rule for gids, without the
/// length limit).
inline bool plain_text(std::string_view s) noexcept {
    while (!s.empty()) {
        const std::size_t n = utf8_sequence_length(s);
        if (n == 0 || control_character(utf8_code_point(s, n)))
            return false;
        s.remove_prefix(n);
    }
    return true;
}

inline bool header_name_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

} // namespace detail

namespace detail {

/// A problem check_message() finds: the field at fault ("id", "destination", "key", "headers"
/// or "payload") and what is wrong with it, without repeating its value.
struct message_problem {
    std::string_view field;
    std::string text;
};

inline std::optional<message_problem>
find_message_problem(const message& m, std::size_t payload_size, const message_limits& limits) {
    if (!valid_gid(m.id))
        return message_problem{
            "id", "the message id is empty, longer than 128 characters or not plain text"};
    if (m.destination.empty() || m.destination.size() > limits.max_destination ||
        !plain_text(m.destination))
        return message_problem{"destination", "the destination is empty, longer than " +
                                                  std::to_string(limits.max_destination) +
                                                  " bytes or not plain text"};
    if (m.key.size() > limits.max_key || !plain_text(m.key))
        return message_problem{"key", "the key is longer than " + std::to_string(limits.max_key) +
                                          " bytes or not plain text"};
    if (m.headers.size() > limits.max_headers)
        return message_problem{"headers",
                               "more than " + std::to_string(limits.max_headers) + " headers"};
    for (const auto& [name, value] : m.headers) {
        if (name.empty() || name.size() > limits.max_header_name ||
            !std::all_of(name.begin(), name.end(), header_name_char))
            return message_problem{"headers", "a header name is empty, longer than " +
                                                  std::to_string(limits.max_header_name) +
                                                  " bytes, or holds a character other than "
                                                  "letters, digits and -_."};
        if (value.size() > limits.max_header_value || !plain_text(value))
            return message_problem{"headers", "a header value is longer than " +
                                                  std::to_string(limits.max_header_value) +
                                                  " bytes or not plain text"};
    }
    if (payload_size > limits.max_payload)
        return message_problem{"payload", "the payload is " + std::to_string(payload_size) +
                                              " bytes, more than " +
                                              std::to_string(limits.max_payload)};
    if (json_depth(m.payload, limits.max_depth) > limits.max_depth)
        return message_problem{"payload", "the payload nests deeper than " +
                                              std::to_string(limits.max_depth) + " levels"};
    return std::nullopt;
}

} // namespace detail

/// What is wrong with `m` (its id included, so call it once the id is set), or an empty string
/// if nothing is. `payload_size` is the size of the payload's JSON text. The text names the
/// field at fault and never repeats its value (it may be sent back to whoever sent the message).
inline std::string check_message(const message& m, std::size_t payload_size,
                                 const message_limits& limits = {}) {
    std::optional<detail::message_problem> p =
        detail::find_message_problem(m, payload_size, limits);
    return p ? std::move(p->text) : std::string();
}

DTX_NAMESPACE_END

#endif
