#ifndef DTX_DETAIL_BARRIER_LOGIC_HPP
#define DTX_DETAIL_BARRIER_LOGIC_HPP

// What the barrier decides before a handler runs, for any database, and what every barrier
// offers on top of its own guard(). A store offers operations on the barrier table, inside the
// local transaction:
//   bool insert(slot, origin, state)   insert (gid, branch, slot) unless present; true if inserted
//   std::optional<barrier_row> find(slot)
//   void set_state(slot, state)        the end of external work: "done" or "failed"
//   void forget_started(slot)          delete the row of external work that did not end
// (<dtx/barrier.hpp> has the rules in words.)

#include <dtx/barrier.hpp>
#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/version.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

struct barrier_row {
    std::string origin; ///< the operation that wrote the row: "try", "confirm" or "cancel"
    std::string state;  ///< "done", or for work outside the database "started" / "failed"
};

/// The barrier's slot for an operation: tries and actions share "try", cancels and compensations
/// share "cancel".
inline const char* barrier_slot(branch_op op) noexcept {
    switch (op) {
    case branch_op::try_:
    case branch_op::action:
        return "try";
    case branch_op::confirm:
        return "confirm";
    default:
        return "cancel";
    }
}

/// The barrier's answer for `r`, or empty when the handler (or external work) must run. `state`
/// is what a newly written row records ("done" for local handlers, "started" for external work).
template <class Store>
std::optional<outcome> barrier_screen(Store& store, const branch_request& r, const char* state) {
    const std::string_view slot = barrier_slot(r.op);
    if (slot == "cancel" && store.insert("try", "cancel", "done")) {
        // The try never came: a null compensation, marked so that a late try is refused.
        store.insert("cancel", "cancel", "done");
        return success();
    }
    if (store.insert(slot.data(), slot.data(), state))
        return std::nullopt;
    const std::optional<barrier_row> existing = store.find(slot.data());
    if (slot == "try" && existing && existing->origin == "cancel")
        return failure("gid " + std::string(r.gid) + " branch " + std::string(r.branch_id) +
                       " was cancelled before its " + std::string(to_string(r.op)) + " arrived");
    if (existing && existing->state == "failed")
        return failure("an earlier " + std::string(to_string(r.op)) + " failed");
    if (existing && existing->state == "started")
        return std::nullopt; // external work to be redone
    return success();        // a duplicate of a completed operation
}

/// Thrown inside a local transaction to roll it back (the handler's changes and the barrier
/// row) while answering `answer`.
struct barrier_refusal {
    outcome answer;
};

/// A branch_request whose views point into strings it owns, for work done on another thread.
/// Every field of the request is kept: a handler behind the barrier sees what it would see
/// without one.
struct owned_request {
    explicit owned_request(const branch_request& r)
        : gid(r.gid)
        , branch_id(r.branch_id)
        , op(r.op)
        , payload(r.payload)
        , traceparent(r.traceparent)
        , transaction_kind(r.transaction_kind) {}
    branch_request view() const {
        return {gid, branch_id, op, payload, traceparent, transaction_kind};
    }
    std::string gid;
    std::string branch_id;
    branch_op op;
    nlohmann::json payload;
    std::string traceparent;
    std::optional<tx_kind> transaction_kind;
};

/// One branch operation inside the barrier's local transaction: the barrier's answer, or else
/// the handler's. A handler that does not answer success is thrown as barrier_refusal, so that
/// its changes and the barrier row are rolled back together.
template <class Store, class Db>
outcome guarded_operation(Store& store, Db& db, const owned_request& r,
                          const barrier_handler<Db>& handler) {
    const branch_request req = r.view();
    if (auto answer = barrier_screen(store, req, "done"))
        return *answer;
    outcome o = handler(db, req);
    if (!o.is_success())
        throw barrier_refusal{std::move(o)};
    return o;
}

// ---- 2-phase messages ----------------------------------------------------------------------
// A message's row is (gid, "00", "msg"), its origin DTM's reason: "msg" when the message's local
// transaction wrote it, "rollback" when the check-back did (DTM's QueryPrepared). Whichever
// writes it first decides: the unique key makes the other's write find it.

/// The request a message's barrier row is keyed by.
inline owned_request message_request(std::string_view gid) {
    static const nlohmann::json none;
    return owned_request(branch_request{gid, "00", branch_op::check_back, none});
}

/// The local transaction of a 2-phase message: its barrier row, then `fn(db)`. A row already
/// there (the check-back came first) or an answer other than success is thrown as
/// barrier_refusal, which rolls the local transaction back.
template <class Store, class Db, class Fn>
outcome guarded_message_local(Store& store, Db& db, const owned_request& r, Fn& fn) {
    if (!store.insert("msg", "msg", "done"))
        throw barrier_refusal{failure("gid " + r.gid +
                                      ": the message's check-back answered first (or its local "
                                      "transaction already ran): rolled back")};
    outcome o = fn(db);
    if (!o.is_success())
        throw barrier_refusal{std::move(o)};
    return o;
}

