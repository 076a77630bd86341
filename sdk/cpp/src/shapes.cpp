#include "shapes.hpp"

#include <set>

#include "text.hpp"

namespace trtd::detail {

std::optional<std::string> shape_problem(const std::string& name, const std::string& dtype, const Shape& expected,
                                         const Shape& shape, std::int64_t max_batch, const std::string& model,
                                         const std::string& got_dtype) {
    std::size_t rank = shape.size();
    if (rank != expected.size() || rank > max_rank)
        return "input " + repr(name) + " expects " + format_tensor(dtype, expected) + " (rank " +
               std::to_string(expected.size()) + "), got " + format_tensor(got_dtype, shape) + " (rank " +
               std::to_string(rank) + ")";
    for (std::size_t axis = 0; axis < rank; ++axis) {
        std::int64_t want = expected[axis], dim = shape[axis];
        if (want >= 0) {
            if (dim != want)
                return "input " + repr(name) + " expects " + format_tensor(dtype, expected) + ", got " +
                       format_tensor(got_dtype, shape) + " (dimension " + std::to_string(axis) + " must be " +
                       std::to_string(want) + ")";
        } else if (dim < 1) {
            return "input " + repr(name) + ": dimension " + std::to_string(axis) + " is " + std::to_string(dim) +
                   "; dynamic dimensions must be at least 1";
        }
    }
    if (max_batch && rank && shape[0] > max_batch)
        return "input " + repr(name) + " has batch " + std::to_string(shape[0]) + "; model " + repr(model) +
               " accepts at most " + std::to_string(max_batch);
    return std::nullopt;
}

std::optional<std::string> batch_problem(const std::vector<std::pair<std::string, Shape>>& shapes) {
    std::set<std::int64_t> batches;
    std::vector<std::string> found;
    for (const auto& [name, shape] : shapes) {
        if (shape.empty()) continue;
        batches.insert(shape[0]);
        found.push_back(repr(name) + " has " + std::to_string(shape[0]));
    }
    if (batches.size() <= 1) return std::nullopt;
    return "inputs disagree on the batch dimension (the first): " + join(found, ", ") +
           "; give them all the same batch";
}

}  // namespace trtd::detail
