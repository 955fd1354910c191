// Messages benchmark: the transactional outbox, the relay and the HTTP consumer with its inbox,
// against baselines measured in the same run.
//
//   bench_messages [--quick] [--seconds=S] [--tx=N] [--filter=SUBSTRING] [--list] [--dir=DIR]
//                  [--messages=N] [--idle-connections=N]
//
// The program is the producer process; it starts the consumer by running itself again with
// `--consumer=DB` (stopped when its standard input closes). Every measurement prints one JSON
// object on a line of its own (stdout); progress and errors go to stderr. Options as for
// bench_sqlite; the databases go to a new directory under DIR (default: $DTX_BENCH_DIR, else
// $TMPDIR, else /var/tmp), removed at the end. It must be on a real disk. Every database is WAL
// with synchronous FULL: each commit is one fsync.
//
// A business transaction takes 1 unit from an account (an UPDATE of one row of the producer's
// `account` table) and, in the same local transaction, adds a message to a dtx::sqlite::outbox
// (`outbox.run(fn)`, fn calling `outbox.add(db, m)`), as the outbox's header shows. The consumer
// process (dtx::http::server on one thread, dtx::http::add_consumer, dtx::sqlite::inbox) adds the
// unit to the same account of its own `account` table, in the inbox's transaction. After every
// run (warm-ups too) the benchmark checks that the consumer processed each message exactly once
// and that both account totals moved by the number of messages; otherwise it stops with an error.
//
// Lines and their same-run baselines (measured in 4 slices that alternate with 4 slices of the
// lines, one each with --tx, so that a load that drifts weighs on both alike):
//   - outbox_write_c1, outbox_write_c32: 1 or 32 worker coroutines on one io_context thread each
//     loop the business transaction with its message. Baseline: the same transaction through the
//     same outbox.run(), without the message. Goal: time per transaction <= 1.2 x the baseline's
//     (`cost_ratio`). No relay runs; each line starts on a fresh database.
//   - outbox_write_pg_c1, outbox_write_pg_c32: the same on dtx::postgres::outbox (default
//     options), on a throwaway PostgreSQL server with default settings (fsync, synchronous_commit
//     on) started by tests/support/pg_server.sh, where the server binaries are installed.
//   - messages_http_c32: 32 workers commit messages while a dtx::relay (default options, on the
//     same io_context thread) delivers them through dtx::http::publisher to the consumer. A run
//     of N messages lasts from the first commit to the relay's settlement of the last (the
//     consumer has them all). Baseline: the raw Beast keep-alive request rate, 32 connections
//     from one client thread to a bare Beast server in the consumer process that answers a fixed
//     200 (bench_http_support.hpp). Goal: messages/s >= 0.2 x that rate (`ratio`).
//   - messages_http_c1: one worker commits a message, then waits until the relay has settled it.
//     Latency: from the producer's commit (when outbox.run() returned) to the consumer's (when
//     the inbox's consume() returned to the route, its transaction committed), both read on
//     CLOCK_MONOTONIC. Baseline: one raw commit (p50 of single-row autocommit INSERTs, WAL, FULL,
//     same directory) plus one raw round trip (p50, one kept-alive connection to the bare
//     server). Goal: p50 <= 3 x that (`p50_ratio`).
//   - relay_catchup: --messages=N (default 100,000) messages are committed while no relay runs
//     (1,000 per transaction), then a relay is started: the time until it has settled the last
//     one, and the rate. No baseline of its own; `baseline_req_per_s` is the raw request rate of
//     the c32 line's scheme, measured just before.
// --idle-connections=N sets the publisher's client_options::max_idle_per_endpoint (default 32):
// the relay publishes a claimed batch (up to 64 messages) at once, one connection each.
// Also: producer commits per message (the business transactions, the relay's claims and
// settlements) and how many of them fsynced (the relay's own commit without: sqlite/outbox.hpp),
// the relay's claims per message, connections the publisher's client opened, CPU
// time per message of the producer's threads and of the consumer process, the load average when
// the line started.

#include <dtx/http/client.hpp>
#include <dtx/http/consumer.hpp>
#include <dtx/http/publisher.hpp>
#include <dtx/http/server.hpp>
#include <dtx/relay.hpp>
#include <dtx/sqlite/inbox.hpp>
#include <dtx/sqlite/outbox.hpp>

#include <boost/asio/steady_timer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bench_http_support.hpp"
#include "bench_process_support.hpp"
#include "bench_support.hpp"

#ifdef DTX_BENCH_HAVE_POSTGRES
#include <dtx/postgres/outbox.hpp>

#include "bench_postgres_support.hpp"
#endif

namespace bench {

constexpr std::int64_t n_accounts = 1000;
constexpr std::int64_t opening_balance = 1'000'000'000;
constexpr const char* consumer_name = "bench";
constexpr const char* consumer_path = "/bench/events";

/// Nanoseconds on CLOCK_MONOTONIC (steady_clock on Linux), which both processes share.
std::int64_t monotonic_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch())
        .count();
}

