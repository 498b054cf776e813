// Tests for include/keygate/headers.hpp: what reaches the upstream and the client.
#include "keygate/headers.hpp"
#include "keygate/key_store.hpp"

#include <catch.hpp>

#include <string>

using namespace keygate;

namespace {

std::string request(const header_list& fields, const forward_context& ctx,
                    body_framing framing = {}, std::string_view method = "GET",
                    std::string_view target = "/x") {
    std::string out;
    rewrite_request(out, method, target, fields, ctx, framing);
    return out;
}

std::string response(unsigned status, std::string_view reason, const header_list& fields,
                     const response_context& ctx, body_framing framing = {}) {
    std::string out;
    rewrite_response(out, status, reason, fields, ctx, framing);
    return out;
}

forward_context base_ctx() {
    forward_context ctx;
    ctx.peer_ip = "10.0.0.9";
    ctx.proto = "https";
    ctx.request_id = "rid-1";
    return ctx;
}

// What keygate always adds for base_ctx() with `Host: app`.
const std::string tail = "X-Forwarded-For: 10.0.0.9\r\n"
                         "X-Forwarded-Proto: https\r\n"
                         "X-Forwarded-Host: app\r\n"
                         "X-Request-Id: rid-1\r\n"
                         "\r\n";

body_framing length(std::uint64_t n) {
    body_framing f;
    f.kind = body_framing::fixed_length;
    f.length = n;
    return f;
}

body_framing of_kind(body_framing::kind_t k) {
    body_framing f;
    f.kind = k;
    return f;
}

} // namespace

TEST_CASE("iequals compares ASCII without case", "[headers]") {
    CHECK(iequals("X-API-Key", "x-api-key"));
    CHECK(iequals("", ""));
    CHECK_FALSE(iequals("X-API-Key", "X-API-Ke"));
    CHECK_FALSE(iequals("X-API-Key", "X-API-Kez"));
    // '@' and '`' sit next to the letters; a sloppy fold would equate them with 'A'/'a'.
    CHECK_FALSE(iequals("@", "`"));
    CHECK_FALSE(iequals("[", "{"));
}

TEST_CASE("is_hop_by_hop names exactly the connection-specific fields", "[headers]") {
    for (auto n : {"Connection", "keep-alive", "PROXY-CONNECTION", "te", "Trailer",
                   "transfer-encoding", "upgrade"})
        CHECK(is_hop_by_hop(n));
    for (auto n : {"Host", "Content-Length", "Trailers", "TEx", "Authorization", ""})
        CHECK_FALSE(is_hop_by_hop(n));
}

TEST_CASE("named_by_connection reads comma-separated tokens of every Connection field",
          "[headers]") {
    const header_list fields{{"connection", "keep-alive ,\tX-Secret"},
                             {"Other", "X-Not-Named"},
                             {"CONNECTION", ",, Foo,"}};
    CHECK(named_by_connection(fields, "X-Secret"));
    CHECK(named_by_connection(fields, "x-secret"));
    CHECK(named_by_connection(fields, "Keep-Alive"));
    CHECK(named_by_connection(fields, "foo"));
    CHECK_FALSE(named_by_connection(fields, "X-Not-Named"));
    CHECK_FALSE(named_by_connection(fields, "X-Secre"));
    CHECK_FALSE(named_by_connection(fields, ""));
    CHECK_FALSE(named_by_connection({}, "X-Secret"));
}

TEST_CASE("valid_request_id accepts 1-128 chars of [A-Za-z0-9._:-]", "[headers]") {
    CHECK_FALSE(valid_request_id(""));
    CHECK(valid_request_id("a"));
    CHECK(valid_request_id("AZaz09._:-"));
    CHECK(valid_request_id(std::string(128, 'x')));
    CHECK_FALSE(valid_request_id(std::string(129, 'x')));
    for (auto bad : {"a b", "a/b", "a\"b", "a,b", "a;b", "a\tb", "a\r\nX-Evil: 1", "a+b",
                     "a=b", "\xc3\xa9"})
        CHECK_FALSE(valid_request_id(bad));
}

