#ifndef DTX_SQLITE_DETAIL_WORKER_HPP
#define DTX_SQLITE_DETAIL_WORKER_HPP

// Runs functions against one SQLite connection on a thread of its own, and group-commits them.
//
// Coroutines submit functions; the worker takes everything queued (up to a batch limit) and runs
// it in one SQLite transaction, each function inside a SAVEPOINT of its own: a function that
// throws rolls back only its own changes and its caller gets the exception, while the others
// commit together, with one fsync. (Optimistic workers skip the savepoints until a function
// throws.) Functions nobody waits for are held back a little, to share a commit with the next
// waited one. If the transaction itself cannot begin or commit (a lock held
// too long, a full disk), every function of the batch gets that error. Results are delivered on
// the submitting coroutine's executor, so no io_context thread ever waits on SQLite.
//
// Light functions (run_light) are those whose commit need not survive a power loss, only a
// crash of the process: a batch of light functions alone commits with synchronous=NORMAL, no
// fsync, when the worker allows it (options::light_without_fsync on a FULL connection). In WAL
// mode that commit still survives a crash of the process (it is in the operating system's
// cache), the database stays consistent whatever happens, and the next commit that does fsync
// makes it durable too: WAL frames reach the disk in order.

#include <dtx/detail/batch_queue.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/error.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace detail {

struct sqlite_worker_stats {
    std::uint64_t commits = 0;        ///< batches committed (one fsync each with synchronous=FULL)
    std::uint64_t light_commits = 0;  ///< of those, batches of light functions, without fsync
    std::uint64_t functions = 0;      ///< functions run in committed batches
    std::uint64_t failed_batches = 0; ///< batches that could not begin or commit
    std::uint64_t lazy_lost = 0;      ///< functions nobody waited for, in failed batches
};

class sqlite_worker {
public:
    struct options {
        std::size_t max_batch = 1024;
        /// Called on the worker thread, outside any transaction, when it has been idle this long.
        std::chrono::milliseconds idle_interval = std::chrono::minutes(1);
        std::function<void(sqlite::connection&)> on_idle{};
        /// Functions submitted without waiting (post) wait at most this long for a waited one to
        /// share its commit.
        std::chrono::milliseconds lazy_delay{20};
        /// How long the thread polls for the next function after a batch before it sleeps.
        std::chrono::microseconds spin{0};
        /// Run a batch without savepoints, and only if a function throws, roll the batch back
        /// and run it again with a savepoint per function. Only for functions whose effects are
        /// all in the database (they may run twice).
        bool optimistic = false;
        /// Let a batch of light functions alone commit without fsync (for a connection that is
        /// synchronous=FULL: the worker sets NORMAL for that batch, and FULL again before the
        /// next batch that is not light).
        bool light_without_fsync = false;
    };

    /// Starts the thread. `db` must outlive the worker and be used by nobody else meanwhile.
    sqlite_worker(sqlite::connection& db, options o)
        : db_(db)
        , on_idle_(std::move(o.on_idle))
        , optimistic_(o.optimistic)
        , light_without_fsync_(o.light_without_fsync)
        , queue_(
              {o.max_batch, o.idle_interval, o.lazy_delay, o.spin},
              [this](std::vector<std::unique_ptr<job>>& b) { execute(b); },
              [this] {
                  if (on_idle_)
                      on_idle_(db_);
              }) {}

    /// Runs `fn(connection&)` in the next batch and returns what it returns (or throws what it
    /// throws). `R` must be default-constructible.
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return submit<R>(std::move(fn), false);
    }

    /// As run(), for a function whose commit need not survive a power loss (see the top of the
    /// file).
    template <class R, class Fn>
    asio::awaitable<R> run_light(Fn fn) {
        return submit<R>(std::move(fn), true);
    }

    /// Runs `fn(connection&)` in the next batch without waiting for it.
    template <class Fn>
    void post(Fn fn) {
        push(std::make_unique<unwaited<Fn>>(std::move(fn)), false);
    }

    sqlite_worker_stats stats() const {
        std::lock_guard lock(mu_);
        return stats_;
    }

    /// True when nothing is queued (for work that should give way to submitted functions).
    bool idle() const { return queue_.idle(); }

    /// Deletes old rows (on the worker thread, when idle): `delete_batch()` runs the statements
    /// of one batch, whose last deletes at most `batch` rows; each batch is a transaction of its
    /// own, and queued functions go first between batches. Adds the rows deleted to `cleaned`.
    template <class DeleteBatch>
    void clean(std::size_t batch, std::atomic<std::uint64_t>& cleaned, DeleteBatch delete_batch) {
        delete_in_batches(
            batch,
            [&] {
                sqlite::transaction tx(db_);
                delete_batch();
                const auto n = static_cast<std::size_t>(db_.changes());
                tx.commit();
                cleaned += n;
                return n;
            },
            [this] { return !idle(); });
    }

    /// clean() for rows older than `retention`: `delete_sql` deletes a batch, given the cutoff
    /// (milliseconds since the epoch) and the batch size as its two parameters.
    void clean_older_than(const char* delete_sql, std::chrono::milliseconds retention,
                          std::size_t batch, std::atomic<std::uint64_t>& cleaned) {
        const std::int64_t before = to_ms(std::chrono::system_clock::now()) - retention.count();
        auto& del = db_.prepare(delete_sql);
        clean(batch, cleaned, [&] { del.bind(before, batch).run(); });
    }

