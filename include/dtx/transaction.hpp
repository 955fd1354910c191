#ifndef DTX_TRANSACTION_HPP
#define DTX_TRANSACTION_HPP

// The handles a transaction body receives.
//
//   auto order = [&](dtx::tcc_transaction& tx) -> asio::awaitable<void> {
//       co_await tx.add_branch("inventory", reservation{"sku-1", 2}); // registered, then tried
//       std::vector<dtx::branch_spec> more;                           // a named vector (g++ 12)
//       more.push_back({"payment", charge{.account = 7, .amount = 42}});
//       more.push_back({"loyalty", points{7}});
//       co_await tx.add_branches(std::move(more)); // one journal write, tried concurrently
//   };
//   dtx::tx_result r = co_await coord.tcc(order);
//
// Adding a branch writes it to the journal and then sends its try (TCC) or action (saga). If that
// does not succeed (failure, exception, timeout, deadline), add_branch throws dtx::error and the
// transaction is aborted: when the body returns, every registered branch is cancelled (TCC) or
// compensated newest first (saga), including the one that failed. The body need not catch it;
// if it does, the transaction stays aborted.
//
// A body runs on a strand of its own, so its concurrent branch calls never race on its state.

#include <dtx/branch_spec.hpp>
#include <dtx/detail/config.hpp>
#include <dtx/detail/engine.hpp>
#include <dtx/detail/first_phase.hpp>
#include <dtx/detail/tx_state.hpp>
#include <dtx/journal.hpp>
#include <dtx/payload.hpp>
#include <dtx/version.hpp>

#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

DTX_NAMESPACE_BEGIN

namespace detail {

class transaction_handle {
public:
    transaction_handle(std::shared_ptr<engine> eng, std::shared_ptr<tx_state> st)
        : eng_(std::move(eng))
        , st_(std::move(st)) {}
    transaction_handle(const transaction_handle&) = delete;
    transaction_handle& operator=(const transaction_handle&) = delete;

    const std::string& gid() const noexcept { return st_->gid; }
    wall_clock::time_point deadline() const noexcept { return st_->deadline; }
    /// True once a branch has failed (or the deadline passed): the transaction will be cancelled.
    bool aborted() const noexcept { return st_->aborted; }

protected:
    asio::awaitable<void> add(std::string participant, payload p) {
        detail::branch_list one;
        one.push_back({std::move(participant), std::move(p)});
        return eng_->add_branches(st_, std::move(one));
    }
    asio::awaitable<void> add(std::vector<branch_spec> specs) {
        return eng_->add_branches(st_, detail::branch_list(std::make_move_iterator(specs.begin()),
                                                           std::make_move_iterator(specs.end())));
    }

private:
    std::shared_ptr<engine> eng_;
    std::shared_ptr<tx_state> st_;
};

} // namespace detail

class tcc_transaction : public detail::transaction_handle {
public:
    using transaction_handle::transaction_handle;

    /// Registers a branch and calls its try. Throws dtx::error if the try does not succeed.
    asio::awaitable<void> add_branch(std::string participant, payload p) {
        return add(std::move(participant), std::move(p));
    }

    /// Registers several branches in one journal write and tries them concurrently. Throws
    /// dtx::error naming the first (in the given order) that did not succeed.
    asio::awaitable<void> add_branches(std::vector<branch_spec> branches) {
        return add(std::move(branches));
    }
};

class saga_transaction : public detail::transaction_handle {
public:
    using transaction_handle::transaction_handle;

    /// Registers a step and runs its action. Throws dtx::error if the action does not succeed
    /// (an action answering `pending` is asked again until the deadline).
    asio::awaitable<void> add_step(std::string participant, payload p) {
        return add(std::move(participant), std::move(p));
    }

    /// Registers several steps in one journal write and runs their actions concurrently.
    asio::awaitable<void> add_steps(std::vector<branch_spec> steps) {
        return add(std::move(steps));
    }
};

DTX_NAMESPACE_END

#endif
