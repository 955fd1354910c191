#ifndef DTX_MEMORY_JOURNAL_HPP
#define DTX_MEMORY_JOURNAL_HPP

// A journal in memory: for tests and for transactions that need not survive the process.
//
// It survives the coordinator (keep it alive and hand it to a fresh coordinator to test
// recovery), not the process. Thread-safe. Ended transactions are dropped unless `keep_ended`.

#include <dtx/error.hpp>
#include <dtx/journal.hpp>
#include <dtx/version.hpp>

#include <mutex>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN

class memory_journal final : public journal {
public:
    struct options {
        /// Keep ended transactions (for inspection in tests) instead of dropping them.
        bool keep_ended = false;
    };

    memory_journal() = default;
    explicit memory_journal(options o)
        : opts_(o) {}

    asio::awaitable<bool> write(const journal_write& w, durability) override { co_return apply(w); }

    asio::awaitable<std::vector<transaction_record>> claim(const claim_request& r) override {
        std::vector<transaction_record> out;
        std::lock_guard lock(mu_);
        for (auto& [gid, e] : txs_) {
            if (out.size() >= r.limit)
                break;
            if (is_final(e.rec.status))
                continue;
            if (!r.take_over && e.rec.status == tx_status::trying && e.rec.deadline > r.now)
                continue;
            if (!r.take_over && e.lease_until > r.now)
                continue;
            e.lease_owner = r.owner;
            e.lease_until = r.now + r.lease;
            if (e.rec.status == tx_status::trying && !e.rec.forward)
                e.rec.status = tx_status::cancelling;
            out.push_back(record_of(gid, e));
        }
        co_return out;
    }

    asio::awaitable<std::optional<transaction_record>> find(std::string_view gid) override {
        co_return get(gid);
    }

    /// Synchronous view of one transaction, for tests.
    std::optional<transaction_record> get(std::string_view gid) const {
        std::lock_guard lock(mu_);
        auto it = txs_.find(gid);
        if (it == txs_.end())
            return std::nullopt;
        return record_of(it->first, it->second);
    }

    /// Every transaction held, for tests.
    std::vector<transaction_record> all() const {
        std::lock_guard lock(mu_);
        std::vector<transaction_record> out;
        out.reserve(txs_.size());
        for (auto& [gid, e] : txs_)
            out.push_back(record_of(gid, e));
        return out;
    }

    /// Number of transactions that have not ended.
    std::size_t unfinished() const {
        std::lock_guard lock(mu_);
        std::size_t n = 0;
        for (auto& [gid, e] : txs_)
            n += !is_final(e.rec.status);
        return n;
    }

private:
    struct entry {
        transaction_record rec; // its gid is left empty: the map's key holds it
        std::string lease_owner;
        wall_clock::time_point lease_until{};
    };

    static transaction_record record_of(const std::string& gid, const entry& e) {
        transaction_record r = e.rec;
        r.gid = gid;
        return r;
    }

    bool apply(const journal_write& w) {
        std::lock_guard lock(mu_);
        const std::string_view gid = w.gid;
        map::iterator it;
        if (w.begin) {
            if (w.status && w.status->from != tx_status::trying)
                return false;
            bool inserted = false;
            std::tie(it, inserted) = txs_.try_emplace(std::string(gid));
            if (!inserted)
                throw error(errc::duplicate_gid,
                            "gid " + std::string(gid) + ": already in the journal");
            it->second.rec.kind = w.begin->kind;
            it->second.rec.deadline = w.begin->deadline;
            it->second.rec.forward = w.begin->forward;
        } else {
            it = txs_.find(gid);
            if (it == txs_.end())
                throw error(errc::unknown_transaction,
                            "gid " + std::string(gid) + ": not in the journal");
            if (w.status && it->second.rec.status != w.status->from)
                return false;
            if (w.lease && !it->second.lease_owner.empty() &&
                it->second.lease_owner != w.lease->owner)
                return false;
        }
        entry* e = &it->second;
        if (w.lease) {
            e->lease_owner = w.lease->owner;
            e->lease_until = w.lease->until;
        }
        auto& rec = e->rec;
        rec.branches.insert(rec.branches.end(), w.new_branches.begin(), w.new_branches.end());
        for (const auto& id : w.done_branches)
            for (auto& b : rec.branches)
                if (b.branch_id == id)
                    b.done = true;
        if (w.status) {
            rec.status = w.status->to;
            if (is_final(rec.status) && !opts_.keep_ended)
                txs_.erase(it);
        }
        return true;
    }

    struct gid_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    using map = std::unordered_map<std::string, entry, gid_hash, std::equal_to<>>;

    options opts_;
    mutable std::mutex mu_;
    map txs_;
};

DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
