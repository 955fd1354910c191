#ifndef DTX_BARRIER_HPP
#define DTX_BARRIER_HPP

// The barrier: what makes a participant's handlers safe against duplicate, missing and reordered
// requests. This header holds what the barriers of every database share, their rules and the
// types of their handlers; each database has its barrier in a part of its own, under the same
// names: dtx::sqlite::barrier (<dtx/sqlite/barrier.hpp>) and dtx::postgres::barrier
// (<dtx/postgres/barrier.hpp>), with their `barrier_handler`, `tcc_handlers`, `saga_handlers`,
// `typed_handler<T>` and `barrier_stats`.
//
// Each operation runs in one local transaction of the participant's database holding both a
// barrier row, keyed by (gid, branch_id, op), and the handler's changes, so they commit or roll
// back together:
//   - a duplicate try, confirm or cancel finds its row and answers success without running the
//     handler again (a duplicate of a try that ran repeats its success even after the cancel:
//     the coordinator has decided by then, and nothing changes);
//   - a cancel (compensate) whose try (action) never arrived finds no try row: it writes one
//     marked as written by the cancel and answers success without running the handler (null
//     compensation);
//   - a try that arrives after its cancel finds that mark and answers failure without running
//     the handler (no hanging reservation);
//   - a handler answering failure or pending, or throwing, is rolled back with its barrier row,
//     so the operation can be asked again.
// Saga actions share the try's row and compensations the cancel's, with the same rules.
//
// For work that is not in the participant's database (a call to another system),
// `guard_external()` commits the barrier row before the work starts and its result after, so a
// cancel that arrives meanwhile or later still sees that a try began, and a late try still sees
// the cancel. The work must be idempotent: if the process dies while it runs, a retry runs it
// again.
//
// Barrier rows are deleted in batches once older than `retention`, which must exceed the longest
// time a transaction can stay unfinished (a try arriving after its row was cleaned would run).
//
// A barrier handler is not a participant's handler: it runs on the barrier's database thread
// inside the local transaction, receives the connection, and returns an outcome (no coroutine).
// The barrier turns a set of them into a participant's handlers:
//
//   participants.add_tcc("stock", inventory.tcc({.on_try = ..., .on_confirm = ...,
//                                                 .on_cancel = ...}));
//
// `dtx::typed<T>` wraps a participant's handler; the barrier's `typed_handler<T>` wraps a barrier
// handler. Given a handler of the other kind, each fails to compile with one message naming the
// helper to use.

#include <dtx/detail/wrong_helper.hpp>
#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/version.hpp>

#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

DTX_NAMESPACE_BEGIN

/// What a branch operation does to the participant's own tables, given the barrier's connection
/// `Db` inside its local transaction: a callable `outcome(Db& db, const branch_request& r)`.
/// Return failure (or pending) to refuse, which rolls the changes back; throw for an unknown
/// result.
template <class Db>
class barrier_handler {
public:
    barrier_handler() = default;

    /// From a callable `outcome(Db&, const branch_request&)`.
    template <class F>
    requires(!std::same_as<std::remove_cvref_t<F>, barrier_handler> &&
             !std::same_as<std::remove_cvref_t<F>, detail::wrong_helper> &&
             std::is_invocable_r_v<outcome, F&, Db&, const branch_request&>) barrier_handler(F f)
        : fn_(std::move(f)) {}

    /// From what a helper returned after reporting its misuse: the helper's error is the only one.
    barrier_handler(detail::wrong_helper) {}

    /// Anything else, such as a participant's handler (dtx::typed<T>, a coroutine taking the
    /// request): one error that says what a barrier handler is.
    template <class F>
    requires(!std::same_as<std::remove_cvref_t<F>, barrier_handler> &&
             !std::same_as<std::remove_cvref_t<F>, detail::wrong_helper> &&
             !std::is_invocable_r_v<outcome, F&, Db&, const branch_request&>) barrier_handler(F) {
        static_assert(detail::dependent_false<F>,
                      "a barrier handler is a callable outcome(connection&, const "
                      "dtx::branch_request&); to take the payload as T, wrap it with the "
                      "barrier's typed_handler<T> (dtx::sqlite::typed_handler<T>, "
                      "dtx::postgres::typed_handler<T>), not dtx::typed<T>");
    }

    outcome operator()(Db& db, const branch_request& r) const { return fn_(db, r); }
    explicit operator bool() const noexcept { return static_cast<bool>(fn_); }

    /// A barrier handler is registered through its barrier, never as a participant's handler.
    operator branch_handler() const {
        static_assert(detail::dependent_false<Db>,
                      "a barrier handler cannot be registered as it is: give the set of them "
                      "to the barrier, registry.add_tcc(name, barrier.tcc({...})) or "
                      "registry.add_saga(name, barrier.saga({...})); a participant without a "
                      "barrier wraps its coroutine handlers with dtx::typed<T>");
        return {};
    }

private:
    std::function<outcome(Db&, const branch_request&)> fn_;
};

/// A TCC participant's barrier handlers, for the barrier's `tcc()`.
template <class Db>
struct barrier_tcc_handlers {
    barrier_handler<Db> on_try;
    barrier_handler<Db> on_confirm;
    barrier_handler<Db> on_cancel;
};

/// A saga participant's barrier handlers, for the barrier's `saga()`.
template <class Db>
struct barrier_saga_handlers {
    barrier_handler<Db> on_action;
    barrier_handler<Db> on_compensate;
};

/// Wraps a barrier handler `outcome(Db&, const branch_request&, T)` that takes the payload as a
/// user type `T`; a payload that does not convert is answered with failure naming the gid,
/// branch and problem. Each barrier has it as `typed_handler<T>`.
template <class T, class Db, class F>
auto typed_barrier_handler(F handler) {
    if constexpr (std::is_invocable_r_v<outcome, const F&, Db&, const branch_request&, T>) {
        return barrier_handler<Db>(
            [handler = std::move(handler)](Db& db, const branch_request& r) -> outcome {
                outcome refusal;
                std::optional<T> value = detail::convert_payload<T>(r, refusal);
                if (!value)
                    return refusal;
                return handler(db, r, std::move(*value));
            });
    } else {
        static_assert(detail::dependent_false<F>,
                      "the barrier's typed_handler<T> wraps a barrier handler outcome(connection&, "
                      "const dtx::branch_request&, T); a participant's coroutine handler "
                      "(const dtx::branch_request&, T) is wrapped with dtx::typed<T>");
        return detail::wrong_helper{};
    }
}

/// Counters for monitoring and benchmarks, the same for every barrier.
struct barrier_stats {
    std::uint64_t commits = 0; ///< local transactions committed (SQLite: group-committed batches)
    std::uint64_t operations = 0; ///< operations answered in them (branch operations, run() calls)
    std::uint64_t cleaned = 0;    ///< barrier rows deleted
};

DTX_NAMESPACE_END

#endif
