"""Figures of the evaluation (Table 1, Figures 6 and 7): meshes with known bounds, figures from tiny inputs."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import anatomy  # noqa: E402
from llseg.study import evaluation, figures  # noqa: E402

NAN = float("nan")


def _rows():
    rows = []
    for i, m in enumerate(anatomy.MUSCLES):
        for side in ("right", "left"):
            rows.append({"muscle": m.key, "side": side, "dice": 0.9 - 0.01 * i, "msd_mm": 1.0 + 0.1 * i,
                         "volume_error_abs_pct": 2.0 + i, "volume_true_ml": m.volume_ml})
    rows[0].update(dice=NAN, msd_mm=NAN)  # an empty-mask row is counted, not drawn
    return rows


def test_region_meshes_bounds_follow_spacing():
    labels = np.zeros((10, 9, 8), np.uint8)
    labels[2:6, 3:7, 1:5] = 2
    labels[7, 7, 6] = 40  # a one-voxel region
    meshes = figures.region_meshes(labels, spacing_mm=(1.0, 2.0, 5.0))
    assert sorted(meshes) == [2, 40]
    verts, faces = meshes[2]
    assert faces.ndim == 2 and faces.shape[1] == 3 and faces.max() < len(verts)
    # the level-0.5 surface lies half-way between voxel centres: index 2..5 -> 1.5..5.5 voxels
    np.testing.assert_allclose(verts.min(axis=0), [1.5 * 1, 2.5 * 2, 0.5 * 5])
    np.testing.assert_allclose(verts.max(axis=0), [5.5 * 1, 6.5 * 2, 4.5 * 5])
    one = meshes[40][0]
    np.testing.assert_allclose(one.min(axis=0), [6.5, 13.0, 27.5])
    np.testing.assert_allclose(one.max(axis=0), [7.5, 15.0, 32.5])


def test_region_meshes_empty_and_decimation():
    assert figures.region_meshes(np.zeros((4, 4, 4), np.uint8), spacing_mm=(1, 1, 1)) == {}
    ball = (np.indices((24, 24, 24)) - 11.5) ** 2
    labels = (ball.sum(axis=0) < 100).astype(np.uint8) * 12
    fine = figures.region_meshes(labels, spacing_mm=(1, 1, 1))[12][1]
    coarse = figures.region_meshes(labels, spacing_mm=(1, 1, 1), max_faces=len(fine) // 3)[12][1]
    assert len(coarse) <= len(fine) // 3
    with pytest.raises(ValueError, match="step_size"):
        figures.region_meshes(labels, spacing_mm=(1, 1, 1), step_size=0)
    with pytest.raises(ValueError, match="unknown label"):
        figures.region_meshes(labels + 100, spacing_mm=(1, 1, 1))


def test_dice_figure_one_row_per_muscle():
    rows = _rows()
    table = evaluation.table1(rows)
    fig = figures.dice_figure(rows, table, order=evaluation.muscles_by_volume(rows), title="t")
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert len(names) == 35 and names[0] == "Gluteus maximus" and names[-1] == "External rotators"
    assert "1 NaN not shown" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 3                          # rows without the margin column: no reference tick
    plt.close(fig)
    with pytest.raises(ValueError, match="not in table"):
        figures.dice_figure(rows, table, order=["biceps"])
    marked = [{**r, evaluation.MARGIN: 0.8} for r in rows]
    fig = figures.dice_figure(marked, evaluation.table1(marked))
    ax = fig.axes[0]
    assert "truth vs truth grown by one in-plane voxel" in [t.get_text() for t in ax.get_legend().get_texts()]
    grey = [c for c in ax.collections if np.allclose(c.get_offsets()[:, 0], 0.8) and len(c.get_offsets()) == 1]
    assert len(grey) == 35                            # one reference tick per muscle, at its margin Dice
    plt.close(fig)


def test_volume_msd_figure_three_panels():
    rows = _rows()
    fig = figures.volume_msd_figure(rows, evaluation.volume_msd_summary(rows))
    assert len(fig.axes) == 3
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "69 pairs" in texts and "1 NaN not shown" in texts
    plt.close(fig)


def test_figures_of_a_cohort_lacking_muscles_show_the_muscles_present_and_name_the_others(tmp_path):
    """Seven thigh muscles: Table 1's figure has seven rows, Figure 6 and it name the 28 absent muscles."""
    from llseg import io

    keep = ("adductor_longus", "gracilis", "rectus_femoris", "sartorius", "vastus_intermedius", "vastus_lateralis",
            "vastus_medialis")
    rows = [r for r in _rows() if r["muscle"] in keep]
    table = evaluation.table1(rows)
    fig = figures.dice_figure(rows, table)
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert names == [anatomy.muscle(k).name for k in keep]
    caption = next(t.get_text() for t in fig.texts if t.get_gid() == "absent_muscles")
    assert caption.startswith("Absent from this cohort's test labels (not scored), 28 of 35 muscles: Adductor brevis")
    io.save_figure(fig, tmp_path / "t")
    fig = figures.volume_msd_figure(rows, evaluation.volume_msd_summary(rows))
    assert "28 of 35 muscles" in next(t.get_text() for t in fig.texts if t.get_gid() == "absent_muscles")
    plt.close(fig)
    full = figures.volume_msd_figure(_rows(), evaluation.volume_msd_summary(_rows()))
    assert not [t for t in full.texts if t.get_gid() == "absent_muscles"]      # the whole-leg figure as before
    plt.close(full)


