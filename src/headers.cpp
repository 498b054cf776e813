// Header rewriting for forwarding (DESIGN.md §1.9). Appends to one output string and
// allocates nothing else: this runs once per request and once per response.
#include "keygate/headers.hpp"

#include "keygate/key_store.hpp"

#include <charconv>

namespace keygate {

namespace {

constexpr char to_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) noexcept {
    while (!s.empty() && is_ows(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back()))
        s.remove_suffix(1);
    return s;
}

bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

/// True when an Authorization value uses the Bearer scheme (scheme word case-insensitive).
bool is_bearer(std::string_view value) noexcept {
    value = trim_ows(value);
    constexpr std::string_view scheme = "Bearer";
    if (!istarts_with(value, scheme))
        return false;
    // "Bearerx" is another scheme; the scheme word ends at whitespace or the value's end.
    return value.size() == scheme.size() || is_ows(value[scheme.size()]);
}

bool any_connection_field(const header_list& fields) noexcept {
    for (const auto& f : fields)
        if (iequals(f.name, "Connection"))
            return true;
    return false;
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
}

void append_number(std::string& out, std::uint64_t n) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
    (void)ec; // 24 bytes always hold a 64-bit decimal
    out.append(buf, end);
}

void append_framing(std::string& out, const body_framing& framing) {
    switch (framing.kind) {
    case body_framing::fixed_length:
        out.append("Content-Length: ");
        append_number(out, framing.length);
        out.append("\r\n");
        break;
    case body_framing::chunked:
        out.append("Transfer-Encoding: chunked\r\n");
        break;
    case body_framing::none:
    case body_framing::until_close:
        break;
    }
}

/// Bytes the kept fields may need, so `out` grows once instead of per field.
std::size_t fields_size(const header_list& fields) noexcept {
    std::size_t n = 0;
    for (const auto& f : fields)
        n += f.name.size() + f.value.size() + 4;
    return n;
}

} // namespace

bool is_hop_by_hop(std::string_view name) {
    return iequals(name, "Connection") || iequals(name, "Keep-Alive") ||
           iequals(name, "Proxy-Connection") || iequals(name, "TE") ||
           iequals(name, "Trailer") || iequals(name, "Transfer-Encoding") ||
           iequals(name, "Upgrade");
}

bool named_by_connection(const header_list& fields, std::string_view name) {
    for (const auto& f : fields) {
        if (!iequals(f.name, "Connection"))
            continue;
        std::string_view rest = f.value;
        while (!rest.empty()) {
            const auto comma = rest.find(',');
            const auto token = trim_ows(rest.substr(0, comma));
            if (!token.empty() && iequals(token, name))
                return true;
            if (comma == std::string_view::npos)
                break;
            rest.remove_prefix(comma + 1);
        }
    }
    return false;
}

bool valid_request_id(std::string_view value) {
    if (value.empty() || value.size() > 128)
        return false;
    for (const char c : value) {
        const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                        c == '-';
        if (!ok)
            return false;
    }
    return true;
}

