#ifndef DTX_HTTP_PROTOCOL_HPP
#define DTX_HTTP_PROTOCOL_HPP

// The HTTP branch protocol (DTM's conventions), without any I/O: what a branch call looks like on
// the wire, and how answers map to outcomes. The server and the client both build on it; so can a
// service with an HTTP stack of its own. docs/protocol.md describes it for curl users.
//
//   POST <participant URL>?gid=<gid>&trans_type=<tcc|saga|msg>&branch_id=<id>&op=<op>
//   Content-Type: application/json
//   <the branch payload>
//
// (DTM sends GET without a body when the payload is empty; the server takes it as a null
// payload.) Ops: tcc try, confirm, cancel; saga action, compensate; msg action, and `msg`, the
// check-back of a 2-phase message, which is always a GET without a body:
//
//   GET <check-back URL>?branch_id=00&gid=<gid>&op=msg&trans_type=msg
//
//   200 {"dtm_result":"SUCCESS"}                      success
//   409 {"dtm_result":"FAILURE","message":"..."}      failure (a business "no")
//   425 {"dtm_result":"ONGOING"}                      pending: ask again later
//   anything else, a timeout, a broken connection      unknown: retried
//
// Answers are read as DTM reads them (client/dtmcli/utils.go, HTTPResp2DtmError): 425 or a body
// containing ONGOING is pending; then 409 or a body containing FAILURE is a failure; then anything
// but exactly 200 is unknown. So error bodies never contain those words and never echo what the
// request sent (which could), and a failure message that holds ONGOING is sent with that word
// escaped inside its JSON string (the same text once parsed), so that DTM too reads a failure.

#include <dtx/detail/utf8.hpp>
#include <dtx/gid.hpp>
#include <dtx/http/detail/request_target.hpp>
#include <dtx/outcome.hpp>
#include <dtx/transaction_status.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

DTX_NAMESPACE_BEGIN
namespace http {

/// Longest gid accepted, in characters: dtx::max_gid_size (<dtx/gid.hpp>).
using dtx::max_gid_size;
/// Longest branch id accepted, in bytes (DTM's are at most 20).
inline constexpr std::size_t max_branch_id_size = 64;

/// The query of a branch call, validated.
struct branch_query {
    std::string gid;
    std::string branch_id;
    tx_kind kind = tx_kind::tcc;
    branch_op op = branch_op::try_;
};

/// Why a request is refused: the HTTP status, a stable code and a message for people. Messages
/// name the parameter, never repeat its value.
struct problem {
    unsigned status = 400;
    std::string code;
    std::string message;
};

namespace detail {

inline void percent_encode_into(std::string& out, std::string_view in) {
    static constexpr char digits[] = "0123456789ABCDEF";
    for (unsigned char c : in) {
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += digits[c >> 4];
            out += digits[c & 15];
        }
    }
}

/// Printable ASCII without spaces: what branch ids may hold.
inline bool valid_id(std::string_view s, std::size_t max) noexcept {
    if (s.empty() || s.size() > max)
        return false;
    for (unsigned char c : s)
        if (c <= 0x20 || c >= 0x7f)
            return false;
    return true;
}

inline problem bad(std::string code, std::string message) {
    return problem{400, std::move(code), std::move(message)};
}

} // namespace detail

/// Parses and validates the query string of a branch call (without the '?'). Parameters other
/// than the four are ignored (DTM sends more); a repeated one is refused.
inline std::variant<branch_query, problem> parse_branch_query(std::string_view query) {
    constexpr std::array<std::string_view, 4> names{"gid", "trans_type", "branch_id", "op"};
    std::array<std::optional<std::string>, 4> values;
    while (const auto pair = detail::next_query_pair(query)) {
        const auto [key, raw] = *pair;
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (key != names[i])
                continue;
            if (values[i])
                return detail::bad("duplicate_parameter", "query parameter '" +
                                                              std::string(names[i]) +
                                                              "' is given twice");
            auto decoded = detail::percent_decode(raw);
            if (!decoded)
                return detail::bad("bad_encoding", "query parameter '" + std::string(names[i]) +
                                                       "' is not valid percent-encoding");
            values[i] = std::move(*decoded);
        }
    }
    for (std::size_t i = 0; i < names.size(); ++i)
        if (!values[i] || values[i]->empty())
            return detail::bad("missing_parameter",
                               "query parameter '" + std::string(names[i]) + "' is missing");

    branch_query q;
    q.gid = std::move(*values[0]);
    if (!valid_gid(q.gid))
        return detail::bad("invalid_gid", "query parameter 'gid' must be 1 to " +
                                              std::to_string(max_gid_size) +
                                              " characters of UTF-8 without control characters");
    const auto kind = parse_tx_kind(*values[1]);
    if (!kind)
        return detail::bad("invalid_trans_type",
                           "query parameter 'trans_type' must be 'tcc', 'saga' or 'msg'");
    q.kind = *kind;
    q.branch_id = std::move(*values[2]);
    if (!detail::valid_id(q.branch_id, max_branch_id_size))
        return detail::bad("invalid_branch_id", "query parameter 'branch_id' must be 1 to " +
                                                    std::to_string(max_branch_id_size) +
                                                    " printable characters without spaces");
    const auto op = parse_branch_op(*values[3]);
    if (!op)
        return detail::bad(
            "invalid_op",
            "query parameter 'op' must be one of try, confirm, cancel, action, compensate, msg");
    if (!belongs_to(*op, q.kind))
        return detail::bad("op_mismatch",
                           "query parameter 'op' does not belong to 'trans_type' (tcc: try, "
                           "confirm, cancel; saga: action, compensate; msg: action, msg)");
    q.op = *op;
    return q;
}

