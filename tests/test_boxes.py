"""Tests for llseg.boxes: tight boxes, scaling between grids, clipping and enlargement."""
import numpy as np
import pytest
from skimage.measure import block_reduce

from llseg import boxes


def _contains(outer, inner) -> bool:
    outer, inner = np.asarray(outer), np.asarray(inner)
    return bool(np.all(outer[:, 0] <= inner[:, 0]) and np.all(outer[:, 1] >= inner[:, 1]))


def _inside(box, shape) -> bool:
    box = np.asarray(box)
    return bool(np.all(box[:, 0] >= 0) and np.all(box[:, 1] <= np.asarray(shape)))


# --------------------------------------------------------------------------- bounding_box


def test_bounding_box_known_answer_and_dtype():
    mask = np.zeros((10, 8, 12), bool)
    mask[2, 3, 4] = mask[5, 3, 7] = True
    box = boxes.bounding_box(mask)
    np.testing.assert_array_equal(box, [[2, 6], [3, 4], [4, 8]])
    assert box.dtype == np.int64 and box.shape == (3, 2)
    assert mask[boxes.box_slices(box)].sum() == 2


def test_bounding_box_empty_one_voxel_and_integer_mask():
    assert boxes.bounding_box(np.zeros((4, 4, 4), bool)) is None
    one = np.zeros((4, 5, 6), np.uint8)
    one[3, 0, 5] = 7                                           # any non-zero is foreground
    np.testing.assert_array_equal(boxes.bounding_box(one), [[3, 4], [0, 1], [5, 6]])
    np.testing.assert_array_equal(boxes.bounding_box(np.ones((2, 3, 1), bool)), [[0, 2], [0, 3], [0, 1]])


def test_bounding_box_rejects_float_masks():
    with pytest.raises(TypeError, match="float64"):
        boxes.bounding_box(np.zeros((3, 3, 3)))


# --------------------------------------------------------------------------- basic helpers


def test_slices_size_clip_union():
    box = np.array([[1, 4], [0, 2], [3, 9]])
    assert boxes.box_slices(box) == (slice(1, 4), slice(0, 2), slice(3, 9))
    np.testing.assert_array_equal(boxes.box_size(box), [3, 2, 6])
    np.testing.assert_array_equal(boxes.clip_box([[-2, 4], [5, 12], [3, 9]], (10, 10, 8)),
                                  [[0, 4], [5, 10], [3, 8]])
    np.testing.assert_array_equal(boxes.union_box([box, [[0, 2], [1, 5], [4, 5]]]), [[0, 4], [0, 5], [3, 9]])
    with pytest.raises(ValueError, match="empty"):
        boxes.union_box([])


def test_box_validation_messages_quote_the_value():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        boxes.box_size([1, 2, 3])
    with pytest.raises(ValueError, match="lo <= hi"):
        boxes.box_size([[4, 1], [0, 1], [0, 1]])
    with pytest.raises(TypeError, match="integer"):
        boxes.box_size([[0.5, 1], [0, 1], [0, 1]])
    with pytest.raises(ValueError, match="shape"):
        boxes.clip_box([[0, 1], [0, 1], [0, 1]], (4, 4))


# --------------------------------------------------------------------------- scale_box


def test_scale_box_known_answers_and_float_noise():
    np.testing.assert_array_equal(boxes.scale_box([[1, 3], [0, 5], [2, 3]], 2), [[2, 6], [0, 10], [4, 6]])
    np.testing.assert_array_equal(boxes.scale_box([[1, 3], [1, 5], [3, 4]], 0.5), [[0, 2], [0, 3], [1, 2]])
    np.testing.assert_array_equal(boxes.scale_box([[1, 3], [1, 5], [3, 4]], (2, 1, 0.5)), [[2, 6], [1, 5], [1, 2]])
    # 3 * (0.1 / 0.05) = 6.000000000000001 in floating point: must not add a voxel
    np.testing.assert_array_equal(boxes.scale_box([[3, 7]] * 3, 0.1 / 0.05), [[6, 14]] * 3)
    with pytest.raises(ValueError, match="zoom"):
        boxes.scale_box([[0, 1]] * 3, (1, 0, 1))


