"""Preprocessing (paper section 2.1): N4 bias correction, resampling to the study's voxel size,
cropping/padding to a common in-plane field of view, intensity normalisation.

Volumes are ``(X, Y, Z)`` numpy arrays in RAS+ (``llseg.io`` reorients on load). SimpleITK
orders axes ``(Z, Y, X)`` in ``GetArrayFromImage``: conversion happens only inside this module,
and spacing is always set explicitly.
"""
from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import _validate

__all__ = [
    "body_mask",
    "n4_correct",
    "resample_to_spacing",
    "crop_or_pad_xy",
    "restore_xy",
    "normalize_intensity",
    "coefficient_of_variation",
    "to_study_grid",
    "study_grid_affine",
    "from_study_grid",
    "restore_geometry",
    "preprocess_case",
    "summarize_cov",
]

log = logging.getLogger(__name__)

#: Threads of every N4 run. ITK splits N4's B-spline fit over its threads and sums the parts, so
#: the field depends on the thread count (measured: 1 vs 2 threads give other bytes at 1 x 1 x 5
#: mm, ``benchmarks/bench_preprocess_scale.py``). Fixed, the output is the same on any machine;
#: 2 is what the committed results were made with (SimpleITK's default on a 2-core machine).
#: ``pipeline.preprocess_cohort`` uses the other cores by running cases side by side.
N4_THREADS = 2


def _to_sitk(volume: np.ndarray, spacing_mm) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))))
    img.SetSpacing([float(s) for s in spacing_mm])
    return img


def _from_sitk(img: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))


