#ifndef DTX_HTTP_DETAIL_READ_REQUEST_HPP
#define DTX_HTTP_DETAIL_READ_REQUEST_HPP

// Reading one request on a server connection: its header first, checked (header_checks.hpp) and
// its body's bytes taken from the body budget, before the body is read or 100 Continue is sent,
// so that a request refused on its header costs the server no body.
//
// Not thread-safe: everything runs on the server's executor (one thread, or a strand).

#include <dtx/http/detail/header_checks.hpp>
#include <dtx/http/detail/request_handler.hpp>
#include <dtx/http/detail/server_state.hpp>
#include <dtx/version.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// Largest body of a request refused on its header (401) that is still read, so that the
/// connection can go on; a larger one, or one not yet sent (100-continue), closes it instead.
inline constexpr std::uint64_t refused_body_drain_limit = 4096;

/// True if the client waits for 100 Continue before it sends the body.
inline bool expects_continue(const beast::http::request_header<>& head) {
    const std::string_view expect = head[beast::http::field::expect];
    return beast::iequals(expect, "100-continue");
}

/// How reading a request ended.
struct read_result {
    /// The read failed; asio::error::timed_out if the phase's deadline passed.
    boost::system::error_code ec;
    /// Refused on its header, before its body was read or 100 Continue sent.
    std::optional<problem> refused;
    /// The refused request's body was read all the same (it was small): the connection may go on.
    bool body_read = false;
    /// The request's body limit: its route's, or the server's.
    std::uint64_t body_limit = 0;
};

/// Reads one request into `parser` within the phase's deadline. Its header is checked first
/// (header_problem) and its body's bytes taken from the budget (`body`): a request refused then
/// is answered without its body being read.
template <class Stream>
asio::awaitable<read_result> read_request(server_state& st, server_connection& c, Stream& stream,
                                          beast::flat_buffer& buffer, request_parser& parser,
                                          body_reservation& body) {
    read_result r;
    std::size_t n = 0;
    std::tie(r.ec, n) =
        co_await beast::http::async_read_header(stream, buffer, parser, io_token(c));
    if (!r.ec) {
        const beast::http::request_header<>& head = parser.get();
        const header_rules rules = st.handler.rules_for(head.method(), head.target());
        r.body_limit = rules.body_limit;
        r.refused = header_problem(head, parser.chunked(), st.opts, rules);
        const auto length = parser.content_length(); // a boost::optional
        if (!r.refused && length && *length > rules.body_limit)
            r.refused = body_too_large(rules.body_limit);
        parser.body_limit(rules.body_limit); // what a chunked body may add up to
        if (!r.refused && !parser.is_done() && !body.take(length.value_or(rules.body_limit)))
            r.refused = problem{503, "overloaded",
                                "the server holds as many request bodies as it may; try again "
                                "later"};
        if (r.refused) {
            r.body_read = parser.is_done();
            if (!r.body_read && r.refused->status == 401 && length &&
                *length <= refused_body_drain_limit && !expects_continue(head)) {
                std::tie(r.ec, n) =
                    co_await beast::http::async_read(stream, buffer, parser, io_token(c));
                r.body_read = !r.ec;
                if (r.ec)
                    r.refused.reset();
            }
        } else if (!parser.is_done()) {
            if (expects_continue(head)) {
                // Clients that ask wait for this before they send the body.
                beast::http::response<beast::http::empty_body> go_on{beast::http::status::continue_,
                                                                     11};
                auto [wec, wn] = co_await beast::http::async_write(stream, go_on, io_token(c));
                r.ec = wec;
            }
            if (!r.ec)
                std::tie(r.ec, n) =
                    co_await beast::http::async_read(stream, buffer, parser, io_token(c));
        }
    }
    if (phase_expired(st, c) && r.ec)
        r.ec = asio::error::timed_out;
    co_return r;
}

} // namespace http::detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
