// The order service: the shop's public API, and the coordinator of its transactions.
//
//   shop order --port P --db orders.db --journal orders.dtx.db
//              --inventory-url URL --payment-url URL --loyalty-url URL --shipment-url URL
//              [--customers alice,bob,carol,dave,erin] [--merchant shop]
//              [--call-timeout-ms 2000] [--retry-max-ms 1000] [--tx-timeout-ms 30000]
//              [--mail-url URL] [--merchant-url URL] [--relay-lease-ms 60000]
//              [--notify-retry-ms N] [--pause-at OP[:WHO]]
//
// The API is two application routes on a dtx::http::server (so it has the server's limits,
// timeouts and JSON errors), plus the server's health endpoint:
//
//   POST /orders       {"order_id":"o-1","customer":"alice","sku":"apple","qty":3,"ship_to":"Berlin"}
//   GET  /orders/{id}  the order and its state
//   GET  /order-results/{id}  what the merchant's notification of the order says (order_messages.hpp)
//   GET  /health
//
// An order is two transactions, chained by the order's state in orders.db:
//   checkout (TCC):       order new -> reserving -> paid | cancelled; inventory reserves the stock,
//                         payment freezes the amount; confirm deducts and charges, cancel releases.
//   fulfilment (planned saga, once the order is paid): order paid -> fulfilling; loyalty adds
//                         points; shipment books a parcel; order fulfilling -> completed. If the
//                         shipment is refused, loyalty's points are removed and the order ends
//                         shipment_failed (paid, not shipped).
// The order's own state changes are branches too (participants "order" and "order-state", local,
// under the barrier of orders.db), so recovery moves the order along with the other services.
// The local transaction that moves an order to its final state also adds its messages to the
// outbox in orders.db (order_messages.hpp): order_completed for the mail service, a notification
// for the merchant; the relay delivers them.
#include <dtx/http.hpp>
#include <dtx/sqlite/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <set>
#include <unordered_map>

#include "order_messages.hpp"
#include "order_record.hpp"
#include "shop.hpp"

namespace shop {
namespace {

namespace http = dtx::http;
using dtx::sqlite::connection;

class order_service {
public:
    order_service(asio::io_context& ioc, const settings& s)
        : ioc_(ioc)
        , log_("order")
        , db_path_(s.require("db"))
        , inventory_(s.require("inventory-url"))
        , payment_(s.require("payment-url"))
        , loyalty_(s.require("loyalty-url"))
        , shipment_(s.require("shipment-url"))
        , port_(static_cast<std::uint16_t>(s.number("port", 8080)))
        , pause_(pause_point::parse(s.get("pause-at", "")))
        , messages_(ioc, s, log_, pause_)
        , orders_((prepare(), dtx::sqlite::barrier_options{.path = db_path_}))
        , journal_({.path = s.require("journal")})
        , http_(ioc.get_executor())
        , api_(ioc, api_options(port_))
        , reconcile_timer_(ioc) {
        for (const std::string& c : split(s.get("customers", "alice,bob,carol,dave,erin")))
            customers_.insert(c);
        merchant_ = s.get("merchant", "shop");
        participants_.add_tcc(
            "order", orders_.tcc({
                         .on_try = dtx::sqlite::typed_handler<order_step>(
                             [this](connection& c, const dtx::branch_request&, order_step st) {
                                 return move(c, st, st.from, st.to, false);
                             }),
                         .on_confirm = dtx::sqlite::typed_handler<order_step>(
                             [this](connection& c, const dtx::branch_request&, order_step st) {
                                 return move(c, st, st.to, "paid", true);
                             }),
                         .on_cancel = dtx::sqlite::typed_handler<order_step>(
                             [this](connection& c, const dtx::branch_request&, order_step st) {
                                 return move(c, st, st.to, st.undo, true);
                             }),
                     }));
        participants_.add_saga(
            "order-state",
            orders_.saga({
                .on_action = dtx::sqlite::typed_handler<order_step>(
                    [this](connection& c, const dtx::branch_request&, order_step st) {
                        return move(c, st, st.from, st.to, false);
                    }),
                .on_compensate = dtx::sqlite::typed_handler<order_step>(
                    [this](connection& c, const dtx::branch_request&, order_step st) {
                        return move(c, st, st.to, st.undo, true);
                    }),
            }));
        participants_.set_resolver(dtx::http::url_resolver(http_));

        const auto retry_max = std::chrono::milliseconds(s.number("retry-max-ms", 1000));
        dtx::coordinator_options o;
        o.call_timeout = std::chrono::milliseconds(s.number("call-timeout-ms", 2000));
        o.transaction_timeout = std::chrono::milliseconds(s.number("tx-timeout-ms", 30000));
        o.phase_two.max_backoff = retry_max;
        o.phase_two.on_alert = [this](const dtx::retry_alert& a) {
            log_.write(a.gid, trace_of(a.gid),
                       "ALERT " + std::string(a.op) + " of branch " + std::string(a.branch_id) +
                           " failed " + std::to_string(a.attempts) +
                           " times, retrying: " + std::string(a.last_error));
        };
        o.recovery_retry.max_backoff = retry_max;
        o.on_fault = [this](const dtx::fault_point& p) { return on_event(p); };
        coord_ = std::make_unique<dtx::coordinator>(ioc.get_executor(), journal_, participants_,
                                                    std::move(o));
    }

