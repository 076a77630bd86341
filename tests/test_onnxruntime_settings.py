"""Every ONNX Runtime setting of a model reaches its session, whichever way the model is served.

A model's ONNX file is opened by ONNX Runtime in several ways: served directly (backend
"onnxruntime"), served first while its engine or reduced-precision variant is prepared
(backend "tensorrt", or a `precision`), and the variant or optimized model swapped in later.
`inter_op_threads` once reached only the first (issue 14). The model registry and the swap's
opener (trtd.daemon.running.serving, which the swapper calls) are driven in-process here: the
sessions they open are inspected, no socket needed.
"""

from __future__ import annotations

import pytest

from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.system.cuda import HostPinning
from trtd.daemon.running.registry import ModelRegistry
from trtd.daemon.running.finished import CompletionQueue
from trtd.daemon.running.serving import open_later

pytest.importorskip("onnxruntime")


def _settings(backend) -> tuple[int, int]:
    options = backend._session.get_session_options()
    return options.intra_op_num_threads, options.inter_op_num_threads


@pytest.fixture
def registry():
    return ModelRegistry(CompletionQueue(), HostPinning())


@pytest.mark.parametrize("served", [
    {"backend": "onnxruntime"},                                   # directly
    {"backend": "tensorrt", "engine_builder": "onnxruntime"},     # first, while the engine is built
    {"backend": "onnxruntime", "precision": "fp16"},              # first, while the variant is made
])
def test_the_served_session_has_the_models_thread_settings(registry, served):
    config = ModelConfig(name="m", path="builtin:demo", intra_op_threads=1, inter_op_threads=3, **served)
    model = registry.create(config)
    try:
        assert model.state == "ready", model.error
        assert _settings(model.backend) == (1, 3)
    finally:
        model.backend.close()


@pytest.mark.parametrize("later", [
    ({"backend": "onnxruntime", "precision": "fp16"}, "variant"),          # the FP16 variant
    ({"backend": "tensorrt", "engine_builder": "onnxruntime"}, "engine"),  # ONNX Runtime's optimized model
])
def test_the_swapped_in_session_has_the_models_thread_settings(registry, later):
    served, kind = later
    config = ModelConfig(name="m", path="builtin:demo", intra_op_threads=1, inter_op_threads=3, **served)
    model = registry.create(config)
    try:
        assert model.state == "ready", model.error
        swapped = open_later(config, model.source, model.backend.max_batch, kind)
        try:
            assert _settings(swapped) == (1, 3)
        finally:
            swapped.close()
    finally:
        model.backend.close()


def test_a_model_read_from_a_named_pipe_reports_how_much_has_arrived(tmp_path, monkeypatch, caplog):
    """A slow writer: every PIPE_REPORT_S (0 here: each chunk) the log says how far the read is."""
    import logging
    import os
    import threading

    from trtd.daemon.backends import onnxruntime as ort_backend
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    monkeypatch.setattr(ort_backend, "PIPE_REPORT_S", 0.0)
    monkeypatch.setattr(ort_backend, "_PIPE_CHUNK", 4096)
    pipe = tmp_path / "model.onnx"
    os.mkfifo(pipe)
    data = builtin_model_path("demo").read_bytes()

    def write():
        with open(pipe, "wb") as f:
            for start in range(0, len(data), 4096):
                f.write(data[start:start + 4096])
                f.flush()

    writer = threading.Thread(target=write)
    writer.start()
    with caplog.at_level(logging.INFO, logger="trtd.models"):
        assert ort_backend.read_pipe(pipe) == data
    writer.join()
    lines = [r.getMessage() for r in caplog.records if "read from the pipe" in r.getMessage()]
    assert any("still reading" in line for line in lines)
    assert lines[-1].endswith(" s") and f"{len(data) / 2**20:.1f} MiB" in lines[-1]
