#ifndef DTX_POSTGRES_IMPL_JOURNAL_SCHEMA_HPP
#define DTX_POSTGRES_IMPL_JOURNAL_SCHEMA_HPP

#include <dtx/detail/storage.hpp>
#include <dtx/version.hpp>

// The PostgreSQL journal's schema (version 4: one row per transaction, its branches in a jsonb
// column; 4 only allows kind 'msg'), the migrations from versions 1 to 3, and the server-side
// functions.

DTX_NAMESPACE_BEGIN
namespace postgres {

inline bool journal::migrate(postgres::connection& db) {
    // One migrating instance at a time: the others wait on the advisory lock, then find it done.
    postgres::transaction tx(db);
    db.exec("SELECT pg_advisory_xact_lock(7270711)"); // 'dtx' journal migrations
    db.exec("CREATE TABLE IF NOT EXISTS dtx_meta (key text PRIMARY KEY, value integer NOT NULL)");
    int version = 0;
    {
        auto r = db.exec("SELECT value FROM dtx_meta WHERE key = 'journal_version'");
        if (r.rows() == 1)
            version = std::stoi(std::string(r.text(0, 0)));
    }
    if (version > schema_version)
        throw detail::newer_schema(db.role(), "PostgreSQL journal:", version, schema_version);
    if (version < 1) {
        // Version 3 from the start. Every write is one row change; the row's pages keep room
        // (fillfactor) for the new versions of their rows, and no index covers a column that
        // a write other than the end changes, so those updates are HOT (no index entries).
        // No CHECK constraint: PostgreSQL evaluates it on every update (only dtx_apply writes
        // `kind`, from a begin).
        db.exec(R"sql(
CREATE TABLE IF NOT EXISTS dtx_transaction (
    gid            text PRIMARY KEY,
    kind           text NOT NULL,   -- 'tcc' | 'saga' | 'msg'
    status         text NOT NULL,
    deadline_ms    bigint NOT NULL,
    created_ms     bigint NOT NULL,
    ended_ms       bigint,
    lease_owner    text,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    forward        boolean NOT NULL DEFAULT false,
    branches       jsonb NOT NULL DEFAULT '[]'
) WITH (fillfactor = 50))sql");
        db.exec("CREATE INDEX IF NOT EXISTS dtx_transaction_ended ON dtx_transaction (ended_ms) "
                "WHERE ended_ms IS NOT NULL");
    } else if (version < 3) {
        if (version < 2) {
            // 2: transactions recovered forward (sagas of planned steps): claims leave them
            // trying.
            db.exec("ALTER TABLE dtx_transaction ADD COLUMN IF NOT EXISTS forward boolean NOT "
                    "NULL DEFAULT false");
        }
        // 3: the branch rows move into their transaction's row, in registration order.
        db.exec("ALTER TABLE dtx_transaction ADD COLUMN branches jsonb NOT NULL DEFAULT '[]'");
        db.exec(R"sql(
UPDATE dtx_transaction t SET branches = b.list
  FROM (SELECT gid, jsonb_agg(jsonb_build_object('id', branch_id, 'participant', participant, 'payload', payload)
                              || CASE WHEN done THEN '{"done": true}'::jsonb ELSE '{}'::jsonb END ORDER BY seq) AS list
          FROM dtx_branch GROUP BY gid) b
 WHERE t.gid = b.gid)sql");
        db.exec("DROP TABLE dtx_branch");
        db.exec("DROP FUNCTION IF EXISTS dtx_apply_one(jsonb, bigint)"); // version 2's write
                                                                         // function
        db.exec("DROP INDEX IF EXISTS dtx_transaction_open");
        db.exec("ALTER TABLE dtx_transaction DROP CONSTRAINT IF EXISTS dtx_transaction_kind_check");
        db.exec("ALTER TABLE dtx_transaction SET (fillfactor = 50)");
    }
    if (version < 3) {
        // Claims find the unfinished transactions through a partial index on a column that
        // never changes (there are few of them); only the end leaves the index.
        db.exec("CREATE INDEX IF NOT EXISTS dtx_transaction_open ON dtx_transaction (created_ms) "
                "WHERE ended_ms IS NULL");
        // The branch records as rows, for reading (operators, version 2's queries).
        db.exec(R"sql(
CREATE OR REPLACE VIEW dtx_branch AS
SELECT t.gid, b.n AS seq, b.value->>'id' AS branch_id, b.value->>'participant' AS participant,
       b.value->'payload' AS payload, COALESCE((b.value->>'done')::boolean, false) AS done
  FROM dtx_transaction t, jsonb_array_elements(t.branches) WITH ORDINALITY AS b(value, n))sql");
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_record(t dtx_transaction) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('gid', t.gid, 'kind', t.kind, 'status', t.status, 'deadline_ms', t.deadline_ms,
                              'forward', t.forward, 'branches', t.branches)
$$)sql");
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_find(g text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT dtx_record(t) FROM dtx_transaction t WHERE t.gid = g
$$)sql");
        // Claims skip rows another instance is claiming right now, and lease what they take.
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_claim(a jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (a->>'now_ms')::bigint;
    take_over boolean := (a->>'take_over')::boolean;
    result jsonb;
BEGIN
    WITH due AS (
        SELECT gid FROM dtx_transaction
         WHERE ended_ms IS NULL
           AND lease_until_ms <= (CASE WHEN take_over THEN 9223372036854775807 ELSE now_ms END)
           AND (take_over OR status <> 'trying' OR deadline_ms <= now_ms)
         ORDER BY lease_until_ms
         LIMIT (a->>'limit')::int
           FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE dtx_transaction t
           SET lease_owner = a->>'owner',
               lease_until_ms = now_ms + (a->>'lease_ms')::bigint,
               status = CASE WHEN t.status = 'trying' AND NOT t.forward THEN 'cancelling' ELSE t.status END
          FROM due WHERE t.gid = due.gid
        RETURNING t.*)
    SELECT COALESCE(jsonb_agg(dtx_record(c::dtx_transaction)), '[]'::jsonb) INTO result FROM claimed c;
    RETURN result;
END $$)sql");
    }
    if (version < schema_version) {
        // 4: kind 'msg' (2-phase messages); the tables are unchanged (kind has no CHECK), but an
        // older dtx must not read records it does not know.
        const std::string v = std::to_string(schema_version);
        db.exec("INSERT INTO dtx_meta (key, value) VALUES ('journal_version', $1::int) "
                "ON CONFLICT (key) DO UPDATE SET value = $1::int",
                {v});
    }
    // The write functions have a version of their own: they change without changing the
    // tables, so instances of an older dtx keep working with them (same arguments, same
    // answers), and an older dtx never replaces newer ones. A new schema needs new ones.
    int functions = 0;
    {
        auto r = db.exec("SELECT value FROM dtx_meta WHERE key = 'journal_functions'");
        if (r.rows() == 1)
            functions = std::stoi(std::string(r.text(0, 0)));
    }
    if (version < 3 || functions < functions_version) {
        // 5: dtx_apply_single. 6: the journal calls dtx_apply_distinct itself when it knows
        // the writes concern different transactions; it keeps plans by gid, as dtx_apply does.
        // Marks branches done: the array rebuilt with `"done": true` in the named elements.
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_marked(branches jsonb, done jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_agg(CASE WHEN done ? (b.value->>'id') THEN b.value || '{"done": true}'::jsonb
                                   ELSE b.value END ORDER BY b.n), '[]'::jsonb)
      FROM jsonb_array_elements(branches) WITH ORDINALITY AS b(value, n)
$$)sql");
        // Writes that each concern a different transaction: one INSERT for the begins and
        // one UPDATE for the rest (status, lease, new branches appended, done flags), so a
        // statement's fixed cost is paid once for all of them. Each row is checked (status,
        // lease owner, duplicate gid) as it is changed; under READ COMMITTED the UPDATE
        // re-checks on the newest version of a row another transaction just changed. A
        // refused write changes nothing.
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply_distinct(batch jsonb, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    answers jsonb;
BEGIN
    WITH w AS (
        SELECT e.n, e.v->>'gid' AS gid, e.v ? 'begin' AS is_begin, e.v->'begin' AS b,
               e.v->'status'->>'from' AS from_status, e.v->'status'->>'to' AS to_status,
               e.v->'lease'->>'owner' AS new_owner, (e.v->'lease'->>'until_ms')::bigint AS until_ms,
               e.v->'branches' AS branches, e.v->'done' AS done
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(v, n)),
    inserted AS (
        INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms, lease_owner, lease_until_ms,
                                     forward, branches)
        SELECT gid, b->>'kind', COALESCE(to_status, 'trying'), (b->>'deadline_ms')::bigint, now_ms, new_owner,
               COALESCE(until_ms, 0), COALESCE((b->>'forward')::boolean, false),
               CASE WHEN done IS NOT NULL THEN dtx_marked(COALESCE(branches, '[]'::jsonb), done)
                    ELSE COALESCE(branches, '[]'::jsonb) END
          FROM w
         WHERE is_begin AND (from_status IS NULL OR from_status = 'trying')
        ON CONFLICT (gid) DO NOTHING
        RETURNING gid),
    updated AS (
        UPDATE dtx_transaction t
           SET status = COALESCE(w.to_status, t.status),
               ended_ms = CASE WHEN w.to_status IN ('confirmed', 'cancelled') THEN now_ms ELSE t.ended_ms END,
               lease_owner = COALESCE(w.new_owner, t.lease_owner),
               lease_until_ms = COALESCE(w.until_ms, t.lease_until_ms),
               branches = CASE WHEN w.done IS NOT NULL
                               THEN dtx_marked(t.branches || COALESCE(w.branches, '[]'::jsonb), w.done)
                               WHEN w.branches IS NOT NULL THEN t.branches || w.branches
                               ELSE t.branches END
          FROM w
         WHERE NOT w.is_begin AND t.gid = w.gid
           AND (w.from_status IS NULL OR t.status = w.from_status)
           AND (w.new_owner IS NULL OR t.lease_owner IS NULL OR t.lease_owner = w.new_owner)
        RETURNING t.gid),
    applied AS (SELECT gid FROM inserted UNION ALL SELECT gid FROM updated)
    SELECT jsonb_agg(CASE WHEN w.gid IN (SELECT gid FROM applied) THEN 'ok'
                          WHEN w.is_begin AND (w.from_status IS NULL OR w.from_status = 'trying') THEN 'duplicate_gid'
                          WHEN w.is_begin THEN 'refused'
                          WHEN EXISTS (SELECT 1 FROM dtx_transaction x WHERE x.gid = w.gid) THEN 'refused'
                          ELSE 'unknown_transaction' END ORDER BY w.n)
      INTO answers FROM w;
    RETURN COALESCE(answers, '[]'::jsonb);
END $$)sql");
        // A batch of one write (low concurrency): the same checks and changes as
        // dtx_apply_distinct, as one INSERT or one UPDATE of the row looked up by its key,
        // without the batch's array, join and answer list. The generic plan of a lookup by
        // key is an index scan whatever the table's size.
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply_single(w jsonb, now_ms bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    g text := w->>'gid';
    from_status text := w->'status'->>'from';
    to_status text := w->'status'->>'to';
    new_owner text := w->'lease'->>'owner';
    until_ms bigint := (w->'lease'->>'until_ms')::bigint;
    added jsonb := w->'branches';
    done jsonb := w->'done';
BEGIN
    IF w ? 'begin' THEN
        IF from_status IS NOT NULL AND from_status <> 'trying' THEN
            RETURN 'refused';
        END IF;
        INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms, lease_owner, lease_until_ms,
                                     forward, branches)
        VALUES (g, w->'begin'->>'kind', COALESCE(to_status, 'trying'), (w->'begin'->>'deadline_ms')::bigint, now_ms,
                new_owner, COALESCE(until_ms, 0), COALESCE((w->'begin'->>'forward')::boolean, false),
                CASE WHEN done IS NOT NULL THEN dtx_marked(COALESCE(added, '[]'::jsonb), done)
                     ELSE COALESCE(added, '[]'::jsonb) END)
        ON CONFLICT (gid) DO NOTHING;
        RETURN CASE WHEN FOUND THEN 'ok' ELSE 'duplicate_gid' END;
    END IF;
    UPDATE dtx_transaction t
       SET status = COALESCE(to_status, t.status),
           ended_ms = CASE WHEN to_status IN ('confirmed', 'cancelled') THEN now_ms ELSE t.ended_ms END,
           lease_owner = COALESCE(new_owner, t.lease_owner),
           lease_until_ms = COALESCE(until_ms, t.lease_until_ms),
           branches = CASE WHEN done IS NOT NULL THEN dtx_marked(t.branches || COALESCE(added, '[]'::jsonb), done)
                           WHEN added IS NOT NULL THEN t.branches || added
                           ELSE t.branches END
     WHERE t.gid = g
       AND (from_status IS NULL OR t.status = from_status)
       AND (new_owner IS NULL OR t.lease_owner IS NULL OR t.lease_owner = new_owner);
    IF FOUND THEN
        RETURN 'ok';
    END IF;
    RETURN CASE WHEN EXISTS (SELECT 1 FROM dtx_transaction x WHERE x.gid = g) THEN 'refused'
                ELSE 'unknown_transaction' END;
