#include "keygate/rate_limit.hpp"

#include <catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <latch>
#include <string>
#include <thread>
#include <vector>

using namespace keygate;

namespace {

constexpr mono_ns ms(std::int64_t n) { return n * 1'000'000; }
constexpr mono_ns sec(std::int64_t n) { return n * 1'000'000'000; }

// An arbitrary clock reading, far from zero, so nothing depends on the clock's epoch.
constexpr mono_ns t0 = sec(86'400);

client_key key(std::string_view address) {
    client_key k;
    REQUIRE(make_client_key(address, k));
    return k;
}

client_key v4_client(std::uint32_t n) {
    std::string a = std::to_string(10 + (n >> 24)) + "." + std::to_string((n >> 16) & 0xff) + "." +
                    std::to_string((n >> 8) & 0xff) + "." + std::to_string(n & 0xff);
    return key(a);
}

failed_attempts_config throttle(unsigned max, std::int64_t window_ms, std::int64_t block_ms) {
    failed_attempts_config c;
    c.max = max;
    c.window = millis{window_ms};
    c.block = millis{block_ms};
    return c;
}

// Takes `n` tokens at `now`, returning how many were allowed.
int take_n(token_bucket& b, mono_ns now, int n) {
    int allowed = 0;
    for (int i = 0; i < n; ++i)
        if (b.take(now) == 0) ++allowed;
    return allowed;
}

} // namespace

// ---- token_bucket ----

TEST_CASE("a full bucket lets burst through at once, then refuses") {
    token_bucket b(10, 5);
    for (int i = 0; i < 5; ++i) CHECK(b.take(t0) == 0);
    CHECK(b.take(t0) == 1);
    CHECK(b.take(t0) == 1);
    CHECK(b.rate() == 10);
    CHECK(b.burst() == 5);
}

TEST_CASE("a bucket starts full whatever the first clock reading") {
    for (mono_ns start : {mono_ns{0}, mono_ns{-sec(1000)}, sec(1'000'000'000)}) {
        token_bucket b(1, 3);
        CHECK(take_n(b, start, 10) == 3);
    }
}

TEST_CASE("tokens come back at the rate and never beyond burst") {
    token_bucket b(10, 5); // one token per 100 ms
    REQUIRE(take_n(b, t0, 5) == 5);
    CHECK(take_n(b, t0 + ms(99), 3) == 0);
    CHECK(take_n(b, t0 + ms(100), 3) == 1);
    CHECK(take_n(b, t0 + ms(300), 5) == 2);
    // Refused takes consume nothing: the next token is still due at 400 ms.
    CHECK(take_n(b, t0 + ms(399), 50) == 0);
    CHECK(take_n(b, t0 + ms(400), 5) == 1);
    // A long idle time refills to burst and no further.
    CHECK(take_n(b, t0 + sec(1000), 20) == 5);
}

TEST_CASE("a bucket admits burst + rate * elapsed over a steady stream") {
    token_bucket b(4, 2); // one token per 250 ms
    int allowed = 0;
    for (mono_ns now = t0; now <= t0 + sec(10); now += ms(10))
        if (b.take(now) == 0) ++allowed;
    CHECK(allowed == 2 + 4 * 10);
}

TEST_CASE("Retry-After is the wait rounded up to whole seconds, at least 1") {
    SECTION("0.5 per second") {
        token_bucket b(0.5, 1);
        REQUIRE(b.take(t0) == 0);
        CHECK(b.take(t0) == 2);
        CHECK(b.take(t0 + 1) == 2); // 2 s less 1 ns
        CHECK(b.take(t0 + sec(1)) == 1);
        CHECK(b.take(t0 + ms(1500)) == 1);
        CHECK(b.take(t0 + sec(2) - 1) == 1);
        CHECK(b.take(t0 + sec(2)) == 0);
    }
    SECTION("0.25 per second with burst 3") {
        token_bucket b(0.25, 3);
        REQUIRE(take_n(b, t0, 3) == 3);
        CHECK(b.take(t0) == 4);
        CHECK(b.take(t0 + ms(1500)) == 3); // 2.5 s
        CHECK(b.take(t0 + ms(3001)) == 1); // 0.999 s
        CHECK(b.take(t0 + sec(4)) == 0);
        CHECK(b.take(t0 + sec(4)) == 4);
    }
    SECTION("0.1 per second") {
        token_bucket b(0.1, 1);
        REQUIRE(b.take(t0) == 0);
        CHECK(b.take(t0) == 10);
    }
    SECTION("waits under a second still say 1") {
        token_bucket b(3, 1);
        REQUIRE(b.take(t0) == 0);
        CHECK(b.take(t0) == 1);
        token_bucket fast(1000, 10);
        REQUIRE(take_n(fast, t0, 10) == 10);
        CHECK(fast.take(t0) == 1);
    }
}

TEST_CASE("concurrent takes never let more than burst + rate * elapsed through") {
    // 1000/s, burst 50, clock steps of 1 ms from 0 to 2 s: 50 + 2000 tokens in all. Every
    // thread tries more times per step than a full bucket holds, so no token is ever left
    // unused and exactly that many must pass; a lost update in the compare-exchange would let
    // more through, a refusal that consumed would let fewer.
    token_bucket b(1000, 50);
    constexpr int threads = 4;
    constexpr int steps = 2000;
    constexpr int tries_per_step = 64;
    std::atomic<int> allowed{0};
    std::latch start(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            start.arrive_and_wait();
            int mine = 0;
            for (int s = 0; s <= steps; ++s)
                for (int i = 0; i < tries_per_step; ++i)
                    if (b.take(t0 + ms(s)) == 0) ++mine;
            allowed += mine;
        });
    }
    for (auto& th : pool) th.join();
    CHECK(allowed.load() == 50 + steps);
}

TEST_CASE("concurrent takes from a large burst pass exactly burst") {
    // Most takes here succeed, so racing updates are frequent: each must use up its token.
    constexpr int threads = 4;
    constexpr int burst = 100'000;
    for (int round = 0; round < 5; ++round) {
        token_bucket b(1, burst);
        std::atomic<int> allowed{0};
        std::latch start(threads);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&] {
                start.arrive_and_wait();
                allowed += take_n(b, t0, burst / 2);
            });
        }
        for (auto& th : pool) th.join();
        CHECK(allowed.load() == burst);
    }
}

