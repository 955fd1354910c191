// Many transactions at once on one io_context, with failures injected at random (from a fixed
// seed): every transaction must end as its script says it must, the participants must agree with
// the results, and the journal must be left empty. Run under ASan+UBSan this is also the leak test.
#include <dtx/coordinator.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <unordered_map>

#include "support/model.hpp"

using namespace dtx;
using namespace dtx::test;

namespace {

/// The fixed seed; DTX_STRESS_SEED=<n> in the environment runs another one (to explore, not in CI).
std::uint64_t stress_seed() {
    const char* env = std::getenv("DTX_STRESS_SEED");
    return env && *env ? std::strtoull(env, nullptr, 0) : 0x5eed'2024'0001;
}
constexpr std::size_t tcc_count = 10'000;
constexpr std::size_t saga_count = 2'500;
constexpr std::size_t participants = 4;

/// What one branch does with the requests it gets.
struct branch_plan {
    std::size_t resource = 0;
    int qty = 1;
    unsigned pending = 0;  ///< try / action answers pending this many times first,
    act first = act::ok;   ///< then does this (ok, fail, throw_error or hang)
    unsigned faults = 0;   ///< confirm / cancel / compensate goes wrong this many times first,
    act fault = act::fail; ///< in this way (fail, throw_error, pending or hang), then succeeds
};

struct tx_plan {
    std::string gid;
    bool saga = false;
    bool together = false; ///< all branches in one add_branches / add_steps, else one by one
    std::vector<branch_plan> branches;

    /// The first branch (in registration order) whose try or action does not succeed, if any.
    std::optional<std::size_t> first_failure() const {
        for (std::size_t i = 0; i < branches.size(); ++i)
            if (branches[i].first != act::ok)
                return i;
        return std::nullopt;
    }
    /// How many branches get registered (and called): one by one, the body stops at a failure.
    std::size_t registered() const {
        auto f = first_failure();
        return together || !f ? branches.size() : *f + 1;
    }
    std::error_code expected_reason() const {
        auto f = first_failure();
        if (!f)
            return {};
        switch (branches[*f].first) {
        case act::fail:
            return errc::branch_failed;
        case act::throw_error:
            return errc::branch_error;
        default:
            return errc::branch_timed_out;
        }
    }
};

std::string participant_name(const tx_plan& p, std::size_t resource) {
    return (p.saga ? "s" : "t") + std::to_string(resource);
}

struct mix {
    std::size_t hangs = 0, pendings = 0, phase_two_faults = 0, failures = 0;
};

/// Draws the plan of one transaction.
tx_plan draw(std::mt19937_64& rng, std::string gid, bool saga, mix& m) {
    tx_plan p;
    p.gid = std::move(gid);
    p.saga = saga;
    p.together = rng() % 4 == 0;
    const std::size_t n = 1 + rng() % 4;
    for (std::size_t i = 0; i < n; ++i) {
        branch_plan b;
        b.resource = rng() % participants;
        b.qty = 1 + static_cast<int>(rng() % 5);
        const auto r = rng() % 1000;
        if (r < 900) {
            b.first = act::ok;
        } else if (r < 930) {
            b.first = act::fail;
        } else if (r < 955) {
            b.first = act::throw_error;
        } else if (r < 995) {
            b.first = act::ok;
            b.pending = 1 + static_cast<unsigned>(rng() % 3);
        } else {
            b.first = act::hang; // costs one call_timeout
        }
        if (rng() % 10 == 0) {
            b.faults = 1 + static_cast<unsigned>(rng() % 3);
            const auto k = rng() % 20;
            b.fault = k < 6    ? act::fail
                      : k < 12 ? act::throw_error
                      : k < 19 ? act::pending
                               : act::hang;
        }
        m.hangs += (b.first == act::hang) + (b.faults > 0 && b.fault == act::hang ? b.faults : 0);
        m.pendings += b.pending > 0;
        m.phase_two_faults += b.faults > 0;
        m.failures += b.first != act::ok;
        p.branches.push_back(b);
    }
    return p;
}

unsigned branch_index(std::string_view branch_id) {
    return static_cast<unsigned>((branch_id[0] - '0') * 10 + (branch_id[1] - '0')) - 1;
}

bool first_phase(branch_op op) {
    return op == branch_op::try_ || op == branch_op::action;
}

/// The body of one transaction: registers the plan's branches one by one or all together.
struct body {
    const tx_plan* plan;

