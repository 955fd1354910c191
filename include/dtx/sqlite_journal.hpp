#ifndef DTX_SQLITE_JOURNAL_HPP
#define DTX_SQLITE_JOURNAL_HPP

// The embedded durable journal: one SQLite file beside the service.
//
//   dtx::sqlite_journal journal({.path = "orders.dtx.db"});
//   dtx::coordinator coord(ioc.get_executor(), journal, participants);
//
// - WAL mode, `synchronous=FULL` by default: a write that completed survives power loss.
//   `synchronous_full = false` selects NORMAL: faster, and a crash of the process still loses
//   nothing, but a power loss or kernel crash may lose the last transactions' writes (the journal
//   stays consistent). Choose it only if the host's storage makes that acceptable.
// - Group commit: one writer thread owns the connection; writes from every coroutine queue up and
//   each batch is one SQLite transaction and one fsync. No io_context thread touches SQLite.
// - The schema is versioned (PRAGMA user_version) and migrated forward on open; a journal written
//   by a newer dtx is refused with errc::journal_version. A file that is not a dtx journal, or is
//   corrupt, is refused with errc::journal_corrupt. Nothing is ever silently dropped.
// - Ended transactions are deleted in batches once older than `retention`.
//
// Link with SQLite3 (CMake: dtx::sqlite). The file layout is in docs/journal.md.

#include <algorithm>
#include <atomic>
#include <functional>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <dtx/error.hpp>
#include <dtx/journal.hpp>
#include <dtx/detail/sqlite_db.hpp>

namespace dtx {

struct sqlite_journal_options {
    /// The database file; created with its schema if missing.
    std::string path{};
    /// FULL (true) or NORMAL (false); see the top of this header.
    bool synchronous_full = true;
    /// How long to wait for a lock held by another connection before failing a batch.
    std::chrono::milliseconds busy_timeout{5'000};
    /// Most writes in one SQLite transaction.
    std::size_t max_batch = 1024;
    /// Ended transactions are kept this long (for inspection), then deleted.
    std::chrono::milliseconds retention = std::chrono::hours(24);
    /// Rows deleted per cleanup statement, so cleanup never holds the writer for long.
    std::size_t cleanup_batch = 1000;
    /// How often the writer looks for ended transactions to delete.
    std::chrono::milliseconds cleanup_interval = std::chrono::minutes(1);
    /// Largest size the file may grow to; a write that would pass it fails with journal_failed
    /// ("database or disk is full") exactly as on a full disk. Empty: no limit.
    std::optional<std::uint64_t> max_size_bytes{};
};

/// Counters for monitoring and benchmarks.
struct sqlite_journal_stats {
    std::uint64_t commits = 0;        ///< SQLite transactions committed (each one fsync with FULL)
    std::uint64_t writes = 0;         ///< journal writes applied
    std::uint64_t failed_batches = 0; ///< batches that could not be committed
    std::uint64_t lazy_lost = 0;      ///< lazy writes in failed batches (their effect: phase 2 repeats)
    std::uint64_t cleaned = 0;        ///< ended transactions deleted
};

class sqlite_journal final : public journal {
public:
    /// The schema version this dtx writes and the newest it reads.
    static constexpr int schema_version = 1;

    /// Opens the journal, migrating its schema. Throws dtx::error (journal_corrupt,
    /// journal_version, journal_failed) with the path and the reason.
    explicit sqlite_journal(sqlite_journal_options o) : opts_(std::move(o)), db_(opts_.path) {
        prepare();
        writer_ = std::thread([this] { writer_loop(); });
    }

    sqlite_journal(const sqlite_journal&) = delete;
    sqlite_journal& operator=(const sqlite_journal&) = delete;

    /// Makes every queued write durable, then closes the file.
    ~sqlite_journal() override {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_one();
        writer_.join();
    }

