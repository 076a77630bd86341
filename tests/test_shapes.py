"""trtd.protocol's shape checks: the one text the daemon (per request) and the SDK (zero-copy views) refuse with."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from trtd.daemon.core.binding import bind_request
from trtd.protocol import (MAX_RANK, ErrorCode, Infer, InputRef, ModelInfo, OutputRef, ProtocolError, TensorSpec,
                           batch_problem, format_tensor, shape_problem)
from trtd.sdk import InvalidInput
from trtd.sdk.checks import check_shape, zero_copy_shapes


def test_format_tensor():
    assert format_tensor("float32", [-1, 64]) == "float32[?,64]"
    assert format_tensor("", (1, 65)) == "[1,65]"
    assert format_tensor("int8", ()) == "int8[]"


@pytest.mark.parametrize("shape, max_batch, message", [
    ((3, 64), 64, None),
    ((1, 65), 64, "input 'x' expects float32[?,64], got float32[1,65] (dimension 1 must be 64)"),
    ((65, 64), 64, "input 'x' has batch 65; model 'demo' accepts at most 64"),
    ((65, 64), 0, None),
    ((0, 64), 64, "input 'x': dimension 0 is 0; dynamic dimensions must be at least 1"),
    ((1, 64, 1), 64, "input 'x' expects float32[?,64] (rank 2), got float32[1,64,1] (rank 3)"),
])
def test_shape_problem(shape, max_batch, message):
    assert shape_problem("x", "float32", [-1, 64], shape, max_batch, "demo", "float32") == message


def test_without_got_dtype_only_the_shape_is_written():
    assert shape_problem("x", "float32", [-1, 64], (1, 65), 64, "demo") == (
        "input 'x' expects float32[?,64], got [1,65] (dimension 1 must be 64)")


def test_rank_above_max_rank_is_refused_even_when_the_model_says_so():
    spec = [1] * (MAX_RANK + 1)
    assert shape_problem("x", "float32", spec, tuple(spec)) == (
        f"input 'x' expects {format_tensor('float32', spec)} (rank {MAX_RANK + 1}), "
        f"got {format_tensor('', spec)} (rank {MAX_RANK + 1})")
    assert shape_problem("x", "float32", [1] * MAX_RANK, (1,) * MAX_RANK) is None
    info = ModelInfo(name="deep", backend="onnxruntime", state="ready",
                     inputs=[TensorSpec(name="x", dtype="float32", shape=spec)], outputs=[], max_batch=0)
    with pytest.raises(InvalidInput, match=rf"\(rank {MAX_RANK + 1}\)"):
        check_shape(info.inputs[0], spec, info)  # the SDK refuses it as the daemon would


def test_batch_problem():
    assert batch_problem({"a": (2, 3), "b": (2,), "c": ()}) is None
    assert batch_problem({}) is None
    assert batch_problem({"a": (2, 3), "b": (3, 3), "c": (2, 1), "d": (4,)}) == (
        "inputs disagree on the batch dimension (the first): 'a' has 2, 'b' has 3, 'c' has 2, "
        "'d' has 4; give them all the same batch")


def _two_inputs():
    specs = [TensorSpec(name=n, dtype="float32", shape=[-1, 4]) for n in ("a", "b")]
    out = TensorSpec(name="y", dtype="float32", shape=[-1, 4])
    backend = SimpleNamespace(max_batch=8, output_shapes=lambda shapes: {"y": (2, 4)})
    model = SimpleNamespace(name="two", backend=backend, inputs={s.name: (s, np.dtype("float32")) for s in specs},
                            outputs={"y": (out, np.dtype("float32"))})
    info = ModelInfo(name="two", backend="onnxruntime", state="ready", inputs=specs, outputs=[out], max_batch=8)
    return model, info


def _daemon_refusal(model, shapes: dict[str, tuple[int, ...]]) -> str:
    region = SimpleNamespace(name="r", nbytes=1 << 20, address=1 << 30)
    inputs, offset = [], 0
    for name, shape in shapes.items():
        nbytes = 4 * int(np.prod(shape))
        inputs.append(InputRef(name=name, dtype="float32", shape=list(shape), offset=offset, nbytes=nbytes))
        offset += 4096
    req = Infer(client_id=1, model=model.name, region="r", token="t", inputs=inputs,
                outputs=[OutputRef(name="y", offset=offset, nbytes=4096)])
    with pytest.raises(ProtocolError) as e:
        bind_request(req, model, region)
    assert e.value.code == ErrorCode.INVALID_TENSOR
    return e.value.message


@pytest.mark.parametrize("shapes", [
    {"a": (2, 4), "b": (3, 4)},  # the batches disagree
    {"a": (9, 4), "b": (9, 4)},  # above max_batch
    {"a": (2, 0), "b": (2, 4)},  # a fixed dimension
    {"a": (0, 4), "b": (0, 4)},  # a dynamic dimension below 1
])
def test_the_daemon_and_the_sdk_refuse_in_the_same_words(shapes):
    model, info = _two_inputs()
    with pytest.raises(InvalidInput) as e:
        zero_copy_shapes(info, shapes)
    # The daemon writes the request's dtype after "got"; the SDK was given a shape only.
    assert _daemon_refusal(model, shapes) == str(e.value).replace("got [", "got float32[")
