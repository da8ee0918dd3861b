"""Partial scans and partial label sets in stage 1: group subsets, per-case part ranges, box priors
limited to the group reference, absent regions in the volume table and ``cascade.run_stage1`` on a
calf scan.

No network is built: ``cascade.run_stage1`` runs with ``stage1.predict_group`` replaced by a stand-in
that returns hand-made probabilities of the right shape (background everywhere, or a few marked
regions), so the test checks the bookkeeping (which region is absent and why, which box is
estimated), not a model.
"""
import warnings

import numpy as np
import pytest

from llseg import anatomy, box_priors, cascade, coverage, export, stage1
from llseg.boxes import bounding_box


def _lab(key, side="right"):
    return anatomy.label_id(key, side)


# group 5 (quadriceps): rectus femoris 25, vastus intermedius 33, vastus lateralis 34, vastus medialis 35
G5 = (25, 33, 34, 35, 60, 68, 69, 70)


# --------------------------------------------------------------------------- classes of a subset


def test_group_regions_all_and_subset_in_group_order():
    assert stage1.group_regions(5) == anatomy.group_labels(5) == G5
    # any order, duplicates and regions of other groups in ``regions``: the group's order, its own only
    assert stage1.group_regions(5, [69, 33, 33, 1, 70]) == (33, 69, 70)
    assert stage1.group_regions(5, np.array([60, 25])) == (25, 60)
    assert stage1.group_regions(5, G5) == G5


@pytest.mark.parametrize("regions", [[], [1, 2, 36], [0]])
def test_group_regions_none_of_the_group_is_an_error(regions):
    with pytest.raises(ValueError, match=r"group 5 has none of the regions"):
        stage1.group_regions(5, regions)


def test_group_regions_bad_group():
    with pytest.raises(ValueError, match="group must be one of"):
        stage1.group_regions(11, [1])


def test_group_classes_and_class_labels_of_a_subset():
    lut = stage1.group_classes(5, [68, 33])                    # vastus intermedius, both legs
    assert lut.shape == (anatomy.N_REGIONS + 1,) and lut.dtype == np.uint8
    assert lut[33] == 1 and lut[68] == 2
    assert np.count_nonzero(lut) == 2                          # 25, 34, 35, 60, ... and 0 -> background
    assert all(lut[v] == 0 for v in set(G5) - {33, 68})
    labels = stage1.class_labels(5, [68, 33])
    np.testing.assert_array_equal(labels, [0, 33, 68])         # 2k' + 1 = 3 classes
    assert labels.dtype == np.int64
    # inverse of each other on the subset
    assert all(labels[lut[v]] == v for v in (33, 68))
    # a one-sided subset still has 2k' + 1 classes
    assert len(stage1.class_labels(5, [34])) == 2
    # the full group is unchanged by regions=None
    np.testing.assert_array_equal(stage1.class_labels(5), (0,) + G5)
    np.testing.assert_array_equal(stage1.group_classes(5, G5), stage1.group_classes(5))


def test_class_mirror_of_a_subset():
    np.testing.assert_array_equal(stage1.class_mirror(5, [33, 68]), [0, 2, 1])
    # classes in group order: 1 = 33, 2 = 34, 3 = 68, 4 = 69
    np.testing.assert_array_equal(stage1.class_mirror(5, [34, 69, 33, 68]), [0, 3, 4, 1, 2])


@pytest.mark.parametrize("regions", [[34], [33, 34], [33, 68, 69]])
def test_class_mirror_of_a_one_sided_subset_is_an_error(regions):
    with pytest.raises(ValueError, match="mirror"):
        stage1.class_mirror(5, regions)


# --------------------------------------------------------------------------- per-case part ranges


def _case(i, shape=(8, 8, 20)):
    """Image = 10 i + noise (so its low-resolution part tells which case it came from); labels:
    vastus intermedius on both legs over every slice, rectus femoris right on a few."""
    rng = np.random.default_rng(i)
    image = (10.0 * i + rng.normal(0.0, 0.1, size=shape)).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[5:7, 2:6, :] = 33
    labels[1:3, 2:6, :] = 68
    labels[3:5, 6:8, 4:12] = 25
    return image, labels


def _cases(n):
    images, labels = zip(*(_case(i) for i in range(n)))
    return list(images), list(labels)


