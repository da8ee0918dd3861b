"""Tests for llseg.metrics: known answers on hand-built masks, a brute-force reference, MedPy."""
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from llseg import _surface, metrics
from llseg.anatomy import REGIONS, region_name
from llseg.metrics import (EmptyMaskWarning, average_symmetric_surface_distance, dice, evaluate_regions,
                           hausdorff_distance_95, mean_surface_distance, one_voxel_margin_dice, surface_distances,
                           volume_error_pct, volume_ml)

ANISO = (0.8, 1.2, 5.0)


# ----------------------------------------------------------------------------- helpers
def _box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def _ref_surface(mask):
    """Independent surface definition: a voxel with a 6-neighbour outside the mask or array."""
    padded = np.pad(mask, 1)
    core = mask.copy()
    for ax in range(3):
        for step in (-1, 1):
            core &= np.roll(padded, step, axis=ax)[1:-1, 1:-1, 1:-1]
    return mask & ~core


def _ref_distances(pred, truth, spacing):
    """Brute force: all pairs of surface voxels (C order of pred's surface)."""
    a = np.argwhere(_ref_surface(pred)) * np.asarray(spacing)
    b = np.argwhere(_ref_surface(truth)) * np.asarray(spacing)
    return cdist(a, b).min(axis=1)


def _blob(rng, shape, n_balls=4):
    """Union of random anisotropic balls; may touch the array border."""
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(float)              # (X, Y, Z, 3)
    m = np.zeros(shape, bool)
    for _ in range(n_balls):
        c = rng.uniform(0, np.array(shape) - 1)
        r = rng.uniform(1.5, 5.0, 3) * np.array([1.0, 1.0, 0.3])
        m |= (((grid - c) / np.maximum(r, 0.6)) ** 2).sum(-1) <= 1.0
    return m


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------- dice
def test_dice_of_shifted_cubes_is_dice_not_jaccard(no_warnings):
    a = _box((10, 10, 10), (2, 2, 2), (6, 6, 6))                      # 64 voxels
    for axis in range(3):
        b = np.roll(a, 1, axis=axis)                                      # overlap 48
        assert dice(a, b) == pytest.approx(2 * 48 / 128)                  # 0.75; Jaccard would be 0.6
    assert dice(a, a) == 1.0


def test_one_voxel_margin_dice_known_answers(no_warnings):
    # a 4 x 6 x 3 box: one in-plane voxel around it adds 2 * (4 + 6) voxels per slice (no corners),
    # two add 4 * (4 + 6) + 4 (a diamond's corners); growing along Z as well adds the two end faces
    t = np.zeros((12, 12, 5), dtype=bool)
    t[0:4, 3:9, 1:4] = True                                    # touches the X border: still grows there
    n = 4 * 6 * 3
    assert one_voxel_margin_dice(t) == pytest.approx(2 * n / (n + 3 * (24 + 20)))
    assert one_voxel_margin_dice(t, voxels=2) == pytest.approx(2 * n / (n + 3 * (24 + 40 + 4)))
    assert one_voxel_margin_dice(t, axes=(0, 1, 2)) == pytest.approx(2 * n / (n + 3 * 44 + 2 * 24))
    assert one_voxel_margin_dice(t.astype(np.uint8)) == one_voxel_margin_dice(t)
    big = np.zeros((40, 40, 3), dtype=bool)
    big[5:35, 5:35] = True
    assert one_voxel_margin_dice(big) > one_voxel_margin_dice(t)       # larger muscles lose less


def test_one_voxel_margin_dice_errors_and_empty():
    t = np.zeros((4, 4, 4), dtype=bool)
    with pytest.warns(EmptyMaskWarning, match="empty"):
        assert np.isnan(one_voxel_margin_dice(t))
    t[1, 1, 1] = True
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="voxels"):
            one_voxel_margin_dice(t, voxels=bad)
    for bad in ((), (0, 0), (3,)):
        with pytest.raises(ValueError, match="axes"):
            one_voxel_margin_dice(t, axes=bad)
    with pytest.raises(TypeError, match="bool mask"):
        one_voxel_margin_dice(t * 2.0)


def test_dice_one_voxel_and_empty_cases():
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    other = np.zeros_like(one)
    other[0, 0, 0] = True
    assert dice(one, one) == 1.0
    assert dice(one, other) == 0.0
    empty = np.zeros_like(one)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dice(one, empty) == 0.0                                    # formula's value, no warning
        assert dice(empty, one) == 0.0
    with pytest.warns(EmptyMaskWarning, match="both empty"):
        assert np.isnan(dice(empty, empty))


