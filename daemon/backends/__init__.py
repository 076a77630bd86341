"""Backends the daemon can serve models with; each is an optional extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtd.daemon.backends.base import Backend, BackendError, OutputTooLarge, TensorBinding

if TYPE_CHECKING:
    from trtd.daemon.config.settings import ModelConfig

BACKENDS = ("onnxruntime", "torch", "tensorrt")


def create_backend(config: "ModelConfig", path: str, max_batch: int) -> Backend:
    """The backend for a model, on its configured device; BackendError if it cannot load."""
    if config.backend == "onnxruntime":
        if config.device >= 0:
            raise BackendError(
                f"model '{config.name}': the onnxruntime backend runs on the CPU (device = -1); "
                f"serve GPU models with the torch or tensorrt backend")
        from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.for_model(config, path, max_batch)
    if config.backend == "torch":
        from trtd.daemon.backends.torch import TorchBackend

        return TorchBackend(path, inputs=config.inputs, max_batch=max_batch,
                            device=config.device if config.device >= 0 else None)
    if config.backend == "tensorrt":
        from trtd.daemon.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, device=config.device if config.device >= 0 else None,
                               max_batch=max_batch, allow_host_code=config.allow_engine_host_code,
                               plugins=config.plugins)
    from trtd.daemon.config.settings import did_you_mean

    raise BackendError(f"unknown backend {config.backend!r}{did_you_mean(config.backend, BACKENDS)} "
                       f"(available: {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "Backend", "BackendError", "OutputTooLarge", "TensorBinding", "create_backend"]
