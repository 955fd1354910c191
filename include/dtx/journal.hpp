#ifndef DTX_JOURNAL_HPP
#define DTX_JOURNAL_HPP

// The journal: the coordinator's write-ahead log of global transactions and their branches.
//
// Every write concerns one transaction and is applied atomically. The coordinator follows these
// rules (docs/journal.md has the full state machine):
//   - a transaction and its first branches are written before any branch call is sent;
//   - a branch is written before its try (or action) is sent;
//   - a confirm decision is durable before the first confirm is sent;
//   - the end is written lazily: repeating phase 2 is harmless, participants are idempotent.
//
// Writes are asynchronous so that durable journals can group-commit: many transactions' writes
// share one storage transaction and one fsync. A `lazy` write may complete before it is durable;
// the journal makes it durable with the next sync write or flush, in order.
//
// Status changes are conditional (compare-and-set on the current status), so two coordinators can
// never record opposite decisions for one transaction: the second write is refused.

#include <dtx/detail/config.hpp>
#include <dtx/payload.hpp>
#include <dtx/transaction_status.hpp>
#include <dtx/version.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

DTX_NAMESPACE_BEGIN

/// Version of the record layout described in docs/journal.md: what every journal holds, whatever
/// its storage. Durable journals do not store it: each stores the version of its own schema, a new
/// one with every change of this layout (and with a change of storage alone), and refuses a
/// journal whose schema is newer than it knows.
inline constexpr int journal_format_version = 3; // 3: kind `msg` (2-phase messages)

using wall_clock = std::chrono::system_clock;

struct branch_record {
    std::string branch_id;
    /// A registered participant name, or a URL the registry's resolver understands.
    std::string participant;
    dtx::payload payload;
    /// Phase 2 (confirm, cancel or compensate) has succeeded for this branch.
    bool done = false;
};

struct transaction_record {
    std::string gid;
    tx_kind kind = tx_kind::tcc;
    tx_status status = tx_status::trying;
    /// While `trying`, the transaction is presumed abandoned after this instant and recovery
    /// cancels it (or, if `forward`, finishes it).
    wall_clock::time_point deadline;
    /// Recovered forward: every branch was registered up front, and recovery finds a `trying`
    /// transaction by sending the actions not yet known to have succeeded, compensating only if
    /// one fails (a saga of planned steps), or (kind `msg`, a 2-phase message) by asking its
    /// check-back, branch "00". Otherwise a `trying` transaction is presumed aborted.
    bool forward = false;
    /// Branches in registration order.
    std::vector<branch_record> branches;
};

/// Begins a transaction (status `trying`). Must be the first write for a gid.
struct begin_transaction {
    tx_kind kind = tx_kind::tcc;
    wall_clock::time_point deadline;
    bool forward = false; ///< see transaction_record::forward
};

/// Moves the status from `from` to `to`; the whole write is refused if the status is not `from`.
struct status_change {
    tx_status from;
    tx_status to;
};

/// Leases the transaction to `owner` until `until`: while the lease runs, no other coordinator
/// claims it. Conditional: the whole write is refused if another owner holds the transaction
/// (its lease was taken over after it had expired).
struct lease_change {
    std::string_view owner{};
    wall_clock::time_point until{};
};

/// One atomic change to one transaction. Views and spans must stay valid until `write` completes;
/// a journal copies what it keeps.
struct journal_write {
    std::string_view gid{};
    std::optional<begin_transaction> begin{};
    std::span<const branch_record> new_branches{};
    std::optional<status_change> status{};
    std::span<const std::string> done_branches{};
    std::optional<lease_change> lease{};
};

enum class durability {
    sync, ///< complete only when durable
    lazy, ///< may complete at once; made durable, in order, with a later write
};

/// Which unfinished transactions recovery wants: those decided (confirming, cancelling) and
/// those still trying past their deadline, not leased to anyone until after `now`.
struct claim_request {
    wall_clock::time_point now{};
    std::string_view owner{};
    std::chrono::milliseconds lease{30'000};
    std::size_t limit = 100;
    /// Claim every unfinished transaction, whatever its deadline and lease: the caller knows it
    /// is the journal's only coordinator (see recovery_options::take_over).
    bool take_over = false;
};

class journal {
public:
    virtual ~journal() = default;

    /// Applies `w` atomically. Returns false, applying nothing, if `w.status` does not match the
    /// current status or `w.lease` names an owner other than the one holding the transaction.
    /// Throws dtx::error: duplicate_gid for a second begin, unknown_transaction for a write to a
    /// gid it does not hold, journal_failed if it cannot be made durable (in that case the write
    /// may or may not have been applied).
    virtual asio::awaitable<bool> write(const journal_write& w, durability d) = 0;

    /// Returns up to `limit` due transactions and leases them to `owner` until `now + lease`.
    /// In the same atomic step, every claimed transaction still `trying` (its deadline has passed)
    /// is moved to `cancelling` and returned as such: presumed abort. (Except those recovered
    /// `forward`, which stay `trying`.) Doing both at once is what
    /// keeps a late branch registration by a slow coordinator from slipping past the cancel.
    virtual asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) = 0;

    /// One transaction, if the journal still holds it (ended ones may have been cleaned up).
    virtual asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) = 0;
};

DTX_NAMESPACE_END

#endif
