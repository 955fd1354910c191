// The PostgreSQL barrier: each anomaly forced deterministically, truly concurrent duplicates on
// several connections, and rollback of refused handlers.
#include <dtx/postgres/barrier.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "support/model.hpp"
#include "support/pg_server.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

struct account {
    postgres::barrier barrier;
    std::atomic<int> tries{0}, confirms{0}, cancels{0};
    tcc_handlers h;
    nlohmann::json ten = qty_payload{10};
    asio::io_context ioc;

    explicit account(std::string conninfo)
        : barrier({.conninfo = std::move(conninfo)}) {
        run(ioc, barrier.run<int>([](postgres::connection& db) {
            db.exec("CREATE TABLE account (id int PRIMARY KEY, balance int NOT NULL, frozen int "
                    "NOT NULL)");
            db.exec("INSERT INTO account VALUES (1, 100, 0)");
            return 0;
        }));
        h = barrier.tcc({
            .on_try = postgres::typed_handler<qty_payload>(
                [this](postgres::connection& db, const branch_request&, qty_payload p) {
                    ++tries;
                    auto r = db.exec(
                        "UPDATE account SET balance = balance - $1::int, frozen = frozen + $1::int "
                        "WHERE id = 1 AND balance >= $1::int",
                        {std::to_string(p.qty)});
                    return r.affected() ? success() : failure("insufficient funds");
                }),
            .on_confirm = postgres::typed_handler<qty_payload>(
                [this](postgres::connection& db, const branch_request&, qty_payload p) {
                    ++confirms;
                    db.exec("UPDATE account SET frozen = frozen - $1::int WHERE id = 1",
                            {std::to_string(p.qty)});
                    return success();
                }),
            .on_cancel = postgres::typed_handler<qty_payload>(
                [this](postgres::connection& db, const branch_request&, qty_payload p) {
                    ++cancels;
                    db.exec("UPDATE account SET frozen = frozen - $1::int, balance = balance + "
                            "$1::int WHERE id = 1",
                            {std::to_string(p.qty)});
                    return success();
                }),
        });
    }

    outcome call(branch_op op, const char* gid, nlohmann::json* payload = nullptr) {
        branch_request r{gid, "01", op, payload ? *payload : ten};
        const branch_handler& fn = op == branch_op::try_      ? h.on_try
                                   : op == branch_op::confirm ? h.on_confirm
                                                              : h.on_cancel;
        return run(ioc, fn(r));
    }

    std::pair<int, int> read() {
        return run(ioc, barrier.run<std::pair<int, int>>([](postgres::connection& db) {
            auto r = db.exec("SELECT balance, frozen FROM account WHERE id = 1");
            return std::pair{std::stoi(std::string(r.text(0, 0))),
                             std::stoi(std::string(r.text(0, 1)))};
        }));
    }
};

} // namespace

TEST_CASE("postgres barrier: duplicates, null compensation, hanging, refusals") {
    account a(fresh_pg_database());
    CHECK(a.call(branch_op::try_, "g1").is_success());
    CHECK(a.call(branch_op::try_, "g1").is_success());
    CHECK(a.call(branch_op::confirm, "g1").is_success());
    CHECK(a.call(branch_op::confirm, "g1").is_success());
    CHECK(a.tries == 1);
    CHECK(a.confirms == 1);
    CHECK(a.read() == std::pair{90, 0});

    CHECK(a.call(branch_op::cancel, "g2").is_success()); // before its try: nothing to undo
    CHECK(a.cancels == 0);
    CHECK(a.call(branch_op::try_, "g2").is_failure()); // the late try is refused
    CHECK(a.tries == 1);

    nlohmann::json too_much = qty_payload{1000};
    CHECK(
        a.call(branch_op::try_, "g3", &too_much).is_failure()); // refused: rolled back with its row
    CHECK(a.call(branch_op::cancel, "g3").is_success());        // so its cancel is a null one
    CHECK(a.cancels == 0);
    CHECK(a.read() == std::pair{90, 0});
}

