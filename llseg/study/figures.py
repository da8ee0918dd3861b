"""Figures of the study (matplotlib/seaborn), one function per paper figure.

Functions take arrays and tables and return a ``matplotlib.figure.Figure``; saving is
``llseg.io.save_figure``. Volumes are ``(X, Y, Z)`` RAS+; axial slices are shown in radiological
convention (subject's right on the viewer's left, anterior up), as MR viewers do.
"""
from __future__ import annotations

import logging
import math

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .. import _validate, anatomy
from ..export import muscle_colors

__all__ = ["muscle_colors", "label_colormap", "axial_view", "coronal_view", "bias_correction_figure", "cov_figure",
           "dice_figure", "volume_msd_figure", "contour_slices_figure", "region_meshes", "rendering_figure"]

log = logging.getLogger(__name__)


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
        Muscle voxels (default: ``raw > 0``). Each image is shown divided by its median muscle
        intensity (N4's field has no absolute scale), and each column's window is the 1st-99.5th
        percentile of the muscle voxels of that slice in both images: the same window for the
        without/with pair, so the panels differ only by what N4 changed.
    body : (X, Y, Z) ndarray of bool, optional
        The field is drawn only inside it (N4 extrapolates meaninglessly into the air).
    """
    raw = _validate.volume(raw, "raw")
    _validate.same_shape(raw, bias, "raw", "bias")
    sx, sy, sz = _validate.spacing(spacing_mm, 3)
    muscle = np.asarray(mask, bool) if mask is not None and np.any(mask) else raw > 0
    corrected = raw / bias
    without, with_n4 = (_per_median(v, muscle) for v in (raw, corrected))
    field = bias / np.median(bias[mask] if mask is not None and mask.any() else bias)
    if body is not None:
        field = np.where(body, field, np.nan)
    views = [(axial_view, z, (sx, sy)) for z in levels_z] + [(coronal_view, coronal_y, (sx, sz))]
    fig, axes = plt.subplots(3, len(views), figsize=(3.4 * len(views), 9.5), squeeze=False,
                             gridspec_kw={"hspace": 0.25, "wspace": 0.05})
    windows = [_pair_window(view(without, i), view(with_n4, i), view(muscle, i), without, with_n4, muscle)
               for view, i, _ in views]
    field_window = (np.nanmin(field), np.nanmax(field))
    rows = [("without N4", without, "gray", windows), ("with N4", with_n4, "gray", windows),
            ("estimated bias field", field, "magma", [field_window] * len(views))]
    letters = iter("abcdefghijkl")
    for r, (row_title, vol, cmap, column_windows) in enumerate(rows):
        for c, (view, index, (da, db)) in enumerate(views):
            sl = view(vol, index)
            lo, hi = column_windows[c]
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


def _per_median(volume: np.ndarray, muscle: np.ndarray) -> np.ndarray:
    """``volume`` divided by its median muscle intensity (unchanged when that is not positive)."""
    ref = volume[muscle]
    med = float(np.median(ref)) if ref.size else 0.0
    return volume / med if np.isfinite(med) and med > 0 else volume


def _pair_window(a: np.ndarray, b: np.ndarray, muscle_slice: np.ndarray, a_vol: np.ndarray, b_vol: np.ndarray,
                 muscle: np.ndarray) -> tuple[float, float]:
    """One display window for two slices: 1st-99.5th percentile of their muscle voxels (of the
    whole volumes when the slice holds fewer than 20 muscle voxels)."""
    ref = np.concatenate([a[muscle_slice], b[muscle_slice]])
    if ref.size < 40:
        ref = np.concatenate([a_vol[muscle], b_vol[muscle]])
    ref = ref[np.isfinite(ref)]
    if not ref.size:
        return 0.0, 1.0
    lo, hi = np.percentile(ref, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


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


# ----------------------------------------------------------------------------- Table 1, Figures 6 and 7

def _column(rows, column: str, muscle: str | None = None) -> np.ndarray:
    """A metric column as float array (None and "" as NaN), optionally of one muscle only."""
    return np.array([float("nan") if r[column] is None or r[column] == "" else float(r[column])
                     for r in rows if muscle is None or r["muscle"] == muscle], dtype=float)


def _finite(rows, column: str, muscle: str | None = None) -> np.ndarray:
    values = _column(rows, column, muscle)
    return values[np.isfinite(values)]


def _absent_caption(fig, absent) -> None:
    """A cohort lacking muscles: name them under the figure (nothing when none is absent)."""
    if not absent:
        return
    import textwrap

    names = ", ".join(anatomy.muscle(k).name for k in absent)
    text = f"Absent from this cohort's test labels (not scored), {len(absent)} of {anatomy.N_MUSCLES} muscles: {names}."
    fig.text(0.01, 0.0, "\n".join(textwrap.wrap(text, 130)), ha="left", va="top", fontsize=7, color="0.3",
             gid="absent_muscles")


def dice_figure(rows, table, *, order=None, title: str = ""):
    """Table 1 as a figure: per-muscle Dice of this run next to the paper's and the interobserver value.

    Parameters
    ----------
    rows : sequence of mapping
        Per-region rows of one stage (``muscle``, ``dice``), e.g. ``evaluation.select_stage``.
    table : sequence of mapping
        ``evaluation.table1`` output for the same rows.
    order : sequence of str, optional
        Muscle keys from top to bottom (e.g. ``evaluation.muscles_by_volume``); default the
        muscles of ``table`` in Table-1 order.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One row per muscle: this run's Dice per case and side (dots, muscle colour) and their
        mean ± sd (bar), the paper's mean ± sd (black square) and the interobserver Dice (red
        tick). Muscle names reaching the interobserver value in this run are green. NaN Dice
        values are left out of the dots and counted in the x-axis label. Where ``table`` has a
        finite ``one_voxel_margin_dice``, a grey tick marks it: the Dice of a boundary one
        in-plane voxel too far out. Muscles ``table`` lacks (absent from the cohort's test
        labels) are named under the figure.
    """
    by_key = {r["muscle"]: r for r in table}
    order = list(order) if order is not None else [m.key for m in anatomy.MUSCLES if m.key in by_key]
    unknown = [k for k in order if k not in by_key]
    if unknown:
        raise ValueError(f"order names muscles not in table: {unknown}")
    colors = muscle_colors()
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(order) + 1.6))
    all_values = _finite(rows, "dice")
    for y, key in enumerate(order):
        values, t = _finite(rows, "dice", key), by_key[key]
        jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(values.size)
        ax.scatter(values, y - 0.15 + jitter, s=12, color=colors[key], alpha=0.8, lw=0, zorder=3)
        if np.isfinite(t["dice_mean"]):
            ax.errorbar(t["dice_mean"], y - 0.15, xerr=np.nan_to_num(t["dice_sd"]), fmt="o", ms=5, color=colors[key],
                        mec="k", mew=0.6, ecolor="0.3", elinewidth=1, capsize=2, zorder=4)
        ax.errorbar(t["paper_dice_mean"], y + 0.22, xerr=t["paper_dice_sd"], fmt="s", ms=3.5, color="k",
                    elinewidth=1, capsize=2, zorder=4)
        ax.scatter(t["interobserver_dice"], y, marker="|", s=160, lw=2, color="tab:red", zorder=5)
        margin = t.get("one_voxel_margin_dice", math.nan)
        if np.isfinite(margin):
            ax.scatter(margin, y, marker="|", s=160, lw=2, color="0.55", zorder=4)
    ax.set_yticks(range(len(order)), [by_key[k]["name"] for k in order], fontsize=8)
    for label, key in zip(ax.get_yticklabels(), order):
        if by_key[key]["within_interobserver"]:
            label.set_color("tab:green")
            label.set_fontweight("bold")
    ax.set_ylim(len(order) - 0.5, -0.5)
    lo = min(0.6, float(all_values.min()) - 0.02) if all_values.size else 0.0
    ax.set_xlim(max(0.0, lo), 1.005)
    n_nan = len(rows) - all_values.size
    ax.set_xlabel(f"Dice ({all_values.size} values{f', {n_nan} NaN not shown' if n_nan else ''})")
    ax.grid(axis="x", color="0.9")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="0.5", mec="k",
                      label="this run: mean ± sd (dots: cases × sides)"),
               Line2D([], [], marker="s", ls="", color="k", ms=4, label="paper: mean ± sd"),
               Line2D([], [], marker="|", ls="", color="tab:red", ms=10, mew=2, label="paper: interobserver")]
    if any(np.isfinite(r.get("one_voxel_margin_dice", math.nan)) for r in table):
        handles.append(Line2D([], [], marker="|", ls="", color="0.55", ms=10, mew=2,
                              label="truth vs truth grown by one in-plane voxel"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False, fontsize=7.5)
    if title:
        ax.set_title(title, fontsize=10, pad=34)
    sns.despine(fig)
    fig.tight_layout()
    _absent_caption(fig, [m.key for m in anatomy.MUSCLES if m.key not in by_key])
    return fig


def _histogram(ax, values: np.ndarray, *, n_nan: int, mean: float, paper: float, threshold: float, unit: str,
               xlabel: str, letter: str) -> None:
    """One Figure-6 histogram; values beyond a display cap are stacked in the last bin and counted."""
    cap = max(2.5 * threshold, 1.25 * paper, float(np.percentile(values, 95)) if values.size else 0.0)
    n_over = int(np.count_nonzero(values > cap))
    ax.hist(np.minimum(values, cap), bins=np.linspace(0, cap, 31), color="0.6", edgecolor="white")
    for x, style, color, label in ((mean, "-", "tab:blue", f"this run mean {mean:.1f} {unit}"),
                                   (paper, "--", "k", f"paper mean {paper:g} {unit}"),
                                   (threshold, ":", "tab:red", f"threshold {threshold:g} {unit}")):
        if np.isfinite(x):
            ax.axvline(min(x, cap), ls=style, color=color, lw=1.5, label=label)
    notes = [f"n = {values.size}"] + ([f"{n_nan} NaN not shown"] if n_nan else []) + (
        [f"{n_over} > {cap:.0f} {unit} in last bin"] if n_over else [])
    ax.text(0.98, 0.6, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=7.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("regions × test cases")
    ax.set_title(f"({letter})", loc="left", fontsize=10)
    ax.legend(frameon=False, fontsize=7.5)


def volume_msd_figure(rows, summary, *, title: str = ""):
    """Paper Figure 6: histograms of |volume error| (%) and MSD (mm), and Dice vs MSD.

    Parameters
    ----------
    rows : sequence of mapping
        Per-region rows of one stage (``muscle``, ``dice``, ``msd_mm``, ``volume_error_abs_pct``).
    summary : mapping
        ``evaluation.volume_msd_summary`` of the same rows (means, paper values, thresholds,
        correlations).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        (a) absolute percentage volume error and (b) MSD over all regions and test cases, with
        this run's mean, the paper's mean and the threshold; (c) Dice vs MSD per region and
        case in muscle colours with Pearson r and Spearman rho. NaN values are counted, not
        shown. The muscles ``summary`` lists as absent (``muscles_absent``) are named under
        the figure.
    """
    vol, msd = _finite(rows, "volume_error_abs_pct"), _finite(rows, "msd_mm")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    _histogram(axes[0], vol, n_nan=summary["n_volume_nan"], mean=summary["volume_error_abs_pct_mean"],
               paper=summary["paper_volume_error_abs_pct_mean"], threshold=summary["volume_threshold_pct"], unit="%",
               xlabel="|volume error| (%)", letter="a")
    _histogram(axes[1], msd, n_nan=summary["n_msd_nan"], mean=summary["msd_mm_mean"],
               paper=summary["paper_msd_mm_mean"], threshold=summary["msd_threshold_mm"], unit="mm",
               xlabel="mean surface distance (mm)", letter="b")
    colors = muscle_colors()
    dice, dist = _column(rows, "dice"), _column(rows, "msd_mm")
    ok = np.isfinite(dice) & np.isfinite(dist)
    ax = axes[2]
    ax.scatter(dice[ok], dist[ok], c=[colors[r["muscle"]] for r, keep in zip(rows, ok) if keep], s=14, lw=0,
               alpha=0.85)
    ax.set_xlabel("Dice")
    ax.set_ylabel("MSD (mm)")
    ax.set_title("(c)", loc="left", fontsize=10)
    dropped = summary["n_dice_msd_pairs_dropped"]
    ax.text(0.98, 0.98, f"Pearson r = {summary['dice_msd_pearson_r']:.2f}\nSpearman ρ = "
            f"{summary['dice_msd_spearman_rho']:.2f}\n{summary['n_dice_msd_pairs']} pairs"
            + (f", {dropped} with NaN left out" if dropped else ""),
            transform=ax.transAxes, ha="right", va="top", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    sns.despine(fig)
    fig.tight_layout()
    _absent_caption(fig, summary.get("muscles_absent"))
    return fig


def contour_slices_figure(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, *, spacing_mm, levels_z,
                          titles=None, title: str = ""):
    """Paper Figure 7(a, b): axial slices with the predicted contours in muscle colours and the
    ground-truth contours as thin white lines.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Study-grid image.
    pred, truth : (X, Y, Z) ndarray of int
        Predicted and ground-truth label maps on the same grid (ids from ``llseg.anatomy``).
    spacing_mm : tuple of 3 float
    levels_z : sequence of int
        Axial slice indices, one panel each.
    titles : sequence of str, optional
        Panel titles (default "axial z=...").
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Radiological convention (subject's right on the viewer's left, anterior up), physical
        aspect ratio.
    """
    image = _validate.volume(image, "image")
    pred = _validate.label_map(_validate.volume(pred, "pred"), "pred", valid=anatomy.REGIONS)
    truth = _validate.label_map(_validate.volume(truth, "truth"), "truth", valid=anatomy.REGIONS)
    _validate.same_shape(image, pred, "image", "pred")
    _validate.same_shape(image, truth, "image", "truth")
    sx, sy, _ = _validate.spacing(spacing_mm, 3)
    levels_z = [int(z) for z in levels_z]
    bad = [z for z in levels_z if not 0 <= z < image.shape[2]]
    if bad:
        raise ValueError(f"levels_z {bad} outside 0..{image.shape[2] - 1}")
    titles = list(titles) if titles is not None else [f"axial z={z}" for z in levels_z]
    colors = muscle_colors()
    labelled = (truth > 0) | (pred > 0)
    muscle = image[labelled] if labelled.any() else image.ravel()
    vmin, vmax = float(np.percentile(image, 1)), float(np.percentile(muscle, 99.5))
    # Zoom on the labelled region (both panels share it) with a 20 mm margin.
    box = _bbox_xy(labelled) if labelled.any() else ((0, image.shape[0]), (0, image.shape[1]))
    (x0, x1), (y0, y1) = box
    mx, my = 20.0 / sx, 20.0 / sy
    nx, ny = image.shape[:2]
    xlim, ylim = ((nx - x1 - mx) * sx, (nx - x0 + mx) * sx), ((ny - y0 + my) * sy, (ny - y1 - my) * sy)
    aspect = (xlim[1] - xlim[0]) / (ylim[0] - ylim[1])
    fig, axes = plt.subplots(1, len(levels_z), figsize=(4.0 * aspect ** 0.5 * len(levels_z), 4.0 / aspect ** 0.5 + 0.6),
                             squeeze=False)
    for ax, z, panel, letter in zip(axes[0], levels_z, titles, "abcdefgh"):
        sl = axial_view(image, z)
        extent = _extent(sx, sy, sl.shape)
        ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
        for volume, lw, fixed in ((truth, 0.7, "white"), (pred, 1.6, None)):
            view = axial_view(volume, z)
            for label in np.unique(view[view > 0]):
                color = fixed or colors[anatomy.REGIONS[int(label)][0]]
                ax.contour((view == label).astype(float), levels=[0.5], colors=[color], linewidths=lw,
                           extent=extent, origin="upper")
        ax.set(xlim=xlim, ylim=ylim, xticks=[], yticks=[])
        ax.set_title(f"({letter}) {panel}", fontsize=9)
    axes[0, 0].text(0.02, 0.98, "R", color="yellow", transform=axes[0, 0].transAxes, va="top", fontsize=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="tab:orange", lw=1.6, label="prediction (muscle colour)"),
               Line2D([], [], color="0.2", lw=0.7, label="ground truth (white)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _bbox_xy(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane (X, Y) index bounds [start, stop) of a non-empty 3-D mask."""
    xs, ys = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    return (int(xs[0]), int(xs[-1]) + 1), (int(ys[0]), int(ys[-1]) + 1)


