// errc and dtx::error: the category, a message per code, error texts
#include <dtx/error.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

/// Every code of dtx::errc.
std::vector<errc> all_codes() {
    std::vector<errc> out;
    for (int v = static_cast<int>(errc::branch_failed);
         v <= static_cast<int>(errc::database_version); ++v)
        out.push_back(static_cast<errc>(v));
    return out;
}

} // namespace

TEST_CASE("errc: category \"dtx\", a distinct message for every code, usable as std::error_code") {
    CHECK(std::string_view(error_category().name()) == "dtx");
    CHECK(&error_category() == &make_error_code(errc::branch_failed).category());

    std::set<std::string> messages;
    const auto codes = all_codes();
    CHECK(codes.size() == 19);
    for (errc e : codes) {
        const std::error_code ec = make_error_code(e);
        CAPTURE(ec.value());
        CHECK(ec);
        CHECK(ec.category() == error_category());
        CHECK_FALSE(ec.message().empty());
        CHECK(ec.message() != error_category().message(0));
        messages.insert(ec.message());
    }
    CHECK(messages.size() == codes.size());
    CHECK(error_category().message(0) == "unknown dtx error");
    CHECK(error_category().message(999) == "unknown dtx error");

    static_assert(std::is_error_code_enum_v<dtx::errc>);
    std::error_code ec = dtx::errc::branch_failed;
    CHECK(ec.value() == 1);
    CHECK(std::string_view(ec.category().name()) == "dtx");
    CHECK(ec == errc::branch_failed);
    CHECK(ec != errc::branch_error);
    ec = errc::coordinator_stopped;
    CHECK(ec.message() == "coordinator stopped");
    // A code of another category with the same value is a different code.
    CHECK(std::error_code(1, std::generic_category()) != errc::branch_failed);
}

TEST_CASE("dtx::error carries its code and its text") {
    try {
        throw dtx::error(errc::duplicate_gid, "gid g-7: already in the journal");
    } catch (const std::system_error& e) {
        CHECK(e.code() == errc::duplicate_gid);
        CHECK(std::string(e.what()).find("gid g-7: already in the journal") != std::string::npos);
    }
    const dtx::error other(std::make_error_code(std::errc::timed_out), "gid g-8");
    CHECK(other.code() == std::errc::timed_out);
    CHECK(std::string(other.what()).find("gid g-8") != std::string::npos);
    CHECK_THROWS_AS(throw dtx::error(errc::journal_failed, "x"), std::runtime_error);
}
