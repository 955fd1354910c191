// The SQLite journal: the journal contract, durability across reopening, group commit, schema
// versions, and every way the file or the disk can let it down.
#include <dtx/sqlite/journal.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "support/journal_contract.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

/// A fresh directory for one test, removed afterwards.
struct temp_dir {
    std::filesystem::path path;
    temp_dir() {
        path = std::filesystem::temp_directory_path() / ("dtx-test-" + make_gid());
        std::filesystem::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string file(const char* name) const { return (path / name).string(); }
};

sqlite::journal_options options_for(const std::string& path) {
    sqlite::journal_options o;
    o.path = path;
    return o;
}

std::vector<branch_record> one_branch() {
    return {branch_record{"01", "a", qty_payload{5}}};
}

/// A TCC transaction's first write; `gid` and `branches` must outlive it.
journal_write begin_of(std::string_view gid, const std::vector<branch_record>& branches) {
    return {.gid = gid,
            .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
            .new_branches = branches};
}

/// Runs SQL on the journal file through a connection of its own (as another process would).
void sql(const std::string& path, const char* statement) {
    sqlite::connection c(path);
    sqlite3_busy_timeout(c.get(), 2000);
    c.exec(statement);
}

} // namespace

TEST_CASE("sqlite journal: the journal contract") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::journal j(options_for(dir.file("j.db")));
    check_journal_contract(ioc, j);
    sqlite::journal k(options_for(dir.file("k.db")));
    check_forward_contract(ioc, k);
}

TEST_CASE("memory journal: the journal contract") {
    asio::io_context ioc;
    memory_journal j(memory_journal::options{.keep_ended = true});
    check_journal_contract(ioc, j);
    memory_journal k(memory_journal::options{.keep_ended = true});
    check_forward_contract(ioc, k);
}

TEST_CASE("sqlite journal: what was written survives closing and reopening, lazy writes included") {
    temp_dir dir;
    const auto path = dir.file("j.db");
    asio::io_context ioc;
    {
        sqlite::journal j(options_for(path));
        CHECK(write_sync(ioc, j,
                         {.gid = "g",
                          .begin = begin_transaction{tx_kind::saga, wall_clock::now()},
                          .new_branches = one_branch()}));
        // The destructor makes queued lazy writes durable before closing.
        CHECK(run(ioc, j.write({.gid = "g",
                                .status = status_change{tx_status::trying, tx_status::cancelling}},
                               durability::lazy)));
    }
    sqlite::journal j(options_for(path));
    auto rec = run(ioc, j.find("g"));
    REQUIRE(rec);
    CHECK(rec->kind == tx_kind::saga);
    CHECK(rec->status == tx_status::cancelling);
    CHECK(rec->branches.at(0).payload->at("qty") == 5);
}

TEST_CASE("sqlite journal: concurrent writes share commits (group commit)") {
    temp_dir dir;
    asio::io_context ioc;
    sqlite::journal j(options_for(dir.file("j.db")));
    const int n = 500;
    int completed = 0;
    std::vector<std::string> gids;
    for (int i = 0; i < n; ++i)
        gids.push_back("g" + std::to_string(i));
    for (int i = 0; i < n; ++i)
        asio::co_spawn(
            ioc,
            [&, i]() -> asio::awaitable<void> {
                auto br = one_branch();
                bool ok = co_await j.write(
                    {.gid = gids[i],
                     .begin = begin_transaction{tx_kind::tcc, wall_clock::now() + 1h},
                     .new_branches = br},
                    durability::sync);
                completed += ok;
            },
            asio::detached);
    ioc.run();
    CHECK(completed == n);
    auto s = j.stats();
    CHECK(s.operations == n);
    CHECK(s.commits < static_cast<std::uint64_t>(n)); // many writes per fsync
    MESSAGE("500 concurrent writes in " << s.commits << " commits");
}

