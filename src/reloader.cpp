#include "keygate/reloader.hpp"

#include "keygate/access_log.hpp"
#include "keygate/key_store.hpp"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <thread>
#include <sstream>
#include <unordered_set>

namespace keygate {

reloader::reloader(net::io_context& ioc, const config& cfg, std::vector<key_config> static_keys,
                   env_lookup env, std::shared_ptr<const snapshot> initial, publish_fn publish,
                   process_metrics& metrics)
    : ioc_(ioc), cfg_(cfg), static_keys_(std::move(static_keys)), env_(std::move(env)),
      publish_(std::move(publish)), metrics_(metrics), timer_(ioc),
      current_(std::move(initial)) {
    std::string why;
    if (!cfg_.auth.keys_file.empty()) read(applied_content_, why);
}

void reloader::start() {
    if (cfg_.auth.keys_file.empty()) return;
    schedule();
}

void reloader::stop() {
    net::post(ioc_, [this] {
        stopped_ = true;
        timer_.cancel();
    });
}

void reloader::schedule() {
    if (stopped_) return;
    timer_.expires_after(cfg_.auth.reload_interval);
    timer_.async_wait([this](error_code ec) {
        if (ec || stopped_) return;
        poll();
        schedule();
    });
}

std::shared_ptr<const snapshot> reloader::current() const {
    std::lock_guard lock(mutex_);
    return current_;
}

bool reloader::read(std::string& content, std::string& why) const {
    std::ifstream f(cfg_.auth.keys_file, std::ios::binary);
    if (!f) {
        why = "cannot read " + cfg_.auth.keys_file;
        return false;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    content = std::move(ss).str();
    return true;
}

void reloader::poll() {
    std::string first, why;
    if (!read(first, why)) {
        failed(why);
        return;
    }
    if (first == applied_content_) {
        // Back to what is in force: a later breakage is news again.
        last_problem_.clear();
        return;
    }
    // A file being rewritten in place may be read half-written: apply a change only once
    // two reads 100 ms apart agree.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::string second;
    if (!read(second, why) || second != first) return;
    apply(first);
}

void reloader::reload_now() {
    net::post(ioc_, [this] {
        if (cfg_.auth.keys_file.empty()) {
            log_message("info", "SIGHUP: no auth.keys_file configured; nothing to reload");
            return;
        }
        std::string content, why;
        if (!read(content, why)) {
            failed(why);
            return;
        }
        last_problem_.clear(); // SIGHUP always reports its outcome
        apply(content);
    });
}

void reloader::failed(const std::string& problem) {
    // The same broken file is polled again and again: report and count it once.
    if (problem == last_problem_) return;
    last_problem_ = problem;
    metrics_.reloads_failed.fetch_add(1, std::memory_order_relaxed);
    log_message("error", "keys file not applied, previous keys stay in force: " + problem);
}

void reloader::apply(const std::string& content) {
    auto started = std::chrono::steady_clock::now();
    std::vector<key_config> keys;
    try {
        auto file_keys = load_keys_text(content, cfg_.auth.keys_file, env_);
        keys = static_keys_;
        keys.insert(keys.end(), std::make_move_iterator(file_keys.begin()),
                    std::make_move_iterator(file_keys.end()));
        validate_key_set(keys, cfg_.environment);
    } catch (const config_error& e) {
        failed(e.summary());
        return;
    } catch (const std::exception& e) {
        failed(e.what());
        return;
    }

    auto previous = current();
    auto next = std::make_shared<snapshot>();
    next->keys = std::make_shared<const key_store>(keys, cfg_.auth.identity_header_prefix,
                                                   previous->keys.get());
    auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
    // Development's open mode lasts until the first reload that brings a key, never longer.
    next->open_mode = previous->open_mode && next->keys->active_count(now) == 0;

    std::unordered_set<std::string_view> old_ids, new_ids;
    for (const auto& r : previous->keys->records()) old_ids.insert(r.id);
    for (const auto& r : next->keys->records()) new_ids.insert(r.id);
    std::string added, removed;
    std::size_t n_added = 0, n_removed = 0;
    for (const auto& r : next->keys->records())
        if (!old_ids.count(r.id) && n_added++ < 20) added += (added.empty() ? "" : ",") + r.id;
    for (const auto& r : previous->keys->records())
        if (!new_ids.count(r.id) && n_removed++ < 20) removed += (removed.empty() ? "" : ",") + r.id;
    if (n_added > 20) added += fmt::format(",... ({} in all)", n_added);
    if (n_removed > 20) removed += fmt::format(",... ({} in all)", n_removed);

    std::shared_ptr<const snapshot> published = next;
    {
        std::lock_guard lock(mutex_);
        current_ = published;
    }
    publish_(published);
    applied_content_ = content;
    last_problem_.clear();
    metrics_.reloads_ok.fetch_add(1, std::memory_order_relaxed);
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    log_message("info", fmt::format("keys reloaded: {} keys ({} active), added [{}], removed [{}], in {:.1f} ms",
                                    next->keys->size(), next->keys->active_count(now), added,
                                    removed, ms));
    if (next->keys->active_count(now) == 0 && !next->open_mode)
        log_message("warn", "the key set is now empty: every request that needs a key is denied");
}

} // namespace keygate
