#ifndef DTX_DETAIL_OUTBOX_LOGIC_HPP
#define DTX_DETAIL_OUTBOX_LOGIC_HPP

// What every outbox (SQLite's, PostgreSQL's) does to a message before its INSERT, and to the
// columns it reads back: the id, the checks of <dtx/message.hpp>, the JSON texts; and the SQL
// that keeps the claim's cost independent of the messages held back (below), the same text on
// both databases.
//
// Why a claim costs what it claims, not what it passes
// ----------------------------------------------------
// A pending message is claimable when it is due, not leased, and the *head* of its key: no
// earlier message of its key is pending or parked (messages with an empty key are always heads).
// Found by reading pending rows in sequence order and skipping those of held keys, a claim
// costs every row it passes: a key with 100,000 messages behind a dead letter is read by every
// claim (and the relay claims at every commit), draining a backlog of n on one key costs
// O(n^2), and every head waiting for a retry is read again each time. So each row keeps two
// columns up to date instead:
//   - `head`: set at add by one probe of the index on (msg_key, seq) over pending and parked rows
//     ("is any message of this key not yet delivered?"); when a message is delivered or a dead
//     letter discarded, the earliest pending message of its key becomes the head, in the same
//     transaction (outbox_promote_sql). A parked message keeps head set, so requeue (parked back
//     to pending) needs no change: a key has at most one head, and nothing of its key can be
//     claimed while it is parked.
//   - `ready_ms`: when the message may be claimed, max(due time, lease end): set to the due time
//     at add, to the lease end by a claim, to the retry time by a retry, to now by a requeue.
// A partial index on (ready_ms, seq) WHERE state = 0 AND head holds the pending heads by ready
// time: a claim is one range scan of its ready part (`ready_ms <= now`, the oldest first, LIMIT
// max), O(claimed * log n) whatever waits behind the heads or for its time, and the next due
// time is one probe (the smallest ready_ms after now).
// Messages of other keys may be claimed out of sequence order (the older ready time first), which
// the outbox promises nothing about; within a key only the head is ever claimable, so per-key
// order is as before. Each claim's messages are handed to the relay in sequence order.
// The price is paid by add (one index probe, and the new index instead of the old one on pending
// rows: about the same writes) and by settlements (one more indexed statement per message
// delivered). Two other designs were set aside: a table of keys, each row naming its key's head,
// costs add a second row write and makes every add of a key contend for that row; reading the
// first pending message of each key (a skip scan over the key index) still costs every held or
// waiting key at every claim.

#include <dtx/detail/storage.hpp>
#include <dtx/envelope.hpp>
#include <dtx/message.hpp>
#include <dtx/version.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

