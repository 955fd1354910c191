// The W3C trace context of a transaction (<dtx/trace_context.hpp>): made from a gid, continued
// from an incoming traceparent, and the malformed values the W3C rules refuse.
#include <dtx/gid.hpp>
#include <dtx/trace_context.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <string_view>

using namespace dtx;

TEST_CASE("trace context: a UUID gid gives the trace id, an incoming traceparent is continued") {
    const std::string gid = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    const trace_context t = trace_context::for_gid(gid);
    CHECK(t.traceparent().size() == 55);
    CHECK(t.traceparent().substr(0, 3) == "00-");
    CHECK(t.trace_id() == "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b");
    CHECK(t.traceparent().substr(52) == "-01");
    CHECK(trace_context::for_gid(gid).parent_id() != t.parent_id()); // a new span each time
    CHECK(trace_context::for_gid("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B").trace_id() ==
          t.trace_id());

    const trace_context other = trace_context::for_gid("order-17");
    CHECK(other.traceparent().size() == 55);
    CHECK(other.trace_id().find_first_not_of("0123456789abcdef") == std::string_view::npos);
    CHECK(other.trace_id() != trace_context::for_gid("order-17").trace_id()); // random
    CHECK_FALSE(trace_context());
    CHECK(trace_context().traceparent().empty());

    const std::string incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    auto c = trace_context::continuing(incoming);
    REQUIRE(c);
    CHECK(c->trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(c->parent_id() != "00f067aa0ba902b7");
    CHECK(c->traceparent().substr(52) == "-00"); // the caller's flags
    CHECK(
        trace_context::continuing("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"));
    for (const char* bad : {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) {
        CAPTURE(bad);
        CHECK_FALSE(trace_context::continuing(bad));
    }
}

TEST_CASE(
    "trace context: every gid dtx makes gives its own trace id; the parent id is never zero") {
    std::set<std::string, std::less<>> traces;
    for (int i = 0; i < 100; ++i) {
        const std::string gid = make_gid();
        const trace_context t = trace_context::for_gid(gid);
        CHECK(trace_context::continuing(t.traceparent())); // what it makes, it reads back
        std::string hex;
        for (char c : gid)
            if (c != '-')
                hex += c;
        CHECK(t.trace_id() == hex);
        CHECK(t.parent_id() != "0000000000000000");
        traces.emplace(t.trace_id());
    }
    CHECK(traces.size() == 100);
    // UUID text that is all zeros, or not UUID text, gets a random trace id.
    for (const char* gid :
         {"00000000-0000-0000-0000-000000000000", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",
          "0190a1b2xc3d4-7e5f-8a9b-0c1d2e3f4a5b", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4g5b", "",
          "order 17"}) {
        CAPTURE(gid);
        const trace_context t = trace_context::for_gid(gid);
        CHECK(t.trace_id().size() == 32);
        CHECK(t.trace_id() != "00000000000000000000000000000000");
        CHECK(t.trace_id() != trace_context::for_gid(gid).trace_id());
    }
}

TEST_CASE("trace context: continuing keeps trace id and flags, refuses the malformed") {
    const std::string tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";
    const auto c = trace_context::continuing(tp);
    REQUIRE(c);
    CHECK(c->trace_id() == "0af7651916cd43dd8448eb211c80319c");
    CHECK(c->traceparent().substr(53) == "03");
    CHECK(c->traceparent().size() == trace_context::size);
    // A continued context continues again, with a new parent each time.
    const auto again = trace_context::continuing(c->traceparent());
    REQUIRE(again);
    CHECK(again->trace_id() == c->trace_id());
    CHECK(again->parent_id() != c->parent_id());
    // A later version: longer values are read when the extra part starts with '-'.
    CHECK(trace_context::continuing(
        "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next"));
    CHECK(trace_context::continuing("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    for (const char* bad : {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
                            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
                            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
                            "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
                            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
                            "0G-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}) {
        CAPTURE(bad);
        CHECK_FALSE(trace_context::continuing(bad));
    }
}
