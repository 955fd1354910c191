// No include guard: ends what <dtx/detail/push_warnings.hpp> began.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
