#ifndef DTX_TESTS_SUPPORT_PG_OUTBOX_HPP
#define DTX_TESTS_SUPPORT_PG_OUTBOX_HPP

// What the PostgreSQL outbox tests share: counting the outbox's rows.

#include <dtx/postgres/outbox.hpp>

#include <cstdint>
#include <string>

#include "model.hpp"

namespace dtx::test {

/// The outbox's rows that match the SQL condition `where`.
inline std::int64_t count(asio::io_context& ioc, postgres::outbox& o, const char* where) {
    const std::string sql = std::string("SELECT COUNT(*) FROM dtx_outbox WHERE ") + where;
    return run(ioc, o.run<std::int64_t>([sql](postgres::connection& db) {
        return db.exec(sql.c_str()).integer(0, 0);
    }));
}

} // namespace dtx::test

#endif
