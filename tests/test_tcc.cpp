// TCC transactions: the write-ahead rules, and every way a try or phase 2 can go wrong.
#include <dtx/coordinator.hpp>

#include <doctest/doctest.h>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

struct fixture {
    asio::io_context ioc;
    memory_journal journal{memory_journal::options{.keep_ended = true}};
    participant_registry registry;
    resource a{"a"}, b{"b"}, c{"c"};

    explicit fixture() {
        registry.add_tcc("a", a.tcc());
        registry.add_tcc("b", b.tcc());
        registry.add_tcc("c", c.tcc());
    }

    std::string invariants() { return check_invariants({&a, &b, &c}); }

    /// A transaction with one branch on each of a, b, c, tried one after the other.
    tx_result three(coordinator& coord) {
        return run(ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("a", qty_payload{1});
            co_await tx.add_branch("b", qty_payload{2});
            co_await tx.add_branch("c", qty_payload{3});
        }));
    }
};

/// Fails `op` for the given branch on its first `n` attempts with `how`.
script first_n(std::string branch, branch_op op, unsigned n, act how) {
    return [=](std::string_view, std::string_view br, branch_op o, unsigned attempt) {
        return br == branch && o == op && attempt <= n ? how : act::ok;
    };
}

} // namespace

TEST_CASE("all tries succeed: every branch is confirmed once, after the decision is durable") {
    fixture f;
    std::vector<std::string> events;
    auto opts = fast_options();
    opts.on_fault = [&](const fault_point& p) {
        events.push_back(std::string(to_string(p.what)) + ":" + std::string(to_string(p.op)));
        return false;
    };
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = f.three(coord);

    CHECK(r.status == tx_status::confirmed);
    CHECK(r.committed());
    CHECK_FALSE(r.reason);
    CHECK(f.a.taken() == 1);
    CHECK(f.b.taken() == 2);
    CHECK(f.c.taken() == 3);
    CHECK(f.invariants() == "");
    CHECK(f.a.ops(r.gid, "01") == std::vector{branch_op::try_, branch_op::confirm});
    CHECK(f.c.ops(r.gid, "03") == std::vector{branch_op::try_, branch_op::confirm});

    // Write-ahead order: begin+branch 1 before try 1, each registration before its try,
    // the decision before the first confirm, the end last.
    std::vector<std::string> expected{"begin:try",      "call:try",     "register:try",
                                      "call:try",       "register:try", "call:try",
                                      "decide:confirm", "call:confirm", "call:confirm",
                                      "call:confirm",   "end:confirm"};
    CHECK(events == expected);

    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->status == tx_status::confirmed);
    REQUIRE(rec->branches.size() == 3);
    CHECK(rec->branches[1].participant == "b");
    CHECK(rec->branches[1].payload->at("qty") == 2);
}

TEST_CASE("a try that fails cancels every registered branch, the failed one included") {
    fixture f;
    f.b.set_script(first_n("02", branch_op::try_, 99, act::fail));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = f.three(coord);

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.aborted());
    CHECK(r.reason == errc::branch_failed);
    CHECK(r.message.find(r.gid) != std::string::npos);
    CHECK(r.message.find("branch 02 (b)") != std::string::npos);
    CHECK(r.message.find("b refuses") != std::string::npos);
    CHECK(f.a.ops(r.gid, "01") == std::vector{branch_op::try_, branch_op::cancel});
    CHECK(f.b.ops(r.gid, "02") == std::vector{branch_op::try_, branch_op::cancel});
    CHECK(f.c.ops(r.gid, "03").empty()); // never registered: the body stopped at branch 2
    CHECK(f.a.available() == 1'000'000);
    CHECK(f.invariants() == "");
    CHECK(f.journal.get(r.gid)->status == tx_status::cancelled);
}

