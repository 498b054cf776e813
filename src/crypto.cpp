#include "keygate/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace keygate::crypto {

namespace {

// Fetching the algorithm and allocating a context cost more than hashing a short key:
// do both once per thread.
struct sha256_state {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~sha256_state() {
        EVP_MD_CTX_free(ctx);
        EVP_MD_free(md);
    }
};

} // namespace

digest_t sha256(std::string_view data) {
    thread_local sha256_state st;
    digest_t out{};
    unsigned int len = 0;
    if (!st.md || !st.ctx || EVP_DigestInit_ex2(st.ctx, st.md, nullptr) != 1 ||
        EVP_DigestUpdate(st.ctx, data.data(), data.size()) != 1 ||
        EVP_DigestFinal_ex(st.ctx, out.data(), &len) != 1)
        throw std::runtime_error("SHA-256 failed");
    return out;
}

std::string to_hex(const unsigned char* data, std::size_t size) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(size * 2, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 0x0f];
    }
    return out;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool digest_from_hex(std::string_view hex, digest_t& out) {
    if (hex.size() != out.size() * 2) return false;
    for (std::size_t i = 0; i < out.size(); ++i) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<unsigned char>(hi << 4 | lo);
    }
    return true;
}

bool equal(const digest_t& a, const digest_t& b) {
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void random_bytes(unsigned char* out, std::size_t size) {
    if (RAND_bytes(out, static_cast<int>(size)) != 1)
        throw std::runtime_error("OpenSSL's random generator failed");
}

std::string base64url(const unsigned char* data, std::size_t size) {
    std::string out(4 * ((size + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data,
                            static_cast<int>(size));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char& c : out) {
        if (c == '+') c = '-';
        else if (c == '/') c = '_';
    }
    return out;
}

std::string generate_key() {
    unsigned char bytes[32];
    random_bytes(bytes, sizeof bytes);
    return base64url(bytes, sizeof bytes);
}

std::string hash_key(std::string_view key) {
    auto d = sha256(key);
    return "sha256:" + to_hex(d.data(), d.size());
}

} // namespace keygate::crypto
