"""Backends the daemon can serve models with; each is an optional extra. Which one serves a
configured model, and how it is opened, is decided in trtd.daemon.running.serving."""

from __future__ import annotations

from trtd.daemon.backends.base import Backend, BackendError, OutputTooLarge, TensorBinding

BACKENDS = ("onnxruntime", "torch", "tensorrt")

__all__ = ["BACKENDS", "Backend", "BackendError", "OutputTooLarge", "TensorBinding"]
