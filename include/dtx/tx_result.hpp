#ifndef DTX_TX_RESULT_HPP
#define DTX_TX_RESULT_HPP

// What a transaction came to, as its caller sees it.

#include <dtx/transaction_status.hpp>
#include <dtx/version.hpp>

#include <exception>
#include <string>
#include <system_error>

DTX_NAMESPACE_BEGIN

struct tx_result {
    std::string gid;
    /// `confirmed` or `cancelled` when the transaction ended. `confirming` or `cancelling` when
    /// it is decided but phase 2 stopped at its attempt limit (recovery finishes it). `trying`
    /// when the journal failed while writing the decision: the outcome is in doubt until recovery
    /// reads what the journal holds.
    tx_status status = tx_status::trying;
    /// Why it was cancelled (or why it is not yet finished); empty when confirmed.
    std::error_code reason;
    /// The same, in words that name the gid and the branch involved.
    std::string message;
    /// The exception the transaction body threw, if that is why it was cancelled.
    std::exception_ptr exception;

    /// The transaction is decided for confirm (it will be, or has been, confirmed everywhere).
    bool committed() const noexcept {
        return status == tx_status::confirmed || status == tx_status::confirming;
    }
    /// The transaction is decided for cancel.
    bool aborted() const noexcept {
        return status == tx_status::cancelled || status == tx_status::cancelling;
    }
};

DTX_NAMESPACE_END

#endif