def test_mask_checks():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        dice(a, np.zeros((4, 4, 5), bool))
    with pytest.raises(TypeError, match="float64"):
        dice(a, np.zeros((4, 4, 4)))
    with pytest.raises(TypeError, match="bool mask"):
        dice(a, np.full((4, 4, 4), 2))
    with pytest.raises(ValueError, match="3-D"):
        dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="spacing_mm"):
        mean_surface_distance(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing_mm"):
        volume_ml(a, (1.0, 0.0, 1.0))
    b = _box((4, 4, 4), (1, 1, 1), (3, 3, 3))
    assert dice(b.astype(np.uint8), b) == 1.0                             # 0/1 integers accepted


# ----------------------------------------------------------------------------- surfaces and distances
def test_surface_is_medpy_definition():
    cube = _box((5, 5, 5), (1, 1, 1), (4, 4, 4))                          # 27 voxels, 1 interior
    assert len(surface_distances(cube, cube, ANISO)) == 26
    full = np.ones((3, 3, 3), bool)                                       # array border = outside
    assert len(surface_distances(full, full, ANISO)) == 26
    slab = _box((6, 6, 6), (1, 1, 2), (5, 5, 3))                           # one slice thick: all surface
    assert len(surface_distances(slab, slab, ANISO)) == 16
    one = _box((3, 3, 3), (1, 1, 1), (2, 2, 2))
    np.testing.assert_array_equal(surface_distances(one, one, ANISO), [0.0])


@pytest.mark.parametrize("shape", [(9, 8, 7), (5, 2, 6), (1, 4, 4)])
def test_surface_equals_scipy_erosion(shape):
    """The slice-based surface is exactly MedPy's mask ^ binary_erosion(mask, 6-connected)."""
    from scipy import ndimage
    rng = np.random.default_rng(11)
    for _ in range(5):
        m = rng.random(shape) < 0.7
        expected = m ^ ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1))
        np.testing.assert_array_equal(_surface.surface(m), expected)


def test_one_voxel_each_anisotropic(no_warnings):
    p = np.zeros((4, 4, 4), bool)
    t = np.zeros_like(p)
    p[1, 1, 1] = True
    t[2, 1, 2] = True
    expected = np.sqrt(1.0 ** 2 + 5.0 ** 2)                               # spacing (1, 1, 5)
    assert surface_distances(p, t, (1, 1, 5)) == pytest.approx([expected], abs=1e-12)
    for f in (mean_surface_distance, average_symmetric_surface_distance, hausdorff_distance_95):
        assert f(p, t, (1, 1, 5)) == pytest.approx(expected, abs=1e-12)
    assert mean_surface_distance(p, t, (2, 1, 1)) == pytest.approx(np.sqrt(4 + 1))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_box_dilated_along_one_axis(axis, no_warnings):
    """Truth box (a, b, c) voxels; pred adds one voxel layer at both ends along ``axis``.

    pred -> truth: the 2bc end-face voxels are at exactly the axis spacing s (every truth
    voxel is at least one step away along the axis), every other pred surface voxel lies on
    the truth surface. truth -> pred: a truth end-face voxel whose cross-section position is
    interior is at min(s, in-plane distance to the cross-section border); all others 0.
    """
    spacing = np.array([1.5, 0.8, 5.0])
    a, b, c = 6, 5, 4
    dims = np.roll([a, b, c], axis)                                       # put length a on ``axis``
    lo = np.full(3, 2)
    truth = _box((12, 12, 12), lo, lo + dims)
    lo_p, hi_p = lo.copy(), lo + dims
    lo_p[axis] -= 1
    hi_p[axis] += 1
    pred = _box((12, 12, 12), lo_p, hi_p)
    s = spacing[axis]
    n_side = a * (b * c - (b - 2) * (c - 2))
    d_pt = surface_distances(pred, truth, spacing)
    assert len(d_pt) == 2 * b * c + n_side
    assert np.count_nonzero(d_pt == s) == 2 * b * c
    assert np.count_nonzero(d_pt == 0) == n_side
    assert mean_surface_distance(pred, truth, spacing) == pytest.approx(s * 2 * b * c / (2 * b * c + n_side))

    # truth -> pred, from the cross-section geometry
    u, v = [ax for ax in range(3) if ax != axis]                      # cross-section axes
    nu, nv, su, sv = dims[u], dims[v], spacing[u], spacing[v]
    y, z = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    in_plane = np.minimum.reduce([y * su, (nu - 1 - y) * su, z * sv, (nv - 1 - z) * sv])
    end_face = np.minimum(s, in_plane)                                    # 0 on the border
    d_tp_expected = np.concatenate([end_face.ravel(), end_face.ravel(),
                                    np.zeros((a - 2) * (b * c - (b - 2) * (c - 2)))])
    d_tp = surface_distances(truth, pred, spacing)
    np.testing.assert_allclose(np.sort(d_tp), np.sort(d_tp_expected), atol=1e-12)
    pooled = np.concatenate([d_pt, d_tp_expected])
    assert average_symmetric_surface_distance(pred, truth, spacing) == pytest.approx(pooled.mean())
    assert hausdorff_distance_95(pred, truth, spacing) == pytest.approx(np.percentile(pooled, 95))


