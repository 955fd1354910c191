#ifndef DTX_TESTS_SUPPORT_MODEL_HPP
#define DTX_TESTS_SUPPORT_MODEL_HPP

// Test participants that keep a ledger and a log, behave as a barrier-protected participant
// should (duplicates answered without effect, null cancel, no effect from a try after its cancel),
// misbehave on a script (fail, throw, hang, answer pending, fail transiently), and a checker that
// tells whether every transaction ended all-confirmed or all-cancelled with nothing left reserved.

#include <dtx/dtx.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace dtx::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// What a participant does with one request.
enum class act {
    ok,          ///< do the work, answer success
    fail,        ///< answer failure without doing anything
    throw_error, ///< throw: an unknown result
    hang,        ///< wait "forever" (10 s), honouring cancellation
    hang_deaf,   ///< wait 20 ms ignoring cancellation, then do the work
    pending,     ///< answer pending without doing anything
};

/// Chooses the act for the `attempt`-th request (1-based) of `op` on (gid, branch).
using script = std::function<act(std::string_view gid, std::string_view branch_id, branch_op op,
                                 unsigned attempt)>;

inline script always_ok() {
    return [](auto, auto, auto, auto) { return act::ok; };
}

struct qty_payload {
    int qty = 1;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(qty_payload, qty)

/// A resource both kinds of participant share: a ledger of quantities per branch.
class resource {
public:
    enum class slot_state { tried, confirmed, cancelled };

    explicit resource(std::string name, int available = 1'000'000)
        : name_(std::move(name))
        , initial_(available)
        , available_(available) {}

    const std::string& name() const { return name_; }
    void set_script(script s) { script_ = std::move(s); }

    /// TCC handlers: try reserves, confirm takes the reservation, cancel gives it back.
    tcc_handlers tcc() {
        return {
            .on_try = [this](const branch_request& r) { return handle(r); },
            .on_confirm = [this](const branch_request& r) { return handle(r); },
            .on_cancel = [this](const branch_request& r) { return handle(r); },
        };
    }

    /// Saga handlers: action takes the quantity at once, compensate gives it back.
    saga_handlers saga() {
        return {
            .on_action = [this](const branch_request& r) { return handle(r); },
            .on_compensate = [this](const branch_request& r) { return handle(r); },
        };
    }

    // ---- inspection --------------------------------------------------------------------------

    int available() const { return available_; }
    int reserved() const { return reserved_; }
    int taken() const { return taken_; }
    bool conserved() const { return available_ + reserved_ + taken_ == initial_; }
    const std::vector<std::string>& violations() const { return violations_; }

    /// Every request received, in order, per (gid, branch).
    std::vector<branch_op> ops(std::string_view gid, std::string_view branch) const {
        auto it = log_.find(key(gid, branch));
        return it == log_.end() ? std::vector<branch_op>{} : it->second;
    }
    std::size_t count(std::string_view gid, std::string_view branch, branch_op op) const {
        std::size_t n = 0;
        for (auto o : ops(gid, branch))
            n += o == op;
        return n;
    }
    std::optional<slot_state> state(std::string_view gid, std::string_view branch) const {
        auto it = slots_.find(key(gid, branch));
        if (it == slots_.end())
            return std::nullopt;
        return it->second.state;
    }
    /// Branches of `gid` this resource has a slot for.
    std::map<std::string, slot_state> branches_of(std::string_view gid) const {
        std::map<std::string, slot_state> out;
        for (auto it = slots_.lower_bound(std::string(gid) + "/");
             it != slots_.end() && it->first.starts_with(std::string(gid) + "/"); ++it)
            out[it->first.substr(gid.size() + 1)] = it->second.state;
        return out;
    }
    std::set<std::string> gids() const {
        std::set<std::string> out;
        for (auto& [k, s] : slots_)
            out.insert(k.substr(0, k.find('/')));
        return out;
    }
    /// First saga compensations (the ones that changed a slot or created a null one): a sequence
    /// number shared by every resource, gid and branch.
    struct compensation {
        std::uint64_t seq;
        std::string gid;
        std::string branch_id;
    };
    const std::vector<compensation>& first_compensations() const { return first_comp_; }

private:
    struct slot {
        slot_state state;
        int qty;
    };