    template <class Handle>
    asio::awaitable<void> operator()(Handle& tx) const {
        const tx_plan* p = plan;
        if (p->together) {
            std::vector<branch_spec> specs;
            for (const auto& b : p->branches)
                specs.push_back(branch_spec{participant_name(*p, b.resource), qty_payload{b.qty}});
            if constexpr (std::is_same_v<Handle, tcc_transaction>)
                co_await tx.add_branches(std::move(specs));
            else
                co_await tx.add_steps(std::move(specs));
        } else {
            for (const auto& b : p->branches) {
                std::string name = participant_name(*p, b.resource);
                nlohmann::json payload = qty_payload{b.qty};
                if constexpr (std::is_same_v<Handle, tcc_transaction>)
                    co_await tx.add_branch(std::move(name), std::move(payload));
                else
                    co_await tx.add_step(std::move(name), std::move(payload));
            }
        }
    }
};

/// One run of every plan at once, shared by the test cases below (built by the first that asks).
struct stress_run {
    std::vector<tx_plan> plans;
    std::unordered_map<std::string, const tx_plan*> by_gid;
    mix m;

    asio::io_context ioc;
    memory_journal journal; // keep_ended = false: the journal must end up empty
    participant_registry registry;
    std::vector<std::unique_ptr<resource>> tcc_side, saga_side;
    /// Per saga gid, the compensations in the order they were sent, and how each was answered.
    std::unordered_map<std::string, std::vector<std::pair<unsigned, act>>> compensations;

    std::vector<std::optional<tx_result>> results;
    std::vector<std::string> errors;
    std::size_t finished = 0;

    stress_run() {
        draw_plans();
        add_participants();
        run_all();
    }

    void draw_plans() {
        const std::uint64_t seed = stress_seed();
        MESSAGE("stress seed: " << seed << " (" << tcc_count << " TCC, " << saga_count
                                << " sagas)");
        std::mt19937_64 rng(seed);
        plans.reserve(tcc_count + saga_count);
        for (std::size_t i = 0; i < tcc_count + saga_count; ++i) {
            char gid[32];
            const bool saga = i % 5 == 4; // one in five, interleaved with the TCC ones
            std::snprintf(gid, sizeof gid, "%s-%05zu", saga ? "saga" : "tcc", i);
            plans.push_back(draw(rng, gid, saga, m));
        }
        for (const auto& p : plans)
            by_gid.emplace(p.gid, &p);
        MESSAGE("injected: " << m.failures << " failing tries/actions, " << m.pendings
                             << " pending ones, " << m.phase_two_faults
                             << " phase-2 branches failing transiently, " << m.hangs << " hangs");
    }

    /// Participants scripted by the plans.
    void add_participants() {
        auto script_for = [this](bool saga) -> script {
            return [this, saga](std::string_view gid, std::string_view branch_id, branch_op op,
                                unsigned attempt) {
                auto it = by_gid.find(std::string(gid));
                if (it == by_gid.end() || it->second->saga != saga)
                    return act::fail; // not planned: refused
                const unsigned idx = branch_index(branch_id);
                const branch_plan& b = it->second->branches.at(idx);
                act how = act::ok;
                if (first_phase(op))
                    how = attempt <= b.pending ? act::pending : b.first;
                else
                    how = attempt <= b.faults ? b.fault : act::ok;
                if (op == branch_op::compensate)
                    compensations[std::string(gid)].emplace_back(idx, how);
                return how;
            };
        };
        for (std::size_t i = 0; i < participants; ++i) {
            tcc_side.push_back(std::make_unique<resource>("t" + std::to_string(i)));
            tcc_side.back()->set_script(script_for(false));
            registry.add_tcc("t" + std::to_string(i), tcc_side.back()->tcc());
            saga_side.push_back(std::make_unique<resource>("s" + std::to_string(i)));
            saga_side.back()->set_script(script_for(true));
            registry.add_saga("s" + std::to_string(i), saga_side.back()->saga());
        }
    }

