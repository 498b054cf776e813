#include "keygate/worker.hpp"

#include "keygate/crypto.hpp"
#include "keygate/replies.hpp"

#include <algorithm>
#include <chrono>

namespace keygate {

shared_state::shared_state(const config& c)
    : cfg(c),
      limits{c.limits.max_header_bytes, c.limits.max_headers, c.limits.max_body_bytes,
             c.auth.header, c.auth.identity_header_prefix},
      watchdog_granularity(std::max<millis>(
          millis(10), std::min({c.limits.header_timeout, c.limits.idle_timeout,
                                c.upstream.connect_timeout, c.upstream.response_timeout}))),
      throttle(c.auth.failed_attempts) {
    throttle_exempt.assign(c.auth.failed_attempts.exempt);
    bool default_port = (c.upstream.scheme == "http" && c.upstream.port == 80) ||
                        (c.upstream.scheme == "https" && c.upstream.port == 443);
    std::string host = c.upstream.host;
    if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
    upstream_authority = default_port ? host : host + ":" + std::to_string(c.upstream.port);
}

worker::worker(shared_state& shared, std::shared_ptr<const snapshot> initial)
    : shared_(shared), pool_(ioc_, shared.cfg.upstream) {
    publish(std::move(initial));
    // Request ids need uniqueness, not secrecy: a per-worker generator seeded from OpenSSL.
    crypto::random_bytes(reinterpret_cast<unsigned char*>(rng_state_), sizeof rng_state_);
    if (rng_state_[0] == 0 && rng_state_[1] == 0) rng_state_[0] = 1;
}

worker::~worker() {
    stop();
    join();
}

void worker::listen(const tcp::endpoint& ep) {
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    using reuse_port = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
    acceptor_.set_option(reuse_port(true));
    acceptor_.bind(ep);
    acceptor_.listen(net::socket_base::max_listen_connections);
}

void worker::start() {
    net::co_spawn(ioc_, accept_loop(), net::detached);
    thread_ = std::thread([this] {
        // A handler that throws must not take the worker (and the process) down with it.
        for (;;) {
            try {
                ioc_.run();
                break;
            } catch (const std::exception& e) {
                log_message("error", std::string("worker recovered from an internal error: ") + e.what());
            }
        }
        flush_log();
    });
}

void worker::stop() {
    net::post(ioc_, [this] {
        error_code ignored;
        acceptor_.close(ignored);
        ioc_.stop();
    });
}

void worker::join() {
    if (thread_.joinable()) thread_.join();
}

void worker::publish(std::shared_ptr<const snapshot> snap) {
    // Each worker gets its own control block (aliasing a holder), so copying the pointer per
    // request never touches a cache line another worker writes.
    auto holder = std::make_shared<std::shared_ptr<const snapshot>>(std::move(snap));
    std::shared_ptr<const snapshot> mine(holder, holder->get());
    if (!thread_.joinable()) {
        current_ = std::move(mine);
        return;
    }
    net::post(ioc_, [this, mine = std::move(mine)]() mutable { current_ = std::move(mine); });
}

void worker::set_tls(std::shared_ptr<ssl::context> listen, std::shared_ptr<ssl::context> upstream) {
    auto apply = [this, listen = std::move(listen), upstream = std::move(upstream)]() mutable {
        listen_tls_ = std::move(listen);
        pool_.set_tls(std::move(upstream));
    };
    if (!thread_.joinable()) apply();
    else net::post(ioc_, std::move(apply));
}

void worker::begin_drain() {
    net::post(ioc_, [this] {
        draining_ = true;
        // Connections already in this listener's queue would be reset by closing it:
        // take them first (they are closed in order as they have nothing to do).
        error_code ec;
        acceptor_.non_blocking(true, ec);
        while (!ec) {
            tcp::socket s(ioc_);
            acceptor_.accept(s, ec);
            if (ec) break;
            serve(std::move(s));
        }
        error_code ignored;
        acceptor_.close(ignored);
        pool_.clear();
        // drain() may end a session (and unlink it) only asynchronously, so walking on is safe.
        for (session_base* s = sessions_; s != nullptr; s = s->next_) s->drain();
    });
}

void worker::add_session(session_base* s) {
    s->prev_ = nullptr;
    s->next_ = sessions_;
    if (sessions_) sessions_->prev_ = s;
    sessions_ = s;
}

void worker::remove_session(session_base* s) {
    if (s->prev_) s->prev_->next_ = s->next_;
    else sessions_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
    s->prev_ = s->next_ = nullptr;
}

void worker::serve(tcp::socket s) {
    if (listen_tls_) start_session(*this, stream(std::move(s), *listen_tls_), listen_tls_);
    else start_session(*this, stream(std::move(s)), nullptr);
}

net::awaitable<void> worker::accept_loop() {
    for (;;) {
        error_code ec;
        tcp::socket s = co_await acceptor_.async_accept(net::redirect_error(net::use_awaitable, ec));
        if (ec) {
            if (ec == net::error::operation_aborted || !acceptor_.is_open()) co_return;
            // Out of descriptors or a transient error: back off briefly instead of spinning.
            net::steady_timer t(ioc_, std::chrono::milliseconds(50));
            co_await t.async_wait(net::redirect_error(net::use_awaitable, ec));
            continue;
        }
        error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        if (shared_.open_connections.load(std::memory_order_relaxed) >=
            shared_.cfg.limits.max_connections) {
            net::co_spawn(ioc_, refuse_overloaded(std::move(s)), net::detached);
            continue;
        }
        serve(std::move(s));
    }
}

net::awaitable<void> worker::refuse_overloaded(tcp::socket s) {
    std::string reply;
    char rid[32];
    new_request_id(rid);
    reply_options opts;
    opts.request_id = std::string_view(rid, sizeof rid);
    opts.date = http_date();
    opts.close = true;
    render_error(reply, 503, "overloaded", {}, opts);
    error_code ec;
    net::steady_timer timer(ioc_, std::chrono::seconds(2));
    timer.async_wait([&s](error_code e) {
        if (!e) {
            error_code ignored;
            s.close(ignored);
        }
    });
    co_await net::async_write(s, net::buffer(reply), net::redirect_error(net::use_awaitable, ec));
    if (!ec) {
        // Read what the client already sent before closing, so it gets the 503, not a reset.
        s.shutdown(tcp::socket::shutdown_send, ec);
        char sink[4096];
        std::size_t total = 0;
        while (!ec && total < 64 * 1024) {
            total += co_await s.async_read_some(net::buffer(sink),
                                                net::redirect_error(net::use_awaitable, ec));
        }
    }
    timer.cancel();
    error_code ignored;
    s.close(ignored);
}

void worker::log_access(const access_entry& e) {
    if (!shared_.cfg.logging.access_log) return;
    format_access_entry(log_buf_, e, shared_.cfg.logging.format != "text");
    if (log_buf_.size() >= 32 * 1024) {
        flush_log();
        return;
    }
    if (!flush_posted_) {
        // Lines wait at most 20 ms: under load one write carries many requests.
        flush_posted_ = true;
        flush_timer_.expires_after(std::chrono::milliseconds(20));
        flush_timer_.async_wait([this](error_code) { flush_log(); });
    }
}

void worker::flush_log() {
    flush_posted_ = false;
    if (log_buf_.empty()) return;
    write_stdout(log_buf_);
    log_buf_.clear();
}

std::string_view worker::http_date() {
    auto now = std::chrono::system_clock::now();
    long long sec = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (sec != date_sec_) {
        format_http_date(sec, date_);
        date_sec_ = sec;
    }
    return std::string_view(date_, 29);
}

void worker::new_request_id(char (&out)[32]) {
    // xorshift128+: fast and good enough for identifiers that only need to be unique.
    static constexpr char digits[] = "0123456789abcdef";
    for (int half = 0; half < 2; ++half) {
        std::uint64_t s1 = rng_state_[0];
        const std::uint64_t s0 = rng_state_[1];
        rng_state_[0] = s0;
        s1 ^= s1 << 23;
        rng_state_[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
        std::uint64_t v = rng_state_[1] + s0;
        for (int i = 0; i < 16; ++i) {
            out[half * 16 + i] = digits[v & 0xf];
            v >>= 4;
        }
    }
}

} // namespace keygate
