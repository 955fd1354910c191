#ifndef DTX_IMPL_POSTGRES_JOURNAL_SCHEMA_HPP
#define DTX_IMPL_POSTGRES_JOURNAL_SCHEMA_HPP

// The PostgreSQL journal's schema (version 1) and its server-side functions.

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

            // One write: conditions first (a refusal changes nothing), then the changes.
            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply_one(w jsonb, now_ms bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    g text := w->>'gid';
    cur_status text;
    cur_owner text;
    inserted int;
BEGIN
    SELECT status, lease_owner INTO cur_status, cur_owner FROM dtx_transaction WHERE gid = g FOR UPDATE;
    IF w ? 'begin' THEN
        IF FOUND THEN RETURN 'duplicate_gid'; END IF;
        IF w ? 'status' AND w->'status'->>'from' <> 'trying' THEN RETURN 'refused'; END IF;
        INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms, lease_owner, lease_until_ms)
        VALUES (g, w->'begin'->>'kind', COALESCE(w->'status'->>'to', 'trying'), (w->'begin'->>'deadline_ms')::bigint,
                now_ms, w->'lease'->>'owner', COALESCE((w->'lease'->>'until_ms')::bigint, 0))
        ON CONFLICT (gid) DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF inserted = 0 THEN RETURN 'duplicate_gid'; END IF;
    ELSE
        IF NOT FOUND THEN RETURN 'unknown_transaction'; END IF;
        IF w ? 'status' AND cur_status <> w->'status'->>'from' THEN RETURN 'refused'; END IF;
        IF w ? 'lease' AND cur_owner IS NOT NULL AND cur_owner <> w->'lease'->>'owner' THEN RETURN 'refused'; END IF;
        IF w ? 'status' THEN
            UPDATE dtx_transaction
               SET status = w->'status'->>'to',
                   ended_ms = CASE WHEN w->'status'->>'to' IN ('confirmed', 'cancelled') THEN now_ms ELSE ended_ms END
             WHERE gid = g;
        END IF;
        IF w ? 'lease' THEN
            UPDATE dtx_transaction SET lease_owner = w->'lease'->>'owner',
                   lease_until_ms = (w->'lease'->>'until_ms')::bigint WHERE gid = g;
        END IF;
    END IF;
    INSERT INTO dtx_branch (gid, branch_id, participant, payload)
    SELECT g, b.value->>'id', b.value->>'participant', b.value->'payload'
      FROM jsonb_array_elements(COALESCE(w->'branches', '[]'::jsonb)) WITH ORDINALITY AS b(value, n)
     ORDER BY b.n;
    UPDATE dtx_branch SET done = true
     WHERE gid = g AND branch_id IN (SELECT jsonb_array_elements_text(COALESCE(w->'done', '[]'::jsonb)));
    RETURN 'ok';
END $$)sql");

            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_apply(batch jsonb, now_ms bigint) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    w jsonb;
    answers jsonb := '[]'::jsonb;
BEGIN
    FOR w IN SELECT value FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(value, n) ORDER BY n LOOP
        answers := answers || to_jsonb(dtx_apply_one(w, now_ms));
    END LOOP;
    RETURN answers;
END $$)sql");

            db_.exec(R"sql(
CREATE OR REPLACE FUNCTION dtx_record(t dtx_transaction) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('gid', t.gid, 'kind', t.kind, 'status', t.status, 'deadline_ms', t.deadline_ms,
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
               status = CASE t.status WHEN 'trying' THEN 'cancelling' ELSE t.status END
          FROM due WHERE t.gid = due.gid
        RETURNING t.*)
    SELECT COALESCE(jsonb_agg(dtx_record(c::dtx_transaction)), '[]'::jsonb) INTO result FROM claimed c;
    RETURN result;
END $$)sql");
            db_.exec("INSERT INTO dtx_meta (key, value) VALUES ('journal_version', 1) "
                     "ON CONFLICT (key) DO UPDATE SET value = 1");
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
