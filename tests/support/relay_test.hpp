#ifndef DTX_TESTS_SUPPORT_RELAY_TEST_HPP
#define DTX_TESTS_SUPPORT_RELAY_TEST_HPP

// What the outbox tests of every database share: waiting for a condition (wait_until,
// messaging.hpp), stopping a relay, settling one message by hand, and a publisher that logs what it
// delivered.

#include <dtx/outbox_store.hpp>
#include <dtx/publisher.hpp>
#include <dtx/relay.hpp>

#include <chrono>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "messaging.hpp"

namespace dtx::test {

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
