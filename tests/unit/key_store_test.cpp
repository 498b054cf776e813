#include "keygate/crypto.hpp"
#include "keygate/key_store.hpp"

#include <catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace keygate;

namespace {

sys_seconds at(long long s) { return sys_seconds{std::chrono::seconds{s}}; }

const sys_seconds now = at(1'800'000'000);

key_config make_key(std::string id, std::string_view secret) {
    key_config k;
    k.id = std::move(id);
    k.digest = crypto::sha256(secret);
    k.origin = "test";
    return k;
}

bool points_into(const key_record* p, const std::vector<key_record>& v) {
    return !v.empty() && p >= v.data() && p < v.data() + v.size();
}

} // namespace

TEST_CASE("find: a known key is found with its fields", "[key_store]") {
    auto a = make_key("billing", "secret-a-0123456789012345678901234567");
    a.scopes = {"orders:read", "orders:write"};
    a.labels = {{"tenant", "acme"}};
    a.rate_limit = rate_limit_config{200, 400};
    a.allowed_paths = {"/tenants/acme/*"};
    auto b = make_key("reports", "secret-b-0123456789012345678901234567");
    key_store store({a, b}, "X-Keygate-");

    REQUIRE(store.size() == 2);
    auto found = store.find("secret-b-0123456789012345678901234567", now);
    CHECK(found.status == key_status::ok);
    REQUIRE(found.key != nullptr);
    CHECK(found.key->id == "reports");

    found = store.find("secret-a-0123456789012345678901234567", now);
    CHECK(found.status == key_status::ok);
    REQUIRE(found.key != nullptr);
    CHECK(found.key->id == "billing");
    CHECK(found.key->digest == a.digest);
    CHECK(found.key->scopes == a.scopes);
    CHECK(found.key->labels == a.labels);
    REQUIRE(found.key->rate_limit.has_value());
    CHECK(found.key->rate_limit->requests_per_second == 200);
    CHECK(found.key->rate_limit->burst == 400);
    CHECK(found.key->allowed_paths == a.allowed_paths);
    CHECK_FALSE(found.key->disabled);
}

TEST_CASE("find: unknown keys, compared byte for byte", "[key_store]") {
    key_store store({make_key("a", "correct-horse")}, "X-Keygate-");
    for (std::string_view bad : {"", "Correct-horse", "correct-horse ", " correct-horse",
                                 "correct-hors", "correct-horsee"}) {
        INFO("presented: [" << bad << "]");
        auto found = store.find(bad, now);
        CHECK(found.status == key_status::unknown);
        CHECK(found.key == nullptr);
    }
    CHECK(store.find("correct-horse", now).status == key_status::ok);
}

TEST_CASE("find: an empty store knows no key", "[key_store]") {
    key_store store({}, "X-Keygate-");
    CHECK(store.size() == 0);
    CHECK(store.active_count(now) == 0);
    CHECK(store.find("anything", now).status == key_status::unknown);
}

TEST_CASE("find: disabled keys", "[key_store]") {
    auto k = make_key("old", "old-secret");
    k.disabled = true;
    key_store store({k}, "X-Keygate-");
    auto found = store.find("old-secret", now);
    CHECK(found.status == key_status::disabled);
    REQUIRE(found.key != nullptr);
    CHECK(found.key->id == "old");
}

TEST_CASE("find: not_before boundary", "[key_store]") {
    auto k = make_key("future", "future-secret");
    k.not_before = at(1'000);
    key_store store({k}, "X-Keygate-");
    auto found = store.find("future-secret", at(999));
    CHECK(found.status == key_status::not_yet_valid);
    REQUIRE(found.key != nullptr);
    CHECK(found.key->id == "future");
    CHECK(store.find("future-secret", at(1'000)).status == key_status::ok);
    CHECK(store.find("future-secret", at(1'001)).status == key_status::ok);
}

TEST_CASE("find: expires_at boundary", "[key_store]") {
    auto k = make_key("past", "past-secret");
    k.expires_at = at(2'000);
    key_store store({k}, "X-Keygate-");
    CHECK(store.find("past-secret", at(1'999)).status == key_status::ok);
    auto found = store.find("past-secret", at(2'000));
    CHECK(found.status == key_status::expired);
    REQUIRE(found.key != nullptr);
    CHECK(found.key->id == "past");
    CHECK(store.find("past-secret", at(2'001)).status == key_status::expired);
}

TEST_CASE("find: disabled wins over the validity window", "[key_store]") {
    auto k = make_key("both", "both-secret");
    k.disabled = true;
    k.expires_at = at(10);
    key_store store({k}, "X-Keygate-");
    CHECK(store.find("both-secret", at(20)).status == key_status::disabled);
}

TEST_CASE("identity headers are pre-rendered with the prefix", "[key_store]") {
    auto k = make_key("billing-service", "s1");
    k.scopes = {"orders:write", "orders:read", "admin"};
    k.labels = {{"tenant", "acme"}, {"Region", "eu west"}};
    auto bare = make_key("bare", "s2");
    key_store store({k, bare}, "X-Corp-");

    CHECK(store.find("s1", now).key->identity_headers ==
          "X-Corp-Key-Id: billing-service\r\n"
          "X-Corp-Scopes: orders:write,orders:read,admin\r\n"
          "X-Corp-Label-tenant: acme\r\n"
          "X-Corp-Label-Region: eu west\r\n");
    // No scopes: no Scopes line at all (not an empty one).
    CHECK(store.find("s2", now).key->identity_headers == "X-Corp-Key-Id: bare\r\n");

    key_store default_prefix({bare}, "X-Keygate-");
    CHECK(default_prefix.records().at(0).identity_headers == "X-Keygate-Key-Id: bare\r\n");
}

TEST_CASE("has_scopes needs every required scope", "[key_store]") {
    auto k = make_key("k", "s");
    k.scopes = {"orders:read", "orders:write"};
    key_store store({k}, "X-Keygate-");
    const key_record& r = store.records().at(0);
    CHECK(r.has_scopes({}));
    CHECK(r.has_scopes({"orders:read"}));
    CHECK(r.has_scopes({"orders:write", "orders:read"}));
    CHECK_FALSE(r.has_scopes({"admin"}));
    CHECK_FALSE(r.has_scopes({"orders:read", "admin"}));
    CHECK_FALSE(r.has_scopes({"orders"}));
    CHECK_FALSE(r.has_scopes({"ORDERS:READ"}));

    auto none = make_key("none", "n");
    key_store empty_scopes({none}, "X-Keygate-");
    CHECK(empty_scopes.records().at(0).has_scopes({}));
    CHECK_FALSE(empty_scopes.records().at(0).has_scopes({"orders:read"}));
}

TEST_CASE("active_count counts keys usable at a given time", "[key_store]") {
    auto ok = make_key("ok", "1");
    auto disabled = make_key("disabled", "2");
    disabled.disabled = true;
    auto future = make_key("future", "3");
    future.not_before = at(100);
    auto expiring = make_key("expiring", "4");
    expiring.expires_at = at(200);
    key_store store({ok, disabled, future, expiring}, "X-Keygate-");

    CHECK(store.size() == 4);
    CHECK(store.active_count(at(50)) == 2);   // ok, expiring
    CHECK(store.active_count(at(100)) == 3);  // + future
    CHECK(store.active_count(at(199)) == 3);
    CHECK(store.active_count(at(200)) == 2);  // expiring is gone
}

TEST_CASE("a copied store indexes its own records", "[key_store]") {
    auto original = std::make_unique<key_store>(
        std::vector<key_config>{make_key("a", "sa"), make_key("b", "sb")}, "X-Keygate-");
    key_store copy(*original);
    key_store assigned({}, "X-Keygate-");
    assigned = *original;
    original.reset();

    for (const key_store* s : {&copy, &assigned}) {
        auto found = s->find("sb", now);
        REQUIRE(found.status == key_status::ok);
        CHECK(found.key->id == "b");
        CHECK(points_into(found.key, s->records()));
        CHECK(s->find("nope", now).status == key_status::unknown);
    }

    key_store moved(std::move(copy));
    auto found = moved.find("sa", now);
    REQUIRE(found.status == key_status::ok);
    CHECK(points_into(found.key, moved.records()));
}

TEST_CASE("100,000 keys build and look up quickly", "[key_store]") {
    constexpr std::size_t n = 100'000;
    std::vector<key_config> keys;
    keys.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        auto k = make_key("key-" + std::to_string(i), "secret-" + std::to_string(i));
        if (i % 10 == 0) k.scopes = {"read"};
        if (i % 1000 == 7) k.disabled = true;
        keys.push_back(std::move(k));
    }

    auto start = std::chrono::steady_clock::now();
    key_store store(keys, "X-Keygate-");
    REQUIRE(store.size() == n);
    CHECK(store.active_count(now) == n - n / 1000);

    std::size_t ok = 0;
    std::size_t wrong_id = 0;
    for (std::size_t i = 0; i < n; ++i) {
        auto found = store.find("secret-" + std::to_string(i), now);
        if (found.status == key_status::ok) ++ok;
        if (found.key == nullptr || found.key->id != "key-" + std::to_string(i)) ++wrong_id;
    }
    CHECK(ok == n - n / 1000);
    CHECK(wrong_id == 0);
    CHECK(store.find("secret-100000", now).status == key_status::unknown);
    CHECK(store.find("secret-7", now).status == key_status::disabled);
    CHECK(store.find("secret-10", now).key->identity_headers ==
          "X-Keygate-Key-Id: key-10\r\nX-Keygate-Scopes: read\r\n");

    // A linear scan per lookup would take minutes here; a hash map takes well under a second
    // (the bound is loose so that sanitizer builds pass too).
    auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed < std::chrono::seconds(10));
}
