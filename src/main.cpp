// The command line: run, check-config, hash-key, gen-key (DESIGN.md §4).
#include "keygate/access_log.hpp"
#include "keygate/admin.hpp"
#include "keygate/config.hpp"
#include "keygate/crypto.hpp"
#include "keygate/key_store.hpp"
#include "keygate/server.hpp"
#include "keygate/tls.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#ifndef KEYGATE_VERSION
#define KEYGATE_VERSION "0.0.0"
#endif

namespace {

constexpr int exit_usage = 64;  // EX_USAGE
constexpr int exit_config = 78; // EX_CONFIG

constexpr const char* help_text = R"(keygate - an authenticating reverse proxy for a sidecar

Usage:
  keygate [run] [options]          serve (the default command)
  keygate check-config [options]   validate the configuration and keys, print a summary
  keygate hash-key                 read a key on stdin, print sha256:<hex>
  keygate gen-key                  print a new random key (43 characters, base64url)
  keygate healthcheck [--url URL]  GET the admin /healthz (default from the configuration);
                                   exit 0 when it answers 200, else 1
  keygate --version                print the version
  keygate --help                   print this help

Options:
  --config PATH        configuration file (default: $KEYGATE_CONFIG, else config/keygate.yaml)
  --listen HOST:PORT   override listen.address and listen.port
  --upstream URL       override upstream.url
  --log-level LEVEL    override logging.level (trace, debug, info, warn, error, critical, off)
  --url URL            healthcheck only: the URL to GET (default http://127.0.0.1:<admin.port>/healthz)

Environment:
  KEYGATE_ENV, KEYGATE_CONFIG, KEYGATE_LISTEN, KEYGATE_UPSTREAM, KEYGATE_LOG_LEVEL,
  KEYGATE_API_KEYS (comma-separated id:key pairs)

Exit codes: 0 success, 64 usage error, 78 configuration error.
)";

struct options {
    std::string command = "run";
    std::string config_path;
    keygate::cli_overrides cli;
    std::string url;
};

int usage_error(const std::string& what) {
    std::cerr << "keygate: " << what << " (see keygate --help)\n";
    return exit_usage;
}

int config_failure(const keygate::config_error& e) {
    for (const auto& p : e.problems) std::cerr << "keygate: " << p << "\n";
    return exit_config;
}

std::string config_path(const options& o, const keygate::env_lookup& env) {
    if (!o.config_path.empty()) return o.config_path;
    if (auto v = env("KEYGATE_CONFIG"); v && !v->empty()) return *v;
    return "config/keygate.yaml";
}

std::string format_time(keygate::sys_seconds t) {
    auto days = std::chrono::floor<std::chrono::days>(t);
    std::chrono::year_month_day ymd(days);
    std::chrono::hh_mm_ss hms(t - days);
    return fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z", static_cast<int>(ymd.year()),
                       static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                       hms.hours().count(), hms.minutes().count(), hms.seconds().count());
}

int check_config(const options& o) {
    auto env = keygate::process_env();
    keygate::config cfg;
    try {
        cfg = keygate::load_config_file(config_path(o, env), env, o.cli);
        // Startup loads the TLS files; so does the check.
        keygate::load_tls(cfg);
    } catch (const keygate::config_error& e) {
        return config_failure(e);
    }
    auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
    std::cout << "configuration OK\n"
              << "environment: " << cfg.environment << "\n"
              << "listen: " << cfg.listen.address << ":" << cfg.listen.port << "\n"
              << "upstream: " << cfg.upstream.url << "\n"
              << "keys: " << cfg.auth.keys.size() << "\n";
    for (const auto& k : cfg.auth.keys) {
        std::string state = "active";
        if (k.disabled) state = "disabled";
        else if (k.not_before && now < *k.not_before) state = "not yet valid";
        else if (k.expires_at && now >= *k.expires_at) state = "expired";
        std::string scopes;
        for (const auto& s : k.scopes) scopes += (scopes.empty() ? "" : ",") + s;
        std::cout << "  - id: " << k.id << "  state: " << state
                  << "  scopes: " << (scopes.empty() ? "-" : scopes)
                  << "  expires_at: " << (k.expires_at ? format_time(*k.expires_at) : "-") << "\n";
    }
    std::cout << "rules: " << cfg.auth.rules.size() << "\n";
    for (const auto& w : cfg.warnings) std::cerr << "keygate: warning: " << w << "\n";
    return 0;
}

int hash_key() {
    std::string key((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    // One trailing newline (LF or CRLF) is the terminal's, not the key's.
    if (!key.empty() && key.back() == '\n') {
        key.pop_back();
        if (!key.empty() && key.back() == '\r') key.pop_back();
    }
    if (key.empty()) {
        std::cerr << "keygate: no key on standard input\n";
        return exit_usage;
    }
    std::cout << keygate::crypto::hash_key(key) << "\n";
    return 0;
}

int healthcheck(const options& o) {
    std::string url = o.url;
    if (url.empty()) {
        // Without --url, ask the admin port of the configuration on loopback; a broken
        // configuration falls back to the default port rather than failing the probe.
        unsigned port = 9090;
        auto env = keygate::process_env();
        try {
            port = keygate::load_config_file(config_path(o, env), env, o.cli).admin.port;
        } catch (const keygate::config_error&) {
        }
        url = fmt::format("http://127.0.0.1:{}/healthz", port);
    }
    return keygate::run_healthcheck(url, 3000);
}

int run(const options& o) {
    auto env = keygate::process_env();
    try {
        auto cfg = keygate::load_config_file(config_path(o, env), env, o.cli);
        keygate::setup_logging(cfg.logging.level, cfg.logging.format);
        for (const auto& w : cfg.warnings) keygate::log_message("warn", w);
        keygate::server srv(std::move(cfg), env);
        return srv.run();
    } catch (const keygate::config_error& e) {
        return config_failure(e);
    }
}

} // namespace

int main(int argc, char** argv) {
    options o;
    std::vector<std::string> args(argv + 1, argv + argc);
    bool command_seen = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string* {
            return i + 1 < args.size() ? &args[++i] : nullptr;
        };
        if (a == "--help" || a == "-h") {
            std::cout << help_text;
            return 0;
        }
        if (a == "--version") {
            std::cout << "keygate " << KEYGATE_VERSION << "\n";
            return 0;
        }
        if (a == "--config" || a == "--listen" || a == "--upstream" || a == "--log-level" || a == "--url") {
            const std::string* v = value();
            if (!v) return usage_error(a + " needs a value");
            if (a == "--config") o.config_path = *v;
            else if (a == "--listen") o.cli.listen = *v;
            else if (a == "--upstream") o.cli.upstream = *v;
            else if (a == "--url") o.url = *v;
            else o.cli.log_level = *v;
            continue;
        }
        if (a.rfind("--config=", 0) == 0) {
            o.config_path = a.substr(9);
            continue;
        }
        if (!command_seen && (a == "run" || a == "check-config" || a == "hash-key" || a == "gen-key" ||
                              a == "healthcheck")) {
            o.command = a;
            command_seen = true;
            continue;
        }
        return usage_error("unknown argument '" + a + "'");
    }

    try {
        if (o.command == "gen-key") {
            std::cout << keygate::crypto::generate_key() << "\n";
            return 0;
        }
        if (o.command == "hash-key") return hash_key();
        if (o.command == "healthcheck") return healthcheck(o);
        if (o.command == "check-config") return check_config(o);
        return run(o);
    } catch (const std::exception& e) {
        std::cerr << "keygate: " << e.what() << "\n";
        return 1;
    }
}
