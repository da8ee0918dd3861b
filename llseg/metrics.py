"""Segmentation metrics: Dice, surface distances and volumes (paper section 2.4).

All masks and label maps are ``(X, Y, Z)`` arrays in RAS+ (``nib.as_closest_canonical``);
``spacing_mm`` is the voxel size in mm in the same axis order, typically ``(1, 1, 5)``.
Every distance honours the anisotropic spacing.

Surface definition
------------------
Exactly MedPy 0.5.2's (``medpy.metric.binary.__surface_distances`` with ``connectivity=1``):
the surface (the paper's "contour") of a mask is ``mask ^ binary_erosion(mask, s)`` with the
6-connected structuring element ``s``; voxels on the array border count as surface (scipy's
erosion pads with background). The distance of a voxel ``p`` to a surface ``C`` is
``min over p' in C of ||(p - p') * spacing_mm||_2`` (paper Eq. 2), between voxel centres.

* ``mean_surface_distance`` (MSD) is the paper's definition: the mean over the voxels of the
  segmented surface of their distance to the ground-truth surface. It is directed
  (pred -> truth) and equals ``medpy.metric.binary.asd(pred, truth, spacing_mm)``.
* ``average_symmetric_surface_distance`` (ASSD) is the mean of the pooled distances of both
  directions (``medpy.metric.binary.assd``): surfaces with more voxels weigh more; it is not
  the average of the two directed means.
* ``hausdorff_distance_95`` (HD95) is the 95th percentile (numpy's linear interpolation) of
  the same pooled distances (``medpy.metric.binary.hd95``). Other tools (e.g. DeepMind's
  ``surface-distance``) take the maximum of the two directed 95th percentiles and weigh
  surface elements by area, so their numbers differ slightly.

Empty masks
-----------
No function crashes or returns a silent 0 for an empty mask. Each case below also emits an
``EmptyMaskWarning`` (a ``UserWarning``; filter it with ``warnings.simplefilter``):

============================  ==========  ===========================  ============
case                          Dice        MSD / ASSD / HD95            volume error
============================  ==========  ===========================  ============
both empty                    NaN         NaN                          NaN
truth empty, pred not         0.0         NaN                          NaN
pred empty, truth not         0.0         NaN                          -100 %
============================  ==========  ===========================  ============

(A one-sided empty Dice of 0.0 is the formula's own value and is not warned about by
``dice``; ``evaluate_regions`` warns once per region with any empty mask.)
``surface_distances`` returns an empty array when ``pred`` is empty and ``inf`` for every
pred surface voxel when ``truth`` is empty (the distance to an empty set).

Speed
-----
See ``llseg._surface``: crops to the union bounding box, k-d tree distances, and
``benchmarks/bench_metrics.py``.

References
----------
.. [1] X. Ni et al., "Automatic segmentation of all lower limb muscles from high-resolution
   MRI using a cascaded 3-D DCNN", J. Med. Imag. 6(4), 044009 (2019), section 2.4, Eqs. 1-3.
.. [2] O. Maier et al., MedPy 0.5.2, ``medpy.metric.binary`` (``dc``, ``asd``, ``assd``,
   ``hd95``).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from . import _surface, _validate, runinfo
from .anatomy import N_REGIONS, REGIONS, region_name

__all__ = [
    "EmptyMaskWarning",
    "dice",
    "one_voxel_margin_dice",
    "surface_distances",
    "mean_surface_distance",
    "average_symmetric_surface_distance",
    "hausdorff_distance_95",
    "volume_ml",
    "volume_error_pct",
    "evaluate_regions",
]

log = logging.getLogger(__name__)


class EmptyMaskWarning(UserWarning):
    """A metric met an empty mask and returned its documented NaN/0 value."""


# ----------------------------------------------------------------------------- checks
def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = _validate.mask(pred, "pred", binary=True), _validate.mask(truth, "truth", binary=True)
    _validate.same_shape(pred, truth, "pred", "truth")
    return pred, truth


def _warn(message: str) -> None:
    warnings.warn(message, EmptyMaskWarning, stacklevel=3)


# ----------------------------------------------------------------------------- public: pairs
def dice(pred, truth) -> float:
    """Dice similarity coefficient ``2 |S n G| / (|S| + |G|)`` of two masks.

    Parameters
    ----------
    pred, truth : (X, Y, Z) ndarray of bool
        Segmented (S) and ground-truth (G) masks of one region (integers 0/1 are accepted).

    Returns
    -------
    float
        In [0, 1]. NaN (with an ``EmptyMaskWarning``) when both masks are empty; 0.0 when
        exactly one is empty.

    Raises
    ------
    ValueError
        Not 3-D, empty arrays, or shapes differ.
    TypeError
        Not a bool (or 0/1 integer) mask.

    Notes
    -----
    The paper's Eq. 1 prints ``|S n G| / |S u G|``, which is the Jaccard index; the text and
    Table 1 use the Dice coefficient, so the standard Dice is implemented (= ``medpy.metric.
    binary.dc``, except that MedPy returns 1.0 for two empty masks).
    """
    pred, truth = _pair(pred, truth)
    n_p, n_t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if n_p + n_t == 0:
        _warn("dice: pred and truth are both empty; Dice is NaN")
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & truth)) / (n_p + n_t)


def one_voxel_margin_dice(truth, *, voxels: int = 1, axes=(0, 1)) -> float:
    """Dice that a segmentation scores whose boundary lies ``voxels`` voxels outside ``truth`` everywhere.

    A resolution reference: the Dice of ``truth`` against itself grown by ``voxels`` along
    ``axes`` (``scipy.ndimage.binary_dilation`` with a cross, i.e. 4-connected in the X-Y
    plane by default). It shows what a boundary error of one voxel costs a muscle of this
    size on this grid: small and thin muscles lose far more Dice for the same error, so it
    bounds how close a given mean Dice is to "within a voxel everywhere".

    Parameters
    ----------
    truth : (X, Y, Z) ndarray of bool
        Ground-truth mask of one region (integers 0/1 are accepted).
    voxels : int, optional
        Margin in voxels (>= 1).
    axes : sequence of int, optional
        Axes the mask grows along; default the in-plane axes X, Y (slices are usually much
        thicker than the in-plane voxels).

    Returns
    -------
    float
        In (0, 1); NaN (with an ``EmptyMaskWarning``) for an empty mask.

    Raises
    ------
    ValueError
        Not 3-D, ``voxels`` < 1, or ``axes`` empty, repeated or outside 0..2.
    TypeError
        Not a bool (or 0/1 integer) mask.
    """
    t = _validate.mask(truth, "truth", binary=True)
    if isinstance(voxels, bool) or not isinstance(voxels, (int, np.integer)) or voxels < 1:
        raise ValueError(f"voxels must be an int >= 1, got {voxels!r}")
    axes = tuple(int(a) for a in axes)
    if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"axes must be distinct axes among 0, 1, 2, got {axes}")
    n = int(np.count_nonzero(t))
    if n == 0:
        _warn("one_voxel_margin_dice: truth is empty; Dice is NaN")
        return float("nan")
    return _margin_dice(t, int(voxels), axes)


def _margin_dice(t: np.ndarray, voxels: int, axes: tuple[int, ...]) -> float:
    """``one_voxel_margin_dice`` of a non-empty bool mask, without checks or warnings."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1, 1, 1] = True
    for a in axes:                                   # the 6-neighbours along the chosen axes
        idx = [1, 1, 1]
        for v in (0, 2):
            idx[a] = v
            structure[tuple(idx)] = True
    grown = ndimage.binary_dilation(np.pad(t, voxels), structure, iterations=voxels)  # padded: may grow past the crop
    n = int(np.count_nonzero(t))
    return 2.0 * n / (n + int(np.count_nonzero(grown)))       # truth lies inside grown


