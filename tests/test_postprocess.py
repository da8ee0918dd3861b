"""Tests for llseg.postprocess (paper section 2.3): tiny hand-built arrays with known answers."""
from __future__ import annotations

import json

import cc3d
import numpy as np
import pytest
from scipy import ndimage
from skimage import measure

from llseg import anatomy
from llseg.contours import _prasad_bound, _prasad_tolerance, contours_from_labels, simplify_contour
from llseg.postprocess import clean_region, close_mask, keep_largest_component, merge_regions


def _n_components(mask, connectivity=26):
    return int(cc3d.connected_components(np.asarray(mask, dtype=bool), connectivity=connectivity).max())


def _segment_distance(p, a, b):
    """Distance of points p (K, 2) to segment a-b."""
    d = b - a
    t = np.clip(((p - a) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * d), axis=1)


def _polygon_deviation(points, poly):
    """Largest distance of input points to the closed polygon poly (M, 2)."""
    return float(np.max(np.min([_segment_distance(points, poly[i], poly[i + 1])
                                for i in range(len(poly) - 1)], axis=0)))


def _c_shape(shape=(16, 16, 4), gap=1):
    """A square ring (3 voxels thick) in slices 1..2 with a `gap`-voxel opening in its right side."""
    m = np.zeros(shape, dtype=bool)
    m[3:13, 3:13, 1:3] = True
    m[6:10, 6:10, 1:3] = False
    m[7:7 + gap, 10:13, 1:3] = False
    return m


# ----------------------------------------------------------------------------- keep_largest_component
def test_keep_largest_component_keeps_larger_blob():
    m = np.zeros((10, 10, 10), dtype=bool)
    m[1:4, 1:4, 1:4] = True      # 27 voxels
    m[6:8, 6:8, 6:8] = True      # 8 voxels
    before = m.copy()
    out = keep_largest_component(m)
    assert out.dtype == bool and out.sum() == 27 and out[1:4, 1:4, 1:4].all()
    np.testing.assert_array_equal(m, before)  # input not mutated


def test_keep_largest_component_connectivity():
    m = np.zeros((5, 5, 5), dtype=np.uint8)
    m[1, 1, 1] = m[2, 2, 2] = m[3, 3, 3] = 1  # corner-touching diagonal
    m[0, 4, 0] = 1
    assert keep_largest_component(m, connectivity=26).sum() == 3
    assert keep_largest_component(m, connectivity=6).sum() == 1


def test_keep_largest_component_empty_one_voxel_and_errors():
    assert not keep_largest_component(np.zeros((4, 4, 4), dtype=bool)).any()
    one = np.zeros((3, 3, 3), dtype=bool)
    one[1, 1, 1] = True
    np.testing.assert_array_equal(keep_largest_component(one), one)
    with pytest.raises(TypeError, match="float32"):
        keep_largest_component(np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="connectivity"):
        keep_largest_component(one, connectivity=8)
    with pytest.raises(ValueError, match="3-D"):
        keep_largest_component(np.zeros((3, 3), dtype=bool))


# ----------------------------------------------------------------------------- close_mask
def test_close_mask_closes_c_shape_gap_in_plane():
    m = _c_shape(gap=1)
    out = close_mask(m)
    assert (out >= m).all()                                   # closing is extensive
    assert out[6:10, 11, 1:3].any() and out[7, 11, 1:3].all()  # gap bridged in both slices
    # the ring is now closed: its interior is an enclosed hole in every slice
    for z in (1, 2):
        filled = ndimage.binary_fill_holes(out[:, :, z])
        assert filled[6:10, 6:10].all()
        assert not ndimage.binary_fill_holes(m[:, :, z])[6:10, 6:10].any()  # open before
    assert not out[:, :, [0, 3]].any()                        # in-plane element: no growth in z
    box = ndimage.find_objects(m.view(np.uint8))[0]
    outside = np.ones(m.shape, dtype=bool)
    outside[box] = False
    assert not out[outside].any()                             # never leaves the bbox


def test_close_mask_anisotropy_z_radius():
    m = np.zeros((8, 8, 5), dtype=bool)
    m[2:6, 2:6, [1, 3]] = True                                # one empty slice in between
    assert not close_mask(m)[:, :, 2].any()                   # default (1, 1, 0): not bridged
    assert close_mask(m, radius_vox=(1, 1, 1))[3:5, 3:5, 2].all()