std::uint32_t clamp_ns(std::int64_t ns) {
    return static_cast<std::uint32_t>(std::clamp<std::int64_t>(ns, 0, UINT32_MAX));
}

int create_accounts(dtx::sqlite::connection& db) {
    db.exec(
        "CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)");
    auto& ins = db.prepare("INSERT OR IGNORE INTO account VALUES (?, ?)");
    for (std::int64_t i = 0; i < n_accounts; ++i)
        ins.bind(i, opening_balance).run();
    return 0;
}

template <class Store, class Fn>
asio::awaitable<void> open_accounts(Store* store, Fn fn) {
    co_await store->template run<int>(std::move(fn));
}

/// Creates the `account` table through `store` (an outbox or an inbox) with `fn` (by default,
/// create_accounts: SQLite) and fills it.
template <class Store, class Fn = int (*)(dtx::sqlite::connection&)>
void create_accounts_in(Store& store, Fn fn = create_accounts) {
    asio::io_context ioc(1);
    asio::co_spawn(ioc, open_accounts(&store, std::move(fn)), [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    });
    ioc.run();
}

/// The sum of the balances of the `account` table of the database at `path`.
std::int64_t total_balance(const std::string& path) {
    dtx::sqlite::connection db(path);
    auto& q = db.prepare("SELECT sum(balance) FROM account");
    q.bind();
    if (!q.step())
        throw std::runtime_error(path + ": no total");
    const std::int64_t total = q.integer(0);
    db.reset_statements();
    return total;
}

// ---- the consumer process ----------------------------------------------------------------------

/// What the consumer has processed: counts, and when each message's transaction committed.
struct consumed {
    std::uint64_t processed = 0, duplicates = 0, refused = 0;
    std::vector<std::string> ids; // since the last "times" command
    std::vector<std::int64_t> ns;
};

/// The consumer's handler: the business change, in the inbox's transaction.
dtx::outcome credit(dtx::sqlite::connection& db, const dtx::envelope& e) {
    db.prepare("UPDATE account SET balance = balance + 1 WHERE id = ?")
        .bind(e.payload.at("account").get<std::int64_t>())
        .run();
    return db.changes() == 1 ? dtx::success() : dtx::failure("no such account");
}

asio::awaitable<void> consumer_control(dtx::http::server* server, asio::ip::tcp::acceptor* bare,
                                       consumed* seen) {
    std::function<void(const std::string&)> on_command = [seen](const std::string& command) {
        nlohmann::ordered_json j;
        j["processed"] = seen->processed;
        j["duplicates"] = seen->duplicates;
        j["refused"] = seen->refused;
        if (command == "times") {
            j["ids"] = std::move(seen->ids);
            j["ns"] = std::move(seen->ns);
            seen->ids.clear();
            seen->ns.clear();
        }
        tell_parent(j);
    };
    co_await read_commands(std::move(on_command));
    boost::system::error_code ignored;
    bare->close(ignored);
    co_await server->async_stop();
}

