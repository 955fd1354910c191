#ifndef DTX_SQLITE_OUTBOX_HPP
#define DTX_SQLITE_OUTBOX_HPP

// The transactional outbox in a SQLite database: messages (<dtx/message.hpp>) added in the same
// local transaction as the business change, so that they exist exactly when it committed. A
// relay (<dtx/relay.hpp>) delivers them.
//
//   dtx::sqlite::outbox outbox({.path = "orders.db"});
//   auto place = [&](dtx::sqlite::connection& db) {
//       db.prepare("UPDATE stock SET available = available - 1 WHERE sku = ?").bind("A-1").run();
//       outbox.add(db, {.destination = "http://127.0.0.1:8090/events", .key = "A-1",
//                       .payload = {{"sold", "A-1"}}});
//       return 0;
//   };
//   co_await outbox.run<int>(place); // one local transaction: the update and the message
//
// Two ways to add messages:
//   - run(fn) runs fn(connection&) in a local transaction on the outbox's database thread, where
//     concurrent ones are group-committed (one fsync for many), like the barrier's run();
//   - add(db, m) adds to a transaction that is open on any connection to the same database file:
//     the barrier's, inside a barrier handler (a TCC confirm that emits an event), or your own.
// Either way, the relay is woken when that transaction commits (a SQLite commit hook on the
// connection; it replaces any commit hook of yours on it, and the outbox must outlive every
// connection it added messages on). Adding a message costs one INSERT in the transaction, and no
// fsync of its own.
//
// The tables (dtx_outbox; version in dtx_meta under "outbox_version") live beside the business
// tables and the barrier's. A message's order among those of its key is its commit order: SQLite
// has one writer at a time, so row ids increase in commit order.
//
// A claim costs what it claims, not the messages held back behind a busy key (a dead letter, a
// retry, a slow destination): each message knows whether it is the head of its key and when it
// is ready, and a partial index holds the pending heads by ready time
// (<dtx/detail/outbox_logic.hpp> tells how).
// SQLite's single writer makes that bookkeeping exact: the add that decides whether a message is
// its key's head, and the settlement that promotes the next message of a key, never overlap.
// Schema 2 added it; an outbox of schema 1 is migrated in place when opened (a moment per
// 100,000 rows, in the opening transaction).
// Stop processes of an older dtx on the same database first: they would add, claim and settle
// without keeping the new columns (and they refuse to open an outbox of schema 2).
//
// The relay's own writes, its claims and settlements, commit without an fsync of their own (unless
// outbox_options::fsync_relay_writes): they survive a crash of the process like every commit, and
// the next business commit's fsync makes them durable too, since SQLite's WAL reaches the disk in
// order. Only a power loss (or a crash of the operating system) may take back the latest of them,
// and what that costs is a message delivered again, which the consumer's inbox acknowledges as a
// duplicate: a claim taken back makes the message claimable at once, a settlement taken back makes
// it pending again. Delivery is at least once either way; what it saves is one or two fsyncs per
// batch on the path from commit to consumer, where a business commit already pays one.
//
// Queries of delivered or parked rows say `state <> 0` besides the state they want: SQLite uses
// a partial index only when the query's WHERE holds the index's condition as written, and
// without it they would read the whole table.

#include <dtx/detail/outbox_logic.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/envelope.hpp>
#include <dtx/error.hpp>
#include <dtx/message.hpp>
#include <dtx/outbox_store.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/sqlite/detail/schema.hpp>
#include <dtx/sqlite/detail/worker.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace sqlite {

struct outbox_options {
    /// The service's database: its own tables and the outbox's (dtx_outbox, dtx_meta).
    std::string path{};
    bool synchronous_full = true;
    std::chrono::milliseconds busy_timeout{5'000};
    std::size_t max_batch = 256;
    message_limits limits{};
    /// Make the relay's claims and settlements fsync like business transactions (see the top of
    /// the file); only with synchronous_full.
    bool fsync_relay_writes = false;
};

class outbox final : public outbox_store {
public:
    static constexpr int schema_version = 2;

