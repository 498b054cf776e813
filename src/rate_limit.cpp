#include "keygate/rate_limit.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <unordered_map>

namespace keygate {

namespace {

constexpr mono_ns ns_per_second = 1'000'000'000;
constexpr mono_ns no_block = std::numeric_limits<mono_ns>::min();

// A near-zero rate or a huge burst would overflow the schedule arithmetic; ~31 years is
// "never" for a proxy and leaves room to add `now` without wrapping.
constexpr mono_ns max_span = 1'000'000'000'000'000'000;

// The low word of a v4 key is laid out like ::ffff:a.b.c.d, so bits 32..47 are always set;
// a v6 key's low word is this marker alone, so the two families can never produce one key.
constexpr std::uint64_t v4_marker = 0x0000'ffff'0000'0000;
constexpr std::uint64_t v6_marker = 6;

// Retry-After and block lengths are whole seconds, rounded up so a client told to wait is
// never refused again for waiting exactly that long.
unsigned whole_seconds(mono_ns wait) {
    if (wait <= 0) return 1;
    mono_ns s = wait / ns_per_second + (wait % ns_per_second != 0 ? 1 : 0);
    return static_cast<unsigned>(std::clamp<mono_ns>(s, 1, std::numeric_limits<unsigned>::max()));
}

mono_ns to_ns(millis d) {
    constexpr mono_ns limit = std::numeric_limits<mono_ns>::max() / 1'000'000;
    if (d.count() <= 0) return 0;
    if (d.count() >= limit) return std::numeric_limits<mono_ns>::max();
    return static_cast<mono_ns>(d.count()) * 1'000'000;
}

mono_ns saturating_add(mono_ns a, mono_ns b) {
    if (b > 0 && a > std::numeric_limits<mono_ns>::max() - b) return std::numeric_limits<mono_ns>::max();
    return a + b;
}

struct ip_address {
    bool v6 = false;
    std::array<unsigned char, 16> bytes{}; // IPv4 in the first four
};

bool is_v4_mapped(const std::array<unsigned char, 16>& b) {
    for (std::size_t i = 0; i < 10; ++i)
        if (b[i] != 0) return false;
    return b[10] == 0xff && b[11] == 0xff;
}

void unmap_v4(ip_address& a) {
    std::array<unsigned char, 16> v4{};
    std::copy_n(a.bytes.begin() + 12, 4, v4.begin());
    a.bytes = v4;
    a.v6 = false;
}

// Parses an address literal exactly as inet_pton does (no octal, no short forms). A scope
// (`fe80::1%eth0`) is dropped when allowed: peers on a link-local address arrive with one,
// and it never changes the /64. `unmap` turns ::ffff:a.b.c.d into a.b.c.d.
bool parse_ip(std::string_view text, ip_address& out, bool allow_scope, bool unmap) {
    bool v6 = text.find(':') != std::string_view::npos;
    if (v6 && allow_scope) {
        std::size_t pct = text.find('%');
        if (pct != std::string_view::npos) {
            if (pct + 1 == text.size()) return false;
            text = text.substr(0, pct);
        }
    }
    char buf[64];
    if (text.empty() || text.size() >= sizeof buf) return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    ip_address a;
    a.v6 = v6;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, buf, a.bytes.data()) != 1) return false;
    if (unmap && a.v6 && is_v4_mapped(a.bytes)) unmap_v4(a);
    out = a;
    return true;
}

std::uint64_t load_be64(const unsigned char* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58'476d'1ce4'e5b9;
    x ^= x >> 27;
    x *= 0x94d0'49bb'1331'11eb;
    x ^= x >> 31;
    return x;
}

std::uint64_t hash_key(const client_key& k, std::uint64_t seed) {
    return mix(k.hi ^ mix(k.lo ^ seed));
}

bool prefix_matches(const std::array<unsigned char, 16>& net, unsigned bits,
                    const std::array<unsigned char, 16>& addr) {
    unsigned whole = bits / 8;
    if (!std::equal(net.begin(), net.begin() + whole, addr.begin())) return false;
    unsigned rest = bits % 8;
    if (rest == 0) return true;
    auto mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (net[whole] & mask) == (addr[whole] & mask);
}

} // namespace

