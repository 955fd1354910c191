#ifndef DTX_DELIVERY_ALERT_HPP
#define DTX_DELIVERY_ALERT_HPP

// The alert hook of the relay, and its cooldown.
//
// A destination that is down makes every one of its messages fail, again and again; an alert per
// failure (DTM's way) buries the one that matters, and an alert only once (CAP's way) hides a
// second outage. So alerts are counted per destination: the first one in a window (`cooldown`)
// calls the hook, the others of that window are only counted, and the next call of the hook says
// how many were held back.
//
//   dtx::relay_options o;
//   o.alert_cooldown = std::chrono::minutes(5);
//   o.on_alert = [](const dtx::delivery_alert& a) {
//       std::cerr << "messages to " << a.destination << " failing: " << a.error << " ("
//                 << a.suppressed << " more alerts held back)\n";
//   };

#include <dtx/version.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN

/// What the alert hook hears.
struct delivery_alert {
    std::string_view destination;
    std::string_view message_id;
    std::string_view error;   ///< the last error, valid UTF-8
    unsigned attempts;        ///< attempts of this message so far
    bool dead_letter;         ///< the message was parked (its last attempt, or rejected)
    std::uint64_t suppressed; ///< alerts for this destination held back since the last call
};

/// Calls a hook at most once per cooldown window and destination.
class alert_throttle {
public:
    using clock = std::chrono::steady_clock;

    alert_throttle(std::chrono::milliseconds cooldown,
                   std::function<void(const delivery_alert&)> hook)
        : cooldown_(cooldown)
        , hook_(std::move(hook)) {}

    /// Reports `a` (its `suppressed` is filled in here): true if the hook was called.
    bool report(delivery_alert a, clock::time_point now = clock::now()) {
        if (!hook_)
            return false;
        auto [it, first] = windows_.try_emplace(std::string(a.destination));
        window& w = it->second;
        if (!first && now - w.opened < cooldown_) {
            ++w.suppressed;
            return false;
        }
        w.opened = now;
        a.suppressed = w.suppressed;
        w.suppressed = 0;
        hook_(a);
        return true;
    }

private:
    struct window {
        clock::time_point opened{};
        std::uint64_t suppressed = 0;
    };
    std::chrono::milliseconds cooldown_;
    std::function<void(const delivery_alert&)> hook_;
    std::map<std::string, window, std::less<>> windows_;
};

DTX_NAMESPACE_END

#endif
