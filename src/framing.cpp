#include "keygate/framing.hpp"

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <charconv>
#include <cstring>
#include <optional>

namespace keygate {

namespace http = boost::beast::http;
using boost::system::error_code;

namespace {

std::string_view trim(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
}

/// Calls `fn` for each comma-separated, trimmed, non-empty token of `value`.
template <class Fn>
void for_each_token(std::string_view value, Fn&& fn) {
    while (!value.empty()) {
        auto comma = value.find(',');
        auto token = trim(value.substr(0, comma));
        if (!token.empty()) fn(token);
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
}

bool has_token(const header_list& fields, std::string_view name, std::string_view token) {
    bool found = false;
    for (const auto& f : fields) {
        if (!iequals(f.name, name)) continue;
        for_each_token(f.value, [&](std::string_view t) {
            if (iequals(t, token)) found = true;
        });
    }
    return found;
}

bool all_digits(std::string_view v, std::size_t max_digits) {
    if (v.empty() || v.size() > max_digits) return false;
    for (char c : v)
        if (c < '0' || c > '9') return false;
    return true;
}

std::uint64_t to_u64(std::string_view digits) {
    std::uint64_t n = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), n);
    return n;
}

// Host: reg-name, IPv4 or IP-literal, optional port; no comma, space, '@' or '/'.
bool valid_host(std::string_view h) {
    for (char c : h) {
        auto u = static_cast<unsigned char>(c);
        bool ok = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9');
        switch (c) {
        case '-': case '.': case '_': case '~': case '%': case ':': case '[': case ']':
        case '!': case '$': case '&': case '\'': case '(': case ')': case '*': case '+':
        case ';': case '=':
            ok = true;
            break;
        default:
            break;
        }
        if (!ok) return false;
    }
    return true;
}

constexpr std::string_view forwarding_names[] = {
    "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"};

// A header spelled with '_' where a protected name has '-' would slip past a proxy that
// matches exact names and reach an app (or CGI) that folds '_' into '-'.
bool underscore_alias(std::string_view name, const head_limits& limits) {
    if (name.find('_') == std::string_view::npos) return false;
    // Compare as if every '_' were '-', without copying (names may be of any length).
    auto dash = [](char c) { return c == '_' ? '-' : c; };
    auto same_prefix = [&](std::string_view target, bool whole) {
        if (whole ? name.size() != target.size() : name.size() < target.size()) return false;
        for (std::size_t i = 0; i < target.size(); ++i) {
            char a = dash(name[i]), b = target[i];
            if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
            if (a != b) return false;
        }
        return true;
    };
    if (same_prefix(limits.credential_header, true)) return true;
    if (!limits.identity_prefix.empty() && same_prefix(limits.identity_prefix, false)) return true;
    for (auto n : forwarding_names)
        if (same_prefix(n, true)) return true;
    return false;
}

constexpr head_verdict bad(std::string_view message) {
    return {400, "bad_request", message};
}

// Too many fields: reported through the parser as a distinct error so it maps to 431.
enum class local_error { too_many_fields = 1 };

struct local_category : boost::system::error_category {
    const char* name() const noexcept override { return "keygate.head"; }
    std::string message(int) const override { return "too many header fields"; }
};
const local_category& local_cat() {
    static local_category c;
    return c;
}

// keygate only ever feeds a head: one base collects the fields (as views into the input,
// bounded in number) and ignores every body callback, for requests and responses alike.
template <bool IsRequest, class Head>
class head_parser : public http::basic_parser<IsRequest> {
public:
    Head* out = nullptr;
    std::size_t max_fields = 100;

protected:
    void on_field_impl(http::field, boost::beast::string_view name,
                       boost::beast::string_view value, error_code& ec) override {
        if (out->fields.size() >= max_fields) {
            ec.assign(static_cast<int>(local_error::too_many_fields), local_cat());
            return;
        }
        out->fields.push_back({{name.data(), name.size()}, trim({value.data(), value.size()})});
    }
    void on_header_impl(error_code&) override {}
    void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
    std::size_t on_body_impl(boost::beast::string_view body, error_code&) override {
        return body.size();
    }
    void on_chunk_header_impl(std::uint64_t, boost::beast::string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   error_code&) override {
        return body.size();
    }
    void on_finish_impl(error_code&) override {}
};

class req_parser final : public head_parser<true, request_head> {
    void on_request_impl(http::verb, boost::beast::string_view method,
                         boost::beast::string_view target, int version, error_code&) override {
        out->method = {method.data(), method.size()};
        out->target = {target.data(), target.size()};
        out->version = static_cast<unsigned>(version);
    }
    void on_response_impl(int, boost::beast::string_view, int, error_code&) override {}
};

class res_parser final : public head_parser<false, response_head> {
    void on_request_impl(http::verb, boost::beast::string_view, boost::beast::string_view, int,
                         error_code&) override {}
    void on_response_impl(int code, boost::beast::string_view reason, int version,
                          error_code&) override {
        out->status = static_cast<unsigned>(code);
        out->reason = {reason.data(), reason.size()};
        out->version = static_cast<unsigned>(version);
    }
};

} // namespace

