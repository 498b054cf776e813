#include "keygate/config.hpp"
#include "keygate/crypto.hpp"

#include <catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace keygate;
using namespace std::chrono;
using namespace std::string_literals;

namespace {

using env_map = std::map<std::string, std::string>;

env_lookup env_of(env_map vars) {
    return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

const env_map dev{{"KEYGATE_ENV", "development"}};

// A plaintext key long enough for production.
const std::string long_key = "k3y-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const std::string other_key = "k3y-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

// A production config whose only key is `long_key`, followed by `extra`.
std::string with_key(const std::string& extra = "") {
    return "auth:\n  keys:\n    - { id: main, key: " + long_key + " }\n" + extra;
}

config load(const std::string& yaml, const env_map& env = {}, const cli_overrides& cli = {},
            const std::string& base = ".") {
    return load_config(yaml, env_of(env), cli, base);
}

// The problems load_config reports; fails the test when it accepts the config.
std::vector<std::string> problems(const std::string& yaml, const env_map& env = {},
                                  const cli_overrides& cli = {}, const std::string& base = ".") {
    try {
        load_config(yaml, env_of(env), cli, base);
    } catch (const config_error& e) {
        return e.problems;
    }
    FAIL("the configuration was accepted");
    return {};
}

std::vector<std::string> one(const std::string& line) { return {line}; }

digest_t digest_of(const std::string& key) { return crypto::sha256(key); }

std::string hex_of(const std::string& key) {
    auto d = crypto::sha256(key);
    return crypto::to_hex(d.data(), d.size());
}

// A scratch directory removed at the end of the test.
struct temp_dir {
    std::filesystem::path dir;
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "keygate-config-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
    }
    ~temp_dir() { std::filesystem::remove_all(dir); }
    std::string write(const std::string& name, const std::string& text) const {
        auto p = dir / name;
        std::ofstream(p, std::ios::binary) << text;
        return p.string();
    }
};

sys_seconds utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
    return sys_days(year{y} / month{mo} / day{d}) + hours(h) + minutes(mi) + seconds(s);
}

} // namespace

// ---------------------------------------------------------------------------

TEST_CASE("an empty document gives every default", "[config]") {
    for (std::string doc : {""s, "~\n"s, "# nothing but a comment\n"s}) {
        config c = load(doc, dev);
        CHECK(c.environment == "development");
        CHECK(c.listen.address == "0.0.0.0");
        CHECK(c.listen.port == 8080);
        CHECK_FALSE(c.listen.tls);
        CHECK(c.upstream.url == "http://127.0.0.1:3000");
        CHECK(c.upstream.scheme == "http");
        CHECK(c.upstream.host == "127.0.0.1");
        CHECK(c.upstream.port == 3000);
        CHECK(c.upstream.connect_timeout == 5s);
        CHECK(c.upstream.response_timeout == 60s);
        CHECK(c.upstream.max_idle_connections == 64);
        CHECK(c.upstream.tls.verify);
        CHECK(c.admin.address == "0.0.0.0");
        CHECK(c.admin.port == 9090);
        CHECK(c.auth.header == "X-API-Key");
        CHECK_FALSE(c.auth.accept_bearer);
        CHECK(c.auth.strip_credentials);
        CHECK(c.auth.identity_header_prefix == "X-Keygate-");
        CHECK_FALSE(c.auth.hide_denials);
        CHECK(c.auth.public_paths == std::vector<std::string>{"/healthz"});
        CHECK(c.auth.failed_attempts.max == 20);
        CHECK(c.auth.failed_attempts.window == 60s);
        CHECK(c.auth.failed_attempts.block == 300s);
        CHECK(c.auth.failed_attempts.exempt.empty());
        CHECK(c.auth.reload_interval == 2s);
        CHECK(c.auth.keys_file.empty());
        CHECK(c.auth.keys.empty());
        CHECK(c.auth.rules.empty());
        CHECK(c.limits.max_header_bytes == 32768);
        CHECK(c.limits.max_headers == 100);
        CHECK(c.limits.max_body_bytes == 16777216);
        CHECK(c.limits.header_timeout == 10s);
        CHECK(c.limits.idle_timeout == 60s);
        CHECK(c.limits.max_connections == 10000);
        CHECK(c.limits.drain_delay == 0s);
        CHECK(c.limits.drain_timeout == 25s);
        CHECK(c.logging.level == "info");
        CHECK(c.logging.format == "json");
        CHECK(c.logging.access_log);
        CHECK(c.threads == 0);
    }
}

TEST_CASE("empty sections keep their defaults", "[config]") {
    config c = load("listen:\nauth:\nlimits:\n", dev);
    CHECK(c.listen.port == 8080);
    CHECK(c.auth.public_paths == std::vector<std::string>{"/healthz"});
}

TEST_CASE("the environment defaults to production, which requires an active key", "[config]") {
    CHECK(problems("") ==
          one("auth.keys: no active key; production requires at least one (add one to auth.keys, "
              "auth.keys_file or KEYGATE_API_KEYS, or check disabled, not_before and expires_at)"));
    config c = load(with_key());
    CHECK(c.environment == "production");
    CHECK_FALSE(c.open_mode);
    CHECK(c.warnings.empty());
}

TEST_CASE("only production and development are environments", "[config]") {
    CHECK(problems(with_key("environment: staging\n")) ==
          one("environment: must be production or development"));
    CHECK(problems(with_key(), {{"KEYGATE_ENV", "Development"}}) ==
          one("KEYGATE_ENV: must be production or development"));
    CHECK(load("environment: development\n").environment == "development");
}

