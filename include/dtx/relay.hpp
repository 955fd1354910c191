#ifndef DTX_RELAY_HPP
#define DTX_RELAY_HPP

// The relay: delivers the committed messages of an outbox (<dtx/outbox_store.hpp>) through a
// publisher (<dtx/publisher.hpp>), at least once, in commit order per key.
//
//   dtx::sqlite::outbox outbox({.path = "orders.db"});
//   dtx::http::publisher webhooks(http);
//   dtx::relay relay(ex, outbox, webhooks, {.schedule = dtx::delivery_schedule::notifications()});
//   relay.start();
//   ...
//   co_await relay.stop(); // lets the deliveries under way finish
//
// How it works:
//   - The outbox wakes the relay when a transaction that added messages commits, so the normal
//     path has no poll delay. It also polls every `poll_interval` (the fallback: messages left
//     by a relay that died, leases that expired), and sleeps no longer than until the next
//     message that is due (a retry, a delayed message).
//   - It claims due messages in batches with a lease (owner + lease-until) and publishes each batch
//     on its own, up to `max_in_flight` messages at once, so a slow destination never holds back
//     the keys of other batches. Several relays (processes) can share one outbox: a message is
//     delivered by one relay at a time. A relay that dies holding a lease leaves its messages to
//     be claimed again once the lease expires, which makes delivery at least once, never at most
//     once: consumers deduplicate by message id (<dtx/sqlite/inbox.hpp>).
//   - A batch holds at most the first undelivered message of each key, so it is published all at
//     once, and a message waits for every earlier message of its key: in flight, waiting for a
//     retry or parked. Different keys never wait for each other.
//   - A message is marked delivered only after the publisher said so. A failed one is tried
//     again on the `schedule` (or on its own, which `schedule_for` picks); after its last
//     attempt, or at once when the destination rejects it, it is parked as a dead letter with its
//     last error. dead_letters(), requeue() and discard() are the operator's tools.
//   - Delivered messages are deleted after `retention`, in batches of `cleanup_batch` rows.
//
// A dead letter holds its key: later messages with the same key wait until it is requeued (and
// delivered) or discarded. Order per key is a promise the consumer builds on ("shipped" after
// "paid"); delivering past a parked message would break it silently, at the moment something
// is already wrong, for exactly the entity involved. Parking the key keeps the damage to that one
// entity, is visible (dead letter, alert), and lets an operator decide: fix and requeue (order
// kept), or discard (skip it knowingly). Other keys flow meanwhile.
//
// Alerts (<dtx/delivery_alert.hpp>): every dead letter, and every retry from the `alert_after`-th
// failed attempt of a message on, is reported to `on_alert`, at most once per `alert_cooldown`
// and destination.
//
// Threads: the relay works on a strand of `ex`; start(), stop(), wake() and stats() may be
// called from any thread. It must outlive its run: destroy it after stop() completed.

#include <dtx/delivery_alert.hpp>
#include <dtx/delivery_schedule.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/gid.hpp>
#include <dtx/outbox_store.hpp>
#include <dtx/publisher.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN

struct relay_options {
    delivery_schedule schedule{};
    /// The schedule of a message that should not follow `schedule`, or null: messages of several
    /// kinds share an outbox and its relay, each retried on its own schedule (notifications do
    /// so: <dtx/notification.hpp>). The schedules it returns must live as long as the relay.
    std::function<const delivery_schedule*(const envelope&)> schedule_for{};
    /// Messages claimed (and published) at once.
    std::size_t batch = 64;
    /// Messages being published at once, in batches of their own: a slow destination holds back
    /// only its own keys, while the others' messages are claimed and published meanwhile.
    std::size_t max_in_flight = 1024;
    /// How long a claimed message is this relay's alone; longer than a publish can take.
    std::chrono::milliseconds lease{std::chrono::seconds(60)};
    /// The fallback poll; commits wake the relay at once.
    std::chrono::milliseconds poll_interval{std::chrono::seconds(5)};
    /// How long delivered messages are kept.
    std::chrono::milliseconds retention{std::chrono::hours(24)};
    std::size_t cleanup_batch = 500;
    std::chrono::milliseconds cleanup_interval{std::chrono::minutes(1)};
    /// Retries alert from this many failed attempts of a message on (0: only dead letters).
    unsigned alert_after = 5;
    std::chrono::milliseconds alert_cooldown{std::chrono::minutes(5)};
    std::function<void(const delivery_alert&)> on_alert{};
    /// The lease owner's name (empty: a new UUIDv7); unique among the relays of an outbox.
    std::string owner{};
};

