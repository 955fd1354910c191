#ifndef DTX_TESTS_CRASH_CHILD_MAIN_HPP
#define DTX_TESTS_CRASH_CHILD_MAIN_HPP

// What the processes of the multi-process crash tests share: the command line ("--name value"
// options and "--name" switches), the named points at which a process kills itself, and running
// the process's main coroutine to its end.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <csignal>
#include <cstdint>
#include <exception>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

namespace dtx::crash {

/// "--name value" options and "--name" switches; anything else is refused.
class command_line {
public:
    command_line(int argc, char** argv, const std::set<std::string>& options,
                 const std::set<std::string>& switches) {
        for (int i = 1; i < argc; ++i) {
            const std::string k = argv[i];
            if (switches.count(k))
                values_[k] = "";
            else if (options.count(k) && i + 1 < argc)
                values_[k] = argv[++i];
            else
                throw std::invalid_argument(options.count(k) ? k + " needs a value"
                                                             : "unknown argument " + k);
        }
    }
    bool has(const std::string& k) const { return values_.count(k) != 0; }
    std::string text(const std::string& k, std::string fallback = {}) const {
        auto it = values_.find(k);
        return it == values_.end() ? fallback : it->second;
    }
    int number(const std::string& k, int fallback) const {
        return has(k) ? std::stoi(text(k)) : fallback;
    }
    std::uint64_t seed(std::uint64_t fallback) const {
        return has("--seed") ? std::stoull(text("--seed")) : fallback;
    }

private:
    std::map<std::string, std::string> values_;
};

/// Kills this process at the nth passage of the named point it was started with.
struct kill_point {
    std::string name;
    int left;
    void pass(const char* here) {
        if (name == here && --left == 0)
            std::raise(SIGKILL);
    }
};

/// Runs `work` (an asio::awaitable<void>) on `ioc` until the context runs out of work: 0, or 1
/// once the coroutine failed (its error printed as "role: what").
template <class Awaitable>
int run_to_end(boost::asio::io_context& ioc, Awaitable work, const char* role) {
    int exit_code = 0;
    boost::asio::co_spawn(ioc, std::move(work), [&](std::exception_ptr e) {
        if (!e)
            return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            std::cerr << role << ": " << x.what() << "\n";
        } catch (...) {
            std::cerr << role << ": failed\n";
        }
        exit_code = 1;
    });
    ioc.run();
    return exit_code;
}

/// The body of a crash test's main(): `body()`'s exit code, or 2 with `program: what` printed if
/// it throws (a bad command line, a process that cannot start).
template <class Body>
int main_of(const char* program, Body body) {
    try {
        return body();
    } catch (const std::exception& e) {
        std::cerr << program << ": " << e.what() << "\n";
        return 2;
    }
}

} // namespace dtx::crash

#endif
