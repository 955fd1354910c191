// What the PostgreSQL benchmarks share: a throwaway server started for the run (by
// tests/support/pg_server.sh, on 127.0.0.1) and stopped at the end, also when the run fails or is
// interrupted; the server's settings and CPU time; raw libpq connections for the baselines.

#ifndef DTX_BENCH_POSTGRES_SUPPORT_HPP
#define DTX_BENCH_POSTGRES_SUPPORT_HPP

#include <dtx/postgres/connection.hpp>

#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "bench_support.hpp"
#include <libpq-fe.h>
#include <sys/wait.h> // waitpid, WEXITSTATUS
#include <unistd.h>   // fork, execl, sysconf

#ifndef DTX_BENCH_PG_SERVER_SCRIPT
#define DTX_BENCH_PG_SERVER_SCRIPT "tests/support/pg_server.sh"
#endif

namespace bench::pg {

namespace fs = std::filesystem;

/// The PostgreSQL server binaries are not installed: the benchmark has nothing to measure.
struct unavailable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The script that starts and stops servers: $DTX_PG_SERVER_SCRIPT, else the one in the source
/// tree this benchmark was built from.
inline std::string server_script() {
    if (const char* env = std::getenv("DTX_PG_SERVER_SCRIPT"); env && *env)
        return env;
    return DTX_BENCH_PG_SERVER_SCRIPT;
}

namespace detail {
// What the signal handler runs to stop the server and remove its files, made before it can run.
inline std::string g_stop_command;
inline volatile std::sig_atomic_t g_running = 0;

extern "C" inline void stop_on_signal(int sig) {
    if (g_running) {
        // fork, exec and waitpid are async-signal-safe; the strings were made before.
        if (const pid_t child = fork(); child == 0) {
            execl("/bin/sh", "sh", "-c", g_stop_command.c_str(), static_cast<char*>(nullptr));
            _exit(127);
        } else if (child > 0) {
            int status = 0;
            waitpid(child, &status, 0);
        }
    }
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}
} // namespace detail

/// A PostgreSQL server with default settings (fsync, synchronous_commit on) in a new directory,
/// on 127.0.0.1 and a free port, for the lifetime of the object. Throws `unavailable` when the
/// server binaries are not installed. One per process.
class server {
public:
    server()
        : dir_("dtx-bench-pg-") {
        std::string out;
        const std::string cmd = "'" + server_script() + "' start '" + dir() + "' 2>&1";
        FILE* p = ::popen(cmd.c_str(), "r");
        if (!p)
            throw std::runtime_error("cannot run " + server_script());
        char buf[512];
        while (std::fgets(buf, sizeof buf, p))
            out += buf;
        const int status = ::pclose(p);
        if (status != 0) {
            const bool missing = WIFEXITED(status) && WEXITSTATUS(status) == 2;
            if (!out.empty() && out.back() == '\n')
                out.pop_back();
            if (missing)
                throw unavailable(out);
            throw std::runtime_error("the PostgreSQL server did not start: " + out);
        }
        port_ = std::stoi(out);
        detail::g_stop_command =
            "'" + server_script() + "' stop '" + dir() + "'; rm -rf '" + dir() + "'";
        detail::g_running = 1;
        std::signal(SIGINT, detail::stop_on_signal);
        std::signal(SIGTERM, detail::stop_on_signal);
        std::signal(SIGHUP, detail::stop_on_signal);
    }
    server(const server&) = delete;
    server& operator=(const server&) = delete;
    ~server() {
        detail::g_running = 0;
        const std::string cmd = "'" + server_script() + "' stop '" + dir() + "'";
        if (std::system(cmd.c_str()) != 0)
            std::fprintf(stderr, "bench: could not stop the PostgreSQL server in %s\n",
                         dir().c_str());
    }

    /// A connection string for database `db` as the server's superuser.
    std::string conninfo(const std::string& db = "postgres") const {
        return "host=127.0.0.1 port=" + std::to_string(port_) + " user=dtx dbname=" + db +
               " connect_timeout=5";
    }
    const std::string& dir() const noexcept { return dir_.path(); }

