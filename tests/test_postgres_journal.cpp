// The PostgreSQL journal, against a server the test starts on 127.0.0.1 and stops: the journal
// contract, group commit, claims shared by several instances, a newer schema, a lost server.
#include <dtx/coordinator.hpp>
#include <dtx/postgres/journal.hpp>

#include <doctest/doctest.h>

#include <set>

#include "support/journal_contract.hpp"
#include "support/pg_server.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {
pg_server& server() {
    return shared_pg_server();
}
std::string fresh_database() {
    return fresh_pg_database();
}
} // namespace

TEST_CASE("postgres journal: the journal contract") {
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database()});
    check_journal_contract(ioc, j);
    postgres::journal k({.conninfo = fresh_database()});
    check_forward_contract(ioc, k);
}

TEST_CASE("postgres journal: the journal contract with several connections") {
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database(), .connections = 3});
    check_journal_contract(ioc, j);
}

namespace {

/// The tables dtx wrote as schema version 1 (version 2 added `forward`), without the functions:
/// a migration replaces those.
void create_old_schema(postgres::connection& c, int version) {
    c.exec("CREATE TABLE dtx_meta (key text PRIMARY KEY, value integer NOT NULL)");
    c.exec(R"sql(
CREATE TABLE dtx_transaction (
    gid text PRIMARY KEY, kind text NOT NULL CHECK (kind IN ('tcc', 'saga')), status text NOT NULL,
    deadline_ms bigint NOT NULL, created_ms bigint NOT NULL, ended_ms bigint, lease_owner text,
    lease_until_ms bigint NOT NULL DEFAULT 0))sql");
    c.exec(R"sql(
CREATE TABLE dtx_branch (
    gid text NOT NULL, seq bigserial, branch_id text NOT NULL, participant text NOT NULL, payload jsonb NOT NULL,
    done boolean NOT NULL DEFAULT false, PRIMARY KEY (gid, branch_id)))sql");
    c.exec("CREATE INDEX dtx_transaction_open ON dtx_transaction (lease_until_ms) WHERE ended_ms "
           "IS NULL");
    c.exec("CREATE INDEX dtx_transaction_ended ON dtx_transaction (ended_ms) WHERE ended_ms IS NOT "
           "NULL");
    if (version >= 2)
        c.exec("ALTER TABLE dtx_transaction ADD COLUMN forward boolean NOT NULL DEFAULT false");
    const std::string v = std::to_string(version);
    c.exec("INSERT INTO dtx_meta VALUES ('journal_version', $1::int), ('journal_functions', 3)",
           {v});
}

int journal_version(postgres::connection& c) {
    return std::stoi(
        std::string(c.exec("SELECT value FROM dtx_meta WHERE key = 'journal_version'").text(0, 0)));
}

} // namespace

TEST_CASE("postgres journal: a version 1 schema is migrated on open, its transactions kept") {
    asio::io_context ioc;
    const std::string db = fresh_database();
    postgres::connection c(db);
    create_old_schema(c, 1);
    c.exec("INSERT INTO dtx_transaction VALUES ('old', 'tcc', 'confirming', 1000, 1000, NULL, "
           "'gone', 0)");
    c.exec("INSERT INTO dtx_branch (gid, branch_id, participant, payload, done) VALUES "
           "('old', '01', 'a', '{\"qty\": 1}', true), ('old', '02', 'b', '{\"qty\": 2}', false)");
    postgres::journal j({.conninfo = db});
    CHECK(journal_version(c) == postgres::journal::schema_version);
    auto claimed = claim_now(ioc, j, "me", std::chrono::seconds(30));
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].gid == "old");
    CHECK(claimed[0].status == tx_status::confirming);
    CHECK_FALSE(claimed[0].forward);
    REQUIRE(claimed[0].branches.size() == 2);
    CHECK(claimed[0].branches[0].done);
    CHECK(claimed[0].branches[1].payload->at("qty") == 2);
    CHECK_FALSE(claimed[0].branches[1].done);
    CHECK(write_sync(ioc, j,
                     {.gid = "old",
                      .status = status_change{tx_status::confirming, tx_status::confirmed},
                      .lease = lease_change{"me", wall_clock::now()}}));
}

