// outcome: the factories and what they carry
#include <dtx/outcome.hpp>

#include <doctest/doctest.h>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

TEST_CASE("outcome factories") {
    const outcome s = success();
    CHECK(s.kind() == outcome_kind::success);
    CHECK(s.is_success());
    CHECK_FALSE(s.is_failure());
    CHECK_FALSE(s.is_pending());
    CHECK(s.message().empty());

    const outcome f = failure("out of stock");
    CHECK(f.kind() == outcome_kind::failure);
    CHECK(f.is_failure());
    CHECK_FALSE(f.is_success());
    CHECK(f.message() == "out of stock");
    CHECK(failure().message().empty());

    const outcome p = pending("still working");
    CHECK(p.kind() == outcome_kind::pending);
    CHECK(p.is_pending());
    CHECK_FALSE(p.is_success());
    CHECK(p.message() == "still working");

    CHECK(failure("x") == failure("x"));
    CHECK_FALSE(failure("x") == failure("y"));
    CHECK_FALSE(failure("x") == pending("x"));
    CHECK(success() == outcome(outcome_kind::success, ""));

    CHECK(to_string(outcome_kind::success) == "success");
    CHECK(to_string(outcome_kind::failure) == "failure");
    CHECK(to_string(outcome_kind::pending) == "pending");
}