/// The check-back's answer: success if the message's local transaction committed its row;
/// failure if it had not, in which case the row written now keeps it from ever committing.
template <class Store>
outcome check_back_answer(Store& store, const owned_request& r) {
    store.insert("msg", "rollback", "done");
    const std::optional<barrier_row> row = store.find("msg");
    if (row && row->origin == "rollback")
        return failure("gid " + r.gid +
                       ": the message's local transaction did not commit, and now never will");
    return success();
}

/// Gives a barrier the handler sets for participant_registry::add_tcc and add_saga,
/// guard_external(), and the two sides of 2-phase messages. The barrier has
///   asio::awaitable<outcome> guard(const branch_request&, const barrier_handler<Db>&);
///   template <class Job> asio::awaitable<outcome> run_guarded(Job job); // job(Db&) in a
///       transaction, a barrier_refusal it throws rolled back and answered
///   template <class R, class Fn> asio::awaitable<R> run(Fn fn);  // fn(Db&) in a transaction
///   a type `store` built as store{Db&, const owned_request&}: the operations barrier_screen
///   uses, and set_state(slot, state) and forget_started(slot) for external work.
template <class Barrier, class Db>
class barrier_registration {
public:
    tcc_handlers tcc(barrier_tcc_handlers<Db> h) {
        auto shared = std::make_shared<barrier_tcc_handlers<Db>>(std::move(h));
        return {
            .on_try = [this,
                       shared](const branch_request& r) { return self().guard(r, shared->on_try); },
            .on_confirm =
                [this, shared](const branch_request& r) {
                    return self().guard(r, shared->on_confirm);
                },
            .on_cancel =
                [this, shared](const branch_request& r) {
                    return self().guard(r, shared->on_cancel);
                },
        };
    }

    saga_handlers saga(barrier_saga_handlers<Db> h) {
        auto shared = std::make_shared<barrier_saga_handlers<Db>>(std::move(h));
        return {
            .on_action =
                [this, shared](const branch_request& r) {
                    return self().guard(r, shared->on_action);
                },
            .on_compensate =
                [this, shared](const branch_request& r) {
                    return self().guard(r, shared->on_compensate);
                },
        };
    }

    /// Runs `work` (outside the participant's database) under the barrier: the barrier row is
    /// committed before the work starts and its result after it. `work` must be idempotent: if
    /// the process dies while it runs, a retry runs it again.
    asio::awaitable<outcome> guard_external(const branch_request& r,
                                            std::function<asio::awaitable<outcome>()> work) {
        auto begin = [req = owned_request(r)](Db& db) {
            typename Barrier::store s{db, req};
            return barrier_screen(s, req.view(), "started");
        };
        const std::optional<outcome> decided =
            co_await self().template run<std::optional<outcome>>(std::move(begin));
        if (decided)
            co_return *decided; // answered by the barrier: the work is not (re)done

        outcome result = co_await work();
        auto end = [req = owned_request(r), result](Db& db) {
            typename Barrier::store s{db, req};
            const char* slot = barrier_slot(req.op);
            if (result.is_success())
                s.set_state(slot, "done");
            else if (result.is_failure())
                s.set_state(slot, "failed");
            else
                s.forget_started(slot); // pending or unknown: the next attempt runs the work again
            return 0;
        };
        co_await self().template run<int>(std::move(end));
        co_return result;
    }

    /// Runs the local transaction of the 2-phase message `gid` (two_phase_message.hpp):
    /// `fn(Db&)`, a callable returning an outcome, in one local transaction with the message's
    /// barrier row. Answers fn's outcome, every change rolled back unless it is success; failure,
    /// rolled back, if the check-back has already answered for this message (it then answered
    /// failure: the message will never be delivered). Throws what fn throws (rolled back).
    template <class Fn>
    asio::awaitable<outcome> message_local(std::string gid, Fn fn) {
        static_assert(std::is_invocable_r_v<outcome, Fn&, Db&>,
                      "message_local takes a callable outcome(connection&)");
        auto job = [req = message_request(gid), fn = std::move(fn)](Db& db) mutable {
            typename Barrier::store s{db, req};
            return guarded_message_local(s, db, req, fn);
        };
        return self().run_guarded(std::move(job));
    }

    /// The check-back of 2-phase messages whose local transactions run in this database (DTM's
    /// QueryPrepared): success if the local transaction of message `gid` committed, failure if
    /// it did not (and, from now on, cannot). A database error throws: an unknown result, asked
    /// again.
    asio::awaitable<outcome> query_prepared(std::string gid) {
        auto job = [req = message_request(gid)](Db& db) {
            typename Barrier::store s{db, req};
            return check_back_answer(s, req);
        };
        return self().template run<outcome>(std::move(job));
    }

    /// query_prepared as a handler for participant_registry::add_check_back.
    branch_handler check_back() {
        return [this](const branch_request& r) { return query_prepared(std::string(r.gid)); };
    }

private:
    Barrier& self() { return static_cast<Barrier&>(*this); }
};

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
