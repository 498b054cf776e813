#include "keygate/config.hpp"

#include "keygate/crypto.hpp"
#include "keygate/path.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/url/parse.hpp>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <sstream>
#include <unordered_set>

namespace keygate {

namespace {

constexpr std::size_t npos = std::string_view::npos;

// ---------------------------------------------------------------------------
// A document tree shared by the YAML and JSON readers. Unlike yaml-cpp's nodes and
// Boost.JSON's objects it keeps every entry of a mapping, so repeated keys are seen.

struct node {
    enum class kind : std::uint8_t { null, scalar, seq, map };
    kind type = kind::null;
    std::string text;              // scalar
    std::vector<std::string> keys; // map: keys[i] names children[i]
    std::vector<node> children;    // seq items or map values
};

// A field path built on the stack and only turned into text when a problem is reported.
struct path {
    const path* parent = nullptr;
    std::string_view name;
    std::size_t index = npos;

    path field(std::string_view n) const { return path{this, n, npos}; }
    path at(std::size_t i) const { return path{this, {}, i}; }

    void append_to(std::string& out) const {
        if (parent) parent->append_to(out);
        if (index != npos) {
            out += '[';
            out += std::to_string(index);
            out += ']';
            return;
        }
        if (name.empty()) return;
        if (!out.empty()) out += '.';
        // Field names come from the document: keep messages one printable line.
        std::size_t n = std::min<std::size_t>(name.size(), 64);
        for (std::size_t i = 0; i < n; ++i) {
            auto c = static_cast<unsigned char>(name[i]);
            out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
        }
        if (name.size() > n) out += "...";
    }

    std::string str() const {
        std::string out;
        append_to(out);
        return out;
    }
};

struct report {
    std::vector<std::string>& problems;
    std::string prefix; // "<file>: " for a keys file, else empty

    void add(const path& p, std::string_view msg) {
        std::string where = p.str();
        std::string line = prefix;
        line += where;
        if (!where.empty()) line += ": ";
        line += msg;
        problems.push_back(std::move(line));
    }
    std::size_t count() const { return problems.size(); }
};

struct context {
    report& rep;
    const env_lookup& env;
};

// ---------------------------------------------------------------------------
// Small validators.

bool is_tchar(char c) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != npos;
}

bool is_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

constexpr const char* id_rule = "must be 1 to 128 characters from A-Z a-z 0-9 . _ : / -";

bool valid_id(std::string_view s) {
    if (s.empty() || s.size() > 128) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
    });
}

// Printable ASCII without space or comma: a plaintext key must survive KEYGATE_API_KEYS
// and a header value unchanged.
bool valid_plaintext(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return c > 0x20 && c < 0x7f && c != ',';
    });
}

bool valid_label_value(std::string_view s) {
    return s.size() <= 256 && std::all_of(s.begin(), s.end(), [](char c) {
        return c >= 0x20 && c < 0x7f;
    });
}

bool ascii_iequal(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
        auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
        return lower(x) == lower(y);
    });
}

bool valid_ip(std::string_view s) {
    if (s.empty() || s.size() > 45) return false;
    std::string z(s);
    unsigned char buf[16];
    return inet_pton(AF_INET, z.c_str(), buf) == 1 || inet_pton(AF_INET6, z.c_str(), buf) == 1;
}

