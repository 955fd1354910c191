#ifndef DTX_POSTGRES_OUTBOX_HPP
#define DTX_POSTGRES_OUTBOX_HPP

// The transactional outbox in a PostgreSQL database: messages (<dtx/message.hpp>) added in the
// same local transaction as the business change, so that they exist exactly when it committed.
// A relay (<dtx/relay.hpp>) delivers them; several relays, in any number of processes, can share
// one database.
//
//   dtx::postgres::outbox outbox({.conninfo = "host=127.0.0.1 dbname=orders"});
//   auto place = [&](dtx::postgres::connection& db) {
//       db.exec("UPDATE stock SET available = available - 1 WHERE sku = $1", {"A-1"});
//       outbox.add(db, {.destination = "http://127.0.0.1:8090/events", .key = "A-1",
//                       .payload = {{"sold", "A-1"}}});
//       return 0;
//   };
//   co_await outbox.run<int>(place); // one local transaction: the update and the message
//
// Two ways to add messages:
//   - run(fn) runs fn(connection&) in a local transaction on one of the outbox's connections;
//   - add(db, m) adds to a transaction open on any connection to the same database: the
//     PostgreSQL barrier's, inside a barrier handler (a TCC confirm that emits an event), or your
//     own.
// Adding a message costs one statement in the transaction (SELECT dtx_outbox_add(...)), and no
// commit of its own.
//
// Waking the relay at commit, not at its next poll:
//   - in this process, when the transaction commits through postgres::transaction (run(), the
//     barrier's handlers, or your own postgres::transaction);
//   - in every process, by NOTIFY dtx_outbox, sent in the adding transaction: PostgreSQL delivers
//     it when, and only if, that transaction commits. Each outbox with a relay LISTENs on a
//     connection of its own. The relay's poll is only the fallback (a lost connection, a relay
//     that died holding leases).
//
// Relays claim due messages with `FOR UPDATE SKIP LOCKED` and a lease (owner, lease-until): a
// message is claimable when it is pending, due, not leased, and no earlier message of its key is
// pending or parked (the head of its key). No cursor over ids, no window of time: on PostgreSQL
// rows become visible out of sequence order (a transaction that took id 10 may commit after the one
// that took 11), which is how `id > last` relays lose messages and time-window lookbacks resend
// them.
//
// Order per key is commit order. A sequence number alone does not give it: two transactions
// adding to one key may commit in the opposite order of their numbers. So adding a message with
// a non-empty key first takes a transaction-level advisory lock on that key (held until commit or
// rollback) and only then draws the message's sequence number: a second transaction adding to
// the same key waits until the first has ended, and its number is larger. Among the messages of a
// key, sequence order is then commit order; a message whose number is smaller than a visible
// one's of its key has committed already (or rolled back: then it never existed), so no
// uncommitted message can be overtaken, and claims never have to guess. The costs:
//   - transactions adding messages with the same key run their commit one after the other, from
//     the add to the commit (keys are usually the entity the transaction updates, whose row
//     lock serialises them anyway);
//   - a transaction adding several keys takes their locks in the order it adds them: add them in
//     one consistent order (sorted), as with row locks, or PostgreSQL may abort one of two
//     transactions that add the same two keys in opposite orders (deadlock detected, 40P01);
//   - the lock is on a 32-bit hash of the key: two keys that collide share their lock (not their
//     order), which costs waiting, never correctness.
// The sequence must keep its default cache of 1 (numbers in the order they are drawn).
//
// A claim costs what it claims, not the messages held back behind a busy key (a dead letter, a
// retry, a slow destination): each message knows whether it is the head of its key and when it
// is ready, and a partial index holds the pending heads by ready time
// (<dtx/detail/outbox_logic.hpp> tells how). Concurrent transactions must not get the head flag
// wrong. A message is added with its key's lock held and decides "head" in a statement that starts
// after the lock was granted; the settlement that delivers messages (or the discard of a dead
// letter) takes the locks of their keys before it changes anything, and promotes the next message
// of each key in a statement that starts after its own changes. Under READ COMMITTED each statement
// sees what committed before it started, so of an add and a settlement on one key, whichever gets
// the lock second sees all the first one did:
//   - the settlement first: the add sees the delivered message gone from its key's pending
//     ones, and is the head if nothing else of its key is pending or parked;
//   - the add first: the settlement waits for the adding transaction to end; its promotion
//     then sees the new message (committed) or nothing (rolled back), and makes the earliest
//     pending message of the key the head.
// There is no third order: the add holds the lock from its statement to its end, the settlement
// from before its first change to its end. So add() and the relay's statements need READ
// COMMITTED (PostgreSQL's default): adding a message with a key in
// a REPEATABLE READ or SERIALIZABLE transaction, whose snapshot may predate the lock, is refused
// (an error from the database, SQLSTATE 0A000). Settlements take their keys' locks in byte
// order of the keys: a transaction that adds several keys in sorted order (as asked above)
// never deadlocks with them (two keys whose hashes collide can still make PostgreSQL abort one
// of two such transactions, 40P01; when it is the settlement, its messages are delivered again
// once their leases end). A settlement waits for the business transactions that are adding to
// the keys it delivered, until they end: keep them short.
//
// Schema 2 added this; an outbox of schema 1 is migrated in place when opened (one
// transaction, under the migration lock; a moment per 100,000 rows).
// Stop processes of an older dtx on the same database first: they would add, claim and settle
// without keeping the new columns (and they refuse to open an outbox of schema 2).
//
// The tables (dtx_outbox, the function dtx_outbox_add; version in dtx_meta under
// "outbox_version") live beside the business tables and the barrier's.
//
// Link with libpq (CMake: dtx::postgres).