TEST_CASE("postgres journal: a version 2 schema with unfinished transactions is migrated on open "
          "and recovered") {
    asio::io_context ioc;
    const std::string db = fresh_database();
    postgres::connection c(db);
    create_old_schema(c, 2);
    // Decided to confirm, its first branch confirmed already; overdue while trying (presumed
    // abort); a planned saga, trying (recovered forward); one ended; one trying within its
    // deadline.
    c.exec(R"sql(
INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms, ended_ms, lease_owner, lease_until_ms, forward)
VALUES ('decided', 'tcc', 'confirming', 1000, 1000, NULL, 'gone', 0, false),
       ('overdue', 'tcc', 'trying', 1000, 1000, NULL, 'gone', 0, false),
       ('planned', 'saga', 'trying', 1000, 1000, NULL, NULL, 0, true),
       ('ended', 'tcc', 'confirmed', 1000, 1000, 2000, NULL, 0, false),
       ('young', 'tcc', 'trying', 9000000000000, 1000, NULL, 'alive', 9000000000000, false))sql");
    // Inserted out of order: the registration order is the sequence, not the branch id.
    c.exec(R"sql(
INSERT INTO dtx_branch (gid, branch_id, participant, payload, done)
VALUES ('decided', '01', 'a', '{"qty": 1}', true), ('decided', '02', 'b', '{"qty": 2}', false),
       ('overdue', '01', 'a', '{"qty": 3}', false), ('overdue', '02', 'b', '{"qty": 4}', false),
       ('planned', '02', 's', '{"qty": 6}', false), ('planned', '01', 's', '{"qty": 5}', false),
       ('ended', '01', 'a', '{"qty": 7}', true), ('young', '01', 'a', '{"qty": 8}', false))sql");

    postgres::journal j({.conninfo = db});
    CHECK(journal_version(c) == postgres::journal::schema_version);
    CHECK(c.exec("SELECT 1 FROM pg_tables WHERE tablename = 'dtx_branch'").rows() == 0);
    auto planned = run(ioc, j.find("planned"));
    REQUIRE(planned);
    CHECK(planned->forward);
    REQUIRE(planned->branches.size() == 2);
    CHECK(planned->branches[0].branch_id == "02");
    CHECK(planned->branches[1].payload->at("qty") == 5);
    auto ended = run(ioc, j.find("ended"));
    REQUIRE(ended);
    CHECK(ended->status == tx_status::confirmed);
    CHECK(ended->branches.at(0).done);
    // The branch rows stay readable as such.
    CHECK(c.exec("SELECT 1 FROM dtx_branch WHERE gid = 'decided' AND branch_id = '01' AND done")
              .rows() == 1);

    participant_registry reg;
    resource a{"a"}, b{"b"}, s{"s"};
    reg.add_tcc("a", a.tcc());
    reg.add_tcc("b", b.tcc());
    reg.add_saga("s", s.saga());
    // The try that preceded the decision.
    const nlohmann::json qty2{{"qty", 2}};
    run(ioc, b.tcc().on_try(branch_request{
                 .gid = "decided", .branch_id = "02", .op = branch_op::try_, .payload = qty2}));
    coordinator coord(ioc.get_executor(), j, reg, fast_options());
    const recovery_report report = run(ioc, coord.recover());
    CHECK(report.claimed == 3);
    CHECK(report.finished == 3);
    CHECK(run(ioc, j.find("decided"))->status == tx_status::confirmed);
    CHECK(run(ioc, j.find("overdue"))->status == tx_status::cancelled);
    CHECK(run(ioc, j.find("planned"))->status == tx_status::confirmed);
    CHECK(run(ioc, j.find("young"))->status == tx_status::trying);
    CHECK(a.ops("decided", "01").empty()); // done before the migration
    CHECK(b.ops("decided", "02") == std::vector<branch_op>{branch_op::try_, branch_op::confirm});
    CHECK(a.ops("overdue", "01") == std::vector<branch_op>{branch_op::cancel});
    CHECK(b.ops("overdue", "02") == std::vector<branch_op>{branch_op::cancel});
    CHECK(s.ops("planned", "02") == std::vector<branch_op>{branch_op::action});
    CHECK(s.ops("planned", "01") == std::vector<branch_op>{branch_op::action});
}