def test_low_parts_skips_a_case_without_the_part():
    images, labels = _cases(3)
    ranges = [stage1.DEFAULT_PART_RANGES, {"lower_leg": (0.0, 1.0)}, {"upper_leg": (0.0, 1.0)}]
    low_images, low_classes = stage1._low_parts(images, labels, 5, ranges, (2, 2, 1), [33, 68])
    assert len(low_images) == len(low_classes) == 2
    # case 0 (upper_leg 0.04-0.70 of 20 slices: 6..20) and case 2 (all 20 slices); case 1 left out
    assert [im.shape for im in low_images] == [(4, 4, 14), (4, 4, 20)]
    assert [round(float(im.mean())) for im in low_images] == [0, 20]
    assert all(set(np.unique(c)) == {0, 1, 2} for c in low_classes)   # rectus femoris -> background


def test_make_sampler_per_case_ranges_skip_cases_without_the_part():
    images, labels = _cases(3)
    ranges = [stage1.DEFAULT_PART_RANGES, {"lower_leg": (0.0, 1.0)}, {"upper_leg": (0.0, 1.0)}]
    sampler = stage1.make_sampler(images, labels, 5, part_ranges=ranges, divisor=4, regions=[33, 68])
    assert len(sampler.images) == 2 and sampler.n_classes == 3
    assert sampler.shape == (4, 4, 20, 1)                       # both padded to the longer part
    x, y = sampler(np.random.default_rng(0))
    assert x.shape == (1, 4, 4, 20, 1) and y.shape == (1, 4, 4, 20)
    assert set(np.unique(y)) <= {0, 1, 2}


def test_make_sampler_no_case_shows_the_part():
    images, labels = _cases(2)
    ranges = [{"lower_leg": (0.0, 1.0)}, {"abdomen": (0.0, 0.5), "lower_leg": (0.2, 1.0)}]
    with pytest.raises(ValueError, match="no case shows the upper_leg part of group 5"):
        stage1.make_sampler(images, labels, 5, part_ranges=ranges)
    with pytest.raises(ValueError, match="no case shows"):
        stage1.make_validator(images, labels, 5, part_ranges=ranges)


def test_make_sampler_per_case_ranges_count_must_match():
    images, labels = _cases(2)
    with pytest.raises(ValueError, match=r"one mapping per case expected \(2\), got 3"):
        stage1.make_sampler(images, labels, 5, part_ranges=[stage1.DEFAULT_PART_RANGES] * 3)


def test_make_sampler_a_list_of_the_default_ranges_equals_the_mapping():
    images, labels = _cases(2)
    kw = dict(factor=(2, 2, 1), divisor=4, augment_kwargs={"max_rotation_deg": 10, "max_shear": 0.05})
    a = stage1.make_sampler(images, labels, 5, part_ranges=stage1.DEFAULT_PART_RANGES, **kw)
    b = stage1.make_sampler(images, labels, 5, part_ranges=[dict(stage1.DEFAULT_PART_RANGES)] * 2, **kw)
    assert a.shape == b.shape and a.n_classes == b.n_classes == 9
    for u, v in zip(a.images + a.labels, b.images + b.labels):
        np.testing.assert_array_equal(u, v)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        (xa, ya), (xb, yb) = a(rng_a), b(rng_b)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_make_sampler_one_sided_subset_without_flips():
    images, labels = _cases(1)
    sampler = stage1.make_sampler(images, labels, 5, regions=[33], augment_kwargs={"flip_lr": False})
    assert sampler.n_classes == 2


# --------------------------------------------------------------------------- box priors, group reference only


# right calf, group 8: soleus 29, popliteus 22; group 9: fibulari 7, tibialis anterior 31
_CALF = {29: [[2, 6], [2, 6], [4, 20]], 22: [[2, 6], [6, 9], [22, 27]],
         7: [[8, 11], [2, 5], [6, 22]], 31: [[8, 11], [6, 9], [8, 24]]}
_SHAPE = (12, 10, 30)


def _calf_map(shift):
    labels = np.zeros(_SHAPE, np.uint8)
    for lab, box in _CALF.items():
        b = np.asarray(box) + np.array([[0, 0], [0, 0], [shift, shift]])
        labels[tuple(slice(lo, hi) for lo, hi in b)] = lab
    return labels


