// dtx quick start: TCC transactions across two in-process participants. The first order is
// confirmed everywhere; the second is refused by one participant and cancelled everywhere.
#include <dtx/dtx.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>
#include <map>

namespace asio = boost::asio;

// The payload of a branch: any type nlohmann::json can convert.
struct reservation {
    int qty = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reservation, qty)

// A toy warehouse: try reserves stock, confirm takes it, cancel gives it back.
struct warehouse {
    int stock = 10;
    std::map<std::string, int, std::less<>> reserved; // by gid

    dtx::tcc_handlers handlers() {
        return {
            .on_try =
                dtx::typed<reservation>([this](const dtx::branch_request& r,
                                               reservation res) -> asio::awaitable<dtx::outcome> {
                    if (res.qty > stock)
                        co_return dtx::failure("only " + std::to_string(stock) + " left");
                    stock -= res.qty;
                    reserved[std::string(r.gid)] = res.qty;
                    co_return dtx::success();
                }),
            .on_confirm = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                if (auto it = reserved.find(r.gid); it != reserved.end())
                    reserved.erase(it); // sold
                co_return dtx::success();
            },
            .on_cancel = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                if (auto it = reserved.find(r.gid); it != reserved.end()) {
                    stock += it->second;
                    reserved.erase(it);
                }
                co_return dtx::success(); // also when nothing was reserved: a null cancel
            },
        };
    }
};

int main() {
    asio::io_context ioc;
    warehouse apples, pears;

    dtx::participant_registry participants;
    participants.add_tcc("apples", apples.handlers());
    participants.add_tcc("pears", pears.handlers());

    dtx::memory_journal journal;
    dtx::coordinator coord(ioc.get_executor(), journal, participants);

    auto order = [&](int n_apples, int n_pears) -> asio::awaitable<void> {
        // The body is named before it is awaited: g++ 12 destroys a lambda temporary of a
        // co_await expression twice (README, "A note for g++ 12 users").
        auto body = [&](dtx::tcc_transaction& tx) -> asio::awaitable<void> {
            co_await tx.add_branch("apples", reservation{n_apples});
            co_await tx.add_branch("pears", reservation{n_pears});
        };
        dtx::tx_result r = co_await coord.tcc(body);
        std::cout << "order of " << n_apples << " apples and " << n_pears
                  << " pears: " << dtx::to_string(r.status) << "\n";
        if (!r.message.empty())
            std::cout << "  because " << r.message << "\n";
        std::cout << "  stock: " << apples.stock << " apples, " << pears.stock << " pears\n";
    };

    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            co_await order(3, 4);  // both tries succeed: confirmed
            co_await order(2, 50); // the pears refuse: the apples' reservation is cancelled
        },
        asio::detached);
    ioc.run();

    // 7 apples and 6 pears left, nothing reserved: the refused order left no trace.
    bool ok =
        apples.stock == 7 && pears.stock == 6 && apples.reserved.empty() && pears.reserved.empty();
    std::cout << (ok ? "invariants hold" : "INVARIANT BROKEN") << "\n";
    return ok ? 0 : 1;
}
