#ifndef DTX_DETAIL_CONFIG_HPP
#define DTX_DETAIL_CONFIG_HPP

#include <boost/asio/awaitable.hpp>
#include <boost/version.hpp>

#include <dtx/version.hpp>

#if BOOST_VERSION < 108100
#error "dtx needs Boost 1.81 or newer"
#endif

// g++ 12 reports -Wmismatched-new-delete for coroutine frames whose promise has class-specific
// operator new/delete (Asio's awaitable frames): a false positive. Headers that define coroutines
// put their code between these two, so the warning is silenced there only.
#if defined(__GNUC__) && !defined(__clang__)
#define DTX_DETAIL_COROUTINE_WARNINGS_OFF                                                          \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmismatched-new-delete\"")
#define DTX_DETAIL_COROUTINE_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define DTX_DETAIL_COROUTINE_WARNINGS_OFF
#define DTX_DETAIL_COROUTINE_WARNINGS_ON
#endif

namespace dtx::inline DTX_ABI_NAMESPACE {
/// dtx is written on Boost.Asio; this alias keeps signatures short (`dtx::asio::awaitable<T>`).
namespace asio = boost::asio;
} // namespace dtx

#endif