@pytest.fixture(scope="module")
def calf_priors():
    return box_priors.fit_box_priors([_calf_map(s) for s in (-1, 0, 1)])


def test_group_reference_only_leaves_out_what_it_cannot_place(calf_priors):
    truth = _calf_map(0)
    soleus = bounding_box(truth == 29)
    boxes = {29: soleus, 22: None, 7: None, 31: None, 50: None}     # 50: no prior at all
    out, how = box_priors.estimate_missing_boxes(boxes, calf_priors, shape=_SHAPE, n_sd=0.0,
                                                 references=("group",))
    # popliteus: its group neighbour soleus is found -> estimated from it, on the truth here
    assert how == {22: "group"}
    np.testing.assert_array_equal(out[22], bounding_box(truth == 22))
    np.testing.assert_array_equal(out[29], soleus)
    # fibulari and tibialis anterior: no group neighbour found -> left out (not the side prior)
    assert set(out) == {29, 22}


def test_default_references_still_place_everything(calf_priors, caplog):
    soleus = bounding_box(_calf_map(0) == 29)
    boxes = {29: soleus, 22: None, 7: None, 31: None, 50: None}
    out, how = box_priors.estimate_missing_boxes(boxes, calf_priors, shape=_SHAPE, n_sd=0.0)
    assert set(out) == {29, 22, 7, 31, 50}
    assert how == {22: "group", 7: "side", 31: "side", 50: "whole"}


# --------------------------------------------------------------------------- volume table with absent regions


@pytest.fixture
def small_map():
    """Right adductor brevis (1) no voxel, left (36) 12 voxels; right gracilis (15) 2 voxels, left none."""
    lab = np.zeros((10, 8, 6), np.uint8)
    lab[1:4, 1:3, 1:3] = 36
    lab[0, 7, 4:6] = 15
    return lab


CM = (10.0, 10.0, 10.0)              # 1 mL per voxel


def _rows(label_maps, absent=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)           # most muscles absent on both legs
        rows = export.volume_table(label_maps, absent=absent)
    assert all(set(r) == set(export.VOLUME_COLUMNS) for r in rows)
    return rows


def _by_muscle(rows, subject="s"):
    return {r["muscle"]: r for r in rows if r["subject"] == subject}


def test_volume_table_absent_region_has_no_volume_and_its_reason(small_map):
    rows = _by_muscle(_rows({"s": (small_map, CM)}, absent={"s": {1: cascade.NOT_IN_VIEW}}))
    ab = rows["adductor_brevis"]
    assert ab["right_ml"] is None and ab["right_status"] == "not in field of view"
    assert ab["left_ml"] == 12.0 and ab["left_status"] == export.SEGMENTED
    assert ab["asymmetry_pct"] is None                            # right unknown, not zero
    # no voxel and no reason: 0.0, "no voxel", and the asymmetry is computed (+200: right only)
    gr = rows["gracilis"]
    assert gr["right_ml"] == 2.0 and gr["right_status"] == export.SEGMENTED
    assert gr["left_ml"] == 0.0 and gr["left_status"] == export.NO_VOXEL == "no voxel"
    assert gr["asymmetry_pct"] == 200.0
    # missing on both legs without reasons
    so = rows["soleus"]
    assert so["right_ml"] == so["left_ml"] == 0.0 and so["right_status"] == so["left_status"] == "no voxel"
    assert so["asymmetry_pct"] is None


def test_volume_table_absent_reasons_per_subject(small_map):
    rows = _rows({"a": (small_map, CM), "b": (small_map, CM)},
                 absent={"a": {1: cascade.NOT_IN_VIEW, 50: cascade.NOT_FOUND}})
    a, b = _by_muscle(rows, "a"), _by_muscle(rows, "b")
    assert a["gracilis"]["left_ml"] is None and a["gracilis"]["left_status"] == cascade.NOT_FOUND
    assert a["gracilis"]["right_ml"] == 2.0 and a["gracilis"]["right_status"] == export.SEGMENTED
    assert a["gracilis"]["asymmetry_pct"] is None
    # subject b has no reasons: the same map gives zeros and "no voxel"
    assert b["adductor_brevis"]["right_ml"] == 0.0 and b["adductor_brevis"]["right_status"] == "no voxel"
    assert b["adductor_brevis"]["asymmetry_pct"] == -200.0
    assert b["gracilis"]["left_ml"] == 0.0 and b["gracilis"]["asymmetry_pct"] == 200.0


