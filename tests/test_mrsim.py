import numpy as np
import pytest

from llseg.phantom import mrsim


def test_protocol_grids_match_paper():
    shape, spacing = mrsim.acquisition_grid(mrsim.PROTOCOLS["spiral"], n_slices=220)
    assert shape == (512, 512, 220) and spacing == (1.0, 1.0, 5.0)
    shape, spacing = mrsim.acquisition_grid(mrsim.PROTOCOLS["cartesian"], n_slices=200, downscale=0.5)
    assert shape == (238, 190, 100) and spacing == (2.0, 2.0, 10.0)
    with pytest.raises(ValueError, match="downscale"):
        mrsim.acquisition_grid(mrsim.PROTOCOLS["spiral"], n_slices=200, downscale=0)


def test_partial_volume_averages_thin_slices():
    fine = np.zeros((2, 2, 10), np.float32)
    fine[..., 3] = 1.0  # one thin bright slice inside the first 5-slice slab
    thick = mrsim.partial_volume(fine, 5)
    np.testing.assert_allclose(thick[0, 0], [0.2, 0.0])
    assert mrsim.centre_slices(np.arange(10)[None, None, :], 5).ravel().tolist() == [2, 7]
    with pytest.raises(ValueError, match="multiple of factor"):
        mrsim.partial_volume(np.zeros((2, 2, 7)), 5)


def test_bias_field_is_smooth_with_requested_range(rng):
    b = mrsim.bias_field((40, 30, 20), (4.0, 4.0, 10.0), strength=0.5, rng=rng)
    logb = np.log(b)
    assert logb.max() - logb.min() == pytest.approx(0.5, rel=1e-4)
    assert abs(logb.mean()) < 1e-5
    assert np.abs(np.diff(logb, axis=0)).max() < 0.05  # smooth: tiny change per voxel
    flat = mrsim.bias_field((8, 8, 8), (1, 1, 1), strength=0.0, rng=rng)
    np.testing.assert_allclose(flat, 1.0)


def test_rician_noise_statistics(rng):
    zero = mrsim.rician_noise(np.zeros((64, 64, 16), np.float32), 0.1, rng=rng)
    # Rayleigh mean = sigma * sqrt(pi / 2)
    assert zero.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.02)
    high = mrsim.rician_noise(np.full((64, 64, 16), 10.0, np.float32), 0.1, rng=rng)
    assert high.std() == pytest.approx(0.1, rel=0.05)


def test_tissue_contrast_fat_suppressed(rng, two_leg_case):
    _, labels, _ = two_leg_case
    tissue = np.where(labels > 0, 2, 1).astype(np.uint8)
    img = mrsim.tissue_intensity(labels, tissue, rng=rng, spacing_mm=(2, 2, 5))
    assert img[labels > 0].mean() > 5 * img[labels == 0].mean()
    # a real segmentation without a tissue map renders the same classes
    img2 = mrsim.tissue_intensity(labels, None, rng=np.random.default_rng(0), spacing_mm=(2, 2, 5))
    assert img2[labels > 0].mean() > 5 * img2[labels == 0].mean()


def test_simulate_image_shapes_and_determinism(two_leg_case):
    _, labels, _ = two_leg_case
    fine = np.repeat(labels, 5, axis=2)
    out1 = mrsim.simulate_image(fine, None, fine_spacing_mm=(2, 2, 1), slice_factor=5, rng=np.random.default_rng(3))
    out2 = mrsim.simulate_image(fine, None, fine_spacing_mm=(2, 2, 1), slice_factor=5, rng=np.random.default_rng(3))
    image, lab, bias = out1
    assert image.shape == labels.shape and lab.dtype == np.uint8 and bias.shape == labels.shape
    np.testing.assert_array_equal(lab, labels)
    for a, b in zip(out1, out2):
        np.testing.assert_array_equal(a, b)