// Returns why `s` is not a CIDR, or nullptr.
const char* cidr_problem(std::string_view s) {
    constexpr const char* shape = "expected a CIDR like 10.0.0.0/8 or fd00::/8";
    std::size_t slash = s.find('/');
    if (slash == npos || slash == 0 || slash + 1 == s.size() || s.size() > 49) return shape;
    std::string addr(s.substr(0, slash));
    std::string_view bits_text = s.substr(slash + 1);
    unsigned char buf[16];
    std::size_t len = 0;
    if (inet_pton(AF_INET, addr.c_str(), buf) == 1) len = 4;
    else if (inet_pton(AF_INET6, addr.c_str(), buf) == 1) len = 16;
    else return shape;
    if (bits_text.size() > 3 ||
        !std::all_of(bits_text.begin(), bits_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return shape;
    unsigned bits = 0;
    std::from_chars(bits_text.data(), bits_text.data() + bits_text.size(), bits);
    if (bits > len * 8) return "prefix length is too long for the address";
    for (std::size_t b = bits; b < len * 8; ++b)
        if (buf[b / 8] & (0x80 >> (b % 8)))
            return "address has bits set after the prefix length; use the network address";
    return nullptr;
}

bool parse_port(std::string_view s, std::uint16_t& out) {
    if (s.empty() || s.size() > 5) return false;
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v < 1 || v > 65535) return false;
    out = static_cast<std::uint16_t>(v);
    return true;
}

// Parses `host:port` (IPv6 as `[::1]:8080`) with an IP literal host; false if malformed.
bool parse_host_port(std::string_view s, std::string& host, std::uint16_t& port) {
    std::string_view h, p;
    if (!s.empty() && s.front() == '[') {
        std::size_t close = s.find(']');
        if (close == npos || close + 1 >= s.size() || s[close + 1] != ':') return false;
        h = s.substr(1, close - 1);
        p = s.substr(close + 2);
        if (h.find(':') == npos) return false; // brackets are for IPv6 only
    } else {
        std::size_t colon = s.rfind(':');
        if (colon == npos) return false;
        h = s.substr(0, colon);
        p = s.substr(colon + 1);
        if (h.find(':') != npos) return false; // unbracketed IPv6 is ambiguous
    }
    if (!valid_ip(h) || !parse_port(p, port)) return false;
    host = std::string(h);
    return true;
}

// Fills the derived upstream fields from `url`; returns why it is refused, or nullptr.
const char* apply_upstream_url(config::upstream_t& up, std::string_view url) {
    constexpr const char* shape =
        "expected http://host:port or https://host:port with no path, query or credentials";
    auto r = boost::urls::parse_uri(url);
    if (!r) return shape;
    const auto& u = *r;
    std::string scheme;
    std::uint16_t default_port = 0;
    if (u.scheme_id() == boost::urls::scheme::http) {
        scheme = "http";
        default_port = 80;
    } else if (u.scheme_id() == boost::urls::scheme::https) {
        scheme = "https";
        default_port = 443;
    } else {
        return "scheme must be http or https";
    }
    if (!u.has_authority() || u.encoded_host().empty()) return "needs a host";
    if (u.has_userinfo()) return "must not carry credentials";
    if (u.host_type() == boost::urls::host_type::ipvfuture ||
        u.encoded_host().find('%') != npos)
        return "host must be a plain name or an IP address";
    std::uint16_t port = default_port;
    if (u.has_port() && !parse_port(u.port(), port)) return "port must be from 1 to 65535";
    if (!(u.encoded_path().empty() || u.encoded_path() == "/"))
        return "must not have a path; keygate forwards the request's own path";
    if (u.has_query() || u.has_fragment()) return "must not have a query or fragment";
    up.url = std::string(url);
    up.scheme = scheme;
    up.host = u.host_address();
    up.port = port;
    return nullptr;
}

bool valid_level(std::string_view s) {
    for (std::string_view l : {"trace", "debug", "info", "warn", "error", "critical", "off"})
        if (s == l) return true;
    return false;
}

constexpr const char* level_hint =
    "must be one of trace, debug, info, warn, error, critical, off";

std::string resolve(const std::string& base_dir, const std::string& file) {
    namespace fs = std::filesystem;
    fs::path p(file);
    if (p.is_absolute()) return file;
    return (fs::path(base_dir) / p).lexically_normal().string();
}

// Reads a whole file; on failure returns nullopt and sets `why`.
std::optional<std::string> read_file(const std::string& file, std::string& why) {
    std::FILE* f = std::fopen(file.c_str(), "rb");
    if (!f) {
        why = std::strerror(errno);
        return std::nullopt;
    }
    std::string out;
    struct stat st {};
    if (::fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
        out.reserve(static_cast<std::size_t>(st.st_size));
    char buf[65536];
    while (true) {
        std::size_t n = std::fread(buf, 1, sizeof buf, f);
        out.append(buf, n);
        if (n < sizeof buf) break;
    }
    bool failed = std::ferror(f);
    int err = errno;
    std::fclose(f);
    if (failed) {
        why = std::strerror(err);
        return std::nullopt;
    }
    return out;
}

// ---------------------------------------------------------------------------
// Readers: YAML and JSON into `node`.

void yaml_to_node(const YAML::Node& y, node& out, report& rep, const path& p) {
    switch (y.Type()) {
    case YAML::NodeType::Scalar:
        out.type = node::kind::scalar;
        out.text = y.Scalar();
        break;
    case YAML::NodeType::Sequence: {
        out.type = node::kind::seq;
        out.children.resize(y.size());
        std::size_t i = 0;
        for (const auto& item : y) {
            yaml_to_node(item, out.children[i], rep, p.at(i));
            ++i;
        }
        break;
    }
    case YAML::NodeType::Map:
        out.type = node::kind::map;
        for (auto it = y.begin(); it != y.end(); ++it) {
            if (!it->first.IsScalar()) {
                rep.add(p, "a mapping key must be a plain name");
                continue;
            }
            out.keys.push_back(it->first.Scalar());
            out.children.emplace_back();
            yaml_to_node(it->second, out.children.back(), rep, p.field(out.keys.back()));
        }
        break;
    default:
        out.type = node::kind::null;
        break;
    }
}

// Counts documents without building them.
class document_counter final : public YAML::EventHandler {
public:
    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// Parses one YAML document; false (with a problem reported) when it is not valid YAML.
bool parse_yaml(std::string_view text, node& out, report& rep) {
    std::vector<YAML::Node> docs;
    try {
        // yaml-cpp 0.7's LoadAll never ends on some malformed input (a stray ',' yields
        // empty documents forever): count at most two documents, then load the first.
        std::istringstream in{std::string(text)};
        YAML::Parser parser(in);
        document_counter counter;
        int count = 0;
        while (count < 2 && parser.HandleNextDocument(counter)) ++count;
        if (count > 1) {
            rep.add(path{}, "holds more than one YAML document, or stray text after it; keep one "
                            "(remove the extra --- or the stray text)");
            return false;
        }
        if (count == 1) docs.push_back(YAML::Load(std::string(text)));
    } catch (const YAML::Exception& e) {
        std::string where = e.mark.is_null() ? std::string()
                                             : " at line " + std::to_string(e.mark.line + 1) +
                                                   ", column " + std::to_string(e.mark.column + 1);
        rep.add(path{}, "invalid YAML" + where + ": " + e.msg);
        return false;
    }
    if (docs.size() > 1) {
        rep.add(path{}, "holds more than one YAML document; keep one (remove the extra ---)");
        return false;
    }
    if (!docs.empty()) yaml_to_node(docs.front(), out, rep, path{});
    return true;
}

// Builds a `node` tree from Boost.JSON's SAX events, keeping repeated keys.
class json_builder {
public:
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

    node root;
    // When set, each entry of the top-level `keys` list is handed over as soon as it is
    // complete instead of being kept: a keys file may hold 100,000 entries.
    std::function<void(node&, std::size_t)> on_entry;

    bool on_document_begin(boost::json::error_code&) { return true; }
    bool on_document_end(boost::json::error_code&) { return true; }
    bool on_array_begin(boost::json::error_code&) {
        bool keys_list = on_entry && !stream_done_ && open_.size() == 1 &&
                         open_.front()->type == node::kind::map && key_ == "keys";
        node& n = next();
        n.type = node::kind::seq;
        open_.push_back(&n);
        if (keys_list) {
            stream_ = &n;
            stream_done_ = true;
        }
        return true;
    }
    bool on_array_end(std::size_t, boost::json::error_code&) {
        if (open_.back() == stream_) stream_ = nullptr;
        open_.pop_back();
        completed();
        return true;
    }
    bool on_object_begin(boost::json::error_code&) {
        node& n = next();
        n.type = node::kind::map;
        open_.push_back(&n);
        return true;
    }
    bool on_object_end(std::size_t, boost::json::error_code&) {
        open_.pop_back();
        completed();
        return true;
    }
    bool on_string_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
        text_.append(s.data(), s.size());
        return true;
    }
    bool on_string(boost::json::string_view s, std::size_t, boost::json::error_code&) {
        text_.append(s.data(), s.size());
        return scalar();
    }
    bool on_key_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
        key_.append(s.data(), s.size());
        return true;
    }
    bool on_key(boost::json::string_view s, std::size_t, boost::json::error_code&) {
        key_.append(s.data(), s.size());
        return true;
    }
    bool on_number_part(boost::json::string_view s, boost::json::error_code&) {
        text_.append(s.data(), s.size());
        return true;
    }
    bool on_int64(std::int64_t, boost::json::string_view s, boost::json::error_code&) {
        text_.append(s.data(), s.size());
        return scalar();
    }
    bool on_uint64(std::uint64_t, boost::json::string_view s, boost::json::error_code&) {
        text_.append(s.data(), s.size());
        return scalar();
    }
    bool on_double(double, boost::json::string_view s, boost::json::error_code&) {
        text_.append(s.data(), s.size());
        return scalar();
    }
    bool on_bool(bool b, boost::json::error_code&) {
        text_ = b ? "true" : "false";
        return scalar();
    }
    bool on_null(boost::json::error_code&) {
        next();
        completed();
        return true;
    }
    bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
    bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

private:
    // The slot for the next value. Pointers in `open_` stay valid: a container only
    // grows while it is the innermost open one, and then none of its children are open.
    node& next() {
        if (open_.empty()) return root;
        node& parent = *open_.back();
        if (parent.type == node::kind::map) {
            parent.keys.push_back(std::move(key_));
            key_.clear();
        }
        return parent.children.emplace_back();
    }
    bool scalar() {
        node& n = next();
        n.type = node::kind::scalar;
        n.text = std::move(text_);
        text_.clear();
        completed();
        return true;
    }
    // A value just ended; if it is an entry of the streamed list, hand it over.
    void completed() {
        if (!stream_ || open_.empty() || open_.back() != stream_) return;
        on_entry(stream_->children.back(), streamed_++);
        stream_->children.pop_back();
    }

    std::vector<node*> open_;
    node* stream_ = nullptr;
    bool stream_done_ = false;
    std::size_t streamed_ = 0;
    std::string text_;
    std::string key_;
};

bool parse_json(std::string_view text, node& out, report& rep,
                std::function<void(node&, std::size_t)> on_entry = {}) {
    boost::json::basic_parser<json_builder> parser(boost::json::parse_options{});
    parser.handler().on_entry = std::move(on_entry);
    std::size_t problems_before = rep.count();
    boost::json::error_code ec;
    std::size_t used = parser.write_some(false, text.data(), text.size(), ec);
    if (!ec && used != text.size()) ec = boost::json::error::extra_data;
    if (ec) {
        // Entries streamed before the syntax error would only add noise.
        rep.problems.resize(problems_before);
        std::size_t at = std::min(used, text.size());
        std::size_t line = 1 + static_cast<std::size_t>(std::count(text.begin(), text.begin() + at, '\n'));
        std::size_t bol = text.rfind('\n', at == 0 ? 0 : at - 1);
        std::size_t column = (bol == npos || at == 0) ? at + 1 : at - bol;
        rep.add(path{}, "invalid JSON at line " + std::to_string(line) + ", column " +
                            std::to_string(column) + ": " + ec.message());
        return false;
    }
    out = std::move(parser.handler().root);
    return true;
}

// ---------------------------------------------------------------------------
// Typed field readers. Each reports its own problem and returns nullopt on failure.

// Replaces `${VAR}` by the variable's value and `$${` by `${`; the result is never
// rescanned, so a value can not smuggle in another reference.
bool expand(context& c, std::string_view in, const path& p, std::string& out) {
    out.clear();
    bool ok = true;
    std::size_t i = 0;
    while (i < in.size()) {
        std::size_t dollar = in.find('$', i);
        if (dollar == npos) {
            out.append(in.substr(i));
            break;
        }
        out.append(in.substr(i, dollar - i));
        if (in.substr(dollar, 3) == "$${") {
            out.append("${");
            i = dollar + 3;
            continue;
        }
        if (in.substr(dollar, 2) != "${") {
            out.push_back('$');
            i = dollar + 1;
            continue;
        }
        std::size_t close = in.find('}', dollar + 2);
        std::string_view name =
            close == npos ? std::string_view{} : in.substr(dollar + 2, close - dollar - 2);
        bool good_name = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                         std::all_of(name.begin(), name.end(), [](char ch) {
                             return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                                    (ch >= '0' && ch <= '9') || ch == '_';
                         });
        if (!good_name) {
            c.rep.add(p, "${ must be followed by a variable name and }; write $${ for a literal ${");
            return false;
        }
        if (auto v = c.env(std::string(name))) {
            out.append(*v);
        } else {
            c.rep.add(p, "environment variable " + std::string(name) + " is not set");
            ok = false;
        }
        i = close + 1;
    }
    return ok;
}

std::optional<std::string> read_string(context& c, const node& n, const path& p) {
    if (n.type != node::kind::scalar) {
        c.rep.add(p, "expected a string");
        return std::nullopt;
    }
    if (n.text.find('$') == npos) return n.text;
    std::string out;
    if (!expand(c, n.text, p, out)) return std::nullopt;
    return out;
}

std::optional<bool> read_bool(context& c, const node& n, const path& p) {
    std::optional<std::string> s;
    if (n.type == node::kind::scalar) s = read_string(c, n, p);
    else c.rep.add(p, "expected true or false");
    if (!s) return std::nullopt;
    if (*s == "true" || *s == "True" || *s == "TRUE") return true;
    if (*s == "false" || *s == "False" || *s == "FALSE") return false;
    c.rep.add(p, "expected true or false");
    return std::nullopt;
}

std::optional<std::uint64_t> read_uint(context& c, const node& n, const path& p, std::uint64_t lo,
                                       std::uint64_t hi) {
    std::optional<std::string> s;
    if (n.type == node::kind::scalar) s = read_string(c, n, p);
    else c.rep.add(p, "expected an integer");
    if (!s) return std::nullopt;
    std::string_view t = *s;
    bool negative = !t.empty() && t.front() == '-';
    if (negative) t.remove_prefix(1);
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    bool digits_only = !t.empty() && end == t.data() + t.size();
    if (!digits_only || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
        c.rep.add(p, "expected an integer");
        return std::nullopt;
    }
    if ((negative && v != 0) || ec == std::errc::result_out_of_range || v < lo || v > hi) {
        if (hi == std::numeric_limits<std::uint64_t>::max())
            c.rep.add(p, "must be at least " + std::to_string(lo));
        else
            c.rep.add(p, "must be from " + std::to_string(lo) + " to " + std::to_string(hi));
        return std::nullopt;
    }
    return v;
}

std::optional<double> read_number(context& c, const node& n, const path& p) {
    std::optional<std::string> s;
    if (n.type == node::kind::scalar) s = read_string(c, n, p);
    else c.rep.add(p, "expected a number");
    if (!s) return std::nullopt;
    double v = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (s->empty() || ec != std::errc() || end != s->data() + s->size() || !std::isfinite(v)) {
        c.rep.add(p, "expected a number");
        return std::nullopt;
    }
    return v;
}

std::optional<millis> read_duration(context& c, const node& n, const path& p, millis min) {
    constexpr const char* shape = "expected a duration like 250ms, 10s, 5m or 1h";
    std::optional<std::string> s;
    if (n.type == node::kind::scalar) s = read_string(c, n, p);
    else c.rep.add(p, shape);
    if (!s) return std::nullopt;
    auto d = parse_duration(*s);
    if (!d) {
        c.rep.add(p, shape);
        return std::nullopt;
    }
    if (*d < min) {
        c.rep.add(p, min == millis{1} ? std::string("must be longer than 0s")
                                      : "must be at least " + std::to_string(min.count()) + "ms");
        return std::nullopt;
    }
    return d;
}

std::optional<sys_seconds> read_time(context& c, const node& n, const path& p) {
    std::optional<std::string> s;
    if (n.type == node::kind::scalar) s = read_string(c, n, p);
    else c.rep.add(p, "not an RFC 3339 time with a zone");
    if (!s) return std::nullopt;
    auto t = parse_rfc3339(*s);
    if (!t) c.rep.add(p, "not an RFC 3339 time with a zone");
    return t;
}

std::optional<std::string> read_pattern(context& c, const node& n, const path& p) {
    auto s = read_string(c, n, p);
    if (!s) return std::nullopt;
    if (!valid_path_pattern(*s)) {
        c.rep.add(p, "not a valid path pattern; write a normalised path such as /healthz, "
                     "or a prefix ending in /* such as /admin/*");
        return std::nullopt;
    }
    return s;
}

// Calls `on_item(item, path)` for each item of a list; null counts as an empty list.
template <class F>
void read_list(context& c, const node& n, const path& p, F&& on_item) {
    if (n.type == node::kind::null) return;
    if (n.type != node::kind::seq) {
        c.rep.add(p, "expected a list");
        return;
    }
    for (std::size_t i = 0; i < n.children.size(); ++i) on_item(n.children[i], p.at(i));
}

// Calls `on_field(name, value, path)` for each entry of a mapping; it returns false for a
// name it does not know. Null counts as an empty mapping. Every repeated key is reported:
// yaml-cpp would otherwise keep only the first silently.
template <class F>
void read_map(context& c, const node& n, const path& p, F&& on_field) {
    if (n.type == node::kind::null) return;
    if (n.type != node::kind::map) {
        c.rep.add(p, "expected a mapping");
        return;
    }
    std::unordered_set<std::string_view> seen;
    bool big = n.keys.size() > 16;
    for (std::size_t i = 0; i < n.keys.size(); ++i) {
        std::string_view name = n.keys[i];
        path fp = p.field(name);
        bool repeated = big ? !seen.insert(name).second
                            : std::find(n.keys.begin(), n.keys.begin() + static_cast<std::ptrdiff_t>(i),
                                        n.keys[i]) != n.keys.begin() + static_cast<std::ptrdiff_t>(i);
        if (repeated) {
            c.rep.add(fp, "repeated mapping key; keep only one");
            continue;
        }
        if (!on_field(name, n.children[i], fp)) c.rep.add(fp, "unknown field");
    }
}

template <class T>
void set_if(std::optional<T>&& v, T& dest) {
    if (v) dest = std::move(*v);
}

template <class T>
void set_uint(context& c, const node& n, const path& p, T& dest, std::uint64_t lo,
              std::uint64_t hi = std::numeric_limits<T>::max()) {
    if (auto v = read_uint(c, n, p, lo, hi)) dest = static_cast<T>(*v);
}

void read_enum(context& c, const node& n, const path& p, std::string& dest,
               std::initializer_list<std::string_view> allowed, std::string_view hint) {
    auto s = read_string(c, n, p);
    if (!s) return;
    if (std::find(allowed.begin(), allowed.end(), std::string_view(*s)) == allowed.end()) {
        c.rep.add(p, hint);
        return;
    }
    dest = std::move(*s);
}

void read_address(context& c, const node& n, const path& p, std::string& dest) {
    auto s = read_string(c, n, p);
    if (!s) return;
    if (!valid_ip(*s)) {
        c.rep.add(p, "expected an IPv4 or IPv6 address such as 0.0.0.0 or ::");
        return;
    }
    dest = std::move(*s);
}

void read_file_name(context& c, const node& n, const path& p, std::string& dest,
                    const std::string& base_dir) {
    auto s = read_string(c, n, p);
    if (!s) return;
    if (s->empty()) {
        c.rep.add(p, "must not be empty");
        return;
    }
    dest = resolve(base_dir, *s);
}

// ---------------------------------------------------------------------------
// The schema.

bool parse_key(context& c, const node& n, const path& p, key_config& k) {
    std::size_t before = c.rep.count();
    if (n.type != node::kind::map) {
        c.rep.add(p, "expected a mapping with an id and a hash or key");
        return false;
    }
    bool has_id = false, has_hash = false, has_key = false;
    read_map(c, n, p, [&](std::string_view name, const node& v, const path& fp) {
        if (name == "id") {
            has_id = true;
            if (auto s = read_string(c, v, fp)) {
                if (valid_id(*s)) k.id = std::move(*s);
                else c.rep.add(fp, id_rule);
            }
        } else if (name == "hash") {
            has_hash = true;
            if (auto s = read_string(c, v, fp)) {
                std::string_view h = *s;
                if (!(h.starts_with("sha256:") && crypto::digest_from_hex(h.substr(7), k.digest)))
                    c.rep.add(fp, "expected sha256: followed by 64 hex digits (keygate hash-key prints one)");
            }
        } else if (name == "key") {
            has_key = true;
            if (auto s = read_string(c, v, fp)) {
                if (valid_plaintext(*s)) {
                    k.digest = crypto::sha256(*s);
                    k.from_plaintext = true;
                    k.plaintext_length = s->size();
                } else {
                    c.rep.add(fp, "a plaintext key must be printable ASCII with no space and no comma");
                }
            }
        } else if (name == "scopes") {
            read_list(c, v, fp, [&](const node& item, const path& ip) {
                if (auto s = read_string(c, item, ip)) {
                    if (valid_id(*s)) k.scopes.push_back(std::move(*s));
                    else c.rep.add(ip, id_rule);
                }
            });
        } else if (name == "labels") {
            read_map(c, v, fp, [&](std::string_view label, const node& lv, const path& lp) {
                if (!is_token(label)) {
                    c.rep.add(lp, "a label name must be an HTTP header token (letters, digits, - and the like)");
                    return true;
                }
                for (const auto& [other, value] : k.labels) {
                    if (ascii_iequal(other, label)) {
                        c.rep.add(lp, "label names must be unique ignoring case");
                        return true;
                    }
                }
                if (auto s = read_string(c, lv, lp)) {
                    if (valid_label_value(*s)) k.labels.emplace_back(std::string(label), std::move(*s));
                    else c.rep.add(lp, "a label value must be printable ASCII, at most 256 bytes");
                }
                return true;
            });
        } else if (name == "not_before") {
            k.not_before = read_time(c, v, fp);
        } else if (name == "expires_at") {
            k.expires_at = read_time(c, v, fp);
        } else if (name == "disabled") {
            set_if(read_bool(c, v, fp), k.disabled);
        } else if (name == "rate_limit") {
            if (v.type != node::kind::map) {
                c.rep.add(fp, "expected a mapping with requests_per_second and burst");
                return true;
            }
            rate_limit_config rl;
            bool has_rps = false, has_burst = false;
            read_map(c, v, fp, [&](std::string_view rn, const node& rv, const path& rp) {
                if (rn == "requests_per_second") {
                    has_rps = true;
                    if (auto d = read_number(c, rv, rp)) {
                        if (*d > 0) rl.requests_per_second = *d;
                        else c.rep.add(rp, "must be greater than 0");
                    }
                } else if (rn == "burst") {
                    has_burst = true;
                    if (auto d = read_number(c, rv, rp)) {
                        if (*d >= 1) rl.burst = *d;
                        else c.rep.add(rp, "must be at least 1");
                    }
                } else {
                    return false;
                }
                return true;
            });
            if (!has_rps) c.rep.add(fp.field("requests_per_second"), "missing");
            if (!has_burst) c.rep.add(fp.field("burst"), "missing");
            k.rate_limit = rl;
        } else if (name == "allowed_paths") {
            if (v.type == node::kind::null || (v.type == node::kind::seq && v.children.empty())) {
                c.rep.add(fp, "must list at least one path pattern; remove the field to allow every path");
                return true;
            }
            read_list(c, v, fp, [&](const node& item, const path& ip) {
                if (auto s = read_pattern(c, item, ip)) k.allowed_paths.push_back(std::move(*s));
            });
        } else {
            return false;
        }
        return true;
    });
    if (!has_id) c.rep.add(p.field("id"), "missing; every key needs an id");
    if (!has_hash && !has_key) c.rep.add(p, "needs a hash (preferred) or a key");
    if (has_hash && has_key) c.rep.add(p, "has both hash and key; keep one");
    if (k.not_before && k.expires_at && *k.expires_at <= *k.not_before)
        c.rep.add(p.field("expires_at"), "must be later than not_before");
    k.origin = c.rep.prefix + p.str();
    return c.rep.count() == before;
}

// Parses a list of key entries; returns false if any entry had a problem.
bool parse_key_list(context& c, const node& n, const path& p, std::vector<key_config>& out) {
    std::size_t before = c.rep.count();
    if (n.type == node::kind::seq) out.reserve(out.size() + n.children.size());
    read_list(c, n, p, [&](const node& item, const path& ip) {
        key_config k;
        if (parse_key(c, item, ip, k)) out.push_back(std::move(k));
    });
    return c.rep.count() == before;
}

void parse_rule(context& c, const node& n, const path& p, rule_config& r, bool& valid_path) {
    if (n.type != node::kind::map) {
        c.rep.add(p, "expected a mapping with path, methods and scopes");
        return;
    }
    bool has_path = false, has_scopes = false;
    read_map(c, n, p, [&](std::string_view name, const node& v, const path& fp) {
        if (name == "path") {
            has_path = true;
            if (auto s = read_pattern(c, v, fp)) {
                r.path = std::move(*s);
                valid_path = true;
            }
        } else if (name == "methods") {
            if (v.type == node::kind::null || (v.type == node::kind::seq && v.children.empty())) {
                c.rep.add(fp, "must list at least one method; remove the field to match every method");
                return true;
            }
            read_list(c, v, fp, [&](const node& item, const path& ip) {
                if (auto s = read_string(c, item, ip)) {
                    if (is_token(*s)) r.methods.push_back(std::move(*s));
                    else c.rep.add(ip, "expected an HTTP method such as GET or POST");
                }
            });
        } else if (name == "scopes") {
            has_scopes = true;
            read_list(c, v, fp, [&](const node& item, const path& ip) {
                if (auto s = read_string(c, item, ip)) {
                    if (valid_id(*s)) r.scopes.push_back(std::move(*s));
                    else c.rep.add(ip, id_rule);
                }
            });
        } else {
            return false;
        }
        return true;
    });
    if (!has_path) c.rep.add(p.field("path"), "missing");
    // Requiring the field means a rule never lets every key through by a typo.
    if (!has_scopes) c.rep.add(p.field("scopes"), "missing; use [] to let every valid key through");
}

// What the checks that span several sections need to know about the file.
struct parse_state {
    bool key_problems = false;
    std::vector<std::size_t> public_index; // original index of each kept public path
    std::vector<std::size_t> rule_index;   // original index of each rule with a valid path
    std::vector<std::size_t> rule_slot;    // its position in config.auth.rules
};

void parse_auth(context& c, const node& n, const path& p, config& cfg, parse_state& st,
                const std::string& base_dir) {
    auto& a = cfg.auth;
    read_map(c, n, p, [&](std::string_view name, const node& v, const path& fp) {
        if (name == "header") {
            if (auto s = read_string(c, v, fp)) {
                if (is_token(*s)) a.header = std::move(*s);
                else c.rep.add(fp, "expected an HTTP header name such as X-API-Key");
            }
        } else if (name == "accept_bearer") {
            set_if(read_bool(c, v, fp), a.accept_bearer);
        } else if (name == "strip_credentials") {
            set_if(read_bool(c, v, fp), a.strip_credentials);
        } else if (name == "identity_header_prefix") {
            if (auto s = read_string(c, v, fp)) {
                if (is_token(*s)) a.identity_header_prefix = std::move(*s);
                else c.rep.add(fp, "expected a non-empty HTTP header name prefix such as X-Keygate-");
            }
        } else if (name == "hide_denials") {
            set_if(read_bool(c, v, fp), a.hide_denials);
        } else if (name == "public_paths") {
            a.public_paths.clear();
            st.public_index.clear();
            read_list(c, v, fp, [&](const node& item, const path& ip) {
                if (auto s = read_pattern(c, item, ip)) {
                    a.public_paths.push_back(std::move(*s));
                    st.public_index.push_back(ip.index);
                }
            });
        } else if (name == "failed_attempts") {
            auto& f = a.failed_attempts;
            read_map(c, v, fp, [&](std::string_view fn, const node& fv, const path& fpp) {
                if (fn == "max") set_uint(c, fv, fpp, f.max, 0);
                else if (fn == "window") set_if(read_duration(c, fv, fpp, millis{1}), f.window);
                else if (fn == "block") set_if(read_duration(c, fv, fpp, millis{1}), f.block);
                else if (fn == "exempt") {
                    read_list(c, fv, fpp, [&](const node& item, const path& ip) {
                        if (auto s = read_string(c, item, ip)) {
                            if (const char* why = cidr_problem(*s)) c.rep.add(ip, why);
                            else f.exempt.push_back(std::move(*s));
                        }
                    });
                } else return false;
                return true;
            });
        } else if (name == "reload_interval") {
            // Two reads 100 ms apart must agree before a change applies.
            set_if(read_duration(c, v, fp, millis{100}), a.reload_interval);
        } else if (name == "keys_file") {
            read_file_name(c, v, fp, a.keys_file, base_dir);
        } else if (name == "keys") {
            if (!parse_key_list(c, v, fp, a.keys)) st.key_problems = true;
        } else if (name == "rules") {
            read_list(c, v, fp, [&](const node& item, const path& ip) {
                rule_config r;
                bool valid = false;
                parse_rule(c, item, ip, r, valid);
                if (valid) {
                    st.rule_index.push_back(ip.index);
                    st.rule_slot.push_back(a.rules.size());
                }
                a.rules.push_back(std::move(r));
            });
        } else {
            return false;
        }
        return true;
    });
}

void parse_config(context& c, const node& root, config& cfg, parse_state& st,
                  const std::string& base_dir) {
    if (root.type != node::kind::null && root.type != node::kind::map) {
        c.rep.add(path{}, "the configuration must be a YAML mapping of sections");
        return;
    }
    path top;
    read_map(c, root, top, [&](std::string_view name, const node& v, const path& fp) {
        if (name == "environment") {
            read_enum(c, v, fp, cfg.environment, {"production", "development"},
                      "must be production or development");
        } else if (name == "listen") {
            read_map(c, v, fp, [&](std::string_view f, const node& fv, const path& p) {
                if (f == "address") read_address(c, fv, p, cfg.listen.address);
                else if (f == "port") set_uint(c, fv, p, cfg.listen.port, 1, 65535);
                else if (f == "tls") {
                    if (fv.type == node::kind::null) return true;
                    listen_tls_config tls;
                    bool cert = false, key = false;
                    read_map(c, fv, p, [&](std::string_view t, const node& tv, const path& tp) {
                        if (t == "cert_file") {
                            cert = true;
                            read_file_name(c, tv, tp, tls.cert_file, base_dir);
                        } else if (t == "key_file") {
                            key = true;
                            read_file_name(c, tv, tp, tls.key_file, base_dir);
                        } else if (t == "min_version") {
                            read_enum(c, tv, tp, tls.min_version, {"1.2", "1.3"}, "must be \"1.2\" or \"1.3\"");
                        } else return false;
                        return true;
                    });
                    if (fv.type == node::kind::map) {
                        if (!cert) c.rep.add(p.field("cert_file"), "missing; TLS needs a certificate");
                        if (!key) c.rep.add(p.field("key_file"), "missing; TLS needs a private key");
                    }
                    cfg.listen.tls = std::move(tls);
                } else return false;
                return true;
            });
        } else if (name == "upstream") {
            auto& up = cfg.upstream;
            read_map(c, v, fp, [&](std::string_view f, const node& fv, const path& p) {
                if (f == "url") {
                    if (auto s = read_string(c, fv, p))
                        if (const char* why = apply_upstream_url(up, *s)) c.rep.add(p, why);
                } else if (f == "connect_timeout") set_if(read_duration(c, fv, p, millis{1}), up.connect_timeout);
                else if (f == "response_timeout") set_if(read_duration(c, fv, p, millis{1}), up.response_timeout);
                else if (f == "max_idle_connections") set_uint(c, fv, p, up.max_idle_connections, 0);
                else if (f == "tls") {
                    read_map(c, fv, p, [&](std::string_view t, const node& tv, const path& tp) {
                        if (t == "verify") set_if(read_bool(c, tv, tp), up.tls.verify);
                        else if (t == "ca_file") read_file_name(c, tv, tp, up.tls.ca_file, base_dir);
                        else if (t == "server_name") {
                            if (auto s = read_string(c, tv, tp)) {
                                if (!s->empty()) up.tls.server_name = std::move(*s);
                                else c.rep.add(tp, "must not be empty");
                            }
                        } else return false;
                        return true;
                    });
                } else return false;
                return true;
            });
        } else if (name == "admin") {
            read_map(c, v, fp, [&](std::string_view f, const node& fv, const path& p) {
                if (f == "address") read_address(c, fv, p, cfg.admin.address);
                else if (f == "port") set_uint(c, fv, p, cfg.admin.port, 1, 65535);
                else return false;
                return true;
            });
        } else if (name == "auth") {
            parse_auth(c, v, fp, cfg, st, base_dir);
        } else if (name == "limits") {
            auto& l = cfg.limits;
            read_map(c, v, fp, [&](std::string_view f, const node& fv, const path& p) {
                if (f == "max_header_bytes") set_uint(c, fv, p, l.max_header_bytes, 1);
                else if (f == "max_headers") set_uint(c, fv, p, l.max_headers, 1);
                else if (f == "max_body_bytes") set_uint(c, fv, p, l.max_body_bytes, 0);
                else if (f == "header_timeout") set_if(read_duration(c, fv, p, millis{1}), l.header_timeout);
                else if (f == "idle_timeout") set_if(read_duration(c, fv, p, millis{1}), l.idle_timeout);
                else if (f == "max_connections") set_uint(c, fv, p, l.max_connections, 1);
                else if (f == "drain_delay") set_if(read_duration(c, fv, p, millis{0}), l.drain_delay);
                else if (f == "drain_timeout") set_if(read_duration(c, fv, p, millis{0}), l.drain_timeout);
                else return false;
                return true;
            });
        } else if (name == "logging") {
            read_map(c, v, fp, [&](std::string_view f, const node& fv, const path& p) {
                if (f == "level") {
                    read_enum(c, fv, p, cfg.logging.level,
                              {"trace", "debug", "info", "warn", "error", "critical", "off"}, level_hint);
                } else if (f == "format") {
                    read_enum(c, fv, p, cfg.logging.format, {"json", "text"}, "must be json or text");
                } else if (f == "access_log") {
                    set_if(read_bool(c, fv, p), cfg.logging.access_log);
                } else return false;
                return true;
            });
        } else if (name == "threads") {
            set_uint(c, v, fp, cfg.threads, 0, 1024);
        } else {
            return false;
        }
        return true;
    });
}

// Parses a keys document (already read) into keys; problems are prefixed with `file`.
std::vector<key_config> parse_keys_document(std::string_view text, const std::string& file,
                                            const env_lookup& env,
                                            std::vector<std::string>& problems) {
    report rep{problems, file + ": "};
    context c{rep, env};
    node root;
    std::vector<key_config> keys;
    path top;
    path keys_path = top.field("keys");
    bool json = file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0;
    if (json) {
        // Entries are converted while parsing, so they are reported before the fields
        // around them.
        auto on_entry = [&](node& entry, std::size_t i) {
            key_config k;
            if (parse_key(c, entry, keys_path.at(i), k)) keys.push_back(std::move(k));
        };
        if (!parse_json(text, root, rep, on_entry)) return {};
    } else if (!parse_yaml(text, root, rep)) {
        return {};
    }
    if (root.type != node::kind::map) {
        rep.add(top, "expected a mapping with a top-level keys: list");
        return keys;
    }
    bool has_keys = false;
    read_map(c, root, top, [&](std::string_view name, const node& v, const path& fp) {
        if (name != "keys") return false;
        has_keys = true;
        parse_key_list(c, v, fp, keys);
        return true;
    });
    if (!has_keys) rep.add(top.field("keys"), "missing; list the keys under a top-level keys:");
    return keys;
}

std::string secret_field(const key_config& k) {
    return k.origin + (k.from_plaintext ? ".key" : ".hash");
}

constexpr std::size_t min_production_key_length = 32;

// The rules that span the whole key set. `warnings` is null when short keys are errors.
void check_key_set(const std::vector<key_config>& keys, const std::string& environment,
                   std::vector<std::string>& problems, std::vector<std::string>* warnings) {
    struct finding {
        std::size_t index; // of the offending key, so findings come out in key order
        int rule;
        std::string text;
    };
    std::vector<finding> found;

    // Sorts (value, index) pairs and reports each later key of a run of equal values
    // against the first one. Compact pairs keep the sort in cache.
    auto find_repeats = [&](auto& entries, int rule, auto message) {
        std::sort(entries.begin(), entries.end());
        for (std::size_t run = 0; run < entries.size();) {
            std::size_t next = run + 1;
            for (; next < entries.size() && entries[next].first == entries[run].first; ++next)
                found.push_back({entries[next].second, rule,
                                 message(keys[entries[next].second], keys[entries[run].second])});
            run = next;
        }
    };

    std::vector<std::pair<std::string_view, std::size_t>> ids;
    ids.reserve(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) ids.emplace_back(keys[i].id, i);
    find_repeats(ids, 0, [](const key_config& dup, const key_config& first) {
        return dup.origin + ".id: duplicate key id \"" + dup.id + "\", already used by " + first.origin;
    });

    std::vector<std::pair<digest_t, std::size_t>> digests;
    digests.reserve(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) digests.emplace_back(keys[i].digest, i);
    find_repeats(digests, 1, [](const key_config& dup, const key_config& first) {
        return secret_field(dup) + ": same secret as " + secret_field(first) +
               "; every key needs its own secret";
    });

    bool production = environment != "development";
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const key_config& k = keys[i];
        if (!k.from_plaintext || k.plaintext_length >= min_production_key_length) continue;
        if (production)
            found.push_back({i, 2,
                             k.origin + ".key: plaintext key is shorter than 32 bytes, which production "
                                        "refuses; make one with keygate gen-key"});
        else if (warnings)
            warnings->push_back(k.origin +
                                ".key: plaintext key is shorter than 32 bytes; production would refuse it");
    }

    std::sort(found.begin(), found.end(), [](const finding& a, const finding& b) {
        return a.index != b.index ? a.index < b.index : a.rule < b.rule;
    });
    for (auto& f : found) problems.push_back(std::move(f.text));
}

