// How results computed on the database threads reach the coroutines waiting for them. The threads
// outlive the io_contexts they deliver to (an outbox may be declared before the io_context of the
// relay that uses it), so once a result is posted they must keep nothing of the waiter's: the last
// copy of a strand released after its io_context was destroyed touches freed memory (ASan sees it).
#include <dtx/detail/batch_queue.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

using namespace dtx;

namespace {

/// Awaits a result that another thread delivers (inside a delivery batch if `batched`) on a strand
/// of `Strand`'s kind; that thread drops its deliver function only after the io_context is gone.
template <class Strand>
int deliver_then_drop_after_io_context(bool batched) {
    std::mutex mu;
    std::condition_variable cv;
    detail::deliver_fn<int> held;
    bool io_gone = false;
    std::thread database([&] {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return static_cast<bool>(held); });
        {
            std::optional<detail::delivery_batch> batch;
            if (batched)
                batch.emplace();
            held(nullptr, 7);
        }
        cv.wait(lock, [&] { return io_gone; });
        held = nullptr; // as the thread does with a finished job
    });
    int got = 0;
    {
        asio::io_context ioc;
        Strand strand(ioc.get_executor());
        auto wait = [&]() -> asio::awaitable<void> {
            got = co_await detail::await_result<int>([&](detail::deliver_fn<int> deliver) {
                std::lock_guard lock(mu);
                held = std::move(deliver);
                cv.notify_all();
            });
        };
        asio::co_spawn(strand, wait(), asio::detached);
        ioc.run(); // returns once the result arrived: the wait kept the io_context busy till then
    }
    {
        std::lock_guard lock(mu);
        io_gone = true;
    }
    cv.notify_all();
    database.join();
    return got;
}

} // namespace

TEST_CASE("batch queue: a database thread keeps nothing of its waiter's strand once the result "
          "is posted") {
    for (bool batched : {false, true}) {
        CAPTURE(batched);
        CHECK(deliver_then_drop_after_io_context<asio::strand<asio::io_context::executor_type>>(
                  batched) == 7);
        CHECK(deliver_then_drop_after_io_context<asio::strand<asio::any_io_executor>>(batched) ==
              7);
    }
}
