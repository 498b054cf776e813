#include "keygate/metrics.hpp"

#include "keygate/key_store.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace keygate {

namespace {

// The owning worker is the only writer, so a plain load and store is exact and needs no
// locked instruction; scrapes on other threads read a value at most one increment old.
void bump(std::atomic<std::uint64_t>& c, std::uint64_t by = 1) {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

std::uint64_t read(const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); }

template <class E>
constexpr std::size_t index(E e) {
    return static_cast<std::size_t>(e);
}

// A scrape exports expiry gauges for this many keys at most, so a huge key set cannot
// blow up the series count of every Prometheus that scrapes keygate.
constexpr std::size_t max_expiry_series = 1000;

} // namespace

std::string_view to_string(request_outcome o) {
    switch (o) {
    case request_outcome::allowed: return "allowed";
    case request_outcome::denied: return "denied";
    case request_outcome::public_path: return "public";
    case request_outcome::error: return "error";
    case request_outcome::count: break;
    }
    return "unknown";
}

std::string_view to_string(denial_reason r) {
    switch (r) {
    case denial_reason::missing: return "missing";
    case denial_reason::duplicate: return "duplicate";
    case denial_reason::unknown: return "unknown";
    case denial_reason::expired: return "expired";
    case denial_reason::not_yet_valid: return "not_yet_valid";
    case denial_reason::disabled: return "disabled";
    case denial_reason::insufficient_scope: return "insufficient_scope";
    case denial_reason::path_not_allowed: return "path_not_allowed";
    case denial_reason::rate_limited: return "rate_limited";
    case denial_reason::throttled: return "throttled";
    case denial_reason::count: break;
    }
    return "unknown";
}

std::string_view to_string(upstream_error_kind k) {
    switch (k) {
    case upstream_error_kind::connect: return "connect";
    case upstream_error_kind::timeout: return "timeout";
    case upstream_error_kind::reset: return "reset";
    case upstream_error_kind::bad_response: return "bad_response";
    case upstream_error_kind::count: break;
    }
    return "unknown";
}

bool parse_denial_reason(std::string_view s, denial_reason& out) {
    for (std::size_t i = 0; i < index(denial_reason::count); ++i) {
        auto r = static_cast<denial_reason>(i);
        if (to_string(r) == s) {
            out = r;
            return true;
        }
    }
    return false;
}

void worker_metrics::count_request(request_outcome o, unsigned status) {
    if (index(o) >= requests.size() || status < min_status || status > max_status) return;
    bump(requests[index(o)][status - min_status]);
}

void worker_metrics::count_denial(denial_reason r) {
    if (index(r) < denials.size()) bump(denials[index(r)]);
}

void worker_metrics::count_upstream_error(upstream_error_kind k) {
    if (index(k) < upstream_errors.size()) bump(upstream_errors[index(k)]);
}

void worker_metrics::observe_upstream(double seconds) {
    // A clock step can make a duration negative; NaN compares false and lands here too.
    if (!(seconds >= 0)) seconds = 0;
    auto bucket = static_cast<std::size_t>(
        std::find_if(duration_buckets.begin(), duration_buckets.end(),
                     [seconds](double bound) { return bound >= seconds; }) -
        duration_buckets.begin());
    bump(duration_counts[bucket]);
    // Cap one observation (about 292 years in ns) so the conversion cannot overflow.
    constexpr double max_ns = 9.2e18;
    double ns = std::min(seconds * 1e9, max_ns);
    bump(duration_sum_ns, static_cast<std::uint64_t>(std::llround(ns)));
}