DTX_NAMESPACE_BEGIN
namespace detail {

/// A message's columns as an outbox stores them.
struct outbox_row {
    std::string payload; ///< JSON text
    std::string headers; ///< JSON object text
    std::int64_t due_ms = 0;
    std::int64_t created_ms = 0;
};

/// Gives `m` an id if it has none, checks it against `limits` and returns its columns. Throws
/// std::invalid_argument (its message starting with `who`) for a message over the limits.
inline outbox_row outbox_columns(message& m, const message_limits& limits, const char* who) {
    if (m.id.empty())
        m.id = make_message_id();
    outbox_row row;
    try {
        row.payload = m.payload.dump();
    } catch (const nlohmann::json::exception&) {
        throw std::invalid_argument(std::string(who) + ": message " + m.id +
                                    ": the payload holds text that is not valid UTF-8");
    }
    if (std::string problem = check_message(m, row.payload.size(), limits); !problem.empty())
        throw std::invalid_argument(std::string(who) + ": message " + m.id + ": " + problem);
    row.headers = m.headers.empty() ? std::string("{}") : nlohmann::json(m.headers).dump();
    row.created_ms = to_ms(std::chrono::system_clock::now());
    row.due_ms = m.deliver_at ? to_ms(*m.deliver_at) : row.created_ms;
    return row;
}

/// The envelope of a stored row; `attempts` as stored.
inline envelope outbox_envelope(std::string_view id, std::string_view destination,
                                std::string_view key, std::string_view headers,
                                std::string_view payload, std::int64_t attempts,
                                std::int64_t created_ms) {
    envelope e;
    e.id = id;
    e.destination = destination;
    e.key = key;
    auto h = nlohmann::json::parse(headers, nullptr, false);
    if (h.is_object())
        for (const auto& [name, value] : h.items())
            if (value.is_string())
                e.headers.emplace(name, value.get<std::string>());
    e.payload = nlohmann::json::parse(payload, nullptr, false);
    e.attempt = static_cast<unsigned>(attempts);
    e.produced_at = created_ms;
    return e;
}

/// The SQL text, true when `key` (an SQL expression: a parameter, a column) is empty or no message
/// of that key is pending or parked; with `before_seq` not empty, only messages whose seq is
/// below it count. Served by the index dtx_outbox_key.
inline std::string outbox_head_sql(std::string_view key, std::string_view before_seq = {}) {
    std::string sql = "(";
    sql.append(key).append(" = '' OR NOT EXISTS (SELECT 1 FROM dtx_outbox e WHERE e.msg_key = ");
    sql.append(key).append(" AND e.state <> 1");
    if (!before_seq.empty())
        sql.append(" AND e.seq < ").append(before_seq);
    return sql + "))";
}

/// The SQL statement that makes the earliest message of the key `key` (an SQL expression) that
/// is not delivered its head, if it is pending and not yet one: run after a message of that key
/// was delivered or a dead letter of it discarded, in the same transaction.
inline std::string outbox_promote_sql(std::string_view key) {
    std::string sql = "UPDATE dtx_outbox SET head = TRUE WHERE seq = (SELECT min(e.seq) FROM "
                      "dtx_outbox e WHERE e.msg_key = ";
    return sql.append(key).append(" AND e.state <> 1) AND state = 0 AND NOT head");
}

/// The statements that bring a dtx_outbox table of schema 1 (the same on both databases) to
/// schema 2: the columns `head` and `ready_ms` computed for the rows there are (in-flight ones
/// ready at their lease's end), the index of heads by ready time instead of the index of pending
/// rows by seq, and the index by key (which PostgreSQL's schema 1 had already).
inline std::vector<std::string> outbox_v2_migration() {
    return {
        "ALTER TABLE dtx_outbox ADD COLUMN head boolean NOT NULL DEFAULT TRUE",
        "ALTER TABLE dtx_outbox ADD COLUMN ready_ms bigint NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS dtx_outbox_key ON dtx_outbox (msg_key, seq) WHERE state <> 1",
        "UPDATE dtx_outbox SET ready_ms = CASE WHEN lease_ms IS NULL OR lease_ms < due_ms THEN "
        "due_ms ELSE lease_ms END, head = " +
            outbox_head_sql("dtx_outbox.msg_key", "dtx_outbox.seq") + " WHERE state <> 1",
        "DROP INDEX IF EXISTS dtx_outbox_pending",
        "CREATE INDEX IF NOT EXISTS dtx_outbox_ready ON dtx_outbox (ready_ms, seq) "
        "WHERE state = 0 AND head",
    };
}

/// The claim's candidates: the heads ready at `now`, those ready the longest first, at most `max`
/// of them (`now`, `max`: SQL expressions, such as the database's parameters).
inline std::string outbox_candidates_sql(std::string_view now, std::string_view max) {
    std::string sql = "SELECT o.seq FROM dtx_outbox o WHERE o.state = 0 AND o.head AND "
                      "o.ready_ms <= ";
    return sql.append(now).append(" ORDER BY o.ready_ms, o.seq LIMIT ").append(max);
}

/// When the next head becomes ready after `now` (an SQL expression): one probe of the index.
inline std::string outbox_next_due_sql(std::string_view now) {
    std::string sql = "SELECT min(o.ready_ms) FROM dtx_outbox o WHERE o.state = 0 AND o.head AND "
                      "o.ready_ms > ";
    return sql.append(now);
}

} // namespace detail
DTX_NAMESPACE_END

#endif
