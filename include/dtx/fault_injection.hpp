#ifndef DTX_FAULT_INJECTION_HPP
#define DTX_FAULT_INJECTION_HPP

// A seam for crash tests: the coordinator reports every point after which a real process could
// die (each journal write, each branch call) to a hook. When the hook answers true, the
// coordinator stops right there, as if the process had been killed: the coroutine that reached
// the point never resumes and nothing after the point is done. The hook is expected to stop the
// io_context; the test then destroys the coordinator and the io_context, keeps the journal and the
// participants, and lets a fresh coordinator recover.

#include <dtx/transaction_status.hpp>
#include <dtx/version.hpp>

#include <functional>
#include <string_view>

DTX_NAMESPACE_BEGIN

enum class fault_site : unsigned char {
    journal_write, ///< a journal write has completed
    branch_call,   ///< a branch call has returned (or timed out, or thrown)
};

/// What had just been done at a fault point: which journal write, or a branch call.
enum class fault_step : unsigned char {
    begin,     ///< the transaction began, with its first branches (a planned saga: all its steps)
    register_, ///< more branches of a begun transaction were registered
    decide,    ///< the decision (confirm or cancel) was written
    done,      ///< the branches phase 2 finished were recorded, as it could not finish them all
    end,       ///< the end was written (a saga body's confirm decision is its end)
    lease,     ///< the lease was renewed before a phase-2 retry
    claim,     ///< a recovery pass claimed transactions (reported once per batch)
    call,      ///< a branch call returned (or timed out, or threw)
};

/// The step's name in logs: "begin", "register", "decide", "done", "end", "lease", "claim", "call".
inline constexpr std::string_view to_string(fault_step s) noexcept {
    switch (s) {
    case fault_step::begin:
        return "begin";
    case fault_step::register_:
        return "register";
    case fault_step::decide:
        return "decide";
    case fault_step::done:
        return "done";
    case fault_step::end:
        return "end";
    case fault_step::lease:
        return "lease";
    case fault_step::claim:
        return "claim";
    case fault_step::call:
        return "call";
    }
    return "?";
}

struct fault_point {
    fault_site site;
    std::string_view gid;
    /// The branch called, or for a journal write the last branch it registered; may be empty.
    std::string_view branch_id;
    /// For a branch call: the operation. For a journal write: the operation of its phase, which
    /// tells a confirm decision, `done` or end from a cancel or compensate one (meaningless for
    /// `lease` and `claim`).
    branch_op op;
    /// Which journal write, or `call` for a branch call.
    fault_step what;
};

/// Returns true to stop the coordinator at this point.
using fault_hook = std::function<bool(const fault_point&)>;

DTX_NAMESPACE_END

#endif