namespace {
/// 200 TCC transactions at once through a coordinator, some cancelled, journaled through
/// `connections` connections.
void concurrent_tcc(std::size_t connections) {
    CAPTURE(connections);
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database(), .connections = connections});
    participant_registry reg;
    resource a{"a"}, b{"b"};
    reg.add_tcc("a", a.tcc());
    reg.add_tcc("b", b.tcc());
    b.set_script([](std::string_view gid, auto, branch_op op, auto) {
        return op == branch_op::try_ && gid.back() % 3 == 0 ? act::fail : act::ok;
    });
    coordinator coord(ioc.get_executor(), j, reg, fast_options());
    const int n = 200;
    int confirmed = 0, cancelled = 0;
    for (int i = 0; i < n; ++i)
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
                tx_result r = co_await coord.tcc([](tcc_transaction& tx) -> asio::awaitable<void> {
                    co_await tx.add_branch("a", qty_payload{1});
                    co_await tx.add_branch("b", qty_payload{1});
                });
                (r.status == tx_status::confirmed ? confirmed : cancelled)++;
            },
            asio::detached);
    ioc.run();
    CHECK(confirmed + cancelled == n);
    CHECK(confirmed > 0);
    CHECK(cancelled > 0);
    CHECK(check_invariants({&a, &b}) == "");
    auto s = j.stats();
    CHECK(s.failed_batches == 0);
    CHECK(s.commits < s.operations); // writes shared statements
    MESSAGE(s.operations << " journal operations in " << s.commits << " statements");
}
} // namespace

TEST_CASE("postgres journal: concurrent writes share statements; TCC end to end") {
    concurrent_tcc(1);
    concurrent_tcc(2);
}

TEST_CASE("postgres journal: instances claiming at once never take the same transaction") {
    asio::io_context ioc;
    const auto conninfo = fresh_database();
    postgres::journal writer({.conninfo = conninfo});
    const auto overdue = wall_clock::now() - std::chrono::seconds(1);
    std::vector<branch_record> br{branch_record{"01", "a", qty_payload{1}}};
    for (int i = 0; i < 300; ++i)
        CHECK(write_sync(ioc, writer,
                         {.gid = "g" + std::to_string(1000 + i),
                          .begin = begin_transaction{tx_kind::tcc, overdue},
                          .new_branches = br}));

    // Three instances, each with its own connection, claim in small batches concurrently.
    std::vector<std::unique_ptr<postgres::journal>> instances;
    for (int i = 0; i < 3; ++i)
        instances.push_back(
            std::make_unique<postgres::journal>(postgres::journal_options{.conninfo = conninfo}));
    std::vector<std::string> taken;
    int rounds = 0;
    ioc.restart(); // the writes above ran it out of work
    for (int i = 0; i < 3; ++i)
        asio::co_spawn(
            ioc,
            [&, i]() -> asio::awaitable<void> {
                const std::string owner = "instance-" + std::to_string(i);
                for (;;) {
                    auto batch = co_await instances[i]->claim({.now = wall_clock::now(),
                                                               .owner = owner,
                                                               .lease = std::chrono::minutes(5),
                                                               .limit = 7});
                    ++rounds;
                    if (batch.empty())
                        co_return;
                    for (auto& rec : batch) {
                        CHECK(rec.status == tx_status::cancelling);
                        taken.push_back(rec.gid);
                    }
                }
            },
            asio::detached);
    ioc.run();
    std::set<std::string> unique(taken.begin(), taken.end());
    CHECK(taken.size() == 300);
    CHECK(unique.size() == 300);
    MESSAGE("300 transactions claimed by 3 instances in " << rounds << " claims, none twice");
}

TEST_CASE("postgres journal: a database migrated by a newer dtx is refused") {
    const auto conninfo = fresh_database();
    { postgres::journal j({.conninfo = conninfo}); }
    {
        postgres::connection c(conninfo);
        c.exec("UPDATE dtx_meta SET value = 5 WHERE key = 'journal_version'");
    }
    CHECK(error_of([&] { postgres::journal j({.conninfo = conninfo}); }) == errc::journal_version);
}

TEST_CASE(
    "postgres journal: a server that goes away fails writes clearly, and is used again when back") {
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database()});
    std::vector<branch_record> br{branch_record{"01", "a", qty_payload{1}}};
    CHECK(write_sync(ioc, j,
                     {.gid = "before",
                      .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                      .new_branches = br}));

    server().stop();
    std::string what;
    try {
        write_sync(ioc, j,
                   {.gid = "during",
                    .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                    .new_branches = br});
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::journal_failed);
        what = e.what();
    }
    CHECK(what.find("PostgreSQL") != std::string::npos);
    server().restart();

    CHECK(write_sync(ioc, j,
                     {.gid = "after",
                      .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                      .new_branches = br}));
    CHECK(run(ioc, j.find("before")));
    CHECK(run(ioc, j.find("after")));
    CHECK_FALSE(run(ioc, j.find("during")));
    CHECK(j.stats().reconnects >= 1);
}

