// A client's mapping of a shared-memory region the daemon leased to it (protocol/SPEC.md 10.1).
//
// POSIX: shm_open("/" + name, O_RDWR) and mmap read-write; Windows: OpenFileMappingW and
// MapViewOfFile. The daemon owns the name: a client only unmaps, it never unlinks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "trtd/tensor.hpp"

namespace trtd {

class Region {
public:
    Region() = default;
    // Maps the region; RegionError when it cannot (gone, smaller than nbytes, not permitted).
    Region(std::string name, std::int64_t nbytes, std::string token);
    ~Region();
    Region(Region&& other) noexcept;
    Region& operator=(Region&& other) noexcept;
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;

    const std::string& name() const noexcept { return name_; }
    std::int64_t nbytes() const noexcept { return nbytes_; }
    // The lease secret; never log or share it (SPEC 10.2).
    const std::string& token() const noexcept { return token_; }
    bool mapped() const noexcept { return data_ != nullptr; }
    std::byte* data() const noexcept { return static_cast<std::byte*>(data_); }
    Span<std::byte> bytes() const noexcept { return {data(), mapped() ? static_cast<std::size_t>(nbytes_) : 0}; }
    // A view of the tensor at `offset`; OutOfBounds unless it lies inside the region.
    TensorView view(std::int64_t offset, DType dtype, Shape shape) const;
    // Unmaps (views become invalid); the lease itself is the daemon's business (release()).
    void unmap() noexcept;

private:
    std::string name_;
    std::int64_t nbytes_ = 0;
    std::string token_;
    void* data_ = nullptr;
    std::size_t mapped_bytes_ = 0;
};

}  // namespace trtd