def test_volume_table_a_reason_for_a_segmented_region_is_ignored(small_map):
    rows = _by_muscle(_rows({"s": (small_map, CM)}, absent={"s": {36: cascade.NOT_IN_VIEW}}))
    assert rows["adductor_brevis"]["left_status"] == export.SEGMENTED
    assert rows["adductor_brevis"]["left_ml"] == 12.0


def test_volume_table_no_warning_for_muscles_absent_with_a_reason():
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[0, 0, 0] = 1
    lab[1, 1, 1] = 36
    reasons = {v: cascade.NOT_IN_VIEW for v in anatomy.REGIONS if v not in (1, 36)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = export.volume_table({"s": (lab, (1.0, 1.0, 1.0))}, absent={"s": reasons})
    assert sum(r["right_ml"] is None for r in rows) == 34


# --------------------------------------------------------------------------- cascade.run_stage1 on a calf scan


class _FakePredict:
    """Stand-in for ``stage1.predict_group``: probabilities of the right shape, background
    everywhere except the regions in ``marks`` ({label: x slice at low resolution})."""

    def __init__(self, marks=None):
        self.marks = marks or {}
        self.calls = []
        self.pads = {}

    def __call__(self, model, image, group, *, part_ranges, factor, check_input=True, regions=None,
                 pad_slices=(0, 0), pad_mode="edge"):
        self.calls.append((group, dict(part_ranges), None if regions is None else tuple(regions)))
        self.pads[group] = (tuple(pad_slices), pad_mode)
        part = anatomy.GROUPS[group][1]
        sl = stage1.split_parts(image.shape[2], part_ranges={part: part_ranges[part]})[part]
        low = tuple(int(round(n / f)) for n, f in zip((*image.shape[:2], sl.stop - sl.start), factor))
        labels = stage1.class_labels(group, regions)
        probs = np.zeros((*low, len(labels)), np.float32)               # (X', Y', Z'_part, 2k + 1)
        probs[..., 0] = 1.0
        for lab, xs in self.marks.items():
            if lab in labels:
                c = int(np.flatnonzero(labels == lab)[0])
                probs[xs, 1:3, 1:-1, :] = 0.0
                probs[xs, 1:3, 1:-1, c] = 0.9
        return probs


CALF_IMAGE_SHAPE = (16, 8, 40)       # a 40-slice calf scan


@pytest.fixture
def calf_image():
    return np.random.default_rng(0).normal(size=CALF_IMAGE_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def stage1_priors():
    """Priors from three tiny right-and-left calf maps: soleus and popliteus on both legs."""
    maps = []
    for shift in (-1, 0, 1):
        lab = np.zeros(CALF_IMAGE_SHAPE, np.uint8)
        for side, x0 in (("right", 8), ("left", 0)):
            lab[x0 + 1:x0 + 5, 1:4, 5 + shift:28 + shift] = _lab("soleus", side)
            lab[x0 + 1:x0 + 5, 4:7, 30 + shift:36 + shift] = _lab("popliteus", side)
        maps.append(lab)
    return box_priors.fit_box_priors(maps)


def _run(monkeypatch, fake, image, priors, **kw):
    monkeypatch.setattr(stage1, "predict_group", fake)
    models = kw.pop("models", {g: f"net{g}" for g in anatomy.GROUPS})
    return cascade.run_stage1(models, image, priors=priors, scan_coverage=coverage.COVERAGE_PRESETS["calf"], **kw)


def test_run_stage1_calf_nothing_found(monkeypatch, calf_image, stage1_priors):
    fake = _FakePredict()
    res = _run(monkeypatch, fake, calf_image, stage1_priors)
    in_view = set(coverage.regions_in_view("calf"))
    assert res["boxes"] == {} and res["estimated"] == {}
    assert set(res["absent"]) == set(anatomy.REGIONS)
    for lab in (_lab("psoas_major"), _lab("psoas_major", "left"), _lab("gluteus_maximus"),
                _lab("gluteus_maximus", "left")):
        assert res["absent"][lab] == cascade.NOT_IN_VIEW
    assert all(res["absent"][v] == cascade.NOT_IN_VIEW for v in anatomy.labels_of_part("abdomen"))
    assert {v for v, why in res["absent"].items() if why == cascade.NOT_IN_VIEW} == set(anatomy.REGIONS) - in_view
    assert {v for v, why in res["absent"].items() if why == cascade.NOT_FOUND} == in_view
    # the abdomen groups never ran; the others got the calf scan's own part ranges
    assert sorted(g for g, _, _ in fake.calls) == list(range(4, 11)) == sorted(res["seconds_per_group"])
    view_ranges = coverage.part_ranges_in_view("calf", stage1.DEFAULT_PART_RANGES)
    assert all(r == view_ranges for _, r, _ in fake.calls)
    assert res["labels"].shape == CALF_IMAGE_SHAPE and not res["labels"].any()


def test_run_stage1_calf_boxes_only_in_view(monkeypatch, calf_image, stage1_priors):
    marks = {_lab("soleus"): slice(5, 7),                 # found: popliteus (inside) is estimated from it
             _lab("vastus_medialis"): slice(0, 2),        # the network marks it, but 0.30-0.58 is not in view
             _lab("gracilis"): slice(2, 4)}                # thigh muscle reaching below the knee: in view
    res = _run(monkeypatch, _FakePredict(marks), calf_image, stage1_priors)
    assert set(res["boxes"]) == {_lab("soleus"), _lab("gracilis"), _lab("popliteus")}
    assert res["estimated"] == {_lab("popliteus"): "group"}
    assert res["absent"][_lab("vastus_medialis")] == cascade.NOT_IN_VIEW
    assert _lab("vastus_medialis") not in np.unique(res["labels"])
    assert set(np.unique(res["labels"])) == {0, _lab("soleus"), _lab("gracilis")}
    # in view but not wholly inside (0.55-0.80): no estimate even with soleus found
    assert res["absent"][_lab("gastrocnemius_medial")] == cascade.NOT_FOUND
    # inside, but no group neighbour found on the left: not placed
    assert res["absent"][_lab("popliteus", "left")] == cascade.NOT_FOUND
    assert res["absent"][_lab("psoas_major")] == cascade.NOT_IN_VIEW
    assert not set(res["boxes"]) & set(res["absent"])
    assert set(res["boxes"]) | set(res["absent"]) == set(anatomy.REGIONS)
    # the soleus box lies in the lower-leg part: x from the low-resolution mark 5..7 (factor 2)
    np.testing.assert_array_equal(res["boxes"][_lab("soleus")][0], [10, 14])


def test_run_stage1_calf_missing_networks_and_region_subsets(monkeypatch, calf_image, stage1_priors):
    models = {g: f"net{g}" for g in anatomy.GROUPS if g != 10}
    subset = {9: (_lab("tibialis_anterior"),)}             # group 9 trained on the right tibialis anterior only
    fake = _FakePredict({_lab("tibialis_anterior"): slice(4, 6)})
    res = _run(monkeypatch, fake, calf_image, stage1_priors, models=models, regions_by_group=subset)
    assert set(res["boxes"]) == {_lab("tibialis_anterior")}
    for key in ("tibialis_posterior", "flexor_digitorum_longus", "flexor_hallucis_longus"):     # group 10
        assert res["absent"][_lab(key)] == res["absent"][_lab(key, "left")] == cascade.NOT_TRAINED
    for key in ("phalangeal_extensors", "fibulari"):
        assert res["absent"][_lab(key)] == cascade.NOT_TRAINED
    assert res["absent"][_lab("tibialis_anterior", "left")] == cascade.NOT_TRAINED
    assert ((9, coverage.part_ranges_in_view("calf", stage1.DEFAULT_PART_RANGES), subset[9])
            in fake.calls)


def test_run_stage1_whole_leg_still_boxes_every_region(monkeypatch, stage1_priors):
    image = np.random.default_rng(1).normal(size=(16, 8, 40)).astype(np.float32)
    monkeypatch.setattr(stage1, "predict_group", _FakePredict())
    models = {g: f"net{g}" for g in anatomy.GROUPS}
    res = cascade.run_stage1(models, image, priors=stage1_priors)            # default: whole leg
    assert set(res["boxes"]) == set(anatomy.REGIONS) == set(res["estimated"])
    assert res["absent"] == {}
