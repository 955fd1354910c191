// Recovery: a coordinator stopped after any journal write or branch call, at every such point,
// leaves a journal from which a fresh coordinator finishes every transaction correctly.
#include <dtx/coordinator.hpp>

#include <boost/asio/detached.hpp>

#include <doctest/doctest.h>

#include <random>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

/// What survives a crash: the journal and the participants' own state.
struct world {
    memory_journal journal{memory_journal::options{.keep_ended = true}};
    participant_registry registry;
    resource a{"a"}, b{"b"}, c{"c"};
    resource sa{"sa"}, sb{"sb"}, sc{"sc"};

    world() {
        registry.add_tcc("a", a.tcc());
        registry.add_tcc("b", b.tcc());
        registry.add_tcc("c", c.tcc());
        registry.add_saga("sa", sa.saga());
        registry.add_saga("sb", sb.saga());
        registry.add_saga("sc", sc.saga());
    }

    std::vector<const resource*> tcc_resources() const { return {&a, &b, &c}; }
    std::vector<const resource*> saga_resources() const { return {&sa, &sb, &sc}; }

    resource& by_name(const std::string& n) {
        for (resource* r : {&a, &b, &c, &sa, &sb, &sc})
            if (r->name() == n)
                return *r;
        throw std::logic_error("no resource " + n);
    }

    /// Every transaction in the journal ended, and the participants agree with how it ended.
    std::string check(bool sagas) {
        if (auto problem = check_invariants(sagas ? saga_resources() : tcc_resources(), sagas);
            !problem.empty())
            return problem;
        for (const auto& tx : journal.all()) {
            if (!is_final(tx.status))
                return "gid " + tx.gid + " is still " + std::string(to_string(tx.status));
            for (const auto& br : tx.branches) {
                auto st = by_name(br.participant).state(tx.gid, br.branch_id);
                const bool confirmed = st == resource::slot_state::confirmed;
                if (confirmed != (tx.status == tx_status::confirmed))
                    return "gid " + tx.gid + " ended " + std::string(to_string(tx.status)) +
                           " but branch " + br.branch_id + " is " +
                           (confirmed ? "confirmed" : "not confirmed");
            }
        }
        return {};
    }
};

using scenario = std::function<asio::awaitable<void>(coordinator&)>;

struct named_scenario {
    const char* name;
    bool saga;
    std::function<void(world&)> setup; // scripts for the participants
    scenario body;
};

script fail_on(std::string branch, branch_op op, unsigned first_n, act how) {
    return [=](std::string_view, std::string_view br, branch_op o, unsigned attempt) {
        return br == branch && o == op && attempt <= first_n ? how : act::ok;
    };
}

asio::awaitable<void> three_tcc(coordinator& coord) {
    co_await coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("a", qty_payload{1});
        co_await tx.add_branch("b", qty_payload{2});
        co_await tx.add_branch("c", qty_payload{3});
    });
}

asio::awaitable<void> three_saga(coordinator& coord) {
    co_await coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_step("sa", qty_payload{1});
        co_await tx.add_step("sb", qty_payload{2});
        co_await tx.add_step("sc", qty_payload{3});
    });
}

asio::awaitable<void> planned_saga(coordinator& coord) {
    std::vector<branch_spec> steps;
    steps.push_back({"sa", qty_payload{1}});
    steps.push_back({"sb", qty_payload{2}});
    steps.push_back({"sc", qty_payload{3}});
    co_await coord.saga(std::move(steps));
}

