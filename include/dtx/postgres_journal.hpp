#ifndef DTX_POSTGRES_JOURNAL_HPP
#define DTX_POSTGRES_JOURNAL_HPP

// The journal for several coordinator processes sharing one PostgreSQL database.
//
//   dtx::postgres_journal journal({.conninfo = "host=127.0.0.1 dbname=orders user=orders"});
//
// - Group commit: a thread of the journal's own holds the connection; the writes queued by every
//   coroutine meanwhile go to the server as one statement, `SELECT dtx_apply($1::jsonb, now)`,
//   which applies them in order in one transaction: one round trip and one commit (one WAL flush)
//   per batch. A transaction is one row, its branches in it: a write is an INSERT (a begin) or a
//   conditional UPDATE of that row, which checks the status and the lease owner before it
//   changes anything, so a refused write needs no subtransaction. A batch whose writes concern
//   different transactions takes one INSERT and one UPDATE for all of them. Only the end changes
//   an indexed column; the other updates are HOT (no new index entries).
// - Recovery in any number of coordinator processes claims due transactions with
//   `FOR UPDATE SKIP LOCKED` and a lease (owner, expiry); a coordinator renews the lease while it
//   drives a transaction, so no transaction is driven by two instances at once, and a dead
//   instance's transactions are taken over once its leases have expired.
// - The schema (tables dtx_transaction and dtx_meta, the view dtx_branch, the functions
//   dtx_apply, dtx_claim, dtx_find) is created or migrated on open under an advisory lock; a
//   database migrated by a newer dtx is refused with errc::journal_version.
// - A lost connection fails the batch in flight (journal_failed, with libpq's message) and is
//   re-established for the next one.
//
// Link with libpq (CMake: dtx::postgres). The layout is in docs/journal.md.

#include <atomic>
#include <initializer_list>
#include <utility>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <dtx/error.hpp>
#include <dtx/journal.hpp>
#include <dtx/postgres_db.hpp>
#include <dtx/detail/batch_queue.hpp>

namespace dtx {

struct postgres_journal_options {
    /// libpq connection string, e.g. "host=127.0.0.1 port=5432 dbname=orders user=orders".
    std::string conninfo{};
    /// Most writes sent in one statement (one transaction, one commit).
    std::size_t max_batch = 512;
    /// Ended transactions are kept this long, then deleted.
    std::chrono::milliseconds retention = std::chrono::hours(24);
    std::size_t cleanup_batch = 1000;
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
};

struct postgres_journal_stats {
    std::uint64_t commits = 0;        ///< statements (transactions) that committed
    std::uint64_t operations = 0;     ///< writes, claims and reads in them
    std::uint64_t failed_batches = 0; ///< batches that failed (connection lost, server error)
    std::uint64_t reconnects = 0;
    std::uint64_t cleaned = 0;
};


class postgres_journal final : public journal {
public:
    static constexpr int schema_version = 3;
    /// Version of the server-side write functions (dtx_meta key `journal_functions`); they are
    /// replaced on open when older, never when newer.
    static constexpr int functions_version = 4;

    /// Connects, and creates or migrates the schema. Throws dtx::error (journal_failed,
    /// journal_version) naming the reason.
    explicit postgres_journal(postgres_journal_options o)
        : opts_(std::move(o)), db_(opts_.conninfo), ready_(migrate()),
          queue_({opts_.max_batch, opts_.cleanup_interval}, [this](std::vector<std::unique_ptr<job>>& b) { execute(b); },
                 [this] { cleanup(); }) {}

    postgres_journal(const postgres_journal&) = delete;
    postgres_journal& operator=(const postgres_journal&) = delete;
    ~postgres_journal() override = default;

