#include "keygate/upstream_pool.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace keygate {

namespace {
// A pooled connection idle for longer is closed rather than reused: many servers drop idle
// keep-alive connections after a few seconds, and a request sent on one is lost.
constexpr auto max_idle_age = std::chrono::seconds(30);
} // namespace

upstream_pool::upstream_pool(net::io_context& ioc, const config::upstream_t& cfg)
    : ioc_(ioc), cfg_(cfg), port_(std::to_string(cfg.port)) {
    error_code ec;
    std::string host = cfg.host;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    auto addr = net::ip::make_address(host, ec);
    if (!ec) literal_ = tcp::endpoint(addr, cfg.port);
    server_name_ = cfg.tls.server_name.empty() ? host : cfg.tls.server_name;
}

std::unique_ptr<upstream_conn> upstream_pool::take(bool check) {
    auto now = std::chrono::steady_clock::now();
    while (!idle_.empty()) {
        auto conn = std::move(idle_.back());
        idle_.pop_back();
        if (now - conn->idle_since > max_idle_age) continue;
        // An idle connection must have nothing to read: EOF means the upstream closed it,
        // bytes mean it sent something unasked. Either way it cannot carry a request.
        if (!check) {
            conn->reused = true;
            return conn;
        }
        char c;
        ssize_t n = ::recv(conn->stream.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn->reused = true;
            return conn;
        }
    }
    return nullptr;
}

std::unique_ptr<upstream_conn> upstream_pool::fresh() {
    return std::make_unique<upstream_conn>(ioc_.get_executor());
}

net::awaitable<error_code> upstream_pool::connect(upstream_conn& conn, tcp::resolver& resolver) {
    error_code ec;
    if (literal_) {
        co_await conn.stream.socket().async_connect(*literal_, net::redirect_error(net::use_awaitable, ec));
    } else {
        auto results = co_await resolver.async_resolve(
            cfg_.host, port_, net::redirect_error(net::use_awaitable, ec));
        if (ec) co_return ec;
        co_await net::async_connect(conn.stream.socket(), results,
                                    net::redirect_error(net::use_awaitable, ec));
    }
    if (ec) co_return ec;
    error_code ignored;
    conn.stream.socket().set_option(tcp::no_delay(true), ignored);
    if (tls_) {
        auto ctx = tls_; // kept alive for the handshake even if replaced meanwhile
        conn.stream.use_tls(*ctx);
        auto& t = conn.stream.tls();
        // SNI is for names only; an IP literal is checked against the certificate's IPs.
        if (!literal_ || !cfg_.tls.server_name.empty())
            SSL_set_tlsext_host_name(t.native_handle(), server_name_.c_str());
        if (cfg_.tls.verify) t.set_verify_callback(ssl::host_name_verification(server_name_));
        co_await t.async_handshake(ssl::stream_base::client, net::redirect_error(net::use_awaitable, ec));
    }
    co_return ec;
}

void upstream_pool::put(std::unique_ptr<upstream_conn> conn) {
    if (idle_.size() >= cfg_.max_idle_connections) return;
    conn->idle_since = std::chrono::steady_clock::now();
    conn->buf.shrink_if_empty(16 * 1024);
    idle_.push_back(std::move(conn));
}

} // namespace keygate
