#ifndef DTX_DETAIL_STORAGE_HPP
#define DTX_DETAIL_STORAGE_HPP

// What the journals and barriers of every database share: times as stored (milliseconds since
// the epoch), the refusal of a schema written by a newer dtx, the batched cleanup of old rows, and
// transactions rolled back unless committed.

#include <dtx/error.hpp>
#include <dtx/version.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

DTX_NAMESPACE_BEGIN
namespace detail {

/// A wall-clock time as the databases store it: milliseconds since the epoch.
inline std::int64_t to_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

inline std::chrono::system_clock::time_point from_ms(std::int64_t ms) {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::milliseconds(ms)));
}

/// The error for a schema (of `what`: "orders.db: journal", "PostgreSQL barrier") at `version`
/// when this dtx reads versions up to `supported`.
inline error newer_schema(storage_role role, const std::string& what, int version, int supported) {
    return error(storage_errc(role, errc::journal_version),
                 what + " schema version " + std::to_string(version) +
                     " is newer than this dtx reads (" + std::to_string(supported) +
                     "); upgrade dtx");
}

/// Brings a set of versioned tables (a participant database's barrier, outbox or inbox tables,
/// whatever the database) from version `stored` to `latest`: `migrate(stored)` then
/// `set_version()` when older, nothing when current; a newer version (written by a newer dtx) is
/// refused with newer_schema(). Runs inside the caller's transaction.
template <class Migrate, class SetVersion>
void bring_to_version(storage_role role, const std::string& what, int stored, int latest,
                      Migrate migrate, SetVersion set_version) {
    if (stored > latest)
        throw newer_schema(role, what, stored, latest);
    if (stored < latest) {
        migrate(stored);
        set_version();
    }
}

/// Deletes old rows a batch at a time, each batch in a database transaction of its own:
/// `delete_batch()` deletes at most `batch` rows and returns how many it deleted. Stops at a
/// batch that was not full, or when `give_way()` says other work is waiting.
template <class DeleteBatch, class GiveWay>
void delete_in_batches(std::size_t batch, DeleteBatch delete_batch, GiveWay give_way) {
    for (;;) {
        const std::size_t deleted = delete_batch();
        if (deleted < batch || give_way())
            break;
    }
}

/// BEGIN ... COMMIT on a connection of any database (one with `exec(const char*)`), rolled back
/// unless committed.
template <class Connection>
class transaction_scope {
public:
    explicit transaction_scope(Connection& c, const char* begin = "BEGIN")
        : c_(c) {
        c_.exec(begin);
    }
    transaction_scope(const transaction_scope&) = delete;
    transaction_scope& operator=(const transaction_scope&) = delete;
    ~transaction_scope() {
        if (!open_)
            return;
        try {
            c_.exec("ROLLBACK");
        } catch (...) { // a lost connection, or a transaction the database already rolled back
        }
    }
    void commit() {
        c_.exec("COMMIT");
        open_ = false;
    }

private:
    Connection& c_;
    bool open_ = true;
};

} // namespace detail
DTX_NAMESPACE_END

#endif