TEST_CASE("postgres journal: write functions are replaced when older, never when newer") {
    asio::io_context ioc;
    const auto conninfo = fresh_database();
    auto functions_version = [&] {
        postgres::connection c(conninfo);
        auto r = c.exec("SELECT value FROM dtx_meta WHERE key = 'journal_functions'");
        return r.rows() ? std::stoi(std::string(r.text(0, 0))) : 0;
    };
    // Write functions that refuse everything stand for functions of another version.
    auto install_stub = [&](int version) {
        postgres::connection c(conninfo);
        c.exec("CREATE OR REPLACE FUNCTION dtx_apply(batch jsonb, now_ms bigint) RETURNS jsonb "
               "LANGUAGE sql AS $$ SELECT jsonb_agg('refused'::text) FROM "
               "jsonb_array_elements(batch) $$");
        c.exec("CREATE OR REPLACE FUNCTION dtx_apply_single(w jsonb, now_ms bigint) RETURNS text "
               "LANGUAGE sql AS $$ SELECT 'refused'::text $$");
        const std::string v = std::to_string(version);
        c.exec("UPDATE dtx_meta SET value = $1::int WHERE key = 'journal_functions'", {v});
    };
    std::vector<branch_record> br{branch_record{"01", "a", qty_payload{1}}};
    { postgres::journal j({.conninfo = conninfo}); }
    CHECK(functions_version() == postgres::journal::functions_version);

    // Older (as a database set up by the first dtx with this layout): replaced on open.
    install_stub(1);
    {
        postgres::journal j({.conninfo = conninfo});
        CHECK(write_sync(ioc, j,
                         {.gid = "g1",
                          .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                          .new_branches = br}));
    }
    CHECK(functions_version() == postgres::journal::functions_version);

    // Newer (set up by a later dtx): kept, and used.
    install_stub(postgres::journal::functions_version + 1);
    {
        postgres::journal j({.conninfo = conninfo});
        CHECK_FALSE(write_sync(ioc, j,
                               {.gid = "g2",
                                .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                                .new_branches = br}));
    }
    CHECK(functions_version() == postgres::journal::functions_version + 1);
}

TEST_CASE(
    "postgres journal: a write that changes nothing in the transaction still checks its status") {
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database()});
    std::vector<branch_record> one{branch_record{"01", "a", qty_payload{1}}};
    std::vector<branch_record> two{branch_record{"02", "a", qty_payload{2}}};
    const auto later = wall_clock::now() + std::chrono::minutes(1);
    CHECK(write_sync(ioc, j,
                     {.gid = "t",
                      .begin = begin_transaction{tx_kind::tcc, later},
                      .new_branches = one,
                      .lease = lease_change{"me", later}}));
    // A decision and a lease in one write; then a branch for a status it no longer has is refused
    // and not added.
    CHECK(write_sync(ioc, j,
                     {.gid = "t",
                      .status = status_change{tx_status::trying, tx_status::cancelling},
                      .lease = lease_change{"me", later}}));
    CHECK_FALSE(write_sync(ioc, j,
                           {.gid = "t",
                            .new_branches = two,
                            .status = status_change{tx_status::trying, tx_status::trying}}));
    // A lease held by another owner refuses the status change too.
    CHECK_FALSE(write_sync(ioc, j,
                           {.gid = "t",
                            .status = status_change{tx_status::cancelling, tx_status::cancelled},
                            .lease = lease_change{"other", later}}));
    auto t = run(ioc, j.find("t"));
    REQUIRE(t);
    CHECK(t->status == tx_status::cancelling);
    CHECK(t->branches.size() == 1);
    // A begin that is also a decision other than from trying is refused, and writes nothing.
    CHECK_FALSE(write_sync(ioc, j,
                           {.gid = "u",
                            .begin = begin_transaction{tx_kind::tcc, later},
                            .new_branches = one,
                            .status = status_change{tx_status::confirming, tx_status::confirmed}}));
    CHECK_FALSE(run(ioc, j.find("u")));
}

