#ifndef DTX_SQLITE_DB_HPP
#define DTX_SQLITE_DB_HPP

// A thin RAII layer over the SQLite C API: a connection, prepared statements, transactions, and
// errors (dtx::error) that name the database file and SQLite's own message. Participant handlers
// use it for their own tables inside the barrier's local transaction:
//
//   dtx::outcome reserve(dtx::sqlite::connection& db, const std::string& sku, int qty) {
//       db.prepare("UPDATE stock SET reserved = reserved + ?1, available = available - ?1 "
//                  "WHERE sku = ?2 AND available >= ?1")
//           .bind(qty, sku)
//           .run();
//       return db.changes() == 1 ? dtx::success() : dtx::failure("out of stock");
//   }
//
// A connection is used by one thread at a time.

#include <dtx/error.hpp>
#include <dtx/version.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <sqlite3.h>

DTX_NAMESPACE_BEGIN
namespace sqlite {

/// The dtx error code for a SQLite result code.
inline errc classify(int rc) noexcept {
    switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return errc::journal_corrupt;
    default:
        return errc::journal_failed;
    }
}

class statement;

class connection {
public:
    /// Opens (creating if needed) the database at `path`.
    explicit connection(const std::string& path)
        : path_(path) {
        int rc = sqlite3_open_v2(path.c_str(), &db_,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
        if (rc != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw error(classify(rc), "cannot open " + path + ": " + msg);
        }
        sqlite3_extended_result_codes(db_, 1);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { sqlite3_close_v2(db_); }

    sqlite3* get() const noexcept { return db_; }
    const std::string& path() const noexcept { return path_; }

    /// Throws dtx::error for a failed result code, naming the file and what was being done.
    void check(int rc, std::string_view what) const {
        if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW)
            return;
        throw error(classify(rc), path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_) +
                                      " (" + sqlite3_errstr(rc) + ")");
    }

    /// Runs one or more statements that return no rows.
    void exec(const char* sql) { check(sqlite3_exec(db_, sql, nullptr, nullptr, nullptr), sql); }

    int changes() const noexcept { return sqlite3_changes(db_); }

    /// A prepared statement for `sql`, prepared on first use and kept with the connection.
    statement& prepare(std::string_view sql);

    /// Resets every statement of the connection. A statement left in the middle of its rows keeps
    /// a read transaction open, which stops checkpoints from ever restarting the WAL.
    void reset_statements() noexcept {
        for (sqlite3_stmt* st = sqlite3_next_stmt(db_, nullptr); st;
             st = sqlite3_next_stmt(db_, st))
            sqlite3_reset(st);
    }

private:
    std::string path_;
    sqlite3* db_ = nullptr;
    std::unordered_map<std::string, std::unique_ptr<statement>>
        cache_; // declared after db_: finalized first
};

class statement {
public:
    statement(connection& c, const char* sql)
        : c_(&c) {
        c.check(sqlite3_prepare_v3(c.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &st_, nullptr),
                sql);
    }
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;
    ~statement() { sqlite3_finalize(st_); }

    /// Resets the statement and binds the arguments (1-based, in order).
    template <class... Args>
    statement& bind(const Args&... args) {
        sqlite3_reset(st_);
        sqlite3_clear_bindings(st_);
        int i = 0;
        (bind_one(++i, args), ...);
        return *this;
    }

    /// Steps once: true if a row is available.
    bool step() {
        int rc = sqlite3_step(st_);
        if (rc == SQLITE_ROW)
            return true;
        if (rc == SQLITE_DONE)
            return false;
        sqlite3_reset(st_);
        c_->check(rc, sqlite3_sql(st_));
        return false;
    }

    /// Steps to completion, for statements that return no rows.
    void run() {
        while (step()) {
        }
    }

    std::int64_t integer(int col) const { return sqlite3_column_int64(st_, col); }
    bool is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }
    std::string_view text(int col) const {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, col));
        return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(st_, col)))
                 : std::string_view();
    }

private:
    void bind_one(int i, std::int64_t v) { c_->check(sqlite3_bind_int64(st_, i, v), "bind"); }
    void bind_one(int i, int v) { bind_one(i, static_cast<std::int64_t>(v)); }
    void bind_one(int i, bool v) { bind_one(i, static_cast<std::int64_t>(v)); }
    void bind_one(int i, std::string_view v) {
        c_->check(sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT),
                  "bind");
    }
    void bind_one(int i, const std::string& v) { bind_one(i, std::string_view(v)); }
    void bind_one(int i, const char* v) { bind_one(i, std::string_view(v)); }
    void bind_one(int i, std::nullptr_t) { c_->check(sqlite3_bind_null(st_, i), "bind"); }
    template <class T>
    void bind_one(int i, const std::optional<T>& v) {
        if (v)
            bind_one(i, *v);
        else
            bind_one(i, nullptr);
    }

    connection* c_;
    sqlite3_stmt* st_ = nullptr;
};

inline statement& connection::prepare(std::string_view sql) {
    auto it = cache_.find(std::string(sql));
    if (it == cache_.end()) {
        std::string key(sql);
        auto st = std::make_unique<statement>(*this, key.c_str());
        it = cache_.emplace(std::move(key), std::move(st)).first;
    }
    return *it->second;
}

/// BEGIN ... COMMIT, rolled back if not committed. `immediate` takes the write lock at once, so
/// two writers never deadlock upgrading a read lock.
class transaction {
public:
    explicit transaction(connection& c, bool immediate = true)
        : c_(c) {
        c_.exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN");
    }
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;
    ~transaction() {
        if (open_)
            sqlite3_exec(c_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    void commit() {
        c_.exec("COMMIT");
        open_ = false;
    }

private:
    connection& c_;
    bool open_ = true;
};

} // namespace sqlite
DTX_NAMESPACE_END

#endif
