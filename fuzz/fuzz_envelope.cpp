// libFuzzer target: arbitrary bytes as a message envelope, as a consumer receives it. The parser
// must answer an envelope or an error (naming a field of the envelope, or none), never throw or
// crash; an envelope it accepts must keep to the limits, and read back the same from its own JSON
// text.
//
//   scripts/fuzz.sh [seconds]     builds with clang (-fsanitize=fuzzer,address,undefined), runs

#include <dtx/envelope.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    dtx::envelope_parse p = dtx::parse_envelope(text);
    if (!p) {
        constexpr std::array<std::string_view, 8> fields{
            "", "id", "destination", "key", "headers", "payload", "attempt", "produced_at"};
        if (p.error.empty() || !dtx::detail::valid_utf8(p.error) ||
            std::find(fields.begin(), fields.end(), p.field) == fields.end())
            std::abort();
        return 0;
    }
    const dtx::envelope& e = *p.value;
    if (!dtx::valid_gid(e.id) || e.destination.empty() || e.attempt < 1)
        std::abort();
    dtx::envelope_parse again = dtx::parse_envelope(e.to_json());
    if (!again || again.value->id != e.id || again.value->key != e.key ||
        again.value->destination != e.destination || again.value->headers != e.headers ||
        again.value->payload != e.payload || again.value->attempt != e.attempt ||
        again.value->produced_at != e.produced_at)
        std::abort();
    return 0;
}
