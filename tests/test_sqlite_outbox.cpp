// The SQLite outbox and inbox: messages commit and roll back with the business change, added on
// the outbox's thread or on another connection (a barrier handler's); two relays on one file
// never deliver a message at once; an expired lease is taken over; the inbox processes each
// message once, also when copies arrive together, and rejects what cannot be processed.
#include <dtx/relay.hpp>
#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/inbox.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <thread>

#include "support/model.hpp"
#include "support/outbox_contract.hpp"
#include "support/relay_test.hpp"

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;

namespace {

std::int64_t count(asio::io_context& ioc, sqlite::outbox& o, const char* where) {
    const std::string sql = std::string("SELECT COUNT(*) FROM dtx_outbox WHERE ") + where;
    return run(ioc, o.run<std::int64_t>([sql](sqlite::connection& db) {
        auto& st = db.prepare(sql);
        st.step();
        return st.integer(0);
    }));
}

} // namespace

TEST_CASE("outbox: a rolled-back transaction sends nothing, a committed one is delivered") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("orders.db")});
    check_commit_and_rollback(outbox, [&] { return count(ioc, outbox, "1"); });
}

TEST_CASE("outbox: a message added in a barrier handler goes out when the barrier commits") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("shop.db")});
    sqlite::barrier barrier({.path = dir.file("shop.db")});
    log_publisher pub;
    relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
    r.start();
    run(ioc, wait_until([] { return false; }, 20ms)); // asleep in its poll
    const auto start = std::chrono::steady_clock::now();
    auto confirm = [&](sqlite::connection& db) {
        return outbox.add(db, {.destination = "d", .key = "order-1", .payload = {{"paid", true}}});
    };
    const std::string id = run(ioc, barrier.run<std::string>(confirm));
    CHECK(run(ioc, wait_until([&] { return pub.delivered.size() == 1; }, 5s)));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(pub.delivered == std::vector<std::string>{id});
    run(ioc, stopped(r));
}

TEST_CASE("outbox: add refuses a message outside a transaction or over the limits") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("orders.db")});
    sqlite::connection db(dir.file("orders.db"));
    check_add_refuses(outbox, db, [&] { return count(ioc, outbox, "1"); });
}

TEST_CASE("outbox: two relays on one file never deliver a message at once, nor twice") {
    temp_dir dir;
    sqlite::outbox a({.path = dir.file("orders.db")});
    sqlite::outbox b({.path = dir.file("orders.db")});
    check_two_relays(a, b);
}

TEST_CASE("outbox: a lease left by a relay that died is taken over when it expires") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("orders.db")});
    check_lease_takeover(outbox, [&] { return count(ioc, outbox, "state = 1"); });
}

TEST_CASE("outbox: the relay's claims and settlements commit without fsync, business ones with") {
    // A business transaction must fsync (synchronous=FULL) also after the relay's light commits;
    // the relay's own ones need not, unless fsync_relay_writes asks for it.
    for (bool fsync_relay_writes : {false, true}) {
        CAPTURE(fsync_relay_writes);
        temp_dir dir;
        asio::io_context ioc;
        sqlite::outbox outbox(
            {.path = dir.file("orders.db"), .fsync_relay_writes = fsync_relay_writes});
        log_publisher pub;
        relay r(ioc.get_executor(), outbox, pub, {.poll_interval = 10s});
        r.start();
        const int messages = 20;
        std::vector<std::int64_t> synchronous;
        for (int i = 0; i < messages; ++i) {
            auto add = [&](sqlite::connection& db) {
                auto& st = db.prepare("PRAGMA synchronous");
                st.step();
                synchronous.push_back(st.integer(0));
                return outbox.add(db, {.destination = "d", .key = "k"});
            };
            run(ioc, outbox.run<std::string>(add));
            REQUIRE(run(ioc, wait_until([&] { return pub.delivered.size() == i + 1u; }, 5s)));
        }
        run(ioc, stopped(r));
        CHECK(synchronous == std::vector<std::int64_t>(messages, 2)); // 2: FULL
        const auto stats = outbox.stats();
        if (fsync_relay_writes) {
            CHECK(stats.light_commits == 0);
        } else {
            // Each message: its business commit, a claim and a settlement (some may share one).
            CHECK(stats.light_commits >= messages);
            CHECK(stats.commits - stats.light_commits <= messages);
        }
    }
}