    /// Finishes what the previous run left, then serves the API.
    asio::awaitable<void> run() {
        const dtx::recovery_report rep =
            co_await coord_->recover(dtx::recovery_options{.take_over = true});
        log_.line("recovery at startup: " + std::to_string(rep.claimed) +
                  " unfinished transactions taken over, " + std::to_string(rep.finished) +
                  " finished, " + std::to_string(rep.unfinished) + " still unfinished");
        co_await reconcile();
        coord_->start_recovery([this](std::exception_ptr e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                log_.line(std::string("recovery pass failed: ") + x.what());
            }
        });
        asio::co_spawn(ioc_, reconcile_loop(), asio::detached);
        messages_.start();

        // Served once recovered, so that the API never shows an order recovery is still moving.
        api_.route(http::verb::post, "/orders",
                   [this](const http::request& r) { return create(r); });
        api_.route(http::verb::get, "/orders/{id}",
                   [this](const http::request& r) { return show(r.param("id")); });
        messages_.add_query(api_);
        api_.start();
        log_.line("order API at http://127.0.0.1:" + std::to_string(api_.port()) +
                  "/orders (database " + db_path_ +
                  (pause_.armed() ? ", fault point " + pause_.op + ":" + pause_.who : "") + ")");
    }

    /// Stops the API (requests in flight get half a second) and the background tasks;
    /// transactions in flight go on to their end, then io_context::run returns.
    void stop() {
        log_.line("stopping");
        stopping_ = true;
        asio::co_spawn(ioc_, api_.async_stop(std::chrono::milliseconds(500)), asio::detached);
        reconcile_timer_.cancel();
        coord_->stop();
        asio::co_spawn(ioc_, messages_.stop(), asio::detached);
    }

private:
    void prepare() const {
        prepare_database(db_path_, [](connection& c) {
            c.exec(
                "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, "
                "sku TEXT NOT NULL, "
                "qty INTEGER NOT NULL, amount INTEGER NOT NULL, points INTEGER NOT NULL, ship_to "
                "TEXT NOT NULL, "
                "state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', checkout_gid TEXT NOT NULL, "
                "fulfilment_gid TEXT NOT NULL, created_ms INTEGER NOT NULL);"
                "CREATE INDEX IF NOT EXISTS orders_state ON orders (state)");
        });
    }

    /// Moves the order (move_order(), or move_order_or_throw() if `must`); if that ends it, its
    /// messages go into the same local transaction.
    dtx::outcome move(connection& c, const order_step& s, const std::string& from,
                      const std::string& to, bool must) {
        dtx::outcome o = must ? move_order_or_throw(c, s, from, to) : move_order(c, s, from, to);
        if (o.is_success() && is_final_state(to))
            messages_.order_ended(c, s.order_id);
        return o;
    }

    // ---- the event log ----------------------------------------------------------------------

