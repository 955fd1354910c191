#ifndef DTX_SQLITE_BARRIER_HPP
#define DTX_SQLITE_BARRIER_HPP

// The barrier: what makes a participant's handlers safe against duplicate, missing and reordered
// requests, for a participant whose state is in a SQLite database.
//
//   dtx::sqlite::barrier inventory({.path = "inventory.db"});
//   auto schema = [](dtx::sqlite::connection& db) {
//       db.exec("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, "
//               "available INTEGER NOT NULL, reserved INTEGER NOT NULL)");
//       return 0;
//   };
//   co_await inventory.run<int>(schema); // a named lambda (g++ 12)
//   participants.add_tcc("inventory", inventory.tcc({
//       .on_try = dtx::sqlite::typed_handler<reservation>(
//           [](dtx::sqlite::connection& db, const dtx::branch_request&, reservation r) {
//               db.prepare("UPDATE stock SET available = available - ?1, "
//                          "reserved = reserved + ?1 WHERE sku = ?2 AND available >= ?1")
//                   .bind(r.qty, r.sku)
//                   .run();
//               return db.changes() ? dtx::success() : dtx::failure("out of stock");
//           }),
//       .on_confirm = ..., // reserved -= qty
//       .on_cancel = ...,  // reserved -= qty, available += qty
//   }));
//
// Each operation runs in one local transaction holding both a barrier row, keyed by (gid,
// branch_id, op), and the handler's changes, so they commit or roll back together:
//   - a duplicate try, confirm or cancel finds its row and answers success without running the
//     handler again (a duplicate of a try that ran repeats its success even after the cancel:
//     the coordinator has decided by then, and nothing changes);
//   - a cancel (compensate) whose try (action) never arrived finds no try row: it writes one
//     marked as written by the cancel and answers success without running the handler (null
//     compensation);
//   - a try that arrives after its cancel finds that mark and answers failure without running
//     the handler (no hanging reservation);
//   - a handler answering failure or pending, or throwing, is rolled back with its barrier row,
//     so the operation can be asked again.
// Local transactions of concurrent requests are group-committed by one database thread (BEGIN
// IMMEDIATE, one writer at a time: no lock-upgrade deadlocks between concurrent retries).
//
// For work that is not in this database (a call to another system), guard_external() commits the
// barrier row before the work starts and its result after, so a cancel that arrives meanwhile or
// later still sees that a try began, and a late try still sees the cancel.
//
// Barrier rows are deleted in batches once older than `retention`, which must exceed the longest
// time a transaction can stay unfinished (a try arriving after its row was cleaned would run).

#include <dtx/detail/barrier_logic.hpp>
#include <dtx/error.hpp>
#include <dtx/participant.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/sqlite/detail/worker.hpp>
#include <dtx/version.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace sqlite {

struct barrier_options {
    /// The participant's database: its own tables and the barrier's (dtx_barrier, dtx_meta).
    std::string path{};
    bool synchronous_full = true;
    std::chrono::milliseconds busy_timeout{5'000};
    std::size_t max_batch = 256;
    std::chrono::milliseconds retention = std::chrono::hours(24 * 7);
    std::size_t cleanup_batch = 1000;
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
};

/// What a branch operation does to the participant's own tables. Runs on the barrier's database
/// thread inside its local transaction: return failure (or pending) to refuse, which rolls the
/// changes back; throw for an unknown result.
using barrier_handler = detail::db_handler<sqlite::connection>;
using tcc_handlers = detail::db_tcc_handlers<sqlite::connection>;
using saga_handlers = detail::db_saga_handlers<sqlite::connection>;

/// Wraps a local handler that takes the payload as a user type `T`; a payload that does not
/// convert is answered with failure naming the gid, branch and problem.
template <class T, class F>
barrier_handler typed_handler(F handler) {
    return detail::typed_db<T, sqlite::connection>(std::move(handler));
}

struct barrier_stats {
    std::uint64_t commits = 0;    ///< local transactions committed (group-committed batches)
    std::uint64_t operations = 0; ///< operations in them
    std::uint64_t cleaned = 0;    ///< barrier rows deleted
};

class barrier : public detail::barrier_registration<barrier, sqlite::connection> {
public:
    static constexpr int schema_version = 1;

