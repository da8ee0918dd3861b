"""Tests of llseg.box_priors: boxes of regions stage 1 misses, from their neighbours."""
import json

import numpy as np
import pytest

from llseg import box_priors
from llseg.boxes import bounding_box


def _iou(a, b):
    a, b = np.asarray(a), np.asarray(b)
    inter = np.prod(np.clip(np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0]), 0, None))
    vol = lambda x: np.prod(x[:, 1] - x[:, 0])  # noqa: E731
    return inter / (vol(a) + vol(b) - inter)


def _contains(outer, inner):
    outer, inner = np.asarray(outer), np.asarray(inner)
    return bool(np.all(outer[:, 0] <= inner[:, 0]) and np.all(outer[:, 1] >= inner[:, 1]))


# group 1 (right): psoas 23, iliacus 16, gluteus medius 13, gluteus minimus 14; group 2 (right):
# gluteus maximus 12, tensor fasciae latae 30; disjoint base boxes on an (80, 60, 50) grid
_BASE = {23: [[44, 54], [16, 28], [24, 46]], 16: [[56, 66], [20, 32], [22, 34]],
         13: [[68, 76], [12, 28], [26, 38]], 14: [[60, 68], [8, 18], [28, 36]],
         12: [[56, 76], [36, 52], [12, 24]], 30: [[68, 78], [4, 12], [14, 22]]}
_SHAPE = (80, 60, 50)


def _subject(rng):
    """A scaled and shifted copy of the base layout, each box also shifted by N(0, 0.5) voxels."""
    scale = rng.uniform(0.85, 1.1)
    shift = rng.integers(-2, 3, size=3)
    centre = np.array(_SHAPE) // 2
    labels = np.zeros(_SHAPE, np.uint8)
    for lab, box in _BASE.items():
        b = (np.asarray(box) - centre[:, None]) * scale + centre[:, None] + shift[:, None]
        b = np.round(b + rng.normal(0.0, 0.5, size=(3, 1))).astype(int)
        b = np.clip(b, 0, np.array(_SHAPE)[:, None])
        labels[tuple(slice(lo, hi) for lo, hi in b)] = lab
    return labels


@pytest.fixture(scope="module")
def family():
    rng = np.random.default_rng(42)
    return [_subject(rng) for _ in range(16)]


def test_fit_box_priors_structure_and_json(family):
    priors = box_priors.fit_box_priors(family[:12])
    back = json.loads(json.dumps(priors))
    assert back == priors and priors["n_cases"] == 12
    entry = priors["labels"]["14"]
    assert set(entry["group"]) == {"13", "16", "23", "13,16", "13,23", "16,23", "13,16,23"}
    assert entry["group"]["13,16,23"]["n"] == 12 and entry["side"]["n"] == 12
    assert set(priors["labels"]) == {str(v) for v in _BASE}
    # the union of group 1's other boxes contains gluteus minimus in X and Z -> fractions in [0, 1]
    g = entry["group"]["13,16,23"]
    assert all(0 <= g[k][ax] <= 1 for k in ("lo", "hi") for ax in (0, 2))
    assert g["lo"][1] < 0                                   # it sticks out below in Y (y 8 vs 12)


def _estimate_iou(priors, subject, missing):
    truth = {lab: bounding_box(subject == lab) for lab in _BASE}
    filled, how = box_priors.estimate_missing_boxes({**truth, **{m: None for m in missing}}, priors,
                                                shape=subject.shape, n_sd=0.0)
    assert set(how) == set(missing)
    for lab in set(_BASE) - set(missing):
        np.testing.assert_array_equal(filled[lab], truth[lab])             # found boxes kept
    return float(np.mean([_iou(filled[m], truth[m]) for m in missing])), set(how.values())


def test_estimate_missing_box_recovers_deleted_region(family):
    priors = json.loads(json.dumps(box_priors.fit_box_priors(family[:12])))
    held_out = family[12:]
    results = {}
    for name, missing, rule in [("one", [14], "group"), ("two", [13, 14], "group"),
                                ("group", [13, 14, 16, 23], "side"), ("all", list(_BASE), "volume")]:
        ious = []
        for subject in held_out:
            iou, rules = _estimate_iou(priors, subject, missing)
            assert rules == {rule}
            ious.append(iou)
        results[name] = np.mean(ious)
    # mean IoU over 4 held-out subjects (seed 42: 0.67, 0.68, 0.68, 0.43)
    assert results["one"] > 0.5 and results["two"] > 0.5
    assert results["group"] > 0.5                  # whole group missing: from the side's other boxes
    assert results["all"] > 0.2                    # nothing on the side: the volume prior, a last resort
    assert results["one"] > results["all"]

    truth = {lab: bounding_box(held_out[0] == lab) for lab in _BASE}
    tight, _ = box_priors.estimate_missing_boxes({**truth, 14: None}, priors, shape=_SHAPE, n_sd=0.0)
    loose, _ = box_priors.estimate_missing_boxes({**truth, 14: None}, priors, shape=_SHAPE, n_sd=1.0)
    assert _contains(loose[14], tight[14]) and not np.array_equal(loose[14], tight[14])


def test_estimate_missing_boxes_without_prior_and_edges(family):
    priors = box_priors.fit_box_priors(family[:3])
    shape = _SHAPE
    filled, how = box_priors.estimate_missing_boxes({50: None, 13: [[1, 2], [1, 2], [1, 2]]}, priors, shape=shape)
    assert how == {50: "whole"}
    np.testing.assert_array_equal(filled[50], [[0, 80], [0, 60], [0, 50]])
    # empty training maps give no priors at all; an empty request gives empty answers
    empty = box_priors.fit_box_priors([np.zeros((4, 4, 4), np.uint8)])
    assert empty["labels"] == {}
    assert box_priors.estimate_missing_boxes({}, empty, shape=(4, 4, 4)) == ({}, {})
    # a prior pointing outside the volume still yields a one-voxel box inside it
    far = {"labels": {"14": {"group": {"13": {"lo": [5, 5, 5], "hi": [6, 6, 6], "lo_sd": [0] * 3,
                                              "hi_sd": [0] * 3, "n": 1}}, "side": None, "volume": None}}}
    filled, _ = box_priors.estimate_missing_boxes({14: None, 13: [[0, 2], [0, 2], [0, 2]]}, far, shape=(4, 4, 4))
    np.testing.assert_array_equal(filled[14], [[3, 4], [3, 4], [3, 4]])
    with pytest.raises(ValueError, match="empty"):
        box_priors.fit_box_priors([])
    with pytest.raises(ValueError, match="n_sd"):
        box_priors.estimate_missing_boxes({}, empty, shape=(4, 4, 4), n_sd=-1)
