"""Postprocessing of stage-2 predictions (paper section 2.3).

Four steps, in the paper's order:

1. **False-positive reduction and closing per region** (`clean_region`): keep the largest
   connected component (`keep_largest_component`, cc3d), close small gaps
   (`close_mask`, in-plane by default because voxels are about 1 x 1 x 5 mm) and fill holes,
   so that "only one connected, dense and closed 3-D volume is kept for each RoI".
2. **Conflict resolution** (`merge_regions`): a voxel claimed by several stage-2 networks
   goes to the label with the highest probability; afterwards each label is reduced to its
   largest component again.
3. **Contour simplification** (`simplify_contour`): a modified Ramer-Douglas-Peucker (RDP)
   algorithm whose tolerance is the digitisation error bound of Prasad et al. (2012), the
   paper's ref. 25, so no tolerance has to be chosen.
4. **Contour export** (`contours_from_labels`): per region and axial slice, closed polygons
   of control points in mm, as a JSON-serialisable dict.

All volumes are ``(X, Y, Z)`` arrays in RAS+ (``nib.as_closest_canonical``); Z is the
slice axis.

References
----------
.. [1] X. Ni et al., "Automatic segmentation of all lower limb muscles from high-resolution
   MRI using a cascaded 3-D DCNN", J. Med. Imag. 6(4), 044009 (2019), section 2.3.
.. [2] D. K. Prasad, M. K. H. Leung, C. Quek, S.-Y. Cho, "A novel framework for making
   dominant point detection methods non-parametric", Image Vision Comput. 30(11), 843-859
   (2012).
.. [3] D. K. Prasad, C. Quek, M. K. H. Leung, S.-Y. Cho, "A parameter independent line
   fitting method", 1st Asian Conf. Pattern Recognit. (ACPR 2011), 441-445.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import cc3d
import numpy as np
from scipy import ndimage
from skimage import measure

from . import _validate
from .anatomy import REGIONS, region_name

__all__ = [
    "keep_largest_component",
    "close_mask",
    "clean_region",
    "merge_regions",
    "simplify_contour",
    "contours_from_labels",
]

log = logging.getLogger(__name__)

_CONNECTIVITIES = (6, 18, 26)
Crop = tuple[tuple[slice, slice, slice], np.ndarray]


# ----------------------------------------------------------------------------- helpers
def _check_connectivity(connectivity) -> int:
    if connectivity not in _CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {_CONNECTIVITIES}, got {connectivity!r}")
    return int(connectivity)


def _check_radius(radius_vox) -> tuple[int, int, int]:
    radius = (radius_vox,) * 3 if np.isscalar(radius_vox) else tuple(radius_vox)
    if len(radius) != 3 or not all(float(r).is_integer() and r >= 0 for r in radius):
        raise ValueError(f"radius_vox must be a non-negative int or 3 non-negative ints (voxels), "
                         f"got {radius_vox!r}")
    return tuple(int(r) for r in radius)


def _ellipsoid(radius: tuple[int, int, int]) -> np.ndarray:
    """Bool structuring element: the voxel ellipsoid with semi-axes ``radius`` (0 = flat)."""
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    dist = sum((g / r) ** 2 for g, r in zip(grids, radius) if r > 0)
    return np.broadcast_to(np.asarray(dist) <= 1.0, tuple(2 * r + 1 for r in radius)).copy()


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the foreground as a tuple of slices, or None if empty."""
    boxes = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8))
    return boxes[0] if boxes and boxes[0] is not None else None


def _shift(box: tuple[slice, ...], offset: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, offset))


# ----------------------------------------------------------------------------- per region
def keep_largest_component(mask, *, connectivity: int = 26) -> np.ndarray:
    """Keep only the largest connected component of a 3-D mask.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool or int
        Foreground mask (non-zero = foreground).
    connectivity : {6, 18, 26}, optional
        Voxel neighbourhood (faces, + edges, + corners). Default 26.

    Returns
    -------
    (X, Y, Z) ndarray of bool
        The largest component. An empty mask gives an empty mask; ties between equally large
        components are broken by cc3d (deterministically).

    Raises
    ------
    TypeError
        Float mask.
    ValueError
        Not 3-D, or bad ``connectivity``.
    """
    mask = _validate.mask(mask)
    connectivity = _check_connectivity(connectivity)
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return cc3d.largest_k(mask, k=1, connectivity=connectivity, binary_image=True).astype(bool, copy=False)


