#ifndef DTX_GID_HPP
#define DTX_GID_HPP

// Global transaction ids.
//
// A gid is UUIDv7 text (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter that keeps
// ids from one thread strictly increasing within a millisecond, then 62 random bits. So gids sort
// by creation time as plain strings (which keeps journal indexes append-mostly) and are unique
// across processes without coordination.
//
// A gid chosen by the caller (tx_options::gid, an order id say) may be any text that valid_gid()
// accepts: what DTM accepts too, so that DTM and dtx services can call each other.

#include <dtx/detail/utf8.hpp>
#include <dtx/version.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

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

/// Longest gid, in characters (DTM stores gids as varchar(128)).
inline constexpr std::size_t max_gid_size = 128;

/// What a gid may hold: 1 to max_gid_size characters of valid UTF-8 without control characters
/// (dtx::detail::control_character); spaces and punctuation are fine. DTM's gids are any text
/// without '\n', '\r' and ';' (it strips those: client/dtmcli/dtmimp/utils.go, Escape), so every
/// gid DTM sends passes, except invalid UTF-8 or other control characters, which dtx keeps out of
/// its journals and logs.
inline bool valid_gid(std::string_view s) noexcept {
    std::size_t characters = 0;
    while (!s.empty()) {
        const std::size_t n = detail::utf8_sequence_length(s);
        if (n == 0 || detail::control_character(detail::utf8_code_point(s, n)) ||
            ++characters > max_gid_size)
            return false;
        s.remove_prefix(n);
    }
    return characters > 0;
}

DTX_NAMESPACE_END

#endif
