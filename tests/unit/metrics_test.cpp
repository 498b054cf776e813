#include "keygate/config.hpp"
#include "keygate/key_store.hpp"
#include "keygate/metrics.hpp"

#include <catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace keygate;

namespace {

sys_seconds at(long long s) { return sys_seconds{std::chrono::seconds{s}}; }

// Digests only need to differ per key: the store indexes by digest.
key_config make_key(std::string id, unsigned n, std::optional<sys_seconds> expires_at = std::nullopt) {
    key_config k;
    k.id = std::move(id);
    for (std::size_t i = 0; i < 4; ++i) k.digest[i] = static_cast<unsigned char>(n >> (8 * i));
    k.digest[31] = 0xa5;
    k.expires_at = expires_at;
    k.origin = "test";
    return k;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

bool has_line(const std::string& text, const std::string& line) {
    auto lines = lines_of(text);
    return std::find(lines.begin(), lines.end(), line) != lines.end();
}

std::size_t count_prefixed(const std::string& text, const std::string& prefix) {
    auto lines = lines_of(text);
    return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
        return l.rfind(prefix, 0) == 0;
    }));
}

std::string render(const std::vector<const worker_metrics*>& workers, const key_store* keys = nullptr,
                   const process_metrics* process = nullptr, std::size_t open = 0) {
    metrics_view v;
    v.workers = workers;
    v.keys = keys;
    v.process = process;
    v.open_connections = open;
    return render_metrics(v);
}

} // namespace

TEST_CASE("label values and denial reason parsing", "[metrics]") {
    CHECK(to_string(request_outcome::public_path) == "public");
    CHECK(to_string(upstream_error_kind::bad_response) == "bad_response");
    denial_reason r = denial_reason::missing;
    CHECK(parse_denial_reason("path_not_allowed", r));
    CHECK(r == denial_reason::path_not_allowed);
    CHECK(parse_denial_reason("not_yet_valid", r));
    CHECK(r == denial_reason::not_yet_valid);
    CHECK_FALSE(parse_denial_reason("bogus", r));
    CHECK(r == denial_reason::not_yet_valid); // untouched on failure
    CHECK_FALSE(parse_denial_reason("", r));
}

TEST_CASE("counters of all workers are summed per series", "[metrics]") {
    auto w1 = std::make_unique<worker_metrics>();
    auto w2 = std::make_unique<worker_metrics>();
    for (int i = 0; i < 3; ++i) w1->count_request(request_outcome::allowed, 200);
    for (int i = 0; i < 2; ++i) w2->count_request(request_outcome::allowed, 200);
    w2->count_request(request_outcome::denied, 401);
    w1->count_request(request_outcome::error, 599);
    w1->count_request(request_outcome::allowed, 99);  // out of range: dropped
    w2->count_request(request_outcome::allowed, 600); // out of range: dropped
    w1->count_denial(denial_reason::expired);
    w1->count_denial(denial_reason::expired);
    w2->count_denial(denial_reason::expired);
    w2->count_denial(denial_reason::throttled);
    w2->count_upstream_error(upstream_error_kind::timeout);
    w1->count_upstream_error(upstream_error_kind::timeout);
    w1->count_upstream_error(upstream_error_kind::reset);

    auto text = render({w1.get(), w2.get()});
    INFO(text);

    CHECK(has_line(text, R"(keygate_requests_total{code="200",outcome="allowed"} 5)"));
    CHECK(has_line(text, R"(keygate_requests_total{code="401",outcome="denied"} 1)"));
    CHECK(has_line(text, R"(keygate_requests_total{code="599",outcome="error"} 1)"));
    // Only series that counted something; the dropped statuses left no trace.
    CHECK(count_prefixed(text, "keygate_requests_total{") == 3);
    CHECK(text.find("code=\"99\"") == std::string::npos);
    CHECK(text.find("code=\"600\"") == std::string::npos);
    CHECK(text.find("outcome=\"public\"") == std::string::npos);
    CHECK(has_line(text, "# TYPE keygate_requests_total counter"));

    CHECK(has_line(text, R"(keygate_auth_denials_total{reason="expired"} 3)"));
    CHECK(has_line(text, R"(keygate_auth_denials_total{reason="throttled"} 1)"));
    // Every reason is exported, counted or not.
    CHECK(count_prefixed(text, "keygate_auth_denials_total{") ==
          static_cast<std::size_t>(denial_reason::count));
    CHECK(has_line(text, R"(keygate_auth_denials_total{reason="missing"} 0)"));
    CHECK(has_line(text, R"(keygate_auth_denials_total{reason="path_not_allowed"} 0)"));
    CHECK(has_line(text, R"(keygate_auth_denials_total{reason="rate_limited"} 0)"));

    CHECK(has_line(text, R"(keygate_upstream_errors_total{kind="timeout"} 2)"));
    CHECK(has_line(text, R"(keygate_upstream_errors_total{kind="reset"} 1)"));
    CHECK(has_line(text, R"(keygate_upstream_errors_total{kind="connect"} 0)"));
    CHECK(has_line(text, R"(keygate_upstream_errors_total{kind="bad_response"} 0)"));
    CHECK(count_prefixed(text, "keygate_upstream_errors_total{") == 4);

    // Help texts are present; the expiry family has no series without a key store, and
    // prometheus-cpp leaves out a family with no series.
    CHECK(count_prefixed(text, "# HELP keygate_") == 7);
}