def surface_distances(pred, truth, spacing_mm) -> np.ndarray:
    """Distance from each surface voxel of ``pred`` to the surface of ``truth``.

    Parameters
    ----------
    pred, truth : (X, Y, Z) ndarray of bool
        Segmented and ground-truth masks.
    spacing_mm : tuple of 3 float
        Voxel size (mm) along X, Y, Z; None means 1 mm.

    Returns
    -------
    (n_surface_pred,) ndarray of float64
        Distances in mm, in the C order of ``pred``'s surface voxels (as MedPy's
        ``__surface_distances``). Empty when ``pred`` is empty; all ``inf`` when ``truth`` is
        empty (both with an ``EmptyMaskWarning``).

    Raises
    ------
    ValueError, TypeError
        As for ``dice``, or a bad ``spacing_mm``.

    Notes
    -----
    Surface and distance as in the module docstring (paper Eq. 2).
    """
    pred, truth = _pair(pred, truth)
    spacing = _validate.spacing(spacing_mm, 3)
    p, t = _surface.cropped(pred, truth)
    if not p.any():
        _warn("surface_distances: pred is empty; returning an empty array")
    elif not t.any():
        _warn("surface_distances: truth is empty; every distance is inf")
    sp = np.asarray(spacing, dtype=np.float64)
    surf_p, surf_t = _surface.surface(p), _surface.surface(t)
    idx_p = np.nonzero(surf_p)
    with _surface.single_thread():
        return _surface.directed(idx_p, np.column_stack(idx_p) * sp, surf_t, np.argwhere(surf_t) * sp, sp)


