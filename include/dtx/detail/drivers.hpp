#ifndef DTX_DETAIL_DRIVERS_HPP
#define DTX_DETAIL_DRIVERS_HPP

// The coroutines a coordinator spawns on its executor: a transaction (its body, then its decision
// and phase 2), a saga of planned steps, a 2-phase message, a recovery pass and the background
// recovery loop. Each holds the engine for as long as it runs, so that destroying the coordinator
// cannot pull it away, and a transaction's cancellation slot is its own state's signal, so that the
// caller's cancellation cannot cut phase 2 short while a call timeout can cancel what the
// transaction awaits.

#include <dtx/branch_spec.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/phase_two.hpp>
#include <dtx/detail/planned_saga.hpp>
#include <dtx/detail/prepared_message.hpp>
#include <dtx/detail/recovery.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/error.hpp>
#include <dtx/recovery_options.hpp>
#include <dtx/recovery_report.hpp>
#include <dtx/two_phase_message.hpp>
#include <dtx/tx_options.hpp>
#include <dtx/tx_result.hpp>
#include <dtx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace detail {

/// Calls `body(Handle&)`; an exception it throws aborts the transaction (and is kept for the
/// caller). Then the transaction is decided and driven to its end.
template <class Handle, class Body>
asio::awaitable<tx_result> drive_transaction(std::shared_ptr<engine> eng,
                                             std::shared_ptr<tx_state> st, Body body) {
    engine::activity running(eng);
    Handle handle(eng, st);
    try {
        co_await body(handle);
    } catch (const std::exception& e) {
        if (!st->aborted) {
            st->abort(make_error_code(errc::body_threw),
                      describe(st->gid) + ": the transaction body threw: " + e.what());
            st->exception = std::current_exception();
        }
    } catch (...) {
        if (!st->aborted) {
            st->abort(make_error_code(errc::body_threw),
                      describe(st->gid) + ": the transaction body threw a non-standard exception");
            st->exception = std::current_exception();
        }
    }
    co_return co_await eng->finish(std::move(st));
}

/// A transaction whose body is called with a `Handle` (tcc_transaction or saga_transaction), on
/// a coroutine of its own. `keep` holds the signal until that coroutine has completed.
template <class Handle, class Body>
asio::awaitable<tx_result> run_transaction(std::shared_ptr<engine> eng,
                                           std::shared_ptr<tx_state> st, Body body) {
    auto keep = st;
    co_return co_await asio::co_spawn(
        eng->executor(), drive_transaction<Handle>(eng, std::move(st), std::move(body)),
        asio::bind_cancellation_slot(keep->signal.slot(), asio::use_awaitable));
}

/// A saga of planned steps (no `check_back`) or a 2-phase message.
inline asio::awaitable<tx_result> drive_planned(std::shared_ptr<engine> eng,
                                                std::shared_ptr<tx_state> st,
                                                std::vector<branch_spec> steps,
                                                std::string check_back,
                                                message_local_transaction local) {
    engine::activity running(eng);
    branch_list list(std::make_move_iterator(steps.begin()), std::make_move_iterator(steps.end()));
    if (st->kind == tx_kind::msg)
        co_return co_await eng->run_message(std::move(st), std::move(list), std::move(check_back),
                                            std::move(local));
    co_return co_await eng->run_planned_saga(std::move(st), std::move(list));
}

/// A saga of planned steps, on a coroutine of its own as run_transaction's.
inline asio::awaitable<tx_result> run_planned(std::shared_ptr<engine> eng,
                                              std::vector<branch_spec> steps, tx_options options) {
    auto st = eng->make_state(tx_kind::saga, std::move(options));
    auto keep = st;
    co_return co_await asio::co_spawn(
        eng->executor(), drive_planned(eng, std::move(st), std::move(steps), {}, {}),
        asio::bind_cancellation_slot(keep->signal.slot(), asio::use_awaitable));
}

/// A 2-phase message, on a coroutine of its own as run_transaction's.
inline asio::awaitable<tx_result> run_message(std::shared_ptr<engine> eng, two_phase_message msg,
                                              message_local_transaction local, tx_options options) {
    auto st = eng->make_state(tx_kind::msg, std::move(options));
    auto keep = st;
    co_return co_await asio::co_spawn(
        eng->executor(),
        drive_planned(eng, std::move(st), std::move(msg.branches), std::move(msg.check_back),
                      std::move(local)),
        asio::bind_cancellation_slot(keep->signal.slot(), asio::use_awaitable));
}

inline asio::awaitable<recovery_report>
drive_recovery(std::shared_ptr<engine> eng, recovery_options ro,
               std::shared_ptr<asio::cancellation_signal> signal) {
    engine::activity running(eng);
    co_return co_await eng->recover(ro, *signal);
}

/// One recovery pass, on a coroutine of its own whose signal bounds its branch calls.
inline asio::awaitable<recovery_report> run_recovery(std::shared_ptr<engine> eng,
                                                     recovery_options ro) {
    auto signal = std::make_shared<asio::cancellation_signal>();
    co_return co_await asio::co_spawn(
        eng->executor(), drive_recovery(eng, ro, signal),
        asio::bind_cancellation_slot(signal->slot(), asio::use_awaitable));
}

/// Recovery passes every `recovery_interval` until the engine is asked to stop; a pass that
/// throws is reported to `on_error`.
inline asio::awaitable<void> recovery_loop(std::shared_ptr<engine> eng,
                                           std::function<void(std::exception_ptr)> on_error) {
    asio::steady_timer wait(co_await asio::this_coro::executor);
    asio::cancellation_signal calls; // for call timeouts inside the passes
    while (!eng->stopping()) {
        try {
            engine::activity running(eng);
            co_await asio::co_spawn(
                co_await asio::this_coro::executor, eng->recover(recovery_options{}, calls),
                asio::bind_cancellation_slot(calls.slot(), asio::use_awaitable));
        } catch (...) {
            if (on_error)
                on_error(std::current_exception());
        }
        if (eng->stopping())
            break;
        wait.expires_after(eng->options().recovery_interval);
        co_await wait.async_wait(asio::bind_cancellation_slot(eng->stop_signal().slot(),
                                                              asio::as_tuple(asio::use_awaitable)));
    }
}

} // namespace detail
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
