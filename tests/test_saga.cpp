// Sagas: actions run one after the other (or together), and any failure compensates every step
// that was registered, newest first, one at a time.
#include <dtx/coordinator.hpp>

#include <doctest/doctest.h>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

/// One request as a participant received it, and what its script made it do.
struct request {
    std::string resource;
    std::string gid;
    std::string branch;
    branch_op op;
    unsigned attempt;
    act how;
};

struct fixture {
    asio::io_context ioc;
    memory_journal journal{memory_journal::options{.keep_ended = true}};
    participant_registry registry;
    resource a{"a"}, b{"b"}, c{"c"};
    /// Every request any of a, b, c received, in the order they received them.
    std::vector<request> log;

    fixture() {
        registry.add_saga("a", a.saga());
        registry.add_saga("b", b.saga());
        registry.add_saga("c", c.saga());
        for (resource* r : {&a, &b, &c})
            set_script(*r, always_ok());
    }
    fixture(const fixture&) = delete;
    fixture& operator=(const fixture&) = delete;

    /// Installs `s` on `r`, recording each request in `log`.
    void set_script(resource& r, script s) {
        r.set_script([this, name = r.name(), s = std::move(s)](std::string_view gid,
                                                               std::string_view br, branch_op op,
                                                               unsigned attempt) {
            const act how = s(gid, br, op, attempt);
            log.push_back({name, std::string(gid), std::string(br), op, attempt, how});
            return how;
        });
    }

    /// The branches `op` was sent to for `gid`, one entry per request, in the order sent.
    std::vector<std::string> sent(const std::string& gid, branch_op op) const {
        std::vector<std::string> out;
        for (const auto& r : log)
            if (r.gid == gid && r.op == op)
                out.push_back(r.branch);
        return out;
    }

    /// Empty if the compensations of `gid` went strictly newest first: no compensation of a step
    /// was sent before the compensation of every newer step had succeeded, and none was sent
    /// again after that. Otherwise the first problem.
    std::string compensation_order(const std::string& gid) const {
        const request* prev = nullptr;
        for (const auto& r : log) {
            if (r.gid != gid || r.op != branch_op::compensate)
                continue;
            if (prev && r.branch != prev->branch) {
                if (r.branch > prev->branch)
                    return "branch " + r.branch + " compensated after " + prev->branch;
                if (prev->how != act::ok)
                    return "branch " + r.branch + " compensated before " + prev->branch +
                           " had succeeded";
            }
            prev = &r;
        }
        return {};
    }

    /// The model's invariants (with the saga order check), and the order check on every gid.
    std::string invariants() const {
        std::string problem = check_invariants({&a, &b, &c}, /*sagas=*/true);
        if (!problem.empty())
            return problem;
        std::set<std::string> gids;
        for (const auto& r : log)
            gids.insert(r.gid);
        for (const auto& gid : gids) {
            problem = compensation_order(gid);
            if (!problem.empty())
                return "gid " + gid + ": " + problem;
        }
        return {};
    }

    /// Steps a(1), b(2), c(3), a(4), added one after the other.
    tx_result four(coordinator& coord) {
        return run(ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_step("a", qty_payload{1});
            co_await tx.add_step("b", qty_payload{2});
            co_await tx.add_step("c", qty_payload{3});
            co_await tx.add_step("a", qty_payload{4});
        }));
    }
};

/// Options that record every fault point passed ("begin", "call:action", ...) in `events`.
coordinator_options recording_faults(std::vector<std::string>& events) {
    auto opts = fast_options();
    opts.on_fault = [&events](const fault_point& p) {
        events.push_back(std::string(to_string(p.what)) + (p.site == fault_site::branch_call
                                                               ? ":" + std::string(to_string(p.op))
                                                               : ""));
        return false;
    };
    return opts;
}

/// Makes `op` on `branch` act `how` on its first `n` attempts, and succeed after.
script first_n(std::string branch, branch_op op, unsigned n, act how) {
    return [=](std::string_view, std::string_view br, branch_op o, unsigned attempt) {
        return br == branch && o == op && attempt <= n ? how : act::ok;
    };
}

