#ifndef DTX_OUTBOX_STORE_HPP
#define DTX_OUTBOX_STORE_HPP

// What the relay (<dtx/relay.hpp>) needs from an outbox, whatever its database: SQLite
// (dtx::sqlite::outbox, <dtx/sqlite/outbox.hpp>) implements it, and so can any other.
//
// Every outbox row is in one of three states: pending (waiting for delivery or for its next
// attempt, possibly leased to a relay that is delivering it), delivered (kept until the
// retention passes, then cleaned), or parked (a dead letter). The rules an implementation keeps:
//   - claim() leases due pending messages to one relay (owner, lease-until), so that two relays
//     never deliver the same message at once while the lease holds; a lease that expired (its
//     relay died) may be claimed again. Claims never depend on a cursor over ids or on a window
//     of time: a message is claimable exactly when it is pending, due and not leased.
//   - Per-key order: a message is claimable only if no earlier message with the same non-empty
//     key is pending (in flight or waiting for a retry) or parked (see <dtx/relay.hpp> for why a
//     dead letter holds its key). "Earlier" is commit order.
//   - claim() counts an attempt for each message it leases (a relay that dies mid-delivery has
//     used one), and the envelopes carry that count.
//   - settle() applies only to messages still leased by that owner.

#include <dtx/detail/config.hpp>
#include <dtx/envelope.hpp>
#include <dtx/publisher.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

DTX_NAMESPACE_BEGIN

/// Messages leased to a relay, and when the earliest pending message not among them is due.
struct outbox_claim {
    std::vector<envelope> messages{};
    std::optional<std::chrono::system_clock::time_point> next_due{};
};

/// What a relay decided for a message it had claimed.
struct outbox_settlement {
    std::string id{};
    delivery_status status = delivery_status::delivered; ///< rejected: park it
    std::string error{};
    std::chrono::system_clock::time_point retry_at{}; ///< for delivery_status::retry
};

/// A parked message: the envelope (its attempt: attempts made), its last error and when.
struct dead_letter {
    envelope message{};
    std::string last_error{};
    std::chrono::system_clock::time_point parked_at{};
};

class outbox_store {
public:
    virtual ~outbox_store() = default;

    /// Leases up to `max` claimable messages to `owner` until now + `lease` (those ready the
    /// longest first), and returns them in commit order. Its cost should not grow with the
    /// messages held back behind their keys.
    virtual asio::awaitable<outbox_claim> claim(std::string owner, std::chrono::milliseconds lease,
                                                std::size_t max) = 0;
    /// Records what became of claimed messages, in one write.
    virtual asio::awaitable<void> settle(std::string owner,
                                         std::vector<outbox_settlement> settlements) = 0;

    /// Up to `limit` dead letters, oldest first, after the one with id `after` (empty: from the
    /// first).
    virtual asio::awaitable<std::vector<dead_letter>> dead_letters(std::size_t limit,
                                                                   std::string after) = 0;
    /// Makes a dead letter pending again, due now, with its attempts reset; false if there is no
    /// dead letter with that id.
    virtual asio::awaitable<bool> requeue(std::string id) = 0;
    /// Deletes a dead letter; false if there is none with that id.
    virtual asio::awaitable<bool> discard(std::string id) = 0;

    /// Deletes at most `batch` messages delivered at or before `before`; returns how many.
    virtual asio::awaitable<std::size_t>
    clean_delivered(std::chrono::system_clock::time_point before, std::size_t batch) = 0;

    /// Sets the function called (on any thread, without blocking) after a commit that added
    /// messages; empty to remove it. One relay per outbox object sets it (several relays, in one
    /// process or several, each have an outbox object of their own over the same database).
    virtual void on_commit(std::function<void()> wake) = 0;
};

DTX_NAMESPACE_END

#endif