    asio::awaitable<bool> write(const journal_write& w, durability d) override {
        auto op = std::make_unique<write_op>(w);
        if (d == durability::lazy) {
            op->lazy = true;
            enqueue(std::move(op));
            co_return true;
        }
        co_return co_await submit<bool>(std::move(op));
    }

    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        co_return co_await submit<std::vector<transaction_record>>(std::make_unique<claim_op>(r));
    }

    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        co_return co_await submit<std::optional<transaction_record>>(std::make_unique<find_op>(std::string(gid)));
    }

    sqlite_journal_stats stats() const {
        std::lock_guard lock(mu_);
        return stats_;
    }

    const std::string& path() const noexcept { return opts_.path; }

private:
    // ---- operations queued for the writer -----------------------------------------------------

    struct op_base {
        virtual ~op_base() = default;
        /// Runs inside the batch transaction. An exception aborts the whole batch; an op that
        /// is refused on its own (made no change) records its error and returns.
        virtual void run(sqlite_journal& j) = 0;
        virtual void fail(std::exception_ptr e) = 0;
        /// Hands the result to the waiting coroutine (on its own executor).
        virtual void complete() = 0;
        bool lazy = false;
    };

    template <class R>
    struct result_op : op_base {
        std::function<void(std::exception_ptr, R)> deliver; // posts to the waiter
        std::optional<R> result;
        std::exception_ptr error;
        void fail(std::exception_ptr e) override { error = e; }
        void complete() override {
            if (deliver) deliver(error, error ? R{} : std::move(*result));
        }
    };

    struct stored_branch {
        std::string branch_id;
        std::string participant;
        std::string payload; // JSON text
    };

    struct write_op final : result_op<bool> {
        explicit write_op(const journal_write& w) : gid(w.gid), begin(w.begin), status(w.status) {
            branches.reserve(w.new_branches.size());
            for (const auto& b : w.new_branches) branches.push_back({b.branch_id, b.participant, b.payload->dump()});
            done.assign(w.done_branches.begin(), w.done_branches.end());
        }
        void run(sqlite_journal& j) override { j.apply(*this); }

        std::string gid;
        std::optional<begin_transaction> begin;
        std::vector<stored_branch> branches;
        std::optional<status_change> status;
        std::vector<std::string> done;
    };

    struct claim_op final : result_op<std::vector<transaction_record>> {
        explicit claim_op(const claim_request& r)
            : now(r.now), owner(r.owner), lease(r.lease), limit(r.limit), ignore_deadlines(r.ignore_deadlines) {}
        void run(sqlite_journal& j) override { result = j.do_claim(*this); }

        wall_clock::time_point now;
        std::string owner;
        std::chrono::milliseconds lease;
        std::size_t limit;
        bool ignore_deadlines;
    };

    struct find_op final : result_op<std::optional<transaction_record>> {
        explicit find_op(std::string g) : gid(std::move(g)) {}
        void run(sqlite_journal& j) override { result = j.load(gid); }
        std::string gid;
    };

