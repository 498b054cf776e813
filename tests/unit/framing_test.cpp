// Tests for include/keygate/framing.hpp (scan_head, request_parser, parse_response_head)
// and include/keygate/chunked.hpp (chunked_decoder): the framing rules of DESIGN.md §1.1.
#include "keygate/chunked.hpp"
#include "keygate/framing.hpp"

#include <catch.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using namespace keygate;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

// Joins `lines` with CRLF and ends the head with the empty line.
std::string head(std::initializer_list<std::string_view> lines) {
    std::string s;
    for (auto l : lines) {
        s += l;
        s += "\r\n";
    }
    s += "\r\n";
    return s;
}

// True when `v` is a view into `raw` (or empty).
bool inside(std::string_view v, const std::string& raw) {
    if (v.empty()) return true;
    return v.data() >= raw.data() && v.data() + v.size() <= raw.data() + raw.size();
}

// Parses with a fresh parser; `raw` must outlive `out`.
head_verdict parse(const std::string& raw, request_head& out, const head_limits& limits = {}) {
    request_parser p;
    return p.parse(raw, limits, out);
}

// Only the verdict matters.
head_verdict verdict(std::initializer_list<std::string_view> lines,
                     const head_limits& limits = {}) {
    auto raw = head(lines);
    request_head out;
    return parse(raw, out, limits);
}

void require_ok(const head_verdict& v) {
    INFO("error " << std::string(v.error) << ": " << std::string(v.message));
    REQUIRE(v.status == 0);
    REQUIRE(v.error.empty());
}

void check_bad(const head_verdict& v) {
    CHECK(v.status == 400);
    CHECK(v.error == "bad_request");
    CHECK(!v.message.empty());
}

std::string_view field(const request_head& h, std::string_view name) {
    for (const auto& f : h.fields)
        if (iequals(f.name, name)) return f.value;
    return {};
}

} // namespace

// ---------------------------------------------------------------------------------------
// scan_head
// ---------------------------------------------------------------------------------------

TEST_CASE("scan_head finds the end of a complete head", "[scan_head]") {
    const std::string h = "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n";
    auto s = scan_head(h);
    CHECK(s.result == head_scan::complete);
    CHECK(s.length == h.size());

    // Bytes after the head (a body, a pipelined request) are not part of it.
    auto with_body = h + "hello";
    s = scan_head(with_body);
    CHECK(s.result == head_scan::complete);
    CHECK(s.length == h.size());

    auto pipelined = h + h;
    s = scan_head(pipelined);
    CHECK(s.result == head_scan::complete);
    CHECK(s.length == h.size());

    // A head without fields.
    const std::string bare = "GET / HTTP/1.0\r\n\r\n";
    s = scan_head(bare);
    CHECK(s.result == head_scan::complete);
    CHECK(s.length == bare.size());
}

TEST_CASE("scan_head reports an unfinished head as incomplete", "[scan_head]") {
    for (std::string_view partial :
         {""sv, "G"sv, "GET / HTTP/1.1"sv, "GET / HTTP/1.1\r"sv, "GET / HTTP/1.1\r\n"sv,
          "GET / HTTP/1.1\r\nHost: a"sv, "GET / HTTP/1.1\r\nHost: a\r\n"sv,
          "GET / HTTP/1.1\r\nHost: a\r\n\r"sv}) {
        INFO(std::string(partial));
        auto s = scan_head(partial);
        CHECK(s.result == head_scan::incomplete);
        CHECK(s.length == 0);
    }
}

TEST_CASE("scan_head rejects a bare LF anywhere", "[scan_head]") {
    for (std::string_view h :
         {"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"sv,        // first byte
          "GET / HTTP/1.1\nHost: a\r\n\r\n"sv,            // after the request line
          "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"sv,    // after a field
          "GET / HTTP/1.1\r\nHost: a\r\n\n"sv,            // the final empty line
          "GET / HTTP/1.1\r\nHost: a\n\r\n"sv,            // LF then CRLF
          "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"sv,        // CRLF CR CRLF
          "GET / HTTP/1.1\r\nHost: a\n"sv}) {              // head not even finished
        INFO(std::string(h));
        auto s = scan_head(h);
        CHECK(s.result == head_scan::bad);
        CHECK(s.length == 0);
    }
}

TEST_CASE("scan_head rejects an obs-fold", "[scan_head]") {
    for (std::string_view h : {"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"sv,
                               "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"sv,
                               "GET / HTTP/1.1\r\n Host: a\r\n\r\n"sv,
                               "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n ,chunked\r\n"sv,
                               "GET / HTTP/1.1\r\nHost: a\r\n "sv}) {
        INFO(std::string(h));
        CHECK(scan_head(h).result == head_scan::bad);
    }
    // A space right after the final empty line belongs to the body, not to the head.
    const std::string h = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n";
    auto s = scan_head(h + " ");
    CHECK(s.result == head_scan::complete);
    CHECK(s.length == h.size());
}

namespace {

// Feeds `data` in reads of `step` bytes, resuming each scan where the previous one stopped
// (as session.cpp does), and returns the first non-incomplete result (or the last one).
head_scan scan_in_pieces(std::string_view data, std::size_t step) {
    head_scan s;
    std::size_t scanned = 0;
    for (std::size_t have = 0; have < data.size();) {
        have = std::min(data.size(), have + step);
        s = scan_head(data.substr(0, have), scanned);
        if (s.result != head_scan::incomplete) return s;
        scanned = have;
    }
    return s;
}

} // namespace

TEST_CASE("scan_head resumed across split reads gives the result of one scan", "[scan_head]") {
    const std::vector<std::string> inputs = {
        "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\nbody bytes",
        "GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",   // obs-fold, SP
        "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",  // obs-fold, HTAB
        "GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",           // bare LF
        "GET /x HTTP/1.1\r\nHost: a\r\n\n",                     // bare LF at the end
        "GET /x HTTP/1.1\r\nHost: a\r\n\r\r\n",                 // CR not followed by LF
        "GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n",             // never finished
    };
    for (const auto& in : inputs) {
        INFO(in);
        const auto whole = scan_head(in);
        for (std::size_t step = 1; step <= in.size(); ++step) {
            INFO("read size " << step);
            auto s = scan_in_pieces(in, step);
            CHECK(s.result == whole.result);
            CHECK(s.length == whole.length);
        }
        // Two reads split at every position.
        for (std::size_t cut = 0; cut <= in.size(); ++cut) {
            INFO("split at " << cut);
            auto first = scan_head(std::string_view(in).substr(0, cut));
            if (first.result != head_scan::incomplete) {
                // Then the whole input must agree: a bad prefix stays bad, a complete one
                // stays complete with the same length.
                CHECK(first.result == whole.result);
                CHECK(first.length == whole.length);
                continue;
            }
            auto s = scan_head(in, cut);
            CHECK(s.result == whole.result);
            CHECK(s.length == whole.length);
        }
    }
}

