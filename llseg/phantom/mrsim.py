"""MR simulator: render a label map (and optional tissue map) as a fat-suppressed
proton-density (PD) image, with 2-D multislice partial volume, a B1 bias field and Rician noise.

Separate from the anatomy generator (``llseg.phantom.model``) on purpose: the same anatomy can be
"acquired" under different protocols, bias strengths and noise levels, and any label map in the
kit's convention (a phantom's or a real segmentation's) can be rendered.

Axis order is ``(X, Y, Z)``, RAS+, Z = slice axis (superior-inferior), everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from llseg import _validate

__all__ = [
    "Protocol",
    "PROTOCOLS",
    "TISSUE_PD",
    "acquisition_grid",
    "tissue_intensity",
    "partial_volume",
    "centre_slices",
    "bias_field",
    "rician_noise",
    "simulate_image",
]


@dataclass(frozen=True)
class Protocol:
    """An acquisition protocol (paper section 2.1).

    Attributes
    ----------
    name : str
    matrix_xy : tuple of int
        In-plane matrix (X = left-right, Y = anterior-posterior) at ``inplane_mm``.
    inplane_mm : float
        In-plane voxel size (mm).
    slice_mm : float
        Slice thickness = spacing (mm), contiguous slices.
    """

    name: str
    matrix_xy: tuple[int, int]
    inplane_mm: float = 1.0
    slice_mm: float = 5.0


#: The paper's two protocols: 512 x 512 spiral and 476 x 380 Cartesian, 1 mm in-plane, 5 mm slices.
PROTOCOLS = {
    "spiral": Protocol("spiral", (512, 512)),
    "cartesian": Protocol("cartesian", (476, 380)),
}

#: Relative fat-suppressed PD signal of each tissue class (``llseg.phantom.TISSUE`` codes):
#: background/air, fat (suppressed), muscle, cortical bone, marrow (fat, suppressed), vessel
#: (bright: slow flow, long T2), viscera.
TISSUE_PD = {0: 0.0, 1: 0.06, 2: 0.50, 3: 0.02, 4: 0.07, 5: 0.95, 6: 0.38}
_FAT_CODES = (1, 4)
_MUSCLE_CODE = 2


def acquisition_grid(protocol: Protocol, *, n_slices: int, downscale: float = 1.0) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and voxel spacing (mm) of an acquisition under ``protocol``.

    ``downscale`` (0 < f <= 1) shrinks the matrix and the number of slices by ``f`` and
    enlarges voxels by ``1 / f`` on all three axes (the CPU profiles' global downscale).
    """
    if not 0 < downscale <= 1:
        raise ValueError(f"downscale must be in (0, 1], got {downscale!r}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices!r}")
    shape = (max(1, round(protocol.matrix_xy[0] * downscale)),
             max(1, round(protocol.matrix_xy[1] * downscale)),
             max(1, round(n_slices * downscale)))
    spacing = (protocol.inplane_mm / downscale, protocol.inplane_mm / downscale, protocol.slice_mm / downscale)
    return shape, spacing


def tissue_intensity(labels: np.ndarray, tissue: np.ndarray | None, *, rng: np.random.Generator,
                     spacing_mm, muscle_contrast: float = 0.03, texture_strength: float = 0.06,
                     texture_scale_mm: float = 6.0, suppression_leak: float = 0.04) -> np.ndarray:
    """Noise-free fat-suppressed PD signal of each voxel.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Muscle region ids (0 = not muscle).
    tissue : (X, Y, Z) ndarray of int, optional
        ``llseg.phantom.TISSUE`` codes. Without it (a real segmentation), labelled voxels are
        muscle and everything else is suppressed fat.
    rng : numpy.random.Generator
        Draws each region's small intensity offset and the texture.
    spacing_mm : tuple of 3 float
        Voxel size, to give the texture a physical scale.
    muscle_contrast : float
        Standard deviation of the relative intensity offset between muscles (athletes'
        muscles look alike: keep it small so boundaries stay weak).
    texture_strength : float
        Relative amplitude of the smooth multiplicative muscle texture.
    suppression_leak : float
        Relative amplitude of imperfect fat suppression (smooth, patchy).

    Returns
    -------
    (X, Y, Z) ndarray of float32
    """
    labels = _validate.label_map(_validate.volume(labels, "labels"), "labels")
    spacing_mm = _validate.spacing(spacing_mm, 3)
    if tissue is None:
        tissue = np.where(labels > 0, _MUSCLE_CODE, 1).astype(np.uint8)
    _validate.same_shape(labels, tissue, "labels", "tissue")
    lut = np.zeros(max(TISSUE_PD) + 1, np.float32)
    for code, value in TISSUE_PD.items():
        lut[code] = value
    image = lut[np.asarray(tissue, dtype=np.intp)]
    offsets = np.ones(256, np.float32)
    offsets[1:] = 1.0 + muscle_contrast * rng.standard_normal(255).astype(np.float32)
    muscle = tissue == _MUSCLE_CODE
    image = np.where(muscle, image * offsets[labels.astype(np.intp)], image)
    sigma_vox = [texture_scale_mm / s for s in spacing_mm]
    texture = _smooth_noise(image.shape, sigma_vox, rng)
    image = np.where(muscle, image * (1.0 + texture_strength * texture), image)
    leak = np.abs(_smooth_noise(image.shape, [3 * s for s in sigma_vox], rng))
    fat = np.isin(tissue, _FAT_CODES)
    image = np.where(fat, image + suppression_leak * leak, image)
    return image.astype(np.float32)


