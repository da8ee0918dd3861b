"""Axis-aligned bounding boxes on voxel grids: find, scale, clip and enlarge (paper 2.2.2).

A *box* is an integer ndarray of shape ``(3, 2)``: one row per axis in the volume's
``(X, Y, Z)`` order (RAS+), columns ``[lo, hi)`` as half-open voxel indices, so
``image[box_slices(box)]`` is the crop and ``box_size(box) = hi - lo``. Every function also
works for other dimensionalities (``(ndim, 2)`` boxes). Functions return new arrays and never
modify their inputs.

Stage 1 (``llseg.stage1``) turns its low-resolution prediction into one box per region and
maps it to the study grid with :func:`scale_box`; stage 2 (``llseg.stage2``) crops at boxes
enlarged by :func:`random_enlargement` (training) and :func:`tta_boxes` (test time).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import _validate

__all__ = [
    "bounding_box",
    "box_slices",
    "box_size",
    "clip_box",
    "union_box",
    "scale_box",
    "enlarge_box",
    "random_enlargement",
    "tta_boxes",
]

# Products such as 3 * (0.1 / 0.05) or (1.8 - 1) / 2 * 10 miss the exact integer by ~1e-15;
# values this close to an integer are taken as that integer before floor/ceil, so that float
# noise never grows a box by a voxel.
_SNAP = 1e-6


# --------------------------------------------------------------------------- helpers


def _as_shape(shape, ndim: int, name: str = "shape") -> np.ndarray:
    try:
        arr = np.array([int(s) for s in shape], dtype=np.int64)
    except TypeError:
        raise ValueError(f"{name}: expected {ndim} ints, got {shape!r}") from None
    if arr.size != ndim or np.any(arr < 1):
        raise ValueError(f"{name}: expected {ndim} positive ints (one per box axis), got {tuple(shape)!r}")
    return arr


def _per_axis(value, ndim: int, name: str) -> np.ndarray:
    """A scalar or one value per axis, as a float array of length ``ndim``."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(ndim, float(arr))
    if arr.shape != (ndim,):
        raise ValueError(f"{name}: expected a scalar or {ndim} values (one per axis), got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite, got {value!r}")
    return arr


def _floor(v: np.ndarray) -> np.ndarray:
    r = np.round(v)
    return np.where(np.abs(v - r) < _SNAP, r, np.floor(v)).astype(np.int64)


def _ceil(v: np.ndarray) -> np.ndarray:
    r = np.round(v)
    return np.where(np.abs(v - r) < _SNAP, r, np.ceil(v)).astype(np.int64)


# --------------------------------------------------------------------------- basic boxes


def bounding_box(mask) -> np.ndarray | None:
    """Tight bounding box of the non-zero voxels of a mask.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool or int
        Non-zero voxels are foreground. Any number of dimensions is accepted.

    Returns
    -------
    (ndim, 2) ndarray of int64 or None
        ``[lo, hi)`` per axis; ``None`` if the mask is empty (no foreground voxel).

    Raises
    ------
    TypeError
        If ``mask`` is neither bool nor integer.
    ValueError
        If ``mask`` is 0-dimensional.
    """
    arr = np.asarray(mask)
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"mask: expected a bool or integer array, got dtype {arr.dtype}")
    if arr.ndim < 1:
        raise ValueError(f"mask: expected an array with >= 1 dimension, got shape {arr.shape}")
    found = ndimage.find_objects((arr != 0).view(np.uint8), max_label=1)
    if not found or found[0] is None:
        return None
    return np.array([[s.start, s.stop] for s in found[0]], dtype=np.int64)


def box_slices(box) -> tuple[slice, ...]:
    """The box as a tuple of slices, one per axis: ``image[box_slices(box)]`` is the crop."""
    b = _validate.box(box)
    return tuple(slice(int(lo), int(hi)) for lo, hi in b)


def box_size(box) -> np.ndarray:
    """Edge lengths ``hi - lo`` per axis, in voxels, as an int64 array of length ``ndim``."""
    b = _validate.box(box)
    return b[:, 1] - b[:, 0]


