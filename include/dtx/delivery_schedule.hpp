#ifndef DTX_DELIVERY_SCHEDULE_HPP
#define DTX_DELIVERY_SCHEDULE_HPP

// When the relay tries a message again after a failed delivery, and when it gives up.
//
//   auto events = dtx::delivery_schedule::backoff({.immediate = 3, .max_attempts = 20});
//   auto webhooks = dtx::delivery_schedule::notifications();
//   auto custom =
//       dtx::delivery_schedule::fixed({std::chrono::seconds(5), std::chrono::minutes(1)});
//
// - backoff(): a few immediate tries (a dropped connection, a restarting consumer), then capped
//   exponential backoff with jitter: the n-th delay is drawn from [cap/2, cap], where cap =
//   min(max, initial * multiplier^n) (retry_policy's cap), so the retries of many messages after
//   an outage spread out while none comes back at once.
// - fixed(): exactly the delays given, no jitter; one attempt more than delays.
// - notifications(): the payment providers' schedule for result notifications to a merchant:
//   15 s, 15 s, 30 s, 3 min, 10 min, 20 min, 30 min x3, 1 h, 3 h x3, 6 h x2, 24 h (about two days
//   in all, 17 attempts).
//
// After `max_attempts()` failed attempts a message is a dead letter: parked with its last error,
// until an operator requeues or discards it. `horizon()` bounds the time from the first attempt
// to the last; an inbox must remember message ids for longer than that.

#include <dtx/gid.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/version.hpp>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

DTX_NAMESPACE_BEGIN

class delivery_schedule {
public:
    struct backoff_options {
        /// Attempts after the first that follow at once.
        unsigned immediate = 2;
        std::chrono::milliseconds initial{1'000};
        std::chrono::milliseconds max{std::chrono::minutes(10)};
        double multiplier = 2.0;
        /// Attempts in all, the first included; after that many failures, a dead letter.
        unsigned max_attempts = 25;
    };

    /// The default: backoff({}).
    delivery_schedule()
        : delivery_schedule(backoff({})) {}

    static delivery_schedule backoff(backoff_options o) {
        delivery_schedule s(o.max_attempts);
        s.immediate_ = o.immediate;
        s.policy_.initial_backoff = o.initial;
        s.policy_.max_backoff = o.max;
        s.policy_.multiplier = o.multiplier;
        return s;
    }

    /// Exactly these delays between attempts: delays.size() + 1 attempts in all.
    static delivery_schedule fixed(std::vector<std::chrono::milliseconds> delays) {
        delivery_schedule s(static_cast<unsigned>(delays.size()) + 1);
        s.fixed_ = std::move(delays);
        s.is_fixed_ = true;
        return s;
    }
    static delivery_schedule fixed(std::initializer_list<std::chrono::milliseconds> delays) {
        return fixed(std::vector<std::chrono::milliseconds>(delays));
    }

    /// The payment providers' schedule for result notifications (see above).
    static delivery_schedule notifications() {
        using std::chrono::hours;
        using std::chrono::minutes;
        using std::chrono::seconds;
        return fixed({seconds(15), seconds(15), seconds(30), minutes(3), minutes(10), minutes(20),
                      minutes(30), minutes(30), minutes(30), hours(1), hours(3), hours(3), hours(3),
                      hours(6), hours(6), hours(24)});
    }

    unsigned max_attempts() const noexcept { return max_attempts_; }

    /// The delay before the next attempt once `failed` attempts (1 or more) have failed, or
    /// nothing if none is left: the message is a dead letter.
    std::optional<std::chrono::milliseconds> delay_after(unsigned failed) const {
        if (failed == 0)
            return std::chrono::milliseconds(0);
        if (failed >= max_attempts_)
            return std::nullopt;
        if (is_fixed_)
            return fixed_[failed - 1];
        if (failed <= immediate_)
            return std::chrono::milliseconds(0);
        const auto cap = std::chrono::duration_cast<std::chrono::milliseconds>(
                             policy_.backoff_cap(failed - immediate_))
                             .count();
        const auto half = cap / 2;
        return std::chrono::milliseconds(
            half + static_cast<std::int64_t>(detail::random_u64() %
                                             static_cast<std::uint64_t>(cap - half + 1)));
    }

    /// The longest time from the first attempt to the last (jitter at its highest).
    std::chrono::milliseconds horizon() const {
        std::chrono::milliseconds total{0};
        for (unsigned failed = 1; failed < max_attempts_; ++failed) {
            if (is_fixed_)
                total += fixed_[failed - 1];
            else if (failed > immediate_)
                total += std::chrono::duration_cast<std::chrono::milliseconds>(
                    policy_.backoff_cap(failed - immediate_));
        }
        return total;
    }

private:
    explicit delivery_schedule(unsigned max_attempts)
        : max_attempts_(max_attempts == 0 ? 1 : max_attempts) {}

    unsigned max_attempts_;
    unsigned immediate_ = 0;
    bool is_fixed_ = false;
    std::vector<std::chrono::milliseconds> fixed_{};
    retry_policy policy_{};
};

DTX_NAMESPACE_END

#endif
