// The order service's messages: what it tells other systems once an order has ended, through a
// transactional outbox in orders.db and a relay.
//
//   - to the mail service (`--mail-url`), an `order_completed` message for every completed order:
//     delivered at least once, processed exactly once by the mail service's inbox;
//   - to the merchant's webhook (`--merchant-url`), a best-effort notification of every order's
//     end (completed, cancelled, shipment_failed), retried until the merchant acknowledges it; the
//     merchant can also ask for an order's result: GET /order-results/{id} on the order API.
//
// Both are added by order_ended(), called in the local transaction that moves the order to its
// final state (a barrier handler of the order's own branches, or the cancellation of an order
// whose checkout never ran): the messages exist exactly when the order's end committed. A repeat
// of that branch (a retry, or recovery after a crash) is answered by the barrier without running
// the handler, so it adds no second message.
//
// Fault point `--pause-at relay:WHO`: the relay stops after the mail service acknowledged WHO's
// order_completed message and before it marks the message delivered, answering nothing more, as a
// hung process does; the demo kills the process with SIGKILL and restarts it. The new relay claims
// the message again once its lease (`--relay-lease-ms`) has expired and delivers it again; the
// mail service's inbox answers it as a duplicate.
#ifndef DTX_EXAMPLES_SHOP_ORDER_MESSAGES_HPP
#define DTX_EXAMPLES_SHOP_ORDER_MESSAGES_HPP

#include <dtx/http/client.hpp>
#include <dtx/http/notification_query.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/notification.hpp>
#include <dtx/relay.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "order_record.hpp"
#include "shop.hpp"

namespace shop {

class order_messages {
public:
    order_messages(asio::io_context& ioc, const settings& s, const event_log& log,
                   pause_point& pause)
        : log_(log)
        , pause_(pause)
        , mail_url_(s.get("mail-url", ""))
        , merchant_url_(s.get("merchant-url", ""))
        , outbox_({.path = s.require("db")})
        , http_(ioc.get_executor())
        , publisher_(*this)
        , relay_(ioc.get_executor(), outbox_, publisher_, relay_options_of(s, log)) {}

    /// Adds the messages of order `id`, which has just ended, to the transaction open on `c` (a
    /// connection to orders.db), the one that records its end.
    void order_ended(dtx::sqlite::connection& c, const std::string& id) {
        if (mail_url_.empty() && merchant_url_.empty())
            return;
        const std::optional<order_record> o = find_order(c, id);
        if (!o || !is_final_state(o->state))
            throw std::logic_error("order " + id + " has not ended");
        if (!mail_url_.empty() && o->state == "completed") {
            dtx::message m;
            m.destination = mail_url_;
            m.key = "order:" + o->id; // the messages of one order, in commit order
            m.payload = order_result(*o);
            m.payload["event"] = "order_completed";
            outbox_.add(c, std::move(m));
        }
        if (!merchant_url_.empty())
            dtx::notify(outbox_, c,
                        {.receiver = merchant_url_, .id = o->id, .result = order_result(*o)});
    }

    /// GET /order-results/{id} on `api`: what the merchant's notification of order `id` says (its
    /// current state if it has not ended), for a merchant that missed it.
    void add_query(dtx::http::server& api) {
        dtx::http::result_lookup lookup =
            [this](std::string id) -> asio::awaitable<std::optional<nlohmann::json>> {
            auto job = [id](dtx::sqlite::connection& c) -> std::optional<nlohmann::json> {
                const std::optional<order_record> o = find_order(c, id);
                if (!o)
                    return std::nullopt;
                return order_result(*o);
            };
            co_return co_await outbox_.run<std::optional<nlohmann::json>>(std::move(job));
        };
        dtx::http::add_notification_query(api, "/order-results", std::move(lookup));
    }

    void start() {
        if (!mail_url_.empty() || !merchant_url_.empty())
            relay_.start();
    }
    /// Lets the deliveries under way finish.
    asio::awaitable<void> stop() { co_await relay_.stop(); }

private:
    /// The relay's publisher: HTTP, with a log line per delivery and the fault point.
    class logging_publisher final : public dtx::publisher {
    public:
        explicit logging_publisher(order_messages& m)
            : m_(m)
            , http_(m.http_) {}

        asio::awaitable<std::vector<dtx::delivery_result>>
        publish(std::span<const dtx::envelope> batch) override {
            auto one = [this](const dtx::envelope& e) { return deliver(e); };
            co_return co_await dtx::function_publisher::publish_each(batch, one);
        }

    private:
        /// The order a message or notification is about.
        static std::string order_of(const dtx::envelope& e) {
            return e.payload.value("order_id", e.payload.value("id", std::string("?")));
        }

        asio::awaitable<dtx::delivery_result> deliver(const dtx::envelope& e) {
            const bool notification = dtx::is_notification(e);
            const std::string what = std::string(notification ? "notification" : "message") + " " +
                                     e.id + " (order " + order_of(e) + ")";
            dtx::delivery_result r = co_await http_.deliver(e);
            if (r.status == dtx::delivery_status::delivered) {
                m_.log_.line("relay: " + what + " delivered to " + e.destination + ", attempt " +
                             std::to_string(e.attempt));
                if (!notification &&
                    m_.pause_.reached("relay", e.payload.value("customer", std::string()))) {
                    m_.log_.line("PAUSED after the delivery of " + what +
                                 ", before marking it delivered (fault point relay): answering "
                                 "nothing until killed");
                    co_await hang();
                }
            } else if (e.attempt == 1 || e.attempt % 10 == 0) {
                m_.log_.line("relay: " + what + " not delivered, attempt " +
                             std::to_string(e.attempt) + " (" + r.error + ")");
            }
            co_return r;
        }

        order_messages& m_;
        dtx::http::publisher http_;
    };

    static dtx::relay_options relay_options_of(const settings& s, const event_log& log) {
        dtx::relay_options o;
        o.lease = std::chrono::milliseconds(s.number("relay-lease-ms", 60'000));
        o.on_alert = [&log](const dtx::delivery_alert& a) {
            log.line("ALERT message " + std::string(a.message_id) + " to " +
                     std::string(a.destination) + (a.dead_letter ? " parked" : " failing") +
                     " after " + std::to_string(a.attempts) + " attempts: " + std::string(a.error));
        };
        // The demo retries notifications every second; a shop keeps the providers' schedule.
        const long every = s.number("notify-retry-ms", 0);
        if (every <= 0)
            return dtx::with_notifications(std::move(o));
        const std::vector<std::chrono::milliseconds> delays(600, std::chrono::milliseconds(every));
        return dtx::with_notifications(std::move(o), dtx::delivery_schedule::fixed(delays));
    }

    const event_log& log_;
    pause_point& pause_;
    std::string mail_url_, merchant_url_;
    dtx::sqlite::outbox outbox_; // outlives the barrier's connection it adds messages on
    dtx::http::client http_;
    logging_publisher publisher_;
    dtx::relay relay_;
};

} // namespace shop

#endif
