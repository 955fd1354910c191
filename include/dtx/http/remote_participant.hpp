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
// transaction's W3C `traceparent` header. Answers are read as DTM reads them (protocol.hpp,
// outcome_of): 425 or a body containing ONGOING is pending, then 409 or a body containing FAILURE
// is a failure, then exactly 200 is success; any other answer, no answer, or a broken connection
// is an unknown result (an exception naming gid, branch, URL and cause, as valid UTF-8), which
// the coordinator retries or cancels as for any participant.

#include <dtx/detail/config.hpp>
#include <dtx/detail/utf8.hpp>
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

class remote_participant final : public participant {
public:
    /// A participant at `address`, called through `c` (whose pools it shares; it keeps them alive).
    remote_participant(client& c, url address)
        : remote_participant(c.core_, std::move(address)) {}

    /// Remote participants take part in every kind of transaction, and serve as check-backs;
    /// the server refuses an operation its participant does not have (an unknown result).
    std::optional<tx_kind> kind() const noexcept override { return std::nullopt; }
    const url& address() const noexcept { return url_; }

    asio::awaitable<outcome> call(const branch_request& r) override {
        const std::string query = branch_query_string(r.gid, r.branch_id, r.op, r.kind());
        // A check-back is a GET without a body, as DTM sends it (its payload is always empty).
        const bool get = r.op == branch_op::check_back;
        const std::string body = get ? std::string() : r.payload.dump();
        std::array<header, 1> trace{header{"traceparent", r.traceparent}};
        const std::span<const header> headers(trace.data(), r.traceparent.empty() ? 0 : 1);
        detail::http_request req = core_->make_request(url_, query, body, headers);
        if (get) {
            req.method(boost::beast::http::verb::get);
            req.prepare_payload();
        }
        response answer;
        try {
            answer = co_await detail::client_core::exchange(core_, url_, std::move(req));
        } catch (const std::exception& e) {
            throw error(errc::branch_error, where(r) + e.what());
        }
        std::optional<outcome> o = outcome_of(answer.status, answer.body);
        if (!o)
            throw error(errc::branch_error, where(r) + (get ? "GET " : "POST ") + url_.text() +
                                                ": answered " + std::to_string(answer.status) +
                                                " " + excerpt(answer.body));
        co_return std::move(*o);
    }

private:
    friend participant_registry::resolver url_resolver(client& c);

    remote_participant(std::shared_ptr<detail::client_core> core, url address)
        : core_(std::move(core))
        , url_(std::move(address)) {}

    /// Error texts are stored (tx_result::message) and logged: what came from outside goes in
    /// as valid UTF-8 on one line.
    static std::string one_line(std::string_view s, std::size_t max = std::string_view::npos) {
        return dtx::detail::safe_text(s, max, dtx::detail::text_controls::escape);
    }
    static std::string where(const branch_request& r) {
        return "gid " + one_line(r.gid) + " branch " + one_line(r.branch_id) + " " +
               std::string(to_string(r.op)) + ": ";
    }
    /// The start of an answer's body.
    static std::string excerpt(std::string_view body) { return one_line(body, 200); }

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
