// Hashing, random bytes, encodings: thin wrappers over OpenSSL.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace keygate::crypto {

using digest_t = std::array<unsigned char, 32>;

/// SHA-256 of `data`.
digest_t sha256(std::string_view data);

/// Lowercase hex of `data`.
std::string to_hex(const unsigned char* data, std::size_t size);

/// Parses exactly 64 hex digits (either case) into a digest; false on anything else.
bool digest_from_hex(std::string_view hex, digest_t& out);

/// Constant-time equality of two digests (CRYPTO_memcmp).
bool equal(const digest_t& a, const digest_t& b);

/// Fills `out` with `size` bytes from OpenSSL's CSPRNG; throws std::runtime_error on failure.
void random_bytes(unsigned char* out, std::size_t size);

/// base64url without padding.
std::string base64url(const unsigned char* data, std::size_t size);

/// A new API key: 32 random bytes, base64url without padding (43 characters).
std::string generate_key();

/// `sha256:<64 lowercase hex>` for `key`.
std::string hash_key(std::string_view key);

} // namespace keygate::crypto
