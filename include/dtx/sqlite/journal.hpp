#ifndef DTX_SQLITE_JOURNAL_HPP
#define DTX_SQLITE_JOURNAL_HPP

// The embedded durable journal: one SQLite file beside the service.
//
//   dtx::sqlite::journal journal({.path = "orders.dtx.db"});
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
// - The file belongs to one coordinator process: by default (`exclusive`) the journal holds it
//   locked while open (SQLite's exclusive locking mode), which also spares every commit the
//   shared-memory locks. A second process that opens it is refused with errc::journal_failed
//   once `busy_timeout` has passed ("in use by another process"); a process that dies releases
//   it. `exclusive = false` lets other processes read the journal meanwhile.
//
// Link with SQLite3 (CMake: dtx::sqlite). The file layout is in docs/journal.md.

#include <dtx/detail/storage.hpp>
#include <dtx/error.hpp>
#include <dtx/journal.hpp>
#include <dtx/sqlite/connection.hpp>
#include <dtx/sqlite/detail/worker.hpp>
#include <dtx/version.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace sqlite {

struct journal_options {
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
    /// How long the writer thread polls for the next write after a commit before it sleeps.
    /// Polling can save the time a sleeping thread takes to wake when a transaction's next write
    /// follows quickly; it costs up to this much CPU per commit, and on the 2-vCPU machine of
    /// docs/benchmarks.md it gained nothing measurable (and took CPU from the coordinator at high
    /// concurrency). Zero: never poll.
    std::chrono::microseconds writer_spin{0};
    /// Hold the file locked for this process while the journal is open (see the top of this
    /// header). Commits then take no shared-memory locks: on the machine of docs/benchmarks.md
    /// about a tenth less time per durable write at concurrency 1. False: other processes may
    /// open the file meanwhile (an inspecting `sqlite3`, a monitor); they must only read it.
    bool exclusive = true;
};

/// Counters for monitoring and benchmarks.
struct journal_stats {
    std::uint64_t commits = 0;        ///< SQLite transactions committed (each one fsync with FULL)
    std::uint64_t operations = 0;     ///< writes, claims and reads in committed batches
    std::uint64_t failed_batches = 0; ///< batches that could not be committed
    std::uint64_t lazy_lost = 0; ///< lazy writes in failed batches (their effect: phase 2 repeats)
    std::uint64_t cleaned = 0;   ///< ended transactions deleted
};

class journal final : public dtx::journal {
public:
    /// The schema version this dtx writes and the newest it reads.
    static constexpr int schema_version = 4;

    /// Opens the journal, migrating its schema. Throws dtx::error (journal_corrupt,
    /// journal_version, journal_failed) with the path and the reason.
    explicit journal(journal_options o)
        : opts_(std::move(o))
        , db_(opts_.path, storage_role::journal)
        , statements_(prepare())
        , worker_(db_, {.max_batch = opts_.max_batch,
                        .idle_interval = opts_.cleanup_interval,
                        .on_idle = [this](sqlite::connection&) { cleanup(); },
                        .spin = opts_.writer_spin,
                        .optimistic = true}) {}

    journal(const journal&) = delete;
    journal& operator=(const journal&) = delete;

    /// Makes every queued write durable, then closes the file.
    ~journal() override = default;

    asio::awaitable<bool> write(const journal_write& w, durability d) override {
        // Serialised here, on the caller's thread; the writer thread only runs SQL.
        // (Named lambdas: g++ 12 destroys a closure temporary in a co_await expression twice.)
        auto data = std::make_shared<const write_data>(w);
        auto fn = [this, data](sqlite::connection&) { return apply(*data); };
        if (d == durability::lazy) {
            worker_.post(std::move(fn));
            co_return true;
        }
        co_return co_await worker_.run<bool>(std::move(fn));
    }

    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        auto fn = [this, c = claim_data(r)](sqlite::connection&) { return do_claim(c); };
        co_return co_await worker_.run<std::vector<transaction_record>>(std::move(fn));
    }

    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        auto fn = [this, g = std::string(gid)](sqlite::connection&) { return load(g); };
        co_return co_await worker_.run<std::optional<transaction_record>>(std::move(fn));
    }

    journal_stats stats() const {
        auto w = worker_.stats();
        return {w.commits, w.functions, w.failed_batches, w.lazy_lost, cleaned_.load()};
    }

    const std::string& path() const noexcept { return opts_.path; }

