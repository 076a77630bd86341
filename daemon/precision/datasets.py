"""Synthetic tasks for the demonstration models: generated with numpy from a seed.

The trained models (bench/models/) only make accuracy figures meaningful if
their inputs come from the distribution they were trained on, so training,
calibration and test sets all come from these generators (different seeds).
Random-weight models give near-constant outputs, and meaningless Dice or
Hausdorff figures.
"""

from __future__ import annotations

import numpy as np

SHAPE_CLASSES = ("disc", "square", "cross", "ring")


def shapes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 [n,1,size,size] of one shape each (random place, size, contrast, noise), labels int64 [n]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.empty((n, 1, size, size), np.float32)
    labels = rng.integers(0, len(SHAPE_CLASSES), n)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.15, size * 0.3)
        dy, dx = yy - cy, xx - cx
        if label == 0:
            mask = dy ** 2 + dx ** 2 <= r ** 2
        elif label == 1:
            mask = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
        elif label == 2:
            mask = ((np.abs(dy) <= r * 0.25) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.25) & (np.abs(dy) <= r))
        else:
            d = np.sqrt(dy ** 2 + dx ** 2)
            mask = (d <= r) & (d >= r * 0.6)
        images[i, 0] = mask * rng.uniform(0.6, 1.4) + rng.normal(0, 0.3, (size, size))
    return images, labels.astype(np.int64)


def spheres(n: int, seed: int, shape: tuple[int, int, int] = (32, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Noisy volumes float32 [n,1,*shape] with 1-3 bright spheres, and their masks float32 [n,1,*shape]."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    volumes = np.empty((n, 1, *shape), np.float32)
    masks = np.zeros((n, 1, *shape), np.float32)
    for i in range(n):
        mask = np.zeros(shape, bool)
        for _ in range(rng.integers(1, 4)):
            c = rng.uniform([6, 12, 12], [shape[0] - 6, shape[1] - 12, shape[2] - 12])
            r = rng.uniform(3.5, 7.0)
            mask |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r ** 2
        masks[i, 0] = mask
        volumes[i, 0] = mask * rng.uniform(0.8, 1.5) + rng.normal(0, 0.45, shape)
    return volumes, masks
