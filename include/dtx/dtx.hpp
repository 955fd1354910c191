#ifndef DTX_DTX_HPP
#define DTX_DTX_HPP

// The core of dtx: TCC and sagas as coroutines, the journal interface and its in-memory
// implementation, recovery, and the delivery side of messages (the relay, publishers, schedules).
// Needs Boost.Asio and nlohmann::json, nothing else.

#include <dtx/branch_spec.hpp>
#include <dtx/consume_result.hpp>
#include <dtx/coordinator.hpp>
#include <dtx/coordinator_options.hpp>
#include <dtx/delivery_alert.hpp>
#include <dtx/delivery_schedule.hpp>
#include <dtx/envelope.hpp>
#include <dtx/error.hpp>
#include <dtx/fault_injection.hpp>
#include <dtx/gid.hpp>
#include <dtx/journal.hpp>
#include <dtx/memory_journal.hpp>
#include <dtx/message.hpp>
#include <dtx/notification.hpp>
#include <dtx/outbox_store.hpp>
#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/payload.hpp>
#include <dtx/publisher.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/relay.hpp>
#include <dtx/retry_policy.hpp>
#include <dtx/transaction.hpp>
#include <dtx/transaction_status.hpp>
#include <dtx/tx_options.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#endif
