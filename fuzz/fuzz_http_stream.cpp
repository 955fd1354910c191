// libFuzzer target: the raw byte stream of one connection, through the participant server's own
// connection loop (reading, header checks, answers, keep-alive). The fuzzer's bytes choose a few
// pipelined requests with random framing: Content-Length right, wrong, repeated or in a list;
// Transfer-Encoding chunked, mis-cased, after other codings, twice, with Content-Length, in
// HTTP/1.0; chunk sizes that lie; a missing or repeated Host or Authorization; and bodies that
// hold a whole request of their own. Every request's target names it (branch_id=R<n>, or S<n>
// for one written inside a body).
//
// The property: no request is ever served that the stream's framing did not delimit. A reference
// reader (Beast's parser for the header syntax, this file's own strict rules for the framing, as
// RFC 9112 §6.3 says) lists the requests the stream delimits; the branch calls the participant
// receives must come from that list, in its order. A smuggled request (one read from a body the
// framing left unclear) fails the property.
//
//   scripts/fuzz.sh [seconds]     builds with clang (-fsanitize=fuzzer,address,undefined), runs

#include <dtx/http/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

namespace {

namespace beast = boost::beast;
namespace http = dtx::http;
namespace hd = dtx::http::detail;
using dtx::asio::awaitable;

// ---- the stream ---------------------------------------------------------------------------------

std::string chunked(std::string_view body, FuzzedDataProvider& in) {
    std::string out;
    while (!body.empty()) {
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, body.size());
        const int lie =
            in.ConsumeIntegralInRange(0, 15) == 0 ? in.ConsumeIntegralInRange(-2, 2) : 0;
        char size[32];
        std::snprintf(size, sizeof size, "%zx",
                      static_cast<std::size_t>(static_cast<long>(n) + lie));
        out += size;
        out += in.ConsumeIntegralInRange(0, 15) == 0 ? ";ext=1\r\n" : "\r\n";
        out += body.substr(0, n);
        out += "\r\n";
        body.remove_prefix(n);
    }
    if (in.ConsumeIntegralInRange(0, 15) != 0)
        out += in.ConsumeIntegralInRange(0, 7) == 0 ? "0\r\nX-Trailer: 1\r\n\r\n" : "0\r\n\r\n";
    return out;
}

std::string make_request(FuzzedDataProvider& in, const std::string& id, bool outer);

std::string make_body(FuzzedDataProvider& in, const std::string& id, bool outer) {
    switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0:
        return {};
    case 1:
        return R"({"qty":1})";
    case 2:
        if (outer) // a whole request inside the body: served only if the framing says so
            return make_request(in, "S" + id.substr(1), false);
        return "{}";
    default:
        return in.ConsumeRandomLengthString(48);
    }
}