/// Runs one script or the other, depending on the branch.
script per_branch(std::map<std::string, script> by_branch) {
    return [m = std::move(by_branch)](std::string_view gid, std::string_view br, branch_op op,
                                      unsigned attempt) {
        auto it = m.find(std::string(br));
        return it == m.end() ? act::ok : it->second(gid, br, op, attempt);
    };
}

using strings = std::vector<std::string>;

} // namespace

TEST_CASE(
    "all actions succeed: the saga is confirmed, each action ran once, nothing is compensated") {
    fixture f;
    std::vector<std::string> events;
    auto opts = recording_faults(events);
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = f.four(coord);

    CHECK(r.status == tx_status::confirmed);
    CHECK(r.committed());
    CHECK_FALSE(r.aborted());
    CHECK_FALSE(r.reason);
    CHECK(r.message.empty());
    CHECK_FALSE(r.exception);
    CHECK(f.a.taken() == 5);
    CHECK(f.b.taken() == 2);
    CHECK(f.c.taken() == 3);
    CHECK(f.a.ops(r.gid, "01") == std::vector{branch_op::action});
    CHECK(f.b.ops(r.gid, "02") == std::vector{branch_op::action});
    CHECK(f.c.ops(r.gid, "03") == std::vector{branch_op::action});
    CHECK(f.a.ops(r.gid, "04") == std::vector{branch_op::action});
    CHECK(f.sent(r.gid, branch_op::action) == strings{"01", "02", "03", "04"});
    CHECK(f.sent(r.gid, branch_op::compensate).empty());
    for (const resource* res : {&f.a, &f.b, &f.c})
        CHECK(res->first_compensations().empty());
    CHECK(f.invariants() == "");

    // Each step is registered before its action is sent; a saga has no confirm phase: its end is
    // written once, after the last action.
    CHECK(events == strings{"begin", "call:action", "register", "call:action", "register",
                            "call:action", "register", "call:action", "end"});

    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->kind == tx_kind::saga);
    CHECK(rec->status == tx_status::confirmed);
    REQUIRE(rec->branches.size() == 4);
    CHECK(rec->branches[2].branch_id == "03");
    CHECK(rec->branches[2].participant == "c");
    CHECK(rec->branches[2].payload->at("qty") == 3);
}

TEST_CASE("an action that fails compensates every registered step newest first, the failed one "
          "included") {
    fixture f;
    f.set_script(f.c, first_n("03", branch_op::action, 99, act::fail));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = f.four(coord);

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.aborted());
    CHECK_FALSE(r.committed());
    CHECK(r.reason == errc::branch_failed);
    CHECK(r.message.find("gid " + r.gid) != std::string::npos);
    CHECK(r.message.find("branch 03 (c)") != std::string::npos);
    CHECK(r.message.find("c refuses") != std::string::npos);
    CHECK_FALSE(r.exception);

    CHECK(f.a.ops(r.gid, "01") == std::vector{branch_op::action, branch_op::compensate});
    CHECK(f.b.ops(r.gid, "02") == std::vector{branch_op::action, branch_op::compensate});
    CHECK(f.c.ops(r.gid, "03") == std::vector{branch_op::action, branch_op::compensate});
    CHECK(f.a.ops(r.gid, "04").empty()); // the body stopped at step 3: step 4 never existed
    CHECK(f.sent(r.gid, branch_op::compensate) == strings{"03", "02", "01"});
    CHECK(f.compensation_order(r.gid) == "");

    // Step 3 did nothing, so its compensation only leaves a mark; 2 and 1 are given back.
    CHECK(f.c.state(r.gid, "03") == resource::slot_state::cancelled);
    CHECK(f.a.available() == 1'000'000);
    CHECK(f.b.available() == 1'000'000);
    CHECK(f.a.taken() + f.b.taken() + f.c.taken() == 0);
    CHECK(f.invariants() == "");

    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->status == tx_status::cancelled);
    CHECK(rec->branches.size() == 3);
}

