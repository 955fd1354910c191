#ifndef DTX_HTTP_HPP
#define DTX_HTTP_HPP

// The HTTP transport (opt-in; CMake: dtx::http): DTM's branch protocol over Boost.Beast. Needs
// Boost (Asio, Beast) and nlohmann::json, nothing else.

#include <dtx/http/protocol.hpp>
#include <dtx/http/server.hpp>
#include <dtx/http/server_options.hpp>

#endif
