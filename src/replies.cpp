#include "keygate/replies.hpp"

#include <fmt/format.h>

#include <ctime>

namespace keygate {

std::string_view reason_phrase(unsigned status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

std::string_view error_message(std::string_view code) {
    if (code == "bad_request") return "The request is malformed.";
    if (code == "missing_api_key") return "An API key is required.";
    if (code == "invalid_api_key") return "The API key is not valid.";
    if (code == "insufficient_scope") return "The API key does not allow this request.";
    if (code == "not_found") return "Not found.";
    if (code == "request_timeout") return "The request was not received in time.";
    if (code == "payload_too_large") return "The request body is too large.";
    if (code == "expectation_failed") return "Only \"Expect: 100-continue\" is supported.";
    if (code == "rate_limited") return "The API key's rate limit is exceeded.";
    if (code == "too_many_failed_attempts")
        return "Too many failed attempts from this address; try again later.";
    if (code == "header_too_large") return "The request header is too large.";
    if (code == "upstream_unavailable") return "The upstream service is unavailable.";
    if (code == "overloaded") return "keygate is at its connection limit.";
    if (code == "upstream_timeout") return "The upstream service did not answer in time.";
    return "The request failed.";
}

namespace {

// Messages are keygate's own fixed sentences, but escape anyway so the body is always JSON.
void append_json_string(std::string& out, std::string_view s) {
    out.push_back('"');
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (u < 0x20 || u >= 0x7f) {
            out += fmt::format("\\u{:04x}", u);
        } else {
            out.push_back(c);
        }
    }
    out.push_back('"');
}

} // namespace

void render_error(std::string& out, unsigned status, std::string_view code,
                  std::string_view message, const reply_options& opts) {
    std::string body;
    body.reserve(96);
    body += "{\"error\":";
    append_json_string(body, code);
    body += ",\"message\":";
    append_json_string(body, message.empty() ? error_message(code) : message);
    body += "}";

    auto it = std::back_inserter(out);
    fmt::format_to(it, "HTTP/1.{} {} {}\r\n", opts.http10 ? 0 : 1, status, reason_phrase(status));
    out += "Content-Type: application/json\r\n";
    fmt::format_to(it, "Content-Length: {}\r\n", body.size());
    if (!opts.date.empty()) fmt::format_to(it, "Date: {}\r\n", opts.date);
    if (!opts.request_id.empty()) fmt::format_to(it, "X-Request-Id: {}\r\n", opts.request_id);
    if (status == 401 && !opts.credential_header.empty())
        fmt::format_to(it, "WWW-Authenticate: ApiKey realm=\"keygate\", header=\"{}\"\r\n",
                       opts.credential_header);
    if (opts.retry_after > 0) fmt::format_to(it, "Retry-After: {}\r\n", opts.retry_after);
    if (opts.close) out += "Connection: close\r\n";
    else if (opts.http10) out += "Connection: keep-alive\r\n";
    out += "\r\n";
    if (!opts.head_request) out += body;
}

void format_http_date(long long t, char (&buf)[30]) {
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

} // namespace keygate
