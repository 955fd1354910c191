// The branch protocol without I/O (<dtx/http/protocol.hpp>): queries parsed and built, answers
// written and read, always as DTM reads them; and the UTF-8 rules for text from outside
// (<dtx/detail/utf8.hpp>), which the protocol applies.
#include <dtx/detail/utf8.hpp>
#include <dtx/http/protocol.hpp>

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <string_view>
#include <variant>

using namespace dtx;

namespace {

/// DTM's reading of an answer, written from client/dtmcli/utils.go (HTTPResp2DtmError).
std::optional<outcome_kind> dtm_reads(unsigned status, std::string_view body) {
    if (status == 425 || body.find("ONGOING") != std::string_view::npos)
        return outcome_kind::pending;
    if (status == 409 || body.find("FAILURE") != std::string_view::npos)
        return outcome_kind::failure;
    if (status != 200)
        return std::nullopt;
    return outcome_kind::success;
}

std::optional<outcome_kind> dtx_reads(unsigned status, std::string_view body) {
    const auto o = http::outcome_of(status, body);
    return o ? std::optional<outcome_kind>(o->kind()) : std::nullopt;
}

http::branch_query parsed(std::string_view query) {
    auto r = http::parse_branch_query(query);
    if (auto* p = std::get_if<http::problem>(&r))
        FAIL_CHECK(p->message);
    REQUIRE(std::holds_alternative<http::branch_query>(r));
    return std::get<http::branch_query>(r);
}

std::string refusal(std::string_view query) {
    auto r = http::parse_branch_query(query);
    REQUIRE(std::holds_alternative<http::problem>(r));
    const auto& p = std::get<http::problem>(r);
    CHECK(p.status == 400);
    return p.code;
}

std::string repeat(std::string_view s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i)
        out += s;
    return out;
}

} // namespace

TEST_CASE("branch queries: DTM's sorted query with parameters of its own; what is refused") {
    const auto q = parsed("branch_id=01&dtm=http%3A%2F%2Fdtm&gid=9x7Kq&op=cancel&trans_type=tcc");
    CHECK(q.gid == "9x7Kq");
    CHECK(q.branch_id == "01");
    CHECK(q.op == branch_op::cancel);
    CHECK(q.kind == tx_kind::tcc);
    CHECK(parsed("&&gid=a+b&trans_type=saga&branch_id=01-02&op=compensate&").gid == "a b");

    CHECK(refusal("") == "missing_parameter");
    CHECK(refusal("gid&trans_type=tcc&branch_id=01&op=try") == "missing_parameter");
    CHECK(refusal("gid=a&gid=a&trans_type=tcc&branch_id=01&op=try") == "duplicate_parameter");
    CHECK(refusal("gid=%4&trans_type=tcc&branch_id=01&op=try") == "bad_encoding");
    CHECK(refusal("gid=a&trans_type=xa&branch_id=01&op=action") == "invalid_trans_type");
    // 2-phase messages: actions, and the check-back DTM sends (op msg), nothing else.
    const auto check_back = parsed("branch_id=00&gid=g&op=msg&trans_type=msg");
    CHECK(check_back.op == branch_op::check_back);
    CHECK(check_back.kind == tx_kind::msg);
    CHECK(parsed("gid=a&trans_type=msg&branch_id=01&op=action").kind == tx_kind::msg);
    CHECK(refusal("gid=a&trans_type=msg&branch_id=01&op=try") == "op_mismatch");
    CHECK(refusal("gid=a&trans_type=msg&branch_id=01&op=compensate") == "op_mismatch");
    CHECK(refusal("gid=a&trans_type=saga&branch_id=00&op=msg") == "op_mismatch");
    CHECK(http::branch_query_string("g", "00", branch_op::check_back) ==
          "gid=g&trans_type=msg&branch_id=00&op=msg");
    CHECK(http::branch_query_string("g", "01", branch_op::action, tx_kind::msg) ==
          "gid=g&trans_type=msg&branch_id=01&op=action");
    CHECK(refusal("gid=a&trans_type=tcc&branch_id=01&op=rollback") == "invalid_op");
    CHECK(refusal("gid=a&trans_type=saga&branch_id=01&op=try") == "op_mismatch");
    CHECK(refusal("gid=a&trans_type=tcc&branch_id=0%201&op=try") == "invalid_branch_id");
    CHECK(refusal("gid=a&trans_type=tcc&branch_id=" + std::string(65, '1') + "&op=try") ==
          "invalid_branch_id");
}

