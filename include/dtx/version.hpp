#ifndef DTX_VERSION_HPP
#define DTX_VERSION_HPP

// dtx follows semantic versioning; the journal format has its own version (see journal.hpp).
#define DTX_VERSION_MAJOR 0
#define DTX_VERSION_MINOR 1
#define DTX_VERSION_PATCH 0
#define DTX_VERSION_STRING "0.1.0"

#endif