def test_close_mask_touching_border_matches_padded_result():
    m = np.zeros((6, 12, 3), dtype=bool)
    m[0:4, :, :] = True          # touches x = 0, both y borders and both z borders
    m[1, 5, :] = False           # 1-voxel pit on the x border side
    m[0:3, 8, 1] = False         # notch cut in from the border
    out = close_mask(m, radius_vox=(1, 1, 0))
    big = np.pad(m, 5)
    ref = close_mask(big, radius_vox=(1, 1, 0))[5:-5, 5:-5, 5:-5]
    np.testing.assert_array_equal(out, ref)
    assert (out >= m).all() and out[1, 5, :].all()
    assert not out[4:, :, :].any()
    # naive scipy closing (border = background) erodes the border voxels; ours does not
    naive = ndimage.binary_closing(m, structure=np.ones((3, 3, 1), bool))
    assert not (naive >= m).all()


def test_close_mask_edge_cases():
    m = _c_shape()
    np.testing.assert_array_equal(close_mask(m, iterations=0), m)
    np.testing.assert_array_equal(close_mask(m, radius_vox=0), m)
    assert not close_mask(np.zeros((3, 3, 3), bool)).any()
    one = np.zeros((3, 3, 3), bool)
    one[0, 0, 0] = True
    np.testing.assert_array_equal(close_mask(one), one)
    with pytest.raises(ValueError, match="radius_vox"):
        close_mask(m, radius_vox=(1, 1))
    with pytest.raises(ValueError, match="radius_vox"):
        close_mask(m, radius_vox=(1, -1, 0))
    with pytest.raises(ValueError, match="iterations"):
        close_mask(m, iterations=-1)


# ----------------------------------------------------------------------------- clean_region
def test_clean_region_one_closed_component():
    m = _c_shape(shape=(20, 20, 4))
    m[17, 17, 1] = True                                       # false positive
    m[4, 4:6, 1:3] = False                                    # nick in the ring
    out = clean_region(m)
    assert _n_components(out) == 1
    assert not out[17, 17, 1]
    assert out[6:10, 6:10, 1:3].all()                         # interior filled after closing
    assert (out >= keep_largest_component(m)).all()


def test_clean_region_fill_in_plane_vs_3d():
    m = np.zeros((9, 9, 5), dtype=bool)
    m[2:7, 2:7, :] = True
    m[4, 4, :] = False                                        # tunnel along z: no 3-D cavity
    assert clean_region(m, closing_radius_vox=0)[4, 4, :].all()
    assert not clean_region(m, closing_radius_vox=0, fill_in_plane=False)[4, 4, :].any()
    m[4, 4, 0] = m[4, 4, -1] = True                           # plug the ends: now a cavity
    assert clean_region(m, closing_radius_vox=0, fill_in_plane=False)[4, 4, :].all()


def test_clean_region_empty():
    assert not clean_region(np.zeros((4, 4, 4), bool)).any()


# ----------------------------------------------------------------------------- merge_regions
def _sphere_probability(shape, centre, radius):
    """p = 1 at the centre, 0.5 on the sphere of `radius`, falling linearly, >= 0."""
    grid = np.indices(shape, dtype=np.float32)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    return np.clip(1.0 - 0.5 * dist / radius, 0.0, 1.0).astype(np.float32)


def _to_crop(p, threshold=0.5, margin=2):
    box = ndimage.find_objects((p >= threshold).view(np.uint8))[0]
    box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, p.shape))
    return box, p[box].copy()


def test_merge_regions_overlapping_spheres_by_probability():
    shape = (24, 20, 16)
    p1 = _sphere_probability(shape, (8, 10, 8), 6.0)
    p2 = _sphere_probability(shape, (15, 10, 8), 5.0)
    out = merge_regions({1: p1, 2: p2})
    assert out.dtype == np.uint8 and out.shape == shape
    both = (p1 >= 0.5) & (p2 >= 0.5)
    assert both.sum() > 50                                    # a real overlap
    expected = np.where(p2[both] > p1[both], 2, 1)
    np.testing.assert_array_equal(out[both], expected)
    assert (out[both] == 1).any() and (out[both] == 2).any()
    for label in (1, 2):
        assert _n_components(out == label) == 1
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out[(p1 < 0.5) & (p2 < 0.5)] == 0).all()          # convex spheres: no closing growth


