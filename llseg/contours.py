"""Contours of the final label map (paper section 2.3, last two steps).

1. **Contour simplification** (`simplify_contour`): a modified Ramer-Douglas-Peucker (RDP)
   algorithm whose tolerance is the digitisation error bound of Prasad et al. (2012), the
   paper's ref. 25, so no tolerance has to be chosen.
2. **Contour export** (`contours_from_labels`): per region and axial slice, closed polygons
   of control points in mm, as a JSON-serialisable dict.

Label maps are ``(X, Y, Z)`` arrays in RAS+; Z is the slice axis.

References
----------
.. [1] X. Ni et al., J. Med. Imag. 6(4), 044009 (2019), section 2.3.
.. [2] D. K. Prasad, M. K. H. Leung, C. Quek, S.-Y. Cho, "A novel framework for making
   dominant point detection methods non-parametric", Image Vision Comput. 30(11), 843-859
   (2012).
.. [3] D. K. Prasad, C. Quek, M. K. H. Leung, S.-Y. Cho, "A parameter independent line
   fitting method", 1st Asian Conf. Pattern Recognit. (ACPR 2011), 441-445.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure

from . import _validate
from .anatomy import REGIONS, region_name

__all__ = ["simplify_contour", "contours_from_labels"]


# Prasad et al. (ref. 25 / [2], [3]): the largest slope error a digitised straight segment of
# length s (pixels) can show, maximised over the segment direction phi and the 8 ways the
# end pixels can round; s * tan(that angle) is the deviation digitisation alone can explain.
# No library implements this bound, so it is written here (after the authors' formula).
def _prasad_bound(s: np.ndarray) -> np.ndarray:
    """Digitisation deviation bound (pixels) for segment lengths ``s`` (pixels), exact."""
    phi = np.linspace(0.0, 2.0 * np.pi, 721)[:, None, None]
    sin, cos = np.sin(phi), np.cos(phi)
    a = np.abs(np.concatenate([cos, sin, sin + cos, sin - cos], axis=1))   # (721, 4, 1)
    b = np.abs(np.concatenate([sin, cos, sin - cos, sin + cos], axis=1))   # worst of +/- cases
    s = np.asarray(s, dtype=float)[None, None, :]
    t = b / s
    dphi = np.max(a / s * (1.0 + t + t * t), axis=(0, 1))
    # Deviations can never exceed s (all points are within s of the start): cap at 45 deg.
    return s[0, 0] * np.tan(np.minimum(dphi, np.pi / 4))


_TABLE_S = np.geomspace(1.0, 1e5, 1201)       # the bound is smooth in s: tabulate once,
_TABLE_TOL = _prasad_bound(_TABLE_S)          # interpolate (error < 1e-4 px)


def _prasad_tolerance(s: float) -> float:
    """Digitisation deviation bound (pixels) for a segment of length ``s`` pixels."""
    if s <= 1.0:
        return max(float(s), 0.0)             # the 45-degree cap: tolerance = s
    return float(np.interp(np.log(s), np.log(_TABLE_S), _TABLE_TOL))


def _adaptive_rdp(points: np.ndarray) -> np.ndarray:
    """RDP on an open chain (pixel units) with Prasad's per-segment tolerance; bool keep mask.

    Hand-written because the tolerance depends on each segment's length, which
    `skimage.measure.approximate_polygon` (one fixed tolerance) cannot express.
    """
    keep = np.zeros(len(points), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(points) - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        seg = points[i + 1:j] - points[i]                            # (K, 2)
        chord = points[j] - points[i]
        length = float(np.hypot(*chord))
        radial = np.hypot(seg[:, 0], seg[:, 1])                     # distances from the start
        dev = np.abs(seg[:, 0] * chord[1] - seg[:, 1] * chord[0]) / length if length > 0 else radial
        s_max = max(length, float(radial.max()))                     # Prasad's S_max
        k = int(np.argmax(dev))
        if dev[k] > _prasad_tolerance(s_max):
            k += i + 1
            keep[k] = True
            stack += [(i, k), (k, j)]
    return keep


def _point_line_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    d = b - a
    n = float(np.hypot(*d))
    return float(np.hypot(*(p - a))) if n == 0 else abs(float(d[0] * (p - a)[1] - d[1] * (p - a)[0])) / n


def simplify_contour(points, *, tolerance: float | None = None, spacing_mm=(1.0, 1.0)) -> np.ndarray:
    """Reduce a closed contour to few control points: modified RDP after Prasad et al. 2012.

    Parameters
    ----------
    points : (N, 2) ndarray of float
        Closed polygon in mm (in-plane x, y). The closing point (last == first) is optional.
    tolerance : float, optional
        Maximum deviation in mm. ``None`` (default): non-parametric; each segment's tolerance
        is the digitisation bound of Prasad et al. for its length (1.41-2 pixels).
        A float: plain RDP with that tolerance (`skimage.measure.approximate_polygon`).
    spacing_mm : (2,) tuple of float, optional
        In-plane pixel spacing of the grid the contour was digitised on, used to express the
        Prasad bound in pixels. Default (1, 1).

    Returns
    -------
    (M, 2) ndarray of float
        Closed polygon (last == first), a subset of the input points, M <= N + 1, with at
        least 3 distinct vertices. Inputs with fewer than 5 distinct points are returned
        unchanged (closed).

    Notes
    -----
    The ring is started at the point farthest from the centroid (a true extreme point),
    split at the point farthest from it, each half simplified, and the start vertex dropped if
    it lies within the tolerance of the line through its neighbours; so the result does not
    depend on where the tracer started. With ``tolerance=None`` the split test of each
    segment uses the deviation bound ``s * tan(dphi_max(s))`` with ``s`` the largest
    distance of the segment's points from its start (Prasad's ``S_max``), in pixels.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points: expected an (N, 2) array, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points: contains NaN or infinite coordinates")
    if tolerance is not None and not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be None or a finite float >= 0 (mm), got {tolerance!r}")
    scale = np.asarray(_validate.spacing(spacing_mm, 2))
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    if len(set(map(tuple, pts.tolist()))) < 5:  # nothing to gain (e.g. a 1-voxel diamond)
        return np.concatenate([pts, pts[:1]])
    work = pts if tolerance is not None else pts / scale  # mm for plain RDP, pixels for Prasad
    start = int(np.argmax(np.sum((work - work.mean(axis=0)) ** 2, axis=1)))
    work, pts = np.roll(work, -start, axis=0), np.roll(pts, -start, axis=0)
    far = int(np.argmax(np.sum((work - work[0]) ** 2, axis=1)))
    ring = np.concatenate([work, work[:1]])
    keep = np.zeros(len(ring), dtype=bool)
    for a, b in ((0, far), (far, len(work))):
        chain = ring[a:b + 1]
        if tolerance is None:
            keep[a:b + 1] |= _adaptive_rdp(chain)
        else:  # plain RDP: mark the points approximate_polygon keeps (it returns a subset)
            kept = measure.approximate_polygon(chain, tolerance=float(tolerance))
            keep[a:b + 1] |= (chain[:, None, :] == kept[None, :, :]).all(-1).any(-1)
    idx = np.flatnonzero(keep[:-1])
    if len(idx) < 3:  # a polygon needs 3 vertices: add the point farthest from the chord
        dev = [_point_line_distance(p, work[idx[0]], work[idx[-1]]) for p in work]
        idx = np.union1d(idx, [int(np.argmax(dev))])
    elif len(idx) > 3:  # drop the arbitrary start vertex if its neighbours' line explains it
        tol0 = tolerance if tolerance is not None else _prasad_tolerance(
            float(np.hypot(*(work[idx[1]] - work[idx[-1]]))))
        if _point_line_distance(work[0], work[idx[-1]], work[idx[1]]) <= tol0:
            idx = idx[1:]
    out = pts[idx]
    return np.concatenate([out, out[:1]])


