// Configuration: plain structs and the loader that validates them (DESIGN.md §2, §3).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keygate {

using millis = std::chrono::milliseconds;
using sys_seconds = std::chrono::sys_seconds;
using digest_t = std::array<unsigned char, 32>;

struct rate_limit_config {
    double requests_per_second = 0;
    double burst = 0;
};

/// One key as configured: the plaintext is never kept, only its SHA-256 digest.
struct key_config {
    std::string id;
    digest_t digest{};
    bool from_plaintext = false;      // true when given as `key:` (hashed at load)
    std::size_t plaintext_length = 0; // for the production "at least 32 bytes" rule
    std::vector<std::string> scopes;  // config order
    std::vector<std::pair<std::string, std::string>> labels; // config order
    std::optional<sys_seconds> not_before;
    std::optional<sys_seconds> expires_at;
    bool disabled = false;
    std::optional<rate_limit_config> rate_limit;
    std::vector<std::string> allowed_paths; // validated path patterns
    std::string origin;                      // where it came from, e.g. "auth.keys[2]"
};

struct rule_config {
    std::string path;                 // pattern
    std::vector<std::string> methods; // empty = every method
    std::vector<std::string> scopes;
};

struct failed_attempts_config {
    unsigned max = 20;
    millis window{60'000};
    millis block{300'000};
    std::vector<std::string> exempt; // CIDRs, validated
};

struct listen_tls_config {
    std::string cert_file;
    std::string key_file;
    std::string min_version = "1.2"; // "1.2" or "1.3"
};

struct upstream_tls_config {
    bool verify = true;
    std::string ca_file;
    std::string server_name;
};

struct config {
    std::string environment = "production"; // "production" or "development"

    struct listen_t {
        std::string address = "0.0.0.0";
        std::uint16_t port = 8080;
        std::optional<listen_tls_config> tls;
    } listen;

    struct upstream_t {
        std::string url = "http://127.0.0.1:3000";
        std::string scheme = "http"; // derived from url: "http" or "https"
        std::string host = "127.0.0.1";
        std::uint16_t port = 3000;
        millis connect_timeout{5'000};
        millis response_timeout{60'000};
        std::size_t max_idle_connections = 64;
        upstream_tls_config tls;
    } upstream;

    struct admin_t {
        std::string address = "0.0.0.0";
        std::uint16_t port = 9090;
    } admin;

    struct auth_t {
        std::string header = "X-API-Key";
        bool accept_bearer = false;
        bool strip_credentials = true;
        std::string identity_header_prefix = "X-Keygate-";
        bool hide_denials = false;
        std::vector<std::string> public_paths{"/healthz"};
        failed_attempts_config failed_attempts;
        millis reload_interval{2'000};
        std::string keys_file; // empty = none
        std::vector<key_config> keys; // inline ∪ KEYGATE_API_KEYS ∪ keys_file, validated together
        std::vector<rule_config> rules;
    } auth;

    struct limits_t {
        std::size_t max_header_bytes = 32'768;
        std::size_t max_headers = 100;
        std::uint64_t max_body_bytes = 16'777'216;
        millis header_timeout{10'000};
        millis idle_timeout{60'000};
        std::size_t max_connections = 10'000;
        millis drain_delay{0};
        millis drain_timeout{25'000};
    } limits;

    struct logging_t {
        std::string level = "info"; // trace debug info warn error critical off
        std::string format = "json"; // json or text
        bool access_log = true;
    } logging;

    unsigned threads = 0; // 0 = CPUs this process may use

    /// Development with no active key at startup: authentication is off until a reload brings keys.
    bool open_mode = false;
    /// Non-fatal findings (short keys in development, open mode), one line each.
    std::vector<std::string> warnings;
};

/// Thrown by the loaders; `problems` holds one line per problem, each naming the field path.
struct config_error : std::runtime_error {
    explicit config_error(std::vector<std::string> problems);
    /// Every problem on one line, separated by "; " (for a log line).
    std::string summary() const;
    std::vector<std::string> problems;
};

/// Reads an environment variable; nullopt when unset.
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;

/// The process environment.
env_lookup process_env();

/// Command-line overrides (highest precedence).
struct cli_overrides {
    std::optional<std::string> listen;    // host:port
    std::optional<std::string> upstream;  // URL
    std::optional<std::string> log_level;
};

/// Parses and validates a whole configuration: `${VAR}` substitution, KEYGATE_* overrides,
/// the keys file (read from disk, relative paths against `base_dir`) and every rule of §2.
/// Throws config_error listing every problem.
config load_config(std::string_view yaml_text, const env_lookup& env,
                   const cli_overrides& cli = {}, const std::string& base_dir = ".");

/// Reads the file at `path` and calls load_config; an unreadable file is a config_error.
config load_config_file(const std::string& path, const env_lookup& env,
                        const cli_overrides& cli = {});

/// Parses a keys file (YAML with a top-level `keys:` list, or JSON of the same shape when
/// `path` ends in `.json`), validating each entry; error paths start with `path`.
/// Throws config_error.
std::vector<key_config> load_keys_file(const std::string& path, const env_lookup& env);

/// Like load_keys_file, for content already read from `path` (which picks JSON or YAML and
/// prefixes the error paths), so a reload applies exactly the bytes it compared.
std::vector<key_config> load_keys_text(std::string_view text, const std::string& path,
                                       const env_lookup& env);

/// Validates the combined key set: duplicate ids or secrets, and in production the
/// short-plaintext rule. Throws config_error. Used at startup and on every reload.
void validate_key_set(const std::vector<key_config>& keys, const std::string& environment);

/// Parses `250ms`, `10s`, `5m`, `1h`.
std::optional<millis> parse_duration(std::string_view text);

/// Parses an RFC 3339 time that carries a zone (`Z` or `±hh:mm`); fractions are truncated.
std::optional<sys_seconds> parse_rfc3339(std::string_view text);

/// True when `pattern` is a valid path pattern: a normalised path, `*` only as a final `/*`.
bool valid_path_pattern(std::string_view pattern);

/// True when some path matches both patterns.
bool patterns_overlap(std::string_view a, std::string_view b);

} // namespace keygate
