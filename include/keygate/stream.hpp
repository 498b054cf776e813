// A client or upstream connection: plain TCP or TLS over TCP, behind one interface.
#pragma once

#include "keygate/net.hpp"

#include <boost/asio/ssl.hpp>

#include <optional>

namespace keygate {

namespace ssl = boost::asio::ssl;

class stream {
public:
    explicit stream(tcp::socket s) : plain_(std::move(s)) {}
    stream(tcp::socket s, ssl::context& ctx) : tls_(std::in_place, std::move(s), ctx) {}
    /// An unconnected plain stream on `ex`.
    explicit stream(const net::any_io_executor& ex) : plain_(std::in_place, ex) {}

    /// The TCP socket underneath.
    tcp::socket& socket() { return tls_ ? tls_->next_layer() : *plain_; }
    const tcp::socket& socket() const { return tls_ ? tls_->next_layer() : *plain_; }
    bool is_tls() const { return tls_.has_value(); }
    ssl::stream<tcp::socket>& tls() { return *tls_; }

    /// Turns an unconnected plain stream into a TLS one (the socket is kept).
    void use_tls(ssl::context& ctx) {
        tcp::socket s = std::move(*plain_);
        plain_.reset();
        tls_.emplace(std::move(s), ctx);
    }

    /// Reads some bytes; errors go to `ec`.
    net::awaitable<std::size_t> read_some(net::mutable_buffer b, error_code& ec) {
        if (tls_) return tls_->async_read_some(b, net::redirect_error(net::use_awaitable, ec));
        return plain_->async_read_some(b, net::redirect_error(net::use_awaitable, ec));
    }

    /// Writes all of `buffers`; errors go to `ec`.
    template <class ConstBufferSequence>
    net::awaitable<std::size_t> write(const ConstBufferSequence& buffers, error_code& ec) {
        if (tls_) return net::async_write(*tls_, buffers, net::redirect_error(net::use_awaitable, ec));
        return net::async_write(*plain_, buffers, net::redirect_error(net::use_awaitable, ec));
    }

    /// Cancels pending operations (a timeout).
    void cancel() {
        error_code ignored;
        socket().cancel(ignored);
    }

    /// Stops sending at the TCP level.
    void shutdown_send() {
        error_code ignored;
        socket().shutdown(tcp::socket::shutdown_send, ignored);
    }

    void close() {
        error_code ignored;
        socket().close(ignored);
    }

private:
    std::optional<tcp::socket> plain_;
    std::optional<ssl::stream<tcp::socket>> tls_;
};

} // namespace keygate
