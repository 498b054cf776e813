#include "keygate/server.hpp"

#include "keygate/access_log.hpp"
#include "keygate/admin.hpp"
#include "keygate/reloader.hpp"
#include "keygate/tls.hpp"
#include "keygate/key_store.hpp"
#include "keygate/net.hpp"
#include "keygate/worker.hpp"

#include <fmt/format.h>
#include <sched.h>

#include <cmath>
#include <fstream>
#include <vector>

namespace keygate {

unsigned available_cpus() {
    unsigned n = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = static_cast<unsigned>(CPU_COUNT(&set));
    if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
    // cgroup v2: "max 100000" or "<quota> <period>".
    std::ifstream f("/sys/fs/cgroup/cpu.max");
    std::string quota;
    long long period = 0;
    if (f >> quota >> period && quota != "max" && period > 0) {
        long long q = std::atoll(quota.c_str());
        if (q > 0) {
            auto cap = static_cast<unsigned>(std::ceil(static_cast<double>(q) / static_cast<double>(period)));
            n = std::max(1u, std::min(n, cap));
        }
    }
    return n;
}

namespace {

tcp::endpoint make_endpoint(const std::string& address, std::uint16_t port, const char* field) {
    error_code ec;
    std::string host = address;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    auto addr = net::ip::make_address(host, ec);
    if (ec) throw config_error({fmt::format("{}.address: not an IP address", field)});
    return {addr, port};
}

// Binds without SO_REUSEPORT: fails when anything (another keygate included) listens on
// the port, where the workers' own SO_REUSEPORT sockets would silently share it.
void probe_port(const tcp::endpoint& ep, const char* field) {
    net::io_context ioc;
    tcp::acceptor probe(ioc);
    error_code ec;
    probe.open(ep.protocol(), ec);
    if (!ec) probe.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) probe.bind(ep, ec);
    if (ec) {
        auto where = ep.address().is_v6() ? fmt::format("[{}]:{}", ep.address().to_string(), ep.port())
                                          : fmt::format("{}:{}", ep.address().to_string(), ep.port());
        throw config_error({fmt::format("{}.port: cannot listen on {}: {}", field, where,
                                        ec == net::error::address_in_use
                                            ? std::string("address already in use")
                                            : ec.message())});
    }
}

} // namespace

struct server::impl {
    impl(config c, env_lookup e) : cfg(std::move(c)), env(std::move(e)), shared(cfg) {}
    config cfg;
    env_lookup env;
    shared_state shared;
    process_metrics process;
    tcp::endpoint listen_ep;
    tcp::endpoint admin_ep;
    std::vector<std::unique_ptr<worker>> workers;
    std::shared_ptr<ssl::context> listen_tls;
    std::shared_ptr<ssl::context> upstream_tls;
    std::string tls_files; // fingerprint of the files the contexts were built from

    std::vector<std::string> tls_paths() const {
        std::vector<std::string> v;
        if (cfg.listen.tls) {
            v.push_back(cfg.listen.tls->cert_file);
            v.push_back(cfg.listen.tls->key_file);
        }
        if (cfg.upstream.scheme == "https") v.push_back(cfg.upstream.tls.ca_file);
        return v;
    }

    // Builds both contexts; throws config_error (startup) naming the field.
    void build_tls() {
        auto loaded = load_tls(cfg);
        listen_tls = std::move(loaded.listen);
        upstream_tls = std::move(loaded.upstream);
    }

    // Rebuilds the TLS contexts when their files changed; a failure keeps the old ones.
    void check_tls(bool forced) {
        auto paths = tls_paths();
        if (paths.empty()) return;
        auto now = tls_fingerprint(paths);
        if (now == tls_files && !forced) return;
        tls_files = now;
        try {
            build_tls();
        } catch (const config_error& e) {
            log_message("error", "TLS files not applied, previous certificates stay in force: " +
                                     e.summary());
            return;
        }
        for (auto& w : workers) w->set_tls(listen_tls, upstream_tls);
        log_message("info", "TLS certificates reloaded");
    }
};

server::server(config cfg, env_lookup env)
    : impl_(std::make_unique<impl>(std::move(cfg), std::move(env))) {
    auto& c = impl_->cfg;
    impl_->listen_ep = make_endpoint(c.listen.address, c.listen.port, "listen");
    impl_->admin_ep = make_endpoint(c.admin.address, c.admin.port, "admin");
    impl_->build_tls();
    impl_->tls_files = tls_fingerprint(impl_->tls_paths());
    probe_port(impl_->listen_ep, "listen");
    probe_port(impl_->admin_ep, "admin");
}

server::~server() = default;

