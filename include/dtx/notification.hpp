#ifndef DTX_NOTIFICATION_HPP
#define DTX_NOTIFICATION_HPP

// Best-effort notifications: a result pushed to a receiver's URL (a merchant's webhook, a payment
// provider's callback) again and again on a long schedule until the receiver acknowledges it,
// and a query the receiver can use to ask for the result when it missed the notifications
// (<dtx/http/notification_query.hpp>). A thin layer over the outbox and the relay:
//
//   dtx::sqlite::outbox outbox({.path = "payments.db"});
//   dtx::http::publisher callbacks(http);
//   dtx::relay relay(ex, outbox, callbacks, dtx::with_notifications({.alert_after = 0}));
//   relay.start();
//   auto paid = [&](dtx::sqlite::connection& db) {
//       db.prepare("UPDATE payments SET state = 'paid' WHERE id = ?").bind("p-42").run();
//       dtx::notify(outbox, db,
//                   {.receiver = "https://merchant.example/callbacks",
//                    .id = "p-42",
//                    .result = {{"state", "paid"}}});
//       return 0;
//   };
//   co_await outbox.run<int>(paid); // the payment and its notification commit together
//
// - notify() adds the notification to the business transaction, as outbox.add() adds a message:
//   it exists exactly when the transaction committed, and is delivered at least once after.
// - The receiver gets the envelope of <dtx/envelope.hpp> with the payload
//   {"id":"p-42","result":{"state":"paid"}} (the query answers the same) and the header
//   `dtx-notification` holding the id. Any 2xx acknowledges it. A 4xx other than 408, 425 and 429
//   parks it at once (the receiver says it will never take it); anything else, or no answer, is
//   tried again (<dtx/http/publisher.hpp>).
// - with_notifications() makes the relay retry notifications on their own schedule,
//   delivery_schedule::notifications() unless you give another: 15 s, 15 s, 30 s, 3 min, 10 min,
//   20 min, 30 min x3, 1 h, 3 h x3, 6 h x2, 24 h (17 attempts, about two days), the payment
//   providers' habit. Other messages of the outbox keep the relay's `schedule`, so one outbox and
//   one relay serve both.
// - After the last attempt the notification is a dead letter (relay::dead_letters(), requeue(),
//   discard()) and the relay's alert hook hears it, at most once per alert_cooldown and receiver.
//   `alert_after = 0` keeps retries out of the alerts: a receiver that is down for an hour is the
//   normal case this schedule is for.
// - The notifications of one id are delivered in the order they were added (their key is
//   "notification:" followed by the id), and never wait for other messages. Give ids of at most
//   200 bytes of plain text; the receiver URL is the message's destination.
// - Receivers deduplicate by the envelope's id, or simply apply the latest result for an id
//   (which a result usually allows).

#include <dtx/delivery_schedule.hpp>
#include <dtx/envelope.hpp>
#include <dtx/message.hpp>
#include <dtx/relay.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

DTX_NAMESPACE_BEGIN

/// A result to push to a receiver until it acknowledges.
struct notification {
    std::string receiver{}; ///< the URL the relay POSTs to
    std::string id{};       ///< what the result is about (a payment id); what the receiver queries
    nlohmann::json result{};
};

/// The header of a notification's envelope; its value is the notification's id.
inline constexpr std::string_view notification_header = "dtx-notification";

/// What the receiver reads, in a notification and in the query's answer: {"id":..,"result":..}.
inline nlohmann::json notification_payload(std::string_view id, nlohmann::json result) {
    return {{"id", id}, {"result", std::move(result)}};
}

/// The outbox message that carries `n`.
inline message notification_message(notification n) {
    message m;
    m.destination = std::move(n.receiver);
    m.key = "notification:" + n.id;
    m.headers.emplace(notification_header, n.id);
    m.payload = notification_payload(n.id, std::move(n.result));
    return m;
}

/// True if `e` carries a notification.
inline bool is_notification(const envelope& e) {
    return e.headers.find(std::string(notification_header)) != e.headers.end();
}

/// Adds `n` to the transaction open on `db`, through `outbox` (any outbox with add(db, message):
/// dtx::sqlite::outbox), and returns its message id. Throws as outbox.add() does.
template <class Outbox, class Connection>
std::string notify(Outbox& outbox, Connection& db, notification n) {
    return outbox.add(db, notification_message(std::move(n)));
}

/// `o`, with notifications retried on `schedule`; other messages keep o.schedule (or what
/// o.schedule_for picks for them).
inline relay_options
with_notifications(relay_options o,
                   delivery_schedule schedule = delivery_schedule::notifications()) {
    auto own = std::make_shared<const delivery_schedule>(std::move(schedule));
    o.schedule_for =
        [own, others = std::move(o.schedule_for)](const envelope& e) -> const delivery_schedule* {
        if (is_notification(e))
            return own.get();
        return others ? others(e) : nullptr;
    };
    return o;
}

DTX_NAMESPACE_END

#endif