@pytest.mark.parametrize("factor", [(2, 2, 2), (2, 3, 4), (4, 4, 1)])
def test_scale_box_contains_region_after_down_and_upsampling(factor):
    rng = np.random.default_rng(sum(factor))
    shape = (24, 24, 24)
    for _ in range(50):
        fine = np.zeros(shape, bool)
        lo = rng.integers(0, 20, size=3)
        hi = lo + rng.integers(1, 5, size=3)
        fine[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        coarse = block_reduce(fine, factor, np.any)            # coarse voxel on if any fine voxel under it
        up = boxes.scale_box(boxes.bounding_box(coarse), factor)
        assert _contains(up, boxes.bounding_box(fine))
        assert np.all(boxes.box_size(up) <= boxes.box_size(boxes.bounding_box(fine)) + 2 * np.array(factor))
        down = boxes.scale_box(boxes.bounding_box(fine), 1.0 / np.array(factor))
        np.testing.assert_array_equal(down, boxes.bounding_box(coarse))   # exact: same footprint rule


# --------------------------------------------------------------------------- enlarge_box


def test_enlarge_symmetric_ratio_scales_about_the_centre():
    box = np.array([[20, 30], [10, 20], [40, 50]])
    big = boxes.enlarge_box(box, 1.8, 1.8, (100, 100, 100))
    np.testing.assert_array_equal(boxes.box_size(big), [18, 18, 18])       # 1.8 x 10
    np.testing.assert_array_equal(big.sum(axis=1), box.sum(axis=1))        # centre unchanged
    np.testing.assert_array_equal(boxes.enlarge_box(box, 1.0, 1.0, (100, 100, 100)), box)


def test_enlarge_asymmetric_ratios_move_the_centre_and_keep_lo():
    box = np.array([[20, 30], [10, 20], [40, 60]])
    out = boxes.enlarge_box(box, (1.0, 1.0, 1.4), (1.8, 1.0, 1.0), (100, 100, 100))
    np.testing.assert_array_equal(out, [[20, 34], [10, 20], [36, 60]])


def test_enlarge_is_clipped_to_the_image_and_anisotropic_shapes():
    box = np.array([[0, 4], [7, 9], [1, 2]])
    out = boxes.enlarge_box(box, 1.8, 1.8, (10, 9, 3))
    np.testing.assert_array_equal(out, [[0, 6], [6, 9], [0, 3]])   # y: 7 - 0.8 -> 6, 9 + 0.8 -> 9 (edge)


def test_enlarge_rejects_shrinking_ratios():
    with pytest.raises(ValueError, match="0.9"):
        boxes.enlarge_box([[0, 4]] * 3, 0.9, 1.0, (8, 8, 8))


def test_random_enlargement_property_contains_and_stays_inside():
    """Many random boxes (many touching the border) x rngs: always contain the muscle, stay inside."""
    rng = np.random.default_rng(123)
    for trial in range(600):
        shape = tuple(int(s) for s in rng.integers(1, 40, size=3))
        lo = np.array([rng.integers(0, s) for s in shape])
        hi = np.array([rng.integers(a + 1, s + 1) for a, s in zip(lo, shape)])
        if trial % 3 == 0:                                      # force a touch of the lower/upper border
            lo[trial % 2] = 0
            hi[(trial + 1) % 3] = shape[(trial + 1) % 3]
        box = np.stack([lo, hi], axis=1)
        out = boxes.random_enlargement(box, ratio_range=(1.0, 1.8), rng=rng, shape=shape)
        assert out.shape == (3, 2) and out.dtype == np.int64
        assert _contains(out, box), (box, out)
        assert _inside(out, shape), (shape, out)
        # growth per axis is at most 0.8 x size, plus one voxel of outward rounding per edge
        assert np.all(boxes.box_size(out) <= np.ceil(1.8 * boxes.box_size(box)) + 2)


def test_random_enlargement_mean_ratio_and_degenerate_range():
    rng = np.random.default_rng(0)
    box = np.array([[100, 200]] * 3)
    sizes = np.array([boxes.box_size(boxes.random_enlargement(box, rng=rng, shape=(400,) * 3))
                      for _ in range(400)])
    assert abs(sizes.mean() / 100 - 1.4) < 0.02                # E[r] = 1.4 on average
    assert sizes.min() >= 100 and sizes.max() <= 180
    fixed = boxes.random_enlargement(box, ratio_range=(1.5, 1.5), rng=rng, shape=(400,) * 3)
    np.testing.assert_array_equal(fixed, [[75, 225]] * 3)
    with pytest.raises(ValueError, match="ratio_range"):
        boxes.random_enlargement(box, ratio_range=(0.5, 1.2), rng=rng, shape=(400,) * 3)


def test_one_voxel_box_enlarges_at_most_one_voxel_per_edge():
    box = np.array([[5, 6], [5, 6], [5, 6]])
    for b in boxes.tta_boxes(box, n=20, shape=(11, 11, 11)):
        assert _contains(b, box) and np.all(boxes.box_size(b) <= 3)


# --------------------------------------------------------------------------- tta_boxes


def test_tta_boxes_deterministic_per_seed_and_count():
    box = np.array([[10, 20], [12, 30], [3, 8]])
    a = boxes.tta_boxes(box, n=6, seed=5, shape=(40, 40, 12))
    b = boxes.tta_boxes(box, n=6, seed=5, shape=(40, 40, 12))
    c = boxes.tta_boxes(box, n=6, seed=6, shape=(40, 40, 12))
    assert len(a) == 6
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(x.ravel()) for x in a}) > 1              # the six boxes differ
    assert all(_contains(x, box) and _inside(x, (40, 40, 12)) for x in a)
    # same distribution as training: equal to random_enlargement drawn from default_rng(seed)
    rng = np.random.default_rng(5)
    ref = [boxes.random_enlargement(box, rng=rng, shape=(40, 40, 12)) for _ in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, ref))
    with pytest.raises(ValueError, match="n must"):
        boxes.tta_boxes(box, n=0, shape=(40, 40, 12))