TEST_CASE("a try that throws is an unknown result: the transaction is cancelled") {
    fixture f;
    f.c.set_script(first_n("03", branch_op::try_, 99, act::throw_error));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = f.three(coord);

    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_error);
    CHECK(r.message.find("c is broken") != std::string::npos);
    for (auto [res, br] : {std::pair{&f.a, "01"}, {&f.b, "02"}, {&f.c, "03"}})
        CHECK(res->count(r.gid, br, branch_op::cancel) == 1);
    CHECK(f.invariants() == "");
}

TEST_CASE("a try that times out is cancelled too, whether or not it honours cancellation") {
    for (act how : {act::hang, act::hang_deaf}) {
        CAPTURE(static_cast<int>(how));
        fixture f;
        f.b.set_script(first_n("02", branch_op::try_, 99, how));
        auto opts = fast_options();
        opts.call_timeout = 5ms;
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        tx_result r = f.three(coord);

        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::branch_timed_out);
        CHECK(r.message.find("branch 02") != std::string::npos);
        CHECK(f.b.count(r.gid, "02", branch_op::cancel) == 1); // the timed-out branch is cancelled
        CHECK(f.a.count(r.gid, "01", branch_op::cancel) == 1);
        // The cancel arrived first and left a null-compensation mark, so a late try has no effect.
        CHECK(f.b.state(r.gid, "02") == resource::slot_state::cancelled);
        CHECK(f.invariants() == "");
    }
}

TEST_CASE("confirm and cancel failing transiently are retried until they succeed") {
    SUBCASE("confirm") {
        fixture f;
        f.a.set_script(first_n("01", branch_op::confirm, 3, act::throw_error));
        f.b.set_script(first_n("02", branch_op::confirm, 2, act::fail));
        f.c.set_script(first_n("03", branch_op::confirm, 2, act::pending));
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = f.three(coord);
        CHECK(r.status == tx_status::confirmed);
        CHECK(f.a.count(r.gid, "01", branch_op::confirm) == 4);
        CHECK(f.b.count(r.gid, "02", branch_op::confirm) == 3);
        CHECK(f.c.count(r.gid, "03", branch_op::confirm) == 3);
        CHECK(f.invariants() == "");
    }
    SUBCASE("cancel, with a timeout among the failures") {
        fixture f;
        f.c.set_script([](auto, std::string_view br, branch_op op, unsigned attempt) {
            if (op == branch_op::try_)
                return act::fail;
            if (br == "01" && op == branch_op::cancel && attempt <= 2)
                return attempt == 1 ? act::hang : act::throw_error;
            return act::ok;
        });
        auto opts = fast_options();
        opts.call_timeout = 5ms;
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
        tx_result r = run(f.ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("c", qty_payload{1});
        }));
        CHECK(r.status == tx_status::cancelled);
        CHECK(f.c.count(r.gid, "01", branch_op::cancel) == 3);
        CHECK(f.invariants() == "");
    }
}

TEST_CASE("the alert hook fires after N failed attempts and the retries go on") {
    fixture f;
    f.b.set_script(first_n("02", branch_op::confirm, 7, act::throw_error));
    auto opts = fast_options();
    std::vector<unsigned> alerts;
    opts.phase_two.alert_after = 3;
    opts.phase_two.on_alert = [&](const retry_alert& a) {
        CHECK(a.branch_id == "02");
        CHECK(a.participant == "b");
        CHECK(a.op == "confirm");
        CHECK(a.last_error.find("b is broken") != std::string_view::npos);
        alerts.push_back(a.attempts);
    };
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = f.three(coord);
    CHECK(r.status == tx_status::confirmed);
    CHECK(alerts == std::vector<unsigned>{3, 6});
    CHECK(f.b.count(r.gid, "02", branch_op::confirm) == 8);
}