#include <dtx/detail/outbox_logic.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/message.hpp>
#include <dtx/outbox_store.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/postgres/detail/listener.hpp>
#include <dtx/postgres/detail/pool.hpp>
#include <dtx/postgres/detail/schema.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace postgres {

struct outbox_options {
    /// The service's database: its own tables and the outbox's (dtx_outbox, dtx_meta).
    std::string conninfo{};
    /// Connections (and threads) for run(), claims and settlements.
    std::size_t connections = 2;
    /// add() sends NOTIFY dtx_outbox, which wakes the relays of every process at the commit.
    /// PostgreSQL serialises the commits of transactions that sent a NOTIFY (a lock on its
    /// notification queue): at thousands of such commits a second, set it false and let other
    /// processes' relays poll (this process's relay is still woken at once).
    bool notify = true;
    /// LISTEN for commits of other processes (on one more connection, once a relay is set).
    bool listen = true;
    message_limits limits{};
};

class outbox final : public outbox_store {
public:
    static constexpr int schema_version = 2;
    /// The NOTIFY channel of commits that added messages.
    static constexpr const char* channel = "dtx_outbox";

    /// Connects and creates the outbox's table if needed. Throws dtx::error (database_failed,
    /// database_version) with the reason.
    explicit outbox(outbox_options o)
        : opts_(std::move(o))
        , ready_(migrate())
        , pool_(opts_.conninfo, opts_.connections) {}

    outbox(const outbox&) = delete;
    outbox& operator=(const outbox&) = delete;

    /// Adds `m` to the transaction open on `db` (a connection to this outbox's database) and
    /// returns its id (made here if `m.id` is empty). Throws std::invalid_argument for a message
    /// over the limits, std::logic_error if no transaction is open, dtx::error from PostgreSQL.
    std::string add(postgres::connection& db, message m) {
        if (!db.in_transaction())
            throw std::logic_error("dtx::postgres::outbox::add: no transaction is open; add "
                                   "messages inside the business transaction");
        const detail::outbox_row row =
            detail::outbox_columns(m, opts_.limits, "dtx::postgres::outbox::add");
        db.exec_prepared("dtx_outbox_add",
                         "SELECT dtx_outbox_add($1, $2, $3, $4, $5, $6::bigint, $7::bigint, "
                         "$8::boolean)",
                         {m.id, m.destination, m.key, row.headers, row.payload,
                          std::to_string(row.due_ms), std::to_string(row.created_ms),
                          opts_.notify ? "true" : "false"});
        db.after_commit(signal_.get(), [s = signal_] { s->fire(); });
        return m.id;
    }

