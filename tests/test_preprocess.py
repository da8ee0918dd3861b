import numpy as np
import pytest

from llseg import preprocess
from llseg.phantom import mrsim


def _smooth_phantom(rng, shape=(48, 40, 24), spacing=(4.0, 4.0, 10.0)):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1
    labels = np.where(body & ((x / 0.8) ** 2 + (y / 0.7) ** 2 < 0.7), 1, 0).astype(np.uint8)
    tissue = np.where(labels > 0, 2, np.where(body, 1, 0)).astype(np.uint8)
    clean = mrsim.tissue_intensity(labels, tissue, rng=rng, spacing_mm=spacing, texture_strength=0.02)
    return clean, labels, spacing


def test_n4_removes_known_bias(rng):
    clean, labels, spacing = _smooth_phantom(rng)
    true_bias = mrsim.bias_field(clean.shape, spacing, strength=0.8, rng=rng)
    biased = mrsim.rician_noise(clean * true_bias, 0.005, rng=rng)
    corrected, est = preprocess.n4_correct(biased, spacing, shrink_factor=2, iterations=(50, 50, 30))
    muscle = labels > 0
    cov_biased = preprocess.coefficient_of_variation(biased, muscle)
    cov_corrected = preprocess.coefficient_of_variation(corrected, muscle)
    cov_clean = preprocess.coefficient_of_variation(clean, muscle)
    assert cov_corrected < 0.6 * cov_biased
    assert cov_corrected < cov_clean + 0.5 * (cov_biased - cov_clean)
    r = np.corrcoef(np.log(est[muscle]), np.log(true_bias[muscle]))[0, 1]
    assert r > 0.9


def test_n4_bad_arguments(rng):
    clean, _, spacing = _smooth_phantom(rng, shape=(16, 16, 8))
    with pytest.raises(ValueError, match="shrink_factor"):
        preprocess.n4_correct(clean, spacing, shrink_factor=0)
    with pytest.raises(ValueError, match="empty mask"):
        preprocess.n4_correct(clean, spacing, mask=np.zeros(clean.shape, bool))
    with pytest.raises(ValueError, match="spacing_mm"):
        preprocess.n4_correct(clean, (1, 1))
    bad = clean.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        preprocess.n4_correct(bad, spacing)


def test_crop_pad_roundtrip():
    vol = np.arange(10 * 6 * 2).reshape(10, 6, 2)
    out, off = preprocess.crop_or_pad_xy(vol, (6, 8))
    assert out.shape == (6, 8, 2) and off == (2, -1)
    np.testing.assert_array_equal(out[:, 1:7], vol[2:8])
    assert (out[:, 0] == 0).all() and (out[:, 7] == 0).all()
    back = preprocess.restore_xy(out, off, (10, 6))
    np.testing.assert_array_equal(back[2:8], vol[2:8])
    assert (back[:2] == 0).all()


def test_study_grid_affine_maps_same_world_points():
    vol = np.zeros((20, 20, 10), np.float32)
    vol[12, 7, 4] = 1.0
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    affine[:3, 3] = [-10, 3, 100]
    out, zoom, off = preprocess.to_study_grid(vol, spacing_mm=(1, 1, 5), target_spacing_mm=(2, 2, 5),
                                              target_xy=(12, 8), order=1)
    new_aff = preprocess.study_grid_affine(affine, zoom, off)
    peak = np.unravel_index(np.argmax(out), out.shape)
    world_old = affine @ [12, 7, 4, 1]
    world_new = new_aff @ [*peak, 1]
    assert np.abs(world_old - world_new).max() <= 1.0  # within half a new voxel (2 mm)
    assert out.shape == (12, 8, 10)


def test_normalize_and_cov():
    img = np.array([1.0, 2.0, 3.0, 100.0]).reshape(2, 2, 1)
    mask = np.array([True, True, True, False]).reshape(2, 2, 1)
    z = preprocess.normalize_intensity(img, mask)
    assert z[mask].mean() == pytest.approx(0) and z[mask].std() == pytest.approx(1)
    assert preprocess.coefficient_of_variation(img, mask) == pytest.approx(np.std([1, 2, 3]) / 2)
    assert np.isnan(preprocess.coefficient_of_variation(img, np.zeros_like(mask)))


def test_preprocess_case_outputs(rng):
    clean, labels, spacing = _smooth_phantom(rng, shape=(40, 32, 12))
    bias = mrsim.bias_field(clean.shape, spacing, strength=0.6, rng=rng)
    out = preprocess.preprocess_case(clean * bias + 0.01, labels, np.diag([*spacing, 1.0]), spacing_mm=spacing,
                                     target_spacing_mm=(8.0, 8.0, 10.0), target_xy=(24, 24),
                                     shrink_factor=1, iterations=(30, 30))
    assert out["image"].shape == out["labels"].shape == out["bias"].shape == (24, 24, 12)
    assert out["cov_after"] < out["cov_before"]
    assert out["zoom"] == [0.5, 0.5, 1.0]
    off = preprocess.preprocess_case(clean + 0.01, labels, np.eye(4), spacing_mm=spacing, target_spacing_mm=spacing,
                                     target_xy=(40, 32), n4=False)
    assert off["cov_before"] == off["cov_after"]
    np.testing.assert_array_equal(off["labels"], labels)


def test_summarize_cov():
    s = preprocess.summarize_cov({"b": {"cov_before": 0.2, "cov_after": 0.1}, "a": {"cov_before": 0.1, "cov_after": 0.2}})
    assert s["cases"] == ["a", "b"]
    assert s["summary"]["n_improved"] == 1
    assert s["summary"]["cov_reduction_pct"] == pytest.approx(0.0)
    assert s["rows"][0] == {"case": "a", "cov_before": 0.1, "cov_after": 0.2}