TEST_CASE("sqlite journal: a journal from a newer dtx is refused, and left untouched") {
    temp_dir dir;
    const auto path = dir.file("j.db");
    { sqlite::journal j(options_for(path)); }
    sql(path, "PRAGMA user_version = 7");
    try {
        sqlite::journal j(options_for(path));
        FAIL("opened a version 7 journal");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::journal_version);
        CHECK(std::string(e.what()).find("version 7") != std::string::npos);
        CHECK(std::string(e.what()).find(path) != std::string::npos);
    }
    sqlite::connection c(path);
    sqlite::statement v(c, "PRAGMA user_version");
    REQUIRE(v.step());
    CHECK(v.integer(0) == 7);
}

TEST_CASE(
    "sqlite journal: a version 1 journal is migrated on open, and its transactions recovered") {
    temp_dir dir;
    const auto path = dir.file("v1.db");
    // The layout dtx wrote as schema version 1, with one unfinished transaction in it.
    sql(path, R"sql(
        CREATE TABLE dtx_transaction (
            gid TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('tcc', 'saga')), status TEXT NOT NULL,
            deadline_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, ended_ms INTEGER, lease_owner TEXT,
            lease_until_ms INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        CREATE TABLE dtx_branch (
            gid TEXT NOT NULL, branch_id TEXT NOT NULL, participant TEXT NOT NULL, payload TEXT NOT NULL,
            done INTEGER NOT NULL DEFAULT 0, UNIQUE (gid, branch_id));
        CREATE INDEX dtx_transaction_open ON dtx_transaction (lease_until_ms) WHERE ended_ms IS NULL;
        CREATE INDEX dtx_transaction_ended ON dtx_transaction (ended_ms) WHERE ended_ms IS NOT NULL;
        INSERT INTO dtx_transaction VALUES ('old', 'tcc', 'confirming', 1000, 1000, NULL, 'gone', 0);
        INSERT INTO dtx_branch VALUES ('old', '01', 'a', '{"qty":1}', 1);
        INSERT INTO dtx_branch VALUES ('old', '02', 'b', '{"qty":2}', 0);
        PRAGMA user_version = 1;
    )sql");
    asio::io_context ioc;
    auto o = options_for(path);
    o.exclusive = false; // the version is read below while the journal is open
    sqlite::journal j(o);
    auto claimed =
        run(ioc, j.claim({.now = wall_clock::now(), .owner = "me", .lease = 30s, .limit = 10}));
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].gid == "old");
    CHECK(claimed[0].status == tx_status::confirming);
    CHECK_FALSE(claimed[0].forward);
    REQUIRE(claimed[0].branches.size() == 2);
    CHECK(claimed[0].branches[0].done);
    CHECK(claimed[0].branches[1].payload->at("qty") == 2);
    CHECK(write_sync(
        ioc, j,
        {.gid = "old", .status = status_change{tx_status::confirming, tx_status::confirmed}}));
    sqlite::connection c(path);
    sqlite::statement v(c, "PRAGMA user_version");
    REQUIRE(v.step());
    CHECK(v.integer(0) == sqlite::journal::schema_version);
}