bool is_active(const key_config& k, sys_seconds now) {
    if (k.disabled) return false;
    if (k.not_before && now < *k.not_before) return false;
    if (k.expires_at && now >= *k.expires_at) return false;
    return true;
}

// KEYGATE_API_KEYS: `id:key` pairs split at the first colon, plaintext only.
void parse_env_keys(std::string_view text, std::vector<key_config>& out,
                    std::vector<std::string>& problems, bool& key_problems) {
    constexpr std::string_view var = "KEYGATE_API_KEYS";
    std::size_t index = 0;
    std::size_t begin = 0;
    while (begin <= text.size()) {
        std::size_t end = text.find(',', begin);
        if (end == npos) end = text.size();
        std::string_view entry = text.substr(begin, end - begin);
        // Neither ids nor keys may hold spaces, so trimming them is unambiguous.
        while (!entry.empty() && (entry.front() == ' ' || entry.front() == '\t')) entry.remove_prefix(1);
        while (!entry.empty() && (entry.back() == ' ' || entry.back() == '\t')) entry.remove_suffix(1);
        std::string origin = std::string(var) + "[" + std::to_string(index) + "]";
        std::size_t colon = entry.find(':');
        if (entry.empty()) {
            problems.push_back(origin + ": empty entry; remove the extra comma");
            key_problems = true;
        } else if (colon == npos) {
            problems.push_back(origin + ": expected id:key");
            key_problems = true;
        } else {
            std::string_view id = entry.substr(0, colon);
            std::string_view key = entry.substr(colon + 1);
            bool ok = true;
            if (!valid_id(id)) {
                problems.push_back(origin + ".id: " + id_rule);
                ok = false;
            }
            if (!valid_plaintext(key)) {
                problems.push_back(origin + ".key: a plaintext key must be printable ASCII with no space and no comma");
                ok = false;
            }
            if (ok) {
                key_config k;
                k.id = std::string(id);
                k.digest = crypto::sha256(key);
                k.from_plaintext = true;
                k.plaintext_length = key.size();
                k.origin = std::move(origin);
                out.push_back(std::move(k));
            } else {
                key_problems = true;
            }
        }
        ++index;
        begin = end + 1;
    }
}

