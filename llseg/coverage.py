"""Which stretch of the leg a scan covers, and what stage 1 does with it.

The paper's scans all run from T12 to the ankle, and stage 1 splits them into body parts by
fixed fractions of that span (``stage1.DEFAULT_PART_RANGES``). Most lower-limb MRI covers less:
the thigh, the calf, pelvis to knee. A scan's **coverage** is the ``(top, bottom)`` stretch of
the T12 (0.0) to ankle (1.0) span it holds, on the same scale as ``anatomy.Muscle.si_extent``
and ``anatomy.LANDMARKS``. From it follow:

- the body parts in view and where they lie in the scan (:func:`part_ranges_in_view`): for a
  whole-leg scan, ``(0, 1)``, exactly the paper's fixed split;
- the muscles in view (:func:`regions_in_view`): a muscle outside is reported absent and never
  gets a box estimated from its neighbours;
- where a body part or a muscle reaches past the scan's ends (:func:`slices_of_extent`): whole-leg
  networks see a cut part or muscle at its trained extent, the rest filled in
  (``llseg.cascade``, ``cut_padding``).

Where the coverage comes from (:func:`coverage_of_scan`), first match wins:

1. the user (``llseg segment --coverage thigh``, a preset of :data:`COVERAGE_PRESETS` or
   ``TOP:BOTTOM``);
2. a scan at least ``WHOLE_LEG_MIN_MM`` long is a whole-leg scan;
3. a shorter one with a label map: from its muscles (:func:`coverage_from_labels`, training and
   evaluation);
4. a shorter one without labels (``llseg segment``): from its body outline
   (:func:`coverage_from_profile`), the area of the body in each slice matched against the
   training cohort's outline along the leg (:func:`reference_body_profile`, written beside the
   networks as ``models/body_profile.json``). This is an estimate: it is printed with its fit, and a fit worse than
   ``MAX_PROFILE_MISFIT`` is an error asking for ``--coverage``; a muscle must reach
   ``ESTIMATE_VIEW_MARGIN`` past a cut end of an estimated coverage to count as in view.

A short scan with none of these is an error, never a silent whole-leg guess.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from . import anatomy

__all__ = [
    "WHOLE",
    "WHOLE_LEG_MIN_MM",
    "REFERENCE_SPAN_MM",
    "COVERAGE_PRESETS",
    "parse_coverage",
    "coverage_from_labels",
    "PROFILE_GRID",
    "MAX_PROFILE_MISFIT",
    "ESTIMATE_VIEW_MARGIN",
    "body_area_profile",
    "reference_body_profile",
    "coverage_from_profile",
    "coverage_of_scan",
    "part_ranges_in_view",
    "regions_in_view",
    "regions_inside_view",
    "slices_of_extent",
    "CUT_PADDING_MODES",
]

#: The whole T12-to-ankle span.
WHOLE = (0.0, 1.0)

#: T12 to ankle of the reference 1.8 m adult (``anatomy.si_extent``'s scale): 0.6 of the height.
REFERENCE_SPAN_MM = 1080.0

#: A scan at least this long (mm, along Z) counts as whole-leg: the T12-to-ankle span of a 1.5 m
#: adult is about 900 mm; pelvis-to-knee scans are about 560 mm and thigh-only scans 450 mm.
WHOLE_LEG_MIN_MM = 800.0

#: Named coverages (top, bottom) from ``anatomy.LANDMARKS``.
COVERAGE_PRESETS: dict[str, tuple[float, float]] = {
    "whole": WHOLE,
    "pelvis_knee": (anatomy.LANDMARKS["iliac_crest"], anatomy.LANDMARKS["knee_joint"]),
    "thigh": (anatomy.LANDMARKS["hip_joint"], anatomy.LANDMARKS["knee_joint"]),
    "calf": (anatomy.LANDMARKS["knee_joint"], anatomy.LANDMARKS["ankle_joint"]),
}

#: How a partial scan is extended past its cut ends for the networks (``llseg.cascade``):
#: ``numpy.pad`` modes, or ``"none"`` to show the networks the cut scan as it is.
CUT_PADDING_MODES = ("edge", "reflect", "none")

#: Where a reference body profile is sampled: fractions of the T12 (0) to ankle (1) span.
PROFILE_GRID = np.linspace(0.0, 1.0, 201)

#: The largest RMS misfit, relative to the scan's mean body area, of an outline-based coverage
#: estimate (:func:`coverage_from_profile`). Measured on the cpu-profile phantom's 13 test cases:
#: 0.04-0.12 on their thigh, calf and pelvis-to-knee cuts, 0.07-0.19 on the whole legs; a
#: uniform cylinder fits at 0.22, a reversed thigh at 0.32, random areas at 0.55.
MAX_PROFILE_MISFIT = 0.2

#: How far (fraction of the span) a muscle must reach past a cut end of an estimated coverage
#: to count as in view: the largest error of the outline estimate on the phantom's thigh, calf
#: and pelvis-to-knee cuts, 0.038 (13 test cases), rounded up. A muscle that reaches less far
#: into the scan is reported absent rather than segmented from a field of view it may not be in.
ESTIMATE_VIEW_MARGIN = 0.04

#: Body scale factors (subject's T12-to-ankle span / ``REFERENCE_SPAN_MM``) searched by
#: :func:`coverage_from_profile`: 1.35 m to 2.35 m tall, about.
_BODY_SCALES = np.linspace(0.75, 1.3, 45)

#: Step (fraction of the span) of the scan's top searched by :func:`coverage_from_profile`.
_TOP_STEP = 0.0025

#: A body part is run by stage 1 when at least this share of the span of it is in view.
_MIN_PART_OVERLAP = 0.05


def parse_coverage(value) -> tuple[float, float]:
    """A coverage from a preset name, ``"TOP:BOTTOM"`` or a pair of fractions.

    Returns
    -------
    (float, float)
        ``(top, bottom)`` fractions of the T12 (0) to ankle (1) span, ``0 <= top < bottom <= 1``.

    Raises
    ------
    ValueError
        An unknown name, an unparsable string or fractions out of order or range.
    """
    given = value
    if isinstance(value, str):
        if value in COVERAGE_PRESETS:
            return COVERAGE_PRESETS[value]
        parts = value.split(":")
        if len(parts) != 2:
            raise ValueError(f"coverage {value!r}: give a preset ({', '.join(COVERAGE_PRESETS)}) or TOP:BOTTOM "
                             "fractions of the T12 (0) to ankle (1) span, e.g. 0.19:0.60")
        value = parts
    try:
        top, bottom = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"coverage {given!r}: expected two fractions (top, bottom)") from None
    if not 0.0 <= top < bottom <= 1.0:
        raise ValueError(f"coverage {given!r}: fractions must satisfy 0 <= top < bottom <= 1 "
                         "(0 = T12, 1 = ankle)")
    return top, bottom


def coverage_from_labels(labels, spacing_z_mm: float) -> tuple[float, float]:
    """Estimate the coverage of a scan from the muscles in its label map.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Label map in RAS+ (Z = 0 inferior), ids 0..70.
    spacing_z_mm : float
        Slice spacing (mm).

    Returns
    -------
    (float, float)
        ``(top, bottom)`` fractions of the T12-to-ankle span, clipped to ``[0, 1]``.

    Raises
    ------
    ValueError
        No muscle in the label map.

    Notes
    -----
    Each muscle's top and bottom slice is matched with its reference extent
    (``anatomy.Muscle.si_extent``); ends cut by the edge of the scan carry no information and are
    left out. A straight line ``z = a + b u`` through these (slice, fraction) pairs (least
    squares) gives the fractions at the scan's two ends. With fewer than two distinct
    reference fractions, or a fitted length outside 0.6-1.6 times the reference span, the
    slope is fixed at the reference span and only the offset is fitted (median), so a label
    map with one muscle still gives an answer.
    """
    labels = np.asarray(labels)
    if not float(spacing_z_mm) > 0:
        raise ValueError(f"coverage_from_labels: spacing_z_mm must be > 0, got {spacing_z_mm!r}")
    n = labels.shape[2]
    objects = ndi.find_objects(labels.astype(np.int32, copy=False), max_label=anatomy.N_REGIONS)
    z_of, u_of = [], []
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        top_u, bottom_u = anatomy.muscle_of_label(lab).si_extent
        if sl[2].stop < n:                    # top not cut by the scan's upper edge
            z_of.append(sl[2].stop)
            u_of.append(top_u)
        if sl[2].start > 0:                   # bottom not cut by the lower edge
            z_of.append(sl[2].start)
            u_of.append(bottom_u)
    if not any(sl is not None for sl in objects):
        raise ValueError("coverage_from_labels: the label map holds no muscle")
    ref_slope = -REFERENCE_SPAN_MM / float(spacing_z_mm)       # slices per unit of fraction (u grows down)
    z, u = np.asarray(z_of, float), np.asarray(u_of, float)
    slope = ref_slope
    if np.unique(u).size >= 2:
        fitted = np.polyfit(u, z, 1)[0]
        if 0.6 <= fitted / ref_slope <= 1.6:
            slope = float(fitted)
    if z.size:
        offset = float(np.median(z - slope * u))
    else:  # every muscle touches both ends: centre the scan on the muscles' mean reference extent
        present = [anatomy.muscle_of_label(lab).si_extent for lab, sl in enumerate(objects, 1) if sl is not None]
        offset = n / 2 - slope * float(np.mean(present))
    top = (n - offset) / slope
    bottom = (0.0 - offset) / slope
    return float(np.clip(top, 0.0, 1.0)), float(np.clip(bottom, 0.0, 1.0))


def body_area_profile(image, spacing_mm) -> np.ndarray:
    """The area of the body in each axial slice.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        The scan (any intensity scale), Z axial.
    spacing_mm : sequence of 3 float
        Voxel size (mm).

    Returns
    -------
    (Z,) ndarray of float
        Body area (mm^2) per slice: voxels above the image's Otsu threshold, opened (3 x 3
        cross) and with holes filled in each slice.
    """
    image = np.asarray(image, dtype=np.float32)
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndi.generate_binary_structure(2, 1)     # slice by slice
    body = ndi.binary_opening(image > threshold_otsu(image), structure=in_plane)   # no specks of noise
    body = ndi.binary_fill_holes(body, structure=in_plane)
    return body.sum(axis=(0, 1)) * float(spacing_mm[0]) * float(spacing_mm[1])


def _slice_fractions(n_slices: int, top: float, bottom: float) -> np.ndarray:
    """Fraction of the span at each slice centre (slice 0 at the bottom, RAS+)."""
    return bottom - (np.arange(n_slices) + 0.5) / n_slices * (bottom - top)


def _body_scale(n_slices: int, spacing_z_mm: float, top: float, bottom: float) -> float:
    """The subject's T12-to-ankle span over the reference span, from a scan of known coverage."""
    return n_slices * spacing_z_mm / ((bottom - top) * REFERENCE_SPAN_MM)


