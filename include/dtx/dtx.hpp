#ifndef DTX_DTX_HPP
#define DTX_DTX_HPP

// The core of dtx: TCC and sagas as coroutines, the journal interface and its in-memory
// implementation, and recovery. Needs Boost.Asio and nlohmann::json, nothing else.

#include <dtx/branch_spec.hpp>
#include <dtx/coordinator.hpp>
#include <dtx/coordinator_options.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/gid.hpp>
#include <dtx/journal.hpp>
#include <dtx/memory_journal.hpp>
#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/payload.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/transaction.hpp>
#include <dtx/transaction_status.hpp>
#include <dtx/tx_options.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#endif