/// The query string of a branch call (without the '?') of a transaction of kind `kind`.
inline std::string branch_query_string(std::string_view gid, std::string_view branch_id,
                                       branch_op op, tx_kind kind) {
    std::string q;
    q.reserve(64 + gid.size() + branch_id.size());
    q += "gid=";
    detail::percent_encode_into(q, gid);
    q += "&trans_type=";
    q += to_string(kind);
    q += "&branch_id=";
    detail::percent_encode_into(q, branch_id);
    q += "&op=";
    q += to_string(op);
    return q;
}

/// The same, of the transaction kind the operation belongs to first (kind_of).
inline std::string branch_query_string(std::string_view gid, std::string_view branch_id,
                                       branch_op op) {
    return branch_query_string(gid, branch_id, op, kind_of(op));
}

/// A JSON string literal of `s` (quotes included), escaped for JSON. A byte of `s` that does not
/// start a well-formed UTF-8 sequence is written as U+FFFD, so the literal is always valid JSON.
inline std::string json_quote(std::string_view s) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = "\"";
    while (!s.empty()) {
        const std::size_t n = dtx::detail::utf8_sequence_length(s);
        const unsigned char c = static_cast<unsigned char>(s.front());
        if (n == 0) {
            out += "\xEF\xBF\xBD"; // U+FFFD
        } else if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20) {
            out += "\\u00";
            out += digits[c >> 4];
            out += digits[c & 15];
        } else {
            out += s.substr(0, n);
        }
        s.remove_prefix(n ? n : 1);
    }
    out += '"';
    return out;
}

/// An HTTP answer: status and JSON body.
struct answer {
    unsigned status;
    std::string body;
};

namespace detail {

/// The JSON string literal of a failure message for a 409 body, with every ONGOING
/// written as ONGOIN\u0047, which parses back to the same text but is no longer the word DTM
/// looks for in the body before it looks at the status.
inline std::string failure_message_literal(std::string_view message) {
    std::string quoted = json_quote(message);
    constexpr std::string_view word = "ONGOING";
    for (std::size_t at = quoted.find(word); at != std::string::npos;
         at = quoted.find(word, at + word.size()))
        quoted.replace(at + word.size() - 1, 1, "\\u0047");
    return quoted;
}

/// The text of an answer body's "message" (dtx, DTM's WrapHandler2) or "error" (DTM's
/// WrapHandler) string; `otherwise` if it has neither.
inline std::string answer_message(std::string_view body, std::string otherwise) {
    const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (json.is_object()) {
        for (const char* key : {"message", "error"}) {
            auto it = json.find(key);
            if (it != json.end() && it->is_string())
                return it->get<std::string>(); // valid UTF-8: the parser checked it
        }
    }
    return otherwise;
}

} // namespace detail

/// What a participant server answers for `o`. The failure message goes in the body, as valid
/// UTF-8; a FAILURE inside it changes nothing (the answer is a failure) and an ONGOING inside it
/// is escaped (see failure_message_literal).
inline answer answer_for(const outcome& o) {
    switch (o.kind()) {
    case outcome_kind::success:
        return {200, R"({"dtm_result":"SUCCESS"})"};
    case outcome_kind::failure:
        return {409, R"({"dtm_result":"FAILURE","message":)" +
                         detail::failure_message_literal(o.message()) + "}"};
    case outcome_kind::pending:
        return {425, R"({"dtm_result":"ONGOING"})"};
    }
    return {500, R"({"error":"internal","message":"invalid outcome"})"};
}

/// The body of an error answer (4xx/5xx that are not protocol outcomes).
inline std::string error_body(std::string_view code, std::string_view message) {
    return R"({"error":)" + json_quote(code) + R"(,"message":)" + json_quote(message) + "}";
}

/// How a client reads an answer: the outcome, or empty for unknown (to be retried). In DTM's
/// order (client/dtmcli/utils.go, HTTPResp2DtmError): 425 or a body containing ONGOING is
/// pending; else 409 or a body containing FAILURE is a failure; else anything but exactly 200 is
/// unknown (201 and 204 too). The outcome keeps the participant's message if the body has one.
inline std::optional<outcome> outcome_of(unsigned status, std::string_view body) {
    if (status == 425 || body.find("ONGOING") != std::string_view::npos)
        return pending(detail::answer_message(body, "participant answered ONGOING"));
    if (status == 409 || body.find("FAILURE") != std::string_view::npos)
        return failure(detail::answer_message(body, "participant answered FAILURE"));
    if (status != 200)
        return std::nullopt;
    return success();
}

} // namespace http
DTX_NAMESPACE_END

#endif