TEST_CASE("every field of the schema is read", "[config]") {
    std::string dir = KEYGATE_FIXTURES "/config";
    config c = load_config_file(dir + "/full.yaml", env_of({}));
    CHECK(c.environment == "production");
    CHECK(c.listen.address == "127.0.0.1");
    CHECK(c.listen.port == 8443);
    REQUIRE(c.listen.tls);
    CHECK(c.listen.tls->cert_file == dir + "/certs/server.pem"); // relative to the config
    CHECK(c.listen.tls->key_file == "/etc/keygate/server.key");
    CHECK(c.listen.tls->min_version == "1.3");
    CHECK(c.upstream.url == "https://app.internal:8443/");
    CHECK(c.upstream.scheme == "https");
    CHECK(c.upstream.host == "app.internal");
    CHECK(c.upstream.port == 8443);
    CHECK(c.upstream.connect_timeout == 250ms);
    CHECK(c.upstream.response_timeout == 2min);
    CHECK(c.upstream.max_idle_connections == 8);
    CHECK(c.upstream.tls.verify);
    CHECK(c.upstream.tls.ca_file == dir + "/ca.pem");
    CHECK(c.upstream.tls.server_name == "app.example.com");
    CHECK(c.admin.address == "::1");
    CHECK(c.admin.port == 9191);
    CHECK(c.auth.header == "X-Service-Key");
    CHECK(c.auth.accept_bearer);
    CHECK_FALSE(c.auth.strip_credentials);
    CHECK(c.auth.identity_header_prefix == "X-Identity-");
    CHECK(c.auth.hide_denials);
    CHECK(c.auth.public_paths == std::vector<std::string>{"/healthz", "/status/*"});
    CHECK(c.auth.failed_attempts.max == 5);
    CHECK(c.auth.failed_attempts.window == 30s);
    CHECK(c.auth.failed_attempts.block == 1h);
    CHECK(c.auth.failed_attempts.exempt == std::vector<std::string>{"10.0.0.0/8", "fd00::/8"});
    CHECK(c.auth.reload_interval == 500ms);
    CHECK(c.auth.keys_file == dir + "/keys.yaml");
    CHECK(c.limits.max_header_bytes == 16384);
    CHECK(c.limits.max_headers == 50);
    CHECK(c.limits.max_body_bytes == 1048576);
    CHECK(c.limits.header_timeout == 5s);
    CHECK(c.limits.idle_timeout == 30s);
    CHECK(c.limits.max_connections == 500);
    CHECK(c.limits.drain_delay == 1s);
    CHECK(c.limits.drain_timeout == 10s);
    CHECK(c.logging.level == "debug");
    CHECK(c.logging.format == "text");
    CHECK_FALSE(c.logging.access_log);
    CHECK(c.threads == 3);

    REQUIRE(c.auth.rules.size() == 2);
    CHECK(c.auth.rules[0].path == "/admin/*");
    CHECK(c.auth.rules[0].methods == std::vector<std::string>{"POST", "PUT", "PATCH", "DELETE"});
    CHECK(c.auth.rules[0].scopes == std::vector<std::string>{"admin"});
    CHECK(c.auth.rules[1].path == "/reports/*");
    CHECK(c.auth.rules[1].methods.empty());
    CHECK(c.auth.rules[1].scopes.empty());

    // Inline keys first, then the keys file.
    REQUIRE(c.auth.keys.size() == 2);
    const key_config& k = c.auth.keys[0];
    CHECK(k.id == "billing-service");
    CHECK(k.digest == digest_of("fixture-key-billing-0123456789abcdef"));
    CHECK_FALSE(k.from_plaintext);
    CHECK(k.scopes == std::vector<std::string>{"orders:read", "orders:write"});
    CHECK(k.labels == std::vector<std::pair<std::string, std::string>>{{"tenant", "acme"}, {"tier", "gold"}});
    CHECK(k.not_before == utc(2020, 1, 1));
    CHECK(k.expires_at == utc(2999, 6, 29, 22));
    CHECK_FALSE(k.disabled);
    REQUIRE(k.rate_limit);
    CHECK(k.rate_limit->requests_per_second == 200);
    CHECK(k.rate_limit->burst == 400);
    CHECK(k.allowed_paths == std::vector<std::string>{"/tenants/acme/*", "/me"});
    CHECK(k.origin == "auth.keys[0]");
    const key_config& f = c.auth.keys[1];
    CHECK(f.id == "file-yaml");
    CHECK(f.digest == digest_of("fixture-key-file-yaml-0123456789abcdef"));
    CHECK(f.origin == dir + "/keys.yaml: keys[0]");
}

TEST_CASE("an unknown field is named by its path", "[config]") {
    CHECK(problems("auth:\n  foo: 1\n", dev) == one("auth.foo: unknown field"));
    CHECK(problems("lisen: {port: 1}\n", dev) == one("lisen: unknown field"));
    CHECK(problems("auth:\n  keys:\n    - { id: a, key: " + long_key + ", scope: [x] }\n") ==
          one("auth.keys[0].scope: unknown field"));
    CHECK(problems(with_key("upstream: { tls: { verfy: false } }\n")) ==
          one("upstream.tls.verfy: unknown field"));
}

TEST_CASE("a wrong type is named by its path", "[config]") {
    CHECK(problems("listen: { port: http }\n", dev) == one("listen.port: expected an integer"));
    CHECK(problems("listen: [8080]\n", dev) == one("listen: expected a mapping"));
    CHECK(problems("auth: { keys: { id: a } }\n", dev) == one("auth.keys: expected a list"));
    CHECK(problems("auth: { accept_bearer: yes }\n", dev) ==
          one("auth.accept_bearer: expected true or false"));
    CHECK(problems("auth: { header: [X-Key] }\n", dev) == one("auth.header: expected a string"));
    CHECK(problems("auth: { keys: [ { id: ~, key: " + long_key + " } ] }\n", dev) ==
          one("auth.keys[0].id: expected a string"));
    CHECK(problems("auth: { keys: [ just-a-string ] }\n", dev) ==
          one("auth.keys[0]: expected a mapping with an id and a hash or key"));
    CHECK(problems("upstream: { connect_timeout: 5 }\n", dev) ==
          one("upstream.connect_timeout: expected a duration like 250ms, 10s, 5m or 1h"));
    CHECK(problems("limits: { max_body_bytes: 16MB }\n", dev) ==
          one("limits.max_body_bytes: expected an integer"));
    CHECK(problems("[1, 2]\n", dev) == one("the configuration must be a YAML mapping of sections"));
}

TEST_CASE("invalid values are named by their path", "[config]") {
    CHECK(problems("listen: { port: 0 }\n", dev) == one("listen.port: must be from 1 to 65535"));
    CHECK(problems("admin: { port: 70000 }\n", dev) == one("admin.port: must be from 1 to 65535"));
    CHECK(problems("threads: -1\n", dev) == one("threads: must be from 0 to 1024"));
    CHECK(problems("listen: { address: localhost }\n", dev) ==
          one("listen.address: expected an IPv4 or IPv6 address such as 0.0.0.0 or ::"));
    CHECK(problems("listen: { tls: { cert_file: c.pem, min_version: 1.1 } }\n", dev) ==
          std::vector<std::string>{"listen.tls.min_version: must be \"1.2\" or \"1.3\"",
                                   "listen.tls.key_file: missing; TLS needs a private key"});
    CHECK(problems("logging: { level: verbose }\n", dev) ==
          one("logging.level: must be one of trace, debug, info, warn, error, critical, off"));
    CHECK(problems("logging: { format: xml }\n", dev) == one("logging.format: must be json or text"));
    CHECK(problems("auth: { header: \"X API Key\" }\n", dev) ==
          one("auth.header: expected an HTTP header name such as X-API-Key"));
    CHECK(problems("auth: { identity_header_prefix: \"\" }\n", dev) ==
          one("auth.identity_header_prefix: expected a non-empty HTTP header name prefix such as X-Keygate-"));
    CHECK(problems("auth: { header: content-length }\n", dev) ==
          one("auth.header: Content-Length has a meaning of its own in HTTP; use a header such as X-API-Key"));
    CHECK(problems("auth: { identity_header_prefix: X- }\n", dev) ==
          one("auth.identity_header_prefix: would strip the X-Forwarded-For header from every request; "
              "use a distinctive prefix such as X-Keygate-"));
    CHECK(problems("auth: { identity_header_prefix: content }\n", dev) ==
          one("auth.identity_header_prefix: would strip the Content-Length header from every request; "
              "use a distinctive prefix such as X-Keygate-"));
    CHECK(load("auth: { header: Api-Key, identity_header_prefix: X-Auth- }\n", dev).auth.header == "Api-Key");
    CHECK(problems("auth: { reload_interval: 10ms }\n", dev) ==
          one("auth.reload_interval: must be at least 100ms"));
    CHECK(problems("limits: { idle_timeout: 0s }\n", dev) ==
          one("limits.idle_timeout: must be longer than 0s"));
    CHECK(problems("limits: { max_headers: 0 }\n", dev) == one("limits.max_headers: must be at least 1"));
    CHECK(problems("auth: { rules: [ { path: /a, methods: [\"GE T\"], scopes: [] } ] }\n", dev) ==
          one("auth.rules[0].methods[0]: expected an HTTP method such as GET or POST"));
    CHECK(problems("auth: { rules: [ { path: /a, methods: [], scopes: [] } ] }\n", dev) ==
          one("auth.rules[0].methods: must list at least one method; remove the field to match every method"));
    CHECK(problems("auth: { rules: [ { path: /a } ] }\n", dev) ==
          one("auth.rules[0].scopes: missing; use [] to let every valid key through"));
    CHECK(problems("admin: { port: 8080 }\n", dev) == one("admin.port: must differ from listen.port"));
}

