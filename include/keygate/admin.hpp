// The admin listener: /healthz, /readyz, /metrics on their own port.
#pragma once

#include "keygate/metrics.hpp"
#include "keygate/net.hpp"

#include <functional>
#include <memory>
#include <string>

namespace keygate {

/// What the admin listener asks the rest of keygate, on its own thread.
struct admin_hooks {
    /// Empty when ready, else the one-word reason (`no_keys`, `draining`).
    std::function<std::string()> not_ready_reason;
    /// The current metrics view (workers, connections, keys) for one scrape.
    std::function<std::string()> metrics_text;
};

class admin_server {
public:
    /// Binds `ep` (throws boost::system::system_error when it cannot).
    admin_server(net::io_context& ioc, const tcp::endpoint& ep, admin_hooks hooks);
    ~admin_server();

    /// Starts accepting on the io_context given at construction.
    void start();
    /// Stops accepting; open admin connections finish their current request.
    void stop();

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

/// `keygate healthcheck`: GETs `url` (http://host:port/path), 0 when the answer is 200
/// within `timeout_ms`, else 1. Prints one line on failure.
int run_healthcheck(const std::string& url, int timeout_ms);

} // namespace keygate
