#ifndef DTX_DETAIL_BARRIER_LOGIC_HPP
#define DTX_DETAIL_BARRIER_LOGIC_HPP

// What the barrier decides before a handler runs, for any database. A store offers two
// operations on the barrier table, inside the local transaction:
//   bool insert(slot, origin, state)   insert (gid, branch, slot) unless present; true if inserted
//   std::optional<barrier_row> find(slot)
// (sqlite_barrier.hpp has the rules in words.)

#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/version.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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

/// What a branch operation does to the participant's own tables, given a connection of type Db
/// inside the barrier's local transaction.
template <class Db>
using db_handler = std::function<outcome(Db& db, const branch_request& r)>;

template <class Db>
struct db_tcc_handlers {
    db_handler<Db> on_try;
    db_handler<Db> on_confirm;
    db_handler<Db> on_cancel;
};

template <class Db>
struct db_saga_handlers {
    db_handler<Db> on_action;
    db_handler<Db> on_compensate;
};

/// Wraps a handler taking the payload as a user type `T` (failure if it does not convert).
template <class T, class Db, class F>
db_handler<Db> typed_db(F handler) {
    return [handler = std::move(handler)](Db& db, const branch_request& r) -> outcome {
        outcome refusal;
        std::optional<T> value = convert_payload<T>(r, refusal);
        if (!value)
            return refusal;
        return handler(db, r, std::move(*value));
    };
}

/// Gives a barrier (which has `guard(const branch_request&, const db_handler<Db>&)`) the
/// handler sets for participant_registry::add_tcc and add_saga.
template <class Barrier, class Db>
class barrier_registration {
public:
    tcc_handlers tcc(db_tcc_handlers<Db> h) {
        auto shared = std::make_shared<db_tcc_handlers<Db>>(std::move(h));
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

    saga_handlers saga(db_saga_handlers<Db> h) {
        auto shared = std::make_shared<db_saga_handlers<Db>>(std::move(h));
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

private:
    Barrier& self() { return static_cast<Barrier&>(*this); }
};

/// A branch_request whose views point into strings it owns, for work done on another thread.
struct owned_request {
    explicit owned_request(const branch_request& r)
        : gid(r.gid)
        , branch_id(r.branch_id)
        , op(r.op)
        , payload(r.payload) {}
    branch_request view() const { return {gid, branch_id, op, payload}; }
    std::string gid;
    std::string branch_id;
    branch_op op;
    nlohmann::json payload;
};

} // namespace detail
DTX_NAMESPACE_END

#endif
