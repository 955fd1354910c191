// 2-phase messages: prepare, the local transaction with its barrier row, submit and delivery;
// aborts; the check-back asked live and by recovery; a local commit racing the check-back on
// SQLite and PostgreSQL; the check-back and msg actions over HTTP, both ways.
#include <dtx/coordinator.hpp>
#include <dtx/http.hpp>
#include <dtx/memory_journal.hpp>
#include <dtx/postgres/barrier.hpp>
#include <dtx/sqlite/barrier.hpp>
#include <dtx/two_phase_message.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <stdexcept>
#include <thread>

#include "support/http_server.hpp"
#include "support/model.hpp"
#include "support/pg_server.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

/// The service sending messages (table orders, and the check-back) and the receiving one (table
/// deliveries behind a saga barrier), each in a SQLite file of its own.
struct service {
    std::filesystem::path dir = std::filesystem::temp_directory_path() / ("dtx-msg-" + make_gid());
    asio::io_context ioc;
    std::optional<sqlite::barrier> orders, stock;
    memory_journal journal{memory_journal::options{.keep_ended = true}};
    participant_registry registry;
    int flaky_failures = 0; // the "flaky" participant answers failure this many times first
    int flaky_calls = 0;

    service() {
        std::filesystem::create_directories(dir);
        orders.emplace(sqlite::barrier_options{.path = (dir / "orders.db").string()});
        stock.emplace(sqlite::barrier_options{.path = (dir / "stock.db").string()});
        auto schema = [](sqlite::connection& db) {
            db.exec("CREATE TABLE IF NOT EXISTS orders (gid TEXT PRIMARY KEY)");
            db.exec("CREATE TABLE IF NOT EXISTS deliveries (gid TEXT, branch TEXT, "
                    "PRIMARY KEY (gid, branch))"); // a second delivery would throw
            return 0;
        };
        run(ioc, orders->run<int>(schema));
        run(ioc, stock->run<int>(schema));
        registry.add_check_back("orders", orders->check_back());
        registry.add_saga("stock",
                          stock->saga({.on_action =
                                           [](sqlite::connection& db, const branch_request& r) {
                                               db.prepare("INSERT INTO deliveries VALUES (?, ?)")
                                                   .bind(r.gid, r.branch_id)
                                                   .run();
                                               return success();
                                           },
                                       .on_compensate =
                                           [](sqlite::connection&, const branch_request&) {
                                               return failure("a message is never compensated");
                                           }}));
        registry.add_saga("flaky",
                          {.on_action = [this](const branch_request&) -> asio::awaitable<outcome> {
                               ++flaky_calls;
                               if (flaky_failures-- > 0)
                                   co_return failure("not now");
                               co_return success();
                           },
                           .on_compensate = [](const branch_request&) -> asio::awaitable<outcome> {
                               co_return failure("never");
                           }});
    }
    ~service() {
        orders.reset();
        stock.reset();
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    /// The local transaction: the order row, with the message's barrier row.
    message_local_transaction commit_order(bool refuse = false) {
        return [this, refuse](std::string gid) -> asio::awaitable<outcome> {
            auto change = [gid, refuse](sqlite::connection& db) {
                db.prepare("INSERT INTO orders VALUES (?)").bind(gid).run();
                return refuse ? failure("no such customer") : success();
            };
            co_return co_await orders->message_local(gid, change);
        };
    }

    int count(sqlite::barrier& b, const char* table, const std::string& gid) {
        return run(ioc, b.run<int>([table, gid](sqlite::connection& db) {
            auto& st = db.prepare("SELECT count(*) FROM " + std::string(table) + " WHERE gid = ?");
            st.bind(gid);
            st.step();
            return static_cast<int>(st.integer(0));
        }));
    }
    int delivered(const std::string& gid) { return count(*stock, "deliveries", gid); }
    int ordered(const std::string& gid) { return count(*orders, "orders", gid); }

    two_phase_message message(std::vector<std::string> to, std::string check_back = "orders") {
        two_phase_message m;
        m.check_back = std::move(check_back);
        for (auto& p : to)
            m.branches.push_back({std::move(p), qty_payload{1}});
        return m;
    }

    /// A message prepared in the journal by a process that died before submitting it.
    void prepared(const std::string& gid, std::string check_back = "orders",
                  std::string to = "stock") {
        std::vector<branch_record> b{branch_record{"00", std::move(check_back), {}},
                                     branch_record{"01", std::move(to), qty_payload{1}}};
        const journal_write w{
            .gid = gid,
            .begin = begin_transaction{tx_kind::msg, wall_clock::now() - std::chrono::seconds(1),
                                       /*forward=*/true},
            .new_branches = b};
        CHECK(run(ioc, journal.write(w, durability::sync)));
    }
};

} // namespace