    asio::awaitable<bool> write(const journal_write& w, durability d) override {
        auto j = std::make_unique<job>(job::kind::write, encode(w));
        if (d == durability::lazy) {
            push(j);
            co_return true;
        }
        auto start = [this, j = std::move(j)](detail::deliver_fn<nlohmann::json> deliver) mutable {
            j->deliver = std::move(deliver);
            push(j);
        };
        const nlohmann::json answer = co_await detail::await_result<nlohmann::json>(std::move(start));
        co_return answer.get<bool>();
    }

    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        nlohmann::json args = {{"owner", r.owner},
                               {"now_ms", to_ms(r.now)},
                               {"lease_ms", r.lease.count()},
                               {"limit", r.limit},
                               {"take_over", r.take_over}};
        auto j = std::make_unique<job>(job::kind::claim, args.dump());
        auto start = [this, j = std::move(j)](detail::deliver_fn<nlohmann::json> deliver) mutable {
            j->deliver = std::move(deliver);
            push(j);
        };
        const nlohmann::json answer = co_await detail::await_result<nlohmann::json>(std::move(start));
        std::vector<transaction_record> out;
        for (const auto& t : answer) out.push_back(decode(t));
        co_return out;
    }

    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        auto j = std::make_unique<job>(job::kind::find, std::string(gid));
        auto start = [this, j = std::move(j)](detail::deliver_fn<nlohmann::json> deliver) mutable {
            j->deliver = std::move(deliver);
            push(j);
        };
        const nlohmann::json answer = co_await detail::await_result<nlohmann::json>(std::move(start));
        std::optional<transaction_record> out;
        if (!answer.is_null()) out = decode(answer);
        co_return out;
    }

    postgres_journal_stats stats() const {
        std::lock_guard lock(mu_);
        return stats_;
    }

