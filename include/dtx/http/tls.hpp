#ifndef DTX_HTTP_TLS_HPP
#define DTX_HTTP_TLS_HPP

// HTTPS for the participant server and the client (opt-in; CMake: dtx::tls, which links OpenSSL).
// Only this header includes OpenSSL: a server or client built without it speaks plain HTTP.
//
// Server: the same routes, answers and limits as over HTTP, after a TLS handshake.
//
//   asio::ssl::context tls(asio::ssl::context::tls_server);
//   tls.use_certificate_chain_file("server.pem");
//   tls.use_private_key_file("server.key", asio::ssl::context::pem);
//   dtx::http::server srv(ioc, participants,
//                         {.port = 8443, .tls = dtx::http::make_server_tls(tls)});
//
// The handshake is bounded by server_options::handshake_timeout (a client that connects and never
// shakes hands is dropped; until then it counts against max_connections). A plain HTTP request
// to the port gets a plain 400 (https_required) and is closed; a failed handshake ends only its
// own connection. For mutual TLS, ask the context for client certificates
// (set_verify_mode(verify_peer | verify_fail_if_no_peer_cert) and the CA that signs them).
//
// Client: https:// URLs, verified by default: the server's chain must lead to a trusted CA, its
// certificate must name the URL's host (name or IP address: ssl::host_name_verification), and a
// host name is sent as SNI. There is no switch to turn verification off.
//
//   dtx::http::client http(ex, {.tls = dtx::http::make_client_tls({.ca_file = "ca.pem"})});
//
// A failed handshake is a dtx::error naming the URL, the host and OpenSSL's reason (for a branch
// call: an unknown result, retried like any transport error).

#include <dtx/detail/config.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/server.hpp>
#include <dtx/version.hpp>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http {

namespace detail {

/// True if OpenSSL refused the handshake because the peer spoke plain HTTP.
inline bool plain_http_request(const boost::system::error_code& ec) noexcept {
    if (ec.category() != asio::error::get_ssl_category())
        return false;
    const auto reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    return reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST;
}

// ---- server ------------------------------------------------------------------------------------

using server_tls_stream = asio::ssl::stream<tcp::socket&>;

/// The server's handshake on `stream` within handshake_timeout: true if it succeeded. A plain
/// HTTP request is answered with a plain 400 that says to use https.
inline asio::awaitable<bool> accept_handshake(server_state& st, server_connection& c,
                                              server_tls_stream& stream) {
    const steady::time_point started = steady::now();
    watch_phase(st, c, st.opts.handshake_timeout, c.io);
    c.idle = true; // a stop ends a connection that has not shaken hands yet
    auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, io_token(c));
    c.idle = false;
    const bool expired = phase_expired(st, c);
    if (!ec && !expired && !st.stopping)
        co_return true;
    if (!expired && !st.stopping && plain_http_request(ec)) {
        request_notes notes;
        const problem plain{400, "https_required",
                            "this port serves HTTPS: the request was plain HTTP"};
        beast_response res = problem_response(plain, 11, notes);
        res.keep_alive(false);
        const boost::system::error_code wec = co_await write_answer(st, c, c.socket, res);
        log_request(st, nullptr, notes, wec ? 0 : plain.status, started);
        if (!wec)
            co_await linger_close(st, c);
    }
    co_return false;
}

/// Sends close_notify on `stream` without waiting for the client's (which a pooling client
/// sends only when it next reads), within linger_limit.
inline asio::awaitable<void> send_close_notify(server_state& st, server_connection& c,
                                               server_tls_stream& stream) {
    SSL_set_shutdown(stream.native_handle(), SSL_RECEIVED_SHUTDOWN);
    watch_phase(st, c, std::min<std::chrono::nanoseconds>(linger_limit, st.opts.read_timeout),
                c.io);
    co_await stream.async_shutdown(io_token(c));
    st.watch.remove(c.deadline);
}

/// Serves a TLS connection: the handshake, then its requests as over plain HTTP.
inline asio::awaitable<void> serve_tls(std::shared_ptr<server_state> st,
                                       std::shared_ptr<server_connection> c,
                                       asio::ssl::context& context) {
    const connection_end end(*st, *c);
    server_tls_stream stream(c->socket, context);
    const bool ready = co_await accept_handshake(*st, *c, stream);
    if (!ready)
        co_return;
    watch_phase(*st, *c, st->opts.read_timeout, c->io);
    const loop_end how = co_await serve_requests(*st, *c, stream);
    if (how == loop_end::close)
        co_return;
    co_await send_close_notify(*st, *c, stream);
    if (how == loop_end::linger)
        co_await linger_close(*st, *c);
}