TEST_CASE("2-phase message: committed locally, then submitted and delivered once per branch") {
    service s;
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    tx_result r =
        run(s.ioc, coord.prepare_and_submit(s.message({"stock", "stock"}), s.commit_order()));
    CHECK(r.status == tx_status::confirmed);
    CHECK(s.ordered(r.gid) == 1);
    CHECK(s.delivered(r.gid) == 2); // branches 01 and 02
    auto rec = s.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->kind == tx_kind::msg);
    CHECK(rec->status == tx_status::confirmed);
    REQUIRE(rec->branches.size() == 3);
    CHECK(rec->branches[0].branch_id == "00");
    CHECK(rec->branches[0].participant == "orders");
    // Asked afterwards, the check-back confirms the commit.
    CHECK(run(s.ioc, s.orders->query_prepared(r.gid)).is_success());
}

TEST_CASE("2-phase message: a local transaction answering failure aborts it, nothing delivered") {
    service s;
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    tx_result r = run(s.ioc, coord.prepare_and_submit(s.message({"stock"}), s.commit_order(true)));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_failed);
    CHECK(r.message.find("no such customer") != std::string::npos);
    CHECK(s.ordered(r.gid) == 0); // rolled back with its barrier row
    CHECK(s.delivered(r.gid) == 0);
    CHECK(s.journal.get(r.gid)->status == tx_status::cancelled);
}

TEST_CASE("2-phase message: a branch answering failure is retried until it succeeds") {
    service s;
    s.flaky_failures = 3;
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    tx_result r =
        run(s.ioc, coord.prepare_and_submit(s.message({"flaky", "stock"}), s.commit_order()));
    CHECK(r.status == tx_status::confirmed);
    CHECK(s.flaky_calls == 4);
    CHECK(s.delivered(r.gid) == 1);
}

TEST_CASE("2-phase message: a local transaction that throws is settled by the check-back") {
    service s;
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    SUBCASE("it threw before committing: aborted") {
        message_local_transaction local = [](std::string) -> asio::awaitable<outcome> {
            throw std::runtime_error("connection lost");
            co_return success();
        };
        tx_result r = run(s.ioc, coord.prepare_and_submit(s.message({"stock"}), local));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.message.find("connection lost") != std::string::npos);
        CHECK(s.delivered(r.gid) == 0);
        // The late commit of that transaction is refused by the row the check-back wrote.
        const outcome late = run(s.ioc, s.commit_order()(r.gid));
        CHECK(late.is_failure());
        CHECK(s.ordered(r.gid) == 0);
    }
    SUBCASE("it threw after committing: delivered") {
        auto commit = s.commit_order();
        message_local_transaction local = [commit](std::string gid) -> asio::awaitable<outcome> {
            const outcome o = co_await commit(gid);
            if (o.is_success())
                throw std::runtime_error("lost the answer");
            co_return o;
        };
        tx_result r = run(s.ioc, coord.prepare_and_submit(s.message({"stock"}), local));
        CHECK(r.status == tx_status::confirmed);
        CHECK(s.ordered(r.gid) == 1);
        CHECK(s.delivered(r.gid) == 1);
    }
}

TEST_CASE("2-phase message: a check-back that is not registered as one is refused up front") {
    service s;
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    tx_result r =
        run(s.ioc, coord.prepare_and_submit(s.message({"stock"}, "stock"), s.commit_order()));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::wrong_participant_kind);
    CHECK_FALSE(s.journal.get(r.gid));
    CHECK(s.ordered(r.gid) == 0); // the local transaction never ran
}

TEST_CASE("2-phase message recovery: the check-back decides a message left prepared") {
    service s;
    s.prepared("committed");
    REQUIRE(run(s.ioc, s.commit_order()("committed")).is_success());
    s.prepared("never");
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    recovery_report rep = run(s.ioc, coord.recover());
    CHECK(rep.finished == 2);
    CHECK(s.journal.get("committed")->status == tx_status::confirmed);
    CHECK(s.delivered("committed") == 1);
    CHECK(s.journal.get("never")->status == tx_status::cancelled);
    CHECK(s.delivered("never") == 0);
    // The local transaction of "never", late, now fails on the check-back's barrier row.
    const outcome late = run(s.ioc, s.commit_order()("never"));
    CHECK(late.is_failure());
    CHECK(s.ordered("never") == 0);
    // A submitted message is delivered forward.
    s.prepared("submitted");
    const journal_write submit{.gid = "submitted",
                               .status = status_change{tx_status::trying, tx_status::confirming}};
    CHECK(run(s.ioc, s.journal.write(submit, durability::sync)));
    CHECK(run(s.ioc, coord.recover()).finished == 1);
    CHECK(s.journal.get("submitted")->status == tx_status::confirmed);
    CHECK(s.delivered("submitted") == 1);
}