TEST_CASE("the duration histogram is cumulative across workers", "[metrics]") {
    auto w1 = std::make_unique<worker_metrics>();
    auto w2 = std::make_unique<worker_metrics>();
    w1->observe_upstream(0.001); // exactly on a bound: that bucket (le is inclusive)
    w1->observe_upstream(0.003);
    w2->observe_upstream(0.2);
    w2->observe_upstream(10); // past the last bound: +Inf only
    w2->observe_upstream(-1); // a clock step: counted as zero

    CHECK(w1->duration_counts[0].load() == 1);
    CHECK(w1->duration_counts[2].load() == 1);
    CHECK(w2->duration_counts[0].load() == 1);
    CHECK(w2->duration_counts[duration_buckets.size()].load() == 1);
    CHECK(w1->duration_sum_ns.load() == 4'000'000);

    auto text = render({w1.get(), w2.get()});
    INFO(text);
    const std::string h = "keygate_upstream_request_duration_seconds";
    CHECK(has_line(text, "# TYPE " + h + " histogram"));
    CHECK(has_line(text, h + R"(_bucket{le="0.001"} 2)"));
    CHECK(has_line(text, h + R"(_bucket{le="0.0025"} 2)"));
    CHECK(has_line(text, h + R"(_bucket{le="0.005"} 3)"));
    CHECK(has_line(text, h + R"(_bucket{le="0.1"} 3)"));
    CHECK(has_line(text, h + R"(_bucket{le="0.25"} 4)"));
    CHECK(has_line(text, h + R"(_bucket{le="5"} 4)"));
    CHECK(has_line(text, h + R"(_bucket{le="+Inf"} 5)"));
    CHECK(has_line(text, h + "_count 5"));
    CHECK(has_line(text, h + "_sum 10.204"));
    CHECK(count_prefixed(text, h + "_bucket{") == duration_buckets.size() + 1);
}

TEST_CASE("gauges, reloads and key expiry timestamps", "[metrics]") {
    auto w = std::make_unique<worker_metrics>();
    std::vector<key_config> keys{make_key("billing", 1, at(1'814'313'600)), // 2027-06-30T00:00:00Z
                                 make_key("reports", 2)};
    key_store store(keys, "X-Keygate-");
    process_metrics process;
    process.reloads_ok = 4;
    process.reloads_failed = 1;

    auto text = render({w.get()}, &store, &process, 7);
    INFO(text);
    CHECK(has_line(text, "keygate_open_connections 7"));
    CHECK(has_line(text, "# TYPE keygate_open_connections gauge"));
    CHECK(has_line(text, "keygate_keys_loaded 2"));
    CHECK(has_line(text, R"(keygate_key_reloads_total{result="success"} 4)"));
    CHECK(has_line(text, R"(keygate_key_reloads_total{result="failure"} 1)"));
    CHECK(has_line(text, R"(keygate_key_expiry_timestamp_seconds{key_id="billing"} 1814313600)"));
    CHECK(text.find(R"(key_id="reports")") == std::string::npos);
    CHECK(count_prefixed(text, "keygate_key_expiry_timestamp_seconds{") == 1);
    CHECK(has_line(text, "# TYPE keygate_key_expiry_timestamp_seconds gauge"));
    CHECK(count_prefixed(text, "# HELP keygate_key_expiry_timestamp_seconds ") == 1);
}

TEST_CASE("no key store and no process figures render as zeros", "[metrics]") {
    auto text = render({});
    INFO(text);
    CHECK(has_line(text, "keygate_keys_loaded 0"));
    CHECK(has_line(text, "keygate_open_connections 0"));
    CHECK(has_line(text, R"(keygate_key_reloads_total{result="success"} 0)"));
    CHECK(has_line(text, R"(keygate_key_reloads_total{result="failure"} 0)"));
    CHECK(has_line(text, "keygate_upstream_request_duration_seconds_count 0"));
    CHECK(count_prefixed(text, "keygate_requests_total{") == 0);
    CHECK(count_prefixed(text, "keygate_key_expiry_timestamp_seconds{") == 0);
}

TEST_CASE("at most 1,000 expiry series, the soonest expiries first", "[metrics]") {
    std::vector<key_config> keys;
    // Listed latest first, so taking the first 1,000 in store order would pick the wrong ones.
    for (unsigned i = 0; i < 1001; ++i)
        keys.push_back(make_key("key-" + std::to_string(i), i, at(2'000'000'000 - static_cast<long long>(i))));
    keys.push_back(make_key("no-expiry", 5000));
    key_store store(keys, "X-Keygate-");

    auto text = render({}, &store);
    CHECK(has_line(text, "keygate_keys_loaded 1002"));
    CHECK(count_prefixed(text, "keygate_key_expiry_timestamp_seconds{") == 1000);
    CHECK(text.find(R"(key_id="key-0")") == std::string::npos); // the latest expiry is left out
    CHECK(has_line(text, R"(keygate_key_expiry_timestamp_seconds{key_id="key-1"} 1999999999)"));
    CHECK(has_line(text, R"(keygate_key_expiry_timestamp_seconds{key_id="key-1000"} 1999999000)"));
    CHECK(text.find(R"(key_id="no-expiry")") == std::string::npos);
}