def close_mask(mask, *, radius_vox=(1, 1, 0), iterations: int = 1) -> np.ndarray:
    """Binary closing with an anisotropy-aware (in-plane by default) structuring element.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool or int
        Foreground mask (non-zero = foreground), RAS+, Z = slice axis.
    radius_vox : int or (3,) tuple of int, optional
        Semi-axes of the ellipsoidal structuring element in voxels, per axis. The default
        ``(1, 1, 0)`` is the in-plane 4-neighbour cross: the typical voxel is 1 x 1 x 5 mm,
        so a z radius of 1 would bridge 10 mm across slices; use ``(r, r, 1)`` only for
        near-isotropic data.
    iterations : int, optional
        Number of dilations followed by as many erosions (>= 0; 0 returns a copy).

    Returns
    -------
    (X, Y, Z) ndarray of bool
        Closed mask; always a superset of ``mask`` and inside its bounding box.

    Notes
    -----
    The mask is cropped to its bounding box and zero-padded by ``radius * iterations`` before
    `scipy.ndimage.binary_closing`, then cropped back. This makes the result independent of
    where the mask sits in the array: without the padding the erosion treats the array border
    as background and would delete foreground that touches the border. Closing with a
    symmetric element never grows a set beyond its bounding box, so the crop loses nothing.
    Only the bounding box is processed, which keeps the cost proportional to the region.
    """
    mask = _validate.mask(mask)
    radius = _check_radius(radius_vox)
    if not (isinstance(iterations, (int, np.integer)) and iterations >= 0):
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    out = mask.copy()
    box = _bbox(mask)
    if box is None or iterations == 0 or not any(radius):
        return out
    pad = [(r * iterations,) * 2 for r in radius]
    padded = np.pad(mask[box], pad)
    closed = ndimage.binary_closing(padded, structure=_ellipsoid(radius), iterations=int(iterations))
    out[box] = closed[tuple(slice(p, p + (s.stop - s.start)) for (p, _), s in zip(pad, box))]
    return out


def clean_region(mask, *, connectivity: int = 26, closing_radius_vox=(1, 1, 0),
                 fill_in_plane: bool = True) -> np.ndarray:
    """Reduce a region mask to one connected, closed, hole-free component (paper 2.3).

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool or int
        Thresholded network output for one region (non-zero = foreground), RAS+.
    connectivity : {6, 18, 26}, optional
        Connectivity of the component analysis. Default 26.
    closing_radius_vox : int or (3,) tuple of int, optional
        Structuring-element semi-axes for `close_mask`; default in-plane ``(1, 1, 0)``.
    fill_in_plane : bool, optional
        If True (default), holes are filled in every axial slice (a 4-connected background
        pocket enclosed within the slice), which also fills every 3-D cavity; so each slice
        contour of the region is a single outline. If False, only 3-D cavities are filled.

    Returns
    -------
    (X, Y, Z) ndarray of bool
        Largest component -> closing -> hole filling -> largest component again (closing can,
        rarely, leave a detached fragment). Exactly one component, or empty for empty input.
    """
    largest = keep_largest_component(mask, connectivity=connectivity)
    if not largest.any():
        return largest
    closed = close_mask(largest, radius_vox=closing_radius_vox)
    box = _bbox(closed)
    structure = ndimage.generate_binary_structure(2, 1)[:, :, None] if fill_in_plane else None
    closed[box] = ndimage.binary_fill_holes(closed[box], structure=structure)
    return keep_largest_component(closed, connectivity=connectivity)


# ----------------------------------------------------------------------------- merging
def _check_crop(label, value, shape) -> Crop:
    try:
        box, crop = value
        box = tuple(box)
    except (TypeError, ValueError):
        raise TypeError(f"probabilities[{label}]: expected an (X, Y, Z) array or a (slices, array) "
                        f"pair, got {type(value).__name__}") from None
    crop = np.asarray(crop)
    if not np.issubdtype(crop.dtype, np.floating):
        raise TypeError(f"probabilities[{label}]: expected float probabilities, got dtype {crop.dtype}")
    crop = _validate.volume(crop, f"probabilities[{label}]")
    if len(box) != 3 or not all(isinstance(s, slice) and s.step in (None, 1) for s in box):
        raise ValueError(f"probabilities[{label}]: crop box must be 3 slices with step 1, got {box!r}")
    box = tuple(slice(0 if s.start is None else s.start, n if s.stop is None else s.stop)
                for s, n in zip(box, shape))
    if not all(0 <= s.start < s.stop <= n for s, n in zip(box, shape)):
        raise ValueError(f"probabilities[{label}]: crop box {box} must lie inside the volume {shape} "
                         f"(0 <= start < stop <= size; no negative indices)")
    extent = tuple(s.stop - s.start for s in box)
    if extent != crop.shape:
        raise ValueError(f"probabilities[{label}]: crop box {box} has extent {extent} "
                         f"but the crop has shape {crop.shape}")
    return box, crop


