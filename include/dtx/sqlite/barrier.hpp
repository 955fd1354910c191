#ifndef DTX_SQLITE_BARRIER_HPP
#define DTX_SQLITE_BARRIER_HPP

// The barrier for a participant whose state is in a SQLite database; its rules are in
// <dtx/barrier.hpp>.
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
// Local transactions of concurrent requests are group-committed by one database thread (BEGIN
// IMMEDIATE, one writer at a time: no lock-upgrade deadlocks between concurrent retries).

#include <dtx/barrier.hpp>
#include <dtx/detail/barrier_logic.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/error.hpp>
#include <dtx/participant.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/sqlite/detail/schema.hpp>
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

/// What a branch operation does to the participant's own tables: runs on the barrier's database
/// thread inside its local transaction (see <dtx/barrier.hpp>).
using barrier_handler = dtx::barrier_handler<sqlite::connection>;
using tcc_handlers = barrier_tcc_handlers<sqlite::connection>;
using saga_handlers = barrier_saga_handlers<sqlite::connection>;
using barrier_stats = dtx::barrier_stats;

/// Wraps a handler `outcome(connection&, const branch_request&, T)` that takes the payload as a
/// user type `T`; a payload that does not convert is answered with failure naming the gid,
/// branch and problem.
template <class T, class F>
auto typed_handler(F handler) {
    return typed_barrier_handler<T, sqlite::connection>(std::move(handler));
}

class barrier : public detail::barrier_registration<barrier, sqlite::connection> {
public:
    static constexpr int schema_version = 1;

    /// Opens the participant's database and creates the barrier's tables if needed. Throws
    /// dtx::error (database_corrupt, database_version, database_failed) with the path and reason.
    explicit barrier(barrier_options o)
        : opts_(std::move(o))
        , db_(opts_.path, storage_role::participant)
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

    /// Runs one branch operation under the barrier (see <dtx/barrier.hpp>).
    asio::awaitable<outcome> guard(const branch_request& r, const barrier_handler& handler) {
        // The job owns copies: it runs on the database thread while this coroutine waits.
        auto job = [req = owned_request(r), &handler](sqlite::connection& db) {
            return guarded(db, req, handler);
        };
        co_return co_await run_guarded(std::move(job));
    }

    // Inherited from detail::barrier_registration: tcc(tcc_handlers) and saga(saga_handlers), the
    // participant's handlers for participant_registry::add_tcc and add_saga; for work outside
    // this database (see <dtx/barrier.hpp>),
    //   asio::awaitable<outcome> guard_external(const branch_request& r,
    //                                           std::function<asio::awaitable<outcome>()> work);
    // and for 2-phase messages (<dtx/two_phase_message.hpp>), the local transaction with the
    // message's barrier row and the check-back:
    //   asio::awaitable<outcome> message_local(std::string gid, Fn fn); // outcome fn(connection&)
    //   asio::awaitable<outcome> query_prepared(std::string gid);
    //   branch_handler check_back();  // for participant_registry::add_check_back
    // A check-back and the message's local transaction never overlap: SQLite has one writer
    // at a time (this barrier's thread, or another process holding the file's write lock).

    barrier_stats stats() const {
        auto w = worker_.stats();
        return {w.commits, w.functions, cleaned_.load()};
    }

    const std::string& path() const noexcept { return opts_.path; }

private:
    friend class detail::barrier_registration<barrier, sqlite::connection>;
    using owned_request = detail::owned_request;

    /// Runs a job that may throw a refusal (rolling back its savepoint) and answers its outcome.
    template <class Job>
    asio::awaitable<outcome> run_guarded(Job job) {
        outcome answer;
        try {
            answer = co_await worker_.run<outcome>(std::move(job));
        } catch (const detail::barrier_refusal& r) {
            answer = r.answer;
        }
        co_return answer;
    }

    /// The barrier table of one request, for detail::barrier_screen.
    struct store {
        sqlite::connection& db;
        const owned_request& r;
        bool insert(const char* slot, const char* origin, const char* state) {
            db.prepare("INSERT OR IGNORE INTO dtx_barrier (gid, branch_id, op, origin, state, "
                       "created_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?)")
                .bind(r.gid, r.branch_id, slot, origin, state,
                      detail::to_ms(std::chrono::system_clock::now()))
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
        void set_state(const char* slot, const char* state) {
            db.prepare(
                  "UPDATE dtx_barrier SET state = ? WHERE gid = ? AND branch_id = ? AND op = ?")
                .bind(state, r.gid, r.branch_id, slot)
                .run();
        }
        void forget_started(const char* slot) {
            db.prepare("DELETE FROM dtx_barrier WHERE gid = ? AND branch_id = ? AND op = ? AND "
                       "state = 'started'")
                .bind(r.gid, r.branch_id, slot)
                .run();
        }
    };

    static outcome guarded(sqlite::connection& db, const owned_request& r,
                           const barrier_handler& handler) {
        store s{db, r};
        return detail::guarded_operation(s, db, r, handler); // a refusal undoes its savepoint
    }

    bool prepare() {
        detail::prepare_participant_tables(db_, opts_.busy_timeout, opts_.synchronous_full,
                                           "barrier", schema_version, [&](int) {
                                               db_.exec(R"sql(
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
                )sql");
                                           });
        return true;
    }

    /// Deletes barrier rows older than the retention, a batch per transaction, giving way to
    /// queued operations between batches. Runs on the database thread when it is idle.
    void cleanup() {
        worker_.clean_older_than(
            "DELETE FROM dtx_barrier WHERE (gid, branch_id, op) IN "
            "(SELECT gid, branch_id, op FROM dtx_barrier WHERE created_ms < ? LIMIT ?)",
            opts_.retention, opts_.cleanup_batch, cleaned_);
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