// ---- client keys ----

TEST_CASE("client keys: IPv4 whole, IPv6 by /64, v4-mapped as v4") {
    CHECK(key("192.0.2.1") == key("192.0.2.1"));
    CHECK(key("::ffff:192.0.2.1") == key("192.0.2.1"));
    CHECK(key("::FFFF:c000:201") == key("192.0.2.1"));
    CHECK(key("192.0.2.1").hi == 0);

    // Every bit of an IPv4 address counts.
    for (const char* other : {"192.0.2.2", "192.0.3.1", "192.1.2.1", "193.0.2.1", "64.0.2.1"})
        CHECK_FALSE(key("192.0.2.1") == key(other));

    // Every bit of the /64 counts; nothing after it does.
    CHECK(key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    CHECK(key("2001:db8:1:2::1") == key("2001:db8:1:2:8000::"));
    CHECK_FALSE(key("2001:db8:1:2::1") == key("2001:db8:1:3::1"));
    CHECK_FALSE(key("2001:db8::") == key("2001:db8:0:1::"));
    CHECK_FALSE(key("2001:db8::") == key("3001:db8::"));
    CHECK(key("2001:db8:1:2::1").hi == 0x2001'0db8'0001'0002);

    // A link-local peer arrives with a scope, which does not change its /64.
    CHECK(key("fe80::1%eth0") == key("fe80::2"));
}

TEST_CASE("client keys: IPv4 and IPv6 never collide") {
    CHECK_FALSE(key("0.0.0.0") == key("::"));
    CHECK_FALSE(key("0.0.0.1") == key("::1"));
    CHECK_FALSE(key("192.0.2.1") == key("::192.0.2.1")); // v4-compatible is not v4-mapped
    CHECK_FALSE(key("255.255.255.255") == key("::"));
    CHECK_FALSE(key("0.0.0.0") == key("::ffff:0:0:0"));

    // Every IPv6 address in ::/64 has one key; no IPv4 address at either end of the range,
    // where a key without a family marker would land, may share it.
    const client_key low_v6 = key("::1");
    for (std::uint32_t n = 0; n < 4096; ++n) {
        for (std::uint32_t v4 : {n, 0xffff'ffffu - n, 0xffff'0000u + n, 0x0000'ffffu + n}) {
            client_key k;
            std::string a = std::to_string(v4 >> 24) + "." + std::to_string((v4 >> 16) & 0xff) +
                            "." + std::to_string((v4 >> 8) & 0xff) + "." + std::to_string(v4 & 0xff);
            REQUIRE(make_client_key(a, k));
            if (k == low_v6) FAIL("IPv4 " << a << " has the key of ::/64");
        }
    }
}

TEST_CASE("client keys: text that is not one address is refused") {
    for (const char* bad : {"", "192.0.2", "192.0.2.256", "192.0.2.1/32", "2001:db8::/64",
                            "2001:db8::g", "[::1]", " 192.0.2.1", "192.0.2.1 ", "fe80::1%",
                            "192.0.2.1%eth0", "localhost", "1.2.3.4.5", "::1::2",
                            "0x7f.0.0.1"}) {
        client_key k;
        INFO(bad);
        CHECK_FALSE(make_client_key(bad, k));
    }
}

// ---- cidr_set ----

TEST_CASE("cidr_set matches addresses against prefixes") {
    cidr_set set;
    REQUIRE(set.assign({"10.0.0.0/8", "192.0.2.7", "172.16.0.0/12", "2001:db8::/32", "fd00::1",
                        "::ffff:198.51.100.0/120", "2001:db8:ffff::1/127"}));
    struct row {
        const char* address;
        bool inside;
    };
    const row rows[] = {
        {"10.0.0.0", true},
        {"10.255.255.255", true},
        {"11.0.0.0", false},
        {"9.255.255.255", false},
        {"192.0.2.7", true}, // a bare address is a /32
        {"192.0.2.6", false},
        {"192.0.2.8", false},
        {"172.16.0.1", true},
        {"172.31.255.255", true}, // /12 ends inside the second byte
        {"172.32.0.0", false},
        {"172.15.255.255", false},
        {"2001:db8::1", true},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
        {"2001:db9::", false},
        {"2001:db7:ffff::", false},
        {"fd00::1", true}, // a bare address is a /128
        {"fd00::2", false},
        {"::ffff:10.1.2.3", true}, // v4-mapped matches the v4 prefix
        {"::ffff:11.1.2.3", false},
        {"198.51.100.20", true}, // a v4-mapped prefix is a v4 prefix
        {"::ffff:198.51.100.20", true},
        {"198.51.101.1", false},
        {"::10.1.2.3", false}, // v4-compatible is an IPv6 address
        {"not an address", false},
        {"", false},
    };
    for (const auto& r : rows) {
        INFO(r.address);
        CHECK(set.contains(r.address) == r.inside);
    }
}

TEST_CASE("cidr_set: zero-length prefixes stay within their family") {
    cidr_set v4;
    REQUIRE(v4.assign({"0.0.0.0/0"}));
    CHECK(v4.contains("203.0.113.9"));
    CHECK(v4.contains("::ffff:203.0.113.9"));
    CHECK_FALSE(v4.contains("2001:db8::1"));

    cidr_set v6;
    REQUIRE(v6.assign({"::/0"}));
    CHECK(v6.contains("2001:db8::1"));
    CHECK(v6.contains("::1"));
    CHECK_FALSE(v6.contains("192.0.2.1"));
    CHECK_FALSE(v6.contains("::ffff:192.0.2.1"));

    cidr_set link_local;
    REQUIRE(link_local.assign({"fe80::/10"}));
    CHECK(link_local.contains("fe80::1%eth0"));
    CHECK(link_local.contains("febf::1"));
    CHECK_FALSE(link_local.contains("fec0::1"));

    cidr_set none;
    REQUIRE(none.assign({}));
    CHECK_FALSE(none.contains("192.0.2.1"));
    CHECK_FALSE(none.contains("::1"));
}

TEST_CASE("cidr_set refuses malformed entries and keeps what it had") {
    cidr_set set;
    REQUIRE(set.assign({"10.0.0.0/8"}));
    for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.0/", "/8", "10.0.0.0/8/8",
                            "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0/8", "example.com",
                            "", "10.0.0.0/1000", "fe80::%eth0/10", "10.0.0.0 /8"}) {
        INFO(bad);
        CHECK_FALSE(set.assign({"192.0.2.0/24", bad}));
        CHECK(set.contains("10.1.1.1"));
        CHECK_FALSE(set.contains("192.0.2.1"));
    }
}

// ---- failed_attempts ----

TEST_CASE("failed attempts: max pass, the max+1-th blocks for `block`") {
    failed_attempts fa(throttle(3, 60'000, 300'000));
    const client_key c = key("192.0.2.1");
    CHECK_FALSE(fa.disabled());
    CHECK(fa.record_failure(c, t0) == 0);
    CHECK(fa.record_failure(c, t0 + sec(10)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(20)) == 0);
    CHECK(fa.blocked(c, t0 + sec(20)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(30)) == 300);

    const mono_ns start = t0 + sec(30);
    CHECK(fa.blocked(c, start) == 300);
    CHECK(fa.blocked(c, start + ms(500)) == 300); // 299.5 s rounds up
    CHECK(fa.blocked(c, start + sec(1)) == 299);
    CHECK(fa.blocked(c, start + sec(299) + 1) == 1);
    CHECK(fa.blocked(c, start + sec(300) - 1) == 1);
    CHECK(fa.blocked(c, start + sec(300)) == 0);

    // Other clients are untouched.
    CHECK(fa.blocked(key("192.0.2.2"), start) == 0);
    CHECK(fa.record_failure(key("192.0.2.2"), start) == 0);
}

TEST_CASE("failed attempts: max 1 blocks on the second failure") {
    failed_attempts fa(throttle(1, 60'000, 5'000));
    const client_key c = key("203.0.113.5");
    CHECK(fa.record_failure(c, t0) == 0);
    CHECK(fa.record_failure(c, t0 + 1) == 5);
    CHECK(fa.blocked(c, t0 + 1) == 5);
}

TEST_CASE("failed attempts: the window is fixed from the first failure") {
    SECTION("the last nanosecond of the window still counts") {
        failed_attempts fa(throttle(3, 60'000, 300'000));
        const client_key c = key("192.0.2.1");
        for (int i = 0; i < 3; ++i) REQUIRE(fa.record_failure(c, t0) == 0);
        CHECK(fa.record_failure(c, t0 + sec(60) - 1) == 300);
    }
    SECTION("at the window's end the count restarts") {
        failed_attempts fa(throttle(3, 60'000, 300'000));
        const client_key c = key("192.0.2.1");
        for (int i = 0; i < 3; ++i) REQUIRE(fa.record_failure(c, t0) == 0);
        CHECK(fa.record_failure(c, t0 + sec(60)) == 0); // 1st of a new window
        CHECK(fa.record_failure(c, t0 + sec(61)) == 0);
        CHECK(fa.record_failure(c, t0 + sec(62)) == 0);
        CHECK(fa.blocked(c, t0 + sec(62)) == 0);
        CHECK(fa.record_failure(c, t0 + sec(63)) == 300);
    }
    SECTION("the window does not slide") {
        // A sliding window would hold t0+50, t0+55, t0+65 and t0+66 and block at t0+66.
        failed_attempts fa(throttle(3, 60'000, 300'000));
        const client_key c = key("192.0.2.1");
        CHECK(fa.record_failure(c, t0) == 0);
        CHECK(fa.record_failure(c, t0 + sec(50)) == 0);
        CHECK(fa.record_failure(c, t0 + sec(55)) == 0);
        CHECK(fa.record_failure(c, t0 + sec(65)) == 0); // new window from here
        CHECK(fa.record_failure(c, t0 + sec(66)) == 0);
        CHECK(fa.record_failure(c, t0 + sec(67)) == 0);
        CHECK(fa.record_failure(c, t0 + sec(68)) == 300);
    }
}

TEST_CASE("failed attempts: a block is neither counted into nor extended") {
    failed_attempts fa(throttle(3, 60'000, 300'000));
    const client_key c = key("2001:db8::7");
    for (int i = 0; i < 3; ++i) REQUIRE(fa.record_failure(c, t0) == 0);
    REQUIRE(fa.record_failure(c, t0) == 300);

    CHECK(fa.record_failure(c, t0 + sec(70)) == 0);
    CHECK(fa.blocked(c, t0 + sec(70)) == 230);
    // A burst of failures right before the block ends, all inside one window of its end.
    for (int i = 0; i < 50; ++i) CHECK(fa.record_failure(c, t0 + sec(290) + sec(i) / 5) == 0);
    CHECK(fa.blocked(c, t0 + sec(299)) == 1);
    CHECK(fa.blocked(c, t0 + sec(300)) == 0);

    // The count restarts from zero when the block ends.
    CHECK(fa.record_failure(c, t0 + sec(300)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(301)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(302)) == 0);
    CHECK(fa.blocked(c, t0 + sec(302)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(303)) == 300);
    CHECK(fa.blocked(c, t0 + sec(303)) == 300);
}

TEST_CASE("failed attempts: a block shorter than the window still restarts the count") {
    failed_attempts fa(throttle(3, 600'000, 30'000));
    const client_key c = key("198.51.100.4");
    for (int i = 0; i < 3; ++i) REQUIRE(fa.record_failure(c, t0 + sec(i)) == 0);
    REQUIRE(fa.record_failure(c, t0 + sec(3)) == 30);
    for (int i = 0; i < 20; ++i) CHECK(fa.record_failure(c, t0 + sec(10 + i)) == 0);
    CHECK(fa.blocked(c, t0 + sec(32)) == 1);

    // Still inside the first window, yet the failures before and during the block are gone.
    CHECK(fa.record_failure(c, t0 + sec(33)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(34)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(35)) == 0);
    CHECK(fa.record_failure(c, t0 + sec(36)) == 30);
}

TEST_CASE("failed attempts: block lengths are whole seconds rounded up") {
    failed_attempts fa(throttle(1, 60'000, 1'500));
    const client_key c = key("192.0.2.1");
    REQUIRE(fa.record_failure(c, t0) == 0);
    CHECK(fa.record_failure(c, t0) == 2);
    CHECK(fa.blocked(c, t0) == 2);
    CHECK(fa.blocked(c, t0 + ms(499)) == 2);
    CHECK(fa.blocked(c, t0 + ms(500)) == 1);
    CHECK(fa.blocked(c, t0 + ms(1500) - 1) == 1);
    CHECK(fa.blocked(c, t0 + ms(1500)) == 0);

    failed_attempts short_block(throttle(1, 60'000, 1));
    REQUIRE(short_block.record_failure(c, t0) == 0);
    CHECK(short_block.record_failure(c, t0) == 1);
    CHECK(short_block.blocked(c, t0) == 1);
    CHECK(short_block.blocked(c, t0 + ms(1)) == 0);
}

TEST_CASE("failed attempts: max 0 turns the throttle off") {
    failed_attempts fa(throttle(0, 60'000, 300'000));
    const client_key c = key("192.0.2.1");
    CHECK(fa.disabled());
    for (int i = 0; i < 1000; ++i) CHECK(fa.record_failure(c, t0) == 0);
    CHECK(fa.blocked(c, t0) == 0);
    CHECK(fa.record_failure(key("2001:db8::1"), t0) == 0);
    CHECK(fa.size() == 0);
}

TEST_CASE("failed attempts: an IPv6 /64 is one client") {
    failed_attempts fa(throttle(2, 60'000, 300'000));
    CHECK(fa.record_failure(key("2001:db8:1:2::1"), t0) == 0);
    CHECK(fa.record_failure(key("2001:db8:1:2::ffff"), t0) == 0);
    CHECK(fa.record_failure(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), t0) == 300);
    CHECK(fa.blocked(key("2001:db8:1:2::99"), t0) == 300);
    CHECK(fa.blocked(key("2001:db8:1:3::1"), t0) == 0);
    CHECK(fa.size() == 1);
}

TEST_CASE("failed attempts: a v4-mapped peer is its IPv4 address") {
    failed_attempts fa(throttle(2, 60'000, 300'000));
    CHECK(fa.record_failure(key("::ffff:192.0.2.1"), t0) == 0);
    CHECK(fa.record_failure(key("192.0.2.1"), t0) == 0);
    CHECK(fa.record_failure(key("::ffff:192.0.2.1"), t0) == 300);
    CHECK(fa.blocked(key("192.0.2.1"), t0) == 300);
    CHECK(fa.blocked(key("::192.0.2.1"), t0) == 0);
}

TEST_CASE("failed attempts: an entry with nothing left to remember is dropped") {
    failed_attempts fa(throttle(3, 60'000, 300'000));
    const client_key c = key("192.0.2.1");
    REQUIRE(fa.record_failure(c, t0) == 0);
    CHECK(fa.size() == 1);
    CHECK(fa.blocked(c, t0 + sec(59)) == 0);
    CHECK(fa.size() == 1);
    CHECK(fa.blocked(c, t0 + sec(60)) == 0);
    CHECK(fa.size() == 0);
}

TEST_CASE("failed attempts: the table is bounded and keeps the newest") {
    // max 1: a client still in the table is blocked by its next failure, an evicted one is not.
    constexpr std::uint32_t bound = 100'000;
    constexpr std::uint32_t clients = 200'000;
    failed_attempts fa(throttle(1, 3'600'000, 300'000), bound);
    std::size_t largest = 0;
    for (std::uint32_t i = 0; i < clients; ++i) {
        REQUIRE(fa.record_failure(v4_client(i), t0) == 0);
        largest = std::max(largest, fa.size());
    }
    CHECK(largest <= bound);
    CHECK(fa.size() == bound); // every shard filled up, none went past its share

    int newest_present = 0;
    for (std::uint32_t i = clients - 1000; i < clients; ++i)
        if (fa.record_failure(v4_client(i), t0) == 300) ++newest_present;
    CHECK(newest_present == 1000);

    int oldest_present = 0;
    for (std::uint32_t i = 0; i < 1000; ++i)
        if (fa.record_failure(v4_client(i), t0) != 0) ++oldest_present;
    CHECK(oldest_present == 0);
    CHECK(fa.size() <= bound);
}

TEST_CASE("failed attempts: eviction takes the least recently touched, not the oldest") {
    // Per shard (1/16 of each group): ~3,125 old entries, ~62 of them touched again, then
    // ~4,000 new ones into room for 6,250, so ~875 of the least recently touched must go.
    failed_attempts fa(throttle(2, 3'600'000, 300'000), 100'000);
    constexpr std::uint32_t old_count = 50'000;
    constexpr std::uint32_t touched = 1'000;
    constexpr std::uint32_t new_count = 64'000;
    for (std::uint32_t i = 0; i < old_count; ++i) REQUIRE(fa.record_failure(v4_client(i), t0) == 0);
    for (std::uint32_t i = 0; i < touched; ++i) REQUIRE(fa.record_failure(v4_client(i), t0) == 0);
    for (std::uint32_t i = old_count; i < old_count + new_count; ++i)
        REQUIRE(fa.record_failure(v4_client(i), t0) == 0);
    CHECK(fa.size() == 100'000);

    // Touched entries hold two failures: a third blocks.
    int touched_present = 0;
    for (std::uint32_t i = 0; i < touched; ++i)
        if (fa.record_failure(v4_client(i), t0) == 300) ++touched_present;
    CHECK(touched_present == touched);

    // The untouched right after them were the least recent: gone, so two failures pass.
    int untouched_present = 0;
    for (std::uint32_t i = touched; i < touched + 500; ++i) {
        fa.record_failure(v4_client(i), t0);
        if (fa.record_failure(v4_client(i), t0) != 0) ++untouched_present;
    }
    CHECK(untouched_present == 0);
}

TEST_CASE("failed attempts: concurrent failures start exactly one block") {
    failed_attempts fa(throttle(100, 60'000, 300'000));
    const client_key c = key("192.0.2.1");
    constexpr int threads = 4;
    std::atomic<int> blocks{0};
    std::latch start(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            start.arrive_and_wait();
            for (int i = 0; i < 1000; ++i)
                if (fa.record_failure(c, t0) != 0) ++blocks;
        });
    }
    for (auto& th : pool) th.join();
    CHECK(blocks.load() == 1);
    CHECK(fa.blocked(c, t0) == 300);
}
