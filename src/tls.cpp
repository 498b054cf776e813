#include "keygate/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fstream>
#include <sstream>

namespace keygate {

namespace {

std::string openssl_error() {
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return "unknown error";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

} // namespace

std::shared_ptr<ssl::context> make_server_tls(const listen_tls_config& cfg) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, cfg.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    std::vector<std::string> problems;
    if (SSL_CTX_use_certificate_chain_file(native, cfg.cert_file.c_str()) != 1)
        problems.push_back("listen.tls.cert_file: cannot load " + cfg.cert_file + ": " + openssl_error());
    if (SSL_CTX_use_PrivateKey_file(native, cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        problems.push_back("listen.tls.key_file: cannot load " + cfg.key_file + ": " + openssl_error());
    else if (problems.empty() && SSL_CTX_check_private_key(native) != 1)
        problems.push_back("listen.tls.key_file: does not match listen.tls.cert_file");
    if (!problems.empty()) throw config_error(std::move(problems));
    return ctx;
}

std::shared_ptr<ssl::context> make_client_tls(const upstream_tls_config& cfg) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
    if (cfg.verify) {
        if (!cfg.ca_file.empty()) {
            if (SSL_CTX_load_verify_locations(native, cfg.ca_file.c_str(), nullptr) != 1)
                throw config_error({"upstream.tls.ca_file: cannot load " + cfg.ca_file + ": " +
                                    openssl_error()});
        } else if (SSL_CTX_set_default_verify_paths(native) != 1) {
            throw config_error({"upstream.tls: cannot load the system certificate store: " +
                                openssl_error()});
        }
        ctx->set_verify_mode(ssl::verify_peer);
    } else {
        ctx->set_verify_mode(ssl::verify_none);
    }
    return ctx;
}

tls_contexts load_tls(const config& cfg) {
    tls_contexts out;
    std::vector<std::string> problems;
    try {
        if (cfg.listen.tls) out.listen = make_server_tls(*cfg.listen.tls);
    } catch (const config_error& e) {
        problems.insert(problems.end(), e.problems.begin(), e.problems.end());
    }
    try {
        if (cfg.upstream.scheme == "https") out.upstream = make_client_tls(cfg.upstream.tls);
    } catch (const config_error& e) {
        problems.insert(problems.end(), e.problems.begin(), e.problems.end());
    }
    if (!problems.empty()) throw config_error(std::move(problems));
    return out;
}

std::string tls_fingerprint(const std::vector<std::string>& files) {
    std::string all;
    for (const auto& f : files) {
        if (f.empty()) continue;
        std::ifstream in(f, std::ios::binary);
        std::ostringstream ss;
        ss << in.rdbuf();
        all += ss.str();
        all += '\0';
    }
    return all;
}

} // namespace keygate
