// The shop's participant services, and the program's entry point.
//
//   shop inventory --port P --db inventory.db [--seed apple=10,pear=10] [--pause-at OP[:WHO]]
//   shop payment   --port P --db payment.db   [--seed alice=100,...]   [--merchant shop]
//   shop loyalty   --port P --db loyalty.db
//   shop shipment  --port P --db shipment.db  [--refuse-destinations Atlantis,...]
//   shop order     ...  (order.cpp)        shop load ... (load.cpp)
//   shop mail      ...  shop merchant ...  (consumers.cpp)
//   shop audit     --data DIR [--settle-seconds 30] [--json yes]  (audit.cpp)
//
// Each participant service serves one participant over HTTP (POST /dtx/<name>) with a SQLite
// barrier, so its handlers only say what try/confirm/cancel (action/compensate) do to its tables.
#include <dtx/http.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

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

/// The subject a fault point can be limited to: the payload's account, customer or order.
std::string subject_of(const nlohmann::json& payload) {
    for (const char* key : {"account", "customer", "order_id"})
        if (payload.is_object() && payload.contains(key) && payload[key].is_string())
            return payload[key];
    return {};
}

/// Wraps a handler with the service's fault point: once it is reached (after the handler's
/// local transaction committed), this and every later call hang until the process is killed.
dtx::branch_handler pausing(dtx::branch_handler inner, pause_point& pause, const event_log& log) {
    return [inner = std::move(inner), &pause,
            &log](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
        if (pause.paused)
            co_await hang();
        dtx::outcome o = co_await inner(r);
        const std::string subject = subject_of(r.payload);
        if (pause.reached(dtx::to_string(r.op), subject)) {
            log.write(r.gid, r.traceparent,
                      "PAUSED after " + std::string(dtx::to_string(r.op)) + " of branch " +
                          std::string(r.branch_id) + " committed (fault point " + pause.op +
                          "): answering nothing until killed");
            co_await hang();
        }
        co_return o;
    };
}

/// Registers a participant with the service's fault point on each of its handlers.
void add_pausing(dtx::participant_registry& reg, const char* name, dtx::tcc_handlers h,
                 pause_point& pause, const event_log& log) {
    reg.add_tcc(name, {pausing(std::move(h.on_try), pause, log),
                       pausing(std::move(h.on_confirm), pause, log),
                       pausing(std::move(h.on_cancel), pause, log)});
}
void add_pausing(dtx::participant_registry& reg, const char* name, dtx::saga_handlers h,
                 pause_point& pause, const event_log& log) {
    reg.add_saga(name, {pausing(std::move(h.on_action), pause, log),
                        pausing(std::move(h.on_compensate), pause, log)});
}

/// The number a single-row query answers (0 if no row).
std::int64_t query_number(connection& db, std::string_view sql, const std::string& key) {
    auto& st = db.prepare(sql);
    st.bind(key);
    const std::int64_t n = st.step() ? st.integer(0) : 0;
    st.bind(); // resets it: no read left open
    return n;
}

/// Runs an UPDATE that must change exactly one row; anything else is a bug (an unknown result).
void update_one(connection& db, std::string_view what, dtx::sqlite::statement& st) {
    st.run();
    if (db.changes() != 1)
        throw std::logic_error(std::string(what) + ": no such row");
}

// ---- the services ----------------------------------------------------------------------------

/// inventory (TCC): try reserves stock, confirm deducts it (reserved -> sold), cancel releases it.
void add_inventory(dtx::participant_registry& reg, dtx::sqlite::barrier& db, pause_point& pause,
                   const event_log& log, const settings&) {
    dtx::tcc_handlers h = db.tcc({
        .on_try = dtx::sqlite::typed_handler<stock_item>(
            [](connection& c, const dtx::branch_request&, stock_item s) {
                c.prepare("UPDATE stock SET available = available - ?1, reserved = reserved + ?1 "
                          "WHERE sku = ?2 AND available >= ?1 AND ?1 > 0")
                    .bind(s.qty, s.sku)
                    .run();
                if (c.changes() == 1)
                    return dtx::success();
                const std::int64_t left =
                    query_number(c, "SELECT available FROM stock WHERE sku = ?", s.sku);
                return dtx::failure("out of stock: " + std::to_string(s.qty) + " " + s.sku +
                                    " wanted, " + std::to_string(left) + " available");
            }),
        .on_confirm = dtx::sqlite::typed_handler<stock_item>([](connection& c,
                                                                const dtx::branch_request&,
                                                                stock_item s) {
            update_one(
                c, "confirm " + s.sku,
                c.prepare(
                     "UPDATE stock SET reserved = reserved - ?1, sold = sold + ?1 WHERE sku = ?2")
                    .bind(s.qty, s.sku));
            return dtx::success();
        }),
        .on_cancel = dtx::sqlite::typed_handler<stock_item>(
            [](connection& c, const dtx::branch_request&, stock_item s) {
                update_one(c, "cancel " + s.sku,
                           c.prepare("UPDATE stock SET reserved = reserved - ?1, available = "
                                     "available + ?1 WHERE sku = ?2")
                               .bind(s.qty, s.sku));
                return dtx::success();
            }),
    });
    add_pausing(reg, "inventory", std::move(h), pause, log);
}