private:
    template <class R, class Fn>
    asio::awaitable<R> submit(Fn fn, bool light) {
        return await_result<R>([this, light, fn = std::move(fn)](deliver_fn<R> deliver) mutable {
            auto j = std::make_unique<waited<R, Fn>>(std::move(fn), std::move(deliver));
            j->light = light;
            push(std::move(j), true);
        });
    }

    struct job {
        bool light = false; // see run_light()
        virtual ~job() = default;
        virtual void run(sqlite::connection& db) = 0;
        virtual void fail(std::exception_ptr e) = 0;
        virtual void complete() = 0; // after the batch, committed or not
        virtual bool waited_for() const noexcept = 0;
    };

    template <class R, class Fn>
    struct waited final : job {
        waited(Fn f, deliver_fn<R> d)
            : fn(std::move(f))
            , deliver(std::move(d)) {}
        void run(sqlite::connection& db) override { result.emplace(fn(db)); }
        void fail(std::exception_ptr e) override { error = e; }
        void complete() override { deliver(error, error ? R{} : std::move(*result)); }
        bool waited_for() const noexcept override { return true; }

        Fn fn;
        deliver_fn<R> deliver;
        std::optional<R> result;
        std::exception_ptr error;
    };

    template <class Fn>
    struct unwaited final : job {
        explicit unwaited(Fn f)
            : fn(std::move(f)) {}
        void run(sqlite::connection& db) override { fn(db); }
        void fail(std::exception_ptr) override {}
        void complete() override {}
        bool waited_for() const noexcept override { return false; }
        Fn fn;
    };

    void push(std::unique_ptr<job> j, bool urgent) {
        if (!queue_.push(j, urgent))
            throw db_.failure(errc::journal_failed, "closing");
    }

    /// Runs the batch in one transaction, each function in a savepoint of its own.
    void run_with_savepoints(std::vector<std::unique_ptr<job>>& batch) {
        sqlite::transaction tx(db_);
        auto& save = db_.prepare("SAVEPOINT dtx_job");
        auto& release = db_.prepare("RELEASE dtx_job");
        auto& undo = db_.prepare("ROLLBACK TO dtx_job");
        for (auto& j : batch) {
            save.bind().run();
            try {
                j->run(db_);
            } catch (...) {
                // Some errors (a full disk, I/O errors) make SQLite roll back the whole
                // transaction by itself: then the batch is lost, and everyone hears why.
                if (sqlite3_get_autocommit(db_.get()))
                    throw;
                j->fail(std::current_exception());
                undo.bind().run();
            }
            release.bind().run();
        }
        tx.commit();
    }

    /// Runs the batch in one transaction without savepoints; false (everything rolled back) if
    /// a function threw and the batch must be run again with savepoints.
    bool run_optimistically(std::vector<std::unique_ptr<job>>& batch) {
        sqlite::transaction tx(db_);
        for (auto& j : batch) {
            try {
                j->run(db_);
            } catch (...) {
                if (sqlite3_get_autocommit(db_.get()))
                    throw;    // rolled back by SQLite: see above
                return false; // tx rolls back
            }
        }
        tx.commit();
        return true;
    }

    /// Sets synchronous=FULL (true) or NORMAL before a batch, if it is not so already; throws
    /// (failing the batch) if it cannot.
    void use_fsync(bool full) {
        if (fsync_ == full)
            return;
        db_.exec(full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        fsync_ = full;
    }

    void execute(std::vector<std::unique_ptr<job>>& batch) {
        std::exception_ptr batch_error;
        const bool light = light_without_fsync_ && std::all_of(batch.begin(), batch.end(),
                                                               [](auto& j) { return j->light; });
        try {
            use_fsync(!light);
            if (!optimistic_ || !run_optimistically(batch))
                run_with_savepoints(batch);
        } catch (...) {
            batch_error = std::current_exception();
        }
        db_.reset_statements(); // committed or not, no read stays open (it would pin the WAL)
        {
            std::lock_guard lock(mu_);
            if (batch_error) {
                ++stats_.failed_batches;
                for (auto& j : batch)
                    stats_.lazy_lost += !j->waited_for();
            } else {
                ++stats_.commits;
                stats_.light_commits += light;
                stats_.functions += batch.size();
            }
        }
        for (auto& j : batch) {
            if (batch_error)
                j->fail(batch_error);
            j->complete();
        }
    }

    sqlite::connection& db_;
    std::function<void(sqlite::connection&)> on_idle_;
    bool optimistic_;
    bool light_without_fsync_;
    bool fsync_ = true;     // synchronous is FULL (false: NORMAL, set for a light batch)
    mutable std::mutex mu_; // guards stats_
    sqlite_worker_stats stats_;
    batch_queue<std::unique_ptr<job>> queue_; // last: its thread stops before the rest goes
};

} // namespace detail
DTX_NAMESPACE_END

#endif
