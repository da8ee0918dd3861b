"""Tests for llseg.stage2: input sizes, crops and their inverse, the training sampler, and
test-time-augmented prediction (with a fake model, plus one slow real training run)."""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import anatomy, boxes, stage2, train  # noqa: E402

AL = anatomy.muscle("adductor_longus")          # right label 2, left label 37 (conftest's two_leg_case)


def _fake_intensity_model(model, x, **kwargs):
    """Stand-in for train.predict_proba: foreground probability = the input intensity."""
    x = np.asarray(x, np.float32)
    return np.stack([1.0 - x, x], axis=-1)


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# --------------------------------------------------------------------------- input size


def test_muscle_box_sizes_both_sides(two_leg_case):
    _, labels, _ = two_leg_case
    sizes = stage2.muscle_box_sizes([labels, labels], "adductor_longus")
    np.testing.assert_array_equal(sizes, [[6, 8, 8]] * 4)
    assert stage2.muscle_box_sizes([labels], "gracilis").shape == (0, 3)


def test_input_size_known_answers():
    sizes = [[20, 10, 5], [30, 20, 7]]                       # mean (25, 15, 6); x 1.4 = (35, 21, 8.4)
    assert stage2.input_size_for(sizes, max_voxels=10**6, divisor=1) == (35, 21, 8)
    assert stage2.input_size_for(sizes, max_voxels=10**6, divisor=4) == (36, 20, 8)
    # budget: (64, 32, 16) -> scaled by (4096 / 32768) ** (1/3) = 0.5
    assert stage2.input_size_for([[64, 32, 16]], max_voxels=4096, divisor=8, mean_ratio=1.0) == (32, 16, 8)
    # tiny muscle: every axis at least the divisor
    assert stage2.input_size_for([[2, 3, 1]], max_voxels=10**6, divisor=8) == (8, 8, 8)


def test_input_size_property_budget_divisor_and_aspect():
    rng = np.random.default_rng(7)
    for _ in range(300):
        sizes = rng.uniform(3, 120, size=(int(rng.integers(1, 6)), 3)) * rng.uniform(0.2, 1, size=3)
        divisor = int(2 ** rng.integers(0, 5))
        budget = int(rng.integers(divisor ** 3, 300_000))
        out = np.array(stage2.input_size_for(sizes, max_voxels=budget, divisor=divisor))
        assert np.prod(out) <= budget
        assert np.all(out % divisor == 0) and np.all(out >= divisor)
        target = sizes.mean(axis=0) * 1.4
        if np.prod(target) <= budget / 8 and np.all(target >= divisor):    # no shrinking needed:
            assert np.all(np.abs(out - target) < divisor)                   # the nearest multiples
    # shrinking with fine rounding keeps the aspect ratio and uses the budget
    for _ in range(100):
        target = rng.uniform(20, 200, size=3)
        out = np.array(stage2.input_size_for([target], max_voxels=20_000, divisor=2, mean_ratio=1.0))
        assert 0.8 * 20_000 <= np.prod(out) <= 20_000
        ratios = out / target
        assert ratios.max() / ratios.min() < 1.25, (target, out)


def test_input_size_pins_thin_axes_to_the_divisor():
    # z target 1.6 < divisor 2 -> 2; x, y fit the remaining budget unscaled
    assert stage2.input_size_for([[16, 40, 1.6]], max_voxels=4000, divisor=2, mean_ratio=1.0) == (16, 40, 2)
    # divisor 8: z -> 8, x and y share 4000 / 8 = 500 voxels: (14.1, 35.4); (16, 32) would need 4096 > 4000,
    # so x drops to 8 and y takes the closer multiple 32
    assert stage2.input_size_for([[16, 40, 1.6]], max_voxels=4000, divisor=8, mean_ratio=1.0) == (8, 32, 8)


def test_input_size_errors():
    with pytest.raises(ValueError, match="N >= 1"):
        stage2.input_size_for(np.zeros((0, 3)), max_voxels=1000, divisor=2)
    with pytest.raises(ValueError, match="divisor\\*\\*3"):
        stage2.input_size_for([[10, 10, 10]], max_voxels=100, divisor=8)
    with pytest.raises(ValueError, match="> 0"):
        stage2.input_size_for([[10, 0, 10]], max_voxels=1000, divisor=2)


# --------------------------------------------------------------------------- crops