    struct live_tx {
        std::string order_id, customer, traceparent;
    };

    std::string trace_of(std::string_view gid) const {
        auto it = live_.find(std::string(gid));
        return it == live_.end() ? std::string() : it->second.traceparent;
    }

    /// Every journal write and branch call of every transaction: logged, and the fault point.
    bool on_event(const dtx::fault_point& p) {
        const auto it = live_.find(std::string(p.gid));
        const live_tx* tx = it == live_.end() ? nullptr : &it->second;
        std::string text;
        std::string op;
        if (p.site == dtx::fault_site::journal_write) {
            op = dtx::to_string(p.what);
            text = "journal write " + op;
        } else {
            op = dtx::to_string(p.op);
            text = op + " of branch " + std::string(p.branch_id) + " returned";
        }
        if (!p.branch_id.empty() && p.site == dtx::fault_site::journal_write)
            text += " (branch " + std::string(p.branch_id) + ")";
        if (tx)
            text += " [order " + tx->order_id + "]";
        log_.write(p.gid, tx ? tx->traceparent : std::string(), text);
        if (!pause_.reached(op, tx ? tx->customer : std::string()))
            return false;
        log_.write(p.gid, tx ? tx->traceparent : std::string(),
                   "PAUSED after " + text + " (fault point " + pause_.op +
                       "): the coordinator goes no further");
        return true;
    }

    // ---- the order's two transactions ---------------------------------------------------------

    /// The options of one of the order's transactions, which is logged from now on.
    dtx::tx_options begin(const order_record& o, const std::string& gid,
                          const std::string& traceparent, const std::string& what) {
        live_[gid] = {o.id, o.customer, traceparent};
        log_.write(gid, traceparent, "order " + o.id + ": " + what + " begins");
        dtx::tx_options options;
        options.gid = gid;
        options.traceparent = traceparent;
        return options;
    }

    void end(const order_record& o, const dtx::tx_result& r, const std::string& gid,
             const std::string& traceparent, const std::string& what) {
        live_.erase(gid);
        log_.write(gid, traceparent,
                   "order " + o.id + ": " + what + " " + std::string(dtx::to_string(r.status)) +
                       (r.message.empty() ? "" : ": " + r.message));
    }

    asio::awaitable<bool> checkout(const order_record& o, const std::string& traceparent) {
        std::vector<dtx::branch_spec> branches;
        branches.push_back({"order", order_step{o.id, "new", "reserving", "cancelled"}});
        branches.push_back({inventory_, stock_item{o.sku, o.qty}});
        branches.push_back({payment_, money{o.customer, o.amount}});
        auto body = [&branches](dtx::tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branches(std::move(branches));
        };
        dtx::tx_options options =
            begin(o, o.checkout_gid, traceparent, "checkout (TCC: order, inventory, payment)");
        const dtx::tx_result r = co_await coord_->tcc(std::move(body), std::move(options));
        end(o, r, o.checkout_gid, traceparent, "checkout");
        if (r.committed())
            co_return true;
        if (r.status == dtx::tx_status::cancelled)
            co_await note_cancelled(o.id, r.message);
        co_return false;
    }

    asio::awaitable<void> fulfil(const order_record& o, const std::string& traceparent) {
        std::vector<dtx::branch_spec> steps;
        steps.push_back({"order-state", order_step{o.id, "paid", "fulfilling", "shipment_failed"}});
        steps.push_back({loyalty_, points{o.customer, o.points}});
        steps.push_back({shipment_, parcel{o.id, o.ship_to}});
        steps.push_back({"order-state", order_step{o.id, "fulfilling", "completed", "fulfilling"}});
        dtx::tx_options options = begin(o, o.fulfilment_gid, traceparent,
                                        "fulfilment (saga: order, loyalty, shipment, order)");
        dtx::tx_result r;
        try {
            r = co_await coord_->saga(std::move(steps), std::move(options));
        } catch (const std::exception& e) {
            r.gid = o.fulfilment_gid;
            r.message = e.what();
        }
        end(o, r, o.fulfilment_gid, traceparent, "fulfilment");
        if (!r.message.empty())
            co_await note_reason(o.id, r.message);
    }

