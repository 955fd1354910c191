// The vocabulary types: gids, outcomes, error codes, retry policies, typed handlers, the
// participant registry, status names, and the in-memory journal used directly.
#include <dtx/dtx.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <set>
#include <thread>
#include <type_traits>
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

/// Every code of dtx::errc.
std::vector<errc> all_codes() {
    std::vector<errc> out;
    for (int v = static_cast<int>(errc::branch_failed);
         v <= static_cast<int>(errc::database_version); ++v)
        out.push_back(static_cast<errc>(v));
    return out;
}

// ---- a participant for the registry tests ----------------------------------------------------

class fixed_participant final : public participant {
public:
    std::optional<tx_kind> kind() const noexcept override { return std::nullopt; }
    asio::awaitable<outcome> call(const branch_request&) override { co_return success(); }
};

branch_handler answer_success() {
    return [](const branch_request&) -> asio::awaitable<outcome> { co_return success(); };
}

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

// ==== gids =====================================================================================

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

// ==== outcomes and errors ======================================================================

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

// ==== retry policy =============================================================================

TEST_CASE("retry_policy: backoff_cap doubles from the initial backoff up to the cap") {
    const retry_policy p{.initial_backoff = 10ms, .max_backoff = 100ms};
    CHECK(p.backoff_cap(1) == 10ms);
    CHECK(p.backoff_cap(2) == 20ms);
    CHECK(p.backoff_cap(3) == 40ms);
    CHECK(p.backoff_cap(4) == 80ms);
    CHECK(p.backoff_cap(5) == 100ms);
    CHECK(p.backoff_cap(6) == 100ms);
    CHECK(p.backoff_cap(1'000'000) == 100ms);
    CHECK(p.backoff_cap(UINT_MAX) == 100ms);

    const retry_policy triple{.initial_backoff = 1ms, .max_backoff = 1s, .multiplier = 3.0};
    CHECK(triple.backoff_cap(3) == 9ms);

    const retry_policy defaults{};
    CHECK(defaults.backoff_cap(1) == defaults.initial_backoff);
    CHECK(defaults.backoff_cap(100) == defaults.max_backoff);
}

TEST_CASE("retry_policy: next_delay is jittered within [0, cap]") {
    const retry_policy p{.initial_backoff = 1ms, .max_backoff = 8ms};
    for (unsigned attempt : {1u, 2u, 4u, 10u}) {
        CAPTURE(attempt);
        const auto cap = p.backoff_cap(attempt);
        std::set<std::int64_t> seen;
        bool low = false, high = false, in_range = true;
        for (int i = 0; i < 2000; ++i) {
            const auto d = p.next_delay(attempt);
            in_range = in_range && d >= std::chrono::nanoseconds::zero() && d <= cap;
            low = low || d < cap / 2;
            high = high || d > cap / 2;
            seen.insert(d.count());
        }
        CHECK(in_range);
        CHECK(low);  // full jitter: the whole range is used,
        CHECK(high); // not only the top of it
        CHECK(seen.size() > 1000);
    }
    const retry_policy zero{.initial_backoff = 0ms, .max_backoff = 0ms};
    CHECK(zero.next_delay(3) == std::chrono::nanoseconds::zero());
}

TEST_CASE("retry_policy: may_retry and alert_due") {
    const retry_policy forever{};
    for (unsigned n : {0u, 1u, 10u, 1'000'000u, UINT_MAX})
        CHECK(forever.may_retry(n));

    const retry_policy three{.max_attempts = 3};
    CHECK(three.may_retry(1));
    CHECK(three.may_retry(2));
    CHECK_FALSE(three.may_retry(3));
    CHECK_FALSE(three.may_retry(4));

    const retry_policy one{.max_attempts = 1};
    CHECK_FALSE(one.may_retry(1));

    const retry_policy every3{.alert_after = 3};
    std::vector<unsigned> due;
    for (unsigned n = 1; n <= 10; ++n)
        if (every3.alert_due(n))
            due.push_back(n);
    CHECK(due == std::vector<unsigned>{3, 6, 9});

    const retry_policy every1{.alert_after = 1};
    for (unsigned n = 1; n <= 5; ++n)
        CHECK(every1.alert_due(n));

    const retry_policy never{.alert_after = 0};
    for (unsigned n = 0; n <= 100; ++n)
        CHECK_FALSE(never.alert_due(n));

    const retry_policy defaults{};
    CHECK_FALSE(defaults.alert_due(9));
    CHECK(defaults.alert_due(10));
}

// ==== typed handlers ===========================================================================

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

// ==== participant registry =====================================================================

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

// ==== status names =============================================================================

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

// ==== memory_journal ===========================================================================

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