def reference_body_profile(profiles, coverages, spacing_z_mm: float) -> np.ndarray:
    """The cohort's body outline along the leg: median body area at each fraction of the span.

    Parameters
    ----------
    profiles : sequence of (Z_i,) ndarray
        :func:`body_area_profile` of each (training) case, mm^2.
    coverages : sequence of (float, float)
        Each case's coverage (:func:`coverage_of_scan`).
    spacing_z_mm : float
        Slice spacing (mm), shared by the cases (the study grid).

    Returns
    -------
    (len(PROFILE_GRID),) ndarray of float
        Body area (mm^2) of the reference 1.8 m adult at each ``PROFILE_GRID`` fraction: each
        case's areas divided by its body scale squared (a subject k times as tall is taken to be
        k times as wide), median over the cases that cover the fraction; NaN where none does.
    """
    rows = []
    for profile, (top, bottom) in zip(profiles, coverages):
        profile = np.asarray(profile, float)
        scale = _body_scale(profile.size, spacing_z_mm, top, bottom)
        u = _slice_fractions(profile.size, top, bottom)[::-1]        # increasing
        rows.append(np.interp(PROFILE_GRID, u, profile[::-1] / scale ** 2, left=np.nan, right=np.nan))
    rows = np.vstack(rows)
    out = np.full(PROFILE_GRID.size, np.nan)
    covered = ~np.all(np.isnan(rows), axis=0)
    out[covered] = np.nanmedian(rows[:, covered], axis=0)
    return out


