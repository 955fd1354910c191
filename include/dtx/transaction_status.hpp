#ifndef DTX_TRANSACTION_STATUS_HPP
#define DTX_TRANSACTION_STATUS_HPP

// The kinds of global transaction, their states, and the operations sent to branches.
//
//   TCC:   trying -> confirming -> confirmed      (all tries succeeded; confirm decided)
//          trying -> cancelling -> cancelled      (a try failed, timed out, or the body threw)
//   saga:  trying -> confirmed                    (every action succeeded)
//          trying -> cancelling -> cancelled      (an action failed: steps compensated)
//
// `confirming` and `cancelling` are decisions: once one is in the journal, the transaction only
// moves to its matching end.

#include <dtx/version.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

DTX_NAMESPACE_BEGIN

enum class tx_kind : std::uint8_t { tcc, saga };

enum class tx_status : std::uint8_t { trying, confirming, confirmed, cancelling, cancelled };

/// An operation sent to a branch. Wire names: "try", "confirm", "cancel", "action", "compensate".
enum class branch_op : std::uint8_t { try_, confirm, cancel, action, compensate };

inline constexpr bool is_final(tx_status s) noexcept {
    return s == tx_status::confirmed || s == tx_status::cancelled;
}

inline constexpr std::string_view to_string(tx_kind k) noexcept {
    return k == tx_kind::tcc ? "tcc" : "saga";
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
    }
    return "?";
}

inline constexpr std::optional<tx_kind> parse_tx_kind(std::string_view s) noexcept {
    if (s == "tcc")
        return tx_kind::tcc;
    if (s == "saga")
        return tx_kind::saga;
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
                   branch_op::compensate})
        if (to_string(v) == s)
            return v;
    return std::nullopt;
}

/// The kind of transaction an operation belongs to.
inline constexpr tx_kind kind_of(branch_op op) noexcept {
    return op == branch_op::action || op == branch_op::compensate ? tx_kind::saga : tx_kind::tcc;
}

DTX_NAMESPACE_END

#endif
