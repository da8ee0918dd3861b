"""Slice drawing for the viewer: one oriented slice with label overlay, boxes and orientation letters.

:func:`display_slice` cuts one slice out of an ``(X, Y, Z)`` RAS+ volume and orients it for
display; :func:`render_slice` draws image + label overlay + boxes on a matplotlib Axes. Neither
needs widgets. Display convention (radiological, as MR consoles, ITK-SNAP and 3D Slicer show
it): the subject's right is on the viewer's left in axial and coronal views; anterior is up in
axial views; superior is up in coronal and sagittal views; sagittal views put anterior on the
viewer's left. Pixels have their physical aspect ratio (``spacing_mm``). Label colours are
``figures.label_colormap()`` (both legs of a muscle share a colour).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import _validate, anatomy
from . import figures

__all__ = ["VIEWS", "NORMAL_AXIS", "AXIS_NAMES", "STAGE1_STYLE", "TTA_STYLE", "check_index", "check_region",
           "display_slice", "plane_geometry", "render_slice"]

#: The three views, each cutting perpendicular to one volume axis.
VIEWS = ("axial", "coronal", "sagittal")
NORMAL_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}           # axis the slice index runs along
_IN_PLANE = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}  # (column axis, row axis)
# Orientation letters at the viewer's (left, right, top, bottom).
_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
AXIS_NAMES = "xyz"
_DIM = 0.25            # opacity factor of the regions that are not highlighted
STAGE1_STYLE = {"edgecolor": "yellow", "linewidth": 1.6, "linestyle": "-"}
TTA_STYLE = {"edgecolor": "cyan", "linewidth": 0.8, "linestyle": "--"}

# --------------------------------------------------------------------------- checks


def _check_view(view) -> str:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    return view


def check_index(index, size: int, name: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{name}: expected an int slice index, got {index!r}")
    if not 0 <= int(index) < size:
        raise ValueError(f"{name}: slice index must be in [0, {size}), got {index}")
    return int(index)


def check_region(label, name: str = "region") -> int:
    if label is None:
        return 0
    label = int(label)
    if label != 0 and label not in anatomy.REGIONS:
        raise ValueError(f"{name}: expected 0 (all) or a region label 1..{anatomy.N_REGIONS}, got {label}")
    return label



# --------------------------------------------------------------------------- geometry


def display_slice(volume, *, view: str, index: int) -> np.ndarray:
    """One slice of an ``(X, Y, Z)`` RAS+ volume, oriented for radiological display.

    Parameters
    ----------
    volume : (X, Y, Z) ndarray
        Any dtype.
    view : {"axial", "coronal", "sagittal"}
        Cuts at ``z = index``, ``y = index`` or ``x = index``.
    index : int
        Slice index along the view's normal axis.

    Returns
    -------
    (rows, cols) ndarray
        A view (no copy) with row 0 at the top of the screen. Axial: rows anterior ->
        posterior, columns subject's right -> left (as ``figures.axial_view``). Coronal: rows
        superior -> inferior, columns right -> left (as ``figures.coronal_view``). Sagittal:
        rows superior -> inferior, columns anterior -> posterior.

    Notes
    -----
    In RAS+ the in-plane index grows toward Right, Anterior and Superior, and each of those
    is shown at the left or top, so every view is the transposed slice flipped on both axes.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume: expected a 3-D (X, Y, Z) array, got shape {volume.shape}")
    normal = NORMAL_AXIS[_check_view(view)]
    index = check_index(index, volume.shape[normal], f"{view} index")
    return np.take(volume, index, axis=normal).T[::-1, ::-1]


def plane_geometry(view: str, shape, spacing) -> tuple[int, int, float, float, int, int]:
    """(column axis, row axis, column mm, row mm, number of columns, number of rows)."""
    ca, ra = _IN_PLANE[view]
    return ca, ra, spacing[ca], spacing[ra], shape[ca], shape[ra]


def _extent(view: str, shape, spacing) -> list[float]:
    """imshow extent in mm: [left, right, bottom, top] with row 0 at the top."""
    _, _, sc, sr, nc, nr = plane_geometry(view, shape, spacing)
    return [0.0, nc * sc, nr * sr, 0.0]


def _box_rectangle(box: np.ndarray, view: str, index: int, shape, spacing):
    """The box's outline on slice ``index`` as (left, top, width, height) in display mm, or
    None if the box does not contain that slice."""
    normal = NORMAL_AXIS[view]
    if not box[normal, 0] <= index < box[normal, 1]:
        return None
    ca, ra, sc, sr, nc, nr = plane_geometry(view, shape, spacing)
    # Display column c shows voxel nc - 1 - c (flipped), so voxels [lo, hi) fill columns [nc - hi, nc - lo).
    left, top = (nc - box[ca, 1]) * sc, (nr - box[ra, 1]) * sr
    return left, top, (box[ca, 1] - box[ca, 0]) * sc, (box[ra, 1] - box[ra, 0]) * sr


def _voxel_to_display_mm(view: str, position, shape, spacing) -> tuple[float, float]:
    """Display (x, y) in mm of the centre of voxel ``position`` (x, y, z), in-plane part."""
    ca, ra, sc, sr, nc, nr = plane_geometry(view, shape, spacing)
    return (nc - 1 - position[ca] + 0.5) * sc, (nr - 1 - position[ra] + 0.5) * sr


def _label_lut() -> np.ndarray:
    """(71, 4) RGBA rows of ``figures.label_colormap()`` (row 0 transparent)."""
    cmap = figures.label_colormap()
    return np.asarray(cmap(np.arange(anatomy.N_REGIONS + 1)), dtype=float)


