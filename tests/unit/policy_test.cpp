#include "keygate/crypto.hpp"
#include "keygate/key_store.hpp"
#include "keygate/policy.hpp"

#include <catch.hpp>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

using namespace keygate;

namespace {

sys_seconds at(long long s) { return sys_seconds{std::chrono::seconds{s}}; }

const sys_seconds now = at(1'800'000'000);

key_config make_key(std::string id, std::string_view secret, std::vector<std::string> scopes = {}) {
    key_config k;
    k.id = std::move(id);
    k.digest = crypto::sha256(secret);
    k.scopes = std::move(scopes);
    return k;
}

// The key set every decision test runs against.
key_store make_store() {
    std::vector<key_config> keys;
    keys.push_back(make_key("plain", "plain-secret"));
    keys.push_back(make_key("admin", "admin-secret", {"admin"}));
    keys.push_back(make_key("reports", "reports-secret", {"reports"}));
    keys.push_back(make_key("reader", "reader-secret", {"read"}));
    auto disabled = make_key("disabled", "disabled-secret", {"admin"});
    disabled.disabled = true;
    keys.push_back(disabled);
    auto future = make_key("future", "future-secret");
    future.not_before = now + std::chrono::seconds(1);
    keys.push_back(future);
    auto expired = make_key("expired", "expired-secret");
    expired.expires_at = now;
    keys.push_back(expired);
    auto tenant = make_key("acme", "acme-secret", {"read"});
    tenant.allowed_paths = {"/tenants/acme/*", "/status"};
    keys.push_back(tenant);
    auto tenant_no_admin = make_key("acme-plain", "acme-plain-secret");
    tenant_no_admin.allowed_paths = {"/tenants/acme/*"};
    keys.push_back(tenant_no_admin);
    return key_store(keys, "X-Keygate-");
}

config::auth_t make_auth() {
    config::auth_t auth;
    auth.public_paths = {"/healthz", "/public/*"};
    auth.rules = {
        {"/admin/reports/*", {"GET"}, {"reports"}},
        {"/admin/*", {"POST", "PUT", "PATCH", "DELETE"}, {"admin"}},
        {"/data/*", {"GET"}, {"read"}},
        {"/tenants/*", {}, {"read"}},
    };
    return auth;
}

credentials header_key(std::string_view key) {
    credentials c;
    c.header_fields = 1;
    c.header_value = key;
    return c;
}

credentials bearer_key(std::string_view key) {
    credentials c;
    c.bearer_fields = 1;
    c.bearer_value = key;
    return c;
}

void check_denied(const decision& d, unsigned status, std::string_view error, std::string_view reason) {
    CHECK(d.kind == outcome::denied);
    CHECK(d.status == status);
    CHECK(d.error == error);
    CHECK(d.reason == reason);
}

void check_allowed(const decision& d, std::string_view key_id) {
    CHECK(d.kind == outcome::allowed);
    CHECK(d.status == 0);
    CHECK(d.reason.empty());
    REQUIRE(d.key != nullptr);
    CHECK(d.key->id == key_id);
}

} // namespace

// ---- find_credentials ---------------------------------------------------------------------

TEST_CASE("find_credentials: the configured header, any case, trimmed", "[policy]") {
    config::auth_t auth;
    header_list fields = {{"Host", "x"}, {"x-api-KEY", " \tkey-1 \t"}, {"Accept", "*/*"}};
    auto c = find_credentials(fields, auth);
    CHECK(c.header_fields == 1);
    CHECK(c.header_value == "key-1");
    CHECK(c.bearer_fields == 0);
    CHECK(c.bearer_value.empty());
}

TEST_CASE("find_credentials: every field is counted, the first is kept", "[policy]") {
    config::auth_t auth;
    header_list fields = {{"X-API-Key", "first"}, {"X-Api-Key", "second"}, {"x-api-key", ""}};
    auto c = find_credentials(fields, auth);
    CHECK(c.header_fields == 3);
    CHECK(c.header_value == "first");
}

TEST_CASE("find_credentials: a custom header name; the default one is then ignored", "[policy]") {
    config::auth_t auth;
    auth.header = "X-Service-Token";
    header_list fields = {{"X-API-Key", "ignored"}, {"x-service-token", "tok"}};
    auto c = find_credentials(fields, auth);
    CHECK(c.header_fields == 1);
    CHECK(c.header_value == "tok");
}

TEST_CASE("find_credentials: similar names are not the credential header", "[policy]") {
    config::auth_t auth;
    header_list fields = {{"X-API-Key2", "a"}, {"X-API-Ke", "b"}, {"X-API-Keys", "c"}};
    auto c = find_credentials(fields, auth);
    CHECK(c.header_fields == 0);
    CHECK(c.header_value.empty());
}

TEST_CASE("find_credentials: Authorization is ignored without accept_bearer", "[policy]") {
    config::auth_t auth;
    header_list fields = {{"Authorization", "Bearer tok"}};
    auto c = find_credentials(fields, auth);
    CHECK(c.bearer_fields == 0);
    CHECK(c.bearer_value.empty());
    CHECK(c.header_fields == 0);
}

TEST_CASE("find_credentials: Bearer with accept_bearer", "[policy]") {
    config::auth_t auth;
    auth.accept_bearer = true;

    SECTION("scheme word in any case, token trimmed") {
        for (std::string_view v : {"Bearer tok", "bearer tok", "BEARER\ttok", "  Bearer   tok \t"}) {
            INFO("value: [" << v << "]");
            auto c = find_credentials({{"authorization", v}}, auth);
            CHECK(c.bearer_fields == 1);
            CHECK(c.bearer_value == "tok");
        }
    }
    SECTION("Bearer with nothing after it is counted, with an empty token") {
        for (std::string_view v : {"Bearer", "Bearer ", "bearer \t "}) {
            INFO("value: [" << v << "]");
            auto c = find_credentials({{"Authorization", v}}, auth);
            CHECK(c.bearer_fields == 1);
            CHECK(c.bearer_value.empty());
        }
    }
    SECTION("other schemes are left alone") {
        for (std::string_view v : {"Basic dXNlcjpwYXNz", "Bearerx tok", "Digest x=1", "", "tok"}) {
            INFO("value: [" << v << "]");
            auto c = find_credentials({{"Authorization", v}}, auth);
            CHECK(c.bearer_fields == 0);
            CHECK(c.bearer_value.empty());
        }
    }
    SECTION("two Bearer fields are both counted, the first token kept") {
        auto c = find_credentials(
            {{"Authorization", "Bearer one"}, {"Authorization", "Basic x"}, {"AUTHORIZATION", "bearer two"}},
            auth);
        CHECK(c.bearer_fields == 2);
        CHECK(c.bearer_value == "one");
    }
    SECTION("header and Bearer are counted separately") {
        auto c = find_credentials({{"Authorization", "Bearer b"}, {"X-API-Key", "h"}}, auth);
        CHECK(c.header_fields == 1);
        CHECK(c.header_value == "h");
        CHECK(c.bearer_fields == 1);
        CHECK(c.bearer_value == "b");
    }
}

// ---- decide -------------------------------------------------------------------------------

TEST_CASE("decide: public paths are forwarded whatever the credentials", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    credentials none;
    credentials twice;
    twice.header_fields = 2;
    twice.header_value = "admin-secret";

    for (const credentials* c : {&none, &twice}) {
        for (std::string_view p : {"/healthz", "/public", "/public/x/y"}) {
            INFO("path: " << p);
            auto d = decide(auth, &store, false, "GET", p, *c, now);
            CHECK(d.kind == outcome::public_path);
            CHECK(d.status == 0);
            CHECK(d.key == nullptr);
        }
    }
    // A bogus or even a valid key is not looked at on a public path.
    auto bogus = decide(auth, &store, false, "POST", "/healthz", header_key("bogus"), now);
    CHECK(bogus.kind == outcome::public_path);
    CHECK(bogus.key == nullptr);
    auto valid = decide(auth, &store, false, "GET", "/healthz", header_key("admin-secret"), now);
    CHECK(valid.kind == outcome::public_path);
    CHECK(valid.key == nullptr);
    // Public even with hide_denials and without a store.
    auth.hide_denials = true;
    CHECK(decide(auth, nullptr, false, "GET", "/healthz", none, now).kind == outcome::public_path);
}

TEST_CASE("decide: near misses of a public path are not public", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    for (std::string_view p : {"/healthz/", "/healthzX", "/HEALTHZ", "/publicX", "/x/healthz"}) {
        INFO("path: " << p);
        check_denied(decide(auth, &store, false, "GET", p, credentials{}, now), 401,
                     "missing_api_key", "missing");
    }
}

TEST_CASE("decide: open mode forwards everything without a key", "[policy]") {
    auto auth = make_auth();
    for (const credentials& c : {credentials{}, header_key("whatever")}) {
        auto d = decide(auth, nullptr, true, "DELETE", "/admin/x", c, now);
        CHECK(d.kind == outcome::allowed);
        CHECK(d.status == 0);
        CHECK(d.key == nullptr);
    }
    // Public paths are still reported as public.
    CHECK(decide(auth, nullptr, true, "GET", "/healthz", credentials{}, now).kind == outcome::public_path);
}

TEST_CASE("decide: missing credentials", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    SECTION("none at all") {
        check_denied(decide(auth, &store, false, "GET", "/x", credentials{}, now), 401,
                     "missing_api_key", "missing");
    }
    SECTION("OPTIONS needs a key like any other method") {
        check_denied(decide(auth, &store, false, "OPTIONS", "/x", credentials{}, now), 401,
                     "missing_api_key", "missing");
    }
    SECTION("an empty header value") {
        check_denied(decide(auth, &store, false, "GET", "/x", header_key(""), now), 401,
                     "missing_api_key", "missing");
    }
    SECTION("Bearer with nothing after it") {
        check_denied(decide(auth, &store, false, "GET", "/x", bearer_key(""), now), 401,
                     "missing_api_key", "missing");
    }
    SECTION("the request as find_credentials sees it") {
        auth.accept_bearer = true;
        auto c = find_credentials({{"Authorization", "Bearer   "}}, auth);
        check_denied(decide(auth, &store, false, "GET", "/x", c, now), 401, "missing_api_key", "missing");
    }
}

TEST_CASE("decide: duplicate credentials, even when valid", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    credentials c;
    SECTION("header twice") {
        c.header_fields = 2;
        c.header_value = "plain-secret";
    }
    SECTION("two Bearer credentials") {
        c.bearer_fields = 2;
        c.bearer_value = "plain-secret";
    }
    SECTION("header and Bearer") {
        c.header_fields = 1;
        c.header_value = "plain-secret";
        c.bearer_fields = 1;
        c.bearer_value = "plain-secret";
    }
    SECTION("header twice, the first empty") {
        c.header_fields = 2;
        c.header_value = "";
    }
    auto d = decide(auth, &store, false, "GET", "/x", c, now);
    check_denied(d, 401, "invalid_api_key", "duplicate");
    CHECK(d.key == nullptr);
}

TEST_CASE("decide: keys that fail the check", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    struct row {
        std::string_view key;
        std::string_view reason;
    };
    for (auto [key, reason] : {row{"nope", "unknown"}, row{"PLAIN-SECRET", "unknown"},
                               row{"disabled-secret", "disabled"}, row{"future-secret", "not_yet_valid"},
                               row{"expired-secret", "expired"}}) {
        INFO("key: " << key);
        for (const credentials& c : {header_key(key), bearer_key(key)}) {
            auto d = decide(auth, &store, false, "GET", "/x", c, now);
            check_denied(d, 401, "invalid_api_key", reason);
            CHECK(d.key == nullptr);
        }
    }
}

TEST_CASE("decide: the validity window is checked against the given time", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    check_allowed(decide(auth, &store, false, "GET", "/x", header_key("future-secret"),
                         now + std::chrono::seconds(1)), "future");
    check_allowed(decide(auth, &store, false, "GET", "/x", header_key("expired-secret"),
                         now - std::chrono::seconds(1)), "expired");
}

TEST_CASE("decide: without a store outside open mode, every key is unknown", "[policy]") {
    auto auth = make_auth();
    check_denied(decide(auth, nullptr, false, "GET", "/x", header_key("plain-secret"), now), 401,
                 "invalid_api_key", "unknown");
    check_denied(decide(auth, nullptr, false, "GET", "/x", credentials{}, now), 401,
                 "missing_api_key", "missing");
}

TEST_CASE("decide: a valid key on a path without rules passes", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    auto d = decide(auth, &store, false, "GET", "/orders/1", header_key("plain-secret"), now);
    check_allowed(d, "plain");
    CHECK(d.error.empty());
    check_allowed(decide(auth, &store, false, "GET", "/orders/1", bearer_key("plain-secret"), now), "plain");
    // The key handed back is the store's own record, with its identity headers.
    auto found = store.find("plain-secret", now);
    CHECK(d.key == found.key);
}

TEST_CASE("decide: rules require scopes", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    auto d = decide(auth, &store, false, "POST", "/admin/users", header_key("plain-secret"), now);
    check_denied(d, 403, "insufficient_scope", "insufficient_scope");
    REQUIRE(d.key != nullptr);
    CHECK(d.key->id == "plain");
    // The rule's prefix covers the bare prefix too.
    check_denied(decide(auth, &store, false, "DELETE", "/admin", header_key("plain-secret"), now), 403,
                 "insufficient_scope", "insufficient_scope");
    check_allowed(decide(auth, &store, false, "POST", "/admin/users", header_key("admin-secret"), now), "admin");
    // Methods the rule does not name pass with any valid key.
    check_allowed(decide(auth, &store, false, "GET", "/admin/users", header_key("plain-secret"), now), "plain");
    // Not under the rule's prefix.
    check_allowed(decide(auth, &store, false, "POST", "/adminX", header_key("plain-secret"), now), "plain");
}

TEST_CASE("decide: a rule without methods applies to every method", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    for (std::string_view m : {"GET", "HEAD", "POST", "OPTIONS", "whatever"}) {
        INFO("method: " << m);
        check_denied(decide(auth, &store, false, m, "/tenants/x", header_key("plain-secret"), now), 403,
                     "insufficient_scope", "insufficient_scope");
        check_allowed(decide(auth, &store, false, m, "/tenants/x", header_key("reader-secret"), now), "reader");
    }
}

TEST_CASE("decide: methods match exactly and case-sensitively", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    // `/data/*` requires `read` for GET only.
    check_denied(decide(auth, &store, false, "GET", "/data/1", header_key("plain-secret"), now), 403,
                 "insufficient_scope", "insufficient_scope");
    check_allowed(decide(auth, &store, false, "HEAD", "/data/1", header_key("plain-secret"), now), "plain");
    check_allowed(decide(auth, &store, false, "get", "/data/1", header_key("plain-secret"), now), "plain");
    check_allowed(decide(auth, &store, false, "GETX", "/data/1", header_key("plain-secret"), now), "plain");
    check_allowed(decide(auth, &store, false, "post", "/admin/x", header_key("plain-secret"), now), "plain");
}

TEST_CASE("decide: the first matching rule wins", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    // GET /admin/reports/x matches the reports rule first: `reports` is enough.
    check_allowed(decide(auth, &store, false, "GET", "/admin/reports/q1", header_key("reports-secret"), now),
                  "reports");
    // ...and `admin` is not, even though it satisfies the later /admin/* rule.
    check_denied(decide(auth, &store, false, "GET", "/admin/reports/q1", header_key("admin-secret"), now),
                 403, "insufficient_scope", "insufficient_scope");
    // POST does not match the first rule's methods, so the second decides.
    check_denied(decide(auth, &store, false, "POST", "/admin/reports/q1", header_key("reports-secret"), now),
                 403, "insufficient_scope", "insufficient_scope");
    check_allowed(decide(auth, &store, false, "POST", "/admin/reports/q1", header_key("admin-secret"), now),
                  "admin");

    // Reversing the order changes the outcome, so order is what decides.
    std::swap(auth.rules[0], auth.rules[1]);
    check_denied(decide(auth, &store, false, "GET", "/admin/reports/q1", header_key("admin-secret"), now),
                 403, "insufficient_scope", "insufficient_scope");
    auth.rules[0].methods.clear(); // /admin/* for every method, now first
    check_allowed(decide(auth, &store, false, "GET", "/admin/reports/q1", header_key("admin-secret"), now),
                  "admin");
    check_denied(decide(auth, &store, false, "GET", "/admin/reports/q1", header_key("reports-secret"), now),
                 403, "insufficient_scope", "insufficient_scope");
}

TEST_CASE("decide: a rule may require several scopes", "[policy]") {
    auto auth = make_auth();
    auth.rules = {{"/*", {}, {"admin", "read"}}};
    std::vector<key_config> keys = {make_key("both", "both", {"read", "admin"}),
                                    make_key("one", "one", {"admin"})};
    key_store store(keys, "X-Keygate-");
    check_allowed(decide(auth, &store, false, "GET", "/x", header_key("both"), now), "both");
    check_denied(decide(auth, &store, false, "GET", "/x", header_key("one"), now), 403,
                 "insufficient_scope", "insufficient_scope");
}

TEST_CASE("decide: allowed_paths bind a key to its paths", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    check_allowed(decide(auth, &store, false, "GET", "/tenants/acme/orders", header_key("acme-secret"), now),
                  "acme");
    check_allowed(decide(auth, &store, false, "GET", "/tenants/acme", header_key("acme-secret"), now), "acme");
    check_allowed(decide(auth, &store, false, "GET", "/status", header_key("acme-secret"), now), "acme");
    for (std::string_view p : {"/tenants/other/orders", "/tenants/acmecorp", "/tenants", "/status/x", "/"}) {
        INFO("path: " << p);
        auto d = decide(auth, &store, false, "GET", p, header_key("acme-secret"), now);
        check_denied(d, 403, "insufficient_scope", "path_not_allowed");
        REQUIRE(d.key != nullptr);
        CHECK(d.key->id == "acme");
    }
    // Keys without allowed_paths go anywhere.
    check_allowed(decide(auth, &store, false, "GET", "/tenants/other", header_key("reader-secret"), now),
                  "reader");
}

TEST_CASE("decide: a rule's scope check comes before allowed_paths", "[policy]") {
    auto auth = make_auth();
    auto store = make_store();
    // acme-plain lacks `read` (rule /tenants/*) and is bound to /tenants/acme/*.
    check_denied(decide(auth, &store, false, "GET", "/tenants/other", header_key("acme-plain-secret"), now),
                 403, "insufficient_scope", "insufficient_scope");
    check_denied(decide(auth, &store, false, "GET", "/orders", header_key("acme-plain-secret"), now), 403,
                 "insufficient_scope", "path_not_allowed");
}

TEST_CASE("decide: hide_denials turns every 401 and 403 into one 404", "[policy]") {
    auto auth = make_auth();
    auth.hide_denials = true;
    auto store = make_store();
    credentials twice;
    twice.header_fields = 2;
    twice.header_value = "plain-secret";

    struct row {
        std::string_view method;
        std::string_view path;
        credentials creds;
        std::string_view reason;
    };
    const std::vector<row> rows = {
        {"GET", "/x", credentials{}, "missing"},
        {"GET", "/x", header_key(""), "missing"},
        {"GET", "/x", twice, "duplicate"},
        {"GET", "/x", header_key("nope"), "unknown"},
        {"GET", "/x", header_key("disabled-secret"), "disabled"},
        {"GET", "/x", header_key("future-secret"), "not_yet_valid"},
        {"GET", "/x", header_key("expired-secret"), "expired"},
        {"POST", "/admin/x", header_key("plain-secret"), "insufficient_scope"},
        {"GET", "/elsewhere", header_key("acme-secret"), "path_not_allowed"},
    };
    for (const auto& r : rows) {
        INFO("reason: " << r.reason);
        check_denied(decide(auth, &store, false, r.method, r.path, r.creds, now), 404, "not_found", r.reason);
    }
    // What was allowed stays allowed.
    check_allowed(decide(auth, &store, false, "POST", "/admin/x", header_key("admin-secret"), now), "admin");
}
