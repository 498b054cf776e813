// Fuzz target: the configuration loader (DESIGN.md §2, §3, config.hpp).
// Any bytes go to load_config as the YAML text, with a fixed environment and a private
// base directory holding a valid keys.yaml and keys.json. The loader must return a
// config or throw config_error; anything else (another exception, a crash) is a bug.
#include "keygate/config.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace {

// Stops the run with a message: libFuzzer keeps the input as a crash, the replay test fails.
[[noreturn]] void invariant_failed(const char* what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_config: invariant failed: %s [%.*s]\n", what,
                 static_cast<int>(detail.size()), detail.data());
    std::abort();
}

#define FUZZ_CHECK(cond, detail) \
    do { if (!(cond)) invariant_failed(#cond, (detail)); } while (0)

// 40 printable bytes: long enough for the production rule.
constexpr const char* long_key = "fuzz-key-0123456789abcdefghijklmnopqrstu";

// The only variables `${VAR}` can name. No value (or concatenation of values) spells a
// path outside the base directory, so keys_file stays inside it or fails to open.
const std::map<std::string, std::string>& fixed_env() {
    static const std::map<std::string, std::string> env{
        {"API_KEY", long_key},
        {"SHORT_KEY", "short"},
        {"EMPTY", ""},
        {"PORT", "8081"},
        {"KEYS", "keys.yaml"},
        {"KEYS_JSON", "keys.json"},
        {"UPSTREAM", "http://127.0.0.1:3000"},
        {"HASH", "sha256:48efa03353ef08b2a88d0e1cb8f4276fbf2766030af2ca67999f4d203da93d98"},
        {"SCOPE", "orders:read"},
        {"WHEN", "2999-06-30T00:00:00Z"},
    };
    return env;
}

std::optional<std::string> lookup(const std::string& name) {
    const auto& env = fixed_env();
    if (auto it = env.find(name); it != env.end()) return it->second;
    return std::nullopt;
}

void write_file(const std::filesystem::path& file, std::string_view text) {
    std::ofstream out(file, std::ios::binary);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

// A private directory for relative keys_file names, removed at exit.
struct base_dir {
    std::string path;

    base_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "keygate-fuzz-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) {
            std::perror("mkdtemp");
            std::abort();
        }
        path = tmpl;
        write_file(std::filesystem::path(path) / "keys.yaml",
                   "keys:\n"
                   "  - id: file-yaml\n"
                   "    hash: sha256:85008f364584dea44e7d34b676aefac2ef848ede3ddcc6b1e295af25f077d352\n"
                   "    scopes: [reports:read]\n"
                   "  - id: file-env\n"
                   "    key: ${API_KEY}\n");
        write_file(std::filesystem::path(path) / "keys.json",
                   R"({"keys": [{"id": "file-json", "scopes": ["reports:read"],)"
                   R"( "hash": "sha256:4aa3fd735dbe6037f3c0caae228683d98cc38a67a64bdfff33698c1b44bb9237",)"
                   R"( "expires_at": "2999-01-01T00:00:00Z"}]})");
        std::filesystem::create_directory(std::filesystem::path(path) / "subdir");
    }
    ~base_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

const std::string& base() {
    static base_dir dir;
    return dir.path;
}

bool contains(std::string_view s, std::string_view part) {
    return s.find(part) != std::string_view::npos;
}

// keys_file may name any file, and reading /dev/zero or a FIFO never ends: that is the
// operator's business, not a bug, so inputs that could name such a file are skipped.
// YAML's double-quoted hex escapes (`\x2f`) and escaped line breaks can spell any name,
// and `${EMPTY}` can split one, so they are skipped too; the other escapes (`\n`, `\t`...)
// are still fuzzed. No other value of the fixed environment can complete such a name.
bool may_name_special_file(std::string_view text) {
    std::string probe(text);
    for (std::size_t at; (at = probe.find("${EMPTY}")) != std::string::npos;) probe.erase(at, 8);
    for (std::string_view part : {"dev/", "proc/", "sys/", "run/", "\\x", "\\u", "\\U",
                                  "\\\n", "\\\r"})
        if (contains(probe, part)) return true;
    return false;
}

void check_problems(const keygate::config_error& e, std::string_view input) {
    FUZZ_CHECK(!e.problems.empty(), input);
    for (const auto& line : e.problems) {
        FUZZ_CHECK(!line.empty(), input);
        FUZZ_CHECK(line.find('\n') == std::string::npos, line);
        // The plaintext key of the environment is a secret: no message may echo it.
        FUZZ_CHECK(!contains(line, long_key) || contains(input, long_key), line);
    }
}

void check_config(const keygate::config& cfg, std::string_view input) {
    FUZZ_CHECK(cfg.environment == "production" || cfg.environment == "development", input);
    if (cfg.environment == "production") {
        // Fail closed: production never starts without a key, never in open mode.
        FUZZ_CHECK(!cfg.auth.keys.empty(), input);
        FUZZ_CHECK(!cfg.open_mode, input);
        FUZZ_CHECK(cfg.upstream.tls.verify, input);
    }
    FUZZ_CHECK(cfg.upstream.scheme == "http" || cfg.upstream.scheme == "https", input);
    FUZZ_CHECK(!cfg.auth.identity_header_prefix.empty(), input);
    for (const auto& line : cfg.warnings) FUZZ_CHECK(line.find('\n') == std::string::npos, line);
    for (const auto& p : cfg.auth.public_paths) FUZZ_CHECK(keygate::valid_path_pattern(p), p);
    for (const auto& r : cfg.auth.rules) FUZZ_CHECK(keygate::valid_path_pattern(r.path), r.path);
    for (const auto& k : cfg.auth.keys) {
        FUZZ_CHECK(!k.id.empty() && k.id.size() <= 128, k.id);
        for (const auto& p : k.allowed_paths) FUZZ_CHECK(keygate::valid_path_pattern(p), p);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    if (may_name_special_file(text)) return 0;

    keygate::config cfg;
    try {
        cfg = keygate::load_config(text, lookup, {}, base());
    } catch (const keygate::config_error& e) {
        check_problems(e, text);
        return 0;
    } catch (const std::exception& e) {
        invariant_failed("load_config threw something other than config_error", e.what());
    } catch (...) {
        invariant_failed("load_config threw something other than config_error", "(not a std::exception)");
    }
    check_config(cfg, text);
    return 0;
}