TEST_CASE(
    "steps on one participant are compensated in exactly the reverse order of their actions") {
    fixture f;
    f.set_script(f.a, first_n("03", branch_op::action, 99, act::fail));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
        for (int qty = 1; qty <= 4; ++qty) {
            qty_payload p{qty};
            co_await tx.add_step("a", p);
        }
    }));

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.message.find("branch 03 (a)") != std::string::npos);
    const auto& comps = f.a.first_compensations();
    REQUIRE(comps.size() == 3);
    CHECK(comps[0].branch_id == "03");
    CHECK(comps[1].branch_id == "02");
    CHECK(comps[2].branch_id == "01");
    for (const auto& c : comps)
        CHECK(c.gid == r.gid);
    CHECK(comps[0].seq < comps[1].seq);
    CHECK(comps[1].seq < comps[2].seq);
    CHECK(f.a.available() == 1'000'000);
    CHECK(check_invariants({&f.a}, /*sagas=*/true) == "");
}

TEST_CASE("the saga order check notices a compensation that ran oldest first") {
    // A control for the checks the other cases lean on: an out-of-order compensation, made here
    // by hand, must be reported.
    fixture f;
    nlohmann::json p = qty_payload{1};
    auto call = [&](resource& res, const char* branch, branch_op op) {
        saga_handlers h = res.saga();
        branch_request req{"g-1", branch, op, p};
        return run(f.ioc, op == branch_op::action ? h.on_action(req) : h.on_compensate(req));
    };
    CHECK(call(f.a, "01", branch_op::action).is_success());
    CHECK(call(f.b, "02", branch_op::action).is_success());
    CHECK(call(f.a, "01", branch_op::compensate).is_success());
    CHECK(call(f.b, "02", branch_op::compensate).is_success());
    CHECK(check_invariants({&f.a, &f.b}, /*sagas=*/true)
              .find("gid g-1: branch 02 compensated after 01") == 0);
    CHECK(f.compensation_order("g-1") == "branch 02 compensated after 01");
}

TEST_CASE("an action that throws is an unknown result: the saga is compensated") {
    fixture f;
    f.set_script(f.b, first_n("02", branch_op::action, 99, act::throw_error));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = f.four(coord);

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_error);
    CHECK(r.message.find("branch 02 (b)") != std::string::npos);
    CHECK(r.message.find("b is broken") != std::string::npos);
    CHECK(f.sent(r.gid, branch_op::compensate) == strings{"02", "01"});
    CHECK(f.b.state(r.gid, "02") == resource::slot_state::cancelled);
    CHECK(f.c.ops(r.gid, "03").empty());
    CHECK(f.invariants() == "");
}

TEST_CASE("an action that times out is compensated, whether or not it honours cancellation") {
    for (act how : {act::hang, act::hang_deaf}) {
        CAPTURE(static_cast<int>(how));
        fixture f;
        f.set_script(f.c, first_n("03", branch_op::action, 99, how));
        auto opts = fast_options();
        opts.call_timeout = 5ms;
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        tx_result r = f.four(coord);

        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::branch_timed_out);
        CHECK(r.message.find("branch 03 (c)") != std::string::npos);
        CHECK(r.message.find("no answer within 5 ms") != std::string::npos);
        CHECK(f.sent(r.gid, branch_op::compensate) == strings{"03", "02", "01"});
        // The compensation overtook the unanswered action and left a mark, so that the action,
        // should it still arrive, takes nothing.
        CHECK(f.c.state(r.gid, "03") == resource::slot_state::cancelled);
        CHECK(f.c.taken() == 0);
        CHECK(f.invariants() == "");
    }
}

TEST_CASE("an action answering pending is asked again until it succeeds, or compensated at the "
          "deadline") {
    SUBCASE("succeeds after three pending answers") {
        fixture f;
        f.set_script(f.b, first_n("02", branch_op::action, 3, act::pending));
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = f.four(coord);
        CHECK(r.status == tx_status::confirmed);
        CHECK(f.b.count(r.gid, "02", branch_op::action) == 4);
        CHECK(f.b.taken() == 2);
        CHECK(f.sent(r.gid, branch_op::compensate).empty());
        CHECK(f.invariants() == "");
    }
    SUBCASE("pending forever: cancelled at the deadline") {
        fixture f;
        f.set_script(f.b, first_n("02", branch_op::action, 1'000'000, act::pending));
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = run(f.ioc, coord.saga(
                                     [](saga_transaction& tx) -> asio::awaitable<void> {
                                         co_await tx.add_step("a", qty_payload{1});
                                         co_await tx.add_step("b", qty_payload{1});
                                         co_await tx.add_step("c", qty_payload{1});
                                     },
                                     tx_options{.timeout = 40ms}));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::deadline_exceeded);
        CHECK(r.message.find("branch 02 (b)") != std::string::npos);
        CHECK(f.b.count(r.gid, "02", branch_op::action) >= 2);
        CHECK(f.sent(r.gid, branch_op::compensate) == strings{"02", "01"});
        CHECK(f.c.ops(r.gid, "03").empty());
        CHECK(f.invariants() == "");
    }
}

