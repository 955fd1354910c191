#ifndef DTX_DETAIL_ENGINE_HPP
#define DTX_DETAIL_ENGINE_HPP

// The coordinator's machinery, declared: one engine per coordinator holds the journal, the
// registry, the options and the fault hook. Its coroutines are defined by phase, each in a file
// named after it:
//   first_phase.hpp    registering branches and sending their tries (or actions)
//   branch_call.hpp    one branch call bounded by its timeout, and the retry loop around it
//   phase_two.hpp      the decision, then confirm, cancel or compensate until done
//   planned_saga.hpp   sagas of planned steps, run and recovered forward
//   prepared_message.hpp  2-phase messages: prepare, local transaction, check-back, submit
//   recovery.hpp       recovery passes: claiming unfinished transactions and driving them
// This file defines what they all share: leases, journal access, fault points and timers. The
// public entry points are in coordinator.hpp and transaction.hpp.

#include <dtx/coordinator_options.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/deadline_watch.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/gid.hpp>
#include <dtx/journal.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/two_phase_message.hpp>
#include <dtx/tx_options.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/container/small_vector.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

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
        if (!o.gid.empty() && !valid_gid(o.gid))
            // Every participant server would refuse it (400), and phase 2 would retry forever.
            throw std::invalid_argument(
                "tx_options::gid \"" +
                detail::safe_text(o.gid, 200, detail::text_controls::escape) +
                "\" is not a valid gid: 1 to " + std::to_string(max_gid_size) +
                " characters of UTF-8 without control characters");
        st->gid = o.gid.empty() ? make_gid() : std::move(o.gid);
        st->kind = kind;
        st->deadline = wall_clock::now() + o.timeout.value_or(opts_.transaction_timeout);
        auto continued = trace_context::continuing(o.traceparent);
        st->trace = continued ? *continued : trace_context::for_gid(st->gid);
        return st;
    }

    /// Registers `specs` as new branches of `st` (one journal write, durable before any call),
    /// then sends each its try (TCC) or action (saga), concurrently if there are several.
    /// Throws dtx::error naming the first branch that did not succeed; the transaction is then
    /// aborted and every registered branch will be cancelled or compensated. (first_phase.hpp)
    asio::awaitable<void> add_branches(std::shared_ptr<tx_state> st, branch_list specs);

    /// Runs a saga whose steps are all known: registers them in one journal write (marked to be
    /// recovered forward), sends their actions one after another, and ends it. (planned_saga.hpp)
    asio::awaitable<tx_result> run_planned_saga(std::shared_ptr<tx_state> st, branch_list specs);

    /// Runs a 2-phase message: prepares it (every branch and the check-back `check_back`, as
    /// branch "00", in one journal write), runs `local`, then submits and delivers it, or aborts
    /// it. (prepared_message.hpp)
    asio::awaitable<tx_result> run_message(std::shared_ptr<tx_state> st, branch_list specs,
                                           std::string check_back, message_local_transaction local);

    /// Decides the transaction after its body has returned (or thrown) and drives it to its end.
    /// (phase_two.hpp)
    asio::awaitable<tx_result> finish(std::shared_ptr<tx_state> st);

    /// One recovery pass: claims every due unfinished transaction and drives it to its end.
    /// `sig` is the cancellation signal bound to the calling coroutine. (recovery.hpp)
    asio::awaitable<recovery_report> recover(recovery_options ro, asio::cancellation_signal& sig);

