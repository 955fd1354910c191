// The SQLite barrier: each anomaly forced with a deterministic interleaving, rollback of refused
// handlers, work outside the database, cleanup, and a transaction over journal and barriers.
#include <dtx/coordinator.hpp>
#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/journal.hpp>

#include <doctest/doctest.h>

#include <filesystem>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

struct temp_db {
    std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("dtx-barrier-" + make_gid());
    temp_db() { std::filesystem::create_directories(dir); }
    ~temp_db() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::string file(const char* name) const { return (dir / name).string(); }
};

/// A stock participant: its table and its handlers, counting how often each handler really ran.
struct stock {
    sqlite::barrier barrier;
    int tries = 0, confirms = 0, cancels = 0;
    bool refuse_try = false;
    bool throw_in_try = false;

    explicit stock(const std::string& path)
        : barrier(sqlite::barrier_options{.path = path}) {}

    void create(asio::io_context& ioc, int available) {
        run(ioc, barrier.run<int>([available](sqlite::connection& db) {
            db.exec("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER, "
                    "reserved INTEGER, sold INTEGER)");
            db.prepare("INSERT OR REPLACE INTO stock VALUES ('apple', ?, 0, 0)")
                .bind(available)
                .run();
            return 0;
        }));
    }

    sqlite::tcc_handlers handlers() {
        return {
            .on_try = sqlite::typed_handler<qty_payload>(
                [this](sqlite::connection& db, const branch_request&, qty_payload p) {
                    ++tries;
                    db.prepare(
                          "UPDATE stock SET available = available - ?1, reserved = reserved + ?1 "
                          "WHERE sku = 'apple' AND available >= ?1")
                        .bind(p.qty)
                        .run();
                    if (throw_in_try)
                        throw std::runtime_error("stock database hiccup");
                    if (refuse_try || db.changes() == 0)
                        return failure("not enough apples");
                    return success();
                }),
            .on_confirm = sqlite::typed_handler<qty_payload>(
                [this](sqlite::connection& db, const branch_request&, qty_payload p) {
                    ++confirms;
                    db.prepare("UPDATE stock SET reserved = reserved - ?1, sold = sold + ?1 WHERE "
                               "sku = 'apple'")
                        .bind(p.qty)
                        .run();
                    return success();
                }),
            .on_cancel = sqlite::typed_handler<qty_payload>(
                [this](sqlite::connection& db, const branch_request&, qty_payload p) {
                    ++cancels;
                    db.prepare("UPDATE stock SET reserved = reserved - ?1, available = available + "
                               "?1 WHERE sku = 'apple'")
                        .bind(p.qty)
                        .run();
                    return success();
                }),
        };
    }

    struct row {
        int available, reserved, sold;
        bool operator==(const row&) const = default;
    };
    row read(asio::io_context& ioc) {
        return run(ioc, barrier.run<row>([](sqlite::connection& db) {
            auto& st =
                db.prepare("SELECT available, reserved, sold FROM stock WHERE sku = 'apple'");
            st.bind();
            st.step();
            return row{int(st.integer(0)), int(st.integer(1)), int(st.integer(2))};
        }));
    }
};

struct fixture {
    temp_db dir;
    asio::io_context ioc;
    stock s{dir.file("stock.db")};
    tcc_handlers h;
    nlohmann::json five = qty_payload{5};

    fixture() {
        s.create(ioc, 100);
        h = s.barrier.tcc(s.handlers());
    }
    outcome call(branch_op op, const char* gid = "g", const char* branch = "01") {
        branch_request r{gid, branch, op, five};
        const branch_handler& fn = op == branch_op::try_      ? h.on_try
                                   : op == branch_op::confirm ? h.on_confirm
                                                              : h.on_cancel;
        return run(ioc, fn(r));
    }
};

} // namespace

