// Tensors as the client takes and gives them: dense, row-major, native byte order (SPEC 6.5).
//
// ConstTensorView / TensorView: a dtype, a shape and a pointer to memory someone else owns (the
// caller's buffer, or a region's slot on the zero-copy path). Tensor: the same with its own
// bytes (what the copying path returns). Span<T>: typed access to either, checked against the
// dtype once, when it is made.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "trtd/dtype.hpp"
#include "trtd/errors.hpp"

namespace trtd {

static_assert(sizeof(bool) == 1, "the wire's bool is one byte");

using Shape = std::vector<std::int64_t>;

// Elements of a shape (1 for a scalar); -1 when a dimension is negative.
inline std::int64_t element_count(const Shape& shape) noexcept {
    std::int64_t n = 1;
    for (auto d : shape) {
        if (d < 0) return -1;
        n *= d;
    }
    return n;
}

// A tensor as the messages write it: float32[?,64] (a dynamic dimension as '?'); with an empty
// dtype only the dimensions: [?,64]. The daemon's and the Python SDK's wording (protocol/shapes.py).
std::string format_tensor(const std::string& dtype, const Shape& shape);

// A contiguous run of T: pointer and size (std::span is C++20; a C++20 caller can build one from
// data() and size()).
template <class T> class Span {
public:
    Span() = default;
    Span(T* data, std::size_t size) : data_(data), size_(size) {}
    // Span<float> -> Span<const float>.
    template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
    Span(const Span<U>& other) : data_(other.data()), size_(other.size()) {}
    T* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T* begin() const noexcept { return data_; }
    T* end() const noexcept { return data_ + size_; }
    T& operator[](std::size_t i) const noexcept { return data_[i]; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

namespace detail {
[[noreturn]] void throw_wrong_element_type(DType have, DType want);
}

class TensorView;

// A read-only view: what infer() takes as an input, and what run_zero_copy() gives as an output.
class ConstTensorView {
public:
    ConstTensorView() = default;
    ConstTensorView(DType dtype, Shape shape, const void* data)
        : dtype_(dtype), shape_(std::move(shape)), data_(data) {}
    template <class T> ConstTensorView(const T* data, Shape shape)
        : ConstTensorView(dtype_of<T>::value, std::move(shape), data) {}
    template <class T> ConstTensorView(const std::vector<T>& data, Shape shape)
        : ConstTensorView(dtype_of<T>::value, std::move(shape), data.data()) {}

    DType dtype() const noexcept { return dtype_; }
    const Shape& shape() const noexcept { return shape_; }
    const void* data() const noexcept { return data_; }
    std::int64_t elements() const noexcept { return element_count(shape_); }
    std::size_t nbytes() const noexcept {
        auto n = elements();
        return n < 0 ? 0 : static_cast<std::size_t>(n) * itemsize(dtype_);
    }
    // The elements as T; Error when T is not this view's dtype.
    template <class T> Span<const T> as() const {
        if (dtype_of<T>::value != dtype_) detail::throw_wrong_element_type(dtype_, dtype_of<T>::value);
        return {static_cast<const T*>(data_), static_cast<std::size_t>(elements())};
    }
    std::string describe() const { return format_tensor(std::string(dtype_name(dtype_)), shape_); }

private:
    DType dtype_ = DType::float32;
    Shape shape_;
    const void* data_ = nullptr;
};

// A writable view: zero_copy_inputs() gives these, infer_into() writes into them.
class TensorView {
public:
    TensorView() = default;
    TensorView(DType dtype, Shape shape, void* data) : dtype_(dtype), shape_(std::move(shape)), data_(data) {}
    template <class T> TensorView(T* data, Shape shape) : TensorView(dtype_of<T>::value, std::move(shape), data) {}
    template <class T> TensorView(std::vector<T>& data, Shape shape)
        : TensorView(dtype_of<T>::value, std::move(shape), data.data()) {}

    DType dtype() const noexcept { return dtype_; }
    const Shape& shape() const noexcept { return shape_; }
    void* data() const noexcept { return data_; }
    std::int64_t elements() const noexcept { return element_count(shape_); }
    std::size_t nbytes() const noexcept {
        auto n = elements();
        return n < 0 ? 0 : static_cast<std::size_t>(n) * itemsize(dtype_);
    }
    template <class T> Span<T> as() const {
        if (dtype_of<T>::value != dtype_) detail::throw_wrong_element_type(dtype_, dtype_of<T>::value);
        return {static_cast<T*>(data_), static_cast<std::size_t>(elements())};
    }
    // Copies `from` in; InvalidInput unless dtype and shape are the same.
    void copy_from(const ConstTensorView& from) const;
    operator ConstTensorView() const { return {dtype_, shape_, data_}; }
    std::string describe() const { return format_tensor(std::string(dtype_name(dtype_)), shape_); }

private:
    DType dtype_ = DType::float32;
    Shape shape_;
    void* data_ = nullptr;
};

// A tensor with its own (zero-initialised) bytes.
class Tensor {
public:
    Tensor() = default;
    Tensor(DType dtype, Shape shape);
    // A tensor holding a copy of `values`; InvalidInput when their count does not fit the shape.
    template <class T> static Tensor from(Shape shape, const std::vector<T>& values) {
        Tensor t(dtype_of<T>::value, std::move(shape));
        t.fill_from(values.data(), values.size() * sizeof(T));
        return t;
    }
    template <class T> static Tensor from(Shape shape, std::initializer_list<T> values) {
        return from(std::move(shape), std::vector<T>(values));
    }
    static Tensor copy_of(const ConstTensorView& view);

    DType dtype() const noexcept { return dtype_; }
    const Shape& shape() const noexcept { return shape_; }
    void* data() noexcept { return bytes_.data(); }
    const void* data() const noexcept { return bytes_.data(); }
    std::size_t nbytes() const noexcept { return bytes_.size(); }
    std::int64_t elements() const noexcept { return element_count(shape_); }
    template <class T> Span<T> as() { return view().as<T>(); }
    template <class T> Span<const T> as() const { return cview().as<T>(); }
    TensorView view() { return {dtype_, shape_, bytes_.data()}; }
    ConstTensorView cview() const { return {dtype_, shape_, bytes_.data()}; }
    operator ConstTensorView() const { return cview(); }
    std::string describe() const { return format_tensor(std::string(dtype_name(dtype_)), shape_); }

private:
    void fill_from(const void* src, std::size_t nbytes);

    DType dtype_ = DType::float32;
    Shape shape_;
    std::vector<std::byte> bytes_;
};

}  // namespace trtd
