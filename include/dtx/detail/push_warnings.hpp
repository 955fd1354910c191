// No include guard: every header that defines coroutines includes this file after its other
// includes and <dtx/detail/pop_warnings.hpp> at its end, as Asio's push_options.hpp and
// pop_options.hpp are used.
//
// g++ 12 reports -Wmismatched-new-delete for coroutine frames whose promise has class-specific
// operator new/delete (Asio's awaitable frames): a false positive, silenced between the two.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
