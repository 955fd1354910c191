#ifndef DTX_RECOVERY_REPORT_HPP
#define DTX_RECOVERY_REPORT_HPP

// What a recovery pass did (coordinator::recover). Its settings are in recovery_options.hpp,
// included here for code that found them here before.

#include <dtx/recovery_options.hpp>
#include <dtx/version.hpp>

#include <cstddef>

DTX_NAMESPACE_BEGIN

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
