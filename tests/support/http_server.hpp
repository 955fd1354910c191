#ifndef DTX_TESTS_SUPPORT_HTTP_SERVER_HPP
#define DTX_TESTS_SUPPORT_HTTP_SERVER_HPP

// A dtx::http::server on a thread of its own, with participants that answer what their payload
// asks for, and a raw HTTP client that speaks bytes to it, for the tests of the server's
// participants (test_http_server.cpp) and of its application routes (test_http_routes.cpp).

#include <dtx/dtx.hpp>
#include <dtx/http/server.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <sys/time.h>

namespace dtx::test {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// ---- participants ------------------------------------------------------------------------------

/// What a participant received.
struct received {
    std::string participant;
    std::string gid;
    std::string branch_id;
    branch_op op;
    nlohmann::json payload;
    std::string traceparent;
};

/// Handlers that answer what the payload asks for: {"answer": "success" | "failure" | "pending" |
/// "throw" | "wait" | "stubborn"} (anything else: success; "failure" only to a try or action).
/// "wait" holds the call until the test releases it (or it is cancelled); "stubborn" ignores
/// cancellation and waits for the release.
class participants_under_test {
public:
    participants_under_test() {
        registry.add_tcc("stock", {.on_try = handler("stock"),
                                   .on_confirm = handler("stock"),
                                   .on_cancel = handler("stock")});
        registry.add_saga("payment",
                          {.on_action = handler("payment"), .on_compensate = handler("payment")});
        registry.add_tcc("red apples", {.on_try = handler("red apples"),
                                        .on_confirm = handler("red apples"),
                                        .on_cancel = handler("red apples")});
    }

    std::vector<received> calls() const {
        const std::lock_guard lock(mutex_);
        return calls_;
    }
    /// Calls holding in "wait" right now.
    int waiting() const { return waiting_.load(); }
    /// Calls that were cancelled while they waited.
    int cancelled() const { return cancelled_.load(); }

    /// Lets every waiting call answer success (call on the server's thread).
    void release() {
        released_ = true;
        for (auto* t : gates_)
            t->cancel();
    }

    participant_registry registry;

private:
    branch_handler handler(std::string name) {
        return [this, name](const branch_request& r) -> asio::awaitable<outcome> {
            {
                const std::lock_guard lock(mutex_);
                calls_.push_back({name, std::string(r.gid), std::string(r.branch_id), r.op,
                                  r.payload, std::string(r.traceparent)});
            }
            const std::string answer = r.payload.is_object() && r.payload.contains("answer")
                                           ? r.payload["answer"].get<std::string>()
                                           : "";
            const bool first_phase = r.op == branch_op::try_ || r.op == branch_op::action;
            if (answer == "failure" && first_phase)
                co_return failure(r.payload.value("message", "out of stock"));
            if (answer == "pending")
                co_return pending("still working");
            if (answer == "throw")
                throw std::runtime_error(r.payload.value("message", "FAILURE inside the handler"));
            if (answer == "wait")
                co_await wait();
            if (answer == "stubborn") {
                co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
                co_await wait();
            }
            co_return success();
        };
    }

    asio::awaitable<void> wait() {
        asio::steady_timer gate(co_await asio::this_coro::executor,
                                std::chrono::steady_clock::time_point::max());
        gates_.push_back(&gate);
        ++waiting_;
        co_await gate.async_wait(asio::as_tuple(asio::use_awaitable));
        --waiting_;
        gates_.erase(std::find(gates_.begin(), gates_.end(), &gate));
        if (!released_) {
            ++cancelled_;
            throw boost::system::system_error(asio::error::operation_aborted, "wait cancelled");
        }
    }

    mutable std::mutex mutex_;
    std::vector<received> calls_;
    std::vector<asio::steady_timer*> gates_; // server thread only
    bool released_ = false;                  // server thread only
    std::atomic<int> waiting_{0};
    std::atomic<int> cancelled_{0};
};

/// Polls `done` until it holds (at most 10 s).
template <class F>
bool eventually(F done) {
    for (int i = 0; i < 10'000; ++i) {
        if (done())
            return true;
        std::this_thread::sleep_for(1ms);
    }
    return done();
}

// ---- a server on a thread of its own -----------------------------------------------------------

class running_server {
public:
    /// A server with the options `o`, and the application routes that `setup` adds; without
    /// `participants`, a server of application routes only.
    explicit running_server(http::server_options o = {},
                            const std::function<void(http::server&)>& setup = {},
                            bool participants = true) {
        o.on_request = [this](const http::log_record& r) {
            const std::lock_guard lock(log_mutex_);
            log_.push_back({std::string(r.method), std::string(r.path), std::string(r.participant),
                            std::string(r.gid), std::string(r.branch_id), r.op, r.status,
                            std::string(r.error), std::string(r.exception),
                            std::string(r.traceparent), std::string(r.route)});
        };
        if (participants)
            server_.emplace(ioc_, parts.registry, std::move(o));
        else
            server_.emplace(ioc_, std::move(o));
        if (setup)
            setup(*server_);
        server_->start();
        thread_ = std::thread([this] { ioc_.run(); });
    }
    ~running_server() {
        if (!stopped_)
            stop(0ms);
        work_.reset();
        thread_.join();
    }

    std::uint16_t port() const { return server_->port(); }
    const http::server_options& options() const { return server_->options(); }

