"""Figures of the study (matplotlib/seaborn), one function per paper figure.

Functions take arrays and tables and return a ``matplotlib.figure.Figure``; saving is
``llseg.io.save_figure``. Volumes are ``(X, Y, Z)`` RAS+; axial slices are shown in radiological
convention (subject's right on the viewer's left, anterior up), as MR viewers do.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from . import _validate, anatomy

__all__ = ["muscle_colors", "label_colormap", "axial_view", "coronal_view", "bias_correction_figure", "cov_figure"]


def muscle_colors() -> dict[str, tuple[float, float, float]]:
    """One fixed RGB colour per muscle key (both legs share it), Table-1 order."""
    palette = sns.color_palette("husl", anatomy.N_MUSCLES)
    # Interleave the hue circle so that muscles adjacent in Table 1 get distant hues.
    order = [(i * 13) % anatomy.N_MUSCLES for i in range(anatomy.N_MUSCLES)]
    return {m.key: tuple(palette[order[i]]) for i, m in enumerate(anatomy.MUSCLES)}


def label_colormap():
    """A ListedColormap over label ids 0..70 (0 transparent), left and right in the same colour."""
    from matplotlib.colors import ListedColormap

    colors = np.zeros((anatomy.N_REGIONS + 1, 4))
    by_key = muscle_colors()
    for label, (key, _side) in anatomy.REGIONS.items():
        colors[label, :3] = by_key[key]
        colors[label, 3] = 1.0
    return ListedColormap(colors)


def axial_view(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial slice ``z`` as an image array (rows = anterior->posterior, cols = subject right->left)."""
    return np.asarray(volume)[::-1, :, z].T[::-1, :]


def coronal_view(volume: np.ndarray, y: int) -> np.ndarray:
    """Coronal slice ``y`` (rows = superior->inferior, cols = subject right->left)."""
    return np.asarray(volume)[::-1, y, :].T[::-1, :]


def _extent(spacing_a: float, spacing_b: float, shape) -> list[float]:
    return [0, shape[1] * spacing_a, shape[0] * spacing_b, 0]


def bias_correction_figure(raw: np.ndarray, bias: np.ndarray, *, spacing_mm, levels_z, coronal_y: int,
                           mask: np.ndarray | None = None, body: np.ndarray | None = None, title: str = ""):
    """Paper Figure 3: slices without (top) and with (middle) N4, and the estimated field (bottom).

    Parameters
    ----------
    raw : (X, Y, Z) ndarray of float
        Image before correction.
    bias : (X, Y, Z) ndarray of float
        Estimated multiplicative field on the same grid (``corrected = raw / bias``).
    spacing_mm : tuple of 3 float
    levels_z : sequence of int
        Axial slice indices (one column each).
    coronal_y : int
        Coronal slice index (last column).
    mask : (X, Y, Z) ndarray of bool, optional
        Muscle voxels; their 1st-99th percentiles set a common window for both image rows.
    body : (X, Y, Z) ndarray of bool, optional
        The field is drawn only inside it (N4 extrapolates meaninglessly into the air).
    """
    raw = _validate.volume(raw, "raw")
    _validate.same_shape(raw, bias, "raw", "bias")
    sx, sy, sz = _validate.spacing(spacing_mm, 3)
    corrected = raw / bias
    ref = raw[mask] if mask is not None and mask.any() else raw[raw > 0]
    vmin, vmax = np.percentile(ref, [1, 99.5]) if ref.size else (0, 1)
    field = bias / np.median(bias[mask] if mask is not None and mask.any() else bias)
    if body is not None:
        field = np.where(body, field, np.nan)
    views = [(axial_view, z, (sx, sy)) for z in levels_z] + [(coronal_view, coronal_y, (sx, sz))]
    fig, axes = plt.subplots(3, len(views), figsize=(3.4 * len(views), 9.5), squeeze=False,
                             gridspec_kw={"hspace": 0.25, "wspace": 0.05})
    rows = [("without N4", raw, "gray", (vmin, vmax)), ("with N4", corrected, "gray", (vmin, vmax)),
            ("estimated bias field", field, "magma", (np.nanmin(field), np.nanmax(field)))]
    letters = iter("abcdefghijkl")
    for r, (row_title, vol, cmap, (lo, hi)) in enumerate(rows):
        for c, (view, index, (da, db)) in enumerate(views):
            sl = view(vol, index)
            ax = axes[r, c]
            im = ax.imshow(sl, cmap=cmap, vmin=lo, vmax=hi, extent=_extent(da, db, sl.shape), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            where = f"axial z={index}" if view is axial_view else f"coronal y={index}"
            ax.set_title(f"({next(letters)}) {row_title}\n{where}", fontsize=9)
        if r == 2:
            fig.colorbar(im, ax=axes[r, :].tolist(), fraction=0.02, pad=0.01, label="relative gain")
    axes[0, 0].text(0.02, 0.98, "R", color="yellow", transform=axes[0, 0].transAxes, va="top", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def cov_figure(cases, cov_before, cov_after):
    """Muscle-intensity coefficient of variation per case, before and after N4 (paired dots)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(cases) + 2), 3.2))
    x = np.arange(len(cases))
    ax.vlines(x, cov_after, cov_before, color="0.7", lw=1)
    ax.scatter(x, cov_before, label="without N4", color="tab:red", zorder=3)
    ax.scatter(x, cov_after, label="with N4", color="tab:blue", zorder=3)
    ax.set_xticks(x, cases, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("CoV of muscle intensity")
    ax.legend(frameon=False, fontsize=8)
    sns.despine(fig)
    fig.tight_layout()
    return fig
