// The load mode: N orders sent to the order service by C concurrent clients, a share of them
// failing on purpose; prints throughput and latency as JSON lines. Exits 1 if any order ends
// otherwise than planned (the invariants across services are then checked by `shop audit`).
//
//   shop load --url http://127.0.0.1:P [--orders 10000] [--concurrency 32] [--customers 64]
//             [--refuse-every 10] [--misship-every 10] [--run-id ID]
//
// Order i asks for more stock than exists if i % refuse-every == 1 (cancelled at checkout), ships
// to a destination no carrier serves if i % misship-every == 5 (shipment_failed), else completes.
#include <dtx/http.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <iostream>

#include "shop.hpp"

namespace shop {
namespace {

struct load_plan {
    long orders, concurrency, customers, refuse_every, misship_every;
    std::string run_id;

    std::string expected(long i) const {
        if (refuse_every > 0 && i % refuse_every == 1)
            return "cancelled";
        if (misship_every > 0 && i % misship_every == 5)
            return "shipment_failed";
        return "completed";
    }
    nlohmann::json order(long i) const {
        static const char* const skus[] = {"apple", "pear", "plum"};
        const std::string outcome = expected(i);
        return {{"order_id", run_id + "-" + std::to_string(i)},
                {"customer", "c" + std::to_string(i % customers)},
                {"sku", skus[i % 3]},
                {"qty", outcome == "cancelled" ? 1'000'000'000 : 1 + i % 3},
                {"ship_to", outcome == "shipment_failed" ? "Atlantis" : "Berlin"}};
    }
};

struct sample {
    double ms;
    std::string expected;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

nlohmann::json summary(const std::vector<double>& ms) {
    auto round = [](double x) {
        return static_cast<double>(static_cast<std::int64_t>(x * 100 + 0.5)) / 100;
    };
    return {{"n", ms.size()},
            {"p50_ms", round(percentile(ms, 0.50))},
            {"p99_ms", round(percentile(ms, 0.99))}};
}

class load_client {
public:
    load_client(asio::io_context& ioc, const load_plan& plan, dtx::http::url target)
        : plan_(plan)
        , target_(std::move(target))
        , http_(ioc.get_executor(), {.request_timeout = std::chrono::seconds(120)}) {}

    asio::awaitable<void> worker() {
        while (next_ < plan_.orders) {
            const long i = next_++;
            const std::string body = plan_.order(i).dump();
            const auto start = std::chrono::steady_clock::now();
            std::string state;
            try {
                const dtx::http::response r = co_await http_.post(target_, "", body);
                const nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
                state = j.is_object() && j.contains("state") ? j["state"].get<std::string>()
                                                             : "HTTP " + std::to_string(r.status);
            } catch (const std::exception& e) {
                state = e.what();
            }
            const double ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count();
            const std::string expected = plan_.expected(i);
            samples_.push_back({ms, expected});
            if (state != expected && ++unexpected_ <= 10)
                std::cerr << "order " << plan_.order(i)["order_id"] << ": " << state
                          << ", expected " << expected << "\n";
        }
    }

    const std::vector<sample>& samples() const { return samples_; }
    long unexpected() const { return unexpected_; }

private:
    const load_plan& plan_;
    dtx::http::url target_;
    dtx::http::client http_;
    long next_ = 0;
    long unexpected_ = 0;
    std::vector<sample> samples_;
};

} // namespace

int run_load(const settings& s) {
    load_plan plan{s.number("orders", 10'000),    s.number("concurrency", 32),
                   s.number("customers", 64),     s.number("refuse-every", 10),
                   s.number("misship-every", 10), s.get("run-id", "")};
    if (plan.run_id.empty())
        plan.run_id = "load-" + dtx::make_gid().substr(0, 13);
    if (plan.orders < 1 || plan.concurrency < 1 || plan.customers < 1)
        throw std::invalid_argument("--orders, --concurrency and --customers must be positive");

    asio::io_context ioc;
    load_client client(ioc, plan, dtx::http::make_url(s.require("url") + "/orders"));
    const auto start = std::chrono::steady_clock::now();
    for (long w = 0; w < plan.concurrency; ++w)
        asio::co_spawn(ioc, client.worker(), asio::detached);
    ioc.run();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::vector<double> all;
    std::map<std::string, std::vector<double>> by_outcome;
    for (const auto& x : client.samples()) {
        all.push_back(x.ms);
        by_outcome[x.expected].push_back(x.ms);
    }
    nlohmann::json line = summary(all);
    line["measure"] = "orders";
    line["concurrency"] = plan.concurrency;
    line["seconds"] = static_cast<double>(static_cast<std::int64_t>(seconds * 1000)) / 1000;
    line["orders_per_s"] = static_cast<std::int64_t>(static_cast<double>(all.size()) / seconds);
    line["unexpected"] = client.unexpected();
    std::cout << line.dump() << std::endl;
    for (const auto& [outcome, ms] : by_outcome) {
        nlohmann::json l = summary(ms);
        l["measure"] = "orders_" + outcome;
        std::cout << l.dump() << std::endl;
    }
    return client.unexpected() == 0 ? 0 : 1;
}

} // namespace shop