END $$)sql");
        // A batch in order. Usually its writes concern different transactions (a coordinator
        // waits for one sync write of a transaction before it sends the next): one
        // dtx_apply_distinct for all. Otherwise one per write, in order. The plans are cached
        // for the session, perhaps made while the table was still small: the settings keep
        // them looking rows up by gid, whatever the table's size was then.
        db.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply(batch jsonb, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    w jsonb;
    answers text[] := '{}';
BEGIN
    -- A batch of one write (low concurrency) skips the check, a query of its own: plpgsql
    -- evaluates a simple expression such as the length without starting one.
    IF jsonb_array_length(batch) < 2 THEN
        RETURN dtx_apply_distinct(batch, now_ms);
    END IF;
    IF (SELECT count(DISTINCT e->>'gid') = count(*) FROM jsonb_array_elements(batch) AS e) THEN
        RETURN dtx_apply_distinct(batch, now_ms);
    END IF;
    FOR w IN SELECT value FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(value, n) ORDER BY n LOOP
        answers := answers || (dtx_apply_distinct(jsonb_build_array(w), now_ms)->>0);
    END LOOP;
    RETURN to_jsonb(answers);
END $$)sql");
        const std::string v = std::to_string(functions_version);
        db.exec("INSERT INTO dtx_meta (key, value) VALUES ('journal_functions', $1::int) "
                "ON CONFLICT (key) DO UPDATE SET value = $1::int",
                {v});
    }
    tx.commit();
    return true;
}

} // namespace postgres
DTX_NAMESPACE_END

#endif