def coverage_from_profile(profile, spacing_z_mm: float, reference) -> tuple[tuple[float, float], float]:
    """Estimate a scan's coverage by matching its body outline with the cohort's.

    Parameters
    ----------
    profile : (Z,) ndarray
        :func:`body_area_profile` of the scan (mm^2), on the grid of ``reference``.
    spacing_z_mm : float
        Slice spacing (mm).
    reference : (len(PROFILE_GRID),) ndarray
        :func:`reference_body_profile` (NaN where the cohort has no data).

    Returns
    -------
    coverage : (float, float)
        ``(top, bottom)`` fractions of the T12-to-ankle span, clipped to ``[0, 1]``.
    misfit : float
        RMS difference between the scan's and the fitted reference areas over the scan's mean
        area (0 = perfect; compare with ``MAX_PROFILE_MISFIT``).

    Notes
    -----
    A grid search over the subject's body scale ``k`` (``_BODY_SCALES``: the scan then spans
    ``Z * dz / (k * REFERENCE_SPAN_MM)`` of the span, and its areas are compared with
    ``k**2`` times the reference) and the scan's top (steps of 0.0025, up to 0.02 past either
    end), least squares over the slices; at least 90 % of the slices must fall where the
    reference has data.
    """
    profile = np.asarray(profile, float)
    reference = np.asarray(reference, float)
    n = profile.size
    best = (np.inf, (0.0, 1.0))
    for k in _BODY_SCALES:
        span = n * float(spacing_z_mm) / (k * REFERENCE_SPAN_MM)
        if span > 1.04:
            continue
        tops = np.arange(-0.02, 1.02 - span + 1e-9, _TOP_STEP)
        u = tops[:, None] + span - (np.arange(n)[None, :] + 0.5) / n * span      # candidate x slice
        expected = np.interp(u, PROFILE_GRID, reference, left=np.nan, right=np.nan) * k ** 2
        known = ~np.isnan(expected)
        sq = np.where(known, (profile[None, :] - np.nan_to_num(expected)) ** 2, 0.0)
        mse = sq.sum(axis=1) / np.maximum(known.sum(axis=1), 1)
        mse[known.mean(axis=1) < 0.9] = np.inf
        i = int(np.argmin(mse))
        if mse[i] < best[0]:
            best = (float(mse[i]), (float(tops[i]), float(tops[i] + span)))
    mse, (top, bottom) = best
    misfit = float(np.sqrt(mse) / max(profile.mean(), 1e-9)) if np.isfinite(mse) else float("inf")
    return (float(np.clip(top, 0.0, 1.0)), float(np.clip(bottom, 0.0, 1.0))), misfit


