#ifndef DTX_PARTICIPANT_HPP
#define DTX_PARTICIPANT_HPP

// Participants: the services that take part in a transaction.
//
// A TCC participant answers `try`, `confirm` and `cancel`; a saga participant answers `action`
// and `compensate`. Each handler is a coroutine that receives a `branch_request` (gid, branch id,
// operation and the branch's JSON payload) and returns an `outcome`.
//
// Handlers are registered by name in a `participant_registry`, never captured per transaction,
// because recovery in another process must be able to call them from what the journal holds.
//
// Handlers must be idempotent and tolerate reordering: a confirm or cancel may be delivered more
// than once, a cancel may arrive for a try that never ran (answer success, do nothing), and a try
// may arrive after its cancel (do nothing, answer failure). The barrier does this for you.

#include <dtx/detail/config.hpp>
#include <dtx/detail/wrong_helper.hpp>
#include <dtx/outcome.hpp>
#include <dtx/transaction_status.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN

/// One call to a branch. The views stay valid until the call completes.
struct branch_request {
    std::string_view gid;
    std::string_view branch_id;
    branch_op op;
    const nlohmann::json& payload;
    /// The transaction's W3C trace context (see trace_context.hpp); empty if there is none.
    std::string_view traceparent{};

    tx_kind kind() const noexcept { return kind_of(op); }
};

/// Anything the coordinator can call: an in-process handler set, or a remote service.
class participant {
public:
    virtual ~participant() = default;
    /// The kind of transaction this participant takes part in; empty if it accepts both (remote).
    virtual std::optional<tx_kind> kind() const noexcept = 0;
    /// Runs one branch operation. Throwing, or not completing in time, means "unknown".
    virtual asio::awaitable<outcome> call(const branch_request& request) = 0;
};

using branch_handler = std::function<asio::awaitable<outcome>(const branch_request&)>;

struct tcc_handlers {
    branch_handler on_try;
    branch_handler on_confirm;
    branch_handler on_cancel;
};

struct saga_handlers {
    branch_handler on_action;
    branch_handler on_compensate;
};

namespace detail {

/// The payload as a `T`, or empty with `refusal` set to a failure naming gid, branch and problem.
template <class T>
std::optional<T> convert_payload(const branch_request& r, outcome& refusal) {
    try {
        return r.payload.template get<T>();
    } catch (const nlohmann::json::exception& e) {
        refusal =
            failure("gid " + std::string(r.gid) + " branch " + std::string(r.branch_id) + ": " +
                    std::string(to_string(r.op)) + " payload does not convert: " + e.what());
        return std::nullopt;
    }
}

} // namespace detail

/// Wraps a handler that takes the payload as a user type `T` (anything nlohmann::json converts
/// to, e.g. a struct with `from_json`), returning a branch_handler. A payload that does not
/// convert is answered with `failure`, naming the gid, branch and the conversion error.
template <class T, class F>
auto typed(F handler) {
    if constexpr (std::is_invocable_v<const F&, const branch_request&, T>) {
        return branch_handler(
            [handler = std::move(handler)](const branch_request& r) -> asio::awaitable<outcome> {
                outcome refusal;
                std::optional<T> value = detail::convert_payload<T>(r, refusal);
                if (!value)
                    co_return refusal;
                co_return co_await handler(r, std::move(*value));
            });
    } else {
        static_assert(detail::dependent_false<F>,
                      "dtx::typed<T> wraps a participant's coroutine handler (const "
                      "dtx::branch_request&, T); a barrier handler outcome(connection&, const "
                      "dtx::branch_request&, T) is wrapped with the barrier's typed_handler<T> "
                      "(dtx::sqlite::typed_handler<T>, dtx::postgres::typed_handler<T>)");
        return detail::wrong_helper{};
    }
}

namespace detail {

template <class Handlers>
class local_participant final : public participant {
public:
    explicit local_participant(Handlers h)
        : h_(std::move(h)) {}

    std::optional<tx_kind> kind() const noexcept override {
        if constexpr (std::is_same_v<Handlers, tcc_handlers>)
            return tx_kind::tcc;
        else
            return tx_kind::saga;
    }

    asio::awaitable<outcome> call(const branch_request& r) override { return handler_for(r.op)(r); }

private:
    const branch_handler& handler_for(branch_op op) const {
        if constexpr (std::is_same_v<Handlers, tcc_handlers>) {
            switch (op) {
            case branch_op::try_:
                return h_.on_try;
            case branch_op::confirm:
                return h_.on_confirm;
            case branch_op::cancel:
                return h_.on_cancel;
            default:
                break;
            }
        } else {
            switch (op) {
            case branch_op::action:
                return h_.on_action;
            case branch_op::compensate:
                return h_.on_compensate;
            default:
                break;
            }
        }
        throw std::invalid_argument("participant cannot handle op " + std::string(to_string(op)));
    }

    Handlers h_;
};

} // namespace detail

DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
