// The wire dtype table (protocol/SPEC.md section 8): names, item sizes, C++ element types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace trtd {

// In the order of SPEC.md's table (protocol/dtypes.py).
enum class DType : std::uint8_t {
    float32, float16, float64, int8, uint8, int16, uint16, int32, uint32, int64, uint64, boolean
};

// IEEE 754 binary16 as its raw bits: C++17 has no half type (C++23's std::float16_t, _Float16
// and CUDA's __half are layout-compatible with it).
struct Half {
    std::uint16_t bits;
};

inline constexpr std::string_view dtype_name(DType t) noexcept {
    constexpr std::string_view names[] = {"float32", "float16", "float64", "int8",  "uint8",  "int16",
                                          "uint16",  "int32",   "uint32",  "int64", "uint64", "bool"};
    return names[static_cast<std::size_t>(t)];
}

inline constexpr std::size_t itemsize(DType t) noexcept {
    constexpr std::size_t sizes[] = {4, 2, 8, 1, 1, 2, 2, 4, 4, 8, 8, 1};
    return sizes[static_cast<std::size_t>(t)];
}

// The dtype of a wire name; nullopt for a name this client does not know (a newer daemon may
// send one: SPEC 2.3 says such a model is unusable, not the whole reply).
inline constexpr std::optional<DType> parse_dtype(std::string_view name) noexcept {
    for (std::uint8_t i = 0; i <= static_cast<std::uint8_t>(DType::boolean); ++i) {
        if (dtype_name(static_cast<DType>(i)) == name) return static_cast<DType>(i);
    }
    return std::nullopt;
}

// The dtype of a C++ element type, for typed views: dtype_of<float>::value == DType::float32.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::float32; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::float16; };
template <> struct dtype_of<double> { static constexpr DType value = DType::float64; };
template <> struct dtype_of<std::int8_t> { static constexpr DType value = DType::int8; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::uint8; };
template <> struct dtype_of<std::int16_t> { static constexpr DType value = DType::int16; };
template <> struct dtype_of<std::uint16_t> { static constexpr DType value = DType::uint16; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::int32; };
template <> struct dtype_of<std::uint32_t> { static constexpr DType value = DType::uint32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::int64; };
template <> struct dtype_of<std::uint64_t> { static constexpr DType value = DType::uint64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };
template <class T> struct dtype_of<const T> : dtype_of<T> {};

}  // namespace trtd
