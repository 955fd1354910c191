#ifndef DTX_POSTGRES_BARRIER_HPP
#define DTX_POSTGRES_BARRIER_HPP

// The barrier for a participant whose state is in PostgreSQL: the same rules as the SQLite
// barrier (sqlite_barrier.hpp), in the participant's own database and local transactions.
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
// Barrier rows are deleted in batches once older than `retention`.
//
// Link with libpq (CMake: dtx::postgres).

#include <dtx/detail/barrier_logic.hpp>
#include <dtx/detail/batch_queue.hpp>
#include <dtx/participant.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/version.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
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

/// What a branch operation does to the participant's own tables, inside the barrier's local
/// transaction, on one of its threads. Return failure (or pending) to refuse, which rolls the
/// changes back; throw for an unknown result.
using barrier_handler = detail::db_handler<postgres::connection>;
using tcc_handlers = detail::db_tcc_handlers<postgres::connection>;
using saga_handlers = detail::db_saga_handlers<postgres::connection>;

/// Wraps a handler taking the payload as a user type `T` (failure if it does not convert).
template <class T, class F>
barrier_handler typed_handler(F handler) {
    return detail::typed_db<T, postgres::connection>(std::move(handler));
}

class barrier : public detail::barrier_registration<barrier, postgres::connection> {
public:
    static constexpr int schema_version = 1;

    /// Connects the pool and creates the barrier table if needed. Throws dtx::error.
    explicit barrier(barrier_options o)
        : opts_(std::move(o)) {
        if (opts_.connections == 0)
            opts_.connections = 1;
        {
            postgres::connection db(opts_.conninfo);
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
        auto start = [this, fn = std::move(fn)](detail::deliver_fn<R> deliver) mutable {
            dispatch([fn = std::move(fn),
                      deliver = std::move(deliver)](postgres::connection& db) mutable {
                R result{};
                std::exception_ptr e;
                try {
                    db.ensure(); // a lost connection is re-established, or this job hears why
                    result = in_transaction(db, [&] { return fn(db); });
                } catch (...) {
                    e = std::current_exception();
                }
                deliver(e, std::move(result));
            });
        };
        return detail::await_result<R>(std::move(start));
    }

    /// Runs one branch operation under the barrier.
    asio::awaitable<outcome> guard(const branch_request& r, const barrier_handler& handler) {
        auto fn = [req = owned_request(r), &handler](postgres::connection& db) {
            return guarded(db, req, handler);
        };
        co_return co_await run<outcome>(std::move(fn));
    }

    std::uint64_t cleaned() const noexcept { return cleaned_.load(); }

private:
    using job = std::function<void(postgres::connection&)>;

    /// One connection and the thread that uses it.
    struct lane {
        lane(barrier& b, bool cleans)
            : db(b.opts_.conninfo)
            , queue(
                  {64, b.opts_.cleanup_interval},
                  [this](std::vector<job>& jobs) {
                      for (auto& j : jobs)
                          j(db); // each job reports its own errors
                  },
                  [this, &b, cleans] {
                      if (cleans)
                          b.cleanup(db);
                  }) {}
        postgres::connection db;
        detail::batch_queue<job> queue; // last: stopped before the connection goes
    };

    using owned_request = detail::owned_request;

    /// Thrown inside a local transaction to roll it back while answering `answer`.
    struct refused {
        outcome answer;
    };

    void dispatch(job j) {
        auto& l = *lanes_[next_++ % lanes_.size()];
        if (!l.queue.push(j))
            throw error(errc::journal_failed, "PostgreSQL barrier: closing");
    }

    template <class F>
    static auto in_transaction(postgres::connection& db, F&& f) {
        db.exec("BEGIN");
        try {
            auto result = f();
            db.exec("COMMIT");
            return result;
        } catch (...) {
            try {
                db.exec("ROLLBACK");
            } catch (...) {
            }
            throw;
        }
    }

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
    };

    static outcome guarded(postgres::connection& db, const owned_request& r,
                           const barrier_handler& handler) {
        try {
            return in_transaction(db, [&] {
                store s{db, r};
                if (auto answer = detail::barrier_screen(s, r.view(), "done"))
                    return *answer;
                const branch_request req = r.view();
                outcome o = handler(db, req);
                if (!o.is_success())
                    throw refused{std::move(o)}; // roll back the changes and the row
                return o;
            });
        } catch (refused& x) {
            return std::move(x.answer);
        }
    }

    static void migrate(postgres::connection& db) {
        in_transaction(db, [&] {
            db.exec("SELECT pg_advisory_xact_lock(7270712)"); // 'dtx' barrier migrations
            db.exec("CREATE TABLE IF NOT EXISTS dtx_meta (key text PRIMARY KEY, value integer NOT "
                    "NULL)");
            auto v = db.exec("SELECT value FROM dtx_meta WHERE key = 'barrier_version'");
            const int version = v.rows() ? std::stoi(std::string(v.text(0, 0))) : 0;
            if (version > schema_version)
                throw error(errc::journal_version,
                            "PostgreSQL barrier: schema version " + std::to_string(version) +
                                " is newer than this dtx reads; upgrade dtx");
            if (version < 1) {
                db.exec("CREATE TABLE IF NOT EXISTS dtx_barrier (gid text NOT NULL, branch_id text "
                        "NOT NULL, "
                        "op text NOT NULL, origin text NOT NULL, state text NOT NULL, "
                        "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (gid, "
                        "branch_id, op))");
                db.exec(
                    "CREATE INDEX IF NOT EXISTS dtx_barrier_created ON dtx_barrier (created_at)");
                db.exec("INSERT INTO dtx_meta (key, value) VALUES ('barrier_version', 1) "
                        "ON CONFLICT (key) DO UPDATE SET value = 1");
            }
            return 0;
        });
    }

    void cleanup(postgres::connection& db) {
        const std::string ms = std::to_string(opts_.retention.count());
        const std::string batch = std::to_string(opts_.cleanup_batch);
        for (;;) {
            db.ensure();
            auto r = db.exec("DELETE FROM dtx_barrier WHERE (gid, branch_id, op) IN (SELECT gid, "
                             "branch_id, op FROM "
                             "dtx_barrier WHERE created_at < now() - $1::bigint * interval '1 "
                             "millisecond' LIMIT $2::int "
                             "FOR UPDATE SKIP LOCKED)",
                             {ms, batch});
            cleaned_ += static_cast<std::uint64_t>(r.affected());
            if (r.affected() < static_cast<int>(opts_.cleanup_batch))
                break;
        }
    }

    barrier_options opts_;
    std::atomic<std::uint64_t> cleaned_{0};
    std::atomic<std::size_t> next_{0};
    std::vector<std::unique_ptr<lane>> lanes_; // last: their threads stop first
};

} // namespace postgres
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