def clip_box(box, shape) -> np.ndarray:
    """Clip a box to the image ``[0, shape)``.

    Parameters
    ----------
    box : (ndim, 2) array of int
    shape : tuple of ndim int
        Image shape, e.g. ``(X, Y, Z)``.

    Returns
    -------
    (ndim, 2) ndarray of int64
        The intersection with the image. A box entirely outside the image becomes empty
        along that axis (``lo == hi`` at the nearest image edge).
    """
    b = _validate.box(box)
    sh = _as_shape(shape, b.shape[0])
    return np.clip(b, 0, sh[:, None])


def union_box(boxes) -> np.ndarray:
    """Smallest box containing all ``boxes`` (an iterable of ``(ndim, 2)`` boxes).

    Raises
    ------
    ValueError
        If ``boxes`` is empty or the boxes have different dimensionalities.
    """
    arrs = [_validate.box(b, f"boxes[{i}]") for i, b in enumerate(boxes)]
    if not arrs:
        raise ValueError("union_box: boxes is empty")
    ndims = {a.shape[0] for a in arrs}
    if len(ndims) != 1:
        raise ValueError(f"union_box: boxes have different dimensionalities {sorted(ndims)}")
    stack = np.stack(arrs)
    return np.stack([stack[:, :, 0].min(axis=0), stack[:, :, 1].max(axis=0)], axis=1)


def scale_box(box, zoom) -> np.ndarray:
    """Map a box from one voxel grid to another whose voxels are ``zoom`` times smaller.

    Parameters
    ----------
    box : (ndim, 2) array of int
        Box on the source grid.
    zoom : float or sequence of ndim float
        Target voxels per source voxel along each axis, i.e. ``source_spacing /
        target_spacing``: a box found on a grid downsampled by ``factor`` maps back to the
        full grid with ``zoom = factor``; ``zoom = 1 / factor`` maps down.

    Returns
    -------
    (ndim, 2) ndarray of int64
        ``[floor(lo * zoom), ceil(hi * zoom))`` per axis, so the result covers every target
        voxel that overlaps the source box (it still contains the region). Not clipped: use
        :func:`clip_box` when the target grid's shape is not an exact multiple.

    Raises
    ------
    ValueError
        Non-positive or non-finite ``zoom``, or a length that does not match the box.

    Notes
    -----
    Both grids are assumed to share the outer corner of voxel 0 (voxel ``i`` covers
    ``[i, i + 1)`` source units), which is the geometry of resampling by spacing
    (``scipy.ndimage.zoom(..., grid_mode=True)``, block averaging). Values within 1e-6 of an
    integer are snapped before flooring or ceiling so that float noise in ``zoom`` does not
    add a voxel.
    """
    b = _validate.box(box)
    z = _per_axis(zoom, b.shape[0], "zoom")
    if np.any(z <= 0):
        raise ValueError(f"zoom must be > 0 on every axis, got {zoom!r}")
    return np.stack([_floor(b[:, 0] * z), _ceil(b[:, 1] * z)], axis=1)


# --------------------------------------------------------------------------- enlargement


