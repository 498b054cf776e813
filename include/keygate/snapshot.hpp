// What a request is judged against: the current key set. Immutable once published.
#pragma once

#include <memory>

namespace keygate {

class key_store;

struct snapshot {
    std::shared_ptr<const key_store> keys;
    /// Development with no active key at startup: requests pass without a key.
    bool open_mode = false;
};

} // namespace keygate
