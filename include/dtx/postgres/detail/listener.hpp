#ifndef DTX_POSTGRES_DETAIL_LISTENER_HPP
#define DTX_POSTGRES_DETAIL_LISTENER_HPP

// A connection of its own that LISTENs on a channel, on a thread of its own, and calls a function
// for each batch of notifications: how a commit in another process wakes this one. A NOTIFY sent
// in a transaction is delivered when, and only if, it commits. A lost connection is
// re-established (then the function is called once: notifications may have been missed).

#include <dtx/detail/storage.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/version.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <poll.h>
#include <unistd.h>

DTX_NAMESPACE_BEGIN
namespace detail {

class pg_listener {
public:
    /// Starts listening on `channel` (a plain identifier) before it returns; `notified()` runs on
    /// the listener's thread. Throws dtx::error if it cannot connect.
    pg_listener(const std::string& conninfo, std::string channel, std::function<void()> notified)
        : db_(std::make_unique<postgres::connection>(conninfo, storage_role::participant))
        , listen_("LISTEN " + std::move(channel))
        , notified_(std::move(notified)) {
        db_->exec(listen_.c_str());
        if (::pipe(stop_) != 0)
            throw db_->failure("cannot create the listener's pipe");
        thread_ = std::thread([this] { loop(); });
    }
    pg_listener(const pg_listener&) = delete;
    pg_listener& operator=(const pg_listener&) = delete;
    ~pg_listener() {
        const char c = 0;
        [[maybe_unused]] auto n = ::write(stop_[1], &c, 1);
        thread_.join();
        ::close(stop_[0]);
        ::close(stop_[1]);
    }

    std::uint64_t notifications() const noexcept { return notifications_.load(); }
    std::uint64_t reconnects() const noexcept { return reconnects_.load(); }

private:
    void loop() {
        for (;;) {
            // While the connection is lost, only the stop pipe is watched, and a reconnection is
            // tried every second.
            PGconn* c = db_->get();
            const int sock = PQstatus(c) == CONNECTION_OK ? PQsocket(c) : -1;
            pollfd fds[2] = {{stop_[0], POLLIN, 0}, {sock, POLLIN, 0}};
            const int n = ::poll(fds, sock < 0 ? 1 : 2, sock < 0 ? 1000 : -1);
            if (n < 0 && errno != EINTR)
                return;
            if (fds[0].revents != 0)
                return; // stopping
            if (sock < 0) {
                recover();
                continue;
            }
            if (n <= 0 || fds[1].revents == 0)
                continue;
            if (PQconsumeInput(c) == 0) {
                recover();
                continue;
            }
            bool any = false;
            while (PGnotify* note = PQnotifies(c)) {
                PQfreemem(note);
                any = true;
                ++notifications_;
            }
            if (any)
                notified_();
        }
    }

    /// Reconnects and listens again, or leaves the connection lost for the next round.
    void recover() {
        try {
            PQreset(db_->get());
            if (PQstatus(db_->get()) != CONNECTION_OK)
                return;
            db_->exec(listen_.c_str());
            ++reconnects_;
            notified_();
        } catch (...) { // still down: tried again in a second
        }
    }

    std::unique_ptr<postgres::connection> db_;
    std::string listen_;
    std::function<void()> notified_;
    int stop_[2] = {-1, -1};
    std::atomic<std::uint64_t> notifications_{0};
    std::atomic<std::uint64_t> reconnects_{0};
    std::thread thread_; // last: started once the rest is ready
};

} // namespace detail
DTX_NAMESPACE_END

#endif
