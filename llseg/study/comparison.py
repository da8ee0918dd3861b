"""Figure 4: stage 1 alone versus stage 2 from different boxes (paper sections 2.2.2 and 3).

The paper's Figure 4 shows one slice of the right adductor longus segmented five ways:

* (a) ``stage1``: the stage-1 output itself (the region of the stage-1 label map);
* (b) ``stage2_gt_box``: stage 2 on a crop from the *ground-truth* box ("a hypothetical situation
  in which the images were cropped with the ground truth labels"); here one crop, the tight
  ground-truth box enlarged by ``gt_ratio`` on every edge (default 1.4, the mean of the training
  ratio range 1.0-1.8, i.e. the average crop the network saw in training);
* (c), (d) ``stage2_box_ratio_low`` / ``stage2_box_ratio_high``: stage 2 on *one* crop from the
  stage-1 box enlarged by a fixed ratio (defaults 1.2 and 1.8) on every edge;
* (e) ``stage2_tta``: stage 2 averaged over the ``n_tta_boxes`` (paper: six) random enlargements
  of the stage-1 box, the cascade's test-time augmentation (``stage2.predict_region``).

Every stage-2 variant goes through ``stage2.predict_region`` (a single fixed-ratio crop is
``n_boxes=1, ratio_range=(r, r)``) and is thresholded like ``postprocess.merge_regions``
(``p >= threshold``); ``clean=True`` also applies ``postprocess.clean_region`` (largest component,
in-plane closing, hole filling). Stage 1 is run once per case by the caller
(``cascade.run_stage1``) or read from ``llseg predict``'s outputs; it is shared by all muscles.

Each variant is scored by Dice against the ground truth and by a contour *roughness*
(:func:`roughness`), the paper's claim being that the six-box average "improve[s] the
segmentation accuracy and contour smoothness". Volumes are ``(X, Y, Z)`` RAS+ study-grid arrays.

References
----------
X. Ni et al., "Automatic segmentation of all lower limb muscles from high-resolution MRI using a
cascaded 3-D DCNN", J. Med. Imag. 6(4), 044009 (2019), section 2.2.2 and Fig. 4.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage import measure

from .. import _validate, anatomy, boxes, metrics, postprocess, stage2

__all__ = [
    "VARIANTS",
    "VARIANT_COLORS",
    "TRUTH_COLOR",
    "variant_titles",
    "boxes_from_record",
    "roughness",
    "region_probabilities",
    "region_variants",
    "variant_boxes",
    "compare_case",
    "compare_cases",
    "summarize",
    "region_values",
    "summary_table",
    "centre_slice",
    "panel_figure",
    "dice_figure",
]

log = logging.getLogger(__name__)

#: The five variants of Figure 4, in panel order (a)-(e); also the keys of ``metrics/two_stages.json``.
VARIANTS = ("stage1", "stage2_gt_box", "stage2_box_ratio_low", "stage2_box_ratio_high", "stage2_tta")
#: One colour per variant, shared by the contour panels and the Dice plot (none of them green).
VARIANT_COLORS = {"stage1": "#984ea3", "stage2_gt_box": "#377eb8", "stage2_box_ratio_low": "#ff7f00",
                  "stage2_box_ratio_high": "#a65628", "stage2_tta": "#e41a1c"}
#: Ground-truth contour colour (the paper draws the ground truth in green).
TRUTH_COLOR = "#00e000"


def variant_titles(*, ratios=(1.2, 1.8), gt_ratio: float = 1.4, n_tta_boxes: int = 6) -> dict[str, str]:
    """Short human-readable description of each variant, e.g. ``"(c) stage 2, stage-1 box x1.2"``."""
    low, high = (float(r) for r in ratios)
    return {"stage1": "(a) stage 1 alone",
            "stage2_gt_box": f"(b) stage 2, ground-truth box ×{float(gt_ratio):g}",
            "stage2_box_ratio_low": f"(c) stage 2, stage-1 box ×{low:g}",
            "stage2_box_ratio_high": f"(d) stage 2, stage-1 box ×{high:g}",
            "stage2_tta": f"(e) stage 2, mean of {int(n_tta_boxes)} boxes"}


def boxes_from_record(record: Mapping) -> dict[int, np.ndarray]:
    """Stage-1 boxes as written by ``llseg predict`` (``<case>_boxes.json``): ``{label: (3, 2) box}``.

    Parameters
    ----------
    record : mapping
        ``{"boxes": {"<label>": [[lo, hi], [lo, hi], [lo, hi]], ...}, ...}`` (a bare
        ``{"<label>": box}`` mapping is accepted too). ``None`` boxes are dropped.
    """
    raw = record.get("boxes", record) if isinstance(record, Mapping) else None
    if not isinstance(raw, Mapping):
        raise TypeError(f"record: expected a mapping with a 'boxes' mapping, got {type(record).__name__}")
    return {int(k): _validate.box(v, f"boxes[{k}]") for k, v in raw.items() if v is not None}


# --------------------------------------------------------------------------- roughness


def roughness(mask) -> float:
    """Contour roughness of a 3-D mask: mean over its axial slices of contour length / convex-hull perimeter.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool or int
        Region mask (non-zero = foreground), RAS+, Z = slice axis.

    Returns
    -------
    float
        ``mean_z  sum_k L_k / sum_k H_k`` over the slices holding foreground, where ``k`` runs over
        the slice's 8-connected pieces, ``L_k`` is the length of the piece's contours (outline
        and holes) and ``H_k`` the perimeter of their convex hull. >= 1; 1.0 for convex outlines
        (a filled rectangle gives exactly 1); jagged, notched or holed outlines give more.
        NaN for an empty mask (there is no contour; never a silent 0).

    Notes
    -----
    Contours are the marching-squares iso-lines at 0.5 (``skimage.measure.find_contours``, with
    8-connected foreground), which run through the voxel-edge midpoints and cut convex pixel
    corners, so a straight or convex digital edge is not penalised for its pixel steps beyond
    the half-voxel corner cuts; the hull is ``scipy.spatial.ConvexHull`` of the contour points.
    ``skimage.measure.perimeter`` is not used because its weighted boundary-pixel count
    underestimates thin and small pieces (a 1 x 6 pixel bar gets 4), which can put the ratio below
    1. Each piece has its own hull, so fragmentation alone does not change the value (Dice
    covers it). Lengths are in pixels; with anisotropic in-plane spacing the value describes the
    pixel-grid outline.
    """
    from scipy.spatial import ConvexHull

    arr = np.asarray(mask)
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"mask: expected a bool or integer mask, got dtype {arr.dtype}")
    arr = _validate.volume(arr, "mask") != 0
    found = ndimage.find_objects(arr.view(np.uint8))
    if not found or found[0] is None:
        return float("nan")
    ratios = []
    for z in range(found[0][2].start, found[0][2].stop):
        pieces = measure.regionprops(measure.label(arr[:, :, z], connectivity=2))
        if not pieces:
            continue
        length = hull = 0.0
        for piece in pieces:
            contours = measure.find_contours(np.pad(piece.image, 1).astype(np.float32), 0.5, fully_connected="high")
            length += sum(float(np.sum(np.hypot(*np.diff(c, axis=0).T))) for c in contours)   # closed polylines
            hull += ConvexHull(np.concatenate(contours)).area                                     # 2-D: perimeter
        ratios.append(length / hull)
    return float(np.mean(ratios))


# --------------------------------------------------------------------------- variants of one region


def _model_size(model, size) -> tuple[int, int, int]:
    if size is not None:
        return stage2._check_size(size)
    shape = tuple(model.input_shape[1:4])
    if any(s is None for s in shape):
        raise ValueError(f"model {getattr(model, 'name', '?')} has no fixed input size {shape}; pass size=")
    return tuple(int(s) for s in shape)


def region_probabilities(model, image, truth, *, muscle: str, side: str, stage1_box, size=None,
                         ratios=(1.2, 1.8), gt_ratio: float = 1.4, n_tta_boxes: int = 6,
                         ratio_range=(1.0, 1.8), seed=0) -> dict[str, tuple | None]:
    """Stage-2 foreground probabilities of one region from the four boxes of Figure 4 (b)-(e).

    Parameters
    ----------
    model : keras.Model
        The muscle's stage-2 network (shared by both sides; left crops are mirrored).
    image : (X, Y, Z) ndarray of float
        Study-grid image, RAS+.
    truth : (X, Y, Z) ndarray of int
        Ground-truth label map (``llseg.anatomy`` ids); only its box is used, for (b).
    muscle, side : str
        Muscle key (or Table-1 name) and "right" / "left".
    stage1_box : (3, 2) array of int or None
        The region's stage-1 box on the study grid; None gives None for (c)-(e).
    size : tuple of 3 int, optional
        Network input size; default the model's fixed input shape.
    ratios : (float, float)
        Per-edge enlargement ratios of the single stage-1 crops (c) and (d).
    gt_ratio : float
        Per-edge enlargement ratio of the ground-truth crop (b); 1.0 = the tight box.
    n_tta_boxes, ratio_range, seed
        Test-time boxes of (e), as ``stage2.predict_region`` (and ``llseg predict``).

    Returns
    -------
    dict of str -> (tuple of 3 slice, ndarray of float32) or None
        Keys ``VARIANTS[1:]``; each the ``stage2.predict_region`` output ``(slices, prob)``; None
        when the box is missing (no stage-1 box, or the region is absent from ``truth`` for (b)).
    """
    image = _validate.volume(image, "image")
    truth = _validate.label_map(_validate.volume(truth, "truth"), "truth")
    _validate.same_shape(image, truth, "image", "truth")
    label = anatomy.label_id(anatomy.muscle(muscle).key, side)
    size = _model_size(model, size)
    low, high = (float(r) for r in ratios)
    mirror = side == "left"

    def run(box, n, rng_range):
        return stage2.predict_region(model, image, box, size=size, mirror=mirror, n_boxes=n,
                                     ratio_range=rng_range, seed=seed)

    tight = boxes.bounding_box(truth == label)
    out: dict[str, tuple | None] = {v: None for v in VARIANTS[1:]}
    if tight is not None:
        out["stage2_gt_box"] = run(tight, 1, (gt_ratio, gt_ratio))
    if stage1_box is not None:
        out["stage2_box_ratio_low"] = run(stage1_box, 1, (low, low))
        out["stage2_box_ratio_high"] = run(stage1_box, 1, (high, high))
        out["stage2_tta"] = run(stage1_box, int(n_tta_boxes), tuple(ratio_range))
    return out


def variant_boxes(truth, *, muscle: str, side: str, stage1_box, ratios=(1.2, 1.8), gt_ratio: float = 1.4,
                  n_tta_boxes: int = 6, ratio_range=(1.0, 1.8), seed=0) -> dict[str, list[np.ndarray]]:
    """The crop boxes behind each variant of one region (for drawing; no network is run).

    Parameters are those of :func:`region_probabilities`. Returns ``{variant: [box, ...]}``:
    ``stage1`` the stage-1 box itself, (b)-(d) the one enlarged box cropped, ``stage2_tta`` the
    ``n_tta_boxes`` boxes of ``boxes.tta_boxes`` (the same draws as ``stage2.predict_region`` with
    the same seed); an empty list where there is no box.
    """
    truth = _validate.label_map(_validate.volume(truth, "truth"), "truth")
    label = anatomy.label_id(anatomy.muscle(muscle).key, side)
    low, high = (float(r) for r in ratios)
    tight = boxes.bounding_box(truth == label)
    out = {v: [] for v in VARIANTS}
    if tight is not None:
        out["stage2_gt_box"] = [boxes.enlarge_box(tight, gt_ratio, gt_ratio, truth.shape)]
    if stage1_box is not None:
        b = _validate.box(stage1_box, "stage1_box", ndim=3, shape=truth.shape, nonempty=True)
        out["stage1"] = [b]
        out["stage2_box_ratio_low"] = [boxes.enlarge_box(b, low, low, truth.shape)]
        out["stage2_box_ratio_high"] = [boxes.enlarge_box(b, high, high, truth.shape)]
        out["stage2_tta"] = boxes.tta_boxes(b, n=int(n_tta_boxes), ratio_range=tuple(ratio_range), seed=seed,
                                            shape=truth.shape)
    return out


def region_variants(model, image, truth, stage1_labels, *, muscle: str, side: str, stage1_box, size=None,
                    ratios=(1.2, 1.8), gt_ratio: float = 1.4, n_tta_boxes: int = 6, ratio_range=(1.0, 1.8),
                    seed=0, threshold: float = 0.5, clean: bool = False,
                    closing_radius_vox=(1, 1, 0)) -> dict[str, np.ndarray]:
    """The five binary masks of Figure 4 for one region of one case.

    Parameters
    ----------
    model, image, truth, muscle, side, stage1_box, size, ratios, gt_ratio, n_tta_boxes, ratio_range, seed
        As in :func:`region_probabilities`.
    stage1_labels : (X, Y, Z) ndarray of int
        The stage-1 label map on the study grid (``cascade.run_stage1(...)["labels"]``).
    threshold : float
        Foreground where the averaged probability ``>= threshold`` (as ``postprocess``).
    clean : bool
        Also apply ``postprocess.clean_region`` (largest component, closing, hole filling) to
        every variant, stage 1 included.
    closing_radius_vox : (3,) tuple of int
        Closing element of ``clean``.

    Returns
    -------
    dict of str -> (X, Y, Z) ndarray of bool
        One mask per name in ``VARIANTS`` (empty where the variant has no box).
    """
    stage1_labels = _validate.label_map(_validate.volume(stage1_labels, "stage1_labels"), "stage1_labels")
    _validate.same_shape(image, stage1_labels, "image", "stage1_labels")
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    label = anatomy.label_id(anatomy.muscle(muscle).key, side)
    probs = region_probabilities(model, image, truth, muscle=muscle, side=side, stage1_box=stage1_box, size=size,
                                 ratios=ratios, gt_ratio=gt_ratio, n_tta_boxes=n_tta_boxes,
                                 ratio_range=ratio_range, seed=seed)
    out = {"stage1": stage1_labels == label}
    for name, value in probs.items():
        mask = np.zeros(stage1_labels.shape, dtype=bool)
        if value is not None:
            slices, prob = value
            mask[slices] = prob >= threshold
        out[name] = mask
    if clean:
        out = {k: postprocess.clean_region(v, closing_radius_vox=closing_radius_vox) for k, v in out.items()}
    return out


# --------------------------------------------------------------------------- all regions, all cases


def compare_case(image, truth, stage1_labels, stage1_boxes: Mapping, models_by_key: Mapping, *, case: str = "",
                 estimated=(), muscles: Sequence[str] | None = None, sides=("right", "left"),
                 sizes_by_key: Mapping | None = None, **kwargs) -> list[dict]:
    """Dice and roughness of the five variants for every (muscle, side) of one case.

    Parameters
    ----------
    image, truth, stage1_labels
        As in :func:`region_variants` (stage 1 ran once for the case, shared by all muscles).
    stage1_boxes : mapping of int -> (3, 2) box
        Stage-1 box per region label (``cascade.run_stage1(...)["boxes"]`` or
        :func:`boxes_from_record`); a missing label means "no box".
    models_by_key : mapping of str -> keras.Model
        Stage-2 network per muscle key.
    case : str
        Case id written into the rows.
    estimated : collection of int
        Labels whose stage-1 box stage 1 did not find and the box priors supplied (the keys of
        ``cascade.run_stage1(...)["estimated"]``); recorded in the ``box_source`` column.
    muscles : sequence of str, optional
        Muscle keys to score; default all of ``llseg.anatomy.MUSCLES`` (35).
    sides : sequence of str
        Default both legs.
    sizes_by_key : mapping of str -> tuple of 3 int, optional
        Input size per muscle; default each model's fixed input shape.
    **kwargs
        ``ratios, gt_ratio, n_tta_boxes, ratio_range, seed, threshold, clean,
        closing_radius_vox`` of :func:`region_variants`.

    Returns
    -------
    list of dict
        One row per (muscle, side, variant): ``case, muscle, side, label, box_source, variant, dice,
        roughness, n_voxels``; ``box_source`` is "stage1", "priors" or "none" (no stage-1 box).
        Dice is 0 for an empty prediction of a present region and NaN
        (``metrics.EmptyMaskWarning``) when both are empty; roughness is NaN for empty masks.
    """
    keys = [m.key for m in anatomy.MUSCLES] if muscles is None else [anatomy.muscle(k).key for k in muscles]
    missing = [k for k in keys if k not in models_by_key]
    if missing:
        raise ValueError(f"models_by_key: no stage-2 model for {missing}")
    sizes_by_key = dict(sizes_by_key or {})
    estimated = {int(k) for k in estimated}
    rows, empty = [], {v: 0 for v in VARIANTS}
    for key in keys:
        for side in sides:
            label = anatomy.label_id(key, side)
            masks = region_variants(models_by_key[key], image, truth, stage1_labels, muscle=key, side=side,
                                    stage1_box=stage1_boxes.get(label), size=sizes_by_key.get(key), **kwargs)
            target = np.asarray(truth) == label
            source = "none" if stage1_boxes.get(label) is None else "priors" if label in estimated else "stage1"
            # Score inside the box holding every mask (same Dice and roughness, far fewer voxels).
            found = ndimage.find_objects(np.logical_or.reduce([target, *masks.values()]).view(np.uint8))
            crop = found[0] if found and found[0] is not None else (slice(0, 1),) * 3
            for variant in VARIANTS:
                mask = masks[variant][crop]
                n = int(np.count_nonzero(mask))
                empty[variant] += n == 0
                rows.append({"case": case, "muscle": key, "side": side, "label": label, "box_source": source,
                             "variant": variant,
                             "dice": metrics.dice(mask, target[crop]), "roughness": roughness(mask), "n_voxels": n})
    if any(empty.values()):
        log.warning("case %s: empty predictions (Dice 0, roughness NaN) per variant: %s", case or "?",
                    ", ".join(f"{k} {v}" for k, v in empty.items() if v))
    return rows


def compare_cases(cases: Sequence[str], images: Sequence, truths: Sequence, stage1_labels: Sequence,
                  stage1_boxes: Sequence[Mapping], models_by_key: Mapping, *, estimated: Sequence | None = None,
                  progress: bool = False, **kwargs) -> list[dict]:
    """:func:`compare_case` over test cases; the rows of all cases in one tidy list.

    ``cases, images, truths, stage1_labels, stage1_boxes`` and ``estimated`` (optional) are
    parallel sequences (one entry per case); ``**kwargs`` go to :func:`compare_case`.
    """
    n = len(cases)
    estimated = [()] * n if estimated is None else list(estimated)
    lengths = {"images": len(images), "truths": len(truths), "stage1_labels": len(stage1_labels),
               "stage1_boxes": len(stage1_boxes), "estimated": len(estimated)}
    if any(v != n for v in lengths.values()):
        raise ValueError(f"{n} cases but {lengths}")
    from tqdm.auto import tqdm

    rows = []
    for i in tqdm(range(n), desc="Figure 4 variants", unit="case", disable=not progress):
        rows += compare_case(images[i], truths[i], stage1_labels[i], stage1_boxes[i], models_by_key,
                             case=cases[i], estimated=estimated[i], **kwargs)
    return rows


def _by_variant(rows, column: str) -> dict[str, np.ndarray]:
    return {v: np.array([float(r[column]) for r in rows if r["variant"] == v], dtype=float) for v in VARIANTS}


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def summarize(rows: Sequence[Mapping], *, box_source: str | None = None, paired: bool = False) -> dict:
    """Mean Dice and mean roughness per variant (NaN-aware).

    Parameters
    ----------
    rows : sequence of mapping
        :func:`compare_case` rows.
    box_source : {"stage1", "priors", "none"}, optional
        Keep only the regions whose stage-1 box came from there (e.g. "stage1": the regions
        stage 1 localised itself).
    paired : bool
        Average each column only over the regions (case, label) where *every* variant has a
        finite value, so that the variants are compared on the same regions (roughness is NaN
        for empty predictions, which differ between variants). Adds ``n_paired`` per column.

    Returns
    -------
    dict
        ``mean_dice`` and ``mean_roughness``: ``{variant: float}`` for every name in
        ``VARIANTS`` (NaN where no finite value); ``n_cases``: distinct cases; ``n_regions``:
        distinct region labels (70 for a full run); with ``paired``, ``n_paired``:
        ``{"dice": int, "roughness": int}`` regions used.
    """
    if box_source is not None:
        if box_source not in ("stage1", "priors", "none"):
            raise ValueError(f"box_source must be 'stage1', 'priors' or 'none', got {box_source!r}")
        rows = [r for r in rows if r["box_source"] == box_source]
    if not rows:
        raise ValueError(f"rows is empty{' for box_source ' + repr(box_source) if box_source else ''}: "
                         "nothing to summarise")
    out = {"n_cases": len({r["case"] for r in rows}), "n_regions": len({int(r["label"]) for r in rows})}
    n_paired = {}
    for column in ("dice", "roughness"):
        use = rows
        if paired:
            finite: dict = {}
            for r in rows:
                finite.setdefault((r["case"], int(r["label"])), set())
                if np.isfinite(float(r[column])):
                    finite[(r["case"], int(r["label"]))].add(r["variant"])
            keep = {k for k, v in finite.items() if v >= set(VARIANTS)}
            use, n_paired[column] = [r for r in rows if (r["case"], int(r["label"])) in keep], len(keep)
        values = _by_variant(use, column)
        out[f"mean_{column}"] = {v: _nanmean(values[v]) for v in VARIANTS}
    if paired:
        out["n_paired"] = n_paired
    return out


def region_values(rows: Sequence[Mapping]) -> dict:
    """Dice and roughness of every variant per (case, region), for the claims' bootstrap intervals.

    Parameters
    ----------
    rows : sequence of mapping
        :func:`compare_case` rows (any column as CSV text or numbers).

    Returns
    -------
    dict
        ``cases`` (sorted ids), ``labels`` (sorted region labels) and, for ``dice`` and
        ``roughness`` (roughness: perimeter ratio, 1 = convex), ``{variant: [[value per label]
        per case]}`` for every name in ``VARIANTS``; NaN where a row or value is missing
        (``metrics/two_stages.json`` key ``per_region``).
    """
    cases = sorted({str(r["case"]) for r in rows})
    labels = sorted({int(r["label"]) for r in rows})
    index = {(str(r["case"]), int(r["label"]), r["variant"]): r for r in rows}

    def value(case, label, variant, column):
        row = index.get((case, label, variant))
        try:
            return float(row[column]) if row is not None else float("nan")
        except (TypeError, ValueError):
            return float("nan")

    return {"cases": cases, "labels": labels,
            **{column: {v: [[value(c, lb, v, column) for lb in labels] for c in cases] for v in VARIANTS}
               for column in ("dice", "roughness")}}


def summary_table(rows: Sequence[Mapping], *, titles: Mapping[str, str] | None = None) -> list[dict]:
    """One row per variant: ``variant, description, dice_mean, dice_sd, dice_median, n_dice,
    n_empty, roughness_mean, n_roughness`` (NaN-aware; ``n_*`` count finite values)."""
    titles = dict(titles or variant_titles())
    dice, rough = _by_variant(rows, "dice"), _by_variant(rows, "roughness")
    out = []
    for v in VARIANTS:
        d, r = dice[v][np.isfinite(dice[v])], rough[v][np.isfinite(rough[v])]
        out.append({"variant": v, "description": titles.get(v, v), "dice_mean": _nanmean(d),
                    "dice_sd": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
                    "dice_median": float(np.median(d)) if d.size else float("nan"), "n_dice": int(d.size),
                    "n_empty": int(sum(1 for row in rows if row["variant"] == v and int(row["n_voxels"]) == 0)),
                    "roughness_mean": _nanmean(r), "n_roughness": int(r.size)})
    return out


# --------------------------------------------------------------------------- figures


def centre_slice(mask) -> int:
    """Axial index through a mask's centre of mass (the nearest slice holding foreground)."""
    arr = _validate.volume(np.asarray(mask), "mask") != 0
    zs = np.flatnonzero(arr.any(axis=(0, 1)))
    if zs.size == 0:
        raise ValueError("mask is empty: no slice to show")
    zc = ndimage.center_of_mass(arr)[2]
    return int(zs[np.argmin(np.abs(zs - zc))])