def test_crop_identity_when_size_equals_box():
    image = np.random.default_rng(0).normal(size=(12, 10, 6)).astype(np.float32)
    box = np.array([[2, 9], [1, 5], [0, 6]])
    crop = stage2.crop_to_input(image, box, (7, 4, 6))
    np.testing.assert_array_equal(crop, image[2:9, 1:5, 0:6])
    assert crop.dtype == np.float32
    np.testing.assert_array_equal(stage2.crop_to_input(image, box, (7, 4, 6), mirror=True), image[2:9, 1:5][::-1])
    np.testing.assert_array_equal(stage2.probs_from_input(crop, box), crop)


def test_one_voxel_box_crop_and_back():
    image = np.zeros((5, 5, 3), np.float32)
    image[2, 3, 1] = 0.7
    x = stage2.crop_to_input(image, [[2, 3], [3, 4], [1, 2]], (4, 4, 4), mirror=True)
    np.testing.assert_allclose(x, 0.7)                                # one voxel, replicated
    back = stage2.probs_from_input(x, [[2, 3], [3, 4], [1, 2]], mirror=True)
    assert back.shape == (1, 1, 1) and back[0, 0, 0] == pytest.approx(0.7)


@pytest.mark.parametrize("mirror", [False, True])
def test_crop_round_trip_places_a_cuboid_blob_exactly(mirror):
    """Upsample x2 (anisotropic: x3 in Z) and back: threshold 0.5 recovers every voxel."""
    image = np.zeros((20, 16, 8), np.float32)
    image[3:6, 5:9, 2:4] = 1.0                                   # left-side blob (small x), off-centre in the box
    box = np.array([[2, 10], [4, 12], [1, 6]])
    size = (16, 16, 15)
    x = stage2.crop_to_input(image, box, size, mirror=mirror)
    assert x.shape == size
    com_x = np.average(np.arange(16), weights=x.sum(axis=(1, 2)))
    assert (com_x > 8) if mirror else (com_x < 8)                # mirrored: the blob looks right-sided
    back = stage2.probs_from_input(x, box, mirror=mirror)
    assert back.shape == (8, 8, 5) and back.dtype == np.float32
    np.testing.assert_array_equal(back >= 0.5, image[boxes.box_slices(box)] == 1)


@pytest.mark.parametrize("mirror", [False, True])
def test_crop_round_trip_arbitrary_sizes_sphere(mirror):
    zz = np.mgrid[:30, :24, :10].astype(float)
    blob = ((zz[0] - 9) / 5) ** 2 + ((zz[1] - 12) / 6) ** 2 + ((zz[2] - 5) / 3) ** 2 <= 1
    box = np.array([[3, 17], [4, 21], [1, 10]])
    for size in [(8, 12, 4), (20, 20, 12), (16, 8, 8)]:
        x = stage2.crop_to_input(blob.astype(np.float32), box, size, mirror=mirror)
        back = stage2.probs_from_input(x, box, mirror=mirror) >= 0.5
        assert _dice(back, blob[boxes.box_slices(box)]) > 0.85, size
    y = stage2.labels_to_input(blob, box, (14, 17, 9), mirror=mirror)     # same size: exact copy
    assert y.dtype == np.uint8 and set(np.unique(y)) == {0, 1}
    np.testing.assert_array_equal(y, blob[boxes.box_slices(box)][::-1 if mirror else 1])


def test_labels_to_input_nearest_matches_crop_geometry():
    mask = np.zeros((10, 10, 4), np.int16)
    mask[2:4, 2:6, 1:3] = 5
    y = stage2.labels_to_input(mask, [[0, 10], [0, 10], [0, 4]], (20, 20, 8))
    assert set(np.unique(y)) == {0, 1}
    np.testing.assert_array_equal(y, np.kron(mask != 0, np.ones((2, 2, 2))).astype(np.uint8))


def test_crop_errors_quote_the_box():
    image = np.zeros((8, 8, 4), np.float32)
    with pytest.raises(ValueError, match="inside"):
        stage2.crop_to_input(image, [[0, 9], [0, 8], [0, 4]], (8, 8, 4))
    with pytest.raises(ValueError, match="empty"):
        stage2.crop_to_input(image, [[2, 2], [0, 8], [0, 4]], (8, 8, 4))
    with pytest.raises(ValueError, match="size"):
        stage2.crop_to_input(image, [[0, 8], [0, 8], [0, 4]], (8, 0, 4))
    with pytest.raises(TypeError, match="bool or integer"):
        stage2.labels_to_input(image, [[0, 8], [0, 8], [0, 4]], (8, 8, 4))