std::vector<named_scenario> scenarios() {
    auto none = [](world&) {};
    return {
        {"tcc: all tries succeed", false, none, three_tcc},
        {"tcc: try 2 fails", false,
         [](world& w) { w.b.set_script(fail_on("02", branch_op::try_, 99, act::fail)); },
         three_tcc},
        {"tcc: try 3 times out", false,
         [](world& w) { w.c.set_script(fail_on("03", branch_op::try_, 99, act::hang)); },
         three_tcc},
        {"tcc: confirm 1 fails twice", false,
         [](world& w) { w.a.set_script(fail_on("01", branch_op::confirm, 2, act::throw_error)); },
         three_tcc},
        {"tcc: cancel 1 fails twice after try 3 fails", false,
         [](world& w) {
             w.a.set_script(fail_on("01", branch_op::cancel, 2, act::throw_error));
             w.c.set_script(fail_on("03", branch_op::try_, 99, act::fail));
         },
         three_tcc},
        {"tcc: body throws", false, none,
         [](coordinator& coord) -> asio::awaitable<void> {
             co_await coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
                 co_await tx.add_branch("a", qty_payload{1});
                 co_await tx.add_branch("b", qty_payload{1});
                 throw std::runtime_error("body gives up");
             });
         }},
        {"tcc: concurrent tries", false, none,
         [](coordinator& coord) -> asio::awaitable<void> {
             co_await coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
                 std::vector<branch_spec> all;
                 all.push_back({"a", qty_payload{1}});
                 all.push_back({"b", qty_payload{1}});
                 all.push_back({"c", qty_payload{1}});
                 co_await tx.add_branches(std::move(all));
             });
         }},
        {"tcc: concurrent tries, one fails", false,
         [](world& w) { w.b.set_script(fail_on("02", branch_op::try_, 99, act::fail)); },
         [](coordinator& coord) -> asio::awaitable<void> {
             co_await coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
                 std::vector<branch_spec> all;
                 all.push_back({"a", qty_payload{1}});
                 all.push_back({"b", qty_payload{1}});
                 all.push_back({"c", qty_payload{1}});
                 co_await tx.add_branches(std::move(all));
             });
         }},
        {"saga: all actions succeed", true, none, three_saga},
        {"saga: action 3 fails", true,
         [](world& w) { w.sc.set_script(fail_on("03", branch_op::action, 99, act::fail)); },
         three_saga},
        {"saga: action 2 throws, compensation 1 fails twice", true,
         [](world& w) {
             w.sb.set_script(fail_on("02", branch_op::action, 99, act::throw_error));
             w.sa.set_script(fail_on("01", branch_op::compensate, 2, act::fail));
         },
         three_saga},
        {"planned saga: all actions succeed", true, none, planned_saga},
        {"planned saga: action 2 fails", true,
         [](world& w) { w.sb.set_script(fail_on("02", branch_op::action, 99, act::fail)); },
         planned_saga},
        {"planned saga: action 3 throws twice, compensation 1 fails twice", true,
         [](world& w) {
             w.sc.set_script(fail_on("03", branch_op::action, 2, act::throw_error));
             w.sa.set_script(fail_on("01", branch_op::compensate, 2, act::fail));
         },
         planned_saga},
    };
}

/// Runs `body` on a coordinator that stops at fault point number `stop_at` (1-based; 0: never).
/// Returns how many fault points were reached.
int run_until(world& w, const scenario& body, int stop_at, bool recovering = false) {
    asio::io_context ioc;
    int reached = 0;
    bool stopped = false;
    auto opts = fast_options();
    opts.call_timeout = 5ms;
    opts.on_fault = [&](const fault_point&) {
        if (++reached != stop_at)
            return false;
        stopped = true;
        ioc.stop();
        return true;
    };
    {
        coordinator coord(ioc.get_executor(), w.journal, w.registry, opts);
        if (recovering) {
            asio::co_spawn(
                ioc,
                [&]() -> asio::awaitable<void> {
                    co_await coord.recover(recovery_options{.take_over = true});
                },
                asio::detached);
        } else {
            asio::co_spawn(ioc, body(coord), asio::detached);
        }
        // Without a crash everything completes; hung participants are cut off by ioc.stop().
        while (!stopped && ioc.run_one_for(std::chrono::seconds(5)) > 0) {
            if (!recovering && w.journal.unfinished() == 0 && !w.journal.all().empty() &&
                stop_at == 0)
                break;
        }
    }
    return reached;
}

/// A fresh coordinator, as a restarted process would run it: recovery at startup, taking over
/// whatever its previous life left trying.
recovery_report recover_all(world& w) {
    asio::io_context ioc;
    auto opts = fast_options();
    opts.call_timeout = 5ms; // some scenarios have participants that hang
    coordinator coord(ioc.get_executor(), w.journal, w.registry, opts);
    return run(ioc, coord.recover(recovery_options{.take_over = true}));
}

} // namespace

