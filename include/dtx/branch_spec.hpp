#ifndef DTX_BRANCH_SPEC_HPP
#define DTX_BRANCH_SPEC_HPP

// A branch (or saga step) to add to a transaction: see transaction.hpp, and coordinator.hpp for
// sagas of planned steps.

#include <dtx/payload.hpp>
#include <dtx/version.hpp>

#include <string>

DTX_NAMESPACE_BEGIN

/// A branch to add: which participant, and the payload its handlers receive. Any type that
/// nlohmann::json converts from (a struct with `to_json`) can be given as payload.
struct branch_spec {
    std::string participant;
    dtx::payload payload;
};

DTX_NAMESPACE_END

#endif
