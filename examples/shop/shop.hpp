// What the shop's services share: settings from flags and environment variables, the event log,
// the catalog, the branch payloads, fault points, and the loop that serves participants.
//
// Every service is a subcommand of one program (`shop order`, `shop inventory`, ...), each run as
// a process of its own with its own SQLite database (and barrier tables in it).
#ifndef DTX_EXAMPLES_SHOP_HPP
#define DTX_EXAMPLES_SHOP_HPP

#include <dtx/dtx.hpp>
#include <dtx/sqlite/barrier.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace shop {

namespace asio = dtx::asio;

/// Settings: `--name value` (or `--name=value`) on the command line, else the environment
/// variable SHOP_NAME (upper case, '-' as '_'), else the default.
class settings {
public:
    settings(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) {
            std::string a = argv[i];
            if (a.rfind("--", 0) != 0)
                throw std::invalid_argument("unexpected argument '" + a + "'");
            a.erase(0, 2);
            if (auto eq = a.find('='); eq != std::string::npos)
                values_[a.substr(0, eq)] = a.substr(eq + 1);
            else if (i + 1 < argc)
                values_[a] = argv[++i];
            else
                throw std::invalid_argument("--" + a + " needs a value");
        }
    }

    std::string get(const std::string& name, const std::string& fallback) const {
        if (auto it = values_.find(name); it != values_.end())
            return it->second;
        std::string env = "SHOP_";
        for (char c : name)
            env += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (const char* v = std::getenv(env.c_str()); v && *v)
            return v;
        return fallback;
    }
    std::string require(const std::string& name) const {
        std::string v = get(name, "");
        if (v.empty())
            throw std::invalid_argument("--" + name + " is required");
        return v;
    }
    long number(const std::string& name, long fallback) const {
        const std::string v = get(name, std::to_string(fallback));
        try {
            return std::stol(v);
        } catch (const std::exception&) {
            throw std::invalid_argument("--" + name + " must be a number, not '" + v + "'");
        }
    }

private:
    std::map<std::string, std::string> values_;
};

/// "a,b,c" as a list (empty items dropped).
inline std::vector<std::string> split(const std::string& text, char sep = ',') {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        std::size_t end = text.find(sep, pos);
        if (end == std::string::npos)
            end = text.size();
        if (end > pos)
            out.push_back(text.substr(pos, end - pos));
        pos = end + 1;
    }
    return out;
}