@pytest.mark.parametrize("spacing, tol", [((0.5, 0.5, 1.25), 0.3), ((1.0, 1.0, 5.0), 1.0)])
def test_concentric_spheres_anisotropic(spacing, tol, no_warnings):
    """Spheres of radius 12 and 8 mm: surface distances ~4 mm. The voxel surfaces are one
    voxel thick (up to 5 mm along z), so the discrete value is a little below 4 mm, and the
    gap shrinks with the voxel size."""
    spacing = np.asarray(spacing)
    half = np.ceil(14 / spacing).astype(int)
    grid = (np.indices(tuple(2 * half + 1)).transpose(1, 2, 3, 0) - half) * spacing
    r = np.linalg.norm(grid, axis=-1)
    big, small = r <= 12.0, r <= 8.0
    assert mean_surface_distance(small, big, spacing) == pytest.approx(4.0, abs=tol)
    assert mean_surface_distance(big, small, spacing) == pytest.approx(4.0, abs=tol)
    assert average_symmetric_surface_distance(small, big, spacing) == pytest.approx(4.0, abs=tol)
    assert 4.0 <= hausdorff_distance_95(small, big, spacing) <= 4.0 + spacing.max()
    assert mean_surface_distance(big, big, spacing) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_reference(seed, no_warnings):
    rng = np.random.default_rng(seed)
    shape = (14, 12, 7)
    p, t = _blob(rng, shape), _blob(rng, shape)
    np.testing.assert_allclose(surface_distances(p, t, ANISO), _ref_distances(p, t, ANISO), rtol=0, atol=1e-12)
    np.testing.assert_allclose(surface_distances(t, p, ANISO), _ref_distances(t, p, ANISO), rtol=0, atol=1e-12)


def test_scipy_kdtree_fallback_is_identical(monkeypatch, no_warnings):
    rng = np.random.default_rng(7)
    p, t = _blob(rng, (14, 12, 7)), _blob(rng, (14, 12, 7))
    fast = surface_distances(p, t, ANISO)
    monkeypatch.setattr(_surface, "_PyKDTree", None)
    np.testing.assert_array_equal(surface_distances(p, t, ANISO), fast)


def test_crop_does_not_change_values(no_warnings):
    rng = np.random.default_rng(3)
    p, t = _blob(rng, (10, 9, 6)), _blob(rng, (10, 9, 6))
    big_p, big_t = np.zeros((30, 25, 16), bool), np.zeros((30, 25, 16), bool)
    big_p[11:21, 7:16, 5:11], big_t[11:21, 7:16, 5:11] = p, t
    for f in (mean_surface_distance, average_symmetric_surface_distance, hausdorff_distance_95):
        assert f(big_p, big_t, ANISO) == f(p, t, ANISO)