TEST_CASE("key entries are validated field by field", "[config]") {
    auto key_problems = [](const std::string& fields) {
        return problems("auth:\n  keys:\n    - { id: a, " + fields + " }\n", dev);
    };
    std::string k = "key: " + long_key;
    CHECK(key_problems(k + ", expires_at: 2027-06-30T00:00:00") ==
          one("auth.keys[0].expires_at: not an RFC 3339 time with a zone"));
    CHECK(key_problems(k + ", not_before: 2027-02-30T00:00:00Z") ==
          one("auth.keys[0].not_before: not an RFC 3339 time with a zone"));
    CHECK(key_problems(k + ", not_before: 2027-01-01T00:00:00Z, expires_at: 2026-01-01T00:00:00Z") ==
          one("auth.keys[0].expires_at: must be later than not_before"));
    CHECK(key_problems(k + ", scopes: [\"orders read\"]") ==
          one("auth.keys[0].scopes[0]: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -"));
    CHECK(key_problems(k + ", scopes: [" + std::string(129, 's') + "]") ==
          one("auth.keys[0].scopes[0]: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -"));
    CHECK(key_problems(k + ", labels: { \"bad name\": x }") ==
          one("auth.keys[0].labels.bad name: a label name must be an HTTP header token (letters, digits, - and the like)"));
    CHECK(key_problems(k + ", labels: { Tenant: a, tenant: b }") ==
          one("auth.keys[0].labels.tenant: label names must be unique ignoring case"));
    CHECK(key_problems(k + ", labels: { tenant: " + std::string(257, 'v') + " }") ==
          one("auth.keys[0].labels.tenant: a label value must be printable ASCII, at most 256 bytes"));
    CHECK(key_problems(k + ", labels: { tenant: \"a\\tb\" }") ==
          one("auth.keys[0].labels.tenant: a label value must be printable ASCII, at most 256 bytes"));
    CHECK(key_problems(k + ", rate_limit: { requests_per_second: 0, burst: 0.5 }") ==
          std::vector<std::string>{"auth.keys[0].rate_limit.requests_per_second: must be greater than 0",
                                   "auth.keys[0].rate_limit.burst: must be at least 1"});
    CHECK(key_problems(k + ", rate_limit: { requests_per_second: 5 }") ==
          one("auth.keys[0].rate_limit.burst: missing"));
    CHECK(key_problems(k + ", allowed_paths: []") ==
          one("auth.keys[0].allowed_paths: must list at least one path pattern; remove the field to allow every path"));
    CHECK(key_problems(k + ", disabled: maybe") == one("auth.keys[0].disabled: expected true or false"));
    CHECK(key_problems("hash: sha256:abc") ==
          one("auth.keys[0].hash: expected sha256: followed by 64 hex digits (keygate hash-key prints one)"));
    CHECK(key_problems("hash: " + hex_of(long_key)) ==
          one("auth.keys[0].hash: expected sha256: followed by 64 hex digits (keygate hash-key prints one)"));
    CHECK(key_problems("scopes: [a]") == one("auth.keys[0]: needs a hash (preferred) or a key"));
    CHECK(key_problems(k + ", hash: sha256:" + hex_of(long_key)) ==
          one("auth.keys[0]: has both hash and key; keep one"));
    CHECK(problems("auth: { keys: [ { key: " + long_key + " } ] }\n", dev) ==
          one("auth.keys[0].id: missing; every key needs an id"));
    CHECK(problems("auth: { keys: [ { id: \"bad id\", key: " + long_key + " } ] }\n", dev) ==
          one("auth.keys[0].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -"));
    CHECK(problems("auth: { keys: [ { id: " + std::string(129, 'i') + ", key: " + long_key + " } ] }\n", dev) ==
          one("auth.keys[0].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -"));

    // A key with every character class an id may hold.
    config c = load("auth: { keys: [ { id: \"A-z_0.9:/x\", key: " + long_key + " } ] }\n");
    CHECK(c.auth.keys.at(0).id == "A-z_0.9:/x");
}

TEST_CASE("a plaintext key is hashed and never kept or echoed", "[config]") {
    config c = load(with_key());
    REQUIRE(c.auth.keys.size() == 1);
    CHECK(c.auth.keys[0].digest == digest_of(long_key));
    CHECK(c.auth.keys[0].from_plaintext);
    CHECK(c.auth.keys[0].plaintext_length == long_key.size());

    // Spaces, commas and control bytes are refused, without the key in the message.
    for (std::string bad : {"\"secret with space 0123456789abcdef\"", "\"secret,with,commas,0123456789abcdef\"",
                            "\"secret\\u00e9-0123456789abcdef0123456789\"", "\"\""}) {
        auto p = problems("auth: { keys: [ { id: a, key: " + bad + " } ] }\n", dev);
        CHECK(p == one("auth.keys[0].key: a plaintext key must be printable ASCII with no space and no comma"));
    }
}

TEST_CASE("a repeated mapping key is an error wherever it is", "[config]") {
    CHECK(problems("auth:\n  keys:\n    - id: a\n      key: " + long_key +
                   "\n      disabled: false\n      disabled: true\n") ==
          one("auth.keys[0].disabled: repeated mapping key; keep only one"));
    CHECK(problems("threads: 1\nthreads: 2\n", dev) == one("threads: repeated mapping key; keep only one"));
    CHECK(problems("auth: { keys: [ { id: a, key: " + long_key + ", labels: { t: 1, t: 2 } } ] }\n", dev) ==
          one("auth.keys[0].labels.t: repeated mapping key; keep only one"));
    // The first value is not silently kept: revoking by appending `disabled: true` never fails open.
    CHECK(problems("environment: development\nenvironment: production\n") ==
          one("environment: repeated mapping key; keep only one"));
}

TEST_CASE("YAML syntax errors and extra documents are refused", "[config]") {
    auto p = problems("auth: { keys: [\n", dev);
    REQUIRE(p.size() == 1);
    CHECK(p[0].rfind("invalid YAML at line ", 0) == 0);
    CHECK(problems("threads: 1\n---\nthreads: 2\n", dev) ==
          one("holds more than one YAML document, or stray text after it; keep one "
                "(remove the extra --- or the stray text)"));
    // yaml-cpp 0.7's LoadAll loops for ever on a stray ',' after a block: refused, not hung.
    CHECK(problems("- a\n,\n", dev).size() == 1);
    CHECK(problems(",", dev).size() == 1);
}