std::string render_metrics(const metrics_view& view) {
    // Fold every worker's counters first; the registry below only formats the totals.
    constexpr std::size_t outcomes = index(request_outcome::count);
    constexpr std::size_t statuses = worker_metrics::max_status - worker_metrics::min_status + 1;
    std::vector<std::uint64_t> requests(outcomes * statuses, 0);
    std::array<std::uint64_t, index(denial_reason::count)> denials{};
    std::array<std::uint64_t, index(upstream_error_kind::count)> upstream_errors{};
    std::vector<double> duration_counts(duration_buckets.size() + 1, 0);
    std::uint64_t duration_sum_ns = 0;
    for (const worker_metrics* w : view.workers) {
        if (w == nullptr) continue;
        for (std::size_t o = 0; o < outcomes; ++o)
            for (std::size_t s = 0; s < statuses; ++s) requests[o * statuses + s] += read(w->requests[o][s]);
        for (std::size_t i = 0; i < denials.size(); ++i) denials[i] += read(w->denials[i]);
        for (std::size_t i = 0; i < upstream_errors.size(); ++i)
            upstream_errors[i] += read(w->upstream_errors[i]);
        for (std::size_t i = 0; i < duration_counts.size(); ++i)
            duration_counts[i] += static_cast<double>(read(w->duration_counts[i]));
        duration_sum_ns += read(w->duration_sum_ns);
    }

    // A fresh registry per scrape: the totals above are the state, so nothing has to be
    // kept in step between scrapes and a key that left the store leaves no stale series.
    prometheus::Registry registry;

    auto& requests_family = prometheus::BuildCounter()
                                .Name("keygate_requests_total")
                                .Help("Requests answered, by outcome and final status code.")
                                .Register(registry);
    for (std::size_t o = 0; o < outcomes; ++o) {
        for (std::size_t s = 0; s < statuses; ++s) {
            std::uint64_t n = requests[o * statuses + s];
            // Only statuses that occurred: 4 outcomes x 500 codes of zeros would drown the page.
            if (n == 0) continue;
            requests_family
                .Add({{"outcome", std::string(to_string(static_cast<request_outcome>(o)))},
                      {"code", std::to_string(worker_metrics::min_status + s)}})
                .Increment(static_cast<double>(n));
        }
    }

    auto& denials_family = prometheus::BuildCounter()
                               .Name("keygate_auth_denials_total")
                               .Help("Requests denied by authentication or authorisation, by reason.")
                               .Register(registry);
    for (std::size_t i = 0; i < denials.size(); ++i)
        denials_family.Add({{"reason", std::string(to_string(static_cast<denial_reason>(i)))}})
            .Increment(static_cast<double>(denials[i]));

    auto& duration_family =
        prometheus::BuildHistogram()
            .Name("keygate_upstream_request_duration_seconds")
            .Help("Time from sending a request upstream to receiving the response head.")
            .Register(registry);
    duration_family
        .Add({}, prometheus::Histogram::BucketBoundaries(duration_buckets.begin(), duration_buckets.end()))
        .ObserveMultiple(duration_counts, static_cast<double>(duration_sum_ns) / 1e9);

    auto& upstream_errors_family = prometheus::BuildCounter()
                                       .Name("keygate_upstream_errors_total")
                                       .Help("Failed upstream exchanges, by kind.")
                                       .Register(registry);
    for (std::size_t i = 0; i < upstream_errors.size(); ++i)
        upstream_errors_family
            .Add({{"kind", std::string(to_string(static_cast<upstream_error_kind>(i)))}})
            .Increment(static_cast<double>(upstream_errors[i]));

    prometheus::BuildGauge()
        .Name("keygate_open_connections")
        .Help("Client connections currently open.")
        .Register(registry)
        .Add({})
        .Set(static_cast<double>(view.open_connections));

    prometheus::BuildGauge()
        .Name("keygate_keys_loaded")
        .Help("Keys in the current key set, active or not.")
        .Register(registry)
        .Add({})
        .Set(view.keys != nullptr ? static_cast<double>(view.keys->size()) : 0.0);

    auto& reloads_family = prometheus::BuildCounter()
                               .Name("keygate_key_reloads_total")
                               .Help("Key set reloads, by result; a failed reload keeps the previous keys.")
                               .Register(registry);
    reloads_family.Add({{"result", "success"}})
        .Increment(view.process != nullptr ? static_cast<double>(read(view.process->reloads_ok)) : 0.0);
    reloads_family.Add({{"result", "failure"}})
        .Increment(view.process != nullptr ? static_cast<double>(read(view.process->reloads_failed)) : 0.0);

    auto& expiry_family = prometheus::BuildGauge()
                              .Name("keygate_key_expiry_timestamp_seconds")
                              .Help("When a key expires, in seconds since the Unix epoch "
                                    "(the 1,000 soonest expiries at most).")
                              .Register(registry);
    if (view.keys != nullptr) {
        std::vector<const key_record*> expiring;
        for (const key_record& k : view.keys->records())
            if (k.expires_at) expiring.push_back(&k);
        // Past the cap, keep the keys that expire first: those are the ones alerts are for.
        auto sooner = [](const key_record* a, const key_record* b) {
            return std::pair(*a->expires_at, std::string_view(a->id)) <
                   std::pair(*b->expires_at, std::string_view(b->id));
        };
        if (expiring.size() > max_expiry_series) {
            std::nth_element(expiring.begin(), expiring.begin() + max_expiry_series, expiring.end(), sooner);
            expiring.resize(max_expiry_series);
        }
        for (const key_record* k : expiring)
            expiry_family.Add({{"key_id", k->id}})
                .Set(static_cast<double>(k->expires_at->time_since_epoch().count()));
    }

    return prometheus::TextSerializer().Serialize(registry.Collect());
}

} // namespace keygate
