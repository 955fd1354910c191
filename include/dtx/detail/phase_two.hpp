#ifndef DTX_DETAIL_PHASE_TWO_HPP
#define DTX_DETAIL_PHASE_TWO_HPP

// The decision and phase 2 of a transaction: once its body has returned, the decision is written
// (a confirm decision durably, a cancel one presumed if its write fails), then every branch is
// confirmed, cancelled or compensated until it answers success or the retry policy stops, and the
// end (or the branches done so far) is recorded.

#include <dtx/detail/branch_call.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/detail/when_all.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/journal.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

inline asio::awaitable<tx_result> engine::finish(std::shared_ptr<tx_state> st) {
    if (!st->begun) {
        // Nothing was written and nothing was sent: there is nothing to undo.
        co_return st->result(st->aborted ? tx_status::cancelled : tx_status::confirmed);
    }
    active_claim claim(active_, st->gid);
    if (!st->aborted && wall_clock::now() >= st->deadline)
        st->abort(errc::deadline_exceeded,
                  describe(st->gid) + ": deadline passed before the decision");

    if (!st->aborted) {
        const tx_status decided =
            st->kind == tx_kind::tcc ? tx_status::confirming : tx_status::confirmed;
        bool ok = false;
        try {
            // For a saga this write is its end: the caller is told "confirmed" only once it is
            // durable, or a recovery could still compensate what the caller thinks is done.
            const journal_write w{.gid = st->gid,
                                  .status = status_change{tx_status::trying, decided},
                                  .lease = decision_lease(*st)};
            ok = co_await write(w, durability::sync);
        } catch (const std::exception& e) {
            st->abort(errc::journal_failed,
                      describe(st->gid) + ": writing the decision failed (" + e.what() +
                          "); it may or may not be durable, recovery will finish the transaction");
            co_return st->result(tx_status::trying);
        }
        if (should_halt({fault_site::journal_write,
                         st->gid,
                         {},
                         branch_op::confirm,
                         st->kind == tx_kind::tcc ? fault_step::decide : fault_step::end}))
            co_await halt();
        if (!ok) {
            st->abort(errc::decision_conflict,
                      describe(st->gid) +
                          ": recovery cancelled the transaction before its decision");
            co_return st->result(tx_status::cancelling);
        }
        st->status = decided;
        if (st->kind == tx_kind::saga)
            co_return st->result(tx_status::confirmed);
        co_return co_await settle(st, branch_op::confirm, opts_.phase_two, st->signal);
    }

    // Presumed abort: a missing cancel decision means the same as a written one, so a failed
    // write does not stop the cancellation.
    const journal_write w{.gid = st->gid,
                          .status = status_change{tx_status::trying, tx_status::cancelling},
                          .lease = decision_lease(*st)};
    const bool ok = co_await write_best_effort(w, durability::sync, fault_step::decide,
                                               branch_op::cancel, /*if_failed=*/true);
    if (!ok)
        co_return st->result(tx_status::cancelling); // recovery elsewhere is cancelling it
    st->status = tx_status::cancelling;
    const branch_op undo = st->kind == tx_kind::tcc ? branch_op::cancel : branch_op::compensate;
    co_return co_await settle(st, undo, opts_.phase_two, st->signal);
}

/// Confirm, cancel or compensate one branch until it answers success, or until `policy` says
/// stop. Returns whether the branch is done.
inline asio::awaitable<bool> engine::settle_branch(std::shared_ptr<tx_state> st, std::size_t idx,
                                                   branch_op op, const retry_policy& policy,
                                                   asio::cancellation_signal& sig) {
    const call_result r =
        co_await call_with_retries(st, idx, op, policy, retry_mode::until_success, sig);
    if (!r.ok())
        co_return false;
    st->branches[idx].rec.done = true;
    co_return true;
}

inline asio::awaitable<void> engine::settle_branch_void(std::shared_ptr<tx_state> st,
                                                        std::size_t idx, branch_op op,
                                                        const retry_policy* policy,
                                                        asio::cancellation_signal& sig) {
    co_await settle_branch(std::move(st), idx, op, *policy, sig);
}

/// Phase 2: sends `op` to every branch not yet done, then records the end. Sagas compensate
/// strictly newest first; TCC branches are confirmed or cancelled concurrently if so set.
inline asio::awaitable<tx_result> engine::settle(std::shared_ptr<tx_state> st, branch_op op,
                                                 const retry_policy& policy,
                                                 asio::cancellation_signal& sig) {
    const std::size_t n = st->branches.size();
    if (op == branch_op::compensate) {
        for (std::size_t i = n; i-- > 0;)
            if (!st->branches[i].rec.done && !co_await settle_branch(st, i, op, policy, sig))
                break;
    } else if (opts_.concurrent_phase_two) {
        boost::container::small_vector<std::size_t, 8> todo;
        for (std::size_t i = 0; i < n; ++i)
            if (!st->branches[i].rec.done)
                todo.push_back(i);
        co_await when_all(sig, todo.size(), [&](std::size_t k, asio::cancellation_signal& s) {
            return settle_branch_void(st, todo[k], op, &policy, s);
        });
    } else {
        for (std::size_t i = 0; i < n; ++i)
            if (!st->branches[i].rec.done)
                co_await settle_branch(st, i, op, policy, sig);
    }

    const tx_status from = st->status;
    const tx_status to =
        from == tx_status::confirming ? tx_status::confirmed : tx_status::cancelled;
    const bool all_done = std::all_of(st->branches.begin(), st->branches.end(),
                                      [](const live_branch& b) { return b.rec.done; });
    if (all_done) {
        // Lazy: losing this write only means phase 2 is repeated, which participants tolerate.
        const journal_write end{.gid = st->gid, .status = status_change{from, to}};
        co_await write_best_effort(end, durability::lazy, fault_step::end, op, false);
        st->status = to;
        co_return st->result(to);
    }

    std::vector<std::string> done;
    for (const auto& b : st->branches)
        if (b.rec.done)
            done.push_back(b.rec.branch_id);
    const journal_write progress{.gid = st->gid, .done_branches = done};
    co_await write_best_effort(progress, durability::lazy, fault_step::done, op, false);
    // Keep the cancel reason if there is one; otherwise say why phase 2 is not finished.
    tx_result r = st->result(from);
    if (!r.reason) {
        r.reason = make_error_code(errc::attempts_exhausted);
        r.message = describe(st->gid) + ": " + std::string(to_string(op)) +
                    " did not succeed everywhere within the attempt limit; recovery will finish it";
    }
    co_return r;
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