int consumer_main(const std::string& db_path) {
    asio::io_context ioc(1);
    dtx::sqlite::inbox inbox({.path = db_path});
    auto rethrow = [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    };
    create_accounts_in(inbox);

    consumed seen;
    dtx::http::server server(ioc, dtx::http::server_options{});
    dtx::http::consumer_options co;
    co.on_result = [&seen](std::string_view id, const dtx::consume_result& r) {
        if (r.status == dtx::consume_status::processed) {
            ++seen.processed;
            seen.ids.emplace_back(id);
            seen.ns.push_back(monotonic_ns());
        } else if (r.status == dtx::consume_status::duplicate) {
            ++seen.duplicates;
        } else {
            ++seen.refused;
        }
    };
    const dtx::sqlite::inbox_handler handler = credit;
    dtx::http::add_consumer(server, consumer_path, inbox, consumer_name, handler, std::move(co));
    server.start();
    asio::ip::tcp::acceptor bare(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(ioc, http::bare_accept(bare), asio::detached);
    asio::co_spawn(ioc, consumer_control(&server, &bare, &seen), rethrow);
    nlohmann::ordered_json ports;
    ports["port"] = server.port();
    ports["bare_port"] = bare.local_endpoint().port();
    tell_parent(ports);
    ioc.run();
    return 0;
}

// ---- the producer ------------------------------------------------------------------------------

/// The sqlite::outbox, as the relay sees it, telling when it settles messages: the producer's
/// runs wait for that (the consumer has a message once its delivery is settled).
class watched_outbox final : public dtx::outbox_store {
public:
    explicit watched_outbox(dtx::sqlite::outbox& inner)
        : inner_(inner) {}

    asio::awaitable<dtx::outbox_claim> claim(std::string owner, std::chrono::milliseconds lease,
                                             std::size_t max) override {
        return inner_.claim(std::move(owner), lease, max);
    }
    asio::awaitable<void> settle(std::string owner,
                                 std::vector<dtx::outbox_settlement> settlements) override {
        std::uint64_t n = 0, failed = 0;
        for (const auto& s : settlements)
            (s.status == dtx::delivery_status::delivered ? n : failed) += 1;
        co_await inner_.settle(std::move(owner), std::move(settlements));
        delivered += n;
        not_delivered += failed;
        if (settled_)
            settled_->cancel();
    }
    asio::awaitable<std::vector<dtx::dead_letter>> dead_letters(std::size_t limit,
                                                                std::string after) override {
        return inner_.dead_letters(limit, std::move(after));
    }
    asio::awaitable<bool> requeue(std::string id) override { return inner_.requeue(std::move(id)); }
    asio::awaitable<bool> discard(std::string id) override { return inner_.discard(std::move(id)); }
    asio::awaitable<std::size_t> clean_delivered(std::chrono::system_clock::time_point before,
                                                 std::size_t batch) override {
        return inner_.clean_delivered(before, batch);
    }
    void on_commit(std::function<void()> wake) override { inner_.on_commit(std::move(wake)); }

    /// Waits (on the relay's executor) until `delivered` reaches `target`; throws after
    /// `limit`, or if a message was not delivered at its first attempt.
    asio::awaitable<void> wait_delivered(std::uint64_t target, std::chrono::seconds limit) {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        settled_ = &timer;
        const auto deadline = steady::now() + limit;
        while (delivered < target && not_delivered == 0 && steady::now() < deadline) {
            timer.expires_after(std::chrono::milliseconds(100)); // bounds each wait
            co_await timer.async_wait(http::use_tuple);
        }
        settled_ = nullptr;
        if (delivered < target)
            throw std::runtime_error("the relay delivered " + std::to_string(delivered) + " of " +
                                     std::to_string(target) + " messages (" +
                                     std::to_string(not_delivered) + " attempts failed)");
    }

    std::uint64_t delivered = 0, not_delivered = 0;

private:
    dtx::sqlite::outbox& inner_;
    asio::steady_timer* settled_ = nullptr;
};

/// The message of a transaction on `account`: to `destination`, the account in its payload, its
/// id made by add().
dtx::message message_to(const std::string& destination, std::int64_t account) {
    dtx::message m;
    m.destination = destination;
    m.payload = {{"account", account}};
    return m;
}

/// The producer's database, outbox and the message each transaction adds.
struct producer_db {
    std::string path;
    dtx::sqlite::outbox outbox;
    std::string destination;
    std::uint64_t next = 0; // business transactions so far (on the outbox's database thread)

    producer_db(std::string p, std::string dest)
        : path(p)
        , outbox(dtx::sqlite::outbox_options{.path = std::move(p)})
        , destination(std::move(dest)) {
        create_accounts_in(outbox);
    }

    std::int64_t account_of(std::uint64_t k) const {
        return static_cast<std::int64_t>(k % static_cast<std::uint64_t>(n_accounts));
    }

    dtx::message message_for(std::int64_t account) const {
        return message_to(destination, account);
    }
};

/// One business transaction: one account row updated and, `with_message`, one message added.
/// `commit_ns` (if set) gets the message's id and the time the transaction was seen committed.
struct business_tx {
    producer_db* p;
    bool with_message;
    std::unordered_map<std::string, std::int64_t>* commit_ns = nullptr;

    asio::awaitable<bool> operator()() const {
        std::string id;
        auto fn = [this, &id](dtx::sqlite::connection& db) {
            const std::int64_t account = p->account_of(p->next++);
            db.prepare("UPDATE account SET balance = balance - 1 WHERE id = ?").bind(account).run();
            const bool updated = db.changes() == 1;
            if (with_message)
                id = p->outbox.add(db, p->message_for(account));
            return updated ? 1 : 0;
        };
        const int ok = co_await p->outbox.run<int>(std::move(fn));
        if (commit_ns && with_message)
            commit_ns->emplace(std::move(id), monotonic_ns());
        co_return ok == 1;
    }
};

/// The consumer process, seen from the producer.
class consumer_process {
public:
    consumer_process(const std::string& self, const std::string& db)
        : db_(db)
        , child_(self, {"--consumer=" + db}, "consumer process") {
        const nlohmann::json ports = child_.read_line();
        port_ = ports.at("port").get<std::uint16_t>();
        bare_port_ = ports.at("bare_port").get<std::uint16_t>();
    }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + consumer_path; }
    std::uint16_t bare_port() const noexcept { return bare_port_; }
    const std::string& db() const noexcept { return db_; }
    nlohmann::json ask(std::string_view command) { return child_.ask(command); }
    std::int64_t cpu_ns() const { return child_.cpu_ns(); }

private:
    std::string db_;
    child_process child_;
    std::uint16_t port_ = 0, bare_port_ = 0;
};

