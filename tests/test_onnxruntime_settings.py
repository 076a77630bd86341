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
