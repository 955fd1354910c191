#ifndef DTX_DETAIL_BATCH_QUEUE_HPP
#define DTX_DETAIL_BATCH_QUEUE_HPP

// The group-commit machinery shared by the durable journals and the barrier: coroutines push jobs
// from any thread; one thread of the queue's own takes everything queued (up to a limit) and hands
// it to `execute` as one batch, so that one database transaction and one fsync serve them all.
// Results reach the waiting coroutines through await_result(), on their own executors.

#include <dtx/detail/config.hpp>
#include <dtx/version.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace detail {

/// Delivers a result computed on another thread to a waiting coroutine, on its executor.
template <class R>
using deliver_fn = std::function<void(std::exception_ptr, R)>;

/// Where a result computed on another thread resumes its waiter, and how it gets there.
///
/// The waiter's executor is often a strand, whose copies share state that its io_context owns:
/// the last copy released after the io_context was destroyed would touch freed memory. Once the
/// result is posted, the waiter may resume and its io_context be destroyed at any moment, so the
/// delivering thread must hold no copy after the post. A waiter on an io_context (directly or
/// through strands) is therefore reached through the io_context's own executor (a plain pointer,
/// nothing shared), and the strand travels inside the posted handler, which dispatches to it on the
/// io_context's thread.
class resume_target {
public:
    explicit resume_target(asio::any_io_executor ex)
        : ex_(std::move(ex))
        , io_(io_of(ex_)) {}

    bool operator==(const resume_target& o) const { return ex_ == o.ex_; }

    /// Posts `fn` to the waiter's executor; leaves this target empty.
    template <class Fn>
    void post(Fn fn) {
        if (io_) {
            asio::post(*io_, [ex = std::exchange(ex_, {}), fn = std::move(fn)]() mutable {
                asio::dispatch(ex, std::move(fn));
            });
        } else { // another kind of context: no better than posting to it
            asio::post(ex_, std::move(fn));
            ex_ = {};
        }
    }

private:
    using io_executor = asio::io_context::executor_type;

    /// The io_context behind `ex`, directly or through strands; none for other contexts.
    static std::optional<io_executor> io_of(const asio::any_io_executor& ex) {
        if (const auto* io = ex.target<io_executor>())
            return *io;
        if (const auto* strand = ex.target<asio::strand<io_executor>>())
            return strand->get_inner_executor();
        if (const auto* strand = ex.target<asio::strand<asio::any_io_executor>>())
            return io_of(strand->get_inner_executor());
        return std::nullopt;
    }

    asio::any_io_executor ex_;
    std::optional<io_executor> io_;
};

/// While one lives on a thread, results delivered (by await_result) on that thread are held,
/// and posted when it is destroyed: one handler per executor, which resumes that executor's
/// waiters one after another. A batch's waiters then cost their io_context one wake-up, not one
/// each.
class delivery_batch {
public:
    delivery_batch() noexcept
        : outer_(current_) {
        current_ = this;
    }
    delivery_batch(const delivery_batch&) = delete;
    delivery_batch& operator=(const delivery_batch&) = delete;
    ~delivery_batch() {
        current_ = outer_;
        for (auto& g : groups_) {
            if (g.fns.size() == 1) {
                g.to.post(std::move(g.fns.front()));
                continue;
            }
            g.to.post([fns = std::move(g.fns)]() mutable {
                std::exception_ptr first;
                for (auto& f : fns) {
                    try {
                        f();
                    } catch (...) {
                        if (!first)
                            first = std::current_exception();
                    }
                }
                if (first)
                    std::rethrow_exception(first);
            });
        }
    }

    /// The batch open on this thread, if any.
    static delivery_batch* current() noexcept { return current_; }

    void add(resume_target to, std::function<void()> fn) {
        for (auto& g : groups_)
            if (g.to == to) {
                g.fns.push_back(std::move(fn));
                return;
            }
        groups_.push_back(group{std::move(to), {}});
        groups_.back().fns.push_back(std::move(fn));
    }

private:
    struct group {
        resume_target to;
        std::vector<std::function<void()>> fns;
    };
    std::vector<group> groups_;
    delivery_batch* outer_;
    static inline thread_local delivery_batch* current_ = nullptr;
};

/// Suspends the calling coroutine until the function passed to `start` is called (from any
/// thread, exactly once) with an exception or a result. Keeps the coroutine's io_context busy
/// meanwhile, so that it does not run out of work. The delivering thread keeps nothing of the
/// coroutine's after the call (see resume_target).
template <class R, class Start>
asio::awaitable<R> await_result(Start start) {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
        [start = std::move(start)](auto handler) mutable {
            using handler_type = decltype(handler);
            struct waiter {
                resume_target to;
                // Released by the handler, on the io_context's thread: work released elsewhere
                // could be the last, and stop an io_context being destroyed meanwhile.
                asio::executor_work_guard<asio::any_io_executor> work;
                handler_type h;
            };
            auto ex = asio::get_associated_executor(handler);
            auto w = std::make_shared<std::optional<waiter>>(
                waiter{resume_target(ex), asio::executor_work_guard<asio::any_io_executor>(ex),
                       std::move(handler)});
            start(deliver_fn<R>([w](std::exception_ptr e, R r) mutable {
                resume_target to = std::move((*w)->to);
                // The handler takes this thread's reference and destroys the waiter on the
                // io_context's thread; copies of this function share the emptied one.
                auto resume = [w = std::move(w), e, r = std::move(r)]() mutable {
                    (*w)->work.reset();
                    handler_type h = std::move((*w)->h);
                    w->reset();
                    std::move(h)(e, std::move(r));
                };
                if (auto* batch = delivery_batch::current())
                    batch->add(std::move(to), std::move(resume));
                else
                    to.post(std::move(resume));
            }));
        },
        asio::use_awaitable);
}