TEST_CASE(
    "compensations failing transiently are retried until they succeed, strictly newest first") {
    SUBCASE("throw, failure, pending") {
        fixture f;
        f.set_script(f.a,
                     per_branch({{"04", first_n("04", branch_op::action, 99, act::fail)},
                                 {"01", first_n("01", branch_op::compensate, 2, act::pending)}}));
        f.set_script(f.b, first_n("02", branch_op::compensate, 2, act::fail));
        f.set_script(f.c, first_n("03", branch_op::compensate, 2, act::throw_error));
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = f.four(coord);

        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::branch_failed);
        CHECK(r.message.find("branch 04 (a)") != std::string::npos);
        // Sequential: each step's compensation is repeated until it succeeds before the next
        // older step is asked at all.
        CHECK(f.sent(r.gid, branch_op::compensate) ==
              strings{"04", "03", "03", "03", "02", "02", "02", "01", "01", "01"});
        CHECK(f.compensation_order(r.gid) == "");
        CHECK(f.a.taken() + f.b.taken() + f.c.taken() == 0);
        CHECK(f.invariants() == "");
        auto rec = f.journal.get(r.gid);
        REQUIRE(rec);
        CHECK(rec->status == tx_status::cancelled);
    }
    SUBCASE("a compensation that hangs times out and is asked again") {
        fixture f;
        f.set_script(f.a, first_n("04", branch_op::action, 99, act::fail));
        f.set_script(f.b, [](std::string_view, std::string_view, branch_op op, unsigned attempt) {
            if (op != branch_op::compensate)
                return act::ok;
            return attempt == 1 ? act::hang : attempt == 2 ? act::throw_error : act::ok;
        });
        auto opts = fast_options();
        opts.call_timeout = 5ms;
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        tx_result r = f.four(coord);

        CHECK(r.status == tx_status::cancelled);
        CHECK(f.sent(r.gid, branch_op::compensate) == strings{"04", "03", "02", "02", "02", "01"});
        CHECK(f.b.state(r.gid, "02") == resource::slot_state::cancelled);
        CHECK(f.invariants() == "");
    }
}

TEST_CASE("compensation stopped by the attempt limit leaves the saga cancelling; recovery finishes "
          "it in order") {
    fixture f;
    f.set_script(f.c, first_n("03", branch_op::action, 99, act::fail));
    f.set_script(f.b, first_n("02", branch_op::compensate, 5, act::throw_error));
    auto opts = fast_options();
    opts.phase_two.max_attempts = 2;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = f.four(coord);

    CHECK(r.status == tx_status::cancelling);
    CHECK(r.aborted());
    CHECK(r.reason == errc::branch_failed); // the reason it was cancelled is kept
    CHECK(f.sent(r.gid, branch_op::compensate) == strings{"03", "02", "02"});
    // Step 1 must wait for step 2: it still holds what its action took.
    CHECK(f.a.state(r.gid, "01") == resource::slot_state::confirmed);
    CHECK(f.a.count(r.gid, "01", branch_op::compensate) == 0);
    CHECK(f.b.state(r.gid, "02") == resource::slot_state::confirmed);

    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->status == tx_status::cancelling);
    REQUIRE(rec->branches.size() == 3);
    CHECK_FALSE(rec->branches[0].done);
    CHECK_FALSE(rec->branches[1].done);
    CHECK(rec->branches[2].done); // recorded, so recovery does not compensate step 3 again
    CHECK(f.journal.unfinished() == 1);

    recovery_report rep = run(f.ioc, coord.recover());
    CHECK(rep.claimed == 1);
    CHECK(rep.finished == 1);
    CHECK(rep.unfinished == 0);
    CHECK(f.journal.get(r.gid)->status == tx_status::cancelled);
    CHECK(f.journal.unfinished() == 0);
    // Recovery goes on where the live coordinator stopped: step 2 (attempts 3 to 6), then step 1.
    CHECK(f.sent(r.gid, branch_op::compensate) ==
          strings{"03", "02", "02", "02", "02", "02", "02", "01"});
    CHECK(f.compensation_order(r.gid) == "");
    CHECK(f.c.count(r.gid, "03", branch_op::compensate) == 1);
    CHECK(f.a.state(r.gid, "01") == resource::slot_state::cancelled);
    CHECK(f.a.taken() + f.b.taken() + f.c.taken() == 0);
    CHECK(f.invariants() == "");
}

