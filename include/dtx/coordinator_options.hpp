#ifndef DTX_COORDINATOR_OPTIONS_HPP
#define DTX_COORDINATOR_OPTIONS_HPP

// Settings of a coordinator. Those of one transaction are in tx_options.hpp, those of one
// recovery pass in recovery_options.hpp (both included here).

#include <dtx/fault_injection.hpp>
#include <dtx/gid.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/tx_options.hpp>
#include <dtx/version.hpp>

#include <chrono>
#include <cstddef>
#include <string>

DTX_NAMESPACE_BEGIN

struct coordinator_options {
    /// Default time a transaction may take to reach its decision. Past it, the transaction is
    /// cancelled, by its coordinator or by recovery in any process.
    std::chrono::milliseconds transaction_timeout = std::chrono::seconds{60};
    /// Longest wait for one branch call; an unanswered call is an unknown result. Zero: no limit
    /// (tries and actions are still bounded by the transaction deadline).
    std::chrono::milliseconds call_timeout = std::chrono::seconds{10};
    /// Retries of confirm, cancel and compensate by a live transaction. Without an attempt limit,
    /// the caller waits until phase 2 has succeeded everywhere; with one, the caller gets a
    /// `confirming` / `cancelling` result and recovery finishes the rest.
    retry_policy phase_two{};
    /// How soon a branch that answered `pending` to a try or action is asked again.
    retry_policy pending{.initial_backoff = std::chrono::milliseconds{20},
                         .max_backoff = std::chrono::seconds{2}};
    /// Confirm (or cancel) the branches of a TCC transaction concurrently rather than one by one.
    /// Saga compensation is always sequential, newest step first.
    bool concurrent_phase_two = true;

    /// This coordinator's name in journal leases; unique per process (a gid by default).
    std::string owner = make_gid();
    /// Retries of phase 2 within one recovery pass; a transaction that does not end in a pass is
    /// taken up again by a later one once its lease has expired.
    retry_policy recovery_retry{.max_attempts = 10};
    /// How often the background recovery task runs a pass.
    std::chrono::milliseconds recovery_interval = std::chrono::seconds{1};
    /// How long a coordinator holds a transaction it drives against other coordinators sharing
    /// the journal: a live one from its decision on, a recovery pass from its claim. Renewed while
    /// phase 2 goes on; once it has expired, another coordinator may take the transaction over.
    std::chrono::milliseconds lease = std::chrono::seconds{30};
    /// Transactions claimed (and driven concurrently) at a time by recovery.
    std::size_t recovery_batch = 256;

    /// Test seam: stop the coordinator at a chosen point (see fault_injection.hpp).
    fault_hook on_fault{};
};

DTX_NAMESPACE_END

#endif