def test_hd95_pools_both_directions(no_warnings):
    """A small blob inside a big box: directed distances differ a lot; HD95 is the 95th
    percentile of the pooled set (MedPy), not the max of two directed percentiles."""
    t = _box((20, 20, 8), (2, 2, 1), (18, 18, 7))
    p = _box((20, 20, 8), (8, 8, 3), (11, 11, 5))
    d_pt, d_tp = surface_distances(p, t, ANISO), surface_distances(t, p, ANISO)
    pooled = np.percentile(np.concatenate([d_pt, d_tp]), 95)
    assert hausdorff_distance_95(p, t, ANISO) == pytest.approx(pooled)
    assert hausdorff_distance_95(t, p, ANISO) == pytest.approx(pooled)
    assert pooled != pytest.approx(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
    assert average_symmetric_surface_distance(p, t, ANISO) == pytest.approx(np.concatenate([d_pt, d_tp]).mean())
    assert mean_surface_distance(p, t, ANISO) != pytest.approx(mean_surface_distance(t, p, ANISO))


def test_empty_masks_give_nan_and_warn():
    one = _box((4, 4, 4), (1, 1, 1), (3, 3, 3))
    empty = np.zeros_like(one)
    for f in (mean_surface_distance, average_symmetric_surface_distance, hausdorff_distance_95):
        for p, t, who in ((one, empty, "truth"), (empty, one, "pred"), (empty, empty, "pred and truth")):
            with pytest.warns(EmptyMaskWarning, match=who):
                assert np.isnan(f(p, t, ANISO))
    with pytest.warns(EmptyMaskWarning, match="pred is empty"):
        assert surface_distances(empty, one, ANISO).shape == (0,)
    with pytest.warns(EmptyMaskWarning, match="inf"):
        d = surface_distances(one, empty, ANISO)
    assert d.shape == (8,) and np.all(np.isinf(d))


# ----------------------------------------------------------------------------- volumes
def test_volumes(no_warnings):
    t = _box((6, 6, 6), (0, 0, 0), (2, 5, 1))                             # 10 voxels
    p = _box((6, 6, 6), (0, 0, 0), (3, 4, 1))                             # 12 voxels
    assert volume_ml(t, (1, 1, 5)) == pytest.approx(0.05)                 # 10 * 5 mm^3
    assert volume_ml(np.zeros_like(t), (1, 1, 5)) == 0.0
    assert volume_error_pct(p, t, (1, 1, 5)) == pytest.approx(20.0)
    assert volume_error_pct(t, p, (1, 1, 5)) == pytest.approx(-100 * 2 / 12)
    assert volume_error_pct(t, p, (1, 1, 5), absolute=True) == pytest.approx(100 * 2 / 12)
    assert volume_error_pct(np.zeros_like(t), t, (1, 1, 5)) == -100.0
    with pytest.warns(EmptyMaskWarning, match="truth is empty"):
        assert np.isnan(volume_error_pct(p, np.zeros_like(t), (1, 1, 5)))


# ----------------------------------------------------------------------------- label maps
@pytest.fixture
def label_pair():
    """Labels 1 (shifted), 36 (identical, touching the array border), 2 (pred only),
    37 (truth only); everything else absent."""
    pred = np.zeros((30, 20, 8), np.uint8)
    truth = np.zeros_like(pred)
    truth[2:10, 3:12, 1:6] = 1
    pred[3:11, 3:12, 1:5] = 1
    truth[20:30, 5:15, 0:8] = pred[20:30, 5:15, 0:8] = 36
    pred[12:15, 14:18, 2:4] = 2
    truth[16:19, 1:4, 3:6] = 37
    return pred, truth


def test_evaluate_regions_matches_pair_functions(label_pair):
    pred, truth = label_pair
    sp = (1.0, 1.0, 5.0)
    with pytest.warns(EmptyMaskWarning) as record:
        rows = evaluate_regions(pred, truth, sp, labels=[1, 36, 2, 37, 3], case="s01")
    messages = [str(w.message) for w in record]
    assert len(messages) == 3
    for label in (2, 37, 3):
        assert any(f"case s01: label {label} ({region_name(label)})" in m for m in messages)
    assert [r["label"] for r in rows] == [1, 36, 2, 37, 3]
    assert set(rows[0]) == {"case", "label", "muscle", "side", "dice", "msd_mm", "assd_mm", "hd95_mm",
                            "volume_pred_ml", "volume_true_ml", "volume_error_pct", "volume_error_abs_pct",
                            "dice_one_voxel_margin"}
    r1, r36, r2, r37, r3 = rows
    assert (r1["muscle"], r1["side"], r1["case"]) == (REGIONS[1][0], "right", "s01")
    p, t = pred == 1, truth == 1
    assert r1["dice"] == dice(p, t)
    assert r1["msd_mm"] == mean_surface_distance(p, t, sp)
    assert r1["assd_mm"] == average_symmetric_surface_distance(p, t, sp)
    assert r1["hd95_mm"] == hausdorff_distance_95(p, t, sp)
    assert r1["volume_pred_ml"] == pytest.approx(volume_ml(p, sp))
    assert r1["volume_true_ml"] == pytest.approx(8 * 9 * 5 * 5 / 1000)
    assert r1["volume_error_pct"] == pytest.approx(volume_error_pct(p, t, sp))
    assert r1["volume_error_abs_pct"] == pytest.approx(abs(r1["volume_error_pct"]))
    assert r1["dice_one_voxel_margin"] == one_voxel_margin_dice(t)
    assert np.isnan(r2["dice_one_voxel_margin"]) and r37["dice_one_voxel_margin"] > 0    # truth empty / not
    assert (r36["dice"], r36["msd_mm"], r36["assd_mm"], r36["hd95_mm"], r36["volume_error_pct"]) == (1, 0, 0, 0, 0)
    assert r36["side"] == "left"
    assert r2["dice"] == 0.0 and np.isnan(r2["msd_mm"]) and np.isnan(r2["volume_error_pct"])
    assert r2["volume_true_ml"] == 0.0 and r2["volume_pred_ml"] == pytest.approx(3 * 4 * 2 * 5 / 1000)
    assert r37["dice"] == 0.0 and np.isnan(r37["hd95_mm"]) and r37["volume_error_pct"] == -100.0
    assert np.isnan(r3["dice"]) and np.isnan(r3["assd_mm"]) and np.isnan(r3["volume_error_pct"])


def test_evaluate_regions_defaults_to_all_70(label_pair):
    pred, truth = label_pair
    with pytest.warns(EmptyMaskWarning):
        rows = evaluate_regions(pred, truth, None)
    assert [r["label"] for r in rows] == sorted(REGIONS)
    assert "case" not in rows[0]
    assert sum(np.isfinite(r["dice"]) for r in rows) == 4
    assert [(r["muscle"], r["side"]) for r in rows] == [REGIONS[k] for k in sorted(REGIONS)]


def test_evaluate_regions_threads_do_not_change_results(label_pair):
    pred, truth = label_pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        one = evaluate_regions(pred, truth, (0.7, 0.9, 3.3), threads=1)
        two = evaluate_regions(pred, truth, (0.7, 0.9, 3.3), threads=2)
    np.testing.assert_equal(one, two)                                      # NaN == NaN here
    with pytest.raises(ValueError, match="threads"):
        evaluate_regions(pred, truth, (1, 1, 5), threads=0)


def test_evaluate_regions_checks(label_pair):
    pred, truth = label_pair
    bad = truth.copy()
    bad[0, 0, 0] = 71
    with pytest.raises(ValueError, match=r"unknown label id\(s\) 71;"):
        evaluate_regions(pred, bad, (1, 1, 5))
    with pytest.raises(ValueError, match="negative"):
        evaluate_regions(pred.astype(np.int16) - 1, truth, (1, 1, 5))
    with pytest.raises(TypeError, match="integers"):
        evaluate_regions(pred + 0.5, truth, (1, 1, 5))
    with pytest.raises(ValueError, match="shape mismatch"):
        evaluate_regions(pred[:-1], truth, (1, 1, 5))
    with pytest.raises(ValueError, match=r"unknown region id\(s\) \[0\]"):
        evaluate_regions(pred, truth, (1, 1, 5), labels=[0, 1])
    with pytest.raises(ValueError, match="duplicate"):
        evaluate_regions(pred, truth, (1, 1, 5), labels=[1, 1])
    with pytest.raises(TypeError, match="iterable"):
        evaluate_regions(pred, truth, (1, 1, 5), labels=1)
    with pytest.raises(ValueError, match="spacing_mm"):
        evaluate_regions(pred, truth, (1, 1, -5))
    rows = evaluate_regions(pred.astype(np.float32), truth.astype(np.int64), (1, 1, 5), labels=[1])
    assert rows[0]["dice"] > 0.5                                          # integral floats accepted


# ----------------------------------------------------------------------------- MedPy
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 5.0), (0.7, 0.9, 3.3)])
@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_medpy(seed, spacing, no_warnings):
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(seed)
    shape = (16, 14, 8)
    p, t = _blob(rng, shape), _blob(rng, shape)
    assert dice(p, t) == pytest.approx(binary.dc(p, t), abs=1e-12)
    assert mean_surface_distance(p, t, spacing) == pytest.approx(binary.asd(p, t, spacing), abs=1e-9)
    assert average_symmetric_surface_distance(p, t, spacing) == pytest.approx(binary.assd(p, t, spacing), abs=1e-9)
    assert hausdorff_distance_95(p, t, spacing) == pytest.approx(binary.hd95(p, t, spacing), abs=1e-9)


def test_evaluate_regions_agrees_with_medpy(label_pair, no_warnings):
    binary = pytest.importorskip("medpy.metric.binary")
    pred, truth = label_pair
    sp = (0.7, 0.9, 3.3)
    for row in evaluate_regions(pred, truth, sp, labels=[1, 36]):
        p, t = pred == row["label"], truth == row["label"]
        assert row["dice"] == pytest.approx(binary.dc(p, t), abs=1e-12)
        assert row["msd_mm"] == pytest.approx(binary.asd(p, t, sp), abs=1e-9)
        assert row["assd_mm"] == pytest.approx(binary.assd(p, t, sp), abs=1e-9)
        assert row["hd95_mm"] == pytest.approx(binary.hd95(p, t, sp), abs=1e-9)
