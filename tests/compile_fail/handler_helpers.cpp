// The handler helpers mixed up, one mistake per DTX_CASE_* macro (see CMakeLists.txt); without
// one, the file compiles.
#include <dtx/participant_registry.hpp>
#include <dtx/sqlite/barrier.hpp>

#include <nlohmann/json.hpp>

struct reserve {
    int qty = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reserve, qty)

inline dtx::outcome barrier_side(dtx::sqlite::connection&, const dtx::branch_request&, reserve) {
    return dtx::success();
}

inline dtx::asio::awaitable<dtx::outcome> participant_side(const dtx::branch_request&, reserve) {
    co_return dtx::success();
}

void register_all(dtx::participant_registry& registry, dtx::sqlite::barrier& barrier) {
    registry.add_tcc("plain", {.on_try = dtx::typed<reserve>(participant_side),
                               .on_confirm = dtx::typed<reserve>(participant_side),
                               .on_cancel = dtx::typed<reserve>(participant_side)});
    registry.add_tcc("guarded",
                     barrier.tcc({.on_try = dtx::sqlite::typed_handler<reserve>(barrier_side),
                                  .on_confirm = dtx::sqlite::typed_handler<reserve>(barrier_side),
                                  .on_cancel = dtx::sqlite::typed_handler<reserve>(barrier_side)}));
    // Each mistake in the first handler; the others are right.
    const auto confirm = dtx::sqlite::typed_handler<reserve>(barrier_side);
    const auto plain = dtx::typed<reserve>(participant_side);
#if defined(DTX_CASE_typed_with_barrier_handler)
    registry.add_tcc("x", barrier.tcc({.on_try = dtx::typed<reserve>(barrier_side),
                                       .on_confirm = confirm,
                                       .on_cancel = confirm}));
#elif defined(DTX_CASE_typed_handler_with_participant_handler)
    registry.add_tcc("x",
                     barrier.tcc({.on_try = dtx::sqlite::typed_handler<reserve>(participant_side),
                                  .on_confirm = confirm,
                                  .on_cancel = confirm}));
#elif defined(DTX_CASE_participant_handler_in_barrier)
    registry.add_tcc("x", barrier.tcc({.on_try = dtx::typed<reserve>(participant_side),
                                       .on_confirm = confirm,
                                       .on_cancel = confirm}));
#elif defined(DTX_CASE_barrier_handler_in_registry)
    registry.add_tcc("x", {.on_try = dtx::sqlite::typed_handler<reserve>(barrier_side),
                           .on_confirm = plain,
                           .on_cancel = plain});
#else
    (void)confirm;
    (void)plain;
#endif
}
