"""Shared argument checks: one helper per kind of check, one wording of each error.

Public entry points call these once on what they receive; inner functions trust their
callers. Volumes are ``(X, Y, Z)`` arrays in RAS+ (``llseg.io``); boxes are ``(ndim, 2)``
integer arrays of half-open ``[lo, hi)`` voxel indices (``llseg.boxes``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["spacing", "volume", "same_shape", "label_ids", "label_map", "mask", "box", "ratio_range"]

#: Largest region id (``llseg.anatomy.N_REGIONS``; kept here so this module imports nothing).
_MAX_LABEL = 70


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
    """Check that ``arr`` is a non-empty ``ndim``-D array with finite values; return it as ndarray."""
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


def _ids_text(ids) -> str:
    shown = ", ".join(str(int(v)) for v in ids[:10])
    return shown + (" ..." if len(ids) > 10 else "")


def label_ids(arr, name: str = "labels", valid=None) -> np.ndarray:
    """Check that a label map holds only known region ids; return it as ndarray.

    Parameters
    ----------
    arr : ndarray of int (or of integral floats)
        Label map, any shape.
    name : str
        Argument or file name quoted in the error.
    valid : iterable of int, optional
        Allowed region ids (0, background, is always allowed); default 1..70 (``llseg.anatomy``).

    Raises
    ------
    ValueError
        Negative ids, or ids outside ``valid`` (up to ten listed).
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        return arr
    if valid is None:
        if arr.min() >= 0 and arr.max() <= _MAX_LABEL:               # the common case: one pass each
            return arr
        bad = np.unique(arr[(arr < 0) | (arr > _MAX_LABEL)])
        allowed_text = f"1..{_MAX_LABEL} (see llseg.anatomy)"
    else:
        allowed = set(int(v) for v in valid) | {0}
        bad = np.array([v for v in np.unique(arr) if v not in allowed])
        allowed_text = (f"1..{_MAX_LABEL} (see llseg.anatomy)" if allowed == set(range(_MAX_LABEL + 1))
                        else _ids_text(sorted(allowed - {0})))
    if bad.size == 0:
        return arr
    negative = bad[bad < 0]
    kind, ids = ("negative", negative) if negative.size else ("unknown", bad)
    raise ValueError(f"{name}: {kind} label id(s) {_ids_text(ids)}; valid ids are 0 (background) and {allowed_text}")


def label_map(arr, name: str = "labels", valid=None) -> np.ndarray:
    """Check an integer label map; integral floats are converted to int32. With ``valid``
    (iterable of allowed ids, 0 implied), ids are checked as in :func:`label_ids`.

    Raises
    ------
    TypeError
        Non-integer values.
    ValueError
        Unknown ids (only with ``valid``).
    """
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int32)
        else:
            raise TypeError(f"{name}: label map must hold integers, got dtype {arr.dtype}")
    if valid is not None:
        label_ids(arr, name, valid)
    return arr


def mask(arr, name: str = "mask", *, binary: bool = False) -> np.ndarray:
    """Check a 3-D foreground mask and return it as bool.

    Parameters
    ----------
    arr : (X, Y, Z) ndarray of bool or int
        Non-zero voxels are foreground.
    name : str
        Argument name quoted in the error.
    binary : bool, optional
        Accept integers only if they are 0 or 1 (metrics, where a label map passed by
        mistake must not count as a mask).

    Raises
    ------
    TypeError
        Neither bool nor integer (or, with ``binary``, integers other than 0/1).
    ValueError
        Not 3-D or empty.
    """
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return volume(arr, name)
    if binary:
        if np.issubdtype(arr.dtype, np.integer) and volume(arr, name).min() >= 0 and arr.max() <= 1:
            return arr.astype(bool)
        raise TypeError(f"{name}: expected a bool mask (or integers 0/1), got dtype {arr.dtype}; "
                        f"build one with e.g. labels == k")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected a bool or integer mask, got dtype {arr.dtype}")
    return volume(arr, name) != 0


def box(b, name: str = "box", *, ndim: int | None = None, shape=None, nonempty: bool = False) -> np.ndarray:
    """Check a box and return it as an int64 ``(ndim, 2)`` array (integral floats accepted).

    Parameters
    ----------
    b : (ndim, 2) array of int
        One row per axis, columns ``[lo, hi)`` in voxels, ``lo <= hi``.
    name : str
        Argument name quoted in the error.
    ndim : int, optional
        Required number of axes (rows).
    shape : tuple of int, optional
        The box must lie inside ``[0, shape)``.
    nonempty : bool, optional
        Require ``lo < hi`` on every axis.

    Raises
    ------
    TypeError
        Non-numeric or non-integral entries.
    ValueError
        Wrong shape, ``lo > hi``, an empty axis (``nonempty``) or a box outside ``shape``.
    """
    arr = np.asarray(b)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (ndim, 2) = rows per axis, columns [lo, hi), got shape "
                         f"{arr.shape}: {b!r}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{name}: expected integer voxel indices, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise TypeError(f"{name}: expected integer voxel indices, got {arr.tolist()}")
    out = arr.astype(np.int64)
    if np.any(out[:, 1] < out[:, 0]):
        raise ValueError(f"{name}: every row needs lo <= hi, got {out.tolist()}")
    if ndim is not None and out.shape != (ndim, 2):
        raise ValueError(f"{name}: expected shape ({ndim}, 2) (X, Y, Z rows), got {out.shape}")
    if nonempty and np.any(out[:, 1] <= out[:, 0]):
        raise ValueError(f"{name}: empty along an axis (need lo < hi), got {out.tolist()}")
    if shape is not None and (np.any(out[:, 0] < 0) or np.any(out[:, 1] > np.asarray(shape))):
        raise ValueError(f"{name} {out.tolist()} does not lie inside the image of shape {tuple(shape)}")
    return out


def ratio_range(value) -> tuple[float, float]:
    """Check a box enlargement ratio range ``(low, high)`` with ``1 <= low <= high``, both finite."""
    try:
        lo, hi = (float(r) for r in value)
    except (TypeError, ValueError):
        raise ValueError(f"ratio_range must be (low, high), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 1.0 <= lo <= hi):
        raise ValueError(f"ratio_range must satisfy 1 <= low <= high (finite), got {value!r}")
    return lo, hi
