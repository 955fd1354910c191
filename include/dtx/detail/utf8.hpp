#ifndef DTX_DETAIL_UTF8_HPP
#define DTX_DETAIL_UTF8_HPP

// Text that came from outside (a participant's answer, a gid, a handler's exception) is made
// valid UTF-8 here before dtx stores, logs or returns it: JSON libraries refuse invalid UTF-8
// (nlohmann's dump() throws), so one bad byte in a stored reason would break every later read of
// it. Text meant for a log also has its control characters escaped, so that it cannot start a
// line of its own (a forged log entry).

#include <dtx/version.hpp>

#include <cstddef>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace detail {

/// The length (1 to 4) of the well-formed UTF-8 sequence at the start of `s`, or 0 if it does
/// not start with one. Well-formed as Unicode's table 3-7 says: no overlong forms, no surrogates,
/// nothing above U+10FFFF.
inline std::size_t utf8_sequence_length(std::string_view s) noexcept {
    if (s.empty())
        return 0;
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const auto tail = [&](std::size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
    const unsigned char lead = b(0);
    if (lead < 0x80)
        return 1;
    if (lead < 0xC2 || lead > 0xF4)
        return 0;
    if (s.size() < 2)
        return 0;
    const unsigned char second = b(1);
    if (lead < 0xE0)
        return tail(1) ? 2 : 0;
    // The second byte's range excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
    const unsigned char low = lead == 0xE0 ? 0xA0 : lead == 0xF0 ? 0x90 : 0x80;
    const unsigned char high = lead == 0xED ? 0x9F : lead == 0xF4 ? 0x8F : 0xBF;
    if (second < low || second > high)
        return 0;
    if (lead < 0xF0)
        return tail(2) ? 3 : 0;
    return tail(2) && tail(3) ? 4 : 0;
}

/// The code point of the well-formed sequence of `length` bytes at the start of `s`.
inline char32_t utf8_code_point(std::string_view s, std::size_t length) noexcept {
    const auto b = [&](std::size_t i) {
        return static_cast<char32_t>(static_cast<unsigned char>(s[i]));
    };
    switch (length) {
    case 1:
        return b(0);
    case 2:
        return (b(0) & 0x1F) << 6 | (b(1) & 0x3F);
    case 3:
        return (b(0) & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F);
    default:
        return (b(0) & 0x07) << 18 | (b(1) & 0x3F) << 12 | (b(2) & 0x3F) << 6 | (b(3) & 0x3F);
    }
}

/// True if `s` is well-formed UTF-8.
inline bool valid_utf8(std::string_view s) noexcept {
    while (!s.empty()) {
        const std::size_t n = utf8_sequence_length(s);
        if (n == 0)
            return false;
        s.remove_prefix(n);
    }
    return true;
}

/// True for the characters that break a line or control a terminal: C0 controls, DEL, C1
/// controls, and the line and paragraph separators U+2028 and U+2029.
inline bool control_character(char32_t c) noexcept {
    return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029;
}

/// What safe_text does with control characters.
enum class text_controls {
    keep,   ///< kept as they are (a message may have several lines)
    escape, ///< written as \n, \r, \t or \uXXXX (a log line stays one line)
};

/// `s` as valid UTF-8: each byte that does not start a well-formed sequence becomes U+FFFD. At
/// most `max` bytes of it are kept, cut on a character boundary, and "..." is appended when
/// something was cut. With text_controls::escape, control characters are escaped.
inline std::string safe_text(std::string_view s, std::size_t max = std::string_view::npos,
                             text_controls controls = text_controls::keep) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() < max ? s.size() : max);
    while (!s.empty()) {
        const std::size_t n = utf8_sequence_length(s);
        std::string_view piece = n ? s.substr(0, n) : std::string_view("\xEF\xBF\xBD"); // U+FFFD
        char escaped[6];
        if (n && controls == text_controls::escape) {
            const char32_t c = utf8_code_point(s, n);
            if (control_character(c)) {
                const char short_form = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : 0;
                escaped[0] = '\\';
                if (short_form) {
                    escaped[1] = short_form;
                    piece = std::string_view(escaped, 2);
                } else {
                    escaped[1] = 'u';
                    for (int i = 0; i < 4; ++i)
                        escaped[2 + i] = hex[(c >> (12 - 4 * i)) & 15];
                    piece = std::string_view(escaped, 6);
                }
            }
        }
        if (max - out.size() < piece.size()) {
            out += "...";
            return out;
        }
        out += piece;
        s.remove_prefix(n ? n : 1);
    }
    return out;
}

/// `s` itself if it is valid UTF-8 without control characters (no copy), else its safe_text with
/// control characters escaped, kept in `storage`. For log fields that are views.
inline std::string_view loggable_text(std::string_view s, std::string& storage) {
    for (std::string_view rest = s; !rest.empty();) {
        const std::size_t n = utf8_sequence_length(rest);
        if (n == 0 || control_character(utf8_code_point(rest, n))) {
            storage = safe_text(s, std::string_view::npos, text_controls::escape);
            return storage;
        }
        rest.remove_prefix(n);
    }
    return s;
}

} // namespace detail
DTX_NAMESPACE_END

#endif
