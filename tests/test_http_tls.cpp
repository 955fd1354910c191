// HTTPS: dtx's server and client over TLS with certificates made here, in-process, for each run
// (a throwaway CA, a server certificate for localhost and 127.0.0.1, a client certificate, and
// certificates the client must refuse: another CA's, a wrong host's, an expired one). Every
// operation over TLS, keep-alive reuse, verification failures, plain and TLS clients on the wrong
// port, the handshake timeout, mutual TLS, bearer tokens, a coordinator with recovery over https,
// and graceful shutdown.
#include <dtx/dtx.hpp>
#include <dtx/http/remote_participant.hpp>
#include <dtx/http/tls.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <doctest/doctest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/certificates.hpp"
#include "support/model.hpp"
#include <unistd.h>

using namespace dtx;
using namespace dtx::test;
using namespace std::chrono_literals;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// ---- certificates, made with OpenSSL's API -----------------------------------------------------

/// Every certificate the tests use, made once per run.
struct pki {
    identity ca = make_identity("dtx test CA", nullptr, nullptr);
    identity other_ca = make_identity("a CA nobody trusts", nullptr, nullptr);
    identity server = make_identity("localhost", "DNS:localhost,IP:127.0.0.1", &ca);
    identity client = make_identity("coordinator", "DNS:coordinator", &ca);
    identity untrusted = make_identity("localhost", "DNS:localhost,IP:127.0.0.1", &other_ca);
    identity wrong_host = make_identity("elsewhere", "DNS:elsewhere.example,IP:10.9.8.7", &ca);
    identity expired = make_identity("localhost", "DNS:localhost,IP:127.0.0.1", &ca, -30, -1);
};

const pki& certificates() {
    static const pki p;
    return p;
}

/// A server context that shows `id`.
std::unique_ptr<ssl::context> server_context(const identity& id) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    ctx->use_certificate_chain(asio::buffer(id.cert_pem));
    ctx->use_private_key(asio::buffer(id.key_pem), ssl::context::pem);
    return ctx;
}

/// Client TLS settings that trust the test CA (and show `client` if given).
std::shared_ptr<const http::client_tls> trusting_tls(const identity* client = nullptr) {
    ssl::context ctx(ssl::context::tls_client);
    ctx.add_certificate_authority(asio::buffer(certificates().ca.cert_pem));
    if (client) {
        ctx.use_certificate_chain(asio::buffer(client->cert_pem));
        ctx.use_private_key(asio::buffer(client->key_pem), ssl::context::pem);
    }
    return http::make_client_tls(std::move(ctx));
}

// ---- a server and clients on one io_context ----------------------------------------------------

/// What the participants received, by op.
struct tls_world {
    explicit tls_world(const identity& shown = certificates().server)
        : tls(server_context(shown)) {
        stock.set_script(always_ok());
        payment.set_script(always_ok());
        const tcc_handlers t = stock.tcc();
        served.add_tcc("stock", {.on_try = counted(t.on_try, stock_calls),
                                 .on_confirm = counted(t.on_confirm, stock_calls),
                                 .on_cancel = counted(t.on_cancel, stock_calls)});
        const saga_handlers s = payment.saga();
        served.add_saga("payment", {.on_action = counted(s.on_action, payment_calls),
                                    .on_compensate = counted(s.on_compensate, payment_calls)});
        served.add_tcc(
            "slow",
            {.on_try = gate_handler(), .on_confirm = gate_handler(), .on_cancel = gate_handler()});
    }
    ~tls_world() {
        if (server && !stopped)
            run(server->async_stop(0ms));
    }

    /// Starts the server with `o` over TLS (or plain HTTP if `plain`).
    void start(http::server_options o = {}, bool plain = false) {
        if (!plain)
            o.tls = http::make_server_tls(*tls);
        o.on_request = [this](const http::log_record& r) {
            log.push_back({r.status, std::string(r.error)});
        };
        server.emplace(ioc, served, std::move(o));
        server->start();
    }

    std::string url(std::string_view participant, std::string_view scheme = "https://") const {
        return std::string(scheme) + "127.0.0.1:" + std::to_string(server->port()) + "/dtx/" +
               std::string(participant);
    }

