// Shape checks of a tensor against the model's description, in the daemon's words: a port of
// protocol/shapes.py, which the daemon and the Python SDK share. The client runs them when it
// makes zero-copy views (and for shapes it cannot even send); the daemon checks every request.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trtd/tensor.hpp"

namespace trtd::detail {

inline constexpr std::size_t max_rank = 16;

// What is wrong with `shape` for input `name` (dtype and expected shape of the model, -1 for a
// dynamic dimension, max_batch 0 for none), or nullopt. got_dtype: written before the given
// shape ("got float32[1,65]"); "" writes the shape alone ("got [1,65]").
std::optional<std::string> shape_problem(const std::string& name, const std::string& dtype, const Shape& expected,
                                         const Shape& shape, std::int64_t max_batch, const std::string& model,
                                         const std::string& got_dtype = "");

// Inputs (in order) whose first dimensions (the batch) differ, or nullopt.
std::optional<std::string> batch_problem(const std::vector<std::pair<std::string, Shape>>& shapes);

}  // namespace trtd::detail
