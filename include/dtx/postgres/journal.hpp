#ifndef DTX_POSTGRES_JOURNAL_HPP
#define DTX_POSTGRES_JOURNAL_HPP

// The journal for several coordinator processes sharing one PostgreSQL database.
//
//   dtx::postgres::journal journal({.conninfo = "host=127.0.0.1 dbname=orders user=orders"});
//
// - Group commit: a thread of the journal's own holds the connection; the writes queued by every
//   coroutine meanwhile go to the server as one statement, `SELECT dtx_apply($1::jsonb, now)`,
//   which applies them in order in one transaction: one round trip and one commit (one WAL flush)
//   per batch. A transaction is one row, its branches in it: a write is an INSERT (a begin) or a
//   conditional UPDATE of that row, which checks the status and the lease owner before it
//   changes anything, so a refused write needs no subtransaction. A batch whose writes concern
//   different transactions (the journal checks) goes to `dtx_apply_distinct`: one INSERT and one
//   UPDATE for all of them; a batch of one write (low concurrency) calls `dtx_apply_single`, one
//   INSERT or UPDATE without the batch's machinery. Only the end changes an indexed column; the
//   other updates are HOT (no new index entries). The statements are prepared once per session (prepared again if a pooler lost
//   them). With `connections` > 1, each connection has its thread and takes the transactions
//   whose gid hashes to it: a transaction's writes stay in order, and one connection applies
//   its batch while another waits for its commit.
// - Recovery in any number of coordinator processes claims due transactions with
//   `FOR UPDATE SKIP LOCKED` and a lease (owner, expiry); a coordinator renews the lease while it
//   drives a transaction, so no transaction is driven by two instances at once, and a dead
//   instance's transactions are taken over once its leases have expired.
// - The schema (tables dtx_transaction and dtx_meta, the view dtx_branch, the functions
//   dtx_apply, dtx_apply_single, dtx_claim, dtx_find) is created or migrated on open under an
//   advisory lock; a database migrated by a newer dtx is refused with errc::journal_version.
// - A lost connection fails the batch in flight (journal_failed, with libpq's message) and is
//   re-established for the next one.
//
// Link with libpq (CMake: dtx::postgres). The layout is in docs/journal.md.

#include <dtx/detail/batch_queue.hpp>
#include <dtx/detail/storage.hpp>
#include <dtx/error.hpp>
#include <dtx/journal.hpp>
#include <dtx/postgres/connection.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace postgres {

struct journal_options {
    /// libpq connection string, e.g. "host=127.0.0.1 port=5432 dbname=orders user=orders".
    std::string conninfo{};
    /// Most writes sent in one statement (one transaction, one commit).
    std::size_t max_batch = 512;
    /// Ended transactions are kept this long, then deleted.
    std::chrono::milliseconds retention = std::chrono::hours(24);
    std::size_t cleanup_batch = 1000;
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
    /// Run the journal's statements as prepared statements (parsed and planned once per
    /// session). A statement the server has lost (a pooler in transaction mode) is prepared
    /// again; set false when a pooler refuses prepared statements altogether.
    bool prepare_statements = true;
    /// Connections that write, each with a thread of its own. A transaction's writes and reads
    /// always take the same one (by its gid), so they stay in order; while one connection waits
    /// for its commit to be flushed, another can apply its batch. Claims and the cleanup take
    /// the first.
    std::size_t connections = 1;
};

struct journal_stats {
    std::uint64_t commits = 0;        ///< statements (transactions) that committed
    std::uint64_t operations = 0;     ///< writes, claims and reads in them
    std::uint64_t failed_batches = 0; ///< batches that failed (connection lost, server error)
    std::uint64_t reconnects = 0;
    std::uint64_t cleaned = 0;
    std::uint64_t lost_statements = 0; ///< prepared statements the server had lost, prepared again
};

class journal final : public dtx::journal {
public:
    static constexpr int schema_version = 4;
    /// Version of the server-side write functions (dtx_meta key `journal_functions`); they are
    /// replaced on open when older, never when newer.
    static constexpr int functions_version = 6;

    /// Connects, and creates or migrates the schema. Throws dtx::error (journal_failed,
    /// journal_version) naming the reason.
    explicit journal(journal_options o)
        : opts_(std::move(o)) {
        const std::size_t n = std::max<std::size_t>(opts_.connections, 1);
        for (std::size_t i = 0; i < n; ++i)
            shards_.push_back(std::make_unique<shard>(*this, i == 0));
    }

