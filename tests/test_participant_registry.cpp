// participant_registry: registration rules and the resolver for unregistered names
#include <dtx/participant_registry.hpp>

#include <doctest/doctest.h>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

// ---- a participant for the registry tests ----------------------------------------------------

class fixed_participant final : public participant {
public:
    std::optional<tx_kind> kind() const noexcept override { return std::nullopt; }
    asio::awaitable<outcome> call(const branch_request&) override { co_return success(); }
};

branch_handler answer_success() {
    return [](const branch_request&) -> asio::awaitable<outcome> { co_return success(); };
}

} // namespace

TEST_CASE("participant_registry: registration rules") {
    participant_registry reg;
    const tcc_handlers full{answer_success(), answer_success(), answer_success()};

    CHECK_THROWS_AS(
        reg.add_tcc("t",
                    {.on_try = {}, .on_confirm = answer_success(), .on_cancel = answer_success()}),
        std::invalid_argument);
    CHECK_THROWS_AS(
        reg.add_tcc("t",
                    {.on_try = answer_success(), .on_confirm = {}, .on_cancel = answer_success()}),
        std::invalid_argument);
    CHECK_THROWS_AS(
        reg.add_tcc("t",
                    {.on_try = answer_success(), .on_confirm = answer_success(), .on_cancel = {}}),
        std::invalid_argument);
    CHECK_THROWS_AS(reg.add_saga("s", {.on_action = {}, .on_compensate = answer_success()}),
                    std::invalid_argument);
    CHECK_THROWS_AS(reg.add_saga("s", {.on_action = answer_success(), .on_compensate = {}}),
                    std::invalid_argument);
    CHECK(reg.find("t") == nullptr); // a refused registration leaves nothing behind
    CHECK(reg.find("s") == nullptr);

    CHECK_THROWS_AS(reg.add_tcc("", full), std::invalid_argument);
    CHECK_THROWS_AS(reg.add("p", nullptr), std::invalid_argument);

    reg.add_tcc("t", full);
    reg.add_saga("s", {answer_success(), answer_success()});
    CHECK_THROWS_WITH_AS(reg.add_tcc("t", full), "participant 't' is already registered",
                         std::invalid_argument);
    CHECK_THROWS_AS(reg.add_saga("t", {answer_success(), answer_success()}), std::invalid_argument);
    CHECK_THROWS_AS(reg.add("s", std::make_shared<fixed_participant>()), std::invalid_argument);

    participant* t = reg.find("t");
    participant* s = reg.find("s");
    REQUIRE(t != nullptr);
    REQUIRE(s != nullptr);
    CHECK(t->kind() == tx_kind::tcc);
    CHECK(s->kind() == tx_kind::saga);
    CHECK(reg.find("T") == nullptr);
    CHECK(reg.find("nobody") == nullptr);
    CHECK(reg.find("") == nullptr);
}

TEST_CASE("participant_registry: the resolver is asked about unregistered names only") {
    participant_registry reg;
    reg.add_tcc("local", {answer_success(), answer_success(), answer_success()});
    fixed_participant remote;
    std::vector<std::string> asked;
    reg.set_resolver([&](std::string_view name) -> participant* {
        asked.emplace_back(name);
        return name.starts_with("http://") ? &remote : nullptr;
    });

    REQUIRE(reg.find("local") != nullptr);
    CHECK(reg.find("local") != &remote);
    CHECK(asked.empty());
    CHECK(reg.find("http://pay.example/tcc") == &remote);
    CHECK(reg.find("nobody") == nullptr);
    CHECK(asked == std::vector<std::string>{"http://pay.example/tcc", "nobody"});
    CHECK_FALSE(remote.kind().has_value());
}
