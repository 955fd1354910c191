#ifndef DTX_HTTP_DETAIL_ENDPOINT_GATE_HPP
#define DTX_HTTP_DETAIL_ENDPOINT_GATE_HPP

// At most `limit` requests at once per endpoint; the others wait their turn, first come first
// served. The publisher uses it so that the relay's many deliveries in flight reuse the client's
// kept-alive connections instead of opening one each and closing it after one request.
//
// For one executor that does not run handlers concurrently (the relay's), like the client.

#include <dtx/detail/config.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cstddef>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

DTX_NAMESPACE_BEGIN
namespace http::detail {

class endpoint_gate {
    struct waiter;

public:
    /// `limit` requests at once per endpoint (at least 1).
    explicit endpoint_gate(std::size_t limit)
        : limit_(std::max<std::size_t>(limit, 1)) {}
    endpoint_gate(const endpoint_gate&) = delete;
    endpoint_gate& operator=(const endpoint_gate&) = delete;

    /// A place taken for one request; given back when destroyed.
    class place {
    public:
        place(place&& o) noexcept
            : gate_(std::exchange(o.gate_, nullptr))
            , endpoint_(std::move(o.endpoint_)) {}
        place& operator=(place&&) = delete;
        ~place() {
            if (gate_)
                gate_->leave(endpoint_);
        }

    private:
        friend class endpoint_gate;
        place(endpoint_gate* g, std::string endpoint)
            : gate_(g)
            , endpoint_(std::move(endpoint)) {}
        endpoint_gate* gate_;
        std::string endpoint_;
    };

    /// Awaits a place for a request to `endpoint`. Throws boost::system::system_error if the
    /// wait is cancelled.
    asio::awaitable<place> enter(std::string endpoint) {
        lane& l = lanes_[endpoint];
        if (l.busy < limit_ && l.waiting.empty()) {
            ++l.busy;
            co_return place(this, std::move(endpoint));
        }
        waiter w(co_await asio::this_coro::executor);
        l.waiting.push_back(&w);
        // However this frame ends (granted, cancelled, or destroyed with its executor), the
        // queue no longer points at `w`, and a place handed to it is not lost.
        struct guard {
            endpoint_gate& gate;
            const std::string& endpoint;
            waiter& w;
            bool kept = false;
            ~guard() {
                if (w.queued)
                    gate.unqueue(endpoint, w);
                else if (w.granted && !kept)
                    gate.leave(endpoint);
            }
        } g{*this, endpoint, w};
        // leave() hands its place over by cancelling the wait; otherwise the wait was cancelled.
        auto [ec] = co_await w.timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!w.granted)
            throw boost::system::system_error(ec ? ec : asio::error::operation_aborted,
                                              "waiting for a connection to " + endpoint);
        g.kept = true;
        co_return place(this, endpoint);
    }

private:
    struct waiter {
        explicit waiter(const asio::any_io_executor& ex)
            : timer(ex, asio::steady_timer::time_point::max()) {}
        asio::steady_timer timer;
        bool queued = true;
        bool granted = false;
    };
    struct lane {
        std::size_t busy = 0;
        std::deque<waiter*> waiting;
    };

    /// Gives a place back: to the first waiter, or to the lane.
    void leave(const std::string& endpoint) {
        auto it = lanes_.find(endpoint);
        if (it == lanes_.end())
            return;
        lane& l = it->second;
        if (!l.waiting.empty()) {
            waiter* next = l.waiting.front();
            l.waiting.pop_front();
            next->queued = false;
            next->granted = true; // busy stays: the place passes to it
            next->timer.cancel();
            return;
        }
        if (--l.busy == 0)
            lanes_.erase(it);
    }

    void unqueue(const std::string& endpoint, waiter& w) {
        auto it = lanes_.find(endpoint);
        if (it == lanes_.end())
            return;
        auto& q = it->second.waiting;
        q.erase(std::remove(q.begin(), q.end(), &w), q.end());
        w.queued = false;
        if (it->second.busy == 0 && q.empty())
            lanes_.erase(it);
    }

    std::size_t limit_;
    std::unordered_map<std::string, lane> lanes_;
};

} // namespace http::detail
DTX_NAMESPACE_END

#endif