    /// Runs the io_context until `a` completes; rethrows what it threw.
    template <class T>
    T run(asio::awaitable<T> a) {
        std::optional<T> out;
        std::exception_ptr failed;
        bool done = false;
        asio::co_spawn(ioc, std::move(a), [&](std::exception_ptr e, T r) {
            failed = e;
            if (!e)
                out = std::move(r);
            done = true;
        });
        ioc.restart();
        while (!done && ioc.run_one() > 0) {
        }
        REQUIRE(done);
        if (failed)
            std::rethrow_exception(failed);
        return std::move(*out);
    }
    void run(asio::awaitable<void> a) {
        run([](asio::awaitable<void> inner) -> asio::awaitable<int> {
            co_await std::move(inner);
            co_return 0;
        }(std::move(a)));
    }

    /// Runs the io_context for `d`.
    void run_for(std::chrono::milliseconds d) {
        ioc.restart();
        ioc.run_for(d);
    }

    /// Runs the io_context until `done` holds (at most 10 s).
    template <class F>
    bool run_until(F done) {
        const auto until = std::chrono::steady_clock::now() + 10s;
        ioc.restart();
        while (!done() && std::chrono::steady_clock::now() < until)
            ioc.run_for(5ms);
        return done();
    }

    /// The text of the error `a` throws ("" if it throws none).
    template <class T>
    std::string error_of(asio::awaitable<T> a) {
        try {
            run(std::move(a));
        } catch (const std::exception& e) {
            return e.what();
        }
        return "";
    }

    std::size_t calls() const { return stock_calls + payment_calls; }

    asio::io_context ioc;
    std::unique_ptr<ssl::context> tls;
    resource stock{"stock"}, payment{"payment"};
    std::size_t stock_calls = 0, payment_calls = 0;
    participant_registry served;
    std::optional<http::server> server;
    bool stopped = false;
    struct entry {
        unsigned status;
        std::string error;
    };
    std::vector<entry> log;
    int waiting = 0;
    std::vector<asio::steady_timer*> gates;

private:
    static branch_handler counted(branch_handler h, std::size_t& n) {
        return [h = std::move(h), &n](const branch_request& r) {
            ++n;
            return h(r);
        };
    }

    /// A handler that waits until the test cancels its gate, then answers success.
    branch_handler gate_handler() {
        return [this](const branch_request&) -> asio::awaitable<outcome> {
            asio::steady_timer gate(ioc, std::chrono::steady_clock::time_point::max());
            gates.push_back(&gate);
            ++waiting;
            co_await gate.async_wait(asio::as_tuple(asio::use_awaitable));
            --waiting;
            co_return success();
        };
    }
};

const std::string try_query = "gid=g1&trans_type=tcc&branch_id=01&op=try";

bool contains(std::string_view text, std::string_view part) {
    return text.find(part) != std::string_view::npos;
}

/// A TCP connection that never sends a byte.
tcp::socket silent_connection(asio::io_context& ioc, std::uint16_t port) {
    tcp::socket s(ioc);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    return s;
}

/// True once the server has closed `s` (read ends), running the io_context meanwhile.
bool closed_by_server(tls_world& w, tcp::socket& s) {
    bool closed = false;
    std::array<char, 64> sink;
    std::function<void(boost::system::error_code, std::size_t)> on_read =
        [&](boost::system::error_code ec, std::size_t) {
            if (ec) {
                closed = true;
                return;
            }
            s.async_read_some(asio::buffer(sink), on_read);
        };
    s.async_read_some(asio::buffer(sink), on_read);
    const bool ok = w.run_until([&] { return closed; });
    if (!ok) {
        s.close();
        w.run_until([&] { return closed; });
    }
    return ok;
}

} // namespace

