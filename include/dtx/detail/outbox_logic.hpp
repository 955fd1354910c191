#ifndef DTX_DETAIL_OUTBOX_LOGIC_HPP
#define DTX_DETAIL_OUTBOX_LOGIC_HPP

// What every outbox (SQLite's, PostgreSQL's) does to a message before its INSERT, and to the
// columns it reads back: the id, the checks of <dtx/message.hpp>, the JSON texts.

#include <dtx/detail/storage.hpp>
#include <dtx/envelope.hpp>
#include <dtx/message.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace detail {

/// A message's columns as an outbox stores them.
struct outbox_row {
    std::string payload; ///< JSON text
    std::string headers; ///< JSON object text
    std::int64_t due_ms = 0;
    std::int64_t created_ms = 0;
};

/// Gives `m` an id if it has none, checks it against `limits` and returns its columns. Throws
/// std::invalid_argument (its message starting with `who`) for a message over the limits.
inline outbox_row outbox_columns(message& m, const message_limits& limits, const char* who) {
    if (m.id.empty())
        m.id = make_message_id();
    outbox_row row;
    try {
        row.payload = m.payload.dump();
    } catch (const nlohmann::json::exception&) {
        throw std::invalid_argument(std::string(who) + ": message " + m.id +
                                    ": the payload holds text that is not valid UTF-8");
    }
    if (std::string problem = check_message(m, row.payload.size(), limits); !problem.empty())
        throw std::invalid_argument(std::string(who) + ": message " + m.id + ": " + problem);
    row.headers = m.headers.empty() ? std::string("{}") : nlohmann::json(m.headers).dump();
    row.created_ms = to_ms(std::chrono::system_clock::now());
    row.due_ms = m.deliver_at ? to_ms(*m.deliver_at) : row.created_ms;
    return row;
}

/// The envelope of a stored row; `attempts` as stored.
inline envelope outbox_envelope(std::string_view id, std::string_view destination,
                                std::string_view key, std::string_view headers,
                                std::string_view payload, std::int64_t attempts,
                                std::int64_t created_ms) {
    envelope e;
    e.id = id;
    e.destination = destination;
    e.key = key;
    auto h = nlohmann::json::parse(headers, nullptr, false);
    if (h.is_object())
        for (const auto& [name, value] : h.items())
            if (value.is_string())
                e.headers.emplace(name, value.get<std::string>());
    e.payload = nlohmann::json::parse(payload, nullptr, false);
    e.attempt = static_cast<unsigned>(attempts);
    e.produced_at = created_ms;
    return e;
}

} // namespace detail
DTX_NAMESPACE_END

#endif
