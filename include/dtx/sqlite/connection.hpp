#ifndef DTX_SQLITE_CONNECTION_HPP
#define DTX_SQLITE_CONNECTION_HPP

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
// Statements bind every SQLite type: any integer type (an unsigned value above INT64_MAX is an
// error, never a wrap), float and double, text (std::string_view, std::string, const char*),
// blobs (std::span<const std::byte>), and null (nullptr, std::nullopt, an empty std::optional).
// Columns read as integer(), real(), text() and blob(), and is_null() tells a NULL.
//
// A connection is used by one thread at a time. Its errors carry errc::database_failed (or
// database_corrupt) for a participant's database, errc::journal_* for the journal's.

#include <dtx/detail/storage.hpp>
#include <dtx/error.hpp>
#include <dtx/version.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <sqlite3.h>

DTX_NAMESPACE_BEGIN
namespace sqlite {

/// The dtx error code for a SQLite result code, for a database of `role`.
inline errc classify(int rc, storage_role role = storage_role::participant) noexcept {
    switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return storage_errc(role, errc::journal_corrupt);
    default:
        return storage_errc(role, errc::journal_failed);
    }
}

class statement;

class connection {
public:
    /// Opens (creating if needed) the database at `path`, which holds data of `role` (the codes
    /// of its errors).
    explicit connection(const std::string& path, storage_role role = storage_role::participant)
        : path_(path)
        , role_(role) {
        int rc = sqlite3_open_v2(path.c_str(), &db_,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
        if (rc != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw error(classify(rc, role), "cannot open " + path + ": " + msg);
        }
        sqlite3_extended_result_codes(db_, 1);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { sqlite3_close_v2(db_); }

    sqlite3* get() const noexcept { return db_; }
    const std::string& path() const noexcept { return path_; }
    storage_role role() const noexcept { return role_; }

    /// Throws dtx::error for a failed result code, naming the file and what was being done.
    void check(int rc, std::string_view what) const {
        if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW)
            return;
        throw error(classify(rc, role_), path_ + ": " + std::string(what) + ": " +
                                             sqlite3_errmsg(db_) + " (" + sqlite3_errstr(rc) + ")");
    }

    /// A dtx::error of this database's kind (`code` as for the journal: journal_failed,
    /// journal_corrupt, journal_version) whose message names the file.
    error failure(errc code, std::string_view what) const {
        return error(storage_errc(role_, code), path_ + ": " + std::string(what));
    }

    /// How long a statement waits for a lock held by another connection before it fails.
    void set_busy_timeout(std::chrono::milliseconds timeout) {
        check(sqlite3_busy_timeout(db_, static_cast<int>(timeout.count())), "busy_timeout");
    }

    /// Switches to WAL mode with synchronous FULL (a commit survives power loss) or NORMAL (it
    /// survives a crash of the process); throws if the file cannot be in WAL mode.
    void use_wal(bool synchronous_full);

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
    storage_role role_;
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

    /// The columns of the current row (0-based), as SQLite converts them: NULL reads as 0, an
    /// empty text or an empty blob. Text and blobs stay valid until the next step or bind.
    std::int64_t integer(int col) const { return sqlite3_column_int64(st_, col); }
    double real(int col) const { return sqlite3_column_double(st_, col); }
    bool is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }
    std::string_view text(int col) const {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, col));
        return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(st_, col)))
                 : std::string_view();
    }
    std::span<const std::byte> blob(int col) const {
        const auto* p = static_cast<const std::byte*>(sqlite3_column_blob(st_, col));
        return p ? std::span<const std::byte>(
                       p, static_cast<std::size_t>(sqlite3_column_bytes(st_, col)))
                 : std::span<const std::byte>();
    }

private:
    template <std::integral I>
    void bind_one(int i, I v) {
        if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t)) {
            if (v > static_cast<std::make_unsigned_t<std::int64_t>>(
                        std::numeric_limits<std::int64_t>::max()))
                throw c_->failure(errc::journal_failed, "bind: parameter " + std::to_string(i) +
                                                            " (" + std::to_string(v) +
                                                            ") is larger than a SQLite integer");
        }
        c_->check(sqlite3_bind_int64(st_, i, static_cast<std::int64_t>(v)), "bind");
    }
    template <std::floating_point F>
    void bind_one(int i, F v) {
        c_->check(sqlite3_bind_double(st_, i, static_cast<double>(v)), "bind");
    }
    void bind_one(int i, std::string_view v) {
        // A null pointer would bind NULL: an empty view is bound as an empty text.
        c_->check(sqlite3_bind_text64(st_, i, v.data() ? v.data() : "", v.size(), SQLITE_TRANSIENT,
                                      SQLITE_UTF8),
                  "bind");
    }
    void bind_one(int i, const std::string& v) { bind_one(i, std::string_view(v)); }
    void bind_one(int i, const char* v) { bind_one(i, std::string_view(v)); }
    void bind_one(int i, std::span<const std::byte> v) {
        // A null pointer would bind NULL: an empty blob is bound as zero bytes of a blob.
        c_->check(v.empty() ? sqlite3_bind_zeroblob(st_, i, 0)
                            : sqlite3_bind_blob64(st_, i, v.data(), v.size(), SQLITE_TRANSIENT),
                  "bind");
    }
    void bind_one(int i, std::nullptr_t) { c_->check(sqlite3_bind_null(st_, i), "bind"); }
    void bind_one(int i, std::nullopt_t) { bind_one(i, nullptr); }
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

inline void connection::use_wal(bool synchronous_full) {
    {
        statement wal(*this, "PRAGMA journal_mode=WAL");
        if (!wal.step() || wal.text(0) != "wal")
            throw failure(errc::journal_failed, "cannot switch to WAL mode");
    }
    exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
}

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
class transaction : public detail::transaction_scope<connection> {
public:
    explicit transaction(connection& c, bool immediate = true)
        : transaction_scope(c, immediate ? "BEGIN IMMEDIATE" : "BEGIN") {}
};

} // namespace sqlite
DTX_NAMESPACE_END

#endif
