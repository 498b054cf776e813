// Request-target validation and path normalisation (DESIGN.md §1.2). Pure.
#pragma once

#include <string>
#include <string_view>

namespace keygate {

struct normalised_target {
    bool ok = false;
    std::string path;       // normalised path, always starting with '/'
    std::string_view query; // the original query without '?', a view into the input target
    bool has_query = false; // a '?' was present (possibly with an empty query)
    const char* error = ""; // why it was refused, for the log (never echoes the target)
};

/// Validates an origin-form target (no '#', no space, control or non-ASCII byte, valid
/// escapes) and normalises its path: decodes escaped unreserved characters, upper-cases
/// other escapes, resolves `.`/`..` (also `%2e`), merges repeated slashes. Refuses a path
/// that climbs above `/`, or holds `%2F`, `%5C`, `%00`, a literal `\` or a `;`.
normalised_target normalise_target(std::string_view target);

/// Matches a normalised path against a pattern: exact (`/healthz`) or prefix (`/admin/*`
/// matches `/admin` and everything under `/admin/`, never `/adminX`). Case-sensitive.
bool path_matches(std::string_view pattern, std::string_view path);

} // namespace keygate