void apply_listen(config& cfg, std::string_view value, std::string_view source,
                  std::vector<std::string>& problems) {
    std::string host;
    std::uint16_t port = 0;
    if (parse_host_port(value, host, port)) {
        cfg.listen.address = std::move(host);
        cfg.listen.port = port;
    } else {
        problems.push_back(std::string(source) +
                           ": expected address:port with an IP address, e.g. 0.0.0.0:8080 or [::1]:8080");
    }
}

void apply_upstream(config& cfg, std::string_view value, std::string_view source,
                    std::vector<std::string>& problems) {
    if (const char* why = apply_upstream_url(cfg.upstream, value))
        problems.push_back(std::string(source) + ": " + why);
}

void apply_level(config& cfg, std::string_view value, std::string_view source,
                 std::vector<std::string>& problems) {
    if (valid_level(value)) cfg.logging.level = std::string(value);
    else problems.push_back(std::string(source) + ": " + level_hint);
}

// An empty variable counts as unset, as compose files often declare them empty.
std::optional<std::string> env_value(const env_lookup& env, const char* name) {
    auto v = env(name);
    if (v && v->empty()) return std::nullopt;
    return v;
}

// Headers that HTTP framing, hop-by-hop handling or keygate's own forwarding depend on.
constexpr std::string_view reserved_headers[] = {
    "Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection", "Keep-Alive",
    "Proxy-Connection", "TE", "Trailer", "Upgrade", "Expect", "Cookie", "Forwarded",
    "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id",
};

