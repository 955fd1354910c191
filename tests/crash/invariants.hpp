#ifndef DTX_TESTS_CRASH_INVARIANTS_HPP
#define DTX_TESTS_CRASH_INVARIANTS_HPP

// The crash tests' invariants, over a snapshot of what the workloads left (each driver reads its
// own databases into it), once recovery has finished everything:
//   - the journal holds no unfinished transaction, and every confirmed one has branches at both
//     of its kind's participants;
//   - per gid and branch, the participants' ledgers hold exactly what the outcome requires
//     (TCC confirmed: try+confirm; cancelled: nothing, or try+cancel; saga confirmed: action;
//     cancelled: nothing, or action+compensate), and no ledger row lacks its journal branch;
//   - no handler ran twice or found the state inconsistent (`anomalies` empty, no "ANOMALY" in
//     the workloads' output), no barrier row is unfinished;
//   - balances, stock and points equal what the confirmed transactions' payloads imply, money and
//     stock are conserved, nothing is frozen or reserved.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crash_common.hpp"

namespace dtx::crash {

struct journal_branch {
    std::string participant;
    nlohmann::json payload;
};

struct journal_tx {
    std::string kind;
    std::string status;
    std::map<std::string, journal_branch> branches;
};

struct ledger_entry {
    std::set<std::string> ops;
    std::set<std::string> participants;
};

/// What the workloads left in the journal and the participants' databases.
struct snapshot {
    std::map<std::string, journal_tx> journal;
    /// Per (gid, branch): what the participants' ledgers hold.
    std::map<std::pair<std::string, std::string>, ledger_entry> ledger;
    long ledger_rows = 0;
    void add_ledger_row(std::string gid, std::string branch_id, std::string op,
                        std::string participant) {
        auto& e = ledger[{std::move(gid), std::move(branch_id)}];
        e.ops.insert(std::move(op));
        e.participants.insert(std::move(participant));
        ++ledger_rows;
    }

    struct account {
        std::int64_t id, balance, frozen;
    };
    struct shelf {
        std::int64_t sku, available, reserved, sold;
    };
    struct customer {
        std::int64_t id, points;
    };
    std::vector<account> accounts;
    std::vector<shelf> stock;
    std::vector<customer> points;

    /// Anomalies the handlers recorded and unfinished barrier rows, described.
    std::vector<std::string> problems;
};

struct check_summary {
    long transactions = 0, confirmed = 0, cancelled = 0;
    long tcc_confirmed = 0, tcc_cancelled = 0, saga_confirmed = 0, saga_cancelled = 0;
    long ledger_rows = 0;
};

/// Collects violations (the first 50 of them).
class violations {
public:
    void add(std::string v) {
        if (all_.size() < 50)
            all_.push_back(std::move(v));
        else if (all_.size() == 50)
            all_.push_back("(more violations not shown)");
    }
    bool empty() const { return all_.empty(); }
    std::size_t size() const { return all_.size(); }
    const std::vector<std::string>& all() const { return all_; }

    /// "N invariant violation(s):" and one line each.
    std::string report() const {
        std::string out = std::to_string(all_.size()) + " invariant violation(s):";
        for (const auto& x : all_)
            out += "\n  " + x;
        return out;
    }

private:
    std::vector<std::string> all_;
};

/// Adds a violation for every line of a workload's output that reports an anomaly.
inline void check_log(const std::filesystem::path& log, violations& v) {
    std::ifstream in(log);
    for (std::string l; std::getline(in, l);)
        if (l.find("ANOMALY") != std::string::npos || l.find("constraint") != std::string::npos)
            v.add("the workload reported: " + l);
}

/// Checks a snapshot (see the top of this file); adds what it finds to `v`.
class checker {
public:
    explicit checker(violations& v)
        : v_(v) {}

