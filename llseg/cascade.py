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
               regions_by_group: Mapping[int, object] | None = None) -> dict:
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
                   coverage.parse_coverage(scan_coverage), regions_by_group or {})


def _stage1(models, image: np.ndarray, priors, part_ranges, factor, scan_coverage=coverage.WHOLE,
            regions_by_group=None) -> dict:
    # run_stage1 for a checked image. On a whole-leg image every region a network has gets a
    # box (found, or estimated from the priors: the paper's rule). On a partial scan, regions
    # outside the field of view are absent even if a network marks them, and a missed region
    # gets an estimated box only from neighbours of its own group found in view.
    regions_by_group = regions_by_group or {}
    ranges = coverage.part_ranges_in_view(scan_coverage, part_ranges)
    whole = tuple(scan_coverage) == coverage.WHOLE
    in_view = set(coverage.regions_in_view(scan_coverage))
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
        probs = stage1.predict_group(model, image, group, part_ranges=ranges, factor=factor,
                                     check_input=False, regions=regions)
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
    if whole:
        boxes, estimated = box_priors.estimate_missing_boxes(found, priors, shape=image.shape)
    else:
        inside = set(coverage.regions_inside_view(scan_coverage))
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
               closing_radius_vox=(1, 1, 0)) -> dict:
    """Stage 2 and postprocessing on one image.

    Each muscle's network segments its right region and (mirrored) left region from
    ``n_boxes`` enlargements of the stage-1 box; the averaged probabilities are merged by
    ``postprocess.merge_regions`` (one connected, closed component per region; conflicts go to
    the highest probability).

    Returns
    -------
    dict
        ``labels`` (X, Y, Z) uint8, ``probabilities`` {label: (slices, crop)},
        ``seconds_per_muscle`` {key: s} (both sides), ``seconds_postprocess``.
    """
    return _stage2(models_by_key, _validate.volume(image, "image"), boxes, n_boxes, ratio_range, seed, threshold,
                   closing_radius_vox)


def _stage2(models_by_key, image: np.ndarray, boxes, n_boxes, ratio_range, seed, threshold,
            closing_radius_vox) -> dict:
    # run_stage2 for a checked image.
    probabilities: dict = {}
    seconds = {}
    for key, model in models_by_key.items():
        m = anatomy.muscle(key)
        t0 = time.perf_counter()
        mine = {lab: boxes[lab] for lab in (m.right_label, m.left_label) if boxes.get(lab) is not None}
        probabilities.update(stage2.predict_all({key: model}, image, mine, n_boxes=n_boxes,
                                                ratio_range=ratio_range, seed=seed, check_input=False))
        seconds[key] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = postprocess.merge_regions(probabilities, threshold=threshold, shape=image.shape,
                                       closing_radius_vox=closing_radius_vox)
    return {"labels": labels, "probabilities": probabilities, "seconds_per_muscle": seconds,
            "seconds_postprocess": time.perf_counter() - t0}


def run_cascade(stage1_models, stage2_models, image, *, priors, part_ranges=stage1.DEFAULT_PART_RANGES,
                factor=(2, 2, 1), n_boxes=6, ratio_range=(1.0, 1.8), seed=0, threshold=0.5,
                closing_radius_vox=(1, 1, 0), scan_coverage=coverage.WHOLE, regions_by_group=None) -> dict:
    """Both stages and postprocessing; returns ``run_stage1``'s and ``run_stage2``'s results
    under ``stage1`` and ``stage2`` plus ``labels`` (final) and ``seconds`` (total)."""
    t0 = time.perf_counter()
    image = _validate.volume(image, "image")
    s1 = _stage1(stage1_models, image, priors, part_ranges, factor, coverage.parse_coverage(scan_coverage),
                 regions_by_group or {})
    s2 = _stage2(stage2_models, image, s1["boxes"], n_boxes, ratio_range, seed, threshold, closing_radius_vox)
    return {"stage1": s1, "stage2": s2, "labels": s2["labels"], "seconds": time.perf_counter() - t0}
