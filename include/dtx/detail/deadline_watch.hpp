#ifndef DTX_DETAIL_DEADLINE_WATCH_HPP
#define DTX_DETAIL_DEADLINE_WATCH_HPP

// Timeouts for branch calls without a timer per call.
//
// A call links a `watch_entry` (which lives in its coroutine frame) into the coordinator's watch
// for as long as it runs. One steady_timer serves every entry: it is armed for the earliest
// deadline, and re-armed only when a new entry's deadline is earlier than the one it waits for.
// Calls mostly share one timeout, so new deadlines come later than the armed one and a call costs
// two pointer updates. When the timer fires, every overdue entry is marked and its coroutine is
// sent a terminal cancellation through the entry's signal.
//
// Not thread-safe: used only from the coordinator's executor (one thread, or a strand).

#include <dtx/detail/config.hpp>
#include <dtx/version.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>

DTX_NAMESPACE_BEGIN
namespace detail {

class deadline_watch;

class watch_entry {
public:
    watch_entry() = default;
    watch_entry(const watch_entry&) = delete;
    watch_entry& operator=(const watch_entry&) = delete;
    ~watch_entry();

    /// The deadline passed while the entry was watched (its coroutine was sent a cancellation).
    bool expired() const noexcept { return expired_; }

private:
    friend class deadline_watch;
    deadline_watch* watch_ = nullptr;
    std::chrono::steady_clock::time_point deadline_{};
    asio::cancellation_signal* signal_ = nullptr;
    watch_entry* prev_ = nullptr;
    watch_entry* next_ = nullptr;
    bool expired_ = false;
};

class deadline_watch {
public:
    explicit deadline_watch(asio::any_io_executor ex)
        : timer_(std::move(ex)) {}
    deadline_watch(const deadline_watch&) = delete;
    deadline_watch& operator=(const deadline_watch&) = delete;
    ~deadline_watch() {
        while (head_)
            unlink(*head_);
    }

    /// Watches `e` until `deadline`; at the deadline, `signal` is emitted (terminal). The entry
    /// must be removed (or destroyed) before `signal` is.
    void add(watch_entry& e, std::chrono::steady_clock::time_point deadline,
             asio::cancellation_signal& signal) {
        e.watch_ = this;
        e.deadline_ = deadline;
        e.signal_ = &signal;
        e.expired_ = false;
        e.prev_ = nullptr;
        e.next_ = head_;
        if (head_)
            head_->prev_ = &e;
        head_ = &e;
        if (!armed_ || deadline < armed_for_)
            arm(deadline);
    }

    void remove(watch_entry& e) noexcept {
        if (e.watch_ == this)
            unlink(e);
    }

    /// Cancels the timer if no call is watched, so that an io_context with nothing else to do
    /// can return from run(). Called when the last transaction of the coordinator has ended;
    /// between transactions the timer stays armed, which saves re-arming it for every call.
    void release_if_idle() {
        if (head_ || !armed_)
            return;
        armed_ = false;
        timer_.cancel();
    }

private:
    void unlink(watch_entry& e) noexcept {
        if (e.prev_)
            e.prev_->next_ = e.next_;
        else
            head_ = e.next_;
        if (e.next_)
            e.next_->prev_ = e.prev_;
        e.prev_ = e.next_ = nullptr;
        e.watch_ = nullptr;
    }

    void arm(std::chrono::steady_clock::time_point when) {
        armed_ = true;
        armed_for_ = when;
        timer_.expires_at(when);
        timer_.async_wait([this, when](boost::system::error_code ec) {
            // A re-arm cancels the previous wait; only the wait for the current time acts.
            if (ec || !armed_ || armed_for_ != when)
                return;
            armed_ = false;
            fire();
        });
    }

    void fire() {
        const auto now = std::chrono::steady_clock::now();
        bool any = false;
        std::chrono::steady_clock::time_point next{};
        for (watch_entry* e = head_; e;) {
            watch_entry* after = e->next_;
            if (e->deadline_ <= now) {
                e->expired_ = true;
                asio::cancellation_signal* s = e->signal_;
                unlink(*e);
                s->emit(asio::cancellation_type::terminal);
            } else if (!any || e->deadline_ < next) {
                any = true;
                next = e->deadline_;
            }
            e = after;
        }
        if (any)
            arm(next);
    }

    asio::steady_timer timer_;
    watch_entry* head_ = nullptr;
    bool armed_ = false;
    std::chrono::steady_clock::time_point armed_for_{};
};

inline watch_entry::~watch_entry() {
    if (watch_)
        watch_->remove(*this);
}

} // namespace detail
DTX_NAMESPACE_END

#endif