namespace {
/// Each transaction's writes queued back to back, through `connections` connections.
void writes_in_order(std::size_t connections) {
    CAPTURE(connections);
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database(), .connections = connections});
    const auto later = wall_clock::now() + std::chrono::minutes(1);
    std::vector<branch_record> first{branch_record{"01", "a", qty_payload{1}}};
    std::vector<branch_record> second{branch_record{"02", "b", qty_payload{2}}};
    const std::vector<std::string> done{"01"};
    const int n = 50;
    bool all_ok = true;
    // Lazy writes complete at once, so each transaction's writes are queued back to back and
    // most batches hold several writes for one gid.
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < n; ++i) {
                const std::string gid = "o" + std::to_string(i);
                const journal_write begin{.gid = gid,
                                          .begin = begin_transaction{tx_kind::tcc, later},
                                          .new_branches = first};
                co_await j.write(begin, durability::lazy);
                const journal_write add{.gid = gid,
                                        .new_branches = second,
                                        .status =
                                            status_change{tx_status::trying, tx_status::trying}};
                co_await j.write(add, durability::lazy);
                const journal_write decide{
                    .gid = gid, .status = status_change{tx_status::trying, tx_status::confirming}};
                co_await j.write(decide, durability::lazy);
                const journal_write mark{.gid = gid, .done_branches = done};
                const bool ok = co_await j.write(mark, durability::sync);
                all_ok = all_ok && ok;
            }
        },
        asio::detached);
    ioc.run();
    CHECK(all_ok);
    for (int i = 0; i < n; ++i) {
        auto t = run(ioc, j.find("o" + std::to_string(i)));
        REQUIRE(t);
        CHECK(t->status == tx_status::confirming);
        REQUIRE(t->branches.size() == 2);
        CHECK(t->branches[0].branch_id == "01");
        CHECK(t->branches[0].done);
        CHECK(t->branches[1].branch_id == "02");
        CHECK_FALSE(t->branches[1].done);
    }
    const auto s = j.stats();
    CHECK(s.failed_batches == 0);
    MESSAGE(s.operations << " journal operations in " << s.commits << " statements");
}
} // namespace

TEST_CASE("postgres journal: writes for one transaction in one batch are applied in order") {
    writes_in_order(1);
    writes_in_order(3);
}

TEST_CASE("postgres journal: a batch of different transactions goes to dtx_apply_distinct, each "
          "write answered") {
    asio::io_context ioc;
    const auto conninfo = fresh_database();
    postgres::journal j({.conninfo = conninfo});
    const auto later = wall_clock::now() + std::chrono::minutes(1);
    std::vector<branch_record> br{branch_record{"01", "a", qty_payload{1}}};
    const auto begin = [&](std::string_view gid) { // gids are literals: they outlive the writes
        return journal_write{
            .gid = gid, .begin = begin_transaction{tx_kind::tcc, later}, .new_branches = br};
    };
    const auto change = [](std::string_view gid, tx_status from, tx_status to) {
        return journal_write{.gid = gid, .status = status_change{from, to}};
    };
    CHECK(write_sync(ioc, j, begin("taken")));
    CHECK(write_sync(ioc, j, begin("moved")));
    {
        // dtx_apply takes batches with a transaction twice; none here, so it must not be called.
        postgres::connection c(conninfo);
        c.exec("CREATE OR REPLACE FUNCTION dtx_apply(batch jsonb, now_ms bigint) RETURNS jsonb "
               "LANGUAGE plpgsql "
               "AS $$ BEGIN RAISE EXCEPTION 'dtx_apply called for %', batch; END $$");
    }
    // Lazy writes wait for the next sync one and share its batch: each batch below holds several
    // transactions' writes, whose answers must reach the right writers.
    const std::vector<std::pair<journal_write, journal_write>> batches{
        {begin("lazy"), begin("fresh")},
        {change("lazy", tx_status::trying, tx_status::confirming), begin("taken")},
        {change("moved", tx_status::trying, tx_status::cancelling),
         change("nowhere", tx_status::trying, tx_status::confirming)},
        {change("taken", tx_status::trying, tx_status::confirming),
         change("moved", tx_status::trying, tx_status::confirming)},
    };
    std::vector<std::string> answers;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            for (const auto& [lazy, waited] : batches) {
                co_await j.write(lazy, durability::lazy);
                std::string a;
                try {
                    const bool ok = co_await j.write(waited, durability::sync);
                    a = ok ? "ok" : "refused";
                } catch (const error& e) {
                    a = e.code() == errc::duplicate_gid         ? "duplicate_gid"
                        : e.code() == errc::unknown_transaction ? "unknown_transaction"
                                                                : e.what();
                }
                answers.push_back(a);
            }
        },
        asio::detached);
    ioc.restart();
    ioc.run();
    std::string said;
    for (const auto& a : answers)
        said += a + "; ";
    CAPTURE(said);
    CHECK(answers ==
          std::vector<std::string>{"ok", "duplicate_gid", "unknown_transaction", "refused"});
    const auto status_of = [&](std::string_view gid) -> std::string {
        auto t = run(ioc, j.find(gid));
        if (!t)
            return "missing";
        return std::string(to_string(t->status));
    };
    CHECK(status_of("fresh") == "trying");
    CHECK(status_of("lazy") == "confirming");
    CHECK(status_of("taken") == "confirming");
    CHECK(status_of("moved") == "cancelling");
    const auto s = j.stats();
    CHECK(s.failed_batches == 0);
}