    journal(const journal&) = delete;
    journal& operator=(const journal&) = delete;
    ~journal() override = default;

    asio::awaitable<bool> write(const journal_write& w, durability d) override {
        auto j = std::make_unique<job>(job::kind::write, encode(w), std::string(w.gid));
        shard& to = shard_of(w.gid);
        if (d == durability::lazy) {
            // Not urgent: it waits (briefly) to share the commit of the next sync write, so that
            // write does not wait for a commit of its own.
            push(to, j, false);
            co_return true;
        }
        auto answer_of = submit(to, std::move(j));
        const nlohmann::json answer = co_await std::move(answer_of);
        co_return answer.get<bool>();
    }

    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        // The claim sees every write queued before it, lazy ones too, as with one connection.
        for (std::size_t i = 1; i < shards_.size(); ++i)
            co_await flush(*shards_[i]);
        nlohmann::json args = {{"owner", r.owner},
                               {"now_ms", detail::to_ms(r.now)},
                               {"lease_ms", r.lease.count()},
                               {"limit", r.limit},
                               {"take_over", r.take_over}};
        auto answer_of =
            submit(*shards_.front(), std::make_unique<job>(job::kind::claim, args.dump()));
        const nlohmann::json answer = co_await std::move(answer_of);
        std::vector<transaction_record> out;
        for (const auto& t : answer)
            out.push_back(decode(t));
        co_return out;
    }

    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        auto answer_of =
            submit(shard_of(gid), std::make_unique<job>(job::kind::find, std::string(gid)));
        const nlohmann::json answer = co_await std::move(answer_of);
        std::optional<transaction_record> out;
        if (!answer.is_null())
            out = decode(answer);
        co_return out;
    }

    journal_stats stats() const {
        std::lock_guard lock(mu_);
        return stats_;
    }

