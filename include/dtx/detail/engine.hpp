#ifndef DTX_DETAIL_ENGINE_HPP
#define DTX_DETAIL_ENGINE_HPP

// The coordinator's machinery: branch registration and first-phase calls, decisions, phase 2
// with retries, and recovery. Public entry points are in coordinator.hpp and transaction.hpp.

#include <dtx/coordinator_options.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/deadline_watch.hpp>
#include <dtx/detail/when_all.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/journal.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN

/// A branch to add: which participant, and the payload its handlers receive. Any type that
/// nlohmann::json converts from (a struct with `to_json`) can be given as payload.
struct branch_spec {
    std::string participant;
    dtx::payload payload;
};

namespace detail {
/// Branches added in one step; one of them is kept inline.
using branch_list = boost::container::small_vector<branch_spec, 1>;
} // namespace detail

namespace detail {

/// A branch as a live transaction holds it: its journal record and the resolved participant.
struct live_branch {
    branch_record rec;
    participant* target;
};

struct tx_state {
    std::string gid;
    tx_kind kind;
    tx_status status = tx_status::trying;
    wall_clock::time_point deadline;
    trace_context trace; ///< sent with every branch call
    /// A deque, so that branches added later never move those whose calls are in flight.
    std::deque<live_branch> branches;
    bool begun = false; ///< the begin record is in the journal
    /// Until when this coordinator holds the transaction (journal lease).
    wall_clock::time_point lease_until{};

    /// Bound to the transaction's own coroutine: a call timeout cancels what it awaits.
    asio::cancellation_signal signal;

    bool aborted = false;
    std::error_code reason;
    std::string message;
    std::exception_ptr exception;

    void abort(std::error_code ec, std::string why) {
        if (aborted)
            return;
        aborted = true;
        reason = ec;
        message = std::move(why);
    }
};

/// The answer of one branch call, with unknown results made explicit.
struct call_result {
    enum class kind : unsigned char { success, failure, pending, unknown };
    kind k = kind::unknown;
    std::error_code ec; // why it is not success
    std::string message;

    bool ok() const noexcept { return k == kind::success; }
};

inline std::string describe(std::string_view gid, std::string_view branch_id = {},
                            std::string_view participant = {}) {
    std::string s = "gid ";
    s += gid;
    if (!branch_id.empty()) {
        s += " branch ";
        s += branch_id;
    }
    if (!participant.empty()) {
        s += " (";
        s += participant;
        s += ")";
    }
    return s;
}

inline std::string format_branch_id(std::size_t n) {
    char buf[24];
    char* p = buf;
    if (n < 10)
        *p++ = '0';
    p = std::to_chars(p, buf + sizeof buf, n).ptr;
    return std::string(buf, p);
}

/// The gids this process is driving through a decision or phase 2, so that a recovery pass in
/// the same process leaves them alone.
/// Used only on the coordinator's executor, like the rest of the engine.
class active_set {
public:
    /// `gid` must stay alive until erased (it is the gid of a live tx_state).
    bool insert(std::string_view gid) { return gids_.insert(gid).second; }
    void erase(std::string_view gid) { gids_.erase(gid); }

private:
    std::unordered_set<std::string_view> gids_;
};

/// Holds a gid in the active set for the lifetime of a coroutine frame, including one destroyed
/// without resuming (a stopped io_context).
class active_claim {
public:
    active_claim(std::shared_ptr<active_set> set, std::string_view gid)
        : set_(std::move(set))
        , gid_(gid)
        , held_(set_->insert(gid_)) {}
    active_claim(const active_claim&) = delete;
    active_claim& operator=(const active_claim&) = delete;
    ~active_claim() {
        if (held_)
            set_->erase(gid_);
    }
    bool held() const noexcept { return held_; }

private:
    std::shared_ptr<active_set> set_;
    std::string_view gid_;
    bool held_;
};

class engine : public std::enable_shared_from_this<engine> {
public:
    engine(asio::any_io_executor ex, journal& j, participant_registry& r, coordinator_options o)
        : ex_(std::move(ex))
        , journal_(j)
        , registry_(r)
        , opts_(std::move(o))
        , watch_(ex_) {}

    const asio::any_io_executor& executor() const noexcept { return ex_; }

