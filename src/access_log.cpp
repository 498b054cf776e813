#include "keygate/access_log.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <mutex>
#include <unistd.h>

namespace keygate {

namespace {

bool json_messages = true;

void append_escaped(std::string& out, std::string_view s) {
    // Almost every value needs no escaping: append it whole.
    bool plain = true;
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\' || u < 0x20 || u == 0x7f) {
            plain = false;
            break;
        }
    }
    if (plain) {
        out.append(s);
        return;
    }
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (u < 0x20 || u == 0x7f) {
            fmt::format_to(std::back_inserter(out), "\\u{:04x}", u);
        } else {
            out.push_back(c);
        }
    }
}

// RFC 3339 UTC with milliseconds; the date part is cached per second per thread.
void append_ts(std::string& out, long long ts_ms) {
    thread_local long long cached_sec = -1;
    thread_local char cached[24];
    long long sec = ts_ms / 1000;
    if (sec != cached_sec) {
        std::time_t tt = static_cast<std::time_t>(sec);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    fmt::format_to(std::back_inserter(out), "{}.{:03d}Z", cached, static_cast<int>(ts_ms % 1000));
}

} // namespace

void format_access_entry(std::string& out, const access_entry& e, bool json) {
    auto it = std::back_inserter(out);
    if (json) {
        out += "{\"ts\":\"";
        append_ts(out, e.ts_ms);
        out += "\",\"request_id\":\"";
        append_escaped(out, e.request_id);
        out += "\",\"client\":\"";
        append_escaped(out, e.client);
        out += "\",\"method\":\"";
        append_escaped(out, e.method);
        out += "\",\"path\":\"";
        append_escaped(out, e.path);
        fmt::format_to(it, "\",\"status\":{},\"outcome\":\"{}\",\"reason\":", e.status, e.outcome);
        if (e.reason.empty()) out += "null";
        else fmt::format_to(it, "\"{}\"", e.reason);
        out += ",\"key_id\":";
        if (e.key_id.empty()) {
            out += "null";
        } else {
            out.push_back('"');
            append_escaped(out, e.key_id);
            out.push_back('"');
        }
        out += ",\"upstream_ms\":";
        if (e.upstream_ms < 0) out += "null";
        else fmt::format_to(it, "{}", e.upstream_ms);
        fmt::format_to(it, ",\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3f}}}\n",
                       e.bytes_in, e.bytes_out, e.duration_ms);
    } else {
        append_ts(out, e.ts_ms);
        out += " request_id=";
        append_escaped(out, e.request_id);
        out += " client=";
        append_escaped(out, e.client);
        out += " method=";
        append_escaped(out, e.method);
        out += " path=\"";
        append_escaped(out, e.path);
        fmt::format_to(it, "\" status={} outcome={} reason={} key_id=", e.status, e.outcome,
                       e.reason.empty() ? std::string_view("-") : e.reason);
        if (e.key_id.empty()) out += "-";
        else append_escaped(out, e.key_id);
        out += " upstream_ms=";
        if (e.upstream_ms < 0) out += "-";
        else fmt::format_to(it, "{}", e.upstream_ms);
        fmt::format_to(it, " bytes_in={} bytes_out={} duration_ms={:.3f}\n", e.bytes_in,
                       e.bytes_out, e.duration_ms);
    }
}

void write_stdout(std::string_view data) {
    static std::mutex m;
    std::lock_guard lock(m);
    while (!data.empty()) {
        ssize_t n = ::write(STDOUT_FILENO, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return; // stdout gone: the access log cannot stop the proxy
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

void setup_logging(std::string_view level, std::string_view format) {
    auto logger = spdlog::stderr_logger_mt("keygate");
    json_messages = format != "text";
    if (json_messages)
        logger->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":"%v"})",
                            spdlog::pattern_time_type::utc);
    else
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l keygate: %v", spdlog::pattern_time_type::utc);
    logger->set_level(spdlog::level::from_str(std::string(level)));
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
}

void log_message(std::string_view level, std::string_view message) {
    auto lvl = spdlog::level::from_str(std::string(level));
    if (!spdlog::default_logger_raw()->should_log(lvl)) return;
    if (json_messages) {
        std::string escaped;
        append_escaped(escaped, message);
        spdlog::log(lvl, "{}", escaped);
    } else {
        spdlog::log(lvl, "{}", message);
    }
}

} // namespace keygate
