#ifndef DTX_POSTGRES_DETAIL_SCHEMA_HPP
#define DTX_POSTGRES_DETAIL_SCHEMA_HPP

// The versioned tables that dtx keeps in a participant's own PostgreSQL database (the barrier's,
// the outbox's, the inbox's): each set has its version in the table dtx_meta under its own key,
// so that they live side by side and are created or migrated independently, by one process at a
// time (an advisory lock), whichever opens them first.

#include <dtx/detail/storage.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/version.hpp>

#include <string>

DTX_NAMESPACE_BEGIN
namespace detail {

/// Brings the tables of `name` ("barrier": version key "barrier_version") to version `latest`
/// in one transaction: `migrate(from)` runs when the stored version `from` is older. A version
/// newer than `latest` is refused (dtx::error, *_version code).
template <class Migrate>
void prepare_participant_tables(postgres::connection& db, const std::string& name, int latest,
                                Migrate migrate) {
    postgres::transaction tx(db);
    db.exec("SELECT pg_advisory_xact_lock(7270712)"); // 'dtx' participant tables' migrations
    db.exec("CREATE TABLE IF NOT EXISTS dtx_meta (key text PRIMARY KEY, value integer NOT NULL)");
    const std::string key = name + "_version";
    auto v = db.exec("SELECT value FROM dtx_meta WHERE key = $1", {key});
    const int version = v.rows() ? std::stoi(std::string(v.text(0, 0))) : 0;
    bring_to_version(db.role(), "PostgreSQL " + name + ":", version, latest, migrate, [&] {
        db.exec("INSERT INTO dtx_meta (key, value) VALUES ($1, $2::int) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                {key, std::to_string(latest)});
    });
    tx.commit();
}

} // namespace detail
DTX_NAMESPACE_END

#endif
