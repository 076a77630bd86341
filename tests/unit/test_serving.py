"""plan_serving in-process: the one function that decides how a configured model is served.

Each row is a kind of configuration and the plan it must get (the first backend, what replaces
it later, the file each opens). The config is compared with a copy taken before: the decision
once changed `config.inputs` as a side effect (issue 14), and a reload compares configs.
"""

from __future__ import annotations

import copy
import os

import pytest

from trtd.daemon.backends import BackendError
from trtd.daemon.builtin.onnx_models import DEFAULT_MAX_BATCH
from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.running.serving import plan_serving

pytest.importorskip("onnx")


def _file(tmp_path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(b"not read by plan_serving")
    os.chmod(path, 0o644)
    return str(path)


@pytest.mark.parametrize("backend, precision, first, later", [
    ("onnxruntime", "", "onnxruntime", "none"),         # served as it is
    ("onnxruntime", "fp16", "onnxruntime", "variant"),  # FP32 first, the FP16 variant later
    ("tensorrt", "", "onnxruntime", "engine"),          # ONNX Runtime first, the engine later
])
def test_an_onnx_file_is_planned_by_backend_and_precision(tmp_path, backend, precision, first, later):
    path = _file(tmp_path, "m.onnx")
    config = ModelConfig(name="m", path=path, backend=backend, precision=precision, max_batch=8)
    before = copy.deepcopy(config)
    plan = plan_serving(config)
    assert (plan.first, plan.later, plan.path, plan.max_batch) == (first, later, path, 8)
    assert plan.source == (path if later != "none" else "")
    assert config == before


@pytest.mark.parametrize("name, backend", [("engine.plan", "tensorrt"), ("m.pt", "torch")])
def test_an_engine_or_torchscript_file_is_served_by_its_backend_alone(tmp_path, name, backend):
    path = _file(tmp_path, name)
    config = ModelConfig(name="m", path=path, backend=backend, inputs=["x:-1,4:float32"])
    plan = plan_serving(config)
    assert (plan.first, plan.later, plan.source, plan.path) == (backend, "none", "", path)
    assert plan.torch_inputs == ("x:-1,4:float32",)


def test_a_builtin_onnx_model_is_generated_and_gets_its_default_max_batch():
    config = ModelConfig(name="d", path="builtin:demo", backend="tensorrt")
    before = copy.deepcopy(config)
    plan = plan_serving(config)
    assert plan.path.endswith(".onnx") and os.path.isfile(plan.path)
    assert (plan.first, plan.later, plan.source) == ("onnxruntime", "engine", plan.path)
    assert plan.max_batch == DEFAULT_MAX_BATCH["demo"] and config.max_batch == 0
    assert config == before


def test_a_builtin_torchscript_model_brings_its_inputs_in_the_plan_not_the_config():
    pytest.importorskip("torch")
    from trtd.daemon.builtin.torch_models import BUILTIN_TORCH_INPUTS

    config = ModelConfig(name="t", path="builtin:demo", backend="torch")
    before = copy.deepcopy(config)
    plan = plan_serving(config)
    assert plan.first == "torch" and plan.path.endswith(".pt") and os.path.isfile(plan.path)
    assert plan.torch_inputs == tuple(BUILTIN_TORCH_INPUTS["demo"])
    assert config == before and config.inputs == []


@pytest.mark.parametrize("config, words", [
    (ModelConfig(name="m", path="m.onnx", backend="onnxrt"), "unknown backend 'onnxrt'"),
    (ModelConfig(name="m", path="/nonexistent/m.onnx"), "does not exist"),
])
def test_a_model_that_cannot_be_served_is_a_backend_error_that_says_why(config, words):
    with pytest.raises(BackendError, match=words):
        plan_serving(config)
