"""Shared argument checks (one place for the error messages every module uses)."""
from __future__ import annotations

import numpy as np

__all__ = ["spacing", "volume", "same_shape", "label_map"]


def spacing(spacing_mm, ndim: int = 3) -> tuple[float, ...]:
    """Normalise a voxel spacing in mm: ``None`` means unit spacing; one strictly positive
    finite value per axis, in axis order.

    Raises
    ------
    ValueError
        Wrong length, non-finite or non-positive entries (the value received is quoted).
    """
    if spacing_mm is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing_mm)
    except TypeError:
        raise ValueError(f"spacing_mm must be a sequence of {ndim} floats (mm), got {spacing_mm!r}") from None
    if len(values) != ndim:
        raise ValueError(f"spacing_mm must have {ndim} entries (one per axis), got {len(values)}: {spacing_mm!r}")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm entries must be finite and > 0 mm, got {spacing_mm!r}")
    return values


def volume(arr, name: str = "volume", ndim: int = 3) -> np.ndarray:
    """Check that ``arr`` is an ``ndim``-D array with finite values; return it as ndarray."""
    arr = np.asarray(arr)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: array is empty, shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: {n_bad} voxel(s) are NaN or infinite")
    return arr


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str = "a", name_b: str = "b") -> None:
    """Raise ValueError quoting both shapes if they differ."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shape mismatch: {name_a} has shape {np.shape(a)}, {name_b} has shape {np.shape(b)}")


def label_map(arr, name: str = "labels", valid=None) -> np.ndarray:
    """Check an integer label map; with ``valid`` (iterable of allowed ids, 0 implied), list
    unknown labels in the error."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int32)
        else:
            raise TypeError(f"{name}: label map must hold integers, got dtype {arr.dtype}")
    if valid is not None:
        present = np.unique(arr)
        allowed = set(int(v) for v in valid) | {0}
        unknown = [int(v) for v in present if int(v) not in allowed]
        if unknown:
            raise ValueError(f"{name}: unknown label id(s) {unknown[:10]}{' ...' if len(unknown) > 10 else ''}; "
                             f"valid ids are 0 (background) and 1..70 (see llseg.anatomy)")
    return arr