def test_merge_regions_crop_form_equals_full_form():
    shape = (24, 20, 16)
    p = {3: _sphere_probability(shape, (8, 10, 8), 6.0),
         40: _sphere_probability(shape, (15, 10, 8), 5.0),
         7: _sphere_probability(shape, (22, 3, 14), 4.0)}   # touches the volume border
    p[3][2:5, 9:12, 7:9] = 0.0                              # a pocket inside the sphere
    full = merge_regions(p)
    crops = {k: _to_crop(v, margin=m) for (k, v), m in zip(p.items(), (0, 3, 5))}
    np.testing.assert_array_equal(merge_regions(crops, shape=shape), full)
    mixed = {3: p[3], 40: crops[40], 7: crops[7]}
    np.testing.assert_array_equal(merge_regions(mixed), full)
    assert set(np.unique(full)) == {0, 3, 7, 40}


def test_merge_regions_split_region_keeps_largest_piece():
    shape = (30, 9, 5)
    p1 = np.zeros(shape, np.float32)
    p1[2:28, 3:6, 1:4] = 0.6                                  # long bar along x
    p2 = np.zeros(shape, np.float32)
    p2[10:13, :, :] = 0.9                                     # slab cutting the bar at x = 10..12
    out = merge_regions({1: p1, 2: p2})
    assert (out[10:13] == 2).all()
    assert _n_components(out == 1) == 1
    assert (out[13:28, 3:6, 1:4] == 1).all()                  # larger piece (x 13..27) kept
    assert (out[2:10] == 0).all()                             # smaller piece dropped


def test_merge_regions_ties_go_to_lower_label():
    shape = (8, 8, 4)
    p = np.zeros(shape, np.float32)
    p[2:6, 2:6, 1:3] = 0.8
    out = merge_regions({5: (tuple(slice(0, n) for n in shape), p), 2: p.copy()})
    assert set(np.unique(out)) == {0, 2}


def test_merge_regions_empty_and_one_voxel():
    shape = (6, 6, 6)
    np.testing.assert_array_equal(merge_regions({}, shape=shape), np.zeros(shape, np.uint8))
    low = np.full(shape, 0.4, np.float32)
    assert not merge_regions({1: low}).any()
    one = np.zeros(shape, np.float32)
    one[5, 5, 5] = 0.7                                        # corner voxel
    out = merge_regions({9: one})
    assert out[5, 5, 5] == 9 and np.count_nonzero(out) == 1
    with pytest.raises(ValueError, match="shape is required"):
        merge_regions({})


