#ifndef DTX_RETRY_POLICY_HPP
#define DTX_RETRY_POLICY_HPP

// How often and how long dtx asks a branch again.
//
// Confirm, cancel and compensate must eventually succeed, so they are retried with capped
// exponential backoff and full jitter (a delay drawn uniformly from [0, min(cap, initial * m^n)]),
// which spreads the retries of many transactions after a participant outage. After `alert_after`
// failed attempts (and every `alert_after` attempts after that) the alert hook is called, and the
// retries go on: an alert tells an operator, it never ends a transaction.

#include <dtx/gid.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN

/// What the alert hook is told: which call keeps failing, how often, and the last reason.
struct retry_alert {
    std::string_view gid;
    std::string_view branch_id;
    std::string_view participant;
    std::string_view op;
    unsigned attempts;
    std::string_view last_error;
};

struct retry_policy {
    std::chrono::milliseconds initial_backoff{50};
    std::chrono::milliseconds max_backoff{10'000};
    double multiplier = 2.0;
    /// Stop after this many attempts (the transaction stays in the journal, and recovery takes it
    /// up again later). Empty: never stop.
    std::optional<unsigned> max_attempts{};
    /// Call `on_alert` after this many failed attempts, and again after each further such run.
    unsigned alert_after = 10;
    std::function<void(const retry_alert&)> on_alert{};

    /// The cap of the backoff before attempt number `attempt` + 1 (`attempt` >= 1 have failed).
    std::chrono::nanoseconds backoff_cap(unsigned attempt) const noexcept {
        double d = static_cast<double>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(initial_backoff).count());
        const double cap = static_cast<double>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(max_backoff).count());
        if (multiplier > 1.0 && d > 0.0)
            for (unsigned i = 1; i < attempt && d < cap; ++i)
                d *= multiplier;
        return std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(d, cap)));
    }

    /// A jittered delay in [0, backoff_cap(attempt)].
    std::chrono::nanoseconds next_delay(unsigned attempt) const noexcept {
        const auto cap = backoff_cap(attempt).count();
        if (cap <= 0)
            return std::chrono::nanoseconds(0);
        return std::chrono::nanoseconds(static_cast<std::int64_t>(
            detail::random_u64() % (static_cast<std::uint64_t>(cap) + 1)));
    }

    /// True if another attempt may follow `attempts` failed ones.
    bool may_retry(unsigned attempts) const noexcept {
        return !max_attempts || attempts < *max_attempts;
    }

    /// True if the alert hook is due after `attempts` failed ones.
    bool alert_due(unsigned attempts) const noexcept {
        return alert_after != 0 && attempts != 0 && attempts % alert_after == 0;
    }
};

DTX_NAMESPACE_END

#endif