// The credential header must not be one keygate or HTTP itself rewrites, and the identity
// prefix, whose headers are stripped from every request, must not catch one of them.
void check_headers(const config::auth_t& auth, std::vector<std::string>& problems) {
    for (std::string_view h : reserved_headers) {
        if (ascii_iequal(auth.header, h)) {
            problems.push_back("auth.header: " + std::string(h) +
                               " has a meaning of its own in HTTP; use a header such as X-API-Key");
            break;
        }
    }
    std::string_view prefix = auth.identity_header_prefix;
    for (std::string_view h : reserved_headers) {
        if (h.size() >= prefix.size() && ascii_iequal(h.substr(0, prefix.size()), prefix)) {
            problems.push_back("auth.identity_header_prefix: would strip the " + std::string(h) +
                               " header from every request; use a distinctive prefix such as X-Keygate-");
            break;
        }
    }
}

bool is_wildcard(std::string_view address) {
    return address == "0.0.0.0" || address == "::";
}

std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) {
        if (!out.empty()) out += '\n';
        out += l;
    }
    return out;
}

} // namespace

// ---------------------------------------------------------------------------

namespace {

// A problem names values from files and the environment (paths, patterns); a control byte
// in one must not split or forge a line of stderr or the log.
std::vector<std::string> one_line_each(std::vector<std::string> problems) {
    for (auto& line : problems) {
        std::string clean;
        clean.reserve(line.size());
        for (char c : line) {
            auto u = static_cast<unsigned char>(c);
            if (u < 0x20 || u == 0x7f) {
                static constexpr char hex[] = "0123456789abcdef";
                clean += "\\x";
                clean += hex[u >> 4];
                clean += hex[u & 0xf];
            } else {
                clean += c;
            }
        }
        line = std::move(clean);
    }
    return problems;
}

} // namespace