def _pair_summaries(pred, truth, spacing_mm, what: str) -> tuple[float, float, float]:
    pred, truth = _pair(pred, truth)
    spacing = _validate.spacing(spacing_mm, 3)
    p, t = _surface.cropped(pred, truth)
    empty = [name for name, m in (("pred", p), ("truth", t)) if not m.any()]
    if empty:
        _warn(f"{what}: {' and '.join(empty)} empty; returning NaN")
        return float("nan"), float("nan"), float("nan")
    with _surface.single_thread():
        return _surface.summaries(*_surface.both_directions(p, t, spacing))


def mean_surface_distance(pred, truth, spacing_mm) -> float:
    """The paper's mean surface distance (MSD): mean distance (mm) from the surface voxels of
    ``pred`` to the surface of ``truth``.

    Parameters
    ----------
    pred, truth : (X, Y, Z) ndarray of bool
        Segmented and ground-truth masks.
    spacing_mm : tuple of 3 float
        Voxel size (mm) along X, Y, Z; None means 1 mm.

    Returns
    -------
    float
        MSD in mm; NaN (with an ``EmptyMaskWarning``) if either mask is empty.

    Raises
    ------
    ValueError, TypeError
        As for ``dice``, or a bad ``spacing_mm``.

    Notes
    -----
    Directed (pred -> truth), as the paper's section 2.4 defines it ("the mean of the
    distances of all voxels on our segmented contour to the ground truth contour");
    equals ``medpy.metric.binary.asd(pred, truth, spacing_mm)``.
    """
    return _pair_summaries(pred, truth, spacing_mm, "mean_surface_distance")[0]


def average_symmetric_surface_distance(pred, truth, spacing_mm) -> float:
    """Average symmetric surface distance (ASSD, mm): the mean of the distances of both
    directions pooled together.

    Parameters, errors and empty masks as :func:`mean_surface_distance`; returns mm.

    Notes
    -----
    Equals ``medpy.metric.binary.assd(pred, truth, spacing_mm)``: the mean over the
    concatenation of the pred -> truth and truth -> pred distances.
    """
    return _pair_summaries(pred, truth, spacing_mm, "average_symmetric_surface_distance")[1]


def hausdorff_distance_95(pred, truth, spacing_mm) -> float:
    """95th-percentile Hausdorff distance (HD95, mm) of the pooled surface distances.

    Parameters, errors and empty masks as :func:`mean_surface_distance`; returns mm.

    Notes
    -----
    Equals ``medpy.metric.binary.hd95(pred, truth, spacing_mm)``:
    ``np.percentile(concatenate([d(pred -> truth), d(truth -> pred)]), 95)`` with linear
    interpolation. Symmetric in its arguments.
    """
    return _pair_summaries(pred, truth, spacing_mm, "hausdorff_distance_95")[2]