TEST_CASE("sqlite journal: a version 2 journal is migrated on open: one index serves claims and "
          "cleanup") {
    temp_dir dir;
    const auto path = dir.file("v2.db");
    const auto now =
        std::chrono::duration_cast<std::chrono::milliseconds>(wall_clock::now().time_since_epoch())
            .count();
    const auto at = [&](std::int64_t offset_ms) { return std::to_string(now + offset_ms); };
    // The layout dtx wrote as schema version 2: two partial indexes.
    sql(path, (R"sql(
        CREATE TABLE dtx_transaction (
            gid TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('tcc', 'saga')), status TEXT NOT NULL,
            deadline_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, ended_ms INTEGER, lease_owner TEXT,
            lease_until_ms INTEGER NOT NULL DEFAULT 0, forward INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        CREATE TABLE dtx_branch (
            gid TEXT NOT NULL, branch_id TEXT NOT NULL, participant TEXT NOT NULL, payload TEXT NOT NULL,
            done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gid, branch_id)) WITHOUT ROWID;
        CREATE INDEX dtx_transaction_open ON dtx_transaction (lease_until_ms) WHERE ended_ms IS NULL;
        CREATE INDEX dtx_transaction_ended ON dtx_transaction (ended_ms) WHERE ended_ms IS NOT NULL;
        -- decided, lease expired: due
        INSERT INTO dtx_transaction VALUES ('due', 'tcc', 'confirming', 1000, 1000, NULL, 'gone', )sql" +
               at(-5000) + R"sql(, 0);
        -- decided, leased for another minute: not due
        INSERT INTO dtx_transaction VALUES ('leased', 'tcc', 'cancelling', 1000, 1000, NULL, 'alive', )sql" +
               at(60000) + R"sql(, 0);
        -- trying before its deadline: not due
        INSERT INTO dtx_transaction VALUES ('young', 'tcc', 'trying', )sql" +
               at(60000) + R"sql(, 1000, NULL, 'alive', 0, 0);
        -- ended two days ago, and a minute ago
        INSERT INTO dtx_transaction VALUES ('old', 'tcc', 'confirmed', 1000, 1000, )sql" +
               at(-2 * 86400000) + R"sql(, NULL, 0, 0);
        INSERT INTO dtx_transaction VALUES ('recent', 'saga', 'cancelled', 1000, 1000, )sql" +
               at(-60000) + R"sql(, NULL, 0, 0);
        INSERT INTO dtx_branch VALUES ('due', '01', 'a', '{"qty":1}', 0);
        INSERT INTO dtx_branch VALUES ('old', '01', 'a', '{"qty":1}', 1);
        PRAGMA user_version = 2;
    )sql")
                  .c_str());
    asio::io_context ioc;
    {
        auto o = options_for(path);
        o.cleanup_interval = 10ms; // cleanup runs as soon as the writer is idle
        sqlite::journal j(o);
        auto claimed =
            run(ioc, j.claim({.now = wall_clock::now(), .owner = "me", .lease = 30s, .limit = 10}));
        REQUIRE(claimed.size() == 1);
        CHECK(claimed[0].gid == "due");
        CHECK(claimed[0].branches.size() == 1);
        // Once leased to "me", it is not due again before that lease runs out.
        CHECK(run(ioc,
                  j.claim({.now = wall_clock::now(), .owner = "other", .lease = 30s, .limit = 10}))
                  .empty());
        auto all = run(ioc, j.claim({.now = wall_clock::now(),
                                     .owner = "me",
                                     .lease = 30s,
                                     .limit = 10,
                                     .take_over = true}));
        CHECK(all.size() == 3); // due, leased, young: every unfinished one
        for (int i = 0; i < 500 && j.stats().cleaned == 0; ++i)
            std::this_thread::sleep_for(10ms);
        CHECK(j.stats().cleaned == 1);
        CHECK_FALSE(run(ioc, j.find("old")));
        CHECK(run(ioc, j.find("recent")));
        // The transactions still write as before: the claimed one ends.
        CHECK(write_sync(
            ioc, j,
            {.gid = "due", .status = status_change{tx_status::confirming, tx_status::confirmed}}));
    }
    sqlite::connection c(path);
    sqlite::statement v(c, "PRAGMA user_version");
    REQUIRE(v.step());
    CHECK(v.integer(0) == sqlite::journal::schema_version);
    sqlite::statement idx(
        c, "SELECT group_concat(name) FROM (SELECT name FROM sqlite_schema WHERE type = 'index' "
           "AND name LIKE 'dtx_transaction_%' ORDER BY name)");
    REQUIRE(idx.step());
    CHECK(idx.text(0) == "dtx_transaction_due");
}

TEST_CASE(
    "sqlite journal: files that are not a journal, corrupt or truncated, are refused clearly") {
    temp_dir dir;
    asio::io_context ioc;

    SUBCASE("garbage") {
        const auto path = dir.file("garbage.db");
        std::ofstream(path) << std::string(8192, 'x');
        CHECK(error_of([&] { sqlite::journal j(options_for(path)); }) == errc::journal_corrupt);
    }
    SUBCASE("another application's database") {
        const auto path = dir.file("other.db");
        sql(path, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)");
        CHECK(error_of([&] { sqlite::journal j(options_for(path)); }) == errc::journal_corrupt);
    }
    SUBCASE("truncated") {
        const auto path = dir.file("j.db");
        {
            sqlite::journal j(options_for(path));
            for (int i = 0; i < 200; ++i)
                write_sync(ioc, j,
                           {.gid = "g" + std::to_string(i),
                            .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                            .new_branches = one_branch()});
        }
        sql(path, "PRAGMA wal_checkpoint(TRUNCATE)"); // everything into the main file
        const auto size = std::filesystem::file_size(path);
        REQUIRE(size > 3 * 4096);
        std::filesystem::resize_file(path, size / 2);
        auto ec = error_of([&] {
            sqlite::journal j(options_for(path));
            for (int i = 0; i < 200; ++i)
                run(ioc, j.find("g" + std::to_string(i)));
        });
        CHECK(ec == errc::journal_corrupt);
    }
}