    /// Opens the database and creates the outbox's table if needed. Throws dtx::error
    /// (database_corrupt, database_version, database_failed) with the path and reason.
    explicit outbox(outbox_options o)
        : opts_(std::move(o))
        , db_(opts_.path, storage_role::participant)
        , ready_(prepare())
        , worker_(db_,
                  {.max_batch = opts_.max_batch,
                   .light_without_fsync = opts_.synchronous_full && !opts_.fsync_relay_writes}) {}

    outbox(const outbox&) = delete;
    outbox& operator=(const outbox&) = delete;

    /// Adds `m` to the transaction open on `db` (a connection to this outbox's database) and
    /// returns its id (made here if `m.id` is empty). Throws std::invalid_argument for a message
    /// over the limits, std::logic_error if no transaction is open, dtx::error from SQLite.
    std::string add(sqlite::connection& db, message m) {
        if (sqlite3_get_autocommit(db.get()))
            throw std::logic_error("dtx::sqlite::outbox::add: no transaction is open on " +
                                   db.path() + "; add messages inside the business transaction");
        const detail::outbox_row row =
            detail::outbox_columns(m, opts_.limits, "dtx::sqlite::outbox::add");
        static const std::string insert =
            "INSERT INTO dtx_outbox (id, destination, msg_key, headers, payload, state, attempts, "
            "due_ms, created_ms, head, ready_ms) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, ?7, " +
            detail::outbox_head_sql("?3") + ", ?6)";
        db.prepare(insert)
            .bind(m.id, m.destination, m.key, row.headers, row.payload, row.due_ms, row.created_ms)
            .run();
        signal_->pending = true;
        sqlite3_commit_hook(db.get(), &commit_hook, signal_.get());
        return m.id;
    }

    /// Runs `fn(connection&)` in a local transaction on the database thread and returns its
    /// result (`R` default-constructible). Messages it adds are woken at its commit.
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return worker_.run<R>(std::move(fn));
    }

    asio::awaitable<outbox_claim> claim(std::string owner, std::chrono::milliseconds lease,
                                        std::size_t max) override {
        return worker_.run_light<outbox_claim>(
            [owner = std::move(owner), lease, max](sqlite::connection& db) {
                return claim_now(db, owner, lease, max);
            });
    }

    asio::awaitable<void> settle(std::string owner,
                                 std::vector<outbox_settlement> settlements) override {
        // A named job: g++ 12 destroys a lambda built in a co_await expression twice.
        auto job = [owner = std::move(owner), s = std::move(settlements)](sqlite::connection& db) {
            settle_now(db, owner, s);
            return 0;
        };
        co_await worker_.run_light<int>(std::move(job));
    }

    asio::awaitable<std::vector<dead_letter>> dead_letters(std::size_t limit,
                                                           std::string after) override {
        return worker_.run<std::vector<dead_letter>>(
            [limit, after = std::move(after)](sqlite::connection& db) {
                auto& st = db.prepare(
                    "SELECT id, destination, msg_key, headers, payload, attempts, created_ms, seq, "
                    "last_error, done_ms FROM dtx_outbox WHERE state <> 0 AND state = 2 "
                    "AND seq > COALESCE((SELECT seq FROM dtx_outbox WHERE id = ?), -1) "
                    "ORDER BY seq LIMIT ?");
                st.bind(after, limit);
                std::vector<dead_letter> out;
                while (st.step())
                    out.push_back({read_envelope(st), std::string(st.text(8)),
                                   detail::from_ms(st.integer(9))});
                return out;
            });
    }

