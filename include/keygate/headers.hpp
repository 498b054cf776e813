// Header rewriting for forwarding, both directions (DESIGN.md §1.9). Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keygate {

struct key_record;

struct header_field {
    std::string_view name;
    std::string_view value;
};
using header_list = std::vector<header_field>;

/// Case-insensitive ASCII equality.
inline bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x == y) continue;
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

/// True for a header name that is hop-by-hop by itself (Connection, Keep-Alive,
/// Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade).
bool is_hop_by_hop(std::string_view name);

/// True when `name` is listed in any `Connection` field of `fields` (comma-separated tokens).
bool named_by_connection(const header_list& fields, std::string_view name);

/// True when `value` (1-128 chars of [A-Za-z0-9._:-]) may be kept as the request id.
bool valid_request_id(std::string_view value);

/// Body framing of a forwarded message.
struct body_framing {
    // Not `length`: an enumerator of that name would clash with the member below, and
    // `framing.length` would then silently read the enumerator instead of the count.
    enum kind_t { none, fixed_length, chunked, until_close } kind = none;
    std::uint64_t length = 0; // meaningful when kind == fixed_length
};

/// What rewrite_request needs to know besides the incoming fields.
struct forward_context {
    std::string_view credential_header = "X-API-Key";
    bool accept_bearer = false;
    bool strip_credentials = true;
    std::string_view identity_prefix = "X-Keygate-";
    const key_record* key = nullptr; // null on public paths and in open mode
    std::string_view peer_ip;        // appended to X-Forwarded-For
    std::string_view proto = "http"; // X-Forwarded-Proto
    std::string_view request_id;     // final X-Request-Id
    bool websocket = false;          // keep Upgrade/Connection: Upgrade
};

/// Appends the upstream request head (request line, rewritten fields, framing, blank line)
/// to `out`. `target` is the normalised path plus the original query. Incoming framing
/// fields (Content-Length, Transfer-Encoding), Expect, hop-by-hop fields and those named by
/// Connection, credentials, Forwarded and identity-prefixed fields are removed; identity
/// headers, X-Forwarded-*, X-Request-Id and the framing in `framing` are added.
void rewrite_request(std::string& out, std::string_view method, std::string_view target,
                     const header_list& fields, const forward_context& ctx,
                     const body_framing& framing);

/// What rewrite_response needs besides the upstream's fields.
struct response_context {
    std::string_view request_id;
    bool keep_alive = true;   // false adds `Connection: close`
    bool http10_client = false; // answer with HTTP/1.0 (and `Connection: keep-alive` when kept)
    bool websocket = false;   // a 101 to a WebSocket upgrade keeps Upgrade/Connection
};

/// Appends the client response head to `out`: status line, upstream fields without
/// hop-by-hop ones (and those named by Connection) or framing, then `framing`,
/// X-Request-Id and Connection as needed.
void rewrite_response(std::string& out, unsigned status, std::string_view reason,
                      const header_list& fields, const response_context& ctx,
                      const body_framing& framing);

} // namespace keygate