TEST_CASE("2-phase message recovery: a check-back without an answer keeps it prepared") {
    service s;
    int asked = 0;
    s.registry.add_check_back("unsure", [&](const branch_request& r) -> asio::awaitable<outcome> {
        if (++asked <= 2)
            co_return pending("ask later");
        co_return co_await s.orders->query_prepared(std::string(r.gid));
    });
    s.prepared("m", "unsure");
    REQUIRE(run(s.ioc, s.commit_order()("m")).is_success());
    coordinator coord(s.ioc.get_executor(), s.journal, s.registry, fast_options());
    for (int pass = 1; pass <= 2; ++pass) {
        recovery_report rep = run(s.ioc, coord.recover());
        CHECK(rep.unfinished == 1);
        CHECK(s.journal.get("m")->status == tx_status::trying);
        CHECK(s.delivered("m") == 0);
    }
    CHECK(run(s.ioc, coord.recover()).finished == 1);
    CHECK(asked == 3);
    CHECK(s.journal.get("m")->status == tx_status::confirmed);
    CHECK(s.delivered("m") == 1);
}

namespace {

/// A local transaction held open (after writing its rows) until released, on its database's
/// thread, while a check-back runs on another connection: the two must agree.
template <class Barrier, class Db>
void race_check_back(Barrier& local_side, Barrier& check_side, const std::string& gid, bool refuse,
                     const char* insert) {
    std::promise<void> inside, release;
    auto entered = inside.get_future();
    auto go = release.get_future().share();
    auto change = [&, go](Db& db) {
        db.exec((std::string(insert) + "'" + gid + "')").c_str());
        inside.set_value();
        go.wait();
        return refuse ? failure("refused") : success();
    };
    std::promise<outcome> local_result;
    std::thread local([&] {
        asio::io_context io;
        local_result.set_value(run(io, local_side.message_local(gid, change)));
    });
    entered.wait();
    std::promise<outcome> check_result;
    std::thread check([&] {
        asio::io_context io;
        check_result.set_value(run(io, check_side.query_prepared(gid)));
    });
    // Not a timing assertion: the check-back is usually waiting by now, which is the race.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release.set_value();
    local.join();
    check.join();
    const outcome l = local_result.get_future().get();
    const outcome c = check_result.get_future().get();
    CHECK(l.is_success() == !refuse);
    CHECK(c.is_success() == l.is_success()); // never committed-and-refused nor rolled-back-and-sent
}

} // namespace

TEST_CASE("2-phase message: a local commit racing the check-back ends one way (SQLite)") {
    service s;
    // Another barrier on the same file stands for another process answering the check-back: it
    // waits for the write lock the local transaction holds.
    sqlite::barrier other(sqlite::barrier_options{.path = (s.dir / "orders.db").string()});
    for (bool refuse : {false, true}) {
        const std::string gid = refuse ? "rolled-back" : "committed";
        race_check_back<sqlite::barrier, sqlite::connection>(*s.orders, other, gid, refuse,
                                                             "INSERT INTO orders VALUES (");
        CHECK(s.ordered(gid) == (refuse ? 0 : 1));
    }
    // On the same barrier the check-back queues behind the local transaction.
    race_check_back<sqlite::barrier, sqlite::connection>(*s.orders, *s.orders, "same", false,
                                                         "INSERT INTO orders VALUES (");
}

TEST_CASE("2-phase message: a local commit racing the check-back ends one way (PostgreSQL)") {
    const std::string conninfo = fresh_pg_database();
    postgres::barrier orders({.conninfo = conninfo});
    asio::io_context ioc;
    run(ioc, orders.run<int>([](postgres::connection& db) {
        db.exec("CREATE TABLE orders (gid text PRIMARY KEY)");
        return 0;
    }));
    for (bool refuse : {false, true}) {
        const std::string gid = refuse ? "rolled-back" : "committed";
        // The check-back's insert waits on the unique key of the uncommitted row.
        race_check_back<postgres::barrier, postgres::connection>(orders, orders, gid, refuse,
                                                                 "INSERT INTO orders VALUES (");
        const int rows = run(ioc, orders.run<int>([gid](postgres::connection& db) {
            return static_cast<int>(db.exec("SELECT 1 FROM orders WHERE gid = $1", {gid}).rows());
        }));
        CHECK(rows == (refuse ? 0 : 1));
    }
    // After the check-back answered failure, the local transaction is refused.
    CHECK(run(ioc, orders.query_prepared("late")).is_failure());
    auto change = [](postgres::connection& db) {
        db.exec("INSERT INTO orders VALUES ('late')");
        return success();
    };
    CHECK(run(ioc, orders.message_local("late", change)).is_failure());
    CHECK(run(ioc, orders.query_prepared("late")).is_failure());
}

