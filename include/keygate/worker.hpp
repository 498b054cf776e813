// One worker thread: its own io_context, acceptor, upstream pool and snapshot pointer.
#pragma once

#include "keygate/access_log.hpp"
#include "keygate/config.hpp"
#include "keygate/framing.hpp"
#include "keygate/metrics.hpp"
#include "keygate/rate_limit.hpp"
#include "keygate/net.hpp"
#include "keygate/snapshot.hpp"
#include "keygate/stream.hpp"
#include "keygate/upstream_pool.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace keygate {

/// Process-wide state the workers read; written only before they start, or atomically.
struct shared_state {
    explicit shared_state(const config& c);
    const config& cfg;
    head_limits limits;
    std::atomic<std::size_t> open_connections{0};
    /// The longest a session's watchdog sleeps: the shortest configured timeout.
    std::chrono::milliseconds watchdog_granularity;
    /// The failed-attempt table, shared by all workers (sharded locks inside).
    failed_attempts throttle;
    /// Clients the throttle never blocks.
    cidr_set throttle_exempt;
    /// `host[:port]` of the upstream URL, the Host of requests that came without one.
    std::string upstream_authority;
    /// Set on SIGTERM: readiness fails, and sessions finish with `Connection: close`.
    std::atomic<bool> draining{false};
};

/// What a worker needs of a live session to drain it.
class session_base {
public:
    /// Asks the session to end: an idle connection closes now, an exchange in flight
    /// finishes with `Connection: close`.
    virtual void drain() = 0;

protected:
    ~session_base() = default;

private:
    friend class worker;
    session_base* prev_ = nullptr;
    session_base* next_ = nullptr;
};

class worker {
public:
    worker(shared_state& shared, std::shared_ptr<const snapshot> initial);
    ~worker();

    /// Opens this worker's acceptor on `ep` with SO_REUSEPORT. Throws system_error.
    void listen(const tcp::endpoint& ep);

    /// Starts the thread.
    void start();

    /// Stops accepting and ends the event loop; safe from any thread.
    void stop();

    /// Waits for the thread to end.
    void join();

    /// Hands a new snapshot to this worker; safe from any thread.
    void publish(std::shared_ptr<const snapshot> snap);

    /// Sets the listener's TLS context (null: plain HTTP) and the upstream's; safe from any
    /// thread. New connections use them; open ones keep theirs.
    void set_tls(std::shared_ptr<ssl::context> listen, std::shared_ptr<ssl::context> upstream);

    /// Closes the acceptor and drains every session; safe from any thread.
    void begin_drain();

    /// This worker's counters (written only on its thread).
    const worker_metrics& metrics() const { return metrics_; }

    // What sessions use, on this worker's thread only.
    net::io_context& ioc() { return ioc_; }
    shared_state& shared() { return shared_; }
    const config& cfg() const { return shared_.cfg; }
    /// The current snapshot; the pointer's reference count is private to this worker.
    const std::shared_ptr<const snapshot>& current() const { return current_; }
    upstream_pool& pool() { return pool_; }
    worker_metrics& counters() { return metrics_; }
    bool draining() const { return draining_; }
    void add_session(session_base* s);
    void remove_session(session_base* s);
    /// Queues an access-log line; lines are written in batches.
    void log_access(const access_entry& e);
    /// The IMF-fixdate of the current second.
    std::string_view http_date();
    /// A new random request id (32 hex characters).
    void new_request_id(char (&out)[32]);

private:
    net::awaitable<void> accept_loop();
    /// Starts a session on an accepted connection (TLS when the listener has a context).
    void serve(tcp::socket s);
    net::awaitable<void> refuse_overloaded(tcp::socket s);
    void flush_log();

    shared_state& shared_;
    // One thread runs all I/O of this context; other threads only post to it, so the
    // reactor needs no per-descriptor locking.
    net::io_context ioc_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    tcp::acceptor acceptor_{ioc_};
    std::shared_ptr<const snapshot> current_;
    upstream_pool pool_;
    std::thread thread_;
    std::string log_buf_;
    bool flush_posted_ = false;
    net::steady_timer flush_timer_{ioc_};
    long long date_sec_ = -1;
    char date_[30]{};
    std::uint64_t rng_state_[2]{};
    worker_metrics metrics_;
    session_base* sessions_ = nullptr;
    std::shared_ptr<ssl::context> listen_tls_;
    bool draining_ = false;
};

/// Serves one accepted client connection until it closes.
/// `tls` keeps the listener context of a TLS connection alive for its lifetime.
void start_session(worker& w, stream socket, std::shared_ptr<ssl::context> tls);

} // namespace keygate