TEST_CASE("every branch operation over TLS, on one kept-alive connection") {
    tls_world w;
    w.start();
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    struct call {
        const char* participant;
        const char* query;
    };
    for (const call c : {call{"stock", "gid=g1&trans_type=tcc&branch_id=01&op=try"},
                         call{"stock", "gid=g1&trans_type=tcc&branch_id=01&op=confirm"},
                         call{"stock", "gid=g2&trans_type=tcc&branch_id=01&op=try"},
                         call{"stock", "gid=g2&trans_type=tcc&branch_id=01&op=cancel"},
                         call{"payment", "gid=g3&trans_type=saga&branch_id=01&op=action"},
                         call{"payment", "gid=g3&trans_type=saga&branch_id=01&op=compensate"}}) {
        CAPTURE(c.query);
        const http::response r =
            w.run(client.post(http::make_url(w.url(c.participant)), c.query, R"({"qty":2})"));
        CHECK(r.status == 200);
        CHECK(contains(r.body, "SUCCESS"));
    }
    CHECK(w.stock_calls == 4);
    CHECK(w.payment_calls == 2);
    CHECK(w.stock.reserved() == 0);
    CHECK(w.stock.taken() == 2);
    CHECK(client.stats().connections == 1);
    CHECK(client.stats().reused == 5);
    CHECK(client.idle_connections() == 1);
    CHECK(w.server->connections() == 1);
}

TEST_CASE("TLS connections are pooled apart from plain ones and reused concurrently") {
    tls_world w;
    w.start();
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    const http::url to = http::make_url(w.url("stock"));
    auto batch = [&](int n) -> asio::awaitable<int> {
        int ok = 0;
        for (int i = 0; i < n; ++i) {
            const std::string q =
                "gid=b" + std::to_string(i) + "&trans_type=tcc&branch_id=01&op=try";
            const http::response r = co_await client.post(to, q, R"({"qty":1})");
            ok += r.status == 200 ? 1 : 0;
        }
        co_return ok;
    };
    // Three coroutines at once need three connections; later rounds reuse them.
    int answered = 0;
    for (int round = 0; round < 3; ++round) {
        std::vector<int> results;
        for (int k = 0; k < 3; ++k)
            asio::co_spawn(w.ioc, batch(4), [&](std::exception_ptr e, int n) {
                REQUIRE(!e);
                results.push_back(n);
            });
        REQUIRE(w.run_until([&] { return results.size() == 3; }));
        for (int n : results)
            answered += n;
    }
    CHECK(answered == 36);
    CHECK(client.stats().connections == 3);
    CHECK(client.stats().reused == 33);
    CHECK(w.stock_calls == 36);
}

TEST_CASE("a server certificate from an untrusted CA is refused before any request is sent") {
    tls_world w(certificates().untrusted);
    w.start();
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    const std::string e =
        w.error_of(client.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})"));
    CAPTURE(e);
    CHECK(contains(e, "the TLS handshake with 127.0.0.1 failed"));
    CHECK(contains(e, "certificate verify failed"));
    CHECK(contains(e, "unable to get local issuer certificate"));
    CHECK(contains(e, w.url("stock")));
    CHECK(w.calls() == 0);
    CHECK(client.stats().connections == 0);
    CHECK(client.idle_connections() == 0);
}

TEST_CASE("a certificate for another host, or an expired one, is refused") {
    SUBCASE("another host, called by address") {
        tls_world w(certificates().wrong_host);
        w.start();
        http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
        const std::string e =
            w.error_of(client.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})"));
        CAPTURE(e);
        CHECK(contains(e, "IP address mismatch"));
        CHECK(w.calls() == 0);
    }
    SUBCASE("another host, called by name (SNI), and the right one") {
        tls_world w(certificates().wrong_host);
        w.start();
        http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
        const std::string by_name =
            "https://localhost:" + std::to_string(w.server->port()) + "/dtx/stock";
        const std::string e =
            w.error_of(client.post(http::make_url(by_name), try_query, R"({"qty":1})"));
        CAPTURE(e);
        CHECK(contains(e, "the TLS handshake with localhost failed"));
        CHECK(contains(e, "hostname mismatch"));
        CHECK(w.calls() == 0);

        tls_world right; // shows a certificate for localhost
        right.start();
        http::client other(right.ioc.get_executor(), {.tls = trusting_tls()});
        const std::string ok =
            "https://localhost:" + std::to_string(right.server->port()) + "/dtx/stock";
        CHECK(right.run(other.post(http::make_url(ok), try_query, R"({"qty":1})")).status == 200);
    }
    SUBCASE("expired") {
        tls_world w(certificates().expired);
        w.start();
        http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
        const std::string e =
            w.error_of(client.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})"));
        CAPTURE(e);
        CHECK(contains(e, "certificate has expired"));
        CHECK(w.calls() == 0);
    }
}