TEST_CASE("postgres barrier: concurrent duplicate tries and cancels on several connections") {
    account a(fresh_pg_database());
    std::atomic<int> ok{0};
    std::vector<branch_request> tries(8, branch_request{"c1", "01", branch_op::try_, a.ten});
    for (auto& r : tries)
        asio::co_spawn(
            a.ioc,
            [&, &r = r]() -> asio::awaitable<void> {
                outcome o = co_await a.h.on_try(r);
                ok += o.is_success();
            },
            asio::detached);
    a.ioc.restart();
    a.ioc.run();
    CHECK(ok == 8);
    CHECK(a.tries == 1);
    CHECK(a.read() == std::pair{90, 10});

    ok = 0;
    std::vector<branch_request> cancels(8, branch_request{"c1", "01", branch_op::cancel, a.ten});
    for (auto& r : cancels)
        asio::co_spawn(
            a.ioc,
            [&, &r = r]() -> asio::awaitable<void> {
                outcome o = co_await a.h.on_cancel(r);
                ok += o.is_success();
            },
            asio::detached);
    a.ioc.restart();
    a.ioc.run();
    CHECK(ok == 8);
    CHECK(a.cancels == 1);
    CHECK(a.read() == std::pair{100, 0});
}

TEST_CASE("postgres barrier: handlers see the request's trace context") {
    account a(fresh_pg_database());
    std::string seen;
    auto h = a.barrier.tcc({.on_try =
                                [&](postgres::connection&, const branch_request& r) {
                                    seen = r.traceparent;
                                    return success();
                                },
                            .on_confirm = {},
                            .on_cancel = {}});
    const std::string traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    branch_request r{"t1", "01", branch_op::try_, a.ten, traceparent};
    CHECK(run(a.ioc, h.on_try(r)).is_success());
    CHECK(seen == traceparent);
}

TEST_CASE("postgres barrier: work outside the database is guarded too") {
    account a(fresh_pg_database());
    int sent = 0;
    outcome next = success();
    auto work = [&]() -> asio::awaitable<outcome> {
        ++sent;
        co_return next;
    };
    nlohmann::json p = nullptr;
    auto call = [&](branch_op op, const char* gid) {
        branch_request r{gid, "01", op, p};
        return run(a.ioc, a.barrier.guard_external(r, work));
    };

    CHECK(call(branch_op::try_, "e1").is_success());
    CHECK(call(branch_op::try_, "e1").is_success()); // duplicate: not sent again
    CHECK(sent == 1);

    CHECK(call(branch_op::cancel, "e2").is_success()); // cancel first: nothing sent
    CHECK(call(branch_op::try_, "e2").is_failure());   // late try: refused, nothing sent
    CHECK(sent == 1);

    next = failure("the bank says no");
    CHECK(call(branch_op::try_, "e3").is_failure());
    CHECK(call(branch_op::try_, "e3").is_failure()); // the refusal is remembered, not re-asked
    CHECK(sent == 2);
    next = success();
    CHECK(call(branch_op::cancel, "e3").is_success()); // the try began: the real cancel runs
    CHECK(sent == 3);

    next = pending();
    CHECK(call(branch_op::try_, "e4").is_pending());
    next = success();
    CHECK(call(branch_op::try_, "e4").is_success()); // pending is forgotten: asked again
    CHECK(sent == 5);
}

TEST_CASE("postgres barrier: stats, old rows cleaned, database errors, a newer schema refused") {
    const std::string conninfo = fresh_pg_database();
    {
        account a(conninfo);
        const auto before = a.barrier.stats();
        CHECK(a.call(branch_op::try_, "s1").is_success());
        nlohmann::json too_much = qty_payload{1000};
        CHECK(a.call(branch_op::try_, "s2", &too_much).is_failure()); // rolled back
        const auto after = a.barrier.stats();
        CHECK(after.commits - before.commits == 1);
        CHECK(after.operations - before.operations == 2);

        auto h = a.barrier.tcc({.on_try =
                                    [](postgres::connection& db, const branch_request&) {
                                        db.exec("UPDATE no_such_table SET x = 1");
                                        return success();
                                    },
                                .on_confirm = {},
                                .on_cancel = {}});
        branch_request r{"s3", "01", branch_op::try_, a.ten};
        try {
            run(a.ioc, h.on_try(r));
            FAIL("the statement ran");
        } catch (const dtx::error& e) {
            CHECK(e.code() == errc::database_failed);
        }
    }
    {
        postgres::barrier b({.conninfo = conninfo,
                             .retention = std::chrono::milliseconds(0),
                             .cleanup_batch = 1,
                             .cleanup_interval = std::chrono::milliseconds(1)});
        for (int i = 0; i < 3000 && b.stats().cleaned < 1; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        CHECK(b.stats().cleaned == 1); // s1's try row: the refused and failed ones rolled back
    }
    {
        postgres::connection c(conninfo);
        c.exec("UPDATE dtx_meta SET value = 9 WHERE key = 'barrier_version'");
    }
    try {
        postgres::barrier b({.conninfo = conninfo});
        FAIL("opened a newer barrier");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::database_version);
        CHECK(std::string(e.what()).find("schema version 9") != std::string::npos);
    }
}