void rewrite_request(std::string& out, std::string_view method, std::string_view target,
                     const header_list& fields, const forward_context& ctx,
                     const body_framing& framing) {
    const bool has_connection = any_connection_field(fields);
    const bool strip_bearer = ctx.accept_bearer && ctx.strip_credentials;
    // Tokens in Connection remove the incoming X-Forwarded-For entirely, so the chain
    // keygate adds starts over from the peer.
    const bool xff_named = has_connection && named_by_connection(fields, "X-Forwarded-For");

    std::size_t xff_size = 0;
    std::string_view host;
    bool host_seen = false;
    for (const auto& f : fields) {
        if (!xff_named && iequals(f.name, "X-Forwarded-For"))
            xff_size += f.value.size() + 2;
        else if (!host_seen && iequals(f.name, "Host")) {
            host = f.value;
            host_seen = true;
        }
    }

    out.reserve(out.size() + method.size() + target.size() + 12 + fields_size(fields) +
                (ctx.key ? ctx.key->identity_headers.size() : 0) + xff_size +
                ctx.peer_ip.size() + ctx.proto.size() + host.size() +
                ctx.request_id.size() + 160);

    out.append(method);
    out.push_back(' ');
    out.append(target);
    out.append(" HTTP/1.1\r\n");

    for (const auto& f : fields) {
        const auto name = f.name;
        if (iequals(name, "Host")) {
            // Host passes unchanged even when Connection names it.
            append_field(out, name, f.value);
            continue;
        }
        if (ctx.websocket && iequals(name, "Upgrade")) {
            // The upgrade itself is what this request is for; `Connection: Upgrade` names it.
            append_field(out, name, f.value);
            continue;
        }
        if (is_hop_by_hop(name))
            continue;
        if (has_connection && named_by_connection(fields, name))
            continue;
        // keygate writes framing and answers Expect itself.
        if (iequals(name, "Content-Length") || iequals(name, "Expect"))
            continue;
        if (ctx.strip_credentials && iequals(name, ctx.credential_header))
            continue;
        if (strip_bearer && iequals(name, "Authorization") && is_bearer(f.value))
            continue;
        if (iequals(name, "Forwarded"))
            continue;
        // An empty prefix would match every field; config validation forbids it.
        if (!ctx.identity_prefix.empty() && istarts_with(name, ctx.identity_prefix))
            continue;
        // Replaced below by the values keygate vouches for.
        if (iequals(name, "X-Forwarded-For") || iequals(name, "X-Forwarded-Proto") ||
            iequals(name, "X-Forwarded-Host") || iequals(name, "X-Request-Id"))
            continue;
        append_field(out, name, f.value);
    }

    if (ctx.key)
        out.append(ctx.key->identity_headers);

    out.append("X-Forwarded-For: ");
    if (!xff_named) {
        for (const auto& f : fields) {
            if (!iequals(f.name, "X-Forwarded-For"))
                continue;
            const auto v = trim_ows(f.value);
            // An empty field would otherwise leave a dangling ", " in the chain.
            if (v.empty())
                continue;
            out.append(v);
            out.append(", ");
        }
    }
    out.append(ctx.peer_ip);
    out.append("\r\n");

    append_field(out, "X-Forwarded-Proto", ctx.proto);
    if (host_seen)
        append_field(out, "X-Forwarded-Host", host);
    append_field(out, "X-Request-Id", ctx.request_id);
    if (ctx.websocket)
        out.append("Connection: Upgrade\r\n");
    append_framing(out, framing);
    out.append("\r\n");
}

void rewrite_response(std::string& out, unsigned status, std::string_view reason,
                      const header_list& fields, const response_context& ctx,
                      const body_framing& framing) {
    const bool has_connection = any_connection_field(fields);
    const bool upgrade = ctx.websocket && status == 101;

    out.reserve(out.size() + reason.size() + 16 + fields_size(fields) +
                ctx.request_id.size() + 96);

    out.append(ctx.http10_client ? "HTTP/1.0 " : "HTTP/1.1 ");
    append_number(out, status);
    out.push_back(' ');
    out.append(reason);
    out.append("\r\n");

    for (const auto& f : fields) {
        const auto name = f.name;
        if (upgrade && iequals(name, "Upgrade")) {
            append_field(out, name, f.value);
            continue;
        }
        if (is_hop_by_hop(name))
            continue;
        if (has_connection && named_by_connection(fields, name))
            continue;
        // Framing is re-stated from `framing`; the request id is keygate's.
        if (iequals(name, "Content-Length") || iequals(name, "X-Request-Id"))
            continue;
        append_field(out, name, f.value);
    }

    append_framing(out, framing);
    append_field(out, "X-Request-Id", ctx.request_id);
    if (upgrade)
        out.append("Connection: Upgrade\r\n");
    else if (!ctx.keep_alive)
        out.append("Connection: close\r\n");
    else if (ctx.http10_client)
        out.append("Connection: keep-alive\r\n");
    out.append("\r\n");
}

} // namespace keygate