def _to_crops(probabilities: Mapping, threshold: float, shape) -> tuple[dict[int, Crop], tuple[int, ...]]:
    """Normalise both input forms to ``{label: (box, crop)}`` and find the volume shape."""
    full_shapes = {np.shape(v) for v in probabilities.values() if isinstance(v, np.ndarray)}
    if shape is not None:
        shape = tuple(int(n) for n in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive ints (X, Y, Z), got {shape!r}")
        full_shapes.add(shape)
    if len(full_shapes) > 1:
        raise ValueError(f"probability maps and shape disagree on the volume shape: {sorted(full_shapes)}")
    if not full_shapes:
        raise ValueError("shape is required when probabilities are given only as (slices, crop) pairs "
                         "or are empty")
    shape = full_shapes.pop()
    crops = {}
    for label, value in probabilities.items():
        if not (isinstance(label, (int, np.integer)) and 1 <= label <= 255):
            raise ValueError(f"probabilities: label ids must be ints in 1..255 (uint8 output), got {label!r}")
        if isinstance(value, np.ndarray):  # full form: crop to the thresholded bbox (exact, see Notes)
            if not np.issubdtype(value.dtype, np.floating):
                raise TypeError(f"probabilities[{label}]: expected float probabilities, "
                                f"got dtype {value.dtype}")
            value = _validate.volume(value, f"probabilities[{label}]")
            box = _bbox(value >= threshold)
            if box is None:
                continue
            value = (box, value[box])
        crops[int(label)] = _check_crop(label, value, shape)
    return crops, shape


def merge_regions(probabilities: Mapping, *, threshold: float = 0.5, shape=None, connectivity: int = 26,
                  closing_radius_vox=(1, 1, 0), fill_in_plane: bool = True) -> np.ndarray:
    """Combine per-region probability maps into one label map (paper 2.3).

    Parameters
    ----------
    probabilities : dict of int -> (slices, ndarray) or (X, Y, Z) ndarray
        Label id (1..255; the kit uses 1..70, see `llseg.anatomy`) -> foreground probability of
        that region's stage-2 network (float, averaged over its outputs). Primary form: a pair
        ``(box, crop)`` with ``box`` a tuple of 3 slices into the full volume (step 1, inside the
        volume; ``None`` ends allowed) and ``crop`` the probability array of that box. A full-size
        ``(X, Y, Z)`` map (zero outside the network's crop) is also accepted and converted.
    threshold : float, optional
        Foreground where ``p >= threshold``; in (0, 1]. Default 0.5.
    shape : (3,) tuple of int, optional
        Volume shape ``(X, Y, Z)``; required if no full-size map is given.
    connectivity, closing_radius_vox, fill_in_plane
        Passed to `clean_region`.

    Returns
    -------
    (X, Y, Z) ndarray of uint8
        Label map, 0 = background. Each label present has exactly one connected component.

    Raises
    ------
    ValueError
        Bad threshold, shape, label id, crop box; shapes that disagree.
    TypeError
        Non-float probabilities or a value of neither form.

    Notes
    -----
    1. Each region: ``clean_region(p >= threshold)`` inside its crop.
    2. Conflicts: a voxel claimed by several cleaned regions goes to the label with the highest
       probability there (voxels added by closing/filling compete with their own, sub-threshold
       probability). Ties go to the lower label id.
    3. A region that lost voxels can split; each label is reduced to its largest component
       again and the dropped fragments become background (not re-offered to other labels).

    Memory: besides the inputs, one float32 and one uint8 volume; regions are processed in
    their crops. Converting a full map crops it to the bounding box of ``p >= threshold``;
    closing and filling stay inside that box, so both forms give identical results.
    """
    threshold = float(threshold)
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not isinstance(probabilities, Mapping):
        raise TypeError(f"probabilities must be a dict label -> map, got {type(probabilities).__name__}")
    crops, shape = _to_crops(probabilities, threshold, shape)

    labels = np.zeros(shape, dtype=np.uint8)
    best = np.full(shape, -np.inf, dtype=np.float32)  # highest probability claimed so far
    boxes = {}
    for label in sorted(crops):  # ascending + strict '>' => ties go to the lower label id
        box, crop = crops[label]
        mask = clean_region(crop >= threshold, connectivity=connectivity,
                            closing_radius_vox=closing_radius_vox, fill_in_plane=fill_in_plane)
        tight = _bbox(mask)
        if tight is None:
            log.info("merge_regions: label %d is empty at threshold %g", label, threshold)
            continue
        gbox = _shift(tight, tuple(s.start for s in box))
        p = crop[tight].astype(np.float32, copy=False)
        win = mask[tight] & (p > best[gbox])
        labels[gbox][win] = label
        best[gbox][win] = p[win]
        boxes[label] = gbox

    for label, gbox in boxes.items():  # conflicts can split a region: keep its largest piece
        region = labels[gbox] == label
        if not region.any():
            log.warning("merge_regions: label %d lost all voxels to other labels", label)
            continue
        keep = keep_largest_component(region, connectivity=connectivity)
        labels[gbox][region & ~keep] = 0
    return labels


# ----------------------------------------------------------------------------- contours
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