TEST_CASE("barrier: duplicate try and confirm run their handlers once") {
    fixture f;
    CHECK(f.call(branch_op::try_).is_success());
    CHECK(f.call(branch_op::try_).is_success());
    CHECK(f.call(branch_op::confirm).is_success());
    CHECK(f.call(branch_op::confirm).is_success());
    CHECK(f.call(branch_op::try_).is_success()); // a very late duplicate try changes nothing either
    CHECK(f.s.tries == 1);
    CHECK(f.s.confirms == 1);
    CHECK(f.s.read(f.ioc) == stock::row{95, 0, 5});
}

TEST_CASE("barrier: cancel before try is a null compensation, and the late try is refused") {
    fixture f;
    CHECK(f.call(branch_op::cancel).is_success());
    CHECK(f.s.cancels == 0);
    outcome late = f.call(branch_op::try_);
    CHECK(late.is_failure());
    CHECK(late.message().find("cancelled before") != std::string::npos);
    CHECK(f.s.tries == 0);
    CHECK(f.call(branch_op::cancel).is_success()); // and a duplicate cancel stays a no-op
    CHECK(f.s.cancels == 0);
    CHECK(f.s.read(f.ioc) == stock::row{100, 0, 0});
}

TEST_CASE("barrier: try then duplicate cancels undo the reservation exactly once") {
    fixture f;
    CHECK(f.call(branch_op::try_).is_success());
    CHECK(f.s.read(f.ioc) == stock::row{95, 5, 0});
    CHECK(f.call(branch_op::cancel).is_success());
    CHECK(f.call(branch_op::cancel).is_success());
    CHECK(f.s.cancels == 1);
    CHECK(f.s.read(f.ioc) == stock::row{100, 0, 0});
    // A duplicate of the try that did run repeats its answer and changes nothing, even now.
    CHECK(f.call(branch_op::try_).is_success());
    CHECK(f.s.tries == 1);
    CHECK(f.s.read(f.ioc) == stock::row{100, 0, 0});
}

TEST_CASE("barrier: concurrent duplicate cancels (and tries) run the handler once") {
    fixture f;
    CHECK(f.call(branch_op::try_).is_success());
    int answered = 0;
    std::vector<branch_request> reqs(8, branch_request{"g", "01", branch_op::cancel, f.five});
    for (auto& r : reqs)
        asio::co_spawn(
            f.ioc,
            [&, &r = r]() -> asio::awaitable<void> {
                outcome o = co_await f.h.on_cancel(r);
                answered += o.is_success();
            },
            asio::detached);
    f.ioc.restart();
    f.ioc.run();
    CHECK(answered == 8);
    CHECK(f.s.cancels == 1);
    CHECK(f.s.read(f.ioc) == stock::row{100, 0, 0});

    // Concurrent first tries of another branch: one reservation.
    int tried = 0;
    std::vector<branch_request> tries(6, branch_request{"g2", "01", branch_op::try_, f.five});
    for (auto& r : tries)
        asio::co_spawn(
            f.ioc,
            [&, &r = r]() -> asio::awaitable<void> {
                outcome o = co_await f.h.on_try(r);
                tried += o.is_success();
            },
            asio::detached);
    f.ioc.restart();
    f.ioc.run();
    CHECK(tried == 6);
    CHECK(f.s.tries == 2);
    CHECK(f.s.read(f.ioc) == stock::row{95, 5, 0});
}