TEST_CASE("rewrite_request writes an HTTP/1.1 request line and keeps other fields in order",
          "[headers]") {
    const header_list fields{{"Host", "app"},
                             {"accept", "*/*"},
                             {"X-Custom", "  spaced value"},
                             {"Cookie", "a=1"},
                             {"Cookie", "b=2"}};
    CHECK(request(fields, base_ctx(), {}, "POST", "/a/b?q=1&r=%20") ==
          "POST /a/b?q=1&r=%20 HTTP/1.1\r\n"
          "Host: app\r\n"
          "accept: */*\r\n"
          "X-Custom:   spaced value\r\n"
          "Cookie: a=1\r\n"
          "Cookie: b=2\r\n" +
              tail);
}

TEST_CASE("rewrite_request appends to existing output", "[headers]") {
    std::string out = "prefix|";
    rewrite_request(out, "GET", "/", {{"Host", "app"}}, base_ctx(), {});
    CHECK(out == "prefix|GET / HTTP/1.1\r\nHost: app\r\n" + tail);
}

TEST_CASE("rewrite_request removes forged identity headers", "[headers]") {
    const header_list fields{{"Host", "app"},
                             {"X-Keygate-Key-Id", "admin"},
                             {"x-keygate-key-id", "admin"},
                             {"X-KEYGATE-SCOPES", "admin"},
                             {"x-Keygate-Label-tenant", "other"},
                             {"X-Keygate", "not prefixed: no trailing dash"},
                             {"X-Other", "1"}};

    SECTION("default prefix") {
        CHECK(request(fields, base_ctx()) == "GET /x HTTP/1.1\r\n"
                                             "Host: app\r\n"
                                             "X-Keygate: not prefixed: no trailing dash\r\n"
                                             "X-Other: 1\r\n" +
                                                 tail);
    }
    SECTION("custom prefix") {
        auto ctx = base_ctx();
        ctx.identity_prefix = "X-Auth-";
        const header_list custom{{"Host", "app"},
                                 {"x-auth-key-id", "admin"},
                                 {"X-AUTH-Scopes", "admin"},
                                 {"X-Keygate-Key-Id", "kept: not the configured prefix"}};
        CHECK(request(custom, ctx) == "GET /x HTTP/1.1\r\n"
                                      "Host: app\r\n"
                                      "X-Keygate-Key-Id: kept: not the configured prefix\r\n" +
                                          tail);
    }
}

TEST_CASE("rewrite_request adds the key's identity headers after the kept fields",
          "[headers]") {
    key_record key;
    key.id = "billing";
    key.identity_headers = "X-Keygate-Key-Id: billing\r\n"
                           "X-Keygate-Scopes: orders:read,orders:write\r\n"
                           "X-Keygate-Label-tenant: acme\r\n";
    auto ctx = base_ctx();
    ctx.key = &key;
    const header_list fields{{"Host", "app"},
                             {"X-Keygate-Key-Id", "forged"},
                             {"X-API-Key", "secret"},
                             {"Accept", "text/plain"}};
    CHECK(request(fields, ctx) == "GET /x HTTP/1.1\r\n"
                                  "Host: app\r\n"
                                  "Accept: text/plain\r\n"
                                  "X-Keygate-Key-Id: billing\r\n"
                                  "X-Keygate-Scopes: orders:read,orders:write\r\n"
                                  "X-Keygate-Label-tenant: acme\r\n" +
                                      tail);
}

