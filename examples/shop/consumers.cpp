// The services that receive the order service's messages (order_messages.hpp), each an HTTP
// consumer route behind an inbox in its own SQLite database:
//
//   shop mail     --port P --db mail.db       POST /mail/events        order_completed messages
//   shop merchant --port P --db merchant.db   POST /webhooks/orders    notifications of order ends
//
// The relay delivers at least once; the inbox (dtx::sqlite::inbox, through
// dtx::http::add_consumer) makes each message's effect happen once: the handler's row and the
// inbox row commit together, and a copy that arrives again is answered 200 "duplicate" without
// running the handler. The mail table has no unique key of its own on purpose: only the inbox
// keeps a redelivered order_completed from writing a second mail (the auditor counts them).
#include <dtx/http/consumer.hpp>
#include <dtx/http/server.hpp>
#include <dtx/sqlite/inbox.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "shop.hpp"

namespace shop {
namespace {

using dtx::sqlite::connection;

/// A field of a message's payload; a missing or mistyped one makes the message one the consumer
/// can never process (the producer parks it).
template <class T>
std::optional<T> field(const dtx::envelope& e, const char* name) {
    const auto it = e.payload.is_object() ? e.payload.find(name) : e.payload.end();
    if (it == e.payload.end())
        return std::nullopt;
    try {
        return it->get<T>();
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

/// mail: writes the customer's "your order is complete" mail (a row of the mails table).
dtx::sqlite::inbox_handler mail_handler(const event_log& log) {
    return [&log](connection& c, const dtx::envelope& e) {
        const auto event = field<std::string>(e, "event");
        const auto order = field<std::string>(e, "order_id");
        const auto customer = field<std::string>(e, "customer");
        const auto amount = field<std::int64_t>(e, "amount");
        if (!event || *event != "order_completed" || !order || !customer || !amount)
            return dtx::failure("not an order_completed message");
        const std::string text = "Dear " + *customer + ", your order " + *order +
                                 " is on its way; you paid " + std::to_string(*amount) + ".";
        c.prepare("INSERT INTO mails (message_id, order_id, customer, text) VALUES (?, ?, ?, ?)")
            .bind(e.id, *order, *customer, text)
            .run();
        log.line("mail for order " + *order + " to " + *customer + " (message " + e.id +
                 "): written");
        return dtx::success();
    };
}

/// merchant: keeps the latest result of each order it is notified of.
dtx::sqlite::inbox_handler merchant_handler(const event_log& log) {
    return [&log](connection& c, const dtx::envelope& e) {
        const auto order = field<std::string>(e, "id");
        const auto result = field<nlohmann::json>(e, "result");
        if (!order || !result || !result->is_object() || !result->contains("state") ||
            !(*result)["state"].is_string())
            return dtx::failure("not an order notification");
        const std::string state = (*result)["state"];
        c.prepare("INSERT INTO order_results (order_id, state, message_id) VALUES (?1, ?2, ?3) "
                  "ON CONFLICT (order_id) DO UPDATE SET state = ?2, message_id = ?3")
            .bind(*order, state, e.id)
            .run();
        log.line("notified: order " + *order + " " + state + " (message " + e.id + ")");
        return dtx::success();
    };
}

struct consumer_kind {
    const char* name;
    const char* path; // the route the producer's relay POSTs to
    const char* tables;
    dtx::sqlite::inbox_handler (*handler)(const event_log&);
};

const consumer_kind consumers[] = {
    {"mail", "/mail/events",
     "CREATE TABLE IF NOT EXISTS mails (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, "
     "order_id TEXT NOT NULL, customer TEXT NOT NULL, text TEXT NOT NULL)",
     mail_handler},
    {"merchant", "/webhooks/orders",
     "CREATE TABLE IF NOT EXISTS order_results (order_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
     "message_id TEXT NOT NULL)",
     merchant_handler},
};

} // namespace

bool is_consumer_service(std::string_view name) {
    for (const auto& kind : consumers)
        if (name == kind.name)
            return true;
    return false;
}

int run_consumer_service(std::string_view name, const settings& s) {
    const consumer_kind* kind = nullptr;
    for (const auto& k : consumers)
        if (name == k.name)
            kind = &k;
    if (!kind)
        throw std::invalid_argument("no consumer service " + std::string(name));
    const event_log log(kind->name);
    const std::string path = s.require("db");
    prepare_database(path, [&](connection& c) { c.exec(kind->tables); });
    dtx::sqlite::inbox inbox({.path = path});

    asio::io_context ioc;
    dtx::http::server_options options;
    options.port = static_cast<std::uint16_t>(s.number("port", 0));
    dtx::http::server server(ioc, options);
    dtx::http::consumer_options co;
    co.on_result = [&log](std::string_view id, const dtx::consume_result& r) {
        log.line("message " + std::string(id) + ": " + std::string(dtx::to_string(r.status)) +
                 (r.status == dtx::consume_status::duplicate
                      ? " (processed before; the handler did not run again)"
                      : "") +
                 (r.error.empty() ? "" : " (" + r.error + ")"));
    };
    dtx::http::add_consumer(server, kind->path, inbox, kind->name, kind->handler(log),
                            std::move(co));
    server.start();
    log.line("consuming at http://127.0.0.1:" + std::to_string(server.port()) + kind->path +
             " (database " + path + ")");
    serve_until_signal(ioc, log, [&] { return server.async_stop(std::chrono::milliseconds(500)); });
    return 0;
}

} // namespace shop
