#ifndef DTX_DETAIL_CONFIG_HPP
#define DTX_DETAIL_CONFIG_HPP

#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/version.hpp>

#if BOOST_VERSION < 108100
#error "dtx needs Boost 1.81 or newer"
#endif

DTX_NAMESPACE_BEGIN
/// dtx is written on Boost.Asio; this alias keeps signatures short (`dtx::asio::awaitable<T>`).
namespace asio = boost::asio;
DTX_NAMESPACE_END

#endif
