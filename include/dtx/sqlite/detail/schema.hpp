#ifndef DTX_SQLITE_DETAIL_SCHEMA_HPP
#define DTX_SQLITE_DETAIL_SCHEMA_HPP

// The versioned tables that dtx keeps in a participant's own SQLite database (the barrier's, the
// outbox's, the inbox's): each set has its version in the table dtx_meta, under its own key, so
// that they live side by side in one file and are created or migrated independently.

#include <dtx/detail/storage.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/version.hpp>

#include <chrono>
#include <string>

DTX_NAMESPACE_BEGIN
namespace detail {

/// Sets up the connection (busy timeout, WAL with synchronous FULL or NORMAL) and brings the
/// tables of `name` ("barrier": version key "barrier_version") to version `latest`:
/// `migrate(from)` runs in one transaction when the stored version `from` is older. A version
/// newer than `latest` is refused (dtx::error, *_version code).
template <class Migrate>
void prepare_participant_tables(sqlite::connection& db, std::chrono::milliseconds busy_timeout,
                                bool synchronous_full, const std::string& name, int latest,
                                Migrate migrate) {
    db.set_busy_timeout(busy_timeout);
    db.use_wal(synchronous_full);
    sqlite::transaction tx(db);
    db.exec("CREATE TABLE IF NOT EXISTS dtx_meta (key TEXT PRIMARY KEY, value INTEGER NOT "
            "NULL) WITHOUT ROWID");
    const std::string key = name + "_version";
    int version = 0;
    {
        sqlite::statement v(db, "SELECT value FROM dtx_meta WHERE key = ?");
        v.bind(key);
        if (v.step())
            version = static_cast<int>(v.integer(0));
    }
    bring_to_version(db.role(), db.path() + ": " + name, version, latest, migrate, [&] {
        sqlite::statement set(db, "INSERT OR REPLACE INTO dtx_meta (key, value) VALUES (?, ?)");
        set.bind(key, latest).run();
    });
    tx.commit();
}

} // namespace detail
DTX_NAMESPACE_END

#endif
