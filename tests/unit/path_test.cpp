#include "keygate/path.hpp"

#include <catch.hpp>

#include <string>
#include <vector>

using keygate::normalise_target;
using keygate::path_matches;

namespace {

struct accepted_case {
    std::string target;
    std::string path;
    std::string query;
    bool has_query;
};

const std::vector<accepted_case> accepted = {
    {"/", "/", "", false},
    {"/healthz", "/healthz", "", false},
    {"/healthz/../admin", "/admin", "", false},
    {"/x/y/%2e%2e/%2E%2E/admin", "/admin", "", false},
    {"/x/%2e%2e/admin", "/admin", "", false},
    {"/x/%2E%2E/admin", "/admin", "", false},
    {"/x/.%2e/admin", "/admin", "", false},
    {"/x/%2e./admin", "/admin", "", false},
    {"/x/%2e/admin", "/x/admin", "", false},
    {"//admin", "/admin", "", false},
    {"/admin//x", "/admin/x", "", false},
    {"///admin///x///", "/admin/x/", "", false},
    {"/a/./b", "/a/b", "", false},
    {"/a/b/..", "/a/", "", false},
    {"/a/b/.", "/a/b/", "", false},
    {"/a/..", "/", "", false},
    {"/./", "/", "", false},
    {"/admin/", "/admin/", "", false},
    {"/%41dmin", "/Admin", "", false},
    {"/%7e", "/~", "", false},
    {"/%7E%2D%5f%2E%30", "/~-_.0", "", false},
    {"/a%3ab", "/a%3Ab", "", false},
    {"/a%3Ab", "/a%3Ab", "", false},
    {"/%c3%a9", "/%C3%A9", "", false},
    {"/%25", "/%25", "", false},
    {"/a%20b", "/a%20b", "", false},
    // `..` is a segment only when it is the whole segment.
    {"/a/..b/c", "/a/..b/c", "", false},
    {"/a/...", "/a/...", "", false},
    {"/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=", "", false},
    {"/?", "/", "", true},
    {"/x?/healthz", "/x", "/healthz", true},
    {"/admin?next=/healthz/../x", "/admin", "next=/healthz/../x", true},
    {"/a/../b?q=%2F;x", "/b", "q=%2F;x", true},
    {"/a%2e%2e?%2e%2e", "/a..", "%2e%2e", true},
};

struct refused_case {
    std::string target;
    std::string why; // what the case is about, shown when it fails
};

const std::vector<refused_case> refused = {
    {"", "empty"},
    {"/..", "above root"},
    {"/../admin", "above root"},
    {"/a/../..", "above root"},
    {"/a/../../admin", "above root"},
    {"/%2e%2e/admin", "encoded above root"},
    {"/%2E%2E/admin", "encoded above root, upper"},
    {"/.%2e/admin", "mixed encoding above root"},
    {"/%2e./admin", "mixed encoding above root"},
    {"/a%2Fb", "encoded slash"},
    {"/a%2fb", "encoded slash, lower"},
    {"/admin%2F..%2F..%2Fx", "encoded slash traversal"},
    {"/a%5Cb", "encoded backslash"},
    {"/a%5cb", "encoded backslash, lower"},
    {"/a\\b", "literal backslash"},
    {"/a?b\\c", "literal backslash in query"},
    {"/a%00b", "encoded NUL"},
    {std::string("/a\0b", 4), "literal NUL"},
    {"/a;b", "semicolon"},
    {"/admin;/x", "semicolon segment"},
    {"/a#b", "fragment"},
    {"/a?b#c", "fragment after query"},
    {"/a b", "space"},
    {"/a\tb", "tab"},
    {"/a\r\nb", "CR LF"},
    {"/a\x7f", "DEL"},
    {"/caf\xc3\xa9", "non-ASCII"},
    {"/a%zz", "bad escape"},
    {"/a%4", "truncated escape"},
    {"/a%", "lone percent"},
    {"/a?%zz", "bad escape in query"},
    {"*", "asterisk-form"},
    {"http://x/admin", "absolute-form"},
    {"example.com:443", "authority-form"},
    {"admin", "relative"},
    {"/a|b", "character outside the path grammar"},
};

} // namespace