TEST_CASE("scan_head byte by byte: incomplete until the last byte of the head",
          "[scan_head]") {
    const std::string h = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    std::size_t scanned = 0;
    for (std::size_t n = 1; n <= h.size(); ++n) {
        auto s = scan_head(std::string_view(h).substr(0, n), scanned);
        if (n < h.size()) {
            INFO("prefix " << n);
            REQUIRE(s.result == head_scan::incomplete);
        } else {
            CHECK(s.result == head_scan::complete);
            CHECK(s.length == h.size());
        }
        scanned = n;
    }
}

// ---------------------------------------------------------------------------------------
// request_parser: the accepted head
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser parses a valid GET", "[request]") {
    const auto raw = head({"GET /a/b?c=d HTTP/1.1", "Host: example.com:8080", "X-A:  one  ",
                           "Accept: */*"});
    request_head h;
    require_ok(parse(raw, h));
    CHECK(h.method == "GET");
    CHECK(h.target == "/a/b?c=d");
    CHECK(h.version == 11);
    REQUIRE(h.fields.size() == 3);
    CHECK(h.fields[0].name == "Host");
    CHECK(h.fields[0].value == "example.com:8080");
    CHECK(h.fields[1].name == "X-A");
    CHECK(h.fields[1].value == "one"); // OWS trimmed
    CHECK(h.fields[2].name == "Accept");
    CHECK(h.fields[2].value == "*/*");
    CHECK(h.host == "example.com:8080");
    CHECK(h.framing.kind == body_framing::none);
    CHECK_FALSE(h.has_body());
    CHECK_FALSE(h.expect_continue);
    CHECK(h.keep_alive);
    CHECK_FALSE(h.websocket_upgrade);

    // Every view points into the raw head.
    CHECK(inside(h.method, raw));
    CHECK(inside(h.target, raw));
    CHECK(inside(h.host, raw));
    for (const auto& f : h.fields) {
        CHECK(inside(f.name, raw));
        CHECK(inside(f.value, raw));
    }
}

TEST_CASE("request_parser: keep_alive by version and Connection", "[request]") {
    request_head h;
    SECTION("HTTP/1.1 default") {
        auto raw = head({"GET / HTTP/1.1", "Host: a"});
        require_ok(parse(raw, h));
        CHECK(h.keep_alive);
    }
    SECTION("HTTP/1.1 Connection: close") {
        auto raw = head({"GET / HTTP/1.1", "Host: a", "Connection: close"});
        require_ok(parse(raw, h));
        CHECK_FALSE(h.keep_alive);
    }
    SECTION("HTTP/1.1 Connection: Keep-Alive, CLOSE") {
        auto raw = head({"GET / HTTP/1.1", "Host: a", "Connection: Keep-Alive, CLOSE"});
        require_ok(parse(raw, h));
        CHECK_FALSE(h.keep_alive);
    }
    SECTION("HTTP/1.0 default") {
        auto raw = head({"GET / HTTP/1.0", "Host: a"});
        require_ok(parse(raw, h));
        CHECK(h.version == 10);
        CHECK_FALSE(h.keep_alive);
    }
    SECTION("HTTP/1.0 Connection: keep-alive") {
        auto raw = head({"GET / HTTP/1.0", "Host: a", "Connection: keep-alive"});
        require_ok(parse(raw, h));
        CHECK(h.keep_alive);
    }
    SECTION("HTTP/1.0 Connection: Keep-Alive (any case)") {
        auto raw = head({"GET / HTTP/1.0", "Connection: Keep-Alive"});
        require_ok(parse(raw, h));
        CHECK(h.keep_alive);
    }
    SECTION("HTTP/1.0 Connection: close") {
        auto raw = head({"GET / HTTP/1.0", "Host: a", "Connection: close"});
        require_ok(parse(raw, h));
        CHECK_FALSE(h.keep_alive);
    }
}

// ---------------------------------------------------------------------------------------
// request_parser: Transfer-Encoding and Content-Length
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser: Transfer-Encoding must be exactly one chunked", "[request][te]") {
    SECTION("chunked, any case, is accepted") {
        for (std::string_view te : {"chunked"sv, "Chunked"sv, "CHUNKED"sv}) {
            auto raw = head({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: "s + std::string(te)});
            request_head h;
            require_ok(parse(raw, h));
            CHECK(h.framing.kind == body_framing::chunked);
            CHECK(h.has_body());
        }
    }
    SECTION("gzip") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"}));
    }
    SECTION("gzip, chunked") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"}));
    }
    SECTION("chunked, chunked") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, chunked"}));
    }
    SECTION("xchunked") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"}));
    }
    SECTION("chunked with a parameter") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked;q=1"}));
    }
    SECTION("two Transfer-Encoding fields") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                           "Transfer-Encoding: chunked"}));
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip",
                           "Transfer-Encoding: chunked"}));
    }
    SECTION("on HTTP/1.0") {
        check_bad(verdict({"POST / HTTP/1.0", "Host: a", "Transfer-Encoding: chunked"}));
    }
    SECTION("with Content-Length") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 5",
                           "Transfer-Encoding: chunked"}));
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                           "Content-Length: 5"}));
    }
}