head_scan scan_head(std::string_view data, std::size_t from) {
    // Resume a little before `from` so a CRLF split across reads is still seen.
    std::size_t i = from > 3 ? from - 3 : 0;
    const char* base = data.data();
    while (i < data.size()) {
        // Only line ends matter: jump from one LF to the next.
        const void* hit = std::memchr(base + i, '\n', data.size() - i);
        if (!hit) break;
        i = static_cast<std::size_t>(static_cast<const char*>(hit) - base);
        if (i == 0 || data[i - 1] != '\r') return {head_scan::bad, 0};
        if (i + 1 >= data.size()) break;
        char next = data[i + 1];
        if (next == ' ' || next == '\t') return {head_scan::bad, 0};
        if (next == '\r') {
            if (i + 2 >= data.size()) break;
            if (data[i + 2] != '\n') return {head_scan::bad, 0};
            return {head_scan::complete, i + 3};
        }
        ++i;
    }
    return {head_scan::incomplete, 0};
}

struct request_parser::impl {
    std::optional<req_parser> parser;
};

request_parser::request_parser() : impl_(std::make_unique<impl>()) {}
request_parser::~request_parser() = default;

head_verdict request_parser::parse(std::string_view raw, const head_limits& limits,
                                   request_head& out) {
    out.method = out.target = out.host = {};
    out.version = 11;
    out.fields.clear();
    out.framing = {};
    out.expect_continue = false;
    out.keep_alive = true;
    out.websocket_upgrade = false;

    // Beast's header_limit leaves the request line out; the whole head counts here.
    if (raw.size() > limits.max_header_bytes)
        return {431, "header_too_large", "The request header is too large."};

    auto& p = impl_->parser.emplace();
    p.out = &out;
    p.max_fields = limits.max_headers;
    p.eager(false);
    p.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(limits.max_header_bytes, UINT32_MAX)));
    p.body_limit(boost::none);

    error_code ec;
    p.put(boost::asio::const_buffer(raw.data(), raw.size()), ec);
    if (ec == http::error::header_limit ||
        (ec.category() == local_cat() &&
         ec.value() == static_cast<int>(local_error::too_many_fields)))
        return {431, "header_too_large", "The request header is too large."};
    if (ec || !p.is_header_done()) return bad("The request head is malformed.");

    if (out.version != 10 && out.version != 11) return bad("Only HTTP/1.0 and HTTP/1.1 are served.");

    // Only origin-form targets: no '*', absolute-form or authority-form (CONNECT).
    if (out.target.empty() || out.target.front() != '/')
        return bad("Only origin-form request targets are accepted.");
    for (char c : out.target) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || c == '#')
            return bad("The request target holds a forbidden character.");
    }

    unsigned hosts = 0, lengths = 0, encodings = 0, expects = 0;
    std::string_view length_value, encoding_value, expect_value;
    for (const auto& f : out.fields) {
        if (iequals(f.name, "Host")) {
            ++hosts;
            out.host = f.value;
        } else if (iequals(f.name, "Content-Length")) {
            ++lengths;
            length_value = f.value;
        } else if (iequals(f.name, "Transfer-Encoding")) {
            ++encodings;
            encoding_value = f.value;
        } else if (iequals(f.name, "Expect")) {
            ++expects;
            expect_value = f.value;
        } else if (underscore_alias(f.name, limits)) {
            return bad("A protected header name is spelled with '_'.");
        }
    }

    if (hosts > 1) return bad("Host is given more than once.");
    if (hosts == 0 && out.version == 11) return bad("Host is missing.");
    if (!valid_host(out.host)) return bad("Host is malformed.");

    if (encodings > 0) {
        if (out.version == 10) return bad("Transfer-Encoding is not allowed on HTTP/1.0.");
        if (encodings > 1 || !iequals(encoding_value, "chunked"))
            return bad("Transfer-Encoding must be exactly \"chunked\".");
        if (lengths > 0) return bad("Content-Length and Transfer-Encoding are both given.");
        out.framing = {body_framing::chunked, 0};
    } else if (lengths > 0) {
        if (lengths > 1) return bad("Content-Length is given more than once.");
        if (!all_digits(length_value, 18)) return bad("Content-Length is malformed.");
        out.framing = {body_framing::fixed_length, to_u64(length_value)};
        if (out.framing.length > limits.max_body_bytes)
            return {413, "payload_too_large", "The request body is too large."};
    }

    if (expects > 0) {
        if (expects > 1 || !iequals(expect_value, "100-continue"))
            return {417, "expectation_failed", "Only \"Expect: 100-continue\" is supported."};
        out.expect_continue = true;
    }

    if (out.version == 11)
        out.keep_alive = !has_token(out.fields, "Connection", "close");
    else
        out.keep_alive = has_token(out.fields, "Connection", "keep-alive");

    out.websocket_upgrade = has_token(out.fields, "Upgrade", "websocket") &&
                            has_token(out.fields, "Connection", "upgrade");
    return {};
}

