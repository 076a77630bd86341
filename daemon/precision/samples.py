"""Sample sets for calibration and validation: a .npz file or a folder of .npy files.

A .npz maps input names to arrays whose first axis indexes samples (or whole
batches, when it matches the model's batch). A folder holds NAME.npy files of
the same layout, or one subfolder per sample with NAME.npy inside. Every
problem (a missing input, a wrong dtype or shape, NaN/Inf, no samples) is an
error naming the file and the input.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class SampleError(ValueError):
    pass


def load_samples(path: str | Path, inputs: dict[str, tuple[str, list[int]]]) -> list[dict[str, np.ndarray]]:
    """Samples as a list of {input name: array shaped for the model (batch 1 where dynamic)}.

    inputs: name -> (dtype, shape with -1 for dynamic dimensions).
    """
    path = Path(path)
    if path.is_dir():
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        if subdirs:
            return [_one_sample(d, {n: np.load(d / f"{n}.npy") for n in inputs if (d / f"{n}.npy").exists()},
                                inputs) for d in subdirs]
        arrays = {p.stem: np.load(p) for p in sorted(path.glob("*.npy"))}
    elif path.suffix == ".npz":
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    elif not path.exists():
        raise SampleError(f"sample set {path} does not exist")
    else:
        raise SampleError(f"{path}: give a .npz file or a folder of .npy files")
    return _split(path, arrays, inputs)


def _check(where: str, name: str, array: np.ndarray, dtype: str, shape: list[int], batched: bool) -> None:
    if array.dtype != np.dtype(dtype):
        raise SampleError(f"{where}: input {name!r} is {array.dtype}, the model expects {dtype}")
    expect = shape[1:] if batched else shape
    got = list(array.shape[1:]) if batched else list(array.shape)
    if len(got) != len(expect) or any(e >= 0 and e != g for e, g in zip(expect, got)):
        raise SampleError(f"{where}: input {name!r} has per-sample shape {got}, the model expects "
                          f"{['?' if d < 0 else d for d in expect]}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise SampleError(f"{where}: input {name!r} contains NaN or Inf; calibration and validation "
                          f"need finite samples")


def _split(path: Path, arrays: dict[str, np.ndarray], inputs) -> list[dict[str, np.ndarray]]:
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise SampleError(f"{path}: no data for input(s) {', '.join(missing)} (it has: "
                          f"{', '.join(arrays) or 'nothing'}); name the arrays after the model's inputs")
    counts = set()
    for name, (dtype, shape) in inputs.items():
        _check(str(path), name, arrays[name], dtype, shape, batched=True)
        counts.add(arrays[name].shape[0])
    if len(counts) != 1:
        raise SampleError(f"{path}: inputs hold different numbers of samples: {sorted(counts)}")
    (count,) = counts
    if count == 0:
        raise SampleError(f"{path}: the sample set is empty")
    batch_dynamic = {n: shape and shape[0] < 0 for n, (_, shape) in inputs.items()}
    return [{n: (arrays[n][i:i + 1] if batch_dynamic[n] or inputs[n][1][0] == 1 else arrays[n][i])
             for n in inputs} for i in range(count)]


def _one_sample(where: Path, arrays: dict[str, np.ndarray], inputs) -> dict[str, np.ndarray]:
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise SampleError(f"{where}: no {', '.join(m + '.npy' for m in missing)}")
    for name, (dtype, shape) in inputs.items():
        _check(str(where), name, arrays[name], dtype, shape, batched=False)
    return arrays


def samples_sha256(samples: list[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            a = np.ascontiguousarray(sample[name])
            digest.update(f"{name}:{a.dtype}:{a.shape}".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()


def random_samples(inputs, count: int, seed: int = 0, batch: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        sample = {}
        for name, (dtype, shape) in inputs.items():
            dims = [batch if d < 0 else d for d in shape]
            dt = np.dtype(dtype)
            sample[name] = (rng.standard_normal(dims).astype(dt) if dt.kind == "f"
                            else rng.integers(0, 8, dims).astype(dt))
        out.append(sample)
    return out
