"""Backends the daemon can serve models with; each is an optional extra."""

from __future__ import annotations

from .base import Backend, BackendError, OutputTooLarge, TensorBinding

BACKENDS = ("onnxruntime",)


def create_backend(kind: str, path: str, max_batch: int = 0, intra_op_threads: int = 0,
                   inter_op_threads: int = 0) -> Backend:
    if kind == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, max_batch=max_batch, intra_op_threads=intra_op_threads,
                                  inter_op_threads=inter_op_threads)
    raise BackendError(f"unknown backend {kind!r}; available: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendError", "OutputTooLarge", "TensorBinding", "create_backend"]
