// memory_journal used directly: writes it takes and refuses, ended transactions, claims and leases
#include <dtx/memory_journal.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

// ---- journal writes, built in plain functions --------------------------------------------------

struct journal_fixture {
    asio::io_context ioc;

    bool write(memory_journal& j, const journal_write& w) {
        return run(ioc, j.write(w, durability::sync));
    }

    bool begin(memory_journal& j, const std::string& gid, wall_clock::time_point deadline,
               const std::vector<branch_record>& branches = {}) {
        return write(j, {.gid = gid,
                         .begin = begin_transaction{tx_kind::tcc, deadline},
                         .new_branches = branches});
    }

    bool change(memory_journal& j, const std::string& gid, tx_status from, tx_status to) {
        return write(j, {.gid = gid, .status = status_change{from, to}});
    }

    std::vector<transaction_record> claim(memory_journal& j, wall_clock::time_point now,
                                          std::string_view owner, std::chrono::milliseconds lease,
                                          std::size_t limit = 100) {
        return run(ioc, j.claim({.now = now, .owner = owner, .lease = lease, .limit = limit}));
    }
};

std::vector<branch_record> two_branches() {
    std::vector<branch_record> out;
    out.push_back({"01", "a", nlohmann::json{{"qty", 1}}});
    out.push_back({"02", "b", nlohmann::json{{"qty", 2}}});
    return out;
}

std::set<std::string> gids_of(const std::vector<transaction_record>& recs) {
    std::set<std::string> out;
    for (const auto& r : recs)
        out.insert(r.gid);
    return out;
}

} // namespace

TEST_CASE("memory_journal: begin, branches, done flags, and writes it refuses") {
    journal_fixture f;
    memory_journal j{memory_journal::options{.keep_ended = true}};
    const auto deadline = wall_clock::now() + 1h;

    CHECK(f.begin(j, "g1", deadline, two_branches()));
    auto rec = j.get("g1");
    REQUIRE(rec);
    CHECK(rec->gid == "g1");
    CHECK(rec->status == tx_status::trying);
    CHECK(rec->deadline == deadline);
    REQUIRE(rec->branches.size() == 2);
    CHECK(rec->branches[1].participant == "b");
    CHECK(rec->branches[1].payload->at("qty") == 2);
    CHECK_FALSE(rec->branches[0].done);

    // A second begin for the same gid: duplicate_gid, and the first is untouched.
    try {
        f.begin(j, "g1", deadline + 1h);
        FAIL("a second begin was accepted");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::duplicate_gid);
        CHECK(std::string(e.what()).find("g1") != std::string::npos);
    }
    CHECK(j.get("g1")->deadline == deadline);
    CHECK(j.get("g1")->branches.size() == 2);

    // A write to a gid it does not hold: unknown_transaction.
    try {
        f.change(j, "nope", tx_status::trying, tx_status::cancelling);
        FAIL("a write to an unknown gid was accepted");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::unknown_transaction);
        CHECK(std::string(e.what()).find("nope") != std::string::npos);
    }
    CHECK_FALSE(j.get("nope"));

    // A conditional write with the wrong `from` is refused whole: neither its branches nor its
    // done flags nor its status are applied.
    std::vector<branch_record> third;
    third.push_back({"03", "c", qty_payload{3}});
    const std::vector<std::string> done{"01"};
    CHECK_FALSE(f.write(j, {.gid = "g1",
                            .new_branches = third,
                            .status = status_change{tx_status::confirming, tx_status::confirmed},
                            .done_branches = done}));
    rec = j.get("g1");
    CHECK(rec->status == tx_status::trying);
    CHECK(rec->branches.size() == 2);
    CHECK_FALSE(rec->branches[0].done);

    // With the right `from` the same kind of write is applied.
    CHECK(f.write(j, {.gid = "g1",
                      .new_branches = third,
                      .status = status_change{tx_status::trying, tx_status::trying}}));
    CHECK(j.get("g1")->branches.size() == 3);
    CHECK(f.change(j, "g1", tx_status::trying, tx_status::confirming));
    CHECK_FALSE(
        f.change(j, "g1", tx_status::trying, tx_status::cancelling)); // decided: no second decision
    CHECK(f.write(j, {.gid = "g1", .done_branches = done}));          // unconditional
    rec = j.get("g1");
    CHECK(rec->status == tx_status::confirming);
    CHECK(rec->branches[0].done);
    CHECK_FALSE(rec->branches[1].done);
    CHECK(j.unfinished() == 1);

    CHECK(f.change(j, "g1", tx_status::confirming, tx_status::confirmed));
    CHECK(j.unfinished() == 0);
    REQUIRE(j.get("g1")); // kept: keep_ended
    CHECK(j.get("g1")->status == tx_status::confirmed);
    CHECK(j.all().size() == 1);
    CHECK(run(f.ioc, j.find("g1")).has_value());
}