template <class Job>
class batch_queue {
public:
    struct options {
        std::size_t max_batch = 1024;
        /// `on_idle` runs on the queue's thread this often (between batches).
        std::chrono::milliseconds idle_interval = std::chrono::minutes(1);
        /// A job pushed as not urgent waits at most this long for an urgent one to share its
        /// batch (a batch of lazy jobs alone costs a commit that nobody waits for).
        std::chrono::milliseconds lazy_delay{20};
        /// After a batch the thread polls this long for an urgent job before it sleeps: a
        /// submitter that answers quickly (the next write of the same transaction) then does not
        /// wait for the thread to be woken.
        std::chrono::microseconds spin{0};
    };

    /// Starts the thread: `execute(batch)` runs every batch, `on_idle()` the periodic work. Both
    /// run on the queue's thread only; exceptions escaping `on_idle` are ignored (it is retried
    /// at the next interval).
    batch_queue(options o, std::function<void(std::vector<Job>&)> execute,
                std::function<void()> on_idle)
        : opts_(o)
        , execute_(std::move(execute))
        , on_idle_(std::move(on_idle)) {
        thread_ = std::thread([this] { loop(); });
    }
    batch_queue(const batch_queue&) = delete;
    batch_queue& operator=(const batch_queue&) = delete;

    /// Executes everything already pushed, then stops.
    ~batch_queue() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
            stop_seen_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }

    /// Queues `job`; false (and `job` untouched) if the queue is stopping. A job that is not
    /// `urgent` may wait up to `lazy_delay` for company (see options).
    bool push(Job& job, bool urgent = true) {
        bool wake = urgent;
        {
            std::lock_guard lock(mu_);
            if (stopping_)
                return false;
            wake = wake || queue_.empty(); // the thread's wait must now end by the lazy delay
            queue_.push_back({std::move(job), urgent, std::chrono::steady_clock::now()});
            if (urgent)
                urgent_.fetch_add(1, std::memory_order_relaxed);
        }
        if (wake)
            cv_.notify_one();
        return true;
    }

    /// True when nothing is queued (for idle work that should give way to jobs).
    bool idle() const {
        std::lock_guard lock(mu_);
        return queue_.empty();
    }

private:
    struct entry {
        Job job;
        bool urgent;
        std::chrono::steady_clock::time_point pushed;
    };

    /// Polls for an urgent job (or a stop) for up to `opts_.spin`, without the lock.
    void spin_for_work() const {
        if (opts_.spin <= std::chrono::microseconds::zero())
            return;
        const auto until = std::chrono::steady_clock::now() + opts_.spin;
        while (urgent_.load(std::memory_order_relaxed) == 0 &&
               !stop_seen_.load(std::memory_order_relaxed) &&
               std::chrono::steady_clock::now() < until) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#else
            std::this_thread::yield();
#endif
        }
    }

    void loop() {
        std::vector<Job> batch;
        auto next_idle = std::chrono::steady_clock::now() + opts_.idle_interval;
        for (;;) {
            {
                std::unique_lock lock(mu_);
                // Polls (once after a batch, and once after each wake-up that brought no urgent
                // job, such as a lazy job's: urgent ones tend to follow), then sleeps.
                bool may_spin = true;
                for (;;) {
                    if (stopping_ || urgent_.load(std::memory_order_relaxed) > 0)
                        break;
                    auto until = next_idle;
                    if (!queue_.empty())
                        until = std::min(until, queue_.front().pushed + opts_.lazy_delay);
                    if (std::chrono::steady_clock::now() >= until)
                        break;
                    if (may_spin && opts_.spin > std::chrono::microseconds::zero()) {
                        lock.unlock();
                        spin_for_work();
                        lock.lock();
                        may_spin = false;
                        continue;
                    }
                    cv_.wait_until(lock, until);
                    may_spin = true;
                }
                if (queue_.empty() && stopping_)
                    return;
                while (!queue_.empty() && batch.size() < opts_.max_batch) {
                    if (queue_.front().urgent)
                        urgent_.fetch_sub(1, std::memory_order_relaxed);
                    batch.push_back(std::move(queue_.front().job));
                    queue_.pop_front();
                }
            }
            if (!batch.empty()) {
                delivery_batch deliveries; // the batch's waiters resume together, after it
                execute_(batch);
            }
            batch.clear();
            if (std::chrono::steady_clock::now() >= next_idle) {
                if (on_idle_) {
                    try {
                        on_idle_();
                    } catch (...) {
                    }
                }
                next_idle = std::chrono::steady_clock::now() + opts_.idle_interval;
            }
        }
    }

    options opts_;
    std::function<void(std::vector<Job>&)> execute_;
    std::function<void()> on_idle_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<entry> queue_;
    std::atomic<std::size_t> urgent_{0}; // urgent jobs in queue_ (written under mu_)
    bool stopping_ = false;
    std::atomic<bool> stop_seen_{false};
    std::thread thread_;
};

} // namespace detail
DTX_NAMESPACE_END

#endif