TEST_CASE("barrier: a refused or throwing try is rolled back with its row, so it can run again") {
    fixture f;
    f.s.refuse_try = true;
    CHECK(f.call(branch_op::try_).is_failure());
    CHECK(f.s.read(f.ioc) == stock::row{100, 0, 0}); // the UPDATE was rolled back
    f.s.refuse_try = false;
    f.s.throw_in_try = true;
    CHECK_THROWS_WITH_AS(f.call(branch_op::try_), "stock database hiccup", std::runtime_error);
    CHECK(f.s.read(f.ioc) == stock::row{100, 0, 0});
    f.s.throw_in_try = false;
    CHECK(f.call(branch_op::try_).is_success());
    CHECK(f.s.tries == 3);
    CHECK(f.s.read(f.ioc) == stock::row{95, 5, 0});

    // A cancel after a refused try (in another transaction) is a null compensation: nothing to
    // undo.
    f.s.refuse_try = true;
    CHECK(f.call(branch_op::try_, "h").is_failure());
    CHECK(f.call(branch_op::cancel, "h").is_success());
    CHECK(f.s.cancels == 0);
    CHECK(f.s.read(f.ioc) == stock::row{95, 5, 0});
}

TEST_CASE("barrier: a payload that does not convert is refused without touching the tables") {
    fixture f;
    nlohmann::json bad = {{"qty", "five"}};
    branch_request r{"g", "01", branch_op::try_, bad};
    outcome o = run(f.ioc, f.h.on_try(r));
    CHECK(o.is_failure());
    CHECK(o.message().find("gid g branch 01") != std::string::npos);
    CHECK(f.s.tries == 0);
}

TEST_CASE("barrier: sagas: duplicate action, compensate before action, action after compensate") {
    temp_db dir;
    asio::io_context ioc;
    sqlite::barrier b({.path = dir.file("points.db")});
    run(ioc, b.run<int>([](sqlite::connection& db) {
        db.exec("CREATE TABLE points (total INTEGER); INSERT INTO points VALUES (0)");
        return 0;
    }));
    int actions = 0, compensations = 0;
    saga_handlers h = b.saga({
        .on_action =
            [&](sqlite::connection& db, const branch_request&) {
                ++actions;
                db.exec("UPDATE points SET total = total + 10");
                return success();
            },
        .on_compensate =
            [&](sqlite::connection& db, const branch_request&) {
                ++compensations;
                db.exec("UPDATE points SET total = total - 10");
                return success();
            },
    });
    nlohmann::json p = nullptr;
    auto call = [&](branch_op op, const char* gid) {
        branch_request r{gid, "01", op, p};
        return run(ioc, op == branch_op::action ? h.on_action(r) : h.on_compensate(r));
    };
    auto total = [&] {
        return run(ioc, b.run<int>([](sqlite::connection& db) {
            auto& st = db.prepare("SELECT total FROM points");
            st.bind();
            st.step();
            return int(st.integer(0));
        }));
    };
    CHECK(call(branch_op::action, "s1").is_success());
    CHECK(call(branch_op::action, "s1").is_success());
    CHECK(total() == 10);
    CHECK(call(branch_op::compensate, "s1").is_success());
    CHECK(call(branch_op::compensate, "s1").is_success());
    CHECK(total() == 0);
    CHECK(call(branch_op::compensate, "s2").is_success()); // before its action
    CHECK(call(branch_op::action, "s2").is_failure());     // the action arrives late
    CHECK(total() == 0);
    CHECK(actions == 1);
    CHECK(compensations == 1);
}

