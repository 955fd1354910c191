#ifndef DTX_RECOVERY_OPTIONS_HPP
#define DTX_RECOVERY_OPTIONS_HPP

// Settings of one recovery pass, given to coordinator::recover. What the pass did comes back as a
// recovery_report.

#include <dtx/version.hpp>

DTX_NAMESPACE_BEGIN

/// How a recovery pass chooses what to take.
struct recovery_options {
    /// Take every unfinished transaction, whatever its deadline and lease: those still trying
    /// are cancelled, decided ones finished. Right when this process is the journal's only
    /// coordinator and has just started: whatever is unfinished was left by its previous life.
    /// Wrong while another coordinator may be running them.
    bool take_over = false;
};

DTX_NAMESPACE_END

#endif
