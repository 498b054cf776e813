#include "keygate/chunked.hpp"

#include <algorithm>

namespace keygate {

namespace {

int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

// A size line longer than this is not a size line: it bounds memory and CPU spent on it.
constexpr std::size_t max_size_line = 4096;

} // namespace

bool chunked_decoder::ext_step(unsigned char c) {
    const bool ws = c == ' ' || c == '\t';
    switch (ext_) {
    case ext::before_semicolon:
        if (ws) return true;
        if (c == ';') {
            ext_ = ext::name_start;
            return true;
        }
        return false;
    case ext::name_start:
        if (ws) return true;
        if (is_tchar(c)) {
            ext_ = ext::name;
            return true;
        }
        return false;
    case ext::name:
    case ext::after_name:
        if (ext_ == ext::name && is_tchar(c)) return true;
        if (ws) {
            ext_ = ext::after_name;
            return true;
        }
        if (c == '=') {
            ext_ = ext::value_start;
            return true;
        }
        if (c == ';') {
            ext_ = ext::name_start;
            return true;
        }
        if (c == '\r') {
            state_ = state::size_lf;
            return true;
        }
        return false;
    case ext::value_start:
        if (ws) return true;
        if (c == '"') {
            ext_ = ext::quoted;
            return true;
        }
        if (is_tchar(c)) {
            ext_ = ext::token_value;
            return true;
        }
        return false;
    case ext::token_value:
    case ext::after_value:
        if (ext_ == ext::token_value && is_tchar(c)) return true;
        if (ws) {
            ext_ = ext::after_value;
            return true;
        }
        if (c == ';') {
            ext_ = ext::name_start;
            return true;
        }
        if (c == '\r') {
            state_ = state::size_lf;
            return true;
        }
        return false;
    case ext::quoted:
        if (c == '"') {
            ext_ = ext::after_value;
            return true;
        }
        if (c == '\\') {
            ext_ = ext::quoted_pair;
            return true;
        }
        return c == '\t' || (c >= 0x20 && c < 0x7f);
    case ext::quoted_pair:
        ext_ = ext::quoted;
        return c == '\t' || (c >= 0x20 && c < 0x7f);
    }
    return false;
}

std::size_t chunked_decoder::step(std::string_view in, std::string_view& data) {
    data = {};
    std::size_t i = 0;
    while (i < in.size()) {
        const auto c = static_cast<unsigned char>(in[i]);
        switch (state_) {
        case state::size: {
            int v = hex_digit(c);
            if (v >= 0) {
                // 15 hex digits already exceed any body keygate accepts; more cannot be valid.
                if (++size_digits_ > 15) return fail(error::bad_chunk);
                remaining_ = remaining_ * 16 + static_cast<unsigned>(v);
            } else if (size_digits_ == 0) {
                return fail(error::bad_chunk);
            } else if (c == ';') {
                ext_ = ext::name_start;
                state_ = state::ext;
            } else if (c == ' ' || c == '\t') {
                ext_ = ext::before_semicolon;
                state_ = state::ext;
            } else if (c == '\r') {
                state_ = state::size_lf;
            } else {
                return fail(error::bad_chunk);
            }
            if (++line_bytes_ > max_size_line) return fail(error::bad_chunk);
            ++i;
            break;
        }
        case state::ext:
            // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
            if (!ext_step(c)) return fail(error::bad_chunk);
            if (++line_bytes_ > max_size_line) return fail(error::bad_chunk);
            ++i;
            break;
        case state::size_lf:
            if (c != '\n') return fail(error::bad_chunk);
            ++i;
            line_bytes_ = 0;
            size_digits_ = 0;
            state_ = remaining_ == 0 ? state::trailer_line_start : state::data;
            break;
        case state::data: {
            auto n = static_cast<std::size_t>(
                std::min<std::uint64_t>(remaining_, in.size() - i));
            data = in.substr(i, n);
            remaining_ -= n;
            payload_ += n;
            i += n;
            if (remaining_ == 0) state_ = state::data_cr;
            return i;
        }
        case state::data_cr:
            if (c != '\r') return fail(error::bad_chunk);
            ++i;
            state_ = state::data_lf;
            break;
        case state::data_lf:
            if (c != '\n') return fail(error::bad_chunk);
            ++i;
            state_ = state::size;
            break;
        case state::trailer_line_start:
            if (++trailer_bytes_ > max_trailer_bytes_) return fail(error::trailer_too_large);
            if (c == '\r') {
                state_ = state::final_lf;
            } else if (is_tchar(c)) {
                if (++trailer_fields_ > max_trailer_fields_) return fail(error::trailer_too_large);
                trailer_saw_colon_ = false;
                state_ = state::trailer_line;
            } else {
                // An obs-fold or any other byte cannot start a trailer field.
                return fail(error::bad_chunk);
            }
            ++i;
            break;
        case state::trailer_line:
            if (++trailer_bytes_ > max_trailer_bytes_) return fail(error::trailer_too_large);
            if (c == '\r') {
                if (!trailer_saw_colon_) return fail(error::bad_chunk);
                state_ = state::trailer_lf;
            } else if (!trailer_saw_colon_) {
                if (c == ':') trailer_saw_colon_ = true;
                else if (!is_tchar(c)) return fail(error::bad_chunk);
            } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
                return fail(error::bad_chunk);
            }
            ++i;
            break;
        case state::trailer_lf:
            if (++trailer_bytes_ > max_trailer_bytes_) return fail(error::trailer_too_large);
            if (c != '\n') return fail(error::bad_chunk);
            ++i;
            state_ = state::trailer_line_start;
            break;
        case state::final_lf:
            if (c != '\n') return fail(error::bad_chunk);
            ++i;
            state_ = state::done;
            return i;
        case state::done:
        case state::failed:
            return i;
        }
    }
    return i;
}

} // namespace keygate