// ---- token_bucket ----

token_bucket::token_bucket(double requests_per_second, double burst)
    : rate_(requests_per_second), burst_(burst),
      // Starting in the distant past makes the bucket full whatever clock value comes first.
      tat_(std::numeric_limits<mono_ns>::min()) {
    // Rounding the interval up keeps the admitted rate at or below the configured one.
    double interval = 1e9 / requests_per_second;
    if (!(requests_per_second > 0) || !(interval <= static_cast<double>(max_span)))
        interval_ = max_span;
    else
        interval_ = std::max<mono_ns>(1, static_cast<mono_ns>(std::ceil(interval)));
    double tolerance = (std::max(burst, 1.0) - 1.0) * static_cast<double>(interval_);
    if (!(tolerance <= static_cast<double>(max_span)))
        tolerance_ = max_span;
    else
        tolerance_ = static_cast<mono_ns>(std::floor(tolerance));
}

unsigned token_bucket::take(mono_ns now) {
    // The atomic guards no other data, so relaxed ordering is enough; the compare-exchange
    // alone decides which of two racing takes gets the last token.
    mono_ns tat = tat_.load(std::memory_order_relaxed);
    for (;;) {
        mono_ns base = std::max(tat, now); // an idle bucket does not bank more than `burst`
        mono_ns ahead = base - now;
        if (ahead > tolerance_) return whole_seconds(ahead - tolerance_);
        if (tat_.compare_exchange_weak(tat, base + interval_, std::memory_order_relaxed,
                                       std::memory_order_relaxed))
            return 0;
    }
}

// ---- client keys and CIDRs ----

bool make_client_key(std::string_view address, client_key& out) {
    ip_address a;
    if (!parse_ip(address, a, true, true)) return false;
    if (a.v6) {
        out = {load_be64(a.bytes.data()), v6_marker};
    } else {
        std::uint64_t v4 = (std::uint64_t{a.bytes[0]} << 24) | (std::uint64_t{a.bytes[1]} << 16) |
                           (std::uint64_t{a.bytes[2]} << 8) | a.bytes[3];
        out = {0, v4_marker | v4};
    }
    return true;
}

bool cidr_set::assign(const std::vector<std::string>& cidrs) {
    std::vector<prefix> parsed;
    parsed.reserve(cidrs.size());
    for (const auto& text : cidrs) {
        std::string_view s = text;
        std::size_t slash = s.find('/');
        ip_address a;
        if (!parse_ip(s.substr(0, slash), a, false, false)) return false;
        unsigned max_bits = a.v6 ? 128 : 32;
        unsigned bits = max_bits;
        if (slash != std::string_view::npos) {
            std::string_view b = s.substr(slash + 1);
            if (b.empty() || b.size() > 3 ||
                !std::all_of(b.begin(), b.end(), [](char c) { return c >= '0' && c <= '9'; }))
                return false;
            std::from_chars(b.data(), b.data() + b.size(), bits);
            if (bits > max_bits) return false;
        }
        // A prefix inside ::ffff:0:0/96 is an IPv4 prefix in disguise; a shorter v6 prefix
        // (even ::/0) covers IPv6 clients only, so it never exempts every v4 client by accident.
        if (a.v6 && bits >= 96 && is_v4_mapped(a.bytes)) {
            unmap_v4(a);
            bits -= 96;
        }
        parsed.push_back({a.v6, a.bytes, bits});
    }
    prefixes_ = std::move(parsed);
    return true;
}

bool cidr_set::contains(std::string_view address) const {
    ip_address a;
    if (!parse_ip(address, a, true, true)) return false;
    return std::any_of(prefixes_.begin(), prefixes_.end(), [&](const prefix& p) {
        return p.v6 == a.v6 && prefix_matches(p.bytes, p.bits, a.bytes);
    });
}

// ---- failed_attempts ----

struct failed_attempts::entry {
    client_key key;
    unsigned count = 0;        // failures in the current window; 0 = no window open
    mono_ns window_start = 0;
    mono_ns block_until = no_block;
    entry* prev = nullptr;     // recency list: head.next is the newest
    entry* next = nullptr;
};

