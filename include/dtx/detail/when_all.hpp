#ifndef DTX_DETAIL_WHEN_ALL_HPP
#define DTX_DETAIL_WHEN_ALL_HPP

#include <chrono>
#include <memory>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <dtx/detail/config.hpp>

namespace dtx::detail {

/// Runs `ops` concurrently on the current executor and completes when every one has completed.
/// The operations report their own results; an exception escaping one is a bug and is rethrown
/// here after all have completed.
inline asio::awaitable<void> when_all(std::vector<asio::awaitable<void>> ops) {
    if (ops.size() == 1) {
        co_await std::move(ops.front());
        co_return;
    }
    auto ex = co_await asio::this_coro::executor;
    struct state {
        explicit state(asio::any_io_executor e, std::size_t n)
            : done(std::move(e), std::chrono::steady_clock::time_point::max()), left(n) {}
        asio::steady_timer done; // never expires: cancelled when the last op completes
        std::size_t left;
        std::exception_ptr error;
    };
    auto st = std::make_shared<state>(ex, ops.size());
    for (auto& op : ops) {
        asio::co_spawn(ex, std::move(op), [st](std::exception_ptr e) {
            if (e && !st->error) st->error = e;
            if (--st->left == 0) st->done.cancel();
        });
    }
    while (st->left > 0) co_await st->done.async_wait(asio::as_tuple(asio::use_awaitable));
    if (st->error) std::rethrow_exception(st->error);
}

} // namespace dtx::detail

#endif
