#ifndef DTX_DETAIL_PREPARED_MESSAGE_HPP
#define DTX_DETAIL_PREPARED_MESSAGE_HPP

// 2-phase messages (two_phase_message.hpp): the message prepared (its branches and its
// check-back, branch "00", in one journal write marked `forward`, so that a claim never presumes
// it aborted), the caller's local transaction, the check-back asked when that transaction's
// outcome is unknown, then submit (trying -> confirming, durable) and delivery: phase 2 with
// op `action`, retried until success. Recovery asks the check-back of a message still trying and
// delivers one confirming.
//
// The check-back's branch "00" is held by the live state marked done: it is never delivered to.

#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/first_phase.hpp>
#include <dtx/detail/phase_two.hpp>
#include <dtx/detail/planned_saga.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/journal.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/two_phase_message.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

/// The branch id of a message's check-back (DTM's MsgDoBranch0).
inline constexpr const char* check_back_branch = "00";

inline asio::awaitable<tx_result> engine::run_message(std::shared_ptr<tx_state> st,
                                                      branch_list specs, std::string check_back,
                                                      message_local_transaction local) {
    active_claim claim(active_, st->gid); // a recovery pass in this process leaves it alone
    resolved steps;
    try {
        participant* asker = registry_.find(check_back);
        if (!asker)
            st->fail(errc::unknown_participant, describe(st->gid, check_back_branch, check_back) +
                                                    ": no check-back is registered as '" +
                                                    check_back + "'");
        if (!serves(asker->kind(), tx_kind::msg, branch_op::check_back))
            st->fail(errc::wrong_participant_kind,
                     describe(st->gid, check_back_branch, check_back) +
                         ": not a check-back (participant_registry::add_check_back)");
        resolve(*st, specs, steps);
        steps.records.insert(steps.records.begin(),
                             branch_record{check_back_branch, std::move(check_back), {}});
        steps.targets.insert(steps.targets.begin(), asker);
    } catch (const error&) {
        co_return st->result(tx_status::cancelled); // nothing written, nothing run or sent
    }
    std::optional<std::string> begin_error = co_await begin_forward(st, steps);
    if (begin_error) // the local transaction has not run: the message is abandoned
        co_return co_await abandon_planned(std::move(st), std::move(*begin_error));
    st->branches.front().rec.done = true;
    if (should_halt({fault_site::journal_write, st->gid, check_back_branch, branch_op::check_back,
                     fault_step::begin}))
        co_await halt();

    std::optional<outcome> said;
    std::string threw;
    try {
        said = co_await local(st->gid);
    } catch (const std::exception& e) {
        threw = e.what();
    } catch (...) {
        threw = "a non-standard exception";
    }
    call_result answer;
    if (said && (said->is_success() || said->is_failure())) {
        answer = call_result::from_outcome(*said);
        answer.message = "the local transaction answered " +
                         std::string(said->is_success() ? "success" : "failure: ") + answer.message;
    } else {
        // Unknown (it threw) or not yet (pending): the check-back knows, as DTM's DoAndSubmit
        // asks it.
        answer = co_await ask_check_back(st, st->signal);
        answer.message = "the local transaction " +
                         (said ? "answered pending" : "threw (" + threw + ")") +
                         "; the check-back: " + answer.message;
    }
    asio::cancellation_signal& sig = st->signal;
    co_return co_await decide_message(std::move(st), std::move(answer), opts_.phase_two, sig);
}

/// Asks the check-back (branch "00") whether the message's local transaction committed, once.
inline asio::awaitable<call_result> engine::ask_check_back(std::shared_ptr<tx_state> st,
                                                           asio::cancellation_signal& sig) {
    call_result r = co_await call(std::move(st), 0, branch_op::check_back, opts_.call_timeout, sig);
    if (r.ok() && r.message.empty())
        r.message = "committed";
    co_return r;
}

/// Submits and delivers the message (its local transaction committed), aborts it (it did not),
/// or leaves it prepared for recovery to ask the check-back again (no answer yet).
inline asio::awaitable<tx_result> engine::decide_message(std::shared_ptr<tx_state> st,
                                                         call_result answer,
                                                         const retry_policy& policy,
                                                         asio::cancellation_signal& sig) {
    if (answer.k == call_result::kind::failure) {
        st->abort(answer.ec, describe(st->gid) + ": aborted: " + answer.message);
        // Nothing is ever delivered, whether or not this write is durable: a recovery that
        // finds the message prepared asks the check-back, which answers failure again.
        const journal_write w{.gid = st->gid,
                              .status = status_change{tx_status::trying, tx_status::cancelled}};
        co_await write_best_effort(w, durability::sync, fault_step::decide, branch_op::check_back,
                                   false);
        co_return st->result(tx_status::cancelled);
    }
    if (!answer.ok()) {
        st->abort(answer.ec, describe(st->gid) + ": " + answer.message +
                                 "; the message stays prepared and recovery asks the check-back "
                                 "again");
        co_return st->result(tx_status::trying);
    }
    bool ok = false;
    try {
        const journal_write w{.gid = st->gid,
                              .status = status_change{tx_status::trying, tx_status::confirming},
                              .lease = decision_lease(*st)};
        ok = co_await write(w, durability::sync);
    } catch (const std::exception& e) {
        st->abort(errc::journal_failed,
                  describe(st->gid) + ": submitting failed (" + e.what() +
                      "); recovery will ask the check-back and deliver the message");
        co_return st->result(tx_status::trying);
    }
    if (should_halt(
            {fault_site::journal_write, st->gid, {}, branch_op::action, fault_step::decide}))
        co_await halt();
    if (!ok) {
        st->abort(errc::decision_conflict,
                  describe(st->gid) + ": another coordinator decided the message first");
        co_return st->result(tx_status::trying);
    }
    st->status = tx_status::confirming;
    co_return co_await settle(std::move(st), branch_op::action, policy, sig);
}

/// Recovery of a message: prepared, the check-back decides; submitted, it is delivered.
inline asio::awaitable<tx_result> engine::recover_message(std::shared_ptr<tx_state> st,
                                                          asio::cancellation_signal& sig) {
    if (!st->branches.empty())
        st->branches.front().rec.done = true; // the check-back: never delivered to
    if (st->status == tx_status::confirming)
        co_return co_await settle(std::move(st), branch_op::action, opts_.recovery_retry, sig);
    call_result answer = co_await ask_check_back(st, sig);
    answer.message = "the check-back: " + answer.message;
    co_return co_await decide_message(std::move(st), std::move(answer), opts_.recovery_retry, sig);
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