TEST_CASE("request_parser: Content-Length", "[request][cl]") {
    SECTION("valid values") {
        request_head h;
        auto raw0 = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 0"});
        require_ok(parse(raw0, h));
        CHECK(h.framing.kind == body_framing::fixed_length);
        CHECK(h.framing.length == 0);
        CHECK_FALSE(h.has_body());

        auto raw5 = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 5"});
        require_ok(parse(raw5, h));
        CHECK(h.framing.kind == body_framing::fixed_length);
        CHECK(h.framing.length == 5);
        CHECK(h.has_body());

        auto raw_lead = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 007"});
        require_ok(parse(raw_lead, h));
        CHECK(h.framing.length == 7);

        // HTTP/1.0 may carry a body by Content-Length.
        auto raw10 = head({"POST / HTTP/1.0", "Content-Length: 3"});
        require_ok(parse(raw10, h));
        CHECK(h.framing.kind == body_framing::fixed_length);
        CHECK(h.framing.length == 3);
    }
    SECTION("given twice, identical") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 5",
                           "Content-Length: 5"}));
    }
    SECTION("given twice, different") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 5",
                           "Content-Length: 6"}));
    }
    SECTION("a list, even 1, 1") {
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 1, 1"}));
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 1,1"}));
        check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 1, 2"}));
    }
    SECTION("not 1-18 decimal digits") {
        for (std::string_view cl : {"+5"sv, "-5"sv, "1 2"sv, "0x10"sv, "a"sv, "5a"sv, "1.0"sv,
                                    "1000000000000000000"sv /* 19 digits */,
                                    "18446744073709551616"sv /* 2^64 */, ""sv}) {
            INFO("Content-Length: " << std::string(cl));
            check_bad(verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: "s + std::string(cl)}));
        }
    }
    SECTION("over max_body_bytes is 413 before any body") {
        head_limits lim;
        lim.max_body_bytes = 100;
        auto v = verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 101"}, lim);
        CHECK(v.status == 413);
        CHECK(v.error == "payload_too_large");

        // 18 digits: well-formed but over the default limit.
        v = verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 999999999999999999"});
        CHECK(v.status == 413);
        CHECK(v.error == "payload_too_large");
    }
    SECTION("exactly max_body_bytes is accepted") {
        head_limits lim;
        lim.max_body_bytes = 100;
        auto raw = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 100"});
        request_head h;
        require_ok(parse(raw, h, lim));
        CHECK(h.framing.kind == body_framing::fixed_length);
        CHECK(h.framing.length == 100);

        // The default limit, 16 MiB, exactly.
        auto raw16 = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 16777216"});
        require_ok(parse(raw16, h));
        CHECK(h.framing.length == 16'777'216);
        auto raw16p = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 16777217"});
        CHECK(parse(raw16p, h).status == 413);
    }
    SECTION("a chunked body is not limited by the head") {
        head_limits lim;
        lim.max_body_bytes = 1;
        require_ok(verdict({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"}, lim));
    }
}

// ---------------------------------------------------------------------------------------
// request_parser: protected names spelled with '_'
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser: underscore aliases of protected names", "[request][alias]") {
    SECTION("default names") {
        for (std::string_view name :
             {"X_Api_Key"sv, "x_api_key"sv, "X-Api_Key"sv, "X_API-KEY"sv, "X-Forwarded_For"sv,
              "X_Forwarded_Proto"sv, "x_forwarded_host"sv, "X_Request_Id"sv,
              "x_keygate_key_id"sv, "X_Keygate_Scopes"sv, "X-Keygate_Label-tenant"sv,
              "X_KEYGATE_"sv}) {
            INFO(std::string(name));
            check_bad(verdict({"GET / HTTP/1.1", "Host: a", std::string(name) + ": v"}));
        }
    }
    SECTION("other underscores and the dashed names themselves are fine") {
        for (std::string_view name :
             {"X_Other"sv, "X_Api_Keys"sv, "X_Api"sv, "X_Forwarded_Port"sv, "My_Keygate_Id"sv,
              "X-Api-Key"sv, "X-Forwarded-For"sv, "X-Keygate-Key-Id"sv, "X-Request-Id"sv}) {
            INFO(std::string(name));
            require_ok(verdict({"GET / HTTP/1.1", "Host: a", std::string(name) + ": v"}));
        }
    }
    SECTION("custom credential header and identity prefix") {
        head_limits lim;
        lim.credential_header = "Authorization-Token";
        lim.identity_prefix = "X-Gate-";
        for (std::string_view name : {"Authorization_Token"sv, "authorization_token"sv,
                                      "X_Gate_User"sv, "x_gate_"sv, "X-Forwarded_For"sv,
                                      "X_Request_Id"sv}) {
            INFO(std::string(name));
            check_bad(verdict({"GET / HTTP/1.1", "Host: a", std::string(name) + ": v"}, lim));
        }
        // The default names are no longer protected.
        for (std::string_view name : {"X_Api_Key"sv, "x_keygate_key_id"sv, "X_Other"sv}) {
            INFO(std::string(name));
            require_ok(verdict({"GET / HTTP/1.1", "Host: a", std::string(name) + ": v"}, lim));
        }
    }
}

// A name of any length is checked, not just one that fits a scratch buffer.
TEST_CASE("request_parser: a long underscore alias of the identity prefix is refused",
          "[request][alias]") {
    const std::string name = "X_Keygate_" + std::string(300, 'a');
    check_bad(verdict({"GET / HTTP/1.1", "Host: a", name + ": v"}));
}

TEST_CASE("request_parser: a long name that is not an alias is accepted", "[request][alias]") {
    const std::string name = "X-Long-" + std::string(300, 'a');
    require_ok(verdict({"GET / HTTP/1.1", "Host: a", name + ": v"}));
}

// ---------------------------------------------------------------------------------------
// request_parser: Host
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser: Host", "[request][host]") {
    SECTION("missing on HTTP/1.1") {
        check_bad(verdict({"GET / HTTP/1.1", "X-A: b"}));
    }
    SECTION("optional on HTTP/1.0") {
        auto raw = head({"GET / HTTP/1.0"});
        request_head h;
        require_ok(parse(raw, h));
        CHECK(h.host.empty());
        CHECK(h.version == 10);
    }
    SECTION("given on HTTP/1.0") {
        auto raw = head({"GET / HTTP/1.0", "Host: a.example"});
        request_head h;
        require_ok(parse(raw, h));
        CHECK(h.host == "a.example");
    }
    SECTION("given twice") {
        check_bad(verdict({"GET / HTTP/1.1", "Host: a", "Host: a"}));
        check_bad(verdict({"GET / HTTP/1.1", "Host: a", "host: b"}));
        check_bad(verdict({"GET / HTTP/1.0", "Host: a", "Host: b"}));
    }
    SECTION("with a comma, a space or other forbidden bytes") {
        for (std::string_view host : {"a, b"sv, "a,b"sv, "a b"sv, "a\tb"sv, "user@a"sv, "a/b"sv,
                                      "a\"b"sv, "a\x80"sv}) {
            INFO(std::string(host));
            check_bad(verdict({"GET / HTTP/1.1", "Host: "s + std::string(host)}));
        }
    }
    SECTION("names, ports and IP literals") {
        for (std::string_view host : {"example.com"sv, "EXAMPLE.com:80"sv, "127.0.0.1:8080"sv,
                                      "[::1]:443"sv, "my_host-1"sv}) {
            INFO(std::string(host));
            auto raw = head({"GET / HTTP/1.1", "Host:  "s + std::string(host) + " "});
            request_head h;
            require_ok(parse(raw, h));
            CHECK(h.host == host);
        }
    }
}

// ---------------------------------------------------------------------------------------
// request_parser: request line
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser: only origin-form targets", "[request][target]") {
    SECTION("absolute-form") {
        check_bad(verdict({"GET http://a/x HTTP/1.1", "Host: a"}));
    }
    SECTION("authority-form") {
        check_bad(verdict({"CONNECT a:443 HTTP/1.1", "Host: a:443"}));
    }
    SECTION("asterisk-form") {
        check_bad(verdict({"OPTIONS * HTTP/1.1", "Host: a"}));
    }
    SECTION("relative path") {
        check_bad(verdict({"GET x/y HTTP/1.1", "Host: a"}));
    }
    SECTION("origin-form with any method is accepted") {
        for (std::string_view line : {"OPTIONS /x HTTP/1.1"sv, "DELETE /x?y HTTP/1.1"sv,
                                      "PURGE /x HTTP/1.1"sv, "GET /a%2Fb?q=%20 HTTP/1.1"sv}) {
            INFO(std::string(line));
            require_ok(verdict({line, "Host: a"}));
        }
    }
}

TEST_CASE("request_parser: forbidden bytes in the target", "[request][target]") {
    for (std::string target : {"/a#b"s, "/a#"s, "/a\x80"s, "/\xc3\xa9"s, "/a\xff"s, "/a\x7f"s,
                               "/a\x01"s, "/a\tb"s}) {
        INFO(target);
        check_bad(verdict({"GET " + target + " HTTP/1.1", "Host: a"}));
    }
    // A space cannot be in a target: the request line then has four parts.
    check_bad(verdict({"GET /a b HTTP/1.1", "Host: a"}));
}

