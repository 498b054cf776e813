#include "keygate/policy.hpp"

#include "keygate/key_store.hpp"
#include "keygate/path.hpp"

#include <algorithm>

namespace keygate {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Local so that the decision depends on nothing but this file and the key store.
bool same_ignoring_case(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view v) {
    while (!v.empty() && is_ows(v.front())) v.remove_prefix(1);
    while (!v.empty() && is_ows(v.back())) v.remove_suffix(1);
    return v;
}

decision deny(unsigned status, std::string_view error, std::string_view reason,
              const key_record* key = nullptr) {
    decision d;
    d.kind = outcome::denied;
    d.status = status;
    d.error = error;
    d.reason = reason;
    d.key = key;
    return d;
}

decision deny_invalid(std::string_view reason) { return deny(401, "invalid_api_key", reason); }

decision deny_429(std::string_view error, std::string_view reason, unsigned retry_after,
                  const key_record* key = nullptr) {
    decision d = deny(429, error, reason, key);
    d.retry_after = retry_after;
    return d;
}

// Everything but hide_denials, which decide() applies to whatever this returns.
decision decide_unhidden(const config::auth_t& auth, const key_store* keys, bool open_mode,
                         std::string_view method, std::string_view path,
                         const credentials& creds, sys_seconds now, throttle_hooks* hooks) {
    for (const auto& p : auth.public_paths)
        if (path_matches(p, path)) {
            decision d;
            d.kind = outcome::public_path;
            return d;
        }

    if (open_mode) {
        decision d;
        d.kind = outcome::allowed;
        return d;
    }

    if (hooks) {
        if (unsigned left = hooks->client_blocked())
            return deny_429("too_many_failed_attempts", "throttled", left);
    }
    // Only invalid keys count towards a block; the failure that starts one is answered 429.
    auto invalid = [hooks](std::string_view reason) {
        if (hooks) {
            if (unsigned block = hooks->key_failed())
                return deny_429("too_many_failed_attempts", "throttled", block);
        }
        return deny_invalid(reason);
    };

    const unsigned count = creds.header_fields + creds.bearer_fields;
    if (count == 0) return deny(401, "missing_api_key", "missing");
    // Two credentials could be read differently by keygate and the app: refuse both.
    if (count > 1) return invalid("duplicate");
    const std::string_view presented =
        creds.header_fields == 1 ? creds.header_value : creds.bearer_value;
    if (presented.empty()) return deny(401, "missing_api_key", "missing");

    // Without a store outside open mode nothing can be verified: fail closed.
    if (keys == nullptr) return invalid("unknown");
    const key_lookup found = keys->find(presented, now);
    switch (found.status) {
    case key_status::ok: break;
    case key_status::unknown: return invalid("unknown");
    case key_status::disabled: return invalid("disabled");
    case key_status::not_yet_valid: return invalid("not_yet_valid");
    case key_status::expired: return invalid("expired");
    }
    const key_record* key = found.key;
    if (key == nullptr) return invalid("unknown");

    if (hooks && key->rate_limit) {
        if (unsigned wait = hooks->rate_limited(*key))
            return deny_429("rate_limited", "rate_limited", wait, key);
    }

    for (const auto& rule : auth.rules) {
        if (!path_matches(rule.path, path)) continue;
        if (!rule.methods.empty() &&
            std::find(rule.methods.begin(), rule.methods.end(), method) == rule.methods.end())
            continue;
        if (!key->has_scopes(rule.scopes))
            return deny(403, "insufficient_scope", "insufficient_scope", key);
        break; // the first matching rule decides alone
    }

    if (!key->allowed_paths.empty() &&
        std::none_of(key->allowed_paths.begin(), key->allowed_paths.end(),
                     [path](const std::string& p) { return path_matches(p, path); }))
        return deny(403, "insufficient_scope", "path_not_allowed", key);

    decision d;
    d.kind = outcome::allowed;
    d.key = key;
    return d;
}

} // namespace

credentials find_credentials(const header_list& fields, const config::auth_t& auth) {
    credentials c;
    for (const auto& f : fields) {
        if (same_ignoring_case(f.name, auth.header)) {
            if (c.header_fields++ == 0) c.header_value = trim(f.value);
            continue;
        }
        if (!auth.accept_bearer || !same_ignoring_case(f.name, "Authorization")) continue;
        std::string_view v = trim(f.value);
        std::size_t end = 0;
        while (end < v.size() && !is_ows(v[end])) ++end;
        // Other schemes (Basic, Digest...) belong to the app and are left alone.
        if (!same_ignoring_case(v.substr(0, end), "Bearer")) continue;
        if (c.bearer_fields++ == 0) c.bearer_value = trim(v.substr(end));
    }
    return c;
}

decision decide(const config::auth_t& auth, const key_store* keys, bool open_mode,
                std::string_view method, std::string_view path, const credentials& creds,
                sys_seconds now, throttle_hooks* hooks) {
    decision d = decide_unhidden(auth, keys, open_mode, method, path, creds, now, hooks);
    if (auth.hide_denials && d.kind == outcome::denied && (d.status == 401 || d.status == 403)) {
        d.status = 404;
        d.error = "not_found";
    }
    return d;
}

} // namespace keygate