TEST_CASE("memory_journal: ended transactions are dropped unless keep_ended") {
    journal_fixture f;
    memory_journal j; // keep_ended = false
    const auto deadline = wall_clock::now() + 1h;
    CHECK(f.begin(j, "c", deadline));
    CHECK(f.begin(j, "x", deadline));
    CHECK(f.begin(j, "live", deadline));
    CHECK(f.change(j, "c", tx_status::trying, tx_status::confirming));
    CHECK(f.change(j, "x", tx_status::trying, tx_status::cancelling));
    CHECK(j.all().size() == 3);
    CHECK(j.unfinished() == 3);

    CHECK(f.change(j, "c", tx_status::confirming, tx_status::confirmed));
    CHECK(f.change(j, "x", tx_status::cancelling, tx_status::cancelled));
    CHECK_FALSE(j.get("c"));
    CHECK_FALSE(j.get("x"));
    CHECK_FALSE(run(f.ioc, j.find("c")).has_value());
    CHECK(gids_of(j.all()) == std::set<std::string>{"live"});
    CHECK(j.unfinished() == 1);
    // Once dropped, the gid is unknown to further writes.
    CHECK_THROWS_AS(f.change(j, "c", tx_status::confirmed, tx_status::confirmed), dtx::error);

    // Even a transaction that ends in its very first write is not kept.
    CHECK(f.write(j, {.gid = "at-once",
                      .begin = begin_transaction{tx_kind::saga, deadline},
                      .status = status_change{tx_status::trying, tx_status::confirmed}}));
    CHECK_FALSE(j.get("at-once"));
}

TEST_CASE("memory_journal: claim takes decided and overdue transactions and leases them") {
    journal_fixture f;
    memory_journal j{memory_journal::options{.keep_ended = true}};
    const auto now = wall_clock::now();

    // Someone else claims this one first, for an hour.
    CHECK(f.begin(j, "leased", now - 1s));
    CHECK(f.change(j, "leased", tx_status::trying, tx_status::confirming));
    CHECK(gids_of(f.claim(j, now, "someone", 1h)) == std::set<std::string>{"leased"});

    CHECK(f.begin(j, "overdue", now - 1s, two_branches())); // trying, past its deadline
    CHECK(f.begin(j, "young", now + 1h));                   // trying, deadline ahead
    CHECK(f.begin(j, "confirming", now + 1h));
    CHECK(f.change(j, "confirming", tx_status::trying, tx_status::confirming));
    CHECK(f.begin(j, "cancelling", now + 1h));
    CHECK(f.change(j, "cancelling", tx_status::trying, tx_status::cancelling));
    CHECK(f.begin(j, "ended", now - 1s));
    CHECK(f.change(j, "ended", tx_status::trying, tx_status::cancelling));
    CHECK(f.change(j, "ended", tx_status::cancelling, tx_status::cancelled));

    auto first = f.claim(j, now, "me", 10min);
    CHECK(gids_of(first) == std::set<std::string>{"overdue", "confirming", "cancelling"});
    for (const auto& rec : first) {
        CAPTURE(rec.gid);
        if (rec.gid == "overdue") {
            // Presumed abort: moved to cancelling in the same step, and returned as such.
            CHECK(rec.status == tx_status::cancelling);
            CHECK(rec.branches.size() == 2);
        }
    }
    CHECK(j.get("overdue")->status == tx_status::cancelling);
    CHECK(j.get("young")->status == tx_status::trying);
    CHECK(j.get("cancelling")->status == tx_status::cancelling);
    CHECK(j.get("leased")->status == tx_status::confirming);

    // A slow coordinator registering a late branch on "overdue" is refused now.
    std::vector<branch_record> late;
    late.push_back({"03", "c", qty_payload{1}});
    CHECK_FALSE(f.write(j, {.gid = "overdue",
                            .new_branches = late,
                            .status = status_change{tx_status::trying, tx_status::trying}}));
    CHECK(j.get("overdue")->branches.size() == 2);

    // While the leases run, nobody gets them again, their holder included.
    CHECK(f.claim(j, now + 1min, "me", 10min).empty());
    CHECK(f.claim(j, now + 5min, "someone", 10min).empty());

    // After its lease a transaction is due again; "young" once its deadline has passed; an
    // ended one never.
    CHECK(gids_of(f.claim(j, now + 30min, "other", 10min)) ==
          std::set<std::string>{"overdue", "confirming", "cancelling"});
    CHECK(gids_of(f.claim(j, now + 2h, "other", 10min)) ==
          std::set<std::string>{"leased", "overdue", "young", "confirming", "cancelling"});
    CHECK(j.get("young")->status == tx_status::cancelling);
    CHECK(j.get("leased")->status == tx_status::confirming);

    // The limit bounds one claim; the rest stay due.
    auto two = f.claim(j, now + 4h, "x", 10min, 2);
    CHECK(two.size() == 2);
    auto rest = f.claim(j, now + 4h, "y", 10min);
    CHECK(rest.size() == 3);
    std::set<std::string> both = gids_of(two);
    for (const auto& g : gids_of(rest))
        CHECK(both.insert(g).second);
    CHECK(both.size() == 5);
}