    /// Opens the participant's database and creates the barrier's tables if needed. Throws
    /// dtx::error (journal_corrupt, journal_version, journal_failed) with the path and reason.
    explicit barrier(barrier_options o)
        : opts_(std::move(o))
        , db_(opts_.path)
        , ready_(prepare())
        , worker_(db_, {.max_batch = opts_.max_batch,
                        .idle_interval = opts_.cleanup_interval,
                        .on_idle = [this](sqlite::connection&) { cleanup(); }}) {}

    barrier(const barrier&) = delete;
    barrier& operator=(const barrier&) = delete;

    /// Runs `fn(connection&)` in a local transaction on the database thread and returns its
    /// result (schema setup, queries, business operations outside any branch).
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return worker_.run<R>(std::move(fn));
    }

    /// Runs one branch operation under the barrier; see the top of this header.
    asio::awaitable<outcome> guard(const branch_request& r, const barrier_handler& handler) {
        // The job owns copies: it runs on the database thread while this coroutine waits.
        auto job = [this, req = owned_request(r), &handler](sqlite::connection& db) {
            return guarded(db, req, handler);
        };
        co_return co_await run_guarded(std::move(job));
    }

    /// Runs `work` (outside this database) under the barrier: the barrier row is committed before
    /// the work starts and the result after it. `work` must be idempotent: if the process dies
    /// while it runs, a retry runs it again.
    asio::awaitable<outcome> guard_external(const branch_request& r,
                                            std::function<asio::awaitable<outcome>()> work) {
        auto begin = [this, req = owned_request(r)](sqlite::connection& db) {
            return screen(db, req, "started");
        };
        const std::optional<outcome> decided =
            co_await worker_.run<std::optional<outcome>>(std::move(begin));
        if (decided)
            co_return *decided; // answered by the barrier: the work is not (re)done

        outcome result = co_await work();
        const bool done = result.is_success();
        const bool failed = result.is_failure();
        auto end = [this, req = owned_request(r), done, failed](sqlite::connection& db) {
            end_external(db, req, done, failed);
            return 0;
        };
        co_await worker_.run<int>(std::move(end));
        co_return result;
    }

    barrier_stats stats() const {
        auto w = worker_.stats();
        return {w.commits, w.functions, cleaned_.load()};
    }

    const std::string& path() const noexcept { return opts_.path; }

private:
    using owned_request = detail::owned_request;

    /// Thrown inside a job to roll back its savepoint while answering `answer`.
    struct refused {
        outcome answer;
    };

    /// Runs a job that may throw `refused` (rolling back its savepoint) and answers its outcome.
    template <class Job>
    asio::awaitable<outcome> run_guarded(Job job) {
        outcome answer;
        try {
            answer = co_await worker_.run<outcome>(std::move(job));
        } catch (const refused& r) {
            answer = r.answer;
        }
        co_return answer;
    }

