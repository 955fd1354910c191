#ifndef DTX_DETAIL_BRANCH_CALL_HPP
#define DTX_DETAIL_BRANCH_CALL_HPP

// Branch calls: one call of a participant bounded by its timeout, and the one retry loop around
// it, for tries and actions (asked again while pending, within the deadline) and for phase 2
// (asked again until success, with alerts, the lease renewed before each wait).

#include <dtx/detail/config.hpp>
#include <dtx/detail/deadline_watch.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

/// Calls one branch, bounded by `timeout` (zero: unbounded). Never throws: exceptions, a missing
/// participant and timeouts come back as unknown results. `sig` is the signal bound to the calling
/// coroutine: at the timeout the watch emits it, which cancels whatever the participant awaits. A
/// participant that ignores cancellation delays the transaction until it returns, and its late
/// answer counts as a timeout.
inline asio::awaitable<call_result> engine::call(std::shared_ptr<tx_state> st, std::size_t idx,
                                                 branch_op op, std::chrono::nanoseconds timeout,
                                                 asio::cancellation_signal& sig) {
    if (halted_)
        co_await halt();
    const live_branch& b = st->branches[idx];
    call_result r;
    if (!b.target) {
        r = call_result::unknown(errc::unknown_participant,
                                 "no participant is registered as '" + b.rec.participant + "'");
    } else {
        watch_entry entry;
        if (timeout > std::chrono::nanoseconds::zero())
            watch_.add(entry, std::chrono::steady_clock::now() + timeout, sig);
        std::exception_ptr thrown;
        try {
            const branch_request req{
                st->gid, b.rec.branch_id, op, b.rec.payload.json(), st->trace.traceparent(),
                st->kind};
            const outcome o = co_await b.target->call(req);
            r = call_result::from_outcome(o);
        } catch (...) {
            thrown = std::current_exception();
        }
        watch_.remove(entry);
        if (entry.expired()) {
            r = call_result::timed_out(timeout);
            co_await asio::this_coro::reset_cancellation_state(); // the timeout's, not ours
        } else if (thrown) {
            r = call_result::from_exception(thrown);
        }
    }
    if (should_halt({fault_site::branch_call, st->gid, b.rec.branch_id, op, fault_step::call}))
        co_await halt();
    co_return r;
}

/// Sends `op` to one branch, and again after a wait while `mode` and `policy` allow it. Returns the
/// last answer: for `first_phase` the first that is not pending (past the attempt limit or the
/// deadline: unknown); otherwise success, or (`until_answer`) failure, or the answer on which it
/// gave up (the attempt limit, or the lease taken over by another coordinator).
inline asio::awaitable<call_result> engine::call_with_retries(std::shared_ptr<tx_state> st,
                                                              std::size_t idx, branch_op op,
                                                              const retry_policy& policy,
                                                              retry_mode mode,
                                                              asio::cancellation_signal& sig) {
    const bool first_phase = mode == retry_mode::first_phase;
    for (unsigned attempts = 1;; ++attempts) {
        std::chrono::nanoseconds timeout = opts_.call_timeout;
        if (first_phase) {
            auto left = st->deadline - wall_clock::now();
            if (left <= wall_clock::duration::zero()) {
                call_result late = call_result::unknown(errc::deadline_exceeded,
                                                        "the transaction deadline passed");
                co_return late;
            }
            const auto limit = timeout;
            timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(left);
            if (limit > std::chrono::nanoseconds::zero())
                timeout = std::min(timeout, limit);
        }
        call_result r = co_await call(st, idx, op, timeout, sig);
        if (first_phase
                ? r.k != call_result::kind::pending
                : r.ok() || (mode == retry_mode::until_answer && r.k == call_result::kind::failure))
            co_return r;
        if (!first_phase && policy.on_alert && policy.alert_due(attempts)) {
            const auto& b = st->branches[idx].rec;
            policy.on_alert(retry_alert{st->gid, b.branch_id, b.participant, to_string(op),
                                        attempts, r.message});
        }
        if (!policy.may_retry(attempts)) {
            if (first_phase)
                r = call_result::unknown(errc::branch_timed_out, "still pending after " +
                                                                     std::to_string(attempts) +
                                                                     " asks: " + r.message);
            co_return r;
        }
        const auto delay = policy.next_delay(attempts);
        if (first_phase) {
            if (wall_clock::now() + delay >= st->deadline) {
                r = call_result::unknown(errc::deadline_exceeded,
                                         "still pending at the transaction deadline: " + r.message);
                co_return r;
            }
        } else if (!co_await keep_lease(st, delay)) {
            co_return r; // taken over: stand down
        }
        co_await sleep_for(delay);
    }
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