TEST_CASE(
    "sqlite journal: a database locked by someone else fails the write clearly, then recovers") {
    temp_dir dir;
    const auto path = dir.file("j.db");
    asio::io_context ioc;
    auto o = options_for(path);
    o.busy_timeout = std::chrono::milliseconds(30);
    o.exclusive = false; // shared: another connection can take the lock meanwhile
    sqlite::journal j(o);

    sqlite::connection other(path);
    other.exec("BEGIN EXCLUSIVE");
    std::string what;
    try {
        write_sync(ioc, j,
                   {.gid = "g",
                    .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                    .new_branches = one_branch()});
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::journal_failed);
        what = e.what();
    }
    CHECK(what.find("locked") != std::string::npos);
    CHECK(j.stats().failed_batches == 1);
    other.exec("ROLLBACK");

    // Nothing was applied, so the same write now succeeds.
    CHECK(write_sync(ioc, j,
                     {.gid = "g",
                      .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                      .new_branches = one_branch()}));
    CHECK(run(ioc, j.find("g")));
}

TEST_CASE("sqlite journal: the file belongs to one journal; a second is refused clearly until the "
          "first closes") {
    temp_dir dir;
    auto o = options_for(dir.file("owned.db"));
    o.busy_timeout = std::chrono::milliseconds(50); // how long a second opener waits
    const std::string& path = o.path;
    asio::io_context ioc;
    const auto branches = one_branch();
    const auto begin = [&](std::string_view gid) { return begin_of(gid, branches); };
    {
        sqlite::journal first(o);
        CHECK(write_sync(ioc, first, begin("a")));
        std::string what;
        try {
            sqlite::journal second(o);
            FAIL("a second journal opened the file");
        } catch (const dtx::error& e) {
            CHECK(e.code() == errc::journal_failed);
            what = e.what();
        }
        CHECK(what.find("in use by another process") != std::string::npos);
        CHECK(what.find(path) != std::string::npos);
        // Nor can another connection read it, as a second coordinator process would.
        sqlite::connection other(path);
        sqlite3_busy_timeout(other.get(), 50);
        CHECK_THROWS_AS(other.exec("SELECT count(*) FROM dtx_transaction"), dtx::error);
        // The first journal goes on as if nothing happened.
        CHECK(write_sync(ioc, first, begin("b")));
    }
    // Closed: the next journal opens it and finds both.
    sqlite::journal next(o);
    CHECK(run(ioc, next.find("a")));
    CHECK(run(ioc, next.find("b")));
}

TEST_CASE(
    "sqlite journal: with exclusive = false, other processes may read the journal meanwhile") {
    temp_dir dir;
    asio::io_context ioc;
    auto o = options_for(dir.file("shared.db"));
    o.exclusive = false;
    sqlite::journal j(o);
    const auto branches = one_branch();
    CHECK(write_sync(ioc, j, begin_of("a", branches)));
    sqlite::connection reader(o.path);
    sqlite3_busy_timeout(reader.get(), 2000);
    sqlite::statement count(reader, "SELECT count(*) FROM dtx_transaction");
    REQUIRE(count.step());
    CHECK(count.integer(0) == 1);
}

