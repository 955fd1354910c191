#ifndef DTX_TX_OPTIONS_HPP
#define DTX_TX_OPTIONS_HPP

// Settings of one transaction, given to coordinator::tcc or coordinator::saga. Defaults come from
// coordinator_options.

#include <dtx/version.hpp>

#include <chrono>
#include <optional>
#include <string>

DTX_NAMESPACE_BEGIN

struct tx_options {
    /// The transaction's gid; empty: a new one is made. A gid the journal already holds is refused;
    /// one that valid_gid() (<dtx/gid.hpp>) refuses throws std::invalid_argument.
    std::string gid{};
    /// Overrides coordinator_options::transaction_timeout for this transaction.
    std::optional<std::chrono::milliseconds> timeout{};
    /// A W3C `traceparent` to continue (the one the request that starts the transaction carried):
    /// branch calls then join that trace. Empty or malformed: the trace of the gid.
    std::string traceparent{};
};

DTX_NAMESPACE_END

#endif
