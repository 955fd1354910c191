#ifndef DTX_DETAIL_FIRST_PHASE_HPP
#define DTX_DETAIL_FIRST_PHASE_HPP

// The first phase of a transaction begun by its body: branches numbered and resolved to their
// participants, registered in one journal write (the first one also begins the transaction), then
// their tries (TCC) or actions (saga) sent, concurrently if there are several.

#include <dtx/detail/branch_call.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/detail/when_all.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/journal.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

inline asio::awaitable<void> engine::add_branches(std::shared_ptr<tx_state> st, branch_list specs) {
    if (st->aborted)
        throw error(errc::transaction_aborted,
                    describe(st->gid) +
                        ": no branch can be added, the transaction is aborted: " + st->message);
    if (specs.empty())
        co_return;
    if (wall_clock::now() >= st->deadline)
        st->fail(errc::deadline_exceeded, describe(st->gid) + ": deadline passed");

    resolved fresh;
    resolve(*st, specs, fresh);

    journal_write w{.gid = st->gid, .new_branches = {fresh.records.data(), fresh.records.size()}};
    if (st->begun) {
        w.status = status_change{tx_status::trying, tx_status::trying};
    } else {
        // Nobody else recovers it while it is trying in time (a claim takes a `trying`
        // transaction only after its deadline), and once decided, it is recovered when this
        // lease has run out: for one lease's length at most, or until the deadline.
        w.begin = begin_transaction{st->kind, st->deadline};
        st->lease_until = std::min(st->deadline, wall_clock::now() + opts_.lease);
        w.lease = lease_change{opts_.owner, st->lease_until};
    }
    bool ok = false;
    try {
        ok = co_await write(w, durability::sync);
    } catch (const error& e) {
        st->fail(e.code(), describe(st->gid, fresh.records.front().branch_id) +
                               ": registering the branch failed: " + e.what());
    } catch (const std::exception& e) {
        st->fail(errc::journal_failed, describe(st->gid, fresh.records.front().branch_id) +
                                           ": registering the branch failed: " + e.what());
    }
    if (!ok)
        st->fail(errc::decision_conflict,
                 describe(st->gid, fresh.records.front().branch_id) +
                     ": the journal no longer holds the transaction as trying (recovery cancelled "
                     "it)");
    const bool first_write = !st->begun;
    st->begun = true;
    const std::size_t first = st->branches.size();
    fresh.move_into(*st);
    if (should_halt({fault_site::journal_write, st->gid, st->branches.back().rec.branch_id,
                     branch_op::try_, first_write ? fault_step::begin : fault_step::register_}))
        co_await halt();

    const branch_op op = st->kind == tx_kind::tcc ? branch_op::try_ : branch_op::action;
    const std::size_t n = st->branches.size() - first;
    boost::container::small_vector<call_result, 4> results(n);
    if (n == 1) {
        results[0] = co_await call_with_retries(
            st, first, op, opts_.pending, retry_mode::first_phase, st->signal); // two frames fewer
    } else {
        co_await when_all(st->signal, n, [&](std::size_t i, asio::cancellation_signal& sig) {
            return first_phase_call_into(st, first + i, op, &results[i], sig);
        });
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (results[i].ok())
            continue;
        const auto& b = st->branches[first + i].rec;
        st->fail(results[i].ec, describe(st->gid, b.branch_id, b.participant) + ": " +
                                    std::string(to_string(op)) +
                                    " did not succeed: " + results[i].message);
    }
}

inline asio::awaitable<void> engine::first_phase_call_into(std::shared_ptr<tx_state> st,
                                                           std::size_t idx, branch_op op,
                                                           call_result* out,
                                                           asio::cancellation_signal& sig) {
    *out = co_await call_with_retries(std::move(st), idx, op, opts_.pending,
                                      retry_mode::first_phase, sig);
}

/// Numbers `specs` after the branches `st` has and finds their participants. Throws (and aborts
/// `st`) for an unknown participant or one of the wrong kind.
inline void engine::resolve(tx_state& st, branch_list& specs, resolved& out) const {
    out.records.reserve(specs.size());
    out.targets.reserve(specs.size());
    for (auto& s : specs) {
        participant* p = registry_.find(s.participant);
        std::string id = format_branch_id(st.branches.size() + out.records.size() + 1);
        if (!p)
            st.fail(errc::unknown_participant, describe(st.gid, id, s.participant) +
                                                   ": no participant is registered as '" +
                                                   s.participant + "'");
        if (!serves(p->kind(), st.kind,
                    st.kind == tx_kind::tcc ? branch_op::try_ : branch_op::action))
            st.fail(errc::wrong_participant_kind,
                    describe(st.gid, id, s.participant) + ": a " +
                        std::string(to_string(*p->kind())) + " participant cannot take part in a " +
                        std::string(to_string(st.kind)) + " transaction");
        out.records.push_back(
            branch_record{std::move(id), std::move(s.participant), std::move(s.payload)});
        out.targets.push_back(p);
    }
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
