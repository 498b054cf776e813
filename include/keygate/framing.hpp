// Request and response heads: Beast's parser for syntax, keygate's own framing checks
// on top (DESIGN.md §1.1). No sockets.
#pragma once

#include "keygate/headers.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace keygate {

/// Limits and names the request-head checks need.
struct head_limits {
    std::size_t max_header_bytes = 32'768;
    std::size_t max_headers = 100;
    std::uint64_t max_body_bytes = 16'777'216;
    std::string_view credential_header = "X-API-Key";
    std::string_view identity_prefix = "X-Keygate-";
};

/// A parsed request head; every view points into the raw head given to the parser.
struct request_head {
    std::string_view method;
    std::string_view target;
    unsigned version = 11; // 10 or 11
    header_list fields;
    body_framing framing;   // none, length or chunked
    std::string_view host;  // empty when absent (only possible on HTTP/1.0)
    bool expect_continue = false;
    bool keep_alive = true;        // the client allows another request on this connection
    bool websocket_upgrade = false; // `Upgrade: websocket` with `Connection: upgrade`

    /// True when the request carries a body (Content-Length over 0, or chunked).
    bool has_body() const {
        return framing.kind == body_framing::chunked ||
               (framing.kind == body_framing::fixed_length && framing.length > 0);
    }
};

/// The outcome of a check: status 0 means the head is acceptable.
struct head_verdict {
    unsigned status = 0;
    std::string_view error;   // JSON error code
    std::string_view message; // one sentence; never echoes request bytes
};

/// Where the end of a head is, or why looking further is pointless.
struct head_scan {
    enum result_t { incomplete, complete, bad } result = incomplete;
    std::size_t length = 0; // head length including the final CRLFCRLF, when complete
};

/// Looks for the end of a head in `data`, resuming at `from` (bytes before it were already
/// scanned); a bare LF (not preceded by CR) or an obs-fold (CRLF followed by SP or HTAB)
/// makes the head `bad` at once.
head_scan scan_head(std::string_view data, std::size_t from = 0);

/// Parses a complete request head (as found by scan_head) and applies every framing
/// check of DESIGN.md §1.1 that can be decided from the head.
class request_parser {
public:
    request_parser();
    ~request_parser();
    request_parser(const request_parser&) = delete;
    request_parser& operator=(const request_parser&) = delete;

    /// Parses `raw` into `out`; the views in `out` stay valid while `raw` does.
    head_verdict parse(std::string_view raw, const head_limits& limits, request_head& out);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

/// A parsed response head.
struct response_head {
    unsigned status = 0;
    std::string_view reason;
    unsigned version = 11;
    header_list fields;
    body_framing framing;   // as declared by the fields (Content-Length kept for HEAD/304)
    bool no_body = false;   // HEAD request, 1xx, 204 or 304: nothing follows the head
    bool keep_alive = true; // the upstream allows reuse
};

/// Parses an upstream response head; `head_request` means the body is absent whatever
/// the fields say. Returns false (with `why`) when the head is malformed or its framing
/// is ambiguous.
bool parse_response_head(std::string_view raw, bool head_request, response_head& out,
                         const char*& why);

} // namespace keygate
