#include "keygate/path.hpp"

#include <boost/url/parse.hpp>

namespace keygate {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

normalised_target refuse(const char* why) {
    normalised_target r;
    r.error = why;
    return r;
}

// Appends one raw path segment to `out`, decoding escaped unreserved characters and
// upper-casing the hex of every other escape, so that two spellings of the same path
// always compare equal. Returns an error message, or nullptr on success.
const char* append_segment(std::string& out, std::string_view seg) {
    static constexpr char hex_digits[] = "0123456789ABCDEF";
    for (std::size_t i = 0; i < seg.size(); ++i) {
        char c = seg[i];
        if (c == ';') return "path contains ';'";
        if (c != '%') {
            out.push_back(c);
            continue;
        }
        if (i + 2 >= seg.size()) return "malformed percent-encoding";
        int hi = hex_value(seg[i + 1]);
        int lo = hex_value(seg[i + 2]);
        if (hi < 0 || lo < 0) return "malformed percent-encoding";
        auto v = static_cast<unsigned char>(hi << 4 | lo);
        // These would let the upstream see a different segment structure than keygate did.
        if (v == '/') return "path contains an encoded '/'";
        if (v == '\\') return "path contains an encoded '\\'";
        if (v == 0) return "path contains an encoded NUL";
        if (is_unreserved(v)) {
            out.push_back(static_cast<char>(v));
        } else {
            out.push_back('%');
            out.push_back(hex_digits[v >> 4]);
            out.push_back(hex_digits[v & 0x0f]);
        }
        i += 2;
    }
    return nullptr;
}

} // namespace

normalised_target normalise_target(std::string_view target) {
    // Only origin-form: this also refuses `*`, absolute-form and authority-form.
    if (target.empty() || target.front() != '/') return refuse("target is not origin-form");
    for (char ch : target) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f) return refuse("target contains a space, control or non-ASCII byte");
        if (c == '#') return refuse("target contains '#'");
        if (c == '\\') return refuse("target contains '\\'");
    }
    // Boost.URL checks the grammar (characters allowed in path and query, escapes). Its
    // normalize functions are never used: they decode %2F into '/'.
    if (!boost::urls::parse_origin_form(target)) return refuse("target is not a valid origin-form");

    normalised_target result;
    std::string_view path = target;
    if (auto q = target.find('?'); q != std::string_view::npos) {
        path = target.substr(0, q);
        result.query = target.substr(q + 1);
        result.has_query = true;
    }

    std::string& out = result.path;
    out.reserve(path.size());
    // The output never holds a literal '/' inside a segment, so the previous segment of
    // `out` always starts at its last '/': no separate stack is needed for `..`.
    bool trailing_slash = false;
    std::size_t begin = 1;
    while (true) {
        std::size_t end = path.find('/', begin);
        if (end == std::string_view::npos) end = path.size();
        std::size_t mark = out.size();
        out.push_back('/');
        if (const char* err = append_segment(out, path.substr(begin, end - begin)))
            return refuse(err);
        std::string_view seg(out.data() + mark + 1, out.size() - mark - 1);
        if (seg.empty() || seg == ".") {
            out.resize(mark);
            trailing_slash = true;
        } else if (seg == "..") {
            out.resize(mark);
            if (out.empty()) return refuse("path climbs above the root");
            out.resize(out.rfind('/'));
            trailing_slash = true;
        } else {
            trailing_slash = false;
        }
        if (end == path.size()) break;
        begin = end + 1;
    }
    if (out.empty() || trailing_slash) out.push_back('/');
    result.ok = true;
    return result;
}

bool path_matches(std::string_view pattern, std::string_view path) {
    if (pattern.size() >= 2 && pattern.substr(pattern.size() - 2) == "/*") {
        std::string_view prefix = pattern.substr(0, pattern.size() - 2);
        if (path == prefix) return true;
        return path.size() > prefix.size() && path.substr(0, prefix.size()) == prefix &&
               path[prefix.size()] == '/';
    }
    return pattern == path;
}

} // namespace keygate
