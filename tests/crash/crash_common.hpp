#ifndef DTX_TESTS_CRASH_COMMON_HPP
#define DTX_TESTS_CRASH_COMMON_HPP

// What the crash tests' workloads and drivers share: file names, the participants' schema and
// initial state, the branch payloads, and the names of the fault points the drivers aim at.
//
// Data directory layout:
//   journal.db    the coordinator's SQLite journal
//   accounts.db   TCC "accounts": balances with a frozen column (try freezes, confirm pays)
//   stock.db      TCC "stock" (try reserves, confirm sells) and saga "stock-saga" (action sells)
//   points.db     saga "points" (action awards, compensate takes back)
//   faults.log    one line per fault-point kill, written just before the workload kills itself
// Each participant database also holds `applied` (one row per handler execution, UNIQUE per
// gid, branch and operation) and `anomalies` (anything a handler found wrong).

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dtx::crash {

inline constexpr const char* journal_file = "journal.db";
inline constexpr const char* accounts_file = "accounts.db";
inline constexpr const char* stock_file = "stock.db";
inline constexpr const char* points_file = "points.db";
inline constexpr const char* fault_log_file = "faults.log";

// The PostgreSQL crash test keeps the journal and each participant in a database of its own on
// one server, under these names.
inline constexpr const char* pg_databases[] = {"dtx_journal", "accounts", "stock", "points"};

/// A connection string for `database` on the server that `server` (host, port, user) names.
inline std::string pg_conninfo(const std::string& server, std::string_view database) {
    return server + " dbname=" + std::string(database);
}

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
    /// result, so the transaction is cancelled. Only its first attempt in each process throws: a
    /// planned saga's recovery, which sends its actions again, gets past it.
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

// The participants' tables and initial rows, in SQL that SQLite and PostgreSQL both run. Every
// participant database also holds the ledger (`applied`) and `anomalies`.

inline std::vector<std::string> with_ledger(std::vector<std::string> statements) {
    statements.push_back(
        "CREATE TABLE applied (gid TEXT NOT NULL, branch_id TEXT NOT NULL, op TEXT NOT NULL, "
        "participant TEXT NOT NULL, UNIQUE (gid, branch_id, op))");
    statements.push_back("CREATE TABLE anomalies (gid TEXT NOT NULL, branch_id TEXT NOT NULL, op "
                         "TEXT NOT NULL, what TEXT NOT NULL)");
    return statements;
}

/// "INSERT INTO table (columns) VALUES (0, values), (1, values), ..." for keys 0 .. n-1.
inline std::string initial_rows(const char* table, const char* columns, int n,
                                const std::string& values) {
    std::string sql = std::string("INSERT INTO ") + table + " (" + columns + ") VALUES ";
    for (int i = 0; i < n; ++i)
        sql += (i ? ", (" : "(") + std::to_string(i) + ", " + values + ")";
    return sql;
}

inline std::vector<std::string> accounts_schema() {
    return with_ledger({"CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL "
                        "CHECK (balance >= 0), "
                        "frozen BIGINT NOT NULL CHECK (frozen >= 0))",
                        initial_rows("accounts", "id, balance, frozen", account_count,
                                     std::to_string(initial_balance) + ", 0")});
}

inline std::vector<std::string> stock_schema() {
    return with_ledger(
        {"CREATE TABLE stock (sku BIGINT PRIMARY KEY, available BIGINT NOT NULL CHECK (available "
         ">= 0), "
         "reserved BIGINT NOT NULL CHECK (reserved >= 0), sold BIGINT NOT NULL CHECK (sold >= 0))",
         initial_rows("stock", "sku, available, reserved, sold", sku_count,
                      std::to_string(initial_stock) + ", 0, 0")});
}

inline std::vector<std::string> points_schema() {
    return with_ledger({"CREATE TABLE points (customer BIGINT PRIMARY KEY, total BIGINT NOT NULL "
                        "CHECK (total >= 0))",
                        initial_rows("points", "customer, total", customer_count, "0")});
}

// ---- fault points -----------------------------------------------------------------------------

// A fault point is named "<origin>/<kind>/<point>":
//   origin  "tx" (a transaction this process is running) or "rec" (recovery);
//   kind    "tcc", "saga", or "any" (a recovery claim);
//   point   a journal write ("begin", "register", "decide-confirm", "decide-cancel",
//           "end-confirm", "end-cancel", "end-compensate", "done-…", "lease", "claim") or a branch
//           call
//           ("call-try", "call-confirm", …).
// Gids start with "tcc-", "saga-" or "plan-" (a saga of planned steps), so the kind is known from
// the gid alone (also in recovery).

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
        {"tx/plan/begin", 8},
        {"tx/plan/call-action", 15},
        {"tx/plan/end-action", 6},
        {"tx/plan/decide-compensate", 2},
        {"tx/plan/call-compensate", 3},
        {"tx/plan/end-compensate", 2},
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
        {"rec/plan/call-action", 4},
        {"rec/plan/end-action", 2},
        {"rec/plan/call-compensate", 2},
    };
    return all;
}

