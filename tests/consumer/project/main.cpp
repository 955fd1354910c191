// A program that uses dtx as a dependency: two in-process participants, one TCC transaction that
// they confirm and one that a participant refuses, so it is cancelled. Exits 0 when both ended so
// and the stock is back where the confirmed transaction left it.
//
// DTX_CONSUMER_SQLITE: the journal is a SQLite file (consumer.db in the working directory)
// instead of memory.

#include <dtx/dtx.hpp>

#ifdef DTX_CONSUMER_SQLITE
#include <dtx/sqlite/journal.hpp>

#include <filesystem>
#endif

#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>
#include <map>
#include <string>

namespace asio = boost::asio;

struct reservation {
    int qty = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reservation, qty)

struct shelf {
    int stock = 5;
    std::map<std::string, int, std::less<>> held; // by gid

    dtx::tcc_handlers handlers() {
        return {
            .on_try =
                dtx::typed<reservation>([this](const dtx::branch_request& r,
                                               reservation res) -> asio::awaitable<dtx::outcome> {
                    if (res.qty > stock)
                        co_return dtx::failure("not enough stock");
                    stock -= res.qty;
                    held[std::string(r.gid)] = res.qty;
                    co_return dtx::success();
                }),
            .on_confirm = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                if (auto it = held.find(r.gid); it != held.end())
                    held.erase(it);
                co_return dtx::success();
            },
            .on_cancel = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                if (auto it = held.find(r.gid); it != held.end()) {
                    stock += it->second;
                    held.erase(it);
                }
                co_return dtx::success();
            },
        };
    }
};

int main() {
    asio::io_context ioc;
    shelf a, b;
    dtx::participant_registry participants;
    participants.add_tcc("a", a.handlers());
    participants.add_tcc("b", b.handlers());

#ifdef DTX_CONSUMER_SQLITE
    for (const char* f : {"consumer.db", "consumer.db-wal", "consumer.db-shm"})
        std::filesystem::remove(f);
    dtx::sqlite::journal_options options;
    options.path = "consumer.db";
    dtx::sqlite::journal journal(options);
    const char* journal_name = "sqlite";
#else
    dtx::memory_journal journal;
    const char* journal_name = "memory";
#endif
    dtx::coordinator coord(ioc.get_executor(), journal, participants);

    dtx::tx_status first{}, second{};
    // (Named lambdas and arguments: g++ 12 mishandles temporaries inside a co_await expression.)
    auto order = [&](int qty_a, int qty_b) -> asio::awaitable<dtx::tx_status> {
        auto body = [qty_a, qty_b](dtx::tcc_transaction& tx) -> asio::awaitable<void> {
            const reservation ra{qty_a}, rb{qty_b};
            co_await tx.add_branch("a", ra);
            co_await tx.add_branch("b", rb);
        };
        dtx::tx_result r = co_await coord.tcc(body);
        co_return r.status;
    };
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            first = co_await order(2, 3);
            second = co_await order(1, 9); // more than b has: refused, so cancelled
        },
        asio::detached);
    ioc.run();

    bool ok = first == dtx::tx_status::confirmed && second == dtx::tx_status::cancelled &&
              a.stock == 3 && b.stock == 2 && a.held.empty() && b.held.empty();
    std::cout << "dtx " << DTX_VERSION << " (" << journal_name << " journal): first "
              << dtx::to_string(first) << ", second " << dtx::to_string(second) << ", stock "
              << a.stock << " and " << b.stock << (ok ? "" : ": NOT AS EXPECTED") << "\n";
    return ok ? 0 : 1;
}
