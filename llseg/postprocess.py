"""Postprocessing of stage-2 predictions (paper section 2.3).

Two steps, in the paper's order:

1. **False-positive reduction and closing per region** (`clean_region`): keep the largest
   connected component (`keep_largest_component`, cc3d), close small gaps
   (`close_mask`, in-plane by default because voxels are about 1 x 1 x 5 mm) and fill holes,
   so that "only one connected, dense and closed 3-D volume is kept for each RoI".
2. **Conflict resolution** (`merge_regions`): a voxel claimed by several stage-2 networks
   goes to the label with the highest probability; afterwards each label is reduced to its
   largest component again.

The last two steps of section 2.3, contour simplification and export, are in ``llseg.contours``.

All volumes are ``(X, Y, Z)`` arrays in RAS+ (``nib.as_closest_canonical``); Z is the
slice axis.

References
----------
.. [1] X. Ni et al., "Automatic segmentation of all lower limb muscles from high-resolution
   MRI using a cascaded 3-D DCNN", J. Med. Imag. 6(4), 044009 (2019), section 2.3.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import cc3d
import numpy as np
from scipy import ndimage

from . import _validate

__all__ = [
    "keep_largest_component",
    "close_mask",
    "clean_region",
    "merge_regions",
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
