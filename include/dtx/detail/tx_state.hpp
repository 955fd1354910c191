#ifndef DTX_DETAIL_TX_STATE_HPP
#define DTX_DETAIL_TX_STATE_HPP

// What the engine works on: the state of a live transaction (its branches, deadline, lease and why
// it was aborted), the result of one branch call with unknown results made explicit, the texts
// that name a gid and branch in errors, and the set of gids this process is driving. No
// coroutines and no journal access here.

#include <dtx/branch_spec.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/error.hpp>
#include <dtx/journal.hpp>
#include <dtx/outcome.hpp>
#include <dtx/participant.hpp>
#include <dtx/trace_context.hpp>
#include <dtx/transaction_status.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/container/small_vector.hpp>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>

DTX_NAMESPACE_BEGIN

namespace detail {

/// Branches added in one step; one of them is kept inline.
using branch_list = boost::container::small_vector<branch_spec, 1>;

/// A branch as a live transaction holds it: its journal record and the resolved participant.
struct live_branch {
    branch_record rec;
    participant* target;
};

struct tx_state {
    std::string gid;
    tx_kind kind;
    tx_status status = tx_status::trying;
    wall_clock::time_point deadline;
    trace_context trace; ///< sent with every branch call
    /// A deque, so that branches added later never move those whose calls are in flight.
    std::deque<live_branch> branches;
    bool begun = false; ///< the begin record is in the journal
    /// Until when this coordinator holds the transaction (journal lease).
    wall_clock::time_point lease_until{};

    /// Bound to the transaction's own coroutine: a call timeout cancels what it awaits.
    asio::cancellation_signal signal;

    bool aborted = false;
    std::error_code reason;
    std::string message;
    std::exception_ptr exception;

    void abort(std::error_code ec, std::string why) {
        if (aborted)
            return;
        aborted = true;
        reason = ec;
        message = std::move(why);
    }

    /// Aborts the transaction and throws, for a branch that cannot be added.
    [[noreturn]] void fail(std::error_code ec, std::string why) {
        abort(ec, why);
        throw error(ec, why);
    }
    [[noreturn]] void fail(errc e, std::string why) { fail(make_error_code(e), std::move(why)); }

    /// What the caller hears once the transaction has come to `to`.
    tx_result result(tx_status to) const { return tx_result{gid, to, reason, message, exception}; }
};

/// The answer of one branch call, with unknown results made explicit.
struct call_result {
    enum class kind : unsigned char { success, failure, pending, unknown };
    kind k = kind::unknown;
    std::error_code ec; // why it is not success
    std::string message;

    bool ok() const noexcept { return k == kind::success; }

    // Results are built by plain functions: g++ 12 mishandles some temporaries (conditional
    // operands, braced aggregates) in co_return and co_await expressions.
    static call_result unknown(errc e, std::string why) {
        return call_result{kind::unknown, make_error_code(e), std::move(why)};
    }

    static call_result from_outcome(const outcome& o) {
        switch (o.kind()) {
        case outcome_kind::success:
            return call_result{kind::success, {}, {}};
        case outcome_kind::failure:
            return call_result{kind::failure, make_error_code(errc::branch_failed),
                               o.message().empty() ? "answered failure" : o.message()};
        case outcome_kind::pending:
            return call_result{kind::pending, make_error_code(errc::branch_timed_out),
                               o.message().empty() ? "answered pending" : o.message()};
        }
        return unknown(errc::branch_error, "answered an invalid outcome");
    }

    static call_result from_exception(std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            return unknown(errc::branch_error, std::string("threw: ") + x.what());
        } catch (...) {
            return unknown(errc::branch_error, "threw a non-standard exception");
        }
    }

    static call_result timed_out(std::chrono::nanoseconds timeout) {
        return unknown(
            errc::branch_timed_out,
            "no answer within " +
                std::to_string(
                    std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
                " ms");
    }
};

inline std::string describe(std::string_view gid, std::string_view branch_id = {},
                            std::string_view participant = {}) {
    std::string s = "gid ";
    s += gid;
    if (!branch_id.empty()) {
        s += " branch ";
        s += branch_id;
    }
    if (!participant.empty()) {
        s += " (";
        s += participant;
        s += ")";
    }
    return s;
}

inline std::string format_branch_id(std::size_t n) {
    char buf[24];
    char* p = buf;
    if (n < 10)
        *p++ = '0';
    p = std::to_chars(p, buf + sizeof buf, n).ptr;
    return std::string(buf, p);
}

/// The gids this process is driving through a decision or phase 2, so that a recovery pass in
/// the same process leaves them alone.
/// Used only on the coordinator's executor, like the rest of the engine.
class active_set {
public:
    /// `gid` must stay alive until erased (it is the gid of a live tx_state).
    bool insert(std::string_view gid) { return gids_.insert(gid).second; }
    void erase(std::string_view gid) { gids_.erase(gid); }

private:
    std::unordered_set<std::string_view> gids_;
};

/// Holds a gid in the active set for the lifetime of a coroutine frame, including one destroyed
/// without resuming (a stopped io_context).
class active_claim {
public:
    active_claim(std::shared_ptr<active_set> set, std::string_view gid)
        : set_(std::move(set))
        , gid_(gid)
        , held_(set_->insert(gid_)) {}
    active_claim(const active_claim&) = delete;
    active_claim& operator=(const active_claim&) = delete;
    ~active_claim() {
        if (held_)
            set_->erase(gid_);
    }
    bool held() const noexcept { return held_; }

private:
    std::shared_ptr<active_set> set_;
    std::string_view gid_;
    bool held_;
};

} // namespace detail
DTX_NAMESPACE_END

#endif
