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

struct fault_point {
    fault_site site;
    std::string_view gid;
    /// The branch called, or for a journal write the last branch it registered; may be empty.
    std::string_view branch_id;
    /// For a branch call: the operation. For a journal write: unused.
    branch_op op;
    /// For a journal write: "begin", "register", "decide", "done" or "end". For a call: "call".
    std::string_view what;
};

/// Returns true to stop the coordinator at this point.
using fault_hook = std::function<bool(const fault_point&)>;

DTX_NAMESPACE_END

#endif
