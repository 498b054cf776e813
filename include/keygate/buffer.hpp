// A growable byte buffer with a read and a write position.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace keygate {

class byte_buffer {
public:
    explicit byte_buffer(std::size_t capacity = 0) { reserve_exact(capacity); }

    /// Unread bytes.
    std::string_view data() const { return {data_.get() + begin_, end_ - begin_}; }
    std::size_t size() const { return end_ - begin_; }
    bool empty() const { return begin_ == end_; }
    std::size_t capacity() const { return capacity_; }

    /// Marks `n` unread bytes as read.
    void consume(std::size_t n) {
        begin_ += std::min(n, size());
        if (begin_ == end_) begin_ = end_ = 0;
    }

    /// Writable space of at least `min` bytes (when `limit` allows), growing or compacting
    /// as needed; never grows the capacity past `limit`. Returns the free tail.
    char* prepare(std::size_t min, std::size_t limit, std::size_t& available) {
        if (capacity_ - end_ < min && begin_ > 0) compact();
        if (capacity_ - end_ < min && capacity_ < limit) {
            std::size_t want = std::max(capacity_ * 2, size() + min);
            reserve_exact(std::min(want, limit));
        }
        available = capacity_ - end_;
        return data_.get() + end_;
    }

    /// Makes `n` bytes written after prepare() readable.
    void commit(std::size_t n) { end_ += n; }

    /// Drops everything and, when larger than `keep`, gives the memory back.
    void shrink_if_empty(std::size_t keep) {
        if (empty() && capacity_ > keep) {
            data_.reset();
            capacity_ = 0;
            reserve_exact(keep);
        }
    }

private:
    void compact() {
        std::size_t n = size();
        if (n > 0) std::memmove(data_.get(), data_.get() + begin_, n);
        begin_ = 0;
        end_ = n;
    }
    void reserve_exact(std::size_t cap) {
        if (cap <= capacity_) return;
        std::unique_ptr<char[]> fresh(new char[cap]);
        std::size_t n = size();
        if (n > 0) std::memcpy(fresh.get(), data_.get() + begin_, n);
        data_ = std::move(fresh);
        begin_ = 0;
        end_ = n;
        capacity_ = cap;
    }

    std::unique_ptr<char[]> data_;
    std::size_t capacity_ = 0;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
};

} // namespace keygate