def coverage_of_scan(n_slices: int, spacing_z_mm: float, *, labels=None, coverage=None, profile=None,
                     reference=None, return_source: bool = False):
    """The coverage of one scan on the study grid (see the module docstring for the rule).

    Parameters
    ----------
    n_slices : int
        Slices (Z size).
    spacing_z_mm : float
        Slice spacing (mm).
    labels : (X, Y, Z) ndarray of int, optional
        The scan's label map, used when the scan is shorter than a whole leg.
    coverage : str or (float, float), optional
        What the user says (:func:`parse_coverage`); it wins over everything else.
    profile, reference : ndarray, optional
        The scan's :func:`body_area_profile` and the cohort's :func:`reference_body_profile`,
        used for a short scan without labels.
    return_source : bool
        Also return where the coverage came from: ``"given"``, ``"scan length"``, ``"labels"``
        or ``"body outline"`` (with the fit's misfit, e.g. ``"body outline, misfit 0.08"``).

    Returns
    -------
    (float, float), or ((float, float), str) with ``return_source``

    Raises
    ------
    ValueError
        A scan shorter than ``WHOLE_LEG_MIN_MM`` with neither ``labels``, ``coverage`` nor a
        profile and reference; or an outline that fits the reference worse than
        ``MAX_PROFILE_MISFIT``.
    """
    length_mm = n_slices * float(spacing_z_mm)
    if coverage is not None:
        found, source = parse_coverage(coverage), "given"
    elif length_mm >= WHOLE_LEG_MIN_MM:
        found, source = WHOLE, "scan length"
    elif labels is not None:
        found, source = coverage_from_labels(labels, spacing_z_mm), "labels"
    elif profile is not None and reference is not None:
        found, misfit = coverage_from_profile(profile, spacing_z_mm, reference)
        if not misfit <= MAX_PROFILE_MISFIT:
            raise ValueError(f"the scan is {length_mm:.0f} mm long and its body outline does not match the "
                             f"training cohort's (best fit {found[0]:.2f}-{found[1]:.2f} of the T12-to-ankle span, "
                             f"misfit {misfit:.2f} > {MAX_PROFILE_MISFIT}): say what it covers with --coverage "
                             f"({', '.join(COVERAGE_PRESETS)}, or TOP:BOTTOM fractions)")
        source = f"body outline, misfit {misfit:.2f}"
    else:
        raise ValueError(f"the scan is {length_mm:.0f} mm long, shorter than a whole leg (T12 to ankle, at least "
                         f"{WHOLE_LEG_MIN_MM:.0f} mm), and there is no body outline to estimate its coverage from: "
                         f"say what it covers with --coverage "
                         f"({', '.join(COVERAGE_PRESETS)}, or TOP:BOTTOM fractions of the T12 (0) to ankle (1) span)")
    return (found, source) if return_source else found


