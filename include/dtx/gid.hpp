#ifndef DTX_GID_HPP
#define DTX_GID_HPP

// Global transaction ids.
//
// A gid is UUIDv7 text (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter that keeps
// ids from one thread strictly increasing within a millisecond, then 62 random bits. So gids sort
// by creation time as plain strings (which keeps journal indexes append-mostly) and are unique
// across processes without coordination.

#include <dtx/version.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>

DTX_NAMESPACE_BEGIN

namespace detail {

inline std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/// A fast per-thread random source, seeded once per thread from std::random_device.
inline std::uint64_t random_u64() noexcept {
    thread_local std::uint64_t state = [] {
        std::random_device rd;
        return (std::uint64_t{rd()} << 32) ^ rd() ^
               static_cast<std::uint64_t>(
                   std::chrono::steady_clock::now().time_since_epoch().count());
    }();
    return splitmix64(state);
}

} // namespace detail

/// Makes a new gid: 36 characters of lowercase UUIDv7 text.
inline std::string make_gid() {
    struct clock_state {
        std::uint64_t last_ms = 0;
        std::uint16_t counter = 0;
    };
    thread_local clock_state st;

    auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
    if (ms > st.last_ms) {
        st.last_ms = ms;
        // Start each millisecond at a random point in the lower half so the counter has room.
        st.counter = static_cast<std::uint16_t>(detail::random_u64() & 0x7ff);
    } else if (++st.counter > 0xfff) {
        // 2048+ ids in one millisecond on one thread (or the clock went back): borrow the next ms.
        ++st.last_ms;
        st.counter = 0;
    }

    std::array<std::uint8_t, 16> b{};
    for (int i = 0; i < 6; ++i)
        b[i] = static_cast<std::uint8_t>(st.last_ms >> (40 - 8 * i));
    b[6] = static_cast<std::uint8_t>(0x70 | (st.counter >> 8));
    b[7] = static_cast<std::uint8_t>(st.counter);
    std::uint64_t r = detail::random_u64();
    b[8] = static_cast<std::uint8_t>(0x80 | ((r >> 56) & 0x3f));
    for (int i = 9; i < 16; ++i)
        b[i] = static_cast<std::uint8_t>(r >> (8 * (15 - i)));

    static constexpr char hex[] = "0123456789abcdef";
    std::string s(36, '-');
    std::size_t pos = 0;
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            ++pos;
        s[pos++] = hex[b[i] >> 4];
        s[pos++] = hex[b[i] & 0xf];
    }
    return s;
}

DTX_NAMESPACE_END

#endif
