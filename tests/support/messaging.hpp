#ifndef DTX_TESTS_SUPPORT_MESSAGING_HPP
#define DTX_TESTS_SUPPORT_MESSAGING_HPP

// What the messages tests share: a temporary directory for their databases, and a wait for a
// condition that lets the io_context run meanwhile.

#include <dtx/detail/config.hpp>
#include <dtx/gid.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <system_error>

namespace dtx::test {

/// A directory of its own under the system's temporary directory, removed with its files.
struct temp_dir {
    std::filesystem::path dir = std::filesystem::temp_directory_path() / ("dtx-msg-" + make_gid());
    temp_dir() { std::filesystem::create_directories(dir); }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    std::string file(const char* name) const { return (dir / name).string(); }
};

/// Awaits until `done()` holds, checking every few milliseconds; false after `limit`.
template <class Pred>
asio::awaitable<bool> wait_until(Pred done, std::chrono::milliseconds limit) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > end)
            co_return false;
        t.expires_after(std::chrono::milliseconds(2));
        co_await t.async_wait(asio::use_awaitable);
    }
    co_return true;
}

} // namespace dtx::test

#endif
