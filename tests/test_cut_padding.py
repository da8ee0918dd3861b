"""Partial scans seen at the extent the networks were trained on (``cut_padding``).

Stage 1 shows each group's network its whole body part, the stretch past a cut end of the scan
filled in (``stage1.predict_group(pad_slices=...)``); stage 2 extends a box that touches a cut end
to its muscle's reference extent over a padded image and crops the probabilities back
(``cascade.run_stage2``). A stage-1 box on the other leg is not used. The network calls are
replaced by stand-ins that record what they were given, so the tests check the geometry (how
many slices, which box, where the probabilities land), not a model. The whole leg is never padded.
"""
import logging

import numpy as np
import pytest

from llseg import anatomy, cascade, coverage, pipeline, stage1, stage2, train

from test_partial_stage1 import CALF_IMAGE_SHAPE, _FakePredict, stage1_priors   # noqa: E402, F401  (tests/ is on sys.path under pytest)


def _lab(key, side="right"):
    return anatomy.label_id(key, side)


# --------------------------------------------------------------------------- coverage.slices_of_extent


def test_slices_of_extent_whole_leg_is_the_fraction_times_the_slices():
    # slice 0 at the ankle: the upper-leg part (0.04, 0.70) of a 100-slice whole leg is slices 30..96
    assert coverage.slices_of_extent(coverage.WHOLE, (0.04, 0.70), 100) == pytest.approx((30.0, 96.0))


def test_slices_of_extent_reaches_past_a_calf_scan():
    # a 40-slice calf scan (0.60, 1.0): 100 slices per span; the lower-leg part (0.47, 1.0) reaches
    # 13 slices above it, the upper-leg part 56 above and stops 30 slices inside it
    assert coverage.slices_of_extent("calf", (0.47, 1.0), 40) == pytest.approx((0.0, 53.0))
    assert coverage.slices_of_extent("calf", (0.04, 0.70), 40) == pytest.approx((30.0, 96.0))
    # a muscle wholly inside stays inside
    lo, hi = coverage.slices_of_extent("calf", anatomy.muscle("soleus").si_extent, 40)
    assert 0 <= lo < hi <= 40


# --------------------------------------------------------------------------- stage1.predict_group


class _ZProbe:
    """Stand-in for ``train.predict_proba``: class 0 = the input's slice index, class 1 = its
    value at voxel (0, 0), so the test sees which slices the network got and how they were filled."""

    def __init__(self, n_classes):
        self.n_classes, self.inputs = n_classes, []

    def __call__(self, model, volume):
        self.inputs.append(volume.copy())
        probs = np.zeros((*volume.shape, self.n_classes), np.float32)
        probs[..., 0] = np.arange(volume.shape[2], dtype=np.float32)
        probs[..., 1] = volume[:1, :1, :]
        return probs


@pytest.mark.parametrize("mode", ["edge", "reflect"])
def test_predict_group_pads_the_part_and_crops_the_probabilities_back(monkeypatch, mode):
    image = np.arange(8 * 6 * 20, dtype=np.float32).reshape(8, 6, 20)
    probe = _ZProbe(len(stage1.class_labels(9)))
    monkeypatch.setattr(train, "predict_proba", probe)
    ranges = {"lower_leg": (0.0, 1.0)}
    plain = stage1.predict_group("net", image, 9, part_ranges=ranges, factor=(2, 2, 1))
    padded = stage1.predict_group("net", image, 9, part_ranges=ranges, factor=(2, 2, 1), pad_slices=(3, 5),
                                  pad_mode=mode)
    assert probe.inputs[0].shape == (4, 3, 20) and probe.inputs[1].shape == (4, 3, 28)
    # the network saw 3 filled slices below and 5 above the scan's own, in the asked mode
    np.testing.assert_array_equal(probe.inputs[1], np.pad(probe.inputs[0], [(0, 0), (0, 0), (3, 5)], mode=mode))
    # ... and the probabilities are the scan's slices, in place
    assert padded.shape == plain.shape
    np.testing.assert_array_equal(padded[..., 0], plain[..., 0] + 3)
    np.testing.assert_array_equal(padded[..., 1], plain[..., 1])


