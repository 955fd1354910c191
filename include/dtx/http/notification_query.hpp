#ifndef DTX_HTTP_NOTIFICATION_QUERY_HPP
#define DTX_HTTP_NOTIFICATION_QUERY_HPP

// The query half of best-effort notifications (<dtx/notification.hpp>): a route on the producer's
// server that answers the current result for an id, so that a receiver that missed the
// notifications (it was down longer than the schedule, or lost one) can reconcile.
//
//   dtx::http::server api(ioc, {.port = 8080});
//   dtx::http::result_lookup find = [](std::string id)
//       -> asio::awaitable<std::optional<nlohmann::json>> {
//       if (id != "p-42")
//           co_return std::nullopt; // 404
//       co_return nlohmann::json{{"state", "paid"}};
//   };
//   dtx::http::add_notification_query(api, "/payments", find);
//   api.start(); // GET /payments/p-42
//
// GET {prefix}/{id} answers
//   200 {"id":"p-42","result":{"state":"paid"}}     the payload a notification carries
//   404 {"error":"unknown_id","message":...}         the lookup found nothing
// and what every route answers (route.hpp): 401 without the server's bearer token (unless
// route_options::require_token is false), 405 for another method, 500 if the lookup throws.
// The id is the path segment percent-decoded: valid UTF-8 without control characters, never
// empty. The lookup runs on the server's executor: read the result where it does not block it
// (dtx::sqlite::outbox::run(), or a connection pool of your own).

#include <dtx/detail/config.hpp>
#include <dtx/http/route.hpp>
#include <dtx/http/server.hpp>
#include <dtx/notification.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

DTX_NAMESPACE_BEGIN
namespace http {

/// Finds the current result for an id, or nothing.
using result_lookup = std::function<asio::awaitable<std::optional<nlohmann::json>>(std::string id)>;

namespace detail {

inline asio::awaitable<reply> answer_query(std::shared_ptr<const result_lookup> lookup,
                                           const request& req) {
    const std::string& id = req.param("id");
    std::optional<nlohmann::json> result = co_await (*lookup)(id);
    if (!result)
        throw error_reply(404, "unknown_id", "no result is known for this id");
    co_return reply::json(200, notification_payload(id, std::move(*result)));
}

} // namespace detail

/// Serves GET `prefix`/{id} on `srv` with `lookup` (see the top of the file). Call before
/// srv.start(); throws as server::route() does (a prefix that is not a path, a route taken).
inline void add_notification_query(server& srv, std::string_view prefix, result_lookup lookup,
                                   route_options options = {}) {
    auto shared = std::make_shared<const result_lookup>(std::move(lookup));
    route_handler h = [shared](const request& req) { return detail::answer_query(shared, req); };
    srv.route(verb::get, std::string(prefix) + "/{id}", std::move(h), std::move(options));
}

} // namespace http
DTX_NAMESPACE_END

#endif
