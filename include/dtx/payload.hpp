#ifndef DTX_PAYLOAD_HPP
#define DTX_PAYLOAD_HPP

// A branch's payload: the JSON its handlers receive for every operation.
//
// Anything nlohmann::json converts from becomes a payload: a json value, or a struct of yours with
// `to_json` (NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE). A payload never changes once its branch is
// registered, so the coordinator, the journal and recovery share one immutable copy.

#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <type_traits>

DTX_NAMESPACE_BEGIN

class payload {
public:
    /// JSON null.
    payload()
        : p_(null_json()) {}

    template <class T>
    requires(!std::is_same_v<std::remove_cvref_t<T>, payload> &&
             std::is_constructible_v<nlohmann::json, T>)
        payload(
            T&& value) // NOLINT(google-explicit-constructor): payloads are built from user values
        : p_(std::make_shared<const nlohmann::json>(std::forward<T>(value))) {}

    const nlohmann::json& json() const noexcept { return *p_; }
    const nlohmann::json& operator*() const noexcept { return *p_; }
    const nlohmann::json* operator->() const noexcept { return p_.get(); }

    friend bool operator==(const payload& a, const payload& b) { return *a.p_ == *b.p_; }

private:
    static const std::shared_ptr<const nlohmann::json>& null_json() {
        static const auto null = std::make_shared<const nlohmann::json>();
        return null;
    }

    std::shared_ptr<const nlohmann::json> p_;
};

DTX_NAMESPACE_END

#endif
