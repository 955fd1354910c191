#ifndef DTX_TESTS_SUPPORT_RELAY_TEST_HPP
#define DTX_TESTS_SUPPORT_RELAY_TEST_HPP

// What the outbox tests of every database share: waiting for a condition, stopping a relay,
// settling one message by hand, and a publisher that logs what it delivered.

#include <dtx/outbox_store.hpp>
#include <dtx/publisher.hpp>
#include <dtx/relay.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <span>
#include <string>
#include <vector>

namespace dtx::test {

/// 1 once `done()` holds, 0 if it still does not after `limit`; polls every 2 ms.
template <class Pred>
asio::awaitable<int> eventually(Pred done, std::chrono::milliseconds limit) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) {
        t.expires_after(std::chrono::milliseconds(2));
        co_await t.async_wait(asio::use_awaitable);
    }
    co_return done() ? 1 : 0;
}

inline asio::awaitable<int> settled(outbox_store& o, std::string owner, outbox_settlement s) {
    std::vector<outbox_settlement> one;
    one.push_back(std::move(s));
    co_await o.settle(std::move(owner), std::move(one));
    co_return 0;
}

inline asio::awaitable<int> stopped(relay& r) {
    co_await r.stop();
    co_return 0;
}

/// Ids delivered, in order.
struct log_publisher : publisher {
    std::vector<std::string> delivered;
    asio::awaitable<std::vector<delivery_result>>
    publish(std::span<const envelope> batch) override {
        for (const envelope& e : batch)
            delivered.push_back(e.id);
        co_return std::vector<delivery_result>(batch.size(), delivery_result::delivered());
    }
};

} // namespace dtx::test

#endif