TEST_CASE("request_parser: only HTTP/1.0 and HTTP/1.1", "[request][version]") {
    for (std::string_view line : {"GET / HTTP/2.0"sv, "GET / HTTP/0.9"sv, "GET / HTTP/1.2"sv,
                                  "GET / HTTP/3.0"sv, "GET / HTTP/1"sv, "GET / http/1.1"sv,
                                  "GET /"sv, "GET / HTTP/1.1 extra"sv}) {
        INFO(std::string(line));
        check_bad(verdict({line, "Host: a"}));
    }
}

TEST_CASE("request_parser: malformed heads", "[request]") {
    for (std::string raw : {
             "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"s,
             "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n"s,     // space in a name
             "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n"s,    // space before the colon
             "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"s,        // empty name
             "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01\r\n\r\n"s, // control byte in a value
             "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"s,   // bare CR in a value
             "GET / HTTP/1.1\r\nHost: a\r\nX\rA: b\r\n\r\n"s,     // bare CR in a name
             "GET / HTTP/1.1\r\nHost: a\r\n"s,                   // unfinished
             ""s,
             "\r\n\r\n"s,
         }) {
        INFO(raw);
        request_head h;
        check_bad(parse(raw, h));
    }
    // A NUL in a value.
    std::string nul = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b";
    nul += '\0';
    nul += "c\r\n\r\n";
    request_head h;
    check_bad(parse(nul, h));
}

// ---------------------------------------------------------------------------------------
// request_parser: header limits
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser: max_headers", "[request][limits]") {
    head_limits lim;
    lim.max_headers = 3;
    SECTION("exactly max_headers fields are accepted") {
        auto raw = head({"GET / HTTP/1.1", "Host: a", "X-A: 1", "X-B: 2"});
        request_head h;
        require_ok(parse(raw, h, lim));
        CHECK(h.fields.size() == 3);
    }
    SECTION("one more is 431") {
        auto v = verdict({"GET / HTTP/1.1", "Host: a", "X-A: 1", "X-B: 2", "X-C: 3"}, lim);
        CHECK(v.status == 431);
        CHECK(v.error == "header_too_large");
    }
    SECTION("the default, 100") {
        std::string raw = "GET / HTTP/1.1\r\nHost: a\r\n";
        for (int i = 1; i < 100; ++i) raw += "X-F" + std::to_string(i) + ": v\r\n";
        request_head h;
        require_ok(parse(raw + "\r\n", h));
        CHECK(h.fields.size() == 100);
        auto v = parse(raw + "X-Last: v\r\n\r\n", h);
        CHECK(v.status == 431);
        CHECK(v.error == "header_too_large");
    }
}

namespace {

// A head of exactly `total` bytes whose request line is "GET / HTTP/1.1" (16 bytes).
std::string padded_head(std::size_t total) {
    const std::string start = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
    return start + std::string(total - start.size() - 4, 'p') + "\r\n\r\n";
}

} // namespace

TEST_CASE("request_parser: max_header_bytes", "[request][limits]") {
    head_limits lim;
    lim.max_header_bytes = 256;
    SECTION("a head of exactly max_header_bytes is accepted") {
        auto raw = padded_head(256);
        REQUIRE(raw.size() == 256);
        request_head h;
        require_ok(parse(raw, h, lim));
    }
    SECTION("a head well over the limit is 431") {
        for (std::size_t n : {300u, 4096u, 100'000u}) {
            auto raw = padded_head(n);
            request_head h;
            auto v = parse(raw, h, lim);
            INFO("head bytes " << n);
            CHECK(v.status == 431);
            CHECK(v.error == "header_too_large");
        }
    }
}

// Beast's header_limit leaves the request line out; parse() counts the whole head.
TEST_CASE("request_parser: one byte over max_header_bytes is 431",
          "[request][limits]") {
    head_limits lim;
    lim.max_header_bytes = 256;
    for (std::size_t n : {257u, 272u}) {
        auto raw = padded_head(n);
        REQUIRE(raw.size() == n);
        request_head h;
        auto v = parse(raw, h, lim);
        INFO("head bytes " << n);
        CHECK(v.status == 431);
        CHECK(v.error == "header_too_large");
    }
}

// ---------------------------------------------------------------------------------------
// request_parser: Expect
// ---------------------------------------------------------------------------------------

TEST_CASE("request_parser: Expect", "[request][expect]") {
    SECTION("100-continue in any case") {
        for (std::string_view e : {"100-continue"sv, "100-Continue"sv, "100-CONTINUE"sv}) {
            auto raw = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 3",
                             "Expect: "s + std::string(e)});
            request_head h;
            require_ok(parse(raw, h));
            CHECK(h.expect_continue);
            CHECK(h.has_body());
        }
    }
    SECTION("absent") {
        auto raw = head({"POST / HTTP/1.1", "Host: a", "Content-Length: 3"});
        request_head h;
        require_ok(parse(raw, h));
        CHECK_FALSE(h.expect_continue);
    }
    SECTION("any other value is 417") {
        for (std::string_view e : {"foo"sv, "100-continue, foo"sv, "100-continuex"sv, ""sv,
                                   "200-ok"sv}) {
            INFO("Expect: " << std::string(e));
            auto v = verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 3",
                              "Expect: "s + std::string(e)});
            CHECK(v.status == 417);
            CHECK(v.error == "expectation_failed");
        }
    }
    SECTION("two Expect fields are 417") {
        auto v = verdict({"POST / HTTP/1.1", "Host: a", "Content-Length: 3",
                          "Expect: 100-continue", "Expect: 100-continue"});
        CHECK(v.status == 417);
        CHECK(v.error == "expectation_failed");
    }
}

// ---------------------------------------------------------------------------------------
// request_parser: has_body, WebSocket, reuse
// ---------------------------------------------------------------------------------------

TEST_CASE("request_head::has_body", "[request]") {
    request_head h;
    h.framing = {body_framing::none, 0};
    CHECK_FALSE(h.has_body());
    h.framing = {body_framing::fixed_length, 0};
    CHECK_FALSE(h.has_body());
    h.framing = {body_framing::fixed_length, 5};
    CHECK(h.has_body());
    h.framing = {body_framing::chunked, 0};
    CHECK(h.has_body());
}

TEST_CASE("request_parser: WebSocket upgrade detection", "[request][websocket]") {
    auto ws = [](std::initializer_list<std::string_view> lines) {
        auto raw = head(lines);
        request_head h;
        require_ok(parse(raw, h));
        return h.websocket_upgrade;
    };
    CHECK(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket", "Connection: Upgrade"}));
    CHECK(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket",
              "Connection: keep-alive, Upgrade"}));
    CHECK(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: WebSocket", "Connection: upgrade"}));
    CHECK(ws({"GET /ws HTTP/1.1", "Host: a", "Connection: keep-alive", "Upgrade: websocket",
              "Connection: upgrade"}));
    CHECK_FALSE(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket"}));
    CHECK_FALSE(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket",
                    "Connection: keep-alive"}));
    CHECK_FALSE(ws({"GET /ws HTTP/1.1", "Host: a", "Connection: Upgrade"}));
    CHECK_FALSE(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: h2c", "Connection: Upgrade"}));
    CHECK_FALSE(ws({"GET /ws HTTP/1.1", "Host: a", "Upgrade: websockets",
                    "Connection: Upgrade"}));
}