TEST_CASE("gids: what DTM sends is accepted, up to 128 characters; controls and invalid UTF-8 "
          "are not") {
    const std::string accepted[] = {"order 17",
                                    "caf\xC3\xA9",
                                    "\xF0\x9F\x9A\x80 launch",
                                    "a;b",
                                    "' OR 1=1 --",
                                    "<script>",
                                    "FAILURE",
                                    "\xE2\x80\xAE",
                                    repeat("\xE2\x82\xAC", 128),
                                    std::string(128, 'g')};
    for (const std::string& gid : accepted) {
        CAPTURE(gid);
        const std::string q = http::branch_query_string(gid, "01", branch_op::try_);
        CHECK(parsed(q).gid == gid); // round trip through the encoding DTM uses
    }
    const std::string refused[] = {
        std::string("a\nb"),         std::string("a\rb"),         std::string("a\0b", 3),
        std::string("a\tb"),         std::string("\x7f"),         std::string("\xC2\x85"),
        std::string("\xC2\x9F"),     std::string("\xE2\x80\xA8"), std::string("\xE2\x80\xA9"),
        std::string("\xFF"),         std::string("\xC3"),         std::string("\xC0\xAF"),
        std::string("\xE0\x80\xAF"), std::string("\xED\xA0\x80"), std::string("\xF4\x90\x80\x80"),
        std::string(129, 'g'),       repeat("\xE2\x82\xAC", 129)};
    for (const std::string& gid : refused) {
        CAPTURE(gid);
        CHECK(refusal(http::branch_query_string(gid, "01", branch_op::try_)) == "invalid_gid");
    }
}

TEST_CASE("branch_query_string: DTM's percent-encoding, in the order dtx sends") {
    CHECK(http::branch_query_string("g 1/é", "01", branch_op::compensate) ==
          "gid=g%201%2F%C3%A9&trans_type=saga&branch_id=01&op=compensate");
    CHECK(http::branch_query_string("A-z_0.~", "b", branch_op::confirm) ==
          "gid=A-z_0.~&trans_type=tcc&branch_id=b&op=confirm");
}

TEST_CASE("json_quote escapes for JSON and writes invalid UTF-8 as U+FFFD") {
    CHECK(http::json_quote("a\"b\\c\n\r\t\x01") == R"("a\"b\\c\n\r\t\u0001")");
    CHECK(http::json_quote("caf\xC3\xA9") == "\"caf\xC3\xA9\"");
    CHECK(http::json_quote("x\xFFy\xC3") == "\"x\xEF\xBF\xBDy\xEF\xBF\xBD\"");
    const std::string odd[] = {std::string("\xFF\xFE"), std::string("\xED\xA0\x80"),
                               std::string("ok\0z", 4), std::string("\xF0\x9F\x9A")};
    for (const std::string& s : odd) {
        const auto j = nlohmann::json::parse(http::json_quote(s), nullptr, false);
        REQUIRE(j.is_string());
        CHECK(detail::valid_utf8(j.get<std::string>()));
    }
}

TEST_CASE("dtx's answers read the same for DTM and for dtx, whatever the failure message holds") {
    const std::string messages[] = {
        "only 2 left",
        "ONGOING",
        "still ONGOING, ONGOINGONGOING",
        "ONGOIN",
        "FAILURE",
        "\"ONGOING\"",
        "a\nONGOING\\",
        "ONGOIN\\u0047",
        "caf\xC3\xA9 \xFF",
        "",
    };
    for (const std::string& m : messages) {
        CAPTURE(m);
        const http::answer a = http::answer_for(failure(m));
        CHECK(a.status == 409);
        CHECK(dtm_reads(a.status, a.body) == outcome_kind::failure);
        const auto read = http::outcome_of(a.status, a.body);
        REQUIRE(read);
        CHECK(read->is_failure());
        CHECK(read->message() == detail::safe_text(m)); // the same text once parsed
        const auto body = nlohmann::json::parse(a.body, nullptr, false);
        REQUIRE(body.is_object());
        CHECK(body["dtm_result"] == "FAILURE");
    }
    for (const outcome& o : {success(), pending("later"), pending("FAILURE soon")}) {
        const http::answer a = http::answer_for(o);
        CHECK(dtm_reads(a.status, a.body) == o.kind());
        CHECK(dtx_reads(a.status, a.body) == o.kind());
    }
    CHECK(http::answer_for(success()).status == 200);
    CHECK(http::answer_for(pending("x")).status == 425);
}

TEST_CASE("dtx reads any answer exactly as DTM does") {
    const std::pair<unsigned, std::string> answers[] = {
        {200, R"({"dtm_result":"SUCCESS"})"},
        {200, "null"},
        {200, ""},
        {200, R"({"dtm_result":"FAILURE"})"},
        {200, R"({"dtm_result":"ONGOING"})"},
        {409, R"({"dtm_result":"FAILURE","message":"ONGOING"})"},
        {409, R"({"error":"no"})"},
        {409, ""},
        {425, ""},
        {425, R"({"dtm_result":"FAILURE"})"},
        {500, R"({"message":"FAILURE"})"},
        {500, "ONGOING"},
        {500, R"({"error":"boom"})"},
        {201, R"({"dtm_result":"SUCCESS"})"},
        {204, ""},
        {301, ""},
        {400, R"({"error":"invalid_gid"})"},
        {404, ""},
        {503, "busy"},
    };
    for (const auto& kase : answers) {
        const unsigned status = kase.first;
        const std::string& body = kase.second;
        CAPTURE(status);
        CAPTURE(body);
        CHECK(dtx_reads(status, body) == dtm_reads(status, body));
    }
    // The participant's text is kept: "message" (dtx, DTM's WrapHandler2) or "error" (WrapHandler).
    CHECK(http::outcome_of(409, R"({"dtm_result":"FAILURE","message":"no stock"})") ==
          failure("no stock"));
    CHECK(http::outcome_of(409, R"({"error":"insufficient balance"})") ==
          failure("insufficient balance"));
    CHECK(http::outcome_of(425, R"({"dtm_result":"ONGOING","message":"in review"})") ==
          pending("in review"));
    CHECK(http::outcome_of(409, "not json") == failure("participant answered FAILURE"));
    CHECK(http::outcome_of(200, "ONGOING") == pending("participant answered ONGOING"));
}