def enlarge_box(box, ratios_lo, ratios_hi, shape) -> np.ndarray:
    """Move each edge of a box outward by its own ratio of the box size (paper 2.2.2).

    Parameters
    ----------
    box : (ndim, 2) array of int
        Box to enlarge, e.g. the tight box of a muscle.
    ratios_lo, ratios_hi : float or sequence of ndim float
        Enlargement ratio (>= 1) of the lower and upper edge of each axis.
    shape : tuple of ndim int
        Image shape; the result is clipped to it.

    Returns
    -------
    (ndim, 2) ndarray of int64
        ``lo' = floor(lo - (r_lo - 1) / 2 * size)``, ``hi' = ceil(hi + (r_hi - 1) / 2 *
        size)``, clipped to ``[0, shape)``. Ratios ``(r, r)`` scale the box by ``r`` about its
        centre; ``(1.0, 1.8)`` keeps ``lo`` and moves the centre up. The result always
        contains the part of the input box that lies inside the image.

    Raises
    ------
    ValueError
        Ratios below 1 or of the wrong length, bad ``shape``.

    Notes
    -----
    The paper enlarges the tight box "with a ratio randomly chosen from a range (e.g., 1.0
    to 1.8) along each dimension", sampling "the two edges ... separately" so that the
    centre moves while the muscle stays inside. Here a ratio ``r`` on one edge contributes
    half of the growth a symmetric enlargement by ``r`` would, so that both readings agree
    when the two edge ratios are equal. Rounding is outward (floor/ceil).
    """
    b = _validate.box(box)
    ndim = b.shape[0]
    r_lo = _per_axis(ratios_lo, ndim, "ratios_lo")
    r_hi = _per_axis(ratios_hi, ndim, "ratios_hi")
    if np.any(r_lo < 1) or np.any(r_hi < 1):
        raise ValueError(f"enlargement ratios must be >= 1 (the box may only grow), got ratios_lo={ratios_lo!r}, "
                         f"ratios_hi={ratios_hi!r}")
    sh = _as_shape(shape, ndim)
    size = (b[:, 1] - b[:, 0]).astype(float)
    lo = _floor(b[:, 0] - (r_lo - 1.0) / 2.0 * size)
    hi = _ceil(b[:, 1] + (r_hi - 1.0) / 2.0 * size)
    return np.clip(np.stack([lo, hi], axis=1), 0, sh[:, None])


def random_enlargement(box, *, ratio_range=(1.0, 1.8), rng: np.random.Generator, shape) -> np.ndarray:
    """Enlarge a box with independent uniform ratios on each of its edges (paper 2.2.2).

    Parameters
    ----------
    box : (ndim, 2) array of int
        Tight box of the target region.
    ratio_range : (float, float), optional
        ``(low, high)`` with ``1 <= low <= high``; each of the ``2 * ndim`` edge ratios is
        drawn from ``U(low, high)``. The paper's example range is 1.0 to 1.8.
    rng : numpy.random.Generator
        Source of randomness; one ``uniform(size=(ndim, 2))`` draw per call.
    shape : tuple of ndim int
        Image shape; the result is clipped to it.

    Returns
    -------
    (ndim, 2) ndarray of int64
        See :func:`enlarge_box`: it contains the (in-image part of the) input box.
    """
    low, high = _validate.ratio_range(ratio_range)
    b = _validate.box(box)
    ratios = rng.uniform(low, high, size=(b.shape[0], 2))   # (ndim, [lo edge, hi edge])
    return enlarge_box(b, ratios[:, 0], ratios[:, 1], shape)


def tta_boxes(box, *, n: int = 6, ratio_range=(1.0, 1.8), seed=0, shape) -> list[np.ndarray]:
    """The paper's test-time boxes: ``n`` random enlargements of a (stage-1) box.

    Parameters
    ----------
    box : (ndim, 2) array of int
        Box to enlarge, e.g. stage 1's box of one region on the study grid.
    n : int, optional
        Number of boxes; the paper uses six "as a balance between deployment time and
        number of augmentations".
    ratio_range : (float, float), optional
        Same distribution as in training (:func:`random_enlargement`).
    seed : int or numpy.random.Generator, optional
        Seed of a fresh generator (``numpy.random.default_rng(seed)``), so the boxes are a
        deterministic function of the seed; a Generator is used as is.
    shape : tuple of ndim int
        Image shape; boxes are clipped to it.

    Returns
    -------
    list of n (ndim, 2) ndarray of int64
        The i-th box is the i-th :func:`random_enlargement` drawn from the generator.

    Raises
    ------
    ValueError
        If ``n`` is not a positive int, or see :func:`enlarge_box`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    return [random_enlargement(box, ratio_range=ratio_range, rng=rng, shape=shape) for _ in range(int(n))]
