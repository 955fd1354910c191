#ifndef DTX_DETAIL_BARRIER_LOGIC_HPP
#define DTX_DETAIL_BARRIER_LOGIC_HPP

// What the barrier decides before a handler runs, for any database. A store offers two
// operations on the barrier table, inside the local transaction:
//   bool insert(slot, origin, state)   insert (gid, branch, slot) unless present; true if inserted
//   std::optional<barrier_row> find(slot)
// (sqlite_barrier.hpp has the rules in words.)

#include <optional>
#include <string>
#include <string_view>

#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>

namespace dtx::detail {

struct barrier_row {
    std::string origin; ///< the operation that wrote the row: "try", "confirm" or "cancel"
    std::string state;  ///< "done", or for work outside the database "started" / "failed"
};

/// The barrier's slot for an operation: tries and actions share "try", cancels and compensations
/// share "cancel".
inline const char* barrier_slot(branch_op op) noexcept {
    switch (op) {
    case branch_op::try_:
    case branch_op::action: return "try";
    case branch_op::confirm: return "confirm";
    default: return "cancel";
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
    if (store.insert(slot.data(), slot.data(), state)) return std::nullopt;
    const std::optional<barrier_row> existing = store.find(slot.data());
    if (slot == "try" && existing && existing->origin == "cancel")
        return failure("gid " + std::string(r.gid) + " branch " + std::string(r.branch_id) + " was cancelled before its " +
                       std::string(to_string(r.op)) + " arrived");
    if (existing && existing->state == "failed") return failure("an earlier " + std::string(to_string(r.op)) + " failed");
    if (existing && existing->state == "started") return std::nullopt; // external work to be redone
    return success(); // a duplicate of a completed operation
}

} // namespace dtx::detail

#endif
