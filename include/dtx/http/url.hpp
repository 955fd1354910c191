#ifndef DTX_HTTP_URL_HPP
#define DTX_HTTP_URL_HPP

// Participant URLs: `http://host[:port][/path][?query]` and `https://...`.
//
// A remote participant is named in the journal by its URL, so a URL is kept as given and parsed
// wherever it is called. The host is a name, an IPv4 address or a bracketed IPv6 address. User
// info (`user:password@`) and fragments are refused: a secret in a URL would be written to the
// journal, and a fragment is never sent. An https:// URL is called only by a client given TLS
// settings (<dtx/http/tls.hpp>).

#include <dtx/version.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

DTX_NAMESPACE_BEGIN
namespace http {

struct url {
    /// A name, an IPv4 address, or an IPv6 address (without its brackets).
    std::string host;
    std::uint16_t port = 80;
    /// Path and query, as the request line sends them; "/" if the URL has no path.
    std::string target = "/";
    /// https://: the connection is TLS.
    bool tls = false;

    /// The scheme's port when the URL names none: 80, or 443 for https.
    std::uint16_t default_port() const noexcept { return tls ? 443 : 80; }
    /// `host:port` (`[v6]:port`).
    std::string endpoint() const { return bracketed_host() + ":" + std::to_string(port); }
    /// The Host header: the endpoint without the default port.
    std::string host_header() const {
        return port == default_port() ? bracketed_host() : endpoint();
    }
    /// `http://` or `https://`.
    std::string_view scheme() const noexcept { return tls ? "https://" : "http://"; }
    /// The URL as text, in a normal form (scheme and host as given, the port only if not the
    /// default).
    std::string text() const { return std::string(scheme()) + host_header() + target; }

    friend bool operator==(const url&, const url&) = default;

private:
    std::string bracketed_host() const {
        return host.find(':') == std::string::npos ? host : "[" + host + "]";
    }
};

namespace detail {

inline bool starts_with_nocase(std::string_view s, std::string_view prefix) noexcept {
    if (s.size() < prefix.size())
        return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
        if (c != prefix[i])
            return false;
    }
    return true;
}

inline bool host_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/// Parses `text` into `out`; returns why it is not a usable URL, or nullptr. The reasons never
/// repeat the text (it may hold something secret).
inline const char* parse_url_into(std::string_view text, url& out) {
    const bool tls = starts_with_nocase(text, "https://");
    if (!tls && !starts_with_nocase(text, "http://"))
        return "not an http:// or https:// URL";
    text.remove_prefix(tls ? 8 : 7);
    const std::size_t end = text.find_first_of("/?#");
    std::string_view authority = text.substr(0, end);
    const std::string_view rest =
        end == std::string_view::npos ? std::string_view{} : text.substr(end);
    if (authority.find('@') != std::string_view::npos)
        return "user info in a URL is not supported";
    if (rest.find('#') != std::string_view::npos)
        return "a URL fragment is not supported";
    for (unsigned char c : rest)
        if (c <= 0x20 || c >= 0x7f)
            return "the path holds a space or a character that is not printable ASCII";

    std::string_view host, port;
    bool has_port = false;
    if (authority.starts_with('[')) {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos)
            return "an IPv6 host lacks its closing ']'";
        host = authority.substr(1, close - 1);
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty() && !after.starts_with(':'))
            return "unexpected characters after an IPv6 host";
        has_port = !after.empty();
        if (has_port)
            port = after.substr(1);
        if (host.empty())
            return "the host is empty";
        for (char c : host)
            if (!(c == ':' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                  (c >= 'A' && c <= 'F')))
                return "an IPv6 host holds a character that is not a hex digit, ':' or '.'";
    } else {
        const std::size_t colon = authority.find(':');
        host = authority.substr(0, colon);
        has_port = colon != std::string_view::npos;
        if (has_port)
            port = authority.substr(colon + 1);
        if (host.empty())
            return "the host is empty";
        for (char c : host)
            if (!host_char(c))
                return "the host holds a character other than letters, digits, '-', '.' and '_'";
    }
    std::uint16_t port_number = tls ? 443 : 80;
    if (has_port) {
        if (port.empty() || port.size() > 5)
            return "the port is not a number from 1 to 65535";
        unsigned value = 0;
        for (char c : port) {
            if (c < '0' || c > '9')
                return "the port is not a number from 1 to 65535";
            value = value * 10 + static_cast<unsigned>(c - '0');
        }
        if (value == 0 || value > 65535)
            return "the port is not a number from 1 to 65535";
        port_number = static_cast<std::uint16_t>(value);
    }
    out.host = std::string(host);
    out.port = port_number;
    out.tls = tls;
    out.target =
        rest.empty() || rest.starts_with('?') ? "/" + std::string(rest) : std::string(rest);
    return nullptr;
}

} // namespace detail

/// The URL `text` means, or empty if it is not a usable http:// or https:// URL.
inline std::optional<url> parse_url(std::string_view text) {
    url u;
    if (detail::parse_url_into(text, u))
        return std::nullopt;
    return u;
}

/// The URL `text` means. Throws std::invalid_argument saying why it is not a usable http:// or
/// https:// URL.
inline url make_url(std::string_view text) {
    url u;
    if (const char* why = detail::parse_url_into(text, u))
        throw std::invalid_argument(std::string("bad participant URL: ") + why);
    return u;
}

} // namespace http
DTX_NAMESPACE_END

#endif
