#ifndef DTX_TWO_PHASE_MESSAGE_HPP
#define DTX_TWO_PHASE_MESSAGE_HPP

// 2-phase messages (DTM's `msg`, RocketMQ's transactional message): the coordinator owns the
// delivery of a message whose sending must follow a local transaction of this service, when the
// service's database cannot hold an outbox (message.hpp, relay.hpp) or the message should go
// through the journal like any other transaction.
//
//   dtx::sqlite::barrier orders({.path = "orders.db"});              // the service's database
//   participants.add_check_back("orders", orders.check_back());     // once, at startup
//   dtx::two_phase_message msg;
//   msg.check_back = "orders";                 // a registered check-back, or a URL
//   msg.branches.push_back({"inventory", item}); // each gets `action`, at least once
//   msg.branches.push_back({"http://billing:8080/dtx/billing", amount});
//   dtx::message_local_transaction local = [&](std::string gid) -> asio::awaitable<dtx::outcome> {
//       auto change = [](dtx::sqlite::connection& db) {
//           db.exec("UPDATE orders SET state = 'placed' WHERE id = 42");
//           return dtx::success(); // or dtx::failure("...") to abort the message
//       };
//       co_return co_await orders.message_local(gid, change); // a named lambda (g++ 12)
//   };
//   dtx::tx_result r = co_await coord.prepare_and_submit(std::move(msg), local);
//   // r.status: confirmed (delivered), cancelled (the local transaction did not commit), ...
//
// The steps, each write-ahead:
//   1. prepare: the message is journaled (kind `msg`, status `trying`), every branch and the
//      check-back (as branch "00") in one durable write;
//   2. the local transaction runs: `local(gid)`, which must write the barrier row of the message
//      in the same local database transaction as the business change (the barrier's
//      message_local does it);
//   3. submit: once it answered success, the status becomes `confirming`, durably;
//   4. delivery: each branch gets `action` until it answers success, on the coordinator's
//      phase-2 retry policy (a failure is retried too: a message is never compensated), then
//      the message is `confirmed`.
// A local transaction answering failure (a business "no") aborts the message: `cancelled`,
// nothing delivered. One that throws or answers pending leaves the outcome unknown: the
// coordinator asks the check-back at once.
//
// The check-back answers whether the message's local transaction committed. The barriers
// implement it as DTM's QueryPrepared: it writes the message's barrier row marked "rollback"
// unless the local transaction wrote it first, and answers success if the row is the local
// transaction's, failure if it is its own (the local transaction never committed, and now never
// can: its own write of the row fails). So a local commit racing the check-back ends one way
// only: committed and delivered, or rolled back and never delivered.
//
// Recovery: a message still `trying` past its deadline (its process died between prepare and
// submit) is not presumed aborted: recovery asks the check-back. Success: submitted and
// delivered; failure: cancelled; pending or no answer: asked again at a later pass. A message
// found `confirming` is delivered. Branches are saga participants (or URLs): their `action` is
// the delivery, and must tolerate a repeat (the barrier does).
//
// Over HTTP the calls follow DTM: actions are `trans_type=msg&op=action`, the check-back is
// `GET <url>?branch_id=00&gid=<gid>&op=msg&trans_type=msg` (docs/protocol.md); so dtx can drive
// DTM-written services and a DTM server can drive a dtx service's messages.

#include <dtx/branch_spec.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/outcome.hpp>
#include <dtx/version.hpp>

#include <functional>
#include <string>
#include <vector>

DTX_NAMESPACE_BEGIN

/// A 2-phase message: where it goes, and whom to ask whether its local transaction committed.
struct two_phase_message {
    /// The deliveries: each branch's participant (a saga participant or a URL) gets `action`
    /// with its payload; branch ids "01", "02", ... in this order.
    std::vector<branch_spec> branches;
    /// A check-back registered with participant_registry::add_check_back, or a URL.
    std::string check_back;
};

/// The local transaction of a 2-phase message, given the message's gid: commits the business
/// change with the message's barrier row (see the barrier's message_local), and answers success
/// (committed), failure (not committed: the message is aborted); throwing means unknown.
using message_local_transaction = std::function<asio::awaitable<outcome>(std::string gid)>;

DTX_NAMESPACE_END

#endif
