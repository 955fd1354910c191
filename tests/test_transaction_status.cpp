// tx_status, tx_kind and branch_op: names that round-trip
#include <dtx/transaction_status.hpp>

#include <doctest/doctest.h>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

TEST_CASE("tx_status, tx_kind and branch_op names round-trip, and junk is rejected") {
    for (auto s : {tx_status::trying, tx_status::confirming, tx_status::confirmed,
                   tx_status::cancelling, tx_status::cancelled}) {
        CAPTURE(to_string(s));
        CHECK(to_string(s) != "?");
        CHECK(parse_tx_status(to_string(s)) == s);
    }
    for (auto k : {tx_kind::tcc, tx_kind::saga})
        CHECK(parse_tx_kind(to_string(k)) == k);
    for (auto op : {branch_op::try_, branch_op::confirm, branch_op::cancel, branch_op::action,
                    branch_op::compensate}) {
        CAPTURE(to_string(op));
        CHECK(parse_branch_op(to_string(op)) == op);
    }
    CHECK(to_string(tx_status::confirming) == "confirming");
    CHECK(to_string(branch_op::try_) == "try");
    CHECK(to_string(tx_kind::saga) == "saga");

    for (std::string_view junk :
         {"", "Trying", "trying ", " cancelled", "confirm", "cancel", "done", "tryin"})
        CHECK_FALSE(parse_tx_status(junk));
    for (std::string_view junk : {"", "TCC", "sagas", "try"})
        CHECK_FALSE(parse_tx_kind(junk));
    for (std::string_view junk : {"", "try_", "Try", "confirmed", "compensated", "tcc"})
        CHECK_FALSE(parse_branch_op(junk));

    static_assert(parse_tx_status("cancelling") == tx_status::cancelling);
    static_assert(!parse_tx_status("junk"));

    CHECK(is_final(tx_status::confirmed));
    CHECK(is_final(tx_status::cancelled));
    CHECK_FALSE(is_final(tx_status::trying));
    CHECK_FALSE(is_final(tx_status::confirming));
    CHECK_FALSE(is_final(tx_status::cancelling));
    CHECK(kind_of(branch_op::cancel) == tx_kind::tcc);
    CHECK(kind_of(branch_op::compensate) == tx_kind::saga);
    CHECK(kind_of(branch_op::action) == tx_kind::saga);
}