def contours_from_labels(labels, spacing_mm, affine=None, *, simplify: bool = True,
                         tolerance_mm: float | None = None, decimals: int = 3) -> dict:
    """Closed control-point polygons per region and axial slice, JSON-serialisable.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Label map (0 = background, 1..70 = regions of `llseg.anatomy`), RAS+, Z = slice axis.
    spacing_mm : (3,) tuple of float
        Voxel spacing in mm, axis order (X, Y, Z).
    affine : (4, 4) ndarray, optional
        Voxel-to-world (RAS+ mm) affine. If given, points are world coordinates
        ``[x, y, z]``; its column norms must match ``spacing_mm``. If None, points are
        ``[x, y]`` = in-plane voxel index * spacing (the slice's z is its key).
    simplify : bool, optional
        Reduce each polygon with `simplify_contour` (default True; non-parametric unless
        ``tolerance_mm`` is given).
    tolerance_mm : float, optional
        Fixed RDP tolerance in mm; None = Prasad's digitisation bound.
    decimals : int, optional
        Coordinates are rounded to this many decimals (default 3, i.e. micrometres).

    Returns
    -------
    dict
        ``{"space": "RAS+ world mm" | "voxel mm", "spacing_mm": [sx, sy, sz], "regions":
        {"<label>": {"name": str, "slices": {"<z index>": [[[x, y(, z)], ...], ...]}}}}``.
        Each polygon is closed (last point == first). Empty label maps give ``"regions": {}``.

    Notes
    -----
    Contours are traced with `skimage.measure.find_contours` at level 0.5 on each slice of the
    region's mask (cropped to its bounding box and zero-padded by one voxel so every contour
    closes), with 8-connected foreground (``fully_connected="high"``). The polygon lies on the
    marching-squares iso-line through voxel-edge midpoints, i.e. half a voxel outside the
    voxel centres, and cuts each convex voxel corner by half a voxel. A slice with holes or
    several pieces has several polygons (holes run in the opposite direction).
    """
    labels = _validate.label_map(labels, "labels", valid=REGIONS)
    labels = _validate.volume(labels, "labels")
    spacing = _validate.spacing(spacing_mm, 3)
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine: expected a finite (4, 4) array, got shape {affine.shape}")
        norms = np.linalg.norm(affine[:3, :3], axis=0)
        if not np.allclose(norms, spacing, rtol=1e-3, atol=1e-4):
            raise ValueError(f"affine column norms {norms.round(4).tolist()} do not match "
                             f"spacing_mm {spacing}")
    regions = {}
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = np.pad(labels[box] == label, ((1, 1), (1, 1), (0, 0)))
        x0, y0, z0 = (s.start - p for s, p in zip(box, (1, 1, 0)))
        slices = {}
        for k in range(mask.shape[2]):
            polys = []
            for c in measure.find_contours(mask[:, :, k].astype(np.float32), 0.5, fully_connected="high"):
                mm = (c + (x0, y0)) * spacing[:2]                        # (K, 2) in-plane voxel mm
                if simplify:
                    mm = simplify_contour(mm, tolerance=tolerance_mm, spacing_mm=spacing[:2])
                if affine is not None:
                    vox = np.column_stack([mm / spacing[:2], np.full(len(mm), z0 + k), np.ones(len(mm))])
                    mm = (vox @ affine.T)[:, :3]
                polys.append(np.round(mm, decimals).tolist())
            if polys:
                slices[str(z0 + k)] = polys
        regions[str(label)] = {"name": region_name(label), "slices": slices}
    return {"space": "voxel mm" if affine is None else "RAS+ world mm",
            "spacing_mm": list(spacing), "regions": regions}