    /// Runs an order's transactions; the order is in in_flight_ already, and leaves it here.
    asio::awaitable<void> process(order_record o, std::string traceparent) {
        try {
            if (co_await checkout(o, traceparent))
                co_await fulfil(o, traceparent);
        } catch (const std::exception& e) {
            log_.write(o.checkout_gid, traceparent, "order " + o.id + ": " + e.what());
        }
        in_flight_.erase(o.id);
    }

    static void set_reason(connection& c, const std::string& id, const std::string& reason) {
        c.prepare("UPDATE orders SET reason = ? WHERE id = ?").bind(reason, id).run();
    }

    asio::awaitable<void> note_reason(const std::string& id, const std::string& reason) {
        auto job = [id, reason](connection& c) {
            set_reason(c, id, reason);
            return 0;
        };
        co_await orders_.run<int>(std::move(job));
    }

    /// The checkout ended cancelled: an order still `new` (its own try never ran) is cancelled too;
    /// a late try would be refused by the barrier.
    asio::awaitable<void> note_cancelled(const std::string& id, const std::string& reason) {
        auto job = [this, id, reason](connection& c) {
            c.prepare("UPDATE orders SET state = 'cancelled' WHERE id = ? AND state = 'new'")
                .bind(id)
                .run();
            if (c.changes() == 1)
                messages_.order_ended(c, id);
            set_reason(c, id, reason);
            return 0;
        };
        co_await orders_.run<int>(std::move(job));
    }

    /// Orders whose transactions were cut short by a crash: a `new` order whose checkout the
    /// journal does not hold (or holds cancelled) is cancelled; a `paid` order whose fulfilment
    /// never began gets it now. Everything the journal holds unfinished is recovery's.
    asio::awaitable<void> reconcile() {
        auto select = [](connection& c) {
            std::vector<order_record> out;
            auto& st = c.prepare(std::string("SELECT ") + order_columns +
                                 " FROM orders WHERE state IN ('new', 'paid') ORDER BY created_ms");
            st.bind();
            while (st.step())
                out.push_back(read_order(st));
            st.bind();
            return out;
        };
        const std::vector<order_record> open =
            co_await orders_.run<std::vector<order_record>>(std::move(select));
        for (const order_record& o : open) {
            if (in_flight_.contains(o.id) || stopping_)
                continue;
            if (o.state == "new") {
                const std::optional<dtx::transaction_record> t =
                    co_await journal_.find(o.checkout_gid);
                if (t && t->status != dtx::tx_status::cancelled)
                    continue;
                if (in_flight_.contains(o.id))
                    continue;
                log_.write(o.checkout_gid, "",
                           "order " + o.id + ": its checkout never ran to the end: cancelled");
                co_await note_cancelled(o.id, "the order service stopped before the checkout");
            } else {
                const std::optional<dtx::transaction_record> t =
                    co_await journal_.find(o.fulfilment_gid);
                if (t || in_flight_.contains(o.id))
                    continue;
                in_flight_.insert(o.id);
                const std::string traceparent(
                    dtx::trace_context::for_gid(o.checkout_gid).traceparent());
                try {
                    co_await fulfil(o, traceparent);
                } catch (...) {
                    in_flight_.erase(o.id);
                    throw;
                }
                in_flight_.erase(o.id);
            }
        }
    }

    asio::awaitable<void> reconcile_loop() {
        while (!stopping_) {
            reconcile_timer_.expires_after(std::chrono::seconds(1));
            co_await reconcile_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            if (stopping_)
                break;
            try {
                co_await reconcile();
            } catch (const std::exception& e) {
                log_.line(std::string("reconciling orders failed: ") + e.what());
            }
        }
    }

    // ---- the public API -----------------------------------------------------------------------

    /// The options of the API's server: the limits of dtx::http::server, and a log line for every
    /// request refused or failed.
    http::server_options api_options(std::uint16_t port) {
        http::server_options o;
        o.port = port;
        o.body_limit = 64 * 1024; // an order is a few short fields
        o.on_request = [this](const http::log_record& r) {
            if (r.status < 400 && r.status != 0)
                return;
            log_.line("API " + std::string(r.method) + " " + std::string(r.path) + " -> " +
                      std::to_string(r.status) + " " + std::string(r.error) +
                      (r.exception.empty() ? "" : " (" + std::string(r.exception) + ")"));
        };
        return o;
    }