/// One request named `id`, with framing the fuzzer chooses.
std::string make_request(FuzzedDataProvider& in, const std::string& id, bool outer) {
    const bool http10 = in.ConsumeIntegralInRange(0, 7) == 0;
    std::string r = "POST /dtx/stock?gid=g&trans_type=tcc&op=try&branch_id=" + id +
                    (http10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    const int host = in.ConsumeIntegralInRange(0, 15);
    if (host != 0)
        r += "Host: x\r\n";
    if (host == 1)
        r += "Host: y\r\n";
    const int auth = in.ConsumeIntegralInRange(0, 15);
    if (auth != 0)
        r += auth == 1 ? "Authorization: Bearer u\r\n" : "Authorization: Bearer t\r\n";
    if (auth == 2)
        r += "Authorization: Bearer t\r\n";
    if (in.ConsumeIntegralInRange(0, 7) == 0)
        r += "Expect: 100-continue\r\n";
    if (in.ConsumeIntegralInRange(0, 15) == 0)
        r += http10 ? "Connection: keep-alive\r\n" : "Connection: close\r\n";

    const std::string body = make_body(in, id, outer);
    const std::string length = std::to_string(body.size());
    static constexpr const char* codings[] = {
        "chunked",          "Chunked",       " chunked ", "identity",          "xchunked",
        "chunked, chunked", "gzip, chunked", "chunked,",  "chunked, identity", "chunked;x=1",
        ", chunked",        "gzip",          "",          "CHUNKED\t"};
    std::string framed = body;
    switch (in.ConsumeIntegralInRange(0, 10)) {
    case 0: // none: the body, if any, is read as what follows
        break;
    case 1:
        r += "Content-Length: " + length + "\r\n";
        break;
    case 2: {
        const long n = static_cast<long>(body.size()) + in.ConsumeIntegralInRange(-3, 3);
        r += "Content-Length: " + std::to_string(n < 0 ? 0 : n) + "\r\n";
        break;
    }
    case 3:
        r += "Content-Length: " + length + "\r\nContent-Length: " + length + "\r\n";
        break;
    case 4:
        r += "Content-Length: " + length +
             "\r\nContent-Length: " + std::to_string(body.size() + 1) + "\r\n";
        break;
    case 5:
        r += "Content-Length: " + length + ", " + length + "\r\n";
        break;
    case 6:
        r += "Transfer-Encoding: chunked\r\n";
        framed = chunked(body, in);
        break;
    case 7:
        r += std::string("Transfer-Encoding: ") +
             codings[in.ConsumeIntegralInRange<std::size_t>(0, std::size(codings) - 1)] + "\r\n";
        if (in.ConsumeBool())
            framed = chunked(body, in);
        break;
    case 8:
        r += "Transfer-Encoding: chunked\r\nContent-Length: " + length + "\r\n";
        framed = chunked(body, in);
        break;
    case 9:
        r += "Content-Length: " + length + "\r\nTransfer-Encoding: chunked\r\n";
        break;
    default:
        r += in.ConsumeBool() ? "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
                              : "Transfer-Encoding: gzip\r\nX-Between: 1\r\n"
                                "Transfer-Encoding: chunked\r\n";
        framed = chunked(body, in);
        break;
    }
    return r + "\r\n" + framed;
}

// ---- the reference reader -----------------------------------------------------------------------

/// The length of the chunked body at the start of `s` (chunks, last chunk, trailer fields), or
/// empty if it is not one, or not whole.
std::optional<std::size_t> chunked_length(std::string_view s) {
    std::size_t at = 0;
    for (;;) {
        std::size_t size = 0;
        std::size_t digits = 0;
        for (; at < s.size() && std::isxdigit(static_cast<unsigned char>(s[at])); ++at, ++digits) {
            // A size too large to hold is unclear; leading zeros are not (RFC 9112 §7.1 allows
            // any number of them, and the server reads "0000000000000000" as the last chunk).
            if (size > (std::numeric_limits<std::size_t>::max() >> 4))
                return std::nullopt;
            const char c = s[at];
            size = size * 16 + static_cast<std::size_t>(c <= '9'   ? c - '0'
                                                        : c <= 'F' ? c - 'A' + 10
                                                                   : c - 'a' + 10);
        }
        const std::size_t eol = s.find("\r\n", at);
        if (digits == 0 || eol == std::string_view::npos)
            return std::nullopt;
        if (eol != at && s[at] != ';' && s[at] != ' ' && s[at] != '\t')
            return std::nullopt; // only extensions may follow the size
        at = eol + 2;
        if (size == 0)
            break;
        if (s.size() - at < size + 2 || s.substr(at + size, 2) != "\r\n")
            return std::nullopt;
        at += size + 2;
    }
    for (;;) { // trailer fields, up to an empty line
        const std::size_t eol = s.find("\r\n", at);
        if (eol == std::string_view::npos)
            return std::nullopt;
        const bool last = eol == at;
        at = eol + 2;
        if (last)
            return at;
    }
}

/// The comma-separated elements of every `f` field of `head`, trimmed.
std::vector<std::string> elements(const beast::http::request_header<>& head, beast::http::field f) {
    std::vector<std::string> out;
    for (const auto& field : head) {
        if (field.name() != f)
            continue;
        std::string_view list = field.value();
        while (!list.empty()) {
            const std::size_t comma = list.find(',');
            std::string_view e = list.substr(0, comma);
            list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            while (!e.empty() && (e.front() == ' ' || e.front() == '\t'))
                e.remove_prefix(1);
            while (!e.empty() && (e.back() == ' ' || e.back() == '\t'))
                e.remove_suffix(1);
            if (!e.empty())
                out.emplace_back(e);
        }
    }
    return out;
}

/// The branch ids of the requests `bytes` delimits, in order: up to the first request whose
/// framing is unclear (or that a server must refuse and close on: no Host, two of them, two
/// Authorization fields), or that ends the connection.
std::vector<std::string> delimited(std::string_view bytes, const http::server_options& opts) {
    namespace bh = beast::http;
    std::vector<std::string> ids;
    while (!bytes.empty()) {
        bh::request_parser<bh::empty_body> parser;
        parser.header_limit(opts.header_limit);
        parser.eager(false);
        boost::system::error_code ec;
        std::size_t used = 0;
        while (!parser.is_header_done()) {
            const std::size_t n =
                parser.put(dtx::asio::buffer(bytes.data() + used, bytes.size() - used), ec);
            used += n;
            if (ec == bh::error::need_more && n > 0 && used < bytes.size())
                continue;
            if (ec || n == 0)
                return ids;
        }
        const bh::request_header<>& head = parser.get();
        if ((head.version() >= 11 && head.count(bh::field::host) != 1) ||
            head.count(bh::field::host) > 1 || head.count(bh::field::authorization) > 1)
            return ids;
        const auto codings = elements(head, bh::field::transfer_encoding);
        const auto lengths = elements(head, bh::field::content_length);
        const bool has_te = head.find(bh::field::transfer_encoding) != head.end();
        std::size_t body = 0;
        if (has_te) {
            if (head.version() < 11 || !lengths.empty() || codings.size() != 1 ||
                !beast::iequals(codings[0], "chunked"))
                return ids;
            const auto n = chunked_length(bytes.substr(used));
            if (!n)
                return ids;
            body = *n;
        } else if (!lengths.empty()) {
            for (const std::string& l : lengths)
                if (l != lengths[0] || l.size() > 9 ||
                    l.find_first_not_of("0123456789") != std::string::npos)
                    return ids;
            body = std::stoul(lengths[0]);
            if (body > bytes.size() - used)
                return ids;
        }
        const std::string_view target = head.target();
        const std::size_t at = target.find("branch_id=");
        ids.emplace_back(at == std::string_view::npos ? "" : target.substr(at + 10));
        bytes.remove_prefix(used + body);
        if (!parser.keep_alive())
            break;
    }
    return ids;
}

// ---- the server ---------------------------------------------------------------------------------

std::vector<std::string> calls; // branch ids, in the order the participant received them

awaitable<dtx::outcome> record(const dtx::branch_request& r) {
    calls.emplace_back(r.branch_id);
    co_return dtx::success();
}

struct harness {
    harness() {
        opts.header_limit = 2048;
        opts.body_limit = 4096;
        opts.body_budget = 8192;
        opts.bearer_token = "t";
        participants.add_tcc("stock",
                             {.on_try = record, .on_confirm = record, .on_cancel = record});
    }

    /// Serves `bytes` as one connection's input, then its end, through the server's loop.
    void serve(std::string_view bytes) {
        auto st = std::make_shared<hd::server_state>(ioc.get_executor(), &participants, opts);
        hd::server_connection c(hd::tcp::socket(ioc), {});
        beast::test::stream server_end(ioc);
        beast::test::stream client_end(ioc);
        server_end.connect(client_end);
        server_end.append(bytes);
        client_end.close(); // the server reads the bytes, then the end of the stream
        bool done = false;
        hd::watch_phase(*st, c, opts.read_timeout, c.io);
        dtx::asio::co_spawn(ioc, hd::serve_requests(*st, c, server_end),
                            [&](std::exception_ptr e, hd::loop_end) {
                                if (e)
                                    std::rethrow_exception(e);
                                done = true;
                            });
        ioc.restart();
        while (!done && ioc.run_one() > 0) {
        }
        if (!done) {
            std::fprintf(stderr, "the connection did not end after its input did\n");
            std::abort();
        }
        st->watch.remove(c.deadline);
        st->watch.release_if_idle();
        ioc.restart();
        ioc.poll();
    }

    dtx::asio::io_context ioc;
    dtx::participant_registry participants;
    http::server_options opts;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static harness h;
    FuzzedDataProvider in(data, size);
    std::string bytes;
    const int requests = in.ConsumeIntegralInRange(1, 5);
    for (int i = 0; i < requests; ++i)
        bytes += make_request(in, "R" + std::to_string(i), true);
    bytes += in.ConsumeRemainingBytesAsString(); // and whatever follows

    calls.clear();
    h.serve(bytes);
    const std::vector<std::string> allowed = delimited(bytes, h.opts);
    std::size_t next = 0;
    for (const std::string& id : calls) {
        while (next < allowed.size() && allowed[next] != id)
            ++next;
        if (next == allowed.size()) {
            std::fprintf(stderr, "served %s, which the framing did not delimit; stream:\n%.*s\n",
                         id.c_str(), static_cast<int>(bytes.size()), bytes.data());
            std::abort();
        }
        ++next;
    }
    return 0;
}