TEST_CASE("outbox: the relay's queries read delivered and parked rows through an index") {
    // A query that read the whole table would cost every claim the outbox's whole history.
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("orders.db")});
    for (const char* key : {"a", "b", "c"}) {
        auto add = [&](sqlite::connection& db) {
            return outbox.add(db, {.destination = "d", .key = key, .payload = {{"k", key}}});
        };
        run(ioc, outbox.run<std::string>(add));
    }
    const outbox_claim claimed = run(ioc, outbox.claim("r", 60s, 10));
    REQUIRE(claimed.messages.size() == 3);
    run(ioc, settled(outbox, "r", {claimed.messages[0].id, delivery_status::delivered, {}, {}}));
    run(ioc, settled(outbox, "r", {claimed.messages[1].id, delivery_status::rejected, "no", {}}));
    run(ioc, outbox.claim("r", 60s, 10)); // what the relay runs, with a parked key
    CHECK(run(ioc, outbox.dead_letters(10, {})).size() == 1);
    CHECK(run(ioc, outbox.clean_delivered(std::chrono::system_clock::now() + 1h, 10)) == 1);

    // Every statement the outbox has prepared on its connection, planned again.
    auto plans = [](sqlite::connection& db) {
        std::vector<std::string> sql;
        for (sqlite3_stmt* st = sqlite3_next_stmt(db.get(), nullptr); st;
             st = sqlite3_next_stmt(db.get(), st))
            if (const char* text = sqlite3_sql(st);
                text && std::string_view(text).find("dtx_outbox") != std::string_view::npos)
                sql.emplace_back(text);
        std::map<std::string, std::vector<std::string>> steps; // statement -> its plan
        for (const std::string& s : sql) {
            auto& plan = db.prepare("EXPLAIN QUERY PLAN " + s);
            while (plan.step())
                steps[s].emplace_back(plan.text(3));
        }
        db.reset_statements();
        return steps;
    };
    const auto steps = run(ioc, outbox.run<std::map<std::string, std::vector<std::string>>>(plans));
    int of_done_rows = 0; // statements that look for delivered or parked rows
    for (const auto& step_of : steps) {
        const std::string& sql = step_of.first; // not a structured binding: INFO captures it
        if (sql.find("WHERE state <> 0 AND state =") == std::string::npos &&
            sql.find("WHERE state = 1") == std::string::npos &&
            sql.find("WHERE state = 2") == std::string::npos)
            continue;
        ++of_done_rows;
        for (const std::string& step : step_of.second) {
            INFO(sql);
            CHECK(step != "SCAN dtx_outbox");
        }
    }
    CHECK(of_done_rows == 2); // the dead letters, the cleanup
}

TEST_CASE("outbox: a backlog behind a dead letter holds only its key; requeue delivers it") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("orders.db"), .synchronous_full = false});
    check_backlog_behind_dead_letter(outbox, 10'000,
                                     [&](const char* where) { return count(ioc, outbox, where); });
}

TEST_CASE("outbox: a head waiting for its retries holds back only its key, in order") {
    temp_dir dir;
    sqlite::outbox outbox({.path = dir.file("orders.db"), .synchronous_full = false});
    check_retrying_head(outbox);
}

TEST_CASE("outbox: a claim reads the index of ready heads, never the messages held back") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::outbox outbox({.path = dir.file("orders.db")});
    // What SQLite plans for the claim's statements: a range of the partial index, no sort.
    auto plan = [&](std::string sql) {
        return run(ioc, outbox.run<std::string>([sql](sqlite::connection& db) {
            auto& st = db.prepare("EXPLAIN QUERY PLAN " + sql); // planned, not run: no parameters
            std::string out;
            for (st.bind(); st.step();)
                out.append(st.text(3)).append("\n");
            return out;
        }));
    };
    const std::string claim = plan(detail::outbox_candidates_sql("?1", "?2"));
    const std::string next = plan(detail::outbox_next_due_sql("?1"));
    INFO(claim);
    INFO(next);
    CHECK(claim.find("INDEX dtx_outbox_ready (ready_ms<?)") != std::string::npos);
    CHECK(claim.find("SCAN") == std::string::npos);
    CHECK(claim.find("TEMP B-TREE") == std::string::npos);
    CHECK(next.find("INDEX dtx_outbox_ready (ready_ms>?)") != std::string::npos);
    CHECK(next.find("SCAN") == std::string::npos);
}

