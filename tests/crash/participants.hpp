#ifndef DTX_TESTS_CRASH_PARTICIPANTS_HPP
#define DTX_TESTS_CRASH_PARTICIPANTS_HPP

// The crash tests' participants, for any database behind a barrier (SQLite or PostgreSQL):
// accounts (TCC: try freezes money, confirm pays it, cancel unfreezes it), stock (TCC: try
// reserves, confirm sells, cancel releases; and the saga "stock-saga": the action sells at once,
// compensation takes the goods back) and points (saga: the action awards, compensation takes
// back).
//
// Every handler also appends (gid, branch, op, participant) to its database's `applied` ledger in
// the same local transaction; a second execution of an operation, a phase-2 operation without its
// try, or a state the protocol rules out (less frozen than the transfer, say) is recorded in
// `anomalies` (the drivers fail on any).
//
// The SQL is the same for both databases. A workload says how to run it on its connection type
// by specialising `sql_access` before it builds the handlers:
//   static int changes(Db&, const char* sql, const Args&...)        rows changed
//   static bool exists(Db&, const char* sql, const Args&...)        a row came back
//   static outcome protect(Db&, F business, std::string& violated)  runs `business`; a violated
//       constraint is undone and described in `violated` instead of failing the local transaction
// Parameters are written $1, $2, ... and each statement names $1 before $2 (SQLite numbers named
// parameters in the order they first appear).

#include <dtx/barrier.hpp>
#include <dtx/participant.hpp>
#include <dtx/participant_registry.hpp>

#include <iostream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "crash_common.hpp"