def _overlay_rgba(labels2d: np.ndarray, lut: np.ndarray, alpha: float, highlight: int) -> np.ndarray:
    """RGBA picture of a 2-D label slice: muscles at ``alpha``, others dimmed if highlighting."""
    rgba = lut[labels2d]                                      # (rows, cols, 4)
    opacity = np.where(labels2d > 0, alpha, 0.0)
    if highlight:
        opacity = np.where((labels2d > 0) & (labels2d != highlight), alpha * _DIM, opacity)
    rgba[..., 3] = opacity
    return rgba


def _split_box_item(item):
    """A boxes entry is a (3, 2) box or a pair (box, dict of Rectangle keyword arguments)."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
        return _validate.box(item[0], "boxes item", ndim=3), {**STAGE1_STYLE, **item[1]}
    return _validate.box(item, "boxes item", ndim=3), dict(STAGE1_STYLE)


# --------------------------------------------------------------------------- drawing


def render_slice(image, overlay, *, view: str, index: int, spacing_mm, window: float, level: float,
                 alpha: float, highlight: int | None = None, boxes=(), crosshair=None, ax=None):
    """Draw one oriented slice: grey image, coloured label overlay, box outlines.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Intensity volume, RAS+.
    overlay : (X, Y, Z) ndarray of int or None
        Label map (ids 0..70, ``llseg.anatomy``) on the same grid; None draws the image only.
    view : {"axial", "coronal", "sagittal"}
        See :func:`display_slice` for the orientation (radiological).
    index : int
        Slice index along the view's normal axis (Z, Y or X).
    spacing_mm : tuple of 3 float
        Voxel spacing in mm, axis order; sets the physical aspect ratio (axes are in mm).
    window, level : float
        Grey-scale window width (> 0) and centre: black at ``level - window / 2``, white at
        ``level + window / 2``, in image units.
    alpha : float
        Overlay opacity in [0, 1].
    highlight : int, optional
        Region label 1..70 to emphasise: it keeps ``alpha``, other regions get
        ``alpha * 0.25``. None or 0 highlights nothing.
    boxes : sequence
        Boxes to outline where they contain slice ``index``: each a ``(3, 2)`` int array
        ``[lo, hi)`` per axis X, Y, Z (``llseg.boxes``), or a pair ``(box, style)`` with
        ``style`` a dict of ``matplotlib.patches.Rectangle`` keywords (e.g. ``edgecolor``,
        ``linestyle``). Boxes that miss the slice are skipped.
    crosshair : tuple of 3 int, optional
        Voxel position (x, y, z); thin lines mark its two in-plane coordinates.
    ax : matplotlib Axes, optional
        Drawn into; by default a new ``matplotlib.figure.Figure`` (outside pyplot) is made.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.images[0]`` is the grey image, ``ax.images[1]`` the RGBA overlay (if any); box
        outlines are ``Rectangle`` patches in ``ax.patches`` with gid ``"box"``. Axes units
        are mm from the top-left corner of the slice.

    Raises
    ------
    ValueError
        Unknown view, index out of range, shape mismatch, non-positive window, alpha outside
        [0, 1], bad spacing, overlay ids outside 0..70.
    TypeError
        Non-integer overlay or index.
    """
    image = _validate.volume(image, "image")
    spacing = _validate.spacing(spacing_mm, 3)
    view = _check_view(view)
    index = check_index(index, image.shape[NORMAL_AXIS[view]], f"{view} index")
    if not (np.isfinite(window) and window > 0):
        raise ValueError(f"window must be finite and > 0, got {window!r}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    highlight = check_region(highlight, "highlight")
    if ax is None:
        ax = Figure(figsize=(5, 5), layout="constrained").add_subplot()

    extent = _extent(view, image.shape, spacing)
    ax.imshow(display_slice(image, view=view, index=index), cmap="gray", vmin=level - window / 2,
              vmax=level + window / 2, extent=extent, interpolation="nearest", aspect="equal")
    if overlay is not None:
        overlay = _validate.label_map(overlay, "overlay")
        _validate.same_shape(image, overlay, "image", "overlay")
        lab = display_slice(overlay, view=view, index=index)
        if lab.size and (lab.min() < 0 or lab.max() > anatomy.N_REGIONS):
            raise ValueError(f"overlay: label ids must be in 0..{anatomy.N_REGIONS}, got range "
                             f"[{lab.min()}, {lab.max()}] on {view} slice {index}")
        ax.imshow(_overlay_rgba(lab.astype(np.intp), _label_lut(), alpha, highlight), extent=extent,
                  interpolation="nearest", aspect="equal")

    for item in boxes:
        box, style = _split_box_item(item)
        rect = _box_rectangle(box, view, index, image.shape, spacing)
        if rect is not None:
            left, top, width, height = rect
            ax.add_patch(Rectangle((left, top), width, height, fill=False, gid="box", **style))

    if crosshair is not None:
        position = [check_index(int(p), n, f"crosshair {a}")
                    for p, n, a in zip(crosshair, image.shape, AXIS_NAMES, strict=True)]
        cx, cy = _voxel_to_display_mm(view, position, image.shape, spacing)
        ax.axvline(cx, color="white", lw=0.5, alpha=0.4, gid="crosshair")
        ax.axhline(cy, color="white", lw=0.5, alpha=0.4, gid="crosshair")

    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    left, right, top, bottom = _LETTERS[view]
    for text, x, y, ha, va in ((left, 0.01, 0.5, "left", "center"), (right, 0.99, 0.5, "right", "center"),
                               (top, 0.5, 0.99, "center", "top"), (bottom, 0.5, 0.01, "center", "bottom")):
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=9, fontweight="bold",
                gid="orientation", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0})
    ax.set_title(f"{view}, {AXIS_NAMES[NORMAL_AXIS[view]]} = {index}", fontsize=9)
    return ax
