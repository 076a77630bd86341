"""The gate an engine passes before it replaces ONNX Runtime: same outputs on seeded samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from trtd.protocol import ALIGNMENT, align_up
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.backends import Backend, TensorBinding


@dataclass
class Comparison:
    ok: bool
    samples: int
    max_abs_error: float = 0.0
    max_rel_l2: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.samples} samples, max |engine - onnxruntime| {self.max_abs_error:.3g}, "
                f"max relative L2 {self.max_rel_l2:.3g}")
        return text + ("" if self.ok else "; " + "; ".join(self.problems[:3]))


def _sample_shapes(backend: Backend, batch: int) -> dict[str, tuple[int, ...]]:
    return {s.name: tuple(batch if d < 0 else d for d in s.shape) for s in backend.inputs}


def random_array(rng: np.random.Generator, dtype: np.dtype, shape, high: int = 8) -> np.ndarray:
    """Seeded random data for one input tensor, drawn from `rng` (the same seed gives the same
    array): floats from a standard normal, booleans fair, integers from 0..high-1 (valid indices
    for small embedding tables). The comparison gate's inputs, and `trtd bench`'s (high=10)."""
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, high, shape).astype(dtype)


def compare(reference: Backend, candidate_instance, samples: int, atol: float, rtol: float,
            pinning=None, sample_shapes: list[dict[str, tuple[int, ...]]] | None = None,
            inputs: list[dict[str, np.ndarray]] | None = None,
            max_rel_l2: float | None = None) -> Comparison:
    """Run both on the same seeded inputs and compare every output.

    Inputs: `inputs` when given (real samples, e.g. the calibration set); otherwise seeded
    random data shaped by `sample_shapes` in turn (e.g. each profile's opt and min shapes),
    or batch 1, 2, ... up to 4 on the dynamic batch dimension. The test is element-wise
    (atol/rtol), or, with max_rel_l2, the relative L2 error of each output: the meaningful
    test for reduced precision, where single elements may move a lot.
    """
    candidate = candidate_instance.backend
    ref_names = {s.name: s.dtype for s in reference.inputs}, {s.name: s.dtype for s in reference.outputs}
    cand_names = {s.name: s.dtype for s in candidate.inputs}, {s.name: s.dtype for s in candidate.outputs}
    if ref_names != cand_names:
        return Comparison(False, 0, problems=[f"the engine's I/O {cand_names} differs from the ONNX "
                                              f"model's {ref_names}"])
    if reference.max_batch and candidate.max_batch < reference.max_batch:
        return Comparison(False, 0, problems=[
            f"the engine accepts batches up to {candidate.max_batch}, ONNX Runtime serves up to "
            f"{reference.max_batch}: the swap would refuse requests that work now; widen the profile"])
    rng = np.random.default_rng(20261121)
    result = Comparison(True, samples)
    limit = min(filter(None, [reference.max_batch, candidate.max_batch, 4])) if reference.max_batch else 1
    if inputs:
        samples = result.samples = min(samples, len(inputs)) if samples else len(inputs)
    for i in range(samples):
        if inputs:
            sample = inputs[i]
        elif sample_shapes:
            shapes = sample_shapes[i % len(sample_shapes)]
        else:
            shapes = _sample_shapes(reference, 1 + (i % limit) if reference.max_batch else 1)
        if not inputs:
            sample = {s.name: random_array(rng, np.dtype(s.dtype), shapes[s.name]) for s in reference.inputs}
        ref_out = run_once(reference, None, sample, pinning)
        cand_out = run_once(candidate, candidate_instance, sample, pinning)
        for name, expected in ref_out.items():
            got = cand_out[name]
            if got.shape != expected.shape:
                result.ok = False
                result.problems.append(f"output {name!r}: shape {got.shape} instead of {expected.shape}")
                continue
            diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
            result.max_abs_error = max(result.max_abs_error, float(diff.max(initial=0.0)))
            norm = float(np.linalg.norm(expected.astype(np.float64)))
            result.max_rel_l2 = max(result.max_rel_l2, float(np.linalg.norm(diff)) / norm if norm else 0.0)
            if max_rel_l2 is not None:
                rel = float(np.linalg.norm(diff)) / norm if norm else float(np.linalg.norm(diff))
                if not rel <= max_rel_l2:
                    result.ok = False
                    result.problems.append(f"output {name!r} relative L2 {rel:.3g} > {max_rel_l2:g}")
            elif not np.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=False):
                result.ok = False
                result.problems.append(f"output {name!r} differs beyond atol {atol} / rtol {rtol}")
    return result


def run_once(backend: Backend, instance, inputs: dict[str, np.ndarray], pinning) -> dict[str, np.ndarray]:
    """One request through a backend (or a candidate's instance), on a private host buffer."""
    predicted = backend.output_shapes({k: v.shape for k, v in inputs.items()})
    sizes = [(n, a.nbytes) for n, a in inputs.items()]
    sizes += [(s.name, (tensor_nbytes(predicted[s.name], np.dtype(s.dtype).itemsize)
                        if predicted.get(s.name) else max(s.max_nbytes, 1)))
              for s in backend.outputs]
    offsets, total = {}, 0
    for name, nbytes in sizes:
        offsets[name] = total
        total = align_up(total + nbytes, ALIGNMENT)
    buf = np.zeros(total + ALIGNMENT, np.uint8)
    base = align_up(buf.ctypes.data, ALIGNMENT) - buf.ctypes.data
    view = buf[base:base + total]
    address = view.ctypes.data
    bindings_in = []
    for name, array in inputs.items():
        view[offsets[name]:offsets[name] + array.nbytes] = array.reshape(-1).view(np.uint8)
        bindings_in.append(TensorBinding(name, array.dtype, array.shape, address + offsets[name], array.nbytes))
    nbytes_out = dict(sizes[len(inputs):])
    bindings_out = [TensorBinding(s.name, np.dtype(s.dtype), predicted.get(s.name), address + offsets[s.name],
                                  nbytes_out[s.name]) for s in backend.outputs]
    region = SimpleNamespace(address=address, nbytes=total, name="compare", guarded=False)
    try:
        if instance is None:
            shapes = backend.enqueue(None, bindings_in, bindings_out)
        else:
            shapes, _ = instance.run(region, bindings_in, bindings_out)
    finally:
        if pinning is not None:
            pinning.unpin(address)
    outs = {}
    for b in bindings_out:
        shape = tuple(shapes[b.name])
        n = tensor_nbytes(shape, b.dtype.itemsize)
        outs[b.name] = view[offsets[b.name]:offsets[b.name] + n].view(b.dtype).reshape(shape).copy()
    return outs