    /// Runs `f` on the server's thread and returns its result.
    template <class F>
    auto on_server(F f) {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto result = task.get_future();
        asio::post(ioc_, [&task] { task(); });
        return result.get();
    }

    /// Starts async_stop(grace) on the server's thread; returns once it has closed the listener.
    std::future<void> begin_stop(std::chrono::milliseconds grace) {
        auto done = std::make_shared<std::promise<void>>();
        auto fut = done->get_future();
        on_server([&] {
            asio::co_spawn(ioc_, server_->async_stop(grace),
                           [done](std::exception_ptr) { done->set_value(); });
            return 0;
        });
        on_server([] { return 0; }); // the stop's first steps ran before this
        stopped_ = true;
        return fut;
    }
    void stop(std::chrono::milliseconds grace) { begin_stop(grace).get(); }

    /// Lets every call waiting in a handler answer.
    void release_waiting() {
        on_server([this] {
            parts.release();
            return 0;
        });
    }

    struct log_entry {
        std::string method, path, participant, gid, branch_id;
        std::optional<branch_op> op;
        unsigned status;
        std::string error, exception, traceparent, route;
    };
    std::vector<log_entry> log() const {
        const std::lock_guard lock(log_mutex_);
        return log_;
    }

    participants_under_test parts;

private:
    asio::io_context ioc_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
        ioc_.get_executor()};
    std::optional<http::server> server_;
    std::thread thread_;
    bool stopped_ = false;
    mutable std::mutex log_mutex_;
    std::vector<log_entry> log_;
};

// ---- a raw client ------------------------------------------------------------------------------

using answer = beast::http::response<beast::http::string_body>;

/// Reads from a socket that give up after its receive timeout (SO_RCVTIMEO), with an error: Asio's
/// own reads wait in poll() without a limit once a receive times out.
struct timed_reads {
    tcp::socket& socket;

    template <class Buffers>
    std::size_t read_some(const Buffers& buffers, boost::system::error_code& ec) {
        const asio::mutable_buffer b = *asio::buffer_sequence_begin(buffers);
        ec = {};
        if (b.size() == 0)
            return 0;
        const ssize_t n = ::recv(socket.native_handle(), b.data(), b.size(), 0);
        if (n > 0)
            return static_cast<std::size_t>(n);
        ec = n == 0 ? boost::system::error_code(asio::error::eof)
                    : boost::system::error_code(errno, boost::system::system_category());
        return 0;
    }

    template <class Buffers>
    std::size_t read_some(const Buffers& buffers) {
        boost::system::error_code ec;
        const std::size_t n = read_some(buffers, ec);
        if (ec)
            throw boost::system::system_error(ec);
        return n;
    }
};

/// Gives `socket` a receive timeout of 10 s: a server that never answers fails the test (through
/// timed_reads) instead of hanging it.
inline void limit_reads(tcp::socket& socket) {
    timeval tv{10, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

class raw_client {
public:
    explicit raw_client(std::uint16_t port) {
        socket_.connect({asio::ip::make_address("127.0.0.1"), port});
        limit_reads(socket_);
    }

    void send(std::string_view bytes) {
        asio::write(socket_, asio::buffer(bytes.data(), bytes.size()));
    }

    answer read() {
        answer a;
        timed_reads reads{socket_};
        beast::http::read(reads, buffer_, a);
        return a;
    }

    answer exchange(std::string_view bytes) {
        send(bytes);
        return read();
    }

    /// True if the server closed the connection (what it sends before the close is dropped).
    bool closed() {
        boost::system::error_code ec;
        std::array<char, 512> sink;
        timed_reads reads{socket_};
        while (!ec)
            reads.read_some(asio::buffer(sink), ec);
        return ec == asio::error::eof || ec == asio::error::connection_reset;
    }

    void close() { socket_.close(); }

private:
    asio::io_context io_;
    tcp::socket socket_{io_};
    beast::flat_buffer buffer_;
};

/// A request as a coordinator sends it.
inline std::string post(std::string_view target, std::string_view body,
                        std::string_view extra_headers = "") {
    std::string r = "POST " + std::string(target) +
                    " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    r += extra_headers;
    r += "\r\n";
    r += body;
    return r;
}

inline std::string get(std::string_view target, std::string_view extra_headers = "") {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
           std::string(extra_headers) + "\r\n";
}

inline std::string call(std::string_view participant, std::string_view query,
                        std::string_view body = R"({"qty":1})") {
    return post("/dtx/" + std::string(participant) + "?" + std::string(query), body);
}

inline const std::string try_query = "gid=g1&trans_type=tcc&branch_id=01&op=try";

/// Sends each of `clients` a call that waits in its handler; returns once all of them wait.
inline void hold_in_handlers(running_server& s, std::initializer_list<raw_client*> clients) {
    for (raw_client* c : clients)
        c->send(call("stock", try_query, R"({"answer":"wait"})"));
    REQUIRE(eventually([&] { return s.parts.waiting() == static_cast<int>(clients.size()); }));
}

/// The error code of an error answer's body.
inline std::string error_of(const answer& a) {
    const auto j = nlohmann::json::parse(a.body(), nullptr, false);
    REQUIRE_MESSAGE(j.is_object(), a.body());
    CHECK(j["message"].is_string());
    return j.value("error", "");
}

} // namespace dtx::test

#endif