TEST_CASE("phase 2 stopped by an attempt limit is reported as decided, and recovery finishes it") {
    fixture f;
    f.a.set_script(first_n("01", branch_op::confirm, 5, act::throw_error));
    auto opts = fast_options();
    opts.phase_two.max_attempts = 2;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = f.three(coord);

    CHECK(r.status == tx_status::confirming);
    CHECK(r.committed());
    CHECK(r.reason == errc::attempts_exhausted);
    CHECK(f.a.state(r.gid, "01") == resource::slot_state::tried);
    CHECK(f.b.state(r.gid, "02") == resource::slot_state::confirmed);
    auto rec = f.journal.get(r.gid);
    REQUIRE(rec);
    CHECK(rec->status == tx_status::confirming);
    CHECK_FALSE(rec->branches[0].done);
    CHECK(rec->branches[1].done); // recorded, so recovery does not ask b again

    recovery_report rep = run(f.ioc, coord.recover());
    CHECK(rep.claimed == 1);
    CHECK(rep.finished == 1);
    CHECK(f.journal.get(r.gid)->status == tx_status::confirmed);
    CHECK(f.b.count(r.gid, "02", branch_op::confirm) == 1);
    CHECK(f.a.count(r.gid, "01", branch_op::confirm) == 6);
    CHECK(f.invariants() == "");
}

TEST_CASE(
    "a try answering pending is asked again until it succeeds, or cancelled at the deadline") {
    SUBCASE("succeeds") {
        fixture f;
        f.a.set_script(first_n("01", branch_op::try_, 3, act::pending));
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = f.three(coord);
        CHECK(r.status == tx_status::confirmed);
        CHECK(f.a.count(r.gid, "01", branch_op::try_) == 4);
        CHECK(f.invariants() == "");
    }
    SUBCASE("deadline") {
        fixture f;
        f.b.set_script(first_n("02", branch_op::try_, 1'000'000, act::pending));
        coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
        tx_result r = run(f.ioc, coord.tcc(
                                     [](tcc_transaction& tx) -> asio::awaitable<void> {
                                         co_await tx.add_branch("a", qty_payload{1});
                                         co_await tx.add_branch("b", qty_payload{1});
                                     },
                                     tx_options{.timeout = 20ms}));
        CHECK(r.status == tx_status::cancelled);
        CHECK(r.reason == errc::deadline_exceeded);
        CHECK(f.b.count(r.gid, "02", branch_op::try_) >= 2);
        CHECK(f.invariants() == "");
    }
}

TEST_CASE("a body that throws cancels every registered branch and hands back its exception") {
    fixture f;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r = run(f.ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("a", qty_payload{1});
        co_await tx.add_branch("b", qty_payload{1});
        throw std::logic_error("changed my mind");
    }));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::body_threw);
    CHECK(r.message.find("changed my mind") != std::string::npos);
    REQUIRE(r.exception);
    CHECK_THROWS_AS(std::rethrow_exception(r.exception), std::logic_error);
    CHECK(f.a.ops(r.gid, "01") == std::vector{branch_op::try_, branch_op::cancel});
    CHECK(f.b.ops(r.gid, "02") == std::vector{branch_op::try_, branch_op::cancel});
    CHECK(f.invariants() == "");
}

TEST_CASE("a body that catches a failed try cannot rescue the transaction") {
    fixture f;
    f.a.set_script(first_n("01", branch_op::try_, 1, act::fail));
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    bool second_refused = false;
    tx_result r = run(f.ioc, coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
        try {
            co_await tx.add_branch("a", qty_payload{1});
        } catch (const dtx::error& e) {
            CHECK(e.code() == errc::branch_failed);
        }
        CHECK(tx.aborted());
        try {
            co_await tx.add_branch("b", qty_payload{1});
        } catch (const dtx::error& e) {
            second_refused = e.code() == errc::transaction_aborted;
        }
    }));
    CHECK(second_refused);
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::branch_failed);
    CHECK(f.b.ops(r.gid, "02").empty());
    CHECK(f.invariants() == "");
}

