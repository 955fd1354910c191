#ifndef DTX_DETAIL_CONFIG_HPP
#define DTX_DETAIL_CONFIG_HPP

#include <boost/asio/awaitable.hpp>
#include <boost/version.hpp>

#include <dtx/version.hpp>

#if BOOST_VERSION < 108100
#error "dtx needs Boost 1.81 or newer"
#endif

namespace dtx::inline DTX_ABI_NAMESPACE {
/// dtx is written on Boost.Asio; this alias keeps signatures short (`dtx::asio::awaitable<T>`).
namespace asio = boost::asio;
} // namespace dtx

#endif
