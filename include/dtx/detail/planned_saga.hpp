#ifndef DTX_DETAIL_PLANNED_SAGA_HPP
#define DTX_DETAIL_PLANNED_SAGA_HPP

// Sagas of planned steps: every step registered in one journal write marked `forward`, the actions
// sent one after another, the end written lazily; on a failed action, a durable cancel decision
// and compensation newest first. Recovery finishes one still trying forward: its actions again,
// in order, compensating only if one answers failure.

#include <dtx/detail/branch_call.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/first_phase.hpp>
#include <dtx/detail/phase_two.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/journal.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>

#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

/// The caller hears of success before the end record is durable: a recovery that finds the saga
/// unfinished sends the actions again (participants answer a repeat with their first answer) and
/// ends it the same way. If an action does not succeed, the saga is cancelled durably and the
/// steps whose actions were sent are compensated, newest first.
inline asio::awaitable<tx_result> engine::run_planned_saga(std::shared_ptr<tx_state> st,
                                                           branch_list specs) {
    active_claim claim(active_, st->gid); // a recovery pass in this process leaves it alone
    resolved steps;
    try {
        resolve(*st, specs, steps);
    } catch (const error&) {
        co_return st->result(tx_status::cancelled); // nothing written, nothing sent
    }
    if (steps.records.empty())
        co_return st->result(tx_status::confirmed);
    std::optional<std::string> begin_error = co_await begin_forward(st, steps);
    if (begin_error)
        co_return co_await abandon_planned(std::move(st), std::move(*begin_error));
    if (should_halt({fault_site::journal_write, st->gid, st->branches.back().rec.branch_id,
                     branch_op::action, fault_step::begin}))
        co_await halt();

    const std::size_t n = st->branches.size();
    std::size_t sent = 0;
    while (sent < n && !st->aborted) {
        const call_result r = co_await call_with_retries(st, sent, branch_op::action, opts_.pending,
                                                         retry_mode::first_phase, st->signal);
        const auto& b = st->branches[sent++].rec;
        if (!r.ok())
            st->abort(r.ec, describe(st->gid, b.branch_id, b.participant) +
                                ": action did not succeed: " + r.message);
    }
    if (!st->aborted) {
        // Lazy: if it is lost, recovery repeats the actions and ends the saga the same way.
        const journal_write end{.gid = st->gid,
                                .status = status_change{tx_status::trying, tx_status::confirmed}};
        co_await write_best_effort(end, durability::lazy, fault_step::end, branch_op::action,
                                   false);
        st->status = tx_status::confirmed;
        co_return st->result(tx_status::confirmed);
    }
    // The steps after the failed one were never sent: nothing to compensate there.
    std::vector<std::string> unsent;
    for (std::size_t i = sent; i < n; ++i) {
        st->branches[i].rec.done = true;
        unsent.push_back(st->branches[i].rec.branch_id);
    }
    asio::cancellation_signal& sig = st->signal;
    co_return co_await cancel_forward(std::move(st), std::move(unsent), opts_.phase_two, sig);
}

/// Begins `st` (its kind) recovered forward, with every branch of `steps`, leased until its
/// deadline, in one durable write; then `st` holds the branches. Returns why it failed, if it
/// did (the record may or may not be durable: see abandon_planned).
inline asio::awaitable<std::optional<std::string>>
engine::begin_forward(std::shared_ptr<tx_state> st, resolved& steps) {
    const journal_write w{.gid = st->gid,
                          .begin = begin_transaction{st->kind, st->deadline, /*forward=*/true},
                          .new_branches = {steps.records.data(), steps.records.size()},
                          .lease = lease_change{opts_.owner, st->deadline}};
    st->lease_until = st->deadline;
    std::optional<std::string> failed;
    try {
        if (!co_await write(w, durability::sync))
            failed = "the journal refused it";
    } catch (const std::exception& e) {
        failed = e.what();
    }
    if (!failed) {
        st->begun = true;
        steps.move_into(*st);
    }
    co_return failed;
}

