// make_gid: gids are lowercase UUIDv7 text, unique and time-ordered
#include <dtx/gid.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

bool is_lower_hex(char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

/// Empty if `g` is lowercase UUIDv7 text, else what is wrong with it.
std::string uuidv7_problem(const std::string& g) {
    if (g.size() != 36)
        return "length " + std::to_string(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
        const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? g[i] != '-' : !is_lower_hex(g[i]))
            return "bad character at " + std::to_string(i);
    }
    if (g[14] != '7')
        return "version nibble is not 7";
    if (g[19] != '8' && g[19] != '9' && g[19] != 'a' && g[19] != 'b')
        return "variant bits are not 10";
    return {};
}

} // namespace

TEST_CASE("make_gid: 36 characters of lowercase UUIDv7 text") {
    for (int i = 0; i < 1000; ++i) {
        const std::string g = make_gid();
        CAPTURE(g);
        REQUIRE(uuidv7_problem(g) == "");
    }
    // The leading 48 bits are the Unix time in milliseconds.
    const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const std::string g = make_gid();
    const auto ms =
        static_cast<long long>(std::stoull(g.substr(0, 8) + g.substr(9, 4), nullptr, 16));
    CHECK(ms >= before);
    CHECK(ms <= before + 1000); // allowing for ids borrowed from the next milliseconds
    // And the check above does reject what is not UUIDv7.
    CHECK(uuidv7_problem("0190a4b2-7c3d-4e5f-8a6b-7c8d9e0f1a2b") == "version nibble is not 7");
    CHECK(uuidv7_problem("0190a4b2-7c3d-7e5f-ca6b-7c8d9e0f1a2b") == "variant bits are not 10");
    CHECK(uuidv7_problem("0190A4B2-7C3D-7E5F-8A6B-7C8D9E0F1A2B") == "bad character at 4");
}

TEST_CASE("make_gid: 100,000 gids from one thread are unique and strictly increasing as strings") {
    std::vector<std::string> gids;
    gids.reserve(100'000);
    for (int i = 0; i < 100'000; ++i)
        gids.push_back(make_gid());
    std::size_t not_increasing = 0;
    for (std::size_t i = 1; i < gids.size(); ++i)
        if (!(gids[i - 1] < gids[i])) {
            if (not_increasing++ == 0)
                FAIL_CHECK("gid " << i << " " << gids[i] << " does not follow " << gids[i - 1]);
        }
    CHECK(not_increasing == 0);
    CHECK(std::set<std::string>(gids.begin(), gids.end()).size() == gids.size());
    CHECK(uuidv7_problem(gids.back()) == "");
}

TEST_CASE("make_gid: gids made on two threads at once are all unique") {
    constexpr int per_thread = 50'000;
    std::vector<std::string> x, y;
    x.reserve(per_thread);
    y.reserve(per_thread);
    {
        std::thread t1([&] {
            for (int i = 0; i < per_thread; ++i)
                x.push_back(make_gid());
        });
        std::thread t2([&] {
            for (int i = 0; i < per_thread; ++i)
                y.push_back(make_gid());
        });
        t1.join();
        t2.join();
    }
    std::set<std::string> all(x.begin(), x.end());
    all.insert(y.begin(), y.end());
    CHECK(all.size() == 2u * per_thread);
    CHECK(std::is_sorted(x.begin(), x.end()));
    CHECK(std::is_sorted(y.begin(), y.end()));
}

TEST_CASE("valid_gid: what DTM sends is accepted; invalid UTF-8, control characters and more "
          "than 128 characters are not") {
    CHECK(valid_gid(make_gid()));
    CHECK(valid_gid("order-42"));
    CHECK(valid_gid("order 42; retried"));   // spaces and punctuation
    CHECK(valid_gid("заказ-42"));            // UTF-8
    CHECK(valid_gid(std::string(128, 'x'))); // 128 characters
    std::string accents;
    for (int i = 0; i < 128; ++i)
        accents += "é"; // 128 characters in 256 bytes
    CHECK(valid_gid(accents));
    CHECK_FALSE(valid_gid(accents + "é"));
    CHECK_FALSE(valid_gid(""));
    CHECK_FALSE(valid_gid(std::string(129, 'x')));
    CHECK_FALSE(valid_gid("order\n42"));
    CHECK_FALSE(valid_gid("order\t42"));
    CHECK_FALSE(valid_gid("order\x7f"));
    CHECK_FALSE(valid_gid("order\xff"));
    CHECK_FALSE(valid_gid("order\xc3")); // a cut sequence
}

TEST_CASE("a transaction with a caller-chosen gid that is not valid is refused before anything "
          "is journaled or sent") {
    asio::io_context ioc;
    memory_journal journal;
    participant_registry registry;
    int calls = 0;
    registry.add_tcc("p", {.on_try = [&](const branch_request&) -> asio::awaitable<outcome> {
                               ++calls;
                               co_return success();
                           },
                           .on_confirm = [&](const branch_request&) -> asio::awaitable<outcome> {
                               co_return success();
                           },
                           .on_cancel = [&](const branch_request&) -> asio::awaitable<outcome> {
                               co_return success();
                           }});
    coordinator coord(ioc.get_executor(), journal, registry, fast_options());
    auto body = [](tcc_transaction& tx) -> asio::awaitable<void> {
        nlohmann::json payload = {{"qty", 1}};
        co_await tx.add_branch("p", std::move(payload));
    };
    for (std::string bad :
         {std::string("order\n42"), std::string("a\xff"), std::string(129, 'x')}) {
        CAPTURE(bad.size());
        CHECK_THROWS_AS(run(ioc, coord.tcc(body, tx_options{.gid = bad})), std::invalid_argument);
    }
    CHECK(calls == 0);
    CHECK(journal.all().empty());
    const tx_result ok = run(ioc, coord.tcc(body, tx_options{.gid = "order 42; retried"}));
    CHECK(ok.status == tx_status::confirmed);
    CHECK(calls == 1);
}