std::string config_error::summary() const {
    std::string out;
    for (const auto& p : problems) out += (out.empty() ? "" : "; ") + p;
    return out;
}

config_error::config_error(std::vector<std::string> p)
    : std::runtime_error(join_lines(one_line_each(p))), problems(one_line_each(std::move(p))) {}

env_lookup process_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        if (const char* v = std::getenv(name.c_str())) return std::string(v);
        return std::nullopt;
    };
}

config load_config(std::string_view yaml_text, const env_lookup& env, const cli_overrides& cli,
                   const std::string& base_dir) {
    std::vector<std::string> problems;
    config cfg;
    parse_state st;
    for (std::size_t i = 0; i < cfg.auth.public_paths.size(); ++i) st.public_index.push_back(i);
    report rep{problems, ""};
    context c{rep, env};

    node root;
    bool parsed = parse_yaml(yaml_text, root, rep);
    if (parsed) parse_config(c, root, cfg, st, base_dir);
    else st.key_problems = true;

    // Environment, then command line: each value is validated where it was given.
    if (auto v = env_value(env, "KEYGATE_ENV")) {
        if (*v == "production" || *v == "development") cfg.environment = *v;
        else problems.push_back("KEYGATE_ENV: must be production or development");
    }
    if (auto v = env_value(env, "KEYGATE_LISTEN")) apply_listen(cfg, *v, "KEYGATE_LISTEN", problems);
    if (auto v = env_value(env, "KEYGATE_UPSTREAM")) apply_upstream(cfg, *v, "KEYGATE_UPSTREAM", problems);
    if (auto v = env_value(env, "KEYGATE_LOG_LEVEL")) apply_level(cfg, *v, "KEYGATE_LOG_LEVEL", problems);
    if (auto v = env_value(env, "KEYGATE_API_KEYS"))
        parse_env_keys(*v, cfg.auth.keys, problems, st.key_problems);
    if (cli.listen) apply_listen(cfg, *cli.listen, "--listen", problems);
    if (cli.upstream) apply_upstream(cfg, *cli.upstream, "--upstream", problems);
    if (cli.log_level) apply_level(cfg, *cli.log_level, "--log-level", problems);

    if (!cfg.auth.keys_file.empty()) {
        std::string why;
        if (auto text = read_file(cfg.auth.keys_file, why)) {
            std::size_t before = problems.size();
            auto file_keys = parse_keys_document(*text, cfg.auth.keys_file, env, problems);
            if (problems.size() != before) st.key_problems = true;
            cfg.auth.keys.insert(cfg.auth.keys.end(), std::make_move_iterator(file_keys.begin()),
                                 std::make_move_iterator(file_keys.end()));
        } else {
            problems.push_back("auth.keys_file: cannot read " + cfg.auth.keys_file + ": " + why);
            st.key_problems = true;
        }
    }

    bool production = cfg.environment != "development";
    check_key_set(cfg.auth.keys, cfg.environment, problems, &cfg.warnings);

    // A public path is forwarded before any rule is looked at, so an overlap would
    // silently skip the rule's scopes there.
    for (std::size_t i = 0; i < cfg.auth.public_paths.size(); ++i) {
        for (std::size_t j = 0; j < st.rule_slot.size(); ++j) {
            const auto& rule = cfg.auth.rules[st.rule_slot[j]];
            if (patterns_overlap(cfg.auth.public_paths[i], rule.path))
                problems.push_back("auth.public_paths[" + std::to_string(st.public_index[i]) + "]: " +
                                   cfg.auth.public_paths[i] + " overlaps auth.rules[" +
                                   std::to_string(st.rule_index[j]) + "].path " + rule.path +
                                   ", whose scopes would never be checked there; remove the "
                                   "public path or narrow the rule");
        }
    }

    check_headers(cfg.auth, problems);

    if (cfg.admin.port == cfg.listen.port &&
        (cfg.admin.address == cfg.listen.address || is_wildcard(cfg.admin.address) ||
         is_wildcard(cfg.listen.address)))
        problems.push_back("admin.port: must differ from listen.port");

    if (production && !cfg.upstream.tls.verify)
        problems.push_back("upstream.tls.verify: false is not allowed in production; trust the "
                           "upstream's certificate with upstream.tls.ca_file instead");

    auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    bool any_active = std::any_of(cfg.auth.keys.begin(), cfg.auth.keys.end(),
                                  [&](const key_config& k) { return is_active(k, now); });
    // A broken key entry already explains itself; "no active key" would only add noise.
    if (!any_active && !st.key_problems) {
        if (production)
            problems.push_back("auth.keys: no active key; production requires at least one (add one "
                               "to auth.keys, auth.keys_file or KEYGATE_API_KEYS, or check "
                               "disabled, not_before and expires_at)");
        else {
            cfg.open_mode = true;
            cfg.warnings.push_back("auth.keys: no active key in development: authentication is "
                                   "disabled and every request is forwarded until a reload brings keys");
        }
    }

    if (!problems.empty()) throw config_error(std::move(problems));
    return cfg;
}