/// The begin record of a planned saga (or a 2-phase message) may or may not be durable (its write
/// failed): end it as cancelled before the caller hears so, or a recovery could later run it
/// forward.
inline asio::awaitable<tx_result> engine::abandon_planned(std::shared_ptr<tx_state> st,
                                                          std::string why) {
    st->abort(make_error_code(errc::journal_failed),
              describe(st->gid) + ": registering the steps failed: " + why);
    const journal_write w{.gid = st->gid,
                          .status = status_change{tx_status::trying, tx_status::cancelled}};
    try {
        if (co_await write(w, durability::sync))
            co_return st->result(tx_status::cancelled);
    } catch (const error& e) {
        if (e.code() == errc::unknown_transaction)
            co_return st->result(tx_status::cancelled); // never begun
    } catch (const std::exception&) {
    }
    st->message += "; it may still be in the journal, and recovery would then finish it";
    co_return st->result(tx_status::trying);
}

/// Cancels a planned saga that is trying (an action did not succeed): records the decision, with
/// the steps that need no compensation, then compensates the others newest first.
inline asio::awaitable<tx_result> engine::cancel_forward(std::shared_ptr<tx_state> st,
                                                         std::vector<std::string> unsent,
                                                         const retry_policy& policy,
                                                         asio::cancellation_signal& sig) {
    bool ok = false;
    try {
        const journal_write w{.gid = st->gid,
                              .status = status_change{tx_status::trying, tx_status::cancelling},
                              .done_branches = {unsent.data(), unsent.size()},
                              .lease = lease_change{opts_.owner, next_lease(*st)}};
        ok = co_await write(w, durability::sync);
    } catch (const std::exception& e) {
        st->message += std::string("; recording the cancellation failed (") + e.what() +
                       "), recovery will finish the saga";
        co_return st->result(tx_status::trying);
    }
    if (should_halt(
            {fault_site::journal_write, st->gid, {}, branch_op::compensate, fault_step::decide}))
        co_await halt();
    if (!ok) {
        // Another coordinator took it over (its deadline had passed) and has ended or is ending it.
        st->message += "; another coordinator is finishing the saga";
        co_return st->result(tx_status::trying);
    }
    st->status = tx_status::cancelling;
    co_return co_await settle(st, branch_op::compensate, policy, sig);
}

/// Recovery of a planned saga still trying: its actions again, in order.
inline asio::awaitable<tx_result> engine::run_forward(std::shared_ptr<tx_state> st,
                                                      asio::cancellation_signal& sig) {
    const std::size_t n = st->branches.size();
    for (std::size_t i = 0; i < n; ++i) {
        const call_result r = co_await call_with_retries(
            st, i, branch_op::action, opts_.recovery_retry, retry_mode::until_answer, sig);
        if (r.ok())
            continue;
        if (r.k != call_result::kind::failure) {
            tx_result gave_up = st->result(tx_status::trying);
            gave_up.reason = make_error_code(errc::attempts_exhausted);
            gave_up.message =
                describe(st->gid) + ": an action did not answer within the attempt limit";
            co_return gave_up;
        }
        const auto& b = st->branches[i].rec;
        st->abort(make_error_code(errc::branch_failed),
                  describe(st->gid, b.branch_id, b.participant) +
                      ": action answered failure in recovery");
        std::vector<std::string> unsent;
        for (std::size_t k = i + 1; k < n; ++k) {
            st->branches[k].rec.done = true;
            unsent.push_back(st->branches[k].rec.branch_id);
        }
        co_return co_await cancel_forward(st, std::move(unsent), opts_.recovery_retry, sig);
    }
    const journal_write end{.gid = st->gid,
                            .status = status_change{tx_status::trying, tx_status::confirmed}};
    if (!co_await write_best_effort(end, durability::sync, fault_step::end, branch_op::action,
                                    false))
        co_return st->result(tx_status::trying);
    st->status = tx_status::confirmed;
    co_return st->result(tx_status::confirmed);
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
