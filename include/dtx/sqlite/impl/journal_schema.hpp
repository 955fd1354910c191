#ifndef DTX_SQLITE_IMPL_JOURNAL_SCHEMA_HPP
#define DTX_SQLITE_IMPL_JOURNAL_SCHEMA_HPP

// The SQLite journal's schema (version 4) and the migrations from versions 1 to 3: the tables
// are created as version 1 had them, then brought forward one version at a time.

#include <dtx/error.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/version.hpp>

#include <string>

DTX_NAMESPACE_BEGIN
namespace sqlite {

inline void journal::migrate(int version) {
    auto& db = db_;
    sqlite::transaction tx(db);
    if (version < 1) {
        // A file with tables of its own but no dtx version is not ours: refuse to touch it.
        sqlite::statement other(db,
                                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'dtx_%'");
        if (other.step() && other.integer(0) > 0)
            throw error(errc::journal_corrupt,
                        opts_.path + ": not a dtx journal (it holds other tables)");
        db.exec(R"sql(
            CREATE TABLE dtx_transaction (
                gid            TEXT PRIMARY KEY,
                kind           TEXT NOT NULL CHECK (kind IN ('tcc', 'saga')),
                status         TEXT NOT NULL,
                deadline_ms    INTEGER NOT NULL,
                created_ms     INTEGER NOT NULL,
                ended_ms       INTEGER,
                lease_owner    TEXT,
                lease_until_ms INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID;
            CREATE TABLE dtx_branch (
                gid         TEXT NOT NULL,
                branch_id   TEXT NOT NULL,
                participant TEXT NOT NULL,
                payload     TEXT NOT NULL,
                done        INTEGER NOT NULL DEFAULT 0,
                UNIQUE (gid, branch_id)
            );
            CREATE INDEX dtx_transaction_open
                ON dtx_transaction (lease_until_ms) WHERE ended_ms IS NULL;
            CREATE INDEX dtx_transaction_ended
                ON dtx_transaction (ended_ms) WHERE ended_ms IS NOT NULL;
        )sql");
    }
    if (version < 2) {
        // 2: transactions recovered forward; branches keyed by (gid, branch_id) in one b-tree.
        db.exec(R"sql(
            ALTER TABLE dtx_transaction ADD COLUMN forward INTEGER NOT NULL DEFAULT 0;
            CREATE TABLE dtx_branch_2 (
                gid         TEXT NOT NULL,
                branch_id   TEXT NOT NULL,
                participant TEXT NOT NULL,
                payload     TEXT NOT NULL,
                done        INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (gid, branch_id)
            ) WITHOUT ROWID;
            INSERT INTO dtx_branch_2 (gid, branch_id, participant, payload, done)
                SELECT gid, branch_id, participant, payload, done FROM dtx_branch;
            DROP TABLE dtx_branch;
            ALTER TABLE dtx_branch_2 RENAME TO dtx_branch;
        )sql");
    }
    if (version < 3) {
        // 3: one index for claims and cleanup instead of two (see due_key).
        db.exec("DROP INDEX dtx_transaction_open");
        db.exec("DROP INDEX dtx_transaction_ended");
        db.exec(("CREATE INDEX dtx_transaction_due ON dtx_transaction (" + due_key + ")").c_str());
    }
    if (version < 4) {
        // 4: kind 'msg' (2-phase messages). The CHECK on kind is dropped, which SQLite does
        // by rebuilding the table; only the coordinator writes `kind`.
        db.exec(R"sql(
            CREATE TABLE dtx_transaction_4 (
                gid            TEXT PRIMARY KEY,
                kind           TEXT NOT NULL,
                status         TEXT NOT NULL,
                deadline_ms    INTEGER NOT NULL,
                created_ms     INTEGER NOT NULL,
                ended_ms       INTEGER,
                lease_owner    TEXT,
                lease_until_ms INTEGER NOT NULL DEFAULT 0,
                forward        INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID;
            INSERT INTO dtx_transaction_4 (gid, kind, status, deadline_ms, created_ms, ended_ms,
                                           lease_owner, lease_until_ms, forward)
                SELECT gid, kind, status, deadline_ms, created_ms, ended_ms, lease_owner,
                       lease_until_ms, forward FROM dtx_transaction;
            DROP TABLE dtx_transaction;
            ALTER TABLE dtx_transaction_4 RENAME TO dtx_transaction;
        )sql");
        db.exec(("CREATE INDEX dtx_transaction_due ON dtx_transaction (" + due_key + ")").c_str());
    }
    db.exec(("PRAGMA user_version = " + std::to_string(schema_version)).c_str());
    tx.commit();
}

} // namespace sqlite
DTX_NAMESPACE_END

#endif