# --------------------------------------------------------------------------- sampler


def _recording_crop(monkeypatch):
    calls = []
    original = stage2._crop_to_input          # what the sampler and predict_region call per crop

    def crop(image, box, size, mirror):
        calls.append((np.array(box), mirror, image.shape))
        return original(image, box, size, mirror)

    monkeypatch.setattr(stage2, "_crop_to_input", crop)
    return calls


def test_sampler_shapes_targets_and_containment(two_leg_case, monkeypatch):
    image, labels, _ = two_leg_case
    calls = _recording_crop(monkeypatch)
    sample = stage2.make_sampler([image], [labels], "adductor_longus", size=(8, 8, 8), ratio_range=(1.0, 1.8),
                                 augment_kwargs=dict(max_rotation_deg=10, max_shear=0.1, spacing_mm=(2, 2, 5)))
    rng = np.random.default_rng(0)
    tight = {False: boxes.bounding_box(labels == 2), True: boxes.bounding_box(labels == 37)}
    for _ in range(40):
        x, y = sample(rng)
        assert x.shape == (1, 8, 8, 8, 1) and x.dtype == np.float32
        assert y.shape == (1, 8, 8, 8) and np.issubdtype(y.dtype, np.integer)
        assert set(np.unique(y)) <= {0, 1} and y.sum() > 0
        box, mirror, _ = calls[-1]
        t = tight[mirror]
        assert np.all(box[:, 0] <= t[:, 0]) and np.all(box[:, 1] >= t[:, 1])     # whole muscle in the crop
        assert np.all(box[:, 0] >= 0) and np.all(box[:, 1] <= labels.shape)
    assert {m for _, m, _ in calls} == {False, True}               # both sides are drawn


def test_sampler_mirrors_left_and_skips_absent_sides(two_leg_case, monkeypatch):
    _, labels, _ = two_leg_case
    ramp = np.broadcast_to(np.arange(24, dtype=np.float32)[:, None, None], labels.shape).copy()
    no_aug = dict(max_rotation_deg=0, max_shear=0, flip_lr=False)
    sample = stage2.make_sampler([ramp], [labels], "adductor_longus", size=(6, 8, 8), ratio_range=(1.0, 1.0),
                                 augment_kwargs=no_aug)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(20):
        x, y = sample(rng)
        assert y.all()                                              # tight box, cube muscle: all foreground
        xs = x[0, :, 0, 0, 0]
        if xs[0] == 14:                                             # right (x 14..19), plain
            np.testing.assert_array_equal(xs, np.arange(14, 20))
            seen.add("right")
        else:                                                       # left (x 4..9), mirrored
            np.testing.assert_array_equal(xs, np.arange(9, 3, -1))
            seen.add("left")
    assert seen == {"right", "left"}

    right_only = np.where(labels == 37, 0, labels)
    calls = _recording_crop(monkeypatch)
    sample = stage2.make_sampler([ramp, ramp], [right_only, np.zeros_like(labels)], "adductor_longus",
                                 size=(8, 8, 8), augment_kwargs=no_aug)
    for _ in range(10):
        sample(rng)
    assert all(m is False for _, m, _ in calls)


def test_sampler_errors(two_leg_case):
    image, labels, _ = two_leg_case
    with pytest.raises(ValueError, match="absent"):
        stage2.make_sampler([image], [labels], "gracilis", size=(8, 8, 8))
    with pytest.raises(ValueError, match="label_mirror"):
        stage2.make_sampler([image], [labels], "adductor_longus", size=(8, 8, 8),
                            augment_kwargs={"label_mirror": np.arange(3)})
    with pytest.raises(ValueError, match="length"):
        stage2.make_sampler([image, image], [labels], "adductor_longus", size=(8, 8, 8))


def test_make_validator_perfect_blind_and_errors(two_leg_case, monkeypatch):
    image, labels, _ = two_leg_case
    image = (labels > 0).astype(np.float32)                      # intensity = truth: a perfect "model"
    monkeypatch.setattr(train, "predict_proba", _fake_intensity_model)
    validate = stage2.make_validator([image], [labels], "adductor_longus", size=(8, 12, 12))
    assert validate(None) > 0.95                                  # both sides, up to resampling
    blind = stage2.make_validator([np.zeros_like(image)], [labels], "adductor_longus", size=(8, 12, 12))
    assert blind(None) == 0.0
    assert np.isnan(stage2.make_validator([image], [labels], "gracilis", size=(8, 8, 8))(None))
    with pytest.raises(ValueError, match="length"):
        stage2.make_validator([image, image], [labels], "adductor_longus", size=(8, 8, 8))