def test_merge_regions_validation():
    shape = (6, 6, 6)
    p = np.zeros(shape, np.float32)
    box = (slice(0, 3), slice(0, 3), slice(0, 3))
    with pytest.raises(ValueError, match="shape"):
        merge_regions({1: (box, np.zeros((2, 3, 3), np.float32))}, shape=shape)
    with pytest.raises(ValueError, match="inside the volume"):
        merge_regions({1: ((slice(-3, None), slice(0, 3), slice(0, 3)), np.zeros((3, 3, 3), np.float32))},
                      shape=shape)
    with pytest.raises(ValueError, match="inside the volume"):
        merge_regions({1: ((slice(4, 8), slice(0, 3), slice(0, 3)), np.zeros((4, 3, 3), np.float32))},
                      shape=shape)
    with pytest.raises(TypeError, match="float"):
        merge_regions({1: np.zeros(shape, np.int32)})
    with pytest.raises(TypeError, match="slices, array"):
        merge_regions({1: [1, 2, 3]}, shape=shape)
    with pytest.raises(ValueError, match="1..255"):
        merge_regions({0: p})
    with pytest.raises(ValueError, match="threshold"):
        merge_regions({1: p}, threshold=0.0)
    with pytest.raises(ValueError, match="disagree"):
        merge_regions({1: p, 2: np.zeros((5, 6, 6), np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        merge_regions({1: np.full(shape, np.nan, np.float32)})


# ----------------------------------------------------------------------------- simplify_contour
def _square_ring(n=12):
    """Pixel-centre boundary of an n x n square, closed, starting mid-edge."""
    side = np.arange(n - 1)
    ring = np.concatenate([np.column_stack([side, np.zeros_like(side)]),
                           np.column_stack([np.full_like(side, n - 1), side]),
                           np.column_stack([n - 1 - side, np.full_like(side, n - 1)]),
                           np.column_stack([np.zeros_like(side), n - 1 - side])]).astype(float)
    ring = np.roll(ring, 5, axis=0)
    return np.concatenate([ring, ring[:1]])


def test_prasad_tolerance_values():
    assert _prasad_tolerance(100.0) == pytest.approx(np.sqrt(2), abs=0.01)  # large-s limit
    assert 1.4 < _prasad_tolerance(10.0) < 1.5
    assert _prasad_tolerance(1.0) == pytest.approx(1.0)                     # capped at s
    assert _prasad_tolerance(0.0) == 0.0
    s = np.concatenate([np.linspace(0.2, 5.0, 97), np.geomspace(5.0, 5e4, 300)])
    np.testing.assert_allclose([_prasad_tolerance(v) for v in s], _prasad_bound(s), atol=1e-3)


def test_simplify_contour_digitised_square_gives_4_corners():
    ring = _square_ring(12)
    out = simplify_contour(ring)
    assert np.array_equal(out[0], out[-1]) and len(out) == 5
    assert {tuple(p) for p in out[:-1]} == {(0, 0), (11, 0), (11, 11), (0, 11)}
    # same with a fixed tolerance (plain RDP), anisotropic pixels, and any start point
    assert len(simplify_contour(ring, tolerance=0.5)) == 5
    aniso = simplify_contour(ring * (0.7, 2.0), spacing_mm=(0.7, 2.0))
    np.testing.assert_allclose(sorted(map(tuple, aniso[:-1])), [(0, 0), (0, 22), (7.7, 0), (7.7, 22)])
    for shift in (1, 13, 30):
        rolled = np.roll(ring[:-1], shift, axis=0)
        assert {tuple(p) for p in simplify_contour(rolled)[:-1]} == {tuple(p) for p in out[:-1]}


def test_simplify_contour_marching_squares_square():
    img = np.zeros((30, 30))
    img[5:25, 8:20] = 1
    contour = measure.find_contours(img, 0.5, fully_connected="high")[0]
    out = simplify_contour(contour)
    assert len(out) == 5
    for corner in [(4.5, 7.5), (24.5, 7.5), (24.5, 19.5), (4.5, 19.5)]:   # chamfered by 1/2 px
        assert np.min(np.abs(out[:-1] - corner).max(axis=1)) <= 0.5


def test_simplify_contour_circle():
    yy, xx = np.mgrid[:80, :80]
    img = ((yy - 40) ** 2 + (xx - 40) ** 2 < 30 ** 2).astype(float)
    contour = measure.find_contours(img, 0.5)[0]
    out = simplify_contour(contour)
    assert np.array_equal(out[0], out[-1])
    assert 8 <= len(out) - 1 <= len(contour) // 5
    assert (out[:, None, :] == contour[None, :, :]).all(-1).any(-1).all()   # subset of input
    assert _polygon_deviation(contour, out) <= _prasad_tolerance(3.0) + 1e-9
    tight = simplify_contour(contour, tolerance=0.2)
    assert len(tight) > len(out) and _polygon_deviation(contour, tight) <= 0.2 + 1e-9
    # mm input with 0.5 mm pixels: same vertices, scaled
    np.testing.assert_allclose(simplify_contour(contour * 0.5, spacing_mm=(0.5, 0.5)), out * 0.5)


def test_simplify_contour_small_and_invalid():
    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(simplify_contour(tri), tri[[0, 1, 2, 0]])   # < 5 points: unchanged
    diamond = np.array([[1.0, 0.5], [0.5, 0.0], [0.0, 0.5], [0.5, 1.0], [1.0, 0.5]])
    np.testing.assert_array_equal(simplify_contour(diamond), diamond)
    # a thin sliver still keeps a polygon (>= 3 distinct vertices)
    sliver = np.array([[0.0, 0], [5, 0.1], [10, 0], [15, 0.1], [20, 0], [10, -0.1]])
    assert len(np.unique(simplify_contour(sliver)[:-1], axis=0)) == 3
    two = np.array([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(simplify_contour(two), [[0, 0], [1, 1], [0, 0]])
    tol0 = simplify_contour(_square_ring(5), tolerance=0.0)
    assert len(tol0) == len(_square_ring(5))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        simplify_contour(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="tolerance"):
        simplify_contour(tri, tolerance=-1.0)


# ----------------------------------------------------------------------------- contours_from_labels
def test_contours_of_box_anisotropic_spacing():
    labels = np.zeros((12, 14, 6), dtype=np.uint8)
    labels[3:9, 2:11, 1:4] = 36                               # x 3..8, y 2..10, z 1..3
    spacing = (0.8, 1.2, 5.0)
    res = contours_from_labels(labels, spacing)
    json.dumps(res)
    assert res["space"] == "voxel mm"
    region = res["regions"]["36"]
    assert region["name"] == anatomy.region_name(36)
    assert sorted(region["slices"]) == ["1", "2", "3"]
    corners = np.array([(2.5 * 0.8, 1.5 * 1.2), (8.5 * 0.8, 1.5 * 1.2),
                        (8.5 * 0.8, 10.5 * 1.2), (2.5 * 0.8, 10.5 * 1.2)])
    for polys in region["slices"].values():
        assert len(polys) == 1
        poly = np.array(polys[0])
        assert poly.shape == (5, 2) and np.array_equal(poly[0], poly[-1])
        # every true corner has a vertex within half a voxel (marching squares cuts corners)
        near = (np.abs(poly[:-1, None, :] - corners[None]) <= np.array([0.4, 0.6]) + 1e-6).all(axis=2)
        assert near.any(axis=0).all()
    unsimplified = contours_from_labels(labels, spacing, simplify=False)
    assert len(unsimplified["regions"]["36"]["slices"]["2"][0]) > 5


def test_contours_with_affine_and_two_regions():
    labels = np.zeros((10, 10, 4), dtype=np.int16)
    labels[1:4, 1:4, 2] = 1
    labels[6:9, 5:9, 0:2] = 2
    spacing = (1.0, 1.0, 3.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-50.0, 20.0, 100.0)
    vox = contours_from_labels(labels, spacing)
    world = contours_from_labels(labels, spacing, affine)
    json.dumps(world)
    assert world["space"] == "RAS+ world mm"
    assert sorted(world["regions"]) == ["1", "2"]
    assert sorted(world["regions"]["2"]["slices"]) == ["0", "1"]
    w = np.array(world["regions"]["1"]["slices"]["2"][0])
    v = np.array(vox["regions"]["1"]["slices"]["2"][0])
    np.testing.assert_allclose(w[:, :2], v + (-50.0, 20.0))
    np.testing.assert_allclose(w[:, 2], 2 * 3.0 + 100.0)
    with pytest.raises(ValueError, match="column norms"):
        contours_from_labels(labels, (1.0, 1.0, 5.0), affine)


def test_contours_empty_one_voxel_and_invalid():
    labels = np.zeros((5, 5, 3), dtype=np.uint8)
    assert contours_from_labels(labels, (1, 1, 1))["regions"] == {}
    labels[0, 4, 2] = 70                                      # one voxel in a corner
    poly = np.array(contours_from_labels(labels, (1, 1, 1))["regions"]["70"]["slices"]["2"][0])
    assert len(np.unique(poly, axis=0)) == 4                  # the marching-squares diamond
    np.testing.assert_allclose(poly.mean(axis=0), (0, 4), atol=0.3)
    labels[1, 1, 1] = 71
    with pytest.raises(ValueError, match="unknown label"):
        contours_from_labels(labels, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        contours_from_labels(np.zeros((3, 3, 3), np.uint8), (1, 1))


# ----------------------------------------------------------------------------- scale
def test_merge_regions_70_regions_crop_form():  # ~1 s: full 256 x 256 x 110 volume
    rng = np.random.default_rng(0)
    shape = (256, 256, 110)
    probs = {}
    for label in range(1, 71):
        size = rng.integers((20, 20, 25), (45, 45, 70))
        start = rng.integers(0, np.array(shape) - size)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size))
        p = _sphere_probability(tuple(size), tuple(size / 2), float(min(size) / 2.5))
        p += rng.normal(0, 0.1, p.shape).astype(np.float32)
        probs[label] = (box, p)
    out = merge_regions(probs, shape=shape)
    present = np.unique(out)[1:]
    assert len(present) >= 60
    for label in present:
        assert _n_components(out == label) == 1