def volume_ml(mask, spacing_mm) -> float:
    """Volume of a mask in mL (paper Eq. 3).

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool
        Region mask.
    spacing_mm : tuple of 3 float
        Voxel size (mm) along X, Y, Z; None means 1 mm.

    Returns
    -------
    float
        ``count_nonzero(mask) * prod(spacing_mm) / 1000`` (1 mL = 1000 mm^3); 0.0 if empty.

    Raises
    ------
    ValueError, TypeError
        As for ``dice``, or a bad ``spacing_mm``.
    """
    mask = _validate.mask(mask, "mask", binary=True)
    spacing = _validate.spacing(spacing_mm, 3)
    return int(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def _volume_error(v_pred: float, v_true: float) -> float:
    return 100.0 * (v_pred - v_true) / v_true if v_true > 0 else float("nan")


def volume_error_pct(pred, truth, spacing_mm, *, absolute: bool = False) -> float:
    """Percentage volume error ``100 (V_pred - V_true) / V_true``.

    Parameters
    ----------
    pred, truth : (X, Y, Z) ndarray of bool
        Segmented and ground-truth masks.
    spacing_mm : tuple of 3 float
        Voxel size (mm) along X, Y, Z; None means 1 mm.
    absolute : bool, optional
        Return ``|error|`` (the quantity the paper averages to its 6.5 %) instead of the
        signed error (positive = over-segmentation).

    Returns
    -------
    float
        Percent; NaN (with an ``EmptyMaskWarning``) when ``truth`` is empty. An empty
        ``pred`` gives -100.

    Raises
    ------
    ValueError, TypeError
        As for ``dice``, or a bad ``spacing_mm``.

    Notes
    -----
    The spacing cancels; it is accepted (and checked) so that all metrics share one call
    signature.
    """
    pred, truth = _pair(pred, truth)
    spacing = _validate.spacing(spacing_mm, 3)
    v_true = volume_ml(truth, spacing)
    if v_true == 0:
        _warn("volume_error_pct: truth is empty; returning NaN")
        return float("nan")
    err = _volume_error(volume_ml(pred, spacing), v_true)
    return abs(err) if absolute else err


# ----------------------------------------------------------------------------- public: label maps
def _boxes(labels: np.ndarray, name: str) -> list:
    """Bounding boxes of labels 1..N_REGIONS in one pass; reject negative or unknown ids."""
    return ndimage.find_objects(_validate.label_ids(labels, name), max_label=N_REGIONS)


def _check_labels(labels) -> tuple[int, ...]:
    if labels is None:
        return tuple(sorted(REGIONS))
    if isinstance(labels, (int, np.integer)) or not isinstance(labels, Iterable):
        raise TypeError(f"labels must be an iterable of region ids, got {labels!r}")
    out = tuple(int(v) for v in labels)
    bad = [v for v in out if v not in REGIONS]
    if bad:
        raise ValueError(f"labels: unknown region id(s) {bad}; valid ids are 1..{N_REGIONS}")
    if len(set(out)) != len(out):
        raise ValueError(f"labels: duplicate region ids in {list(out)}")
    return out


def _region_metrics(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...]) -> tuple[dict, str]:
    """Metric values of one cropped region pair, and the empty-mask message ("" if none).
    Does not warn itself, so that it can run in worker threads."""
    nan = float("nan")
    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    v_p, v_t = n_p * voxel_ml, n_t * voxel_ml
    message = ""
    if n_p and n_t:
        d = 2.0 * int(np.count_nonzero(p & t)) / (n_p + n_t)
        msd, assd, hd95 = _surface.summaries(*_surface.both_directions(p, t, spacing))
    else:
        empty = " and ".join(name for name, n in (("pred", n_p), ("truth", n_t)) if n == 0)
        d = nan if n_p + n_t == 0 else 0.0
        msd = assd = hd95 = nan
        message = (f"{empty} empty; Dice {d}, surface distances NaN"
                   f"{', volume error NaN' if n_t == 0 else ''}")
    err = _volume_error(v_p, v_t)
    margin = _margin_dice(t, 1, (0, 1)) if n_t else nan
    return dict(dice=d, msd_mm=msd, assd_mm=assd, hd95_mm=hd95, volume_pred_ml=v_p, volume_true_ml=v_t,
                volume_error_pct=err, volume_error_abs_pct=abs(err), dice_one_voxel_margin=margin), message