    void check(const snapshot& s, check_summary& sum) {
        sum.ledger_rows = s.ledger_rows;
        // Expected business state, from the confirmed transactions' payloads.
        std::vector<std::int64_t> balance(account_count, initial_balance);
        std::vector<std::int64_t> sold(sku_count, 0);
        std::vector<std::int64_t> points(customer_count, 0);

        for (const auto& [gid, tx] : s.journal) {
            ++sum.transactions;
            const bool tcc = tx.kind == "tcc";
            const bool confirmed = tx.status == "confirmed";
            if (confirmed) {
                ++sum.confirmed;
                ++(tcc ? sum.tcc_confirmed : sum.saga_confirmed);
            } else if (tx.status == "cancelled") {
                ++sum.cancelled;
                ++(tcc ? sum.tcc_cancelled : sum.saga_cancelled);
            } else {
                v_.add("gid " + gid + " (" + tx.kind + ") is unfinished: " + tx.status);
                continue;
            }
            const std::string_view named = kind_of_gid(gid);
            if (named != tx.kind && !(named == "plan" && tx.kind == "saga"))
                v_.add("gid " + gid + " is journaled as " + tx.kind);
            if (confirmed) {
                // Every plan has both of its kind's participants; a confirmed transaction without
                // one was decided before its body had added every branch.
                std::set<std::string> who;
                for (const auto& [bid, b] : tx.branches)
                    who.insert(b.participant);
                const std::set<std::string> need =
                    tcc ? std::set<std::string>{"accounts", "stock"}
                        : std::set<std::string>{"points", "stock-saga"};
                if (!std::includes(who.begin(), who.end(), need.begin(), need.end()))
                    v_.add("gid " + gid + " (" + tx.kind + ") is confirmed with branches at " +
                           join_names(who) + " only");
            }
            const std::string first = tcc ? "try" : "action";
            const std::string second = tcc ? (confirmed ? "confirm" : "cancel") : "compensate";
            for (const auto& [bid, b] : tx.branches) {
                auto it = s.ledger.find({gid, bid});
                const std::set<std::string> none;
                const std::set<std::string>& ops = it == s.ledger.end() ? none : it->second.ops;
                const bool elsewhere =
                    it != s.ledger.end() && (it->second.participants.size() != 1 ||
                                             *it->second.participants.begin() != b.participant);
                if (elsewhere)
                    v_.add("gid " + gid + " branch " + bid +
                           ": ledger rows in the wrong participant (journal: " + b.participant +
                           ")");
                std::set<std::string> want_a, want_b;
                if (confirmed) {
                    want_a =
                        tcc ? std::set<std::string>{first, second} : std::set<std::string>{first};
                    want_b = want_a;
                } else {
                    want_a = {};
                    want_b = {first, second};
                }
                if (ops != want_a && ops != want_b)
                    v_.add("gid " + gid + " (" + tx.kind + ", " + tx.status + ") branch " + bid +
                           " (" + b.participant + "): participant executed " + join(ops) +
                           ", expected " + join(want_a) +
                           (want_a != want_b ? " or " + join(want_b) : ""));
                if (confirmed)
                    apply(gid, bid, b, balance, sold, points);
            }
        }
        for (const auto& [key, e] : s.ledger)
            if (auto it = s.journal.find(key.first);
                it == s.journal.end() || !it->second.branches.contains(key.second))
                v_.add("gid " + key.first + " branch " + key.second + ": executed " + join(e.ops) +
                       " but the journal has no such branch");

        check_accounts(s.accounts, balance);
        check_stock(s.stock, sold);
        check_points(s.points, points);
        for (const auto& p : s.problems)
            v_.add(p);
    }

private:
    /// Operations in protocol order ("try+cancel"), or "nothing".
    static std::string join(const std::set<std::string>& s) {
        static const char* const order[] = {"try", "action", "confirm", "cancel", "compensate"};
        std::string out;
        for (const char* op : order)
            if (s.contains(op))
                out += (out.empty() ? "" : "+") + std::string(op);
        for (const auto& x : s)
            if (std::find(std::begin(order), std::end(order), x) == std::end(order))
                out += (out.empty() ? "" : "+") + x;
        return out.empty() ? "nothing" : out;
    }

