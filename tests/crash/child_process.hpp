#ifndef DTX_TESTS_CRASH_CHILD_PROCESS_HPP
#define DTX_TESTS_CRASH_CHILD_PROCESS_HPP

// What the crash-test drivers need to run a workload process: start it with its output appended
// to a log, see how it ended, kill it with SIGKILL; and to read what it left: the tail of its log,
// the fault points it killed itself at.

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace dtx::crash {

using steady = std::chrono::steady_clock;

struct exit_status {
    bool killed = false; // died by SIGKILL
    int signal = 0;      // another signal
    int code = -1;       // exit code, if it exited
};

inline std::string describe(const exit_status& e) {
    if (e.killed)
        return "killed by SIGKILL";
    if (e.signal)
        return "died of signal " + std::to_string(e.signal) + " (" + strsignal(e.signal) + ")";
    return "exited with code " + std::to_string(e.code);
}

/// A child process; killed with SIGKILL and reaped if still running when destroyed.
class child_process {
public:
    /// Starts args[0] with `args`, stdout and stderr appended to `log`.
    child_process(std::vector<std::string> args, const std::filesystem::path& log) {
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        const std::string out = log.string();
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out.c_str(),
                                         O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
        const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0)
            throw std::runtime_error("cannot start " + args[0] + ": " + std::strerror(rc));
        started_ = steady::now();
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    ~child_process() {
        if (!reaped_) {
            ::kill(pid_, SIGKILL);
            int st = 0;
            ::waitpid(pid_, &st, 0);
        }
    }

    /// Waits until the process ends or `until` passes; empty if it is still running.
    std::optional<exit_status> wait_until(steady::time_point until) {
        for (;;) {
            int st = 0;
            const pid_t r = ::waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                reaped_ = true;
                exit_status e;
                if (WIFSIGNALED(st)) {
                    e.killed = WTERMSIG(st) == SIGKILL;
                    if (!e.killed)
                        e.signal = WTERMSIG(st);
                } else if (WIFEXITED(st)) {
                    e.code = WEXITSTATUS(st);
                }
                return e;
            }
            if (r < 0)
                throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
            if (steady::now() >= until)
                return std::nullopt;
            std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
    }

    /// How it ended, if it has.
    std::optional<exit_status> poll() { return wait_until(steady::time_point::min()); }

    /// Sends `sig` (SIGTERM, say) without waiting.
    void signal(int sig) { ::kill(pid_, sig); }

    /// Kills the process with SIGKILL and reaps it.
    exit_status kill() {
        ::kill(pid_, SIGKILL);
        return *wait_until(steady::time_point::max());
    }

    steady::time_point started() const { return started_; }

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
    steady::time_point started_;
};

/// The last `lines` lines of a file, indented for a failure report.
inline std::string tail(const std::filesystem::path& file, std::size_t lines) {
    std::ifstream in(file);
    std::vector<std::string> all;
    for (std::string l; std::getline(in, l);)
        all.push_back(std::move(l));
    std::string out;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
        out += "  | " + all[i] + "\n";
    return out;
}

/// A file a workload appends to (the fault points it killed itself at), read as it grows.
struct fault_log {
    std::filesystem::path path;
    std::uintmax_t offset = 0;

    /// The lines appended since the last call.
    std::vector<std::string> fresh() {
        std::vector<std::string> out;
        std::ifstream in(path, std::ios::binary);
        if (!in)
            return out;
        in.seekg(static_cast<std::streamoff>(offset));
        for (std::string l; std::getline(in, l);) {
            offset += l.size() + 1;
            out.push_back(std::move(l));
        }
        return out;
    }
};

} // namespace dtx::crash

#endif
