#ifndef DTX_DETAIL_WHEN_ALL_HPP
#define DTX_DETAIL_WHEN_ALL_HPP

#include <dtx/detail/config.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <memory>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

/// Runs `make(i, signal)` for i in [0, n) concurrently on the current executor and completes when
/// every one has completed. Operation 0 runs in the current coroutine, whose signal is `own`; the
/// others run as coroutines of their own, each with `signal` as its cancellation slot, so that a
/// timeout can cancel what that coroutine awaits. The operations report their own results; an
/// exception escaping one is a bug and is rethrown here after all have completed.
template <class MakeOp>
asio::awaitable<void> when_all(asio::cancellation_signal& own, std::size_t n, MakeOp make) {
    if (n == 0)
        co_return;
    if (n == 1) {
        co_await make(std::size_t{0}, own);
        co_return;
    }
    auto ex = co_await asio::this_coro::executor;
    struct state {
        state(asio::any_io_executor e, std::size_t count)
            : done(std::move(e), std::chrono::steady_clock::time_point::max())
            , left(count)
            , signals(new asio::cancellation_signal[count]) {}
        asio::steady_timer done; // never expires: cancelled when the last op completes
        std::size_t left;
        std::exception_ptr error;
        std::unique_ptr<asio::cancellation_signal[]> signals;
    };
    auto st = std::make_shared<state>(ex, n - 1);
    for (std::size_t i = 1; i < n; ++i) {
        asio::cancellation_signal& sig = st->signals[i - 1];
        asio::co_spawn(ex, make(i, sig),
                       asio::bind_cancellation_slot(sig.slot(), [st](std::exception_ptr e) {
                           if (e && !st->error)
                               st->error = e;
                           if (--st->left == 0)
                               st->done.cancel();
                       }));
    }
    std::exception_ptr inline_error;
    try {
        co_await make(std::size_t{0}, own);
    } catch (...) {
        inline_error = std::current_exception();
    }
    // Operations that finished without suspending complete through the executor's queue: one
    // turn of it is usually enough, and cheaper than arming the latch.
    if (st->left > 0)
        co_await asio::post(ex, asio::use_awaitable);
    while (st->left > 0)
        co_await st->done.async_wait(asio::as_tuple(asio::use_awaitable));
    if (inline_error)
        std::rethrow_exception(inline_error);
    if (st->error)
        std::rethrow_exception(st->error);
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