TEST_CASE("every problem is reported, not only the first", "[config]") {
    auto p = problems("listen: { port: 0, bogus: 1 }\n"
                      "logging: { level: loud }\n"
                      "auth:\n"
                      "  keys:\n"
                      "    - { id: a, key: " + long_key + " }\n"
                      "    - { id: b, key: " + other_key + ", expires_at: tomorrow }\n");
    CHECK(p == std::vector<std::string>{
                   "listen.port: must be from 1 to 65535",
                   "listen.bogus: unknown field",
                   "logging.level: must be one of trace, debug, info, warn, error, critical, off",
                   "auth.keys[1].expires_at: not an RFC 3339 time with a zone",
               });
    // The message of the exception holds every line too.
    try {
        load("listen: { port: 0 }\nthreads: x\n", dev);
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()) == "listen.port: must be from 1 to 65535\nthreads: expected an integer");
    }
}

TEST_CASE("${VAR} is substituted inside scalar values", "[config]") {
    env_map env{{"BILLING_KEY", long_key}, {"PORT", "8181"}, {"HOST", "10.1.2.3"}};
    // Block style: a plain ${PORT} is one scalar there.
    config c = load("listen:\n  address: ${HOST}\n  port: ${PORT}\n"
                    "auth: { keys: [ { id: billing, key: \"${BILLING_KEY}\" } ] }\n",
                    env);
    CHECK(c.listen.address == "10.1.2.3");
    CHECK(c.listen.port == 8181);
    CHECK(c.auth.keys.at(0).digest == digest_of(long_key));

    // Text around a reference is kept, and the substituted text is never rescanned.
    env_map env2 = dev;
    env2["A"] = "${B}";
    env2["B"] = "never";
    config d = load("auth: { keys: [ { id: a, key: " + long_key + ", labels: { x: \"pre-${A}-post\" } } ] }\n", env2);
    CHECK(d.auth.keys.at(0).labels.at(0).second == "pre-${B}-post");
}

TEST_CASE("an unset ${VAR} is an error naming the field and the variable", "[config]") {
    CHECK(problems("auth:\n  keys:\n    - { id: billing, key: \"${BILLING_KEY}\" }\n") ==
          one("auth.keys[0].key: environment variable BILLING_KEY is not set"));
    CHECK(problems("upstream: { url: \"http://${UP_HOST}:${UP_PORT}\" }\n", dev) ==
          std::vector<std::string>{"upstream.url: environment variable UP_HOST is not set",
                                   "upstream.url: environment variable UP_PORT is not set"});
    CHECK(problems("logging: { level: \"${}\" }\n", dev) ==
          one("logging.level: ${ must be followed by a variable name and }; write $${ for a literal ${"));
    CHECK(problems("logging: { level: \"${LEVEL\" }\n", dev) ==
          one("logging.level: ${ must be followed by a variable name and }; write $${ for a literal ${"));
}

TEST_CASE("$${ is a literal ${ and a lone $ is kept", "[config]") {
    config c = load("auth: { keys: [ { id: a, key: " + long_key +
                        ", labels: { x: \"$${HOME}\", y: \"cost $5 $$ total\" } } ] }\n",
                    dev);
    const auto& labels = c.auth.keys.at(0).labels;
    CHECK(labels.at(0).second == "${HOME}");
    CHECK(labels.at(1).second == "cost $5 $$ total");
}

TEST_CASE("substitution never touches keys or structure", "[config]") {
    env_map env = dev;
    env["FIELD"] = "threads";
    CHECK(problems("${FIELD}: 2\n", env) == one("${FIELD}: unknown field"));
    // A value that looks like YAML stays one scalar.
    env["INJECT"] = "a\n  scopes: [admin]";
    CHECK(problems("auth: { keys: [ { id: \"${INJECT}\", key: " + long_key + " } ] }\n", env) ==
          one("auth.keys[0].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -"));
}

TEST_CASE("a substituted secret never appears in a message", "[config]") {
    env_map env{{"K", "this is not a valid key but it is secret"}};
    auto p = problems("auth: { keys: [ { id: a, key: \"${K}\" } ] }\n", env);
    CHECK(p == one("auth.keys[0].key: a plaintext key must be printable ASCII with no space and no comma"));
}

TEST_CASE("duplicate ids and duplicate secrets are refused", "[config]") {
    std::string hash = "sha256:" + hex_of(long_key);
    auto p = problems("auth:\n  keys:\n"
                      "    - { id: billing, key: " + long_key + " }\n"
                      "    - { id: orders, key: " + other_key + " }\n"
                      "    - { id: ops, hash: \"" + hash + "\" }\n"
                      "    - { id: billing, key: k3y-cccccccccccccccccccccccccccccccccccc }\n");
    CHECK(p == std::vector<std::string>{
                   "auth.keys[2].hash: same secret as auth.keys[0].key; every key needs its own secret",
                   "auth.keys[3].id: duplicate key id \"billing\", already used by auth.keys[0]",
               });
    for (const auto& line : p) {
        CHECK(line.find(long_key) == std::string::npos);
        CHECK(line.find(hex_of(long_key)) == std::string::npos);
    }
}

TEST_CASE("a short plaintext key is an error in production and a warning in development", "[config]") {
    std::string doc = "auth: { keys: [ { id: short, key: tooshort } ] }\n";
    CHECK(problems(doc) == one("auth.keys[0].key: plaintext key is shorter than 32 bytes, which "
                               "production refuses; make one with keygate gen-key"));
    config c = load(doc, dev);
    CHECK(c.warnings == one("auth.keys[0].key: plaintext key is shorter than 32 bytes; production would refuse it"));
    CHECK_FALSE(c.open_mode);
    // Exactly 32 bytes is enough.
    CHECK_NOTHROW(load("auth: { keys: [ { id: k, key: " + std::string(32, 'x') + " } ] }\n"));
    CHECK(problems("auth: { keys: [ { id: k, key: " + std::string(31, 'x') + " } ] }\n").size() == 1);
}

TEST_CASE("production refuses to start without an active key", "[config]") {
    const std::string none =
        "auth.keys: no active key; production requires at least one (add one to auth.keys, "
        "auth.keys_file or KEYGATE_API_KEYS, or check disabled, not_before and expires_at)";
    std::string k = "id: a, key: " + long_key;
    CHECK(problems("auth: { keys: [] }\n") == one(none));
    CHECK(problems("auth: { keys: [ { " + k + ", disabled: true } ] }\n") == one(none));
    CHECK(problems("auth: { keys: [ { " + k + ", expires_at: 2001-01-01T00:00:00Z } ] }\n") == one(none));
    CHECK(problems("auth: { keys: [ { " + k + ", not_before: 2999-01-01T00:00:00Z } ] }\n") == one(none));
    // One active key among inactive ones is enough.
    config c = load("auth: { keys: [ { " + k + ", disabled: true }, { id: b, key: " + other_key + " } ] }\n");
    CHECK_FALSE(c.open_mode);
    CHECK(c.auth.keys.size() == 2);
}

TEST_CASE("development without an active key runs open, with a warning", "[config]") {
    const std::string warning = "auth.keys: no active key in development: authentication is "
                                "disabled and every request is forwarded until a reload brings keys";
    config c = load("", dev);
    CHECK(c.open_mode);
    CHECK(c.warnings == one(warning));
    config d = load("auth: { keys: [ { id: a, key: " + long_key + ", disabled: true } ] }\n", dev);
    CHECK(d.open_mode);
    CHECK(d.warnings == one(warning));
    config e = load(with_key(), dev);
    CHECK_FALSE(e.open_mode);
    CHECK(e.warnings.empty());
}

