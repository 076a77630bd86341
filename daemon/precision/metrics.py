"""Accuracy metrics of a candidate output against a reference output.

Masks: Dice and the Hausdorff distance (HD, and HD95 over surface distances),
in 2-D or 3-D with voxel spacing, computed from exact Euclidean distance
transforms (scipy.ndimage, a well-kept library) between the two mask surfaces.
"""

from __future__ import annotations

import math

import numpy as np


class MetricError(ValueError):
    pass


def value_metrics(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    g = np.asarray(got, np.float64).ravel()
    r = np.asarray(ref, np.float64).ravel()
    diff = np.abs(g - r)
    norm_r, norm_g = np.linalg.norm(r), np.linalg.norm(g)
    return {
        "max_abs": float(diff.max(initial=0.0)),
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "rel_l2": float(np.linalg.norm(g - r) / norm_r) if norm_r else float(np.linalg.norm(g)),
        "cosine": float(g @ r / (norm_g * norm_r)) if norm_g and norm_r else float(norm_g == norm_r),
    }


def top1_agreement(got: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of rows (samples) whose arg-max class agrees; outputs shaped [N, classes]."""
    return float(np.mean(np.argmax(got.reshape(got.shape[0], -1), axis=1) ==
                         np.argmax(ref.reshape(ref.shape[0], -1), axis=1)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def hausdorff(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...] | None = None) -> tuple[float, float]:
    """(HD, HD95) between two binary masks of one 2-D or 3-D image, in spacing units."""
    from scipy import ndimage

    a, b = np.asarray(a), np.asarray(b)
    for name, m in (("candidate", a), ("reference", b)):
        if m.dtype != bool and not np.isin(np.unique(m), (0, 1)).all():
            raise MetricError(f"the {name} mask is not binary (values {np.unique(m)[:5]}...): give "
                              f"--mask-threshold to binarise probability outputs")
    a, b = a.astype(bool), b.astype(bool)
    if a.ndim not in (2, 3) or a.shape != b.shape:
        raise MetricError(f"Hausdorff distance needs two 2-D or 3-D masks of one shape, got {a.shape} "
                          f"and {b.shape}")
    spacing = tuple(spacing or (1.0,) * a.ndim)
    if len(spacing) != a.ndim:
        raise MetricError(f"spacing {spacing} does not match a {a.ndim}-D mask")
    if not a.any() and not b.any():
        return 0.0, 0.0
    if not a.any() or not b.any():
        return math.inf, math.inf
    sa, sb = _surface(a), _surface(b)
    # Distance from every voxel to the nearest surface voxel of the other mask.
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    distances = np.concatenate([to_b[sa], to_a[sb]])
    return float(distances.max()), float(np.percentile(distances, 95))


def mask_metrics(got: np.ndarray, ref: np.ndarray, threshold: float,
                 spacing: tuple[float, ...] | None) -> dict[str, float]:
    """Per-image Dice / HD / HD95 (mean Dice, worst HD) over a batch of [N, (C,) *spatial] maps."""
    g, r = got > threshold, ref > threshold
    images_g = g.reshape(-1, *g.shape[-3:]) if g.ndim >= 4 else g.reshape(-1, *g.shape[-2:])
    images_r = r.reshape(images_g.shape)
    dices, hds, hd95s = [], [], []
    for a, b in zip(images_g, images_r):
        dices.append(dice(a, b))
        hd, hd95 = hausdorff(a, b, spacing)
        hds.append(hd)
        hd95s.append(hd95)
    return {"dice": float(np.mean(dices)), "hd": float(max(hds)), "hd95": float(max(hd95s))}