TEST_CASE("request_parser: one parser for several heads", "[request]") {
    request_parser p;
    head_limits lim;
    request_head h;

    const auto first = head({"POST /one HTTP/1.1", "Host: one", "Content-Length: 5",
                             "Expect: 100-continue", "Connection: close", "X-A: 1",
                             "Upgrade: websocket", "Connection: upgrade"});
    require_ok(p.parse(first, lim, h));
    CHECK(h.method == "POST");
    CHECK(h.target == "/one");
    CHECK(h.fields.size() == 7);
    CHECK(h.framing.kind == body_framing::fixed_length);
    CHECK(h.expect_continue);
    CHECK_FALSE(h.keep_alive);
    CHECK(h.websocket_upgrade);

    const auto second = head({"GET /two HTTP/1.0", "X-B: 2"});
    require_ok(p.parse(second, lim, h));
    CHECK(h.method == "GET");
    CHECK(h.target == "/two");
    CHECK(h.version == 10);
    REQUIRE(h.fields.size() == 1);
    CHECK(h.fields[0].name == "X-B");
    CHECK(h.fields[0].value == "2");
    CHECK(field(h, "X-A").empty());
    CHECK(h.host.empty());
    CHECK(h.framing.kind == body_framing::none);
    CHECK_FALSE(h.expect_continue);
    CHECK_FALSE(h.keep_alive);
    CHECK_FALSE(h.websocket_upgrade);
    for (const auto& f : h.fields) CHECK(inside(f.name, second));

    // A refused head does not poison the next one.
    const auto bad = head({"POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, chunked"});
    check_bad(p.parse(bad, lim, h));
    const auto third = head({"POST /three HTTP/1.1", "Host: three", "Transfer-Encoding: chunked"});
    require_ok(p.parse(third, lim, h));
    CHECK(h.target == "/three");
    CHECK(h.host == "three");
    CHECK(h.framing.kind == body_framing::chunked);
    CHECK(h.keep_alive);

    // Nor does a 431.
    head_limits small;
    small.max_headers = 1;
    auto v = p.parse(head({"GET / HTTP/1.1", "Host: a", "X-A: 1"}), small, h);
    CHECK(v.status == 431);
    const auto fourth = head({"GET /four HTTP/1.1", "Host: a"});
    require_ok(p.parse(fourth, small, h));
    CHECK(h.target == "/four");
}

// ---------------------------------------------------------------------------------------
// parse_response_head
// ---------------------------------------------------------------------------------------

namespace {

struct response_case {
    response_case() = default;
    explicit response_case(std::string r) : raw(std::move(r)) {}
    std::string raw;
    response_head head;
    const char* why = nullptr;
    bool ok = false;
};

void parse_resp(response_case& c, bool head_request = false) {
    c.why = nullptr;
    c.ok = parse_response_head(c.raw, head_request, c.head, c.why);
}

bool resp_ok(std::initializer_list<std::string_view> lines, bool head_request = false) {
    response_case c{head(lines)};
    parse_resp(c, head_request);
    if (!c.ok) CHECK(c.why != nullptr);
    return c.ok;
}

} // namespace

TEST_CASE("parse_response_head: framing", "[response]") {
    response_case c;
    SECTION("200 with Content-Length") {
        c.raw = head({"HTTP/1.1 200 OK", "Content-Length: 5", "X-A: b"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.status == 200);
        CHECK(c.head.reason == "OK");
        CHECK(c.head.version == 11);
        REQUIRE(c.head.fields.size() == 2);
        CHECK(c.head.fields[1].name == "X-A");
        CHECK(c.head.fields[1].value == "b");
        CHECK(c.head.framing.kind == body_framing::fixed_length);
        CHECK(c.head.framing.length == 5);
        CHECK_FALSE(c.head.no_body);
        CHECK(c.head.keep_alive);
        CHECK(inside(c.head.reason, c.raw));
    }
    SECTION("chunked") {
        c.raw = head({"HTTP/1.1 200 OK", "Transfer-Encoding: Chunked"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.framing.kind == body_framing::chunked);
        CHECK_FALSE(c.head.no_body);
        CHECK(c.head.keep_alive);
    }
    SECTION("no framing: until close") {
        c.raw = head({"HTTP/1.1 200 OK", "X-A: b"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.framing.kind == body_framing::until_close);
        CHECK_FALSE(c.head.no_body);
        CHECK_FALSE(c.head.keep_alive);
    }
    SECTION("HEAD request: no body whatever the fields say") {
        c.raw = head({"HTTP/1.1 200 OK", "Content-Length: 1234"});
        parse_resp(c, true);
        REQUIRE(c.ok);
        CHECK(c.head.no_body);
        CHECK(c.head.framing.kind == body_framing::fixed_length); // kept for the client
        CHECK(c.head.framing.length == 1234);
        CHECK(c.head.keep_alive);

        c.raw = head({"HTTP/1.1 200 OK", "Transfer-Encoding: chunked"});
        parse_resp(c, true);
        REQUIRE(c.ok);
        CHECK(c.head.no_body);
        CHECK(c.head.keep_alive);

        c.raw = head({"HTTP/1.1 200 OK"});
        parse_resp(c, true);
        REQUIRE(c.ok);
        CHECK(c.head.no_body);
        CHECK(c.head.framing.kind == body_framing::none);
        CHECK(c.head.keep_alive); // nothing to read until close
    }
    SECTION("204, 304 and 1xx have no body") {
        for (std::string_view line : {"HTTP/1.1 204 No Content"sv, "HTTP/1.1 304 Not Modified"sv,
                                      "HTTP/1.1 100 Continue"sv, "HTTP/1.1 101 Switching"sv,
                                      "HTTP/1.1 103 Early Hints"sv}) {
            INFO(std::string(line));
            c.raw = head({line});
            parse_resp(c);
            REQUIRE(c.ok);
            CHECK(c.head.no_body);
            CHECK(c.head.framing.kind == body_framing::none);
            CHECK(c.head.keep_alive);
        }
        c.raw = head({"HTTP/1.1 304 Not Modified", "Content-Length: 10"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.no_body);
        CHECK(c.head.status == 304);
        CHECK(c.head.framing.kind == body_framing::fixed_length);
        CHECK(c.head.framing.length == 10);
    }
    SECTION("Content-Length 0") {
        c.raw = head({"HTTP/1.1 200 OK", "Content-Length: 0"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK_FALSE(c.head.no_body);
        CHECK(c.head.framing.kind == body_framing::fixed_length);
        CHECK(c.head.framing.length == 0);
        CHECK(c.head.keep_alive);
    }
}

TEST_CASE("parse_response_head: ambiguous framing is refused", "[response]") {
    SECTION("codings other than a final chunked") {
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: gzip"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: chunked, gzip"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: chunked, chunked"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: xchunked"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: chunked",
                             "Transfer-Encoding: gzip"}));
    }
    SECTION("Content-Length with Transfer-Encoding") {
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: 5",
                             "Transfer-Encoding: chunked"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Transfer-Encoding: chunked",
                             "Content-Length: 5"}));
    }
    SECTION("conflicting or malformed Content-Length") {
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: 5, 6"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: -1"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: 0x10"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: 1000000000000000000"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "Content-Length: "}));
    }
    SECTION("identical duplicate Content-Length is accepted") {
        response_case c{head({"HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 5"})};
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.framing.kind == body_framing::fixed_length);
        CHECK(c.head.framing.length == 5);

        response_case l{head({"HTTP/1.1 200 OK", "Content-Length: 7, 7"})};
        parse_resp(l);
        REQUIRE(l.ok);
        CHECK(l.head.framing.length == 7);
    }
    SECTION("malformed heads") {
        CHECK_FALSE(resp_ok({"HTTP/1.1 abc OK"}));
        CHECK_FALSE(resp_ok({"HTTP/2.0 200 OK", "Content-Length: 0"}));
        CHECK_FALSE(resp_ok({"HTTP/0.9 200 OK", "Content-Length: 0"}));
        CHECK_FALSE(resp_ok({"HTTP/1.1 200 OK", "NoColon"}));
        CHECK_FALSE(resp_ok({"GET / HTTP/1.1", "Host: a"}));
        response_case c{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"};
        parse_resp(c);
        CHECK_FALSE(c.ok);
        CHECK(c.why != nullptr);
    }
}