def test_crop_dice_per_case_and_side_averages_to_the_validator(two_leg_case, monkeypatch):
    image, labels, _ = two_leg_case
    monkeypatch.setattr(train, "predict_proba", _fake_intensity_model)
    perfect, blind = (labels > 0).astype(np.float32), np.zeros(labels.shape, np.float32)
    crops = stage2.validation_crops([blind, perfect], [labels, labels], "adductor_longus")
    assert [(c[0], c[1]) for c in crops] == [(0, "right"), (0, "left"), (1, "right"), (1, "left")]
    assert all(c[5] == (c[1] == "left") for c in crops)           # left crops are mirrored
    dice = stage2.crop_dice(None, crops, size=(8, 12, 12))
    assert dice.shape == (4,) and np.all(dice[:2] == 0.0) and np.all(dice[2:] > 0.95)
    validate = stage2.make_validator([blind, perfect], [labels, labels], "adductor_longus", size=(8, 12, 12))
    assert validate(None) == pytest.approx(dice.mean())
    assert stage2.validation_crops([perfect], [labels], "gracilis") == []


# --------------------------------------------------------------------------- prediction


def test_predict_region_three_of_six_boxes_gives_half(monkeypatch):
    monkeypatch.setattr(train, "predict_proba", _fake_intensity_model)
    six = [np.array([[0, 4], [0, 4], [0, 2]])] * 3 + [np.array([[2, 6], [0, 4], [0, 2]])] * 3
    monkeypatch.setattr(boxes, "tta_boxes", lambda box, **kw: [b.copy() for b in six])
    image = np.ones((8, 6, 3), np.float32)                         # probability 1 everywhere
    sl, prob = stage2.predict_region(None, image, [[1, 5], [0, 4], [0, 2]], size=(4, 4, 2), mirror=False)
    assert sl == (slice(0, 6), slice(0, 4), slice(0, 2))
    np.testing.assert_allclose(prob[0:2], 0.5)                     # x 0..1: 3 of 6 boxes
    np.testing.assert_allclose(prob[2:4], 1.0)                     # x 2..3: all six
    np.testing.assert_allclose(prob[4:6], 0.5)                     # x 4..5: the other 3


@pytest.mark.parametrize("mirror", [False, True])
def test_predict_region_averages_coverage_of_real_tta_boxes(monkeypatch, mirror):
    monkeypatch.setattr(train, "predict_proba", _fake_intensity_model)
    image = np.ones((30, 28, 16), np.float32)
    box = np.array([[10, 18], [6, 16], [4, 10]])
    sl, prob = stage2.predict_region(None, image, box, size=(8, 8, 4), mirror=mirror, seed=3)
    tta = boxes.tta_boxes(box, n=6, seed=3, shape=image.shape)
    cover = np.zeros(image.shape, np.float32)
    for b in tta:
        cover[boxes.box_slices(b)] += 1
    assert sl == boxes.box_slices(boxes.union_box(tta))
    assert prob.dtype == np.float32 and prob.shape == cover[sl].shape
    np.testing.assert_allclose(prob, cover[sl] / 6, atol=1e-6)
    assert prob[boxes.box_slices(box - boxes.union_box(tta)[:, :1])].min() == pytest.approx(1.0)


@pytest.mark.parametrize("mirror", [False, True])
def test_predict_region_single_fixed_box_returns_the_image(monkeypatch, mirror):
    monkeypatch.setattr(train, "predict_proba", _fake_intensity_model)
    image = np.random.default_rng(2).uniform(size=(20, 18, 9)).astype(np.float32)
    box = np.array([[3, 11], [2, 14], [1, 7]])
    sl, prob = stage2.predict_region(None, image, box, size=(8, 12, 6), mirror=mirror, n_boxes=1,
                                     ratio_range=(1.0, 1.0))
    assert sl == boxes.box_slices(box)
    np.testing.assert_allclose(prob, image[sl], atol=1e-6)          # mirrored in and out: same place


class _FakeModel:
    input_shape = (None, 8, 8, 4, 1)


