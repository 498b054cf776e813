#include "keygate/server.hpp"

#include "keygate/access_log.hpp"
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
    explicit impl(config c) : cfg(std::move(c)), shared(cfg) {}
    config cfg;
    shared_state shared;
    tcp::endpoint listen_ep;
    std::vector<std::unique_ptr<worker>> workers;
};

server::server(config cfg) : impl_(std::make_unique<impl>(std::move(cfg))) {
    auto& c = impl_->cfg;
    impl_->listen_ep = make_endpoint(c.listen.address, c.listen.port, "listen");
    probe_port(impl_->listen_ep, "listen");
}

server::~server() = default;

int server::run() {
    auto& c = impl_->cfg;
    auto snap = std::make_shared<snapshot>();
    snap->keys = std::make_shared<const key_store>(c.auth.keys, c.auth.identity_header_prefix);
    snap->open_mode = c.open_mode;
    std::shared_ptr<const snapshot> initial = snap;

    unsigned threads = c.threads == 0 ? available_cpus() : c.threads;
    for (unsigned i = 0; i < threads; ++i) {
        auto w = std::make_unique<worker>(impl_->shared, initial);
        try {
            w->listen(impl_->listen_ep);
        } catch (const boost::system::system_error& e) {
            throw config_error({fmt::format("listen.port: cannot listen on {}:{}: {}",
                                            c.listen.address, c.listen.port, e.code().message())});
        }
        impl_->workers.push_back(std::move(w));
    }

    net::io_context control;
    net::signal_set signals(control, SIGTERM, SIGINT, SIGHUP);
    std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
            log_message("info", "SIGHUP received; no keys file to reload");
            signals.async_wait(on_signal);
            return;
        }
        log_message("info", fmt::format("signal {} received, stopping", sig));
        for (auto& w : impl_->workers) w->stop();
    };
    signals.async_wait(on_signal);

    for (auto& w : impl_->workers) w->start();
    log_message("info", fmt::format("keygate listening on {}:{} with {} worker(s), upstream {}, {} key(s), environment {}",
                                    c.listen.address, c.listen.port, threads, c.upstream.url,
                                    snap->keys->size(), c.environment));
    if (c.open_mode)
        log_message("warn", "authentication is disabled: development mode with no active key");

    std::thread control_thread([&] { control.run(); });
    for (auto& w : impl_->workers) w->join();
    control.stop();
    control_thread.join();
    return 0;
}

} // namespace keygate