TEST_CASE("upstream.tls.verify: false is refused in production only", "[config]") {
    std::string doc = with_key("upstream: { url: \"https://app:443\", tls: { verify: false } }\n");
    CHECK(problems(doc) == one("upstream.tls.verify: false is not allowed in production; trust the "
                               "upstream's certificate with upstream.tls.ca_file instead"));
    config c = load(doc, dev);
    CHECK_FALSE(c.upstream.tls.verify);
}

TEST_CASE("upstream.url is validated and split", "[config]") {
    auto up = [](const std::string& url) {
        return load(with_key("upstream: { url: \"" + url + "\" }\n")).upstream;
    };
    auto u = up("https://Example.com");
    CHECK(u.scheme == "https");
    CHECK(u.host == "Example.com");
    CHECK(u.port == 443);
    u = up("http://app/");
    CHECK(u.scheme == "http");
    CHECK(u.port == 80);
    u = up("HTTP://[::1]:8080");
    CHECK(u.scheme == "http");
    CHECK(u.host == "::1");
    CHECK(u.port == 8080);
    CHECK(u.url == "HTTP://[::1]:8080");

    auto bad = [](const std::string& url) {
        return problems(with_key("upstream: { url: \"" + url + "\" }\n"));
    };
    CHECK(bad("ftp://app:21") == one("upstream.url: scheme must be http or https"));
    CHECK(bad("app:3000") == one("upstream.url: scheme must be http or https"));
    CHECK(bad("http://app:3000/api") ==
          one("upstream.url: must not have a path; keygate forwards the request's own path"));
    CHECK(bad("http://app:99999") == one("upstream.url: port must be from 1 to 65535"));
    CHECK(bad("http://app:") == one("upstream.url: port must be from 1 to 65535"));
    CHECK(bad("http:///x") == one("upstream.url: needs a host"));
    CHECK(bad("http://user:pw@app") == one("upstream.url: must not carry credentials"));
    CHECK(bad("http://app/?q=1") == one("upstream.url: must not have a query or fragment"));
    CHECK(bad("not a url") ==
          one("upstream.url: expected http://host:port or https://host:port with no path, query or credentials"));
}

TEST_CASE("path patterns are normalised paths with * only as a final /*", "[config]") {
    CHECK(valid_path_pattern("/"));
    CHECK(valid_path_pattern("/*"));
    CHECK(valid_path_pattern("/healthz"));
    CHECK(valid_path_pattern("/healthz/"));
    CHECK(valid_path_pattern("/admin/*"));
    CHECK(valid_path_pattern("/a/b-c/~d/*"));
    CHECK(valid_path_pattern("/caf%C3%A9"));
    CHECK_FALSE(valid_path_pattern(""));
    CHECK_FALSE(valid_path_pattern("healthz"));
    CHECK_FALSE(valid_path_pattern("*"));
    CHECK_FALSE(valid_path_pattern("/admin*"));
    CHECK_FALSE(valid_path_pattern("/a/*/b"));
    CHECK_FALSE(valid_path_pattern("/a/**"));
    CHECK_FALSE(valid_path_pattern("/admin//*"));
    CHECK_FALSE(valid_path_pattern("/a//b"));
    CHECK_FALSE(valid_path_pattern("/a/./b"));
    CHECK_FALSE(valid_path_pattern("/a/../b"));
    CHECK_FALSE(valid_path_pattern("/../a"));
    CHECK_FALSE(valid_path_pattern("/%7Euser"));   // decodes to ~: not the normal form
    CHECK_FALSE(valid_path_pattern("/caf%c3%a9")); // escapes are upper-case once normalised
    CHECK_FALSE(valid_path_pattern("/a%2Fb"));
    CHECK_FALSE(valid_path_pattern("/a;b"));
    CHECK_FALSE(valid_path_pattern("/a?b"));
    CHECK_FALSE(valid_path_pattern("/a b"));
    CHECK_FALSE(valid_path_pattern("/a#b"));

    const std::string why = "not a valid path pattern; write a normalised path such as /healthz, "
                            "or a prefix ending in /* such as /admin/*";
    CHECK(problems("auth: { rules: [ { path: \"/admin*\", scopes: [admin] } ] }\n", dev) ==
          one("auth.rules[0].path: " + why));
    CHECK(problems("auth: { public_paths: [/ok, \"/a/../b\"] }\n", dev) == one("auth.public_paths[1]: " + why));
    CHECK(problems("auth: { keys: [ { id: a, key: " + long_key + ", allowed_paths: [/t/*, t] } ] }\n", dev) ==
          one("auth.keys[0].allowed_paths[1]: " + why));
    CHECK(problems("auth: { rules: [ { scopes: [a] } ] }\n", dev) == one("auth.rules[0].path: missing"));
}

TEST_CASE("patterns_overlap is true when some path matches both", "[config]") {
    struct row {
        const char* a;
        const char* b;
        bool overlap;
    };
    const row table[] = {
        {"/healthz", "/healthz", true},
        {"/healthz", "/healthz/", false},
        {"/healthz", "/health", false},
        {"/admin", "/admin/*", true}, // the prefix pattern matches its own base
        {"/admin/", "/admin/*", true},
        {"/admin/users", "/admin/*", true},
        {"/adminX", "/admin/*", false},
        {"/adm", "/admin/*", false},
        {"/admin/*", "/admin/users/*", true},
        {"/admin/*", "/adminX/*", false},
        {"/a/*", "/b/*", false},
        {"/", "/*", true},
        {"/anything", "/*", true},
        {"/*", "/x/*", true},
        {"/*", "/*", true},
        {"/", "/a/*", false},
    };
    for (const auto& r : table) {
        INFO(r.a << " vs " << r.b);
        CHECK(patterns_overlap(r.a, r.b) == r.overlap);
        CHECK(patterns_overlap(r.b, r.a) == r.overlap);
    }
}

TEST_CASE("a public path that overlaps a rule is refused", "[config]") {
    CHECK(problems(with_key("  public_paths: [/healthz, /admin/status]\n"
                            "  rules:\n    - { path: /admin/*, scopes: [admin] }\n")) ==
          one("auth.public_paths[1]: /admin/status overlaps auth.rules[0].path /admin/*, whose scopes "
              "would never be checked there; remove the public path or narrow the rule"));
    // The default public path against a catch-all rule.
    CHECK(problems(with_key("  rules:\n    - { path: /api/x, scopes: [] }\n"
                            "    - { path: /*, methods: [POST], scopes: [w] }\n")) ==
          one("auth.public_paths[0]: /healthz overlaps auth.rules[1].path /*, whose scopes "
              "would never be checked there; remove the public path or narrow the rule"));
    CHECK_NOTHROW(load(with_key("  public_paths: [/healthz, /adminx]\n"
                                "  rules:\n    - { path: /admin/*, scopes: [admin] }\n")));
}