/// Counters for monitoring and tests.
struct relay_stats {
    std::uint64_t claimed = 0;      ///< messages claimed (attempts started)
    std::uint64_t delivered = 0;    ///< messages the publisher delivered
    std::uint64_t retried = 0;      ///< failed attempts with another one scheduled
    std::uint64_t rejected = 0;     ///< messages the destination rejected (parked at once)
    std::uint64_t dead_letters = 0; ///< messages parked (rejected or out of attempts)
    std::uint64_t alerts = 0;       ///< calls of the alert hook
    std::uint64_t alerts_suppressed = 0;
    std::uint64_t cleaned = 0;      ///< delivered messages deleted
    std::uint64_t wakes = 0;        ///< claims that followed a commit's wake-up
    std::uint64_t polls = 0;        ///< claims that followed a timeout (poll or due message)
    std::uint64_t store_errors = 0; ///< claims, settlements or cleanups that threw
};

class relay {
public:
    relay(asio::any_io_executor ex, outbox_store& store, publisher& pub, relay_options o = {})
        : strand_(asio::make_strand(ex))
        , store_(store)
        , publisher_(pub)
        , opts_(std::move(o))
        , alerts_(opts_.alert_cooldown, opts_.on_alert)
        , signal_(std::make_shared<wake_signal>(strand_)) {
        if (opts_.owner.empty())
            opts_.owner = make_gid();
        if (opts_.batch == 0)
            opts_.batch = 1;
        store_.on_commit([s = std::weak_ptr<wake_signal>(signal_)] {
            if (auto p = s.lock())
                p->wake();
        });
    }
    relay(const relay&) = delete;
    relay& operator=(const relay&) = delete;
    ~relay() { store_.on_commit({}); }

    /// Starts delivering, on the relay's strand.
    void start() {
        signal_->stopping = false;
        running_ = true;
        asio::co_spawn(strand_, loop(), [this](std::exception_ptr) {
            running_ = false;
            signal_->finished.cancel();
        });
    }

    /// Stops claiming, and completes once the deliveries under way (their publishes and
    /// settlements) have finished.
    asio::awaitable<void> stop() {
        signal_->stopping = true;
        signal_->wake();
        co_await asio::post(strand_, asio::use_awaitable);
        while (running_)
            co_await signal_->finished.async_wait(asio::as_tuple(asio::use_awaitable));
    }

    /// Makes the relay claim at once (the outbox calls it after its commits).
    void wake() { signal_->wake(); }

    relay_stats stats() const {
        std::lock_guard lock(stats_mu_);
        return stats_;
    }
    const std::string& owner() const noexcept { return opts_.owner; }

    /// The operator's tools (see <dtx/outbox_store.hpp>); a requeued message goes out at once.
    asio::awaitable<std::vector<dead_letter>> dead_letters(std::size_t limit = 100,
                                                           std::string after = {}) {
        return store_.dead_letters(limit, std::move(after));
    }
    asio::awaitable<bool> requeue(std::string id) {
        const bool found = co_await store_.requeue(std::move(id));
        if (found)
            wake();
        co_return found;
    }
    asio::awaitable<bool> discard(std::string id) {
        const bool found = co_await store_.discard(std::move(id));
        if (found)
            wake(); // its key may have been waiting behind it
        co_return found;
    }

private:
    using system_clock = std::chrono::system_clock;

    /// Wake-ups from any thread: the flag says one came, the post cuts the current wait short.
    struct wake_signal : std::enable_shared_from_this<wake_signal> {
        explicit wake_signal(const asio::strand<asio::any_io_executor>& s)
            : timer(s)
            , finished(s, std::chrono::steady_clock::time_point::max()) {}
        void wake() {
            if (!woken.exchange(true))
                asio::post(timer.get_executor(),
                           [self = shared_from_this()] { self->timer.cancel(); });
        }
        std::atomic<bool> woken{false};
        std::atomic<bool> stopping{false};
        asio::steady_timer timer;
        asio::steady_timer finished; // cancelled when the loop ends
    };

    asio::awaitable<void> loop() {
        auto signal = signal_; // the loop's own reference: a late post finds it alive
        auto next_cleanup = std::chrono::steady_clock::now() + opts_.cleanup_interval;
        bool after_wake = true;
        while (!signal->stopping) {
            signal->woken = false;
            std::optional<system_clock::time_point> next_due;
            bool claimed_any = false;
            const std::size_t room =
                opts_.max_in_flight > in_flight_ ? opts_.max_in_flight - in_flight_ : 0;
            if (room > 0) {
                try {
                    outbox_claim c = co_await store_.claim(opts_.owner, opts_.lease,
                                                           std::min(opts_.batch, room));
                    count([&](relay_stats& s) {
                        (after_wake ? s.wakes : s.polls) += 1;
                        s.claimed += c.messages.size();
                    });
                    next_due = c.next_due;
                    if (!c.messages.empty()) {
                        claimed_any = true;
                        // Delivered on its own, so that a slow destination holds back only the
                        // keys in its batch: the loop claims the other keys' messages meanwhile.
                        in_flight_ += c.messages.size();
                        asio::co_spawn(strand_, deliver(std::move(c.messages)),
                                       [signal](std::exception_ptr) { signal->wake(); });
                    }
                } catch (const std::exception&) {
                    count([](relay_stats& s) { ++s.store_errors; });
                }
            }
            if (std::chrono::steady_clock::now() >= next_cleanup) {
                co_await clean();
                next_cleanup = std::chrono::steady_clock::now() + opts_.cleanup_interval;
            }
            // More messages may be due at once: claim again until a claim finds none. A batch's
            // settlement wakes the loop, for the next messages of its keys.
            if (claimed_any || signal->stopping)
                continue;
            after_wake = co_await sleep(room > 0 ? next_due : std::nullopt);
        }
        while (in_flight_ > 0) { // let the deliveries under way finish
            signal->woken = false;
            co_await sleep(std::nullopt);
        }
    }