def test_predict_all_mirrors_left_labels_and_skips(monkeypatch, caplog):
    calls = []

    def ramp_model(model, x, **kwargs):                             # foreground rises with model-grid x
        calls.append(model)
        p = np.broadcast_to(np.linspace(0.05, 0.95, x.shape[0])[:, None, None], x.shape).astype(np.float32)
        return np.stack([1 - p, p], axis=-1)

    monkeypatch.setattr(train, "predict_proba", ramp_model)
    image = np.zeros((24, 16, 12), np.float32)
    box = np.array([[4, 10], [4, 12], [2, 10]])
    gr = anatomy.muscle("gracilis")
    boxes_by_label = {AL.right_label: box + [[10], [0], [0]], AL.left_label: box, gr.right_label: box,
                      gr.left_label: None}
    model = _FakeModel()
    out = stage2.predict_all({"adductor_longus": model}, image, boxes_by_label, n_boxes=1, ratio_range=(1, 1))
    assert set(out) == {AL.right_label, AL.left_label}               # gracilis: no model; None box skipped
    assert "gracilis" in caplog.text
    assert calls == [model, model]                                  # one shared model for both sides
    right = out[AL.right_label][1].mean(axis=(1, 2))
    left = out[AL.left_label][1].mean(axis=(1, 2))
    assert np.all(np.diff(right) > 0) and np.all(np.diff(left) < 0)  # left: mirrored back
    np.testing.assert_allclose(left, right[::-1], atol=1e-6)
    assert out[AL.left_label][0] == boxes.box_slices(box)

    ref = stage2.predict_region(model, image, box, size=(8, 8, 4), mirror=True, n_boxes=6, seed=4)
    got = stage2.predict_all({"adductor_longus": model}, image, {AL.left_label: box},
                             sizes_by_key={"adductor_longus": (8, 8, 4)}, n_boxes=6, seed=4)
    assert got[AL.left_label][0] == ref[0]
    np.testing.assert_array_equal(got[AL.left_label][1], ref[1])


# --------------------------------------------------------------------------- slow: real training


def _two_blob_case(rng, shape=(32, 24, 12)):
    """A right (label 2) and a left (label 37) ellipsoid 'muscle' with random radii/centres,
    each touching a dimmer distractor blob; Rician-free Gaussian noise."""
    grid = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(float)
    image = rng.normal(0.0, 0.1, size=shape)
    labels = np.zeros(shape, np.uint8)
    for label, cx in ((AL.right_label, 23.0), (AL.left_label, 8.0)):
        c = np.array([cx, 12.0, 6.0]) + rng.uniform(-1.5, 1.5, size=3)
        r = rng.uniform([3.5, 4.0, 2.5], [5.0, 6.0, 4.0])
        blob = (((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(axis=0) <= 1
        d = c + [0.0, r[1] + 2.5, 0.0]
        distractor = (((grid - d[:, None, None, None]) / np.array([3.0, 2.5, 2.5])[:, None, None, None]) ** 2
                      ).sum(axis=0) <= 1
        image[distractor & ~blob] += 0.5
        image[blob] += 1.0
        labels[blob] = label
    return image.astype(np.float32), labels


@pytest.mark.slow
def test_train_small_unet_on_two_blobs_reaches_dice():
    from llseg import models

    rng = np.random.default_rng(11)
    cases = [_two_blob_case(rng) for _ in range(5)]
    train_cases, (test_image, test_labels) = cases[:4], cases[4]
    sizes = stage2.muscle_box_sizes([lab for _, lab in train_cases], "adductor_longus")
    size = stage2.input_size_for(sizes, max_voxels=16 ** 3, divisor=4)
    model = models.build_model("unet", (*size, 1), 2, levels=3, root_filters=8, block="plain")
    sample = stage2.make_sampler([im for im, _ in train_cases], [lab for _, lab in train_cases],
                                 "adductor_longus", size=size, ratio_range=(1.0, 1.8),
                                 augment_kwargs=dict(max_rotation_deg=10, max_shear=0.05, flip_lr=True))
    history = train.fit(model, sample, iterations=100, learning_rate=0.01, seed=0, progress=False)
    assert np.mean(history["loss"][-10:]) < np.mean(history["loss"][:10])
    for label, mirror in ((AL.right_label, False), (AL.left_label, True)):
        truth = test_labels == label
        sl, prob = stage2.predict_region(model, test_image, boxes.bounding_box(truth), size=size, mirror=mirror)
        pred = np.zeros(truth.shape, bool)
        pred[sl] = prob >= 0.5
        assert _dice(pred, truth) > 0.8, (label, _dice(pred, truth), size)
