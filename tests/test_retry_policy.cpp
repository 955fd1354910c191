// retry_policy: capped exponential backoff with jitter, attempt limits and alerts
#include <dtx/retry_policy.hpp>

#include <doctest/doctest.h>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

TEST_CASE("retry_policy: backoff_cap doubles from the initial backoff up to the cap") {
    const retry_policy p{.initial_backoff = 10ms, .max_backoff = 100ms};
    CHECK(p.backoff_cap(1) == 10ms);
    CHECK(p.backoff_cap(2) == 20ms);
    CHECK(p.backoff_cap(3) == 40ms);
    CHECK(p.backoff_cap(4) == 80ms);
    CHECK(p.backoff_cap(5) == 100ms);
    CHECK(p.backoff_cap(6) == 100ms);
    CHECK(p.backoff_cap(1'000'000) == 100ms);
    CHECK(p.backoff_cap(UINT_MAX) == 100ms);

    const retry_policy triple{.initial_backoff = 1ms, .max_backoff = 1s, .multiplier = 3.0};
    CHECK(triple.backoff_cap(3) == 9ms);

    const retry_policy defaults{};
    CHECK(defaults.backoff_cap(1) == defaults.initial_backoff);
    CHECK(defaults.backoff_cap(100) == defaults.max_backoff);
}

TEST_CASE("retry_policy: next_delay is jittered within [0, cap]") {
    const retry_policy p{.initial_backoff = 1ms, .max_backoff = 8ms};
    for (unsigned attempt : {1u, 2u, 4u, 10u}) {
        CAPTURE(attempt);
        const auto cap = p.backoff_cap(attempt);
        std::set<std::int64_t> seen;
        bool low = false, high = false, in_range = true;
        for (int i = 0; i < 2000; ++i) {
            const auto d = p.next_delay(attempt);
            in_range = in_range && d >= std::chrono::nanoseconds::zero() && d <= cap;
            low = low || d < cap / 2;
            high = high || d > cap / 2;
            seen.insert(d.count());
        }
        CHECK(in_range);
        CHECK(low);  // full jitter: the whole range is used,
        CHECK(high); // not only the top of it
        CHECK(seen.size() > 1000);
    }
    const retry_policy zero{.initial_backoff = 0ms, .max_backoff = 0ms};
    CHECK(zero.next_delay(3) == std::chrono::nanoseconds::zero());
}

TEST_CASE("retry_policy: may_retry and alert_due") {
    const retry_policy forever{};
    for (unsigned n : {0u, 1u, 10u, 1'000'000u, UINT_MAX})
        CHECK(forever.may_retry(n));

    const retry_policy three{.max_attempts = 3};
    CHECK(three.may_retry(1));
    CHECK(three.may_retry(2));
    CHECK_FALSE(three.may_retry(3));
    CHECK_FALSE(three.may_retry(4));

    const retry_policy one{.max_attempts = 1};
    CHECK_FALSE(one.may_retry(1));

    const retry_policy every3{.alert_after = 3};
    std::vector<unsigned> due;
    for (unsigned n = 1; n <= 10; ++n)
        if (every3.alert_due(n))
            due.push_back(n);
    CHECK(due == std::vector<unsigned>{3, 6, 9});

    const retry_policy every1{.alert_after = 1};
    for (unsigned n = 1; n <= 5; ++n)
        CHECK(every1.alert_due(n));

    const retry_policy never{.alert_after = 0};
    for (unsigned n = 0; n <= 100; ++n)
        CHECK_FALSE(never.alert_due(n));

    const retry_policy defaults{};
    CHECK_FALSE(defaults.alert_due(9));
    CHECK(defaults.alert_due(10));
}