TEST_CASE("2-phase message over HTTP: DTM's check-back GET and msg actions, and bad input") {
    service s;
    /// The server on a thread of its own, stopped however the test ends.
    struct threaded_server {
        asio::io_context io;
        http::server srv;
        std::thread thread;
        explicit threaded_server(const participant_registry& r)
            : srv(io, r, http::server_options{}) {
            srv.start();
            thread = std::thread([this] {
                auto work = asio::make_work_guard(io);
                io.run();
            });
        }
        ~threaded_server() {
            io.stop();
            thread.join();
        }
    } server(s.registry);
    http::server& srv = server.srv;
    {
        REQUIRE(run(s.ioc, s.commit_order()("g1")).is_success());
        raw_client c(srv.port());
        // As DTM sends it: sorted parameters, GET, no body.
        answer a = c.exchange(get("/dtx/orders?branch_id=00&gid=g1&op=msg&trans_type=msg"));
        CHECK(a.result_int() == 200);
        CHECK(a.body().find("SUCCESS") != std::string::npos);
        a = c.exchange(get("/dtx/orders?branch_id=00&gid=g2&op=msg&trans_type=msg"));
        CHECK(a.result_int() == 409); // never committed: now it never will
        CHECK(a.body().find("FAILURE") != std::string::npos);
        CHECK(run(s.ioc, s.commit_order()("g2")).is_failure());
        a = c.exchange(call("stock", "branch_id=01&gid=g1&op=action&trans_type=msg"));
        CHECK(a.result_int() == 200);
        a = c.exchange(call("stock", "branch_id=01&gid=g1&op=action&trans_type=msg"));
        CHECK(a.result_int() == 200); // a repeat, answered by the barrier
        CHECK(s.delivered("g1") == 1);

        const auto refused = [&](const std::string& request, unsigned status, const char* code) {
            const answer r = c.exchange(request);
            CHECK_MESSAGE(r.result_int() == status, request);
            CHECK_MESSAGE(error_of(r) == code, request);
        };
        refused(get("/dtx/orders?branch_id=00&op=msg&trans_type=msg"), 400, "missing_parameter");
        refused(get("/dtx/orders?branch_id=00&gid=g1&op=try&trans_type=msg"), 400, "op_mismatch");
        refused(get("/dtx/orders?branch_id=00&gid=g1&op=msg&trans_type=saga"), 400, "op_mismatch");
        refused(get("/dtx/orders?branch_id=00&gid=g1&op=message&trans_type=msg"), 400,
                "invalid_op");
        refused(post("/dtx/orders?branch_id=00&gid=g1&op=msg&trans_type=msg", "{}"), 400,
                "unexpected_body");
        refused(get("/dtx/orders?branch_id=01&gid=g1&op=action&trans_type=msg"), 400,
                "wrong_participant_kind"); // a check-back answers op=msg only
        refused(get("/dtx/stock?branch_id=00&gid=g1&op=msg&trans_type=msg"), 400,
                "wrong_participant_kind"); // a saga participant is no check-back
        // Still serving.
        a = c.exchange(get("/dtx/orders?branch_id=00&gid=g1&op=msg&trans_type=msg"));
        CHECK(a.result_int() == 200);
    }
}

TEST_CASE("2-phase message over HTTP: the coordinator calls a remote check-back and msg actions") {
    service s;
    http::server srv(s.ioc, s.registry, http::server_options{});
    srv.start();
    const std::string base = "http://127.0.0.1:" + std::to_string(srv.port()) + "/dtx/";
    participant_registry urls;
    http::client client(s.ioc.get_executor());
    urls.set_resolver(http::url_resolver(client));
    coordinator coord(s.ioc.get_executor(), s.journal, urls, fast_options());

    // Live: the local transaction throws after committing, so the coordinator asks the check-back.
    auto commit = s.commit_order();
    message_local_transaction local = [commit](std::string gid) -> asio::awaitable<outcome> {
        co_await commit(gid);
        throw std::runtime_error("lost the answer");
    };
    two_phase_message m = s.message({base + "stock"}, base + "orders");
    tx_result r = run(s.ioc, coord.prepare_and_submit(std::move(m), local));
    CHECK(r.status == tx_status::confirmed);
    CHECK(s.delivered(r.gid) == 1);

    // Recovery: one committed, one not.
    s.prepared("remote-yes", base + "orders", base + "stock");
    REQUIRE(run(s.ioc, s.commit_order()("remote-yes")).is_success());
    s.prepared("remote-no", base + "orders", base + "stock");
    CHECK(run(s.ioc, coord.recover()).finished == 2);
    CHECK(s.journal.get("remote-yes")->status == tx_status::confirmed);
    CHECK(s.delivered("remote-yes") == 1);
    CHECK(s.journal.get("remote-no")->status == tx_status::cancelled);
    CHECK(s.delivered("remote-no") == 0);
}