/// The kind encoded in a gid ("tcc", "saga" or "plan"), or "any".
inline std::string_view kind_of_gid(std::string_view gid) {
    if (gid.starts_with("tcc-"))
        return "tcc";
    if (gid.starts_with("saga-"))
        return "saga";
    if (gid.starts_with("plan-"))
        return "plan";
    return "any";
}

/// A whole decimal number, or empty.
inline std::optional<long> parse_number(std::string_view s) {
    long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
        return std::nullopt;
    return v;
}

/// A command line, read option by option. `usage(why)` reports a mistake and exits.
class command_line {
public:
    command_line(int argc, char** argv, void (*usage)(const std::string&))
        : argc_(argc)
        , argv_(argv)
        , usage_(usage) {}

    /// The next option, or empty at the end.
    std::optional<std::string_view> next() {
        if (i_ + 1 >= argc_)
            return std::nullopt;
        option_ = argv_[++i_];
        return option_;
    }

    /// The current option's value.
    std::string_view value() {
        if (i_ + 1 >= argc_)
            fail(std::string(option_) + " needs a value");
        return argv_[++i_];
    }

    /// The current option's value, a whole number.
    template <class T = long>
    T number() {
        const std::string_view v = value();
        const auto n = parse_number(v);
        if (!n)
            fail("bad number for " + std::string(option_) + ": " + std::string(v));
        return static_cast<T>(*n);
    }

    /// Reports a mistake in the command line and exits.
    [[noreturn]] void fail(const std::string& why) {
        usage_(why);
        std::abort(); // usage does not return
    }

    /// Reports `why` as a mistake unless `ok`.
    void require(bool ok, const std::string& why) {
        if (!ok)
            fail(why);
    }

private:
    int argc_;
    char** argv_;
    void (*usage_)(const std::string&);
    int i_ = 0;
    std::string_view option_;
};

/// An option a program takes: its name, and what reading it does (a flag reads no value).
struct option {
    std::string_view name;
    std::function<void(command_line&)> read;
};

/// An option whose value goes to `into`: a whole number, or text (a string, a path).
template <class T>
option value_option(std::string_view name, T& into) {
    return {name, [&into](command_line& cl) {
                if constexpr (std::is_arithmetic_v<T>)
                    into = cl.number<T>();
                else
                    into = T(std::string(cl.value()));
            }};
}

/// An option without a value that sets `into`.
inline option flag_option(std::string_view name, bool& into) {
    return {name, [&into](command_line&) { into = true; }};
}

/// Reads every argument of `cl` as one of `options`; anything else is a mistake.
inline void parse_options(command_line& cl, const std::vector<option>& options) {
    while (const auto next = cl.next()) {
        const auto it = std::find_if(options.begin(), options.end(),
                                     [&](const option& o) { return o.name == *next; });
        if (it == options.end())
            cl.fail("unknown argument " + std::string(*next));
        it->read(cl);
    }
}

/// The options both crash drivers take.
struct driver_settings {
    int kills = 0;
    std::uint64_t seed = 0;
    bool seed_given = false;
    std::filesystem::path workload;
    std::filesystem::path dir;
    bool keep = false;
    int check_every = 0;
    int concurrency = 0;
    int watchdog_ms = 0;
    bool verbose = false;
    bool own_dir = false; // the driver chose the data directory (and removes it after a success)

    /// The options of both drivers, reading into this; a driver appends its own.
    std::vector<option> options() {
        return {
            value_option("--kills", kills),
            {"--seed",
             [this](command_line& cl) {
                 seed = cl.number<std::uint64_t>();
                 seed_given = true;
             }},
            value_option("--workload", workload),
            value_option("--dir", dir),
            flag_option("--keep", keep),
            value_option("--check-every", check_every),
            value_option("--concurrency", concurrency),
            value_option("--watchdog-ms", watchdog_ms),
            flag_option("--verbose", verbose),
        };
    }

    /// After parsing: chooses the seed, and the workload executable (`workload_name` next to
    /// this executable; without a name, this executable), when they were not given.
    void finish(const char* workload_name) {
        if (!seed_given)
            seed = std::random_device{}() % 1'000'000'000u;
        if (!workload.empty())
            return;
        workload = std::filesystem::read_symlink("/proc/self/exe");
        if (workload_name)
            workload = workload.parent_path() / workload_name;
    }
};

} // namespace dtx::crash

#endif