TEST_CASE("barrier: work outside the database is guarded too") {
    temp_db dir;
    asio::io_context ioc;
    sqlite::barrier b({.path = dir.file("ext.db")});
    int sent = 0;
    outcome next = success();
    auto work = [&]() -> asio::awaitable<outcome> {
        ++sent;
        co_return next;
    };
    nlohmann::json p = nullptr;
    auto call = [&](branch_op op, const char* gid) {
        branch_request r{gid, "01", op, p};
        return run(ioc, b.guard_external(r, work));
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

TEST_CASE("barrier: old rows are cleaned in batches") {
    temp_db dir;
    asio::io_context ioc;
    sqlite::barrier b({.path = dir.file("c.db"),
                       .retention = std::chrono::milliseconds(0),
                       .cleanup_batch = 3,
                       .cleanup_interval = std::chrono::milliseconds(1)});
    auto h =
        b.tcc({.on_try = [](sqlite::connection&, const branch_request&) { return success(); },
               .on_confirm = [](sqlite::connection&, const branch_request&) { return success(); },
               .on_cancel = [](sqlite::connection&, const branch_request&) { return success(); }});
    nlohmann::json p = nullptr;
    std::vector<std::string> gids;
    for (int i = 0; i < 10; ++i)
        gids.push_back("c" + std::to_string(i));
    for (auto& g : gids) {
        branch_request r{g, "01", branch_op::try_, p};
        CHECK(run(ioc, h.on_try(r)).is_success());
    }
    for (int i = 0; i < 3000 && b.stats().cleaned < 10; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(b.stats().cleaned == 10);
}

TEST_CASE("barrier: a newer barrier schema is refused") {
    temp_db dir;
    const auto path = dir.file("v.db");
    { sqlite::barrier b({.path = path}); }
    {
        sqlite::connection c(path);
        c.exec("UPDATE dtx_meta SET value = 9 WHERE key = 'barrier_version'");
    }
    try {
        sqlite::barrier b({.path = path});
        FAIL("opened a newer barrier");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::database_version); // the participant's database, not a journal
        CHECK(std::string(e.what()).find("barrier schema version 9") != std::string::npos);
    }
}

TEST_CASE("barrier: a participant's failing SQL is a database error, not the journal's") {
    temp_db dir;
    asio::io_context ioc;
    sqlite::barrier b({.path = dir.file("sql.db")});
    auto h = b.tcc({.on_try =
                        [](sqlite::connection& db, const branch_request&) {
                            db.exec("UPDATE no_such_table SET x = 1");
                            return success();
                        },
                    .on_confirm = {},
                    .on_cancel = {}});
    nlohmann::json p = nullptr;
    branch_request r{"s1", "01", branch_op::try_, p};
    try {
        run(ioc, h.on_try(r));
        FAIL("the statement ran");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::database_failed);
        CHECK(std::string(e.what()).find("no_such_table") != std::string::npos);
    }
}

TEST_CASE("barrier: handlers see the request's trace context") {
    fixture f;
    std::string seen_try, seen_external;
    auto h = f.s.barrier.tcc({.on_try =
                                  [&](sqlite::connection&, const branch_request& r) {
                                      seen_try = r.traceparent;
                                      return success();
                                  },
                              .on_confirm = {},
                              .on_cancel = {}});
    const std::string traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    branch_request r{"t1", "01", branch_op::try_, f.five, traceparent};
    CHECK(run(f.ioc, h.on_try(r)).is_success());
    CHECK(seen_try == traceparent);
}

TEST_CASE("TCC over a SQLite journal and SQLite barriers: confirmed, refused, and recovered") {
    temp_db dir;
    asio::io_context ioc;
    sqlite::journal journal({.path = dir.file("journal.db")});
    stock apples(dir.file("apples.db")), pears(dir.file("pears.db"));
    apples.create(ioc, 10);
    pears.create(ioc, 10);
    participant_registry reg;
    reg.add_tcc("apples", apples.barrier.tcc(apples.handlers()));
    reg.add_tcc("pears", pears.barrier.tcc(pears.handlers()));
    coordinator coord(ioc.get_executor(), journal, reg, fast_options());

    auto order = [&](int a, int p) {
        return run(ioc, coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("apples", qty_payload{a});
            co_await tx.add_branch("pears", qty_payload{p});
        }));
    };
    CHECK(order(3, 4).status == tx_status::confirmed);
    tx_result refused = order(2, 50);
    CHECK(refused.status == tx_status::cancelled);
    CHECK(refused.reason == errc::branch_failed);
    CHECK(apples.read(ioc) == stock::row{7, 0, 3});
    CHECK(pears.read(ioc) == stock::row{6, 0, 4});
    CHECK(run(ioc, journal.find(refused.gid))->status == tx_status::cancelled);
}
