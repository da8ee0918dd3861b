"""The cascade on one study-grid image: stage 1 (group localisation) -> stage 2 (per-muscle
segmentation with test-time boxes) -> postprocessing (paper Fig. 1, sections 2.2-2.3).

Everything here takes arrays and loaded models and returns arrays, plus the seconds each group
and each muscle took (the paper's figures are in :data:`PAPER_SECONDS`). Volumes are
``(X, Y, Z)`` RAS+ on the study grid (``llseg.preprocess``). The public functions check the
image once; the stage functions they call trust it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

from . import _validate, anatomy, box_priors, coverage, postprocess, stage1, stage2

__all__ = ["run_stage1", "run_stage2", "run_cascade", "PAPER_SECONDS", "NOT_IN_VIEW", "NOT_FOUND", "NOT_TRAINED"]

log = logging.getLogger(__name__)

#: The paper's testing times on one GPU (section 2.2.3): per group in stage 1, per muscle in
#: stage 2, per case (all muscles).
PAPER_SECONDS = {"stage1_per_group": (25.0, 40.0), "stage2_per_muscle": (5.0, 8.0), "per_case": (18 * 60.0, 24 * 60.0)}

#: Why a region has no box (``run_stage1(...)["absent"]``).
NOT_IN_VIEW = "not in field of view"
NOT_FOUND = "not found by stage 1"
NOT_TRAINED = "no network trained for it"


def _resize_nearest(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize with voxel edges aligned (``grid_mode``): output voxel ``j``
    takes input voxel ``floor((j + 0.5) * n_in / n_out)``."""
    idx = [np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.intp), n_in - 1)
           for n_in, n_out in zip(labels.shape, shape)]
    return labels[np.ix_(*idx)]


def run_stage1(models: Mapping[int, object], image: np.ndarray, *, priors: Mapping,
               part_ranges=stage1.DEFAULT_PART_RANGES, factor=(2, 2, 1), scan_coverage=coverage.WHOLE,
               regions_by_group: Mapping[int, object] | None = None, cut_padding: str = "edge",
               view_margin: float = 0.0) -> dict:
    """Stage 1 on one image: boxes for every region in view, and the stage-1 label map itself.

    Parameters
    ----------
    models : mapping of int to keras.Model
        Stage-1 group (1..10) -> network.
    image : (X, Y, Z) ndarray of float
        Preprocessed study-grid image.
    priors : mapping
        ``box_priors.fit_box_priors`` output, for regions stage 1 misses.
    part_ranges, factor
        As in training.
    scan_coverage : (float, float), optional
        The stretch of the T12 (0) to ankle (1) span the image covers (``llseg.coverage``);
        default the whole leg, the paper's case.
    regions_by_group : mapping of int to iterable of int, optional
        The regions each group's network was trained for (``stage1.group_regions``); default
        all of the group's.
    cut_padding : str, optional
        On a partial scan, how a body part cut by the scan's ends is filled in to the extent
        the group's network was trained on (``coverage.CUT_PADDING_MODES``); the whole leg is
        never padded.
    view_margin : float, optional
        How far (fraction of the span) a muscle must reach past a cut end to be in view
        (``coverage.regions_in_view``; ``coverage.ESTIMATE_VIEW_MARGIN`` for an estimated coverage).

    Returns
    -------
    dict
        ``boxes`` {label: (3, 2) box}, ``estimated`` {label: reference} (boxes from priors),
        ``absent`` {label: reason} (:data:`NOT_IN_VIEW`, :data:`NOT_FOUND`, :data:`NOT_TRAINED`;
        empty for a whole-leg image and a full set of networks),
        ``labels`` (X, Y, Z) uint8 stage-1 segmentation upsampled to the study grid (where
        groups overlap, the more confident group wins), ``seconds_per_group`` {group: s}.
    """
    return _stage1(models, _validate.volume(image, "image"), priors, part_ranges, factor,
                   coverage.parse_coverage(scan_coverage), regions_by_group or {}, _check_padding(cut_padding),
                   float(view_margin))


def _check_padding(mode: str) -> str:
    if mode not in coverage.CUT_PADDING_MODES:
        raise ValueError(f"cut_padding must be one of {coverage.CUT_PADDING_MODES}, got {mode!r}")
    return mode