bool parse_response_head(std::string_view raw, bool head_request, response_head& out,
                         const char*& why) {
    out.status = 0;
    out.reason = {};
    out.version = 11;
    out.fields.clear();
    out.framing = {};
    out.no_body = false;
    out.keep_alive = true;

    res_parser p;
    p.out = &out;
    p.max_fields = 1000;
    p.eager(false);
    p.header_limit(static_cast<std::uint32_t>(raw.size() + 1));
    p.body_limit(boost::none);
    error_code ec;
    p.put(boost::asio::const_buffer(raw.data(), raw.size()), ec);
    if (ec || !p.is_header_done()) {
        why = "malformed response head";
        return false;
    }
    if (out.version != 10 && out.version != 11) {
        why = "unsupported response version";
        return false;
    }
    if (out.status < 100 || out.status > 999) {
        why = "bad status code";
        return false;
    }

    unsigned encodings = 0;
    bool chunked_last = false, other_coding = false;
    bool have_length = false, length_conflict = false;
    std::uint64_t length = 0;
    for (const auto& f : out.fields) {
        if (iequals(f.name, "Transfer-Encoding")) {
            ++encodings;
            for_each_token(f.value, [&](std::string_view t) {
                if (chunked_last) other_coding = true; // anything after chunked
                if (iequals(t, "chunked")) chunked_last = true;
                else other_coding = true;
            });
        } else if (iequals(f.name, "Content-Length")) {
            for_each_token(f.value, [&](std::string_view t) {
                if (!all_digits(t, 18)) {
                    length_conflict = true;
                    return;
                }
                auto n = to_u64(t);
                if (have_length && n != length) length_conflict = true;
                have_length = true;
                length = n;
            });
            if (trim(f.value).empty()) length_conflict = true;
        }
    }

    out.no_body = head_request || out.status < 200 || out.status == 204 || out.status == 304;
    if (encodings > 0) {
        if (other_coding || !chunked_last) {
            why = "unsupported transfer coding";
            return false;
        }
        if (have_length) {
            why = "both Content-Length and Transfer-Encoding";
            return false;
        }
        out.framing = {body_framing::chunked, 0};
    } else if (length_conflict) {
        why = "malformed Content-Length";
        return false;
    } else if (have_length) {
        out.framing = {body_framing::fixed_length, length};
    } else {
        out.framing = {out.no_body ? body_framing::none : body_framing::until_close, 0};
    }

    if (out.version == 11)
        out.keep_alive = !has_token(out.fields, "Connection", "close");
    else
        out.keep_alive = has_token(out.fields, "Connection", "keep-alive");
    if (!out.no_body && out.framing.kind == body_framing::until_close) out.keep_alive = false;
    // Chunked framing in an HTTP/1.0 response is suspect (RFC 9112 §6.1): never reuse it.
    if (out.version == 10 && out.framing.kind == body_framing::chunked) out.keep_alive = false;
    return true;
}

} // namespace keygate
