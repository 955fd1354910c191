// The order service: the shop's public API, and the coordinator of its transactions.
//
//   shop order --port P --db orders.db --journal orders.dtx.db
//              --inventory-url URL --payment-url URL --loyalty-url URL --shipment-url URL
//              [--call-timeout-ms 2000] [--retry-max-ms 1000] [--tx-timeout-ms 30000] [--pause-at
//              OP[:WHO]]
//
//   POST /orders {"order_id":"o-1","customer":"alice","sku":"apple","qty":3,"ship_to":"Berlin"} GET
//   /orders/{id}   the order and its state GET  /health
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
#include <dtx/http.hpp>
#include <dtx/sqlite/journal.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <memory>
#include <set>
#include <unordered_map>

#include "shop.hpp"

namespace shop {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using dtx::sqlite::connection;

struct order_record {
    std::string id, customer, sku, ship_to, state, reason, checkout_gid, fulfilment_gid;
    std::int64_t qty = 0, amount = 0, points = 0;
};
void to_json(nlohmann::json& j, const order_record& o) {
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

constexpr const char* order_columns =
    "id, customer, sku, qty, amount, points, ship_to, state, reason, checkout_gid, fulfilment_gid";

order_record read_order(dtx::sqlite::statement& st) {
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

std::optional<order_record> find_order(connection& c, const std::string& id) {
    auto& st = c.prepare(std::string("SELECT ") + order_columns + " FROM orders WHERE id = ?");
    st.bind(id);
    std::optional<order_record> o;
    if (st.step())
        o = read_order(st);
    st.bind();
    return o;
}

/// Moves the order of `s` from state s.from to `to`; failure if it is not in s.from.
dtx::outcome move_order(connection& c, const order_step& s, const std::string& from,
                        const std::string& to) {
    c.prepare("UPDATE orders SET state = ?1 WHERE id = ?2 AND state = ?3")
        .bind(to, s.order_id, from)
        .run();
    if (c.changes() == 1)
        return dtx::success();
    return dtx::failure("order " + s.order_id + " is not " + from);
}

/// A phase-2 move (confirm, cancel, compensate) must succeed: the barrier runs it once, after its
/// try or action. Anything else is a bug, reported as an unknown result (and retried).
dtx::outcome move_order_or_throw(connection& c, const order_step& s, const std::string& from,
                                 const std::string& to) {
    dtx::outcome o = move_order(c, s, from, to);
    if (!o.is_success())
        throw std::logic_error(o.message() + " (moving it to " + to + ")");
    return o;
}

struct reply {
    unsigned status = 200;
    nlohmann::json body;
};

reply refuse(unsigned status, const std::string& code, const std::string& message) {
    return {status, {{"error", code}, {"message", message}}};
}

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
        , orders_((prepare(), dtx::sqlite::barrier_options{.path = db_path_}))
        , journal_({.path = s.require("journal")})
        , http_(ioc.get_executor())
        , acceptor_(ioc)
        , reconcile_timer_(ioc) {
        participants_.add_tcc("order",
                              orders_.tcc({
                                  .on_try = dtx::sqlite::typed_handler<order_step>(
                                      [](connection& c, const dtx::branch_request&, order_step st) {
                                          return move_order(c, st, st.from, st.to);
                                      }),
                                  .on_confirm = dtx::sqlite::typed_handler<order_step>(
                                      [](connection& c, const dtx::branch_request&, order_step st) {
                                          return move_order_or_throw(c, st, st.to, "paid");
                                      }),
                                  .on_cancel = dtx::sqlite::typed_handler<order_step>(
                                      [](connection& c, const dtx::branch_request&, order_step st) {
                                          return move_order_or_throw(c, st, st.to, st.undo);
                                      }),
                              }));
        participants_.add_saga(
            "order-state", orders_.saga({
                               .on_action = dtx::sqlite::typed_handler<order_step>(
                                   [](connection& c, const dtx::branch_request&, order_step st) {
                                       return move_order(c, st, st.from, st.to);
                                   }),
                               .on_compensate = dtx::sqlite::typed_handler<order_step>(
                                   [](connection& c, const dtx::branch_request&, order_step st) {
                                       return move_order_or_throw(c, st, st.to, st.undo);
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
        // Bound first (a port in use fails before anything starts), listening once recovered.
        const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port_);
        acceptor_.open(ep.protocol());
        acceptor_.set_option(tcp::acceptor::reuse_address(true));
        acceptor_.bind(ep);

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

        acceptor_.listen();
        log_.line(
            "order API at http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) +
            "/orders (database " + db_path_ +
            (pause_.armed() ? ", fault point " + pause_.op + ":" + pause_.who : "") + ")");
        for (;;) {
            auto [ec, socket] =
                co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec) {
                if (!acceptor_.is_open())
                    co_return;
                continue;
            }
            asio::co_spawn(ioc_, serve(std::move(socket)), asio::detached);
        }
    }

    /// Stops accepting, closes idle connections and stops the background tasks; transactions in
    /// flight go on to their end, then io_context::run returns.
    void stop() {
        log_.line("stopping");
        stopping_ = true;
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        reconcile_timer_.cancel();
        for (auto* s : connections_)
            s->socket().close(ignored);
        coord_->stop();
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

    asio::awaitable<void> note_reason(const std::string& id, const std::string& reason) {
        auto job = [id, reason](connection& c) {
            c.prepare("UPDATE orders SET reason = ? WHERE id = ?").bind(reason, id).run();
            return 0;
        };
        co_await orders_.run<int>(std::move(job));
    }

    /// The checkout ended cancelled: an order still `new` (its own try never ran) is cancelled too;
    /// a late try would be refused by the barrier.
    asio::awaitable<void> note_cancelled(const std::string& id, const std::string& reason) {
        auto job = [id, reason](connection& c) {
            c.prepare("UPDATE orders SET reason = ?1, state = CASE state WHEN 'new' THEN "
                      "'cancelled' ELSE state END "
                      "WHERE id = ?2")
                .bind(reason, id)
                .run();
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

    asio::awaitable<reply> create(const std::string& body, std::string traceparent) {
        nlohmann::json in = nlohmann::json::parse(body, nullptr, false);
        if (!in.is_object())
            co_return refuse(400, "invalid_json", "the body must be a JSON object");
        order_record o;
        try {
            o.id = in.value("order_id", dtx::make_gid());
            o.customer = in.at("customer").get<std::string>();
            o.sku = in.at("sku").get<std::string>();
            o.qty = in.at("qty").get<std::int64_t>();
            o.ship_to = in.value("ship_to", std::string("Berlin"));
        } catch (const nlohmann::json::exception& e) {
            co_return refuse(400, "invalid_order",
                             std::string("customer, sku and qty are required: ") + e.what());
        }
        const std::optional<std::int64_t> price = price_of(o.sku);
        if (!price)
            co_return refuse(400, "unknown_sku", "no such product: " + o.sku);
        if (o.qty <= 0 || o.qty > 1'000'000'000 || o.customer.empty() || o.id.empty() ||
            o.id.size() > 64)
            co_return refuse(400, "invalid_order",
                             "qty must be 1 to 10^9; customer and order_id (up to 64) non-empty");
        o.amount = *price * o.qty;
        o.points = points_for(o.amount);
        o.state = "new";
        o.checkout_gid = dtx::make_gid();
        o.fulfilment_gid = dtx::make_gid();
        if (in_flight_.contains(o.id))
            co_return refuse(409, "order_in_progress", "order " + o.id + " is being processed");
        in_flight_.insert(
            o.id); // before the row exists: the reconciler must never take a live order

        // The order is durable before its first transaction begins; a repeated POST of the same
        // order_id answers what became of the first.
        const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count();
        auto insert = [o, now_ms](connection& c) {
            if (std::optional<order_record> old = find_order(c, o.id))
                return *old;
            c.prepare("INSERT INTO orders (id, customer, sku, qty, amount, points, ship_to, state, "
                      "checkout_gid, "
                      "fulfilment_gid, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(o.id, o.customer, o.sku, o.qty, o.amount, o.points, o.ship_to, o.state,
                      o.checkout_gid, o.fulfilment_gid, now_ms)
                .run();
            return o;
        };
        order_record stored;
        try {
            stored = co_await orders_.run<order_record>(std::move(insert));
        } catch (...) {
            in_flight_.erase(o.id);
            throw;
        }
        if (stored.checkout_gid != o.checkout_gid) {
            in_flight_.erase(o.id);
            reply again{is_final_state(stored.state) ? 200u : 202u, stored};
            co_return again;
        }
        if (traceparent.empty())
            traceparent = dtx::trace_context::for_gid(o.checkout_gid).traceparent();
        co_await process(o, traceparent);
        co_return co_await show(o.id);
    }

    asio::awaitable<reply> show(std::string id) {
        auto job = [id](connection& c) { return find_order(c, id); };
        const std::optional<order_record> o =
            co_await orders_.run<std::optional<order_record>>(std::move(job));
        if (!o)
            co_return refuse(404, "unknown_order", "no order " + id);
        reply r{is_final_state(o->state) ? 200u : 202u, *o};
        co_return r;
    }

    asio::awaitable<reply> handle(const bhttp::request<bhttp::string_body>& req) {
        const std::string target(req.target());
        const bool get = req.method() == bhttp::verb::get;
        if (target == "/health") {
            if (!get)
                co_return refuse(405, "method_not_allowed", "GET " + target);
            reply ok{200, {{"status", "ok"}}};
            co_return ok;
        }
        if (target == "/orders") {
            if (req.method() != bhttp::verb::post)
                co_return refuse(405, "method_not_allowed", "POST " + target);
            std::string traceparent(req["traceparent"]);
            if (!dtx::trace_context::continuing(traceparent))
                traceparent.clear();
            co_return co_await create(req.body(), std::move(traceparent));
        }
        if (target.rfind("/orders/", 0) == 0 && target.size() > 8) {
            if (!get)
                co_return refuse(405, "method_not_allowed", "GET " + target);
            co_return co_await show(target.substr(8));
        }
        co_return refuse(404, "not_found", "routes: POST /orders, GET /orders/{id}, GET /health");
    }

    asio::awaitable<void> serve(tcp::socket socket) {
        beast::tcp_stream stream(std::move(socket));
        connections_.insert(&stream);
        beast::flat_buffer buffer;
        for (;;) {
            bhttp::request_parser<bhttp::string_body> parser;
            parser.body_limit(64 * 1024);
            stream.expires_after(std::chrono::seconds(60));
            auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser,
                                                      asio::as_tuple(asio::use_awaitable));
            if (ec)
                break;
            stream.expires_never();
            const auto& req = parser.get();
            reply r;
            try {
                r = co_await handle(req);
            } catch (const std::exception& e) {
                r = refuse(500, "internal_error", e.what());
            }
            bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status),
                                                    req.version()};
            res.set(bhttp::field::content_type, "application/json");
            res.keep_alive(req.keep_alive() && !stopping_);
            res.body() = r.body.dump() + "\n";
            res.prepare_payload();
            auto [wec, written] =
                co_await bhttp::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
            if (wec || !res.keep_alive())
                break;
        }
        connections_.erase(&stream);
        boost::system::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }

    asio::io_context& ioc_;
    event_log log_;
    std::string db_path_;
    std::string inventory_, payment_, loyalty_, shipment_;
    std::uint16_t port_;
    pause_point pause_;
    dtx::sqlite::barrier orders_;
    dtx::sqlite::journal journal_;
    dtx::http::client http_;
    dtx::participant_registry participants_;
    std::unique_ptr<dtx::coordinator> coord_;
    tcp::acceptor acceptor_;
    asio::steady_timer reconcile_timer_;
    std::unordered_map<std::string, live_tx> live_; // gid -> its order, while it runs here
    std::set<std::string> in_flight_;               // orders whose transactions run here now
    std::set<beast::tcp_stream*> connections_;
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