def test_predict_group_padding_counts_study_slices_at_the_z_factor(monkeypatch):
    image = np.ones((8, 6, 20), np.float32)
    probe = _ZProbe(len(stage1.class_labels(9)))
    monkeypatch.setattr(train, "predict_proba", probe)
    out = stage1.predict_group("net", image, 9, part_ranges={"lower_leg": (0.0, 1.0)}, factor=(2, 2, 2),
                               pad_slices=(4, 6))
    assert probe.inputs[0].shape == (4, 3, 10 + 2 + 3) and out.shape[:3] == (4, 3, 10)


# --------------------------------------------------------------------------- cascade.run_stage1

@pytest.fixture(scope="module")
def priors(stage1_priors):
    """The calf priors of test_partial_stage1 (soleus and popliteus on both legs)."""
    return stage1_priors


def _stage1(monkeypatch, fake, priors, **kw):
    monkeypatch.setattr(stage1, "predict_group", fake)
    image = np.random.default_rng(0).normal(size=CALF_IMAGE_SHAPE).astype(np.float32)
    return cascade.run_stage1({g: f"net{g}" for g in anatomy.GROUPS}, image, priors=priors, **kw)


def test_run_stage1_calf_scan_shows_each_network_its_whole_part(monkeypatch, priors):
    fake = _FakePredict()
    _stage1(monkeypatch, fake, priors, scan_coverage="calf")
    # lower-leg groups: 13 slices above the 40-slice calf scan; upper-leg groups: 56 above, none below
    for group, (pad, mode) in fake.pads.items():
        part = anatomy.GROUPS[group][1]
        assert pad == {"lower_leg": (0, 13), "upper_leg": (0, 56)}[part] and mode == "edge"


@pytest.mark.parametrize("kw", [{"scan_coverage": coverage.WHOLE}, {"scan_coverage": "calf", "cut_padding": "none"}])
def test_run_stage1_whole_leg_or_none_is_not_padded(monkeypatch, priors, kw):
    fake = _FakePredict()
    _stage1(monkeypatch, fake, priors, **kw)
    assert fake.pads and all(pad == (0, 0) for pad, _ in fake.pads.values())


def test_run_stage1_unknown_cut_padding(monkeypatch, priors):
    with pytest.raises(ValueError, match="cut_padding must be one of"):
        _stage1(monkeypatch, _FakePredict(), priors, scan_coverage="calf", cut_padding="zeros")


def test_run_stage1_box_on_the_other_leg_is_not_used(monkeypatch, priors, caplog):
    # low-resolution X (factor 2): the right leg is x' 4..8 (+X, RAS+), the left leg 0..4
    marks = {_lab("soleus"): slice(5, 7), _lab("soleus", "left"): slice(1, 3),
             _lab("tibialis_anterior"): slice(1, 3),            # a right muscle marked on the left leg
             _lab("tibialis_anterior", "left"): slice(0, 1)}
    with caplog.at_level(logging.WARNING, logger="llseg.cascade"):
        res = _stage1(monkeypatch, _FakePredict(marks), priors, scan_coverage="calf")
    assert _lab("tibialis_anterior") not in res["boxes"]
    assert res["absent"][_lab("tibialis_anterior")] == cascade.NOT_FOUND
    assert {_lab("soleus"), _lab("soleus", "left"), _lab("tibialis_anterior", "left")} <= set(res["boxes"])
    assert f"{anatomy.region_name(_lab('tibialis_anterior'))} lies on the other leg" in caplog.text
    assert caplog.text.count("other leg") == 1


def test_drop_other_side_needs_both_legs():
    right_on_left = {_lab("soleus"): np.array([[0, 2], [0, 2], [0, 2]])}
    assert cascade._drop_other_side(right_on_left) == right_on_left       # no midline without a left box


# --------------------------------------------------------------------------- cascade.run_stage2


class _FakePredictAll:
    """Stand-in for ``stage2.predict_all``: records the image and boxes, returns probability 1
    inside each box."""

    def __init__(self):
        self.images, self.boxes = [], {}

    def __call__(self, models, image, boxes_by_label, **kw):
        self.images.append(image)
        out = {}
        for lab, box in boxes_by_label.items():
            self.boxes[lab] = np.array(box)
            sl = tuple(slice(int(a), int(b)) for a, b in box)
            out[lab] = (sl, np.ones([b - a for a, b in box], np.float32))
        return out


def _stage2(monkeypatch, boxes, **kw):
    fake = _FakePredictAll()
    monkeypatch.setattr(stage2, "predict_all", fake)
    image = np.tile(np.arange(40, dtype=np.float32), (16, 8, 1))            # value = slice index
    keys = {anatomy.muscle_of_label(lab).key for lab in boxes}
    res = cascade.run_stage2({k: f"net-{k}" for k in keys}, image, boxes, closing_radius_vox=(0, 0, 0), **kw)
    return fake, image, res


