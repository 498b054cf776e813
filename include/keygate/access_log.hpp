// The access log (one line per request on stdout) and keygate's own messages (stderr).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace keygate {

/// One request as the access log records it.
struct access_entry {
    long long ts_ms = 0; // when the request head arrived, ms since the epoch
    std::string_view request_id;
    std::string_view client;
    std::string_view method;
    std::string_view path; // normalised, without the query
    unsigned status = 0;
    std::string_view outcome; // allowed, denied, public, error
    std::string_view reason;  // empty when none
    std::string_view key_id;  // empty when none
    long long upstream_ms = -1; // -1 when the upstream was not asked
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    double duration_ms = 0;
};

/// Appends one formatted access-log line (with its newline) to `out`.
void format_access_entry(std::string& out, const access_entry& e, bool json);

/// Writes `data` to stdout in one piece, shared by all workers.
void write_stdout(std::string_view data);

/// Sets up keygate's own messages on stderr: level and format ("json" or "text").
void setup_logging(std::string_view level, std::string_view format);

/// A message of keygate's own on stderr at `level` (spdlog level name).
void log_message(std::string_view level, std::string_view message);

} // namespace keygate
