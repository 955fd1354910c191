// Participant URLs (<dtx/http/url.hpp>): parsing, the normal form, and the reasons for refusing.
#include <dtx/http/url.hpp>

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <string_view>

using namespace dtx;

namespace {

bool contains(std::string_view s, std::string_view part) {
    return s.find(part) != std::string_view::npos;
}

} // namespace

TEST_CASE("participant URLs: parsed in a normal form, or refused with a reason that does not "
          "repeat them") {
    auto u = http::parse_url("http://127.0.0.1:8081/dtx/inventory");
    REQUIRE(u);
    CHECK(u->host == "127.0.0.1");
    CHECK(u->port == 8081);
    CHECK(u->target == "/dtx/inventory");
    CHECK(u->endpoint() == "127.0.0.1:8081");
    CHECK(u->text() == "http://127.0.0.1:8081/dtx/inventory");

    u = http::parse_url("HTTP://Stock.example");
    REQUIRE(u);
    CHECK(u->port == 80);
    CHECK(u->target == "/");
    CHECK(u->host_header() == "Stock.example");
    CHECK(u->text() == "http://Stock.example/");

    u = http::parse_url("http://[::1]:9000?tenant=7");
    REQUIRE(u);
    CHECK(u->host == "::1");
    CHECK(u->target == "/?tenant=7");
    CHECK(u->endpoint() == "[::1]:9000");

    u = http::parse_url("HTTPS://Stock.example/dtx/stock");
    REQUIRE(u);
    CHECK(u->tls);
    CHECK(u->port == 443);
    CHECK(u->host_header() == "Stock.example");
    CHECK(u->text() == "https://Stock.example/dtx/stock");
    u = http::parse_url("https://127.0.0.1:80/x");
    REQUIRE(u);
    CHECK(u->host_header() == "127.0.0.1:80");
    CHECK(u->text() == "https://127.0.0.1:80/x");
    CHECK(u != http::parse_url("http://127.0.0.1:80/x"));

    for (const char* bad :
         {"https://", "https://user:pw@a/x", "ftp://a", "inventory", "http://", "http://:80/x",
          "http://a:0/x", "http://a:65536/x", "http://a:/x", "http://a:8x/x", "http://user:pw@a/x",
          "http://a/x#frag", "http://a/x y", "http://[::1/x", "http://a b/x", "http://[::1]x/"}) {
        CAPTURE(bad);
        CHECK_FALSE(http::parse_url(bad));
    }
    try {
        http::make_url("ftp://secret-host/x");
        FAIL("ftp was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(contains(e.what(), "not an http:// or https:// URL"));
        CHECK_FALSE(contains(e.what(), "secret-host"));
    }
    try {
        http::make_url("http://user:hunter2@a/x");
        FAIL("user info was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK_FALSE(contains(e.what(), "hunter2"));
    }
}

TEST_CASE("participant URLs: every refusal says why, and the reasons differ") {
    const std::pair<const char*, const char*> cases[] = {
        {"ftp://a/x", "not an http:// or https:// URL"},
        {"http://u@a/x", "user info"},
        {"http://a/x#f", "fragment"},
        {"http://a/x\x7f", "printable ASCII"},
        {"http://a/caf\xC3\xA9", "printable ASCII"},
        {"http://[::1/x", "closing ']'"},
        {"http://[::1]:80x/", "not a number"},
        {"http://[::1]x/", "after an IPv6 host"},
        {"http://[]/x", "the host is empty"},
        {"http://[::g]/x", "hex digit"},
        {"http://:80/x", "the host is empty"},
        {"http://a%20b/x", "the host holds"},
        {"http://a:99999/x", "not a number from 1 to 65535"},
    };
    for (const auto& kase : cases) {
        const char* text = kase.first;
        const char* why = kase.second;
        CAPTURE(text);
        CHECK_FALSE(http::parse_url(text));
        try {
            http::make_url(text);
            FAIL("accepted");
        } catch (const std::invalid_argument& e) {
            CHECK(contains(e.what(), why));
        }
    }
}

TEST_CASE("participant URLs: the query is kept, the scheme is case-insensitive, ports at the "
          "limits") {
    auto u = http::parse_url("http://stock.internal?x=1&y=2");
    REQUIRE(u);
    CHECK(u->target == "/?x=1&y=2");
    CHECK(u->text() == "http://stock.internal/?x=1&y=2");
    u = http::parse_url("HtTp://a:1/");
    REQUIRE(u);
    CHECK(u->port == 1);
    CHECK(u->host_header() == "a:1");
    u = http::parse_url("http://a:65535/p/q");
    REQUIRE(u);
    CHECK(u->port == 65535);
    CHECK(u->endpoint() == "a:65535");
    u = http::parse_url("http://a:80/");
    REQUIRE(u);
    CHECK(u->host_header() == "a"); // the default port is not repeated
    CHECK(*http::parse_url("http://a:80/") == *http::parse_url("http://a/"));
    u = http::parse_url("https://[2001:db8::1]/dtx");
    REQUIRE(u);
    CHECK(u->host == "2001:db8::1");
    CHECK(u->default_port() == 443);
    CHECK(u->host_header() == "[2001:db8::1]");
    CHECK(u->text() == "https://[2001:db8::1]/dtx");
    CHECK(u->scheme() == "https://");
}