/// "alice=100,bob=50" as a map.
inline std::map<std::string, std::int64_t> parse_amounts(const std::string& text) {
    std::map<std::string, std::int64_t> out;
    for (const std::string& item : split(text)) {
        const auto eq = item.find('=');
        if (eq == std::string::npos || eq == 0)
            throw std::invalid_argument("expected name=number, got '" + item + "'");
        out[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
    }
    return out;
}

/// One line per event on stdout: time, service, gid, trace id, what happened.
class event_log {
public:
    explicit event_log(std::string service)
        : service_(std::move(service)) {}

    void write(std::string_view gid, std::string_view traceparent, std::string_view text) const {
        std::string trace;
        if (traceparent.size() >= dtx::trace_context::size)
            trace = std::string(traceparent.substr(3, 32));
        else if (!gid.empty())
            trace = std::string(dtx::trace_context::for_gid(gid).trace_id());
        line("gid=" + std::string(gid) + " trace=" + trace + " " + std::string(text));
    }

    void line(std::string_view text) const {
        const auto now = std::chrono::system_clock::now();
        const std::time_t t = std::chrono::system_clock::to_time_t(now);
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
            1000;
        std::tm tm{};
        gmtime_r(&t, &tm);
        char stamp[32];
        std::snprintf(stamp, sizeof stamp, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                      static_cast<int>(ms));
        std::lock_guard lock(mu_);
        std::fprintf(stdout, "%s %-9s %.*s\n", stamp, service_.c_str(),
                     static_cast<int>(text.size()), text.data());
        std::fflush(stdout);
    }

private:
    std::string service_;
    mutable std::mutex mu_;
};

// ---- the catalog and the branch payloads ---------------------------------------------------

/// Unit prices; an order of another SKU is refused before any transaction starts.
inline std::optional<std::int64_t> price_of(std::string_view sku) {
    if (sku == "apple")
        return 3;
    if (sku == "pear")
        return 4;
    if (sku == "plum")
        return 5;
    return std::nullopt;
}

/// Loyalty points an order earns: one per 10 of its amount, at least one.
inline std::int64_t points_for(std::int64_t amount) {
    return amount / 10 + 1;
}

struct stock_item { // inventory (TCC)
    std::string sku;
    std::int64_t qty = 0;
};
struct money { // payment (TCC)
    std::string account;
    std::int64_t amount = 0;
};
struct points { // loyalty (saga)
    std::string customer;
    std::int64_t points = 0;
};
struct parcel { // shipment (saga)
    std::string order_id;
    std::string ship_to;
};
struct order_step { // the order's own state, in the order service's database
    std::string order_id;
    std::string from; // the state the step moves the order from
    std::string to;   // ... and to
    std::string undo; // the state its cancel (compensation) moves it to
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(stock_item, sku, qty)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(money, account, amount)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(points, customer, points)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(parcel, order_id, ship_to)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(order_step, order_id, from, to, undo)

/// Order states. Final: completed, cancelled, shipment_failed.
///   new -> reserving (checkout try) -> paid (checkout confirm) | cancelled (checkout cancel)
///   paid -> fulfilling (fulfilment saga, first step) -> completed (last step)
///        fulfilling -> shipment_failed (the first step's compensation)
inline bool is_final_state(std::string_view s) {
    return s == "completed" || s == "cancelled" || s == "shipment_failed";
}

/// Creates a service's tables (and, on first start, its seed rows) before its barrier opens the
/// database: `setup` runs in one local transaction.
inline void prepare_database(const std::string& path,
                             const std::function<void(dtx::sqlite::connection&)>& setup) {
    dtx::sqlite::connection db(path);
    dtx::sqlite::transaction tx(db);
    setup(db);
    tx.commit();
}

// ---- fault points ---------------------------------------------------------------------------

/// `--pause-at OP[:WHO]`: the first time operation OP (of a participant, a journal write of the
/// coordinator, or `relay`: a delivery of the order service's relay, order_messages.hpp) concerns
/// WHO (an account or customer; any if empty), the process stops answering anything, as a hung
/// process does, and says so in its log; the demo then kills it with SIGKILL. Nothing in it ever
/// resumes.
struct pause_point {
    std::string op;
    std::string who;
    bool paused = false;

    static pause_point parse(const std::string& text) {
        pause_point p;
        const auto colon = text.find(':');
        p.op = text.substr(0, colon);
        if (colon != std::string::npos)
            p.who = text.substr(colon + 1);
        return p;
    }
    bool armed() const { return !op.empty(); }
    /// True once the point was reached: the caller must stop.
    bool reached(std::string_view op_name, std::string_view subject) {
        if (paused)
            return true;
        if (!armed() || op_name != op || (!who.empty() && subject != who))
            return false;
        paused = true;
        return true;
    }
};

/// Waits forever (until the process is killed). Cancellation (a handler timeout) ends the wait
/// with an exception, so the caller still never answers success.
inline asio::awaitable<void> hang() {
    asio::steady_timer forever(co_await asio::this_coro::executor,
                               std::chrono::steady_clock::time_point::max());
    co_await forever.async_wait(asio::use_awaitable);
    throw std::runtime_error("paused");
}

/// Runs `ioc` until SIGINT or SIGTERM, which starts `stop()` (an awaitable that stops the
/// service's server: requests in flight finish, then io_context::run returns).
template <class Stop>
void serve_until_signal(asio::io_context& ioc, const event_log& log, Stop stop) {
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int) {
        log.line("stopping");
        asio::co_spawn(ioc, stop(), asio::detached);
    });
    ioc.run();
}

// ---- entry points (one per subcommand) --------------------------------------------------------

int run_order_service(const settings& s);                           // order.cpp
int run_load(const settings& s);                                    // load.cpp
int run_audit(const settings& s);                                   // audit.cpp
bool is_consumer_service(std::string_view name);                    // consumers.cpp: mail, merchant
int run_consumer_service(std::string_view name, const settings& s); // consumers.cpp

} // namespace shop

#endif