/// payment (TCC): try freezes the amount, confirm charges it (to the merchant's account), cancel
/// unfreezes it.
void add_payment(dtx::participant_registry& reg, dtx::sqlite::barrier& db, pause_point& pause,
                 const event_log& log, const settings& s) {
    const std::string merchant = s.get("merchant", "shop");
    dtx::tcc_handlers h = db.tcc({
        .on_try = dtx::sqlite::typed_handler<money>([](connection& c, const dtx::branch_request&,
                                                       money m) {
            c.prepare("UPDATE accounts SET balance = balance - ?1, frozen = frozen + ?1 "
                      "WHERE account = ?2 AND balance >= ?1 AND ?1 > 0")
                .bind(m.amount, m.account)
                .run();
            if (c.changes() == 1)
                return dtx::success();
            const std::int64_t has =
                query_number(c, "SELECT balance FROM accounts WHERE account = ?", m.account);
            return dtx::failure("insufficient funds: " + m.account + " has " + std::to_string(has) +
                                ", " + std::to_string(m.amount) + " needed");
        }),
        .on_confirm = dtx::sqlite::typed_handler<money>(
            [merchant](connection& c, const dtx::branch_request&, money m) {
                update_one(c, "confirm " + m.account,
                           c.prepare("UPDATE accounts SET frozen = frozen - ?1 WHERE account = ?2")
                               .bind(m.amount, m.account));
                update_one(
                    c, "credit " + merchant,
                    c.prepare("UPDATE accounts SET balance = balance + ?1 WHERE account = ?2")
                        .bind(m.amount, merchant));
                return dtx::success();
            }),
        .on_cancel = dtx::sqlite::typed_handler<money>(
            [](connection& c, const dtx::branch_request&, money m) {
                update_one(c, "cancel " + m.account,
                           c.prepare("UPDATE accounts SET frozen = frozen - ?1, balance = balance "
                                     "+ ?1 WHERE account = ?2")
                               .bind(m.amount, m.account));
                return dtx::success();
            }),
    });
    add_pausing(reg, "payment", std::move(h), pause, log);
}

/// loyalty (saga): the action adds points, the compensation removes them.
void add_loyalty(dtx::participant_registry& reg, dtx::sqlite::barrier& db, pause_point& pause,
                 const event_log& log, const settings&) {
    dtx::saga_handlers h = db.saga({
        .on_action = dtx::sqlite::typed_handler<points>(
            [](connection& c, const dtx::branch_request&, points p) {
                c.prepare("INSERT INTO points (customer, points) VALUES (?1, ?2) "
                          "ON CONFLICT (customer) DO UPDATE SET points = points + ?2")
                    .bind(p.customer, p.points)
                    .run();
                return dtx::success();
            }),
        .on_compensate = dtx::sqlite::typed_handler<points>(
            [](connection& c, const dtx::branch_request&, points p) {
                update_one(c, "remove points of " + p.customer,
                           c.prepare("UPDATE points SET points = points - ?2 WHERE customer = ?1")
                               .bind(p.customer, p.points));
                return dtx::success();
            }),
    });
    add_pausing(reg, "loyalty", std::move(h), pause, log);
}

/// shipment (saga): the action books a parcel, refused for destinations no carrier serves (the
/// failure on purpose); the compensation withdraws it.
void add_shipment(dtx::participant_registry& reg, dtx::sqlite::barrier& db, pause_point& pause,
                  const event_log& log, const settings& s) {
    const std::vector<std::string> places = split(s.get("refuse-destinations", "Atlantis"));
    const std::set<std::string> refused(places.begin(), places.end());
    dtx::saga_handlers h = db.saga({
        .on_action = dtx::sqlite::typed_handler<parcel>(
            [refused](connection& c, const dtx::branch_request&, parcel p) {
                if (refused.contains(p.ship_to))
                    return dtx::failure("no carrier delivers to " + p.ship_to);
                c.prepare("INSERT INTO shipments (order_id, ship_to) VALUES (?, ?)")
                    .bind(p.order_id, p.ship_to)
                    .run();
                return dtx::success();
            }),
        .on_compensate = dtx::sqlite::typed_handler<parcel>(
            [](connection& c, const dtx::branch_request&, parcel p) {
                c.prepare("DELETE FROM shipments WHERE order_id = ?").bind(p.order_id).run();
                return dtx::success();
            }),
    });
    add_pausing(reg, "shipment", std::move(h), pause, log);
}