    /// Counts a running transaction or recovery pass for as long as it lives.
    class activity {
    public:
        explicit activity(std::shared_ptr<engine> e)
            : e_(std::move(e)) {
            ++e_->live_;
        }
        activity(const activity&) = delete;
        activity& operator=(const activity&) = delete;
        ~activity() {
            // A halted engine's coroutines are destroyed with their io_context: leave its timer be.
            if (--e_->live_ == 0 && !e_->halted_)
                e_->watch_.release_if_idle();
        }

    private:
        std::shared_ptr<engine> e_;
    };
    const coordinator_options& options() const noexcept { return opts_; }
    bool stopping() const noexcept { return stopping_.load(std::memory_order_relaxed); }
    void request_stop() noexcept { stopping_.store(true, std::memory_order_relaxed); }
    asio::cancellation_signal& stop_signal() noexcept { return stop_signal_; }

    std::shared_ptr<tx_state> make_state(tx_kind kind, tx_options o) const {
        auto st = std::make_shared<tx_state>();
        st->gid = o.gid.empty() ? make_gid() : std::move(o.gid);
        st->kind = kind;
        st->deadline = wall_clock::now() + o.timeout.value_or(opts_.transaction_timeout);
        auto continued = trace_context::continuing(o.traceparent);
        st->trace = continued ? *continued : trace_context::for_gid(st->gid);
        return st;
    }

    // ---- first phase -------------------------------------------------------------------------

    /// Registers `specs` as new branches of `st` (one journal write, durable before any call),
    /// then sends each its try (TCC) or action (saga), concurrently if there are several.
    /// Throws dtx::error naming the first branch that did not succeed; the transaction is then
    /// aborted and every registered branch will be cancelled or compensated.
    asio::awaitable<void> add_branches(std::shared_ptr<tx_state> st, branch_list specs) {
        if (st->aborted)
            throw error(errc::transaction_aborted,
                        describe(st->gid) +
                            ": no branch can be added, the transaction is aborted: " + st->message);
        if (specs.empty())
            co_return;
        if (wall_clock::now() >= st->deadline)
            fail(*st, errc::deadline_exceeded, describe(st->gid) + ": deadline passed");

        resolved fresh;
        resolve(*st, specs, fresh);

        journal_write w{.gid = st->gid,
                        .new_branches = {fresh.records.data(), fresh.records.size()}};
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
            fail(*st, e.code(),
                 describe(st->gid, fresh.records.front().branch_id) +
                     ": registering the branch failed: " + e.what());
        } catch (const std::exception& e) {
            fail(*st, errc::journal_failed,
                 describe(st->gid, fresh.records.front().branch_id) +
                     ": registering the branch failed: " + e.what());
        }
        if (!ok)
            fail(*st, errc::decision_conflict,
                 describe(st->gid, fresh.records.front().branch_id) +
                     ": the journal no longer holds the transaction as trying (recovery cancelled "
                     "it)");
        const bool first_write = !st->begun;
        st->begun = true;
        const std::size_t first = st->branches.size();
        fresh.move_into(*st);
        if (should_halt({fault_site::journal_write, st->gid, st->branches.back().rec.branch_id,
                         branch_op::try_, first_write ? "begin" : "register"}))
            co_await halt();

        const branch_op op = st->kind == tx_kind::tcc ? branch_op::try_ : branch_op::action;
        const std::size_t n = st->branches.size() - first;
        boost::container::small_vector<call_result, 4> results(n);
        if (n == 1) {
            results[0] = co_await first_phase_call(st, first, op, st->signal); // two frames fewer
        } else {
            co_await when_all(st->signal, n, [&](std::size_t i, asio::cancellation_signal& sig) {
                return first_phase_call_into(st, first + i, op, &results[i], sig);
            });
        }
        for (std::size_t i = 0; i < n; ++i) {
            if (results[i].ok())
                continue;
            const auto& b = st->branches[first + i].rec;
            fail(*st, results[i].ec,
                 describe(st->gid, b.branch_id, b.participant) + ": " + std::string(to_string(op)) +
                     " did not succeed: " + results[i].message);
        }
    }

    // ---- sagas of planned steps --------------------------------------------------------------