TEST_CASE("rewrite_request strips the credential header in any case", "[headers]") {
    const header_list fields{{"Host", "app"}, {"x-api-KEY", "secret"}, {"X-API-Key2", "k"}};

    SECTION("strip_credentials (default)") {
        CHECK(request(fields, base_ctx()) ==
              "GET /x HTTP/1.1\r\nHost: app\r\nX-API-Key2: k\r\n" + tail);
    }
    SECTION("a configured header name") {
        auto ctx = base_ctx();
        ctx.credential_header = "X-Token";
        const header_list custom{{"Host", "app"}, {"x-token", "secret"}, {"X-API-Key", "k"}};
        CHECK(request(custom, ctx) ==
              "GET /x HTTP/1.1\r\nHost: app\r\nX-API-Key: k\r\n" + tail);
    }
    SECTION("strip_credentials: false forwards it") {
        auto ctx = base_ctx();
        ctx.strip_credentials = false;
        CHECK(request(fields, ctx) ==
              "GET /x HTTP/1.1\r\nHost: app\r\nx-api-KEY: secret\r\nX-API-Key2: k\r\n" + tail);
    }
}

TEST_CASE("rewrite_request strips a Bearer Authorization only with accept_bearer",
          "[headers]") {
    auto ctx = base_ctx();

    SECTION("accept_bearer off: forwarded") {
        const header_list fields{{"Host", "app"}, {"Authorization", "Bearer abc"}};
        CHECK(request(fields, ctx) ==
              "GET /x HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer abc\r\n" + tail);
    }
    SECTION("accept_bearer on: removed, scheme in any case") {
        ctx.accept_bearer = true;
        for (auto v : {"Bearer abc", "bearer abc", "BEARER\tabc", "Bearer", "  Bearer x"}) {
            const header_list fields{{"Host", "app"}, {"authorization", v}};
            CHECK(request(fields, ctx) == "GET /x HTTP/1.1\r\nHost: app\r\n" + tail);
        }
    }
    SECTION("accept_bearer on: other schemes forwarded") {
        ctx.accept_bearer = true;
        const header_list fields{{"Host", "app"},
                                 {"Authorization", "Basic dXNlcjpwYXNz"},
                                 {"Authorization", "Bearerish abc"}};
        CHECK(request(fields, ctx) == "GET /x HTTP/1.1\r\nHost: app\r\n"
                                      "Authorization: Basic dXNlcjpwYXNz\r\n"
                                      "Authorization: Bearerish abc\r\n" +
                                          tail);
    }
    SECTION("accept_bearer on, strip_credentials off: forwarded") {
        ctx.accept_bearer = true;
        ctx.strip_credentials = false;
        const header_list fields{{"Host", "app"}, {"Authorization", "Bearer abc"}};
        CHECK(request(fields, ctx) ==
              "GET /x HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer abc\r\n" + tail);
    }
}

TEST_CASE("rewrite_request removes hop-by-hop fields", "[headers]") {
    const header_list fields{{"Host", "app"},
                             {"Connection", "keep-alive"},
                             {"Keep-Alive", "timeout=5"},
                             {"Proxy-Connection", "keep-alive"},
                             {"TE", "trailers"},
                             {"Trailer", "X-Checksum"},
                             {"Accept", "*/*"}};
    CHECK(request(fields, base_ctx()) ==
          "GET /x HTTP/1.1\r\nHost: app\r\nAccept: */*\r\n" + tail);
}

TEST_CASE("rewrite_request drops an h2c upgrade", "[headers]") {
    const header_list fields{{"Host", "app"},
                             {"Connection", "Upgrade, HTTP2-Settings"},
                             {"Upgrade", "h2c"},
                             {"HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"}};
    CHECK(request(fields, base_ctx()) == "GET /x HTTP/1.1\r\nHost: app\r\n" + tail);
}

