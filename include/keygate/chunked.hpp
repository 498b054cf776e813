// A strict incremental decoder for the chunked transfer coding. Pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace keygate {

class chunked_decoder {
public:
    enum class error { none, bad_chunk, trailer_too_large };

    /// Trailer bounds: bytes of the whole trailer section and number of fields.
    chunked_decoder(std::size_t max_trailer_bytes, std::size_t max_trailer_fields)
        : max_trailer_bytes_(max_trailer_bytes), max_trailer_fields_(max_trailer_fields) {}

    /// Consumes bytes from `in` up to the first payload piece or the end of the message.
    /// Sets `data` to a view of payload bytes inside `in` (possibly empty); returns how many
    /// bytes of `in` were consumed (payload included). Chunk extensions and trailers are
    /// validated and dropped.
    std::size_t step(std::string_view in, std::string_view& data);

    bool done() const { return state_ == state::done; }
    error failure() const { return error_; }
    std::uint64_t payload_bytes() const { return payload_; }

    /// Starts over for a new message.
    void reset() { *this = chunked_decoder(max_trailer_bytes_, max_trailer_fields_); }

private:
    enum class state { size, ext, size_lf, data, data_cr, data_lf, trailer_line_start,
                       trailer_line, trailer_lf, final_lf, done, failed };
    std::size_t fail(error e) { error_ = e; state_ = state::failed; return 0; }
    bool ext_step(unsigned char c); // one byte of a chunk extension; false when malformed

    std::size_t max_trailer_bytes_;
    std::size_t max_trailer_fields_;
    state state_ = state::size;
    error error_ = error::none;
    std::uint64_t remaining_ = 0; // payload bytes left in the current chunk
    std::uint64_t payload_ = 0;
    unsigned size_digits_ = 0;
    std::size_t line_bytes_ = 0;   // size line / extension bytes so far
    std::size_t trailer_bytes_ = 0;
    std::size_t trailer_fields_ = 0;
    bool trailer_saw_colon_ = false;
    // Where inside a chunk extension the decoder is.
    enum class ext { before_semicolon, name_start, name, after_name, value_start, token_value,
                     quoted, quoted_pair, after_value };
    ext ext_ = ext::before_semicolon;
};

} // namespace keygate
