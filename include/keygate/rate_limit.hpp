// Per-key token buckets and the per-client failed-attempt table (DESIGN.md §1.6, §1.7).
// Shared by all workers: buckets are lock-free, the table is sharded with a small lock each.
#pragma once

#include "keygate/config.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace keygate {

using mono_ns = std::int64_t; // nanoseconds on a monotonic clock

/// A token bucket (`requests_per_second`, `burst`) as one atomic: safe from every thread.
class token_bucket {
public:
    token_bucket(double requests_per_second, double burst);

    /// Takes one token at `now`. Returns 0 when allowed, else the whole seconds (at least 1)
    /// after which a token will be there.
    unsigned take(mono_ns now);

    double rate() const { return rate_; }
    double burst() const { return burst_; }

private:
    double rate_;
    double burst_;
    mono_ns interval_; // ns per token
    mono_ns tolerance_; // how far ahead of `now` the schedule may run
    std::atomic<mono_ns> tat_; // theoretical arrival time of the next token
};

/// A client address as the throttle counts it: IPv4 whole, IPv6 by its /64.
struct client_key {
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
    bool operator==(const client_key&) const = default;
};

/// The key for an address given as text ("192.0.2.1", "2001:db8::1", v4-mapped v6 as v4);
/// false when it does not parse.
bool make_client_key(std::string_view address, client_key& out);

/// A CIDR list (`exempt`): IPv4 and IPv6 prefixes.
class cidr_set {
public:
    /// Parses every entry; false (naming nothing) when one is not a CIDR or address.
    bool assign(const std::vector<std::string>& cidrs);
    /// True when `address` lies inside one of the prefixes.
    bool contains(std::string_view address) const;

private:
    struct prefix {
        bool v6 = false;
        std::array<unsigned char, 16> bytes{};
        unsigned bits = 0;
    };
    std::vector<prefix> prefixes_;
};

/// Failed-attempt throttle: counts invalid-key denials per client within `window`; the
/// `max + 1`-th starts a block of `block`; bounded in entries, the oldest evicted.
class failed_attempts {
public:
    explicit failed_attempts(const failed_attempts_config& cfg, std::size_t max_entries = 100'000);
    /// Frees every entry (defined where `shard` is complete).
    ~failed_attempts();

    /// Whole seconds (at least 1) left of a block on `client` at `now`, or 0 when not blocked.
    unsigned blocked(const client_key& client, mono_ns now);

    /// Records one invalid-key denial; returns the block's seconds (at least 1) when this
    /// failure starts a block, else 0.
    unsigned record_failure(const client_key& client, mono_ns now);

    /// Entries currently held (for tests and metrics).
    std::size_t size() const;

    /// True when `max` is 0 (the throttle is off).
    bool disabled() const { return max_ == 0; }

private:
    struct entry;
    struct shard;
    shard& shard_for(const client_key& k);

    unsigned max_;
    mono_ns window_;
    mono_ns block_;
    std::size_t per_shard_;
    std::uint64_t seed_; // per process, so clients cannot aim their addresses at one hash chain
    std::vector<std::unique_ptr<shard>> shards_;
};

} // namespace keygate