/// Answers a TLS connection over the limit with 503 (after the handshake) and closes it.
inline asio::awaitable<void> refuse_tls(std::shared_ptr<server_state> st,
                                        std::shared_ptr<server_connection> c,
                                        asio::ssl::context& context) {
    const connection_end end(*st, *c);
    server_tls_stream stream(c->socket, context);
    const bool ready = co_await accept_handshake(*st, *c, stream);
    if (!ready)
        co_return;
    const bool sent = co_await answer_overloaded(*st, *c, stream);
    if (!sent)
        co_return;
    co_await send_close_notify(*st, *c, stream);
    co_await linger_close(*st, *c);
}

class openssl_server_tls final : public server_tls {
public:
    explicit openssl_server_tls(asio::ssl::context& context)
        : context_(context) {}

    asio::awaitable<void> serve(std::shared_ptr<server_state> st,
                                std::shared_ptr<server_connection> c) const override {
        return serve_tls(std::move(st), std::move(c), context_);
    }
    asio::awaitable<void> refuse(std::shared_ptr<server_state> st,
                                 std::shared_ptr<server_connection> c) const override {
        return refuse_tls(std::move(st), std::move(c), context_);
    }

private:
    asio::ssl::context& context_;
};

// ---- client ------------------------------------------------------------------------------------

/// ssl::host_name_verification that, on a mismatch, tells OpenSSL so: the handshake's error then
/// says "hostname mismatch" (or "IP address mismatch") instead of an unspecified failure.
class host_check {
public:
    explicit host_check(std::string host)
        : check_(host)
        , host_(std::move(host)) {}

    bool operator()(bool preverified, asio::ssl::verify_context& ctx) const {
        const bool ok = check_(preverified, ctx);
        X509_STORE_CTX* store = ctx.native_handle();
        if (!ok && preverified && X509_STORE_CTX_get_error(store) == X509_V_OK) {
            boost::system::error_code not_address;
            (void)asio::ip::make_address(host_, not_address);
            X509_STORE_CTX_set_error(store, not_address ? X509_V_ERR_HOSTNAME_MISMATCH
                                                        : X509_V_ERR_IP_ADDRESS_MISMATCH);
        }
        return ok;
    }

private:
    asio::ssl::host_name_verification check_;
    std::string host_;
};

/// A client connection's TLS: verification on, the host checked, SNI for host names.
class client_tls_stream final : public tls_layer {
public:
    client_tls_stream(beast::tcp_stream& tcp, asio::ssl::context& ctx, const std::string& host)
        : stream_(tcp, ctx) {
        stream_.set_verify_mode(asio::ssl::verify_peer);
        stream_.set_verify_callback(host_check(host));
        boost::system::error_code not_address;
        (void)asio::ip::make_address(host, not_address);
        if (not_address)
            SSL_set_tlsext_host_name(stream_.native_handle(), host.c_str()); // RFC 6066: names only
    }

    asio::awaitable<handshake_result> handshake() override {
        auto [ec] = co_await stream_.async_handshake(asio::ssl::stream_base::client,
                                                     asio::as_tuple(asio::use_awaitable));
        handshake_result out{ec, {}};
        if (ec)
            out.second = reason(ec);
        co_return out;
    }

    asio::awaitable<io_result> write(http_request& req) override {
        auto [ec, n] =
            co_await beast::http::async_write(stream_, req, asio::as_tuple(asio::use_awaitable));
        io_result out{ec, n};
        co_return out;
    }

    asio::awaitable<io_result> read(beast::flat_buffer& buffer, response_parser& parser) override {
        auto [ec, n] = co_await beast::http::async_read(stream_, buffer, parser,
                                                        asio::as_tuple(asio::use_awaitable));
        io_result out{ec, n};
        co_return out;
    }

