#ifndef DTX_SQLITE_HPP
#define DTX_SQLITE_HPP

// SQLite (opt-in; CMake: dtx::sqlite, links SQLite3): the embedded durable journal, one file
// beside the coordinator, the participant barrier over the participant's own database, and the
// transactional outbox and the inbox of messages.
//
//   dtx::sqlite::journal journal({.path = "orders.dtx.db"});        // <dtx/sqlite/journal.hpp>
//   dtx::sqlite::barrier barrier({.path = "inventory.db"});         // <dtx/sqlite/barrier.hpp>
//   dtx::sqlite::outbox outbox({.path = "orders.db"});              // <dtx/sqlite/outbox.hpp>
//   dtx::sqlite::inbox inbox({.path = "shipping.db"});              // <dtx/sqlite/inbox.hpp>
//
// <dtx/sqlite/connection.hpp> is the small SQLite wrapper that barrier handlers receive.

#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/sqlite/inbox.hpp>
#include <dtx/sqlite/journal.hpp>
#include <dtx/sqlite/outbox.hpp>

#endif
