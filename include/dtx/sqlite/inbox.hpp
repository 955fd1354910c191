#ifndef DTX_SQLITE_INBOX_HPP
#define DTX_SQLITE_INBOX_HPP

// The inbox: an idempotent consumer of messages over a SQLite database. Delivery is at least
// once, so a consumer sees some messages twice; the inbox makes processing exactly once. The
// handler runs inside a local transaction together with an inbox row keyed by (consumer, message
// id):
//   - a message already processed by that consumer is acknowledged (duplicate) without running
//     the handler again;
//   - two copies arriving at once do not both run: the row is written in the handler's own write
//     transaction (one writer at a time), so the second finds it;
//   - a handler answering dtx::failure() says the message can never be processed (a malformed
//     payload, an unknown order): its changes are rolled back and the result is `rejected`, which
//     makes the producer park it as a dead letter instead of retrying it forever;
//   - a handler answering dtx::pending() or throwing is rolled back too, and the result is
//     `retry`: the producer tries again later.
//
//   dtx::sqlite::inbox shipping({.path = "shipping.db"});
//   dtx::sqlite::inbox_handler ship = [](dtx::sqlite::connection& db, const dtx::envelope& e) {
//       db.prepare("INSERT INTO parcels (order_id) VALUES (?)")
//           .bind(e.payload.value("order", std::string()))
//           .run();
//       return dtx::success();
//   };
//   std::string body =
//       R"({"id":"m-1","destination":"d","payload":{},"attempt":1,"produced_at":0})";
//   dtx::consume_result r = co_await shipping.consume("shipping", body, ship);
//
// consume() is transport-agnostic: an HTTP route gives it the request body, a broker consumer the
// record's value; result.delivery() is what to answer the producer.
//
// Inbox rows are deleted in batches once older than `retention`, which must exceed the
// producer's retry horizon (delivery_schedule::horizon(), plus the time an operator may take to
// requeue a dead letter): a copy arriving after its row was cleaned would be processed again.
// The default, 30 days, covers the default schedules (backoff about 4 hours, notifications about
// 2 days).

#include <dtx/consume_result.hpp>
#include <dtx/detail/inbox_logic.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/envelope.hpp>
#include <dtx/error.hpp>
#include <dtx/outcome.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/sqlite/detail/schema.hpp>
#include <dtx/sqlite/detail/worker.hpp>
#include <dtx/version.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <string_view>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace sqlite {

struct inbox_options {
    /// The consumer's database: its own tables and the inbox's (dtx_inbox, dtx_meta).
    std::string path{};
    bool synchronous_full = true;
    std::chrono::milliseconds busy_timeout{5'000};
    std::size_t max_batch = 256;
    std::chrono::milliseconds retention = std::chrono::hours(24 * 30);
    std::size_t cleanup_batch = 1000;
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
    message_limits limits{};
};

/// What a consumer does with a message: runs on the inbox's database thread inside the local
/// transaction that also holds the inbox row. success() commits, failure() rejects, pending()
/// or an exception asks for a retry.
using inbox_handler = std::function<outcome(sqlite::connection&, const envelope&)>;

class inbox {
public:
    static constexpr int schema_version = 1;

    explicit inbox(inbox_options o)
        : opts_(std::move(o))
        , db_(opts_.path, storage_role::participant)
        , ready_(prepare())
        , worker_(db_, {.max_batch = opts_.max_batch,
                        .idle_interval = opts_.cleanup_interval,
                        .on_idle = [this](sqlite::connection&) { cleanup(); }}) {}

    inbox(const inbox&) = delete;
    inbox& operator=(const inbox&) = delete;

    /// Processes `e` once for `consumer` (a name of 1 to 128 characters, like a gid).
    asio::awaitable<consume_result> consume(std::string consumer, envelope e,
                                            inbox_handler handler) {
        auto start = [&] {
            return worker_.run<consume_result>(
                [&](sqlite::connection& db) { return consume_now(db, consumer, e, handler); });
        };
        co_return co_await detail::consume_guarded(consumer, start);
    }

    /// Parses `body` as an envelope first: a malformed one is rejected, and nothing runs.
    asio::awaitable<consume_result> consume(std::string consumer, std::string_view body,
                                            inbox_handler handler) {
        return detail::consume_body(*this, std::move(consumer), body, std::move(handler),
                                    opts_.limits);
    }

    /// Runs `fn(connection&)` in a local transaction on the database thread (schema setup,
    /// queries).
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return worker_.run<R>(std::move(fn));
    }

    std::uint64_t cleaned() const noexcept { return cleaned_.load(); }
    const std::string& path() const noexcept { return opts_.path; }

private:
    static consume_result consume_now(sqlite::connection& db, const std::string& consumer,
                                      const envelope& e, const inbox_handler& handler) {
        db.prepare("INSERT OR IGNORE INTO dtx_inbox (consumer, message_id, received_ms) "
                   "VALUES (?, ?, ?)")
            .bind(consumer, e.id, detail::to_ms(std::chrono::system_clock::now()))
            .run();
        if (db.changes() == 0)
            return {consume_status::duplicate, {}};
        return detail::inbox_answer(handler(db, e));
    }

    bool prepare() {
        detail::prepare_participant_tables(db_, opts_.busy_timeout, opts_.synchronous_full, "inbox",
                                           schema_version, [&](int) {
                                               db_.exec(R"sql(
                    CREATE TABLE IF NOT EXISTS dtx_inbox (
                        consumer    TEXT NOT NULL,
                        message_id  TEXT NOT NULL,
                        received_ms INTEGER NOT NULL,
                        PRIMARY KEY (consumer, message_id)
                    ) WITHOUT ROWID;
                    CREATE INDEX IF NOT EXISTS dtx_inbox_received ON dtx_inbox (received_ms);
                )sql");
                                           });
        return true;
    }

    /// Deletes inbox rows older than the retention, on the database thread when it is idle.
    void cleanup() {
        worker_.clean_older_than(
            "DELETE FROM dtx_inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id "
            "FROM dtx_inbox WHERE received_ms < ? LIMIT ?)",
            opts_.retention, opts_.cleanup_batch, cleaned_);
    }

    inbox_options opts_;
    sqlite::connection db_;
    bool ready_;
    std::atomic<std::uint64_t> cleaned_{0};
    detail::sqlite_worker worker_; // last: drained before the rest goes
};

} // namespace sqlite
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