def _stage1(models, image: np.ndarray, priors, part_ranges, factor, scan_coverage=coverage.WHOLE,
            regions_by_group=None, cut_padding="edge", view_margin=0.0) -> dict:
    # run_stage1 for a checked image. On a whole-leg image every region a network has gets a
    # box (found, or estimated from the priors: the paper's rule). On a partial scan, regions
    # outside the field of view are absent even if a network marks them, and a missed region
    # gets an estimated box only from neighbours of its own group found in view.
    regions_by_group = regions_by_group or {}
    ranges = coverage.part_ranges_in_view(scan_coverage, part_ranges)
    whole = tuple(scan_coverage) == coverage.WHOLE
    in_view = set(coverage.regions_in_view(scan_coverage, view_margin))
    absent: dict[int, str] = {lab: NOT_TRAINED for lab in anatomy.REGIONS}
    found: dict[int, np.ndarray | None] = {}
    labels = np.zeros(image.shape, np.uint8)
    confidence = np.zeros(image.shape, np.float32)
    seconds = {}
    for group, model in sorted(models.items()):
        regions = regions_by_group.get(group)
        part = anatomy.GROUPS[group][1]
        for lab in stage1.group_regions(group, regions):
            absent[lab] = NOT_IN_VIEW
        if part not in ranges:
            continue
        t0 = time.perf_counter()
        sl = stage1.split_parts(image.shape[2], part_ranges={part: ranges[part]})[part]
        pad = (0, 0)
        if not whole and cut_padding != "none":   # show the network its part at the trained extent
            lo, hi = coverage.slices_of_extent(scan_coverage, part_ranges[part], image.shape[2])
            pad = (max(0, round(-lo)), max(0, round(hi - image.shape[2])))
        probs = stage1.predict_group(model, image, group, part_ranges=ranges, factor=factor, check_input=False,
                                     regions=regions, pad_slices=pad, pad_mode=cut_padding)
        group_boxes = stage1.boxes_from_prediction(probs, group, part_slice=sl, factor=factor,
                                                   full_shape=image.shape, regions=regions)
        found.update({lab: box for lab, box in group_boxes.items() if whole or lab in in_view})
        part_shape = (image.shape[0], image.shape[1], sl.stop - sl.start)
        cls = _resize_nearest(np.argmax(probs, axis=-1), part_shape)
        conf = _resize_nearest(np.max(probs[..., 1:], axis=-1), part_shape)
        region = stage1.class_labels(group, regions)[cls].astype(np.uint8)
        if not whole:
            region[~np.isin(region, list(in_view))] = 0
        better = (region > 0) & (conf > confidence[:, :, sl])
        labels[:, :, sl][better] = region[better]
        confidence[:, :, sl][better] = conf[better]
        seconds[group] = time.perf_counter() - t0
    found = _drop_other_side(found)
    if whole:
        boxes, estimated = box_priors.estimate_missing_boxes(found, priors, shape=image.shape)
    else:
        inside = set(coverage.regions_inside_view(scan_coverage, view_margin))
        wanted = {lab: box for lab, box in found.items() if box is not None or lab in inside}
        boxes, estimated = box_priors.estimate_missing_boxes(wanted, priors, shape=image.shape,
                                                             references=("group",))
    for lab in found:
        absent[lab] = NOT_FOUND
    for lab in boxes:
        absent.pop(lab, None)
    return {"boxes": boxes, "estimated": estimated, "absent": dict(sorted(absent.items())), "labels": labels,
            "seconds_per_group": seconds}


def run_stage2(models_by_key: Mapping[str, object], image: np.ndarray, boxes: Mapping[int, np.ndarray], *,
               n_boxes: int = 6, ratio_range=(1.0, 1.8), seed: int = 0, threshold: float = 0.5,
               closing_radius_vox=(1, 1, 0), scan_coverage=coverage.WHOLE, cut_padding: str = "edge") -> dict:
    """Stage 2 and postprocessing on one image.

    Each muscle's network segments its right region and (mirrored) left region from
    ``n_boxes`` enlargements of the stage-1 box; the averaged probabilities are merged by
    ``postprocess.merge_regions`` (one connected, closed component per region; conflicts go to
    the highest probability).

    On a partial scan (``scan_coverage``, as in :func:`run_stage1`), a box that touches a cut
    end of the scan is extended along Z to its muscle's reference extent
    (``anatomy.Muscle.si_extent``) over the image padded by ``cut_padding``, so that the
    network sees the muscle at the scale it was trained on; the probabilities are cropped
    back to the scan.

    Returns
    -------
    dict
        ``labels`` (X, Y, Z) uint8, ``probabilities`` {label: (slices, crop)},
        ``seconds_per_muscle`` {key: s} (both sides), ``seconds_postprocess``.
    """
    return _stage2(models_by_key, _validate.volume(image, "image"), boxes, n_boxes, ratio_range, seed, threshold,
                   closing_radius_vox, coverage.parse_coverage(scan_coverage), _check_padding(cut_padding))


def _drop_other_side(found: Mapping[int, np.ndarray | None]) -> dict[int, np.ndarray | None]:
    """Found boxes with their centre on the other leg set to None (not found): a right region's
    box must lie on the right (+X, RAS+) of the midline, a left one's on the left.

    The midline is halfway between the median X centres of the right and the left boxes (none
    is dropped unless both sides have a box). A network that marks the other leg, as stage 1
    can on a part it sees only a sliver of, must not give a right muscle a box on the left leg.
    """
    centres = {lab: float(np.mean(box[0])) for lab, box in found.items() if box is not None}
    right = [c for lab, c in centres.items() if anatomy.side_of_label(lab) == "right"]
    left = [c for lab, c in centres.items() if anatomy.side_of_label(lab) == "left"]
    if not right or not left:
        return dict(found)
    midline = (np.median(right) + np.median(left)) / 2
    out = dict(found)
    for lab, c in centres.items():
        if (c > midline) != (anatomy.side_of_label(lab) == "right"):
            log.warning("stage 1: the box of %s lies on the other leg (X centre %.0f, midline %.0f); not used",
                        anatomy.region_name(lab), c, midline)
            out[lab] = None
    return out


