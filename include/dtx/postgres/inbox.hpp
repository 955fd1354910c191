#ifndef DTX_POSTGRES_INBOX_HPP
#define DTX_POSTGRES_INBOX_HPP

// The inbox: an idempotent consumer of messages over a PostgreSQL database, for any number of
// consumer processes. Delivery is at least once, so a consumer sees some messages twice; the
// inbox makes processing exactly once. The handler runs inside a local transaction together with
// an inbox row keyed by (consumer, message id):
//   - a message already processed by that consumer is acknowledged (duplicate) without running
//     the handler again;
//   - two copies arriving at once (on two connections, in two processes) do not both run: the
//     second INSERT of the row waits on the primary key for the first transaction to end, then
//     finds the row (duplicate), or inserts it if the first rolled back;
//   - a handler answering dtx::failure() says the message can never be processed (a malformed
//     payload, an unknown order): its changes are rolled back and the result is `rejected`, which
//     makes the producer park it as a dead letter instead of retrying it forever;
//   - a handler answering dtx::pending() or throwing is rolled back too, and the result is
//     `retry`: the producer tries again later.
//
//   dtx::postgres::inbox shipping({.conninfo = "host=127.0.0.1 dbname=shipping"});
//   dtx::postgres::inbox_handler ship = [](dtx::postgres::connection& db,
//                                          const dtx::envelope& e) {
//       db.exec("INSERT INTO parcels (order_id) VALUES ($1)",
//               {e.payload.value("order", std::string())});
//       return dtx::success();
//   };
//   std::string body =
//       R"({"id":"m-1","destination":"d","payload":{},"attempt":1,"produced_at":0})";
//   dtx::consume_result r = co_await shipping.consume("shipping", body, ship);
//
// consume() is transport-agnostic: an HTTP route gives it the request body, a broker consumer the
// record's value; result.delivery() is what to answer the producer.
//
// Inbox rows are deleted in small batches once older than `retention`, which must exceed the
// producer's retry horizon (delivery_schedule::horizon(), plus the time an operator may take to
// requeue a dead letter): a copy arriving after its row was cleaned would be processed again.
// The default, 30 days, covers the default schedules (backoff about 4 hours, notifications about
// 2 days).
//
// Link with libpq (CMake: dtx::postgres).

#include <dtx/consume_result.hpp>
#include <dtx/detail/inbox_logic.hpp>
#include <dtx/envelope.hpp>
#include <dtx/message.hpp>
#include <dtx/outcome.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/postgres/detail/pool.hpp>
#include <dtx/postgres/detail/schema.hpp>
#include <dtx/version.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace postgres {

struct inbox_options {
    /// The consumer's database: its own tables and the inbox's (dtx_inbox, dtx_meta).
    std::string conninfo{};
    /// Connections (and threads) running handlers' transactions concurrently.
    std::size_t connections = 4;
    std::chrono::milliseconds retention = std::chrono::hours(24 * 30);
    std::size_t cleanup_batch = 1000;
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
    message_limits limits{};
};

/// What a consumer does with a message: runs on one of the inbox's threads inside the local
/// transaction that also holds the inbox row. success() commits, failure() rejects, pending()
/// or an exception asks for a retry.
using inbox_handler = std::function<outcome(postgres::connection&, const envelope&)>;

class inbox {
public:
    static constexpr int schema_version = 1;

    /// Connects and creates the inbox's table if needed. Throws dtx::error (database_failed,
    /// database_version) with the reason.
    explicit inbox(inbox_options o)
        : opts_(std::move(o))
        , ready_(migrate())
        , pool_(opts_.conninfo, opts_.connections, opts_.cleanup_interval,
                [this](postgres::connection& db, const std::function<bool()>& busy) {
                    detail::pg_clean_older_than(db, "dtx_inbox", "consumer, message_id",
                                                "received_at", opts_.retention, opts_.cleanup_batch,
                                                cleaned_, busy);
                }) {}

    inbox(const inbox&) = delete;
    inbox& operator=(const inbox&) = delete;

    /// Processes `e` once for `consumer` (a name of 1 to 128 characters, like a gid).
    asio::awaitable<consume_result> consume(std::string consumer, envelope e,
                                            inbox_handler handler) {
        auto start = [&] {
            return pool_.submit<consume_result>([&](postgres::connection& db) {
                return pool_.in_transaction(db,
                                            [&] { return consume_now(db, consumer, e, handler); });
            });
        };
        co_return co_await detail::consume_guarded(consumer, start);
    }

    /// Parses `body` as an envelope first: a malformed one is rejected, and nothing runs.
    asio::awaitable<consume_result> consume(std::string consumer, std::string_view body,
                                            inbox_handler handler) {
        return detail::consume_body(*this, std::move(consumer), body, std::move(handler),
                                    opts_.limits);
    }

    /// Runs `fn(connection&)` in a local transaction on one of the inbox's connections (schema
    /// setup, queries).
    template <class R, class Fn>
    asio::awaitable<R> run(Fn fn) {
        return pool_.run<R>(std::move(fn));
    }

    std::uint64_t cleaned() const noexcept { return cleaned_.load(); }

private:
    static consume_result consume_now(postgres::connection& db, const std::string& consumer,
                                      const envelope& e, const inbox_handler& handler) {
        const auto inserted = db.exec_prepared("dtx_inbox_insert",
                                               "INSERT INTO dtx_inbox (consumer, message_id) "
                                               "VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                               {consumer, e.id})
                                  .affected();
        if (inserted == 0)
            return {consume_status::duplicate, {}};
        return detail::inbox_answer(handler(db, e));
    }

    bool migrate() {
        postgres::connection db(opts_.conninfo, storage_role::participant);
        detail::prepare_participant_tables(db, "inbox", schema_version, [&](int) {
            db.exec("CREATE TABLE IF NOT EXISTS dtx_inbox (consumer text NOT NULL, message_id "
                    "text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (consumer, message_id))");
            db.exec("CREATE INDEX IF NOT EXISTS dtx_inbox_received ON dtx_inbox (received_at)");
        });
        return true;
    }

    inbox_options opts_;
    bool ready_;
    std::atomic<std::uint64_t> cleaned_{0};
    detail::pg_pool pool_; // last: its threads stop first
};

} // namespace postgres
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
