"""Slice viewer for the walkthrough notebook: image, label overlays, stage-1 and TTA boxes.

Three layers, from pure to interactive:

* :func:`display_slice` cuts one slice out of an ``(X, Y, Z)`` RAS+ volume and orients it for
  display; :func:`render_slice` draws image + label overlay + boxes on a matplotlib Axes.
  Neither needs widgets, so tests and scripts call them directly.
* :func:`static_views` draws axial, coronal and sagittal views for each label source into one
  Figure (papermill runs with widgets off, reports).
* :func:`slice_viewer` returns a :class:`SliceViewer`, an ``ipywidgets.VBox`` with sliders and
  selectors that re-renders through :func:`render_slice`.

Display convention (radiological, as MR consoles, ITK-SNAP and 3D Slicer show it): the
subject's right is on the viewer's left in axial and coronal views; anterior is up in axial
views; superior is up in coronal and sagittal views; sagittal views put anterior on the
viewer's left. Pixels have their physical aspect ratio (``spacing_mm``). Label colours are
``figures.label_colormap()`` (both legs of a muscle share a colour).

Rendering choice: the widget draws into its own ``matplotlib.figure.Figure`` (not pyplot, so
no stray inline figure appears) and shows it as PNG bytes in an ``ipywidgets.Image``. That
does not depend on the notebook's matplotlib backend (inline, ipympl or none), needs no
running kernel to build, and an executed notebook that stores widget state keeps the last
picture; ``ipywidgets.Output`` + ``display`` would need a kernel's display hook.
"""
from __future__ import annotations

import logging
from io import BytesIO

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import ndimage

from . import _validate, anatomy, figures
from .export import region_volumes_ml

__all__ = ["VIEWS", "display_slice", "render_slice", "static_views", "slice_viewer", "SliceViewer"]

log = logging.getLogger(__name__)

#: The three views, each cutting perpendicular to one volume axis.
VIEWS = ("axial", "coronal", "sagittal")
_NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}           # axis the slice index runs along
_IN_PLANE = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}  # (column axis, row axis)
# Orientation letters at the viewer's (left, right, top, bottom).
_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
_AXIS_NAMES = "xyz"
_DIM = 0.25            # opacity factor of the regions that are not highlighted
_STAGE1_STYLE = {"edgecolor": "yellow", "linewidth": 1.6, "linestyle": "-"}
_TTA_STYLE = {"edgecolor": "cyan", "linewidth": 0.8, "linestyle": "--"}
_GROUND_TRUTH = "ground truth"


# --------------------------------------------------------------------------- checks


def _check_view(view) -> str:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    return view