TEST_CASE("a coordinator stopped at every journal write and branch call is finished by recovery") {
    int total_crashes = 0;
    for (const auto& s : scenarios()) {
        CAPTURE(s.name);
        // A clean run tells how many fault points the scenario passes.
        int points = 0;
        {
            world w;
            s.setup(w);
            points = run_until(w, s.body, 0);
            CHECK(w.check(s.saga) == "");
        }
        REQUIRE(points >= 3);
        for (int k = 1; k <= points; ++k) {
            CAPTURE(k);
            world w;
            s.setup(w);
            CHECK(run_until(w, s.body, k) == k);
            ++total_crashes;
            recovery_report rep = recover_all(w);
            CHECK(rep.unfinished == 0);
            CHECK(w.journal.unfinished() == 0);
            CHECK(w.check(s.saga) == "");
            // A second pass finds nothing left to do.
            CHECK(recover_all(w).claimed == 0);
        }
    }
    MESSAGE("crash points covered: " << total_crashes);
}

TEST_CASE("recovery stopped at every point of its own is finished by the next recovery") {
    int total = 0;
    for (const auto& s : scenarios()) {
        CAPTURE(s.name);
        int points = 0;
        {
            world w;
            s.setup(w);
            points = run_until(w, s.body, 0);
        }
        // Crash the transaction at each point, then crash the first recovery at each of its points.
        for (int k = 1; k <= points; ++k) {
            int recovery_points = 0;
            {
                world w;
                s.setup(w);
                run_until(w, s.body, k);
                recovery_points = run_until(w, s.body, 0, /*recovering=*/true);
            }
            for (int j = 1; j <= recovery_points; ++j) {
                CAPTURE(k);
                CAPTURE(j);
                world w;
                s.setup(w);
                run_until(w, s.body, k);
                CHECK(run_until(w, s.body, j, /*recovering=*/true) == j);
                ++total;
                recovery_report rep = recover_all(w);
                CHECK(rep.unfinished == 0);
                CHECK(w.journal.unfinished() == 0);
                CHECK(w.check(s.saga) == "");
            }
        }
    }
    MESSAGE("double crash points covered: " << total);
}

TEST_CASE("many concurrent transactions, one crash at a random point, recovery ends them all") {
    std::mt19937 rng(20261121);
    for (int round = 0; round < 40; ++round) {
        CAPTURE(round);
        world w;
        auto chaos = [&rng](unsigned percent) {
            auto seed = rng();
            return [seed, percent](std::string_view gid, std::string_view br, branch_op op,
                                   unsigned attempt) {
                auto h = std::hash<std::string>{}(std::string(gid) + std::string(br) +
                                                  std::string(to_string(op))) ^
                         seed;
                if (attempt > 2 || h % 100 >= percent)
                    return act::ok;
                switch (h / 100 % 4) {
                case 0:
                    return op == branch_op::try_ || op == branch_op::action ? act::fail
                                                                            : act::throw_error;
                case 1:
                    return act::throw_error;
                case 2:
                    return act::pending;
                default:
                    return act::hang;
                }
            };
        };
        for (resource* r : {&w.a, &w.b, &w.c, &w.sa, &w.sb, &w.sc})
            r->set_script(chaos(15));
        static constexpr int n = 30;
        scenario many = [](coordinator& coord) -> asio::awaitable<void> {
            auto ex = co_await asio::this_coro::executor;
            for (int i = 0; i < n; ++i)
                asio::co_spawn(ex, i % 3 == 0 ? three_saga(coord) : three_tcc(coord),
                               asio::detached);
        };
        const int points = 1 + static_cast<int>(rng() % 300);
        run_until(w, many, points);
        recovery_report rep = recover_all(w);
        CHECK(rep.unfinished == 0);
        CHECK(w.journal.unfinished() == 0);
        CHECK(w.check(false) == "");
        CHECK(w.check(true) == "");
    }
}