TEST_CASE("an https URL given to a client without TLS settings is an error that says so") {
    tls_world w;
    w.start();
    http::client client(w.ioc.get_executor());
    const std::string e =
        w.error_of(client.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})"));
    CAPTURE(e);
    CHECK(contains(e, "no TLS settings"));
    CHECK(contains(e, w.url("stock")));
    CHECK(w.calls() == 0);
    CHECK(client.stats().connections == 0);
}

TEST_CASE(
    "a plain client on a TLS port gets 400 https_required; a TLS client on a plain port an error") {
    SUBCASE("plain HTTP to the TLS port") {
        tls_world w;
        w.start();
        http::client plain(w.ioc.get_executor());
        const http::response r =
            w.run(plain.post(http::make_url(w.url("stock", "http://")), try_query, R"({"qty":1})"));
        CHECK(r.status == 400);
        CHECK(contains(r.body, "https_required"));
        CHECK(w.calls() == 0);
        REQUIRE(w.log.size() == 1);
        CHECK(w.log[0].error == "https_required");
        http::client secure(w.ioc.get_executor(), {.tls = trusting_tls()});
        CHECK(
            w.run(secure.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})")).status ==
            200); // still serving
        CHECK(w.calls() == 1);
    }
    SUBCASE("TLS to a plain port") {
        tls_world w;
        w.start({}, true);
        http::client secure(w.ioc.get_executor(), {.tls = trusting_tls()});
        const std::string e =
            w.error_of(secure.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})"));
        CAPTURE(e);
        CHECK(contains(e, "the TLS handshake with 127.0.0.1 failed"));
        CHECK(contains(e, "does not speak TLS"));
        CHECK(w.calls() == 0);
        http::client plain(w.ioc.get_executor());
        CHECK(
            w.run(plain.post(http::make_url(w.url("stock", "http://")), try_query, R"({"qty":1})"))
                .status == 200);
        CHECK(w.calls() == 1);
    }
}

TEST_CASE("a client that never shakes hands is dropped after the handshake timeout; it counts as a "
          "connection") {
    tls_world w;
    w.start({.handshake_timeout = 300ms, .max_connections = 1});
    tcp::socket silent = silent_connection(w.ioc, w.server->port());
    REQUIRE(w.run_until([&] { return w.server->connections() == 1; }));

    // The silent one holds the only place: a TLS client is told 503 (over TLS) meanwhile.
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    const http::url to = http::make_url(w.url("stock"));
    const http::response over = w.run(client.post(to, try_query, R"({"qty":1})"));
    CHECK(over.status == 503);
    CHECK(contains(over.body, "overloaded"));

    const auto t0 = std::chrono::steady_clock::now();
    CHECK(closed_by_server(w, silent));
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    REQUIRE(w.run_until([&] { return w.server->connections() == 0; }));
    CHECK(w.run(client.post(to, try_query, R"({"qty":1})")).status == 200);
    CHECK(w.calls() == 1);
}

TEST_CASE("a client that never shakes hands does not hold up the others") {
    tls_world w;
    w.start({.handshake_timeout = 300ms});
    tcp::socket silent = silent_connection(w.ioc, w.server->port());
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    for (int i = 0; i < 3; ++i)
        CHECK(
            w.run(client.post(http::make_url(w.url("stock")), try_query, R"({"qty":1})")).status ==
            200);
    CHECK(closed_by_server(w, silent));
    CHECK(w.calls() == 3);
}

/// A raw TLS connection that has sent one request and read its answer, then stays idle.
struct idle_tls_client {
    ssl::stream<tcp::socket> stream;
    beast::flat_buffer buffer;