TEST_CASE(
    "concurrent steps: one journal write, actions at once, one failure compensates them all") {
    SUBCASE("one fails") {
        fixture f;
        f.set_script(f.b, first_n("03", branch_op::action, 99, act::fail));
        int writes = 0;
        auto opts = fast_options();
        opts.on_fault = [&](const fault_point& p) {
            writes += p.site == fault_site::journal_write;
            return false;
        };
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_step("a", qty_payload{1});
            std::vector<branch_spec> steps;
            steps.push_back({"a", qty_payload{2}});
            steps.push_back({"b", qty_payload{3}});
            steps.push_back({"c", qty_payload{4}});
            co_await tx.add_steps(std::move(steps));
            co_await tx.add_step("c", qty_payload{5}); // never reached
        }));

        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::branch_failed);
        CHECK(r.message.find("branch 03 (b)") != std::string::npos);
        CHECK(writes == 4); // begin with step 1, steps 2-4 together, the cancel decision, the end
        CHECK(f.sent(r.gid, branch_op::action).size() == 4);
        CHECK(f.a.count(r.gid, "02", branch_op::action) == 1);
        CHECK(f.c.count(r.gid, "04", branch_op::action) == 1);
        CHECK(f.c.ops(r.gid, "05").empty());
        CHECK(f.sent(r.gid, branch_op::compensate) == strings{"04", "03", "02", "01"});
        CHECK(f.a.taken() + f.b.taken() + f.c.taken() == 0);
        CHECK(f.invariants() == "");
        auto rec = f.journal.get(r.gid);
        REQUIRE(rec);
        CHECK(rec->branches.size() == 4);
    }
    SUBCASE("all succeed") {
        fixture f;
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
            std::vector<branch_spec> steps;
            steps.push_back({"a", qty_payload{1}});
            steps.push_back({"b", qty_payload{2}});
            steps.push_back({"c", qty_payload{3}});
            co_await tx.add_steps(std::move(steps));
        }));
        CHECK(r.status == tx_status::confirmed);
        CHECK(f.a.taken() == 1);
        CHECK(f.b.taken() == 2);
        CHECK(f.c.taken() == 3);
        CHECK(f.sent(r.gid, branch_op::compensate).empty());
        CHECK(f.invariants() == "");
    }
}

TEST_CASE("a saga body that throws compensates every step and hands back its exception") {
    fixture f;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_step("a", qty_payload{1});
        co_await tx.add_step("b", qty_payload{2});
        throw std::out_of_range("no such seat");
    }));

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::body_threw);
    CHECK(r.message.find(r.gid) != std::string::npos);
    CHECK(r.message.find("no such seat") != std::string::npos);
    REQUIRE(r.exception);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(r.exception), "no such seat", std::out_of_range);
    CHECK(f.sent(r.gid, branch_op::compensate) == strings{"02", "01"});
    CHECK(f.a.taken() + f.b.taken() == 0);
    CHECK(f.invariants() == "");
}

TEST_CASE("a saga body that catches a failed action cannot rescue the saga") {
    fixture f;
    f.set_script(f.b, first_n("02", branch_op::action, 99, act::fail));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    std::error_code caught, refused;
    tx_result r = run(f.ioc, coord.saga([&](saga_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_step("a", qty_payload{1});
        try {
            co_await tx.add_step("b", qty_payload{1});
        } catch (const dtx::error& e) {
            caught = e.code();
        }
        try {
            co_await tx.add_step("c", qty_payload{1}); // the "alternative" the body tries
        } catch (const dtx::error& e) {
            refused = e.code();
        }
    }));
    CHECK(caught == errc::branch_failed);
    CHECK(refused == errc::transaction_aborted);
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_failed);
    CHECK(f.c.gids().empty());
    CHECK(f.sent(r.gid, branch_op::compensate) == strings{"02", "01"});
    CHECK(f.invariants() == "");
}

