#include "keygate/key_store.hpp"
#include "keygate/rate_limit.hpp"

#include "keygate/crypto.hpp"

#include <algorithm>
#include <cstring>

namespace keygate {

namespace {

std::string_view digest_view(const digest_t& d) {
    return {reinterpret_cast<const char*>(d.data()), d.size()};
}

std::string render_identity(const key_config& k, std::string_view prefix) {
    static constexpr std::string_view crlf = "\r\n";
    // Sized up front: with 100,000 keys a reallocation per append adds up.
    std::size_t size = prefix.size() + 8 + k.id.size() + crlf.size();
    if (!k.scopes.empty()) {
        size += prefix.size() + 8 + crlf.size();
        for (const auto& s : k.scopes) size += s.size() + 1;
    }
    for (const auto& [name, value] : k.labels)
        size += prefix.size() + 8 + name.size() + value.size() + crlf.size();

    std::string out;
    out.reserve(size);
    out.append(prefix).append("Key-Id: ").append(k.id).append(crlf);
    if (!k.scopes.empty()) {
        out.append(prefix).append("Scopes: ");
        for (std::size_t i = 0; i < k.scopes.size(); ++i) {
            if (i != 0) out.push_back(',');
            out.append(k.scopes[i]);
        }
        out.append(crlf);
    }
    for (const auto& [name, value] : k.labels)
        out.append(prefix).append("Label-").append(name).append(": ").append(value).append(crlf);
    return out;
}

key_status status_at(const key_record& r, sys_seconds now) {
    if (r.disabled) return key_status::disabled;
    if (r.not_before && now < *r.not_before) return key_status::not_yet_valid;
    if (r.expires_at && now >= *r.expires_at) return key_status::expired;
    return key_status::ok;
}

} // namespace

bool key_record::has_scopes(const std::vector<std::string>& required) const {
    return std::all_of(required.begin(), required.end(), [this](const std::string& s) {
        return std::find(scopes.begin(), scopes.end(), s) != scopes.end();
    });
}

std::size_t key_store::digest_hash::operator()(std::string_view d) const noexcept {
    // The digest is already uniformly distributed: its first 8 bytes are a good hash.
    std::uint64_t h = 0;
    std::memcpy(&h, d.data(), std::min(d.size(), sizeof h));
    return static_cast<std::size_t>(h);
}

key_store::key_store(const std::vector<key_config>& keys, std::string_view identity_prefix,
                     const key_store* previous) {
    records_.reserve(keys.size());
    // Only keys with a rate limit have a bucket to carry over; index just those.
    std::unordered_map<std::string_view, const key_record*> old_buckets;
    if (previous)
        for (const auto& r : previous->records_)
            if (r.bucket) old_buckets.emplace(r.id, &r);
    for (const auto& k : keys) {
        key_record r;
        r.id = k.id;
        r.digest = k.digest;
        r.scopes = k.scopes;
        r.labels = k.labels;
        r.not_before = k.not_before;
        r.expires_at = k.expires_at;
        r.disabled = k.disabled;
        r.rate_limit = k.rate_limit;
        if (k.rate_limit) {
            auto it = old_buckets.find(k.id);
            const key_record* old = it == old_buckets.end() ? nullptr : it->second;
            if (old && old->bucket && old->bucket->rate() == k.rate_limit->requests_per_second &&
                old->bucket->burst() == k.rate_limit->burst)
                r.bucket = old->bucket;
            else
                r.bucket = std::make_shared<token_bucket>(k.rate_limit->requests_per_second,
                                                          k.rate_limit->burst);
        }
        r.allowed_paths = k.allowed_paths;
        r.identity_headers = render_identity(k, identity_prefix);
        records_.push_back(std::move(r));
    }
    build_index();
}

const key_record* key_store::find_id(std::string_view id) const {
    // Reloads are rare and off the request path; a linear scan keeps the store small.
    for (const auto& r : records_)
        if (r.id == id) return &r;
    return nullptr;
}

key_store::key_store(const key_store& other) : records_(other.records_) { build_index(); }

key_store& key_store::operator=(const key_store& other) {
    if (this != &other) {
        records_ = other.records_;
        build_index();
    }
    return *this;
}

void key_store::build_index() {
    // The index holds views into records_, which must not reallocate from here on.
    by_digest_.clear();
    by_digest_.reserve(records_.size());
    for (std::size_t i = 0; i < records_.size(); ++i)
        by_digest_.emplace(digest_view(records_[i].digest), i);
}

key_lookup key_store::find(std::string_view presented, sys_seconds now) const {
    digest_t digest;
    try {
        digest = crypto::sha256(presented);
    } catch (...) {
        // The request path never throws; a key that cannot be hashed is not a key.
        return {};
    }
    auto it = by_digest_.find(digest_view(digest));
    if (it == by_digest_.end()) return {};
    const key_record& r = records_[it->second];
    // The map compared digests with memcmp; confirm in constant time before trusting it.
    if (!crypto::equal(r.digest, digest)) return {};
    return {status_at(r, now), &r};
}

std::size_t key_store::active_count(sys_seconds now) const {
    return static_cast<std::size_t>(std::count_if(records_.begin(), records_.end(), [now](const key_record& r) {
        return status_at(r, now) == key_status::ok;
    }));
}

} // namespace keygate
