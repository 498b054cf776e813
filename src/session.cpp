// One client connection: read a head, decide, relay, repeat (DESIGN.md §1).
#include "keygate/access_log.hpp"
#include "keygate/chunked.hpp"
#include "keygate/headers.hpp"
#include "keygate/key_store.hpp"
#include "keygate/path.hpp"
#include "keygate/policy.hpp"
#include "keygate/rate_limit.hpp"
#include "keygate/replies.hpp"
#include "keygate/worker.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <fmt/format.h>

#include <array>
#include <chrono>

namespace keygate {

namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t idle_buffer = 2 * 1024;   // what an idle connection keeps
constexpr std::size_t relay_chunk = 16 * 1024;  // one read of a body
constexpr std::size_t max_response_head = 64 * 1024;
constexpr auto linger_time = 2s;
// A drained idle connection only waits for a request that was already on its way.
constexpr auto idle_linger_time = 250ms;
constexpr std::size_t linger_bytes = 64 * 1024;
constexpr std::string_view continue_100 = "HTTP/1.1 100 Continue\r\n\r\n";

auto nothrow(error_code& ec) { return net::redirect_error(net::use_awaitable, ec); }

std::string peer_string(const tcp::socket& s) {
    error_code ec;
    auto ep = s.remote_endpoint(ec);
    if (ec) return "unknown";
    auto addr = ep.address();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped())
        return net::ip::make_address_v4(net::ip::v4_mapped, addr.to_v6()).to_string();
    return addr.to_string();
}

long long ms_since(clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t).count();
}

// Writes the hex size line of a chunk into `buf` and returns it as a view.
std::string_view chunk_header(char (&buf)[24], std::size_t n) {
    auto r = fmt::format_to_n(buf, sizeof buf, "{:x}\r\n", n);
    return {buf, r.size};
}

