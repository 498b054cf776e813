// The request decision (DESIGN.md §1.3-§1.8). Pure: it throws nothing and does no I/O.
#pragma once

#include "keygate/config.hpp"
#include "keygate/headers.hpp"

#include <string_view>

namespace keygate {

class key_store;
struct key_record;

/// The credential found in a request head.
struct credentials {
    unsigned header_fields = 0;    // fields named like the credential header
    std::string_view header_value; // value of the first one (trimmed)
    unsigned bearer_fields = 0;    // `Authorization: Bearer ...` fields (only with accept_bearer)
    std::string_view bearer_value; // token of the first one (trimmed)
};

/// Collects the credential header and, with `accept_bearer`, Bearer Authorization fields.
credentials find_credentials(const header_list& fields, const config::auth_t& auth);

enum class outcome { allowed, public_path, denied };

/// The shared throttles decide() consults (DESIGN.md §1.4, §1.6, §1.7); the session
/// implements them over the failed-attempt table and the keys' token buckets.
class throttle_hooks {
public:
    virtual ~throttle_hooks() = default;
    /// Whole seconds left of a failed-attempt block on this client, or 0.
    virtual unsigned client_blocked() = 0;
    /// Records one invalid-key denial; the seconds of the block it starts, or 0.
    virtual unsigned key_failed() = 0;
    /// Takes a token for `key`; 0 when allowed, else the Retry-After seconds.
    virtual unsigned rate_limited(const key_record& key) = 0;
};

struct decision {
    outcome kind = outcome::denied;
    unsigned status = 0;          // 0 when forwarded
    std::string_view error;       // JSON error code, e.g. "invalid_api_key"
    std::string_view reason;      // denial reason for logs and metrics, e.g. "expired"
    const key_record* key = nullptr;
    unsigned retry_after = 0;     // set on 429
};

/// Decides what happens to a request whose path is already normalised. `keys` may be
/// null only in open mode. Applies public paths, credential rules, key checks, rules,
/// allowed_paths and hide_denials; with `hooks`, also the client block (before the
/// credential), the failed-attempt count (an invalid key past the limit answers 429) and
/// the key's rate limit (before the rules).
decision decide(const config::auth_t& auth, const key_store* keys, bool open_mode,
                std::string_view method, std::string_view path, const credentials& creds,
                sys_seconds now, throttle_hooks* hooks = nullptr);

} // namespace keygate
