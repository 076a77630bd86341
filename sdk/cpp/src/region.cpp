// Mapping a daemon's region (SPEC 10.1): POSIX shared memory or a Windows named file mapping.
#include "trtd/region.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace trtd {

namespace {
#ifdef _WIN32
std::string last_error_text() {
    DWORD code = GetLastError();
    char* text = nullptr;
    FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                   nullptr, code, 0, reinterpret_cast<LPSTR>(&text), 0, nullptr);
    std::string out = text ? text : "error " + std::to_string(code);
    if (text) LocalFree(text);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == '.')) out.pop_back();
    return out + " (error " + std::to_string(code) + ")";
}
#endif
}  // namespace

Region::Region(std::string name, std::int64_t nbytes, std::string token)
    : name_(std::move(name)), nbytes_(nbytes), token_(std::move(token)) {
    if (nbytes_ <= 0) throw RegionError("region " + name_ + " has no bytes (" + std::to_string(nbytes_) + ")");
#ifdef _WIN32
    // The daemon created it with CreateFileMapping under this very name (no Global or Local
    // prefix, SPEC 10.1); names are ASCII.
    std::wstring wide(name_.begin(), name_.end());
    HANDLE mapping = OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, FALSE, wide.c_str());
    if (mapping == nullptr)
        throw RegionError("cannot open region " + name_ + " (OpenFileMappingW): " + last_error_text());
    void* view = MapViewOfFile(mapping, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0);
    std::string why = view == nullptr ? last_error_text() : std::string();
    CloseHandle(mapping);  // the view keeps the mapping alive
    if (view == nullptr) throw RegionError("cannot map region " + name_ + " (MapViewOfFile): " + why);
    // The view covers the whole mapping, rounded up to pages: at least nbytes, or not ours to use.
    MEMORY_BASIC_INFORMATION info;
    if (VirtualQuery(view, &info, sizeof info) == 0 || info.RegionSize < static_cast<SIZE_T>(nbytes_)) {
        UnmapViewOfFile(view);
        throw RegionError("region " + name_ + " is smaller than the " + std::to_string(nbytes_) +
                          " bytes its lease says");
    }
    data_ = view;
    mapped_bytes_ = static_cast<std::size_t>(nbytes_);
#else
    std::string path = "/" + name_;
    int fd = shm_open(path.c_str(), O_RDWR, 0);
    if (fd < 0) {
        int err = errno;
        throw RegionError("cannot open region " + name_ + " (shm_open): " + std::strerror(err) +
                          (err == EACCES ? "; regions are mode 0600 (0660 with the daemon's group): run as the "
                                           "daemon's user or in its group"
                                         : ""));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < nbytes_) {
        close(fd);
        throw RegionError("region " + name_ + " is " + std::to_string(static_cast<long long>(st.st_size)) +
                          " bytes, expected " + std::to_string(nbytes_));
    }
    void* addr = mmap(nullptr, static_cast<std::size_t>(nbytes_), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);  // the mapping keeps the memory; the descriptor is not needed
    if (addr == MAP_FAILED) throw RegionError("cannot map region " + name_ + " (mmap): " + std::strerror(err));
    data_ = addr;
    mapped_bytes_ = static_cast<std::size_t>(nbytes_);
#endif
}

Region::~Region() { unmap(); }

Region::Region(Region&& other) noexcept
    : name_(std::move(other.name_)),
      nbytes_(other.nbytes_),
      token_(std::move(other.token_)),
      data_(other.data_),
      mapped_bytes_(other.mapped_bytes_) {
    other.data_ = nullptr;
    other.mapped_bytes_ = 0;
}

Region& Region::operator=(Region&& other) noexcept {
    if (this != &other) {
        unmap();
        name_ = std::move(other.name_);
        nbytes_ = other.nbytes_;
        token_ = std::move(other.token_);
        data_ = other.data_;
        mapped_bytes_ = other.mapped_bytes_;
        other.data_ = nullptr;
        other.mapped_bytes_ = 0;
    }
    return *this;
}

void Region::unmap() noexcept {
    if (data_ == nullptr) return;
#ifdef _WIN32
    UnmapViewOfFile(data_);
#else
    munmap(data_, mapped_bytes_);  // never shm_unlink: the daemon owns the name
#endif
    data_ = nullptr;
    mapped_bytes_ = 0;
}

TensorView Region::view(std::int64_t offset, DType dtype, Shape shape) const {
    if (!mapped()) throw RegionError("region " + name_ + " is not mapped (released, or its client closed)");
    std::int64_t count = element_count(shape);
    std::int64_t nbytes = count < 0 ? -1 : count * static_cast<std::int64_t>(itemsize(dtype));
    if (offset < 0 || nbytes < 0 || offset > nbytes_ || nbytes > nbytes_ - offset)
        throw OutOfBounds("tensor " + format_tensor(std::string(dtype_name(dtype)), shape) + " at offset " +
                          std::to_string(offset) + " does not fit region " + name_ + " of " +
                          std::to_string(nbytes_) + " bytes");
    return {dtype, std::move(shape), static_cast<std::byte*>(data_) + offset};
}

}  // namespace trtd
