#ifndef DTX_CONSUME_RESULT_HPP
#define DTX_CONSUME_RESULT_HPP

// What an idempotent consumer (an inbox: <dtx/sqlite/inbox.hpp>) made of a message, whatever the
// transport that brought it; the transport answers the producer's relay from it (for HTTP: 200
// for processed and duplicate, 422 for rejected, 503 for retry).

#include <dtx/publisher.hpp>
#include <dtx/version.hpp>

#include <cstdint>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN

enum class consume_status : std::uint8_t {
    processed, ///< the handler ran and its transaction committed with the inbox row
    duplicate, ///< processed before: acknowledged without running the handler
    rejected,  ///< it can never be processed (malformed, or the handler answered failure)
    retry,     ///< not now (the handler answered pending or threw, the database failed)
};

struct consume_result {
    consume_status status = consume_status::retry;
    std::string error{}; ///< why, for rejected and retry; valid UTF-8

    /// What the producer's relay makes of it.
    delivery_result delivery() const {
        switch (status) {
        case consume_status::processed:
        case consume_status::duplicate:
            return delivery_result::delivered();
        case consume_status::rejected:
            return delivery_result::rejected(error);
        case consume_status::retry:
            break;
        }
        return delivery_result::retry_later(error);
    }
};

inline std::string_view to_string(consume_status s) noexcept {
    switch (s) {
    case consume_status::processed:
        return "processed";
    case consume_status::duplicate:
        return "duplicate";
    case consume_status::rejected:
        return "rejected";
    case consume_status::retry:
        return "retry";
    }
    return "?";
}

DTX_NAMESPACE_END

#endif