def region_meshes(labels: np.ndarray, *, spacing_mm, step_size: int = 1, max_faces: int | None = None) -> dict:
    """Triangle surface of every region of a label map (marching cubes), in mm.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Label map (ids from ``llseg.anatomy``).
    spacing_mm : tuple of 3 float
    step_size : int, optional
        Marching-cubes step in voxels (``skimage.measure.marching_cubes``); larger = coarser.
    max_faces : int, optional
        Regions whose mesh has more triangles are re-meshed with step 2, 3, ... until they fit
        (or the step reaches the region's size).

    Returns
    -------
    dict
        label -> ``(verts, faces)``: ``(V, 3)`` float vertex coordinates in mm along (X, Y, Z)
        from the centre of voxel (0, 0, 0), and ``(F, 3)`` int triangles. Regions absent from
        ``labels`` are not listed; an empty map gives ``{}``.

    Notes
    -----
    Each region is cropped to its bounding box plus one voxel of background, so every
    surface is closed, and meshed at level 0.5 of its binary mask.
    """
    from scipy import ndimage
    from skimage.measure import marching_cubes

    labels = _validate.label_map(_validate.volume(labels, "labels"), "labels", valid=anatomy.REGIONS)
    spacing = np.asarray(_validate.spacing(spacing_mm, 3))
    if int(step_size) < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size!r}")
    if max_faces is not None and int(max_faces) < 1:
        raise ValueError(f"max_faces must be >= 1 or None, got {max_faces!r}")
    meshes = {}
    for label, box in enumerate(ndimage.find_objects(labels, max_label=anatomy.N_REGIONS), start=1):
        if box is None:
            continue
        start = np.array([s.start for s in box])
        mask = np.pad(labels[box] == label, 1).astype(np.float32)
        step = int(step_size)
        while True:
            verts, faces, _, _ = marching_cubes(mask, 0.5, spacing=tuple(spacing), step_size=step,
                                                allow_degenerate=False)
            if max_faces is None or len(faces) <= max_faces or step >= max(mask.shape) // 2:
                break
            step += 1
        if step > step_size:
            log.debug("region %d meshed with step %d (%d faces)", label, step, len(faces))
        meshes[label] = (verts + (start - 1) * spacing, faces)
    return meshes


