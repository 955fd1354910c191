// A participant service: a warehouse (TCC) and a payment desk (saga) served over HTTP, so that
// coordinators in other processes (dtx's, or DTM's) call them. docs/protocol.md calls it with curl.
//
//   participant_server [port [bearer token]]      (default port 8081; Ctrl-C stops it)
//
// Written as participants should be: the state is in a database (SQLite, participant_server.db in
// the working directory, made afresh at each start: 10 in stock, nothing charged), and every
// handler runs under the barrier, in the same local transaction as the barrier's row. So a
// repeated request changes nothing, a cancel whose try never came gives nothing back, and a try
// that comes after its cancel reserves nothing.
#include <dtx/dtx.hpp>
#include <dtx/http.hpp>
#include <dtx/sqlite.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>

namespace asio = dtx::asio;
using dtx::sqlite::connection;

// The payloads: {"qty": 3} for the warehouse, {"amount": 40} for the payment desk.
struct reservation {
    int qty = 0;
};
struct charge {
    int amount = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reservation, qty)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(charge, amount)

// Quantities a request may ask for: anything else is refused before it touches the tables.
constexpr int max_qty = 1000;
constexpr int max_amount = 1'000'000;

std::int64_t available(connection& db) {
    auto& st = db.prepare("SELECT available FROM stock");
    const std::int64_t n = st.step() ? st.integer(0) : 0;
    st.bind(); // resets it: no read left open
    return n;
}

/// The warehouse: try reserves stock, confirm takes it (reserved -> sold), cancel gives it back.
dtx::tcc_handlers warehouse(dtx::sqlite::barrier& barrier) {
    return barrier.tcc({
        .on_try = dtx::sqlite::typed_handler<reservation>(
            [](connection& db, const dtx::branch_request&, reservation r) {
                if (r.qty <= 0 || r.qty > max_qty)
                    return dtx::failure("qty must be 1 to " + std::to_string(max_qty));
                db.prepare("UPDATE stock SET available = available - ?1, reserved = reserved + ?1 "
                           "WHERE available >= ?1")
                    .bind(r.qty)
                    .run();
                if (db.changes() == 1)
                    return dtx::success();
                return dtx::failure("only " + std::to_string(available(db)) + " left");
            }),
        // The barrier runs these only for a try that succeeded, with that try's payload.
        .on_confirm = dtx::sqlite::typed_handler<reservation>(
            [](connection& db, const dtx::branch_request&, reservation r) {
                db.prepare("UPDATE stock SET reserved = reserved - ?1, sold = sold + ?1")
                    .bind(r.qty)
                    .run();
                return dtx::success();
            }),
        .on_cancel = dtx::sqlite::typed_handler<reservation>(
            [](connection& db, const dtx::branch_request&, reservation r) {
                db.prepare("UPDATE stock SET reserved = reserved - ?1, available = available + ?1")
                    .bind(r.qty)
                    .run();
                return dtx::success();
            }),
    });
}

/// The payment desk: an action charges the amount, a compensation refunds it. Charges above 1000
/// wait for a review (pending: nothing is written, the coordinator asks again); a negative amount
/// is a bug in the caller, and an exception (an unknown result, rolled back).
dtx::saga_handlers payment_desk(dtx::sqlite::barrier& barrier) {
    return barrier.saga({
        .on_action = dtx::sqlite::typed_handler<charge>(
            [](connection& db, const dtx::branch_request&, charge c) {
                if (c.amount < 0)
                    throw std::invalid_argument("negative amount");
                if (c.amount == 0 || c.amount > max_amount)
                    return dtx::failure("amount must be 1 to " + std::to_string(max_amount));
                if (c.amount > 1000)
                    return dtx::pending("waiting for a review");
                db.prepare("UPDATE desk SET charged = charged + ?1").bind(c.amount).run();
                return dtx::success();
            }),
        .on_compensate = dtx::sqlite::typed_handler<charge>(
            [](connection& db, const dtx::branch_request&, charge c) {
                db.prepare("UPDATE desk SET refunded = refunded + ?1").bind(c.amount).run();
                return dtx::success();
            }),
    });
}

int main(int argc, char** argv) {
    const std::string path = "participant_server.db";
    for (const char* suffix : {"", "-wal", "-shm"})
        std::remove((path + suffix).c_str());
    {
        connection db(path);
        db.exec("CREATE TABLE stock (available INTEGER NOT NULL, reserved INTEGER NOT NULL, "
                "sold INTEGER NOT NULL);"
                "INSERT INTO stock VALUES (10, 0, 0);"
                "CREATE TABLE desk (charged INTEGER NOT NULL, refunded INTEGER NOT NULL);"
                "INSERT INTO desk VALUES (0, 0);");
    }
    dtx::sqlite::barrier barrier({.path = path});

    dtx::participant_registry participants;
    participants.add_tcc("stock", warehouse(barrier));
    participants.add_saga("payment", payment_desk(barrier));

    asio::io_context ioc;
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
              << "/dtx/ (database " << path << ")" << std::endl;

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) {
        asio::co_spawn(ioc, server.async_stop(), asio::detached); // finishes the requests in flight
    });
    ioc.run();
}