namespace dtx::crash {

template <class Db>
struct sql_access; // specialised by each workload for its connection type

/// Attempts per (gid, branch, op) in this process, for chaos::fail_first and chaos::try_throws.
class attempt_counter {
public:
    int next(const branch_request& r) {
        std::string key(r.gid);
        key += '/';
        key += r.branch_id;
        key += '/';
        key += to_string(r.op);
        std::lock_guard lock(mu_); // a barrier may run handlers on several threads
        return ++counts_[key];
    }

private:
    std::mutex mu_;
    std::unordered_map<std::string, int> counts_;
};

/// Records something a handler found wrong, in the same local transaction.
template <class Db>
void anomaly(Db& db, const std::string& participant, const branch_request& r,
             const std::string& what) {
    std::cerr << "ANOMALY " << participant << ": gid " << r.gid << " branch " << r.branch_id << " "
              << to_string(r.op) << ": " << what << std::endl;
    sql_access<Db>::changes(
        db, "INSERT INTO anomalies (gid, branch_id, op, what) VALUES ($1, $2, $3, $4)", r.gid,
        r.branch_id, to_string(r.op), what);
}

/// Wraps a business handler: transient chaos, the ledger row (a second execution is an anomaly),
/// the protocol preconditions, and any constraint failure turned into an anomaly.
template <class T, class Db, class F>
barrier_handler<Db> ledgered(std::string participant, std::shared_ptr<attempt_counter> attempts,
                             F business) {
    using sql = sql_access<Db>;
    return typed_barrier_handler<T, Db>(
        [participant = std::move(participant), attempts = std::move(attempts),
         business = std::move(business)](Db& db, const branch_request& r, T p) -> outcome {
            const bool first_phase = r.op == branch_op::try_ || r.op == branch_op::action;
            if (!first_phase && p.c.fail_first > 0 && attempts->next(r) <= p.c.fail_first)
                throw std::runtime_error("transient failure (chaos)");
            if (sql::changes(
                    db,
                    "INSERT INTO applied (gid, branch_id, op, participant) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT DO NOTHING",
                    r.gid, r.branch_id, to_string(r.op), participant) == 0) {
                anomaly(db, participant, r, "executed twice");
                return success();
            }
            const auto done = [&](branch_op op) {
                return sql::exists(
                    db, "SELECT 1 FROM applied WHERE gid = $1 AND branch_id = $2 AND op = $3",
                    r.gid, r.branch_id, to_string(op));
            };
            const branch_op first = r.kind() == tx_kind::tcc ? branch_op::try_ : branch_op::action;
            if (!first_phase && !done(first)) {
                anomaly(db, participant, r,
                        std::string(to_string(r.op)) + " without a " +
                            std::string(to_string(first)));
                return success();
            }
            if (r.op == branch_op::confirm && done(branch_op::cancel))
                anomaly(db, participant, r, "confirm after cancel");
            if (r.op == branch_op::cancel && done(branch_op::confirm))
                anomaly(db, participant, r, "cancel after confirm");
            std::string violated;
            outcome o = sql::protect(
                db, [&] { return business(db, r, p); }, violated);
            if (!violated.empty()) {
                anomaly(db, participant, r, "constraint failed: " + violated);
                return success();
            }
            if (o.is_success() && first_phase && p.c.try_throws && attempts->next(r) == 1)
                throw std::runtime_error(std::string(to_string(r.op)) + " lost its answer (chaos)");
            return o;
        });
}

/// Runs a statement that must change exactly one row; if it changes none, the handler found the
/// state inconsistent with the protocol: an anomaly.
template <class Db, class... Args>
void must_change(Db& db, const branch_request& r, const char* participant, const char* what,
                 const char* sql, const Args&... args) {
    if (sql_access<Db>::changes(db, sql, args...) != 1)
        anomaly(db, participant, r, what);
}

/// Runs a statement that must change exactly one row, or refuses with `refusal` (the business
/// "no": not enough money or stock).
template <class Db, class... Args>
outcome change_or_refuse(Db& db, std::string refusal, const char* sql, const Args&... args) {
    if (sql_access<Db>::changes(db, sql, args...) != 1)
        return failure(std::move(refusal));
    return success();
}

// accounts (TCC): try freezes the amount in the payer's account, confirm pays it to the payee,
// cancel unfreezes it.

template <class Db>
outcome freeze(Db& db, const branch_request&, transfer t) {
    return change_or_refuse(db, "insufficient funds in account " + std::to_string(t.payer),
                            "UPDATE accounts SET balance = balance - $1, frozen = frozen + $1 "
                            "WHERE id = $2 AND balance >= $1",
                            t.amount, t.payer);
}

template <class Db>
outcome pay(Db& db, const branch_request& r, transfer t) {
    must_change(db, r, "accounts", "confirm found less frozen than the transfer",
                "UPDATE accounts SET frozen = frozen - $1 WHERE id = $2 AND frozen >= $1", t.amount,
                t.payer);
    must_change(db, r, "accounts", "confirm found no payee",
                "UPDATE accounts SET balance = balance + $1 WHERE id = $2", t.amount, t.payee);
    return success();
}

template <class Db>
outcome unfreeze(Db& db, const branch_request& r, transfer t) {
    must_change(db, r, "accounts", "cancel found less frozen than the transfer",
                "UPDATE accounts SET frozen = frozen - $1, balance = balance + $1 WHERE id = $2 "
                "AND frozen >= $1",
                t.amount, t.payer);
    return success();
}

// stock (TCC): try reserves, confirm sells the reservation, cancel releases it.

template <class Db>
outcome reserve(Db& db, const branch_request&, items it) {
    return change_or_refuse(db, "not enough of sku " + std::to_string(it.sku),
                            "UPDATE stock SET available = available - $1, reserved = reserved + $1 "
                            "WHERE sku = $2 AND available >= $1",
                            it.qty, it.sku);
}

template <class Db>
outcome sell_reserved(Db& db, const branch_request& r, items it) {
    must_change(db, r, "stock", "confirm found less reserved than the order",
                "UPDATE stock SET reserved = reserved - $1, sold = sold + $1 WHERE sku = $2 AND "
                "reserved >= $1",
                it.qty, it.sku);
    return success();
}

template <class Db>
outcome release(Db& db, const branch_request& r, items it) {
    must_change(db, r, "stock", "cancel found less reserved than the order",
                "UPDATE stock SET reserved = reserved - $1, available = available + $1 "
                "WHERE sku = $2 AND reserved >= $1",
                it.qty, it.sku);
    return success();
}

// stock-saga (saga, same database): the action sells at once, compensation takes the goods back.

template <class Db>
outcome sell(Db& db, const branch_request&, items it) {
    return change_or_refuse(db, "not enough of sku " + std::to_string(it.sku),
                            "UPDATE stock SET available = available - $1, sold = sold + $1 "
                            "WHERE sku = $2 AND available >= $1",
                            it.qty, it.sku);
}

template <class Db>
outcome take_back(Db& db, const branch_request& r, items it) {
    must_change(db, r, "stock-saga", "compensate found less sold than the order",
                "UPDATE stock SET sold = sold - $1, available = available + $1 WHERE sku = $2 AND "
                "sold >= $1",
                it.qty, it.sku);
    return success();
}

// points (saga): the action awards points (refusing awards over the limit), compensation takes
// them back.

template <class Db>
outcome grant(Db& db, const branch_request&, award a) {
    if (a.points > max_award)
        return failure("an award of " + std::to_string(a.points) + " points is over the limit");
    return change_or_refuse(db, "no customer " + std::to_string(a.customer),
                            "UPDATE points SET total = total + $1 WHERE customer = $2", a.points,
                            a.customer);
}

template <class Db>
outcome revoke(Db& db, const branch_request& r, award a) {
    must_change(db, r, "points", "compensate found fewer points than the award",
                "UPDATE points SET total = total - $1 WHERE customer = $2 AND total >= $1",
                a.points, a.customer);
    return success();
}

// The handler sets. "stock" and "stock-saga" share a database, and so an attempt counter.

template <class Db>
barrier_tcc_handlers<Db> accounts_handlers() {
    auto attempts = std::make_shared<attempt_counter>();
    return {
        .on_try = ledgered<transfer, Db>("accounts", attempts, freeze<Db>),
        .on_confirm = ledgered<transfer, Db>("accounts", attempts, pay<Db>),
        .on_cancel = ledgered<transfer, Db>("accounts", attempts, unfreeze<Db>),
    };
}

template <class Db>
barrier_tcc_handlers<Db> stock_handlers(std::shared_ptr<attempt_counter> attempts) {
    return {
        .on_try = ledgered<items, Db>("stock", attempts, reserve<Db>),
        .on_confirm = ledgered<items, Db>("stock", attempts, sell_reserved<Db>),
        .on_cancel = ledgered<items, Db>("stock", attempts, release<Db>),
    };
}

template <class Db>
barrier_saga_handlers<Db> stock_saga_handlers(std::shared_ptr<attempt_counter> attempts) {
    return {
        .on_action = ledgered<items, Db>("stock-saga", attempts, sell<Db>),
        .on_compensate = ledgered<items, Db>("stock-saga", attempts, take_back<Db>),
    };
}

template <class Db>
barrier_saga_handlers<Db> points_handlers() {
    auto attempts = std::make_shared<attempt_counter>();
    return {
        .on_action = ledgered<award, Db>("points", attempts, grant<Db>),
        .on_compensate = ledgered<award, Db>("points", attempts, revoke<Db>),
    };
}

// Registering the participants of one database behind its barrier (a process serving one
// database over HTTP registers its own only), or all four.

template <class Db, class Barrier>
void register_accounts(participant_registry& reg, Barrier& accounts) {
    reg.add_tcc("accounts", accounts.tcc(accounts_handlers<Db>()));
}

/// "stock" and "stock-saga".
template <class Db, class Barrier>
void register_stock(participant_registry& reg, Barrier& stock) {
    auto stock_attempts = std::make_shared<attempt_counter>();
    reg.add_tcc("stock", stock.tcc(stock_handlers<Db>(stock_attempts)));
    reg.add_saga("stock-saga", stock.saga(stock_saga_handlers<Db>(stock_attempts)));
}

template <class Db, class Barrier>
void register_points(participant_registry& reg, Barrier& points) {
    reg.add_saga("points", points.saga(points_handlers<Db>()));
}

/// Registers the four participants, each behind its barrier: `registry.add_tcc("accounts",
/// accounts.tcc(...))` and so on.
template <class Db, class Barrier>
void register_participants(participant_registry& reg, Barrier& accounts, Barrier& stock,
                           Barrier& points) {
    register_accounts<Db>(reg, accounts);
    register_stock<Db>(reg, stock);
    register_points<Db>(reg, points);
}

} // namespace dtx::crash

#endif
