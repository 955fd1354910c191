#ifndef DTX_TESTS_CRASH_COMMON_HPP
#define DTX_TESTS_CRASH_COMMON_HPP

// What the crash-test workload and its driver share: file names, the participants' schema and
// initial state, the branch payloads, and the names of the fault points the driver aims at.
//
// Data directory layout:
//   journal.db    the coordinator's SQLite journal
//   accounts.db   TCC "accounts": balances with a frozen column (try freezes, confirm pays)
//   stock.db      TCC "stock" (try reserves, confirm sells) and saga "stock-saga" (action sells)
//   points.db     saga "points" (action awards, compensate takes back)
//   faults.log    one line per fault-point kill, written just before the workload kills itself
// Each participant database also holds `applied` (one row per handler execution, UNIQUE per
// gid, branch and operation) and `anomalies` (anything a handler found wrong).

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <dtx/sqlite_db.hpp>

namespace dtx::crash {

inline constexpr const char* journal_file = "journal.db";
inline constexpr const char* accounts_file = "accounts.db";
inline constexpr const char* stock_file = "stock.db";
inline constexpr const char* points_file = "points.db";
inline constexpr const char* fault_log_file = "faults.log";

inline constexpr int account_count = 8;
inline constexpr std::int64_t initial_balance = 1'000'000;
inline constexpr int sku_count = 4;
inline constexpr std::int64_t initial_stock = 1'000'000'000;
inline constexpr int customer_count = 8;
/// The points participant refuses awards larger than this.
inline constexpr std::int64_t max_award = 500;
/// An amount no account, shelf or award can satisfy: the business refusal the workload asks for.
inline constexpr std::int64_t refused_amount = 1'000'000'000'000;

/// Exit code of a workload whose fault target is a recovery point that its startup recovery
/// did not reach (nothing was killed; the driver tries another target).
inline constexpr int exit_target_not_reached = 75;

// ---- payloads ---------------------------------------------------------------------------------

/// Misbehaviour a branch carries in its payload, so that recovery in a later process sees it too.
struct chaos {
    /// Phase-2 operations (confirm, cancel, compensate) of this branch throw on their first
    /// `fail_first` attempts in each process: transient errors, retried by the coordinator.
    int fail_first = 0;
    /// The try (or action) throws after doing its work, which the barrier rolls back: an unknown
    /// result, so the transaction is cancelled.
    bool try_throws = false;
};

struct transfer {
    int payer = 0;
    int payee = 1;
    std::int64_t amount = 1;
    chaos c{};
};

struct items {
    int sku = 0;
    std::int64_t qty = 1;
    chaos c{};
};

struct award {
    int customer = 0;
    std::int64_t points = 1;
    chaos c{};
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(chaos, fail_first, try_throws)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(transfer, payer, payee, amount, c)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(items, sku, qty, c)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(award, customer, points, c)

// ---- schema -----------------------------------------------------------------------------------

/// The ledger and anomaly tables every participant database holds.
inline void create_ledger(sqlite::connection& db) {
    db.exec(R"sql(
        CREATE TABLE IF NOT EXISTS applied (
            gid         TEXT NOT NULL,
            branch_id   TEXT NOT NULL,
            op          TEXT NOT NULL,
            participant TEXT NOT NULL,
            UNIQUE (gid, branch_id, op)
        );
        CREATE TABLE IF NOT EXISTS anomalies (
            gid       TEXT NOT NULL,
            branch_id TEXT NOT NULL,
            op        TEXT NOT NULL,
            what      TEXT NOT NULL
        );
    )sql");
}

/// Creates a participant database with its initial state (the driver calls these once).
inline void init_accounts(sqlite::connection& db) {
    sqlite::transaction tx(db);
    db.exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0), "
            "frozen INTEGER NOT NULL CHECK (frozen >= 0))");
    create_ledger(db);
    for (int i = 0; i < account_count; ++i)
        db.prepare("INSERT INTO accounts (id, balance, frozen) VALUES (?, ?, 0)").bind(i, initial_balance).run();
    tx.commit();
}