def test_run_stage2_extends_a_box_cut_by_the_top_of_a_calf_scan(monkeypatch):
    gm, sol = _lab("gastrocnemius_medial"), _lab("soleus")
    boxes = {gm: np.array([[9, 13], [2, 6], [20, 40]]),     # touches the scan's top (the knee cut)
             sol: np.array([[9, 13], [2, 6], [5, 30]])}     # inside
    fake, image, res = _stage2(monkeypatch, boxes, scan_coverage="calf")
    # gastrocnemius medialis (0.55, 0.80): reaches 5 slices above the calf scan (0.60, 1.0), 100 slices per span
    np.testing.assert_array_equal(fake.boxes[gm], [[9, 13], [2, 6], [20, 45]])
    np.testing.assert_array_equal(fake.boxes[sol], boxes[sol])
    # the networks saw the scan with its top slice repeated 5 times above it
    assert all(im.shape == (16, 8, 45) for im in fake.images)
    np.testing.assert_array_equal(fake.images[0][:, :, 40:], 39.0)
    np.testing.assert_array_equal(fake.images[0][:, :, :40], image)
    # probabilities and labels are back on the scan
    sl, crop = res["probabilities"][gm]
    assert sl[2] == slice(20, 40) and crop.shape == (4, 4, 20)
    assert res["labels"].shape == image.shape
    assert (res["labels"][9:13, 2:6, 30:40] == gm).all()


def test_run_stage2_extends_below_a_thigh_scan_and_shifts_the_boxes(monkeypatch):
    gl = _lab("gastrocnemius_lateral", "left")
    boxes = {gl: np.array([[1, 5], [2, 6], [0, 4]])}        # touches the scan's bottom (the knee cut)
    fake, image, res = _stage2(monkeypatch, boxes, scan_coverage="thigh")
    lo, _ = coverage.slices_of_extent("thigh", anatomy.muscle("gastrocnemius_lateral").si_extent, 40)
    below = -int(np.floor(lo))
    assert below > 0
    # shifted by the padding below: the scan's slice 0 is the padded image's slice `below`
    np.testing.assert_array_equal(fake.boxes[gl], [[1, 5], [2, 6], [0, below + 4]])
    np.testing.assert_array_equal(fake.images[0][:, :, :below], 0.0)
    sl, crop = res["probabilities"][gl]
    assert sl[2] == slice(0, 4) and crop.shape[2] == 4
    assert (res["labels"][1:5, 2:6, :4] == gl).all() and (res["labels"] == gl).sum() == 4 * 4 * 4


@pytest.mark.parametrize("kw", [{}, {"scan_coverage": "calf", "cut_padding": "none"}])
def test_run_stage2_whole_leg_or_none_keeps_boxes_and_image(monkeypatch, kw):
    gm = _lab("gastrocnemius_medial")
    boxes = {gm: np.array([[9, 13], [2, 6], [20, 40]])}
    fake, image, _ = _stage2(monkeypatch, boxes, **kw)
    assert fake.images[0] is image
    np.testing.assert_array_equal(fake.boxes[gm], boxes[gm])


# --------------------------------------------------------------------------- which models are padded

_RECORD = {"part_ranges": stage1.DEFAULT_PART_RANGES, "factor": [2, 2, 1]}
_INFERENCE = dict(n_tta_boxes=6, ratio_range=(1.0, 1.8), seed=0, threshold=0.5, closing_radius_vox=(1, 1, 0))


@pytest.mark.parametrize("mode", coverage.CUT_PADDING_MODES)
def test_whole_leg_models_get_the_asked_cut_padding(mode):
    assert pipeline._cascade_kwargs(dict(_RECORD), {}, cut_padding=mode, **_INFERENCE)["cut_padding"] == mode
    assert pipeline._cascade_kwargs(dict(_RECORD), {}, **_INFERENCE)["cut_padding"] == "edge"


def test_models_trained_on_partial_scans_see_cut_scans_as_they_are():
    record = {**_RECORD, "trained_on_partial_scans": True}
    for mode in coverage.CUT_PADDING_MODES:
        assert pipeline._cascade_kwargs(record, {}, cut_padding=mode, **_INFERENCE)["cut_padding"] == "none"
