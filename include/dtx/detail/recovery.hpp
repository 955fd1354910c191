#ifndef DTX_DETAIL_RECOVERY_HPP
#define DTX_DETAIL_RECOVERY_HPP

// Recovery passes: due unfinished transactions claimed from the journal in batches (with a lease,
// so that two coordinators never drive one at once), each driven to its end concurrently: decided
// ones through phase 2, planned sagas still trying forward, 2-phase messages through their
// check-back. Gids this process is driving itself
// are skipped.

#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/phase_two.hpp>
#include <dtx/detail/planned_saga.hpp>
#include <dtx/detail/prepared_message.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/detail/when_all.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/journal.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

inline asio::awaitable<recovery_report> engine::recover(recovery_options ro,
                                                        asio::cancellation_signal& sig) {
    recovery_report rep;
    std::unordered_set<std::string> seen;
    for (;;) {
        // Ask for more than a batch by what this pass left unfinished: with a short lease those
        // come back, and must not crowd out transactions not yet seen.
        const std::size_t limit = opts_.recovery_batch + rep.unfinished;
        std::vector<transaction_record> batch = co_await claim({.now = wall_clock::now(),
                                                                .owner = opts_.owner,
                                                                .lease = opts_.lease,
                                                                .limit = limit,
                                                                .take_over = ro.take_over});
        if (!batch.empty() && should_halt({fault_site::journal_write,
                                           batch.front().gid,
                                           {},
                                           branch_op::cancel,
                                           fault_step::claim}))
            co_await halt();
        std::vector<transaction_record> fresh;
        for (auto& rec : batch)
            if (seen.insert(rec.gid).second)
                fresh.push_back(std::move(rec));
        if (fresh.empty())
            break;
        rep.claimed += fresh.size();
        co_await when_all(sig, fresh.size(), [&](std::size_t i, asio::cancellation_signal& s) {
            return recover_one(std::move(fresh[i]), &rep, s);
        });
        if (batch.size() < limit)
            break;
    }
    co_return rep;
}

inline asio::awaitable<void> engine::recover_one(transaction_record rec, recovery_report* rep,
                                                 asio::cancellation_signal& sig) {
    auto st = std::make_shared<tx_state>();
    st->lease_until = wall_clock::now() + opts_.lease; // as claimed
    st->gid = std::move(rec.gid);
    st->kind = rec.kind;
    st->status = rec.status;
    st->deadline = rec.deadline;
    st->trace = trace_context::for_gid(st->gid);
    const bool forward = rec.forward && rec.kind == tx_kind::saga;
    st->begun = true;
    for (auto& b : rec.branches) {
        participant* p = registry_.find(b.participant);
        st->branches.push_back(live_branch{std::move(b), p});
    }
    active_claim claim(active_, st->gid);
    if (!claim.held()) {
        ++rep->skipped;
        co_return;
    }
    tx_result r;
    if (st->kind == tx_kind::msg) {
        r = co_await recover_message(st, sig);
    } else if (st->status == tx_status::trying && forward) {
        r = co_await run_forward(st, sig); // a planned saga
    } else {
        const branch_op op = st->status == tx_status::confirming ? branch_op::confirm
                             : st->kind == tx_kind::tcc          ? branch_op::cancel
                                                                 : branch_op::compensate;
        r = co_await settle(st, op, opts_.recovery_retry, sig);
    }
    if (is_final(r.status))
        ++rep->finished;
    else
        ++rep->unfinished;
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