TEST_CASE("normalise_target accepts and normalises", "[path]") {
    for (const auto& c : accepted) {
        INFO("target: " << c.target);
        auto r = normalise_target(c.target);
        REQUIRE(r.ok);
        CHECK(r.path == c.path);
        CHECK(r.query == c.query);
        CHECK(r.has_query == c.has_query);
        CHECK(std::string(r.error).empty());
    }
}

TEST_CASE("normalise_target refuses unsafe targets", "[path]") {
    for (const auto& c : refused) {
        INFO("case: " << c.why);
        auto r = normalise_target(c.target);
        CHECK_FALSE(r.ok);
        std::string error = r.error;
        CHECK_FALSE(error.empty());
        // The message goes to the log: it must never carry the attacker's bytes.
        if (c.target.size() > 1) CHECK(error.find(c.target) == std::string::npos);
    }
}

TEST_CASE("the query is a view into the original target, passed through unchanged", "[path]") {
    const std::string target = "/a/./b?x=%2f&y=..%2F";
    auto r = normalise_target(target);
    REQUIRE(r.ok);
    CHECK(r.path == "/a/b");
    CHECK(r.query == "x=%2f&y=..%2F");
    CHECK(r.query.data() == target.data() + target.find('?') + 1);
}

TEST_CASE("the error string names the problem", "[path]") {
    CHECK(std::string(normalise_target("/..").error).find("root") != std::string::npos);
    CHECK(std::string(normalise_target("/a%2F").error).find("'/'") != std::string::npos);
    CHECK(std::string(normalise_target("*").error).find("origin-form") != std::string::npos);
}

TEST_CASE("path_matches: exact patterns", "[path]") {
    CHECK(path_matches("/healthz", "/healthz"));
    CHECK_FALSE(path_matches("/healthz", "/healthz/"));
    CHECK_FALSE(path_matches("/healthz/", "/healthz"));
    CHECK_FALSE(path_matches("/healthz", "/healthzX"));
    CHECK_FALSE(path_matches("/healthz", "/healthz/x"));
    CHECK_FALSE(path_matches("/healthz", "/HEALTHZ"));
    CHECK_FALSE(path_matches("/healthz", "/"));
}

TEST_CASE("path_matches: prefix patterns", "[path]") {
    CHECK(path_matches("/admin/*", "/admin"));
    CHECK(path_matches("/admin/*", "/admin/"));
    CHECK(path_matches("/admin/*", "/admin/users"));
    CHECK(path_matches("/admin/*", "/admin/users/1/"));
    CHECK_FALSE(path_matches("/admin/*", "/adminX"));
    CHECK_FALSE(path_matches("/admin/*", "/admin2/x"));
    CHECK_FALSE(path_matches("/admin/*", "/Admin/users"));
    CHECK_FALSE(path_matches("/admin/*", "/ADMIN"));
    CHECK_FALSE(path_matches("/admin/*", "/"));
    CHECK_FALSE(path_matches("/admin/*", "/x/admin/y"));
    CHECK(path_matches("/tenants/acme/*", "/tenants/acme/orders"));
    CHECK_FALSE(path_matches("/tenants/acme/*", "/tenants/acmecorp/orders"));
    CHECK_FALSE(path_matches("/tenants/acme/*", "/tenants"));
}

TEST_CASE("path_matches: /* matches everything", "[path]") {
    CHECK(path_matches("/*", "/"));
    CHECK(path_matches("/*", "/x"));
    CHECK(path_matches("/*", "/x/y/"));
}

TEST_CASE("normalised paths are what matching sees", "[path]") {
    auto m = [](std::string_view pattern, std::string_view target) {
        auto r = normalise_target(target);
        REQUIRE(r.ok);
        return path_matches(pattern, r.path);
    };
    // A public path must not be a door to a protected one.
    CHECK_FALSE(m("/healthz", "/healthz/../admin"));
    CHECK(m("/admin/*", "/healthz/../admin"));
    CHECK(m("/admin/*", "//admin"));
    CHECK(m("/admin/*", "/x/%2e%2e/admin/users"));
    CHECK(m("/admin/*", "/%61dmin"));
    CHECK_FALSE(m("/healthz", "/x?/healthz"));
    CHECK_FALSE(m("/healthz", "/healthz/"));
}
