"""Tests for llseg.study.viewer: slice orientation, overlays, boxes and the headless widget."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from llseg import anatomy, export  # noqa: E402
from llseg.study import figures, viewer  # noqa: E402

SHAPE = (12, 10, 8)


def _boxes(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == "box"]


def _render(image, overlay=None, **kw):
    args = dict(view="axial", index=0, spacing_mm=(1.0, 1.0, 1.0), window=1.0, level=0.5, alpha=0.5)
    args.update(kw)
    return viewer.render_slice(image, overlay, **args)


def _bright_pixel_quadrant(ax):
    """(row half, column half) of the brightest rendered pixel inside the axes: 0 = top/left."""
    canvas = FigureCanvasAgg(ax.figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[..., :3].astype(int).sum(-1)
    bbox = ax.get_window_extent()
    h = rgba.shape[0]
    x0, x1 = int(np.ceil(bbox.x0)), int(np.floor(bbox.x1))
    y0, y1 = h - int(np.floor(bbox.y1)), h - int(np.ceil(bbox.y0))    # display y grows upward
    inside = rgba[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
    # ignore the yellow orientation letters: the marker is pure white (765)
    r, c = np.unravel_index(np.argmax(inside == 765), inside.shape)
    assert inside[r, c] == 765
    return int(r >= inside.shape[0] / 2), int(c >= inside.shape[1] / 2)


@pytest.fixture
def case():
    image = np.full(SHAPE, 0.1, np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[7:11, 2:8, 2:6] = 2            # adductor longus, right (large x = subject's right)
    labels[1:5, 2:8, 2:6] = 37            # adductor longus, left
    labels[7:10, 7:9, 6:8] = 12           # gluteus maximus, right
    image[labels > 0] = 0.7
    pred = labels.copy()
    pred[7:11, 2:8, 5] = 0                # stage 2 misses one slice of the right adductor longus
    return image, labels, {"stage 1": labels.copy(), "stage 2": pred}


# --------------------------------------------------------------------------- orientation


def test_display_slice_matches_figures_conventions(rng):
    vol = rng.normal(size=SHAPE)
    np.testing.assert_array_equal(viewer.display_slice(vol, view="axial", index=3), figures.axial_view(vol, 3))
    np.testing.assert_array_equal(viewer.display_slice(vol, view="coronal", index=4), figures.coronal_view(vol, 4))
    sag = viewer.display_slice(vol, view="sagittal", index=5)
    assert sag.shape == (SHAPE[2], SHAPE[1])                      # rows = z, columns = y
    assert sag[0, 0] == vol[5, SHAPE[1] - 1, SHAPE[2] - 1]        # top-left = anterior-superior


@pytest.mark.parametrize("view, marker, index", [
    ("axial", (SHAPE[0] - 1, SHAPE[1] - 1, 3), 3),     # right-anterior -> left-top
    ("coronal", (SHAPE[0] - 1, 4, SHAPE[2] - 1), 4),   # right-superior -> left-top
    ("sagittal", (5, SHAPE[1] - 1, SHAPE[2] - 1), 5),  # anterior-superior -> left-top
])
def test_marker_appears_left_top(view, marker, index):
    image = np.zeros(SHAPE)
    image[marker] = 1.0
    ax = _render(image, view=view, index=index, spacing_mm=(1.0, 1.2, 2.0))
    shown = ax.images[0].get_array()
    assert np.unravel_index(np.argmax(shown), shown.shape) == (0, 0)
    assert _bright_pixel_quadrant(ax) == (0, 0)          # really drawn at the viewer's left-top


def test_marker_at_subject_left_posterior_is_right_bottom():
    image = np.zeros(SHAPE)
    image[0, 0, 2] = 1.0
    ax = _render(image, view="axial", index=2)
    assert _bright_pixel_quadrant(ax) == (1, 1)
    letters = {t.get_text(): t.get_position() for t in ax.texts if t.get_gid() == "orientation"}
    assert letters["R"][0] < 0.5 < letters["L"][0]
    assert letters["A"][1] > 0.5 > letters["P"][1]


def test_physical_aspect_from_spacing():
    image = np.zeros(SHAPE)
    ax = _render(image, view="coronal", index=0, spacing_mm=(0.5, 1.0, 3.0))
    assert ax.get_xlim() == (0.0, SHAPE[0] * 0.5)        # columns: X at 0.5 mm
    assert ax.get_ylim() == (SHAPE[2] * 3.0, 0.0)        # rows: Z at 3 mm, row 0 on top
    assert ax.images[0].get_extent() == [0.0, 6.0, 24.0, 0.0]
    assert ax.get_aspect() == 1.0


# --------------------------------------------------------------------------- overlay and boxes


def test_overlay_colours_and_highlight(case):
    image, labels, _ = case
    lut = figures.label_colormap()(np.arange(71))
    ax = _render(image, labels, index=3, alpha=0.6)
    rgba = ax.images[1].get_array()
    disp = viewer.display_slice(labels, view="axial", index=3)
    r, c = np.argwhere(disp == 2)[0]
    np.testing.assert_allclose(rgba[r, c, :3], lut[2, :3])
    assert rgba[r, c, 3] == pytest.approx(0.6)
    assert np.all(rgba[disp == 0, 3] == 0)
    np.testing.assert_allclose(rgba[disp == 37, :3], np.broadcast_to(lut[37, :3], rgba[disp == 37, :3].shape))
    ax = _render(image, labels, index=3, alpha=0.6, highlight=37)
    rgba = ax.images[1].get_array()
    assert np.all(rgba[disp == 37, 3] == pytest.approx(0.6))
    assert np.all(rgba[disp == 2, 3] == pytest.approx(0.6 * 0.25))


def test_boxes_only_on_intersecting_slices():
    image = np.zeros(SHAPE)
    box = np.array([[2, 5], [1, 4], [3, 6]])          # z in [3, 6)
    drawn = {z: len(_boxes(_render(image, view="axial", index=z, boxes=[box]))) for z in range(SHAPE[2])}
    assert drawn == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 0, 7: 0}
    assert len(_boxes(_render(image, view="coronal", index=3, boxes=[box]))) == 1
    assert len(_boxes(_render(image, view="coronal", index=4, boxes=[box]))) == 0
    assert len(_boxes(_render(image, view="sagittal", index=4, boxes=[box, (box, {"linestyle": "--"})]))) == 2


def test_box_rectangle_position_in_mm():
    image = np.zeros(SHAPE)
    box = np.array([[2, 5], [1, 4], [3, 6]])
    (rect,) = _boxes(_render(image, view="axial", index=3, spacing_mm=(0.5, 2.0, 1.0), boxes=[box]))
    # x voxels [2, 5) -> columns [12 - 5, 12 - 2) = [7, 10) at 0.5 mm; y [1, 4) -> rows [6, 9) at 2 mm
    assert rect.get_xy() == (3.5, 12.0)
    assert (rect.get_width(), rect.get_height()) == (1.5, 6.0)
    # the box lies on the subject's left (small x) and posterior (small y): viewer's right and bottom
    assert rect.get_x() > SHAPE[0] * 0.5 / 2 and rect.get_y() > SHAPE[1] * 2.0 / 2


def test_render_slice_errors():
    image = np.zeros(SHAPE)
    with pytest.raises(ValueError, match="view"):
        _render(image, view="oblique")
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        _render(image, index=8)
    with pytest.raises(TypeError, match="int"):
        _render(image, index=1.5)
    with pytest.raises(ValueError, match="window"):
        _render(image, window=0.0)
    with pytest.raises(ValueError, match="alpha"):
        _render(image, alpha=1.5)
    bad = np.zeros(SHAPE, np.uint8)
    bad[0, 0, 0] = 71
    with pytest.raises(ValueError, match="0..70"):
        _render(image, bad, index=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        _render(image, np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        _render(image, boxes=[np.zeros((2, 2), int)])


def test_one_voxel_image():
    ax = _render(np.ones((1, 1, 1)), np.ones((1, 1, 1), np.uint8), boxes=[np.array([[0, 1]] * 3)])
    assert ax.images[0].get_array().shape == (1, 1)
    assert len(_boxes(ax)) == 1


# --------------------------------------------------------------------------- widget


def test_widget_builds_headless_and_updates(case):
    import ipywidgets

    image, labels, preds = case
    stage1 = {2: np.array([[7, 11], [2, 8], [2, 6]])}
    tta = {2: [np.array([[6, 12], [1, 9], [1, 7]]) for _ in range(5)] + [np.array([[5, 12], [0, 10], [0, 7]])]}
    spacing = (0.8, 0.8, 2.5)
    n_figs = len(plt.get_fignums())
    v = viewer.slice_viewer(image, labels, spacing_mm=spacing, predictions=preds, boxes=stage1,
                            tta_boxes=tta, title="phantom 3")
    assert isinstance(v.widget, ipywidgets.VBox)
    c = v.controls
    assert set(c) == {"view", "x", "y", "z", "window", "level", "alpha", "region", "source"}
    assert isinstance(c["view"], ipywidgets.ToggleButtons) and isinstance(c["source"], ipywidgets.ToggleButtons)
    assert all(isinstance(c[a], ipywidgets.IntSlider) for a in "xyz")
    assert [c[a].max for a in "xyz"] == [n - 1 for n in SHAPE]
    assert c["source"].options == ("ground truth", "stage 1", "stage 2")
    assert c["region"].options[0] == ("all", 0)                 # then the regions present, Table-1 order
    assert [label for _, label in c["region"].options[1:]] == [2, 37, 12]
    assert v.image_widget.value[:8] == b"\x89PNG\r\n\x1a\n"

    for view in viewer.VIEWS:
        c["view"].value = view
        assert v.axes.get_title().startswith(f"phantom 3: {view}")
        assert len(v.axes.images) == 2

    # select a muscle: sliders jump to its centre, its boxes are drawn, its volume is reported
    c["view"].value = "axial"
    c["region"].value = 2
    assert v.position == (8, 4, 3)
    assert len(_boxes(v.axes)) == 7                        # stage-1 box + six TTA boxes
    ml = np.count_nonzero(labels == 2) * np.prod(spacing) / 1000
    assert f"ground truth: {ml:.1f} mL" in v.info.value
    assert "Adductor longus (right)" in v.info.value
    c["z"].value = 0                                       # only the largest TTA box reaches z = 0
    assert len(_boxes(v.axes)) == 1
    c["z"].value = 7                                       # no box reaches z = 7
    assert len(_boxes(v.axes)) == 0

    # toggle predictions: the overlay follows the source
    c["z"].value = 5
    gt_overlay = v.axes.images[1].get_array().copy()
    c["source"].value = "stage 2"
    assert v.overlay is preds["stage 2"]
    assert not np.array_equal(v.axes.images[1].get_array(), gt_overlay)
    c["source"].value = "stage 1"
    np.testing.assert_array_equal(v.axes.images[1].get_array(), gt_overlay)

    c["window"].value, c["level"].value, c["alpha"].value = 0.4, 0.3, 0.0
    assert v.axes.images[0].get_clim() == pytest.approx((0.1, 0.5))
    assert np.all(v.axes.images[1].get_array()[..., 3] == 0)
    c["region"].value = 0
    assert len(_boxes(v.axes)) == 0 and "all regions" in v.info.value
    assert v.update() is v.axes
    assert len(plt.get_fignums()) == n_figs                # the widget never touches pyplot
    assert "image/png" in v._repr_mimebundle_()


def test_widget_lists_only_regions_present_or_boxed(case):
    """A partial cohort: the muscle menu offers the regions some label map holds or a box names."""
    image, labels, preds = case
    v = viewer.slice_viewer(image, labels, spacing_mm=(1, 1, 1),
                            predictions={"stage 2": np.where(labels == 12, 0, labels)},
                            boxes={70: np.array([[0, 2], [0, 2], [0, 2]])})
    assert [label for _, label in v.controls["region"].options[1:]] == [2, 37, 12, 70]
    v = viewer.slice_viewer(image, predictions={"stage 2": np.where(labels == 2, 0, labels)}, spacing_mm=(1, 1, 1))
    assert [label for _, label in v.controls["region"].options[1:]] == [37, 12]


def test_widget_without_labels_and_one_voxel():
    v = viewer.slice_viewer(np.ones((1, 1, 1)), spacing_mm=(1, 1, 1))
    assert len(v.controls["region"].options) == 71          # no label map: every region can be chosen
    assert v.controls["source"].disabled and v.overlay is None
    assert len(v.axes.images) == 1
    v.controls["region"].value = 5                          # nothing to find: sliders stay put
    assert v.position == (0, 0, 0)
    v = viewer.slice_viewer(np.zeros(SHAPE), predictions={"stage 2": np.zeros(SHAPE, np.uint8)}, spacing_mm=None)
    assert v.controls["source"].options == ("stage 2",)


def test_widget_rejects_bad_inputs(case):
    image, labels, _ = case
    with pytest.raises(ValueError, match="shape mismatch"):
        viewer.slice_viewer(image, labels[:-1], spacing_mm=(1, 1, 1))
    bad = labels.copy()
    bad[0, 0, 0] = 80
    with pytest.raises(ValueError, match=r"\b80\b"):  # the bad id is named
        viewer.slice_viewer(image, bad, spacing_mm=(1, 1, 1))
    with pytest.raises(ValueError, match="region label"):
        viewer.slice_viewer(image, labels, spacing_mm=(1, 1, 1), boxes={99: np.zeros((3, 2), int)})
    with pytest.raises(ValueError, match="reserved"):
        viewer.slice_viewer(image, labels, spacing_mm=(1, 1, 1), predictions={"ground truth": labels})
    with pytest.raises(ValueError, match="spacing_mm"):
        viewer.slice_viewer(image, labels, spacing_mm=(1, 1))


# --------------------------------------------------------------------------- static figure


def test_static_views_layout(case):
    image, labels, preds = case
    fig = viewer.static_views(image, labels, spacing_mm=(1, 1, 2), predictions=preds, region=2,
                              boxes={2: np.array([[7, 11], [2, 8], [2, 6]])}, title="phantom")
    try:
        axes = fig.axes
        assert len(axes) == 3 * 3
        assert [ax.get_title().split(":")[0] for ax in axes[::3]] == ["ground truth", "stage 1", "stage 2"]
        assert [ax.get_title().split(": ")[1].split(",")[0] for ax in axes[:3]] == list(viewer.VIEWS)
        # planes cross at the region's centre; its stage-1 box is on every view
        assert axes[0].get_title().endswith("z = 3")
        assert all(len(_boxes(ax)) == 1 for ax in axes)
        assert "Adductor longus (right)" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
    fig = viewer.static_views(image, spacing_mm=(1, 1, 2))
    try:
        assert len(fig.axes) == 3 and all(len(ax.images) == 1 for ax in fig.axes)
    finally:
        plt.close(fig)


def test_volumes_in_viewer_match_export(case):
    image, labels, _ = case
    v = viewer.slice_viewer(image, labels, spacing_mm=(0.5, 1.0, 2.0))
    np.testing.assert_allclose(v.volumes_ml["ground truth"], export.region_volumes_ml(labels, (0.5, 1.0, 2.0)))
    assert isinstance(v.figure, Figure)
