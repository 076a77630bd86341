#include "trtd/tensor.hpp"

namespace trtd {

std::string format_tensor(const std::string& dtype, const Shape& shape) {
    std::string out = dtype + "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) out += ",";
        out += shape[i] < 0 ? std::string("?") : std::to_string(shape[i]);
    }
    return out + "]";
}

void TensorView::copy_from(const ConstTensorView& from) const {
    if (from.dtype() != dtype_ || from.shape() != shape_)
        throw InvalidInput("cannot copy " + from.describe() + " into " + describe());
    if (nbytes()) std::memcpy(data_, from.data(), nbytes());
}

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
    auto n = element_count(shape_);
    if (n < 0) throw InvalidTensor("a tensor's dimensions cannot be negative: " + describe());
    bytes_.resize(static_cast<std::size_t>(n) * itemsize(dtype_));
}

Tensor Tensor::copy_of(const ConstTensorView& view) {
    Tensor t(view.dtype(), view.shape());
    if (t.nbytes()) std::memcpy(t.data(), view.data(), t.nbytes());
    return t;
}

void Tensor::fill_from(const void* src, std::size_t nbytes) {
    if (nbytes != bytes_.size())
        throw InvalidInput(describe() + " holds " + std::to_string(bytes_.size()) + " bytes, got " +
                           std::to_string(nbytes) + " bytes of values");
    if (nbytes) std::memcpy(bytes_.data(), src, nbytes);
}

}  // namespace trtd