def part_ranges_in_view(coverage, part_ranges: Mapping[str, tuple[float, float]]
                        ) -> dict[str, tuple[float, float]]:
    """The body parts a scan shows, as ``(top, bottom)`` fractions of the scan itself.

    Parameters
    ----------
    coverage : (float, float)
        The scan's ``(top, bottom)`` on the T12-to-ankle span.
    part_ranges : mapping of str to (float, float)
        Part -> ``(top, bottom)`` on the T12-to-ankle span (``stage1.DEFAULT_PART_RANGES``).

    Returns
    -------
    dict of str to (float, float)
        Each part with at least 0.05 of the span in view, its visible stretch rescaled to the
        scan (``stage1.split_parts`` input). For ``coverage = (0, 1)`` this is ``part_ranges``
        itself, value for value.
    """
    top, bottom = parse_coverage(coverage)
    length = bottom - top
    out = {}
    for part, (p_top, p_bottom) in part_ranges.items():
        lo, hi = max(p_top, top), min(p_bottom, bottom)
        if hi - lo >= _MIN_PART_OVERLAP - 1e-9 or (top, bottom) == WHOLE:
            out[part] = ((lo - top) / length, (hi - top) / length)
    return out


def _overlap(extent, coverage) -> float:
    return min(extent[1], coverage[1]) - max(extent[0], coverage[0])


def _inset(coverage, margin: float) -> tuple[float, float]:
    """The coverage with each cut end (not T12 at 0, not the ankle at 1) moved ``margin`` inwards."""
    top, bottom = parse_coverage(coverage)
    return (top + margin if top > WHOLE[0] else top), (bottom - margin if bottom < WHOLE[1] else bottom)


def regions_in_view(coverage, margin: float = 0.0) -> tuple[int, ...]:
    """Region labels whose muscle's reference extent overlaps the coverage (sorted); with
    ``margin``, it must reach more than ``margin`` past a cut end into the scan (for an estimated
    coverage: ``ESTIMATE_VIEW_MARGIN``)."""
    view = _inset(coverage, margin)
    return tuple(sorted(lab for lab in anatomy.REGIONS
                        if _overlap(anatomy.muscle_of_label(lab).si_extent, view) > 0))


def regions_inside_view(coverage, margin: float = 0.0) -> tuple[int, ...]:
    """Region labels whose muscle's reference extent lies wholly inside the coverage (sorted),
    at least ``margin`` from a cut end: the only ones whose box may be estimated from neighbours
    when stage 1 misses them."""
    top, bottom = _inset(coverage, margin)
    return tuple(sorted(lab for lab in anatomy.REGIONS
                        if top <= anatomy.muscle_of_label(lab).si_extent[0]
                        and anatomy.muscle_of_label(lab).si_extent[1] <= bottom))


def slices_of_extent(coverage, extent, n_slices: int) -> tuple[float, float]:
    """Where a stretch of the T12-to-ankle span lies along a scan's Z axis, also past its ends.

    Parameters
    ----------
    coverage : (float, float)
        The scan's ``(top, bottom)`` on the span.
    extent : (float, float)
        The stretch ``(top, bottom)`` on the span (a body part, ``anatomy.Muscle.si_extent``).
    n_slices : int
        The scan's Z size; slice 0 is at the ankle end (RAS+).

    Returns
    -------
    (float, float)
        ``(lo, hi)`` in slice coordinates (slice ``k`` covers ``[k, k + 1)``): ``lo < 0`` where
        the stretch reaches below the scan, ``hi > n_slices`` where it reaches above.
    """
    top, bottom = parse_coverage(coverage)
    per_span = n_slices / (bottom - top)
    return (bottom - extent[1]) * per_span, (bottom - extent[0]) * per_span