    void run_all() {
        auto opts = fast_options();
        opts.call_timeout = 5ms; // what a hang costs
        // No deadline may interfere, however slow the run (a sanitizer build, a loaded machine).
        opts.transaction_timeout = std::chrono::minutes(10);
        coordinator coord(ioc.get_executor(), journal, registry, opts);
        results.resize(plans.size());
        const auto started = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < plans.size(); ++i) {
            auto done = [this, i](std::exception_ptr e, tx_result r) {
                ++finished;
                if (e) {
                    try {
                        std::rethrow_exception(e);
                    } catch (const std::exception& x) {
                        errors.push_back(plans[i].gid + " threw: " + x.what());
                    } catch (...) {
                        errors.push_back(plans[i].gid + " threw a non-standard exception");
                    }
                    return;
                }
                results[i].emplace(std::move(r));
            };
            tx_options o{.gid = plans[i].gid};
            if (plans[i].saga)
                asio::co_spawn(ioc, coord.saga(body{&plans[i]}, std::move(o)), done);
            else
                asio::co_spawn(ioc, coord.tcc(body{&plans[i]}, std::move(o)), done);
        }
        while (finished < plans.size() && ioc.run_one() > 0) {
        }
        const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - started);
        MESSAGE("all " << finished << " transactions ended in " << elapsed.count() << " ms");
    }

    std::vector<const resource*> side(bool saga) const {
        std::vector<const resource*> out;
        for (const auto& r : saga ? saga_side : tcc_side)
            out.push_back(r.get());
        return out;
    }
};

stress_run& the_run() {
    static stress_run run;
    return run;
}

/// The first problems found, one line each, with the gid they concern.
class problems {
public:
    void add(const tx_plan& p, const std::string& what) {
        if (lines_.size() < 20)
            lines_.push_back(p.gid + ": " + what);
        else if (lines_.size() == 20)
            lines_.push_back("...");
    }
    std::string text() const {
        std::string out;
        for (const auto& x : lines_)
            out += "\n  " + x;
        return out;
    }
    bool empty() const { return lines_.empty(); }

private:
    std::vector<std::string> lines_;
};

/// Calls `check(plan, result)` for every transaction that returned a final result.
template <class F>
void for_each_final(const stress_run& run, F check) {
    for (std::size_t i = 0; i < run.plans.size(); ++i)
        if (run.results[i] && is_final(run.results[i]->status))
            check(run.plans[i], *run.results[i]);
}

} // namespace

TEST_CASE("stress: 10,000 concurrent TCC transactions and 2,500 sagas with random failures all "
          "return a final result, none throws") {
    const stress_run& run = the_run();
    std::size_t sagas = 0;
    for (const auto& p : run.plans)
        sagas += p.saga;
    REQUIRE(sagas == saga_count);
    REQUIRE(run.finished == run.plans.size());
    CHECK(run.errors.empty());
    if (!run.errors.empty())
        FAIL_CHECK(run.errors.front());
    problems found;
    for (std::size_t i = 0; i < run.plans.size(); ++i) {
        const auto& r = run.results[i];
        if (r && r->gid != run.plans[i].gid)
            found.add(run.plans[i], "result names gid " + r->gid);
        if (r && !is_final(r->status))
            found.add(run.plans[i],
                      "ended " + std::string(to_string(r->status)) + ": " + r->message);
    }
    INFO("first problems:" << found.text());
    CHECK(found.empty());
}

TEST_CASE("stress: every transaction ends as its plan says, with the planned reason") {
    const stress_run& run = the_run();
    std::size_t confirmed[2] = {0, 0}, cancelled[2] = {0, 0};
    problems found;
    for_each_final(run, [&](const tx_plan& p, const tx_result& r) {
        const bool should_confirm = !p.first_failure();
        if ((r.status == tx_status::confirmed) != should_confirm)
            found.add(p, "ended " + std::string(to_string(r.status)) +
                             ", planned otherwise: " + r.message);
        if (r.reason != p.expected_reason())
            found.add(p, "reason " + r.reason.message() + ", expected " +
                             p.expected_reason().message());
        (r.status == tx_status::confirmed ? confirmed : cancelled)[p.saga]++;
    });
    INFO("first problems:" << found.text());
    CHECK(found.empty());
    MESSAGE("TCC: " << confirmed[0] << " confirmed, " << cancelled[0] << " cancelled; sagas: "
                    << confirmed[1] << " confirmed, " << cancelled[1] << " cancelled");
    CHECK(confirmed[0] + cancelled[0] == tcc_count);
    CHECK(confirmed[1] + cancelled[1] == saga_count);
    CHECK(confirmed[0] > 0);
    CHECK(cancelled[0] > 0);
    CHECK(confirmed[1] > 0);
    CHECK(cancelled[1] > 0);
}

