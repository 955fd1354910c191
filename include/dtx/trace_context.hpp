#ifndef DTX_TRACE_CONTEXT_HPP
#define DTX_TRACE_CONTEXT_HPP

// The W3C trace context (https://www.w3.org/TR/trace-context/) of a transaction.
//
// Every branch call of a transaction carries the same `traceparent` value
// (`branch_request::traceparent`; the HTTP transport sends it as the `traceparent` header), so a
// tracing system joins what the participants do to one trace:
//
//   00-<trace id: 32 lowercase hex>-<parent id: 16 lowercase hex>-<flags: 2 hex>
//
// The trace id is the transaction's gid when the gid is UUID text (as the gids dtx makes are), so
// the calls that recovery sends, in any coordinator process, join the trace of the transaction's
// first calls. A transaction started with `tx_options::traceparent` continues the caller's trace
// instead (recovery, which does not know it, falls back to the gid's trace).

#include <dtx/gid.hpp>
#include <dtx/version.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

DTX_NAMESPACE_BEGIN

class trace_context {
public:
    /// Length of a version-00 traceparent value.
    static constexpr std::size_t size = 55;

    /// No trace context: `traceparent()` is empty.
    trace_context() = default;

    /// A new span in the trace of transaction `gid`: the gid's 32 hex digits if it is UUID text,
    /// else a random trace id. The parent id is random; the trace is marked sampled.
    static trace_context for_gid(std::string_view gid) noexcept {
        trace_context t;
        t.start();
        if (uuid_hex(gid, t.text_.data() + 3))
            t.fill_parent_id();
        else
            t.fill_random();
        t.text_[53] = '0';
        t.text_[54] = '1';
        return t;
    }

    /// A new span in the trace of an incoming `traceparent` header value: the same trace id and
    /// flags, a new parent id. Empty if the value is malformed (the W3C rules: lowercase hex, no
    /// all-zero ids, version ff refused, a later version's extra fields ignored).
    static std::optional<trace_context> continuing(std::string_view traceparent) noexcept {
        if (traceparent.size() < size)
            return std::nullopt;
        const std::string_view version = traceparent.substr(0, 2);
        if (!lower_hex(version) || version == "ff")
            return std::nullopt;
        if (version == "00" ? traceparent.size() != size
                            : traceparent.size() > size && traceparent[size] != '-')
            return std::nullopt;
        if (traceparent[2] != '-' || traceparent[35] != '-' || traceparent[52] != '-')
            return std::nullopt;
        const std::string_view trace_id = traceparent.substr(3, 32),
                               parent_id = traceparent.substr(36, 16),
                               flags = traceparent.substr(53, 2);
        if (!lower_hex(trace_id) || all_zero(trace_id) || !lower_hex(parent_id) ||
            all_zero(parent_id) || !lower_hex(flags))
            return std::nullopt;
        trace_context t;
        t.start();
        trace_id.copy(t.text_.data() + 3, trace_id.size());
        t.fill_parent_id();
        flags.copy(t.text_.data() + 53, flags.size());
        return t;
    }

    /// The `traceparent` header value; empty if there is no trace context.
    std::string_view traceparent() const noexcept {
        return text_[0] ? std::string_view(text_.data(), size) : std::string_view{};
    }
    std::string_view trace_id() const noexcept { return traceparent().substr(3, 32); }
    std::string_view parent_id() const noexcept { return traceparent().substr(36, 16); }

    explicit operator bool() const noexcept { return text_[0] != 0; }

private:
    static constexpr char hex[] = "0123456789abcdef";

    static bool lower_hex(std::string_view s) noexcept {
        for (char c : s)
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                return false;
        return true;
    }
    static bool all_zero(std::string_view s) noexcept {
        return s.find_first_not_of('0') == std::string_view::npos;
    }

    /// Writes the 32 hex digits of UUID text `gid` (8-4-4-4-12, either case) to `out`, lowercased.
    static bool uuid_hex(std::string_view gid, char* out) noexcept {
        if (gid.size() != 36)
            return false;
        char digits[32];
        std::size_t n = 0;
        for (std::size_t i = 0; i < gid.size(); ++i) {
            const char c = gid[i];
            if (i == 8 || i == 13 || i == 18 || i == 23) {
                if (c != '-')
                    return false;
                continue;
            }
            const char lower = c >= 'A' && c <= 'F' ? static_cast<char>(c - 'A' + 'a') : c;
            if (!lower_hex(std::string_view(&lower, 1)))
                return false;
            digits[n++] = lower;
        }
        if (all_zero(std::string_view(digits, n)))
            return false;
        std::string_view(digits, n).copy(out, n);
        return true;
    }

    void start() noexcept {
        text_.fill('-');
        text_[0] = '0';
        text_[1] = '0';
    }

    static void fill_hex(char* out, std::size_t digits) noexcept {
        for (;;) {
            std::uint64_t r = detail::random_u64();
            bool zero = true;
            for (std::size_t i = 0; i < digits; ++i) {
                out[i] = hex[(r >> (4 * (i % 16))) & 15];
                zero = zero && out[i] == '0';
                if (i % 16 == 15)
                    r = detail::random_u64();
            }
            if (!zero)
                return;
        }
    }
    void fill_parent_id() noexcept { fill_hex(text_.data() + 36, 16); }
    void fill_random() noexcept {
        fill_hex(text_.data() + 3, 32);
        fill_parent_id();
    }

    std::array<char, size> text_{};
};

DTX_NAMESPACE_END

#endif
