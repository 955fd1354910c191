// The auditor: reads every service's database and checks the shop's invariants against the
// orders (stock, money, points, parcels, mails, the merchant's results).
//
//   shop audit --data DIR [--settle-seconds 30] [--json yes] [--merchant shop]
#include <dtx/sqlite/connection.hpp>

#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "shop.hpp"

namespace shop {
namespace {

using dtx::sqlite::connection;

struct order_row {
    std::string id, customer, sku, state;
    std::int64_t qty, amount, points;
};

/// The messages' effects, for the consumers that have a database in `dir`: one mail per completed
/// order and none for the others (mail.db: the outbox delivers at least once, the inbox makes it
/// once); the merchant holds the final state of every ended order (merchant.db: a notification
/// of each order's end, retried until acknowledged).
template <class Fail>
void check_messages(const std::filesystem::path& dir, const std::vector<order_row>& orders,
                    std::ostream& report, nlohmann::json& j, Fail& fail) {
    if (std::filesystem::exists(dir / "mail.db")) {
        connection db((dir / "mail.db").string());
        auto& st = db.prepare("SELECT order_id, COUNT(*) FROM mails GROUP BY order_id");
        std::map<std::string, std::int64_t> mails;
        std::int64_t total = 0;
        for (st.bind(); st.step(); total += st.integer(1))
            mails[std::string(st.text(0))] = st.integer(1);
        st.bind();
        report << "  mails     " << total << " (one per completed order expected)\n";
        j["mails"] = total;
        for (const auto& o : orders) {
            const std::int64_t want = o.state == "completed" ? 1 : 0;
            const auto it = mails.find(o.id);
            const std::int64_t got = it == mails.end() ? 0 : it->second;
            if (got != want)
                fail("order " + o.id + " (" + o.state + ") has " + std::to_string(got) +
                     " mails, expected " + std::to_string(want));
            if (it != mails.end())
                mails.erase(it);
        }
        for (const auto& [id, n] : mails)
            fail(std::to_string(n) + " mails for order " + id + ", which does not exist");
    }
    if (std::filesystem::exists(dir / "merchant.db")) {
        connection db((dir / "merchant.db").string());
        auto& st = db.prepare("SELECT order_id, state FROM order_results");
        std::map<std::string, std::string> known;
        for (st.bind(); st.step();)
            known[std::string(st.text(0))] = st.text(1);
        st.bind();
        report << "  merchant  " << known.size() << " orders notified\n";
        j["merchant_notified"] = known.size();
        for (const auto& o : orders) {
            const auto it = known.find(o.id);
            if (is_final_state(o.state) && (it == known.end() || it->second != o.state))
                fail("the merchant has order " + o.id + " " +
                     (it == known.end() ? "not notified" : it->second) + ", it is " + o.state);
            if (it != known.end())
                known.erase(it);
        }
        for (const auto& [id, state] : known)
            fail("the merchant was notified of order " + id + ", which does not exist");
    }
}

/// Reads every service's database and checks the shop's invariants. Empty: they hold.
std::vector<std::string> audit(const std::filesystem::path& dir, const std::string& merchant,
                               std::ostream& report, nlohmann::json& j) {
    std::vector<std::string> broken;
    auto fail = [&](std::string what) { broken.push_back(std::move(what)); };
    for (const char* f : {"orders.db", "inventory.db", "payment.db", "loyalty.db", "shipment.db"})
        if (!std::filesystem::exists(dir / f))
            throw std::runtime_error((dir / f).string() + " does not exist");

    std::vector<order_row> orders;
    std::map<std::string, int> by_state;
    {
        connection db((dir / "orders.db").string());
        auto& st = db.prepare(
            "SELECT id, customer, sku, qty, amount, points, state FROM orders ORDER BY created_ms");
        st.bind();
        while (st.step()) {
            orders.push_back({std::string(st.text(0)), std::string(st.text(1)),
                              std::string(st.text(2)), std::string(st.text(6)), st.integer(3),
                              st.integer(4), st.integer(5)});
            ++by_state[orders.back().state];
        }
        st.bind();
    }
    std::map<std::string, std::int64_t> sold_by_orders, paid_by, points_by;
    std::set<std::string> shipped_by_orders;
    std::int64_t revenue_by_orders = 0;
    for (const auto& o : orders) {
        if (!is_final_state(o.state))
            fail("order " + o.id + " is not in a final state: " + o.state);
        if (o.state == "completed" || o.state == "shipment_failed") {
            sold_by_orders[o.sku] += o.qty;
            paid_by[o.customer] += o.amount;
            revenue_by_orders += o.amount;
        }
        if (o.state == "completed") {
            points_by[o.customer] += o.points;
            shipped_by_orders.insert(o.id);
        }
    }

    j["orders"] = by_state;
    report << "  orders    ";
    for (const auto& [state, n] : by_state)
        report << n << ' ' << state << "  ";
    report << "\n  stock     ";
    {
        connection db((dir / "inventory.db").string());
        auto& st =
            db.prepare("SELECT sku, initial, available, reserved, sold FROM stock ORDER BY sku");
        st.bind();
        while (st.step()) {
            const std::string sku(st.text(0));
            const std::int64_t initial = st.integer(1), available = st.integer(2),
                               reserved = st.integer(3), sold = st.integer(4);
            report << sku << ' ' << available << " (" << reserved << " reserved, " << sold
                   << " sold)  ";
            j["stock"][sku] = {{"available", available}, {"reserved", reserved}, {"sold", sold}};
            if (available + reserved + sold != initial)
                fail(sku + ": available + reserved + sold = " +
                     std::to_string(available + reserved + sold) + ", was " +
                     std::to_string(initial));
            if (reserved != 0)
                fail(sku + ": " + std::to_string(reserved) + " still reserved");
            if (sold != sold_by_orders[sku])
                fail(sku + ": " + std::to_string(sold) + " sold, paid orders hold " +
                     std::to_string(sold_by_orders[sku]));
        }
        st.bind();
    }
    report << "\n  accounts  ";
    {
        connection db((dir / "payment.db").string());
        auto& st =
            db.prepare("SELECT account, initial, balance, frozen FROM accounts ORDER BY account");
        st.bind();
        std::int64_t initial_total = 0, total = 0;
        std::int64_t accounts = 0;
        while (st.step()) {
            const std::string account(st.text(0));
            const std::int64_t initial = st.integer(1), balance = st.integer(2),
                               frozen = st.integer(3);
            initial_total += initial;
            total += balance + frozen;
            if (++accounts <= 8)
                report << account << ' ' << balance
                       << (frozen ? " (" + std::to_string(frozen) + " frozen)" : "") << "  ";
            if (frozen != 0)
                fail(account + ": " + std::to_string(frozen) + " still frozen");
            // The merchant's account gains what the customers lose.
            const std::int64_t expected =
                account == merchant ? initial + revenue_by_orders : initial - paid_by[account];
            if (balance + frozen != expected)
                fail(account + ": " + std::to_string(balance + frozen) + " held, orders say " +
                     std::to_string(expected));
        }
        st.bind();
        if (accounts > 8)
            report << "... (" << accounts << " accounts)";
        j["money"] = {{"accounts", accounts}, {"total", total}, {"at_start", initial_total}};
        if (total != initial_total)
            fail("money: " + std::to_string(total) + " held in all accounts, " +
                 std::to_string(initial_total) + " at the start");
    }
    report << "\n  points    ";
    {
        connection db((dir / "loyalty.db").string());
        auto& st = db.prepare("SELECT customer, points FROM points ORDER BY customer");
        st.bind();
        std::map<std::string, std::int64_t> held;
        int shown = 0;
        std::int64_t total = 0;
        while (st.step()) {
            held[std::string(st.text(0))] = st.integer(1);
            total += st.integer(1);
            if (++shown <= 8)
                report << st.text(0) << ' ' << st.integer(1) << "  ";
        }
        st.bind();
        j["points"] = total;
        for (const auto& [customer, n] : points_by)
            if (held[customer] != n)
                fail(customer + ": " + std::to_string(held[customer]) +
                     " points, completed orders earned " + std::to_string(n));
        for (const auto& [customer, n] : held)
            if (n != 0 && !points_by.contains(customer))
                fail(customer + ": " + std::to_string(n) + " points without a completed order");
    }
    report << "\n  shipments ";
    {
        connection db((dir / "shipment.db").string());
        auto& st = db.prepare("SELECT order_id FROM shipments");
        st.bind();
        std::set<std::string> shipped;
        while (st.step())
            shipped.emplace(st.text(0));
        st.bind();
        report << shipped.size() << " parcels\n";
        j["shipments"] = shipped.size();
        for (const auto& id : shipped)
            if (!shipped_by_orders.contains(id))
                fail("parcel for order " + id + ", which is not completed");
        for (const auto& id : shipped_by_orders)
            if (!shipped.contains(id))
                fail("order " + id + " is completed but has no parcel");
    }
    check_messages(dir, orders, report, j, fail);
    return broken;
}

} // namespace

/// Checks until the invariants hold or `settle` has passed: phase 2 of the last transactions may
/// still be under way when the orders are final.
int run_audit(const settings& s) {
    const std::filesystem::path dir = s.require("data");
    const auto settle = std::chrono::seconds(s.number("settle-seconds", 30));
    const bool json = s.get("json", "no") == "yes";
    const auto until = std::chrono::steady_clock::now() + settle;
    for (;;) {
        std::ostringstream report;
        nlohmann::json j;
        std::vector<std::string> broken = audit(dir, s.get("merchant", "shop"), report, j);
        if (broken.empty() || std::chrono::steady_clock::now() >= until) {
            if (json) {
                j["measure"] = "audit";
                j["invariants"] = broken.empty() ? "hold" : "broken";
                j["broken"] = broken;
                std::cout << j.dump() << std::endl;
            } else {
                std::cout << report.str();
                for (const auto& b : broken)
                    std::cout << "  INVARIANT BROKEN: " << b << "\n";
                if (broken.empty())
                    std::cout << "  invariants hold\n";
            }
            return broken.empty() ? 0 : 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

} // namespace shop