TEST_CASE(
    "a TCC participant cannot be a saga step: wrong_participant_kind, and nothing is sent to it") {
    fixture f;
    resource t{"t"};
    f.registry.add_tcc("t", t.tcc());
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());

    SUBCASE("as the first step: nothing is written") {
        tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_step("t", qty_payload{1});
        }));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::wrong_participant_kind);
        CHECK(r.message.find("branch 01 (t)") != std::string::npos);
        CHECK(r.message.find("a tcc participant cannot take part in a saga transaction") !=
              std::string::npos);
        CHECK_FALSE(f.journal.get(r.gid));
    }
    SUBCASE("after a good step: that step is compensated") {
        tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_step("a", qty_payload{1});
            co_await tx.add_step("t", qty_payload{1});
        }));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::wrong_participant_kind);
        CHECK(r.message.find("branch 02 (t)") != std::string::npos);
        CHECK(f.a.ops(r.gid, "01") == std::vector{branch_op::action, branch_op::compensate});
        auto rec = f.journal.get(r.gid);
        REQUIRE(rec);
        CHECK(rec->status == tx_status::cancelled);
        CHECK(rec->branches.size() == 1);
        CHECK(f.invariants() == "");
    }
    SUBCASE("an unknown name is refused the same way") {
        tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_step("a", qty_payload{1});
            co_await tx.add_step("nobody", qty_payload{1});
        }));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::unknown_participant);
        CHECK(f.sent(r.gid, branch_op::compensate) == strings{"01"});
        CHECK(f.invariants() == "");
    }
    CHECK(t.gids().empty());
}

TEST_CASE("an empty saga confirms without writing or sending anything") {
    fixture f;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = run(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
        std::vector<branch_spec> none;
        co_await tx.add_steps(std::move(none));
    }));
    CHECK(r.status == tx_status::confirmed);
    CHECK(r.gid.size() == 36);
    CHECK(f.journal.all().empty());
    CHECK(f.log.empty());
}

TEST_CASE("the alert hook fires for a compensation that keeps failing, and the retries go on") {
    fixture f;
    f.set_script(f.c, first_n("03", branch_op::action, 99, act::fail));
    f.set_script(f.b, first_n("02", branch_op::compensate, 5, act::fail));
    auto opts = fast_options();
    opts.phase_two.alert_after = 2;
    std::vector<unsigned> alerts;
    opts.phase_two.on_alert = [&](const retry_alert& a) {
        CHECK(a.branch_id == "02");
        CHECK(a.participant == "b");
        CHECK(a.op == "compensate");
        CHECK(a.last_error.find("b refuses") != std::string_view::npos);
        alerts.push_back(a.attempts);
    };
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = f.four(coord);

    CHECK(r.status == tx_status::cancelled);
    CHECK(alerts == std::vector<unsigned>{2, 4});
    CHECK(f.b.count(r.gid, "02", branch_op::compensate) == 6);
    CHECK(f.sent(r.gid, branch_op::compensate).back() == "01");
    CHECK(f.invariants() == "");
}