def test_contour_and_rendering_figures(two_leg_case):
    image, labels, _ = two_leg_case
    pred = np.roll(labels, 1, axis=0)
    fig = figures.contour_slices_figure(image, pred, labels, spacing_mm=(2, 2, 5), levels_z=[4, 6], titles=["a", "b"])
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="levels_z"):
        figures.contour_slices_figure(image, pred, labels, spacing_mm=(2, 2, 5), levels_z=[12])
    fig = figures.rendering_figure(labels, spacing_mm=(2, 2, 5), size_px=200)
    assert len(fig.axes) == 2 and fig.axes[0].images[0].get_array().shape[2] == 4
    plt.close(fig)
    empty = figures.rendering_figure(np.zeros_like(labels), spacing_mm=(2, 2, 5))
    assert "no muscle region" in empty.axes[0].texts[0].get_text()
    plt.close(empty)


def test_bias_correction_figure_windows_each_pair_on_the_muscle():
    """Figure 3: a field whose scale differs from the image's does not saturate the 'with N4' row;
    the without/with panels of a column share one window."""
    rng = np.random.default_rng(0)
    muscle = np.zeros((24, 20, 8), bool)
    muscle[4:20, 4:16, 1:7] = True
    gradient = np.linspace(0.6, 1.4, 24)[:, None, None] * np.ones((24, 20, 8))
    raw = np.where(muscle, 100.0 * gradient * (1 + 0.02 * rng.standard_normal(muscle.shape)), 0.0)
    bias = 0.25 * gradient                                   # corrected = raw / bias: about 400, flat
    fig = figures.bias_correction_figure(raw, bias, spacing_mm=(2.0, 2.0, 10.0), levels_z=[3], coronal_y=10,
                                         mask=muscle)
    axes = np.array(fig.axes[:6]).reshape(3, 2)
    for c in range(2):
        without, with_n4 = (axes[r, c].images[0] for r in (0, 1))
        assert without.get_clim() == with_n4.get_clim()
        lo, hi = with_n4.get_clim()
        shown = np.asarray(with_n4.get_array())
        inside = shown[shown > 0.5 * lo] if lo > 0 else shown[shown > 0]
        assert np.mean(inside >= hi) < 0.05                  # not saturated white
        assert np.ptp(np.asarray(without.get_array())[np.asarray(without.get_array()) > 0]) > \
            np.ptp(inside)                                   # N4 flattened the gradient
    plt.close(fig)
