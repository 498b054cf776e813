// Watches the keys file and SIGHUP; builds a new snapshot and hands it to every worker.
#pragma once

#include "keygate/config.hpp"
#include "keygate/metrics.hpp"
#include "keygate/net.hpp"
#include "keygate/snapshot.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keygate {

class reloader {
public:
    using publish_fn = std::function<void(std::shared_ptr<const snapshot>)>;

    /// `static_keys` are the inline and KEYGATE_API_KEYS keys, merged into every reload.
    reloader(net::io_context& ioc, const config& cfg, std::vector<key_config> static_keys,
             env_lookup env, std::shared_ptr<const snapshot> initial, publish_fn publish,
             process_metrics& metrics);

    /// Starts polling the keys file (when there is one) every auth.reload_interval.
    void start();
    /// Stops polling.
    void stop();
    /// Re-reads the keys file at once (SIGHUP), on the reloader's io_context.
    void reload_now();

    /// The snapshot most recently published; safe from any thread.
    std::shared_ptr<const snapshot> current() const;

private:
    void schedule();
    void poll();
    bool read(std::string& content, std::string& why) const;
    void apply(const std::string& content);
    void failed(const std::string& problem);

    net::io_context& ioc_;
    const config& cfg_;
    std::vector<key_config> static_keys_;
    env_lookup env_;
    publish_fn publish_;
    process_metrics& metrics_;
    net::steady_timer timer_;
    std::string applied_content_;
    std::string last_problem_;
    bool stopped_ = false;
    mutable std::mutex mutex_;
    std::shared_ptr<const snapshot> current_;
};

} // namespace keygate
