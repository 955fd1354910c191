#ifndef DTX_PUBLISHER_HPP
#define DTX_PUBLISHER_HPP

// A publisher hands messages to their destination for the relay (<dtx/relay.hpp>): over HTTP
// (dtx::http::publisher, <dtx/http/publisher.hpp>), to a broker, or to a function in the same
// process. The relay gives it a batch of envelopes, at most one per key, so it may send them all
// at once; it answers each with a delivery_result, in the batch's order:
//   - delivered: the destination has it (for a consumer with an inbox: processed, or a duplicate
//     of one processed before). The relay marks it delivered, and only then.
//   - retry later: not now (a network error, a timeout, a consumer that is down or answered 5xx);
//     the relay tries again on its delivery_schedule, and parks it after the last attempt.
//   - rejected: it can never be delivered (a consumer answered that it cannot process it); the
//     relay parks it as a dead letter at once.
// A publisher that throws answers "retry later" for the whole batch, with the exception's text.
//
// function_publisher turns a coroutine `asio::awaitable<delivery_result>(const envelope&)` into a
// publisher that runs it for every envelope of a batch concurrently:
//
//   auto print = [](const dtx::envelope& e) -> asio::awaitable<dtx::delivery_result> {
//       std::cout << e.id << "\n";
//       co_return dtx::delivery_result::delivered();
//   };
//   dtx::function_publisher local(print);

#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
#include <dtx/detail/when_all.hpp>
#include <dtx/envelope.hpp>
#include <dtx/version.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN

enum class delivery_status : std::uint8_t { delivered, retry, rejected };

/// What became of one message handed to a publisher.
struct delivery_result {
    delivery_status status = delivery_status::retry;
    std::string error{}; ///< why it was not delivered, valid UTF-8 (kept as the last error)

    static delivery_result delivered() { return {delivery_status::delivered, {}}; }
    static delivery_result retry_later(std::string_view why) {
        return {delivery_status::retry, detail::safe_text(why, 2048)};
    }
    static delivery_result rejected(std::string_view why) {
        return {delivery_status::rejected, detail::safe_text(why, 2048)};
    }
};

class publisher {
public:
    virtual ~publisher() = default;
    /// Delivers `batch` (at most one envelope per key) and answers one result per envelope, in
    /// order.
    virtual asio::awaitable<std::vector<delivery_result>>
    publish(std::span<const envelope> batch) = 0;
};

/// A publisher that runs a coroutine for each envelope of a batch, all at once.
class function_publisher : public publisher {
public:
    using function = std::function<asio::awaitable<delivery_result>(const envelope&)>;

    explicit function_publisher(function fn)
        : fn_(std::move(fn)) {}

    asio::awaitable<std::vector<delivery_result>>
    publish(std::span<const envelope> batch) override {
        co_return co_await publish_each(batch, fn_);
    }

    /// Runs `fn` for each envelope of `batch` concurrently; one that throws answers retry later.
    template <class Fn>
    static asio::awaitable<std::vector<delivery_result>>
    publish_each(std::span<const envelope> batch, Fn& fn) {
        std::vector<delivery_result> results(batch.size());
        asio::cancellation_signal own;
        // A named lambda: g++ 12 destroys one built in a co_await expression twice.
        auto one = [&](std::size_t i, asio::cancellation_signal&) -> asio::awaitable<void> {
            try {
                results[i] = co_await fn(batch[i]);
            } catch (const std::exception& e) {
                results[i] = delivery_result::retry_later(e.what());
            }
        };
        co_await detail::when_all(own, batch.size(), one);
        co_return results;
    }

private:
    function fn_;
};

DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
