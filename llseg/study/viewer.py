"""Slice viewer for the walkthrough notebook: image, label overlays, stage-1 and TTA boxes.

* :func:`static_views` draws axial, coronal and sagittal views for each label source into one
  Figure (papermill runs with widgets off, reports).
* :func:`slice_viewer` returns a :class:`SliceViewer`, an ``ipywidgets.VBox`` with sliders and
  selectors that re-renders through :func:`render_slice`. The widget draws into its own Figure
  and shows it as PNG bytes, so it works with any matplotlib backend.

One slice is drawn by ``llseg.study.slices`` (:func:`display_slice`, :func:`render_slice`, and
the display convention), re-exported here.
"""
from __future__ import annotations

import logging
from io import BytesIO

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy import ndimage

from .. import _validate, anatomy
from ..export import region_volumes_ml
from .slices import (AXIS_NAMES, NORMAL_AXIS, STAGE1_STYLE, TTA_STYLE, VIEWS, check_index, check_region, display_slice,
                     plane_geometry, render_slice)

__all__ = ["VIEWS", "display_slice", "render_slice", "static_views", "slice_viewer", "SliceViewer", "focus_region",
           "labelled_regions_line"]

log = logging.getLogger(__name__)

_GROUND_TRUTH = "ground truth"
_MAX_HEIGHT_IN = 6.0   # the widget's picture height: the controls stay on screen above it


# --------------------------------------------------------------------------- checks


def _check_boxes(boxes, tta_boxes):
    """Validate ``{label: box}`` and ``{label: [box, ...]}``; return plain dicts of int64 boxes."""
    out_boxes, out_tta = {}, {}
    for label, box in (boxes or {}).items():
        out_boxes[check_region(label, "boxes key")] = _validate.box(box, f"boxes[{label}]", ndim=3)
    for label, items in (tta_boxes or {}).items():
        key = check_region(label, "tta_boxes key")
        out_tta[key] = [_validate.box(b, f"tta_boxes[{label}][{i}]", ndim=3) for i, b in enumerate(items)]
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
    items = [(b, TTA_STYLE) for b in tta_boxes.get(region, [])]
    if region in boxes:
        items.append((boxes[region], STAGE1_STYLE))
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