private:
    struct job {
        enum class kind { write, claim, find, flush };
        job(kind k, std::string a, std::string g = {})
            : what(k)
            , arg(std::move(a))
            , gid(std::move(g)) {}
        kind what;
        std::string arg; // JSON text of the write / claim, the gid, or empty
        std::string gid; // of a write
        detail::deliver_fn<nlohmann::json> deliver; // empty for lazy writes
    };

    /// A write as the JSON object dtx_apply takes (made on the caller's thread).
    static std::string encode(const journal_write& w) {
        nlohmann::json j = {{"gid", w.gid}};
        if (w.begin) {
            j["begin"] = {{"kind", to_string(w.begin->kind)},
                          {"deadline_ms", detail::to_ms(w.begin->deadline)}};
            if (w.begin->forward)
                j["begin"]["forward"] = true;
        }
        if (!w.new_branches.empty()) {
            auto& arr = j["branches"] = nlohmann::json::array();
            for (const auto& b : w.new_branches)
                arr.push_back({{"id", b.branch_id},
                               {"participant", b.participant},
                               {"payload", b.payload.json()}});
        }
        if (w.status)
            j["status"] = {{"from", to_string(w.status->from)}, {"to", to_string(w.status->to)}};
        if (!w.done_branches.empty())
            j["done"] = w.done_branches;
        if (w.lease)
            j["lease"] = {{"owner", w.lease->owner}, {"until_ms", detail::to_ms(w.lease->until)}};
        return j.dump();
    }

    transaction_record decode(const nlohmann::json& t) const {
        transaction_record rec;
        rec.gid = t.at("gid").get<std::string>();
        auto kind = parse_tx_kind(t.at("kind").get<std::string>());
        auto status = parse_tx_status(t.at("status").get<std::string>());
        if (!kind || !status)
            throw error(errc::journal_corrupt,
                        "PostgreSQL journal: gid " + rec.gid + ": unreadable kind or status");
        rec.kind = *kind;
        rec.status = *status;
        rec.deadline = detail::from_ms(t.at("deadline_ms").get<std::int64_t>());
        rec.forward = t.value("forward", false);
        for (const auto& b : t.at("branches"))
            rec.branches.push_back(branch_record{b.at("id").get<std::string>(),
                                                 b.at("participant").get<std::string>(),
                                                 b.at("payload"), b.value("done", false)});
        return rec;
    }

    /// A connection and the thread that writes through it.
    struct shard {
        shard(journal& j, bool first)
            : db(j.opts_.conninfo, storage_role::journal)
            , ready(set_up(j, db, first))
            , queue(
                  {j.opts_.max_batch, j.opts_.cleanup_interval},
                  [&j, this](std::vector<std::unique_ptr<job>>& b) { j.execute(*this, b); },
                  [&j, this, first] {
                      if (first)
                          j.cleanup(*this);
                  }) {}
        static bool set_up(journal& j, postgres::connection& db, bool first) {
            db.set_prepares(j.opts_.prepare_statements);
            return !first || j.migrate(db); // the first creates or migrates the schema
        }

        postgres::connection db;
        bool ready;
        std::uint64_t lost_statements = 0;               // counted so far (db.lost_statements())
        detail::batch_queue<std::unique_ptr<job>> queue; // last: drained before the rest goes
    };

    shard& shard_of(std::string_view gid) {
        if (shards_.size() == 1)
            return *shards_.front();
        return *shards_[std::hash<std::string_view>{}(gid) % shards_.size()];
    }

    static void push(shard& to, std::unique_ptr<job>& j, bool urgent = true) {
        if (!to.queue.push(j, urgent))
            throw to.db.failure("journal closing");
    }

    /// Queues `j` on `to` and returns its answer. (Not a coroutine: the caller co_awaits the
    /// result in a statement of its own, so no temporary lives across the suspension.)
    static asio::awaitable<nlohmann::json> submit(shard& to, std::unique_ptr<job> j) {
        auto start = [&to, j = std::move(j)](detail::deliver_fn<nlohmann::json> deliver) mutable {
            j->deliver = std::move(deliver);
            push(to, j);
        };
        return detail::await_result<nlohmann::json>(std::move(start));
    }

    /// Returns once `sh` has applied everything queued on it before.
    static asio::awaitable<void> flush(shard& sh) {
        auto answer_of = submit(sh, std::make_unique<job>(job::kind::flush, std::string()));
        co_await std::move(answer_of);
    }

    /// One batch: every write in one dtx_apply statement (dtx_apply_single for one write);
    /// claims and reads one statement each.
    void execute(shard& sh, std::vector<std::unique_ptr<job>>& batch) {
        postgres::connection& db = sh.db;
        std::string writes = "[";
        std::vector<job*> write_jobs;
        for (auto& j : batch)
            if (j->what == job::kind::write) {
                if (!write_jobs.empty())
                    writes += ',';
                writes += j->arg;
                write_jobs.push_back(j.get());
            }
        writes += ']';
        std::uint64_t committed = 0, failed = 0, reconnected = 0;
        auto fail = [&](std::vector<job*> jobs, std::exception_ptr e) {
            ++failed;
            for (job* j : jobs)
                if (j->deliver)
                    j->deliver(e, nullptr);
        };
        try {
            reconnected += db.ensure();
        } catch (...) {
            std::vector<job*> all;
            for (auto& j : batch)
                all.push_back(j.get());
            fail(all, std::current_exception());
            count(sh, 0, 1, reconnected, 0);
            return;
        }
        if (!write_jobs.empty()) {
            try {
                const std::string now = std::to_string(detail::to_ms(wall_clock::now()));
                std::vector<std::string> answers;
                if (write_jobs.size() == 1) {
                    auto r = db.exec_prepared("dtx_apply_single",
                                              "SELECT dtx_apply_single($1::jsonb, $2::bigint)",
                                              {write_jobs.front()->arg, now});
                    answers.emplace_back(r.text(0, 0));
                } else if (distinct_transactions(write_jobs)) {
                    // The usual batch: dtx_apply would check this again on the server, in a query.
                    auto r = db.exec_prepared("dtx_apply_distinct",
                                              "SELECT dtx_apply_distinct($1::jsonb, $2::bigint)",
                                              {writes, now});
                    answers = nlohmann::json::parse(r.text(0, 0)).get<std::vector<std::string>>();
                } else {
                    auto r = db.exec_prepared(
                        "dtx_apply", "SELECT dtx_apply($1::jsonb, $2::bigint)", {writes, now});
                    answers = nlohmann::json::parse(r.text(0, 0)).get<std::vector<std::string>>();
                }
                ++committed;
                if (answers.size() != write_jobs.size())
                    throw error(errc::journal_corrupt,
                                "PostgreSQL journal: " + std::to_string(answers.size()) +
                                    " answers to " + std::to_string(write_jobs.size()) + " writes");
                for (std::size_t i = 0; i < write_jobs.size(); ++i) {
                    job* j = write_jobs[i];
                    if (!j->deliver)
                        continue;
                    const std::string& a = answers[i];
                    if (a == "ok" || a == "refused")
                        j->deliver(nullptr, a == "ok");
                    else
                        j->deliver(std::make_exception_ptr(refusal(a, *j)), nullptr);
                }
            } catch (...) {
                fail(write_jobs, std::current_exception());
            }
        }
        std::size_t flushes = 0;
        for (auto& j : batch) {
            if (j->what == job::kind::write)
                continue;
            if (j->what == job::kind::flush) {
                ++flushes;
                j->deliver(nullptr, nullptr);
                continue;
            }
            try {
                auto r =
                    j->what == job::kind::claim
                        ? db.exec_prepared("dtx_claim", "SELECT dtx_claim($1::jsonb)", {j->arg})
                        : db.exec_prepared("dtx_find", "SELECT dtx_find($1)", {j->arg});
                ++committed;
                j->deliver(nullptr, r.is_null(0, 0) ? nlohmann::json()
                                                    : nlohmann::json::parse(r.text(0, 0)));
            } catch (...) {
                fail({j.get()}, std::current_exception());
            }
        }
        count(sh, committed, failed, reconnected, batch.size() - flushes);
    }

    void count(shard& sh, std::uint64_t committed, std::uint64_t failed, std::uint64_t reconnected,
               std::size_t ops) {
        const std::uint64_t lost =
            sh.db.lost_statements() - std::exchange(sh.lost_statements, sh.db.lost_statements());
        std::lock_guard lock(mu_);
        stats_.commits += committed;
        stats_.failed_batches += failed;
        stats_.reconnects += reconnected;
        stats_.lost_statements += lost;
        if (!failed)
            stats_.operations += ops;
    }

    /// True when no two of the writes concern the same transaction.
    static bool distinct_transactions(const std::vector<job*>& writes) {
        std::vector<std::string_view> gids;
        gids.reserve(writes.size());
        for (const job* j : writes)
            gids.push_back(j->gid);
        std::sort(gids.begin(), gids.end());
        return std::adjacent_find(gids.begin(), gids.end()) == gids.end();
    }

    static error refusal(const std::string& answer, const job& j) {
        const std::string& gid = j.gid;
        if (answer == "duplicate_gid")
            return error(errc::duplicate_gid, "gid " + gid + ": already in the journal");
        if (answer == "unknown_transaction")
            return error(errc::unknown_transaction, "gid " + gid + ": not in the journal");
        return error(errc::journal_failed, "gid " + gid + ": " + answer);
    }

    /// Deletes ended transactions older than the retention, a batch per statement, giving way
    /// to queued writes between batches. Runs on the first connection's thread when it is idle.
    void cleanup(shard& sh) {
        const std::string before =
            std::to_string(detail::to_ms(wall_clock::now() - opts_.retention));
        const std::string batch = std::to_string(opts_.cleanup_batch);
        detail::delete_in_batches(
            opts_.cleanup_batch,
            [&] {
                sh.db.ensure();
                auto r = sh.db.exec("DELETE FROM dtx_transaction WHERE gid IN (SELECT gid FROM "
                                    "dtx_transaction WHERE ended_ms IS NOT NULL AND ended_ms < "
                                    "$1::bigint LIMIT $2::int FOR UPDATE SKIP LOCKED) RETURNING 1",
                                    {before, batch});
                const auto n = static_cast<std::size_t>(r.rows());
                std::lock_guard lock(mu_);
                stats_.cleaned += n;
                return n;
            },
            [&sh] { return !sh.queue.idle(); });
    }

    bool migrate(postgres::connection& db);

    journal_options opts_;
    mutable std::mutex mu_;
    journal_stats stats_;
    std::vector<std::unique_ptr<shard>> shards_; // last: drained before the rest goes
};

} // namespace postgres
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>
#include <dtx/postgres/impl/journal_schema.hpp>

#endif