def _render_view(polys: np.ndarray, face_colors: np.ndarray, *, elev: float, azim: float, size_px: int) -> np.ndarray:
    """Render triangles (F, 3, 3) in mm with mplot3d on an off-screen square canvas and return
    the RGBA image cropped to the drawn pixels. (An Axes3D always fills a square box, which
    leaves a tall, thin object surrounded by white; cropping the raster is the simple way out.)"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LightSource
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    fig = Figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1), projection="3d")
    ax.set_axis_off()
    lo, hi = polys.reshape(-1, 3).min(axis=0), polys.reshape(-1, 3).max(axis=0)
    ax.add_collection3d(Poly3DCollection(polys, facecolors=face_colors, edgecolors=face_colors, linewidths=0,
                                         shade=True, lightsource=LightSource(azdeg=azim + 45, altdeg=35)))
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
    ax.set_box_aspect(tuple(np.maximum(hi - lo, 1e-6)), zoom=1.0)  # physical aspect
    ax.set_proj_type("ortho")  # no perspective: lengths along the view plane keep their ratios
    ax.view_init(elev=elev, azim=azim)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba()).copy()
    drawn = np.any(rgba[..., :3] < 250, axis=-1)
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        return rgba
    return rgba[max(rows[0] - 4, 0): rows[-1] + 5, max(cols[0] - 4, 0): cols[-1] + 5]


def _side_letters(azim_deg: float) -> tuple[str, str] | None:
    """Subject side shown at the (left, right) of a 3-D view from azimuth ``azim_deg`` (RAS+,
    z up); None for a view from the side, where left and right are not across the picture."""
    screen_x = -math.sin(math.radians(azim_deg))  # +x (subject's right) projected on the screen's rightward axis
    if abs(screen_x) < 0.3:
        return None
    return ("L", "R") if screen_x > 0 else ("R", "L")


def rendering_figure(labels: np.ndarray, *, spacing_mm, step_size: int = 1, max_faces: int | None = 20000,
                     views=((10, 90), (10, -90)), view_titles=("anterior", "posterior"), size_px: int = 900,
                     title: str = ""):
    """Paper Figure 7(c): 3-D rendering of a muscle map, one panel per view.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Label map (study grid).
    spacing_mm : tuple of 3 float
    step_size, max_faces : int
        Mesh coarseness (``region_meshes``).
    views : sequence of (elevation, azimuth) in degrees
        Camera directions (matplotlib ``view_init``); azimuth 90 looks from anterior, so the
        subject's right appears on the viewer's left.
    view_titles : sequence of str
    size_px : int, optional
        Side of the square off-screen canvas each view is rendered on.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Every region in its muscle colour, shaded (mplot3d, painter's algorithm over all
        triangles at once), with physical aspect ratio (box aspect = the meshes' extent in mm).
        Each view is rendered off-screen and shown as an image, cropped to the muscles, so
        the figure is a raster in every format, with "R" / "L" at the sides showing where the
        subject's right and left are. An empty map gives panels saying so.
    """
    meshes = region_meshes(labels, spacing_mm=spacing_mm, step_size=step_size, max_faces=max_faces)
    views = [(float(e), float(a)) for e, a in views]
    colors = muscle_colors()
    images = []
    if meshes:
        polys = np.concatenate([verts[faces] for verts, faces in meshes.values()])  # (F, 3 corners, 3 coords)
        face_colors = np.concatenate([np.tile(colors[anatomy.REGIONS[k][0]], (len(f), 1))
                                      for k, (_, f) in meshes.items()])
        images = [_render_view(polys, face_colors, elev=e, azim=a, size_px=int(size_px)) for e, a in views]
        log.debug("rendered %d regions, %d triangles, %d view(s)", len(meshes), len(polys), len(views))
    height = max((im.shape[0] for im in images), default=1)
    widths = [im.shape[1] / height for im in images] or [1.0] * len(views)
    panel_height = 7.0 if images else 2.0  # inches; each view keeps its pixel aspect ratio
    fig, axes = plt.subplots(1, len(views), figsize=(panel_height * sum(widths) * 1.05, panel_height + 0.5),
                             squeeze=False, gridspec_kw={"width_ratios": widths, "wspace": 0.02})
    for i, (ax, name) in enumerate(zip(axes[0], view_titles)):
        ax.set_axis_off()
        ax.set_title(name, fontsize=9)
        if images:
            ax.imshow(images[i], interpolation="antialiased")
            sides = _side_letters(views[i][1])
            for text, x, ha in zip(sides or (), (0.0, 1.0), ("left", "right")):
                ax.text(x, 1.0, text, transform=ax.transAxes, ha=ha, va="bottom", fontsize=12, fontweight="bold",
                        color="0.25", gid="orientation")
        else:
            ax.text(0.5, 0.5, "no muscle region", transform=ax.transAxes, ha="center")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