def _box_legend(fig, region: int, boxes: dict, tta_boxes: dict) -> None:
    """A legend below the views for the region's stage-1 box (solid yellow) and TTA boxes (dashed cyan)."""
    from matplotlib.lines import Line2D

    def line(style, label):
        return Line2D([], [], color=style["edgecolor"], linestyle=style["linestyle"], linewidth=style["linewidth"],
                      label=label)

    handles = []
    if region and region in boxes:
        handles.append(line(STAGE1_STYLE, "stage-1 box (solid yellow)"))
    if region and tta_boxes.get(region):
        handles.append(line(TTA_STYLE, f"{len(tta_boxes[region])} test-time boxes (dashed cyan)"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)


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
    region = check_region(region)
    if position is None:
        position = _region_centre(region, list(maps.values()), box_d) if region else None
        position = position or tuple(n // 2 for n in image.shape)
    position = tuple(check_index(int(p), n, f"position {a}") for p, n, a in zip(position, image.shape, AXIS_NAMES,
                                                                                     strict=True))
    if window is None or level is None:
        w0, l0 = _default_window(image)
        window = w0 if window is None else window
        level = l0 if level is None else level
    rows = list(maps.items()) or [("image", None)]
    planes = [plane_geometry(v, image.shape, spacing) for v in VIEWS]  # (ca, ra, col mm, row mm, ncol, nrow)
    widths, heights = [p[4] * p[2] for p in planes], [p[5] * p[3] for p in planes]
    row_h = 3.2 * max(h / w for h, w in zip(heights, widths))
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, min(4.0, max(1.5, row_h)) * len(rows) + 0.4),
                             squeeze=False, gridspec_kw={"width_ratios": widths}, layout="constrained")
    items = _region_boxes(region, box_d, tta_d)
    for r, (name, overlay) in enumerate(rows):
        for c, view in enumerate(VIEWS):
            ax = render_slice(image, overlay, view=view, index=position[NORMAL_AXIS[view]], spacing_mm=spacing,
                              window=window, level=level, alpha=alpha, highlight=region, boxes=items,
                              crosshair=position, ax=axes[r, c])
            ax.set_title(f"{name}: {ax.get_title()}", fontsize=9)
    _box_legend(fig, region, box_d, tta_d)
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
        (FloatSlider, overlay opacity), ``"region"`` (Dropdown: "all" = 0, then the regions
        present in a label map or with a box, right and left of each muscle in Table-1 order;
        all 70 without any label map), ``"source"``
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
        self._suspended = False

        window, level = _default_window(self.image)
        lo, hi = float(self.image.min()), float(self.image.max())
        span = max(hi - lo, window, 1e-6)
        slider = {"continuous_update": False, "style": {"description_width": "initial"}}
        source_names = list(self.sources) or ["none"]
        shown = {k for v in self.volumes_ml.values() for k in np.flatnonzero(v[1:] > 0) + 1}
        shown |= set(self.boxes) | {k for k, b in self.tta_boxes.items() if b}  # a partial cohort: present ones only
        region_options = [("all", 0)] + [(anatomy.region_name(label), label)
                                         for m in anatomy.MUSCLES for label in (m.right_label, m.left_label)
                                         if label in shown or not self.sources]
        self.controls = {
            "view": widgets.ToggleButtons(options=list(VIEWS), value="axial", description="view"),
            **{a: widgets.IntSlider(value=n // 2, min=0, max=n - 1, description=f"{a} (voxel)", **slider)
               for a, n in zip(AXIS_NAMES, self.image.shape)},
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
        return tuple(int(self.controls[a].value) for a in AXIS_NAMES)

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
                for a, value in zip(AXIS_NAMES, centre):
                    self.controls[a].value = int(value)
            finally:
                self._suspended = False
        self.update()

    # -- rendering -----------------------------------------------------------------------

    def _info_html(self, region: int) -> str:
        c = self.controls
        view = c["view"].value
        normal = NORMAL_AXIS[view]
        index = int(c[AXIS_NAMES[normal]].value)
        where = (f"{view} slice {AXIS_NAMES[normal]} = {index} "
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
            text += (" &mdash; stage-1 box " + ", ".join(f"{a} [{lo}, {hi})" for a, (lo, hi) in zip(AXIS_NAMES, b))
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
        ca, ra, sc, sr, nc, nr = plane_geometry(view, self.image.shape, self.spacing_mm)
        aspect = (nr * sr) / (nc * sc)
        height = float(np.clip(self._width_in * aspect, 1.6, _MAX_HEIGHT_IN))  # tall coronal views shrink in width
        self.figure.clear()
        self.figure.set_size_inches(min(self._width_in, height / aspect), height + 0.4)
        # Fixed margins rather than a layout engine: one draw per render instead of two.
        ax = self.figure.add_axes((0.01, 0.01, 0.98, 0.92))
        render_slice(self.image, self.overlay, view=view, index=position[NORMAL_AXIS[view]], spacing_mm=self.spacing_mm,
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


# --------------------------------------------------------------------------- which region to show


def _present(labels) -> set[int]:
    """The region ids (1..70) a checked 3-D label map holds."""
    labels = _validate.label_map(_validate.volume(labels, "labels"), "labels", valid=anatomy.REGIONS)
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=anatomy.N_REGIONS + 1)
    return {int(k) for k in np.flatnonzero(counts[1:]) + 1}


def focus_region(labels, muscle: str) -> tuple[int, str]:
    """The region to show first: ``muscle`` on the right leg, or the closest labelled stand-in.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Ground-truth label map (ids 0..70).
    muscle : str
        Muscle key or Table-1 name (``llseg.anatomy.muscle``).

    Returns
    -------
    label : int
        The right region of ``muscle`` if ``labels`` holds it, else its left region, else the
        first labelled region in Table-1 order (right before left); the right region when
        nothing is labelled.
    note : str
        "" when the right region of ``muscle`` is shown, else one sentence saying what is shown
        instead and why (a partial label map).

    Raises
    ------
    KeyError
        Unknown muscle.
    ValueError, TypeError
        ``labels`` is not a 3-D integer label map with ids 0..70.
    """
    m = anatomy.muscle(muscle)
    present = _present(labels)
    if m.right_label in present:
        return m.right_label, ""
    order = [m.left_label] + [k for mm in anatomy.MUSCLES for k in (mm.right_label, mm.left_label)]
    label = next((k for k in order if k in present), None)
    if label is None:
        return m.right_label, f"{anatomy.region_name(m.right_label)} is shown, but this label map holds no region."
    return int(label), (f"{anatomy.region_name(m.right_label)} is not labelled on this case; showing "
                        f"{anatomy.region_name(label)} instead.")


def labelled_regions_line(labels) -> str:
    """One line on a label map's regions: ``"70 of 70 regions labelled"``, or for a partial label map
    ``"15 of 70 regions labelled; not labelled: 27 muscles on both sides, 1 on the left only"``
    (raises as :func:`focus_region` for a bad label map)."""
    present = _present(labels)
    line = f"{len(present)} of {anatomy.N_REGIONS} regions labelled"
    missing = [(m.right_label not in present, m.left_label not in present) for m in anatomy.MUSCLES]
    parts = [f"{n} {what}" for n, what in ((sum(r and l for r, l in missing), "muscles on both sides"),
                                          (sum(r and not l for r, l in missing), "on the right only"),
                                          (sum(l and not r for r, l in missing), "on the left only")) if n]
    return line + (f"; not labelled: {', '.join(parts)}" if parts else "")