    idle_tls_client(tls_world& w, ssl::context& ctx)
        : stream(w.ioc, ctx) {
        w.run([&]() -> asio::awaitable<void> {
            co_await stream.next_layer().async_connect(
                {asio::ip::make_address("127.0.0.1"), w.server->port()}, asio::use_awaitable);
            co_await stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
        }());
    }
    /// Sends one branch call; the answer's status.
    unsigned call(tls_world& w) {
        return w.run([&]() -> asio::awaitable<unsigned> {
            beast::http::request<beast::http::string_body> req{beast::http::verb::post,
                                                               "/dtx/stock?" + try_query, 11};
            req.set(beast::http::field::host, "127.0.0.1");
            req.body() = R"({"qty":1})";
            req.prepare_payload();
            co_await beast::http::async_write(stream, req, asio::use_awaitable);
            beast::http::response<beast::http::string_body> res;
            co_await beast::http::async_read(stream, buffer, res, asio::use_awaitable);
            co_return res.result_int();
        }());
    }
    /// How the server ended the connection: eof after a close_notify, stream_truncated without.
    boost::system::error_code end(tls_world& w) {
        return w.run([&]() -> asio::awaitable<boost::system::error_code> {
            beast::http::response<beast::http::string_body> res;
            auto [ec, n] = co_await beast::http::async_read(stream, buffer, res,
                                                            asio::as_tuple(asio::use_awaitable));
            co_return ec;
        }());
    }
};

TEST_CASE("over TLS, a full server closes its oldest idle connection with close_notify to admit "
          "a new client; a client over its share is told 503") {
    tls_world w;
    w.start({.max_connections = 2, .max_connections_per_client = 2});
    const auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    ctx->set_verify_mode(ssl::verify_none);
    idle_tls_client a(w, *ctx), b(w, *ctx);
    CHECK(a.call(w) == 200);
    CHECK(b.call(w) == 200);
    REQUIRE(w.server->connections() == 2);

    http::client third(w.ioc.get_executor(), {.tls = trusting_tls()});
    const http::url to = http::make_url(w.url("stock"));
    CHECK(w.run(third.post(to, try_query, R"({"qty":1})")).status == 200);
    const boost::system::error_code a_end = a.end(w);
    CAPTURE(a_end.message());
    CHECK(a_end == beast::http::error::end_of_stream); // a close_notify, not a cut connection
    CHECK(b.call(w) == 200);                           // the younger one is kept

    // Both places busy (b's request and the third client's wait in their handlers): a new TLS
    // client shakes hands and is told 503 over TLS, not cut off.
    third.close_idle();
    REQUIRE(w.run_until([&] { return w.server->connections() == 1; }));
    b.stream.next_layer().close();
    REQUIRE(w.run_until([&] { return w.server->connections() == 0; }));
    http::client busy(w.ioc.get_executor(), {.tls = trusting_tls()});
    const http::url slow = http::make_url(w.url("slow"));
    std::optional<http::response> answers[2];
    for (auto& answer : answers)
        asio::co_spawn(w.ioc, busy.post(slow, try_query, "{}"),
                       [&answer](std::exception_ptr e, http::response r) {
                           if (!e)
                               answer = std::move(r);
                       });
    REQUIRE(w.run_until([&] { return w.waiting == 2; }));
    http::client over(w.ioc.get_executor(), {.tls = trusting_tls()});
    const http::response refused = w.run(over.post(to, try_query, R"({"qty":1})"));
    CHECK(refused.status == 503);
    CHECK(contains(refused.body, "overloaded"));
    for (auto* gate : w.gates)
        gate->cancel();
    REQUIRE(w.run_until([&] { return answers[0] && answers[1]; }));
    CHECK(answers[0]->status == 200);
    CHECK(answers[1]->status == 200);
}