TEST_CASE("recovery leaves trying transactions alone until their deadline, then cancels them") {
    world w;
    asio::io_context ioc;
    coordinator coord(ioc.get_executor(), w.journal, w.registry, fast_options());

    // Two transactions abandoned while trying: one with its deadline ahead, one past it.
    std::vector<branch_record> one{branch_record{"01", "a", qty_payload{1}}};
    auto begin = [&](std::string gid, wall_clock::time_point deadline) {
        return run(ioc, w.journal.write({.gid = gid,
                                         .begin = begin_transaction{tx_kind::tcc, deadline},
                                         .new_branches = one},
                                        durability::sync));
    };
    CHECK(begin("ahead", wall_clock::now() + 1h));
    CHECK(begin("overdue", wall_clock::now() - 1s));

    recovery_report rep = run(ioc, coord.recover());
    CHECK(rep.claimed == 1);
    CHECK(rep.finished == 1);
    CHECK(w.journal.get("overdue")->status == tx_status::cancelled);
    CHECK(w.a.ops("overdue", "01") == std::vector{branch_op::cancel}); // a null cancel
    CHECK(w.journal.get("ahead")->status == tx_status::trying);
    CHECK(w.a.ops("ahead", "01").empty());

    rep = run(ioc, coord.recover(recovery_options{.take_over = true}));
    CHECK(rep.finished == 1);
    CHECK(w.journal.get("ahead")->status == tx_status::cancelled);
    CHECK(w.check(false) == "");
}

TEST_CASE(
    "background recovery finishes what it finds, and keeps going after a participant recovers") {
    world w;
    asio::io_context ioc;
    auto opts = fast_options();
    opts.recovery_retry.max_attempts = 2;
    coordinator coord(ioc.get_executor(), w.journal, w.registry, opts);

    // A confirming transaction whose participant is down for its first 5 confirms.
    w.b.set_script(fail_on("01", branch_op::confirm, 5, act::throw_error));
    std::vector<branch_record> br{branch_record{"01", "b", qty_payload{4}}};
    CHECK(
        run(ioc, w.journal.write({.gid = "g1",
                                  .begin = begin_transaction{tx_kind::tcc, wall_clock::now() + 1h},
                                  .new_branches = br},
                                 durability::sync)));
    // its try had succeeded before the crash
    CHECK(run(ioc, w.registry.find("b")->call(
                       branch_request{"g1", "01", branch_op::try_, br[0].payload.json()}))
              .is_success());
    CHECK(run(ioc,
              w.journal.write(
                  {.gid = "g1", .status = status_change{tx_status::trying, tx_status::confirming}},
                  durability::sync)));

    int errors = 0;
    coord.start_recovery([&](std::exception_ptr) { ++errors; });
    ioc.restart(); // it ran out of work, and stopped, after the last run()
    for (int i = 0; i < 100'000 && w.journal.get("g1")->status != tx_status::confirmed; ++i)
        ioc.run_one_for(10ms);
    coord.stop();
    CHECK(w.journal.get("g1")->status == tx_status::confirmed);
    CHECK(w.b.count("g1", "01", branch_op::confirm) == 6); // several passes of 2 attempts each
    CHECK(w.b.taken() == 4);
    CHECK(errors == 0);
    CHECK(w.check(false) == "");
}

TEST_CASE("a journal that refuses the decision makes the live coordinator stand down") {
    // Recovery elsewhere cancelled the transaction (its deadline passed) while the body was still
    // running: the late confirm decision must not win.
    world w;
    asio::io_context ioc;
    coordinator coord(ioc.get_executor(), w.journal, w.registry, fast_options());
    tx_result r = run(ioc, coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("a", qty_payload{1});
        // another process's recovery claims it now
        auto claimed = co_await w.journal.claim(
            {.now = wall_clock::now(), .owner = "other", .lease = 0ms, .take_over = true});
        CHECK(claimed.size() == 1);
    }));
    CHECK(r.status == tx_status::cancelling);
    CHECK(r.reason == errc::decision_conflict);
    CHECK(w.a.count(r.gid, "01", branch_op::confirm) == 0);
    CHECK(w.journal.get(r.gid)->status == tx_status::cancelling);
    // the other process (here: a later pass once its lease is gone) cancels it
    CHECK(recover_all(w).finished == 1);
    CHECK(w.check(false) == "");
}
