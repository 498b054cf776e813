// Fuzz target: the request path before forwarding (DESIGN.md §1.1-§1.8).
// Bytes are what a client sends: scan_head finds the head, request_parser applies the
// framing checks, an accepted head goes through normalise_target and decide() against a
// fixed key store, and a chunked body (the bytes after the head) goes to chunked_decoder.
#include "keygate/chunked.hpp"
#include "keygate/config.hpp"
#include "keygate/crypto.hpp"
#include "keygate/framing.hpp"
#include "keygate/key_store.hpp"
#include "keygate/path.hpp"
#include "keygate/policy.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

// Stops the run with a message: libFuzzer keeps the input as a crash, the replay test fails.
[[noreturn]] void invariant_failed(const char* what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_request_head: invariant failed: %s [%.*s]\n", what,
                 static_cast<int>(detail.size() > 200 ? 200 : detail.size()), detail.data());
    std::abort();
}

#define FUZZ_CHECK(cond, detail) \
    do { if (!(cond)) invariant_failed(#cond, (detail)); } while (0)

using namespace keygate;

// Secrets the seed corpus uses, so the fuzzer starts from allowed requests too.
constexpr std::string_view reader_secret = "reader-secret-0123456789abcdefghijk";
constexpr std::string_view admin_secret = "admin-secret-0123456789abcdefghijkl";

const sys_seconds now{std::chrono::seconds{1'800'000'000}};

key_config make_key(std::string id, std::string_view secret, std::vector<std::string> scopes) {
    key_config k;
    k.id = std::move(id);
    k.digest = crypto::sha256(secret);
    k.from_plaintext = true;
    k.plaintext_length = secret.size();
    k.scopes = std::move(scopes);
    return k;
}

// Two keys, one rule, one public path.
const key_store& store() {
    static const key_store keys = [] {
        std::vector<key_config> list;
        auto reader = make_key("reader", reader_secret, {"read"});
        reader.allowed_paths = {"/data/*"};
        reader.rate_limit = rate_limit_config{10, 20};
        list.push_back(reader);
        list.push_back(make_key("admin", admin_secret, {"admin"}));
        return key_store(list, "X-Keygate-");
    }();
    return keys;
}

// The same rules, plain or with Bearer and hidden denials.
const config::auth_t& auth(bool variant) {
    static const config::auth_t plain = [] {
        config::auth_t a;
        a.public_paths = {"/public/*"};
        a.rules = {{"/admin/*", {"POST", "DELETE"}, {"admin"}}};
        return a;
    }();
    static const config::auth_t hidden = [] {
        config::auth_t a = plain;
        a.accept_bearer = true;
        a.hide_denials = true;
        return a;
    }();
    return variant ? hidden : plain;
}

head_limits limits() {
    head_limits l;
    l.max_header_bytes = 8192;
    l.max_headers = 50;
    l.max_body_bytes = 1 << 20;
    return l;
}

// Throttles whose answers come from the input, so every branch of decide() is reachable.
class fuzz_hooks final : public throttle_hooks {
public:
    explicit fuzz_hooks(unsigned bits) : bits_(bits) {}
    unsigned client_blocked() override { return bits_ % 8 == 1 ? 30 : 0; }
    unsigned key_failed() override { return bits_ % 8 == 2 ? 300 : 0; }
    unsigned rate_limited(const key_record&) override { return bits_ % 8 == 3 ? 1 : 0; }

private:
    unsigned bits_;
};

bool inside(std::string_view part, std::string_view whole) {
    return part.empty() ||
           (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

bool all_digits(std::string_view v) {
    if (v.empty()) return false;
    for (char c : v)
        if (c < '0' || c > '9') return false;
    return true;
}

// scan_head resumed at any point agrees with one scan of the whole input.
void check_scan(std::string_view in, const head_scan& whole) {
    for (std::size_t k : {in.size() / 3, in.size() / 2, in.size() > 0 ? in.size() - 1 : 0}) {
        head_scan first = scan_head(in.substr(0, k));
        if (first.result == head_scan::incomplete) first = scan_head(in, k);
        FUZZ_CHECK(first.result == whole.result, in);
        FUZZ_CHECK(first.length == whole.length, in);
    }
    if (whole.result == head_scan::complete) {
        FUZZ_CHECK(whole.length >= 4 && whole.length <= in.size(), in);
        FUZZ_CHECK(in.substr(whole.length - 4, 4) == "\r\n\r\n", in);
    }
}

void check_rejection(const head_verdict& v, std::string_view head) {
    FUZZ_CHECK(v.status == 400 || v.status == 413 || v.status == 417 || v.status == 431, head);
    FUZZ_CHECK(!v.error.empty() && !v.message.empty(), head);
}

// An accepted head has one unambiguous framing and views into the raw head only.
void check_accepted(const request_head& h, std::string_view head, const head_limits& lim) {
    FUZZ_CHECK(inside(h.method, head) && !h.method.empty(), head);
    FUZZ_CHECK(inside(h.target, head), head);
    FUZZ_CHECK(inside(h.host, head), head);
    FUZZ_CHECK(h.version == 10 || h.version == 11, head);
    FUZZ_CHECK(!h.target.empty() && h.target.front() == '/', head);
    for (char c : h.target) {
        auto u = static_cast<unsigned char>(c);
        FUZZ_CHECK(u > 0x20 && u < 0x7f && c != '#', head);
    }
    FUZZ_CHECK(h.fields.size() <= lim.max_headers, head);

    unsigned hosts = 0, lengths = 0, encodings = 0;
    std::string_view host, length, encoding;
    for (const auto& f : h.fields) {
        FUZZ_CHECK(inside(f.name, head) && inside(f.value, head), head);
        FUZZ_CHECK(!f.name.empty(), head);
        if (iequals(f.name, "Host")) {
            ++hosts;
            host = f.value;
        } else if (iequals(f.name, "Content-Length")) {
            ++lengths;
            length = f.value;
        } else if (iequals(f.name, "Transfer-Encoding")) {
            ++encodings;
            encoding = f.value;
        }
        // A protected name spelled with '_' never gets through (DESIGN.md §1.1).
        std::string dashed(f.name);
        for (char& c : dashed)
            if (c == '_') c = '-';
        if (dashed != f.name) {
            FUZZ_CHECK(!iequals(dashed, lim.credential_header), head);
            FUZZ_CHECK(!iequals(dashed, "X-Forwarded-For"), head);
            FUZZ_CHECK(!iequals(dashed, "X-Request-Id"), head);
        }
    }

    FUZZ_CHECK(hosts <= 1, head);
    if (h.version == 11) FUZZ_CHECK(hosts == 1, head);
    FUZZ_CHECK(h.host == host, head);

    FUZZ_CHECK(lengths <= 1 && encodings <= 1, head);
    FUZZ_CHECK(lengths == 0 || encodings == 0, head);
    switch (h.framing.kind) {
    case body_framing::chunked:
        FUZZ_CHECK(encodings == 1 && iequals(encoding, "chunked") && h.version == 11, head);
        break;
    case body_framing::fixed_length:
        FUZZ_CHECK(lengths == 1 && all_digits(length) && length.size() <= 18, head);
        FUZZ_CHECK(std::to_string(h.framing.length) == length.substr(std::min(
                       length.find_first_not_of('0'), length.size() - 1)), head);
        FUZZ_CHECK(h.framing.length <= lim.max_body_bytes, head);
        break;
    case body_framing::none:
        FUZZ_CHECK(lengths == 0 && encodings == 0, head);
        break;
    case body_framing::until_close:
        invariant_failed("a request body is never read until close", head);
    }
    FUZZ_CHECK(h.has_body() == (h.framing.kind == body_framing::chunked ||
                                (h.framing.kind == body_framing::fixed_length &&
                                 h.framing.length > 0)),
               head);
}

void check_decision(const decision& d, const config::auth_t& a, std::string_view path,
                    bool open_mode, bool have_keys, std::string_view head) {
    switch (d.kind) {
    case outcome::public_path:
        FUZZ_CHECK(d.status == 0, head);
        FUZZ_CHECK(path_matches(a.public_paths.front(), path), head);
        break;
    case outcome::allowed:
        FUZZ_CHECK(d.status == 0, head);
        // Outside open mode only a key lets a request through.
        FUZZ_CHECK(open_mode || (have_keys && d.key != nullptr), head);
        break;
    case outcome::denied:
        FUZZ_CHECK(d.status == 401 || d.status == 403 || d.status == 404 || d.status == 429,
                   head);
        FUZZ_CHECK(!d.error.empty() && !d.reason.empty(), head);
        FUZZ_CHECK(!open_mode, head);
        if (d.status == 429) FUZZ_CHECK(d.retry_after >= 1, head);
        if (a.hide_denials) FUZZ_CHECK(d.status != 401 && d.status != 403, head);
        break;
    }
}

// Decodes a chunked body in one piece and byte by byte; both must agree, and the payload
// never exceeds the bytes given.
void check_chunked(std::string_view body, const head_limits& lim) {
    chunked_decoder whole(lim.max_header_bytes, lim.max_headers);
    std::string payload;
    std::size_t consumed = 0;
    std::string_view rest = body;
    while (!rest.empty() && !whole.done() && whole.failure() == chunked_decoder::error::none) {
        std::string_view data;
        std::size_t used = whole.step(rest, data);
        FUZZ_CHECK(used <= rest.size(), body);
        FUZZ_CHECK(inside(data, rest.substr(0, used)), body);
        payload.append(data);
        if (used == 0) break;
        consumed += used;
        rest.remove_prefix(used);
    }
    FUZZ_CHECK(whole.payload_bytes() <= body.size(), body);
    FUZZ_CHECK(whole.payload_bytes() == payload.size(), body);

    chunked_decoder bytewise(lim.max_header_bytes, lim.max_headers);
    std::string payload2;
    std::size_t consumed2 = 0;
    for (std::size_t i = 0; i < body.size(); ++i) {
        if (bytewise.done() || bytewise.failure() != chunked_decoder::error::none) break;
        std::string_view data;
        std::size_t used = bytewise.step(body.substr(i, 1), data);
        FUZZ_CHECK(used <= 1, body);
        payload2.append(data);
        consumed2 += used;
    }
    FUZZ_CHECK(bytewise.done() == whole.done(), body);
    FUZZ_CHECK(bytewise.failure() == whole.failure(), body);
    if (whole.failure() == chunked_decoder::error::none) {
        // A failing step reports 0 bytes used, so only a clean run has a comparable count.
        FUZZ_CHECK(consumed2 == consumed, body);
        FUZZ_CHECK(payload2 == payload, body);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);

    const head_scan scan = scan_head(in);
    check_scan(in, scan);
    if (scan.result != head_scan::complete) return 0;

    const std::string_view head = in.substr(0, scan.length);
    const head_limits lim = limits();
    request_parser parser;
    request_head req;
    const head_verdict verdict = parser.parse(head, lim, req);
    if (verdict.status != 0) {
        check_rejection(verdict, head);
        return 0;
    }
    check_accepted(req, head, lim);

    // A parser is reused for every request of a connection: a second parse of the same
    // head gives the same answer.
    request_head again;
    FUZZ_CHECK(parser.parse(head, lim, again).status == 0, head);
    FUZZ_CHECK(again.fields.size() == req.fields.size() && again.target == req.target, head);

    if (req.framing.kind == body_framing::chunked) check_chunked(in.substr(scan.length), lim);

    const normalised_target target = normalise_target(req.target);
    if (!target.ok) {
        FUZZ_CHECK(*target.error != '\0', head);
        return 0;
    }

    unsigned bits = 0;
    for (unsigned char c : in) bits = bits * 31 + c;
    const config::auth_t& a = auth((bits >> 3) & 1);
    const credentials creds = find_credentials(req.fields, a);
    FUZZ_CHECK(inside(creds.header_value, head) && inside(creds.bearer_value, head), head);

    fuzz_hooks hooks(bits);
    const decision d = decide(a, &store(), false, req.method, target.path, creds, now, &hooks);
    check_decision(d, a, target.path, false, true, head);
    const decision plain = decide(a, &store(), false, req.method, target.path, creds, now);
    check_decision(plain, a, target.path, false, true, head);
    // Without a key store nothing can be verified: fail closed.
    const decision no_store = decide(a, nullptr, false, req.method, target.path, creds, now);
    check_decision(no_store, a, target.path, false, false, head);
    const decision open = decide(a, nullptr, true, req.method, target.path, creds, now);
    check_decision(open, a, target.path, true, false, head);
    FUZZ_CHECK(open.kind != outcome::denied, head);
    return 0;
}
