// Counters keygate keeps, and their Prometheus text rendering (prometheus-cpp core).
// Each worker owns one worker_metrics and is its only writer, so counting takes no lock
// and no locked instruction; the admin listener folds all workers at scrape time.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keygate {

class key_store;

enum class request_outcome : std::uint8_t { allowed, denied, public_path, error, count };
enum class denial_reason : std::uint8_t {
    missing, duplicate, unknown, expired, not_yet_valid, disabled, insufficient_scope,
    path_not_allowed, rate_limited, throttled, count
};
enum class upstream_error_kind : std::uint8_t { connect, timeout, reset, bad_response, count };

/// Label values, as exported.
std::string_view to_string(request_outcome o);
std::string_view to_string(denial_reason r);
std::string_view to_string(upstream_error_kind k);

/// Maps a reason string of the policy ("expired", ...) to the enum; false when unknown.
bool parse_denial_reason(std::string_view s, denial_reason& out);

/// Upper bounds (seconds) of the upstream duration histogram's buckets.
inline constexpr std::array<double, 12> duration_buckets{
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

struct worker_metrics {
    /// Counts one request by outcome and final status (100-599; others are dropped).
    void count_request(request_outcome o, unsigned status);
    void count_denial(denial_reason r);
    void count_upstream_error(upstream_error_kind k);
    /// Records how long the upstream took to answer (request sent to response head).
    void observe_upstream(double seconds);

    static constexpr unsigned min_status = 100, max_status = 599;
    std::array<std::array<std::atomic<std::uint64_t>, max_status - min_status + 1>,
               static_cast<std::size_t>(request_outcome::count)> requests{};
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(denial_reason::count)> denials{};
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(upstream_error_kind::count)> upstream_errors{};
    std::array<std::atomic<std::uint64_t>, duration_buckets.size() + 1> duration_counts{}; // last = +Inf
    std::atomic<std::uint64_t> duration_sum_ns{0};
};

/// Process-wide figures that are not per worker.
struct process_metrics {
    std::atomic<std::uint64_t> reloads_ok{0};
    std::atomic<std::uint64_t> reloads_failed{0};
};

/// Everything a scrape reports.
struct metrics_view {
    std::vector<const worker_metrics*> workers;
    std::size_t open_connections = 0;
    const process_metrics* process = nullptr;
    const key_store* keys = nullptr; // for keygate_keys_loaded and expiry timestamps
};

/// Renders the Prometheus text exposition of every keygate series:
/// keygate_requests_total{outcome,code}, keygate_auth_denials_total{reason},
/// keygate_upstream_request_duration_seconds, keygate_upstream_errors_total{kind},
/// keygate_open_connections, keygate_keys_loaded, keygate_key_reloads_total{result},
/// keygate_key_expiry_timestamp_seconds{key_id} (at most 1,000 keys with an expires_at).
std::string render_metrics(const metrics_view& view);

} // namespace keygate