    void close_notify() noexcept override {
        // The server's close_notify is not awaited (it would come only after its next read), as
        // the server side does in send_close_notify; a non-blocking socket bounds the write.
        SSL_set_shutdown(stream_.native_handle(), SSL_RECEIVED_SHUTDOWN);
        boost::system::error_code ignored;
        stream_.next_layer().socket().non_blocking(true, ignored);
        stream_.shutdown(ignored);
    }

private:
    /// What `ec` does not say about a failed handshake: the certificate check's reason, or a
    /// guess at a server that does not speak TLS. Empty if there is nothing to add.
    std::string reason(const boost::system::error_code& ec) {
        if (ec.category() != asio::error::get_ssl_category()) {
            if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
                ec == asio::error::connection_reset)
                return "the server closed the connection (does it speak TLS on this port?)";
            return {};
        }
        const long verify = SSL_get_verify_result(stream_.native_handle());
        if (verify != X509_V_OK)
            return X509_verify_cert_error_string(verify);
        if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_WRONG_VERSION_NUMBER)
            return "the server does not speak TLS on this port (plain HTTP?)";
        return {};
    }

    asio::ssl::stream<beast::tcp_stream&> stream_;
};

class openssl_client_tls final : public client_tls {
public:
    explicit openssl_client_tls(asio::ssl::context ctx)
        : ctx_(std::move(ctx)) {}

    std::unique_ptr<tls_layer> wrap(beast::tcp_stream& tcp, const url& to) const override {
        return std::make_unique<client_tls_stream>(tcp, ctx_, to.host);
    }

private:
    // A context makes the SSL objects of connections; OpenSSL lets that happen concurrently.
    mutable asio::ssl::context ctx_;
};

/// Runs `load`; a failure is std::invalid_argument naming `what`.
template <class F>
void load_tls_setting(const std::string& what, F load) {
    boost::system::error_code ec;
    load(ec);
    if (ec)
        throw std::invalid_argument("TLS settings: cannot load " + what + ": " + ec.message());
}

} // namespace detail

/// HTTPS for a server (server_options::tls) with `context` (certificate chain, private key, and
/// for mutual TLS the verification of client certificates). `context` must outlive the server.
inline std::shared_ptr<const server_tls> make_server_tls(asio::ssl::context& context) {
    return std::make_shared<detail::openssl_server_tls>(context);
}

/// What a client trusts and, for mutual TLS, shows.
struct client_tls_options {
    /// A PEM file with the certificate authorities to trust.
    std::string ca_file{};
    /// A directory of CA certificates named by their hashes (as `openssl rehash` names them).
    std::string ca_path{};
    /// Trust the system's default CAs as well. When neither ca_file nor ca_path is given, they
    /// are trusted whatever this says.
    bool system_ca = false;
    /// Mutual TLS: the client's certificate chain and its private key (PEM files); both or none.
    std::string certificate_chain_file{};
    std::string private_key_file{};
};

/// TLS settings for client_options::tls made from `options`. Throws std::invalid_argument naming
/// a file that cannot be loaded.
inline std::shared_ptr<const client_tls> make_client_tls(const client_tls_options& options) {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_verify_mode(asio::ssl::verify_peer);
    if (!options.ca_file.empty())
        detail::load_tls_setting("the CA file " + options.ca_file,
                                 [&](auto& ec) { ctx.load_verify_file(options.ca_file, ec); });
    if (!options.ca_path.empty())
        detail::load_tls_setting("the CA directory " + options.ca_path,
                                 [&](auto& ec) { ctx.add_verify_path(options.ca_path, ec); });
    if (options.system_ca || (options.ca_file.empty() && options.ca_path.empty()))
        detail::load_tls_setting("the system's default CAs",
                                 [&](auto& ec) { ctx.set_default_verify_paths(ec); });
    if (options.certificate_chain_file.empty() != options.private_key_file.empty())
        throw std::invalid_argument(
            "TLS settings: a client certificate needs both its chain and its private key");
    if (!options.certificate_chain_file.empty()) {
        detail::load_tls_setting(
            "the certificate chain " + options.certificate_chain_file,
            [&](auto& ec) { ctx.use_certificate_chain_file(options.certificate_chain_file, ec); });
        detail::load_tls_setting("the private key " + options.private_key_file, [&](auto& ec) {
            ctx.use_private_key_file(options.private_key_file, asio::ssl::context::pem, ec);
        });
    }
    return std::make_shared<detail::openssl_client_tls>(std::move(ctx));
}

/// TLS settings for client_options::tls made from a context of the caller's (certificates,
/// trust, protocol versions). Peer verification and the host name check are switched on for
/// every connection whatever the context says.
inline std::shared_ptr<const client_tls> make_client_tls(asio::ssl::context context) {
    return std::make_shared<detail::openssl_client_tls>(std::move(context));
}

} // namespace http
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
