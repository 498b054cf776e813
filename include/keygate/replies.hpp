// keygate's own responses: JSON errors, 100 Continue. No sockets.
#pragma once

#include <string>
#include <string_view>

namespace keygate {

/// Everything an error reply carries besides status and code.
struct reply_options {
    std::string_view request_id;
    std::string_view date;              // IMF-fixdate
    bool close = false;                 // adds `Connection: close`
    bool http10 = false;                // HTTP/1.0 status line (and keep-alive when kept)
    std::string_view credential_header; // non-empty on 401: WWW-Authenticate names it
    unsigned retry_after = 0;           // non-zero on 429
    bool head_request = false;          // answer to HEAD: the head only, Content-Length kept
};

/// The standard reason phrase of a status keygate answers itself.
std::string_view reason_phrase(unsigned status);

/// The one-sentence message for a JSON error code.
std::string_view error_message(std::string_view code);

/// Appends a complete JSON error response to `out`:
/// `{"error":"<code>","message":"<message>"}` with Content-Type, Content-Length, Date,
/// X-Request-Id, and as `opts` says Connection, WWW-Authenticate and Retry-After.
void render_error(std::string& out, unsigned status, std::string_view code,
                  std::string_view message, const reply_options& opts);

/// Formats `t` (seconds since the epoch) as an IMF-fixdate into a 29-byte buffer.
void format_http_date(long long t, char (&buf)[30]);

} // namespace keygate
