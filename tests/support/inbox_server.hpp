#ifndef DTX_TESTS_SUPPORT_INBOX_SERVER_HPP
#define DTX_TESTS_SUPPORT_INBOX_SERVER_HPP

// A message consumer over HTTP written with plain Beast (no dtx server code): each POST body goes
// to `consume(body)`, and the answer is 200, 422 or 503 as its consume_result says, which is what
// an application route in front of an inbox does.

#include <dtx/consume_result.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace dtx::test {

class inbox_server {
public:
    using consume_fn = std::function<asio::awaitable<consume_result>(std::string_view body)>;

    /// Listens on 127.0.0.1:`port` (0: any free port).
    inbox_server(asio::io_context& ioc, consume_fn consume, unsigned short port = 0)
        : acceptor_(ioc)
        , consume_(std::move(consume)) {
        const asio::ip::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port);
        acceptor_.open(at.protocol());
        acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
        acceptor_.bind(at);
        acceptor_.listen();
        asio::co_spawn(ioc, accept(), asio::detached);
    }

    std::string url() const {
        return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/events";
    }
    void close() { acceptor_.close(); }

    int unavailable = 0;                  ///< answer 503 to this many requests first
    std::vector<std::string> message_ids; ///< the Dtx-Message-Id header of each request

private:
    asio::awaitable<void> accept() {
        for (;;) {
            auto [ec, socket] =
                co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec)
                co_return;
            asio::co_spawn(acceptor_.get_executor(), serve(std::move(socket)), asio::detached);
        }
    }

    asio::awaitable<void> serve(asio::ip::tcp::socket socket) {
        namespace bhttp = boost::beast::http;
        boost::beast::flat_buffer buffer;
        for (;;) {
            bhttp::request<bhttp::string_body> req;
            auto [ec, n] = co_await bhttp::async_read(socket, buffer, req,
                                                      asio::as_tuple(asio::use_awaitable));
            if (ec)
                co_return;
            message_ids.emplace_back(req["Dtx-Message-Id"]);
            bhttp::response<bhttp::string_body> res;
            if (unavailable > 0) {
                --unavailable;
                res.result(503);
                res.body() = "starting";
            } else {
                const std::string_view body = req.body();
                consume_result r = co_await consume_(body);
                res.result(r.status == consume_status::rejected ? 422
                           : r.status == consume_status::retry  ? 503
                                                                : 200);
                res.body() = std::string(to_string(r.status)) + " " + r.error;
            }
            res.keep_alive(req.keep_alive());
            res.prepare_payload();
            auto [wec, w] =
                co_await bhttp::async_write(socket, res, asio::as_tuple(asio::use_awaitable));
            if (wec)
                co_return;
        }
    }

    asio::ip::tcp::acceptor acceptor_;
    consume_fn consume_;
};

} // namespace dtx::test

#endif
