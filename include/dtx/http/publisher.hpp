#ifndef DTX_HTTP_PUBLISHER_HPP
#define DTX_HTTP_PUBLISHER_HPP

// The relay's publisher over HTTP: POSTs each message's envelope (<dtx/envelope.hpp>) as the JSON
// body to its destination, a URL, through a dtx::http::client (kept-alive connections, its
// timeouts, TLS for https:// URLs when the client has TLS settings).
//
//   dtx::http::client http(ioc.get_executor());
//   dtx::http::publisher webhooks(http);
//   dtx::sqlite::outbox outbox({.path = "orders.db"});
//   dtx::relay relay(ex, outbox, webhooks);
//
// The answer decides:
//   - 2xx: delivered;
//   - 4xx, except 408, 425 and 429: rejected, the message is parked at once (the consumer says it
//     can never take it: malformed, unknown, forbidden);
//   - anything else (408, 425, 429, 5xx, 1xx, 3xx), no answer, a timeout or a broken connection:
//     retried on the relay's schedule.
// The error kept with the message names the URL, the status and the start of the answer's body,
// as valid UTF-8. A destination that is not an http:// or https:// URL is rejected.
//
// The request also carries the message id in the header `Dtx-Message-Id`, so that a receiver can
// deduplicate without reading the body. The client may send a request a second time when a
// kept-alive connection closes under it; that is harmless, as every delivery may be repeated.
//
// Requests to one endpoint (host and port) are sent at most publisher_options::
// max_requests_per_endpoint at a time, by default as many as the client keeps idle connections
// per endpoint (client_options::max_idle_per_endpoint); the others wait their turn. The relay
// keeps many more messages in flight (relay_options::max_in_flight); without the bound, each
// of them beyond the pool would open a connection for one request and close it after.

#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/envelope.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/detail/endpoint_gate.hpp>
#include <dtx/http/url.hpp>
#include <dtx/publisher.hpp>
#include <dtx/version.hpp>

#include <array>
#include <cstddef>
#include <exception>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http {

struct publisher_options {
    /// Requests at once to one endpoint; 0: the client's max_idle_per_endpoint (or no bound, if
    /// that is 0). More than the client keeps idle are opened for one request and closed after.
    std::size_t max_requests_per_endpoint = 0;
};

class publisher final : public dtx::publisher {
public:
    /// Publishes through `c`, which must outlive it and work on the relay's executor.
    explicit publisher(client& c)
        : publisher(c, publisher_options{}) {}
    publisher(client& c, publisher_options o)
        : client_(c)
        , gate_(bound(c, o)) {}

    asio::awaitable<std::vector<delivery_result>>
    publish(std::span<const envelope> batch) override {
        auto one = [this](const envelope& e) { return deliver(e); };
        co_return co_await function_publisher::publish_each(batch, one);
    }

    /// Delivers one envelope.
    asio::awaitable<delivery_result> deliver(const envelope& e) {
        const std::optional<url> to = parse_url(e.destination);
        if (!to)
            co_return delivery_result::rejected("the destination '" +
                                                dtx::detail::safe_text(e.destination, 256) +
                                                "' is not an http:// or https:// URL");
        const std::string body = e.to_json();
        const std::array<header, 1> headers{header{"Dtx-Message-Id", e.id}};
        const std::string_view no_query;
        response r;
        try {
            const auto place = co_await gate_.enter(std::string(to->scheme()) + to->endpoint());
            r = co_await client_.post(*to, no_query, body, headers);
        } catch (const std::exception& x) {
            co_return delivery_result::retry_later(x.what());
        }
        co_return result_of(to->text(), r.status, r.body);
    }

    /// What an answer with `status` and `body` from `where` means for a message.
    static delivery_result result_of(std::string_view where, unsigned status,
                                     std::string_view body) {
        if (status >= 200 && status < 300)
            return delivery_result::delivered();
        std::string why = "POST " + std::string(where) + ": HTTP " + std::to_string(status);
        if (!body.empty())
            why += ": " + dtx::detail::safe_text(body, 512, dtx::detail::text_controls::escape);
        const bool permanent =
            status >= 400 && status < 500 && status != 408 && status != 425 && status != 429;
        return permanent ? delivery_result::rejected(why) : delivery_result::retry_later(why);
    }

private:
    static std::size_t bound(const client& c, const publisher_options& o) {
        if (o.max_requests_per_endpoint != 0)
            return o.max_requests_per_endpoint;
        const std::size_t idle = c.options().max_idle_per_endpoint;
        return idle != 0 ? idle : std::numeric_limits<std::size_t>::max();
    }

    client& client_;
    detail::endpoint_gate gate_;
};

} // namespace http
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