TEST_CASE("rewrite_request keeps a WebSocket upgrade", "[headers]") {
    auto ctx = base_ctx();
    ctx.websocket = true;
    const header_list fields{{"Host", "app"},
                             {"connection", "keep-alive, Upgrade"},
                             {"Upgrade", "websocket"},
                             {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                             {"Sec-WebSocket-Version", "13"}};
    CHECK(request(fields, ctx) == "GET /x HTTP/1.1\r\n"
                                  "Host: app\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "X-Forwarded-For: 10.0.0.9\r\n"
                                  "X-Forwarded-Proto: https\r\n"
                                  "X-Forwarded-Host: app\r\n"
                                  "X-Request-Id: rid-1\r\n"
                                  "Connection: Upgrade\r\n"
                                  "\r\n");
}

TEST_CASE("rewrite_request removes fields named by Connection", "[headers]") {
    SECTION("a private field") {
        const header_list fields{{"Host", "app"},
                                 {"X-Secret", "s"},
                                 {"Connection", "keep-alive, X-Secret"},
                                 {"x-secret", "t"},
                                 {"X-Public", "p"}};
        CHECK(request(fields, base_ctx()) ==
              "GET /x HTTP/1.1\r\nHost: app\r\nX-Public: p\r\n" + tail);
    }
    SECTION("X-Forwarded-For: the chain starts over at the peer") {
        const header_list fields{{"Host", "app"},
                                 {"X-Forwarded-For", "1.2.3.4"},
                                 {"Connection", "close, X-Forwarded-For"}};
        CHECK(request(fields, base_ctx()) == "GET /x HTTP/1.1\r\nHost: app\r\n" + tail);
    }
    SECTION("named in a second Connection field, any case") {
        const header_list fields{{"Host", "app"},
                                 {"Connection", "close"},
                                 {"X-Forwarded-For", "1.2.3.4"},
                                 {"Connection", " x-forwarded-for "}};
        CHECK(request(fields, base_ctx()) == "GET /x HTTP/1.1\r\nHost: app\r\n" + tail);
    }
    SECTION("never Host, never keygate's own framing") {
        const header_list fields{{"Host", "app"},
                                 {"Connection", "Host, Content-Length, Transfer-Encoding"},
                                 {"Content-Length", "5"}};
        CHECK(request(fields, base_ctx(), length(5), "POST") ==
              "POST /x HTTP/1.1\r\n"
              "Host: app\r\n"
              "X-Forwarded-For: 10.0.0.9\r\n"
              "X-Forwarded-Proto: https\r\n"
              "X-Forwarded-Host: app\r\n"
              "X-Request-Id: rid-1\r\n"
              "Content-Length: 5\r\n"
              "\r\n");
    }
}

TEST_CASE("rewrite_request removes Forwarded", "[headers]") {
    const header_list fields{{"Host", "app"},
                             {"Forwarded", "for=1.2.3.4;proto=http"},
                             {"forwarded", "for=5.6.7.8"}};
    CHECK(request(fields, base_ctx()) == "GET /x HTTP/1.1\r\nHost: app\r\n" + tail);
}

TEST_CASE("rewrite_request joins X-Forwarded-For fields and appends the peer",
          "[headers]") {
    const header_list fields{{"X-Forwarded-For", "1.1.1.1, 2.2.2.2"},
                             {"Host", "app"},
                             {"x-forwarded-for", "3.3.3.3"},
                             {"X-Forwarded-For", ""},
                             {"Accept", "*/*"}};
    CHECK(request(fields, base_ctx()) ==
          "GET /x HTTP/1.1\r\n"
          "Host: app\r\n"
          "Accept: */*\r\n"
          "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n"
          "X-Forwarded-Proto: https\r\n"
          "X-Forwarded-Host: app\r\n"
          "X-Request-Id: rid-1\r\n"
          "\r\n");
}

TEST_CASE("rewrite_request replaces X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id",
          "[headers]") {
    auto ctx = base_ctx();
    ctx.proto = "http";
    ctx.request_id = "from-context";
    const header_list fields{{"X-Forwarded-Proto", "https"},
                             {"x-forwarded-host", "evil.example"},
                             {"Host", "app.example:8443"},
                             {"X-Request-Id", "client-id"},
                             {"X-REQUEST-ID", "another"}};
    CHECK(request(fields, ctx) == "GET /x HTTP/1.1\r\n"
                                  "Host: app.example:8443\r\n"
                                  "X-Forwarded-For: 10.0.0.9\r\n"
                                  "X-Forwarded-Proto: http\r\n"
                                  "X-Forwarded-Host: app.example:8443\r\n"
                                  "X-Request-Id: from-context\r\n"
                                  "\r\n");
}

TEST_CASE("rewrite_request omits X-Forwarded-Host without Host", "[headers]") {
    const header_list fields{{"X-Forwarded-Host", "evil.example"}};
    CHECK(request(fields, base_ctx()) == "GET /x HTTP/1.1\r\n"
                                         "X-Forwarded-For: 10.0.0.9\r\n"
                                         "X-Forwarded-Proto: https\r\n"
                                         "X-Request-Id: rid-1\r\n"
                                         "\r\n");
}

TEST_CASE("rewrite_request writes framing from `framing`, never from the client",
          "[headers]") {
    const std::string head = "POST /x HTTP/1.1\r\nHost: app\r\nAccept: */*\r\n"
                             "X-Forwarded-For: 10.0.0.9\r\n"
                             "X-Forwarded-Proto: https\r\n"
                             "X-Forwarded-Host: app\r\n"
                             "X-Request-Id: rid-1\r\n";

    SECTION("length") {
        const header_list fields{{"Host", "app"}, {"content-length", "999"}, {"Accept", "*/*"}};
        CHECK(request(fields, base_ctx(), length(12), "POST") ==
              head + "Content-Length: 12\r\n\r\n");
    }
    SECTION("length 0") {
        const header_list fields{{"Host", "app"}, {"Content-Length", "0"}, {"Accept", "*/*"}};
        CHECK(request(fields, base_ctx(), length(0), "POST") ==
              head + "Content-Length: 0\r\n\r\n");
    }
    SECTION("a large length") {
        const header_list fields{{"Host", "app"}, {"Accept", "*/*"}};
        CHECK(request(fields, base_ctx(), length(18446744073709551615ull), "POST") ==
              head + "Content-Length: 18446744073709551615\r\n\r\n");
    }
    SECTION("chunked") {
        const header_list fields{{"Host", "app"},
                                 {"Transfer-Encoding", "chunked"},
                                 {"Accept", "*/*"},
                                 {"Expect", "100-continue"}};
        CHECK(request(fields, base_ctx(), of_kind(body_framing::chunked), "POST") ==
              head + "Transfer-Encoding: chunked\r\n\r\n");
    }
    SECTION("none") {
        const header_list fields{{"Host", "app"}, {"Accept", "*/*"}, {"expect", "100-continue"}};
        CHECK(request(fields, base_ctx(), {}, "POST") == head + "\r\n");
    }
}

TEST_CASE("rewrite_response writes the status line and keeps end-to-end fields",
          "[headers]") {
    response_context ctx;
    ctx.request_id = "rid-1";
    const header_list fields{{"Content-Type", "text/plain"}, {"Set-Cookie", "a=1"},
                             {"Set-Cookie", "b=2"}};
    CHECK(response(200, "OK", fields, ctx, length(2)) == "HTTP/1.1 200 OK\r\n"
                                                         "Content-Type: text/plain\r\n"
                                                         "Set-Cookie: a=1\r\n"
                                                         "Set-Cookie: b=2\r\n"
                                                         "Content-Length: 2\r\n"
                                                         "X-Request-Id: rid-1\r\n"
                                                         "\r\n");
    CHECK(response(404, "Not Found", {}, ctx) ==
          "HTTP/1.1 404 Not Found\r\nX-Request-Id: rid-1\r\n\r\n");
}

TEST_CASE("rewrite_response removes hop-by-hop fields and those named by Connection",
          "[headers]") {
    response_context ctx;
    ctx.request_id = "rid-1";
    const header_list fields{{"Connection", "keep-alive, X-Internal"},
                             {"Keep-Alive", "timeout=5"},
                             {"Proxy-Connection", "keep-alive"},
                             {"TE", "trailers"},
                             {"Trailer", "X-Checksum"},
                             {"Upgrade", "h2c"},
                             {"X-Internal", "debug"},
                             {"Content-Type", "text/plain"}};
    CHECK(response(200, "OK", fields, ctx, length(0)) == "HTTP/1.1 200 OK\r\n"
                                                         "Content-Type: text/plain\r\n"
                                                         "Content-Length: 0\r\n"
                                                         "X-Request-Id: rid-1\r\n"
                                                         "\r\n");
}

TEST_CASE("rewrite_response replaces the upstream's X-Request-Id", "[headers]") {
    response_context ctx;
    ctx.request_id = "ours";
    const header_list fields{{"x-request-id", "theirs"}, {"ETag", "\"v1\""}};
    CHECK(response(304, "Not Modified", fields, ctx) == "HTTP/1.1 304 Not Modified\r\n"
                                                        "ETag: \"v1\"\r\n"
                                                        "X-Request-Id: ours\r\n"
                                                        "\r\n");
}

TEST_CASE("rewrite_response writes framing from `framing`", "[headers]") {
    response_context ctx;
    ctx.request_id = "r";
    const header_list fields{{"Content-Length", "10"}, {"Transfer-Encoding", "chunked"}};
    CHECK(response(200, "OK", fields, ctx, length(7)) ==
          "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Request-Id: r\r\n\r\n");
    CHECK(response(200, "OK", fields, ctx, of_kind(body_framing::chunked)) ==
          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: r\r\n\r\n");
    ctx.keep_alive = false;
    CHECK(response(200, "OK", fields, ctx, of_kind(body_framing::until_close)) ==
          "HTTP/1.1 200 OK\r\nX-Request-Id: r\r\nConnection: close\r\n\r\n");
    CHECK(response(204, "No Content", fields, ctx, of_kind(body_framing::none)) ==
          "HTTP/1.1 204 No Content\r\nX-Request-Id: r\r\nConnection: close\r\n\r\n");
}

TEST_CASE("rewrite_response states Connection for the client", "[headers]") {
    response_context ctx;
    ctx.request_id = "r";
    const header_list upstream_close{{"Connection", "close"}};

    SECTION("HTTP/1.1 kept alive: nothing, whatever the upstream said") {
        CHECK(response(200, "OK", upstream_close, ctx, length(0)) ==
              "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: r\r\n\r\n");
    }
    SECTION("HTTP/1.1 closing") {
        ctx.keep_alive = false;
        CHECK(response(200, "OK", {}, ctx, length(0)) ==
              "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: r\r\n"
              "Connection: close\r\n\r\n");
    }
    SECTION("HTTP/1.0 kept alive") {
        ctx.http10_client = true;
        CHECK(response(200, "OK", upstream_close, ctx, length(3)) ==
              "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nX-Request-Id: r\r\n"
              "Connection: keep-alive\r\n\r\n");
    }
    SECTION("HTTP/1.0 closing") {
        ctx.http10_client = true;
        ctx.keep_alive = false;
        CHECK(response(200, "OK", {}, ctx, of_kind(body_framing::until_close)) ==
              "HTTP/1.0 200 OK\r\nX-Request-Id: r\r\nConnection: close\r\n\r\n");
    }
}

TEST_CASE("rewrite_response keeps the upgrade of a WebSocket 101", "[headers]") {
    response_context ctx;
    ctx.request_id = "r";
    const header_list fields{{"Upgrade", "websocket"},
                             {"Connection", "Upgrade"},
                             {"Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}};

    SECTION("websocket") {
        ctx.websocket = true;
        CHECK(response(101, "Switching Protocols", fields, ctx) ==
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "X-Request-Id: r\r\n"
              "Connection: Upgrade\r\n"
              "\r\n");
    }
    SECTION("not a websocket request: the upgrade is dropped") {
        CHECK(response(101, "Switching Protocols", fields, ctx) ==
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "X-Request-Id: r\r\n"
              "\r\n");
    }
    SECTION("websocket refused by the upstream: no upgrade on a non-101") {
        ctx.websocket = true;
        CHECK(response(400, "Bad Request", fields, ctx, length(0)) ==
              "HTTP/1.1 400 Bad Request\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Content-Length: 0\r\n"
              "X-Request-Id: r\r\n"
              "\r\n");
    }
}
