// TLS contexts for the listener and for https upstreams, and their reload on change.
#pragma once

#include "keygate/config.hpp"
#include "keygate/stream.hpp"

#include <memory>
#include <string>

namespace keygate {

/// A server context from listen.tls (TLS 1.2 minimum, or 1.3). Throws config_error naming
/// the field when a file cannot be loaded.
std::shared_ptr<ssl::context> make_server_tls(const listen_tls_config& cfg);

/// A client context for an https upstream: verification on (system store or ca_file)
/// unless `verify: false`. Throws config_error naming the field.
std::shared_ptr<ssl::context> make_client_tls(const upstream_tls_config& cfg);

/// The listener's and the upstream's contexts as `cfg` asks (null where not used).
struct tls_contexts {
    std::shared_ptr<ssl::context> listen;
    std::shared_ptr<ssl::context> upstream;
};

/// Loads both contexts; throws one config_error listing every file that cannot be loaded.
tls_contexts load_tls(const config& cfg);

/// The concatenated bytes of the files a context was built from, to notice a change.
std::string tls_fingerprint(const std::vector<std::string>& files);

} // namespace keygate