TEST_CASE("stress: each participant got exactly the calls its plan implies and ended in the "
          "transaction's state") {
    const stress_run& run = the_run();
    problems found;
    for_each_final(run, [&](const tx_plan& p, const tx_result& r) {
        const auto& side = p.saga ? run.saga_side : run.tcc_side;
        const branch_op first_op = p.saga ? branch_op::action : branch_op::try_;
        const branch_op settle_op = p.saga                             ? branch_op::compensate
                                    : r.status == tx_status::confirmed ? branch_op::confirm
                                                                       : branch_op::cancel;
        std::size_t confirmed_branches = 0;
        for (std::size_t k = 0; k < p.branches.size(); ++k) {
            const branch_plan& b = p.branches[k];
            const resource& res = *side[b.resource];
            char id[24];
            std::snprintf(id, sizeof id, "%02zu", k + 1);
            const auto state = res.state(p.gid, id);
            confirmed_branches += state == resource::slot_state::confirmed;
            if (k >= p.registered()) {
                if (!res.ops(p.gid, id).empty())
                    found.add(p, std::string("branch ") + id + " was never registered, yet called");
                continue;
            }
            if (res.count(p.gid, id, first_op) != b.pending + 1)
                found.add(p, std::string("branch ") + id + ": " +
                                 std::to_string(res.count(p.gid, id, first_op)) +
                                 " first-phase calls");
            const bool settles = !(p.saga && r.status == tx_status::confirmed);
            const std::size_t want = settles ? b.faults + 1 : 0;
            if (res.count(p.gid, id, settle_op) != want)
                found.add(p, std::string("branch ") + id + ": " +
                                 std::to_string(res.count(p.gid, id, settle_op)) + " " +
                                 std::string(to_string(settle_op)) + " calls, expected " +
                                 std::to_string(want));
            const auto want_state = r.status == tx_status::confirmed
                                        ? resource::slot_state::confirmed
                                        : resource::slot_state::cancelled;
            if (state != want_state)
                found.add(p, std::string("branch ") + id + " left in the wrong state");
        }
        if (r.status == tx_status::confirmed && confirmed_branches != p.branches.size())
            found.add(p, "confirmed, but only " + std::to_string(confirmed_branches) +
                             " branches are");
        if (r.status == tx_status::cancelled && confirmed_branches != 0)
            found.add(p, "cancelled, but " + std::to_string(confirmed_branches) +
                             " branches are confirmed");
    });
    INFO("first problems:" << found.text());
    CHECK(found.empty());
}

TEST_CASE("stress: cancelled sagas are compensated strictly newest first, each step until it "
          "succeeded before the next") {
    const stress_run& run = the_run();
    problems found;
    std::size_t checked = 0;
    for_each_final(run, [&](const tx_plan& p, const tx_result& r) {
        if (!p.saga || r.status != tx_status::cancelled)
            return;
        ++checked;
        std::vector<std::pair<unsigned, act>> want;
        for (std::size_t k = p.registered(); k-- > 0;) {
            for (unsigned a = 1; a <= p.branches[k].faults; ++a)
                want.emplace_back(static_cast<unsigned>(k), p.branches[k].fault);
            want.emplace_back(static_cast<unsigned>(k), act::ok);
        }
        const auto it = run.compensations.find(p.gid);
        if (it == run.compensations.end() || it->second != want)
            found.add(p, "compensations out of order");
    });
    CHECK(checked > 0);
    INFO("first problems:" << found.text());
    CHECK(found.empty());
}

TEST_CASE("stress: the participants' invariants hold and nothing is left reserved or journaled") {
    stress_run& run = the_run();
    const auto tccs = run.side(false), sagas = run.side(true);
    CHECK(check_invariants(tccs) == "");
    CHECK(check_invariants(sagas, /*sagas=*/true) == "");
    std::size_t seen = 0;
    for (const auto* r : tccs)
        seen += r->gids().size();
    for (const auto* r : sagas)
        seen += r->gids().size();
    CHECK(seen > 0);
    for (const auto* r : tccs)
        CHECK(r->reserved() == 0);
    CHECK(run.journal.unfinished() == 0);
    CHECK(run.journal.all().empty());
}
