"""ONNX models that take measurable time: to load (many nodes to optimize) or to run (a chain of
matrix products). Real models for real ONNX Runtime, built in memory with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def slow_to_run(path: Path, layers: int = 48, width: int = 768) -> Path:
    """x float32[-1, width] -> y float32[-1, width] through `layers` MatMul+Tanh."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"t{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "slow_run", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], inits)
    return _save(graph, path)


def slow_to_load(path: Path, nodes_count: int = 2500) -> Path:
    """x float32[-1, 4] -> y: thousands of tiny nodes, which ONNX Runtime optimizes at load."""
    nodes, inits, prev = [], [], "x"
    for i in range(nodes_count):
        inits.append(numpy_helper.from_array(np.full((4,), 1e-4 * (i % 7), np.float32), f"c{i}"))
        out = "y" if i == nodes_count - 1 else f"a{i}"
        nodes.append(helper.make_node("Add" if i % 2 else "Mul", [prev, f"c{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "slow_load", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return _save(graph, path)


def held(path: Path, width: int = 16) -> Path:
    """x float32[-1, width], go int32[1] -> y = tanh(x), but only once `go` is nonzero.

    A Loop polls `go` on every iteration. The daemon binds inputs where they lie in the
    client's region (no copy), so a request runs until the test writes 1 into its `go` slot:
    "in flight" for exactly as long as the test needs, on any machine. Sent with go = 1 it runs
    one iteration. While held it keeps one CPU thread busy (ONNX has no blocking wait)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["v_in"], ["v_out"]),
         helper.make_node("ReduceMax", ["go"], ["g"], keepdims=0),
         helper.make_node("Equal", ["g", "zero"], ["closed"])],  # keep polling while go == 0
        "poll",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("closed", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor("zero", TensorProto.INT32, [], [0])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["", "", "x"], ["v"], body=body),  # no trip limit: until go
         helper.make_node("Tanh", ["v"], ["y"])],
        "held",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width]),
         helper.make_tensor_value_info("go", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])])
    return _save(graph, path)
