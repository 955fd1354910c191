// A participant service: a warehouse (TCC) and a payment desk (saga) served over HTTP, so that
// coordinators in other processes (dtx's, or DTM's) call them. docs/protocol.md calls it with curl.
//
//   participant_server [port [bearer token]]      (default port 8081; Ctrl-C stops it)
#include <dtx/dtx.hpp>
#include <dtx/http.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <iostream>
#include <map>
#include <stdexcept>
#include <string>

namespace asio = dtx::asio;

// The payloads: {"qty": 3} for the warehouse, {"amount": 40} for the payment desk. typed<T>
// refuses numbers that do not fit an int exactly (2.9, 4294967295, true).
struct reservation {
    int qty = 0;
};
struct charge {
    int amount = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reservation, qty)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(charge, amount)

// Try reserves stock, confirm takes it, cancel gives it back. Requests are keyed by gid and
// branch, so a repeated one changes nothing (a real service uses the barrier for this).
struct warehouse {
    int stock = 10;
    std::map<std::string, int> reserved;

    static std::string key(const dtx::branch_request& r) {
        return std::string(r.gid) + "/" + std::string(r.branch_id);
    }

    dtx::tcc_handlers handlers() {
        return {
            .on_try =
                dtx::typed<reservation>([this](const dtx::branch_request& r,
                                               reservation res) -> asio::awaitable<dtx::outcome> {
                    if (reserved.contains(key(r)))
                        co_return dtx::success(); // a repeat
                    if (res.qty < 1)              // a negative reservation would add stock
                        co_return dtx::failure("qty must be at least 1");
                    if (res.qty > stock)
                        co_return dtx::failure("only " + std::to_string(stock) + " left");
                    stock -= res.qty;
                    reserved[key(r)] = res.qty;
                    co_return dtx::success();
                }),
            .on_confirm = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                reserved.erase(key(r)); // sold
                co_return dtx::success();
            },
            .on_cancel = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                if (auto it = reserved.find(key(r)); it != reserved.end()) {
                    stock += it->second;
                    reserved.erase(it);
                }
                co_return dtx::success(); // also when nothing was reserved: a null cancel
            },
        };
    }
};

// Charges above 1000 wait for a review (pending); a negative amount is a bug in the caller, and
// an exception (an unknown result).
struct payment_desk {
    std::map<std::string, int> charged;

    dtx::saga_handlers handlers() {
        return {
            .on_action = dtx::typed<charge>(
                [this](const dtx::branch_request& r, charge c) -> asio::awaitable<dtx::outcome> {
                    if (c.amount < 0)
                        throw std::invalid_argument("negative amount");
                    if (c.amount > 1000)
                        co_return dtx::pending("waiting for a review");
                    charged[std::string(r.gid) + "/" + std::string(r.branch_id)] = c.amount;
                    co_return dtx::success();
                }),
            .on_compensate = [this](const dtx::branch_request& r) -> asio::awaitable<dtx::outcome> {
                charged.erase(std::string(r.gid) + "/" + std::string(r.branch_id)); // refunded
                co_return dtx::success();
            },
        };
    }
};

int main(int argc, char** argv) {
    asio::io_context ioc;
    warehouse stock;
    payment_desk payments;
    dtx::participant_registry participants;
    participants.add_tcc("stock", stock.handlers());
    participants.add_saga("payment", payments.handlers());

    dtx::http::server_options options;
    options.port = static_cast<std::uint16_t>(argc > 1 ? std::stoi(argv[1]) : 8081);
    if (argc > 2)
        options.bearer_token = argv[2];
    options.on_request = [](const dtx::http::log_record& r) {
        std::cout << r.method << ' ' << r.path << ' ' << r.gid << ' ' << r.branch_id << ' '
                  << (r.op ? dtx::to_string(*r.op) : "") << " -> " << r.status << ' ' << r.error
                  << std::endl;
    };
    dtx::http::server server(ioc, participants, options);
    server.start();
    std::cout << "serving stock (tcc) and payment (saga) at http://127.0.0.1:" << server.port()
              << "/dtx/" << std::endl;

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) {
        asio::co_spawn(ioc, server.async_stop(), asio::detached); // finishes the requests in flight
    });
    ioc.run();
}