    static std::string join_names(const std::set<std::string>& s) {
        std::string out;
        for (const auto& x : s)
            out += (out.empty() ? "" : ", ") + x;
        return out.empty() ? "no participant" : out;
    }

    void apply(const std::string& gid, const std::string& bid, const journal_branch& b,
               std::vector<std::int64_t>& balance, std::vector<std::int64_t>& sold,
               std::vector<std::int64_t>& points) {
        try {
            if (b.participant == "accounts") {
                auto t = b.payload.get<transfer>();
                balance.at(static_cast<std::size_t>(t.payer)) -= t.amount;
                balance.at(static_cast<std::size_t>(t.payee)) += t.amount;
            } else if (b.participant == "stock" || b.participant == "stock-saga") {
                auto i = b.payload.get<items>();
                sold.at(static_cast<std::size_t>(i.sku)) += i.qty;
            } else if (b.participant == "points") {
                auto a = b.payload.get<award>();
                points.at(static_cast<std::size_t>(a.customer)) += a.points;
            } else {
                v_.add("gid " + gid + " branch " + bid + ": unknown participant " + b.participant);
            }
        } catch (const std::exception& e) {
            v_.add("gid " + gid + " branch " + bid + ": unreadable payload: " + e.what());
        }
    }

    /// The expected value for `key`, or -1 for an unknown key (never a real value here).
    static std::int64_t expected(const std::vector<std::int64_t>& want, std::int64_t key) {
        return key >= 0 && key < static_cast<std::int64_t>(want.size())
                   ? want[static_cast<std::size_t>(key)]
                   : -1;
    }

    void check_accounts(const std::vector<snapshot::account>& rows,
                        const std::vector<std::int64_t>& want) {
        std::int64_t total = 0;
        for (const auto& a : rows) {
            total += a.balance + a.frozen;
            const std::string name = "account " + std::to_string(a.id);
            if (a.frozen != 0)
                v_.add(name + ": " + std::to_string(a.frozen) + " left frozen");
            if (a.balance != expected(want, a.id))
                v_.add(name + ": balance " + std::to_string(a.balance) +
                       ", the confirmed transfers give " + std::to_string(expected(want, a.id)));
        }
        if (rows.size() != want.size())
            v_.add("accounts: " + std::to_string(rows.size()) + " rows");
        if (total != initial_balance * account_count)
            v_.add("money is not conserved: " + std::to_string(total) + " instead of " +
                   std::to_string(initial_balance * account_count));
    }

    void check_stock(const std::vector<snapshot::shelf>& rows,
                     const std::vector<std::int64_t>& want_sold) {
        for (const auto& s : rows) {
            const std::string name = "sku " + std::to_string(s.sku);
            if (s.reserved != 0)
                v_.add(name + ": " + std::to_string(s.reserved) + " left reserved");
            if (s.available + s.reserved + s.sold != initial_stock)
                v_.add(name + ": stock is not conserved: " + std::to_string(s.available) +
                       " available + " + std::to_string(s.reserved) + " reserved + " +
                       std::to_string(s.sold) + " sold");
            if (s.sold != expected(want_sold, s.sku))
                v_.add(name + ": " + std::to_string(s.sold) + " sold, the confirmed orders give " +
                       std::to_string(expected(want_sold, s.sku)));
        }
        if (rows.size() != want_sold.size())
            v_.add("stock: " + std::to_string(rows.size()) + " rows");
    }

    void check_points(const std::vector<snapshot::customer>& rows,
                      const std::vector<std::int64_t>& want) {
        for (const auto& c : rows)
            if (c.points != expected(want, c.id))
                v_.add("customer " + std::to_string(c.id) + ": " + std::to_string(c.points) +
                       " points, the confirmed sagas give " + std::to_string(expected(want, c.id)));
        if (rows.size() != want.size())
            v_.add("points: " + std::to_string(rows.size()) + " rows");
    }

    violations& v_;
};

} // namespace dtx::crash

#endif