int server::run() {
    auto& c = impl_->cfg;
    auto snap = std::make_shared<snapshot>();
    snap->keys = std::make_shared<const key_store>(c.auth.keys, c.auth.identity_header_prefix);
    snap->open_mode = c.open_mode;
    std::shared_ptr<const snapshot> initial = snap;

    // The control thread: signals, key reloads, the drain sequence.
    net::io_context control;
    // Keys from the file are replaced on reload; inline and KEYGATE_API_KEYS keys stay.
    std::vector<key_config> static_keys;
    const std::string file_prefix = c.auth.keys_file + ": ";
    for (const auto& k : c.auth.keys)
        if (c.auth.keys_file.empty() || k.origin.rfind(file_prefix, 0) != 0) static_keys.push_back(k);
    reloader keys(control, c, std::move(static_keys), impl_->env, initial,
                  [this](std::shared_ptr<const snapshot> s) {
                      for (auto& w : impl_->workers) w->publish(s);
                  },
                  impl_->process);

    // The admin listener has its own thread so that probes answer while keys reload.
    net::io_context admin_ioc;
    admin_hooks hooks;
    hooks.not_ready_reason = [this, &keys]() -> std::string {
        if (impl_->shared.draining.load()) return "draining";
        auto s = keys.current();
        if (s->open_mode) return {};
        auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
        if (!s->keys || s->keys->active_count(now) == 0) return "no_keys";
        return {};
    };
    hooks.metrics_text = [this, &keys]() {
        metrics_view v;
        for (auto& w : impl_->workers) v.workers.push_back(&w->metrics());
        v.open_connections = impl_->shared.open_connections.load();
        v.process = &impl_->process;
        auto s = keys.current();
        v.keys = s->keys.get();
        return render_metrics(v);
    };
    std::unique_ptr<admin_server> admin;
    try {
        admin = std::make_unique<admin_server>(admin_ioc, impl_->admin_ep, hooks);
    } catch (const boost::system::system_error& e) {
        throw config_error({fmt::format("admin.port: cannot listen on {}:{}: {}", c.admin.address,
                                        c.admin.port, e.code().message())});
    }

    // The main port opens only once the admin port listens, so a probe never sees
    // keygate serving without its admin listener.
    unsigned threads = c.threads == 0 ? available_cpus() : c.threads;
    for (unsigned i = 0; i < threads; ++i) {
        auto w = std::make_unique<worker>(impl_->shared, initial);
        try {
            w->listen(impl_->listen_ep);
        } catch (const boost::system::system_error& e) {
            throw config_error({fmt::format("listen.port: cannot listen on {}:{}: {}",
                                            c.listen.address, c.listen.port, e.code().message())});
        }
        w->set_tls(impl_->listen_tls, impl_->upstream_tls);
        impl_->workers.push_back(std::move(w));
    }

    net::signal_set signals(control, SIGTERM, SIGINT, SIGHUP);
    net::steady_timer drain_timer(control);
    bool stopping = false;
    std::chrono::steady_clock::time_point drain_deadline{};
    std::function<void(error_code)> drain_poll;
    auto stop_workers = [&] {
        for (auto& w : impl_->workers) w->stop();
    };
    std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
        if (ec) return;
        signals.async_wait(on_signal);
        if (sig == SIGHUP) {
            log_message("info", "SIGHUP received: reloading the keys file and TLS files");
            keys.reload_now();
            impl_->check_tls(true);
            return;
        }
        if (stopping) {
            log_message("warn", "second stop signal: closing every connection now");
            stop_workers();
            return;
        }
        stopping = true;
        impl_->shared.draining.store(true);
        log_message("info", fmt::format("signal {} received: draining (delay {} ms, timeout {} ms)",
                                        sig, c.limits.drain_delay.count(), c.limits.drain_timeout.count()));
        // Keep serving for drain_delay so the endpoint is taken out of rotation first.
        drain_timer.expires_after(c.limits.drain_delay);
        drain_timer.async_wait([&](error_code e) {
            if (e) return;
            for (auto& w : impl_->workers) w->begin_drain();
            drain_deadline = std::chrono::steady_clock::now() + c.limits.drain_timeout;
            drain_poll({});
        });
    };
    // Polls until the last connection ends or drain_timeout passes.
    drain_poll = [&](error_code e2) {
        if (e2) return;
        if (impl_->shared.open_connections.load() == 0) {
            log_message("info", "drained: every connection is closed");
            stop_workers();
            return;
        }
        if (std::chrono::steady_clock::now() >= drain_deadline) {
            log_message("warn", fmt::format("drain_timeout passed with {} connection(s) open; closing them",
                                            impl_->shared.open_connections.load()));
            stop_workers();
            return;
        }
        drain_timer.expires_after(std::chrono::milliseconds(20));
        drain_timer.async_wait(drain_poll);
    };
    signals.async_wait(on_signal);

    // cert-manager and friends replace certificate files in place: poll them.
    net::steady_timer tls_timer(control);
    std::function<void(error_code)> tls_poll = [&](error_code ec) {
        if (ec) return;
        impl_->check_tls(false);
        tls_timer.expires_after(c.auth.reload_interval);
        tls_timer.async_wait(tls_poll);
    };
    if (!impl_->tls_paths().empty()) {
        tls_timer.expires_after(c.auth.reload_interval);
        tls_timer.async_wait(tls_poll);
    }

    admin->start();
    std::thread admin_thread([&] { admin_ioc.run(); });
    for (auto& w : impl_->workers) w->start();
    keys.start();
    log_message("info", fmt::format("keygate listening on {}:{} (admin {}:{}) with {} worker(s), upstream {}, {} key(s), environment {}",
                                    c.listen.address, c.listen.port, c.admin.address, c.admin.port,
                                    threads, c.upstream.url, snap->keys->size(), c.environment));
    if (c.open_mode)
        log_message("warn", "authentication is disabled: development mode with no active key");

    std::thread control_thread([&] { control.run(); });
    for (auto& w : impl_->workers) w->join();
    keys.stop();
    signals.cancel();
    drain_timer.cancel();
    tls_timer.cancel();
    control.stop();
    control_thread.join();
    admin->stop();
    admin_ioc.stop();
    admin_thread.join();
    return 0;
}

} // namespace keygate