TEST_CASE(
    "mutual TLS: a server that requires a client certificate serves the client that shows one") {
    tls_world w;
    w.tls->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    w.tls->add_certificate_authority(asio::buffer(certificates().ca.cert_pem));
    w.start();
    const http::url to = http::make_url(w.url("stock"));

    SUBCASE("with a certificate (from files)") {
        const auto dir =
            std::filesystem::temp_directory_path() / ("dtx_tls_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir);
        const auto write = [&](const char* name, const std::string& text) {
            std::ofstream(dir / name) << text;
            return (dir / name).string();
        };
        http::client_tls_options o;
        o.ca_file = write("ca.pem", certificates().ca.cert_pem);
        o.certificate_chain_file = write("client.pem", certificates().client.cert_pem);
        o.private_key_file = write("client.key", certificates().client.key_pem);
        http::client client(w.ioc.get_executor(), {.tls = http::make_client_tls(o)});
        CHECK(w.run(client.post(to, try_query, R"({"qty":1})")).status == 200);
        CHECK(w.calls() == 1);
        std::filesystem::remove_all(dir);
    }
    SUBCASE("without a certificate") {
        http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
        const std::string e = w.error_of(client.post(to, try_query, R"({"qty":1})"));
        CAPTURE(e);
        CHECK(contains(e, w.url("stock")));
        CHECK(w.calls() == 0);
    }
    SUBCASE("with a certificate from another CA") {
        http::client client(w.ioc.get_executor(), {.tls = trusting_tls(&certificates().untrusted)});
        CHECK(!w.error_of(client.post(to, try_query, R"({"qty":1})")).empty());
        CHECK(w.calls() == 0);
    }
}

TEST_CASE("TLS settings name a file they cannot load") {
    http::client_tls_options o;
    o.ca_file = "/nonexistent/ca.pem";
    CHECK_THROWS_WITH_AS(http::make_client_tls(o), doctest::Contains("/nonexistent/ca.pem"),
                         std::invalid_argument);
    http::client_tls_options half;
    half.certificate_chain_file = "client.pem";
    CHECK_THROWS_AS(http::make_client_tls(half), std::invalid_argument);
}

TEST_CASE("the bearer token is checked over TLS") {
    tls_world w;
    w.start({.bearer_token = "s3cret"});
    const http::url to = http::make_url(w.url("stock"));
    http::client anonymous(w.ioc.get_executor(), {.tls = trusting_tls()});
    const http::response refused = w.run(anonymous.post(to, try_query, R"({"qty":1})"));
    CHECK(refused.status == 401);
    CHECK(contains(refused.body, "unauthorized"));
    http::client wrong(w.ioc.get_executor(), {.bearer_token = "s3cre", .tls = trusting_tls()});
    CHECK(w.run(wrong.post(to, try_query, R"({"qty":1})")).status == 401);
    CHECK(w.calls() == 0);
    http::client right(w.ioc.get_executor(), {.bearer_token = "s3cret", .tls = trusting_tls()});
    CHECK(w.run(right.post(to, try_query, R"({"qty":1})")).status == 200);
    CHECK(w.calls() == 1);
}

TEST_CASE("a coordinator runs TCC over https participants, and recovery finds them through "
          "url_resolver") {
    tls_world w;
    w.start({.bearer_token = "s3cret"});
    memory_journal journal{memory_journal::options{.keep_ended = true}};
    const std::string stock = w.url("stock");
    const std::string payment = w.url("payment");
    const http::client_options client_options{.bearer_token = "s3cret", .tls = trusting_tls()};

    http::client first_client(w.ioc.get_executor(), client_options);
    participant_registry first_urls;
    first_urls.set_resolver(http::url_resolver(first_client));
    std::string gid;
    {
        coordinator coord(w.ioc.get_executor(), journal, first_urls, fast_options());
        const tx_result ok = w.run(coord.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch(stock, qty_payload{2});
            co_await tx.add_branch(stock, qty_payload{3});
        }));
        CHECK(ok.status == tx_status::confirmed);
        CHECK(w.stock.taken() == 5);
        CHECK(first_client.stats().connections <= 2); // the two confirms may go out at once
        CHECK(first_client.stats().reused > 0);

        // A second coordinator stops right after its confirm decision is durable, as if killed.
        bool stopped = false;
        auto opts = halting_after_decision(gid, stopped);
        coordinator doomed(w.ioc.get_executor(), journal, first_urls, opts);
        asio::co_spawn(w.ioc, doomed.tcc([&](tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch(stock, qty_payload{7});
        }),
                       asio::detached);
        REQUIRE(w.run_until([&] { return stopped; }));
    }
    REQUIRE(!gid.empty());
    CHECK(journal.get(gid)->status == tx_status::confirming);
    CHECK(w.stock.reserved() == 7);

    // A new process: a new client, a registry that knows nothing but the URL resolver.
    http::client client(w.ioc.get_executor(), client_options);
    participant_registry urls;
    urls.set_resolver(http::url_resolver(client));
    coordinator coord(w.ioc.get_executor(), journal, urls, fast_options());
    const recovery_report rep = w.run(coord.recover(recovery_options{.take_over = true}));
    CHECK(rep.finished == 1);
    CHECK(journal.get(gid)->status == tx_status::confirmed);
    CHECK(w.stock.reserved() == 0);
    CHECK(w.stock.taken() == 12);
    CHECK(client.stats().connections == 1);
    CHECK(client.stats().requests == 1);

    // Through a client without TLS settings, an https participant is an unknown result (which a
    // coordinator retries) that says why.
    http::client plain(w.ioc.get_executor(), {.bearer_token = "s3cret"});
    participant_registry plain_urls;
    plain_urls.set_resolver(http::url_resolver(plain));
    participant* p = plain_urls.find(payment);
    REQUIRE(p != nullptr);
    const nlohmann::json payload{{"qty", 1}};
    const branch_request call{"g-plain", "01", branch_op::action, payload, {}};
    try {
        w.run(p->call(call));
        FAIL("an https participant was called without TLS");
    } catch (const dtx::error& e) {
        CHECK(e.code() == errc::branch_error);
        CHECK(contains(e.what(), "gid g-plain branch 01 action"));
        CHECK(contains(e.what(), "no TLS settings"));
    }
    CHECK(w.payment_calls == 0);
}

