#ifndef DTX_HTTP_REMOTE_PARTICIPANT_HPP
#define DTX_HTTP_REMOTE_PARTICIPANT_HPP

// Participants in other services, called over HTTP by the protocol of protocol.hpp.
//
// The journal names a remote participant by its URL. A registry with the URL resolver turns any
// such name into a remote participant, so recovery in any coordinator process can call the
// participants a transaction named, with nothing registered by hand:
//
//   dtx::http::client http(ioc.get_executor(), {.bearer_token = token});
//   dtx::participant_registry participants;
//   participants.set_resolver(dtx::http::url_resolver(http));
//   dtx::coordinator coord(ioc.get_executor(), journal, participants);
//   // and in a transaction's body:
//   co_await tx.add_branch("http://127.0.0.1:8081/dtx/inventory", item);
//
// A call POSTs the branch payload to `<URL>?gid=..&trans_type=..&branch_id=..&op=..` with the
// transaction's W3C `traceparent` header. 200 is success, 409 failure, 425 pending; any other
// answer, no answer, or a broken connection is an unknown result (an exception naming gid, branch,
// URL and cause), which the coordinator retries or cancels as for any participant.

#include <dtx/detail/config.hpp>
#include <dtx/error.hpp>
#include <dtx/http/client.hpp>
#include <dtx/http/protocol.hpp>
#include <dtx/http/url.hpp>
#include <dtx/participant_registry.hpp>
#include <dtx/version.hpp>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <dtx/detail/push_warnings.hpp> // last: see the file

DTX_NAMESPACE_BEGIN
namespace http {

namespace detail {

/// At most `max` characters of an answer body, on one line, for an error text.
inline std::string body_excerpt(std::string_view body, std::size_t max = 200) {
    std::string out;
    for (unsigned char c : body.substr(0, max))
        out += c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c);
    if (body.size() > max)
        out += "...";
    return out;
}

} // namespace detail

class remote_participant final : public participant {
public:
    /// A participant at `address`, called through `c` (whose pools it shares; it keeps them alive).
    remote_participant(client& c, url address)
        : remote_participant(c.core_, std::move(address)) {}

    /// Remote participants take part in both kinds of transaction; the server refuses an
    /// operation its participant does not have (an unknown result).
    std::optional<tx_kind> kind() const noexcept override { return std::nullopt; }
    const url& address() const noexcept { return url_; }

    asio::awaitable<outcome> call(const branch_request& r) override {
        const std::string query = branch_query_string(r.gid, r.branch_id, r.op);
        const std::string body = r.payload.dump();
        std::array<header, 1> trace{header{"traceparent", r.traceparent}};
        const std::span<const header> headers(trace.data(), r.traceparent.empty() ? 0 : 1);
        detail::http_request req = core_->make_request(url_, query, body, headers);
        response answer;
        try {
            answer = co_await detail::client_core::exchange(core_, url_, std::move(req));
        } catch (const std::exception& e) {
            throw error(errc::branch_error, where(r) + e.what());
        }
        std::optional<outcome> o = outcome_of(answer.status, answer.body);
        if (!o)
            throw error(errc::branch_error, where(r) + "POST " + url_.text() + ": answered " +
                                                std::to_string(answer.status) + " " +
                                                detail::body_excerpt(answer.body));
        co_return std::move(*o);
    }

private:
    friend participant_registry::resolver url_resolver(client& c);

    remote_participant(std::shared_ptr<detail::client_core> core, url address)
        : core_(std::move(core))
        , url_(std::move(address)) {}

    static std::string where(const branch_request& r) {
        return "gid " + std::string(r.gid) + " branch " + std::string(r.branch_id) + " " +
               std::string(to_string(r.op)) + ": ";
    }

    std::shared_ptr<detail::client_core> core_;
    url url_;
};

/// A resolver for `participant_registry::set_resolver`: a name that is an http:// or https:// URL
/// becomes a remote participant called through `c` (made once per name, then kept); any other
/// name is not found. Calls to an https:// URL need the client's TLS settings
/// (client_options::tls). The resolver keeps `c`'s pools alive; the client's executor must be the
/// coordinators'.
inline participant_registry::resolver url_resolver(client& c) {
    struct cache {
        std::shared_ptr<detail::client_core> core;
        std::mutex mutex;
        std::unordered_map<std::string, std::unique_ptr<remote_participant>> by_name;
    };
    auto shared = std::make_shared<cache>();
    shared->core = c.core_;
    return [shared](std::string_view name) -> participant* {
        std::lock_guard lock(shared->mutex);
        const std::string key(name);
        if (auto it = shared->by_name.find(key); it != shared->by_name.end())
            return it->second.get();
        std::optional<url> u = parse_url(name);
        if (!u)
            return nullptr;
        std::unique_ptr<remote_participant> p(new remote_participant(shared->core, std::move(*u)));
        participant* out = p.get();
        shared->by_name.emplace(key, std::move(p));
        return out;
    };
}

} // namespace http
DTX_NAMESPACE_END

#include <dtx/detail/pop_warnings.hpp>

#endif