struct failed_attempts::shard {
    struct hasher {
        std::uint64_t seed;
        std::size_t operator()(const client_key& k) const noexcept {
            return static_cast<std::size_t>(hash_key(k, seed));
        }
    };

    explicit shard(std::uint64_t seed, std::size_t capacity) : entries(capacity, hasher{seed}) {
        head.prev = head.next = &head;
    }
    shard(const shard&) = delete;
    shard& operator=(const shard&) = delete;

    void unlink(entry& e) {
        e.prev->next = e.next;
        e.next->prev = e.prev;
    }
    void push_front(entry& e) {
        e.prev = &head;
        e.next = head.next;
        head.next->prev = &e;
        head.next = &e;
    }
    void touch(entry& e) {
        unlink(e);
        push_front(e);
    }
    void erase(entry& e) {
        client_key k = e.key; // e (and its key) dies inside erase
        unlink(e);
        entries.erase(k);
        population.store(entries.size(), std::memory_order_release);
    }

    std::mutex mutex;
    // Read without the lock: a shard nobody failed in is the common case on the request path.
    std::atomic<std::size_t> population{0};
    // Element addresses in an unordered_map survive rehashing, so the list can link them.
    std::unordered_map<client_key, entry, hasher> entries;
    entry head; // sentinel
};

failed_attempts::failed_attempts(const failed_attempts_config& cfg, std::size_t max_entries)
    : max_(cfg.max), window_(to_ns(cfg.window)), block_(to_ns(cfg.block)), per_shard_(0),
      seed_(0) {
    if (max_ == 0) return; // off: no table at all
    // Fewer shards than 16 when the bound is tiny, so the total never passes `max_entries`.
    std::size_t count = std::clamp<std::size_t>(max_entries, 1, 16);
    per_shard_ = std::max<std::size_t>(1, max_entries / count);
    std::random_device rd;
    seed_ = (std::uint64_t{rd()} << 32) ^ rd();
    shards_.reserve(count);
    for (std::size_t i = 0; i < count; ++i) shards_.push_back(std::make_unique<shard>(seed_, per_shard_));
}

failed_attempts::~failed_attempts() = default;

failed_attempts::shard& failed_attempts::shard_for(const client_key& k) {
    // The high half picks the shard, leaving the whole hash to spread keys over its buckets.
    return *shards_[(hash_key(k, seed_) >> 32) % shards_.size()];
}

unsigned failed_attempts::blocked(const client_key& client, mono_ns now) {
    if (disabled()) return 0;
    shard& s = shard_for(client);
    if (s.population.load(std::memory_order_acquire) == 0) return 0;
    std::lock_guard lock(s.mutex);
    auto it = s.entries.find(client);
    if (it == s.entries.end()) return 0;
    entry& e = it->second;
    if (now < e.block_until) {
        // A client that keeps knocking keeps its block from being evicted first.
        s.touch(e);
        return whole_seconds(e.block_until - now);
    }
    if (e.count == 0 || now - e.window_start >= window_) s.erase(e); // nothing left to remember
    return 0;
}

unsigned failed_attempts::record_failure(const client_key& client, mono_ns now) {
    if (disabled()) return 0;
    shard& s = shard_for(client);
    std::lock_guard lock(s.mutex);
    auto it = s.entries.find(client);
    entry* e = nullptr;
    if (it != s.entries.end()) {
        e = &it->second;
        if (now < e->block_until) return 0; // a block is neither counted into nor extended
        s.touch(*e);
    } else {
        if (s.entries.size() >= per_shard_) s.erase(*s.head.prev);
        e = &s.entries.try_emplace(client).first->second;
        s.population.store(s.entries.size(), std::memory_order_release);
        e->key = client;
        s.push_front(*e);
    }
    if (e->count != 0 && now - e->window_start >= window_) e->count = 0;
    if (e->count == 0) e->window_start = now;
    if (++e->count <= max_) return 0;
    // The count restarts when the block ends; nothing counts during it, so restart it now.
    e->count = 0;
    e->block_until = saturating_add(now, block_);
    return whole_seconds(block_);
}

std::size_t failed_attempts::size() const {
    std::size_t n = 0;
    for (const auto& s : shards_) {
        std::lock_guard lock(s->mutex);
        n += s->entries.size();
    }
    return n;
}

} // namespace keygate
