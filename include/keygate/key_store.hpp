// The immutable key store of one snapshot: SHA-256 digest -> key record.
#pragma once

#include "keygate/config.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace keygate {

class token_bucket;

/// One key as the request path sees it.
struct key_record {
    std::string id;
    digest_t digest{};
    std::vector<std::string> scopes;
    std::vector<std::pair<std::string, std::string>> labels;
    std::optional<sys_seconds> not_before;
    std::optional<sys_seconds> expires_at;
    bool disabled = false;
    std::optional<rate_limit_config> rate_limit;
    /// The key's token bucket when it has a rate_limit; shared by every worker, and kept
    /// across reloads while the id and the limit stay the same.
    std::shared_ptr<token_bucket> bucket;
    std::vector<std::string> allowed_paths;
    /// Identity headers pre-rendered for forwarding, each line ending in CRLF:
    /// `<prefix>Key-Id`, `<prefix>Scopes` (absent without scopes), `<prefix>Label-<name>`.
    std::string identity_headers;

    /// True when the key has every scope in `required`.
    bool has_scopes(const std::vector<std::string>& required) const;
};

enum class key_status { ok, unknown, disabled, not_yet_valid, expired };

struct key_lookup {
    key_status status = key_status::unknown;
    const key_record* key = nullptr; // set for every status but `unknown`
};

class key_store {
public:
    /// Builds the store; `keys` must already be validated (validate_key_set).
    /// Token buckets of `previous` are carried over for keys whose id and limit are unchanged.
    key_store(const std::vector<key_config>& keys, std::string_view identity_prefix,
              const key_store* previous = nullptr);

    /// The record with this id, or null.
    const key_record* find_id(std::string_view id) const;

    /// A copy rebuilds the index: the index holds views into this store's own records.
    key_store(const key_store& other);
    /// Copy-assigns and rebuilds the index (see the copy constructor).
    key_store& operator=(const key_store& other);
    /// Moving keeps the records' storage, so the index stays valid.
    key_store(key_store&&) = default;
    /// Moves; the index stays valid (see the move constructor).
    key_store& operator=(key_store&&) = default;

    /// Looks a presented key up by its SHA-256 digest, confirmed in constant time,
    /// and checks `disabled` and the validity window against `now`.
    key_lookup find(std::string_view presented, sys_seconds now) const;

    /// Number of keys, active or not.
    std::size_t size() const { return records_.size(); }

    /// Keys that are not disabled and inside their validity window at `now`.
    std::size_t active_count(sys_seconds now) const;

    const std::vector<key_record>& records() const { return records_; }

private:
    struct digest_hash {
        std::size_t operator()(std::string_view d) const noexcept;
    };
    void build_index();

    std::vector<key_record> records_;
    std::unordered_map<std::string_view, std::size_t, digest_hash> by_digest_;
};

} // namespace keygate