struct service_kind {
    const char* name;
    const char* default_seed;
    void (*setup)(connection&, const std::map<std::string, std::int64_t>& seed);
    void (*add)(dtx::participant_registry&, dtx::sqlite::barrier&, pause_point&, const event_log&,
                const settings&);
};

void setup_inventory(connection& c, const std::map<std::string, std::int64_t>& seed) {
    c.exec("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, initial INTEGER NOT NULL, "
           "available INTEGER NOT NULL CHECK (available >= 0), reserved INTEGER NOT NULL CHECK "
           "(reserved >= 0), "
           "sold INTEGER NOT NULL)");
    for (const auto& [sku, n] : seed)
        c.prepare("INSERT OR IGNORE INTO stock VALUES (?1, ?2, ?2, 0, 0)").bind(sku, n).run();
}
void setup_payment(connection& c, const std::map<std::string, std::int64_t>& seed) {
    c.exec(
        "CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY, initial INTEGER NOT NULL, "
        "balance INTEGER NOT NULL CHECK (balance >= 0), frozen INTEGER NOT NULL CHECK (frozen >= "
        "0))");
    for (const auto& [account, n] : seed)
        c.prepare("INSERT OR IGNORE INTO accounts VALUES (?1, ?2, ?2, 0)").bind(account, n).run();
}
void setup_loyalty(connection& c, const std::map<std::string, std::int64_t>&) {
    c.exec("CREATE TABLE IF NOT EXISTS points (customer TEXT PRIMARY KEY, points INTEGER NOT NULL "
           "CHECK (points >= 0))");
}
void setup_shipment(connection& c, const std::map<std::string, std::int64_t>&) {
    c.exec(
        "CREATE TABLE IF NOT EXISTS shipments (order_id TEXT PRIMARY KEY, ship_to TEXT NOT NULL)");
}

const service_kind services[] = {
    {"inventory", "apple=10,pear=10,plum=10", setup_inventory, add_inventory},
    {"payment", "alice=100,bob=100,carol=100,dave=100,erin=100,shop=0", setup_payment, add_payment},
    {"loyalty", "", setup_loyalty, add_loyalty},
    {"shipment", "", setup_shipment, add_shipment},
};

int run_participant_service(const service_kind& kind, const settings& s) {
    const event_log log(kind.name);
    const std::string path = s.require("db");
    const std::string seed_text = s.get("seed", kind.default_seed);
    const auto seed =
        seed_text.empty() ? std::map<std::string, std::int64_t>{} : parse_amounts(seed_text);
    prepare_database(path, [&](connection& c) { kind.setup(c, seed); });

    dtx::sqlite::barrier db({.path = path});
    pause_point pause = pause_point::parse(s.get("pause-at", ""));
    dtx::participant_registry participants;
    kind.add(participants, db, pause, log, s);

    asio::io_context ioc;
    dtx::http::server_options options;
    options.port = static_cast<std::uint16_t>(s.number("port", 0));
    options.on_request = [&log](const dtx::http::log_record& r) {
        if (r.gid.empty())
            return; // health checks
        std::ostringstream text;
        text << r.participant << ' ' << (r.op ? dtx::to_string(*r.op) : "?") << " branch "
             << r.branch_id << " -> " << r.status;
        if (!r.error.empty())
            text << ' ' << r.error;
        if (!r.exception.empty())
            text << " (" << r.exception << ')';
        text << " in "
             << std::chrono::duration_cast<std::chrono::microseconds>(r.duration).count() / 1000.0
             << " ms";
        log.write(r.gid, r.traceparent, text.str());
    };
    dtx::http::server server(ioc, participants, options);
    server.start();
    log.line("serving " + std::string(kind.name) + " at http://127.0.0.1:" +
             std::to_string(server.port()) + "/dtx/" + kind.name + " (database " + path +
             (pause.armed() ? ", fault point " + pause.op + ":" + pause.who : "") + ")");

    serve_until_signal(ioc, log, [&] { return server.async_stop(std::chrono::milliseconds(500)); });
    return 0;
}

int usage() {
    std::cerr << "usage: shop order|inventory|payment|loyalty|shipment|mail|merchant|audit|load\n"
                 "            [--option value ...]\n"
                 "(every option may also be set as SHOP_<OPTION>; see examples/shop/README.md)\n";
    return 2;
}

} // namespace
} // namespace shop

int main(int argc, char** argv) {
    if (argc < 2)
        return shop::usage();
    const std::string command = argv[1];
    try {
        const shop::settings s(argc, argv, 2);
        if (command == "order")
            return shop::run_order_service(s);
        if (command == "load")
            return shop::run_load(s);
        if (command == "audit")
            return shop::run_audit(s);
        if (shop::is_consumer_service(command))
            return shop::run_consumer_service(command, s);
        for (const auto& kind : shop::services)
            if (command == kind.name)
                return shop::run_participant_service(kind, s);
        return shop::usage();
    } catch (const std::exception& e) {
        std::cerr << "shop " << command << ": " << e.what() << "\n";
        return 1;
    }
}
