// The SQLite wrapper that barrier handlers receive: every SQLite type bound and read back without
// ambiguity, unsigned values that do not fit refused, and errors that say whose database failed.
#include <dtx/sqlite/connection.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "support/model.hpp"

using namespace dtx;

namespace {

struct temp_file {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("dtx-connection-" + make_gid() + ".db");
    ~temp_file() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
};

} // namespace

TEST_CASE("sqlite statement: binds and reads every SQLite type") {
    temp_file f;
    sqlite::connection db(f.path.string());
    db.exec("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB)");
    auto& insert = db.prepare("INSERT INTO t VALUES (?, ?, ?, ?)");
    auto& select = db.prepare("SELECT i, r, s, b FROM t WHERE rowid = ?");

    const std::array<std::byte, 3> bytes{std::byte{0}, std::byte{0xff}, std::byte{7}};
    const long long big = std::numeric_limits<long long>::min();
    insert.bind(big, 2.5, std::string_view("text"), std::span<const std::byte>(bytes)).run();
    select.bind(1);
    REQUIRE(select.step());
    CHECK(select.integer(0) == big);
    CHECK(select.real(1) == 2.5);
    CHECK(select.text(2) == "text");
    const auto blob = select.blob(3);
    CHECK(std::vector<std::byte>(blob.begin(), blob.end()) ==
          std::vector<std::byte>(bytes.begin(), bytes.end()));

    // Every integer type, float, std::string and const char*, a vector of bytes.
    const unsigned long long fits = std::numeric_limits<std::int64_t>::max();
    const std::vector<std::byte> empty_blob;
    insert.bind(fits, 1.5f, std::string("s"), empty_blob).run();
    select.bind(2);
    REQUIRE(select.step());
    CHECK(select.integer(0) == std::numeric_limits<std::int64_t>::max());
    CHECK(select.real(1) == 1.5);
    CHECK(select.text(2) == "s");
    CHECK(!select.is_null(3)); // an empty blob, not NULL
    CHECK(select.blob(3).empty());

    insert.bind(short{-3}, 7u, "c", std::nullopt).run();
    select.bind(3);
    REQUIRE(select.step());
    CHECK(select.integer(0) == -3);
    CHECK(select.integer(1) == 7); // an integer in a REAL column reads as an integer too
    CHECK(select.is_null(3));

    // Null in every spelling; an empty view is an empty text, not NULL.
    insert.bind(std::optional<int>(), nullptr, std::string_view(), std::optional<std::string>())
        .run();
    select.bind(4);
    REQUIRE(select.step());
    CHECK(select.is_null(0));
    CHECK(select.is_null(1));
    CHECK(!select.is_null(2));
    CHECK(select.text(2).empty());
    CHECK(select.is_null(3));

    insert.bind(std::optional<long long>(42), true, std::optional<std::string_view>("o"), nullptr)
        .run();
    select.bind(5);
    REQUIRE(select.step());
    CHECK(select.integer(0) == 42);
    CHECK(select.integer(1) == 1);
    CHECK(select.text(2) == "o");
}

TEST_CASE("sqlite statement: an unsigned value larger than a SQLite integer is an error") {
    temp_file f;
    sqlite::connection db(f.path.string());
    db.exec("CREATE TABLE t (i INTEGER)");
    auto& insert = db.prepare("INSERT INTO t VALUES (?)");
    const std::uint64_t too_big = std::uint64_t{1} << 63;
    try {
        insert.bind(too_big);
        FAIL("bound a value that does not fit");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::database_failed);
        CHECK(std::string(e.what()).find("9223372036854775808") != std::string::npos);
    }
}

TEST_CASE("sqlite connection: errors name whose database failed") {
    temp_file f;
    sqlite::connection participant(f.path.string());
    sqlite::connection journal(f.path.string(), storage_role::journal);
    CHECK_THROWS_AS(participant.exec("SELECT * FROM missing"), dtx::error);
    try {
        participant.exec("SELECT * FROM missing");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::database_failed);
    }
    try {
        journal.exec("SELECT * FROM missing");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::journal_failed);
    }
    CHECK(make_error_code(errc::database_failed).message() == "database operation failed");
}
