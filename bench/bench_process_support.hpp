// What the benchmarks that run several processes share: a child process that is this program run
// again with other arguments, talking one JSON line at a time over pipes (its standard input and
// output); the child's side of that (reading commands, answering); raw fsync'd SQLite commits for
// the baselines; and the load average, printed with every line.
//
// (g++ 12 miscompiles some temporaries inside co_await / co_return: everything awaited here is
// built in a statement of its own.)

#ifndef DTX_BENCH_PROCESS_SUPPORT_HPP
#define DTX_BENCH_PROCESS_SUPPORT_HPP

#include <dtx/sqlite/connection.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <istream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include <fcntl.h>    // O_CLOEXEC
#include <stdio.h>    // getline
#include <sys/wait.h> // waitpid
#include <unistd.h>   // fork, execv, pipe2, dup2

namespace bench {

// ---- raw commits -------------------------------------------------------------------------------

/// A database for raw commits (WAL, synchronous FULL), its WAL grown to its working size first:
/// a commit that grows the file also makes the filesystem commit its metadata, which the long-
/// running databases under test, whose WAL restarts from its beginning after each checkpoint,
/// rarely pay.
class raw_commit_db {
public:
    explicit raw_commit_db(const std::string& path)
        : db_(path) {
        db_.exec("PRAGMA journal_mode=WAL");
        db_.exec("PRAGMA synchronous=OFF");
        db_.exec("CREATE TABLE IF NOT EXISTS t (x INTEGER)");
        for (int i = 0; i < 1500; ++i) // past the first checkpoint (1000 pages)
            commit();
        db_.exec("PRAGMA synchronous=FULL");
    }
    /// One single-row autocommit INSERT: with FULL, one fsync of the WAL.
    void commit() { db_.prepare("INSERT INTO t VALUES (?)").bind(next_++).run(); }

private:
    dtx::sqlite::connection db_;
    std::int64_t next_ = 0;
};

/// Two databases for raw commits, committed to by one thread or by two at once (on some virtual
/// disks a lone fsync costs far more than two at once).
class raw_commit_pair {
public:
    explicit raw_commit_pair(const std::string& dir)
        : first_(dir + "/baseline0.db")
        , second_(dir + "/baseline1.db") {}

    /// `n` commits by each of `threads` (1 or 2) threads, each on a file of its own, timed.
    sample run(std::size_t threads, std::size_t n) {
        return run_on_threads(threads, n * threads, [this](std::size_t t) {
            raw_commit_db* db = t == 0 ? &first_ : &second_;
            return [db] { db->commit(); };
        });
    }

private:
    raw_commit_db first_, second_;
};

// ---- the child's side --------------------------------------------------------------------------

/// Writes one line to the parent (standard output is a pipe to it).
inline void tell_parent(const nlohmann::ordered_json& j) {
    const std::string line = j.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
}

/// Reads the parent's commands from standard input, one a line, and hands each to `on_command`
/// (which answers with tell_parent); returns when the input ends (the parent wants the child to
/// stop).
inline boost::asio::awaitable<void>
read_commands(std::function<void(const std::string&)> on_command) {
    namespace asio = boost::asio;
    asio::posix::stream_descriptor in(co_await asio::this_coro::executor, ::dup(STDIN_FILENO));
    asio::streambuf buf;
    for (;;) {
        auto [ec, n] =
            co_await asio::async_read_until(in, buf, '\n', asio::as_tuple(asio::use_awaitable));
        if (ec)
            break;
        std::istream is(&buf);
        std::string command;
        std::getline(is, command);
        on_command(command);
    }
}

// ---- the parent's side -------------------------------------------------------------------------

/// This program run again as `self args...`, its standard input and output piped to this process;
/// stopped (its standard input closed, then waited for) on destruction.
class child_process {
public:
    child_process(const std::string& self, const std::vector<std::string>& args, std::string name)
        : name_(std::move(name)) {
        int to[2], from[2];
        if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0)
            throw std::runtime_error("cannot make a pipe");
        std::vector<char*> argv{const_cast<char*>(self.c_str())};
        for (const std::string& a : args)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ < 0)
            throw std::runtime_error("cannot fork");
        if (pid_ == 0) {
            ::dup2(to[0], STDIN_FILENO);
            ::dup2(from[1], STDOUT_FILENO);
            ::execv(self.c_str(), argv.data());
            std::_Exit(127);
        }
        ::close(to[0]);
        ::close(from[1]);
        to_ = ::fdopen(to[1], "w");
        from_ = ::fdopen(from[0], "r");
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    ~child_process() {
        stop();
        std::free(line_);
    }

    /// The child's next line (of any length), as JSON.
    nlohmann::json read_line() {
        const ssize_t n = ::getline(&line_, &capacity_, from_);
        if (n <= 0)
            throw std::runtime_error(name_ + " ended");
        return nlohmann::json::parse(std::string_view(line_, static_cast<std::size_t>(n)));
    }

    /// Sends `command` and returns the child's answer.
    nlohmann::json ask(std::string_view command) {
        std::fwrite(command.data(), 1, command.size(), to_);
        std::fputc('\n', to_);
        std::fflush(to_);
        return read_line();
    }

    /// CPU time (ns, user and system) the process has used so far; -1 if unknown.
    std::int64_t cpu_ns() const {
        std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
        std::string stat;
        std::getline(f, stat);
        const auto close_paren = stat.rfind(')');
        if (close_paren == std::string::npos)
            return -1;
        std::istringstream fields(stat.substr(close_paren + 2));
        std::string skip;
        for (int i = 3; i < 14; ++i) // fields 3..13: state .. majflt
            fields >> skip;
        long long utime = 0, stime = 0;
        if (!(fields >> utime >> stime))
            return -1;
        return (utime + stime) * (1'000'000'000 / ::sysconf(_SC_CLK_TCK));
    }

private:
    /// Closes the process's standard input (it stops its servers and exits) and waits for it.
    void stop() noexcept {
        if (to_)
            std::fclose(to_);
        to_ = nullptr;
        int status = 0;
        if (pid_ > 0)
            ::waitpid(pid_, &status, 0);
        pid_ = -1;
        if (from_)
            std::fclose(from_);
        from_ = nullptr;
    }

    std::string name_;
    pid_t pid_ = -1;
    FILE* to_ = nullptr;
    FILE* from_ = nullptr;
    char* line_ = nullptr;
    std::size_t capacity_ = 0;
};

/// The load average over the last minute, -1 if unknown.
inline double load_average() {
    std::ifstream f("/proc/loadavg");
    double one = -1;
    f >> one;
    return one;
}

} // namespace bench

#endif
