"""The TorchScript backend on the CPU, through a real daemon (skipped where torch is absent)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (pip install \"trtd[torch]\")")

from daemon_process import serving  # noqa: E402
from trtd.daemon.backends.base import BackendError  # noqa: E402
from trtd.daemon.backends.torch import parse_input_spec  # noqa: E402
from trtd.daemon.builtin.torch_models import builtin_torchscript_path  # noqa: E402
from trtd.sdk import Client, InvalidInput, ModelNotReady  # noqa: E402


@pytest.fixture(scope="module")
def torch_daemon(tmp_path_factory, _model_cache):
    with serving(tmp_path_factory.mktemp("torch"),
                 "[models.resnet]\npath = \"builtin:resnet18\"\nbackend = \"torch\"\nmax_batch = 4\n"
                 "[models.mlp]\npath = \"builtin:demo\"\nbackend = \"torch\"\ninstances = 2\n"
                 "[models.noinputs]\npath = \"builtin:demo\"\nbackend = \"torch\"\n"
                 "inputs = [\"x:-1,63\"]\n") as d:
        yield d


def test_describes_inputs_and_probed_outputs(torch_daemon):
    with Client(torch_daemon.endpoint) as c:
        info = c.describe("resnet")
        assert (info.backend, info.max_batch) == ("torch", 4)
        assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("x", "float32", [-1, 3, 224, 224])]
        assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [("output", "float32", [-1, 5])]


@pytest.mark.parametrize("model, shape", [("resnet", (2, 3, 224, 224)), ("mlp", (3, 64))])
def test_outputs_equal_in_process_torchscript(torch_daemon, model, shape):
    name = {"resnet": "resnet18", "mlp": "demo"}[model]
    module = torch.jit.load(str(builtin_torchscript_path(name))).eval()
    x = np.random.default_rng(7).standard_normal(shape, dtype=np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    with Client(torch_daemon.endpoint) as c:
        np.testing.assert_allclose(c.infer(model, x), expected, rtol=1e-5, atol=1e-5)


def test_wrong_shape_is_refused(torch_daemon):
    with Client(torch_daemon.endpoint) as c:
        with pytest.raises(InvalidInput, match=r"expects float32\[\?,3,224,224\]"):
            c.infer("resnet", np.zeros((1, 3, 224, 225), np.float32))


def test_a_module_that_fails_on_its_declared_inputs_does_not_load(torch_daemon):
    with Client(torch_daemon.endpoint) as c:
        with pytest.raises(ModelNotReady, match="check the model's inputs setting"):
            c.infer("noinputs", np.zeros((1, 63), np.float32))


@pytest.mark.parametrize("text, message", [
    ("x", "NAME:SHAPE"), ("x:a,b", "integers"), ("x:-1,3:complex64", "unknown dtype"),
    ("x:3,-1", "only the first"),
])
def test_input_spec_errors(text, message):
    with pytest.raises(BackendError, match=message):
        parse_input_spec(text)


def test_input_spec():
    spec = parse_input_spec("image:-1,3,224,224:float16")
    assert (spec.name, spec.shape, spec.dtype) == ("image", [-1, 3, 224, 224], "float16")


def _script(tmp_path, name, source):
    """TorchScript of class M in `source` (scripting needs the source in a real file)."""
    import importlib.util

    module_file = tmp_path / f"{name}_module.py"
    module_file.write_text("import torch\n" + source)
    spec = importlib.util.spec_from_file_location(f"{name}_module", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.script(module.M()), str(path))
    return path


def test_outputs_that_change_dtype_or_are_not_tensors_are_refused(tmp_path):
    from daemon_process import serving
    from trtd.sdk import ServerError

    shifty = _script(tmp_path, "shifty", (
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        if bool(x.sum() > 0):\n"
        "            return x.repeat(1, 2).half()\n"
        "        return x\n"))
    listy = _script(tmp_path, "listy", (
        "from typing import List, Tuple\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x) -> Tuple[torch.Tensor, List[torch.Tensor]]:\n"
        "        return x, [x]\n"))
    config = (f"[models.shifty]\npath = \"{shifty}\"\nbackend = \"torch\"\ninputs = [\"x:-1,4\"]\n"
              f"[models.listy]\npath = \"{listy}\"\nbackend = \"torch\"\ninputs = [\"x:-1,4\"]\n"
              "[models.demo]\npath = \"builtin:demo\"\n")
    with serving(tmp_path, config) as d:
        with Client(d.endpoint) as c:
            assert c.infer("shifty", np.zeros((2, 4), np.float32)).shape == (2, 4)
            with pytest.raises(ServerError, match="came back as torch.float16"):
                c.infer("shifty", np.ones((2, 4), np.float32))
            listy_info = c.describe("listy")
            assert listy_info.state == "failed" and "must return a tensor" in listy_info.error
            assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
