#ifndef DTX_ERROR_HPP
#define DTX_ERROR_HPP

// Error codes of dtx and their category.
//
// A protocol answer (success, failure, pending) is a value, `dtx::outcome`; the codes here say why
// a transaction was cancelled, why a call's result is unknown, why the journal refused a write, or
// why a participant's database (under the barrier) failed.
// Errors that escape to the caller are `dtx::error` exceptions carrying one of these codes and a
// message that names the gid and branch involved.

#include <dtx/version.hpp>

#include <stdexcept>
#include <string>
#include <system_error>

DTX_NAMESPACE_BEGIN

enum class errc {
    branch_failed = 1,      ///< a try or saga action answered `failure`
    branch_timed_out,       ///< a branch call did not answer within its timeout
    branch_error,           ///< a branch call threw or its transport failed: result unknown
    body_threw,             ///< the transaction body threw an exception
    deadline_exceeded,      ///< the transaction's deadline passed before it could be decided
    unknown_participant,    ///< no participant is registered under that name
    wrong_participant_kind, ///< a TCC branch names a saga participant, or the reverse
    decision_conflict,      ///< the journal holds another decision (recovery elsewhere took over)
    duplicate_gid,          ///< the journal already holds a transaction with this gid
    unknown_transaction,    ///< the journal holds no transaction with this gid
    attempts_exhausted,     ///< phase 2 stopped at its attempt limit; recovery will finish it
    journal_failed,         ///< the journal could not make a write durable
    journal_corrupt,        ///< the journal holds records dtx cannot read
    journal_version,        ///< the journal was written by a newer, incompatible dtx
    transaction_aborted,    ///< the transaction is already being cancelled; no branch may be added
    coordinator_stopped,    ///< the coordinator was stopped
    database_failed,  ///< a participant's database (under the barrier) refused a statement or is
                      ///< lost
    database_corrupt, ///< a participant's database holds records dtx cannot read
    database_version, ///< the barrier's tables were written by a newer, incompatible dtx
};

/// Whose data a database connection holds, which decides the codes of its errors: the journal's
/// (errc::journal_failed, journal_corrupt, journal_version) or a participant's own, where the
/// barrier keeps its rows (errc::database_failed, database_corrupt, database_version).
enum class storage_role { journal, participant };

/// `code`, a journal_* code, as it reads for a database of `role`.
constexpr errc storage_errc(storage_role role, errc code) noexcept {
    if (role == storage_role::journal)
        return code;
    switch (code) {
    case errc::journal_failed:
        return errc::database_failed;
    case errc::journal_corrupt:
        return errc::database_corrupt;
    case errc::journal_version:
        return errc::database_version;
    default:
        return code;
    }
}

/// The category of `dtx::errc`; its name is "dtx".
inline const std::error_category& error_category() noexcept {
    struct category final : std::error_category {
        const char* name() const noexcept override { return "dtx"; }
        std::string message(int ev) const override {
            switch (static_cast<errc>(ev)) {
            case errc::branch_failed:
                return "branch failed";
            case errc::branch_timed_out:
                return "branch call timed out";
            case errc::branch_error:
                return "branch call failed with an unknown result";
            case errc::body_threw:
                return "transaction body threw";
            case errc::deadline_exceeded:
                return "transaction deadline exceeded";
            case errc::unknown_participant:
                return "unknown participant";
            case errc::wrong_participant_kind:
                return "participant is of the wrong kind";
            case errc::decision_conflict:
                return "journal holds a conflicting decision";
            case errc::duplicate_gid:
                return "duplicate gid";
            case errc::unknown_transaction:
                return "unknown transaction";
            case errc::attempts_exhausted:
                return "retry attempts exhausted";
            case errc::journal_failed:
                return "journal write failed";
            case errc::journal_corrupt:
                return "journal is corrupt";
            case errc::journal_version:
                return "journal version is not supported";
            case errc::transaction_aborted:
                return "transaction is aborted";
            case errc::coordinator_stopped:
                return "coordinator stopped";
            case errc::database_failed:
                return "database operation failed";
            case errc::database_corrupt:
                return "database is corrupt";
            case errc::database_version:
                return "database schema version is not supported";
            }
            return "unknown dtx error";
        }
    };
    static const category instance;
    return instance;
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

/// The exception dtx throws: a code from `dtx::errc` (or another category) and a message that
/// names the gid and, where one is involved, the branch.
class error : public std::system_error {
public:
    error(std::error_code ec, const std::string& what)
        : std::system_error(ec, what) {}
    error(errc e, const std::string& what)
        : std::system_error(make_error_code(e), what) {}
};

DTX_NAMESPACE_END

template <>
struct std::is_error_code_enum<dtx::errc> : std::true_type {};

#endif