TEST_CASE("concurrent tries: one journal write, all tried at once, any failure cancels all") {
    fixture f;
    f.b.set_script(first_n("02", branch_op::try_, 1, act::fail));
    int writes = 0;
    auto opts = fast_options();
    opts.on_fault = [&](const fault_point& p) {
        writes += p.site == fault_site::journal_write;
        return false;
    };
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, opts);
    tx_result r = run(f.ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
        std::vector<branch_spec> all;
        all.push_back({"a", qty_payload{1}});
        all.push_back({"b", qty_payload{1}});
        all.push_back({"c", qty_payload{1}});
        co_await tx.add_branches(std::move(all));
    }));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.message.find("branch 02 (b)") != std::string::npos);
    CHECK(writes == 3); // begin with 3 branches, the cancel decision, the end
    for (auto [res, br] : {std::pair{&f.a, "01"}, {&f.b, "02"}, {&f.c, "03"}}) {
        CHECK(res->count(r.gid, br, branch_op::try_) == 1);
        CHECK(res->count(r.gid, br, branch_op::cancel) == 1);
    }
    CHECK(f.invariants() == "");

    // and all succeeding, with phase 2 sequential
    f.b.set_script(always_ok());
    auto seq = fast_options();
    seq.concurrent_phase_two = false;
    coordinator coord2(f.ioc.get_executor(), f.journal, f.registry, seq);
    tx_result ok = run(f.ioc, coord2.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
        std::vector<branch_spec> all;
        all.push_back({"a", qty_payload{1}});
        all.push_back({"c", qty_payload{1}});
        co_await tx.add_branches(std::move(all));
    }));
    CHECK(ok.status == tx_status::confirmed);
    CHECK(f.invariants() == "");
}

TEST_CASE("bad branches: unknown participant, wrong kind; nothing is sent for them") {
    fixture f;
    resource s{"s"};
    f.registry.add_saga("s", s.saga());
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());

    tx_result r = run(f.ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("a", qty_payload{1});
        co_await tx.add_branch("nobody", qty_payload{1});
    }));
    CHECK(r.status == tx_status::cancelled);
    CHECK(r.reason == errc::unknown_participant);
    CHECK(r.message.find("'nobody'") != std::string::npos);
    CHECK(f.a.count(r.gid, "01", branch_op::cancel) == 1);
    CHECK(f.journal.get(r.gid)->branches.size() == 1);

    tx_result w = run(f.ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("s", qty_payload{1});
    }));
    CHECK(w.reason == errc::wrong_participant_kind);
    CHECK(w.status == tx_status::cancelled);
    CHECK_FALSE(f.journal.get(w.gid)); // nothing was written: nothing to undo
    CHECK(s.gids().empty());
}

TEST_CASE("a gid the journal already holds is refused, and the first transaction is untouched") {
    fixture f;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    auto body = [](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("a", qty_payload{1});
    };
    tx_result first = run(f.ioc, coord.tcc(body, tx_options{.gid = "order-42"}));
    CHECK(first.status == tx_status::confirmed);
    tx_result again = run(f.ioc, coord.tcc(body, tx_options{.gid = "order-42"}));
    CHECK(again.status == tx_status::cancelled);
    CHECK(again.reason == errc::duplicate_gid);
    CHECK(again.message.find("order-42") != std::string::npos);
    CHECK(f.a.taken() == 1);
    CHECK(f.a.ops("order-42", "01") == std::vector{branch_op::try_, branch_op::confirm});
}

TEST_CASE("an empty body confirms without writing anything") {
    fixture f;
    coordinator coord(f.ioc.get_executor(), f.journal, f.registry, fast_options());
    tx_result r =
        run(f.ioc, coord.tcc([](tcc_transaction&) -> asio::awaitable<void> { co_return; }));
    CHECK(r.status == tx_status::confirmed);
    CHECK(f.journal.all().empty());
}

namespace {

/// A memory journal that remembers the status change and the lease of every write.
class recording_journal final : public journal {
public:
    struct entry {
        bool begin = false;
        std::optional<status_change> status;
        std::optional<wall_clock::time_point> lease_until;
        wall_clock::time_point at;
    };
    memory_journal inner{memory_journal::options{.keep_ended = true}};
    std::vector<entry> writes;

