// An order of the shop: its record, its row in orders.db and the moves of its state, the API's
// answers with it, and which orders the API accepts (the checks of POST /orders, each refusal an
// http::error_reply (400) that names the field, made before anything is stored).
#ifndef DTX_EXAMPLES_SHOP_ORDER_RECORD_HPP
#define DTX_EXAMPLES_SHOP_ORDER_RECORD_HPP

#include <dtx/dtx.hpp>
#include <dtx/http/route.hpp>
#include <dtx/sqlite/connection.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "shop.hpp"

namespace shop {

struct order_record {
    std::string id, customer, sku, ship_to, state, reason, checkout_gid, fulfilment_gid;
    std::int64_t qty = 0, amount = 0, points = 0;
};
inline void to_json(nlohmann::json& j, const order_record& o) {
    j = {{"id", o.id},
         {"customer", o.customer},
         {"sku", o.sku},
         {"qty", o.qty},
         {"amount", o.amount},
         {"points", o.points},
         {"ship_to", o.ship_to},
         {"state", o.state},
         {"reason", o.reason},
         {"checkout_gid", o.checkout_gid},
         {"fulfilment_gid", o.fulfilment_gid}};
}

inline constexpr const char* order_columns =
    "id, customer, sku, qty, amount, points, ship_to, state, reason, checkout_gid, fulfilment_gid";

inline order_record read_order(dtx::sqlite::statement& st) {
    order_record o;
    o.id = st.text(0);
    o.customer = st.text(1);
    o.sku = st.text(2);
    o.qty = st.integer(3);
    o.amount = st.integer(4);
    o.points = st.integer(5);
    o.ship_to = st.text(6);
    o.state = st.text(7);
    o.reason = st.text(8);
    o.checkout_gid = st.text(9);
    o.fulfilment_gid = st.text(10);
    return o;
}

inline std::optional<order_record> find_order(dtx::sqlite::connection& c, const std::string& id) {
    auto& st = c.prepare(std::string("SELECT ") + order_columns + " FROM orders WHERE id = ?");
    st.bind(id);
    std::optional<order_record> o;
    if (st.step())
        o = read_order(st);
    st.bind();
    return o;
}

/// Moves the order of `s` from state s.from to `to`; failure if it is not in s.from.
inline dtx::outcome move_order(dtx::sqlite::connection& c, const order_step& s,
                               const std::string& from, const std::string& to) {
    c.prepare("UPDATE orders SET state = ?1 WHERE id = ?2 AND state = ?3")
        .bind(to, s.order_id, from)
        .run();
    if (c.changes() == 1)
        return dtx::success();
    return dtx::failure("order " + s.order_id + " is not " + from);
}

/// A phase-2 move (confirm, cancel, compensate) must succeed: the barrier runs it once, after its
/// try or action. Anything else is a bug, reported as an unknown result (and retried).
inline dtx::outcome move_order_or_throw(dtx::sqlite::connection& c, const order_step& s,
                                        const std::string& from, const std::string& to) {
    dtx::outcome o = move_order(c, s, from, to);
    if (!o.is_success())
        throw std::logic_error(o.message() + " (moving it to " + to + ")");
    return o;
}

/// What the order's messages say about it (the mail service's event, the merchant's
/// notification, and the notification query's answer).
inline nlohmann::json order_result(const order_record& o) {
    return {{"order_id", o.id}, {"customer", o.customer}, {"sku", o.sku},
            {"qty", o.qty},     {"amount", o.amount},     {"state", o.state}};
}

/// Stores order `o` unless an order with its id exists; returns the stored one.
inline order_record store_order(dtx::sqlite::connection& c, const order_record& o,
                                std::int64_t now_ms) {
    if (std::optional<order_record> old = find_order(c, o.id))
        return *old;
    c.prepare("INSERT INTO orders (id, customer, sku, qty, amount, points, ship_to, state, "
              "checkout_gid, fulfilment_gid, created_ms) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(o.id, o.customer, o.sku, o.qty, o.amount, o.points, o.ship_to, o.state,
              o.checkout_gid, o.fulfilment_gid, now_ms)
        .run();
    return o;
}

/// The API's answer with an order: 200 once it is final, else 202.
inline dtx::http::reply answer_order(const order_record& o) {
    return dtx::http::reply::json(is_final_state(o.state) ? 200 : 202, o);
}

/// The answer to an order_id that is stored already: the stored order if `asked` is the same
/// order, else 409.
inline dtx::http::reply answer_repeat(const order_record& stored, const order_record& asked) {
    if (stored.customer != asked.customer || stored.sku != asked.sku || stored.qty != asked.qty ||
        stored.ship_to != asked.ship_to)
        throw dtx::http::error_reply(409, "order_id_conflict",
                                     "order " + stored.id +
                                         " exists with another customer, sku, qty or ship_to");
    return answer_order(stored);
}

/// Largest quantity of one order.
inline constexpr std::int64_t max_qty = 1'000'000'000;

/// The order a POST /orders body asks for, checked against the catalog and the customers; throws
/// dtx::http::error_reply (400) naming the field that is wrong.
inline order_record parse_order(const nlohmann::json& in, const std::set<std::string>& customers,
                                const std::string& merchant) {
    const auto refuse = [](const std::string& field, const std::string& rule) {
        return dtx::http::error_reply(400, "invalid_" + field, field + " " + rule);
    };
    if (!in.is_object())
        throw dtx::http::error_reply(400, "invalid_order", "the body must be a JSON object");
    const auto text = [&](const char* field, std::optional<std::string> otherwise) {
        const auto it = in.find(field);
        if (it == in.end() && otherwise)
            return *otherwise;
        if (it == in.end())
            throw refuse(field, "is required");
        if (!it->is_string())
            throw refuse(field, "must be a string");
        return it->get<std::string>(); // valid UTF-8: the parser checked it
    };
    order_record o;
    o.id = text("order_id", dtx::make_gid());
    o.customer = text("customer", std::nullopt);
    o.sku = text("sku", std::nullopt);
    o.ship_to = text("ship_to", "Berlin");
    const auto qty = in.find("qty");
    if (qty == in.end())
        throw refuse("qty", "is required");
    // 2.5, 3.0 and 1e3 are numbers with a fraction or an exponent, not counts: refused rather
    // than rounded.
    const bool in_range =
        qty->is_number_unsigned()
            ? qty->get<std::uint64_t>() >= 1 && qty->get<std::uint64_t>() <= std::uint64_t{max_qty}
            : qty->is_number_integer() && qty->get<std::int64_t>() >= 1 &&
                  qty->get<std::int64_t>() <= max_qty;
    if (!in_range)
        throw refuse("qty", "must be a whole number from 1 to " + std::to_string(max_qty));
    o.qty = qty->get<std::int64_t>();
    const auto id_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';
    };
    if (o.id.empty() || o.id.size() > 64 || !std::all_of(o.id.begin(), o.id.end(), id_char))
        throw refuse("order_id", "must be 1 to 64 letters, digits, '-', '_' or '.'");
    if (o.ship_to.empty() || o.ship_to.size() > 100)
        throw refuse("ship_to", "must be 1 to 100 bytes");
    // The customer is a field of the order, not the resource the path names: 400, not 404.
    if (o.customer == merchant)
        throw dtx::http::error_reply(400, "merchant_cannot_order",
                                     "customer is the shop's own account, which cannot order from "
                                     "itself");
    if (!customers.contains(o.customer))
        throw dtx::http::error_reply(400, "unknown_customer",
                                     "customer is not a customer of the shop");
    const std::optional<std::int64_t> price = price_of(o.sku);
    if (!price)
        throw dtx::http::error_reply(400, "unknown_sku",
                                     "sku is not in the catalog (apple, pear, plum)");
    o.amount = *price * o.qty;
    o.points = points_for(o.amount);
    return o;
}

} // namespace shop

#endif