    /// POST /orders: stores the order, runs its transactions, and answers the order (200 once it
    /// is final; 202 if its transactions take longer than answer_wait, which go on). order_id is
    /// an idempotency key: the same order again answers what became of the first; another order
    /// under the same id is 409.
    asio::awaitable<http::reply> create(const http::request& req) {
        order_record o = parse_order(req.json(), customers_, merchant_);
        o.state = "new";
        o.checkout_gid = dtx::make_gid();
        o.fulfilment_gid = dtx::make_gid();
        if (in_flight_.contains(o.id)) { // a repeat while the first is being stored or processed
            const std::optional<order_record> stored = co_await load(o.id);
            if (!stored)
                throw http::error_reply(409, "order_in_progress",
                                        "order " + o.id + " is being stored; ask again");
            co_return answer_repeat(*stored, o);
        }
        in_flight_.insert(o.id); // before the row exists: the reconciler must never take it

        // The order is durable before its first transaction begins.
        const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count();
        auto insert = [o, now_ms](connection& c) { return store_order(c, o, now_ms); };
        order_record stored;
        try {
            stored = co_await orders_.run<order_record>(std::move(insert));
        } catch (...) {
            in_flight_.erase(o.id);
            throw;
        }
        if (stored.checkout_gid != o.checkout_gid) { // stored before
            in_flight_.erase(o.id);
            co_return answer_repeat(stored, o);
        }
        std::string traceparent(req.traceparent());
        if (traceparent.empty())
            traceparent = dtx::trace_context::for_gid(o.checkout_gid).traceparent();
        // The transactions run on their own: a client that goes away, or the server's
        // handler_timeout, cancels this wait, never them.
        auto done = std::make_shared<asio::steady_timer>(ioc_, answer_wait);
        asio::co_spawn(ioc_, process(o, traceparent),
                       [done](std::exception_ptr) { done->cancel(); });
        co_await done->async_wait(asio::as_tuple(asio::use_awaitable));
        co_return co_await show(o.id);
    }

    asio::awaitable<std::optional<order_record>> load(std::string id) {
        auto job = [id](connection& c) { return find_order(c, id); };
        co_return co_await orders_.run<std::optional<order_record>>(std::move(job));
    }

    /// GET /orders/{id}.
    asio::awaitable<http::reply> show(std::string id) {
        const std::optional<order_record> o = co_await load(id);
        if (!o)
            throw http::error_reply(404, "unknown_order", "no order " + id);
        co_return answer_order(*o);
    }

    /// Longest wait of POST /orders for the order's transactions, under the server's
    /// handler_timeout (30 s); then it answers 202 with the order's state.
    static constexpr std::chrono::seconds answer_wait{20};

    asio::io_context& ioc_;
    event_log log_;
    std::string db_path_;
    std::string inventory_, payment_, loyalty_, shipment_;
    std::uint16_t port_;
    pause_point pause_;
    order_messages messages_; // its outbox outlives the barrier's connection
    dtx::sqlite::barrier orders_;
    dtx::sqlite::journal journal_;
    dtx::http::client http_;
    dtx::participant_registry participants_;
    std::unique_ptr<dtx::coordinator> coord_;
    http::server api_;
    std::set<std::string> customers_;
    std::string merchant_;
    asio::steady_timer reconcile_timer_;
    std::unordered_map<std::string, live_tx> live_; // gid -> its order, while it runs here
    std::set<std::string> in_flight_;               // orders whose transactions run here now
    bool stopping_ = false;
};

} // namespace

int run_order_service(const settings& s) {
    asio::io_context ioc;
    auto service = std::make_unique<order_service>(ioc, s);
    asio::co_spawn(ioc, service->run(), [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    });
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) { service->stop(); });
    ioc.run();
    // Nothing is left in flight: the service can go before the io_context.
    service.reset();
    return 0;
}

} // namespace shop