TEST_CASE(
    "sqlite journal: a full disk fails writes clearly; transactions are cancelled, not lost") {
    temp_dir dir;
    asio::io_context ioc;
    auto o = options_for(dir.file("j.db"));
    o.max_size_bytes = 64 * 1024;
    sqlite::journal j(o);

    participant_registry reg;
    resource a{"a"};
    reg.add_tcc("a", a.tcc());
    auto opts = fast_options();
    coordinator coord(ioc.get_executor(), j, reg, opts);

    // Big payloads fill the 64 KiB quickly.
    nlohmann::json big = {{"qty", 1}, {"padding", std::string(2000, 'p')}};
    int confirmed = 0, refused = 0;
    for (int i = 0; i < 100; ++i) {
        tx_result r = run(ioc, coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("a", big);
        }));
        if (r.status == tx_status::confirmed) {
            ++confirmed;
        } else {
            ++refused;
            CHECK(r.reason == errc::journal_failed);
            CAPTURE(r.message);
            CHECK(r.message.find("full") != std::string::npos);
        }
    }
    CHECK(confirmed > 0);
    CHECK(refused > 0);
    // No try was sent for a transaction whose registration failed: nothing is left reserved.
    CHECK(check_invariants({&a}) == "");
    CHECK(a.taken() == confirmed);
}

TEST_CASE("sqlite journal: ended transactions are cleaned up in batches after the retention") {
    temp_dir dir;
    asio::io_context ioc;
    auto o = options_for(dir.file("j.db"));
    o.retention = std::chrono::milliseconds(0);
    o.cleanup_interval = std::chrono::milliseconds(1);
    o.cleanup_batch = 7;
    sqlite::journal j(o);
    for (int i = 0; i < 50; ++i) {
        std::string gid = "g" + std::to_string(i);
        write_sync(ioc, j,
                   {.gid = gid,
                    .begin = begin_transaction{tx_kind::tcc, wall_clock::now()},
                    .new_branches = one_branch()});
        write_sync(ioc, j,
                   {.gid = gid, .status = status_change{tx_status::trying, tx_status::cancelling}});
        if (i % 2 == 0)
            write_sync(
                ioc, j,
                {.gid = gid, .status = status_change{tx_status::cancelling, tx_status::cancelled}});
    }
    for (int i = 0; i < 2000 && j.stats().cleaned < 25; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(j.stats().cleaned == 25);
    CHECK_FALSE(run(ioc, j.find("g0")));
    CHECK(run(ioc, j.find("g1"))); // unfinished ones are never cleaned
    CHECK(run(ioc, j.find("g1"))->status == tx_status::cancelling);
}

TEST_CASE("sqlite journal: reads leave no transaction open, so the WAL stays bounded") {
    temp_dir dir;
    const auto path = dir.file("j.db");
    asio::io_context ioc;
    auto o = options_for(path);
    o.synchronous_full = false; // this test is about the WAL's size, not about fsync
    sqlite::journal j(o);
    std::vector<branch_record> br{
        branch_record{"01", "a", nlohmann::json{{"padding", std::string(300, 'p')}}}};
    write_sync(ioc, j,
               {.gid = "first",
                .begin = begin_transaction{tx_kind::tcc, wall_clock::now() - 1s},
                .new_branches = br});
    // A claim and a find: reads that once left their statement open (and the WAL unbounded).
    CHECK(claim_now(ioc, j, "me", 1h).size() == 1);
    CHECK(run(ioc, j.find("first")));
    // One write at a time: a commit each, which is what grows a WAL that cannot restart.
    int done = run(ioc, [&]() -> asio::awaitable<int> {
        int n = 0;
        for (int i = 0; i < 2000; ++i) {
            const std::string gid = "g" + std::to_string(i);
            const journal_write begin{.gid = gid,
                                      .begin =
                                          begin_transaction{tx_kind::tcc, wall_clock::now() + 1h},
                                      .new_branches = br};
            const journal_write decide{
                .gid = gid, .status = status_change{tx_status::trying, tx_status::confirming}};
            const journal_write end{
                .gid = gid, .status = status_change{tx_status::confirming, tx_status::confirmed}};
            co_await j.write(begin, durability::sync);
            co_await j.write(decide, durability::sync);
            n += co_await j.write(end, durability::sync);
        }
        co_return n;
    }());
    CHECK(done == 2000);
    const auto wal = std::filesystem::file_size(path + "-wal");
    MESSAGE("WAL after 6,000 writes: " << wal / 1024 << " KiB");
    CHECK(wal < 16u * 1024 * 1024); // SQLite checkpoints at ~4 MiB; an open read stops that
}
