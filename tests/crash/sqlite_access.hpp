#ifndef DTX_TESTS_CRASH_SQLITE_ACCESS_HPP
#define DTX_TESTS_CRASH_SQLITE_ACCESS_HPP

// How the crash tests' participants (participants.hpp) run their SQL on SQLite.

#include <dtx/error.hpp>
#include <dtx/outcome.hpp>
#include <dtx/sqlite/connection.hpp>

#include <string>
#include <string_view>

#include "participants.hpp"

template <>
struct dtx::crash::sql_access<dtx::sqlite::connection> {
    template <class... Args>
    static int changes(dtx::sqlite::connection& db, const char* sql, const Args&... args) {
        db.prepare(sql).bind(args...).run();
        return db.changes();
    }
    template <class... Args>
    static bool exists(dtx::sqlite::connection& db, const char* sql, const Args&... args) {
        auto& st = db.prepare(sql);
        st.bind(args...);
        const bool found = st.step();
        st.bind(); // reset: no statement stays open in the savepoint
        return found;
    }
    /// A failed constraint undoes its statement only; the local transaction goes on.
    template <class F>
    static dtx::outcome protect(dtx::sqlite::connection&, F business, std::string& violated) {
        try {
            return business();
        } catch (const dtx::error& e) {
            if (std::string_view(e.what()).find("constraint") == std::string_view::npos)
                throw;
            violated = e.what();
            return dtx::success();
        }
    }
};

#endif
