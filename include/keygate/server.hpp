// Starts the workers, handles signals, stops.
#pragma once

#include "keygate/config.hpp"

#include <memory>

namespace keygate {

/// The CPUs this process may use: its affinity mask, capped by the cgroup's cpu.max.
unsigned available_cpus();

class server {
public:
    /// Validates what only binding can tell (ports in use); throws config_error.
    /// `env` is kept for `${VAR}` in the keys file on reload.
    server(config cfg, env_lookup env);
    ~server();

    /// Serves until SIGTERM or SIGINT has drained it; returns the exit code.
    int run();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace keygate