TEST_CASE("a saga goes on compensating when the coroutine awaiting it is cancelled") {
    fixture f;
    f.set_script(f.c, first_n("03", branch_op::action, 99, act::fail));
    f.set_script(f.b, first_n("02", branch_op::compensate, 3, act::throw_error));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());

    asio::cancellation_signal cancel;
    bool done = false;
    asio::co_spawn(f.ioc, coord.saga([](saga_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_step("a", qty_payload{1});
        co_await tx.add_step("b", qty_payload{1});
        co_await tx.add_step("c", qty_payload{1});
    }),
                   asio::bind_cancellation_slot(
                       cancel.slot(), [&](std::exception_ptr, tx_result) { done = true; }));
    // Run until the compensations have begun, then cancel the caller.
    auto compensating = [&] {
        for (const auto& r : f.log)
            if (r.op == branch_op::compensate)
                return true;
        return false;
    };
    while (!compensating() && f.ioc.run_one() > 0) {
    }
    REQUIRE(compensating());
    CHECK_FALSE(done);
    cancel.emit(asio::cancellation_type::all);
    f.ioc.run();

    CHECK(done);
    REQUIRE(f.log.size() > 0);
    const std::string gid = f.log.front().gid;
    CHECK(f.sent(gid, branch_op::compensate) == strings{"03", "02", "02", "02", "02", "01"});
    CHECK(f.journal.get(gid)->status == tx_status::cancelled);
    CHECK(f.a.taken() + f.b.taken() == 0);
    CHECK(f.invariants() == "");
}

// ---- sagas of planned steps ---------------------------------------------------------------------

namespace {

/// Steps a(1), b(2), c(3), a(4), planned up front.
std::vector<branch_spec> four_steps() {
    std::vector<branch_spec> steps;
    steps.push_back({"a", qty_payload{1}});
    steps.push_back({"b", qty_payload{2}});
    steps.push_back({"c", qty_payload{3}});
    steps.push_back({"a", qty_payload{4}});
    return steps;
}

/// A memory journal whose writes can be made to throw, before or after applying them.
class flaky_journal final : public journal {
public:
    enum class mode { ok, throw_before, throw_after };
    memory_journal inner{memory_journal::options{.keep_ended = true}};
    std::vector<mode> script; // one entry per write, in order; ok once it runs out

    asio::awaitable<bool> write(const journal_write& w, durability d) override {
        const mode m = next < script.size() ? script[next] : mode::ok;
        ++next;
        if (m == mode::throw_before)
            throw error(errc::journal_failed, "disk unplugged");
        const bool ok = co_await inner.write(w, d);
        if (m == mode::throw_after)
            throw error(errc::journal_failed, "fsync failed");
        co_return ok;
    }
    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        return inner.claim(r);
    }
    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        return inner.find(gid);
    }

private:
    std::size_t next = 0;
};

} // namespace

TEST_CASE("a planned saga registers every step in one write, runs the actions in order, and is "
          "confirmed") {
    fixture f;
    std::vector<std::string> events;
    auto opts = recording_faults(events);
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = run(f.ioc, coord.saga(four_steps()));

    CHECK(r.status == tx_status::confirmed);
    CHECK(r.committed());
    CHECK_FALSE(r.reason);
    CHECK(events ==
          strings{"begin", "call:action", "call:action", "call:action", "call:action", "end"});
    CHECK(f.sent(r.gid, branch_op::action) == strings{"01", "02", "03", "04"});
    CHECK(f.sent(r.gid, branch_op::compensate).empty());
    CHECK(f.a.taken() == 5);
    CHECK(f.b.taken() == 2);
    CHECK(f.c.taken() == 3);
    CHECK(f.invariants() == "");

    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->kind == tx_kind::saga);
    CHECK(rec->forward);
    CHECK(rec->status == tx_status::confirmed);
    REQUIRE(rec->branches.size() == 4);
    CHECK(rec->branches[3].participant == "a");
    CHECK(rec->branches[3].payload->at("qty") == 4);
}

TEST_CASE(
    "a planned saga whose action fails compensates the steps it sent, newest first, and never "
    "sends the rest") {
    fixture f;
    f.set_script(f.b, first_n("02", branch_op::action, 99, act::fail));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = run(f.ioc, coord.saga(four_steps()));

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_failed);
    CHECK(r.message.find("branch 02 (b)") != std::string::npos);
    CHECK(f.sent(r.gid, branch_op::action) == strings{"01", "02"});
    CHECK(f.sent(r.gid, branch_op::compensate) == strings{"02", "01"});
    CHECK(f.a.taken() + f.b.taken() + f.c.taken() == 0);
    CHECK(f.invariants() == "");

    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->status == tx_status::cancelled);
    REQUIRE(rec->branches.size() == 4);
    CHECK(rec->branches[2].done); // never sent: nothing to compensate
    CHECK(rec->branches[3].done);
}