TEST_CASE("graceful shutdown with TLS connections: idle ones get close_notify, requests in flight "
          "finish") {
    tls_world w;
    w.start();
    const http::url to = http::make_url(w.url("stock"));

    // An idle kept-alive TLS connection, written by hand so that its close can be seen.
    ssl::context ctx(ssl::context::tls_client);
    ctx.add_certificate_authority(asio::buffer(certificates().ca.cert_pem));
    ctx.set_verify_mode(ssl::verify_peer);
    ssl::stream<tcp::socket> idle(w.ioc, ctx);
    bool idle_ready = false;
    boost::system::error_code idle_end;
    bool idle_ended = false;
    beast::flat_buffer idle_buffer;
    beast::http::response<beast::http::string_body> idle_answer;
    asio::co_spawn(
        w.ioc,
        [&]() -> asio::awaitable<void> {
            co_await idle.next_layer().async_connect(
                {asio::ip::make_address("127.0.0.1"), w.server->port()}, asio::use_awaitable);
            co_await idle.async_handshake(ssl::stream_base::client, asio::use_awaitable);
            beast::http::request<beast::http::string_body> req{beast::http::verb::post,
                                                               "/dtx/stock?" + try_query, 11};
            req.set(beast::http::field::host, "127.0.0.1");
            req.body() = R"({"qty":1})";
            req.prepare_payload();
            co_await beast::http::async_write(idle, req, asio::use_awaitable);
            co_await beast::http::async_read(idle, idle_buffer, idle_answer, asio::use_awaitable);
            idle_ready = true;
            std::array<char, 16> more;
            auto [ec, n] = co_await idle.async_read_some(asio::buffer(more),
                                                         asio::as_tuple(asio::use_awaitable));
            idle_end = ec;
            idle_ended = true;
        },
        asio::detached);
    REQUIRE(w.run_until([&] { return idle_ready; }));
    CHECK(idle_answer.result_int() == 200);
    CHECK(idle_answer.keep_alive());

    // A request in flight.
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    std::optional<http::response> busy;
    asio::co_spawn(w.ioc, client.post(http::make_url(w.url("slow")), try_query, R"({"qty":1})"),
                   [&](std::exception_ptr e, http::response r) {
                       REQUIRE(!e);
                       busy = std::move(r);
                   });
    REQUIRE(w.run_until([&] { return w.waiting == 1; }));

    bool stopped = false;
    asio::co_spawn(w.ioc, w.server->async_stop(10s), [&](std::exception_ptr) { stopped = true; });
    w.stopped = true;
    REQUIRE(w.run_until([&] { return idle_ended; }));
    CHECK(idle_end == asio::error::eof); // a TLS close_notify, not a truncated stream
    CHECK(!stopped);
    CHECK(!busy);

    for (auto* g : w.gates)
        g->cancel();
    REQUIRE(w.run_until([&] { return stopped && busy; }));
    CHECK(busy->status == 200);
    CHECK(w.server->connections() == 0);
    CHECK(client.idle_connections() == 0); // the answer said Connection: close
}

