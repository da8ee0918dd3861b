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

from . import _validate, anatomy, box_priors, postprocess, stage1, stage2

__all__ = ["run_stage1", "run_stage2", "run_cascade", "PAPER_SECONDS"]

log = logging.getLogger(__name__)

#: The paper's testing times on one GPU (section 2.2.3): per group in stage 1, per muscle in
#: stage 2, per case (all muscles).
PAPER_SECONDS = {"stage1_per_group": (25.0, 40.0), "stage2_per_muscle": (5.0, 8.0), "per_case": (18 * 60.0, 24 * 60.0)}


def _resize_nearest(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize with voxel edges aligned (``grid_mode``): output voxel ``j``
    takes input voxel ``floor((j + 0.5) * n_in / n_out)``."""
    idx = [np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.intp), n_in - 1)
           for n_in, n_out in zip(labels.shape, shape)]
    return labels[np.ix_(*idx)]


def run_stage1(models: Mapping[int, object], image: np.ndarray, *, priors: Mapping,
               part_ranges=stage1.DEFAULT_PART_RANGES, factor=(2, 2, 1)) -> dict:
    """Stage 1 on one image: boxes for every region, and the stage-1 label map itself.

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

    Returns
    -------
    dict
        ``boxes`` {label: (3, 2) box}, ``estimated`` {label: reference} (boxes from priors),
        ``labels`` (X, Y, Z) uint8 stage-1 segmentation upsampled to the study grid (where
        groups overlap, the more confident group wins), ``seconds_per_group`` {group: s}.
    """
    return _stage1(models, _validate.volume(image, "image"), priors, part_ranges, factor)


def _stage1(models, image: np.ndarray, priors, part_ranges, factor) -> dict:
    # run_stage1 for a checked image.
    found: dict[int, np.ndarray | None] = {}
    labels = np.zeros(image.shape, np.uint8)
    confidence = np.zeros(image.shape, np.float32)
    seconds = {}
    for group, model in sorted(models.items()):
        t0 = time.perf_counter()
        part = anatomy.GROUPS[group][1]
        sl = stage1.split_parts(image.shape[2], part_ranges={part: part_ranges[part]})[part]
        probs = stage1.predict_group(model, image, group, part_ranges=part_ranges, factor=factor,
                                     check_input=False)
        found.update(stage1.boxes_from_prediction(probs, group, part_slice=sl, factor=factor, full_shape=image.shape))
        part_shape = (image.shape[0], image.shape[1], sl.stop - sl.start)
        cls = _resize_nearest(np.argmax(probs, axis=-1), part_shape)
        conf = _resize_nearest(np.max(probs[..., 1:], axis=-1), part_shape)
        region = stage1.class_labels(group)[cls].astype(np.uint8)
        better = (cls > 0) & (conf > confidence[:, :, sl])
        labels[:, :, sl][better] = region[better]
        confidence[:, :, sl][better] = conf[better]
        seconds[group] = time.perf_counter() - t0
    boxes, estimated = box_priors.estimate_missing_boxes(found, priors, shape=image.shape)
    return {"boxes": boxes, "estimated": estimated, "labels": labels, "seconds_per_group": seconds}


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
                closing_radius_vox=(1, 1, 0)) -> dict:
    """Both stages and postprocessing; returns ``run_stage1``'s and ``run_stage2``'s results
    under ``stage1`` and ``stage2`` plus ``labels`` (final) and ``seconds`` (total)."""
    t0 = time.perf_counter()
    image = _validate.volume(image, "image")
    s1 = _stage1(stage1_models, image, priors, part_ranges, factor)
    s2 = _stage2(stage2_models, image, s1["boxes"], n_boxes, ratio_range, seed, threshold, closing_radius_vox)
    return {"stage1": s1, "stage2": s2, "labels": s2["labels"], "seconds": time.perf_counter() - t0}