config load_config_file(const std::string& file, const env_lookup& env, const cli_overrides& cli) {
    std::string why;
    auto text = read_file(file, why);
    if (!text) throw config_error({file + ": cannot read the configuration file: " + why});
    std::string base = std::filesystem::path(file).parent_path().string();
    return load_config(*text, env, cli, base.empty() ? "." : base);
}

std::vector<key_config> load_keys_file(const std::string& file, const env_lookup& env) {
    std::string why;
    auto text = read_file(file, why);
    if (!text) throw config_error({file + ": cannot read the keys file: " + why});
    return load_keys_text(*text, file, env);
}

std::vector<key_config> load_keys_text(std::string_view text, const std::string& file,
                                       const env_lookup& env) {
    std::vector<std::string> problems;
    auto keys = parse_keys_document(text, file, env, problems);
    if (!problems.empty()) throw config_error(std::move(problems));
    return keys;
}

void validate_key_set(const std::vector<key_config>& keys, const std::string& environment) {
    std::vector<std::string> problems;
    check_key_set(keys, environment, problems, nullptr);
    if (!problems.empty()) throw config_error(std::move(problems));
}

std::optional<millis> parse_duration(std::string_view text) {
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0) return std::nullopt;
    std::string_view unit = text.substr(digits);
    std::int64_t factor = 0;
    if (unit == "ms") factor = 1;
    else if (unit == "s") factor = 1'000;
    else if (unit == "m") factor = 60'000;
    else if (unit == "h") factor = 3'600'000;
    else return std::nullopt;
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
    if (ec != std::errc() || value > std::numeric_limits<std::int64_t>::max() / factor)
        return std::nullopt;
    return millis{value * factor};
}