    static std::int64_t now_ms() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
    }

    /// The barrier table of one request, for detail::barrier_screen.
    struct store {
        sqlite::connection& db;
        const owned_request& r;
        bool insert(const char* slot, const char* origin, const char* state) {
            db.prepare("INSERT OR IGNORE INTO dtx_barrier (gid, branch_id, op, origin, state, "
                       "created_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?)")
                .bind(r.gid, r.branch_id, slot, origin, state, now_ms())
                .run();
            return db.changes() == 1;
        }
        std::optional<detail::barrier_row> find(const char* slot) {
            auto& st = db.prepare(
                "SELECT origin, state FROM dtx_barrier WHERE gid = ? AND branch_id = ? AND op = ?");
            st.bind(r.gid, r.branch_id, slot);
            if (!st.step())
                return std::nullopt;
            return detail::barrier_row{std::string(st.text(0)), std::string(st.text(1))};
        }
    };

    std::optional<outcome> screen(sqlite::connection& db, const owned_request& r,
                                  const char* state) {
        store s{db, r};
        return detail::barrier_screen(s, r.view(), state);
    }

    outcome guarded(sqlite::connection& db, const owned_request& r,
                    const barrier_handler& handler) {
        if (auto answer = screen(db, r, "done"))
            return *answer;
        const branch_request req = r.view();
        outcome o = handler(db, req);
        if (!o.is_success())
            throw refused{std::move(o)}; // undo the handler's changes and the row
        return o;
    }

    void end_external(sqlite::connection& db, const owned_request& r, bool done, bool failed) {
        if (!done && !failed) {
            // Pending or unknown: forget the attempt, so that the next one runs the work again.
            db.prepare("DELETE FROM dtx_barrier WHERE gid = ? AND branch_id = ? AND op = ? AND "
                       "state = 'started'")
                .bind(r.gid, r.branch_id, detail::barrier_slot(r.op))
                .run();
            return;
        }
        db.prepare("UPDATE dtx_barrier SET state = ? WHERE gid = ? AND branch_id = ? AND op = ?")
            .bind(done ? "done" : "failed", r.gid, r.branch_id, detail::barrier_slot(r.op))
            .run();
    }

    bool prepare() {
        auto& db = db_;
        db.check(sqlite3_busy_timeout(db.get(), static_cast<int>(opts_.busy_timeout.count())),
                 "busy_timeout");
        {
            sqlite::statement wal(db, "PRAGMA journal_mode=WAL");
            if (!wal.step() || wal.text(0) != "wal")
                throw error(errc::journal_failed, opts_.path + ": cannot switch to WAL mode");
        }
        db.exec(opts_.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        sqlite::transaction tx(db);
        db.exec("CREATE TABLE IF NOT EXISTS dtx_meta (key TEXT PRIMARY KEY, value INTEGER NOT "
                "NULL) WITHOUT ROWID");
        int version = 0;
        {
            sqlite::statement v(db, "SELECT value FROM dtx_meta WHERE key = 'barrier_version'");
            if (v.step())
                version = static_cast<int>(v.integer(0));
        }
        if (version > schema_version)
            throw error(errc::journal_version,
                        opts_.path + ": barrier schema version " + std::to_string(version) +
                            " is newer than this dtx reads (" + std::to_string(schema_version) +
                            "); upgrade dtx");
        if (version < 1) {
            db.exec(R"sql(
                CREATE TABLE IF NOT EXISTS dtx_barrier (
                    gid        TEXT NOT NULL,
                    branch_id  TEXT NOT NULL,
                    op         TEXT NOT NULL,
                    origin     TEXT NOT NULL,
                    state      TEXT NOT NULL,
                    created_ms INTEGER NOT NULL,
                    PRIMARY KEY (gid, branch_id, op)
                ) WITHOUT ROWID;
                CREATE INDEX IF NOT EXISTS dtx_barrier_created ON dtx_barrier (created_ms);
                INSERT OR REPLACE INTO dtx_meta (key, value) VALUES ('barrier_version', 1);
            )sql");
        }
        tx.commit();
        return true;
    }

    void cleanup() {
        const std::int64_t before = now_ms() - opts_.retention.count();
        const auto batch = static_cast<std::int64_t>(opts_.cleanup_batch);
        auto& del = db_.prepare(
            "DELETE FROM dtx_barrier WHERE (gid, branch_id, op) IN "
            "(SELECT gid, branch_id, op FROM dtx_barrier WHERE created_ms < ? LIMIT ?)");
        for (;;) {
            sqlite::transaction tx(db_);
            del.bind(before, batch).run();
            const int n = db_.changes();
            tx.commit();
            cleaned_ += static_cast<std::uint64_t>(n);
            if (n < batch || !worker_.idle())
                break;
        }
    }

    barrier_options opts_;
    sqlite::connection db_;
    bool ready_;
    std::atomic<std::uint64_t> cleaned_{0};
    detail::sqlite_worker worker_; // last: drained before the rest goes
};

} // namespace sqlite
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
