#ifndef DTX_OUTCOME_HPP
#define DTX_OUTCOME_HPP

// What a branch call answered.
//
// `success` and `failure` are final answers; `pending` means "not yet, ask again later". Anything
// that is not an outcome (an exception, a transport error, a timeout) is an *unknown* result: a try
// or action with an unknown result is cancelled or compensated, a confirm, cancel or compensate
// with an unknown result is retried.

#include <dtx/version.hpp>

#include <cstdint>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN

enum class outcome_kind : std::uint8_t { success, failure, pending };

class outcome {
public:
    /// A failure saying there is no answer: a default never reads as success.
    outcome()
        : kind_(outcome_kind::failure)
        , message_("no outcome") {}
    outcome(outcome_kind kind, std::string message)
        : kind_(kind)
        , message_(std::move(message)) {}

    outcome_kind kind() const noexcept { return kind_; }
    /// Why a branch failed or is pending, in the participant's words; empty on success.
    const std::string& message() const noexcept { return message_; }

    bool is_success() const noexcept { return kind_ == outcome_kind::success; }
    bool is_failure() const noexcept { return kind_ == outcome_kind::failure; }
    bool is_pending() const noexcept { return kind_ == outcome_kind::pending; }

    friend bool operator==(const outcome&, const outcome&) = default;

private:
    outcome_kind kind_;
    std::string message_;
};

/// The branch did what was asked.
inline outcome success() {
    return {outcome_kind::success, {}};
}
/// A business "no": the try or action is refused and the transaction must be cancelled.
inline outcome failure(std::string message = {}) {
    return {outcome_kind::failure, std::move(message)};
}
/// Not finished yet; the coordinator asks again later.
inline outcome pending(std::string message = {}) {
    return {outcome_kind::pending, std::move(message)};
}

inline std::string_view to_string(outcome_kind k) noexcept {
    switch (k) {
    case outcome_kind::success:
        return "success";
    case outcome_kind::failure:
        return "failure";
    case outcome_kind::pending:
        return "pending";
    }
    return "?";
}

DTX_NAMESPACE_END

#endif