TEST_CASE("error bodies name the code and never carry an outcome word") {
    const std::string b = http::error_body("invalid_gid", "query parameter 'gid' is bad");
    CHECK(b == R"({"error":"invalid_gid","message":"query parameter 'gid' is bad"})");
    CHECK_FALSE(http::outcome_of(400, b));
}

// ---- UTF-8 -------------------------------------------------------------------------------------

TEST_CASE("utf8: well-formed sequences as Unicode's table 3-7 says") {
    CHECK(detail::valid_utf8(""));
    CHECK(detail::valid_utf8("plain ASCII\n"));
    CHECK(detail::valid_utf8("\xC2\x80\xDF\xBF"));                     // U+0080, U+07FF
    CHECK(detail::valid_utf8("\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80")); // U+0800, U+D7FF, U+E000
    CHECK(detail::valid_utf8("\xF0\x90\x80\x80\xF4\x8F\xBF\xBF"));     // U+10000, U+10FFFF
    const std::string bad_sequences[] = {"\x80",
                                         "\xBF",
                                         "\xC0\x80",
                                         "\xC1\xBF",
                                         "\xC2",
                                         "\xC2\x41",
                                         "\xE0\x9F\xBF",
                                         "\xED\xA0\x80",
                                         "\xED\xBF\xBF",
                                         "\xE1\x80",
                                         "\xF0\x8F\xBF\xBF",
                                         "\xF4\x90\x80\x80",
                                         "\xF5\x80\x80\x80",
                                         "\xF8\x88\x80\x80\x80",
                                         "\xFE",
                                         "\xFF"};
    for (const std::string& bad : bad_sequences) {
        CAPTURE(bad);
        CHECK_FALSE(detail::valid_utf8(bad));
    }
    CHECK(detail::utf8_code_point("\xF0\x9F\x9A\x80", 4) == U'\U0001F680');
    CHECK(detail::utf8_code_point("\xC3\xA9", 2) == U'\u00E9');
}

TEST_CASE("utf8: safe_text cuts on a character boundary and replaces invalid bytes") {
    // 199 'x' then 'é' (2 bytes): a cut at 200 bytes would split it.
    const std::string answer = std::string(199, 'x') + "\xC3\xA9";
    CHECK(detail::safe_text(answer, 200) == std::string(199, 'x') + "...");
    CHECK(detail::safe_text(answer, 201) == answer);
    CHECK(detail::safe_text("\xF0\x9F\x9A\x80!", 3) == "...");
    CHECK(detail::safe_text("abc", 3) == "abc");
    CHECK(detail::safe_text("abcd", 3) == "abc...");
    CHECK(detail::safe_text("bad \xFF\xC3(\xED\xA0\x80)") ==
          "bad \xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD)");
    CHECK(detail::safe_text("two\nlines") == "two\nlines");
    CHECK(detail::safe_text("two\nlines\r\t\x1b[31m\x7f\xC2\x85\xE2\x80\xA8", std::string::npos,
                            detail::text_controls::escape) ==
          "two\\nlines\\r\\t\\u001b[31m\\u007f\\u0085\\u2028");
    // Whatever the bytes, the result is valid UTF-8 within its bound.
    std::string all;
    for (int b = 0; b < 256; ++b)
        all += static_cast<char>(b);
    for (std::size_t max : {std::size_t{0}, std::size_t{1}, std::size_t{100}, all.size() * 6}) {
        const std::string s = detail::safe_text(all, max, detail::text_controls::escape);
        CHECK(detail::valid_utf8(s));
        CHECK(s.size() <= max + 3);
    }
}

TEST_CASE("utf8: loggable_text copies only what must change") {
    std::string storage;
    const std::string_view fine = "GET /dtx/stock caf\xC3\xA9";
    CHECK(detail::loggable_text(fine, storage).data() == fine.data());
    CHECK(storage.empty());
    CHECK(detail::loggable_text("/dtx/\xFF\n", storage) == "/dtx/\xEF\xBF\xBD\\n");
    CHECK(storage == "/dtx/\xEF\xBF\xBD\\n");
}
