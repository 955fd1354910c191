#ifndef DTX_POSTGRES_HPP
#define DTX_POSTGRES_HPP

// PostgreSQL (opt-in; CMake: dtx::postgres, links libpq): the journal that several coordinator
// processes share, the participant barrier over the participant's own PostgreSQL database, and
// the messages' outbox and inbox in that database.
//
//   dtx::postgres::journal journal({.conninfo = "host=db dbname=orders"}); // postgres/journal.hpp
//   dtx::postgres::barrier barrier({.conninfo = "host=db dbname=stock"});  // postgres/barrier.hpp
//   dtx::postgres::outbox outbox({.conninfo = "host=db dbname=stock"});    // postgres/outbox.hpp
//   dtx::postgres::inbox inbox({.conninfo = "host=db dbname=shipping"});   // postgres/inbox.hpp
//
// <dtx/postgres/connection.hpp> is the small libpq wrapper that barrier handlers receive.

#include <dtx/postgres/barrier.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/postgres/inbox.hpp>
#include <dtx/postgres/journal.hpp>
#include <dtx/postgres/outbox.hpp>

#endif