    /// Runs `fn(connection&)` in a local transaction on one of the outbox's connections and
    /// returns its result (`R` default-constructible). Messages it adds are woken at its commit.
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return pool_.run<R>(std::move(fn));
    }

    asio::awaitable<outbox_claim> claim(std::string owner, std::chrono::milliseconds lease,
                                        std::size_t max) override {
        return pool_.submit<outbox_claim>(
            [owner = std::move(owner), lease, max](postgres::connection& db) {
                return claim_now(db, owner, lease, max);
            });
    }

    asio::awaitable<void> settle(std::string owner,
                                 std::vector<outbox_settlement> settlements) override {
        nlohmann::json rows = nlohmann::json::array();
        for (const auto& s : settlements)
            rows.push_back({{"id", s.id},
                            {"state", s.status == delivery_status::delivered ? 1
                                      : s.status == delivery_status::retry   ? 0
                                                                             : 2},
                            {"error", s.status == delivery_status::delivered ? "" : s.error},
                            {"retry_at", detail::to_ms(s.retry_at)}});
        // A named job: g++ 12 destroys a lambda built in a co_await expression twice.
        auto job = [owner = std::move(owner),
                    text = rows.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)](
                       postgres::connection& db) {
            db.exec_prepared(
                "dtx_outbox_settle", "SELECT dtx_outbox_settle($1, $2::bigint, $3::jsonb)",
                {owner, std::to_string(detail::to_ms(std::chrono::system_clock::now())), text});
            return 0;
        };
        co_await pool_.submit<int>(std::move(job));
    }

    asio::awaitable<std::vector<dead_letter>> dead_letters(std::size_t limit,
                                                           std::string after) override {
        return pool_.submit<std::vector<dead_letter>>([limit, after = std::move(after)](
                                                          postgres::connection& db) {
            auto r =
                db.exec("SELECT id, destination, msg_key, headers, payload, attempts, created_ms, "
                        "last_error, done_ms FROM dtx_outbox WHERE state = 2 AND seq > "
                        "COALESCE((SELECT seq FROM dtx_outbox WHERE id = $1), -1) ORDER BY seq "
                        "LIMIT $2::bigint",
                        {after, std::to_string(limit)});
            std::vector<dead_letter> out;
            for (int i = 0; i < r.rows(); ++i)
                out.push_back({read_envelope(r, i), std::string(r.text(i, 7)),
                               detail::from_ms(r.integer(i, 8))});
            return out;
        });
    }

    asio::awaitable<bool> requeue(std::string id) override {
        return pool_.submit<bool>([id = std::move(id)](postgres::connection& db) {
            const auto now = std::to_string(detail::to_ms(std::chrono::system_clock::now()));
            // A dead letter kept head set: its key's next messages still wait for it.
            return db.exec("UPDATE dtx_outbox SET state = 0, attempts = 0, due_ms = $2::bigint, "
                           "ready_ms = $2::bigint, done_ms = NULL WHERE id = $1 AND state = 2",
                           {id, now})
                       .affected() == 1;
        });
    }

    asio::awaitable<bool> discard(std::string id) override {
        return pool_.submit<bool>([id = std::move(id)](postgres::connection& db) {
            return db.exec("SELECT dtx_outbox_discard($1)", {id}).text(0, 0) == "t";
        });
    }

    asio::awaitable<std::size_t> clean_delivered(std::chrono::system_clock::time_point before,
                                                 std::size_t batch) override {
        return pool_.submit<std::size_t>([before, batch](postgres::connection& db) {
            return static_cast<std::size_t>(
                db.exec("DELETE FROM dtx_outbox WHERE seq IN (SELECT seq FROM dtx_outbox WHERE "
                        "state = 1 AND done_ms <= $1::bigint LIMIT $2::bigint FOR UPDATE SKIP "
                        "LOCKED)",
                        {std::to_string(detail::to_ms(before)), std::to_string(batch)})
                    .affected());
        });
    }

    /// Also starts listening for other processes' commits (outbox_options::listen), the first
    /// time it is given a function; throws dtx::error if the listening connection fails.
    void on_commit(std::function<void()> wake) override {
        std::lock_guard lock(signal_->mu);
        if (wake && opts_.listen && !listener_)
            listener_ = std::make_unique<detail::pg_listener>(opts_.conninfo, channel,
                                                              [s = signal_] { s->fire(); });
        signal_->wake = std::move(wake);
    }

    /// Notifications heard from commits (this process's included).
    std::uint64_t notifications() const {
        std::lock_guard lock(signal_->mu);
        return listener_ ? listener_->notifications() : 0;
    }