inline void init_stock(sqlite::connection& db) {
    sqlite::transaction tx(db);
    db.exec("CREATE TABLE stock (sku INTEGER PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0), "
            "reserved INTEGER NOT NULL CHECK (reserved >= 0), sold INTEGER NOT NULL CHECK (sold >= 0))");
    create_ledger(db);
    for (int i = 0; i < sku_count; ++i)
        db.prepare("INSERT INTO stock (sku, available, reserved, sold) VALUES (?, ?, 0, 0)")
            .bind(i, initial_stock)
            .run();
    tx.commit();
}

inline void init_points(sqlite::connection& db) {
    sqlite::transaction tx(db);
    db.exec("CREATE TABLE points (customer INTEGER PRIMARY KEY, total INTEGER NOT NULL CHECK (total >= 0))");
    create_ledger(db);
    for (int i = 0; i < customer_count; ++i)
        db.prepare("INSERT INTO points (customer, total) VALUES (?, 0)").bind(i).run();
    tx.commit();
}

// ---- fault points -----------------------------------------------------------------------------

// A fault point is named "<origin>/<kind>/<point>":
//   origin  "tx" (a transaction this process is running) or "rec" (recovery);
//   kind    "tcc", "saga", or "any" (a recovery claim);
//   point   a journal write ("begin", "register", "decide-confirm", "decide-cancel",
//           "end-confirm", "end-cancel", "end-compensate", "done-…", "lease", "claim") or a branch call
//           ("call-try", "call-confirm", …).
// Gids start with "tcc-" or "saga-", so the kind is known from the gid alone (also in recovery).

/// A point the driver aims at, and the highest occurrence number it picks for it (points that are
/// rare in a run get small numbers, so that the target is reached).
struct fault_target {
    const char* name;
    int max_nth;
};

inline const std::vector<fault_target>& fault_targets() {
    static const std::vector<fault_target> all = {
        // A transaction's own points. The numbers follow how often each point comes in a run of
        // a few tens of transactions.
        {"tx/tcc/begin", 18},
        {"tx/tcc/register", 15},
        {"tx/tcc/call-try", 40},
        {"tx/tcc/decide-confirm", 15},
        {"tx/tcc/call-confirm", 35},
        {"tx/tcc/end-confirm", 13},
        {"tx/tcc/decide-cancel", 4},
        {"tx/tcc/call-cancel", 7},
        {"tx/tcc/end-cancel", 4},
        {"tx/tcc/done-confirm", 1},
        {"tx/tcc/done-cancel", 1},
        {"tx/tcc/lease", 1},
        {"tx/saga/begin", 15},
        {"tx/saga/register", 10},
        {"tx/saga/call-action", 30},
        {"tx/saga/end-confirm", 12},
        {"tx/saga/decide-cancel", 3},
        {"tx/saga/call-compensate", 5},
        {"tx/saga/end-compensate", 3},
        {"tx/saga/done-compensate", 1},
        // Recovery's points, in the startup recovery that follows a kill.
        {"rec/any/claim", 1},
        {"rec/tcc/call-cancel", 8},
        {"rec/tcc/end-cancel", 4},
        {"rec/tcc/call-confirm", 2},
        {"rec/tcc/end-confirm", 1},
        {"rec/tcc/done-cancel", 1},
        {"rec/tcc/done-confirm", 1},
        {"rec/saga/call-compensate", 6},
        {"rec/saga/end-compensate", 3},
        {"rec/saga/done-compensate", 1},
    };
    return all;
}

/// The kind encoded in a gid ("tcc" or "saga"), or "any".
inline std::string_view kind_of_gid(std::string_view gid) {
    if (gid.starts_with("tcc-")) return "tcc";
    if (gid.starts_with("saga-")) return "saga";
    return "any";
}

/// A whole decimal number, or empty.
inline std::optional<long> parse_number(std::string_view s) {
    long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

} // namespace dtx::crash

#endif
