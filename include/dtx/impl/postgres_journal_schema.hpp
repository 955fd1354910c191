#ifndef DTX_IMPL_POSTGRES_JOURNAL_SCHEMA_HPP
#define DTX_IMPL_POSTGRES_JOURNAL_SCHEMA_HPP

// The PostgreSQL journal's schema (version 2) and its server-side functions.

namespace dtx {

inline bool postgres_journal::migrate() {
    // One migrating instance at a time: the others wait on the advisory lock, then find it done.
    db_.exec("BEGIN");
    try {
        db_.exec("SELECT pg_advisory_xact_lock(7270711)"); // 'dtx' journal migrations
        db_.exec("CREATE TABLE IF NOT EXISTS dtx_meta (key text PRIMARY KEY, value integer NOT NULL)");
        int version = 0;
        {
            auto r = db_.exec("SELECT value FROM dtx_meta WHERE key = 'journal_version'");
            if (r.rows() == 1) version = std::stoi(std::string(r.text(0, 0)));
        }
        if (version > schema_version)
            throw error(errc::journal_version, "PostgreSQL journal: schema version " + std::to_string(version) +
                                                   " is newer than this dtx reads (" + std::to_string(schema_version) +
                                                   "); upgrade dtx");
        if (version < 1) {
            db_.exec(R"sql(
CREATE TABLE IF NOT EXISTS dtx_transaction (
    gid            text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('tcc', 'saga')),
    status         text NOT NULL,
    deadline_ms    bigint NOT NULL,
    created_ms     bigint NOT NULL,
    ended_ms       bigint,
    lease_owner    text,
    lease_until_ms bigint NOT NULL DEFAULT 0
))sql");
            db_.exec(R"sql(
CREATE TABLE IF NOT EXISTS dtx_branch (
    gid         text NOT NULL,
    seq         bigserial,
    branch_id   text NOT NULL,
    participant text NOT NULL,
    payload     jsonb NOT NULL,
    done        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (gid, branch_id)
))sql");
            db_.exec("CREATE INDEX IF NOT EXISTS dtx_transaction_open ON dtx_transaction (lease_until_ms) "
                     "WHERE ended_ms IS NULL");
            db_.exec("CREATE INDEX IF NOT EXISTS dtx_transaction_ended ON dtx_transaction (ended_ms) "
                     "WHERE ended_ms IS NOT NULL");

        }
        if (version < 2) {
            // 2: transactions recovered forward (sagas of planned steps): claims leave them trying.
            db_.exec("ALTER TABLE dtx_transaction ADD COLUMN IF NOT EXISTS forward boolean NOT NULL DEFAULT false");
            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_record(t dtx_transaction) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('gid', t.gid, 'kind', t.kind, 'status', t.status, 'deadline_ms', t.deadline_ms,
        'forward', t.forward,
        'branches', COALESCE((SELECT jsonb_agg(jsonb_build_object('id', b.branch_id, 'participant', b.participant,
                                                                  'payload', b.payload, 'done', b.done) ORDER BY b.seq)
                                FROM dtx_branch b WHERE b.gid = t.gid), '[]'::jsonb))
$$)sql");
            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_find(g text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT dtx_record(t) FROM dtx_transaction t WHERE t.gid = g
$$)sql");
            // Claims skip rows another instance is claiming right now, and lease what they take.
            db_.exec(R"sql(
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
            const std::string v = std::to_string(schema_version);
            db_.exec("INSERT INTO dtx_meta (key, value) VALUES ('journal_version', $1::int) "
                     "ON CONFLICT (key) DO UPDATE SET value = $1::int",
                     {v});
        }
        // The write functions have a version of their own: they change without changing the
        // tables, so instances of an older dtx keep working with them (same arguments, same
        // answers), and an older dtx never replaces newer ones.
        int functions = 0;
        {
            auto r = db_.exec("SELECT value FROM dtx_meta WHERE key = 'journal_functions'");
            if (r.rows() == 1) functions = std::stoi(std::string(r.text(0, 0)));
        }
        if (functions < functions_version) {
            // One write: the checks and the change in as few statements as the write needs (a
            // batch runs hundreds of them; each costs a plan and an executor start). A refusal
            // changes nothing.
            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply_one(w jsonb, now_ms bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    g text := w->>'gid';
    from_status text := w->'status'->>'from';
    to_status text := w->'status'->>'to';
    new_owner text := w->'lease'->>'owner';
    cur_status text;
BEGIN
    IF w ? 'begin' THEN
        IF from_status IS NOT NULL AND from_status <> 'trying' THEN RETURN 'refused'; END IF;
        INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms, lease_owner, lease_until_ms, forward)
        VALUES (g, w->'begin'->>'kind', COALESCE(to_status, 'trying'), (w->'begin'->>'deadline_ms')::bigint,
                now_ms, new_owner, COALESCE((w->'lease'->>'until_ms')::bigint, 0),
                COALESCE((w->'begin'->>'forward')::boolean, false))
        ON CONFLICT (gid) DO NOTHING;
        IF NOT FOUND THEN RETURN 'duplicate_gid'; END IF;
    ELSIF new_owner IS NOT NULL OR from_status IS DISTINCT FROM to_status THEN
        -- A new status or lease: one conditional UPDATE (under READ COMMITTED it re-checks its
        -- conditions on the newest version of a row another transaction just changed).
        UPDATE dtx_transaction
           SET status = COALESCE(to_status, status),
               ended_ms = CASE WHEN to_status IN ('confirmed', 'cancelled') THEN now_ms ELSE ended_ms END,
               lease_owner = COALESCE(new_owner, lease_owner),
               lease_until_ms = COALESCE((w->'lease'->>'until_ms')::bigint, lease_until_ms)
         WHERE gid = g
           AND (from_status IS NULL OR status = from_status)
           AND (new_owner IS NULL OR lease_owner IS NULL OR lease_owner = new_owner);
        IF NOT FOUND THEN
            PERFORM 1 FROM dtx_transaction WHERE gid = g;
            IF NOT FOUND THEN RETURN 'unknown_transaction'; END IF;
            RETURN 'refused';
        END IF;
    ELSE
        -- Nothing to change in the transaction row (new branches, done branches, a status kept):
        -- check it, and lock it against a concurrent status change until the commit.
        SELECT status INTO cur_status FROM dtx_transaction WHERE gid = g FOR UPDATE;
        IF NOT FOUND THEN RETURN 'unknown_transaction'; END IF;
        IF from_status IS NOT NULL AND cur_status <> from_status THEN RETURN 'refused'; END IF;
    END IF;
    IF w ? 'branches' THEN
        INSERT INTO dtx_branch (gid, branch_id, participant, payload)
        SELECT g, b.value->>'id', b.value->>'participant', b.value->'payload'
          FROM jsonb_array_elements(w->'branches') WITH ORDINALITY AS b(value, n)
         ORDER BY b.n;
    END IF;
    IF w ? 'done' THEN
        UPDATE dtx_branch SET done = true
         WHERE gid = g AND branch_id IN (SELECT jsonb_array_elements_text(w->'done'));
    END IF;
    RETURN 'ok';
END $$)sql");

            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply(batch jsonb, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    w jsonb;
    answers text[] := '{}';
BEGIN
    FOR w IN SELECT value FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(value, n) ORDER BY n LOOP
        answers := answers || dtx_apply_one(w, now_ms);
    END LOOP;
    RETURN to_jsonb(answers);
END $$)sql");
            const std::string v = std::to_string(functions_version);
            db_.exec("INSERT INTO dtx_meta (key, value) VALUES ('journal_functions', $1::int) "
                     "ON CONFLICT (key) DO UPDATE SET value = $1::int",
                     {v});
        }
        db_.exec("COMMIT");
    } catch (...) {
        try {
            db_.exec("ROLLBACK");
        } catch (...) {
        }
        throw;
    }
    return true;
}

} // namespace dtx

#endif
