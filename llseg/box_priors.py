"""Boxes for the regions stage 1 misses, from their neighbours (paper section 2.2.1).

The paper reports that stage 1 "completely failed to generate any labels" for some very
small muscles (section 4) and localises those "based on the output of neighboring large
muscles" (section 2.2.1) without saying how. This module holds the kit's documented rule:
:func:`fit_box_priors` learns from the training label maps where each region's box lies
relative to reference boxes of its neighbours, and :func:`estimate_missing_boxes` applies
those priors to the boxes stage 1 found (``llseg.stage1.boxes_from_prediction``).

Boxes are ``(3, 2)`` int arrays of half-open ``[lo, hi)`` voxel indices in ``(X, Y, Z)``
order on the study grid (``llseg.boxes``).
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from . import _validate, anatomy
from . import boxes as bx

__all__ = ["fit_box_priors", "estimate_missing_boxes"]

logger = logging.getLogger(__name__)

_PRIOR_VERSION = 1


def _boxes_by_label(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Tight box of every region present in a label map, in one pass (``ndimage.find_objects``)."""
    found = ndi.find_objects(labels, max_label=anatomy.N_REGIONS)
    return {i + 1: np.array([[s.start, s.stop] for s in sl], dtype=np.int64)
            for i, sl in enumerate(found) if sl is not None}


def _subset_key(labels) -> str:
    return ",".join(str(v) for v in sorted(labels))


def _neighbours(label: int) -> tuple[list[int], list[int]]:
    """(same group and side except ``label``, same side outside the group)."""
    side, group = anatomy.side_of_label(label), anatomy.muscle_of_label(label).group
    same_group = [v for v in anatomy.group_labels(group) if v != label and anatomy.side_of_label(v) == side]
    same_side = [v for v in anatomy.REGIONS if anatomy.side_of_label(v) == side
                 and anatomy.muscle_of_label(v).group != group]
    return same_group, same_side