def body_mask(image: np.ndarray) -> np.ndarray:
    """Foreground (body) mask: Otsu threshold, largest connected component, holes filled slice by slice.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float

    Returns
    -------
    (X, Y, Z) ndarray of bool
    """
    image = _validate.volume(image, "image")
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.Execute(_to_sitk(image.astype(np.float32), (1, 1, 1)))
    mask = image > otsu.GetThreshold()
    # Fat-suppressed images have dark fat inside the body: close and fill per slice so the mask
    # covers the whole cross-section, not only muscle.
    mask = ndimage.binary_closing(mask, structure=np.ones((5, 5, 1), bool), iterations=2, border_value=0)
    filled = np.empty_like(mask)
    for z in range(mask.shape[2]):  # 2-D fill: one slice's hole is not a hole in 3-D
        filled[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return filled


def n4_correct(image: np.ndarray, spacing_mm, *, mask: np.ndarray | None = None, shrink_factor: int = 4,
               iterations=(50, 50, 30, 20), convergence_threshold: float = 1e-6,
               spline_distance_mm: float = 100.0):
    """N4 bias-field correction (Tustison et al. 2010; the paper's ref. 17).

    The field is estimated on an image shrunk by ``shrink_factor`` in-plane (and by the factor
    that makes the shrunk voxel roughly isotropic along z), then evaluated and applied at full
    resolution: on this CPU, shrink 4 recovers the bias as well as shrink 1 at 1/60 of the time.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Positive magnitude image.
    spacing_mm : tuple of 3 float
    mask : (X, Y, Z) ndarray of bool, optional
        Where to estimate the field; default ``body_mask(image)``.
    shrink_factor : int
        >= 1.
    iterations : sequence of int
        Maximum iterations per fitting level (its length is the number of levels).
    spline_distance_mm : float
        B-spline control-point spacing of the field (mm).

    Returns
    -------
    corrected : (X, Y, Z) ndarray of float32
    bias : (X, Y, Z) ndarray of float32
        Estimated multiplicative field (``image = corrected * bias``).
    """
    image = _validate.volume(image, "image").astype(np.float32)
    spacing_mm = _validate.spacing(spacing_mm, 3)
    if int(shrink_factor) < 1:
        raise ValueError(f"shrink_factor must be >= 1, got {shrink_factor!r}")
    iterations = [int(i) for i in iterations]
    if not iterations or min(iterations) < 1:
        raise ValueError(f"iterations must be a non-empty list of positive ints, got {iterations!r}")
    if mask is None:
        mask = body_mask(image)
    _validate.same_shape(image, mask, "image", "mask")
    if not mask.any():
        raise ValueError("N4: empty mask (no foreground found in the image)")

    img = _to_sitk(np.maximum(image, 0) + 1e-6, spacing_mm)
    msk = _to_sitk(mask.astype(np.uint8), spacing_mm)
    finest = min(spacing_mm)
    shrink = [max(1, int(round(shrink_factor * finest / s))) for s in spacing_mm]
    small, small_mask = sitk.Shrink(img, shrink), sitk.Shrink(msk, shrink)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(iterations)
    n4.SetConvergenceThreshold(convergence_threshold)
    extent = [n * s for n, s in zip(small.GetSize(), small.GetSpacing())]
    n4.SetNumberOfControlPoints([max(4, int(e / spline_distance_mm) + 3) for e in extent])
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(N4_THREADS)   # N4's inner filters take the global count
    try:
        n4.Execute(small, small_mask)
        log_bias = _from_sitk(n4.GetLogBiasFieldAsImage(img)).astype(np.float32)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    bias = np.exp(log_bias)
    return (image / bias).astype(np.float32), bias.astype(np.float32)


def resample_to_spacing(volume: np.ndarray, spacing_mm, target_mm, *, order: int):
    """Resample to voxel size ``target_mm`` (linear ``order=1`` for images, ``0`` for labels).

    Returns the resampled array and the per-axis zoom factors (``old / new`` spacing). A no-op
    (same array returned) when the spacings agree within 1e-3 mm.
    """
    volume = _validate.volume(volume, "volume")
    spacing_mm = _validate.spacing(spacing_mm, 3)
    target_mm = _validate.spacing(target_mm, 3)
    zoom = tuple(s / t for s, t in zip(spacing_mm, target_mm))
    if all(abs(s - t) < 1e-3 for s, t in zip(spacing_mm, target_mm)):
        return volume, (1.0, 1.0, 1.0)
    out = ndimage.zoom(volume, zoom, order=order, mode="nearest", grid_mode=True)
    return out, zoom


def crop_or_pad_xy(volume: np.ndarray, target_xy, *, fill=0):
    """Centre-crop or zero-pad the in-plane axes (X, Y) to ``target_xy`` voxels.

    Unifies the in-plane matrices of the two protocols (512 x 512 and 476 x 380 at 1 mm)
    into one field of view.

    Returns
    -------
    out : (target_x, target_y, Z) ndarray
    offsets : tuple of 2 int
        Index in ``volume`` of ``out[0, 0]`` along X and Y (negative when padded). The world
        affine of ``out`` is ``affine @ translation(offsets)``.
    """
    volume = _validate.volume(volume, "volume")
    tx, ty = (int(t) for t in target_xy)
    if tx < 1 or ty < 1:
        raise ValueError(f"target_xy must be positive, got {target_xy!r}")
    offsets = ((volume.shape[0] - tx) // 2, (volume.shape[1] - ty) // 2)
    out = np.full((tx, ty, volume.shape[2]), fill, dtype=volume.dtype)
    sl_big, sl_small = _window(volume.shape, out.shape, offsets)
    out[sl_small] = volume[sl_big]
    return out, offsets


def restore_xy(volume: np.ndarray, offsets, original_xy, *, fill=0) -> np.ndarray:
    """Inverse of ``crop_or_pad_xy``: place ``volume`` back into an array of in-plane size ``original_xy``."""
    out = np.full((int(original_xy[0]), int(original_xy[1]), volume.shape[2]), fill, dtype=volume.dtype)
    sl_big, sl_small = _window(out.shape, volume.shape, offsets)
    out[sl_big] = volume[sl_small]
    return out


def _window(big_shape, small_shape, offsets):
    """Slices of the overlap between a big frame and a window placed at ``offsets`` (X, Y) in it."""
    sl_big, sl_small = [], []
    for axis, off in enumerate(offsets):
        lo, hi = max(off, 0), min(off + small_shape[axis], big_shape[axis])
        sl_big.append(slice(lo, max(lo, hi)))
        sl_small.append(slice(lo - off, lo - off + max(0, hi - lo)))
    return tuple(sl_big), tuple(sl_small)


def to_study_grid(volume: np.ndarray, *, spacing_mm, target_spacing_mm, target_xy, order: int, fill=0):
    """Resample to the study voxel size, then centre-crop/pad in-plane to ``target_xy``.

    Returns ``(out, zoom, offsets_xy)``; ``study_grid_affine(affine, zoom, offsets_xy)`` is the
    voxel-to-world matrix of ``out``.
    """
    resampled, zoom = resample_to_spacing(volume, spacing_mm, target_spacing_mm, order=order)
    out, offsets = crop_or_pad_xy(resampled, target_xy, fill=fill)
    return out, zoom, offsets


def from_study_grid(labels: np.ndarray, *, canonical_shape, zoom, offsets_xy) -> np.ndarray:
    """Inverse of ``to_study_grid`` for label maps (nearest neighbour): back onto the canonical
    (RAS+) grid of the input file, shape ``canonical_shape``.

    Canonical voxel ``j`` takes the label of study voxel ``floor((j + 0.5) * zoom)`` (after
    undoing the in-plane crop); voxels outside the study field of view get 0.
    """
    labels = _validate.volume(labels, "labels")
    resampled_shape = [int(round(n * z)) for n, z in zip(canonical_shape, zoom)]
    full = restore_xy(labels, offsets_xy, resampled_shape[:2])
    idx = [np.minimum(((np.arange(n) + 0.5) * z).astype(np.intp), m - 1)
           for n, z, m in zip(canonical_shape, zoom, full.shape)]
    return full[np.ix_(*idx)]


def restore_geometry(labels: np.ndarray, record) -> tuple[np.ndarray, np.ndarray]:
    """Study-grid labels back onto the grid of the file they came from.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Labels on the study grid.
    record : mapping
        The case's preprocessing record (a ``manifest.json`` case entry): ``canonical_shape``,
        ``zoom``, ``offsets_xy``, ``canonical_affine``, ``original_affine``.

    Returns
    -------
    canonical : ndarray
        The labels on the file's grid in RAS+ order (``from_study_grid``), for measuring.
    original : ndarray
        The same in the file's stored axis order and direction, for writing with
        ``record["original_affine"]``.
    """
    from .io import to_original_orientation

    canonical = from_study_grid(labels, canonical_shape=record["canonical_shape"], zoom=record["zoom"],
                                offsets_xy=record["offsets_xy"])
    original = to_original_orientation(canonical, np.asarray(record["canonical_affine"]),
                                       np.asarray(record["original_affine"]))
    return canonical, original


def study_grid_affine(affine: np.ndarray, zoom, offsets_xy) -> np.ndarray:
    """Voxel-to-world of ``to_study_grid``'s output, from the input's ``affine``.

    With ``grid_mode`` zooming, output voxel ``i`` sits at input index ``(i + 0.5) / zoom - 0.5``.
    """
    scale = np.diag([1.0 / z for z in zoom] + [1.0])
    scale[:3, 3] = [0.5 / z - 0.5 for z in zoom]
    shift = np.eye(4)
    shift[:2, 3] = offsets_xy
    return np.asarray(affine, np.float64) @ scale @ shift


def normalize_intensity(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score the image over ``mask`` (the body): mean 0, standard deviation 1 inside it."""
    image = _validate.volume(image, "image")
    _validate.same_shape(image, mask, "image", "mask")
    values = image[mask]
    if values.size < 2:
        raise ValueError("normalize_intensity: mask selects fewer than 2 voxels")
    sd = float(values.std())
    return ((image - float(values.mean())) / (sd if sd > 0 else 1.0)).astype(np.float32)


def coefficient_of_variation(image: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation / mean of ``image`` inside ``mask`` (NaN for an empty mask).

    Used on the muscle voxels (all labels > 0) to measure intensity homogeneity before and
    after bias correction (paper section 3.1).
    """
    _validate.same_shape(image, mask, "image", "mask")
    values = np.asarray(image, dtype=np.float64)[np.asarray(mask, bool)]
    if values.size == 0 or values.mean() == 0:
        return float("nan")
    return float(values.std() / values.mean())


def preprocess_case(image: np.ndarray, labels: np.ndarray | None, affine: np.ndarray, *, spacing_mm,
                    target_spacing_mm, target_xy, n4: bool = True, shrink_factor: int = 4,
                    iterations=(50, 50, 30, 20)) -> dict:
    """One case through the study's preprocessing: N4 -> resample -> crop/pad -> z-score.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
    labels : (X, Y, Z) ndarray of int or None
        Ground truth (None when segmenting a new scan: no CoV, no output labels).
    affine : (4, 4) ndarray
        Voxel-to-world (RAS+, mm) of ``image``.
    spacing_mm, target_spacing_mm : tuple of 3 float
        Input voxel size and the study's voxel size (mm).
    target_xy : tuple of 2 int
        In-plane matrix after cropping/padding (voxels at the target spacing).
    n4 : bool
        Apply N4 (False gives a flat bias field: the "N4 off" experiment).

    Returns
    -------
    dict
        ``image`` (normalised, float32), ``labels`` (uint8), ``bias`` (estimated field, on the
        output grid), ``affine`` (output grid), ``zoom``, ``offsets_xy``,
        ``cov_before`` / ``cov_after`` (muscle-intensity CoV before / after N4, input grid).
    """
    image = _validate.volume(image, "image").astype(np.float32)
    if labels is None:
        labels = np.zeros(image.shape, np.uint8)
    _validate.same_shape(image, labels, "image", "labels")
    mask = body_mask(image)
    if n4:
        corrected, bias = n4_correct(image, spacing_mm, mask=mask, shrink_factor=shrink_factor, iterations=iterations)
    else:
        corrected, bias = image, np.ones_like(image)
    muscle = np.asarray(labels) > 0
    cov_before = coefficient_of_variation(image, muscle)
    cov_after = coefficient_of_variation(corrected, muscle)

    grid = dict(spacing_mm=spacing_mm, target_spacing_mm=target_spacing_mm, target_xy=target_xy)
    corrected, zoom, offsets = to_study_grid(corrected, order=1, **grid)
    labels_c, _, _ = to_study_grid(np.asarray(labels, np.uint8), order=0, **grid)
    bias_c, _, _ = to_study_grid(bias, order=1, fill=1.0, **grid)
    mask_c, _, _ = to_study_grid(mask.astype(np.uint8), order=0, **grid)
    lost = int(muscle.sum() * np.prod(zoom) - (labels_c > 0).sum())
    if lost > 0.01 * muscle.sum() * np.prod(zoom):
        log.warning("cropping to %s voxels cut ~%d labelled voxel(s); enlarge preprocess.fov_mm", target_xy, lost)
    out_affine = study_grid_affine(affine, zoom, offsets)

    normalised = normalize_intensity(corrected, mask_c.astype(bool)) if mask_c.any() else corrected
    return {
        "image": normalised,
        "labels": labels_c.astype(np.uint8),
        "bias": bias_c.astype(np.float32),
        "affine": out_affine,
        "zoom": list(zoom),
        "offsets_xy": list(offsets),
        "cov_before": cov_before,
        "cov_after": cov_after,
    }


def summarize_cov(per_case: dict) -> dict:
    """Summarise per-case CoV before/after N4 (``{case: {"cov_before", "cov_after", ...}}``).

    Returns ``{"cases", "cov_before", "cov_after"}`` lists (sorted by case), ``rows`` (one dict
    per case, for CSV/DVC plots) and the summary
    ``{"n_cases", "cov_before_mean", "cov_after_mean", "cov_reduction_pct", "n_improved"}``.
    """
    cases = sorted(per_case)
    before = np.array([per_case[c]["cov_before"] for c in cases], dtype=float)
    after = np.array([per_case[c]["cov_after"] for c in cases], dtype=float)
    mean_b, mean_a = float(np.nanmean(before)), float(np.nanmean(after))
    summary = {"n_cases": len(cases), "cov_before_mean": mean_b, "cov_after_mean": mean_a,
               "cov_reduction_pct": 100.0 * (mean_b - mean_a) / mean_b if mean_b else float("nan"),
               "n_improved": int(np.sum(after < before))}
    rows = [{"case": c, "cov_before": b, "cov_after": a} for c, b, a in zip(cases, before.tolist(), after.tolist())]
    return {"cases": cases, "cov_before": before.tolist(), "cov_after": after.tolist(), "rows": rows,
            "summary": summary}