TEST_CASE("failed_attempts.exempt holds CIDRs", "[config]") {
    auto exempt = [](const std::string& cidr) {
        return problems("auth: { failed_attempts: { exempt: [\"" + cidr + "\"] } }\n", dev);
    };
    CHECK(exempt("10.0.0.1") == one("auth.failed_attempts.exempt[0]: expected a CIDR like 10.0.0.0/8 or fd00::/8"));
    CHECK(exempt("10.0.0/8") == one("auth.failed_attempts.exempt[0]: expected a CIDR like 10.0.0.0/8 or fd00::/8"));
    CHECK(exempt("10.0.0.0/x") == one("auth.failed_attempts.exempt[0]: expected a CIDR like 10.0.0.0/8 or fd00::/8"));
    CHECK(exempt("10.0.0.0/33") == one("auth.failed_attempts.exempt[0]: prefix length is too long for the address"));
    CHECK(exempt("fd00::/129") == one("auth.failed_attempts.exempt[0]: prefix length is too long for the address"));
    CHECK(exempt("10.0.0.1/8") ==
          one("auth.failed_attempts.exempt[0]: address has bits set after the prefix length; use the network address"));
    config c = load("auth: { failed_attempts: { max: 0, exempt: [10.1.0.0/16, \"::1/128\", 0.0.0.0/0, \"2001:db8::/32\"] } }\n", dev);
    CHECK(c.auth.failed_attempts.max == 0);
    CHECK(c.auth.failed_attempts.exempt ==
          std::vector<std::string>{"10.1.0.0/16", "::1/128", "0.0.0.0/0", "2001:db8::/32"});
}

TEST_CASE("environment variables override the file, and the command line overrides both", "[config]") {
    std::string doc = with_key("listen: { address: 1.2.3.4, port: 1000 }\n"
                               "upstream: { url: \"http://file:1\" }\n"
                               "logging: { level: warn }\n"
                               "environment: production\n");
    config file_only = load(doc);
    CHECK(file_only.listen.address == "1.2.3.4");
    CHECK(file_only.listen.port == 1000);
    CHECK(file_only.upstream.host == "file");
    CHECK(file_only.logging.level == "warn");

    env_map env{{"KEYGATE_LISTEN", "[::1]:8081"},
                {"KEYGATE_UPSTREAM", "https://env.internal"},
                {"KEYGATE_LOG_LEVEL", "debug"},
                {"KEYGATE_ENV", "development"}};
    config by_env = load(doc, env);
    CHECK(by_env.environment == "development");
    CHECK(by_env.listen.address == "::1");
    CHECK(by_env.listen.port == 8081);
    CHECK(by_env.upstream.url == "https://env.internal");
    CHECK(by_env.upstream.scheme == "https");
    CHECK(by_env.upstream.host == "env.internal");
    CHECK(by_env.upstream.port == 443);
    CHECK(by_env.logging.level == "debug");

    cli_overrides cli;
    cli.listen = "127.0.0.1:9000";
    cli.upstream = "http://cli:7";
    cli.log_level = "error";
    config by_cli = load(doc, env, cli);
    CHECK(by_cli.listen.address == "127.0.0.1");
    CHECK(by_cli.listen.port == 9000);
    CHECK(by_cli.upstream.host == "cli");
    CHECK(by_cli.upstream.port == 7);
    CHECK(by_cli.logging.level == "error");

    // An empty variable counts as unset.
    config empty_vars = load(doc, {{"KEYGATE_LISTEN", ""}, {"KEYGATE_ENV", ""}});
    CHECK(empty_vars.listen.port == 1000);
    CHECK(empty_vars.environment == "production");
}

TEST_CASE("override values are validated and named by their source", "[config]") {
    auto p = problems(with_key(), {{"KEYGATE_LISTEN", "::1:8080"},
                                   {"KEYGATE_UPSTREAM", "ftp://x"},
                                   {"KEYGATE_LOG_LEVEL", "loud"}});
    CHECK(p == std::vector<std::string>{
                   "KEYGATE_LISTEN: expected address:port with an IP address, e.g. 0.0.0.0:8080 or [::1]:8080",
                   "KEYGATE_UPSTREAM: scheme must be http or https",
                   "KEYGATE_LOG_LEVEL: must be one of trace, debug, info, warn, error, critical, off",
               });
    for (std::string bad : {"8080", "0.0.0.0:", "0.0.0.0:0", "0.0.0.0:65536", "host:80", "[1.2.3.4]:80", "[::1]8080"}) {
        INFO(bad);
        cli_overrides cli;
        cli.listen = bad;
        CHECK(problems(with_key(), {}, cli) ==
              one("--listen: expected address:port with an IP address, e.g. 0.0.0.0:8080 or [::1]:8080"));
    }
    cli_overrides cli;
    cli.upstream = "http://x/path";
    cli.log_level = "INFO";
    CHECK(problems(with_key(), {}, cli) ==
          std::vector<std::string>{"--upstream: must not have a path; keygate forwards the request's own path",
                                   "--log-level: must be one of trace, debug, info, warn, error, critical, off"});
}

TEST_CASE("KEYGATE_API_KEYS adds plaintext keys split at the first colon", "[config]") {
    std::string k2 = "abc:def:" + std::string(30, 'z'); // a key may hold colons
    config c = load(with_key(), {{"KEYGATE_API_KEYS", "svc-a:" + other_key + ", svc-b:" + k2}});
    REQUIRE(c.auth.keys.size() == 3);
    CHECK(c.auth.keys[0].id == "main"); // inline keys come first
    CHECK(c.auth.keys[1].id == "svc-a");
    CHECK(c.auth.keys[1].digest == digest_of(other_key));
    CHECK(c.auth.keys[1].origin == "KEYGATE_API_KEYS[0]");
    CHECK(c.auth.keys[2].id == "svc-b");
    CHECK(c.auth.keys[2].digest == digest_of(k2));
    CHECK(c.auth.keys[2].origin == "KEYGATE_API_KEYS[1]");
    CHECK(c.auth.keys[2].from_plaintext);
    CHECK(c.auth.keys[2].scopes.empty());
    CHECK(c.auth.keys[2].labels.empty());

    // On its own it satisfies production.
    config only_env = load("", {{"KEYGATE_API_KEYS", "svc:" + long_key}});
    CHECK(only_env.auth.keys.size() == 1);

    // The same rules as configured keys, and a secret never appears in a message.
    auto p = problems("", {{"KEYGATE_API_KEYS", "nocolon" + long_key + ",:" + long_key + ",,bad id:" +
                                                    other_key + ",short:abc,dup:" + long_key + ",dup:" + other_key}});
    CHECK(p == std::vector<std::string>{
                   "KEYGATE_API_KEYS[0]: expected id:key",
                   "KEYGATE_API_KEYS[1].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -",
                   "KEYGATE_API_KEYS[2]: empty entry; remove the extra comma",
                   "KEYGATE_API_KEYS[3].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -",
                   "KEYGATE_API_KEYS[4].key: plaintext key is shorter than 32 bytes, which production "
                   "refuses; make one with keygate gen-key",
                   "KEYGATE_API_KEYS[6].id: duplicate key id \"dup\", already used by KEYGATE_API_KEYS[5]",
               });
    for (const auto& line : p) {
        CHECK(line.find(long_key) == std::string::npos);
        CHECK(line.find("abc") == std::string::npos);
    }
    CHECK(problems(with_key(), {{"KEYGATE_API_KEYS", "other:" + long_key}}) ==
          one("KEYGATE_API_KEYS[0].key: same secret as auth.keys[0].key; every key needs its own secret"));
    CHECK(problems(with_key(), {{"KEYGATE_API_KEYS", "x:has space"}}) ==
          one("KEYGATE_API_KEYS[0].key: a plaintext key must be printable ASCII with no space and no comma"));
}