def _smooth_noise(shape, sigma_vox, rng) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    field -= field.mean()
    sd = float(field.std())
    return field / sd if sd > 0 else field


def partial_volume(fine: np.ndarray, factor: int) -> np.ndarray:
    """Average each run of ``factor`` fine slices (axis 2) into one thick slice.

    Models 2-D multislice through-plane partial volume: a 5 mm slice sees the mean signal of
    the tissue it spans. ``fine.shape[2]`` must be a multiple of ``factor``.
    """
    fine = _validate.volume(fine, "fine")
    if factor < 1 or fine.shape[2] % factor:
        raise ValueError(f"fine volume has {fine.shape[2]} slices, not a multiple of factor {factor}")
    x, y, z = fine.shape
    return fine.reshape(x, y, z // factor, factor).mean(axis=3, dtype=np.float64).astype(np.float32)


def centre_slices(fine: np.ndarray, factor: int) -> np.ndarray:
    """The fine slice at the centre of each thick slice (how a rater draws a 5 mm slice)."""
    if factor < 1 or fine.shape[2] % factor:
        raise ValueError(f"fine volume has {fine.shape[2]} slices, not a multiple of factor {factor}")
    return np.ascontiguousarray(fine[:, :, factor // 2::factor])


def bias_field(shape, spacing_mm, *, strength: float, rng: np.random.Generator, n_blobs: int = 3) -> np.ndarray:
    """Smooth multiplicative B1 field, geometric mean 1.

    ``log(field)`` is a linear gradient plus ``n_blobs`` broad Gaussian bumps (widths 80-200 mm,
    random sign), scaled so its range over the volume is ``strength`` (0 gives a flat field;
    0.5 means the brightest point is ``exp(0.5) = 1.65`` times the darkest).

    Returns
    -------
    (X, Y, Z) ndarray of float32
    """
    spacing_mm = _validate.spacing(spacing_mm, 3)
    if strength < 0:
        raise ValueError(f"bias strength must be >= 0, got {strength!r}")
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing_mm)]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij", sparse=True)
    extent = np.array([max(n * s, 1.0) for n, s in zip(shape, spacing_mm)])
    g = rng.normal(size=3)
    log_b = g[0] * xx / extent[0] + g[1] * yy / extent[1] + g[2] * zz / extent[2]
    for _ in range(n_blobs):
        centre = (rng.random(3) - 0.5) * extent * 0.8
        width = rng.uniform(80, 200, size=3) * np.array([1.0, 1.0, 2.0])
        amp = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
        log_b = log_b + amp * np.exp(-0.5 * (((xx - centre[0]) / width[0]) ** 2
                                              + ((yy - centre[1]) / width[1]) ** 2
                                              + ((zz - centre[2]) / width[2]) ** 2))
    log_b = np.broadcast_to(log_b, shape).astype(np.float64)
    span = log_b.max() - log_b.min()
    log_b = (log_b - log_b.mean()) * (strength / span if span > 0 else 0.0)
    return np.exp(log_b).astype(np.float32)


def rician_noise(image: np.ndarray, sigma: float, *, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma!r}")
    re = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def simulate_image(labels_fine: np.ndarray, tissue_fine: np.ndarray | None, *, fine_spacing_mm,
                   slice_factor: int, rng: np.random.Generator, bias_strength: float = 0.4,
                   noise_sigma: float = 0.02, muscle_contrast: float = 0.03,
                   texture_strength: float = 0.06, suppression_leak: float = 0.04):
    """Acquire a fine-z anatomy as thick 2-D multislice MR.

    Parameters
    ----------
    labels_fine, tissue_fine : (X, Y, Zf) ndarray of int
        Anatomy sampled at thin slices (``Zf = Z * slice_factor``); ``tissue_fine`` may be None.
    fine_spacing_mm : tuple of 3 float
        Voxel size of the fine grid (mm); the acquired slices are ``slice_factor`` times thicker.
    slice_factor : int
        Fine slices per acquired slice.
    bias_strength, noise_sigma : float
        See ``bias_field`` (log-range) and ``rician_noise`` (relative to muscle ~0.5).

    Returns
    -------
    image : (X, Y, Z) ndarray of float32
        Biased, noisy magnitude image.
    labels : (X, Y, Z) ndarray of uint8
        Ground truth at slice centres.
    bias : (X, Y, Z) ndarray of float32
        The true multiplicative bias field applied.
    """
    fine_spacing_mm = _validate.spacing(fine_spacing_mm, 3)
    signal = tissue_intensity(labels_fine, tissue_fine, rng=rng, spacing_mm=fine_spacing_mm,
                              muscle_contrast=muscle_contrast, texture_strength=texture_strength,
                              suppression_leak=suppression_leak)
    thick = partial_volume(signal, slice_factor)
    labels = centre_slices(np.asarray(labels_fine, dtype=np.uint8), slice_factor)
    spacing = (fine_spacing_mm[0], fine_spacing_mm[1], fine_spacing_mm[2] * slice_factor)
    bias = bias_field(thick.shape, spacing, strength=bias_strength, rng=rng)
    image = rician_noise(thick * bias, noise_sigma, rng=rng)
    return image, labels, bias
