#ifndef DTX_PARTICIPANT_REGISTRY_HPP
#define DTX_PARTICIPANT_REGISTRY_HPP

// Names to participants.
//
// The journal records each branch's participant by name (or URL). Every coordinator process that
// may recover a transaction registers the same names. Register everything before the first
// transaction starts: lookups are not synchronised with registration.
//
// Names that are not registered are offered to the resolver, if one is set; the HTTP transport
// installs one that turns URLs into remote participants.

#include <dtx/participant.hpp>
#include <dtx/version.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

DTX_NAMESPACE_BEGIN

class participant_registry {
public:
    using resolver = std::function<participant*(std::string_view name)>;

    /// Registers a participant object under `name`. Throws std::invalid_argument on an empty or
    /// duplicate name or a null participant.
    void add(std::string name, std::shared_ptr<participant> p) {
        if (name.empty())
            throw std::invalid_argument("participant name is empty");
        if (!p)
            throw std::invalid_argument("participant '" + name + "' is null");
        auto [it, inserted] = by_name_.try_emplace(std::move(name), std::move(p));
        if (!inserted)
            throw std::invalid_argument("participant '" + it->first + "' is already registered");
    }

    /// Registers a TCC participant. All three handlers are required.
    void add_tcc(std::string name, tcc_handlers h) {
        if (!h.on_try || !h.on_confirm || !h.on_cancel)
            throw std::invalid_argument("TCC participant '" + name +
                                        "' needs on_try, on_confirm and on_cancel");
        add(std::move(name),
            std::make_shared<detail::local_participant<tcc_handlers>>(std::move(h)));
    }

    /// Registers a saga participant. Both handlers are required.
    void add_saga(std::string name, saga_handlers h) {
        if (!h.on_action || !h.on_compensate)
            throw std::invalid_argument("saga participant '" + name +
                                        "' needs on_action and on_compensate");
        add(std::move(name),
            std::make_shared<detail::local_participant<saga_handlers>>(std::move(h)));
    }

    /// Registers the check-back of 2-phase messages (two_phase_message.hpp): `h` is called with
    /// op `check_back` and answers success if the message's local transaction committed, failure
    /// if it did not and now never will, pending to be asked again later. The barriers make one:
    /// `registry.add_check_back("orders", orders_barrier.check_back())`.
    void add_check_back(std::string name, branch_handler h) {
        if (!h)
            throw std::invalid_argument("check-back '" + name + "' needs a handler");
        add(std::move(name), std::make_shared<detail::check_back_participant>(std::move(h)));
    }

    /// Resolves names that were not registered (for example URLs). Set once, before use.
    void set_resolver(resolver r) { resolver_ = std::move(r); }

    /// The participant for `name`, or nullptr if there is none. The pointer stays valid as long
    /// as the registry (and, for resolved names, the resolver's owner) lives.
    participant* find(std::string_view name) const {
        if (auto it = by_name_.find(name); it != by_name_.end())
            return it->second.get();
        return resolver_ ? resolver_(name) : nullptr;
    }

    /// The participant registered under `name`, or nullptr: the resolver is not asked. A server
    /// that exposes participants uses this, so that a request can never name a URL to be called.
    participant* find_registered(std::string_view name) const {
        auto it = by_name_.find(name);
        return it != by_name_.end() ? it->second.get() : nullptr;
    }

private:
    struct name_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, std::shared_ptr<participant>, name_hash, std::equal_to<>>
        by_name_;
    resolver resolver_;
};

DTX_NAMESPACE_END

#endif