TEST_CASE("keys_file in YAML is read relative to the config and merged", "[config][keys_file]") {
    temp_dir tmp;
    tmp.write("keys.yaml", "keys:\n"
                           "  - id: from-file\n"
                           "    key: \"${FILE_KEY}\"\n"
                           "    scopes: [a]\n"
                           "  - id: hashed\n"
                           "    hash: sha256:" + hex_of(other_key) + "\n");
    config c = load(with_key("  keys_file: keys.yaml\n"), {{"FILE_KEY", "file-key-0123456789abcdef0123456789"}},
                    {}, tmp.dir.string());
    CHECK(c.auth.keys_file == (tmp.dir / "keys.yaml").string());
    REQUIRE(c.auth.keys.size() == 3);
    CHECK(c.auth.keys[1].id == "from-file");
    CHECK(c.auth.keys[1].digest == digest_of("file-key-0123456789abcdef0123456789"));
    CHECK(c.auth.keys[1].origin == c.auth.keys_file + ": keys[0]");
    CHECK(c.auth.keys[2].digest == digest_of(other_key));

    // The keys file alone satisfies production.
    config alone = load("auth: { keys_file: keys.yaml }\n", {{"FILE_KEY", "file-key-0123456789abcdef0123456789"}},
                        {}, tmp.dir.string());
    CHECK(alone.auth.keys.size() == 2);
}

TEST_CASE("problems inside a keys file are prefixed with its path", "[config][keys_file]") {
    temp_dir tmp;
    std::string file = tmp.write("keys.yaml", "keys:\n"
                                              "  - { id: a, key: " + long_key + " }\n"
                                              "  - { id: b, key: " + other_key + ", disabled: false, disabled: true }\n"
                                              "  - { id: \"c d\", hash: sha256:" + hex_of("x") + ", extra: 1 }\n"
                                              "  - { id: a, key: k3y-cccccccccccccccccccccccccccccccccccc }\n"
                                              "other: 1\n");
    auto p = problems(with_key("  keys_file: " + file + "\n"), dev);
    CHECK(p == std::vector<std::string>{
                   file + ": keys[1].disabled: repeated mapping key; keep only one",
                   file + ": keys[2].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -",
                   file + ": keys[2].extra: unknown field",
                   file + ": other: unknown field",
                   file + ": keys[0].key: same secret as auth.keys[0].key; every key needs its own secret",
                   file + ": keys[3].id: duplicate key id \"a\", already used by " + file + ": keys[0]",
               });

    try {
        load_keys_file(file, env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        // Set-wide rules are validate_key_set's job; per-entry problems are reported here.
        CHECK(e.problems == std::vector<std::string>{
                                file + ": keys[1].disabled: repeated mapping key; keep only one",
                                file + ": keys[2].id: must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -",
                                file + ": keys[2].extra: unknown field",
                                file + ": other: unknown field",
                            });
    }
}

TEST_CASE("a missing, unreadable or empty keys file is an error", "[config][keys_file]") {
    temp_dir tmp;
    std::string missing = (tmp.dir / "nope.yaml").string();
    CHECK(problems(with_key("  keys_file: " + missing + "\n")) ==
          one("auth.keys_file: cannot read " + missing + ": No such file or directory"));
    CHECK(problems(with_key("  keys_file: " + tmp.dir.string() + "\n")) ==
          one("auth.keys_file: cannot read " + tmp.dir.string() + ": Is a directory"));
    try {
        load_keys_file(missing, env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == one(missing + ": cannot read the keys file: No such file or directory"));
    }
    std::string empty = tmp.write("empty.yaml", "");
    CHECK_THROWS_AS(load_keys_file(empty, env_of({})), config_error);
    std::string no_list = tmp.write("nolist.yaml", "{}\n");
    try {
        load_keys_file(no_list, env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == one(no_list + ": keys: missing; list the keys under a top-level keys:"));
    }
    // The text variant parses given bytes; the path only names the format and the origin.
    auto from_text = load_keys_text(R"({"keys": [{"id": "t", "key": ")" + long_key + R"("}]})",
                                    "/virtual/keys.json", env_of({}));
    REQUIRE(from_text.size() == 1);
    CHECK(from_text[0].digest == digest_of(long_key));
    CHECK(from_text[0].origin == "/virtual/keys.json: keys[0]");
    try {
        load_keys_text("keys: [ { id: t } ]\n", "/virtual/keys.yaml", env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == one("/virtual/keys.yaml: keys[0]: needs a hash (preferred) or a key"));
    }
    // An explicitly empty list is a valid file with no keys.
    std::string none = tmp.write("none.yaml", "keys: []\n");
    CHECK(load_keys_file(none, env_of({})).empty());
}

TEST_CASE("keys_file in JSON has the same shape and rules", "[config][keys_file]") {
    std::string fixture = KEYGATE_FIXTURES "/config/keys.json";
    auto keys = load_keys_file(fixture, env_of({}));
    REQUIRE(keys.size() == 1);
    CHECK(keys[0].id == "file-json");
    CHECK(keys[0].digest == digest_of("fixture-key-file-json-0123456789abcdef"));
    CHECK(keys[0].scopes == std::vector<std::string>{"reports:read"});
    CHECK(keys[0].labels == std::vector<std::pair<std::string, std::string>>{{"tenant", "acme"}});
    CHECK(keys[0].expires_at == utc(2999, 1, 1));
    REQUIRE(keys[0].rate_limit);
    CHECK(keys[0].rate_limit->requests_per_second == 2.5);
    CHECK(keys[0].rate_limit->burst == 5);
    CHECK(keys[0].origin == fixture + ": keys[0]");

    temp_dir tmp;
    std::string bad = tmp.write("keys.json", R"({"keys": [
        {"id": "a", "key": "${JSON_KEY}", "disabled": false, "disabled": true},
        {"id": 5, "hash": "sha256:00", "scopes": "x"},
        {"id": "c", "key": "k3y-cccccccccccccccccccccccccccccccccccc", "expires_at": "2027-06-30T00:00:00"}
    ], "keys": []})");
    try {
        load_keys_file(bad, env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == std::vector<std::string>{
                                bad + ": keys[0].key: environment variable JSON_KEY is not set",
                                bad + ": keys[0].disabled: repeated mapping key; keep only one",
                                bad + ": keys[1].hash: expected sha256: followed by 64 hex digits (keygate hash-key prints one)",
                                bad + ": keys[1].scopes: expected a list",
                                bad + ": keys[2].expires_at: not an RFC 3339 time with a zone",
                                bad + ": keys: repeated mapping key; keep only one",
                            });
    }
    std::string broken = tmp.write("broken.json", "{\"keys\": [\n  {\"id\": \"a\",}\n]}");
    try {
        load_keys_file(broken, env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        REQUIRE(e.problems.size() == 1);
        CHECK(e.problems[0].rfind(broken + ": invalid JSON at line 2, column ", 0) == 0);
    }
    std::string trailing = tmp.write("trailing.json", "{\"keys\": []} {}");
    CHECK_THROWS_AS(load_keys_file(trailing, env_of({})), config_error);

    // Through load_config, with a relative path.
    tmp.write("k.json", R"({"keys": [{"id": "j", "hash": "sha256:)" + hex_of(other_key) + R"("}]})");
    config c = load("auth: { keys_file: k.json }\n", {}, {}, tmp.dir.string());
    REQUIRE(c.auth.keys.size() == 1);
    CHECK(c.auth.keys[0].digest == digest_of(other_key));
}