    /// Waits for a wake-up, the poll interval or `due`: true if woken.
    asio::awaitable<bool> sleep(std::optional<system_clock::time_point> due) {
        auto wait = opts_.poll_interval;
        if (due) {
            const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
                *due - system_clock::now() + std::chrono::milliseconds(1));
            wait = std::max(std::chrono::milliseconds(0), std::min(wait, until));
        }
        if (signal_->woken)
            co_return true;
        signal_->timer.expires_after(wait);
        co_await signal_->timer.async_wait(asio::as_tuple(asio::use_awaitable));
        co_return signal_->woken.load();
    }

    /// Publishes a claimed batch and records what became of it.
    asio::awaitable<void> deliver(std::vector<envelope> batch) {
        std::vector<delivery_result> results;
        try {
            results = co_await publisher_.publish(batch);
        } catch (const std::exception& e) {
            results.assign(batch.size(), delivery_result::retry_later(e.what()));
        }
        results.resize(batch.size(),
                       delivery_result::retry_later("the publisher gave no result for it"));
        std::vector<outbox_settlement> settled;
        settled.reserve(batch.size());
        const auto now = system_clock::now();
        for (std::size_t i = 0; i < batch.size(); ++i)
            settled.push_back(decide(batch[i], std::move(results[i]), now));
        try {
            co_await store_.settle(opts_.owner, std::move(settled));
        } catch (const std::exception&) {
            // The leases expire and the messages are delivered again: at least once.
            count([](relay_stats& s) { ++s.store_errors; });
        }
        in_flight_ -= batch.size();
    }

    outbox_settlement decide(const envelope& e, delivery_result r, system_clock::time_point now) {
        outbox_settlement s{e.id, r.status, std::move(r.error), {}};
        if (s.status == delivery_status::delivered) {
            count([](relay_stats& st) { ++st.delivered; });
            return s;
        }
        std::optional<std::chrono::milliseconds> delay;
        if (s.status == delivery_status::retry) {
            const delivery_schedule* own = opts_.schedule_for ? opts_.schedule_for(e) : nullptr;
            delay = (own ? *own : opts_.schedule).delay_after(e.attempt);
        }
        if (delay) {
            // Rounded up to a whole millisecond, the finest an outbox keeps: never retried early.
            s.retry_at = std::chrono::ceil<std::chrono::milliseconds>(now + *delay);
            count([](relay_stats& st) { ++st.retried; });
            if (opts_.alert_after != 0 && e.attempt >= opts_.alert_after)
                alert(e, s.error, false);
            return s;
        }
        const bool rejected = s.status == delivery_status::rejected;
        s.status = delivery_status::rejected; // park it
        count([&](relay_stats& st) {
            st.rejected += rejected;
            ++st.dead_letters;
        });
        alert(e, s.error, true);
        return s;
    }

    void alert(const envelope& e, const std::string& error, bool dead_letter) {
        const bool called = alerts_.report({e.destination, e.id, error, e.attempt, dead_letter, 0});
        count([&](relay_stats& s) { (called ? s.alerts : s.alerts_suppressed) += 1; });
    }

    asio::awaitable<void> clean() {
        const auto before = system_clock::now() - opts_.retention;
        try {
            for (;;) {
                const std::size_t n = co_await store_.clean_delivered(before, opts_.cleanup_batch);
                count([&](relay_stats& s) { s.cleaned += n; });
                if (n < opts_.cleanup_batch || signal_->stopping || signal_->woken)
                    break;
            }
        } catch (const std::exception&) {
            count([](relay_stats& s) { ++s.store_errors; });
        }
    }

    template <class F>
    void count(F f) {
        std::lock_guard lock(stats_mu_);
        f(stats_);
    }

    asio::strand<asio::any_io_executor> strand_;
    outbox_store& store_;
    publisher& publisher_;
    relay_options opts_;
    alert_throttle alerts_;
    std::shared_ptr<wake_signal> signal_;
    std::atomic<bool> running_{false};
    std::size_t in_flight_ = 0; // messages claimed and not yet settled (on the strand)
    mutable std::mutex stats_mu_;
    relay_stats stats_;
};

DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