TEST_CASE("async_stop called twice, at once and after the end: both callers complete") {
    tls_world w;
    w.start();
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    bool answered = false;
    asio::co_spawn(
        w.ioc, client.post(http::make_url(w.url("slow")), try_query, R"({"qty":1})"),
        [&](std::exception_ptr e, http::response r) { answered = !e && r.status == 200; });
    REQUIRE(w.run_until([&] { return w.waiting == 1; }));

    int completed = 0;
    asio::co_spawn(w.ioc, w.server->async_stop(10s),
                   [&](std::exception_ptr e) { completed += e ? 100 : 1; });
    asio::co_spawn(w.ioc, w.server->async_stop(10s),
                   [&](std::exception_ptr e) { completed += e ? 100 : 1; });
    w.stopped = true;
    w.run_for(300ms); // neither completes while the request runs
    CHECK(completed == 0);
    CHECK(w.server->connections() == 1);

    for (auto* g : w.gates)
        g->cancel();
    REQUIRE(w.run_until([&] { return completed >= 2 && answered; }));
    CHECK(completed == 2);
    CHECK(w.server->connections() == 0);
    w.run(w.server->async_stop(10s)); // after the end: at once
    CHECK(w.server->connections() == 0);
}

TEST_CASE("the client ends the TLS connections it closes with close_notify") {
    tls_world w;
    const auto ctx = server_context(certificates().server);
    tcp::acceptor acceptor(w.ioc, {asio::ip::make_address("127.0.0.1"), 0});
    const http::url to = http::make_url(
        "https://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/x");

    // A bare TLS server: answers one request (keeping the connection alive or not), then reads on
    // and tells how the client ended the connection.
    const auto serve_one = [&](bool keep_alive) -> asio::awaitable<boost::system::error_code> {
        ssl::stream<tcp::socket> stream(co_await acceptor.async_accept(asio::use_awaitable), *ctx);
        co_await stream.async_handshake(ssl::stream_base::server, asio::use_awaitable);
        beast::flat_buffer buffer;
        beast::http::request<beast::http::string_body> req;
        co_await beast::http::async_read(stream, buffer, req, asio::use_awaitable);
        beast::http::response<beast::http::string_body> res{beast::http::status::ok, 11};
        res.body() = R"({"dtm_result":"SUCCESS"})";
        res.keep_alive(keep_alive);
        res.prepare_payload();
        co_await beast::http::async_write(stream, res, asio::use_awaitable);
        beast::http::request<beast::http::string_body> next;
        auto [ec, n] = co_await beast::http::async_read(stream, buffer, next,
                                                        asio::as_tuple(asio::use_awaitable));
        co_return ec;
    };
    http::client client(w.ioc.get_executor(), {.tls = trusting_tls()});
    for (const bool keep_alive : {true, false}) {
        CAPTURE(keep_alive);
        std::optional<boost::system::error_code> end;
        asio::co_spawn(w.ioc, serve_one(keep_alive),
                       [&](std::exception_ptr e, boost::system::error_code ec) {
                           REQUIRE(!e);
                           end = ec;
                       });
        CHECK(w.run(client.post(to, try_query, "{}")).status == 200);
        CHECK(client.idle_connections() == (keep_alive ? 1u : 0u));
        client.close_idle(); // a pooled connection; the other was closed after its answer
        REQUIRE(w.run_until([&] { return end.has_value(); }));
        CHECK(*end != ssl::error::stream_truncated);
        CHECK(*end == beast::http::error::end_of_stream); // close_notify, then the TCP close
    }
}
