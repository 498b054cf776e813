#include "keygate/admin.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string_view>
#include <unordered_set>
#include <utility>

namespace keygate {

namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// Probes and scrapes are small and quick; anything slower is a stuck or hostile peer.
constexpr auto io_timeout = std::chrono::seconds(10);
constexpr std::uint32_t max_header_bytes = 8 * 1024;
// The port is unauthenticated: bound what an idle crowd of connections can hold open.
constexpr std::size_t max_connections = 64;

auto nothrow(error_code& ec) { return net::redirect_error(net::use_awaitable, ec); }

using response = http::response<http::string_body>;

response make_response(http::status status, unsigned version, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8") {
    response res{status, version};
    res.set(http::field::content_type, content_type);
    // Probe and scrape answers describe this instant; a cache must never replay them.
    res.set(http::field::cache_control, "no-store");
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

} // namespace

struct admin_server::impl {
    impl(net::io_context& ioc, admin_hooks h) : strand(net::make_strand(ioc)), acceptor(strand), hooks(std::move(h)) {}

    // Everything below is touched only on this strand, whatever threads run the io_context.
    net::strand<net::io_context::executor_type> strand;
    tcp::acceptor acceptor;
    admin_hooks hooks;
    bool stopped = false;
    std::size_t connections = 0;
    // Connections waiting for a request head: stop() ends these, and only these.
    std::unordered_set<beast::tcp_stream*> reading;

    /// Answers one request head; never throws.
    response answer(const http::request<http::empty_body>& req) const;

    static net::awaitable<void> accept_loop(std::shared_ptr<impl> self);
    static net::awaitable<void> serve(std::shared_ptr<impl> self, tcp::socket socket);
};

response admin_server::impl::answer(const http::request<http::empty_body>& req) const {
    unsigned version = req.version();
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
        auto res = make_response(http::status::method_not_allowed, version, "method not allowed\n");
        res.set(http::field::allow, "GET, HEAD");
        return res;
    }
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    try {
        if (path == "/healthz") return make_response(http::status::ok, version, "ok\n");
        if (path == "/readyz") {
            std::string reason = hooks.not_ready_reason ? hooks.not_ready_reason() : std::string();
            if (reason.empty()) return make_response(http::status::ok, version, "ready\n");
            return make_response(http::status::service_unavailable, version, reason + "\n");
        }
        if (path == "/metrics")
            return make_response(http::status::ok, version,
                                 hooks.metrics_text ? hooks.metrics_text() : std::string(),
                                 "text/plain; version=0.0.4; charset=utf-8");
    } catch (const std::exception&) {
        // A hook that fails (out of memory, say) must not take the listener down with it.
        return make_response(http::status::internal_server_error, version, "error\n");
    }
    return make_response(http::status::not_found, version, "not found\n");
}

net::awaitable<void> admin_server::impl::accept_loop(std::shared_ptr<impl> self) {
    for (;;) {
        error_code ec;
        tcp::socket socket = co_await self->acceptor.async_accept(nothrow(ec));
        if (self->stopped || ec == net::error::operation_aborted) co_return;
        if (ec) {
            // Out of descriptors, most likely: pause rather than spin on the same error.
            net::steady_timer pause(self->strand, std::chrono::milliseconds(100));
            co_await pause.async_wait(nothrow(ec));
            continue;
        }
        if (self->connections >= max_connections) {
            error_code ignored;
            socket.close(ignored);
            continue;
        }
        ++self->connections;
        net::co_spawn(self->strand, serve(self, std::move(socket)), net::detached);
    }
}