private:
    /// Whom a commit that added messages wakes.
    struct commit_signal {
        mutable std::mutex mu;
        std::function<void()> wake;
        void fire() {
            std::lock_guard lock(mu);
            if (wake)
                wake();
        }
    };

    /// Rows read as id, destination, msg_key, headers, payload, attempts, created_ms, ...
    static envelope read_envelope(const postgres::connection::result& r, int i) {
        return detail::outbox_envelope(r.text(i, 0), r.text(i, 1), r.text(i, 2), r.text(i, 3),
                                       r.text(i, 4), r.integer(i, 5), r.integer(i, 6));
    }

    static outbox_claim claim_now(postgres::connection& db, const std::string& owner,
                                  std::chrono::milliseconds lease, std::size_t max) {
        const auto now = detail::to_ms(std::chrono::system_clock::now());
        const std::string now_text = std::to_string(now);
        // One statement: the candidates locked (rows another relay is claiming skipped), leased
        // and counted. A row leased meanwhile is re-checked on its newest version and left out.
        static const std::string claim_sql =
            "WITH c AS (" + detail::outbox_candidates_sql("$2::bigint", "$3::bigint") +
            " FOR UPDATE SKIP LOCKED) UPDATE dtx_outbox t SET owner = $1, lease_ms = $4::bigint, "
            "ready_ms = $4::bigint, attempts = t.attempts + 1 FROM c WHERE t.seq = c.seq "
            "RETURNING t.id, t.destination, t.msg_key, t.headers, t.payload, t.attempts, "
            "t.created_ms, t.seq";
        auto r = db.exec_prepared(
            "dtx_outbox_claim", claim_sql.c_str(),
            {owner, now_text, std::to_string(max), std::to_string(now + lease.count())});
        std::vector<std::pair<std::int64_t, envelope>> rows;
        for (int i = 0; i < r.rows(); ++i)
            rows.emplace_back(r.integer(i, 7), read_envelope(r, i));
        std::sort(rows.begin(), rows.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        outbox_claim c;
        for (auto& row : rows)
            c.messages.push_back(std::move(row.second));
        if (!c.messages.empty())
            return c; // the relay claims again at once; it asks when next only when idle
        // When the first head that is not ready (a retry, a delayed message, a lease that ends)
        // will be: the relay sleeps until then at the most.
        static const std::string next_sql = detail::outbox_next_due_sql("$1::bigint");
        auto next = db.exec_prepared("dtx_outbox_next_due", next_sql.c_str(), {now_text});
        if (next.rows() == 1 && !next.is_null(0, 0))
            c.next_due = detail::from_ms(next.integer(0, 0));
        return c;
    }

    bool migrate() {
        postgres::connection db(opts_.conninfo, storage_role::participant);
        detail::prepare_participant_tables(db, "outbox", schema_version, [&](int from) {
            if (from < 1)
                create_schema_1(db);
            for (const std::string& sql : detail::outbox_v2_migration())
                db.exec(sql.c_str());
            create_functions(db);
        });
        return true;
    }

    /// The table as schema 1 had it; outbox_v2_migration() brings it to schema 2.
    static void create_schema_1(postgres::connection& db) {
        // state: 0 pending, 1 delivered, 2 parked (a dead letter).
        db.exec("CREATE TABLE IF NOT EXISTS dtx_outbox (seq bigserial PRIMARY KEY, "
                "id text NOT NULL UNIQUE, destination text NOT NULL, msg_key text NOT NULL, "
                "headers text NOT NULL, payload text NOT NULL, state smallint NOT NULL, "
                "attempts integer NOT NULL, due_ms bigint NOT NULL, owner text, "
                "lease_ms bigint, last_error text, created_ms bigint NOT NULL, "
                "done_ms bigint)");
        db.exec("CREATE INDEX IF NOT EXISTS dtx_outbox_pending ON dtx_outbox (seq) "
                "WHERE state = 0");
        db.exec("CREATE INDEX IF NOT EXISTS dtx_outbox_key ON dtx_outbox (msg_key, seq) "
                "WHERE state <> 1");
        db.exec("CREATE INDEX IF NOT EXISTS dtx_outbox_delivered ON dtx_outbox (done_ms) "
                "WHERE state = 1");
        db.exec("CREATE INDEX IF NOT EXISTS dtx_outbox_parked ON dtx_outbox (seq) "
                "WHERE state = 2");
    }

    /// The functions of schema 2: add, settle and discard, which keep each key's head right
    /// (see the top of this file). 7270713 is the outbox's class of advisory locks (two-int
    /// locks do not meet one-bigint ones).
    static void create_functions(postgres::connection& db) {
        // Refuses a transaction whose snapshot may predate the key's lock.
        const std::string read_committed = R"sql(
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the dtx outbox needs READ COMMITTED transactions, not %',
            current_setting('transaction_isolation') USING ERRCODE = '0A000';
    END IF;)sql";
        db.exec((R"sql(
CREATE OR REPLACE FUNCTION dtx_outbox_add(p_id text, p_destination text, p_key text,
    p_headers text, p_payload text, p_due bigint, p_created bigint, p_notify boolean)
    RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_key <> '' THEN)sql" +
                 read_committed + R"sql(
        PERFORM pg_advisory_xact_lock(7270713, hashtext(p_key));
    END IF;
    INSERT INTO dtx_outbox (id, destination, msg_key, headers, payload, state, attempts,
                            due_ms, created_ms, head, ready_ms)
        VALUES (p_id, p_destination, p_key, p_headers, p_payload, 0, 0, p_due, p_created, )sql" +
                 detail::outbox_head_sql("p_key") + R"sql(, p_due);
    IF p_notify THEN
        PERFORM pg_notify('dtx_outbox', '');
    END IF;
END
$$)sql")
                    .c_str());
        // p_rows: [{id, state (1 delivered, 0 retry, 2 park), error, retry_at}].
        db.exec((R"sql(
CREATE OR REPLACE FUNCTION dtx_outbox_settle(p_owner text, p_now bigint, p_rows jsonb)
    RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    keys text[];
    k text;
BEGIN)sql" + read_committed +
                 R"sql(
    SELECT array_agg(DISTINCT o.msg_key COLLATE "C" ORDER BY o.msg_key COLLATE "C") INTO keys
        FROM dtx_outbox o JOIN jsonb_to_recordset(p_rows) AS s(id text, state smallint)
        ON o.id = s.id
        WHERE s.state = 1 AND o.msg_key <> '' AND o.owner = p_owner AND o.state = 0;
    FOREACH k IN ARRAY COALESCE(keys, '{}') LOOP
        PERFORM pg_advisory_xact_lock(7270713, hashtext(k));
    END LOOP;
    UPDATE dtx_outbox t SET state = s.state,
        due_ms = CASE WHEN s.state = 0 THEN s.retry_at ELSE t.due_ms END,
        ready_ms = CASE WHEN s.state = 0 THEN s.retry_at ELSE t.ready_ms END,
        done_ms = CASE WHEN s.state = 0 THEN NULL ELSE p_now END,
        last_error = NULLIF(s.error, ''), owner = NULL, lease_ms = NULL
        FROM jsonb_to_recordset(p_rows) AS s(id text, state smallint, error text,
                                              retry_at bigint)
        WHERE t.id = s.id AND t.owner = p_owner AND t.state = 0;
    FOREACH k IN ARRAY COALESCE(keys, '{}') LOOP
        )sql" + detail::outbox_promote_sql("k") +
                 R"sql(;
    END LOOP;
END
$$)sql")
                    .c_str());
        db.exec((R"sql(
CREATE OR REPLACE FUNCTION dtx_outbox_discard(p_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN)sql" + read_committed +
                 R"sql(
    SELECT msg_key INTO k FROM dtx_outbox WHERE id = p_id AND state = 2;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF k <> '' THEN
        PERFORM pg_advisory_xact_lock(7270713, hashtext(k));
    END IF;
    DELETE FROM dtx_outbox WHERE id = p_id AND state = 2;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    )sql" + detail::outbox_promote_sql("k") +
                 R"sql(;
    RETURN true;
END
$$)sql")
                    .c_str());
    }

    outbox_options opts_;
    bool ready_;
    std::shared_ptr<commit_signal> signal_ = std::make_shared<commit_signal>();
    std::unique_ptr<detail::pg_listener> listener_; // guarded by signal_->mu
    detail::pg_pool pool_;                          // last: its threads stop first
};

} // namespace postgres
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