private:
    // ---- first phase (first_phase.hpp) ---------------------------------------------------------

    /// Branches about to be registered, with their participants.
    struct resolved {
        boost::container::small_vector<branch_record, 4> records;
        boost::container::small_vector<participant*, 4> targets;

        void move_into(tx_state& st) {
            for (std::size_t i = 0; i < records.size(); ++i)
                st.branches.push_back(live_branch{std::move(records[i]), targets[i]});
        }
    };
    void resolve(tx_state& st, branch_list& specs, resolved& out) const;
    asio::awaitable<void> first_phase_call_into(std::shared_ptr<tx_state> st, std::size_t idx,
                                                branch_op op, call_result* out,
                                                asio::cancellation_signal& sig);

    // ---- branch calls (branch_call.hpp) --------------------------------------------------------

    /// When a branch is asked again, and what bounds it.
    enum class retry_mode : unsigned char {
        /// A try or action: asked again while it answers pending, within the deadline.
        first_phase,
        /// Phase 2: asked again until it answers success, the lease renewed before each wait.
        until_success,
        /// A planned saga's action in recovery: as until_success, but failure also stops.
        until_answer,
    };
    asio::awaitable<call_result> call(std::shared_ptr<tx_state> st, std::size_t idx, branch_op op,
                                      std::chrono::nanoseconds timeout,
                                      asio::cancellation_signal& sig);
    asio::awaitable<call_result> call_with_retries(std::shared_ptr<tx_state> st, std::size_t idx,
                                                   branch_op op, const retry_policy& policy,
                                                   retry_mode mode, asio::cancellation_signal& sig);

    // ---- decision and phase 2 (phase_two.hpp) --------------------------------------------------

    asio::awaitable<bool> settle_branch(std::shared_ptr<tx_state> st, std::size_t idx, branch_op op,
                                        const retry_policy& policy, asio::cancellation_signal& sig);
    asio::awaitable<void> settle_branch_void(std::shared_ptr<tx_state> st, std::size_t idx,
                                             branch_op op, const retry_policy* policy,
                                             asio::cancellation_signal& sig);
    asio::awaitable<tx_result> settle(std::shared_ptr<tx_state> st, branch_op op,
                                      const retry_policy& policy, asio::cancellation_signal& sig);

    // ---- planned sagas (planned_saga.hpp) ------------------------------------------------------

    asio::awaitable<std::optional<std::string>> begin_forward(std::shared_ptr<tx_state> st,
                                                              resolved& steps);
    asio::awaitable<tx_result> abandon_planned(std::shared_ptr<tx_state> st, std::string why);
    asio::awaitable<tx_result> cancel_forward(std::shared_ptr<tx_state> st,
                                              std::vector<std::string> unsent,
                                              const retry_policy& policy,
                                              asio::cancellation_signal& sig);
    asio::awaitable<tx_result> run_forward(std::shared_ptr<tx_state> st,
                                           asio::cancellation_signal& sig);

    // ---- 2-phase messages (prepared_message.hpp) ------------------------------------------------

    asio::awaitable<call_result> ask_check_back(std::shared_ptr<tx_state> st,
                                                asio::cancellation_signal& sig);
    asio::awaitable<tx_result> decide_message(std::shared_ptr<tx_state> st, call_result answer,
                                              const retry_policy& policy,
                                              asio::cancellation_signal& sig);
    asio::awaitable<tx_result> recover_message(std::shared_ptr<tx_state> st,
                                               asio::cancellation_signal& sig);

    // ---- recovery (recovery.hpp) ---------------------------------------------------------------

    asio::awaitable<void> recover_one(transaction_record rec, recovery_report* rep,
                                      asio::cancellation_signal& sig);

    // ---- leases --------------------------------------------------------------------------------

    /// A lease from now on, which `st` now holds.
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
        if (should_halt(
                {fault_site::journal_write, st->gid, {}, branch_op::confirm, fault_step::lease}))
            co_await halt();
        co_return ok;
    }

    // ---- journal access and fault points -------------------------------------------------------

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

    /// Writes `w` where losing the write is harmless (the caller has a way on without it:
    /// presumed abort, a repeated phase 2, recovery), then stops at its fault point `what` if
    /// asked to. Returns the journal's answer, or `if_failed` if the write threw.
    asio::awaitable<bool> write_best_effort(const journal_write& w, durability d, fault_step what,
                                            branch_op op, bool if_failed) {
        bool ok = if_failed;
        try {
            ok = co_await write(w, d);
        } catch (const std::exception&) {
        }
        if (should_halt({fault_site::journal_write, w.gid, {}, op, what}))
            co_await halt();
        co_return ok;
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