TEST_CASE("a JSON keys file of 100,000 hashed keys loads quickly", "[config][keys_file]") {
    temp_dir tmp;
    std::string text = "{\"keys\": [\n";
    for (int i = 0; i < 100'000; ++i) {
        std::string id = "key-" + std::to_string(i);
        if (i) text += ",\n";
        text += R"({"id": ")" + id + R"(", "hash": "sha256:)" + hex_of(id) +
                R"(", "scopes": ["orders:read", "orders:write"], "labels": {"tenant": "t)" +
                std::to_string(i % 100) + R"("}, "expires_at": "2999-01-01T00:00:00Z"})";
    }
    text += "\n]}\n";
    std::string file = tmp.write("big.json", text);

    auto start = steady_clock::now();
    auto keys = load_keys_file(file, env_of({}));
    validate_key_set(keys, "production");
    auto took = steady_clock::now() - start;
    REQUIRE(keys.size() == 100'000);
    CHECK(keys[99'999].digest == digest_of("key-99999"));
    CHECK(keys[99'999].labels.at(0).second == "t99");
    INFO("took " << duration_cast<milliseconds>(took).count() << " ms");
    // Timing means something only in an optimised build without sanitizers.
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
    CHECK(took < 1s);
#endif
}

TEST_CASE("validate_key_set checks the combined set", "[config]") {
    auto key = [](std::string id, std::string secret, bool plain, std::string origin) {
        key_config k;
        k.id = std::move(id);
        k.digest = crypto::sha256(secret);
        k.from_plaintext = plain;
        k.plaintext_length = plain ? secret.size() : 0;
        k.origin = std::move(origin);
        return k;
    };
    std::vector<key_config> ok{key("a", long_key, true, "auth.keys[0]"), key("b", "short", false, "f: keys[0]")};
    CHECK_NOTHROW(validate_key_set(ok, "production"));
    CHECK_NOTHROW(validate_key_set({}, "production")); // a reload may empty the set

    std::vector<key_config> shorty{key("s", "short", true, "f: keys[3]")};
    CHECK_NOTHROW(validate_key_set(shorty, "development"));
    try {
        validate_key_set(shorty, "production");
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == one("f: keys[3].key: plaintext key is shorter than 32 bytes, which production "
                                "refuses; make one with keygate gen-key"));
    }
    std::vector<key_config> dups{key("a", long_key, true, "auth.keys[0]"), key("a", other_key, false, "f: keys[0]"),
                                 key("c", other_key, true, "f: keys[1]")};
    try {
        validate_key_set(dups, "development");
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == std::vector<std::string>{
                                "f: keys[0].id: duplicate key id \"a\", already used by auth.keys[0]",
                                "f: keys[1].key: same secret as f: keys[0].hash; every key needs its own secret",
                            });
    }
}

TEST_CASE("load_config_file reads the file and names it when it cannot", "[config]") {
    temp_dir tmp;
    std::string missing = (tmp.dir / "keygate.yaml").string();
    try {
        load_config_file(missing, env_of({}));
        FAIL("accepted");
    } catch (const config_error& e) {
        CHECK(e.problems == one(missing + ": cannot read the configuration file: No such file or directory"));
    }
    tmp.write("keys.yaml", "keys: [ { id: f, key: " + long_key + " } ]\n");
    std::string cfg = tmp.write("keygate.yaml", "auth: { keys_file: keys.yaml }\n");
    config c = load_config_file(cfg, env_of({}));
    CHECK(c.auth.keys_file == (tmp.dir / "keys.yaml").string());
    CHECK(c.auth.keys.size() == 1);
}

TEST_CASE("durations are whole numbers with ms, s, m or h", "[config]") {
    CHECK(parse_duration("250ms") == 250ms);
    CHECK(parse_duration("10s") == 10s);
    CHECK(parse_duration("5m") == 5min);
    CHECK(parse_duration("1h") == 1h);
    CHECK(parse_duration("0s") == 0ms);
    CHECK(parse_duration("007s") == 7s);
    for (const char* bad : {"", "s", "10", "10 s", " 10s", "10s ", "1.5s", "-1s", "+1s", "10S", "10sec",
                            "1d", "10us", "ms", "99999999999999999999h", "9223372036854775807h"}) {
        INFO(bad);
        CHECK_FALSE(parse_duration(bad));
    }
}

TEST_CASE("RFC 3339 times need a zone and a real date", "[config]") {
    CHECK(parse_rfc3339("2027-06-30T00:00:00Z") == utc(2027, 6, 30));
    CHECK(parse_rfc3339("2027-06-30t12:34:56z") == utc(2027, 6, 30, 12, 34, 56));
    CHECK(parse_rfc3339("2027-06-30T12:34:56.999999Z") == utc(2027, 6, 30, 12, 34, 56)); // truncated
    CHECK(parse_rfc3339("2027-06-30T02:00:00+02:00") == utc(2027, 6, 30));
    CHECK(parse_rfc3339("2027-06-30T00:00:00+05:30") == utc(2027, 6, 29, 18, 30));
    CHECK(parse_rfc3339("2027-06-29T19:00:00-05:00") == utc(2027, 6, 30));
    CHECK(parse_rfc3339("2027-06-30T00:00:00-00:00") == utc(2027, 6, 30));
    CHECK(parse_rfc3339("2027-01-01T00:30:00+01:00") == utc(2026, 12, 31, 23, 30));
    CHECK(parse_rfc3339("2024-02-29T00:00:00Z") == utc(2024, 2, 29));
    CHECK(parse_rfc3339("2000-02-29T00:00:00Z") == utc(2000, 2, 29));
    CHECK(parse_rfc3339("2016-12-31T23:59:60Z") == utc(2017, 1, 1)); // leap second
    for (const char* bad : {"2027-06-30T00:00:00", "2027-06-30", "2027-06-30 00:00:00Z", "2027-06-30T00:00Z",
                            "2027-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
                            "2027-13-01T00:00:00Z", "2027-00-01T00:00:00Z", "2027-06-00T00:00:00Z",
                            "2027-04-31T00:00:00Z", "2027-06-30T24:00:00Z", "2027-06-30T23:60:00Z",
                            "2027-06-30T23:59:61Z", "2027-06-30T00:00:00.Z", "2027-06-30T00:00:00+0200",
                            "2027-06-30T00:00:00+02", "2027-06-30T00:00:00+24:00", "2027-06-30T00:00:00+02:60",
                            "2027-06-30T00:00:00ZZ", "2027-06-30T00:00:00 Z", "27-06-30T00:00:00Z",
                            "2027-6-30T00:00:00Z", "2027/06/30T00:00:00Z", "2027-06-30T0:00:00Z", ""}) {
        INFO(bad);
        CHECK_FALSE(parse_rfc3339(bad));
    }
}
