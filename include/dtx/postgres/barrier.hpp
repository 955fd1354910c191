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
#include <dtx/detail/batch_queue.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/participant.hpp>
#include <dtx/postgres/connection.hpp>
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
        : opts_(std::move(o)) {
        if (opts_.connections == 0)
            opts_.connections = 1;
        {
            postgres::connection db(opts_.conninfo, storage_role::participant);
            migrate(db);
        }
        for (std::size_t i = 0; i < opts_.connections; ++i)
            lanes_.push_back(std::make_unique<lane>(*this, i == 0));
    }
    barrier(const barrier&) = delete;
    barrier& operator=(const barrier&) = delete;

    /// Runs `fn(connection&)` in a local transaction on one of the barrier's threads (schema
    /// setup, queries) and returns its result.
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return submit<R>([this, fn = std::move(fn)](postgres::connection& db) mutable {
            return in_transaction(db, [&] { return fn(db); });
        });
    }

    /// Runs one branch operation under the barrier (see <dtx/barrier.hpp>).
    asio::awaitable<outcome> guard(const branch_request& r, const barrier_handler& handler) {
        auto fn = [this, req = owned_request(r), &handler](postgres::connection& db) {
            try {
                return in_transaction(db, [&] {
                    store s{db, req};
                    return detail::guarded_operation(s, db, req, handler);
                });
            } catch (detail::barrier_refusal& x) { // rolled back with its barrier row
                return std::move(x.answer);
            }
        };
        co_return co_await submit<outcome>(std::move(fn));
    }

    // Inherited from detail::barrier_registration: tcc(tcc_handlers) and saga(saga_handlers), the
    // participant's handlers for participant_registry::add_tcc and add_saga; and, for work
    // outside this database (see <dtx/barrier.hpp>),
    //   asio::awaitable<outcome> guard_external(const branch_request& r,
    //                                           std::function<asio::awaitable<outcome>()> work);

    barrier_stats stats() const { return {commits_.load(), operations_.load(), cleaned_.load()}; }

private:
    friend class detail::barrier_registration<barrier, postgres::connection>;
    using job = std::function<void(postgres::connection&)>;
    using owned_request = detail::owned_request;

    /// One connection and the thread that uses it.
    struct lane {
        lane(barrier& b, bool cleans)
            : db(b.opts_.conninfo, storage_role::participant)
            , queue(
                  {64, b.opts_.cleanup_interval},
                  [this](std::vector<job>& jobs) {
                      for (auto& j : jobs)
                          j(db); // each job reports its own errors
                  },
                  [this, &b, cleans] {
                      if (cleans)
                          b.cleanup(*this);
                  }) {}
        postgres::connection db;
        detail::batch_queue<job> queue; // last: stopped before the connection goes
    };

    /// Runs `fn(connection&)` on one of the threads, its connection re-established if it was
    /// lost, and returns its result.
    template <class R, class Fn>
    asio::awaitable<R> submit(Fn fn) {
        auto start = [this, fn = std::move(fn)](detail::deliver_fn<R> deliver) mutable {
            auto& l = *lanes_[next_++ % lanes_.size()];
            job j = [this, fn = std::move(fn),
                     deliver = std::move(deliver)](postgres::connection& db) mutable {
                R result{};
                std::exception_ptr e;
                try {
                    db.ensure(); // a lost connection is re-established, or this job hears why
                    result = fn(db);
                    ++operations_;
                } catch (...) {
                    e = std::current_exception();
                }
                deliver(e, std::move(result));
            };
            if (!l.queue.push(j))
                throw l.db.failure("barrier closing");
        };
        return detail::await_result<R>(std::move(start));
    }

    template <class F>
    std::invoke_result_t<F&> in_transaction(postgres::connection& db, F&& f) {
        postgres::transaction tx(db);
        auto result = f();
        tx.commit();
        ++commits_;
        return result;
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

    static void migrate(postgres::connection& db) {
        postgres::transaction tx(db);
        db.exec("SELECT pg_advisory_xact_lock(7270712)"); // 'dtx' barrier migrations
        db.exec(
            "CREATE TABLE IF NOT EXISTS dtx_meta (key text PRIMARY KEY, value integer NOT NULL)");
        auto v = db.exec("SELECT value FROM dtx_meta WHERE key = 'barrier_version'");
        const int version = v.rows() ? std::stoi(std::string(v.text(0, 0))) : 0;
        if (version > schema_version)
            throw detail::newer_schema(db.role(), "PostgreSQL barrier:", version, schema_version);
        if (version < 1) {
            db.exec("CREATE TABLE IF NOT EXISTS dtx_barrier (gid text NOT NULL, branch_id text "
                    "NOT NULL, "
                    "op text NOT NULL, origin text NOT NULL, state text NOT NULL, "
                    "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (gid, "
                    "branch_id, op))");
            db.exec("CREATE INDEX IF NOT EXISTS dtx_barrier_created ON dtx_barrier (created_at)");
            db.exec("INSERT INTO dtx_meta (key, value) VALUES ('barrier_version', 1) "
                    "ON CONFLICT (key) DO UPDATE SET value = 1");
        }
        tx.commit();
    }

    /// Deletes barrier rows older than the retention, a batch per statement, giving way to
    /// queued operations between batches. Runs on the first thread when it is idle.
    void cleanup(lane& l) {
        const std::string ms = std::to_string(opts_.retention.count());
        const std::string batch = std::to_string(opts_.cleanup_batch);
        detail::delete_in_batches(
            opts_.cleanup_batch,
            [&] {
                l.db.ensure();
                auto r = l.db.exec(
                    "DELETE FROM dtx_barrier WHERE (gid, branch_id, op) IN (SELECT gid, "
                    "branch_id, op FROM dtx_barrier WHERE created_at < now() - $1::bigint * "
                    "interval '1 millisecond' LIMIT $2::int FOR UPDATE SKIP LOCKED)",
                    {ms, batch});
                const auto n = static_cast<std::size_t>(r.affected());
                cleaned_ += n;
                return n;
            },
            [&l] { return !l.queue.idle(); });
    }

    barrier_options opts_;
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> operations_{0};
    std::atomic<std::uint64_t> cleaned_{0};
    std::atomic<std::size_t> next_{0};
    std::vector<std::unique_ptr<lane>> lanes_; // last: their threads stop first
};

} // namespace postgres
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