TEST_CASE("postgres journal: functions of version 4 (no dtx_apply_single) are replaced on open") {
    asio::io_context ioc;
    const auto conninfo = fresh_database();
    { postgres::journal j({.conninfo = conninfo}); }
    {
        // As dtx with functions version 4 left the database.
        postgres::connection c(conninfo);
        c.exec("DROP FUNCTION dtx_apply_single(jsonb, bigint)");
        c.exec("UPDATE dtx_meta SET value = 4 WHERE key = 'journal_functions'");
    }
    postgres::journal j({.conninfo = conninfo});
    std::vector<branch_record> br{branch_record{"01", "a", qty_payload{1}}};
    const auto later = wall_clock::now() + std::chrono::minutes(1);
    CHECK(write_sync(
        ioc, j, {.gid = "g", .begin = begin_transaction{tx_kind::tcc, later}, .new_branches = br}));
    CHECK(write_sync(
        ioc, j, {.gid = "g", .status = status_change{tx_status::trying, tx_status::confirming}}));
    postgres::connection c(conninfo);
    CHECK(c.exec("SELECT value FROM dtx_meta WHERE key = 'journal_functions'").text(0, 0) ==
          std::to_string(postgres::journal::functions_version));
    CHECK(run(ioc, j.find("g"))->status == tx_status::confirming);
}

namespace {

/// Makes every write statement on dtx_transaction drop the prepared statements of its session,
/// as a pooler in transaction mode does when it hands the session to another client between
/// two statements.
void drop_prepared_statements_after_writes(const std::string& conninfo) {
    postgres::connection c(conninfo);
    c.exec("CREATE FUNCTION test_deallocate() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN NULL; END $$");
    c.exec("CREATE TRIGGER test_deallocate AFTER INSERT OR UPDATE ON dtx_transaction "
           "FOR EACH STATEMENT EXECUTE FUNCTION test_deallocate()");
}

/// One TCC transaction through `j`, written by itself (batches of one) or all at once (lazy
/// writes, one batch), and whether the journal holds it as confirmed with its two branches.
bool tcc_through(asio::io_context& ioc, postgres::journal& j, const std::string& gid,
                 durability d) {
    const auto later = wall_clock::now() + std::chrono::minutes(1);
    std::vector<branch_record> first{branch_record{"01", "a", qty_payload{1}}};
    std::vector<branch_record> second{branch_record{"02", "b", qty_payload{2}}};
    bool ok = true;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            const journal_write begin{.gid = gid,
                                      .begin = begin_transaction{tx_kind::tcc, later},
                                      .new_branches = first,
                                      .lease = lease_change{"me", later}};
            ok = co_await j.write(begin, d) && ok;
            const journal_write add{.gid = gid,
                                    .new_branches = second,
                                    .status = status_change{tx_status::trying, tx_status::trying}};
            ok = co_await j.write(add, d) && ok;
            const journal_write decide{.gid = gid,
                                       .status =
                                           status_change{tx_status::trying, tx_status::confirming},
                                       .lease = lease_change{"me", later}};
            ok = co_await j.write(decide, d) && ok;
            const journal_write end{
                .gid = gid, .status = status_change{tx_status::confirming, tx_status::confirmed}};
            ok = co_await j.write(end, durability::sync) && ok;
        },
        asio::detached);
    ioc.restart();
    ioc.run();
    auto t = run(ioc, j.find(gid));
    return ok && t && t->status == tx_status::confirmed && t->branches.size() == 2;
}

} // namespace

