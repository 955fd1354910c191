#ifndef DTX_POSTGRES_BARRIER_HPP
#define DTX_POSTGRES_BARRIER_HPP

// The barrier for a participant whose state is in PostgreSQL, in the participant's own database
// and local transactions; its rules are in <dtx/barrier.hpp>.
//
//   dtx::postgres::barrier payments({.conninfo = "dbname=payments"});
//   participants.add_tcc("payment", payments.tcc({
//       .on_try = dtx::postgres::typed_handler<charge>(
//           [](dtx::postgres::connection& db, const dtx::branch_request&, charge c) {
//               auto r = db.exec("UPDATE account SET balance = balance - $1::bigint, "
//                                "frozen = frozen + $1::bigint "
//                                "WHERE id = $2::bigint AND balance >= $1::bigint",
//                                {std::to_string(c.amount), std::to_string(c.account)});
//               return r.affected() ? dtx::success() : dtx::failure("insufficient funds");
//           }),
//       .on_confirm = ..., // frozen -= amount
//       .on_cancel = ...,  // balance += amount, frozen -= amount
//   }));
//
// Each operation is one local transaction (READ COMMITTED) on one of a small pool of
// connections, each driven by a thread of its own: the barrier row (INSERT ... ON CONFLICT DO
// NOTHING) and the handler's changes commit or roll back together; PostgreSQL's own group commit
// shares WAL flushes between concurrent commits. Two requests for the same branch serialise on
// the barrier row's unique key: the second waits for the first to commit, then sees its row. A
// cancel writes its two keys in the same order as everyone else, so retries never deadlock.
//
// Link with libpq (CMake: dtx::postgres).

#include <dtx/barrier.hpp>
#include <dtx/detail/barrier_logic.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/participant.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/postgres/detail/pool.hpp>
#include <dtx/postgres/detail/schema.hpp>
#include <dtx/version.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace postgres {

struct barrier_options {
    std::string conninfo{};
    /// Connections (and threads) running local transactions concurrently.
    std::size_t connections = 4;
    std::chrono::milliseconds retention = std::chrono::hours(24 * 7);
    std::size_t cleanup_batch = 1000;
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
};

/// What a branch operation does to the participant's own tables: runs on one of the barrier's
/// threads inside its local transaction (see <dtx/barrier.hpp>).
using barrier_handler = dtx::barrier_handler<postgres::connection>;
using tcc_handlers = barrier_tcc_handlers<postgres::connection>;
using saga_handlers = barrier_saga_handlers<postgres::connection>;
using barrier_stats = dtx::barrier_stats;

/// Wraps a handler `outcome(connection&, const branch_request&, T)` that takes the payload as a
/// user type `T`; a payload that does not convert is answered with failure naming the gid,
/// branch and problem.
template <class T, class F>
auto typed_handler(F handler) {
    return typed_barrier_handler<T, postgres::connection>(std::move(handler));
}

class barrier : public detail::barrier_registration<barrier, postgres::connection> {
public:
    static constexpr int schema_version = 1;

    /// Connects the pool and creates the barrier table if needed. Throws dtx::error
    /// (database_failed, database_version).
    explicit barrier(barrier_options o)
        : opts_(std::move(o))
        , ready_(migrate())
        , pool_(opts_.conninfo, opts_.connections, opts_.cleanup_interval,
                [this](postgres::connection& db, const std::function<bool()>& busy) {
                    detail::pg_clean_older_than(db, "dtx_barrier", "gid, branch_id, op",
                                                "created_at", opts_.retention, opts_.cleanup_batch,
                                                cleaned_, busy);
                }) {}
    barrier(const barrier&) = delete;
    barrier& operator=(const barrier&) = delete;

    /// Runs `fn(connection&)` in a local transaction on one of the barrier's threads (schema
    /// setup, queries) and returns its result.
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return pool_.run<R>(std::move(fn));
    }

    /// Runs one branch operation under the barrier (see <dtx/barrier.hpp>).
    asio::awaitable<outcome> guard(const branch_request& r, const barrier_handler& handler) {
        auto job = [req = owned_request(r), &handler](postgres::connection& db) {
            store s{db, req};
            return detail::guarded_operation(s, db, req, handler);
        };
        return run_guarded(std::move(job));
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
    // A check-back arriving while the message's local transaction is still running waits on the
    // barrier row's unique key, then answers what that transaction did.

    barrier_stats stats() const { return {pool_.commits(), pool_.operations(), cleaned_.load()}; }

private:
    friend class detail::barrier_registration<barrier, postgres::connection>;
    using owned_request = detail::owned_request;

    /// Runs `job(connection&)` in a local transaction; a refusal it throws is rolled back (with
    /// its barrier row) and answered.
    template <class Job>
    asio::awaitable<outcome> run_guarded(Job job) {
        auto fn = [this, job = std::move(job)](postgres::connection& db) mutable {
            try {
                return pool_.in_transaction(db, [&] { return job(db); });
            } catch (detail::barrier_refusal& x) { // rolled back with its barrier row
                return std::move(x.answer);
            }
        };
        co_return co_await pool_.submit<outcome>(std::move(fn));
    }

    /// The barrier table of one request, for detail::barrier_screen.
    struct store {
        postgres::connection& db;
        const owned_request& r;
        bool insert(const char* slot, const char* origin, const char* state) {
            return db.exec("INSERT INTO dtx_barrier (gid, branch_id, op, origin, state) VALUES "
                           "($1, $2, $3, $4, $5) "
                           "ON CONFLICT DO NOTHING",
                           {r.gid, r.branch_id, slot, origin, state})
                       .affected() == 1;
        }
        std::optional<detail::barrier_row> find(const char* slot) {
            auto res = db.exec("SELECT origin, state FROM dtx_barrier WHERE gid = $1 AND branch_id "
                               "= $2 AND op = $3",
                               {r.gid, r.branch_id, slot});
            if (res.rows() == 0)
                return std::nullopt;
            return detail::barrier_row{std::string(res.text(0, 0)), std::string(res.text(0, 1))};
        }
        void set_state(const char* slot, const char* state) {
            db.exec("UPDATE dtx_barrier SET state = $1 WHERE gid = $2 AND branch_id = $3 AND "
                    "op = $4",
                    {state, r.gid, r.branch_id, slot});
        }
        void forget_started(const char* slot) {
            db.exec("DELETE FROM dtx_barrier WHERE gid = $1 AND branch_id = $2 AND op = $3 AND "
                    "state = 'started'",
                    {r.gid, r.branch_id, slot});
        }
    };

    bool migrate() {
        postgres::connection db(opts_.conninfo, storage_role::participant);
        detail::prepare_participant_tables(db, "barrier", schema_version, [&](int) {
            db.exec("CREATE TABLE IF NOT EXISTS dtx_barrier (gid text NOT NULL, branch_id text "
                    "NOT NULL, op text NOT NULL, origin text NOT NULL, state text NOT NULL, "
                    "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (gid, "
                    "branch_id, op))");
            db.exec("CREATE INDEX IF NOT EXISTS dtx_barrier_created ON dtx_barrier (created_at)");
        });
        return true;
    }

    barrier_options opts_;
    bool ready_;
    std::atomic<std::uint64_t> cleaned_{0};
    detail::pg_pool pool_; // last: its threads stop first
};
} // namespace postgres
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
