#ifndef DTX_VERSION_HPP
#define DTX_VERSION_HPP

// dtx follows semantic versioning; the journal format has its own version (see journal.hpp).
// CMakeLists.txt and conanfile.py read the version from these lines.
#define DTX_VERSION_MAJOR 0
#define DTX_VERSION_MINOR 1
#define DTX_VERSION_PATCH 0
#define DTX_VERSION "0.1.0"
#define DTX_VERSION_STRING DTX_VERSION // the same, under its first name

// The inline namespace around dtx's declarations: dtx::coordinator is
// dtx::DTX_ABI_NAMESPACE::coordinator. Two dtx versions whose layouts may differ mangle to
// different names, so a program that links both by accident fails to link instead of mixing them
// at run time. Before 1.0 every minor version may break the ABI, from 1.0 on only a major one
// (the CMake package's version file makes the same promise).
#define DTX_ABI_NAMESPACE_JOIN_(a, b) a##b
#define DTX_ABI_NAMESPACE_JOIN(a, b) DTX_ABI_NAMESPACE_JOIN_(a, b)
#if DTX_VERSION_MAJOR == 0
#define DTX_ABI_NAMESPACE DTX_ABI_NAMESPACE_JOIN(abi_v0_, DTX_VERSION_MINOR)
#else
#define DTX_ABI_NAMESPACE DTX_ABI_NAMESPACE_JOIN(abi_v, DTX_VERSION_MAJOR)
#endif

// Headers open and close dtx's namespace with this pair, as nlohmann/json does, so that tools
// that read C++ as text (ctags, cscope) see ordinary declarations:
//     DTX_NAMESPACE_BEGIN
//     namespace http { ... } // namespace http
//     DTX_NAMESPACE_END
#define DTX_NAMESPACE_BEGIN                                                                        \
    namespace dtx {                                                                                \
    inline namespace DTX_ABI_NAMESPACE {
#define DTX_NAMESPACE_END                                                                          \
    }                                                                                              \
    }

#endif
