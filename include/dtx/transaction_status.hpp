#ifndef DTX_TRANSACTION_STATUS_HPP
#define DTX_TRANSACTION_STATUS_HPP

// The kinds of global transaction, their states, and the operations sent to branches.
//
//   TCC:   trying -> confirming -> confirmed      (all tries succeeded; confirm decided)
//          trying -> cancelling -> cancelled      (a try failed, timed out, or the body threw)
//   saga:  trying -> confirmed                    (every action succeeded)
//          trying -> cancelling -> cancelled      (an action failed: steps compensated)
//   msg:   trying -> confirming -> confirmed      (a 2-phase message: prepared, submitted once
//                                                  its local transaction committed, delivered)
//          trying -> cancelled                    (its local transaction did not commit)
//
// `confirming` and `cancelling` are decisions: once one is in the journal, the transaction only
// moves to its matching end.

#include <dtx/version.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

DTX_NAMESPACE_BEGIN

/// `msg` is a 2-phase message (two_phase_message.hpp): its branches get `action` only.
enum class tx_kind : std::uint8_t { tcc, saga, msg };

enum class tx_status : std::uint8_t { trying, confirming, confirmed, cancelling, cancelled };

/// An operation sent to a branch. Wire names: "try", "confirm", "cancel", "action", "compensate",
/// and "msg" for `check_back`, the question a 2-phase message asks its check-back (DTM's
/// QueryPrepared): did the local transaction of this message commit?
enum class branch_op : std::uint8_t { try_, confirm, cancel, action, compensate, check_back };

inline constexpr bool is_final(tx_status s) noexcept {
    return s == tx_status::confirmed || s == tx_status::cancelled;
}

inline constexpr std::string_view to_string(tx_kind k) noexcept {
    switch (k) {
    case tx_kind::tcc:
        return "tcc";
    case tx_kind::saga:
        return "saga";
    case tx_kind::msg:
        return "msg";
    }
    return "?";
}

inline constexpr std::string_view to_string(tx_status s) noexcept {
    switch (s) {
    case tx_status::trying:
        return "trying";
    case tx_status::confirming:
        return "confirming";
    case tx_status::confirmed:
        return "confirmed";
    case tx_status::cancelling:
        return "cancelling";
    case tx_status::cancelled:
        return "cancelled";
    }
    return "?";
}

inline constexpr std::string_view to_string(branch_op op) noexcept {
    switch (op) {
    case branch_op::try_:
        return "try";
    case branch_op::confirm:
        return "confirm";
    case branch_op::cancel:
        return "cancel";
    case branch_op::action:
        return "action";
    case branch_op::compensate:
        return "compensate";
    case branch_op::check_back:
        return "msg";
    }
    return "?";
}

inline constexpr std::optional<tx_kind> parse_tx_kind(std::string_view s) noexcept {
    if (s == "tcc")
        return tx_kind::tcc;
    if (s == "saga")
        return tx_kind::saga;
    if (s == "msg")
        return tx_kind::msg;
    return std::nullopt;
}

inline constexpr std::optional<tx_status> parse_tx_status(std::string_view s) noexcept {
    for (auto v : {tx_status::trying, tx_status::confirming, tx_status::confirmed,
                   tx_status::cancelling, tx_status::cancelled})
        if (to_string(v) == s)
            return v;
    return std::nullopt;
}

inline constexpr std::optional<branch_op> parse_branch_op(std::string_view s) noexcept {
    for (auto v : {branch_op::try_, branch_op::confirm, branch_op::cancel, branch_op::action,
                   branch_op::compensate, branch_op::check_back})
        if (to_string(v) == s)
            return v;
    return std::nullopt;
}

/// The kind of transaction an operation belongs to first: `action` is a saga's (a 2-phase
/// message's actions too, see belongs_to).
inline constexpr tx_kind kind_of(branch_op op) noexcept {
    if (op == branch_op::check_back)
        return tx_kind::msg;
    return op == branch_op::action || op == branch_op::compensate ? tx_kind::saga : tx_kind::tcc;
}

/// Whether `op` is sent in transactions of kind `k`: tcc try, confirm, cancel; saga action,
/// compensate; msg action and its check-back.
inline constexpr bool belongs_to(branch_op op, tx_kind k) noexcept {
    return kind_of(op) == k || (k == tx_kind::msg && op == branch_op::action);
}

/// Whether a participant of kind `p` (empty: any kind, a remote one) serves `op` in a
/// transaction of kind `k`. A saga participant also serves the actions of 2-phase messages; a
/// participant of kind msg is a check-back, and serves the check-back only.
inline constexpr bool serves(std::optional<tx_kind> p, tx_kind k, branch_op op) noexcept {
    if (!p)
        return true;
    if (*p == tx_kind::msg)
        return op == branch_op::check_back;
    if (k == tx_kind::msg && op == branch_op::action)
        return *p == tx_kind::saga;
    return *p == k;
}

DTX_NAMESPACE_END

#endif