/// Removes a database file and its WAL companions.
void remove_db(const std::string& path) {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
        std::filesystem::remove(path + suffix, ec);
}

/// Counters read before and after a run; CPU times in ns, -1 if unknown.
struct counters_now {
    std::uint64_t commits = 0, light_commits = 0, claims = 0, connections = 0;
    std::int64_t producer_cpu = 0, consumer_cpu = 0;

    void add(const counters_now& before, const counters_now& after) {
        commits += after.commits - before.commits;
        light_commits += after.light_commits - before.light_commits;
        claims += after.claims - before.claims;
        connections += after.connections - before.connections;
        cpu::add_spent(producer_cpu, before.producer_cpu, after.producer_cpu);
        cpu::add_spent(consumer_cpu, before.consumer_cpu, after.consumer_cpu);
    }
};

/// A producer with its relay on one io_context thread, delivering to the consumer process.
struct pipeline {
    consumer_process& consumer;
    asio::io_context ioc{1};
    producer_db db;
    watched_outbox watched{db.outbox};
    dtx::http::client client;
    dtx::http::publisher publisher{client};
    std::optional<dtx::relay> relay;
    std::unordered_map<std::string, std::int64_t> commit_ns;
    std::uint64_t committed = 0; // messages

    pipeline(consumer_process& c, const std::string& path, dtx::http::client_options co)
        : consumer(c)
        , db(path, c.url())
        , client(ioc.get_executor(), std::move(co)) {}
    ~pipeline() {
        if (!relay)
            return;
        try {
            run_until_done(relay->stop());
        } catch (const std::exception& e) {
            std::cerr << "bench_messages: stopping the relay: " << e.what() << "\n";
        }
    }

    void start_relay() {
        relay.emplace(ioc.get_executor(), watched, publisher);
        relay->start();
    }

    counters_now now() const {
        counters_now c;
        const auto worker = db.outbox.stats();
        c.commits = worker.commits;
        c.light_commits = worker.light_commits;
        if (relay) {
            const dtx::relay_stats st = relay->stats();
            c.claims = st.wakes + st.polls;
        }
        c.connections = client.stats().connections;
        c.producer_cpu = cpu::ns_of(CLOCK_PROCESS_CPUTIME_ID);
        c.consumer_cpu = consumer.cpu_ns();
        return c;
    }

    /// Runs `op` on `ioc` until it returns (the relay keeps the io_context busy meanwhile).
    template <class Op>
    void run_until_done(Op op) {
        ioc.restart();
        asio::co_spawn(ioc, std::move(op), [this](std::exception_ptr e) {
            ioc.stop();
            if (e)
                std::rethrow_exception(e);
        });
        ioc.run();
    }

    /// `count` business transactions with a message on `concurrency` workers, until the relay
    /// has settled them all; with `paced`, one worker that waits for each message's settlement
    /// before the next. Returns the run's time and each message's latency from its commit to the
    /// consumer's; `last` gets the counters' changes. Throws unless the consumer processed each
    /// message once.
    sample run(std::size_t concurrency, std::size_t count, bool paced, counters_now* last) {
        commit_ns.clear();
        commit_ns.reserve(count);
        const nlohmann::json before_run = consumer.ask("times");
        const counters_now before = now();
        const std::uint64_t target = watched.delivered + count;
        const business_tx op{&db, true, &commit_ns};
        run_state rs;
        rs.remaining = count;
        const auto limit = std::chrono::seconds(60 + count / 100);
        const auto t0 = steady::now();
        if (paced) {
            run_until_done([&]() -> asio::awaitable<void> {
                for (std::size_t i = 0; i < count; ++i) {
                    const bool ok = co_await op();
                    if (!ok)
                        throw std::runtime_error("a business transaction failed");
                    co_await watched.wait_delivered(target - count + i + 1, limit);
                }
            });
        } else {
            spawn_workers(ioc, op, concurrency, &rs);
            run_until_done(watched.wait_delivered(target, limit));
        }
        const auto t1 = steady::now();
        *last = counters_now{};
        last->add(before, now());
        committed += count;

        const nlohmann::json seen = consumer.ask("times");
        const auto processed = seen.at("processed").get<std::uint64_t>() -
                               before_run.at("processed").get<std::uint64_t>();
        const auto& ids = seen.at("ids");
        const auto& ns = seen.at("ns");
        if (rs.failures != 0 || processed != count || ids.size() != count)
            throw std::runtime_error("the consumer processed " + std::to_string(processed) +
                                     " of " + std::to_string(count) + " messages");
        sample s;
        s.tx = count;
        s.seconds = std::chrono::duration<double>(t1 - t0).count();
        s.latency_ns.reserve(count);
        for (std::size_t i = 0; i < ids.size(); ++i) {
            const auto it = commit_ns.find(ids[i].get<std::string>());
            if (it == commit_ns.end())
                throw std::runtime_error("the consumer processed a message never committed");
            s.latency_ns.push_back(clamp_ns(ns[i].get<std::int64_t>() - it->second));
        }
        std::sort(s.latency_ns.begin(), s.latency_ns.end());
        return s;
    }

