"""Models whose declarations are hostile or absurd load as failed; the daemon keeps serving.

A model that declares a dimension of 2**62 used to be served: its largest input size no longer
fit msgpack's integers, so every unfiltered `models` request answered INTERNAL (`trtd demo`
failed for everyone) and its `load` reply was never sent (issue 17.4). It is now refused at
load with the tensor, its shape and its size, and everyone else keeps being answered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon_process import start_daemon
from trtd.sdk import Client, LoadFailed


def _absurd(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2**62])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2**62])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "absurd", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def daemon(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    yield d
    assert d.stop() == 0, d.log()


def test_a_model_with_an_absurd_dimension_is_refused_at_load_and_nothing_else_breaks(daemon, tmp_path):
    path = _absurd(tmp_path / "absurd.onnx")
    with Client(daemon.endpoint) as c:
        with pytest.raises(LoadFailed) as e:
            c.load("absurd", str(path))
        assert "input 'x'" in str(e.value) and "4611686018427387904" in str(e.value)
        assert [m.name for m in c.models()] == ["demo"]  # listing every model still works
        assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
    assert daemon.alive()


def test_a_configured_absurd_model_is_failed_in_status_and_the_rest_serve(tmp_path):
    path = _absurd(tmp_path / "absurd.onnx")
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo", "--model", f"absurd={path}", name="c")
    try:
        with Client(d.endpoint) as c:
            states = {s.name: (s.state, s.error) for s in c.status().models}
            assert states["absurd"][0] == "failed" and "more than any region can hold" in states["absurd"][1]
            assert {m.name: m.state for m in c.models(wait=False)} == {"demo": "ready", "absurd": "failed"}
            assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
    finally:
        assert d.stop() == 0, d.log()