    asio::awaitable<bool> requeue(std::string id) override {
        return worker_.run<bool>([id = std::move(id)](sqlite::connection& db) {
            // A dead letter kept head set: its key's next messages still wait for it.
            db.prepare("UPDATE dtx_outbox SET state = 0, attempts = 0, due_ms = ?1, ready_ms = ?1, "
                       "done_ms = NULL WHERE id = ?2 AND state = 2")
                .bind(detail::to_ms(std::chrono::system_clock::now()), id)
                .run();
            return db.changes() == 1;
        });
    }

    asio::awaitable<bool> discard(std::string id) override {
        return worker_.run<bool>([id = std::move(id)](sqlite::connection& db) {
            auto& parked = db.prepare("SELECT msg_key FROM dtx_outbox WHERE id = ? AND state = 2");
            if (!parked.bind(id).step())
                return false;
            const std::string key(parked.text(0));
            db.prepare("DELETE FROM dtx_outbox WHERE id = ? AND state = 2").bind(id).run();
            static const std::string promote = detail::outbox_promote_sql("?");
            db.prepare(promote).bind(key).run();
            return true;
        });
    }

    asio::awaitable<std::size_t> clean_delivered(std::chrono::system_clock::time_point before,
                                                 std::size_t batch) override {
        return worker_.run<std::size_t>([before, batch](sqlite::connection& db) {
            db.prepare("DELETE FROM dtx_outbox WHERE seq IN (SELECT seq FROM dtx_outbox "
                       "WHERE state <> 0 AND state = 1 AND done_ms <= ? LIMIT ?)")
                .bind(detail::to_ms(before), batch)
                .run();
            return static_cast<std::size_t>(db.changes());
        });
    }

    void on_commit(std::function<void()> wake) override {
        std::lock_guard lock(signal_->mu);
        signal_->wake = std::move(wake);
    }

    const std::string& path() const noexcept { return opts_.path; }
    detail::sqlite_worker_stats stats() const { return worker_.stats(); }

private:
    /// Whom a commit that added messages wakes.
    struct commit_signal {
        std::atomic<bool> pending{false};
        std::mutex mu;
        std::function<void()> wake;
    };

    static int commit_hook(void* p) {
        auto* s = static_cast<commit_signal*>(p);
        if (s->pending.exchange(false)) {
            std::lock_guard lock(s->mu);
            if (s->wake)
                s->wake();
        }
        return 0; // 0: let the commit go on
    }

    /// The envelope of a row read as id, destination, msg_key, headers, payload, attempts,
    /// created_ms (and more columns after them).
    static envelope read_envelope(sqlite::statement& st) {
        return detail::outbox_envelope(st.text(0), st.text(1), st.text(2), st.text(3), st.text(4),
                                       st.integer(5), st.integer(6));
    }

    static outbox_claim claim_now(sqlite::connection& db, const std::string& owner,
                                  std::chrono::milliseconds lease, std::size_t max) {
        const auto now = detail::to_ms(std::chrono::system_clock::now());
        static const std::string candidates = detail::outbox_candidates_sql("?1", "?2");
        std::vector<std::int64_t> seqs;
        auto& ready = db.prepare(candidates);
        for (ready.bind(now, max); ready.step();)
            seqs.push_back(ready.integer(0));
        std::sort(seqs.begin(), seqs.end()); // handed over in commit order
        outbox_claim c;
        auto& row = db.prepare("SELECT id, destination, msg_key, headers, payload, attempts, "
                               "created_ms FROM dtx_outbox WHERE seq = ?");
        auto& lease_row = db.prepare("UPDATE dtx_outbox SET owner = ?1, lease_ms = ?2, ready_ms = "
                                     "?2, attempts = attempts + 1 WHERE seq = ?3 AND state = 0");
        for (std::int64_t seq : seqs) {
            if (!row.bind(seq).step())
                continue;
            c.messages.push_back(read_envelope(row));
            ++c.messages.back().attempt;
            lease_row.bind(owner, now + lease.count(), seq).run();
        }
        if (!c.messages.empty())
            return c; // the relay claims again at once; it asks when next only when idle
        static const std::string next_due = detail::outbox_next_due_sql("?");
        auto& next = db.prepare(next_due);
        if (next.bind(now).step() && !next.is_null(0))
            c.next_due = detail::from_ms(next.integer(0));
        return c;
    }