def _extend_cut_boxes(boxes: Mapping[int, np.ndarray], n_slices: int, scan_coverage) -> dict[int, np.ndarray]:
    """Boxes that touch a cut end of a partial scan, extended along Z to their muscle's reference
    extent (``lo < 0`` or ``hi > n_slices`` where it reaches past the scan); others as they are."""
    top, bottom = scan_coverage
    out = {}
    for lab, box in boxes.items():
        box = np.array(box, dtype=np.int64)
        lo, hi = coverage.slices_of_extent(scan_coverage, anatomy.muscle_of_label(lab).si_extent, n_slices)
        if box[2, 0] == 0 and bottom < coverage.WHOLE[1]:
            box[2, 0] = min(0, int(np.floor(lo)))
        if box[2, 1] == n_slices and top > coverage.WHOLE[0]:
            box[2, 1] = max(n_slices, int(np.ceil(hi)))
        out[lab] = box
    return out


def _crop_probabilities(probabilities: Mapping, below: int, n_slices: int) -> dict:
    """``(slices, crop)`` probabilities on a Z-padded image, cropped back to the ``n_slices``
    slices of the scan that start at ``below``."""
    out = {}
    for lab, (sl, crop) in probabilities.items():
        z0, z1 = max(sl[2].start, below), min(sl[2].stop, below + n_slices)
        out[lab] = ((sl[0], sl[1], slice(z0 - below, z1 - below)), crop[:, :, z0 - sl[2].start:z1 - sl[2].start])
    return out


def _stage2(models_by_key, image: np.ndarray, boxes, n_boxes, ratio_range, seed, threshold,
            closing_radius_vox, scan_coverage=coverage.WHOLE, cut_padding="edge") -> dict:
    # run_stage2 for a checked image. On a partial scan, boxes cut by its ends see a padded image.
    boxes = {lab: box for lab, box in boxes.items() if box is not None}
    n = image.shape[2]
    below, padded = 0, image
    if tuple(scan_coverage) != coverage.WHOLE and cut_padding != "none" and boxes:
        boxes = _extend_cut_boxes(boxes, n, scan_coverage)
        below = max(0, -min(int(b[2, 0]) for b in boxes.values()))
        above = max(0, max(int(b[2, 1]) for b in boxes.values()) - n)
        if below or above:
            padded = np.pad(image, [(0, 0), (0, 0), (below, above)], mode=cut_padding)
            boxes = {lab: box + np.array([[0, 0], [0, 0], [below, below]]) for lab, box in boxes.items()}
    probabilities: dict = {}
    seconds = {}
    for key, model in models_by_key.items():
        m = anatomy.muscle(key)
        t0 = time.perf_counter()
        mine = {lab: boxes[lab] for lab in (m.right_label, m.left_label) if lab in boxes}
        probabilities.update(stage2.predict_all({key: model}, padded, mine, n_boxes=n_boxes,
                                                ratio_range=ratio_range, seed=seed, check_input=False))
        seconds[key] = time.perf_counter() - t0
    if padded is not image:
        probabilities = _crop_probabilities(probabilities, below, n)
    t0 = time.perf_counter()
    labels = postprocess.merge_regions(probabilities, threshold=threshold, shape=image.shape,
                                       closing_radius_vox=closing_radius_vox)
    return {"labels": labels, "probabilities": probabilities, "seconds_per_muscle": seconds,
            "seconds_postprocess": time.perf_counter() - t0}


def run_cascade(stage1_models, stage2_models, image, *, priors, part_ranges=stage1.DEFAULT_PART_RANGES,
                factor=(2, 2, 1), n_boxes=6, ratio_range=(1.0, 1.8), seed=0, threshold=0.5,
                closing_radius_vox=(1, 1, 0), scan_coverage=coverage.WHOLE, regions_by_group=None,
                cut_padding: str = "edge", view_margin: float = 0.0) -> dict:
    """Both stages and postprocessing; returns ``run_stage1``'s and ``run_stage2``'s results
    under ``stage1`` and ``stage2`` plus ``labels`` (final) and ``seconds`` (total)."""
    t0 = time.perf_counter()
    image = _validate.volume(image, "image")
    scan_coverage, cut_padding = coverage.parse_coverage(scan_coverage), _check_padding(cut_padding)
    s1 = _stage1(stage1_models, image, priors, part_ranges, factor, scan_coverage, regions_by_group or {}, cut_padding,
                 float(view_margin))
    s2 = _stage2(stage2_models, image, s1["boxes"], n_boxes, ratio_range, seed, threshold, closing_radius_vox,
                 scan_coverage, cut_padding)
    return {"stage1": s1, "stage2": s2, "labels": s2["labels"], "seconds": time.perf_counter() - t0}
