// Fuzz target: request-target normalisation (DESIGN.md §1.2, path.hpp).
// Any bytes go to normalise_target; an accepted path must be in normal form and
// normalising it again must change nothing.
#include "keygate/path.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

// Stops the run with a message: libFuzzer keeps the input as a crash, the replay test fails.
[[noreturn]] void invariant_failed(const char* what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_path: invariant failed: %s [%.*s]\n", what,
                 static_cast<int>(detail.size()), detail.data());
    std::abort();
}

#define FUZZ_CHECK(cond, detail) \
    do { if (!(cond)) invariant_failed(#cond, (detail)); } while (0)

bool contains(std::string_view s, std::string_view part) {
    return s.find(part) != std::string_view::npos;
}

bool ends_with(std::string_view s, std::string_view tail) {
    return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

bool is_upper_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

int hex_value(char c) { return c <= '9' ? c - '0' : c - 'A' + 10; }

bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

// The promises of normalise_target about an accepted path.
void check_normal_form(std::string_view path) {
    FUZZ_CHECK(!path.empty() && path.front() == '/', path);
    FUZZ_CHECK(!contains(path, "/../"), path);
    FUZZ_CHECK(!contains(path, "/./"), path);
    FUZZ_CHECK(!contains(path, "//"), path);
    FUZZ_CHECK(!ends_with(path, "/.."), path);
    FUZZ_CHECK(!ends_with(path, "/."), path);
    FUZZ_CHECK(!contains(path, "\\"), path);
    FUZZ_CHECK(!contains(path, ";"), path);
    FUZZ_CHECK(!contains(path, "?"), path);
    FUZZ_CHECK(!contains(path, "#"), path);
    for (std::string_view bad : {"%2F", "%2f", "%5C", "%5c", "%00"})
        FUZZ_CHECK(!contains(path, bad), path);
    for (std::size_t i = 0; i < path.size(); ++i) {
        auto c = static_cast<unsigned char>(path[i]);
        FUZZ_CHECK(c > 0x20 && c < 0x7f, path);
        if (c != '%') continue;
        // Every escape left is canonical: upper-case hex of a byte that must stay escaped.
        FUZZ_CHECK(i + 2 < path.size() && is_upper_hex(path[i + 1]) && is_upper_hex(path[i + 2]),
                   path);
        auto v = static_cast<unsigned char>(hex_value(path[i + 1]) << 4 | hex_value(path[i + 2]));
        FUZZ_CHECK(!is_unreserved(v), path);
        i += 2;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view target(reinterpret_cast<const char*>(data), size);
    const keygate::normalised_target r = keygate::normalise_target(target);

    if (!r.ok) {
        FUZZ_CHECK(r.error != nullptr && *r.error != '\0', target);
        return 0;
    }

    check_normal_form(r.path);

    // The query is the original text after the first '?', untouched.
    const auto q = target.find('?');
    FUZZ_CHECK(r.has_query == (q != std::string_view::npos), target);
    if (r.has_query) {
        FUZZ_CHECK(r.query == target.substr(q + 1), target);
        FUZZ_CHECK(r.query.data() == target.data() + q + 1, target);
    } else {
        FUZZ_CHECK(r.query.empty(), target);
    }

    // Idempotent: the normal form is a fixed point, so keygate and the upstream agree.
    const std::string first = r.path;
    const keygate::normalised_target again = keygate::normalise_target(first);
    FUZZ_CHECK(again.ok, first);
    FUZZ_CHECK(again.path == first, first);
    FUZZ_CHECK(!again.has_query, first);
    return 0;
}
