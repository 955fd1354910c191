#ifndef DTX_POSTGRES_CONNECTION_HPP
#define DTX_POSTGRES_CONNECTION_HPP

// A thin RAII layer over libpq: a connection used by one thread, statements with text
// parameters (prepared once per session if asked), transactions, and errors (dtx::error) that
// carry the server's message and SQLSTATE. Participant handlers use it for their own tables
// inside the PostgreSQL barrier's local transaction:
//
//   dtx::outcome reserve(dtx::postgres::connection& db, const std::string& sku, int qty) {
//       auto r = db.exec("UPDATE stock SET available = available - $1::int "
//                        "WHERE sku = $2 AND available >= $1::int",
//                        {std::to_string(qty), sku});
//       return r.affected() == 1 ? dtx::success() : dtx::failure("out of stock");
//   }

#include <dtx/detail/storage.hpp>
#include <dtx/error.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <libpq-fe.h>

DTX_NAMESPACE_BEGIN
namespace postgres {

/// A libpq connection used by one thread. Errors are dtx::error naming the server's message,
/// with errc::database_failed for a participant's database, errc::journal_failed for the
/// journal's.
class connection {
public:
    explicit connection(std::string conninfo, storage_role role = storage_role::participant)
        : conninfo_(std::move(conninfo))
        , role_(role) {
        connect();
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { PQfinish(conn_); }

    class result {
    public:
        explicit result(PGresult* r)
            : r_(r) {}
        result(result&& o) noexcept
            : r_(std::exchange(o.r_, nullptr)) {}
        result(const result&) = delete;
        result& operator=(const result&) = delete;
        ~result() { PQclear(r_); }
        int rows() const { return PQntuples(r_); }
        bool is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
        PGresult* raw() const noexcept { return r_; }
        /// Rows changed by an INSERT, UPDATE or DELETE.
        int affected() const { return std::atoi(PQcmdTuples(r_)); }
        std::int64_t integer(int row, int col) const {
            return std::strtoll(PQgetvalue(r_, row, col), nullptr, 10);
        }
        std::string_view text(int row, int col) const {
            return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
        }

    private:
        PGresult* r_;
    };

    /// Runs one statement with text parameters; throws dtx::error on failure.
    result exec(const char* sql, std::initializer_list<std::string_view> params = {}) {
        const text_params p(params);
        result r(PQexecParams(conn_, sql, p.count(), nullptr, p.values(), nullptr, nullptr, 0));
        check(r);
        return r;
    }

    /// Runs `sql` as a statement prepared on this connection under `name`: parsed and planned
    /// once per session instead of on every call. When the server no longer knows the statement
    /// (SQLSTATE 26000: DEALLOCATE ran, or a pooler in transaction mode handed the session to
    /// another client and back), it is prepared again and run again, once, outside a
    /// transaction block only (there the error has aborted the transaction); if it cannot be
    /// prepared because the name is taken (42P05: a pooled session holds another client's
    /// statement), this connection runs its statements unprepared from then on. Throws
    /// dtx::error on failure.
    result exec_prepared(const char* name, const char* sql,
                         std::initializer_list<std::string_view> params = {}) {
        const text_params p(params);
        for (int attempt = 0; attempt < 2 && prepare_; ++attempt) {
            if (!prepared(name) && !prepare(name, sql, p.count()))
                break;
            result r(PQexecPrepared(conn_, name, p.count(), p.values(), nullptr, nullptr, 0));
            if (succeeded(r))
                return r;
            if (sqlstate(r) != "26000")
                check(r);
            std::erase(prepared_, name);
            ++lost_statements_;
            if (PQtransactionStatus(conn_) != PQTRANS_IDLE)
                check(r);
        }
        result r(PQexecParams(conn_, sql, p.count(), nullptr, p.values(), nullptr, nullptr, 0));
        check(r);
        return r;
    }

    /// Whether exec_prepared() prepares statements (true unless set off, or a name was taken).
    bool prepares() const noexcept { return prepare_; }
    void set_prepares(bool on) noexcept { prepare_ = on; }
    /// Prepared statements the server had lost (SQLSTATE 26000) when they were run.
    std::uint64_t lost_statements() const noexcept { return lost_statements_; }

    /// Re-establishes a lost connection; true if it had to.
    bool ensure() {
        if (PQstatus(conn_) == CONNECTION_OK)
            return false;
        PQreset(conn_);
        prepared_.clear(); // a new session
        if (PQstatus(conn_) != CONNECTION_OK)
            throw failure("cannot reconnect: " + std::string(PQerrorMessage(conn_)));
        return true;
    }

    storage_role role() const noexcept { return role_; }
    PGconn* get() const noexcept { return conn_; }
    /// True while a transaction block is open (BEGIN without COMMIT or ROLLBACK yet).
    bool in_transaction() const { return PQtransactionStatus(conn_) != PQTRANS_IDLE; }

    /// Calls `fn` once the transaction open on this connection commits through
    /// postgres::transaction; forgotten if it rolls back. A second call with the same `tag` in
    /// one transaction replaces the first (the outbox wakes its relay once per commit).
    void after_commit(const void* tag, std::function<void()> fn) {
        for (auto& [t, f] : after_commit_)
            if (t == tag) {
                f = std::move(fn);
                return;
            }
        after_commit_.emplace_back(tag, std::move(fn));
    }
    /// Runs (committed) or drops the functions of after_commit().
    void transaction_ended(bool committed) {
        auto fns = std::move(after_commit_);
        after_commit_.clear();
        if (committed)
            for (auto& entry : fns)
                entry.second();
    }

    /// A dtx::error of this database's kind (`code` as for the journal: journal_failed,
    /// journal_corrupt, journal_version), its message starting "PostgreSQL: ".
    error failure(const std::string& what, errc code = errc::journal_failed) const {
        return error(storage_errc(role_, code), "PostgreSQL: " + what);
    }

private:
    /// Parameters as NUL-terminated copies, for libpq.
    class text_params {
    public:
        explicit text_params(std::initializer_list<std::string_view> params)
            : owned_(params.begin(), params.end()) {
            values_.reserve(owned_.size());
            for (auto& p : owned_)
                values_.push_back(p.c_str());
        }
        int count() const noexcept { return static_cast<int>(values_.size()); }
        const char* const* values() const noexcept { return values_.data(); }

    private:
        std::vector<std::string> owned_;
        std::vector<const char*> values_;
    };

    static bool succeeded(const result& r) {
        const auto status = PQresultStatus(r.raw());
        return status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
    }
    static std::string_view sqlstate(const result& r) {
        const char* state = PQresultErrorField(r.raw(), PG_DIAG_SQLSTATE);
        return state ? state : "";
    }
    void check(const result& r) const {
        if (succeeded(r))
            return;
        const auto state = sqlstate(r);
        throw failure(std::string(PQerrorMessage(conn_)) +
                      (state.empty() ? "" : " (SQLSTATE " + std::string(state) + ")"));
    }

    bool prepared(const char* name) const {
        return std::find(prepared_.begin(), prepared_.end(), name) != prepared_.end();
    }
    /// Prepares `sql` as `name`; false if the name is taken in this session by a statement this
    /// connection did not prepare (it then stops preparing).
    bool prepare(const char* name, const char* sql, int params) {
        result r(PQprepare(conn_, name, sql, params, nullptr));
        if (succeeded(r)) {
            prepared_.emplace_back(name);
            return true;
        }
        if (sqlstate(r) != "42P05" || PQtransactionStatus(conn_) != PQTRANS_IDLE)
            check(r);
        prepare_ = false;
        return false;
    }

    void connect() {
        conn_ = PQconnectdb(conninfo_.c_str());
        if (PQstatus(conn_) != CONNECTION_OK) {
            std::string msg = PQerrorMessage(conn_);
            PQfinish(conn_);
            conn_ = nullptr;
            throw failure("cannot connect: " + msg);
        }
        // Server notices ("already exists, skipping") are not errors: keep them off stderr.
        PQsetNoticeProcessor(
            conn_, [](void*, const char*) {}, nullptr);
    }

    std::string conninfo_;
    storage_role role_;
    PGconn* conn_ = nullptr;
    std::vector<std::string> prepared_; // names prepared in this session (a few)
    std::vector<std::pair<const void*, std::function<void()>>> after_commit_;
    bool prepare_ = true;
    std::uint64_t lost_statements_ = 0;
};

/// BEGIN ... COMMIT, rolled back if not committed (by an exception). What was registered with
/// connection::after_commit() runs after the commit.
class transaction {
public:
    explicit transaction(connection& c)
        : c_(c)
        , scope_(c) {}
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;
    ~transaction() {
        if (open_)
            c_.transaction_ended(false);
    }
    void commit() {
        scope_.commit();
        open_ = false;
        c_.transaction_ended(true);
    }

private:
    connection& c_;
    detail::transaction_scope<connection> scope_;
    bool open_ = true;
};

} // namespace postgres
DTX_NAMESPACE_END

#endif