    asio::awaitable<bool> write(const journal_write& w, durability d) override {
        entry e{w.begin.has_value(), w.status, std::nullopt, wall_clock::now()};
        if (w.lease)
            e.lease_until = w.lease->until;
        writes.push_back(e);
        co_return co_await inner.write(w, d);
    }
    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        return inner.claim(r);
    }
    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        return inner.find(gid);
    }

    /// The write that moved the status from trying to `to`.
    const entry& decision(tx_status to) const {
        for (const auto& e : writes)
            if (e.status && e.status->from == tx_status::trying && e.status->to == to)
                return e;
        FAIL("no decision to " << to_string(to));
        return writes.front();
    }
};

} // namespace

TEST_CASE("a decision renews the lease only when the begin's lease has run down; a take-over "
          "refuses it either way") {
    fixture f;
    recording_journal j;
    coordinator_options o = fast_options();
    o.lease = 30s;
    o.transaction_timeout = 60s;
    auto one = [](tcc_transaction& tx) -> asio::awaitable<void> {
        co_await tx.add_branch("a", qty_payload{1});
    };

    SUBCASE("a quick body: the begin leases for one lease's length, and the decision carries no "
            "lease") {
        coordinator coord(f.ioc.get_executor(), j, f.registry, o);
        CHECK(run(f.ioc, coord.tcc(one)).status == tx_status::confirmed);
        REQUIRE(j.writes.size() >= 2);
        const auto& begin = j.writes.front();
        CHECK(begin.begin);
        REQUIRE(begin.lease_until);
        CHECK(*begin.lease_until <= begin.at + 30s);
        CHECK(*begin.lease_until > begin.at + 29s);
        CHECK_FALSE(j.decision(tx_status::confirming).lease_until);
    }
    SUBCASE("a body that took a tenth of the lease and more: the decision renews it") {
        o.lease = 300ms;
        coordinator coord(f.ioc.get_executor(), j, f.registry, o);
        tx_result r = run(f.ioc, coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("a", qty_payload{1});
            asio::steady_timer t(co_await asio::this_coro::executor, 60ms);
            co_await t.async_wait(asio::use_awaitable);
        }));
        CHECK(r.status == tx_status::confirmed);
        const auto& d = j.decision(tx_status::confirming);
        REQUIRE(d.lease_until);
        CHECK(*d.lease_until > *j.writes.front().lease_until + 50ms);
    }
    SUBCASE("a deadline sooner than the lease: the begin leases until the deadline, the decision "
            "renews") {
        o.transaction_timeout = 2s;
        coordinator coord(f.ioc.get_executor(), j, f.registry, o);
        CHECK(run(f.ioc, coord.tcc(one)).status == tx_status::confirmed);
        const auto& begin = j.writes.front();
        REQUIRE(begin.lease_until);
        CHECK(*begin.lease_until <= begin.at + 2s);
        const auto& d = j.decision(tx_status::confirming);
        REQUIRE(d.lease_until);
        CHECK(*d.lease_until > begin.at + 29s);
    }
    SUBCASE("taken over while trying: the decision without a lease is refused all the same") {
        coordinator coord(f.ioc.get_executor(), j, f.registry, o);
        tx_result r = run(f.ioc, coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("a", qty_payload{1});
            // another process's recovery claims it now (its owner name differs from this one's)
            auto claimed = co_await j.claim(
                {.now = wall_clock::now(), .owner = "other", .lease = 30s, .take_over = true});
            CHECK(claimed.size() == 1);
        }));
        CHECK(r.status == tx_status::cancelling);
        CHECK(r.reason == errc::decision_conflict);
        CHECK_FALSE(j.decision(tx_status::confirming).lease_until);
        CHECK(f.a.count(r.gid, "01", branch_op::confirm) == 0);
        auto rec = run(f.ioc, j.find(r.gid));
        REQUIRE(rec);
        CHECK(rec->status == tx_status::cancelling);
    }
}