    /// Commits `count` messages, `per_tx` to a business transaction, with no relay running.
    void fill(std::size_t count, std::size_t per_tx) {
        run_until_done([&]() -> asio::awaitable<void> {
            for (std::size_t done = 0; done < count;) {
                const std::size_t n = std::min(per_tx, count - done);
                auto fn = [&, n](dtx::sqlite::connection& conn) {
                    auto& update =
                        conn.prepare("UPDATE account SET balance = balance - 1 WHERE id = ?");
                    for (std::size_t i = 0; i < n; ++i) {
                        const std::int64_t account = db.account_of(db.next++);
                        update.bind(account).run();
                        db.outbox.add(conn, db.message_for(account));
                    }
                    return 0;
                };
                co_await db.outbox.run<int>(std::move(fn));
                done += n;
            }
        });
        committed += count;
    }

    /// Throws unless both account totals moved by the messages committed (the consumer's by all
    /// it has processed, `consumed_total`).
    void verify(const std::string& name, std::uint64_t consumed_total) const {
        const std::int64_t opening = n_accounts * opening_balance;
        const std::int64_t produced = opening - total_balance(db.path);
        const std::int64_t credited = total_balance(consumer.db()) - opening;
        if (produced != static_cast<std::int64_t>(committed) ||
            credited != static_cast<std::int64_t>(consumed_total))
            throw std::runtime_error(
                name + ": the producer's accounts moved by " + std::to_string(produced) + " for " +
                std::to_string(committed) + " messages, the consumer's by " +
                std::to_string(credited) + " for " + std::to_string(consumed_total) + " processed");
    }
};

// ---- baselines ---------------------------------------------------------------------------------

/// Raw keep-alive requests to the consumer's bare server, as a sample.
sample raw_round_trips(std::uint16_t port, std::size_t connections, std::size_t n) {
    http::request_run r = http::measure_requests({port}, connections, std::max(n, connections));
    sample s;
    s.tx = r.requests;
    s.seconds = r.seconds;
    s.latency_ns = std::move(r.latency_ns);
    return s;
}

// ---- the lines ---------------------------------------------------------------------------------

/// Slices of each measurement per line (see `sliced`).
constexpr std::size_t slices = 4;

struct run_context {
    cli_options o;
    std::string dir, fs_type;
    consumer_process* consumer;
    std::size_t catchup_messages = 100'000;
    std::optional<double> raw_req_per_s; // of the c32 line, for the catch-up line
    dtx::http::client_options client{};  // of the relay's publisher
};

/// Writes the figures of `s` into `j`, each key prefixed: the count (`count_key`), the rate
/// (`count_key`_per_s), p50_us and p99_us.
void put_figures(nlohmann::ordered_json& j, const std::string& prefix, const std::string& count_key,
                 const sample& s) {
    const figures f = figures_of(s);
    j[prefix + count_key] = s.tx;
    j[prefix + count_key + "_per_s"] = std::llround(f.tx_per_s);
    j[prefix + "p50_us"] = round_to(f.p50_us, 3);
    j[prefix + "p99_us"] = round_to(f.p99_us, 3);
}

/// Writes what a run of `messages` spent into `j` (per message: producer commits, the relay's
/// claims, CPU of the producer process and of the consumer process; connections the publisher's
/// client opened), then the load average and the filesystem.
void put_spent(nlohmann::ordered_json& j, const counters_now& spent, std::size_t messages,
               double load, const std::string& fs_type) {
    const auto per_message = [&](std::uint64_t n) {
        return round_to(static_cast<double>(n) / static_cast<double>(messages), 3);
    };
    j["producer_commits_per_message"] = per_message(spent.commits);
    j["producer_fsyncs_per_message"] = per_message(spent.commits - spent.light_commits);
    j["claims_per_message"] = per_message(spent.claims);
    j["connections_opened"] = spent.connections;
    j["producer_cpu_us_per_message"] = per_tx_us(spent.producer_cpu, messages);
    j["consumer_cpu_us_per_message"] = per_tx_us(spent.consumer_cpu, messages);
    j["loadavg"] = load;
    j["fs"] = fs_type;
}