    /// Runs a saga whose steps are all known: registers them in one journal write (marked to be
    /// recovered forward), sends their actions one after another, and ends it. Success is told
    /// before the end record is durable: a recovery that finds the saga unfinished sends the
    /// actions again (participants answer a repeat with their first answer) and ends it the same
    /// way. If an action does not succeed, the saga is cancelled durably and the steps whose
    /// actions were sent are compensated, newest first.
    asio::awaitable<tx_result> run_planned_saga(std::shared_ptr<tx_state> st, branch_list specs) {
        active_claim claim(active_, st->gid); // a recovery pass in this process leaves it alone
        resolved steps;
        try {
            resolve(*st, specs, steps);
        } catch (const error&) {
            co_return result(*st, tx_status::cancelled); // nothing written, nothing sent
        }
        if (steps.records.empty())
            co_return result(*st, tx_status::confirmed);
        journal_write w{.gid = st->gid,
                        .begin = begin_transaction{tx_kind::saga, st->deadline, /*forward=*/true},
                        .new_branches = {steps.records.data(), steps.records.size()},
                        .lease = lease_change{opts_.owner, st->deadline}};
        st->lease_until = st->deadline;
        std::optional<std::string> begin_error;
        try {
            if (!co_await write(w, durability::sync))
                begin_error = "the journal refused it";
        } catch (const std::exception& e) {
            begin_error = e.what();
        }
        if (begin_error)
            co_return co_await abandon_planned(std::move(st), std::move(*begin_error));
        st->begun = true;
        steps.move_into(*st);
        if (should_halt({fault_site::journal_write, st->gid, st->branches.back().rec.branch_id,
                         branch_op::action, "begin"}))
            co_await halt();

        const std::size_t n = st->branches.size();
        std::size_t sent = 0;
        while (sent < n && !st->aborted) {
            const call_result r =
                co_await first_phase_call(st, sent, branch_op::action, st->signal);
            const auto& b = st->branches[sent++].rec;
            if (!r.ok())
                st->abort(r.ec, describe(st->gid, b.branch_id, b.participant) +
                                    ": action did not succeed: " + r.message);
        }
        if (!st->aborted) {
            // Lazy: if it is lost, recovery repeats the actions and ends the saga the same way.
            try {
                const journal_write end{.gid = st->gid,
                                        .status =
                                            status_change{tx_status::trying, tx_status::confirmed}};
                co_await write(end, durability::lazy);
            } catch (const std::exception&) {
            }
            if (should_halt({fault_site::journal_write, st->gid, {}, branch_op::action, "end"}))
                co_await halt();
            st->status = tx_status::confirmed;
            co_return result(*st, tx_status::confirmed);
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

    // ---- decision and phase 2 ----------------------------------------------------------------

    /// Decides the transaction after its body has returned (or thrown) and drives it to its end.
    asio::awaitable<tx_result> finish(std::shared_ptr<tx_state> st) {
        if (!st->begun) {
            // Nothing was written and nothing was sent: there is nothing to undo.
            co_return result(*st, st->aborted ? tx_status::cancelled : tx_status::confirmed);
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
                st->abort(
                    errc::journal_failed,
                    describe(st->gid) + ": writing the decision failed (" + e.what() +
                        "); it may or may not be durable, recovery will finish the transaction");
                co_return result(*st, tx_status::trying);
            }
            if (should_halt({fault_site::journal_write,
                             st->gid,
                             {},
                             branch_op::confirm,
                             st->kind == tx_kind::tcc ? "decide" : "end"}))
                co_await halt();
            if (!ok) {
                st->abort(errc::decision_conflict,
                          describe(st->gid) +
                              ": recovery cancelled the transaction before its decision");
                co_return result(*st, tx_status::cancelling);
            }
            st->status = decided;
            if (st->kind == tx_kind::saga)
                co_return result(*st, tx_status::confirmed);
            co_return co_await settle(st, branch_op::confirm, opts_.phase_two, st->signal);
        }

        // Presumed abort: a missing cancel decision means the same as a written one, so a failed
        // write does not stop the cancellation.
        bool ok = true;
        try {
            const journal_write w{.gid = st->gid,
                                  .status = status_change{tx_status::trying, tx_status::cancelling},
                                  .lease = decision_lease(*st)};
            ok = co_await write(w, durability::sync);
        } catch (const std::exception&) {
        }
        if (should_halt({fault_site::journal_write, st->gid, {}, branch_op::cancel, "decide"}))
            co_await halt();
        if (!ok)
            co_return result(*st, tx_status::cancelling); // recovery elsewhere is cancelling it
        st->status = tx_status::cancelling;
        const branch_op undo = st->kind == tx_kind::tcc ? branch_op::cancel : branch_op::compensate;
        co_return co_await settle(st, undo, opts_.phase_two, st->signal);
    }

    // ---- recovery ----------------------------------------------------------------------------

    /// One recovery pass: claims every due unfinished transaction and drives it to its end.
    /// `sig` is the cancellation signal bound to the calling coroutine.
    asio::awaitable<recovery_report> recover(recovery_options ro, asio::cancellation_signal& sig) {
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
            if (!batch.empty() &&
                should_halt(
                    {fault_site::journal_write, batch.front().gid, {}, branch_op::cancel, "claim"}))
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

private:
    /// Branches about to be registered, with their participants.
    struct resolved {
        boost::container::small_vector<branch_record, 4> records;
        boost::container::small_vector<participant*, 4> targets;

        void move_into(tx_state& st) {
            for (std::size_t i = 0; i < records.size(); ++i)
                st.branches.push_back(live_branch{std::move(records[i]), targets[i]});
        }
    };

    /// Numbers `specs` after the branches `st` has and finds their participants. Throws (and
    /// aborts `st`) for an unknown participant or one of the wrong kind.
    void resolve(tx_state& st, branch_list& specs, resolved& out) const {
        out.records.reserve(specs.size());
        out.targets.reserve(specs.size());
        for (auto& s : specs) {
            participant* p = registry_.find(s.participant);
            std::string id = format_branch_id(st.branches.size() + out.records.size() + 1);
            if (!p)
                fail(st, errc::unknown_participant,
                     describe(st.gid, id, s.participant) + ": no participant is registered as '" +
                         s.participant + "'");
            if (p->kind() && *p->kind() != st.kind)
                fail(st, errc::wrong_participant_kind,
                     describe(st.gid, id, s.participant) + ": a " +
                         std::string(to_string(*p->kind())) +
                         " participant cannot take part in a " + std::string(to_string(st.kind)) +
                         " transaction");
            out.records.push_back(
                branch_record{std::move(id), std::move(s.participant), std::move(s.payload)});
            out.targets.push_back(p);
        }
    }

    /// The begin record of a planned saga may or may not be durable (its write failed): end it
    /// as cancelled before the caller hears so, or a recovery could later run it forward.
    asio::awaitable<tx_result> abandon_planned(std::shared_ptr<tx_state> st, std::string why) {
        st->abort(make_error_code(errc::journal_failed),
                  describe(st->gid) + ": registering the steps failed: " + why);
        const journal_write w{.gid = st->gid,
                              .status = status_change{tx_status::trying, tx_status::cancelled}};
        try {
            if (co_await write(w, durability::sync))
                co_return result(*st, tx_status::cancelled);
        } catch (const error& e) {
            if (e.code() == errc::unknown_transaction)
                co_return result(*st, tx_status::cancelled); // never begun
        } catch (const std::exception&) {
        }
        st->message += "; it may still be in the journal, and recovery would then finish it";
        co_return result(*st, tx_status::trying);
    }

    /// Cancels a planned saga that is trying (an action did not succeed): records the decision,
    /// with the steps that need no compensation, then compensates the others newest first.
    asio::awaitable<tx_result> cancel_forward(std::shared_ptr<tx_state> st,
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
            co_return result(*st, tx_status::trying);
        }
        if (should_halt({fault_site::journal_write, st->gid, {}, branch_op::compensate, "decide"}))
            co_await halt();
        if (!ok) {
            // Another coordinator took it over (its deadline had passed) and has ended or is ending
            // it.
            st->message += "; another coordinator is finishing the saga";
            co_return result(*st, tx_status::trying);
        }
        st->status = tx_status::cancelling;
        co_return co_await settle(st, branch_op::compensate, policy, sig);
    }

    /// Recovery of a planned saga still trying: its actions again, in order.
    asio::awaitable<tx_result> run_forward(std::shared_ptr<tx_state> st,
                                           asio::cancellation_signal& sig) {
        const std::size_t n = st->branches.size();
        for (std::size_t i = 0; i < n; ++i) {
            const branch_end e =
                co_await drive_branch(st, i, branch_op::action, opts_.recovery_retry, sig, true);
            if (e == branch_end::done)
                continue;
            if (e == branch_end::gave_up) {
                tx_result r = result(*st, tx_status::trying);
                r.reason = make_error_code(errc::attempts_exhausted);
                r.message =
                    describe(st->gid) + ": an action did not answer within the attempt limit";
                co_return r;
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
        bool ok = false;
        try {
            const journal_write w{.gid = st->gid,
                                  .status = status_change{tx_status::trying, tx_status::confirmed}};
            ok = co_await write(w, durability::sync);
        } catch (const std::exception&) {
        }
        if (should_halt({fault_site::journal_write, st->gid, {}, branch_op::action, "end"}))
            co_await halt();
        if (!ok)
            co_return result(*st, tx_status::trying);
        st->status = tx_status::confirmed;
        co_return result(*st, tx_status::confirmed);
    }

    [[noreturn]] static void fail(tx_state& st, std::error_code ec, std::string why) {
        st.abort(ec, why);
        throw error(ec, why);
    }
    [[noreturn]] static void fail(tx_state& st, errc e, std::string why) {
        fail(st, make_error_code(e), std::move(why));
    }

    /// True if the coordinator must stop at `p`. Once it has stopped, every coroutine of this
    /// engine stops at its next fault point or call, as they would all die with the process.
    bool should_halt(const fault_point& p) {
        if (halted_)
            return true;
        if (!opts_.on_fault || !opts_.on_fault(p))
            return false;
        halted_ = true;
        return true;
    }

    // Journal access goes through these so that a stopped coordinator writes nothing more.
    asio::awaitable<bool> write(const journal_write& w, durability d) {
        return halted_ ? halt_with<bool>() : journal_.write(w, d);
    }
    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) {
        return halted_ ? halt_with<std::vector<transaction_record>>() : journal_.claim(r);
    }

    template <class T>
    static asio::awaitable<T> halt_with() {
        co_await halt();
        co_return T{};
    }

    /// Never resumes: the coroutine that reached a fault point is abandoned, like a killed process.
    static asio::awaitable<void> halt() {
        asio::steady_timer forever(co_await asio::this_coro::executor,
                                   std::chrono::steady_clock::time_point::max());
        for (;;)
            co_await forever.async_wait(asio::as_tuple(asio::use_awaitable));
    }

    static asio::awaitable<void> sleep_for(std::chrono::nanoseconds d) {
        asio::steady_timer t(co_await asio::this_coro::executor, d);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }

    static tx_result result(tx_state& st, tx_status status) {
        return tx_result{st.gid, status, st.reason, st.message, st.exception};
    }

    // Results are built by plain functions: g++ 12 mishandles some temporaries (conditional
    // operands, braced aggregates) in co_return and co_await expressions.
    static call_result unknown(errc e, std::string message) {
        return call_result{call_result::kind::unknown, make_error_code(e), std::move(message)};
    }

    static call_result from_outcome(const outcome& o) {
        switch (o.kind()) {
        case outcome_kind::success:
            return call_result{call_result::kind::success, {}, {}};
        case outcome_kind::failure:
            return call_result{call_result::kind::failure, make_error_code(errc::branch_failed),
                               o.message().empty() ? "answered failure" : o.message()};
        case outcome_kind::pending:
            return call_result{call_result::kind::pending, make_error_code(errc::branch_timed_out),
                               o.message().empty() ? "answered pending" : o.message()};
        }
        return unknown(errc::branch_error, "answered an invalid outcome");
    }

    static call_result from_exception(std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            return unknown(errc::branch_error, std::string("threw: ") + x.what());
        } catch (...) {
            return unknown(errc::branch_error, "threw a non-standard exception");
        }
    }

    static call_result timed_out(std::chrono::nanoseconds timeout) {
        return unknown(
            errc::branch_timed_out,
            "no answer within " +
                std::to_string(
                    std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
                " ms");
    }

    static branch_request request_for(const tx_state& st, const live_branch& b, branch_op op) {
        return branch_request{st.gid, b.rec.branch_id, op, b.rec.payload.json(),
                              st.trace.traceparent()};
    }

    /// Calls one branch, bounded by `timeout` (zero: unbounded). Never throws: exceptions, a
    /// missing participant and timeouts come back as unknown results. `sig` is the signal bound to
    /// the calling coroutine: at the timeout the watch emits it, which cancels whatever the
    /// participant awaits. A participant that ignores cancellation delays the transaction until it
    /// returns, and its late answer counts as a timeout.
    asio::awaitable<call_result> call(std::shared_ptr<tx_state> st, std::size_t idx, branch_op op,
                                      std::chrono::nanoseconds timeout,
                                      asio::cancellation_signal& sig) {
        if (halted_)
            co_await halt();
        const live_branch& b = st->branches[idx];
        call_result r;
        if (!b.target) {
            r = unknown(errc::unknown_participant,
                        "no participant is registered as '" + b.rec.participant + "'");
        } else {
            watch_entry entry;
            if (timeout > std::chrono::nanoseconds::zero())
                watch_.add(entry, std::chrono::steady_clock::now() + timeout, sig);
            std::exception_ptr thrown;
            try {
                const branch_request req = request_for(*st, b, op);
                const outcome o = co_await b.target->call(req);
                r = from_outcome(o);
            } catch (...) {
                thrown = std::current_exception();
            }
            watch_.remove(entry);
            if (entry.expired()) {
                r = timed_out(timeout);
                co_await asio::this_coro::reset_cancellation_state(); // the timeout's, not ours
            } else if (thrown) {
                r = from_exception(thrown);
            }
        }
        if (should_halt({fault_site::branch_call, st->gid, b.rec.branch_id, op, "call"}))
            co_await halt();
        co_return r;
    }

    /// A try or action, asked again while it answers pending, bounded by the deadline.
    wall_clock::time_point next_lease(tx_state& st) const {
        st.lease_until = wall_clock::now() + opts_.lease;
        return st.lease_until;
    }

    /// The lease a decision of a transaction begun by its body carries: none while the one taken
    /// at begin has most of its length to run (phase 2 then has nearly a whole lease, as after a
    /// renewal), else a renewal. The decision needs no lease condition: a claim of a `trying`
    /// transaction that is not `forward` changes its status, which the decision's status
    /// condition then refuses. Without a lease the write changes no indexed column, which saves
    /// the durable journals a page per decision.
    std::optional<lease_change> decision_lease(tx_state& st) const {
        const auto left = st.lease_until - wall_clock::now();
        if (left <= opts_.lease && left >= opts_.lease - opts_.lease / 10)
            return std::nullopt;
        return lease_change{opts_.owner, next_lease(st)};
    }

    /// Before a phase-2 retry that waits `delay`: renews the lease if it would run out within half
    /// its length. False if another coordinator has taken the transaction over.
    asio::awaitable<bool> keep_lease(std::shared_ptr<tx_state> st, std::chrono::nanoseconds delay) {
        if (wall_clock::now() + delay + opts_.lease / 2 < st->lease_until)
            co_return true;
        const journal_write w{.gid = st->gid, .lease = lease_change{opts_.owner, next_lease(*st)}};
        bool ok = false;
        try {
            ok = co_await write(w, durability::sync);
        } catch (const std::exception&) {
            // Unsure whether we still hold it: stand down. The journal keeps the transaction and
            // recovery (ours or another coordinator's) finishes it.
            co_return false;
        }
        if (should_halt({fault_site::journal_write, st->gid, {}, branch_op::confirm, "lease"}))
            co_await halt();
        co_return ok;
    }

    asio::awaitable<call_result> first_phase_call(std::shared_ptr<tx_state> st, std::size_t idx,
                                                  branch_op op, asio::cancellation_signal& sig) {
        const std::chrono::nanoseconds limit = opts_.call_timeout;
        for (unsigned asked = 1;; ++asked) {
            auto left = st->deadline - wall_clock::now();
            if (left <= wall_clock::duration::zero()) {
                call_result late =
                    unknown(errc::deadline_exceeded, "the transaction deadline passed");
                co_return late;
            }
            auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(left);
            if (limit > std::chrono::nanoseconds::zero())
                timeout = std::min(timeout, limit);
            call_result r = co_await call(st, idx, op, timeout, sig);
            if (r.k != call_result::kind::pending)
                co_return r;
            if (!opts_.pending.may_retry(asked)) {
                r = unknown(errc::branch_timed_out,
                            "still pending after " + std::to_string(asked) + " asks: " + r.message);
                co_return r;
            }
            auto delay = opts_.pending.next_delay(asked);
            if (wall_clock::now() + delay >= st->deadline) {
                r = unknown(errc::deadline_exceeded,
                            "still pending at the transaction deadline: " + r.message);
                co_return r;
            }
            co_await sleep_for(delay);
        }
    }

    asio::awaitable<void> first_phase_call_into(std::shared_ptr<tx_state> st, std::size_t idx,
                                                branch_op op, call_result* out,
                                                asio::cancellation_signal& sig) {
        *out = co_await first_phase_call(std::move(st), idx, op, sig);
    }

    enum class branch_end : unsigned char { done, failed, gave_up };

    /// Sends `op` to one branch until it answers success, or until `policy` says stop (or, if
    /// `failure_stops`, until it answers failure).
    asio::awaitable<branch_end> drive_branch(std::shared_ptr<tx_state> st, std::size_t idx,
                                             branch_op op, const retry_policy& policy,
                                             asio::cancellation_signal& sig, bool failure_stops) {
        auto& b = st->branches[idx];
        for (unsigned attempts = 1;; ++attempts) {
            call_result r = co_await call(st, idx, op, opts_.call_timeout, sig);
            if (r.ok())
                co_return branch_end::done;
            if (failure_stops && r.k == call_result::kind::failure)
                co_return branch_end::failed;
            if (policy.on_alert && policy.alert_due(attempts))
                policy.on_alert(retry_alert{st->gid, b.rec.branch_id, b.rec.participant,
                                            to_string(op), attempts, r.message});
            if (!policy.may_retry(attempts))
                co_return branch_end::gave_up;
            const auto delay = policy.next_delay(attempts);
            if (!co_await keep_lease(st, delay))
                co_return branch_end::gave_up; // taken over: stand down
            co_await sleep_for(delay);
        }
    }

    /// Confirm, cancel or compensate one branch until it answers success, or until `policy` says
    /// stop. Returns whether the branch is done.
    asio::awaitable<bool> settle_branch(std::shared_ptr<tx_state> st, std::size_t idx, branch_op op,
                                        const retry_policy& policy,
                                        asio::cancellation_signal& sig) {
        const branch_end e = co_await drive_branch(st, idx, op, policy, sig, false);
        if (e != branch_end::done)
            co_return false;
        st->branches[idx].rec.done = true;
        co_return true;
    }

    asio::awaitable<void> settle_branch_void(std::shared_ptr<tx_state> st, std::size_t idx,
                                             branch_op op, const retry_policy* policy,
                                             asio::cancellation_signal& sig) {
        co_await settle_branch(std::move(st), idx, op, *policy, sig);
    }

    /// Phase 2: sends `op` to every branch not yet done, then records the end. Sagas compensate
    /// strictly newest first; TCC branches are confirmed or cancelled concurrently if so set.
    asio::awaitable<tx_result> settle(std::shared_ptr<tx_state> st, branch_op op,
                                      const retry_policy& policy, asio::cancellation_signal& sig) {
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
            try {
                co_await write({.gid = st->gid, .status = status_change{from, to}},
                               durability::lazy);
            } catch (const std::exception&) {
            }
            if (should_halt({fault_site::journal_write, st->gid, {}, op, "end"}))
                co_await halt();
            st->status = to;
            co_return result(*st, to);
        }

        std::vector<std::string> done;
        for (const auto& b : st->branches)
            if (b.rec.done)
                done.push_back(b.rec.branch_id);
        try {
            co_await write({.gid = st->gid, .done_branches = done}, durability::lazy);
        } catch (const std::exception&) {
        }
        if (should_halt({fault_site::journal_write, st->gid, {}, op, "done"}))
            co_await halt();
        // Keep the cancel reason if there is one; otherwise say why phase 2 is not finished.
        tx_result r = result(*st, from);
        if (!r.reason) {
            r.reason = make_error_code(errc::attempts_exhausted);
            r.message =
                describe(st->gid) + ": " + std::string(to_string(op)) +
                " did not succeed everywhere within the attempt limit; recovery will finish it";
        }
        co_return r;
    }

    asio::awaitable<void> recover_one(transaction_record rec, recovery_report* rep,
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
        if (st->status == tx_status::trying && forward) {
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

    asio::any_io_executor ex_;
    journal& journal_;
    participant_registry& registry_;
    coordinator_options opts_;
    std::shared_ptr<active_set> active_ = std::make_shared<active_set>();
    deadline_watch watch_;
    std::size_t live_ = 0; // transactions and recovery passes running (on the executor)
    std::atomic<bool> stopping_{false};
    std::atomic<bool> halted_{false}; // the fault hook stopped this coordinator
    asio::cancellation_signal stop_signal_;
};

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