TEST_CASE("parse_response_head: keep_alive", "[response]") {
    response_case c;
    SECTION("HTTP/1.1 by default") {
        c.raw = head({"HTTP/1.1 200 OK", "Content-Length: 1"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.keep_alive);
    }
    SECTION("HTTP/1.1 Connection: close") {
        c.raw = head({"HTTP/1.1 200 OK", "Content-Length: 1", "Connection: close"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK_FALSE(c.head.keep_alive);
    }
    SECTION("HTTP/1.0 by default") {
        c.raw = head({"HTTP/1.0 200 OK", "Content-Length: 1"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.version == 10);
        CHECK_FALSE(c.head.keep_alive);
    }
    SECTION("HTTP/1.0 Connection: keep-alive") {
        c.raw = head({"HTTP/1.0 200 OK", "Content-Length: 1", "Connection: Keep-Alive"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.keep_alive);
    }
    SECTION("until close is never kept, whatever Connection says") {
        c.raw = head({"HTTP/1.1 200 OK", "Connection: keep-alive"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.framing.kind == body_framing::until_close);
        CHECK_FALSE(c.head.keep_alive);

        c.raw = head({"HTTP/1.0 200 OK", "Connection: keep-alive"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.framing.kind == body_framing::until_close);
        CHECK_FALSE(c.head.keep_alive);
    }
    SECTION("a 204 without framing stays reusable") {
        c.raw = head({"HTTP/1.1 204 No Content"});
        parse_resp(c);
        REQUIRE(c.ok);
        CHECK(c.head.keep_alive);
    }
    SECTION("reusing one response_head") {
        c.raw = head({"HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "X-A: 1"});
        parse_resp(c);
        REQUIRE(c.ok);
        response_case d{head({"HTTP/1.0 404 Not Found", "Content-Length: 0"})};
        d.head = c.head; // stale values must all be replaced
        parse_resp(d);
        REQUIRE(d.ok);
        CHECK(d.head.status == 404);
        CHECK(d.head.reason == "Not Found");
        CHECK(d.head.version == 10);
        CHECK(d.head.fields.size() == 1);
        CHECK(d.head.framing.kind == body_framing::fixed_length);
        CHECK(d.head.framing.length == 0);
        CHECK_FALSE(d.head.no_body);
        CHECK_FALSE(d.head.keep_alive);
    }
}

// ---------------------------------------------------------------------------------------
// chunked_decoder
// ---------------------------------------------------------------------------------------

namespace {

struct decoded {
    std::string payload;
    std::size_t consumed = 0;
    bool done = false;
    chunked_decoder::error failure = chunked_decoder::error::none;
    std::uint64_t payload_bytes = 0;
    bool views_inside = true;
};

// Feeds `in` to `dec` in reads of at most `read` bytes, as a relay would: bytes not yet
// consumed stay in the buffer and are offered again with the next read.
decoded decode(chunked_decoder& dec, std::string_view in, std::size_t read = SIZE_MAX) {
    decoded r;
    std::size_t have = 0;
    for (;;) {
        if (dec.done() || dec.failure() != chunked_decoder::error::none) break;
        if (r.consumed == have) {
            if (have == in.size()) break; // input exhausted
            have = read >= in.size() - have ? in.size() : have + read;
        }
        auto buf = in.substr(r.consumed, have - r.consumed);
        std::string_view data;
        auto n = dec.step(buf, data);
        if (!data.empty() &&
            (data.data() < buf.data() || data.data() + data.size() > buf.data() + n))
            r.views_inside = false;
        r.payload.append(data);
        r.consumed += n;
        if (n == 0 && !dec.done() && dec.failure() == chunked_decoder::error::none) {
            FAIL("step consumed nothing without finishing or failing");
        }
    }
    r.done = dec.done();
    r.failure = dec.failure();
    r.payload_bytes = dec.payload_bytes();
    return r;
}

decoded decode(std::string_view in, std::size_t read = SIZE_MAX) {
    chunked_decoder dec(8192, 100);
    return decode(dec, in, read);
}

void check_decodes(std::string_view in, std::string_view payload) {
    INFO(std::string(in));
    for (std::size_t read : {SIZE_MAX, std::size_t{1}, std::size_t{2}, std::size_t{3},
                             std::size_t{7}}) {
        INFO("read size " << read);
        auto r = decode(in, read);
        CHECK(r.failure == chunked_decoder::error::none);
        CHECK(r.done);
        CHECK(r.payload == payload);
        CHECK(r.payload_bytes == payload.size());
        CHECK(r.consumed == in.size());
        CHECK(r.views_inside);
    }
}

void check_fails(std::string_view in, chunked_decoder::error e,
                 std::size_t max_bytes = 8192, std::size_t max_fields = 100) {
    INFO(std::string(in));
    for (std::size_t read : {SIZE_MAX, std::size_t{1}, std::size_t{5}}) {
        INFO("read size " << read);
        chunked_decoder dec(max_bytes, max_fields);
        auto r = decode(dec, in, read);
        CHECK(r.failure == e);
        CHECK_FALSE(r.done);
        // Once failed, nothing more is consumed.
        std::string_view data;
        CHECK(dec.step("5\r\nhello\r\n0\r\n\r\n", data) == 0);
        CHECK(data.empty());
        CHECK(dec.failure() == e);
    }
}

} // namespace

TEST_CASE("chunked_decoder: a single chunk", "[chunked]") {
    const std::string_view in = "5\r\nhello\r\n0\r\n\r\n";
    chunked_decoder dec(8192, 100);
    std::string_view data;

    // First step: the size line, then the payload as a view into the input.
    auto n = dec.step(in, data);
    CHECK(n == 8);
    CHECK(data == "hello");
    CHECK(data.data() == in.data() + 3);
    CHECK(dec.payload_bytes() == 5);
    CHECK_FALSE(dec.done());

    // Second step: the rest, no payload.
    n = dec.step(in.substr(8), data);
    CHECK(n == in.size() - 8);
    CHECK(data.empty());
    CHECK(dec.done());
    CHECK(dec.failure() == chunked_decoder::error::none);
    CHECK(dec.payload_bytes() == 5);

    check_decodes(in, "hello");
}

TEST_CASE("chunked_decoder: an empty body", "[chunked]") {
    check_decodes("0\r\n\r\n", "");
    check_decodes("000\r\n\r\n", "");
}

TEST_CASE("chunked_decoder: many chunks, any read size, the same payload", "[chunked]") {
    std::string in = "3\r\nabc\r\n1\r\nd\r\nA\r\n0123456789\r\n10\r\n";
    in += std::string(16, 'x');
    in += "\r\n1;ext=1\r\nZ\r\n0\r\n\r\n";
    const std::string payload = "abcd0123456789" + std::string(16, 'x') + "Z";
    check_decodes(in, payload);
    const auto whole = decode(in);
    for (std::size_t read = 1; read <= in.size(); ++read) {
        auto r = decode(in, read);
        INFO("read size " << read);
        REQUIRE(r.payload == whole.payload);
        REQUIRE(r.consumed == whole.consumed);
        REQUIRE(r.done);
    }
}

TEST_CASE("chunked_decoder: a large chunk arrives in pieces", "[chunked]") {
    std::string body(100'000, 'q');
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
    std::string in = "186a0\r\n" + body + "\r\n0\r\n\r\n"; // 0x186a0 == 100000
    auto r = decode(in, 4096);
    CHECK(r.failure == chunked_decoder::error::none);
    CHECK(r.done);
    CHECK(r.payload == body);
    CHECK(r.payload_bytes == 100'000);
    CHECK(r.consumed == in.size());
}

TEST_CASE("chunked_decoder: chunk extensions are accepted and dropped", "[chunked]") {
    check_decodes("5;a=b\r\nhello\r\n0\r\n\r\n", "hello");
    check_decodes("5 ;a\r\nhello\r\n0\r\n\r\n", "hello");
    check_decodes("5\t;a\r\nhello\r\n0\r\n\r\n", "hello");
    check_decodes("5;a=\"q v\";b\r\nhello\r\n0;last=1\r\n\r\n", "hello");
    check_decodes("5; a = b\r\nhello\r\n0\r\n\r\n", "hello");
}

TEST_CASE("chunked_decoder: malformed extensions", "[chunked]") {
    using E = chunked_decoder::error;
    check_fails("5 x\r\nhello\r\n0\r\n\r\n", E::bad_chunk); // no ';'
    // A ';' must be followed by a name (RFC 9112 §7.1.1), a quoted value must end.
    check_fails("5;;\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5 ;\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;=x\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;a b c\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;a=\"x\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;a=\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5 5\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5 \r\nhello\r\n0\r\n\r\n", E::bad_chunk); // whitespace, no extension
    check_fails("5;a\nhello\r\n0\r\n\r\n", E::bad_chunk);  // bare LF
    check_fails("5;a\x01\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;a\x80\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    check_fails("5;a\rb\nhello\r\n0\r\n\r\n", E::bad_chunk);
    // An endless extension is not a size line.
    check_fails("5;" + std::string(5000, 'a') + "\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
}

TEST_CASE("chunked_decoder: chunk sizes", "[chunked]") {
    using E = chunked_decoder::error;
    SECTION("hex digits in either case") {
        const std::string ten = "0123456789";
        check_decodes("a\r\n" + ten + "\r\nA\r\n" + ten + "\r\n0\r\n\r\n", ten + ten);
        const std::string ff(255, 'f');
        check_decodes("ff\r\n" + ff + "\r\n0\r\n\r\n", ff);
        check_decodes("FF\r\n" + ff + "\r\n0\r\n\r\n", ff);
        check_decodes("fF\r\n" + ff + "\r\n0\r\n\r\n", ff);
    }
    SECTION("leading zeros") {
        check_decodes("0005\r\nhello\r\n0\r\n\r\n", "hello");
        check_decodes("000000000000005\r\nhello\r\n0\r\n\r\n", "hello"); // 15 digits
    }
    SECTION("16 or more hex digits") {
        check_fails("0000000000000005\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails("ffffffffffffffff\r\n", E::bad_chunk);
        check_fails("10000000000000000\r\n", E::bad_chunk);
        check_fails(std::string(40, '0') + "\r\n\r\n", E::bad_chunk);
    }
    SECTION("a size that is not hex") {
        check_fails("g\r\n", E::bad_chunk);
        check_fails("-5\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails("+5\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails("0x5\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails(" 5\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails(";a\r\n", E::bad_chunk);
    }
    SECTION("an empty size line") {
        check_fails("\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails("5\r\nhello\r\n\r\n0\r\n\r\n", E::bad_chunk);
    }
    SECTION("a bare LF or a lone CR after the size") {
        check_fails("5\nhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails("5\rhello\r\n0\r\n\r\n", E::bad_chunk);
        check_fails("5\r\r\nhello\r\n0\r\n\r\n", E::bad_chunk);
    }
    SECTION("missing CRLF after the data") {
        check_fails("5\r\nhelloX\r\n0\r\n\r\n", E::bad_chunk);   // data longer than declared
        check_fails("5\r\nhello0\r\n\r\n", E::bad_chunk);        // CRLF left out
        check_fails("5\r\nhello\n0\r\n\r\n", E::bad_chunk);      // bare LF
        check_fails("5\r\nhello\rX0\r\n\r\n", E::bad_chunk);     // CR without LF
        check_fails("5\r\nhello\r\r\n0\r\n\r\n", E::bad_chunk);
    }
    SECTION("after the last chunk, only CRLF or trailers") {
        check_fails("0\r\n\rX", E::bad_chunk);
        check_fails("0\r\n\n", E::bad_chunk);
        check_fails("0\r\nhello\r\n\r\n", E::bad_chunk); // a line without a colon
    }
}

TEST_CASE("chunked_decoder: trailers are consumed and dropped", "[chunked][trailer]") {
    check_decodes("5\r\nhello\r\n0\r\nX-A: 1\r\n\r\n", "hello");
    check_decodes("5\r\nhello\r\n0\r\nX-A: 1\r\nX-Api-Key: k\r\nEmpty:\r\n\r\n", "hello");
    check_decodes("5\r\nhello\r\n0\r\nX-A:\tv w \x80\r\n\r\n", "hello");
    check_decodes("0\r\nChecksum: abc\r\n\r\n", "");
}

TEST_CASE("chunked_decoder: malformed trailers", "[chunked][trailer]") {
    using E = chunked_decoder::error;
    check_fails("5\r\nhello\r\n0\r\nX-A: 1\r\n 2\r\n\r\n", E::bad_chunk);  // obs-fold SP
    check_fails("5\r\nhello\r\n0\r\nX-A: 1\r\n\t2\r\n\r\n", E::bad_chunk); // obs-fold HTAB
    check_fails("5\r\nhello\r\n0\r\nX-A 1\r\n\r\n", E::bad_chunk);          // no colon
    check_fails("5\r\nhello\r\n0\r\nX-A\r\n\r\n", E::bad_chunk);
    check_fails("5\r\nhello\r\n0\r\n: 1\r\n\r\n", E::bad_chunk);            // empty name
    check_fails("5\r\nhello\r\n0\r\nX A: 1\r\n\r\n", E::bad_chunk);         // space in name
    check_fails("5\r\nhello\r\n0\r\nX-A : 1\r\n\r\n", E::bad_chunk);
    check_fails("5\r\nhello\r\n0\r\nX-A: 1\n\r\n", E::bad_chunk);           // bare LF
    check_fails("5\r\nhello\r\n0\r\nX-A: 1\r\r\n\r\n", E::bad_chunk);       // lone CR
    check_fails("5\r\nhello\r\n0\r\nX-A: 1\x01\r\n\r\n", E::bad_chunk);     // control byte
    check_fails("5\r\nhello\r\n0\r\nX-A: 1\r\n\r\r", E::bad_chunk);
}

TEST_CASE("chunked_decoder: trailer limits", "[chunked][trailer]") {
    using E = chunked_decoder::error;
    const std::string body = "5\r\nhello\r\n0\r\n";
    SECTION("bytes") {
        // 64-byte budget: a 30-byte field passes, a 100-byte one does not.
        auto small = body + "X-A: " + std::string(23, 'v') + "\r\n\r\n";
        chunked_decoder ok(64, 100);
        auto r = decode(ok, small);
        CHECK(r.failure == E::none);
        CHECK(r.done);
        CHECK(r.payload == "hello");

        check_fails(body + "X-A: " + std::string(93, 'v') + "\r\n\r\n", E::trailer_too_large, 64);
        // Many small fields add up.
        std::string many = body;
        for (int i = 0; i < 20; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
        check_fails(many + "\r\n", E::trailer_too_large, 64);
        // An endless trailer line fails as soon as it passes the limit, with no CRLF seen.
        check_fails(body + "X-A: " + std::string(100'000, 'v'), E::trailer_too_large, 64);
    }
    SECTION("fields") {
        auto two = body + "X-A: 1\r\nX-B: 2\r\n\r\n";
        chunked_decoder ok(8192, 2);
        auto r = decode(ok, two);
        CHECK(r.failure == E::none);
        CHECK(r.done);
        CHECK(r.payload == "hello");
        check_fails(body + "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n", E::trailer_too_large, 8192, 2);
        check_fails(body + "X-A: 1\r\n\r\n", E::trailer_too_large, 8192, 0);
    }
}

TEST_CASE("chunked_decoder: done() stops at the end of the message", "[chunked]") {
    const std::string msg = "5\r\nhello\r\n3;x\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
    const std::string next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string in = msg + next;
    for (std::size_t read : {SIZE_MAX, std::size_t{1}, std::size_t{4}, std::size_t{9}}) {
        INFO("read size " << read);
        chunked_decoder dec(8192, 100);
        auto r = decode(dec, in, read);
        CHECK(r.done);
        CHECK(r.failure == chunked_decoder::error::none);
        CHECK(r.payload == "helloabc");
        CHECK(r.consumed == msg.size());
        // Further steps consume nothing and yield no payload.
        std::string_view data = "stale";
        CHECK(dec.step(std::string_view(in).substr(r.consumed), data) == 0);
        CHECK(data.empty());
        CHECK(dec.done());
    }
    // Also when the next request starts with a hex digit or CRLF.
    for (std::string after : {"5\r\nhello\r\n"s, "\r\n"s, "0\r\n\r\n"s}) {
        auto r = decode("0\r\n\r\n" + after);
        CHECK(r.done);
        CHECK(r.consumed == 5);
    }
}

TEST_CASE("chunked_decoder: payload_bytes counts payload only", "[chunked]") {
    chunked_decoder dec(8192, 100);
    std::string_view data;
    CHECK(dec.payload_bytes() == 0);
    CHECK(dec.step("", data) == 0);
    CHECK(data.empty());
    CHECK(dec.payload_bytes() == 0);

    CHECK(dec.step("a;ext=long\r\nhel", data) == 15);
    CHECK(data == "hel");
    CHECK(dec.payload_bytes() == 3);
    CHECK(dec.step("lo", data) == 2);
    CHECK(data == "lo");
    CHECK(dec.payload_bytes() == 5);
    CHECK_FALSE(dec.done());
    CHECK(dec.step("world\r\n", data) == 5);
    CHECK(data == "world");
    CHECK(dec.payload_bytes() == 10);
    CHECK(dec.step("\r\n", data) == 2);
    CHECK(data.empty());
    CHECK(dec.step("0\r\nX: y\r\n\r\n", data) == 11);
    CHECK(dec.done());
    CHECK(dec.payload_bytes() == 10);
}

TEST_CASE("chunked_decoder: reset() starts over", "[chunked]") {
    chunked_decoder dec(64, 2);
    SECTION("after a complete message") {
        auto r = decode(dec, "5\r\nhello\r\n0\r\nA: 1\r\nB: 2\r\n\r\n");
        REQUIRE(r.done);
        dec.reset();
        CHECK_FALSE(dec.done());
        CHECK(dec.failure() == chunked_decoder::error::none);
        CHECK(dec.payload_bytes() == 0);
        // The limits survive, and the trailer counts start again from zero.
        r = decode(dec, "3\r\nabc\r\n0\r\nA: 1\r\nB: 2\r\n\r\n");
        CHECK(r.done);
        CHECK(r.payload == "abc");
        CHECK(r.payload_bytes == 3);
        dec.reset();
        r = decode(dec, "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        CHECK(r.failure == chunked_decoder::error::trailer_too_large);
    }
    SECTION("after a failure") {
        auto r = decode(dec, "5 x\r\n");
        REQUIRE(r.failure == chunked_decoder::error::bad_chunk);
        dec.reset();
        CHECK(dec.failure() == chunked_decoder::error::none);
        r = decode(dec, "2\r\nok\r\n0\r\n\r\n");
        CHECK(r.done);
        CHECK(r.payload == "ok");
    }
    SECTION("in the middle of a chunk") {
        std::string_view data;
        dec.step("ff\r\nabc", data);
        CHECK(dec.payload_bytes() == 3);
        dec.reset();
        auto r = decode(dec, "1\r\nz\r\n0\r\n\r\n");
        CHECK(r.done);
        CHECK(r.payload == "z");
        CHECK(r.payload_bytes == 1);
    }
}