TEST_CASE(
    "a planned saga naming an unknown participant is refused before anything is written or sent") {
    fixture f;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    auto steps = four_steps();
    steps[2].participant = "nobody";
    tx_result r = run(f.ioc, coord.saga(std::move(steps)));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::unknown_participant);
    CHECK(r.message.find("'nobody'") != std::string::npos);
    CHECK(f.log.empty());
    CHECK(f.journal.all().empty());
}

TEST_CASE("a planned saga stopped after its second action is finished forward by recovery") {
    fixture f;
    int calls = 0;
    auto opts = fast_options();
    opts.on_fault = [&](const fault_point& p) {
        return p.site == fault_site::branch_call && ++calls == 2;
    };
    {
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        asio::co_spawn(f.ioc, coord.saga(four_steps()), asio::detached);
        f.ioc.run_for(200ms);
    }
    REQUIRE(f.log.size() == 2);
    const std::string gid = f.log.front().gid;
    CHECK(f.journal.get(gid)->status == tx_status::trying);

    coordinator fresh(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    f.ioc.restart();
    recovery_report rep = run(f.ioc, fresh.recover(recovery_options{.take_over = true}));
    CHECK(rep.finished == 1);
    CHECK(f.journal.get(gid)->status == tx_status::confirmed);
    // The first two actions are sent again (the participant answers the repeats without effect).
    CHECK(f.sent(gid, branch_op::action) == strings{"01", "02", "01", "02", "03", "04"});
    CHECK(f.sent(gid, branch_op::compensate).empty());
    CHECK(f.a.taken() == 5);
    CHECK(f.b.taken() == 2);
    CHECK(f.c.taken() == 3);
    CHECK(f.invariants() == "");
}

TEST_CASE("recovery of a planned saga compensates when an action answers failure") {
    fixture f;
    auto opts = fast_options();
    opts.on_fault = [&](const fault_point& p) { return p.what == fault_step::begin; };
    {
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        asio::co_spawn(f.ioc, coord.saga(four_steps()), asio::detached);
        f.ioc.run_for(200ms);
    }
    CHECK(f.log.empty());
    auto all = f.journal.all();
    REQUIRE(all.size() == 1);
    f.set_script(f.c, first_n("03", branch_op::action, 99, act::fail));

    coordinator fresh(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    f.ioc.restart();
    recovery_report rep = run(f.ioc, fresh.recover(recovery_options{.take_over = true}));
    CHECK(rep.finished == 1);
    const std::string gid = all.front().gid;
    CHECK(f.journal.get(gid)->status == tx_status::cancelled);
    CHECK(f.sent(gid, branch_op::action) == strings{"01", "02", "03"});
    CHECK(f.sent(gid, branch_op::compensate) == strings{"03", "02", "01"});
    CHECK(f.a.taken() + f.b.taken() + f.c.taken() == 0);
    CHECK(f.invariants() == "");
}

TEST_CASE(
    "a planned saga whose begin write fails is ended as cancelled before the caller hears it") {
    using mode = flaky_journal::mode;
    for (mode m : {mode::throw_before, mode::throw_after}) {
        CAPTURE(static_cast<int>(m));
        fixture f;
        flaky_journal j;
        j.script = {m};
        coordinator coord(f.ioc.get_executor(), j, f.registry, fast_options());
        tx_result r = run(f.ioc, coord.saga(four_steps()));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::journal_failed);
        CHECK(f.log.empty());
        auto rec = j.inner.get(r.gid);
        if (m == mode::throw_before) {
            CHECK_FALSE(rec);
        } else {
            REQUIRE(rec);
            CHECK(rec->status == tx_status::cancelled); // recovery will not run it forward
        }
    }
    // Neither write gets through: the caller is told the saga may still be in the journal.
    fixture f;
    flaky_journal j;
    j.script = {mode::throw_after, mode::throw_before};
    coordinator coord(f.ioc.get_executor(), j, f.registry, fast_options());
    tx_result r = run(f.ioc, coord.saga(four_steps()));
    CHECK(r.status == tx_status::trying);
    CHECK(r.reason == errc::journal_failed);
    CHECK(r.message.find("recovery would then finish it") != std::string::npos);
    CHECK(f.log.empty());
    CHECK(j.inner.get(r.gid)->status == tx_status::trying);
}
