// The PostgreSQL outbox's claim against a real server: a backlog behind a dead letter or a
// retrying head holds back only its key, and its messages go out in order when it is freed; the
// claim and the next due time read the partial index of ready heads; adding a message with a key
// in a REPEATABLE READ transaction is refused; a table of schema 1 is migrated in place and its
// messages delivered in order.
#include <dtx/postgres/outbox.hpp>
#include <dtx/relay.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/model.hpp"
#include "support/outbox_contract.hpp"
#include "support/pg_outbox.hpp"
#include "support/pg_server.hpp"
#include "support/relay_test.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

TEST_CASE("postgres outbox: a backlog behind a dead letter holds only its key; requeue delivers") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    check_backlog_behind_dead_letter(outbox, 300,
                                     [&](const char* where) { return count(ioc, outbox, where); });
}

TEST_CASE("postgres outbox: a head waiting for its retries holds back only its key, in order") {
    const std::string conninfo = fresh_pg_database();
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    check_retrying_head(outbox);
}

TEST_CASE("postgres outbox: a claim reads the index of ready heads, never the messages held") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    // A key with a backlog (not heads) and a few heads, as the planner's statistics see them.
    add_many(ioc, outbox, "held", 0, 1'000);
    for (int i = 0; i < 20; ++i)
        add_many(ioc, outbox, "k" + std::to_string(i), 0, 1);
    auto plan = [&](std::string sql) {
        return run(ioc, outbox.run<std::string>([sql](postgres::connection& db) {
            db.exec("ANALYZE dtx_outbox");
            auto r = db.exec(("EXPLAIN " + sql).c_str());
            std::string out;
            for (int i = 0; i < r.rows(); ++i)
                out.append(r.text(i, 0)).append("\n");
            return out;
        }));
    };
    const std::string now = std::to_string(detail::to_ms(std::chrono::system_clock::now()));
    const std::string claim =
        plan(detail::outbox_candidates_sql(now, "64") + " FOR UPDATE SKIP LOCKED");
    const std::string next = plan(detail::outbox_next_due_sql(now));
    INFO(claim);
    INFO(next);
    // An index scan, or with few heads a bitmap scan of the same index: either reads heads only.
    CHECK(claim.find("dtx_outbox_ready") != std::string::npos);
    CHECK(claim.find("Seq Scan") == std::string::npos);
    CHECK(next.find("dtx_outbox_ready") != std::string::npos);
    CHECK(next.find("Seq Scan") == std::string::npos);
}

TEST_CASE("postgres outbox: a message with a key is refused in a REPEATABLE READ transaction") {
    const std::string conninfo = fresh_pg_database();
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    // Its snapshot may predate its key's lock: whether it is its key's head cannot be known.
    auto add = [&](postgres::connection& db) {
        db.exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
        return outbox.add(db, {.destination = "d", .key = "k"});
    };
    CHECK_THROWS_AS(run(ioc, outbox.run<std::string>(add)), dtx::error);
    CHECK(count(ioc, outbox, "true") == 0);
}

TEST_CASE("postgres outbox: a table of schema 1 is migrated in place and delivered in order") {
    const std::string conninfo = fresh_pg_database();
    const std::int64_t now = detail::to_ms(std::chrono::system_clock::now());
    {
        // As dtx wrote it before heads: a message in flight (its relay died; the lease ends in
        // 300 ms), a dead letter holding its key, pending messages behind both, a delivered one.
        postgres::connection db(conninfo);
        db.exec("CREATE TABLE dtx_meta (key text PRIMARY KEY, value integer NOT NULL)");
        db.exec("INSERT INTO dtx_meta VALUES ('outbox_version', 1)");
        db.exec("CREATE TABLE dtx_outbox (seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, "
                "destination text NOT NULL, msg_key text NOT NULL, headers text NOT NULL, "
                "payload text NOT NULL, state smallint NOT NULL, attempts integer NOT NULL, "
                "due_ms bigint NOT NULL, owner text, lease_ms bigint, last_error text, "
                "created_ms bigint NOT NULL, done_ms bigint)");
        db.exec("CREATE INDEX dtx_outbox_pending ON dtx_outbox (seq) WHERE state = 0");
        db.exec("CREATE INDEX dtx_outbox_key ON dtx_outbox (msg_key, seq) WHERE state <> 1");
        db.exec("CREATE INDEX dtx_outbox_delivered ON dtx_outbox (done_ms) WHERE state = 1");
        db.exec("CREATE INDEX dtx_outbox_parked ON dtx_outbox (seq) WHERE state = 2");
        const std::string sql =
            "INSERT INTO dtx_outbox (id, destination, msg_key, headers, payload, state, attempts, "
            "due_ms, owner, lease_ms, last_error, created_ms, done_ms) VALUES "
            "('a1', 'd', 'a', '{}', '{}', 0, 1, $1::bigint - 2000, 'dead-relay', "
            "$1::bigint + 300, NULL, $1::bigint - 2000, NULL), "
            "('b1', 'd', 'b', '{}', '{}', 2, 1, $1::bigint - 2000, NULL, NULL, 'poison', "
            "$1::bigint - 2000, $1::bigint - 1500), "
            "('a2', 'd', 'a', '{}', '{}', 0, 0, $1::bigint - 1000, NULL, NULL, NULL, "
            "$1::bigint - 1000, NULL), "
            "('c1', 'd', 'c', '{}', '{}', 0, 0, $1::bigint - 1000, NULL, NULL, NULL, "
            "$1::bigint - 1000, NULL), "
            "('b2', 'd', 'b', '{}', '{}', 0, 0, $1::bigint - 1000, NULL, NULL, NULL, "
            "$1::bigint - 1000, NULL), "
            "('e1', 'd', '', '{}', '{}', 0, 0, $1::bigint - 1000, NULL, NULL, NULL, "
            "$1::bigint - 1000, NULL), "
            "('a3', 'd', 'a', '{}', '{}', 0, 0, $1::bigint - 1000, NULL, NULL, NULL, "
            "$1::bigint - 1000, NULL), "
            "('c0', 'd', 'c', '{}', '{}', 1, 1, $1::bigint - 3000, NULL, NULL, NULL, "
            "$1::bigint - 3000, $1::bigint - 2500)";
        db.exec(sql.c_str(), {std::to_string(now)});
    }
    asio::io_context ioc;
    postgres::outbox outbox({.conninfo = conninfo, .listen = false});
    check_schema_1_rows_delivered(outbox,
                                  [&](const char* where) { return count(ioc, outbox, where); });
    CHECK(
        run(ioc, outbox.run<std::int64_t>([](postgres::connection& db) {
            return db.exec("SELECT value FROM dtx_meta WHERE key = 'outbox_version'").integer(0, 0);
        })) == postgres::outbox::schema_version);
}