    template <class R>
    asio::awaitable<R> submit(std::unique_ptr<result_op<R>> op) {
        return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
            [this, op = std::move(op)](auto handler) mutable {
                auto ex = asio::get_associated_executor(handler);
                auto work = std::make_shared<asio::executor_work_guard<decltype(ex)>>(ex);
                auto h = std::make_shared<decltype(handler)>(std::move(handler));
                op->deliver = [ex, work, h](std::exception_ptr e, R r) mutable {
                    asio::post(ex, [h, e, r = std::move(r)]() mutable { std::move(*h)(e, std::move(r)); });
                    work->reset();
                };
                enqueue(std::move(op));
            },
            asio::use_awaitable);
    }

    void enqueue(std::unique_ptr<op_base> op) {
        {
            std::lock_guard lock(mu_);
            if (stopping_) throw error(errc::journal_failed, opts_.path + ": the journal is closing");
            queue_.push_back(std::move(op));
        }
        cv_.notify_one();
    }

    // ---- the writer thread ------------------------------------------------------------------

    void writer_loop() {
        std::vector<std::unique_ptr<op_base>> batch;
        auto next_cleanup = std::chrono::steady_clock::now() + opts_.cleanup_interval;
        for (;;) {
            {
                std::unique_lock lock(mu_);
                cv_.wait_until(lock, next_cleanup, [&] { return !queue_.empty() || stopping_; });
                if (queue_.empty() && stopping_) return;
                while (!queue_.empty() && batch.size() < opts_.max_batch) {
                    batch.push_back(std::move(queue_.front()));
                    queue_.pop_front();
                }
            }
            if (!batch.empty()) execute(batch);
            batch.clear();
            if (std::chrono::steady_clock::now() >= next_cleanup) {
                cleanup();
                next_cleanup = std::chrono::steady_clock::now() + opts_.cleanup_interval;
            }
        }
    }

    void execute(std::vector<std::unique_ptr<op_base>>& batch) {
        std::size_t applied = 0;
        try {
            detail::sqlite::transaction tx(db_);
            for (auto& op : batch) op->run(*this);
            tx.commit();
            applied = batch.size();
        } catch (...) {
            // Nothing of the batch is durable: every op hears why.
            auto e = std::current_exception();
            std::size_t lazy = 0;
            for (auto& op : batch) {
                op->fail(e);
                lazy += op->lazy;
            }
            std::lock_guard lock(mu_);
            ++stats_.failed_batches;
            stats_.lazy_lost += lazy;
        }
        if (applied) {
            std::lock_guard lock(mu_);
            ++stats_.commits;
            stats_.writes += applied;
        }
        for (auto& op : batch) op->complete();
    }

    // ---- schema -----------------------------------------------------------------------------

    void prepare() {
        auto& db = db_;
        db.check(sqlite3_busy_timeout(db.get(), static_cast<int>(opts_.busy_timeout.count())), "busy_timeout");
        int version = 0;
        {
            // The first read of the file: a file that is not a database fails here.
            detail::sqlite::statement v(db, "PRAGMA user_version");
            if (v.step()) version = static_cast<int>(v.integer(0));
        }
        if (version > schema_version)
            throw error(errc::journal_version, opts_.path + ": journal schema version " + std::to_string(version) +
                                                   " is newer than this dtx reads (" +
                                                   std::to_string(schema_version) + "); upgrade dtx");
        {
            detail::sqlite::statement wal(db, "PRAGMA journal_mode=WAL");
            if (!wal.step() || wal.text(0) != "wal")
                throw error(errc::journal_failed, opts_.path + ": cannot switch to WAL mode");
        }
        db.exec(opts_.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        if (opts_.max_size_bytes) {
            std::int64_t page = 4096;
            detail::sqlite::statement ps(db, "PRAGMA page_size");
            if (ps.step()) page = ps.integer(0);
            const auto pages = std::max<std::int64_t>(1, static_cast<std::int64_t>(*opts_.max_size_bytes) / page);
            db.exec(("PRAGMA max_page_count=" + std::to_string(pages)).c_str());
        }
        if (version < 1) {
            detail::sqlite::transaction tx(db);
            // A file with tables of its own but no dtx version is not ours: refuse to touch it.
            detail::sqlite::statement other(db, "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'dtx_%'");
            if (other.step() && other.integer(0) > 0)
                throw error(errc::journal_corrupt, opts_.path + ": not a dtx journal (it holds other tables)");
            db.exec(R"sql(
                CREATE TABLE IF NOT EXISTS dtx_transaction (
                    gid            TEXT PRIMARY KEY,
                    kind           TEXT NOT NULL CHECK (kind IN ('tcc', 'saga')),
                    status         TEXT NOT NULL,
                    deadline_ms    INTEGER NOT NULL,
                    created_ms     INTEGER NOT NULL,
                    ended_ms       INTEGER,
                    lease_owner    TEXT,
                    lease_until_ms INTEGER NOT NULL DEFAULT 0
                ) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS dtx_branch (
                    gid         TEXT NOT NULL,
                    branch_id   TEXT NOT NULL,
                    participant TEXT NOT NULL,
                    payload     TEXT NOT NULL,
                    done        INTEGER NOT NULL DEFAULT 0,
                    UNIQUE (gid, branch_id)
                );
                CREATE INDEX IF NOT EXISTS dtx_transaction_open
                    ON dtx_transaction (lease_until_ms) WHERE ended_ms IS NULL;
                CREATE INDEX IF NOT EXISTS dtx_transaction_ended
                    ON dtx_transaction (ended_ms) WHERE ended_ms IS NOT NULL;
                PRAGMA user_version = 1;
            )sql");
            tx.commit();
        }
        // A quick structural check: a damaged file is refused now, not half-way through recovery.
        detail::sqlite::statement qc(db, "PRAGMA quick_check");
        if (qc.step() && qc.text(0) != "ok")
            throw error(errc::journal_corrupt, opts_.path + ": integrity check failed: " + std::string(qc.text(0)));

        insert_tx_.emplace(db, "INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms) "
                               "VALUES (?, ?, ?, ?, ?)");
        insert_branch_.emplace(db, "INSERT INTO dtx_branch (gid, branch_id, participant, payload) VALUES (?, ?, ?, ?)");
        set_status_.emplace(db, "UPDATE dtx_transaction SET status = ?, ended_ms = ? WHERE gid = ? AND status = ?");
        exists_.emplace(db, "SELECT 1 FROM dtx_transaction WHERE gid = ?");
        set_done_.emplace(db, "UPDATE dtx_branch SET done = 1 WHERE gid = ? AND branch_id = ?");
        select_due_.emplace(db, "SELECT gid FROM dtx_transaction WHERE ended_ms IS NULL AND lease_until_ms <= ?1 "
                                "AND (status <> 'trying' OR deadline_ms <= ?1 OR ?2) ORDER BY gid LIMIT ?3");
        lease_.emplace(db, "UPDATE dtx_transaction SET lease_owner = ?, lease_until_ms = ?, "
                           "status = CASE status WHEN 'trying' THEN 'cancelling' ELSE status END WHERE gid = ?");
        select_tx_.emplace(db, "SELECT kind, status, deadline_ms FROM dtx_transaction WHERE gid = ?");
        select_branches_.emplace(db, "SELECT branch_id, participant, payload, done FROM dtx_branch WHERE gid = ? "
                                     "ORDER BY rowid");
        clean_branches_.emplace(db, "DELETE FROM dtx_branch WHERE gid IN (SELECT gid FROM dtx_transaction "
                                    "WHERE ended_ms IS NOT NULL AND ended_ms < ? LIMIT ?)");
        clean_txs_.emplace(db, "DELETE FROM dtx_transaction WHERE gid IN (SELECT gid FROM dtx_transaction "
                               "WHERE ended_ms IS NOT NULL AND ended_ms < ? LIMIT ?)");
    }

    // ---- applying operations (writer thread only) --------------------------------------------

    static std::int64_t to_ms(wall_clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    }
    static wall_clock::time_point from_ms(std::int64_t ms) {
        return wall_clock::time_point(std::chrono::duration_cast<wall_clock::duration>(std::chrono::milliseconds(ms)));
    }

    void apply(write_op& w) {
        const std::int64_t now = to_ms(wall_clock::now());
        if (w.begin) {
            if (w.status && w.status->from != tx_status::trying) {
                w.result = false;
                return;
            }
            exists_->bind(w.gid);
            if (exists_->step()) {
                w.error = std::make_exception_ptr(error(errc::duplicate_gid, "gid " + w.gid + ": already in the journal"));
                return;
            }
            const tx_status status = w.status ? w.status->to : tx_status::trying;
            insert_tx_->bind(w.gid, to_string(w.begin->kind), to_string(status), to_ms(w.begin->deadline), now).run();
        } else if (w.status) {
            const bool final = is_final(w.status->to);
            set_status_->bind(to_string(w.status->to), final ? std::optional<std::int64_t>(now) : std::nullopt, w.gid,
                              to_string(w.status->from));
            set_status_->run();
            if (db_.changes() == 0) {
                exists_->bind(w.gid);
                if (!exists_->step()) {
                    w.error = std::make_exception_ptr(error(errc::unknown_transaction, "gid " + w.gid + ": not in the journal"));
                    return;
                }
                w.result = false; // refused: the status is not `from`
                return;
            }
        } else {
            exists_->bind(w.gid);
            if (!exists_->step()) {
                w.error = std::make_exception_ptr(error(errc::unknown_transaction, "gid " + w.gid + ": not in the journal"));
                return;
            }
        }
        for (const auto& b : w.branches) insert_branch_->bind(w.gid, b.branch_id, b.participant, b.payload).run();
        for (const auto& id : w.done) set_done_->bind(w.gid, id).run();
        w.result = true;
    }

    std::vector<transaction_record> do_claim(const claim_op& c) {
        std::vector<std::string> gids;
        select_due_->bind(to_ms(c.now), c.ignore_deadlines, static_cast<std::int64_t>(c.limit));
        while (select_due_->step()) gids.emplace_back(select_due_->text(0));
        std::vector<transaction_record> out;
        out.reserve(gids.size());
        for (const auto& gid : gids) {
            lease_->bind(c.owner, to_ms(c.now + c.lease), gid).run();
            if (auto rec = load(gid)) out.push_back(std::move(*rec));
        }
        return out;
    }

    std::optional<transaction_record> load(const std::string& gid) {
        select_tx_->bind(gid);
        if (!select_tx_->step()) return std::nullopt;
        transaction_record rec;
        rec.gid = gid;
        auto kind = parse_tx_kind(select_tx_->text(0));
        auto status = parse_tx_status(select_tx_->text(1));
        if (!kind || !status)
            throw error(errc::journal_corrupt, opts_.path + ": gid " + gid + ": unreadable kind or status");
        rec.kind = *kind;
        rec.status = *status;
        rec.deadline = from_ms(select_tx_->integer(2));
        select_branches_->bind(gid);
        while (select_branches_->step()) {
            branch_record b;
            b.branch_id = select_branches_->text(0);
            b.participant = select_branches_->text(1);
            auto json = nlohmann::json::parse(select_branches_->text(2), nullptr, /*allow_exceptions=*/false);
            if (json.is_discarded())
                throw error(errc::journal_corrupt,
                            opts_.path + ": gid " + gid + " branch " + b.branch_id + ": payload is not valid JSON");
            b.payload = std::move(json);
            b.done = select_branches_->integer(3) != 0;
            rec.branches.push_back(std::move(b));
        }
        return rec;
    }

    void cleanup() {
        const std::int64_t before = to_ms(wall_clock::now() - opts_.retention);
        const auto batch = static_cast<std::int64_t>(opts_.cleanup_batch);
        try {
            for (;;) {
                detail::sqlite::transaction tx(db_);
                clean_branches_->bind(before, batch).run();
                clean_txs_->bind(before, batch).run();
                const int n = db_.changes();
                tx.commit();
                {
                    std::lock_guard lock(mu_);
                    stats_.cleaned += static_cast<std::uint64_t>(n);
                }
                if (n < batch) break;
                std::lock_guard lock(mu_);
                if (!queue_.empty()) break; // writes first; the rest waits for the next round
            }
        } catch (const std::exception&) {
            // A failed cleanup loses nothing; it is tried again at the next interval.
        }
    }

    sqlite_journal_options opts_;
    detail::sqlite::connection db_;
    std::optional<detail::sqlite::statement> insert_tx_, insert_branch_, set_status_, exists_, set_done_,
        select_due_, lease_, select_tx_, select_branches_, clean_branches_, clean_txs_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::unique_ptr<op_base>> queue_;
    bool stopping_ = false;
    sqlite_journal_stats stats_;
    std::thread writer_;
};

} // namespace dtx

#endif
