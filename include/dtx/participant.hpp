#ifndef DTX_PARTICIPANT_HPP
#define DTX_PARTICIPANT_HPP

// Participants: the services that take part in a transaction.
//
// A TCC participant answers `try`, `confirm` and `cancel`; a saga participant answers `action`
// and `compensate` (and the `action` of 2-phase messages); a check-back answers whether the local
// transaction of a 2-phase message committed (two_phase_message.hpp). Each handler is a coroutine
// that receives a `branch_request` (gid, branch id, operation and the branch's JSON payload) and
// returns an `outcome`.
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

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
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
    /// The kind of transaction the call belongs to, where `op` alone does not say it (the
    /// `action` of a 2-phase message); empty: kind_of(op).
    std::optional<tx_kind> transaction_kind{};

    tx_kind kind() const noexcept { return transaction_kind.value_or(kind_of(op)); }
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

// nlohmann's conversions to arithmetic types cast: 4294967295 into an int is -1, 2.9 is 2, true
// is 1, -1 into an unsigned is 4294967295. typed<T> must refuse such a payload instead of running
// the handler with a number the caller never sent. nlohmann offers no checked conversion and no
// hook for one, and the fields of T are known only to its own from_json. So the value is turned
// back into JSON with to_json, and every number of the payload is compared with the number
// in the same place of the result: a number that changed did not fit its field. Integers must
// come back equal in value (so 2.0 fits an int, 3 fits a double); a fraction must come back as
// the same double, or as the same float (a float field rounds decimals, which is not narrowing);
// a boolean must come back a boolean. Members the payload has and T ignores are not compared.
// (A fraction beyond an integer field's range is converted by nlohmann with a cast whose result
// C++ leaves undefined; whatever it gives on the hardware, it is not the payload's number.)

/// True if the integer `i` (a JSON integer) equals the double `d` exactly.
inline bool integer_equals(const nlohmann::json& i, double d) noexcept {
    if (!std::isfinite(d) || std::trunc(d) != d)
        return false;
    if (i.is_number_unsigned())
        return d >= 0 && d < 18446744073709551616.0 &&
               static_cast<std::uint64_t>(d) == i.get<std::uint64_t>();
    return d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
           static_cast<std::int64_t>(d) == i.get<std::int64_t>();
}

/// True if the payload's number or boolean `in` came back from conversion as `back` unchanged.
inline bool same_number(const nlohmann::json& in, const nlohmann::json& back) noexcept {
    if (in.is_boolean() || back.is_boolean())
        return in.type() == back.type();
    if (in.is_number_float() && back.is_number_float()) {
        const double a = in.get<double>(), b = back.get<double>();
        constexpr double float_max = std::numeric_limits<float>::max();
        return a == b ||
               (std::isfinite(b) && std::abs(a) <= float_max && std::abs(b) <= float_max &&
                static_cast<float>(a) == static_cast<float>(b));
    }
    if (in.is_number_float())
        return integer_equals(back, in.get<double>());
    if (back.is_number_float())
        return integer_equals(in, back.get<double>());
    const auto negative = [](const nlohmann::json& j) {
        return !j.is_number_unsigned() && j.get<std::int64_t>() < 0;
    };
    if (negative(in) || negative(back))
        return negative(in) && negative(back) && in.get<std::int64_t>() == back.get<std::int64_t>();
    return in.get<std::uint64_t>() == back.get<std::uint64_t>();
}

/// The path (`items[2].qty`) of the first number of `in` that `back` does not hold exactly, or
/// empty if there is none; `path` is the path of `in` itself.
inline std::optional<std::string> narrowed_number(const nlohmann::json& in,
                                                  const nlohmann::json& back, std::string path) {
    if (in.is_object() && back.is_object()) {
        for (auto it = in.begin(); it != in.end(); ++it) {
            const auto there = back.find(it.key());
            if (there == back.end())
                continue;
            auto found =
                narrowed_number(*it, *there, path.empty() ? it.key() : path + "." + it.key());
            if (found)
                return found;
        }
        return std::nullopt;
    }
    if (in.is_array() && back.is_array() && in.size() == back.size()) {
        for (std::size_t i = 0; i < in.size(); ++i) {
            auto found = narrowed_number(in[i], back[i], path + "[" + std::to_string(i) + "]");
            if (found)
                return found;
        }
        return std::nullopt;
    }
    const bool numeric = in.is_number() || in.is_boolean();
    const bool back_numeric = back.is_number() || back.is_boolean();
    if (numeric && back_numeric && !same_number(in, back))
        return path;
    return std::nullopt;
}

/// The payload as a `T`, or empty with `refusal` set to a failure naming gid, branch and problem:
/// a payload that does not convert, or a number that does not fit its field exactly (see above).
template <class T>
std::optional<T> convert_payload(const branch_request& r, outcome& refusal) {
    static_assert(std::is_constructible_v<nlohmann::json, const T&>,
                  "typed<T> converts T back to JSON to check that every number fits its field: "
                  "give T a to_json as well as a from_json (NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE "
                  "defines both)");
    const auto refuse = [&](const std::string& why) {
        refusal = failure("gid " + std::string(r.gid) + " branch " + std::string(r.branch_id) +
                          ": " + std::string(to_string(r.op)) + " payload " + why);
    };
    try {
        std::optional<T> value = r.payload.template get<T>();
        const nlohmann::json back = *value;
        if (const auto field = narrowed_number(r.payload, back, {})) {
            refuse((field->empty() ? std::string("number") : "field '" + *field + "'") +
                   " does not fit its type exactly");
            return std::nullopt;
        }
        return value;
    } catch (const nlohmann::json::exception& e) {
        refuse(std::string("does not convert: ") + e.what());
        return std::nullopt;
    }
}

} // namespace detail

/// Wraps a handler that takes the payload as a user type `T` (anything nlohmann::json converts
/// to and from, e.g. a struct declared with NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE). A payload that
/// does not convert, or whose numbers do not fit T's fields exactly (4294967295 or true for an
/// int, 2.9 for an int, -1 for an unsigned), is answered with `failure`, naming the gid, branch
/// and the field or the conversion error; the handler is not called.
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

/// The check-back of 2-phase messages (participant_registry::add_check_back): answers op
/// `check_back` only.
class check_back_participant final : public participant {
public:
    explicit check_back_participant(branch_handler h)
        : h_(std::move(h)) {}
    std::optional<tx_kind> kind() const noexcept override { return tx_kind::msg; }
    asio::awaitable<outcome> call(const branch_request& r) override {
        if (r.op != branch_op::check_back)
            throw std::invalid_argument("a check-back cannot handle op " +
                                        std::string(to_string(r.op)));
        return h_(r);
    }

private:
    branch_handler h_;
};

} // namespace detail

DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