TEST_CASE("outbox: a table of schema 1 is migrated in place and delivered in order") {
    temp_dir dir;
    const std::string path = dir.file("orders.db");
    const std::int64_t now = detail::to_ms(std::chrono::system_clock::now());
    {
        // As dtx wrote it before heads: a message in flight (its relay died; the lease ends in
        // 300 ms), a dead letter holding its key, pending messages behind both, a delivered one.
        sqlite::connection db(path);
        db.exec(R"sql(
            CREATE TABLE dtx_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
            INSERT INTO dtx_meta VALUES ('outbox_version', 1);
            CREATE TABLE dtx_outbox (
                seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, destination TEXT NOT NULL,
                msg_key TEXT NOT NULL, headers TEXT NOT NULL, payload TEXT NOT NULL,
                state INTEGER NOT NULL, attempts INTEGER NOT NULL, due_ms INTEGER NOT NULL,
                owner TEXT, lease_ms INTEGER, last_error TEXT, created_ms INTEGER NOT NULL,
                done_ms INTEGER);
            CREATE INDEX dtx_outbox_pending ON dtx_outbox (seq, msg_key, due_ms, lease_ms)
                WHERE state = 0;
            CREATE INDEX dtx_outbox_done ON dtx_outbox (state, done_ms) WHERE state <> 0;
        )sql");
        auto& row = db.prepare("INSERT INTO dtx_outbox (id, destination, msg_key, headers, "
                               "payload, state, attempts, due_ms, owner, lease_ms, last_error, "
                               "created_ms, done_ms) VALUES (?1, 'd', ?2, '{}', '{}', ?3, ?4, "
                               "?5, ?6, ?7, ?8, ?5, ?9)");
        const auto pending = [&](const char* id, const char* key) {
            row.bind(id, key, 0, 0, now - 1000, nullptr, nullptr, nullptr, nullptr).run();
        };
        row.bind("a1", "a", 0, 1, now - 2000, "dead-relay", now + 300, nullptr, nullptr).run();
        row.bind("b1", "b", 2, 1, now - 2000, nullptr, nullptr, "poison", now - 1500).run();
        pending("a2", "a");
        pending("c1", "c");
        pending("b2", "b");
        pending("e1", "");
        pending("a3", "a");
        row.bind("c0", "c", 1, 1, now - 3000, nullptr, nullptr, nullptr, now - 2500).run();
    }
    asio::io_context ioc;
    sqlite::outbox outbox({.path = path});
    check_schema_1_rows_delivered(outbox,
                                  [&](const char* where) { return count(ioc, outbox, where); });
    CHECK(run(ioc, outbox.run<std::int64_t>([](sqlite::connection& db) {
              auto& st = db.prepare("SELECT value FROM dtx_meta WHERE key = 'outbox_version'");
              st.step();
              return st.integer(0);
          })) == sqlite::outbox::schema_version);
}

TEST_CASE("inbox: each message is processed once, also when copies arrive together") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::inbox inbox({.path = dir.file("shipping.db")});
    run(ioc, inbox.run<int>([](sqlite::connection& db) {
        db.exec("CREATE TABLE parcels (order_id INTEGER)");
        return 0;
    }));
    int ran = 0;
    sqlite::inbox_handler ship = [&](sqlite::connection& db, const envelope& e) {
        ++ran;
        db.prepare("INSERT INTO parcels VALUES (?)").bind(e.payload.at("order").get<int>()).run();
        return success();
    };
    envelope e{.id = make_message_id(), .destination = "d", .payload = {{"order", 7}}};
    CHECK(run(ioc, inbox.consume("shipping", e, ship)).status == consume_status::processed);
    CHECK(run(ioc, inbox.consume("shipping", e, ship)).status == consume_status::duplicate);
    CHECK(run(ioc, inbox.consume("billing", e, ship)).status == consume_status::processed);
    CHECK(ran == 2);

    SUBCASE("copies at once, on one inbox") {
        envelope f{.id = make_message_id(), .destination = "d", .payload = {{"order", 8}}};
        std::vector<consume_status> got;
        for (int i = 0; i < 4; ++i)
            asio::co_spawn(ioc, inbox.consume("shipping", f, ship),
                           [&](std::exception_ptr, consume_result r) { got.push_back(r.status); });
        ioc.restart();
        ioc.run();
        REQUIRE(got.size() == 4);
        CHECK(std::count(got.begin(), got.end(), consume_status::processed) == 1);
        CHECK(std::count(got.begin(), got.end(), consume_status::duplicate) == 3);
        CHECK(ran == 3);
    }
    SUBCASE("copies at once, from two processes' connections") {
        sqlite::inbox other({.path = dir.file("shipping.db")});
        envelope f{.id = make_message_id(), .destination = "d", .payload = {{"order", 9}}};
        std::atomic<int> processed{0}, duplicates{0};
        auto consume_on = [&](sqlite::inbox& in) {
            asio::io_context own;
            sqlite::inbox_handler h = [](sqlite::connection& db, const envelope& m) {
                db.prepare("INSERT INTO parcels VALUES (?)")
                    .bind(m.payload.at("order").get<int>())
                    .run();
                return success();
            };
            auto r = run(own, in.consume("shipping", f, h));
            (r.status == consume_status::processed ? processed : duplicates) += 1;
        };
        std::thread t1([&] { consume_on(inbox); });
        std::thread t2([&] { consume_on(other); });
        t1.join();
        t2.join();
        CHECK(processed == 1);
        CHECK(duplicates == 1);
        CHECK(run(ioc, inbox.run<std::int64_t>([](sqlite::connection& db) {
                  auto& st = db.prepare("SELECT COUNT(*) FROM parcels WHERE order_id = 9");
                  st.step();
                  return st.integer(0);
              })) == 1);
    }
}

