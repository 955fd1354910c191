#ifndef DTX_HTTP_HPP
#define DTX_HTTP_HPP

// The HTTP transport (opt-in; CMake: dtx::http): DTM's branch protocol over Boost.Beast, the
// relay's publisher of messages, the consumer endpoint in front of an inbox, and the query of
// best-effort notifications. Needs Boost (Asio, Beast) and nlohmann::json, nothing else.
// HTTPS is a further opt-in part: <dtx/http/tls.hpp> (CMake: dtx::tls, OpenSSL), which this
// header does not include.

#include <dtx/http/client.hpp>
#include <dtx/http/consumer.hpp>
#include <dtx/http/notification_query.hpp>
#include <dtx/http/protocol.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/http/remote_participant.hpp>
#include <dtx/http/route.hpp>
#include <dtx/http/server.hpp>
#include <dtx/http/server_options.hpp>
#include <dtx/http/url.hpp>

#endif