def _in_plane_limits(lo_hi_x, lo_hi_y, shape, spacing, margin_mm):
    """Display limits (mm) of the axial view for voxel ranges [x0, x1) x [y0, y1) plus a margin."""
    (x0, x1), (y0, y1), (nx, ny), (sx, sy) = lo_hi_x, lo_hi_y, shape, spacing
    xlim = ((nx - x1) * sx - margin_mm, (nx - x0) * sx + margin_mm)          # X reversed (radiological)
    ylim = ((ny - y0) * sy + margin_mm, (ny - y1) * sy - margin_mm)          # Y reversed, anterior up
    return xlim, ylim


def panel_figure(image, truth_mask, variants: Mapping[str, np.ndarray], *, spacing_mm, z: int | None = None,
                 crop_boxes: Mapping[str, Sequence] | None = None, titles: Mapping[str, str] | None = None,
                 margin_mm: float = 15.0, title: str = ""):
    """Figure 4: one axial slice, the ground-truth contour and each variant's contour, one panel each.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Study-grid image.
    truth_mask : (X, Y, Z) ndarray of bool
        The region's ground truth (green contour).
    variants : mapping of str -> (X, Y, Z) ndarray of bool
        :func:`region_variants` output; panels in ``VARIANTS`` order, contours in ``VARIANT_COLORS``.
    spacing_mm : tuple of 3 float
    z : int, optional
        Axial slice; default :func:`centre_slice` of ``truth_mask``.
    crop_boxes : mapping of str -> list of (3, 2) box, optional
        :func:`variant_boxes` output: each panel's crop box(es) drawn as thin rectangles in the
        variant's colour, dashed where the box contains slice ``z`` and dotted where it does not
        reach it. The view covers the ground truth and these boxes.
    titles : mapping of str -> str, optional
        Panel titles (default :func:`variant_titles`); each gets the variant's 3-D Dice appended.
    margin_mm : float
        Margin around the ground truth (and boxes).
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        Radiological view (subject's right on the viewer's left, anterior up), physical aspect.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from .figures import axial_view

    image = _validate.volume(image, "image")
    truth_mask = np.asarray(truth_mask, dtype=bool)
    _validate.same_shape(image, truth_mask, "image", "truth_mask")
    sx, sy, _ = _validate.spacing(spacing_mm, 3)
    z = centre_slice(truth_mask) if z is None else int(z)
    if not 0 <= z < image.shape[2]:
        raise ValueError(f"z = {z} outside 0..{image.shape[2] - 1}")
    titles = dict(titles or variant_titles())
    crop_boxes = {k: [_validate.box(b) for b in v] for k, v in (crop_boxes or {}).items()}
    nx, ny = image.shape[:2]
    shown = [boxes.bounding_box(truth_mask)] + [b for v in crop_boxes.values() for b in v]
    lo, hi = np.min([b[:2, 0] for b in shown], axis=0), np.max([b[:2, 1] for b in shown], axis=0)
    xlim, ylim = _in_plane_limits((lo[0], hi[0]), (lo[1], hi[1]), (nx, ny), (sx, sy), margin_mm)
    aspect = (xlim[1] - xlim[0]) / (ylim[0] - ylim[1])
    extent = [0, nx * sx, ny * sy, 0]                      # axial_view is (Y, X): rows anterior->posterior
    sl = axial_view(image, z)
    vmin, vmax = np.percentile(image[..., z], [1, 99.5])
    names = [v for v in VARIANTS if v in variants]
    width = 2.8
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names), width / aspect + 1.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
        for b in crop_boxes.get(name, []):
            inside = b[2, 0] <= z < b[2, 1]
            ax.add_patch(Rectangle(((nx - b[0, 1]) * sx, (ny - b[1, 1]) * sy), (b[0, 1] - b[0, 0]) * sx,
                                   (b[1, 1] - b[1, 0]) * sy, fill=False, lw=0.8, ls="--" if inside else ":",
                                   edgecolor=VARIANT_COLORS[name], alpha=0.9))
        for mask, color, lw in ((truth_mask, TRUTH_COLOR, 1.2), (variants[name], VARIANT_COLORS[name], 1.6)):
            view = axial_view(np.asarray(mask, dtype=np.float32), z)
            if view.any():
                ax.contour(view, levels=[0.5], colors=[color], linewidths=lw, extent=extent, origin="upper")
        d = metrics.dice(variants[name], truth_mask)
        ax.set(xlim=xlim, ylim=ylim, xticks=[], yticks=[])
        ax.set_title(f"{titles.get(name, name)}\nDice {d:.3f}", fontsize=8.5)
    axes[0, 0].text(0.03, 0.97, "R", color="yellow", transform=axes[0, 0].transAxes, va="top", fontsize=10)
    handles = [Line2D([], [], color=TRUTH_COLOR, lw=1.2, label="ground truth"),
               Line2D([], [], color="0.4", lw=1.6, label="prediction (panel colour)")]
    if crop_boxes:
        handles += [Line2D([], [], color="0.4", lw=0.8, ls="--", label="crop box(es) through this slice"),
                    Line2D([], [], color="0.4", lw=0.8, ls=":", label="crop box not reaching this slice")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.suptitle(title or f"axial slice z = {z}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def dice_figure(rows: Sequence[Mapping], *, titles: Mapping[str, str] | None = None, title: str = ""):
    """Dice per variant (bars = mean with 95 % bootstrap CI, dots = single regions) and mean
    roughness per variant (point with 95 % CI) over all rows. NaN values are left out and counted."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    titles = dict(titles or variant_titles())
    df = pd.DataFrame(list(rows))
    df = df[df["variant"].isin(VARIANTS)].assign(panel=lambda d: d["variant"].map(lambda v: titles.get(v, v)))
    order = [titles.get(v, v) for v in VARIANTS]
    palette = {titles.get(v, v): VARIANT_COLORS[v] for v in VARIANTS}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    dice = df[np.isfinite(df["dice"].astype(float))]
    sns.barplot(data=dice, y="panel", x="dice", order=order, hue="panel", palette=palette, errorbar=("ci", 95),
                seed=0, ax=axes[0], alpha=0.75, legend=False)
    sns.stripplot(data=dice, y="panel", x="dice", order=order, color="0.15", size=1.8, alpha=0.3, jitter=0.25,
                  ax=axes[0])
    rough = df[np.isfinite(df["roughness"].astype(float))]
    sns.pointplot(data=rough, y="panel", x="roughness", order=order, hue="panel", palette=palette,
                  errorbar=("ci", 95), seed=0, linestyle="none", markers="D", ax=axes[1], legend=False)
    for ax, data, column in ((axes[0], dice, "dice"), (axes[1], rough, "roughness")):
        for i, name in enumerate(order):
            values = data.loc[data["panel"] == name, column].astype(float)
            if len(values):
                ax.annotate(f"{values.mean():.3f}", (values.mean(), i), xytext=(4, 7), textcoords="offset points",
                            fontsize=8, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    n_dice, n_rough = len(df) - len(dice), len(df) - len(rough)
    axes[0].set(ylabel="", xlim=(0, 1),
                xlabel="Dice (3-D, per region)" + (f"; {n_dice} NaN left out" if n_dice else ""))
    axes[1].set(ylabel="", xlabel="roughness: contour length / hull perimeter (1 = convex)"
                + (f"\n{n_rough} empty masks left out" if n_rough else ""))
    if title:
        fig.suptitle(title, fontsize=11)
    sns.despine(fig)
    fig.tight_layout()
    return fig
