#ifndef DTX_TESTS_CRASH_SQLITE_DATA_HPP
#define DTX_TESTS_CRASH_SQLITE_DATA_HPP

// The data directory of the SQLite crash tests (file names in crash_common.hpp): creating the
// participants' databases, and reading what the processes left into a snapshot for the
// invariants (invariants.hpp).

#include <dtx/sqlite/connection.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "crash_common.hpp"
#include "invariants.hpp"

namespace dtx::crash {

/// Creates the participants' databases in `dir` (created too if missing), with their initial rows.
inline void create_participant_databases(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    for (const auto& [file, schema] :
         {std::pair{accounts_file, accounts_schema()}, std::pair{stock_file, stock_schema()},
          std::pair{points_file, points_schema()}}) {
        sqlite::connection db((dir / file).string());
        sqlite::transaction tx(db);
        for (const auto& sql : schema)
            db.exec(sql.c_str());
        tx.commit();
    }
}

/// The participant a journal names: its name, or the last segment of its URL
/// ("http://127.0.0.1:8081/dtx/accounts" is "accounts").
inline std::string participant_name(std::string_view journaled) {
    if (journaled.find("://") == std::string_view::npos)
        return std::string(journaled);
    return std::string(journaled.substr(journaled.rfind('/') + 1));
}

/// Opens a database for reading only (no process writes it while the driver reads).
struct reader {
    sqlite::connection db;
    explicit reader(const std::filesystem::path& p)
        : db(p.string()) {
        db.exec("PRAGMA query_only = 1");
    }
};

/// The number of transactions in the journal (while a coordinator may be writing it).
inline long journaled_transactions(const std::filesystem::path& dir) {
    reader r(dir / journal_file);
    auto& st = r.db.prepare("SELECT count(*) FROM dtx_transaction");
    st.bind();
    return st.step() ? static_cast<long>(st.integer(0)) : 0;
}

inline snapshot read_snapshot(const std::filesystem::path& dir) {
    snapshot s;
    {
        reader r(dir / journal_file);
        auto& txs = r.db.prepare("SELECT gid, kind, status FROM dtx_transaction");
        txs.bind();
        while (txs.step())
            s.journal[std::string(txs.text(0))] =
                journal_tx{std::string(txs.text(1)), std::string(txs.text(2)), {}};
        auto& brs = r.db.prepare("SELECT gid, branch_id, participant, payload FROM dtx_branch");
        brs.bind();
        while (brs.step())
            s.journal[std::string(brs.text(0))].branches[std::string(brs.text(1))] =
                journal_branch{participant_name(brs.text(2)), nlohmann::json::parse(brs.text(3))};
    }
    for (const char* file : {accounts_file, stock_file, points_file}) {
        reader r(dir / file);
        auto& st = r.db.prepare("SELECT gid, branch_id, op, participant FROM applied");
        st.bind();
        while (st.step())
            s.add_ledger_row(std::string(st.text(0)), std::string(st.text(1)),
                             std::string(st.text(2)), std::string(st.text(3)));
        auto& an = r.db.prepare("SELECT gid, branch_id, op, what FROM anomalies");
        an.bind();
        while (an.step())
            s.problems.push_back(std::string(file) + ": gid " + std::string(an.text(0)) +
                                 " branch " + std::string(an.text(1)) + " " +
                                 std::string(an.text(2)) + ": " + std::string(an.text(3)));
        auto& br = r.db.prepare("SELECT count(*) FROM dtx_barrier WHERE state <> 'done'");
        br.bind();
        if (br.step() && br.integer(0) != 0)
            s.problems.push_back(std::string(file) + ": " + std::to_string(br.integer(0)) +
                                 " barrier rows not done");
    }
    {
        reader r(dir / accounts_file);
        auto& st = r.db.prepare("SELECT id, balance, frozen FROM accounts ORDER BY id");
        st.bind();
        while (st.step())
            s.accounts.push_back({st.integer(0), st.integer(1), st.integer(2)});
    }
    {
        reader r(dir / stock_file);
        auto& st = r.db.prepare("SELECT sku, available, reserved, sold FROM stock ORDER BY sku");
        st.bind();
        while (st.step())
            s.stock.push_back({st.integer(0), st.integer(1), st.integer(2), st.integer(3)});
    }
    {
        reader r(dir / points_file);
        auto& st = r.db.prepare("SELECT customer, total FROM points ORDER BY customer");
        st.bind();
        while (st.step())
            s.points.push_back({st.integer(0), st.integer(1)});
    }
    return s;
}

} // namespace dtx::crash

#endif