net::awaitable<void> admin_server::impl::serve(std::shared_ptr<impl> self, tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    struct release {
        impl& owner;
        beast::tcp_stream* stream;
        ~release() {
            owner.reading.erase(stream);
            --owner.connections;
        }
    } on_exit{*self, &stream};

    // The buffer's own limit backs up the parser's: a head can never grow it past 8 KiB.
    beast::flat_buffer buffer(max_header_bytes);
    for (;;) {
        http::request_parser<http::empty_body> parser;
        parser.header_limit(max_header_bytes);
        error_code ec;

        // Read the next request head, bounded in time and size.
        stream.expires_after(io_timeout);
        self->reading.insert(&stream);
        co_await http::async_read_header(stream, buffer, parser, nothrow(ec));
        self->reading.erase(&stream);
        if (ec) {
            // A peer that went away or timed out gets nothing; a malformed head gets a reason.
            if (ec.category() != http::make_error_code(http::error::end_of_stream).category() ||
                ec == http::error::end_of_stream || ec == http::error::partial_message || self->stopped)
                break;
            bool too_big = ec == http::error::header_limit || ec == http::error::buffer_overflow;
            auto res = too_big ? make_response(http::status::request_header_fields_too_large, 11,
                                               "header too large\n")
                               : make_response(http::status::bad_request, 11, "bad request\n");
            res.keep_alive(false);
            stream.expires_after(io_timeout);
            co_await http::async_write(stream, res, nothrow(ec));
            break;
        }

        const auto& req = parser.get();
        response res = self->answer(req);
        // A body is never read here, so a request that has one ends the connection.
        res.keep_alive(req.keep_alive() && parser.is_done() && !self->stopped);
        if (req.method() == http::verb::head) res.body().clear(); // Content-Length stays

        stream.expires_after(io_timeout);
        co_await http::async_write(stream, res, nothrow(ec));
        if (ec || !res.keep_alive()) break;
    }

    // Send a FIN so the peer reads the whole answer before the socket closes.
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

admin_server::admin_server(net::io_context& ioc, const tcp::endpoint& ep, admin_hooks hooks)
    : impl_(std::make_shared<impl>(ioc, std::move(hooks))) {
    auto& a = impl_->acceptor;
    a.open(ep.protocol());
    a.set_option(tcp::acceptor::reuse_address(true));
    a.bind(ep);
    a.listen(net::socket_base::max_listen_connections);
}

admin_server::~admin_server() { stop(); }

void admin_server::start() { net::co_spawn(impl_->strand, impl::accept_loop(impl_), net::detached); }

void admin_server::stop() {
    net::post(impl_->strand, [self = impl_] {
        if (self->stopped) return;
        self->stopped = true;
        error_code ignored;
        self->acceptor.close(ignored);
        for (beast::tcp_stream* s : self->reading) s->cancel();
    });
}

namespace {

struct probe_target {
    std::string host;      // to resolve: a name or an address without brackets
    std::string port;      // service for the resolver
    std::string authority; // Host header
    std::string target;    // path and query
};

struct probe_result {
    bool done = false;
    unsigned status = 0;
    std::string failure; // set when no status was read
};

net::awaitable<void> probe(const probe_target& t, std::chrono::milliseconds timeout, probe_result& out) {
    auto ex = co_await net::this_coro::executor;
    error_code ec;
    tcp::resolver resolver(ex);
    auto endpoints = co_await resolver.async_resolve(t.host, t.port, nothrow(ec));
    if (ec) {
        out.failure = fmt::format("cannot resolve {}: {}", t.host, ec.message());
        out.done = true;
        co_return;
    }

    beast::tcp_stream stream(ex);
    stream.expires_after(timeout);
    co_await stream.async_connect(endpoints, nothrow(ec));
    if (!ec) {
        http::request<http::empty_body> req{http::verb::get, t.target, 11};
        req.set(http::field::host, t.authority);
        req.set(http::field::user_agent, "keygate-healthcheck");
        req.keep_alive(false);
        co_await http::async_write(stream, req, nothrow(ec));
    }
    beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
    if (!ec) co_await http::async_read_header(stream, buffer, parser, nothrow(ec));
    if (ec) {
        out.failure = ec == beast::error::timeout ? std::string("timed out") : ec.message();
    } else {
        out.status = parser.get().result_int();
    }
    out.done = true;
}

// Splits an `http://host[:port][/path][?query]` URL; empty `why` when it is usable.
probe_target parse_target(const std::string& url, std::string& why) {
    probe_target t;
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) {
        why = "not a URL";
        return t;
    }
    const auto& u = *parsed;
    if (u.scheme_id() != boost::urls::scheme::http) {
        why = "only http:// URLs are supported";
        return t;
    }
    auto kind = u.host_type();
    if (kind == boost::urls::host_type::ipv4 || kind == boost::urls::host_type::ipv6 ||
        kind == boost::urls::host_type::name)
        t.host = u.host_address(); // without an IPv6 literal's brackets, as the resolver wants
    if (t.host.empty()) {
        why = "the URL has no usable host";
        return t;
    }
    t.port = u.has_port() && !u.port().empty() ? std::string(u.port()) : std::string("80");
    t.authority = std::string(u.encoded_host_and_port());
    t.target = u.encoded_path().empty() ? std::string("/") : std::string(u.encoded_path());
    if (u.has_query()) t.target += "?" + std::string(u.encoded_query());
    return t;
}

} // namespace

int run_healthcheck(const std::string& url, int timeout_ms) {
    auto fail = [&](std::string_view why) {
        std::fputs(fmt::format("keygate: healthcheck: {}: {}\n", url, why).c_str(), stderr);
        return 1;
    };
    std::string why;
    probe_target t = parse_target(url, why);
    if (!why.empty()) return fail(why);

    auto timeout = std::chrono::milliseconds(std::max(timeout_ms, 1));
    probe_result result;
    net::io_context ioc;
    net::co_spawn(ioc, probe(t, timeout, result), net::detached);
    // The stream's own timer cannot cover name resolution; this bounds the whole check.
    ioc.run_for(timeout);
    if (!result.done) return fail(fmt::format("timed out after {} ms", timeout.count()));
    if (!result.failure.empty()) return fail(result.failure);
    if (result.status != 200) return fail(fmt::format("status {}", result.status));
    return 0;
}

} // namespace keygate
