#ifndef DTX_DETAIL_INBOX_LOGIC_HPP
#define DTX_DETAIL_INBOX_LOGIC_HPP

// What every inbox (SQLite's, PostgreSQL's) does around its database: the consumer name's check,
// the handler's outcome as a consume_result, and the errors of the job as a retry.

#include <dtx/consume_result.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/envelope.hpp>
#include <dtx/gid.hpp>
#include <dtx/message.hpp>
#include <dtx/outcome.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <exception>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace detail {

/// Thrown out of an inbox's job to roll back its transaction: the handler's changes and the
/// inbox row.
struct inbox_refusal {
    consume_result result;
};

/// The result of a handler that ran in the transaction holding the inbox row: processed for
/// success; otherwise throws inbox_refusal (rejected for failure, retry for pending).
inline consume_result inbox_answer(const outcome& o) {
    if (o.is_success())
        return {consume_status::processed, {}};
    throw inbox_refusal{{o.is_failure() ? consume_status::rejected : consume_status::retry,
                         safe_text(o.message(), 2048)}};
}

/// Runs `start()` (an awaitable job that inserts the inbox row and runs the handler) for
/// `consumer`, a name of 1 to 128 characters like a gid; a refusal or exception becomes its
/// result.
template <class Start>
asio::awaitable<consume_result> consume_guarded(std::string_view consumer, const Start& start) {
    if (!valid_gid(consumer))
        co_return consume_result{consume_status::rejected,
                                 "the consumer name is empty, too long or not plain text"};
    consume_result r;
    try {
        r = co_await start();
    } catch (const inbox_refusal& x) {
        r = x.result;
    } catch (const std::exception& x) {
        r = {consume_status::retry, safe_text(x.what(), 2048)};
    } catch (...) {
        r = {consume_status::retry, "the handler threw something that is not an exception"};
    }
    co_return r;
}

/// `inbox.consume(consumer, envelope, handler)` for the envelope in `body`; a malformed one is
/// rejected, and nothing runs.
template <class Inbox, class Handler>
asio::awaitable<consume_result> consume_body(Inbox& inbox, std::string consumer,
                                             std::string_view body, Handler handler,
                                             const message_limits& limits) {
    envelope_parse parsed = parse_envelope(body, limits);
    if (!parsed)
        co_return consume_result{consume_status::rejected, std::move(parsed.error)};
    co_return co_await inbox.consume(std::move(consumer), std::move(*parsed.value),
                                     std::move(handler));
}

} // namespace detail
DTX_NAMESPACE_END

#endif