std::optional<sys_seconds> parse_rfc3339(std::string_view t) {
    auto number = [&](std::size_t pos, std::size_t n, int& out) {
        if (pos + n > t.size()) return false;
        out = 0;
        for (std::size_t i = pos; i < pos + n; ++i) {
            if (t[i] < '0' || t[i] > '9') return false;
            out = out * 10 + (t[i] - '0');
        }
        return true;
    };
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
    if (t.size() < 20) return std::nullopt; // the shortest form: 2027-06-30T00:00:00Z
    if (!number(0, 4, y) || t[4] != '-' || !number(5, 2, mo) || t[7] != '-' || !number(8, 2, d))
        return std::nullopt;
    if (t[10] != 'T' && t[10] != 't') return std::nullopt;
    if (!number(11, 2, h) || t[13] != ':' || !number(14, 2, mi) || t[16] != ':' || !number(17, 2, s))
        return std::nullopt;
    std::size_t pos = 19;
    if (t[pos] == '.') {
        std::size_t start = ++pos;
        while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') ++pos;
        if (pos == start) return std::nullopt;
    }
    if (pos >= t.size()) return std::nullopt;
    int offset = 0;
    char z = t[pos];
    if (z == 'Z' || z == 'z') {
        ++pos;
    } else if (z == '+' || z == '-') {
        int oh = 0, om = 0;
        if (!number(pos + 1, 2, oh) || pos + 3 >= t.size() || t[pos + 3] != ':' ||
            !number(pos + 4, 2, om) || oh > 23 || om > 59)
            return std::nullopt;
        offset = (oh * 60 + om) * 60 * (z == '-' ? -1 : 1);
        pos += 6;
    } else {
        return std::nullopt;
    }
    // A leap second (:60) is valid RFC 3339; it lands on the next second.
    if (pos != t.size() || h > 23 || mi > 59 || s > 60) return std::nullopt;
    using namespace std::chrono;
    year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
    if (!ymd.ok()) return std::nullopt;
    return sys_days(ymd) + hours(h) + minutes(mi) + seconds(s) - seconds(offset);
}

bool valid_path_pattern(std::string_view pattern) {
    if (pattern.empty() || pattern.front() != '/') return false;
    std::string_view base = pattern;
    bool prefix = pattern.size() >= 2 && pattern.ends_with("/*");
    if (prefix) base = pattern.substr(0, pattern.size() - 2);
    if (base.find('*') != npos) return false;
    if (prefix) {
        if (base.empty()) return true; // `/*`: every path
        if (base.back() == '/') return false;
    }
    auto n = normalise_target(base);
    return n.ok && !n.has_query && n.path == base;
}

bool patterns_overlap(std::string_view a, std::string_view b) {
    auto split = [](std::string_view p, std::string_view& base) {
        bool prefix = p.size() >= 2 && p.ends_with("/*");
        base = prefix ? p.substr(0, p.size() - 2) : p;
        return prefix;
    };
    // True when `p` equals `base` or lies below `base/`: what a prefix pattern matches.
    auto under = [](std::string_view p, std::string_view base) {
        return p == base || (p.size() > base.size() && p.starts_with(base) && p[base.size()] == '/');
    };
    std::string_view ba, bb;
    bool pa = split(a, ba), pb = split(b, bb);
    if (!pa && !pb) return a == b;
    if (pa && pb) return under(ba, bb) || under(bb, ba);
    return pa ? under(b, ba) : under(a, bb);
}

} // namespace keygate
