#ifndef DTX_HTTP_CONSUMER_HPP
#define DTX_HTTP_CONSUMER_HPP

// The consumer endpoint: one call makes a route of a dtx::http::server receive the messages that
// producers' relays POST (dtx::http::publisher, <dtx/http/publisher.hpp>) and process each of
// them once, through an inbox (<dtx/sqlite/inbox.hpp> or <dtx/postgres/inbox.hpp>).
//
//   dtx::http::server srv(ioc, {.port = 8090});
//   dtx::sqlite::inbox shipping({.path = "shipping.db"});
//   dtx::sqlite::inbox_handler ship = [](dtx::sqlite::connection& db, const dtx::envelope& e) {
//       db.prepare("INSERT INTO parcels (order_id) VALUES (?)")
//           .bind(e.payload.value("order", std::string()))
//           .run();
//       return dtx::success();
//   };
//   dtx::http::add_consumer(srv, "/shipping/events", shipping, "shipping", ship);
//   srv.start(); // producers send to http://<host>:8090/shipping/events
//
// The route takes POST with an envelope (<dtx/envelope.hpp>) as its JSON body, and answers what
// the publisher reads:
//
//   status  body                                        for the producer
//   200     {"status":"processed"}                      delivered: the handler's transaction
//                                                       committed together with the inbox row
//   200     {"status":"duplicate"}                      delivered: processed before, and not run
//                                                       again
//   422     {"error":"rejected","message":...}          parked at once: the handler answered
//                                                       failure() with that message
//   503     {"error":"retry_later","message":...}       sent again on its schedule: the handler
//                                                       answered pending() or threw, or the
//                                                       database failed
//   400     {"error":"invalid_envelope","field":"id",   parked at once: not an envelope (not JSON,
//            "message":...}                             a missing id, a wrong type, over the
//                                                       limits); nothing was processed
//   413     {"error":"body_too_large",...}              parked at once: over the largest
//                                                       envelope, decided on the header
//
// and what every route answers (server.hpp, route.hpp): 401 without the server's bearer token
// (the publisher's client sends it: client_options::bearer_token), 405 for another method, 503
// when the server is overloaded or the inbox takes longer than handler_timeout (the message is
// sent again, and the inbox acknowledges it as a duplicate if the first one committed after
// all). The 400's `field` names the field at fault (absent when the body as a whole is); no
// message repeats what the request sent. Why a retry is needed (an exception's text, a database
// error) is never sent: consumer_options::on_result hears it.
//
// Any inbox works that has consume(consumer, envelope, handler) (the concept dtx::inbox_for of
// <dtx/consume_result.hpp>): dtx::sqlite::inbox, dtx::postgres::inbox, or a type of yours that
// wraps one. The inbox and the handler's captures must outlive the server's last request (until
// async_stop() has completed), as everything a route refers to.

#include <dtx/consume_result.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/envelope.hpp>
#include <dtx/gid.hpp>
#include <dtx/http/route.hpp>
#include <dtx/http/server.hpp>
#include <dtx/message.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http {

struct consumer_options {
    /// What an envelope must keep to (as the producer's outbox does). The route refuses a body
    /// larger than envelope_size_limit(limits) with 413 on its header (or than the server's
    /// body_limit, if that is smaller: keep it at least as large, or lower the producers' limits).
    message_limits limits{};
    /// Whether the route needs the server's bearer token, if the server has one.
    bool require_token = true;
    /// Hears every envelope that was read and what became of it, on the server's executor (logs,
    /// metrics); keep it short. The only place where the reason of a retry is told.
    std::function<void(std::string_view message_id, const consume_result&)> on_result{};
};

/// A consumer route, before it is added to a server: its handler and its settings.
struct consumer_route {
    route_handler handler;
    route_options options;
};

namespace detail {

/// The answer the publisher reads for `r` (see the table at the top of the file).
inline reply consumer_reply(const consume_result& r) {
    switch (r.status) {
    case consume_status::processed:
    case consume_status::duplicate:
        return reply::json(200, {{"status", to_string(r.status)}});
    case consume_status::rejected:
        return reply::json(422, {{"error", "rejected"}, {"message", r.error}});
    case consume_status::retry:
        break;
    }
    return reply::json(503, {{"error", "retry_later"},
                             {"message", "the message cannot be processed now; send it again"}});
}

/// The answer to a body that is not an envelope.
inline reply invalid_envelope(const envelope_parse& p) {
    nlohmann::json body{{"error", "invalid_envelope"}, {"message", p.error}};
    if (!p.field.empty())
        body["field"] = p.field;
    return reply::json(400, body);
}

template <class Inbox, class Handler>
struct consumer_state {
    Inbox* inbox;
    std::string name;
    Handler handler;
    consumer_options options;
};

template <class Inbox, class Handler>
asio::awaitable<reply> consume_request(std::shared_ptr<consumer_state<Inbox, Handler>> st,
                                       const request& req) {
    envelope_parse parsed = parse_envelope(req.body(), st->options.limits);
    if (!parsed)
        co_return invalid_envelope(parsed);
    const std::string id = parsed.value->id;
    const consume_result r =
        co_await st->inbox->consume(st->name, std::move(*parsed.value), st->handler);
    if (st->options.on_result)
        st->options.on_result(id, r);
    co_return consumer_reply(r);
}

} // namespace detail

/// The route that consumes envelopes into `inbox` as the consumer `consumer_name` (its inbox
/// rows are keyed by it), running `handler` for each message: for a server add_consumer() adds
/// it, for a test of the handler or a fuzz target that calls it without a server. Its
/// body_limit is envelope_size_limit(options.limits). Throws std::invalid_argument for a consumer
/// name that is empty, over 128 characters or not plain text (the rule for gids).
template <class Inbox, class Handler>
requires inbox_for<Inbox, Handler>
    consumer_route make_consumer_route(Inbox& inbox, std::string consumer_name, Handler handler,
                                       consumer_options options = {}) {
    if (!valid_gid(consumer_name))
        throw std::invalid_argument("dtx::http::make_consumer_route: the consumer name is empty, "
                                    "longer than 128 characters or not plain text");
    route_options ro{.require_token = options.require_token,
                     .body_limit = envelope_size_limit(options.limits)};
    using state = detail::consumer_state<Inbox, Handler>;
    auto st = std::make_shared<state>(
        state{&inbox, std::move(consumer_name), std::move(handler), std::move(options)});
    route_handler h = [st](const request& req) { return detail::consume_request(st, req); };
    return {std::move(h), ro};
}

/// Serves POST `path` on `srv`: envelopes consumed into `inbox` as `consumer_name`, each by
/// `handler` (see the top of the file). The route's body limit is the largest envelope within
/// options.limits, or the server's body_limit if that is smaller. Call before srv.start();
/// throws as server::route() does (an invalid path, one taken).
template <class Inbox, class Handler>
requires inbox_for<Inbox, Handler>
void add_consumer(server& srv, std::string_view path, Inbox& inbox, std::string consumer_name,
                  Handler handler, consumer_options options = {}) {
    consumer_route r = make_consumer_route(inbox, std::move(consumer_name), std::move(handler),
                                           std::move(options));
    r.options.body_limit = std::min(*r.options.body_limit, srv.options().body_limit);
    srv.route(verb::post, path, std::move(r.handler), std::move(r.options));
}

} // namespace http
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