def _n_threads(threads, n_tasks: int) -> int:
    if threads is None:
        threads = runinfo.usable_cores()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return max(1, min(int(threads), n_tasks))


def evaluate_regions(pred_labels, truth_labels, spacing_mm, *, labels=None, case=None,
                     threads: int | None = None) -> list[dict]:
    """All metrics for every region of a predicted vs ground-truth label map.

    Parameters
    ----------
    pred_labels, truth_labels : (X, Y, Z) ndarray of int
        Label maps with ids 0 (background) and 1..70 (``llseg.anatomy``).
    spacing_mm : tuple of 3 float
        Voxel size (mm) along X, Y, Z; None means 1 mm.
    labels : iterable of int, optional
        Region ids to evaluate, in output order; default all 70 (``anatomy.REGIONS``).
    case : str, optional
        Subject id: named in warnings and added to each row as ``"case"``.
    threads : int, optional
        Regions evaluated in parallel (threads); default: the CPUs available to the process.
        Results do not depend on it.

    Returns
    -------
    list of dict
        One per region, with keys ``label`` (int), ``muscle`` (anatomy key), ``side``
        ("right"/"left"), ``dice``, ``msd_mm`` (the paper's directed MSD), ``assd_mm``,
        ``hd95_mm``, ``volume_pred_ml``, ``volume_true_ml``, ``volume_error_pct`` (signed),
        ``volume_error_abs_pct``, ``dice_one_voxel_margin`` (``one_voxel_margin_dice`` of the
        truth, in-plane: a resolution reference, NaN when the truth is empty), and ``case``
        if given. Values are Python floats.

    Raises
    ------
    ValueError
        Not 3-D, shapes differ, negative or unknown label ids, bad ``labels`` or spacing.
    TypeError
        Non-integer label maps.

    Notes
    -----
    Values are identical to calling ``dice``, ``mean_surface_distance``,
    ``average_symmetric_surface_distance``, ``hausdorff_distance_95``, ``volume_ml`` and
    ``volume_error_pct`` on ``pred_labels == k`` and ``truth_labels == k`` (and
    ``one_voxel_margin_dice`` on ``truth_labels == k``); the empty-mask
    table of the module docstring applies, with one ``EmptyMaskWarning`` per affected region
    naming the case and region. Each region is cropped to the union of its two bounding
    boxes, found for all labels in one ``scipy.ndimage.find_objects`` pass per map.
    """
    pred = _validate.volume(_validate.label_map(pred_labels, "pred_labels"), "pred_labels")
    truth = _validate.volume(_validate.label_map(truth_labels, "truth_labels"), "truth_labels")
    _validate.same_shape(pred, truth, "pred_labels", "truth_labels")
    spacing = _validate.spacing(spacing_mm, 3)
    wanted = _check_labels(labels)
    boxes_p, boxes_t = _boxes(pred, "pred_labels"), _boxes(truth, "truth_labels")
    n_threads = _n_threads(threads, len(wanted))

    def one(label: int) -> tuple[dict, str]:
        bp, bt = boxes_p[label - 1], boxes_t[label - 1]
        if bp is None and bt is None:
            p = t = np.zeros((0, 0, 0), dtype=bool)
        else:                                 # union of the two boxes
            box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(bp or bt, bt or bp))
            p, t = pred[box] == label, truth[box] == label
        return _region_metrics(p, t, spacing)

    if n_threads == 1:
        with _surface.single_thread():
            results = [one(label) for label in wanted]
    else:
        with ThreadPoolExecutor(n_threads, initializer=_surface.limit_worker_threads) as pool:
            results = list(pool.map(one, wanted))

    where = f"case {case}: " if case is not None else ""
    rows = []
    for label, (values, message) in zip(wanted, results):
        if message:
            _warn(f"{where}label {label} ({region_name(label)}): {message}")
        row = {"case": case} if case is not None else {}
        row.update(label=label, muscle=REGIONS[label][0], side=REGIONS[label][1], **values)
        rows.append(row)
    log.debug("%sevaluated %d regions", where, len(rows))
    return rows