TEST_CASE("postgres journal: prepared statements the server lost are prepared again") {
    asio::io_context ioc;
    const auto conninfo = fresh_database();
    postgres::journal j({.conninfo = conninfo});
    CHECK(tcc_through(ioc, j, "before", durability::sync));
    CHECK(j.stats().lost_statements == 0);
    drop_prepared_statements_after_writes(conninfo);
    for (int i = 0; i < 5; ++i) {
        CHECK(tcc_through(ioc, j, "single" + std::to_string(i), durability::sync));
        CHECK(tcc_through(ioc, j, "batch" + std::to_string(i), durability::lazy));
    }
    const auto s = j.stats();
    CHECK(s.failed_batches == 0);
    CHECK(s.lost_statements >= 10); // each kind of statement, again and again
    MESSAGE(s.lost_statements << " prepared statements lost and prepared again");
}

TEST_CASE("postgres journal: without prepared statements") {
    asio::io_context ioc;
    const auto conninfo = fresh_database();
    postgres::journal j({.conninfo = conninfo, .prepare_statements = false});
    drop_prepared_statements_after_writes(conninfo); // nothing to lose
    CHECK(tcc_through(ioc, j, "single", durability::sync));
    CHECK(tcc_through(ioc, j, "batch", durability::lazy));
    CHECK(j.stats().lost_statements == 0);
    CHECK(j.stats().failed_batches == 0);
}

TEST_CASE("postgres connection: a prepared statement the server lost is prepared again, in "
          "autocommit only") {
    postgres::connection c(fresh_database());
    CHECK(c.exec_prepared("two", "SELECT $1::int + 1", {"1"}).text(0, 0) == "2");
    c.exec("DEALLOCATE ALL");
    CHECK(c.exec_prepared("two", "SELECT $1::int + 1", {"2"}).text(0, 0) == "3");
    CHECK(c.lost_statements() == 1);
    // In a transaction block the error has aborted the transaction: it is the caller's to see.
    c.exec("BEGIN");
    c.exec("DEALLOCATE ALL");
    CHECK(error_of([&] { c.exec_prepared("two", "SELECT $1::int + 1", {"3"}); }) ==
          errc::database_failed); // a connection of its own: not the journal's
    c.exec("ROLLBACK");
    CHECK(c.exec_prepared("two", "SELECT $1::int + 1", {"4"}).text(0, 0) == "5");
    // A name another statement holds in the session: run unprepared from then on.
    c.exec("PREPARE taken AS SELECT 'other'");
    CHECK(c.exec_prepared("taken", "SELECT $1::int + 1", {"5"}).text(0, 0) == "6");
    CHECK_FALSE(c.prepares());
    CHECK(c.exec_prepared("three", "SELECT $1::int + 2", {"5"}).text(0, 0) == "7");
}

TEST_CASE(
    "postgres journal: with several connections, a claim sees the lazy writes queued before it") {
    asio::io_context ioc;
    postgres::journal j({.conninfo = fresh_database(), .connections = 3});
    const auto overdue = wall_clock::now() - std::chrono::seconds(1);
    std::vector<branch_record> br{branch_record{"01", "a", qty_payload{1}}};
    const int n = 30;
    for (int i = 0; i < n; ++i)
        CHECK(write_sync(ioc, j,
                         {.gid = "l" + std::to_string(i),
                          .begin = begin_transaction{tx_kind::tcc, overdue},
                          .new_branches = br}));
    std::vector<transaction_record> claimed;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            // Ends that wait for company on their connections, then a claim on the first.
            for (int i = 0; i < n; ++i) {
                const std::string gid = "l" + std::to_string(i);
                const journal_write end{
                    .gid = gid, .status = status_change{tx_status::trying, tx_status::cancelled}};
                co_await j.write(end, durability::lazy);
            }
            const claim_request everything{.now = wall_clock::now(),
                                           .owner = "me",
                                           .lease = std::chrono::seconds(30),
                                           .limit = 100,
                                           .take_over = true};
            claimed = co_await j.claim(everything);
        },
        asio::detached);
    ioc.restart();
    ioc.run();
    CHECK(claimed.empty());
    for (int i = 0; i < n; ++i)
        CHECK(run(ioc, j.find("l" + std::to_string(i)))->status == tx_status::cancelled);
}