def _check_index(index, size: int, name: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{name}: expected an int slice index, got {index!r}")
    if not 0 <= int(index) < size:
        raise ValueError(f"{name}: slice index must be in [0, {size}), got {index}")
    return int(index)


def _check_box(box, name: str) -> np.ndarray:
    arr = np.asarray(box)
    if arr.shape != (3, 2):
        raise ValueError(f"{name}: expected a (3, 2) box [lo, hi) per axis X, Y, Z, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or not np.all(arr == np.round(arr)):
        raise TypeError(f"{name}: expected integer voxel indices, got {arr.tolist()}")
    out = arr.astype(np.int64)
    if np.any(out[:, 1] < out[:, 0]):
        raise ValueError(f"{name}: every row needs lo <= hi, got {out.tolist()}")
    return out


def _check_region(label, name: str = "region") -> int:
    if label is None:
        return 0
    label = int(label)
    if label != 0 and label not in anatomy.REGIONS:
        raise ValueError(f"{name}: expected 0 (all) or a region label 1..{anatomy.N_REGIONS}, got {label}")
    return label


def _check_boxes(boxes, tta_boxes):
    """Validate ``{label: box}`` and ``{label: [box, ...]}``; return plain dicts of int64 boxes."""
    out_boxes, out_tta = {}, {}
    for label, box in (boxes or {}).items():
        out_boxes[_check_region(label, "boxes key")] = _check_box(box, f"boxes[{label}]")
    for label, items in (tta_boxes or {}).items():
        key = _check_region(label, "tta_boxes key")
        out_tta[key] = [_check_box(b, f"tta_boxes[{label}][{i}]") for i, b in enumerate(items)]
    return out_boxes, out_tta


def _sources(image: np.ndarray, labels, predictions) -> dict[str, np.ndarray]:
    """Ground truth and predictions as one ordered dict name -> label map (checked)."""
    maps = {}
    if labels is not None:
        maps[_GROUND_TRUTH] = labels
    for name, pred in (predictions or {}).items():
        if name == _GROUND_TRUTH:
            raise ValueError(f"predictions: the name {_GROUND_TRUTH!r} is reserved for the labels argument")
        maps[str(name)] = pred
    out = {}
    for name, arr in maps.items():
        arr = _validate.label_map(_validate.volume(arr, name), name)
        _validate.same_shape(image, arr, "image", name)
        out[name] = arr
    return out


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
    normal = _NORMAL[_check_view(view)]
    index = _check_index(index, volume.shape[normal], f"{view} index")
    return np.take(volume, index, axis=normal).T[::-1, ::-1]


def _plane_geometry(view: str, shape, spacing) -> tuple[int, int, float, float, int, int]:
    """(column axis, row axis, column mm, row mm, number of columns, number of rows)."""
    ca, ra = _IN_PLANE[view]
    return ca, ra, spacing[ca], spacing[ra], shape[ca], shape[ra]


def _extent(view: str, shape, spacing) -> list[float]:
    """imshow extent in mm: [left, right, bottom, top] with row 0 at the top."""
    _, _, sc, sr, nc, nr = _plane_geometry(view, shape, spacing)
    return [0.0, nc * sc, nr * sr, 0.0]


def _box_rectangle(box: np.ndarray, view: str, index: int, shape, spacing):
    """The box's outline on slice ``index`` as (left, top, width, height) in display mm, or
    None if the box does not contain that slice."""
    normal = _NORMAL[view]
    if not box[normal, 0] <= index < box[normal, 1]:
        return None
    ca, ra, sc, sr, nc, nr = _plane_geometry(view, shape, spacing)
    # Display column c shows voxel nc - 1 - c (flipped), so voxels [lo, hi) fill columns [nc - hi, nc - lo).
    left, top = (nc - box[ca, 1]) * sc, (nr - box[ra, 1]) * sr
    return left, top, (box[ca, 1] - box[ca, 0]) * sc, (box[ra, 1] - box[ra, 0]) * sr


def _voxel_to_display_mm(view: str, position, shape, spacing) -> tuple[float, float]:
    """Display (x, y) in mm of the centre of voxel ``position`` (x, y, z), in-plane part."""
    ca, ra, sc, sr, nc, nr = _plane_geometry(view, shape, spacing)
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
        return _check_box(item[0], "boxes item"), {**_STAGE1_STYLE, **item[1]}
    return _check_box(item, "boxes item"), dict(_STAGE1_STYLE)


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
    index = _check_index(index, image.shape[_NORMAL[view]], f"{view} index")
    if not (np.isfinite(window) and window > 0):
        raise ValueError(f"window must be finite and > 0, got {window!r}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    highlight = _check_region(highlight, "highlight")
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
        position = [_check_index(int(p), n, f"crosshair {a}")
                    for p, n, a in zip(crosshair, image.shape, _AXIS_NAMES, strict=True)]
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
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=9, gid="orientation")
    ax.set_title(f"{view}, {_AXIS_NAMES[_NORMAL[view]]} = {index}", fontsize=9)
    return ax


def _default_window(image: np.ndarray) -> tuple[float, float]:
    """(window, level) spanning the 1st-99.5th percentile of at most ~10^6 sampled voxels."""
    step = max(1, int(round((image.size / 1e6) ** (1 / 3))))
    sample = image[::step, ::step, ::step].astype(float).ravel()
    lo, hi = np.percentile(sample, [1.0, 99.5])
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return float(hi - lo), float((hi + lo) / 2)


def _region_boxes(region: int, boxes: dict, tta_boxes: dict) -> list:
    """Render items for one region's stage-1 box (solid) and TTA boxes (dashed)."""
    if not region:
        return []
    items = [(b, _TTA_STYLE) for b in tta_boxes.get(region, [])]
    if region in boxes:
        items.append((boxes[region], _STAGE1_STYLE))
    return items


def _region_centre(region: int, maps: list[np.ndarray], boxes: dict):
    """Voxel (x, y, z) at the centre of a region's bounding box in the first map holding it,
    else of its stage-1 box; None if neither has it."""
    for arr in maps:
        found = ndimage.find_objects((arr == region).view(np.uint8), max_label=1)[0]
        if found is not None:
            return tuple((s.start + s.stop - 1) // 2 for s in found)
    if region in boxes:
        b = boxes[region]
        return tuple(int((lo + max(hi - 1, lo)) // 2) for lo, hi in b)
    return None


def static_views(image, labels=None, *, spacing_mm, predictions=None, boxes=None, tta_boxes=None,
                 region: int | None = None, position=None, window: float | None = None,
                 level: float | None = None, alpha: float = 0.5, title: str = ""):
    """Axial, coronal and sagittal views for each label source, as one pyplot Figure.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Intensity volume, RAS+.
    labels : (X, Y, Z) ndarray of int, optional
        Ground-truth label map (ids 0..70); one row titled "ground truth".
    spacing_mm : tuple of 3 float
        Voxel spacing in mm, axis order.
    predictions : dict of str -> (X, Y, Z) ndarray of int, optional
        More label maps, one row each (e.g. ``{"stage 1": ..., "stage 2": ...}``).
    boxes : dict of int -> (3, 2) int ndarray, optional
        Stage-1 box per region label; ``region``'s box is outlined (solid yellow).
    tta_boxes : dict of int -> list of (3, 2) int ndarray, optional
        Test-time boxes per region label; ``region``'s are outlined (dashed cyan).
    region : int, optional
        Region label 1..70 to highlight (others dimmed) and whose boxes to draw.
    position : tuple of 3 int, optional
        Voxel (x, y, z) where the three planes cross. Default: the centre of ``region``'s
        bounding box if given and present, else the middle of the volume.
    window, level : float, optional
        Grey window; default the 1st-99.5th intensity percentiles.
    alpha : float
        Overlay opacity in [0, 1].
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        ``(n_sources or 1) x 3`` axes; made with pyplot so notebooks show it inline and
        ``io.save_figure`` closes it.

    Raises
    ------
    ValueError, TypeError
        As :func:`render_slice`; also shape mismatches between image and label maps.
    """
    image = _validate.volume(image, "image")
    spacing = _validate.spacing(spacing_mm, 3)
    maps = _sources(image, labels, predictions)
    box_d, tta_d = _check_boxes(boxes, tta_boxes)
    region = _check_region(region)
    if position is None:
        position = _region_centre(region, list(maps.values()), box_d) if region else None
        position = position or tuple(n // 2 for n in image.shape)
    position = tuple(_check_index(int(p), n, f"position {a}") for p, n, a in zip(position, image.shape, _AXIS_NAMES,
                                                                                     strict=True))
    if window is None or level is None:
        w0, l0 = _default_window(image)
        window = w0 if window is None else window
        level = l0 if level is None else level
    rows = list(maps.items()) or [("image", None)]
    widths = [image.shape[_IN_PLANE[v][0]] * spacing[_IN_PLANE[v][0]] for v in VIEWS]
    heights = [image.shape[_IN_PLANE[v][1]] * spacing[_IN_PLANE[v][1]] for v in VIEWS]
    row_h = 3.2 * max(h / w for h, w in zip(heights, widths))
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, min(4.0, max(1.5, row_h)) * len(rows) + 0.4),
                             squeeze=False, gridspec_kw={"width_ratios": widths}, layout="constrained")
    items = _region_boxes(region, box_d, tta_d)
    for r, (name, overlay) in enumerate(rows):
        for c, view in enumerate(VIEWS):
            ax = render_slice(image, overlay, view=view, index=position[_NORMAL[view]], spacing_mm=spacing,
                              window=window, level=level, alpha=alpha, highlight=region, boxes=items,
                              crosshair=position, ax=axes[r, c])
            ax.set_title(f"{name}: {ax.get_title()}", fontsize=9)
    heading = title
    if region:
        heading = f"{title}  {anatomy.region_name(region)}".strip()
    if heading:
        fig.suptitle(heading, fontsize=11)
    return fig


# --------------------------------------------------------------------------- widget


class SliceViewer:
    """Interactive viewer state; see :func:`slice_viewer`.

    Attributes
    ----------
    widget : ipywidgets.VBox
        What to display (the notebook shows a ``SliceViewer`` directly too).
    controls : dict of str -> ipywidgets.Widget
        ``"view"`` (ToggleButtons axial/coronal/sagittal), ``"x"``, ``"y"``, ``"z"``
        (IntSlider per axis), ``"window"``, ``"level"`` (FloatSlider), ``"alpha"``
        (FloatSlider, overlay opacity), ``"region"`` (Dropdown: "all" = 0, then the 70
        regions, right and left of each muscle in Table-1 order), ``"source"``
        (ToggleButtons: "ground truth" and the prediction names).
    image_widget : ipywidgets.Image
        The rendered slice as PNG bytes.
    info : ipywidgets.HTML
        Selected region, its volume (mL) in every label source, its stage-1 box, slice
        position in mm.
    figure : matplotlib.figure.Figure
        Reused for every render (not registered with pyplot).
    axes : matplotlib.axes.Axes
        Axes of the last render (inspect ``axes.images``, ``axes.patches``).
    volumes_ml : dict of str -> (71,) ndarray
        Region volumes of each label source (voxel count x voxel volume).
    """

    def __init__(self, image, labels=None, *, spacing_mm, predictions=None, boxes=None, tta_boxes=None,
                 title: str = "", width_in: float = 6.0, dpi: int = 100):
        import ipywidgets as widgets

        self.image = _validate.volume(image, "image")
        self.spacing_mm = _validate.spacing(spacing_mm, 3)
        self.sources = _sources(self.image, labels, predictions)
        self.boxes, self.tta_boxes = _check_boxes(boxes, tta_boxes)
        # One bincount per map; also rejects ids outside 0..70 before any drawing.
        self.volumes_ml = {name: region_volumes_ml(arr, self.spacing_mm) for name, arr in self.sources.items()}
        self.title = title
        self._width_in, self._dpi = float(width_in), int(dpi)
        self._lut = _label_lut()
        self._suspended = False

        window, level = _default_window(self.image)
        lo, hi = float(self.image.min()), float(self.image.max())
        span = max(hi - lo, window, 1e-6)
        slider = {"continuous_update": False, "style": {"description_width": "initial"}}
        source_names = list(self.sources) or ["none"]
        region_options = [("all", 0)] + [(anatomy.region_name(label), label)
                                         for m in anatomy.MUSCLES for label in (m.right_label, m.left_label)]
        self.controls = {
            "view": widgets.ToggleButtons(options=list(VIEWS), value="axial", description="view"),
            **{a: widgets.IntSlider(value=n // 2, min=0, max=n - 1, description=f"{a} (voxel)", **slider)
               for a, n in zip(_AXIS_NAMES, self.image.shape)},
            "window": widgets.FloatSlider(value=window, min=span / 1000, max=2 * span, step=span / 1000,
                                          description="window", readout_format=".3g", **slider),
            "level": widgets.FloatSlider(value=level, min=lo - span / 2, max=hi + span / 2, step=span / 1000,
                                         description="level", readout_format=".3g", **slider),
            "alpha": widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="overlay opacity",
                                         **slider),
            "region": widgets.Dropdown(options=region_options, value=0, description="muscle"),
            "source": widgets.ToggleButtons(options=source_names, value=source_names[0], description="labels",
                                            disabled=not self.sources),
        }
        self.image_widget = widgets.Image(format="png")
        self.info = widgets.HTML()
        self.figure = Figure()
        self.axes = None
        c = self.controls
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        self.widget = widgets.VBox(header + [
            widgets.HBox([c["view"], c["source"]]),
            widgets.HBox([c["x"], c["y"], c["z"]]),
            widgets.HBox([c["window"], c["level"], c["alpha"]]),
            c["region"], self.info, self.image_widget,
        ])
        for name, control in c.items():
            handler = self._on_region if name == "region" else self._on_change
            control.observe(handler, names="value")
        self.update()

    # -- state ---------------------------------------------------------------------------

    @property
    def position(self) -> tuple[int, int, int]:
        """Current voxel (x, y, z) of the three sliders."""
        return tuple(int(self.controls[a].value) for a in _AXIS_NAMES)

    @property
    def overlay(self) -> np.ndarray | None:
        """The label map selected by the "source" toggle (None without label maps)."""
        return self.sources.get(self.controls["source"].value)

    # -- callbacks -----------------------------------------------------------------------

    def _on_change(self, _change=None) -> None:
        if not self._suspended:
            self.update()

    def _on_region(self, change) -> None:
        """Jump the sliders to the chosen region, then render once."""
        region = int(change["new"])
        centre = _region_centre(region, [a for a in (self.overlay,) if a is not None] + list(self.sources.values()),
                                self.boxes) if region else None
        if centre is not None:
            self._suspended = True
            try:
                for a, value in zip(_AXIS_NAMES, centre):
                    self.controls[a].value = int(value)
            finally:
                self._suspended = False
        self.update()

    # -- rendering -----------------------------------------------------------------------

    def _info_html(self, region: int) -> str:
        c = self.controls
        view = c["view"].value
        normal = _NORMAL[view]
        index = int(c[_AXIS_NAMES[normal]].value)
        where = (f"{view} slice {_AXIS_NAMES[normal]} = {index} "
                 f"({index * self.spacing_mm[normal]:.1f} mm from the first slice)")
        current = c["source"].value
        if not region:
            parts = [f"{'<b>' if n == current else ''}{n}: {v[1:].sum():.1f} mL, "
                     f"{int(np.count_nonzero(v[1:]))} regions{'</b>' if n == current else ''}"
                     for n, v in self.volumes_ml.items()]
            return f"all regions &mdash; {' &middot; '.join(parts) or 'no label maps'}<br>{where}"
        parts = [f"{'<b>' if n == current else ''}{n}: {v[region]:.1f} mL{'</b>' if n == current else ''}"
                 for n, v in self.volumes_ml.items()]
        text = f"<b>{anatomy.region_name(region)}</b> (label {region}) &mdash; {' &middot; '.join(parts)}"
        if region in self.boxes:
            b = self.boxes[region]
            text += (" &mdash; stage-1 box " + ", ".join(f"{a} [{lo}, {hi})" for a, (lo, hi) in zip(_AXIS_NAMES, b))
                     + " (yellow)")
        if self.tta_boxes.get(region):
            text += f", {len(self.tta_boxes[region])} TTA boxes (dashed cyan)"
        return f"{text}<br>{where}"

    def update(self):
        """Re-render the current slice into ``image_widget`` and refresh ``info``.

        Returns
        -------
        matplotlib.axes.Axes
            The Axes just drawn (also ``self.axes``).
        """
        c = self.controls
        view = c["view"].value
        region = int(c["region"].value)
        position = self.position
        ca, ra, sc, sr, nc, nr = _plane_geometry(view, self.image.shape, self.spacing_mm)
        aspect = (nr * sr) / (nc * sc)
        self.figure.clear()
        self.figure.set_size_inches(self._width_in, float(np.clip(self._width_in * aspect + 0.4, 2.0, 12.0)))
        # Fixed margins rather than a layout engine: one draw per render instead of two.
        ax = self.figure.add_axes((0.01, 0.01, 0.98, 0.92))
        render_slice(self.image, self.overlay, view=view, index=position[_NORMAL[view]], spacing_mm=self.spacing_mm,
                     window=float(c["window"].value), level=float(c["level"].value), alpha=float(c["alpha"].value),
                     highlight=region, boxes=_region_boxes(region, self.boxes, self.tta_boxes),
                     crosshair=position, ax=ax)
        if self.title:
            ax.set_title(f"{self.title}: {ax.get_title()}", fontsize=9)
        buf = BytesIO()
        self.figure.savefig(buf, format="png", dpi=self._dpi)
        self.image_widget.value = buf.getvalue()
        self.info.value = self._info_html(region)
        self.axes = ax
        log.debug("slice viewer: %s at %s, region %d", view, position, region)
        return ax

    def _repr_mimebundle_(self, **kwargs):
        """The widget's bundle plus the current picture as ``image/png``, which frontends
        without widget support (GitHub, nbconvert without widget state) show instead."""
        import base64

        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        if self.image_widget.value:
            bundle["image/png"] = base64.b64encode(self.image_widget.value).decode("ascii")
        return bundle


def slice_viewer(image, labels=None, *, spacing_mm, predictions=None, boxes=None, tta_boxes=None,
                 title: str = "") -> SliceViewer:
    """Interactive slice viewer (ipywidgets) for one subject.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Intensity volume, RAS+.
    labels : (X, Y, Z) ndarray of int, optional
        Ground-truth label map (ids 0..70, ``llseg.anatomy``).
    spacing_mm : tuple of 3 float
        Voxel spacing in mm, axis order; sets the displayed aspect ratio and the volumes.
    predictions : dict of str -> (X, Y, Z) ndarray of int, optional
        More label maps to toggle between, e.g. ``{"stage 1": ..., "stage 2": ...}``.
    boxes : dict of int -> (3, 2) int ndarray, optional
        Stage-1 box of each region label (``[lo, hi)`` per axis X, Y, Z).
    tta_boxes : dict of int -> list of (3, 2) int ndarray, optional
        The test-time boxes of each region label (six in the paper).
    title : str
        Shown above the controls and in the plot title.

    Returns
    -------
    SliceViewer
        Displays itself as the last expression of a notebook cell; ``.widget`` is the
        ``ipywidgets.VBox``, ``.controls`` the dict of controls, ``.update()`` re-renders.

    Raises
    ------
    ValueError, TypeError
        Bad spacing, shape mismatch between the image and a label map, non-integer label
        maps, ids outside 0..70, malformed boxes.

    Notes
    -----
    Controls: a view selector; one slider per axis (the displayed view's normal-axis slider
    moves the slice, the other two place the crosshair); window and level; overlay opacity;
    a muscle dropdown that highlights the region (others dimmed), moves the sliders to its
    centre, reports its volume in mL in every label source, and outlines its stage-1 box
    (solid yellow) and TTA boxes (dashed cyan) on slices they intersect; a toggle between
    ground truth and each prediction. Builds without a display or a running kernel.
    """
    return SliceViewer(image, labels, spacing_mm=spacing_mm, predictions=predictions, boxes=boxes,
                       tta_boxes=tta_boxes, title=title)
