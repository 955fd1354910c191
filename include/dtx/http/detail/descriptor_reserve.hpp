#ifndef DTX_HTTP_DETAIL_DESCRIPTOR_RESERVE_HPP
#define DTX_HTTP_DETAIL_DESCRIPTOR_RESERVE_HPP

// The server and the process's file descriptor limit: default connection caps that fit it, and
// one descriptor held in reserve so that a server out of descriptors can still accept a client to
// answer it 503, instead of leaving it waiting in the backlog.

#include <dtx/detail/config.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <cstddef>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#define DTX_HTTP_POSIX_DESCRIPTORS 1
#endif

DTX_NAMESPACE_BEGIN
namespace http::detail {

/// Connections served at once when the options leave it to the server (see server_options).
inline constexpr std::size_t max_connections_cap = 10'000;

/// The soft limit on open descriptors of this process (RLIMIT_NOFILE), or 0 if there is none
/// or it cannot be known.
inline std::size_t descriptor_limit() noexcept {
#ifdef DTX_HTTP_POSIX_DESCRIPTORS
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY)
        return 0;
    return static_cast<std::size_t>(limit.rlim_cur);
#else
    return 0;
#endif
}

/// The default of max_connections for a process allowed `descriptors` open descriptors (0: no
/// limit): three quarters of them, at most max_connections_cap; the other quarter stays for the
/// rest of the process (journal files, outgoing calls, the 503 answers to refused clients).
inline std::size_t default_max_connections(std::size_t descriptors) noexcept {
    if (descriptors == 0)
        return max_connections_cap;
    return std::clamp<std::size_t>(descriptors / 4 * 3, 1, max_connections_cap);
}

/// Refused connections answered 503 at once, at most (beyond, they are closed without an answer):
/// they hold descriptors too, for the answer and a short linger.
inline std::size_t max_refusing(std::size_t max_connections) noexcept {
    return std::max<std::size_t>(8, max_connections / 16);
}

/// One descriptor held in reserve (open on /dev/null). When an accept fails for want of
/// descriptors, the server frees it, accepts the waiting client with it, answers 503 and closes
/// that connection; then takes it again as soon as a descriptor is free.
class descriptor_reserve {
public:
    descriptor_reserve() = default;
    descriptor_reserve(const descriptor_reserve&) = delete;
    descriptor_reserve& operator=(const descriptor_reserve&) = delete;
    ~descriptor_reserve() { release(); }

    bool held() const noexcept { return fd_ != -1; }

    /// Takes the descriptor if it is not held: false if the process has none to spare.
    bool take() noexcept {
#ifdef DTX_HTTP_POSIX_DESCRIPTORS
        if (fd_ == -1)
            fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
#endif
        return held();
    }

    void release() noexcept {
#ifdef DTX_HTTP_POSIX_DESCRIPTORS
        if (fd_ != -1)
            ::close(fd_);
#endif
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

} // namespace http::detail
DTX_NAMESPACE_END

#undef DTX_HTTP_POSIX_DESCRIPTORS

#endif
