#ifndef DTX_RECOVERY_REPORT_HPP
#define DTX_RECOVERY_REPORT_HPP

#include <dtx/version.hpp>

#include <cstddef>

DTX_NAMESPACE_BEGIN

/// How a recovery pass chooses what to take.
struct recovery_options {
    /// Take every unfinished transaction, whatever its deadline and lease: those still trying
    /// are cancelled, decided ones finished. Right when this process is the journal's only
    /// coordinator and has just started: whatever is unfinished was left by its previous life.
    /// Wrong while another coordinator may be running them.
    bool take_over = false;
};

/// What one recovery pass did.
struct recovery_report {
    /// Unfinished transactions the pass took from the journal.
    std::size_t claimed = 0;
    /// Of those, driven to their end.
    std::size_t finished = 0;
    /// Of those, still unfinished (a participant kept failing): a later pass takes them again.
    std::size_t unfinished = 0;
    /// Of those, left alone because this process is already driving them.
    std::size_t skipped = 0;
};

DTX_NAMESPACE_END

#endif
