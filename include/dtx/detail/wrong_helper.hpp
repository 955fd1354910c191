#ifndef DTX_DETAIL_WRONG_HELPER_HPP
#define DTX_DETAIL_WRONG_HELPER_HPP

// What the handler helpers (dtx::typed, the barriers' typed_handler) return when given a handler
// of the other kind, after a static_assert that names the right helper: it converts to either
// kind of handler, so that the assertion is the only error the compiler reports.

#include <dtx/version.hpp>

DTX_NAMESPACE_BEGIN
namespace detail {

/// False, but only once `T` is known: for a static_assert in a discarded `if constexpr` branch.
template <class... T>
inline constexpr bool dependent_false = false;

struct wrong_helper {
    /// Converts to whatever a handler's caller expects; never called (the program did not compile).
    struct any_result {
        template <class R>
        operator R() const {
            return R();
        }
    };
    template <class... Args>
    any_result operator()(Args&&...) const {
        return {};
    }
};

} // namespace detail
DTX_NAMESPACE_END

#endif
