// typed<T> (payload conversion that refuses narrowed numbers) and local participants
#include <dtx/participant.hpp>

#include <doctest/doctest.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

// ---- a payload type for typed<T> --------------------------------------------------------------

struct order {
    std::string sku;
    int qty = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(order, sku, qty)

/// Every kind of number a payload field may be.
struct numbers {
    int qty = 0;
    unsigned units = 0;
    std::uint8_t small = 0;
    std::int64_t big = 0;
    double price = 0;
    float weight = 0;
    bool gift = false;
    std::vector<order> lines;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(numbers, qty, units, small, big, price, weight,
                                                gift, lines)

} // namespace

TEST_CASE("typed<T>: a good payload reaches the handler converted; a bad one is refused without "
          "calling it") {
    asio::io_context ioc;
    std::vector<order> received;
    branch_handler h =
        typed<order>([&](const branch_request& r, order o) -> asio::awaitable<outcome> {
            CHECK(r.gid == "g-1");
            received.push_back(std::move(o));
            co_return success();
        });

    const nlohmann::json good = order{"A-1", 3};
    CHECK(good == nlohmann::json{{"sku", "A-1"}, {"qty", 3}});
    const outcome ok = run(ioc, h(branch_request{"g-1", "01", branch_op::try_, good}));
    CHECK(ok.is_success());
    REQUIRE(received.size() == 1);
    CHECK(received[0].sku == "A-1");
    CHECK(received[0].qty == 3);

    SUBCASE("wrong type") {
        const nlohmann::json bad = {{"sku", "A-1"}, {"qty", "three"}};
        const outcome no = run(ioc, h(branch_request{"g-2", "04", branch_op::action, bad}));
        CHECK(no.is_failure());
        CHECK(no.message().find("gid g-2") != std::string::npos);
        CHECK(no.message().find("branch 04") != std::string::npos);
        CHECK(no.message().find("action payload does not convert") != std::string::npos);
        CHECK(no.message().find("type must be number") != std::string::npos);
    }
    SUBCASE("missing field") {
        const nlohmann::json bad = {{"qty", 3}};
        const outcome no = run(ioc, h(branch_request{"g-3", "02", branch_op::confirm, bad}));
        CHECK(no.is_failure());
        CHECK(no.message().find("gid g-3 branch 02") != std::string::npos);
        CHECK(no.message().find("confirm payload does not convert") != std::string::npos);
        CHECK(no.message().find("sku") != std::string::npos);
    }
    SUBCASE("not an object") {
        const nlohmann::json bad = 42;
        const outcome no = run(ioc, h(branch_request{"g-4", "01", branch_op::try_, bad}));
        CHECK(no.is_failure());
        CHECK(no.message().find("gid g-4 branch 01: try payload does not convert") !=
              std::string::npos);
    }
    CHECK(received.size() == 1); // the handler saw only the good payload
}

TEST_CASE("typed<T>: a number that does not fit its field exactly is a failure naming the field") {
    asio::io_context ioc;
    std::vector<numbers> received;
    branch_handler h =
        typed<numbers>([&](const branch_request&, numbers n) -> asio::awaitable<outcome> {
            received.push_back(std::move(n));
            co_return success();
        });
    const auto answer = [&](const char* payload) {
        const nlohmann::json p = nlohmann::json::parse(payload);
        return run(ioc, h(branch_request{"g-5", "03", branch_op::try_, p}));
    };
    const std::pair<const char*, const char*> refused[] = {
        {R"({"qty":4294967295})", "'qty'"},           // wraps to -1
        {R"({"qty":2147483648})", "'qty'"},           // wraps to INT_MIN
        {R"({"qty":2.9})", "'qty'"},                  // truncated to 2
        {R"({"qty":true})", "'qty'"},                 // a boolean read as 1
        {R"({"units":-1})", "'units'"},               // wraps to 4294967295
        {R"({"small":300})", "'small'"},              // wraps to 44
        {R"({"big":9.5})", "'big'"},                  // a fraction
        {R"({"price":9007199254740993})", "'price'"}, // 2^53 + 1 has no double
        {R"({"weight":16777217})", "'weight'"},       // 2^24 + 1 has no float
        {R"({"lines":[{"sku":"a","qty":1},{"sku":"b","qty":-4294967297}]})", "'lines[1].qty'"},
    };
    for (const auto& kase : refused) {
        const char* payload = kase.first;
        const char* field = kase.second;
        CAPTURE(payload);
        const outcome no = answer(payload);
        CHECK(no.is_failure());
        CHECK(no.message().find("gid g-5 branch 03: try payload field " + std::string(field) +
                                " does not fit its type exactly") != std::string::npos);
    }
    CHECK(received.empty());

    // Numbers that fit are taken: an integral double for an int, an integer for a double, a
    // decimal a float rounds, the limits of each type; members T does not have are ignored.
    const char* accepted[] = {
        R"({"qty":2.0,"price":3,"weight":0.1,"units":4294967295,"small":255})",
        R"({"qty":-2147483648,"big":-9223372036854775808,"price":0.1,"gift":true})",
        R"({"lines":[{"sku":"a","qty":7}],"other":4294967295,"flag":true})",
    };
    for (const char* payload : accepted) {
        CAPTURE(payload);
        CHECK(answer(payload).is_success());
    }
    REQUIRE(received.size() == 3);
    CHECK(received[0].qty == 2);
    CHECK(received[0].price == 3.0);
    CHECK(received[0].units == 4294967295u);
    CHECK(received[1].qty == INT_MIN);
    CHECK(received[2].lines.at(0).qty == 7);

    // A payload that is a number itself.
    branch_handler count = typed<int>(
        [](const branch_request&, int) -> asio::awaitable<outcome> { co_return success(); });
    const nlohmann::json huge = 4294967295u;
    const outcome no = run(ioc, count(branch_request{"g-6", "01", branch_op::action, huge}));
    CHECK(no.is_failure());
    CHECK(no.message().find("action payload number does not fit its type exactly") !=
          std::string::npos);
}

TEST_CASE("typed<T>: the handler's own answer is passed through") {
    asio::io_context ioc;
    branch_handler h =
        typed<qty_payload>([](const branch_request&, qty_payload p) -> asio::awaitable<outcome> {
            if (p.qty > 10)
                co_return failure("too many");
            co_return pending("later");
        });
    const nlohmann::json many = qty_payload{11};
    const nlohmann::json few = qty_payload{1};
    CHECK(run(ioc, h(branch_request{"g", "01", branch_op::try_, many})) == failure("too many"));
    CHECK(run(ioc, h(branch_request{"g", "01", branch_op::try_, few})) == pending("later"));
}

TEST_CASE("a local participant refuses an operation of the other kind") {
    asio::io_context ioc;
    participant_registry reg;
    resource r{"r"};
    reg.add_saga("r", r.saga());
    participant* p = reg.find("r");
    REQUIRE(p != nullptr);
    const nlohmann::json payload = qty_payload{1};
    CHECK(run(ioc, p->call(branch_request{"g", "01", branch_op::action, payload})).is_success());
    CHECK_THROWS_AS(run(ioc, p->call(branch_request{"g", "01", branch_op::confirm, payload})),
                    std::invalid_argument);
    CHECK(r.ops("g", "01") == std::vector{branch_op::action});
}