class session final : public session_base,
                      public throttle_hooks,
                      public std::enable_shared_from_this<session> {
public:
    session(worker& w, stream s, std::shared_ptr<ssl::context> tls)
        : w_(w), cfg_(w.cfg()), client_(std::move(s)), tls_ctx_(std::move(tls)), timer_(w.ioc()),
          resolver_(w.ioc()), in_(idle_buffer), accepted_(clock::now()) {
        w_.shared().open_connections.fetch_add(1, std::memory_order_relaxed);
        w_.add_session(this);
        peer_ = peer_string(client_.socket());
        auto& shared = w_.shared();
        throttled_ = !shared.throttle.disabled() && make_client_key(peer_, client_key_) &&
                     !shared.throttle_exempt.contains(peer_);
    }

    ~session() {
        w_.remove_session(this);
        w_.shared().open_connections.fetch_sub(1, std::memory_order_relaxed);
    }

    void drain() override {
        // Only a connection waiting for its next request is cut; an exchange in flight
        // finishes and its response carries `Connection: close`. A request already in
        // the kernel's buffer counts as in flight.
        if (phase_ == phase::head && in_.empty() && !request_waiting()) {
            closing_idle_ = true;
            client_.cancel();
        }
    }

    // Bytes the client sent that keygate has not read yet.
    bool request_waiting() {
        error_code ec;
        return client_.socket().available(ec) > 0 && !ec;
    }

    // throttle_hooks: the shared failed-attempt table and the keys' token buckets.
    unsigned client_blocked() override {
        return throttled_ ? w_.shared().throttle.blocked(client_key_, mono_now()) : 0;
    }
    unsigned key_failed() override {
        return throttled_ ? w_.shared().throttle.record_failure(client_key_, mono_now()) : 0;
    }
    unsigned rate_limited(const key_record& key) override {
        return key.bucket ? key.bucket->take(mono_now()) : 0;
    }

    void start() {
        auto self = shared_from_this();
        net::co_spawn(w_.ioc(), watchdog(self), net::detached);
        net::co_spawn(w_.ioc(), run(self), net::detached);
    }

private:
    // Where an exchange is; decides what a timeout means.
    enum class phase { head, client_body, connect, upstream_write, upstream_head, relay, linger };

    static mono_ns mono_now() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
    }

    // ---- deadlines -------------------------------------------------------------------

    // One timer per connection, re-armed lazily: setting a deadline only writes a field,
    // so a request costs no timer syscalls unless the new deadline is earlier than the
    // wake-up already armed.
    void set_deadline(clock::duration d) {
        timed_out_ = false;
        deadline_ = clock::now() + d;
        if (deadline_ < armed_) timer_.cancel();
    }

    net::awaitable<void> watchdog(std::shared_ptr<session>) {
        const auto granularity = w_.shared().watchdog_granularity;
        while (!done_) {
            auto now = clock::now();
            if (tunneling_ && !tunnel_key_valid()) deadline_ = now; // key removed or expired
            if (now >= deadline_) {
                timed_out_ = true;
                deadline_ = clock::time_point::max();
                error_code ignored;
                client_.cancel();
                if (up_) up_->stream.cancel();
                resolver_.cancel();
            }
            armed_ = std::min(deadline_, now + granularity);
            timer_.expires_at(armed_);
            error_code ec;
            co_await timer_.async_wait(nothrow(ec));
        }
    }

    void finish() {
        done_ = true;
        timer_.cancel();
        error_code ignored;
        client_.close();
        up_.reset();
    }

    // ---- the connection loop ---------------------------------------------------------

    net::awaitable<void> run(std::shared_ptr<session>) {
        if (client_.is_tls()) {
            // The handshake counts against the header timeout; a plain-HTTP client fails it
            // and is closed.
            phase_ = phase::head;
            set_deadline(cfg_.limits.header_timeout);
            error_code ec;
            co_await client_.tls().async_handshake(ssl::stream_base::server, nothrow(ec));
            if (ec) {
                finish();
                co_return;
            }
        }
        bool first = true;
        try {
            while (co_await exchange(first)) {
                first = false;
                in_.shrink_if_empty(idle_buffer);
            }
        } catch (const std::exception& e) {
            // Nothing a client sends should get here; if anything does, only this
            // connection ends.
            log_message("error", std::string("connection closed after an internal error: ") + e.what());
            linger_on_close_ = false;
        }
        // Unread request bytes would turn the close into a reset that can destroy the
        // response in the client's buffers: drain them briefly first.
        if (linger_on_close_) co_await linger(closing_idle_ ? idle_linger_time : linger_time);
        finish();
    }

    // One request and its response. Returns true when the connection stays open.
    net::awaitable<bool> exchange(bool first) {
        // A draining worker takes no new request; one that already arrived is served.
        if (w_.draining() && in_.empty() && !request_waiting()) {
            linger_on_close_ = true;
            closing_idle_ = true;
            co_return false;
        }
        // Read the head.
        phase_ = phase::head;
        bytes_in_ = bytes_out_ = 0;
        upstream_ms_ = -1;
        response_started_ = false;
        set_deadline(first ? cfg_.limits.header_timeout - (clock::now() - accepted_)
                           : cfg_.limits.idle_timeout);
        bool started = !in_.empty();
        if (started && !first) set_deadline(cfg_.limits.header_timeout);
        std::size_t scanned = 0;
        head_scan scan;
        for (;;) {
            // An empty line before a request line is tolerated (RFC 9112 §2.2).
            while (scanned == 0 && in_.size() >= 2 && in_.data().substr(0, 2) == "\r\n")
                in_.consume(2);
            scan = scan_head(in_.data(), scanned);
            if (scan.result == head_scan::complete) break;
            if (scan.result == head_scan::bad) {
                start_request_clock();
                co_return co_await fail(400, "bad_request", "The request head is malformed.");
            }
            if (in_.size() >= cfg_.limits.max_header_bytes) {
                start_request_clock();
                co_return co_await fail(431, "header_too_large", {});
            }
            scanned = in_.size();
            std::size_t avail = 0;
            char* p = in_.prepare(1024, cfg_.limits.max_header_bytes, avail);
            avail = std::min(avail, cfg_.limits.max_header_bytes - in_.size());
            error_code ec;
            std::size_t n = co_await client_.read_some(net::buffer(p, avail), ec);
            if (ec) {
                if (closing_idle_) {
                    // Drained while idle: half-close and read what races in, so the client
                    // sees an orderly end rather than a reset.
                    linger_on_close_ = true;
                    co_return false;
                }
                if (timed_out_ && (started || !in_.empty())) {
                    start_request_clock();
                    co_return co_await fail(408, "request_timeout", {});
                }
                co_return false; // closed, reset, or silent past the timeout
            }
            in_.commit(n);
            if (!started) {
                started = true;
                if (!first) set_deadline(cfg_.limits.header_timeout);
            }
        }
        start_request_clock();
        const std::size_t head_len = scan.length;
        bytes_in_ = head_len;
        std::string_view raw = in_.data().substr(0, head_len);

        verdict_ = parser_.parse(raw, w_.shared().limits, req_);
        method_.assign(req_.method.empty() ? std::string_view("-") : req_.method);
        choose_request_id();
        if (verdict_.status != 0) co_return co_await fail(verdict_.status, verdict_.error, verdict_.message);

        // Normalise the path; every decision and the upstream see only this form.
        auto target = normalise_target(req_.target);
        if (!target.ok) co_return co_await fail(400, "bad_request", "The request path is not acceptable.");
        path_ = std::move(target.path);

        // Decide.
        auto snap = w_.current(); // held for the whole exchange
        auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
        auto creds = find_credentials(req_.fields, cfg_.auth);
        decision_ = decide(cfg_.auth, snap->keys.get(), snap->open_mode, req_.method, path_,
                           creds, now, this);
        if (decision_.kind == outcome::denied) {
            // A denial leaves the connection usable only when no body follows the head.
            bool keep = !req_.has_body() && req_.keep_alive && !w_.draining();
            outcome_ = "denied";
            co_return co_await reply(decision_.status, decision_.error, {}, !keep, head_len,
                                     decision_.retry_after);
        }
        outcome_ = decision_.kind == outcome::public_path ? "public" : "allowed";
        key_id_ = decision_.key ? std::string_view(decision_.key->id) : std::string_view();

        // Build the upstream head while the views into the input buffer are valid.
        target_.assign(path_);
        if (target.has_query) {
            target_ += '?';
            target_ += target.query;
        }
        forward_context ctx;
        ctx.credential_header = cfg_.auth.header;
        ctx.accept_bearer = cfg_.auth.accept_bearer;
        ctx.strip_credentials = cfg_.auth.strip_credentials;
        ctx.identity_prefix = cfg_.auth.identity_header_prefix;
        ctx.key = decision_.kind == outcome::allowed ? decision_.key : nullptr;
        ctx.peer_ip = peer_;
        ctx.proto = cfg_.listen.tls ? "https" : "http";
        ctx.request_id = request_id();
        // Only an authorised WebSocket upgrade keeps its Upgrade; h2c and the rest are dropped.
        websocket_ = req_.websocket_upgrade && !req_.has_body();
        ctx.websocket = websocket_;
        // HTTP/1.0 may omit Host; the upstream is spoken to in HTTP/1.1, which requires it.
        bool has_host = false;
        for (const auto& f : req_.fields)
            if (iequals(f.name, "Host")) has_host = true;
        if (!has_host) req_.fields.push_back({"Host", w_.shared().upstream_authority});
        up_head_.clear();
        rewrite_request(up_head_, req_.method, target_, req_.fields, ctx, req_.framing);
        framing_ = req_.framing;
        client_http10_ = req_.version == 10;
        client_keep_alive_ = req_.keep_alive;
        head_request_ = req_.method == "HEAD";
        bool expect_continue = req_.expect_continue && req_.has_body();
        in_.consume(head_len); // from here on the views into the head are gone

        co_return co_await forward(expect_continue);
    }

    // ---- forwarding ------------------------------------------------------------------

    net::awaitable<bool> forward(bool expect_continue) {
        error_code ec;
        if (expect_continue) {
            phase_ = phase::relay;
            set_deadline(cfg_.limits.idle_timeout);
            co_await client_.write(net::buffer(continue_100), ec);
            if (ec) co_return false;
        }

        const bool has_body = framing_.kind == body_framing::chunked ||
                              (framing_.kind == body_framing::fixed_length && framing_.length > 0);
        bool retried = false;
        body_done_ = !has_body;
        for (;;) {
            // Borrow a connection; a stale pooled one is detected by the pool or below.
            // Without a body a stale connection is simply retried; with one, the pool checks.
            up_ = w_.pool().take(has_body);
            if (!up_) {
                up_ = w_.pool().fresh();
                phase_ = phase::connect;
                set_deadline(cfg_.upstream.connect_timeout);
                ec = co_await w_.pool().connect(*up_, resolver_);
                if (ec) {
                    up_.reset();
                    w_.counters().count_upstream_error(timed_out_ ? upstream_error_kind::timeout
                                                                  : upstream_error_kind::connect);
                    co_return co_await fail(502, "upstream_unavailable", {});
                }
            }
            upstream_start_ = clock::now();

            // Send the head, with the body bytes already read when the length is known.
            phase_ = phase::upstream_write;
            set_deadline(cfg_.limits.idle_timeout);
            std::size_t first_body = 0;
            if (framing_.kind == body_framing::fixed_length)
                first_body = static_cast<std::size_t>(
                    std::min<std::uint64_t>(in_.size(), framing_.length));
            std::array<net::const_buffer, 2> bufs{net::buffer(up_head_),
                                                  net::buffer(in_.data().data(), first_body)};
            co_await up_->stream.write(bufs, ec);
            if (ec) {
                if (timed_out_) {
                    w_.counters().count_upstream_error(upstream_error_kind::timeout);
                    co_return co_await fail(504, "upstream_timeout", {});
                }
                if (up_->reused && !has_body && !retried) {
                    retried = true;
                    continue;
                }
                w_.counters().count_upstream_error(upstream_error_kind::reset);
                co_return co_await fail(502, "upstream_unavailable", {});
            }
            if (framing_.kind == body_framing::fixed_length) {
                in_.consume(first_body);
                bytes_in_ += first_body;
                body_left_ = framing_.length - first_body;
            }

            // Stream the rest of the body.
            if (has_body) {
                early_ = false;
                int r = co_await send_body();
                stop_upstream_watch();
                if (r > 0 && !early_) co_return co_await fail_body(r);
                if (r < 0 && !early_) co_return false;
            }

            // Wait for the response head.
            int h = co_await read_response_head();
            if (h == 0) break;
            if (h == 2 && up_->reused && !has_body && !retried) {
                retried = true;
                continue;
            }
            if (h == 3) {
                w_.counters().count_upstream_error(upstream_error_kind::timeout);
                co_return co_await fail(504, "upstream_timeout", {});
            }
            w_.counters().count_upstream_error(h == 1 ? upstream_error_kind::bad_response
                                                      : upstream_error_kind::reset);
            co_return co_await fail(502, "upstream_unavailable", {});
        }
        upstream_ms_ = ms_since(upstream_start_);
        w_.counters().observe_upstream(
            std::chrono::duration<double>(clock::now() - upstream_start_).count());
        co_return co_await relay_response();
    }

    // Sends the request body to the upstream. Returns 0 when sent, an HTTP status to answer
    // when the client's body is at fault (and nothing was answered yet), -1 to just close.
    net::awaitable<int> send_body() {
        error_code ec;
        if (framing_.kind == body_framing::fixed_length) {
            while (body_left_ > 0) {
                if (in_.empty()) {
                    int r = co_await read_client();
                    if (r != 0) co_return r;
                }
                auto take = static_cast<std::size_t>(
                    std::min<std::uint64_t>(in_.size(), body_left_));
                phase_ = phase::upstream_write;
                set_deadline(cfg_.limits.idle_timeout);
                co_await up_->stream.write(net::buffer(in_.data().data(), take), ec);
                if (ec) co_return upstream_write_failed();
                in_.consume(take);
                bytes_in_ += take;
                body_left_ -= take;
            }
            body_done_ = true;
            co_return 0;
        }

        // Chunked: decode strictly, forward each piece re-encoded without extensions,
        // drop the trailers.
        chunked_decoder dec(cfg_.limits.max_header_bytes, cfg_.limits.max_headers);
        for (;;) {
            std::string_view data;
            std::size_t used = dec.step(in_.data(), data);
            if (dec.failure() == chunked_decoder::error::bad_chunk) co_return 400;
            if (dec.failure() == chunked_decoder::error::trailer_too_large) co_return 431;
            if (dec.payload_bytes() > cfg_.limits.max_body_bytes) co_return 413;
            if (!data.empty()) {
                char hdr[24];
                std::array<net::const_buffer, 3> bufs{net::buffer(chunk_header(hdr, data.size())),
                                                      net::buffer(data), net::buffer("\r\n", 2)};
                phase_ = phase::upstream_write;
                set_deadline(cfg_.limits.idle_timeout);
                co_await up_->stream.write(bufs, ec);
                if (ec) co_return upstream_write_failed();
            }
            in_.consume(used);
            bytes_in_ += used;
            if (dec.done()) break;
            if (used == 0 || in_.empty()) {
                int r = co_await read_client();
                if (r != 0) co_return r;
            }
        }
        phase_ = phase::upstream_write;
        set_deadline(cfg_.limits.idle_timeout);
        co_await up_->stream.write(net::buffer("0\r\n\r\n", 5), ec);
        if (ec) co_return upstream_write_failed();
        body_done_ = true;
        co_return 0;
    }

    // The upstream stopped taking the body. If it already answered, that answer is relayed
    // (and both connections close afterwards); otherwise the exchange fails.
    int upstream_write_failed() {
        upload_failed_ = true;
        if (timed_out_) return 504;
        return 0; // let read_response_head find out whether an answer came
    }

    // Reads more of the client's body into in_. 0 on success, 408 on timeout, -1 on close.
    // While the body streams, the upstream may answer early (and stop reading): watch for
    // its first byte so a stalled upload does not hide the answer.
    void watch_upstream() {
        if (watching_) return;
        watching_ = true;
        auto self = shared_from_this();
        auto gen = watch_gen_;
        up_->stream.socket().async_wait(tcp::socket::wait_read, [this, self, gen](error_code ec) {
            if (gen != watch_gen_) return;
            watching_ = false;
            if (ec) return;
            early_ = true;
            error_code ignored;
            if (phase_ == phase::client_body) client_.cancel();
            else if (phase_ == phase::upstream_write && up_) up_->stream.cancel();
        });
    }

    void stop_upstream_watch() {
        if (!watching_) return;
        ++watch_gen_;
        watching_ = false;
        error_code ignored;
        if (up_) up_->stream.cancel();
    }

    net::awaitable<int> read_client() {
        if (early_) co_return -1;
        watch_upstream();
        phase_ = phase::client_body;
        set_deadline(cfg_.limits.idle_timeout);
        std::size_t avail = 0;
        char* p = in_.prepare(relay_chunk, std::max(relay_chunk, cfg_.limits.max_header_bytes) + relay_chunk, avail);
        error_code ec;
        std::size_t n = co_await client_.read_some(net::buffer(p, avail), ec);
        if (ec) co_return early_ ? -1 : timed_out_ ? 408 : -1;
        in_.commit(n);
        co_return 0;
    }

    // Reads the upstream's response head into up_->buf, skipping 1xx other than 101.
    // 0: parsed into resp_; 1: malformed; 2: closed or reset before any byte; 3: timeout;
    // 4: failed after some bytes.
    net::awaitable<int> read_response_head() {
        phase_ = phase::upstream_head;
        set_deadline(upload_failed_ ? std::chrono::duration_cast<clock::duration>(1s)
                                    : std::chrono::duration_cast<clock::duration>(cfg_.upstream.response_timeout));
        std::size_t scanned = 0;
        bool got_bytes = false;
        for (;;) {
            auto scan = scan_head(up_->buf.data(), scanned);
            if (scan.result == head_scan::bad) co_return 1;
            if (scan.result == head_scan::complete) {
                const char* why = "";
                if (!parse_response_head(up_->buf.data().substr(0, scan.length), head_request_,
                                         resp_, why))
                    co_return 1;
                if (resp_.status < 200) {
                    // Interim responses are not relayed; 101 is never asked for here.
                    if (resp_.status == 101) {
                        if (!websocket_) co_return 1;
                        resp_head_len_ = scan.length;
                        co_return 0;
                    }
                    up_->buf.consume(scan.length);
                    scanned = 0;
                    continue;
                }
                resp_head_len_ = scan.length;
                co_return 0;
            }
            if (up_->buf.size() >= max_response_head) co_return 1;
            scanned = up_->buf.size();
            std::size_t avail = 0;
            char* p = up_->buf.prepare(4096, max_response_head + relay_chunk, avail);
            error_code ec;
            std::size_t n = co_await up_->stream.read_some(net::buffer(p, avail), ec);
            if (ec) {
                if (timed_out_) co_return 3;
                co_return got_bytes ? 4 : 2;
            }
            got_bytes = true;
            up_->buf.commit(n);
        }
    }

    // Sends the response head and streams the body to the client.
    net::awaitable<bool> relay_response() {
        // How the client gets the body: chunked responses stay chunked for HTTP/1.1
        // clients; anything else without a length ends with the connection.
        body_framing out = resp_.framing;
        bool close_after = !client_keep_alive_ || !body_done_ || upload_failed_ || w_.draining();
        if (!resp_.no_body) {
            if (resp_.framing.kind == body_framing::until_close) close_after = true;
            if (resp_.framing.kind == body_framing::chunked && client_http10_) {
                out = {body_framing::until_close, 0};
                close_after = true;
            }
        }
        response_context rctx;
        rctx.request_id = request_id();
        rctx.keep_alive = !close_after;
        rctx.http10_client = client_http10_;
        if (resp_.status == 101) {
            rctx.websocket = true;
            rctx.keep_alive = true;
            out = {body_framing::none, 0};
        }
        resp_status_ = resp_.status;
        resp_out_.clear();
        rewrite_response(resp_out_, resp_.status, resp_.reason, resp_.fields, rctx, out);
        up_->buf.consume(resp_head_len_); // the views into the head are not used again

        error_code ec;
        bool upstream_clean = resp_.keep_alive && body_done_ && !upload_failed_;
        phase_ = phase::relay;
        response_started_ = true;

        if (resp_.status == 101) {
            set_deadline(cfg_.limits.idle_timeout);
            co_await client_.write(net::buffer(resp_out_), ec);
            bytes_out_ += resp_out_.size();
            if (!ec) co_await tunnel();
            co_return end_exchange(false, false);
        }

        if (resp_.no_body || resp_.framing.kind == body_framing::none) {
            set_deadline(cfg_.limits.idle_timeout);
            co_await client_.write(net::buffer(resp_out_), ec);
            bytes_out_ += resp_out_.size();
            if (ec) co_return end_exchange(false, false);
            co_return end_exchange(upstream_clean && up_->buf.empty(), !close_after);
        }

        if (resp_.framing.kind == body_framing::fixed_length || resp_.framing.kind == body_framing::until_close) {
            const bool until_close = resp_.framing.kind == body_framing::until_close;
            std::uint64_t left = until_close ? UINT64_MAX : resp_.framing.length;
            bool head_sent = false;
            for (;;) {
                auto take = static_cast<std::size_t>(std::min<std::uint64_t>(up_->buf.size(), left));
                if (!head_sent || take > 0) {
                    std::array<net::const_buffer, 2> bufs{
                        net::buffer(resp_out_.data(), head_sent ? 0 : resp_out_.size()),
                        net::buffer(up_->buf.data().data(), take)};
                    set_deadline(cfg_.limits.idle_timeout);
                    co_await client_.write(bufs, ec);
                    if (ec) co_return end_exchange(false, false);
                    bytes_out_ += take + (head_sent ? 0 : resp_out_.size());
                    head_sent = true;
                    up_->buf.consume(take);
                    left -= take;
                }
                if (left == 0) break;
                set_deadline(cfg_.limits.idle_timeout);
                std::size_t avail = 0;
                char* p = up_->buf.prepare(relay_chunk, max_response_head + relay_chunk, avail);
                std::size_t n = co_await up_->stream.read_some(net::buffer(p, avail), ec);
                if (ec) {
                    if (until_close && ec == net::error::eof) break;
                    co_return end_exchange(false, false); // cut short: the client sees it
                }
                up_->buf.commit(n);
            }
            co_return end_exchange(!until_close && upstream_clean && up_->buf.empty(), !close_after);
        }

        // Chunked from the upstream.
        set_deadline(cfg_.limits.idle_timeout);
        co_await client_.write(net::buffer(resp_out_), ec);
        if (ec) co_return end_exchange(false, false);
        bytes_out_ += resp_out_.size();
        const bool rechunk = out.kind == body_framing::chunked;
        chunked_decoder dec(max_response_head, 1000);
        for (;;) {
            std::string_view data;
            std::size_t used = dec.step(up_->buf.data(), data);
            if (dec.failure() != chunked_decoder::error::none) co_return end_exchange(false, false);
            if (!data.empty()) {
                char hdr[24];
                std::array<net::const_buffer, 3> bufs{
                    net::buffer(rechunk ? chunk_header(hdr, data.size()) : std::string_view()),
                    net::buffer(data), net::buffer(rechunk ? "\r\n" : "", rechunk ? 2 : 0)};
                set_deadline(cfg_.limits.idle_timeout);
                co_await client_.write(bufs, ec);
                if (ec) co_return end_exchange(false, false);
                bytes_out_ += net::buffer_size(bufs);
            }
            up_->buf.consume(used);
            if (dec.done()) break;
            if (used == 0 || up_->buf.empty()) {
                set_deadline(cfg_.limits.idle_timeout);
                std::size_t avail = 0;
                char* p = up_->buf.prepare(relay_chunk, max_response_head + relay_chunk, avail);
                std::size_t n = co_await up_->stream.read_some(net::buffer(p, avail), ec);
                if (ec) co_return end_exchange(false, false);
                up_->buf.commit(n);
            }
        }
        if (rechunk) {
            set_deadline(cfg_.limits.idle_timeout);
            co_await client_.write(net::buffer("0\r\n\r\n", 5), ec);
            if (ec) co_return end_exchange(false, false);
            bytes_out_ += 5;
        }
        co_return end_exchange(upstream_clean && up_->buf.empty(), !close_after);
    }

    // After a 101: bytes both ways until either side closes or idle_timeout passes with no
    // byte; the key is re-checked by the watchdog while the tunnel is open.
    net::awaitable<void> tunnel() {
        using namespace net::experimental::awaitable_operators;
        phase_ = phase::relay;
        tunnel_key_ = decision_.key ? decision_.key->id : std::string();
        tunneling_ = true;
        set_deadline(cfg_.limits.idle_timeout);
        co_await (pump(client_, in_, up_->stream) || pump(up_->stream, up_->buf, client_));
        tunneling_ = false;
    }

    net::awaitable<void> pump(stream& from, byte_buffer& buf, stream& to) {
        error_code ec;
        for (;;) {
            if (!buf.empty()) {
                co_await to.write(net::buffer(buf.data().data(), buf.size()), ec);
                if (ec) co_return;
                if (&to == &client_) bytes_out_ += buf.size();
                else bytes_in_ += buf.size();
                buf.consume(buf.size());
                set_deadline(cfg_.limits.idle_timeout);
            }
            std::size_t avail = 0;
            char* p = buf.prepare(relay_chunk, relay_chunk * 2, avail);
            std::size_t n = co_await from.read_some(net::buffer(p, avail), ec);
            if (ec) co_return;
            buf.commit(n);
            set_deadline(cfg_.limits.idle_timeout);
        }
    }

    // True while the tunnel's key is still in the current key set and valid.
    bool tunnel_key_valid() {
        if (tunnel_key_.empty()) return true; // a public path or open mode: no key to lose
        const auto& snap = w_.current();
        if (!snap->keys) return false;
        const key_record* k = snap->keys->find_id(tunnel_key_);
        if (!k || k->disabled) return false;
        auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
        return !(k->expires_at && now >= *k->expires_at);
    }

    // Logs the exchange, returns the upstream connection to the pool when it is clean, and
    // says whether the client connection stays open.
    bool end_exchange(bool reuse_upstream, bool keep_client) {
        if (!keep_client && !body_done_) linger_on_close_ = true;
        if (up_) {
            if (reuse_upstream) w_.pool().put(std::move(up_));
            up_.reset();
        }
        log(resp_status_, outcome_, {});
        if (!keep_client) {
            // The response is complete (or cut); close our side cleanly.
            error_code ignored;
            client_.shutdown_send();
        }
        return keep_client;
    }

    // ---- keygate's own answers -------------------------------------------------------

    // A failure of keygate's own (framing, timeout, upstream fault): answered when no
    // response has started, then the connection closes.
    net::awaitable<bool> fail(unsigned status, std::string_view code, std::string_view message) {
        up_.reset(); // an upstream connection in an unknown state is never reused
        if (response_started_) {
            log(resp_status_, "error", {});
            co_return false;
        }
        outcome_ = "error";
        co_return co_await reply(status, code, message, true, 0);
    }

    // Body faults found while streaming the request (413 past the limit, 400 bad chunk,
    // 431 trailers, 408 stalled, 504 upstream stalled).
    net::awaitable<bool> fail_body(int status) {
        switch (status) {
        case 400: co_return co_await fail(400, "bad_request", "The chunked body is malformed.");
        case 408: co_return co_await fail(408, "request_timeout", {});
        case 413: co_return co_await fail(413, "payload_too_large", {});
        case 431: co_return co_await fail(431, "header_too_large", "The request trailers are too large.");
        default: co_return co_await fail(504, "upstream_timeout", {});
        }
    }

    // Sends one of keygate's JSON replies. With `close`, lingers so the client reads it.
    net::awaitable<bool> reply(unsigned status, std::string_view code, std::string_view message,
                               bool close, std::size_t consume_after, unsigned retry_after = 0) {
        close = close || w_.draining();
        reply_options opts;
        opts.retry_after = retry_after;
        opts.head_request = method_ == "HEAD";
        opts.request_id = request_id();
        opts.date = w_.http_date();
        opts.close = close;
        opts.http10 = req_.version == 10 && verdict_.status == 0;
        if (status == 401) opts.credential_header = cfg_.auth.header;
        resp_out_.clear();
        render_error(resp_out_, status, code, message, opts);
        resp_status_ = status;
        // Only a denial has a reason to log.
        reason_ = outcome_ == std::string_view("denied") ? decision_.reason : std::string_view();
        phase_ = phase::relay;
        set_deadline(cfg_.limits.idle_timeout);
        error_code ec;
        co_await client_.write(net::buffer(resp_out_), ec);
        bytes_out_ += resp_out_.size();
        log(status, outcome_, reason_);
        if (ec) co_return false;
        if (!close) {
            in_.consume(consume_after);
            co_return true;
        }
        co_await linger();
        co_return false;
    }

    // Stops sending, then reads and drops what the client still sends for a short while,
    // so closing does not reset the connection before the client has read the answer.
    net::awaitable<void> linger(clock::duration how_long = linger_time) {
        phase_ = phase::linger;
        error_code ec, ignored;
        client_.shutdown_send();
        set_deadline(how_long);
        std::size_t total = in_.size();
        in_.consume(in_.size());
        while (!ec && total < linger_bytes) {
            std::size_t avail = 0;
            char* p = in_.prepare(relay_chunk, relay_chunk, avail);
            std::size_t n = co_await client_.read_some(net::buffer(p, avail), ec);
            total += n;
            in_.consume(in_.size());
        }
    }

    // ---- bookkeeping -----------------------------------------------------------------

    void start_request_clock() {
        request_start_ = clock::now();
        request_wall_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
        outcome_ = "error";
        reason_ = {};
        key_id_ = {};
        path_.clear();
        method_.assign("-");
        verdict_ = {};
        decision_ = {};
        req_.version = 11;
        rid_len_ = 0;
    }

    // Keeps a well-formed incoming X-Request-Id, otherwise makes one.
    void choose_request_id() {
        std::string_view incoming;
        unsigned count = 0;
        for (const auto& f : req_.fields) {
            if (iequals(f.name, "X-Request-Id")) {
                ++count;
                incoming = f.value;
            }
        }
        // A value named by Connection is hop-by-hop: what keygate adds is built without it.
        if (count == 1 && valid_request_id(incoming) &&
            !named_by_connection(req_.fields, "X-Request-Id")) {
            std::memcpy(rid_, incoming.data(), incoming.size());
            rid_len_ = incoming.size();
        }
    }

    std::string_view request_id() {
        if (rid_len_ == 0) {
            char fresh[32];
            w_.new_request_id(fresh);
            std::memcpy(rid_, fresh, sizeof fresh);
            rid_len_ = sizeof fresh;
        }
        return {rid_, rid_len_};
    }

    void log(unsigned status, std::string_view outcome, std::string_view reason) {
        access_entry e;
        e.ts_ms = request_wall_ms_;
        e.request_id = request_id();
        e.client = peer_;
        e.method = method_;
        e.path = path_.empty() ? std::string_view("-") : std::string_view(path_);
        e.status = status;
        e.outcome = outcome;
        e.reason = reason;
        e.key_id = key_id_;
        e.upstream_ms = upstream_ms_;
        e.bytes_in = bytes_in_;
        e.bytes_out = bytes_out_;
        e.duration_ms = std::chrono::duration<double, std::milli>(clock::now() - request_start_).count();
        w_.log_access(e);
        auto& m = w_.counters();
        request_outcome o = outcome == "allowed"  ? request_outcome::allowed
                            : outcome == "denied" ? request_outcome::denied
                            : outcome == "public" ? request_outcome::public_path
                                                  : request_outcome::error;
        m.count_request(o, status);
        denial_reason r;
        if (o == request_outcome::denied && parse_denial_reason(reason, r)) m.count_denial(r);
    }

    worker& w_;
    const config& cfg_;
    stream client_;
    std::shared_ptr<ssl::context> tls_ctx_;
    net::steady_timer timer_;
    tcp::resolver resolver_;
    byte_buffer in_;
    std::unique_ptr<upstream_conn> up_;
    std::string peer_;
    clock::time_point accepted_;
    clock::time_point deadline_ = clock::time_point::max();
    clock::time_point armed_ = clock::time_point::max();
    bool timed_out_ = false;
    bool done_ = false;
    bool linger_on_close_ = false;
    bool closing_idle_ = false;
    bool websocket_ = false;
    bool tunneling_ = false;
    std::string tunnel_key_;
    bool watching_ = false; // an upstream read-readiness wait is pending
    bool early_ = false;    // the upstream answered before the body was sent
    unsigned watch_gen_ = 0;
    bool throttled_ = false; // this client is subject to the failed-attempt throttle
    client_key client_key_;
    phase phase_ = phase::head;

    // Per exchange.
    request_parser parser_;
    request_head req_;
    head_verdict verdict_;
    decision decision_;
    response_head resp_;
    std::size_t resp_head_len_ = 0;
    body_framing framing_;
    std::uint64_t body_left_ = 0;
    bool body_done_ = true;
    bool upload_failed_ = false;
    bool response_started_ = false;
    bool client_http10_ = false;
    bool client_keep_alive_ = true;
    bool head_request_ = false;
    unsigned resp_status_ = 0;
    std::string method_;
    std::string path_;
    std::string target_;
    std::string up_head_;
    std::string resp_out_;
    std::string_view outcome_ = "error";
    std::string_view reason_;
    std::string_view key_id_;
    char rid_[128];
    std::size_t rid_len_ = 0;
    clock::time_point request_start_;
    clock::time_point upstream_start_;
    long long request_wall_ms_ = 0;
    long long upstream_ms_ = -1;
    std::uint64_t bytes_in_ = 0;
    std::uint64_t bytes_out_ = 0;
};

} // namespace

void start_session(worker& w, stream socket, std::shared_ptr<ssl::context> tls) {
    std::make_shared<session>(w, std::move(socket), std::move(tls))->start();
}

} // namespace keygate