    /// The postmaster's process id (from its pid file), or -1.
    pid_t postmaster() const {
        std::ifstream f(dir() + "/data/postmaster.pid");
        long pid = -1;
        if (!(f >> pid))
            return -1;
        return static_cast<pid_t>(pid);
    }

    /// CPU time (ns) of the server's processes that are running now (the postmaster and its
    /// children: backends, WAL writer, checkpointer, ...). -1 if it cannot be read.
    std::int64_t cpu_ns() const {
        const pid_t pm = postmaster();
        if (pm <= 0)
            return -1;
        const double tick_ns = 1e9 / static_cast<double>(sysconf(_SC_CLK_TCK));
        std::int64_t ticks = 0;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator("/proc", ec)) {
            const std::string name = e.path().filename().string();
            if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
                continue;
            std::ifstream stat(e.path() / "stat");
            std::string text;
            if (!std::getline(stat, text))
                continue;
            // Fields after the command (which may hold blanks), from field 3 on: state, ppid, ...
            const auto close = text.rfind(')');
            if (close == std::string::npos)
                continue;
            std::istringstream rest(text.substr(close + 2));
            std::string state;
            long ppid = 0, skip = 0;
            unsigned long long utime = 0, stime = 0;
            rest >> state >> ppid;
            for (int i = 0; i < 9; ++i) // pgrp .. cmajflt
                rest >> skip;
            rest >> utime >> stime;
            if (std::stol(name) == pm || ppid == pm)
                ticks += static_cast<std::int64_t>(utime + stime);
        }
        if (ec)
            return -1;
        return static_cast<std::int64_t>(static_cast<double>(ticks) * tick_ns);
    }

private:
    scratch_dir dir_; // removed after the server has stopped
    int port_ = 0;
};

/// The server settings that decide what a commit costs, and the server version, for the output.
inline nlohmann::ordered_json settings(dtx::postgres::connection& db) {
    nlohmann::ordered_json j;
    for (const char* name : {"server_version", "fsync", "synchronous_commit", "wal_sync_method",
                             "commit_delay", "full_page_writes", "shared_buffers"}) {
        const std::string sql = std::string("SHOW ") + name;
        auto r = db.exec(sql.c_str());
        j[name] = std::string(r.text(0, 0));
    }
    return j;
}

/// A raw libpq connection with one prepared statement, for the baselines: what a client that
/// does the same work without dtx pays.
class raw_client {
public:
    raw_client(const std::string& conninfo, const char* sql, int params)
        : conn_(PQconnectdb(conninfo.c_str())) {
        if (PQstatus(conn_) != CONNECTION_OK)
            fail("connect", nullptr);
        PGresult* r = PQprepare(conn_, "op", sql, params, nullptr);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail(sql, r);
        PQclear(r);
    }
    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;
    raw_client(raw_client&& o) noexcept
        : conn_(std::exchange(o.conn_, nullptr)) {}
    ~raw_client() { PQfinish(conn_); }

    /// Runs the prepared statement (autocommit: one commit) and returns the rows it changed.
    int run(std::initializer_list<const char*> values) {
        PGresult* r = PQexecPrepared(conn_, "op", static_cast<int>(values.size()), values.begin(),
                                     nullptr, nullptr, 0);
        const auto st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            fail("execute", r);
        const int n = std::atoi(PQcmdTuples(r));
        PQclear(r);
        return n;
    }

    /// Runs a statement without parameters.
    void exec(const char* sql) {
        PGresult* r = PQexec(conn_, sql);
        const auto st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            fail(sql, r);
        PQclear(r);
    }

private:
    [[noreturn]] void fail(const char* what, PGresult* r) {
        const std::string msg = PQerrorMessage(conn_);
        PQclear(r);
        throw std::runtime_error(std::string("baseline: ") + what + ": " + msg);
    }

    PGconn* conn_;
};

} // namespace bench::pg

#endif