/// A line of business transactions with a message (`make_op(true)`) against the same without
/// (`make_op(false)`), on `c` workers, after 2,000 transactions of warm-up (the WAL past its first
/// checkpoint, as a long-running service's database is).
template <class MakeOp>
void write_line(run_context& ctx, const std::string& name, std::size_t c, MakeOp make_op) {
    const double load = load_average();
    run_workers(make_op(true), 8, 2'000, name + " warm-up");
    const auto side = [&](bool with_message) {
        return [&, with_message](std::size_t n) {
            return run_workers(make_op(with_message), c, n, name);
        };
    };
    const std::size_t rounds = ctx.o.fixed_tx ? 1 : slices;
    const double slice = ctx.o.seconds / static_cast<double>(rounds);
    sliced base(side(false), c, std::max<std::size_t>(4 * c, 16), slice, ctx.o.fixed_tx);
    sliced framework(side(true), c, std::max<std::size_t>(4 * c, 16), slice, ctx.o.fixed_tx);
    for (std::size_t r = 0; r < rounds; ++r) {
        base.next();
        framework.next();
    }
    const sample& s = framework.total();
    const sample& b = base.total();
    const figures f = figures_of(s);
    const figures fb = figures_of(b);
    nlohmann::ordered_json j;
    j["bench"] = name;
    j["concurrency"] = c;
    put_figures(j, "", "tx", s);
    put_figures(j, "baseline_", "tx", b);
    const double cost = f.us_per_tx / fb.us_per_tx;
    j["cost_ratio"] = round_to(cost, 4);
    j["p50_ratio"] = round_to(f.p50_us / fb.p50_us, 4);
    j["goal"] = "<= 1.2";
    j["goal_met"] = cost <= 1.2;
    j["loadavg"] = load;
    j["fs"] = ctx.fs_type;
    std::cout << j.dump() << std::endl;
}

void outbox_write_line(run_context& ctx, std::size_t c) {
    const std::string name = "outbox_write_c" + std::to_string(c);
    const std::string path = ctx.dir + "/" + name + ".db";
    remove_db(path);
    {
        producer_db db(path, ctx.consumer->url());
        write_line(ctx, name, c, [&](bool with_message) { return business_tx{&db, with_message}; });
    }
    remove_db(path);
}

void http_line(run_context& ctx, pipeline& p, std::size_t c) {
    const std::string name = "messages_http_c" + std::to_string(c);
    const double load = load_average();
    const std::size_t rounds = ctx.o.fixed_tx ? 1 : slices;
    const double slice = ctx.o.seconds / static_cast<double>(rounds);
    const std::uint16_t bare = ctx.consumer->bare_port();
    sliced raw([&](std::size_t n) { return raw_round_trips(bare, c, n); }, c, 100,
               c > 1 ? slice : slice / 4, ctx.o.fixed_tx);
    std::optional<raw_commit_pair> raw_dbs;
    if (c == 1)
        raw_dbs.emplace(ctx.dir);
    const auto raw_commits = [&](std::size_t threads) {
        return [&, threads](std::size_t n) { return raw_dbs->run(threads, n); };
    };
    sliced commits(raw_commits(1), 1, 8, slice / 8, ctx.o.fixed_tx);
    sliced paired_commits(raw_commits(2), 1, 8, slice / 8, ctx.o.fixed_tx);
    counters_now spent, last;
    sliced measured([&](std::size_t n) { return p.run(c, n, c == 1, &last); }, c,
                    std::max<std::size_t>(4 * c, 16), slice, ctx.o.fixed_tx);
    for (std::size_t r = 0; r < rounds; ++r) {
        raw.next();
        if (c == 1) {
            commits.next();
            paired_commits.next();
        }
        measured.next();
        spent.add(counters_now{}, last);
    }
    const sample& s = measured.total();
    nlohmann::ordered_json j;
    j["bench"] = name;
    j["concurrency"] = c;
    put_figures(j, "", "messages", s);
    const figures f = figures_of(s);
    if (c > 1) {
        const sample& b = raw.total();
        const double raw_rate = static_cast<double>(b.tx) / b.seconds;
        ctx.raw_req_per_s = raw_rate;
        j["baseline_req_per_s"] = std::llround(raw_rate);
        j["ratio"] = round_to(f.tx_per_s / raw_rate, 4);
        j["goal"] = ">= 0.2";
        j["goal_met"] = f.tx_per_s / raw_rate >= 0.2;
    } else {
        const double rtt = percentile_us(raw.total().latency_ns, 0.5);
        const double commit = percentile_us(commits.total().latency_ns, 0.5);
        const double paired = percentile_us(paired_commits.total().latency_ns, 0.5);
        // Judged against the cheaper commit, as bench_e2e_http does: the stricter reading.
        const double baseline = rtt + std::min(commit, paired);
        j["baseline_rtt_p50_us"] = round_to(rtt, 3);
        j["baseline_commit_p50_us"] = round_to(commit, 3);
        j["baseline_paired_commit_p50_us"] = round_to(paired, 3);
        j["baseline_us"] = round_to(baseline, 3);
        j["p50_ratio"] = round_to(f.p50_us / baseline, 4);
        j["lone_commit_p50_ratio"] = round_to(f.p50_us / (rtt + commit), 4);
        j["goal"] = "<= 3";
        j["goal_met"] = f.p50_us / baseline <= 3;
    }
    put_spent(j, spent, s.tx, load, ctx.fs_type);
    std::cout << j.dump() << std::endl;
}

void catchup_line(run_context& ctx) {
    const std::string name = "relay_catchup";
    const double load = load_average();
    if (!ctx.raw_req_per_s) {
        const sample b = raw_round_trips(ctx.consumer->bare_port(), 32, 20'000);
        ctx.raw_req_per_s = static_cast<double>(b.tx) / b.seconds;
    }
    const std::string path = ctx.dir + "/catchup.db";
    remove_db(path);
    std::uint64_t consumed_before = ctx.consumer->ask("times").at("processed").get<std::uint64_t>();
    {
        pipeline p(*ctx.consumer, path, ctx.client);
        const auto f0 = steady::now();
        p.fill(ctx.catchup_messages, 1'000);
        const double fill_s = std::chrono::duration<double>(steady::now() - f0).count();
        const counters_now before = p.now();
        const auto t0 = steady::now();
        p.start_relay();
        p.run_until_done(p.watched.wait_delivered(ctx.catchup_messages, std::chrono::seconds(600)));
        const double drain_s = std::chrono::duration<double>(steady::now() - t0).count();
        counters_now spent;
        spent.add(before, p.now());
        const nlohmann::json seen = ctx.consumer->ask("times");
        const auto processed = seen.at("processed").get<std::uint64_t>() - consumed_before;
        if (processed != ctx.catchup_messages)
            throw std::runtime_error(name + ": the consumer processed " +
                                     std::to_string(processed) + " of " +
                                     std::to_string(ctx.catchup_messages) + " messages");
        p.verify(name, seen.at("processed").get<std::uint64_t>());
        const dtx::relay_stats rs = p.relay->stats();
        const auto n = static_cast<double>(ctx.catchup_messages);
        nlohmann::ordered_json j;
        j["bench"] = name;
        j["messages"] = ctx.catchup_messages;
        j["fill_seconds"] = round_to(fill_s, 3);
        j["drain_seconds"] = round_to(drain_s, 3);
        j["messages_per_s"] = std::llround(n / drain_s);
        j["baseline_req_per_s"] = std::llround(*ctx.raw_req_per_s);
        j["ratio"] = round_to(n / drain_s / *ctx.raw_req_per_s, 4);
        j["retried"] = rs.retried;
        j["duplicates_at_consumer"] = seen.at("duplicates");
        put_spent(j, spent, ctx.catchup_messages, load, ctx.fs_type);
        std::cout << j.dump() << std::endl;
    }
    remove_db(path);
}

/// The number that follows `prefix` in `arg`, if `arg` is `prefix` and a number.
std::optional<std::size_t> number_after(std::string_view arg, std::string_view prefix) {
    if (!arg.starts_with(prefix) || arg.size() == prefix.size())
        return std::nullopt;
    const std::string digits(arg.substr(prefix.size()));
    char* end = nullptr;
    const unsigned long long n = std::strtoull(digits.c_str(), &end, 10);
    if (*end != '\0')
        return std::nullopt;
    return static_cast<std::size_t>(n);
}

// ---- the outbox write on PostgreSQL ------------------------------------------------------------

#ifdef DTX_BENCH_HAVE_POSTGRES

/// The producer's database on PostgreSQL: the same `account` table and messages as producer_db.
struct pg_producer {
    dtx::postgres::outbox outbox;
    std::string destination;
    std::atomic<std::uint64_t> next{0}; // run() works on two connections, each with its thread

    pg_producer(const std::string& conninfo, std::string dest)
        : outbox(dtx::postgres::outbox_options{.conninfo = conninfo})
        , destination(std::move(dest)) {
        create_accounts_in(outbox, [](dtx::postgres::connection& db) {
            db.exec("CREATE TABLE IF NOT EXISTS account (id bigint PRIMARY KEY, balance bigint NOT "
                    "NULL)");
            db.exec("INSERT INTO account SELECT g, 1000000000 FROM generate_series(0, 999) g ON "
                    "CONFLICT DO NOTHING");
            return 0;
        });
    }
};

/// business_tx on PostgreSQL.
struct pg_business_tx {
    pg_producer* p;
    bool with_message;

    asio::awaitable<bool> operator()() const {
        auto fn = [this](dtx::postgres::connection& db) {
            const auto account = static_cast<std::int64_t>(p->next++ % n_accounts);
            const std::string id = std::to_string(account);
            const bool updated =
                db.exec("UPDATE account SET balance = balance - 1 WHERE id = $1::bigint", {id})
                    .affected() == 1;
            if (with_message)
                p->outbox.add(db, message_to(p->destination, account));
            return updated ? 1 : 0;
        };
        const int ok = co_await p->outbox.run<int>(std::move(fn));
        co_return ok == 1;
    }
};

/// The outbox_write lines on a throwaway PostgreSQL server (default settings: fsync and
/// synchronous_commit on), the outbox with its default options (two connections, NOTIFY).
void outbox_write_pg_lines(run_context& ctx) {
    std::optional<pg::server> server;
    try {
        server.emplace();
    } catch (const pg::unavailable& e) {
        std::cerr << "bench_messages: no PostgreSQL lines: " << e.what() << "\n";
        return;
    }
    pg_producer producer(server->conninfo(), ctx.consumer->url());
    for (std::size_t c : {std::size_t{1}, std::size_t{32}}) {
        const std::string name = "outbox_write_pg_c" + std::to_string(c);
        if (!ctx.o.selected(name))
            continue;
        std::cerr << "== " << name << "\n";
        write_line(ctx, name, c, [&](bool with_message) {
            return pg_business_tx{&producer, with_message};
        });
    }
}

#endif

const std::vector<std::string> line_names{
    "outbox_write_c1",   "outbox_write_c32", "outbox_write_pg_c1", "outbox_write_pg_c32",
    "messages_http_c32", "messages_http_c1", "relay_catchup"};

int producer_main(run_context& ctx, const std::string& parent) {
    scratch_dir dir("dtx_bench_messages_", parent);
    ctx.dir = dir.path();
    ctx.fs_type = filesystem_type(dir.path());
    if (ctx.fs_type == "tmpfs" || ctx.fs_type == "ramfs")
        std::cerr << "bench_messages: " << dir.path() << " is on " << ctx.fs_type
                  << ", where fsync costs nothing; use --dir on a real disk\n";
    consumer_process consumer("/proc/self/exe", dir.path() + "/consumer.db");
    ctx.consumer = &consumer;
    for (std::size_t c : {std::size_t{1}, std::size_t{32}})
        if (ctx.o.selected("outbox_write_c" + std::to_string(c))) {
            std::cerr << "== outbox_write_c" << c << "\n";
            outbox_write_line(ctx, c);
        }
#ifdef DTX_BENCH_HAVE_POSTGRES
    if (ctx.o.selected("outbox_write_pg_c1") || ctx.o.selected("outbox_write_pg_c32"))
        outbox_write_pg_lines(ctx);
#endif
    if (ctx.o.selected("messages_http_c32") || ctx.o.selected("messages_http_c1")) {
        pipeline p(consumer, dir.path() + "/producer.db", ctx.client);
        p.start_relay();
        counters_now ignored;
        p.run(32, 2'000, false, &ignored); // warm-up: connections, the WAL past its checkpoint
        for (std::size_t c : {std::size_t{32}, std::size_t{1}})
            if (ctx.o.selected("messages_http_c" + std::to_string(c))) {
                std::cerr << "== messages_http_c" << c << "\n";
                http_line(ctx, p, c);
            }
        p.verify("messages_http", consumer.ask("stats").at("processed").get<std::uint64_t>());
    }
    if (ctx.o.selected("relay_catchup")) {
        std::cerr << "== relay_catchup (" << ctx.catchup_messages << " messages)\n";
        catchup_line(ctx);
    }
    const nlohmann::json st = consumer.ask("stats");
    std::cerr << "bench_messages: the consumer processed " << st.at("processed")
              << " messages once each (" << st.at("duplicates") << " duplicates acknowledged)\n";
    return 0;
}

} // namespace bench

int main(int argc, char** argv) try {
    if (argc >= 2 && std::string_view(argv[1]).starts_with("--consumer="))
        return bench::consumer_main(std::string(argv[1] + 11));
    bench::run_context ctx;
    std::string parent = bench::bench_parent_dir();
    auto extra = [&](std::string_view a) {
        if (const auto n = bench::number_after(a, "--messages="); n && *n > 0)
            ctx.catchup_messages = *n;
        else if (const auto idle = bench::number_after(a, "--idle-connections="))
            ctx.client.max_idle_per_endpoint = *idle;
        else if (a.starts_with("--dir=") && a.size() > 6)
            parent = std::string(a.substr(6));
        else
            return false;
        return true;
    };
    if (auto code = bench::parse_cli(
            argc, argv, "bench_messages", ctx.o, extra,
            " [--dir=DIR] [--messages=N] [--idle-connections=N]",
            "  --dir=DIR     where the databases go (a new directory inside)\n"
            "  --messages=N  messages of the relay_catchup line (default 100000)\n"
            "  --idle-connections=N\n"
            "                idle connections the publisher's client keeps (default: the\n"
            "                client's default, client_options::max_idle_per_endpoint)\n"))
        return *code;
    if (ctx.o.list) {
        for (const std::string& n : bench::line_names)
            if (ctx.o.selected(n))
                std::printf("%s\n", n.c_str());
        return 0;
    }
    return bench::producer_main(ctx, parent);
} catch (const std::exception& e) {
    std::cerr << "bench_messages: " << e.what() << "\n";
    return 1;
}
