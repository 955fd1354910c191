#ifndef DTX_POSTGRES_DB_HPP
#define DTX_POSTGRES_DB_HPP

// A thin RAII layer over libpq: a connection used by one thread, statements with text
// parameters, and errors (dtx::error) that carry the server's message and SQLSTATE. Participant
// handlers use it for their own tables inside the PostgreSQL barrier's local transaction:
//
//   auto r = db.exec("UPDATE stock SET available = available - $1::int WHERE sku = $2 AND available >= $1::int",
//                    {std::to_string(qty), sku});
//   if (r.affected() == 0) return dtx::failure("out of stock");

#include <cstdlib>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include <dtx/error.hpp>

namespace dtx::postgres {

/// A libpq connection used by one thread. Errors are dtx::error (journal_failed) naming the
/// server's message.
class connection {
public:
    explicit connection(std::string conninfo) : conninfo_(std::move(conninfo)) { connect(); }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { PQfinish(conn_); }

    class result {
    public:
        explicit result(PGresult* r) : r_(r) {}
        result(result&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
        result(const result&) = delete;
        result& operator=(const result&) = delete;
        ~result() { PQclear(r_); }
        int rows() const { return PQntuples(r_); }
        bool is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
        PGresult* raw() const noexcept { return r_; }
        /// Rows changed by an INSERT, UPDATE or DELETE.
        int affected() const { return std::atoi(PQcmdTuples(r_)); }
        std::string_view text(int row, int col) const {
            return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
        }

    private:
        PGresult* r_;
    };

    /// Runs one statement with text parameters; throws dtx::error on failure.
    result exec(const char* sql, std::initializer_list<std::string_view> params = {}) {
        std::vector<std::string> owned(params.begin(), params.end()); // NUL-terminated copies
        std::vector<const char*> values;
        values.reserve(owned.size());
        for (auto& p : owned) values.push_back(p.c_str());
        result r(PQexecParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0));
        const auto status = PQresultStatus(r.raw());
        if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
            const char* state = PQresultErrorField(r.raw(), PG_DIAG_SQLSTATE);
            throw error(errc::journal_failed, "PostgreSQL: " + std::string(PQerrorMessage(conn_)) +
                                                  (state ? " (SQLSTATE " + std::string(state) + ")" : ""));
        }
        return r;
    }

    /// Re-establishes a lost connection; true if it had to.
    bool ensure() {
        if (PQstatus(conn_) == CONNECTION_OK) return false;
        PQreset(conn_);
        if (PQstatus(conn_) != CONNECTION_OK)
            throw error(errc::journal_failed, "PostgreSQL: cannot reconnect: " + std::string(PQerrorMessage(conn_)));
        return true;
    }

private:
    void connect() {
        conn_ = PQconnectdb(conninfo_.c_str());
        if (PQstatus(conn_) != CONNECTION_OK) {
            std::string msg = PQerrorMessage(conn_);
            PQfinish(conn_);
            conn_ = nullptr;
            throw error(errc::journal_failed, "PostgreSQL: cannot connect: " + msg);
        }
        // Server notices ("already exists, skipping") are not errors: keep them off stderr.
        PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
    }

    std::string conninfo_;
    PGconn* conn_ = nullptr;
};


} // namespace dtx::postgres

#endif
