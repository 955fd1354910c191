#ifndef DTX_COORDINATOR_HPP
#define DTX_COORDINATOR_HPP

// The coordinator drives global transactions to an end and recovers unfinished ones.
//
//   dtx::memory_journal journal;                 // or a durable one
//   dtx::participant_registry participants;      // names -> handlers (or URLs)
//   dtx::coordinator coord(ioc.get_executor(), journal, participants);
//
//   auto order = [&](dtx::tcc_transaction& tx) -> asio::awaitable<void> {
//       const nlohmann::json item = {{"sku", "A-1"}, {"qty", 2}}; // any JSON, or a struct with
//       co_await tx.add_branch("inventory", item);                 // to_json / from_json
//       co_await tx.add_branch("payment", charge{.account = 7, .amount = 40});
//   };
//   dtx::tx_result r = co_await coord.tcc(order);
//   if (r.committed()) ...
//
// (What a co_await expression takes is built in a statement of its own, as above: g++ 12
// destroys some temporaries of a co_await expression twice, a braced list or a lambda among
// them.)
//
// (Public coroutine functions take no default arguments: g++ 12 miscompiles a non-trivial default
// argument of a call inside a co_await expression. Overloads stand in for them.)
//
// The journal and the registry must outlive the coordinator and every transaction and recovery
// pass it started. A transaction runs to its end even if the coroutine awaiting it is cancelled:
// its deadline bounds it.
//
// Threads: like an Asio I/O object, a coordinator works on one executor, which must not run its
// handlers concurrently: a single-threaded io_context's, or a strand. Transactions may be started
// from any thread (they are moved onto that executor). To use more cores, run one coordinator per
// io_context thread over the same journal and registry, which are thread-safe.

#include <dtx/branch_spec.hpp>
#include <dtx/coordinator_options.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/drivers.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/journal.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/transaction.hpp>
#include <dtx/two_phase_message.hpp>
#include <dtx/tx_options.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include <exception>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

DTX_NAMESPACE_BEGIN

class coordinator {
public:
    /// `ex` runs the transactions and the recovery task; see "Threads" above.
    coordinator(asio::any_io_executor ex, journal& j, participant_registry& participants,
                coordinator_options options = {})
        : eng_(std::make_shared<detail::engine>(std::move(ex), j, participants,
                                                std::move(options))) {}

    coordinator(const coordinator&) = delete;
    coordinator& operator=(const coordinator&) = delete;
    ~coordinator() { stop(); }

    /// Runs a TCC transaction. `body` is called as `body(tcc_transaction&)` and returns
    /// `asio::awaitable<void>`; it adds branches. When it returns, the transaction is confirmed if
    /// every try succeeded, and cancelled otherwise (a failed try, an exception, the deadline).
    template <class Body>
    asio::awaitable<tx_result> tcc(Body body, tx_options options) {
        return detail::run_transaction<tcc_transaction>(
            eng_, eng_->make_state(tx_kind::tcc, std::move(options)), std::move(body));
    }
    template <class Body>
    asio::awaitable<tx_result> tcc(Body body) {
        return tcc(std::move(body), tx_options{});
    }

    /// Runs a saga. `body` is called as `body(saga_transaction&)` and adds steps; if any action
    /// fails (or the body throws), every registered step is compensated, newest first.
    template <class Body>
    asio::awaitable<tx_result> saga(Body body, tx_options options) {
        return detail::run_transaction<saga_transaction>(
            eng_, eng_->make_state(tx_kind::saga, std::move(options)), std::move(body));
    }
    template <class Body>
    asio::awaitable<tx_result> saga(Body body) {
        return saga(std::move(body), tx_options{});
    }

    /// Runs a saga of planned steps: all of them are registered in one journal write, then their
    /// actions run one after another. If one does not succeed, the steps whose actions were sent
    /// are compensated, newest first. Cheaper than a saga body (one durable write instead of one
    /// per step and one for the end), and recovered forward: a recovery that finds it unfinished
    /// sends the actions again, in order, and compensates only if one answers failure; so its
    /// actions must answer a repeat as they answered the first time (the barrier does this).
    /// Build `steps` as a named variable: g++ 12 miscompiles a braced list inside co_await.
    asio::awaitable<tx_result> saga(std::vector<branch_spec> steps, tx_options options) {
        return detail::run_planned(eng_, std::move(steps), std::move(options));
    }
    asio::awaitable<tx_result> saga(std::vector<branch_spec> steps) {
        return saga(std::move(steps), tx_options{});
    }

    /// Runs a 2-phase message (two_phase_message.hpp): prepares it in the journal, runs `local`
    /// (the local transaction, which writes the message's barrier row), then submits it and
    /// delivers each branch's action until it succeeds; aborts it if `local` answers failure;
    /// asks the check-back if `local` throws. `confirmed` once delivered everywhere, `cancelled`
    /// if the local transaction did not commit, `trying` if the check-back could not tell yet
    /// (recovery asks it again), `confirming` if delivery stopped at the retry policy's limit.
    asio::awaitable<tx_result>
    prepare_and_submit(two_phase_message msg, message_local_transaction local, tx_options options) {
        return detail::run_message(eng_, std::move(msg), std::move(local), std::move(options));
    }
    asio::awaitable<tx_result> prepare_and_submit(two_phase_message msg,
                                                  message_local_transaction local) {
        return prepare_and_submit(std::move(msg), std::move(local), tx_options{});
    }

    /// One recovery pass: drives every due unfinished transaction in the journal to its end
    /// (confirming ones confirmed, cancelling ones cancelled, trying ones past their deadline
    /// cancelled, 2-phase messages past their deadline decided by their check-back).
    /// Transactions this coordinator is driving itself are left alone.
    asio::awaitable<recovery_report> recover(recovery_options ro) {
        return detail::run_recovery(eng_, ro);
    }
    asio::awaitable<recovery_report> recover() { return recover(recovery_options{}); }

    /// Starts recovery in the background: a pass now and then every `recovery_interval`. A pass
    /// that throws (the journal is unreachable, say) is reported to `on_error` and retried at the
    /// next interval.
    void start_recovery(std::function<void(std::exception_ptr)> on_error = {}) {
        asio::co_spawn(eng_->executor(), detail::recovery_loop(eng_, std::move(on_error)),
                       asio::detached);
    }

    /// Stops the background recovery after its current pass. Transactions in flight go on.
    void stop() {
        eng_->request_stop();
        asio::post(eng_->executor(),
                   [eng = eng_] { eng->stop_signal().emit(asio::cancellation_type::terminal); });
    }

    const coordinator_options& options() const noexcept { return eng_->options(); }

private:
    std::shared_ptr<detail::engine> eng_;
};

DTX_NAMESPACE_END

#endif