private:
    struct job {
        enum class kind { write, claim, find };
        job(kind k, std::string a) : what(k), arg(std::move(a)) {}
        kind what;
        std::string arg;                          // JSON text of the write / claim, or the gid
        detail::deliver_fn<nlohmann::json> deliver; // empty for lazy writes
    };

    static std::int64_t to_ms(wall_clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    }

    /// A write as the JSON object dtx_apply takes (made on the caller's thread).
    static std::string encode(const journal_write& w) {
        nlohmann::json j = {{"gid", w.gid}};
        if (w.begin) {
            j["begin"] = {{"kind", to_string(w.begin->kind)}, {"deadline_ms", to_ms(w.begin->deadline)}};
            if (w.begin->forward) j["begin"]["forward"] = true;
        }
        if (!w.new_branches.empty()) {
            auto& arr = j["branches"] = nlohmann::json::array();
            for (const auto& b : w.new_branches)
                arr.push_back({{"id", b.branch_id}, {"participant", b.participant}, {"payload", b.payload.json()}});
        }
        if (w.status) j["status"] = {{"from", to_string(w.status->from)}, {"to", to_string(w.status->to)}};
        if (!w.done_branches.empty()) j["done"] = w.done_branches;
        if (w.lease) j["lease"] = {{"owner", w.lease->owner}, {"until_ms", to_ms(w.lease->until)}};
        return j.dump();
    }

    transaction_record decode(const nlohmann::json& t) const {
        transaction_record rec;
        rec.gid = t.at("gid").get<std::string>();
        auto kind = parse_tx_kind(t.at("kind").get<std::string>());
        auto status = parse_tx_status(t.at("status").get<std::string>());
        if (!kind || !status) throw error(errc::journal_corrupt, "PostgreSQL journal: gid " + rec.gid + ": unreadable kind or status");
        rec.kind = *kind;
        rec.status = *status;
        rec.deadline = wall_clock::time_point(std::chrono::duration_cast<wall_clock::duration>(
            std::chrono::milliseconds(t.at("deadline_ms").get<std::int64_t>())));
        rec.forward = t.value("forward", false);
        for (const auto& b : t.at("branches"))
            rec.branches.push_back(branch_record{b.at("id").get<std::string>(), b.at("participant").get<std::string>(),
                                                 b.at("payload"), b.value("done", false)});
        return rec;
    }

    void push(std::unique_ptr<job>& j) {
        if (!queue_.push(j)) throw error(errc::journal_failed, "PostgreSQL journal: closing");
    }

    /// One batch: every write in one dtx_apply statement; claims and reads one statement each.
    void execute(std::vector<std::unique_ptr<job>>& batch) {
        std::string writes = "[";
        std::vector<job*> write_jobs;
        for (auto& j : batch)
            if (j->what == job::kind::write) {
                if (!write_jobs.empty()) writes += ',';
                writes += j->arg;
                write_jobs.push_back(j.get());
            }
        writes += ']';
        std::uint64_t committed = 0, failed = 0, reconnected = 0;
        auto fail = [&](std::vector<job*> jobs, std::exception_ptr e) {
            ++failed;
            for (job* j : jobs)
                if (j->deliver) j->deliver(e, nullptr);
        };
        try {
            reconnected += db_.ensure();
        } catch (...) {
            std::vector<job*> all;
            for (auto& j : batch) all.push_back(j.get());
            fail(all, std::current_exception());
            count(0, 1, reconnected, 0);
            return;
        }
        if (!write_jobs.empty()) {
            try {
                const std::string now = std::to_string(to_ms(wall_clock::now()));
                auto r = db_.exec("SELECT dtx_apply($1::jsonb, $2::bigint)", {writes, now});
                const auto answers = nlohmann::json::parse(r.text(0, 0));
                ++committed;
                for (std::size_t i = 0; i < write_jobs.size(); ++i) {
                    job* j = write_jobs[i];
                    if (!j->deliver) continue;
                    const std::string a = answers.at(i).get<std::string>();
                    if (a == "ok" || a == "refused")
                        j->deliver(nullptr, a == "ok");
                    else
                        j->deliver(std::make_exception_ptr(refusal(a, *j)), nullptr);
                }
            } catch (...) {
                fail(write_jobs, std::current_exception());
            }
        }
        for (auto& j : batch) {
            if (j->what == job::kind::write) continue;
            try {
                auto r = j->what == job::kind::claim ? db_.exec("SELECT dtx_claim($1::jsonb)", {j->arg})
                                                      : db_.exec("SELECT dtx_find($1)", {j->arg});
                ++committed;
                j->deliver(nullptr, r.is_null(0, 0) ? nlohmann::json() : nlohmann::json::parse(r.text(0, 0)));
            } catch (...) {
                fail({j.get()}, std::current_exception());
            }
        }
        count(committed, failed, reconnected, batch.size());
    }

    void count(std::uint64_t committed, std::uint64_t failed, std::uint64_t reconnected, std::size_t ops) {
        std::lock_guard lock(mu_);
        stats_.commits += committed;
        stats_.failed_batches += failed;
        stats_.reconnects += reconnected;
        if (!failed) stats_.operations += ops;
    }

    static error refusal(const std::string& answer, const job& j) {
        const auto gid = nlohmann::json::parse(j.arg).at("gid").get<std::string>();
        if (answer == "duplicate_gid") return error(errc::duplicate_gid, "gid " + gid + ": already in the journal");
        if (answer == "unknown_transaction") return error(errc::unknown_transaction, "gid " + gid + ": not in the journal");
        return error(errc::journal_failed, "gid " + gid + ": " + answer);
    }

    void cleanup() {
        const std::string before = std::to_string(to_ms(wall_clock::now() - opts_.retention));
        const std::string batch = std::to_string(opts_.cleanup_batch);
        for (;;) {
            db_.ensure();
            auto r = db_.exec("DELETE FROM dtx_transaction WHERE gid IN (SELECT gid FROM dtx_transaction WHERE "
                              "ended_ms IS NOT NULL AND ended_ms < $1::bigint LIMIT $2::int FOR UPDATE SKIP LOCKED) "
                              "RETURNING 1",
                              {before, batch});
            {
                std::lock_guard lock(mu_);
                stats_.cleaned += static_cast<std::uint64_t>(r.rows());
            }
            if (r.rows() < static_cast<int>(opts_.cleanup_batch) || !queue_.idle()) break;
        }
    }

    bool migrate();

    postgres_journal_options opts_;
    postgres::connection db_;
    bool ready_;
    mutable std::mutex mu_;
    postgres_journal_stats stats_;
    detail::batch_queue<std::unique_ptr<job>> queue_; // last: drained before the rest goes
};

} // namespace dtx

#include <dtx/impl/postgres_journal_schema.hpp>

#endif