TEST_CASE("inbox: what cannot be processed is rejected, what fails now is retried") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::inbox inbox({.path = dir.file("shipping.db")});
    run(ioc, inbox.run<int>([](sqlite::connection& db) {
        db.exec("CREATE TABLE parcels (order_id INTEGER)");
        return 0;
    }));
    auto parcels = [&] {
        return run(ioc, inbox.run<std::int64_t>([](sqlite::connection& db) {
            auto& st = db.prepare("SELECT COUNT(*) FROM parcels");
            st.step();
            return st.integer(0);
        }));
    };
    outcome answer = failure("no such order");
    bool throws = false;
    sqlite::inbox_handler h = [&](sqlite::connection& db, const envelope&) {
        db.exec("INSERT INTO parcels VALUES (1)");
        if (throws)
            throw std::runtime_error("database hiccup");
        return answer;
    };
    envelope e{.id = make_message_id(), .destination = "d"};
    consume_result r = run(ioc, inbox.consume("shipping", e, h));
    CHECK(r.status == consume_status::rejected);
    CHECK(r.error == "no such order");
    CHECK(r.delivery().status == delivery_status::rejected);
    answer = pending("later");
    CHECK(run(ioc, inbox.consume("shipping", e, h)).status == consume_status::retry);
    throws = true;
    r = run(ioc, inbox.consume("shipping", e, h));
    CHECK(r.status == consume_status::retry);
    CHECK(r.error == "database hiccup");
    CHECK(parcels() == 0); // every refusal rolled back the handler's changes and the inbox row
    throws = false;
    answer = success();
    CHECK(run(ioc, inbox.consume("shipping", e, h)).status == consume_status::processed);
    CHECK(parcels() == 1);

    std::string body = "{\"id\":7}";
    r = run(ioc, inbox.consume("shipping", std::string_view(body), h));
    CHECK(r.status == consume_status::rejected);
    CHECK(r.error.find("\"id\"") != std::string::npos);
    CHECK(run(ioc, inbox.consume("bad\nname", e, h)).status == consume_status::rejected);
    sqlite::inbox_handler odd = [](sqlite::connection&, const envelope&) -> outcome { throw 42; };
    CHECK(run(ioc, inbox.consume("shipping", envelope{.id = "m-odd", .destination = "d"}, odd))
              .status == consume_status::retry);
    CHECK(parcels() == 1);
}

TEST_CASE("inbox: rows older than the retention are cleaned") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::inbox inbox(
        {.path = dir.file("shipping.db"), .retention = 0ms, .cleanup_interval = 20ms});
    sqlite::inbox_handler h = [](sqlite::connection&, const envelope&) { return success(); };
    for (int i = 0; i < 3; ++i)
        run(ioc, inbox.consume("c", envelope{.id = make_message_id(), .destination = "d"}, h));
    CHECK(run(ioc, wait_until([&] { return inbox.cleaned() == 3; }, 5s)));
}

TEST_CASE("outbox to inbox: the relay delivers into an idempotent consumer") {
    temp_dir dir;
    sqlite::outbox outbox({.path = dir.file("orders.db")});
    sqlite::inbox inbox({.path = dir.file("shipping.db")});
    check_outbox_to_inbox<sqlite::inbox_handler>(outbox, inbox);
}
