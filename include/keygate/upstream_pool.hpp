// The keep-alive connections of one worker to the upstream.
#pragma once

#include "keygate/buffer.hpp"
#include "keygate/config.hpp"
#include "keygate/net.hpp"
#include "keygate/stream.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <vector>

namespace keygate {

/// One connection to the upstream and the bytes read from it but not yet relayed.
struct upstream_conn {
    explicit upstream_conn(const net::any_io_executor& ex) : stream(ex), buf(16 * 1024) {}
    keygate::stream stream;
    byte_buffer buf;
    std::chrono::steady_clock::time_point idle_since{};
    bool reused = false; // taken from the pool rather than freshly connected
};

class upstream_pool {
public:
    upstream_pool(net::io_context& ioc, const config::upstream_t& cfg);

    /// An idle pooled connection, or null. With `check`, one that still looks open (a
    /// non-blocking peek: EOF or unasked bytes mean it cannot carry a request).
    std::unique_ptr<upstream_conn> take(bool check);

    /// A new, unconnected connection.
    std::unique_ptr<upstream_conn> fresh();

    /// Connects `conn` to the upstream (resolving the host when it is a name).
    /// `resolver` is the caller's, so the caller's timeout can cancel it.
    net::awaitable<error_code> connect(upstream_conn& conn, tcp::resolver& resolver);

    /// Keeps a connection whose last exchange ended cleanly, up to max_idle_connections.
    void put(std::unique_ptr<upstream_conn> conn);

    /// The TLS context for an https upstream (replaced when its files change); null for http.
    void set_tls(std::shared_ptr<ssl::context> ctx) { tls_ = std::move(ctx); }

    /// Closes every idle connection.
    void clear() { idle_.clear(); }

    std::size_t idle_count() const { return idle_.size(); }

private:
    net::io_context& ioc_;
    const config::upstream_t& cfg_;
    std::optional<tcp::endpoint> literal_; // set when the host is an IP address
    std::string port_;
    std::vector<std::unique_ptr<upstream_conn>> idle_;
    std::shared_ptr<ssl::context> tls_;
    std::string server_name_; // SNI and the name the certificate must carry
};

} // namespace keygate