def _normalized(box: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Box corners as fractions of the reference box: (3, 2) float."""
    return (box - ref[:, :1]) / bx.box_size(ref)[:, None]


def _summary(samples: list[np.ndarray]) -> dict:
    arr = np.stack(samples)                                              # (n, 3, 2)
    mean, sd = arr.mean(axis=0), arr.std(axis=0)
    return {"lo": mean[:, 0].tolist(), "hi": mean[:, 1].tolist(), "lo_sd": sd[:, 0].tolist(),
            "hi_sd": sd[:, 1].tolist(), "n": int(arr.shape[0])}


def fit_box_priors(label_maps: Sequence[np.ndarray]) -> dict:
    """Learn where each region's box lies relative to its neighbours (training label maps).

    Parameters
    ----------
    label_maps : sequence of (X, Y, Z) ndarray of int
        Training label maps on the study grid (0..70); shapes may differ between cases.

    Returns
    -------
    dict
        JSON-serialisable: ``{"version": 1, "n_cases": N, "labels": {"<label>": {"group":
        {"<l1,l2,...>": prior, ...}, "side": prior | None, "volume": prior}}}`` where a
        prior is ``{"lo": [3], "hi": [3], "lo_sd": [3], "hi_sd": [3], "n": n_cases}``: the
        mean (and standard deviation) over cases of the region's box corners ``[lo, hi)``
        as fractions of a reference box per axis (0 = reference ``lo``, 1 = reference ``hi``).

    Raises
    ------
    ValueError
        No label maps, or invalid ones.

    Notes
    -----
    The paper localises muscles without stage-1 output "based on the output of neighboring
    large muscles" (section 2.2.1) without saying how. The kit's documented rule uses three
    references, tried in this order by :func:`estimate_missing_boxes`:

    * ``"group"``: the union box of the *other* regions of the same group on the same side.
      A prior is kept for every non-empty subset of those regions (at most 7 for a
      four-muscle group), keyed by their sorted label ids, so any pattern of missing
      neighbours at test time has a matching reference;
    * ``"side"``: the union box of all regions of the same side outside the group (used when
      the whole group is missing on that side);
    * ``"volume"``: the whole volume (when nothing is found on that side).

    A case contributes to a prior only if the region and all regions of the reference are
    present. Labels never seen in training have no entry.
    """
    if len(label_maps) == 0:
        raise ValueError("label_maps is empty; box priors need at least one training case")
    samples: dict[tuple, list[np.ndarray]] = {}
    for i, labels in enumerate(label_maps):
        labels = _validate.label_map(_validate.volume(labels, f"label_maps[{i}]"), f"label_maps[{i}]",
                                     valid=range(1, anatomy.N_REGIONS + 1))
        found = _boxes_by_label(labels)
        whole = np.array([[0, n] for n in labels.shape], dtype=np.int64)
        for lab, box in found.items():
            same_group, same_side = _neighbours(lab)
            present = [v for v in same_group if v in found]
            for k in range(1, len(present) + 1):
                for subset in itertools.combinations(present, k):
                    ref = bx.union_box([found[v] for v in subset])
                    samples.setdefault((lab, "group", _subset_key(subset)), []).append(_normalized(box, ref))
            side_present = [v for v in same_side if v in found]
            if side_present:
                ref = bx.union_box([found[v] for v in side_present])
                samples.setdefault((lab, "side", ""), []).append(_normalized(box, ref))
            samples.setdefault((lab, "volume", ""), []).append(_normalized(box, whole))
    out: dict = {"version": _PRIOR_VERSION, "n_cases": len(label_maps), "labels": {}}
    for (lab, kind, key), s in sorted(samples.items()):
        entry = out["labels"].setdefault(str(lab), {"group": {}, "side": None, "volume": None})
        if kind == "group":
            entry["group"][key] = _summary(s)
        else:
            entry[kind] = _summary(s)
    return out


def _apply_prior(prior: Mapping, ref: np.ndarray, n_sd: float, shape) -> np.ndarray:
    size = bx.box_size(ref).astype(float)
    lo = ref[:, 0] + (np.asarray(prior["lo"]) - n_sd * np.asarray(prior["lo_sd"])) * size
    hi = ref[:, 0] + (np.asarray(prior["hi"]) + n_sd * np.asarray(prior["hi_sd"])) * size
    box = np.stack([np.floor(lo), np.ceil(hi)], axis=1).astype(np.int64)
    box[:, 1] = np.maximum(box[:, 1], box[:, 0] + 1)                   # at least one voxel
    box = bx.clip_box(box, shape)
    empty = box[:, 1] <= box[:, 0]                                       # fully outside: edge voxel
    box[empty, 0] = np.minimum(box[empty, 0], np.asarray(shape)[empty] - 1)
    box[empty, 1] = box[empty, 0] + 1
    return box


def estimate_missing_boxes(boxes: Mapping[int, np.ndarray | None], priors: Mapping, *, shape,
                           n_sd: float = 1.0, references=("group", "side", "volume")
                           ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Fill the regions stage 1 did not find with boxes estimated from their neighbours.

    Parameters
    ----------
    boxes : mapping of int to (3, 2) ndarray or None
        Region label -> study-grid box from ``stage1.boxes_from_prediction`` (all groups
        merged); None marks a missing region.
    priors : mapping
        :func:`fit_box_priors` output (possibly read back from JSON).
    shape : tuple of 3 int
        Study-grid shape; estimated boxes are clipped to it.
    n_sd : float, optional
        Each estimated edge moves outward by ``n_sd`` standard deviations of the prior (0 =
        the mean box); stage 2 needs the whole muscle inside its crop, so a loose box is the
        safer error.
    references : collection of str, optional
        The references allowed, in the order tried. A partial scan allows only ``"group"``
        (neighbours found in view): a region it cannot place is left out of the result.

    Returns
    -------
    boxes : dict of int to (3, 2) ndarray of int64
        Every key of ``boxes`` with a box (found ones copied unchanged); with the default
        ``references``, every key.
    estimated : dict of int to str
        Label -> reference used for each estimated region: ``"group"``, ``"side"``,
        ``"volume"``, or ``"whole"`` (no prior for the label: the whole volume, with a
        warning). Its length is the count of stage-1 misses.

    Notes
    -----
    Only *found* boxes serve as references, so the result does not depend on the order of
    the labels. Rule (see :func:`fit_box_priors`): reference = union of the found boxes of the
    same group and side and the prior for exactly that subset; if none of them is found (or
    that subset never occurred in training), the union of all found boxes of the same side
    with the ``"side"`` prior, which was fitted on all the side's regions outside the group
    (at test time some of those may be missing too, a small bias); if nothing is found on
    that side, the ``"volume"`` prior. The box is ``ref_lo + fraction * ref_size`` per
    corner, rounded outward and clipped, at least one voxel.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive ints (X, Y, Z), got {shape!r}")
    if not (n_sd >= 0 and math.isfinite(n_sd)):
        raise ValueError(f"n_sd must be a finite number >= 0, got {n_sd!r}")
    found = {int(k): np.asarray(v, dtype=np.int64) for k, v in boxes.items() if v is not None}
    table = priors.get("labels", {})
    out = {k: v.copy() for k, v in found.items()}
    estimated: dict[int, str] = {}
    for lab in sorted(int(k) for k, v in boxes.items() if v is None):
        entry = table.get(str(lab))
        same_group, same_side = _neighbours(lab)
        box, how = None, "whole"
        if entry is not None:
            ref_group = [v for v in same_group if v in found]
            ref_side = [v for v in same_side if v in found]
            prior = entry["group"].get(_subset_key(ref_group)) if ref_group and "group" in references else None
            if prior is not None:
                box, how = _apply_prior(prior, bx.union_box([found[v] for v in ref_group]), n_sd, shape), "group"
            elif ref_side and entry.get("side") is not None and "side" in references:
                box = _apply_prior(entry["side"], bx.union_box([found[v] for v in ref_side]), n_sd, shape)
                how = "side"
            elif entry.get("volume") is not None and "volume" in references:
                whole = np.array([[0, n] for n in shape], dtype=np.int64)
                box, how = _apply_prior(entry["volume"], whole, n_sd, shape), "volume"
        if box is None and "volume" not in references:
            logger.info("stage 1 found no %s and no neighbour places it: absent", anatomy.region_name(lab))
            continue
        if box is None:
            logger.warning("no box prior for %s: using the whole volume", anatomy.region_name(lab))
            box = np.array([[0, n] for n in shape], dtype=np.int64)
        logger.info("stage 1 found no %s: box estimated from the %s reference", anatomy.region_name(lab), how)
        out[lab], estimated[lab] = box, how
    return out, estimated
