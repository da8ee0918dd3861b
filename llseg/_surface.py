"""The surface-distance engine behind ``llseg.metrics`` (MSD, ASSD, HD95): surfaces, exact
nearest-surface distances, cropping. Private: call the public functions of ``llseg.metrics``.

Masks are bool ``(X, Y, Z)`` arrays; spacings in mm in the same axis order.

How it is fast
--------------
Each pair of masks is cropped to the bounding box of their union; since everything outside
it is background in both masks, surfaces and distances are identical to the full-volume
computation (distances depend only on voxel-index differences, and the nearest surface
voxel always lies in that box). Distances between the two surface point sets come from a
k-d tree (``pykdtree`` if installed, else ``scipy.spatial.cKDTree``; one OpenMP thread):
exact in float64 and proportional to the number of surface voxels rather than the box
size, which is faster than a Euclidean distance transform of the box (scipy's, or the
``edt`` package's, whose float32 output is also off by up to 2e-6 mm); see
``benchmarks/bench_metrics.py``. Surface voxels on both surfaces (distance 0) and voxels
whose 6-neighbour along a smallest-spacing axis is on the other surface (distance = that
spacing, the smallest possible) are not queried. ``evaluate_regions`` finds all bounding
boxes in one ``scipy.ndimage.find_objects`` pass per label map and evaluates the regions in
a thread pool.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

try:  # pykdtree: the same exact float64 nearest neighbours as cKDTree, faster (benchmarks/bench_metrics.py)
    from pykdtree.kdtree import KDTree as _PyKDTree
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional speed-up; cKDTree gives identical values
    _PyKDTree = None


def union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (slices) of ``a | b`` (bool masks); None if both are empty."""
    return ndimage.find_objects((a | b).view(np.uint8), max_label=1)[0]


def surface(mask: np.ndarray) -> np.ndarray:
    """MedPy's surface: ``mask ^ binary_erosion(mask, 6-connected structure)``, with the array
    border as background (scipy's ``border_value=0``), so cropping to the mask's bounding box
    or any larger box gives the same voxels.

    Written with slices instead of calling ``scipy.ndimage.binary_erosion``, which is slower
    on these small crops; the tests check it against scipy's erosion.
    """
    interior = np.zeros_like(mask)
    if min(mask.shape) >= 3:
        core = mask[1:-1, 1:-1, 1:-1].copy()            # voxels off the array border
        for ax in range(3):
            for lo, hi in ((0, -2), (2, None)):          # the -1 and +1 neighbour along ax
                nb = [slice(1, -1)] * 3
                nb[ax] = slice(lo, hi)
                core &= mask[tuple(nb)]
        interior[1:-1, 1:-1, 1:-1] = core
    return mask ^ interior


def nearest(dst_mm: np.ndarray, src_mm: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``src_mm`` (n, 3) to its nearest row of
    ``dst_mm`` (m >= 1, 3), exact in float64. pykdtree if installed, else scipy's cKDTree."""
    if _PyKDTree is not None:
        return _PyKDTree(dst_mm).query(src_mm, k=1)[0]
    return cKDTree(dst_mm).query(src_mm)[0]


def single_thread():
    """One OpenMP thread for pykdtree's queries (it parallelises each short query over all
    cores, which is slower when the cores are busy). Enter once per public call: each entry
    scans the loaded libraries."""
    return threadpool_limits(1, user_api="openmp") if _PyKDTree is not None else contextlib.nullcontext()


def next_to(surf: np.ndarray, idx: tuple[np.ndarray, ...], axes: Iterable[int]) -> np.ndarray:
    """For voxels ``idx`` (tuple of index arrays), True where a 6-neighbour along one of
    ``axes`` lies in ``surf`` (neighbours outside the array do not count)."""
    hit = np.zeros(len(idx[0]), dtype=bool)
    for ax in axes:
        for step in (-1, 1):
            moved = idx[ax] + step
            inside = (moved >= 0) & (moved < surf.shape[ax])
            nb = list(idx)
            nb[ax] = np.where(inside, moved, idx[ax])
            hit |= inside & surf[tuple(nb)]
    return hit


def directed(idx_src: tuple[np.ndarray, ...], src_mm: np.ndarray, surf_dst: np.ndarray,
              dst_mm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each source surface voxel to the nearest destination surface voxel.

    Parameters: the source voxels as index tuple ``idx_src`` and as (n, 3) mm coordinates
    ``src_mm``; the destination surface as mask ``surf_dst`` and (m, 3) mm ``dst_mm``.
    An empty destination gives ``inf``.
    """
    dist = np.zeros(len(src_mm))                                         # (n_src,)
    if len(dst_mm) == 0:
        dist[:] = np.inf
        return dist
    todo = ~surf_dst[idx_src]                 # voxels on both surfaces: distance 0
    # Shortcut (k-d trees have none): the smallest non-zero voxel distance is the smallest
    # spacing, reached exactly by a 6-neighbour along an axis with that spacing.
    near_axes = np.flatnonzero(spacing == spacing.min())
    sub = tuple(i[todo] for i in idx_src)
    near = next_to(surf_dst, sub, near_axes)
    dist[np.flatnonzero(todo)[near]] = spacing.min()
    rest = np.flatnonzero(todo)[~near]
    if len(rest):
        dist[rest] = nearest(dst_mm, src_mm[rest])
    return dist


def both_directions(pred: np.ndarray, truth: np.ndarray,
                     spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred -> truth, truth -> pred), each in the C order of its
    surface voxels (MedPy's order). Masks must be cropped already; either may be empty.
    Call inside ``single_thread()``."""
    sp = np.asarray(spacing, dtype=np.float64)
    surf_p, surf_t = surface(pred), surface(truth)
    idx_p, idx_t = np.nonzero(surf_p), np.nonzero(surf_t)               # tuples of (n,) index arrays
    pts_p = np.column_stack(idx_p) * sp                                   # (n_p, 3) mm
    pts_t = np.column_stack(idx_t) * sp                                   # (n_t, 3) mm
    return (directed(idx_p, pts_p, surf_t, pts_t, sp),
            directed(idx_t, pts_t, surf_p, pts_p, sp))


def cropped(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    box = union_box(pred, truth)
    if box is None:
        return pred[:0, :0, :0], truth[:0, :0, :0]
    return pred[box], truth[box]


def summaries(d_pt: np.ndarray, d_tp: np.ndarray) -> tuple[float, float, float]:
    """(MSD, ASSD, HD95) from the two directed distance sets (both non-empty and finite)."""
    pooled = np.concatenate([d_pt, d_tp])
    return float(d_pt.mean()), float(pooled.mean()), float(np.percentile(pooled, 95))


def limit_worker_threads() -> None:
    """ThreadPoolExecutor initializer: one OpenMP thread for pykdtree in this worker (the
    limit is per calling thread and the worker is discarded afterwards)."""
    if _PyKDTree is not None:
        threadpool_limits(1, user_api="openmp")
