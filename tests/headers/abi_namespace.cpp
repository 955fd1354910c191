// dtx's declarations live in the inline namespace DTX_ABI_NAMESPACE (<dtx/version.hpp>): a type
// of each part is the same type under its short and its ABI-qualified name.

#include <dtx/dtx.hpp>

#include <type_traits>

#define DTX_CHECK_ABI_NAMESPACE(type)                                                              \
    static_assert(std::is_same_v<dtx::type, dtx::DTX_ABI_NAMESPACE::type>,                         \
                  "dtx::" #type " is not declared in the ABI namespace")

DTX_CHECK_ABI_NAMESPACE(coordinator);
DTX_CHECK_ABI_NAMESPACE(memory_journal);
DTX_CHECK_ABI_NAMESPACE(outcome);
DTX_CHECK_ABI_NAMESPACE(participant_registry);
DTX_CHECK_ABI_NAMESPACE(error);
DTX_CHECK_ABI_NAMESPACE(detail::deadline_watch);

#ifdef DTX_CHECK_HTTP
#include <dtx/http.hpp>
DTX_CHECK_ABI_NAMESPACE(http::server);
DTX_CHECK_ABI_NAMESPACE(http::url);
#endif

#ifdef DTX_CHECK_SQLITE
#include <dtx/sqlite/barrier.hpp>
#include <dtx/sqlite/journal.hpp>
DTX_CHECK_ABI_NAMESPACE(sqlite::journal);
DTX_CHECK_ABI_NAMESPACE(sqlite::barrier);
#endif

#ifdef DTX_CHECK_POSTGRES
#include <dtx/postgres/barrier.hpp>
#include <dtx/postgres/journal.hpp>
DTX_CHECK_ABI_NAMESPACE(postgres::journal);
DTX_CHECK_ABI_NAMESPACE(postgres::barrier);
#endif