    static void settle_now(sqlite::connection& db, const std::string& owner,
                           const std::vector<outbox_settlement>& settlements) {
        const auto now = detail::to_ms(std::chrono::system_clock::now());
        auto& delivered = db.prepare(
            "UPDATE dtx_outbox SET state = 1, done_ms = ?, owner = NULL, lease_ms = NULL, "
            "last_error = NULL WHERE id = ? AND owner = ? AND state = 0");
        auto& retry =
            db.prepare("UPDATE dtx_outbox SET due_ms = ?1, ready_ms = ?1, last_error = ?2, "
                       "owner = NULL, lease_ms = NULL WHERE id = ?3 AND owner = ?4 AND "
                       "state = 0");
        // The next message of a delivered one's key becomes its head.
        static const std::string promote_sql =
            detail::outbox_promote_sql("(SELECT k.msg_key FROM dtx_outbox k WHERE k.id = ?)");
        auto& promote = db.prepare(promote_sql);
        auto& park = db.prepare("UPDATE dtx_outbox SET state = 2, done_ms = ?, last_error = ?, "
                                "owner = NULL, lease_ms = NULL WHERE id = ? AND owner = ? AND "
                                "state = 0");
        for (const auto& s : settlements) {
            switch (s.status) {
            case delivery_status::delivered:
                delivered.bind(now, s.id, owner).run();
                if (db.changes() == 1)
                    promote.bind(s.id).run();
                break;
            case delivery_status::retry:
                retry.bind(detail::to_ms(s.retry_at), s.error, s.id, owner).run();
                break;
            case delivery_status::rejected:
                park.bind(now, s.error, s.id, owner).run();
                break;
            }
        }
    }

    bool prepare() {
        detail::prepare_participant_tables(db_, opts_.busy_timeout, opts_.synchronous_full,
                                           "outbox", schema_version, [&](int from) {
                                               if (from < 1)
                                                   create_schema_1();
                                               for (const std::string& sql :
                                                    detail::outbox_v2_migration())
                                                   db_.exec(sql.c_str());
                                           });
        return true;
    }

    /// The table as schema 1 had it; outbox_v2_migration() brings it to schema 2.
    void create_schema_1() {
        // state: 0 pending, 1 delivered, 2 parked (a dead letter).
        db_.exec(R"sql(
                    CREATE TABLE IF NOT EXISTS dtx_outbox (
                        seq         INTEGER PRIMARY KEY,
                        id          TEXT NOT NULL UNIQUE,
                        destination TEXT NOT NULL,
                        msg_key     TEXT NOT NULL,
                        headers     TEXT NOT NULL,
                        payload     TEXT NOT NULL,
                        state       INTEGER NOT NULL,
                        attempts    INTEGER NOT NULL,
                        due_ms      INTEGER NOT NULL,
                        owner       TEXT,
                        lease_ms    INTEGER,
                        last_error  TEXT,
                        created_ms  INTEGER NOT NULL,
                        done_ms     INTEGER
                    );
                    CREATE INDEX IF NOT EXISTS dtx_outbox_pending
                        ON dtx_outbox (seq, msg_key, due_ms, lease_ms) WHERE state = 0;
                    CREATE INDEX IF NOT EXISTS dtx_outbox_done ON dtx_outbox (state, done_ms)
                        WHERE state <> 0;
                )sql");
    }

    outbox_options opts_;
    sqlite::connection db_;
    bool ready_;
    std::shared_ptr<commit_signal> signal_ = std::make_shared<commit_signal>();
    detail::sqlite_worker worker_; // last: drained before the rest goes
};

} // namespace sqlite
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