    static std::string key(std::string_view gid, std::string_view branch) {
        std::string k(gid);
        k += '/';
        k += branch;
        return k;
    }

    void violation(const branch_request& r, const std::string& what) {
        violations_.push_back(name_ + ": gid " + std::string(r.gid) + " branch " +
                              std::string(r.branch_id) + ": " + what);
    }

    asio::awaitable<outcome> handle(const branch_request& r) {
        const std::string k = key(r.gid, r.branch_id);
        log_[k].push_back(r.op);
        const unsigned attempt = ++attempts_[k + "#" + std::string(to_string(r.op))];
        const act a = script_ ? script_(r.gid, r.branch_id, r.op, attempt) : act::ok;
        const int qty = r.payload.at("qty").get<int>();

        switch (a) {
        case act::ok:
            break;
        case act::fail:
            co_return failure(name_ + " refuses");
        case act::throw_error:
            throw std::runtime_error(name_ + " is broken");
        case act::pending:
            co_return pending(name_ + " is busy");
        case act::hang: {
            asio::steady_timer t(co_await asio::this_coro::executor, 10s);
            co_await t.async_wait(asio::use_awaitable); // throws when the call is cancelled
            break;
        }
        case act::hang_deaf: {
            asio::steady_timer t(co_await asio::this_coro::executor, 20ms);
            co_await t.async_wait(asio::bind_cancellation_slot(
                asio::cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
            break;
        }
        }
        co_return apply(r, k, qty);
    }

    outcome apply(const branch_request& r, const std::string& k, int qty) {
        auto it = slots_.find(k);
        switch (r.op) {
        case branch_op::try_:
        case branch_op::action:
            if (it != slots_.end()) {
                if (it->second.state == slot_state::cancelled)
                    return failure("cancelled before it was tried");
                return success(); // duplicate
            }
            if (qty > available_)
                return failure(name_ + ": not enough");
            available_ -= qty;
            if (r.op == branch_op::try_) {
                reserved_ += qty;
                slots_[k] = {slot_state::tried, qty};
            } else {
                taken_ += qty;
                slots_[k] = {slot_state::confirmed, qty};
            }
            return success();
        case branch_op::confirm:
            if (it == slots_.end()) {
                violation(r, "confirm without a try");
                return failure("confirm without try");
            }
            if (it->second.state == slot_state::cancelled) {
                violation(r, "confirm after cancel");
                return failure("confirm after cancel");
            }
            if (it->second.state == slot_state::tried) {
                reserved_ -= it->second.qty;
                taken_ += it->second.qty;
                it->second.state = slot_state::confirmed;
            }
            return success();
        case branch_op::cancel:
        case branch_op::compensate:
            if (it == slots_.end()) {
                slots_[k] = {slot_state::cancelled, 0}; // null compensation: remember it
                if (r.op == branch_op::compensate)
                    first_comp_.push_back(
                        {++sequence(), std::string(r.gid), std::string(r.branch_id)});
                return success();
            }
            if (it->second.state == slot_state::confirmed && r.op == branch_op::cancel) {
                violation(r, "cancel after confirm");
                return failure("cancel after confirm");
            }
            if (it->second.state != slot_state::cancelled) {
                if (it->second.state == slot_state::tried)
                    reserved_ -= it->second.qty;
                else
                    taken_ -= it->second.qty;
                available_ += it->second.qty;
                it->second.state = slot_state::cancelled;
                if (r.op == branch_op::compensate)
                    first_comp_.push_back(
                        {++sequence(), std::string(r.gid), std::string(r.branch_id)});
            }
            return success();
        case branch_op::check_back:
            break; // a resource is no check-back
        }
        return failure("unknown op");
    }

    std::string name_;
    int initial_;
    int available_;
    int reserved_ = 0;
    int taken_ = 0;
    script script_;
    std::map<std::string, slot> slots_;
    std::map<std::string, std::vector<branch_op>> log_;
    std::map<std::string, unsigned> attempts_;
    std::vector<std::string> violations_;
    std::vector<compensation> first_comp_;

    static std::uint64_t& sequence() {
        static std::uint64_t seq = 0;
        return seq;
    }
};

/// Checks the invariants across resources: every gid ended all-confirmed or all-cancelled (a
/// branch may have no slot if it was never reached), nothing left reserved, quantities conserved,
/// no participant saw an illegal sequence, and saga compensations ran newest first.
/// Returns an empty string when all hold, else the first problem.
inline std::string check_invariants(const std::vector<const resource*>& resources,
                                    bool sagas = false) {
    std::set<std::string> gids;
    for (auto* r : resources) {
        if (!r->violations().empty())
            return r->violations().front();
        if (!r->conserved())
            return r->name() + ": quantities not conserved";
        if (r->reserved() != 0)
            return r->name() + ": " + std::to_string(r->reserved()) + " left reserved";
        auto g = r->gids();
        gids.insert(g.begin(), g.end());
    }
    for (const auto& gid : gids) {
        bool confirmed = false, cancelled = false;
        for (auto* r : resources)
            for (auto& [branch, st] : r->branches_of(gid)) {
                if (st == resource::slot_state::tried)
                    return "gid " + gid + " branch " + branch + " left tried";
                (st == resource::slot_state::confirmed ? confirmed : cancelled) = true;
            }
        if (confirmed && cancelled)
            return "gid " + gid + " is partly confirmed and partly cancelled";
    }
    if (sagas) {
        std::vector<resource::compensation> all;
        for (auto* r : resources)
            all.insert(all.end(), r->first_compensations().begin(), r->first_compensations().end());
        std::sort(all.begin(), all.end(), [](auto& x, auto& y) { return x.seq < y.seq; });
        std::map<std::string, std::string> last; // gid -> last branch compensated
        for (auto& c : all) {
            auto it = last.find(c.gid);
            if (it != last.end() && std::stoi(c.branch_id) >= std::stoi(it->second))
                return "gid " + c.gid + ": branch " + c.branch_id + " compensated after " +
                       it->second;
            last[c.gid] = c.branch_id;
        }
    }
    return {};
}

/// Runs `a` on `ioc` until it completes (other work may remain) and returns its value.
template <class T>
T run(asio::io_context& ioc, asio::awaitable<T> a) {
    std::optional<T> out;
    std::exception_ptr err;
    bool done = false;
    asio::co_spawn(ioc, std::move(a), [&](std::exception_ptr e, T v) {
        err = e;
        if (!e)
            out.emplace(std::move(v));
        done = true;
    });
    ioc.restart();
    while (!done && ioc.run_one() > 0) {
    }
    if (err)
        std::rethrow_exception(err);
    if (!done)
        throw std::runtime_error("the io_context ran out of work before the operation completed");
    return std::move(*out);
}

/// Options for fast, deterministic tests: short timeouts, retries in about a millisecond.
inline coordinator_options fast_options() {
    coordinator_options o;
    o.transaction_timeout = 5s;
    o.call_timeout = 1s;
    o.phase_two = retry_policy{.initial_backoff = 1ms, .max_backoff = 2ms};
    o.pending = retry_policy{.initial_backoff = 1ms, .max_backoff = 2ms};
    o.recovery_retry = retry_policy{.initial_backoff = 1ms, .max_backoff = 2ms, .max_attempts = 20};
    o.lease = 0ms;
    o.recovery_interval = 5ms;
    return o;
}

/// fast_options() for a coordinator that halts right after a confirm decision is durable, as if
/// killed there: `gid` gets that transaction's gid and `stopped` turns true.
inline coordinator_options halting_after_decision(std::string& gid, bool& stopped) {
    coordinator_options o = fast_options();
    o.on_fault = [&gid, &stopped](const fault_point& p) {
        if (p.what != fault_step::decide)
            return false;
        gid = std::string(p.gid);
        stopped = true;
        return true;
    };
    return o;
}

} // namespace dtx::test

#endif
