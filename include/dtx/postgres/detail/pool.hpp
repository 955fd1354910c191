#ifndef DTX_POSTGRES_DETAIL_POOL_HPP
#define DTX_POSTGRES_DETAIL_POOL_HPP

// The connections on which the PostgreSQL barrier, outbox and inbox run local transactions:
// each driven by a thread of its own, jobs spread over them in turn; PostgreSQL's own group
// commit shares WAL flushes between concurrent commits. The first connection also does the
// periodic work (a cleanup) when its thread is idle.

#include <dtx/detail/batch_queue.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace detail {

class pg_pool {
public:
    /// `on_idle(db, busy)` runs on the first connection's thread every `idle_interval`; it
    /// should stop early when `busy()` says jobs are waiting.
    using idle_fn = std::function<void(postgres::connection&, const std::function<bool()>& busy)>;

    pg_pool(const std::string& conninfo, std::size_t connections,
            std::chrono::milliseconds idle_interval = std::chrono::minutes(1), idle_fn on_idle = {})
        : on_idle_(std::move(on_idle)) {
        for (std::size_t i = 0; i < std::max<std::size_t>(connections, 1); ++i)
            lanes_.push_back(std::make_unique<lane>(*this, conninfo, idle_interval, i == 0));
    }
    pg_pool(const pg_pool&) = delete;
    pg_pool& operator=(const pg_pool&) = delete;

    /// Runs `fn(connection&)` on one of the threads, its connection re-established if it was
    /// lost, and returns its result.
    template <class R, class Fn>
    asio::awaitable<R> submit(Fn fn) {
        auto start = [this, fn = std::move(fn)](deliver_fn<R> deliver) mutable {
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
                throw l.db.failure("closing");
        };
        return await_result<R>(std::move(start));
    }

    /// Runs `fn(connection&)` in a local transaction on one of the threads.
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return submit<R>([this, fn = std::move(fn)](postgres::connection& db) mutable {
            return in_transaction(db, [&] { return fn(db); });
        });
    }

    /// `f()` between BEGIN and COMMIT on `db`, rolled back if it throws.
    template <class F>
    std::invoke_result_t<F&> in_transaction(postgres::connection& db, F&& f) {
        postgres::transaction tx(db);
        auto result = f();
        tx.commit();
        ++commits_;
        return result;
    }

    std::uint64_t commits() const noexcept { return commits_.load(); }
    std::uint64_t operations() const noexcept { return operations_.load(); }

private:
    using job = std::function<void(postgres::connection&)>;

    /// One connection and the thread that uses it.
    struct lane {
        lane(pg_pool& p, const std::string& conninfo, std::chrono::milliseconds idle_interval,
             bool first)
            : db(conninfo, storage_role::participant)
            , queue(
                  {64, idle_interval},
                  [this](std::vector<job>& jobs) {
                      for (auto& j : jobs)
                          j(db); // each job reports its own errors
                  },
                  [this, &p, first] {
                      if (first && p.on_idle_) {
                          db.ensure();
                          p.on_idle_(db, [this] { return !queue.idle(); });
                      }
                  }) {}
        postgres::connection db;
        batch_queue<job> queue; // last: stopped before the connection goes
    };

    idle_fn on_idle_;
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> operations_{0};
    std::atomic<std::size_t> next_{0};
    std::vector<std::unique_ptr<lane>> lanes_; // last: their threads stop first
};

/// Deletes rows of `table` whose `time_column` (timestamptz) is older than `retention`, at most
/// `batch` per statement, rows that another transaction holds skipped, until a batch is not full
/// or `busy()`; adds the count to `cleaned`. `key` names the columns of the primary key.
inline void pg_clean_older_than(postgres::connection& db, const char* table, const char* key,
                                const char* time_column, std::chrono::milliseconds retention,
                                std::size_t batch, std::atomic<std::uint64_t>& cleaned,
                                const std::function<bool()>& busy) {
    const std::string sql = std::string("DELETE FROM ") + table + " WHERE (" + key +
                            ") IN (SELECT " + key + " FROM " + table + " WHERE " + time_column +
                            " < now() - $1::bigint * interval '1 millisecond' LIMIT $2::int FOR "
                            "UPDATE SKIP LOCKED)";
    const std::string ms = std::to_string(retention.count());
    const std::string n = std::to_string(batch);
    delete_in_batches(
        batch,
        [&] {
            const auto deleted = static_cast<std::size_t>(db.exec(sql.c_str(), {ms, n}).affected());
            cleaned += deleted;
            return deleted;
        },
        busy);
}

} // namespace detail
DTX_NAMESPACE_END

#endif
