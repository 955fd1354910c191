#ifndef DTX_TESTS_SUPPORT_PG_SERVER_HPP
#define DTX_TESTS_SUPPORT_PG_SERVER_HPP

// Starts a throwaway PostgreSQL server (tests/support/pg_server.sh) for the lifetime of the
// object, on 127.0.0.1 and a free port, and stops it afterwards.

#include <dtx/gid.hpp>
#include <dtx/postgres/connection.hpp>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace dtx::test {

class pg_server {
public:
    pg_server()
        : dir_(std::filesystem::temp_directory_path() / ("dtx-pg-" + make_gid())) {
        std::string out;
        FILE* p = ::popen((script() + " start " + dir_.string() + " 2>&1").c_str(), "r");
        if (!p)
            throw std::runtime_error("cannot run pg_server.sh");
        char buf[256];
        while (std::fgets(buf, sizeof buf, p))
            out += buf;
        if (::pclose(p) != 0)
            throw std::runtime_error("PostgreSQL test server did not start: " + out);
        port_ = std::stoi(out);
    }
    pg_server(const pg_server&) = delete;
    pg_server& operator=(const pg_server&) = delete;
    ~pg_server() {
        stop();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    std::string conninfo() const {
        return "host=127.0.0.1 port=" + std::to_string(port_) +
               " user=dtx dbname=postgres connect_timeout=5";
    }
    int port() const { return port_; }

    /// Stops the server (fast shutdown); restart() brings it back on the same port and data.
    void stop() { run(script() + " stop " + dir_.string()); }
    void restart() {
        const std::string bin =
            "$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1)";
        const std::string as = ::geteuid() == 0 ? "runuser -u postgres -- " : "";
        run(as + bin + "/pg_ctl -D " + dir_.string() + "/data -l " + dir_.string() +
            "/server.log -w -o \"-p " + std::to_string(port_) + " -k " + dir_.string() +
            " -c listen_addresses=127.0.0.1\" start >/dev/null");
    }

private:
    static std::string script() {
        return std::string(DTX_TEST_SOURCE_DIR) + "/support/pg_server.sh";
    }
    static void run(const std::string& cmd) {
        if (std::system(cmd.c_str()) != 0)
            throw std::runtime_error("failed: " + cmd);
    }

    std::filesystem::path dir_;
    int port_ = 0;
};

/// One server per test process: starting one takes about a second.
inline pg_server& shared_pg_server() {
    static pg_server s;
    return s;
}

/// A new, empty database on the shared server; returns its connection string.
inline std::string fresh_pg_database() {
    static int n = 0;
    const std::string name = "t" + std::to_string(++n);
    postgres::connection admin(shared_pg_server().conninfo());
    admin.exec(("CREATE DATABASE " + name).c_str());
    return "host=127.0.0.1 port=" + std::to_string(shared_pg_server().port()) +
           " user=dtx dbname=" + name;
}

} // namespace dtx::test

#endif