private:
    struct stored_branch {
        std::string branch_id;
        std::string participant;
        std::string payload; // JSON text
    };

    struct write_data {
        explicit write_data(const journal_write& w)
            : gid(w.gid)
            , begin(w.begin)
            , status(w.status) {
            if (w.lease)
                lease.emplace(std::string(w.lease->owner), w.lease->until);
            branches.reserve(w.new_branches.size());
            for (const auto& b : w.new_branches)
                branches.push_back({b.branch_id, b.participant, b.payload->dump()});
            done.assign(w.done_branches.begin(), w.done_branches.end());
        }
        std::string gid;
        std::optional<begin_transaction> begin;
        std::vector<stored_branch> branches;
        std::optional<status_change> status;
        std::vector<std::string> done;
        std::optional<std::pair<std::string, wall_clock::time_point>> lease;
    };

    struct claim_data {
        explicit claim_data(const claim_request& r)
            : now(r.now)
            , owner(r.owner)
            , lease(r.lease)
            , limit(r.limit)
            , take_over(r.take_over) {}
        wall_clock::time_point now;
        std::string owner;
        std::chrono::milliseconds lease;
        std::size_t limit;
        bool take_over;
    };

    // ---- schema -----------------------------------------------------------------------------

    /// The key of the one index: an ended transaction's end time, an open one's lease expiry plus
    /// open_offset. Cleanup reads the ended part from its oldest end, claims the open part from
    /// its oldest lease; and since a transaction that ends goes from the open part to the end of
    /// the ended part, which is next to it, the commit that begins a transaction and ends another
    /// (the usual one) changes a single index page, where two indexes took one page each.
    static constexpr std::int64_t open_offset = std::int64_t{1} << 62; // times are ms, far below
    static_assert(open_offset == 4611686018427387904); // as written in due_key, stored in the file
    inline static const std::string due_key =
        "(CASE WHEN ended_ms IS NULL THEN lease_until_ms + 4611686018427387904 ELSE ended_ms END)";

    struct statements {
        sqlite::statement &insert_tx, &insert_branch, &update_tx, &set_status, &current, &set_done,
            &select_due, &lease, &select_tx, &select_branches, &clean_branches, &clean_txs;
    };

    statements prepare() {
        auto& db = db_;
        db.set_busy_timeout(opts_.busy_timeout);
        // Before the first read: in WAL mode, that read then locks the file for this connection.
        if (opts_.exclusive)
            db.exec("PRAGMA locking_mode=EXCLUSIVE");
        int version = 0;
        try {
            // The first read of the file: a file that is not a database fails here.
            sqlite::statement v(db, "PRAGMA user_version");
            if (v.step())
                version = static_cast<int>(v.integer(0));
        } catch (const error&) {
            if ((sqlite3_errcode(db.get()) & 0xff) != SQLITE_BUSY)
                throw;
            throw db.failure(errc::journal_failed,
                             "in use by another process (a SQLite journal belongs to one "
                             "coordinator process; waited " +
                                 std::to_string(opts_.busy_timeout.count()) + " ms)");
        }
        if (version > schema_version)
            throw detail::newer_schema(db.role(), opts_.path + ": journal", version,
                                       schema_version);
        db.use_wal(opts_.synchronous_full);
        if (opts_.max_size_bytes) {
            std::int64_t page = 4096;
            sqlite::statement ps(db, "PRAGMA page_size");
            if (ps.step())
                page = ps.integer(0);
            const auto pages =
                std::max<std::int64_t>(1, static_cast<std::int64_t>(*opts_.max_size_bytes) / page);
            db.exec(("PRAGMA max_page_count=" + std::to_string(pages)).c_str());
        }
        if (version < schema_version)
            migrate(version);
        // A quick structural check: a damaged file is refused now, not half-way through recovery.
        sqlite::statement qc(db, "PRAGMA quick_check");
        if (qc.step() && qc.text(0) != "ok")
            throw error(errc::journal_corrupt,
                        opts_.path + ": integrity check failed: " + std::string(qc.text(0)));

        return statements{
            db.prepare("INSERT INTO dtx_transaction (gid, kind, status, deadline_ms, created_ms, "
                       "lease_owner, "
                       "lease_until_ms, forward) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gid) "
                       "DO NOTHING"),
            db.prepare("INSERT INTO dtx_branch (gid, branch_id, participant, payload) VALUES (?, "
                       "?, ?, ?)"),
            // One statement for a status change, a lease or both, with their conditions: it changes
            // no row if the transaction is missing or a condition fails.
            db.prepare("UPDATE dtx_transaction SET status = coalesce(?1, status), ended_ms = "
                       "coalesce(?2, ended_ms), "
                       "lease_owner = coalesce(?3, lease_owner), lease_until_ms = coalesce(?4, "
                       "lease_until_ms) "
                       "WHERE gid = ?5 AND (?6 IS NULL OR status = ?6) "
                       "AND (?3 IS NULL OR lease_owner IS NULL OR lease_owner = ?3)"),
            // A decision: it sets no column an index covers, so its commit writes the row's page
            // and no index page (the statement above assigns indexed columns, even when unchanged).
            db.prepare("UPDATE dtx_transaction SET status = ?1 WHERE gid = ?2 AND status = ?3"),
            db.prepare("SELECT status FROM dtx_transaction WHERE gid = ?"),
            db.prepare("UPDATE dtx_branch SET done = 1 WHERE gid = ? AND branch_id = ?"),
            // Walks the open transactions' end of the index (ended ones, however many, are not
            // read).
            db.prepare("SELECT gid FROM dtx_transaction INDEXED BY dtx_transaction_due WHERE " +
                       due_key +
                       " BETWEEN ?4 AND ?5 AND ended_ms IS NULL AND (?2 OR status <> 'trying' OR "
                       "deadline_ms <= ?1) "
                       "ORDER BY " +
                       due_key + " LIMIT ?3"),
            // Presumed abort, except for transactions recovered forward (see journal.hpp).
            db.prepare("UPDATE dtx_transaction SET lease_owner = ?, lease_until_ms = ?, "
                       "status = CASE WHEN status = 'trying' AND NOT forward THEN 'cancelling' "
                       "ELSE status END "
                       "WHERE gid = ?"),
            db.prepare(
                "SELECT kind, status, deadline_ms, forward FROM dtx_transaction WHERE gid = ?"),
            // Branch ids are numbers written with at least two digits: order by length, then text.
            db.prepare("SELECT branch_id, participant, payload, done FROM dtx_branch WHERE gid = ? "
                       "ORDER BY length(branch_id), branch_id"),
            // Walks the ended transactions' part of the index, oldest end first.
            db.prepare(
                "DELETE FROM dtx_branch WHERE gid IN (SELECT gid FROM dtx_transaction INDEXED BY "
                "dtx_transaction_due WHERE " +
                due_key + " < ?1 AND ended_ms IS NOT NULL LIMIT ?2)"),
            db.prepare("DELETE FROM dtx_transaction WHERE gid IN (SELECT gid FROM dtx_transaction "
                       "INDEXED BY "
                       "dtx_transaction_due WHERE " +
                       due_key + " < ?1 AND ended_ms IS NOT NULL LIMIT ?2)"),
        };
    }

    /// Brings the schema from `version` to schema_version, in one transaction.
    /// (impl/journal_schema.hpp)
    void migrate(int version);

    // ---- applying operations (writer thread only) --------------------------------------------

    /// Applies one write, checking its conditions before it changes anything (a write that
    /// throws half-way is rolled back by the worker). Most writes take one or two statements.
    bool apply(const write_data& w) {
        auto& st = statements_;
        const std::int64_t now = detail::to_ms(wall_clock::now());
        if (w.begin) {
            if (w.status && w.status->from != tx_status::trying) {
                if (exists(w.gid))
                    throw duplicate(w.gid);
                return false;
            }
            const tx_status status = w.status ? w.status->to : tx_status::trying;
            std::optional<std::string_view> owner;
            std::int64_t until = 0;
            if (w.lease) {
                owner = w.lease->first;
                until = detail::to_ms(w.lease->second);
            }
            st.insert_tx
                .bind(w.gid, to_string(w.begin->kind), to_string(status),
                      detail::to_ms(w.begin->deadline), now, owner, until, w.begin->forward)
                .run();
            if (db_.changes() == 0)
                throw duplicate(w.gid);
        } else if (w.status && w.status->from != w.status->to && !w.lease &&
                   !is_final(w.status->to)) {
            st.set_status.bind(to_string(w.status->to), w.gid, to_string(w.status->from)).run();
            if (db_.changes() == 0) {
                if (!exists(w.gid))
                    throw unknown(w.gid);
                return false;
            }
        } else if (w.lease || (w.status && w.status->from != w.status->to)) {
            std::optional<std::string_view> to, from, owner;
            std::optional<std::int64_t> ended, until;
            if (w.status) {
                to = to_string(w.status->to);
                from = to_string(w.status->from);
                if (is_final(w.status->to))
                    ended = now;
            }
            if (w.lease) {
                owner = w.lease->first;
                until = detail::to_ms(w.lease->second);
            }
            st.update_tx.bind(to, ended, owner, until, w.gid, from).run();
            if (db_.changes() == 0) {
                if (!exists(w.gid))
                    throw unknown(w.gid);
                return false; // a condition failed
            }
        } else {
            // Branches or done marks alone, or with a status that must merely still hold.
            st.current.bind(w.gid);
            if (!st.current.step())
                throw unknown(w.gid);
            if (w.status && st.current.text(0) != to_string(w.status->from))
                return false;
        }
        for (const auto& b : w.branches)
            st.insert_branch.bind(w.gid, b.branch_id, b.participant, b.payload).run();
        for (const auto& id : w.done)
            st.set_done.bind(w.gid, id).run();
        return true;
    }

    bool exists(const std::string& gid) {
        statements_.current.bind(gid);
        return statements_.current.step();
    }
    static error duplicate(const std::string& gid) {
        return error(errc::duplicate_gid, "gid " + gid + ": already in the journal");
    }
    static error unknown(const std::string& gid) {
        return error(errc::unknown_transaction, "gid " + gid + ": not in the journal");
    }

    std::vector<transaction_record> do_claim(const claim_data& c) {
        auto& st = statements_;
        std::vector<std::string> gids;
        const std::int64_t now = detail::to_ms(c.now);
        st.select_due.bind(now, c.take_over, static_cast<std::int64_t>(c.limit), open_offset,
                           c.take_over ? std::numeric_limits<std::int64_t>::max()
                                       : open_offset + now);
        while (st.select_due.step())
            gids.emplace_back(st.select_due.text(0));
        std::vector<transaction_record> out;
        out.reserve(gids.size());
        for (const auto& gid : gids) {
            st.lease.bind(c.owner, detail::to_ms(c.now + c.lease), gid).run();
            if (auto rec = load(gid))
                out.push_back(std::move(*rec));
        }
        return out;
    }

    std::optional<transaction_record> load(const std::string& gid) {
        auto& select_tx_ = statements_.select_tx;
        auto& select_branches_ = statements_.select_branches;
        select_tx_.bind(gid);
        if (!select_tx_.step())
            return std::nullopt;
        transaction_record rec;
        rec.gid = gid;
        auto kind = parse_tx_kind(select_tx_.text(0));
        auto status = parse_tx_status(select_tx_.text(1));
        if (!kind || !status)
            throw error(errc::journal_corrupt,
                        opts_.path + ": gid " + gid + ": unreadable kind or status");
        rec.kind = *kind;
        rec.status = *status;
        rec.deadline = detail::from_ms(select_tx_.integer(2));
        rec.forward = select_tx_.integer(3) != 0;
        select_branches_.bind(gid);
        while (select_branches_.step()) {
            branch_record b;
            b.branch_id = select_branches_.text(0);
            b.participant = select_branches_.text(1);
            auto json = nlohmann::json::parse(select_branches_.text(2), nullptr,
                                              /*allow_exceptions=*/false);
            if (json.is_discarded())
                throw error(errc::journal_corrupt, opts_.path + ": gid " + gid + " branch " +
                                                       b.branch_id + ": payload is not valid JSON");
            b.payload = std::move(json);
            b.done = select_branches_.integer(3) != 0;
            rec.branches.push_back(std::move(b));
        }
        return rec;
    }

    /// Deletes ended transactions older than the retention, a batch per SQLite transaction,
    /// giving way to queued writes between batches. Runs on the worker thread when it is idle.
    void cleanup() {
        const std::int64_t before = detail::to_ms(wall_clock::now() - opts_.retention);
        worker_.clean(opts_.cleanup_batch, cleaned_, [&] {
            statements_.clean_branches.bind(before, opts_.cleanup_batch).run();
            statements_.clean_txs.bind(before, opts_.cleanup_batch).run();
        });
    }

    journal_options opts_;
    sqlite::connection db_;
    statements statements_;
    std::atomic<std::uint64_t> cleaned_{0};
    detail::sqlite_worker worker_; // last: stopped (queue drained) before the rest goes
};

} // namespace sqlite
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>
#include <dtx/sqlite/impl/journal_schema.hpp> // the schema and its migrations

#endif
