#ifndef DTX_CONSUME_RESULT_HPP
#define DTX_CONSUME_RESULT_HPP

// What an idempotent consumer (an inbox: <dtx/sqlite/inbox.hpp>, <dtx/postgres/inbox.hpp>) made
// of a message, whatever the transport that brought it; the transport answers the producer's
// relay from it (for HTTP: 200 for processed and duplicate, 422 for rejected, 503 for retry:
// <dtx/http/consumer.hpp>).
//
// inbox_for<Inbox, Handler> is what a transport asks of an inbox: a member
// consume(std::string consumer, envelope e, Handler handler) that gives an
// asio::awaitable<consume_result>. dtx::sqlite::inbox and dtx::postgres::inbox have it (each with
// its inbox_handler), and so may a type of yours that wraps one (to count, to log, to test).

#include <dtx/detail/config.hpp>
#include <dtx/envelope.hpp>
#include <dtx/publisher.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

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

/// An inbox that consumes envelopes with a handler of type `Handler` (see the top of the file).
template <class Inbox, class Handler>
concept inbox_for = requires(Inbox& inbox, std::string consumer, envelope e, const Handler& h) {
    {
        inbox.consume(std::move(consumer), std::move(e), h)
        } -> std::same_as<asio::awaitable<consume_result>>;
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
