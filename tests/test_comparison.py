"""Figure 4 comparison (llseg.study.comparison): variants, roughness, tables, figures, notebook defaults."""
import json
import math
import os
import warnings
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # before anything imports TensorFlow

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from llseg import boxes, metrics, models, stage2, train  # noqa: E402
from llseg.study import comparison  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RIGHT, LEFT = 2, 37          # adductor longus (the two_leg_case fixture)


@pytest.fixture(scope="module")
def case():
    """24 x 16 x 12 image (1 inside the muscles, 0 outside), label map, a shifted 'stage-1' label map."""
    labels = np.zeros((24, 16, 12), np.uint8)
    labels[14:20, 4:12, 2:10] = RIGHT
    labels[4:10, 4:12, 2:10] = LEFT
    image = (labels > 0).astype(np.float32)
    stage1 = np.roll(labels, 1, axis=0)
    stage1_boxes = {lab: boxes.bounding_box(stage1 == lab) for lab in (RIGHT, LEFT)}
    return image, labels, stage1, stage1_boxes


@pytest.fixture(scope="module")
def oracle():
    """A 'network' that outputs the ground truth of ``case``: p(muscle) = sigmoid(20 (x - 0.5))."""
    import keras

    inp = keras.Input((None, None, None, 1))
    conv = keras.layers.Conv3D(2, 1, name="logits")
    out = keras.layers.Softmax()(conv(inp))
    model = keras.Model(inp, out)
    conv.set_weights([np.array([0.0, 20.0], np.float32).reshape(1, 1, 1, 1, 2), np.array([0.0, -10.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def unet():
    """An untrained tiny stage-2 U-Net with a fixed (8, 8, 4) input."""
    import keras

    keras.utils.set_random_seed(0)
    return models.build_model("unet", (8, 8, 4, 1), 2, levels=2, root_filters=2)


# --------------------------------------------------------------------------- roughness


def test_roughness_of_convex_shapes_is_one():
    square = np.zeros((12, 12, 5), bool)
    square[3:9, 2:10, 1:4] = True                       # a filled rectangle on three slices
    assert comparison.roughness(square) == pytest.approx(1.0, abs=1e-12)
    one = np.zeros((5, 5, 3), bool)
    one[2, 2, 1] = True                                 # one voxel: a diamond-shaped contour, convex
    assert comparison.roughness(one) == pytest.approx(1.0, abs=1e-12)
    bar = np.zeros((12, 12, 1), bool)
    bar[5, 3:9] = True                                  # one pixel thick: still convex
    assert comparison.roughness(bar) == pytest.approx(1.0, abs=1e-12)
    yy, xx = np.mgrid[:40, :40]
    disk = (((yy - 20) ** 2 + (xx - 20) ** 2) <= 15 ** 2)[:, :, None]
    assert 1.0 < comparison.roughness(disk) < 1.1      # only the pixel steps of a digital circle
    edge = np.ones((6, 6, 2), np.uint8)                 # touching the array border: still 1 (padded)
    assert comparison.roughness(edge) == pytest.approx(1.0, abs=1e-12)
    two = np.zeros((20, 20, 1), bool)
    two[2:6, 2:6] = two[12:18, 10:18] = True            # two convex pieces, each with its own hull
    assert comparison.roughness(two) == pytest.approx(1.0, abs=1e-12)
    # Anisotropic voxels do not matter (pixel units, per axial slice); thicker slices neither.
    assert comparison.roughness(np.repeat(square, 3, axis=2)) == pytest.approx(1.0, abs=1e-12)


def test_roughness_of_comb_and_star_is_above_one_and_empty_is_nan():
    comb = np.zeros((20, 20, 2), bool)
    comb[3:5, 3:17] = True
    comb[3:17, 3:17:2] = True                           # 7 teeth
    assert comparison.roughness(comb) > 3
    blocks = np.zeros((20, 20, 1), bool)
    blocks[2:6, 2:6] = blocks[6:10, 6:10] = blocks[10:14, 2:6] = True   # a staircase of 4 x 4 blocks (stage 1)
    assert comparison.roughness(blocks) > 1.2
    ring = np.zeros((12, 12, 1), bool)
    ring[2:10, 2:10] = True
    ring[4:8, 4:8] = False                              # a hole's contour counts too
    assert comparison.roughness(ring) > 1.4
    yy, xx = np.mgrid[-20:21, -20:21]
    angle, radius = np.arctan2(yy, xx), np.hypot(yy, xx)
    star = (radius <= 8 + 8 * np.cos(5 * angle) ** 2)[:, :, None]
    assert comparison.roughness(star) > 1.1
    # Mean over slices: one convex slice (1.0) and one comb slice (r) give (1 + r) / 2.
    mixed = np.zeros((20, 20, 2), bool)
    mixed[..., 0] = comb[..., 0]
    mixed[5:10, 5:10, 1] = True
    assert comparison.roughness(mixed) == pytest.approx((1 + comparison.roughness(comb[..., :1])) / 2)
    assert math.isnan(comparison.roughness(np.zeros((4, 4, 4), bool)))
    with pytest.raises(TypeError, match="dtype float"):
        comparison.roughness(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="3-D"):
        comparison.roughness(np.zeros((4, 4), bool))


# --------------------------------------------------------------------------- variants


def test_variants_shapes_and_stage1_region(case, unet):
    image, labels, stage1, s1_boxes = case
    masks = comparison.region_variants(unet, image, labels, stage1, muscle="adductor_longus", side="right",
                                       stage1_box=s1_boxes[RIGHT], n_tta_boxes=2)
    assert list(masks) == list(comparison.VARIANTS)
    for mask in masks.values():
        assert mask.shape == image.shape and mask.dtype == bool
    np.testing.assert_array_equal(masks["stage1"], stage1 == RIGHT)


def test_tta_variant_is_the_mean_of_its_boxes(case, unet):
    image, labels, _, s1_boxes = case
    box, size = s1_boxes[LEFT], (8, 8, 4)
    probs = comparison.region_probabilities(unet, image, labels, muscle="adductor_longus", side="left",
                                            stage1_box=box, n_tta_boxes=3, ratio_range=(1.0, 1.8), seed=5)
    slices, prob = probs["stage2_tta"]
    ref_slices, ref = stage2.predict_region(unet, image, box, size=size, mirror=True, n_boxes=3,
                                            ratio_range=(1.0, 1.8), seed=5)
    assert slices == ref_slices
    np.testing.assert_array_equal(prob, ref)
    # By hand: each of the three boxes through the network, put back, averaged (0 outside a box).
    total = np.zeros(image.shape, np.float32)
    tta = boxes.tta_boxes(box, n=3, ratio_range=(1.0, 1.8), seed=5, shape=image.shape)
    assert len({tuple(b.ravel()) for b in tta}) > 1, "the test needs different boxes"
    for b in tta:
        fg = 1.0 - train.predict_proba(unet, stage2.crop_to_input(image, b, size, mirror=True))[..., 0]
        total[boxes.box_slices(b)] += stage2.probs_from_input(fg, b, mirror=True)
    full = np.zeros(image.shape, np.float32)
    full[slices] = prob
    np.testing.assert_allclose(full, total / 3, atol=1e-6)
    # A single-ratio variant is one crop of the stage-1 box enlarged by that ratio on every edge.
    low_slices, _ = probs["stage2_box_ratio_low"]
    assert low_slices == boxes.box_slices(boxes.enlarge_box(box, 1.2, 1.2, image.shape))
    masks = comparison.region_variants(unet, image, labels, case[2], muscle="adductor_longus", side="left",
                                       stage1_box=box, n_tta_boxes=3, seed=5, threshold=0.5)
    np.testing.assert_array_equal(masks["stage2_tta"], full >= 0.5)
    # The boxes drawn in the figure are the boxes cropped.
    drawn = comparison.variant_boxes(labels, muscle="adductor_longus", side="left", stage1_box=box, n_tta_boxes=3,
                                     seed=5)
    assert [b.tolist() for b in drawn["stage2_tta"]] == [b.tolist() for b in tta]
    assert boxes.box_slices(drawn["stage2_box_ratio_low"][0]) == low_slices
    assert drawn["stage1"][0].tolist() == box.tolist()
    assert boxes.box_slices(drawn["stage2_gt_box"][0]) == probs["stage2_gt_box"][0]
    assert comparison.variant_boxes(labels, muscle="adductor_longus", side="left", stage1_box=None)["stage2_tta"] == []


@pytest.mark.parametrize("side, label", [("right", RIGHT), ("left", LEFT)])
def test_gt_box_variant_of_a_perfect_model_has_dice_one(case, oracle, side, label):
    image, labels, stage1, s1_boxes = case
    gt_box = boxes.enlarge_box(boxes.bounding_box(labels == label), 1.4, 1.4, labels.shape)
    size = tuple(boxes.box_size(gt_box))                  # no resampling: the crop is the input
    masks = comparison.region_variants(oracle, image, labels, stage1, muscle="adductor_longus", side=side,
                                       stage1_box=s1_boxes[label], size=size, gt_ratio=1.4, n_tta_boxes=2)
    assert metrics.dice(masks["stage2_gt_box"], labels == label) == 1.0
    assert metrics.dice(masks["stage1"], labels == label) < 1.0
    # ratio 1.0 = the tight box itself
    tight = comparison.region_variants(oracle, image, labels, stage1, muscle="adductor_longus", side=side,
                                       stage1_box=s1_boxes[label], size=(6, 8, 8), gt_ratio=1.0, n_tta_boxes=1)
    assert metrics.dice(tight["stage2_gt_box"], labels == label) == 1.0


def test_missing_boxes_give_empty_variants(case, unet):
    image, labels, stage1, _ = case
    no_truth = labels.copy()
    no_truth[no_truth == RIGHT] = 0
    masks = comparison.region_variants(unet, image, no_truth, stage1, muscle="adductor_longus", side="right",
                                       stage1_box=None)
    assert not any(masks[v].any() for v in comparison.VARIANTS[1:])
    with pytest.raises(ValueError, match="threshold"):
        comparison.region_variants(unet, image, labels, stage1, muscle="adductor_longus", side="right",
                                   stage1_box=None, threshold=0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        comparison.region_variants(unet, image, labels, stage1[:-1], muscle="adductor_longus", side="right",
                                   stage1_box=None)


def test_clean_keeps_one_component(case, oracle):
    image, labels, stage1, s1_boxes = case
    noisy = stage1.copy()
    noisy[0, 0, 0] = RIGHT                               # a stray stage-1 voxel far from the muscle
    raw = comparison.region_variants(oracle, image, labels, noisy, muscle="adductor_longus", side="right",
                                     stage1_box=s1_boxes[RIGHT], size=(8, 8, 8), n_tta_boxes=1)
    clean = comparison.region_variants(oracle, image, labels, noisy, muscle="adductor_longus", side="right",
                                       stage1_box=s1_boxes[RIGHT], size=(8, 8, 8), n_tta_boxes=1, clean=True)
    assert raw["stage1"][0, 0, 0] and not clean["stage1"][0, 0, 0]


# --------------------------------------------------------------------------- tables


def test_compare_cases_rows_and_summary(case, oracle):
    image, labels, stage1, s1_boxes = case
    s1_missing = {RIGHT: s1_boxes[RIGHT]}                 # stage 1 found no box for the left side
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # no EmptyMaskWarning: both regions exist
        rows = comparison.compare_cases(["a", "b"], [image, image], [labels, labels], [stage1, stage1],
                                        [s1_boxes, s1_missing], {"adductor_longus": oracle}, estimated=[[LEFT], []],
                                        muscles=["adductor_longus"], sizes_by_key={"adductor_longus": (10, 12, 12)},
                                        n_tta_boxes=2)
    assert len(rows) == 2 * 2 * 5
    assert set(rows[0]) == {"case", "muscle", "side", "label", "box_source", "variant", "dice", "roughness",
                            "n_voxels"}
    sources = {(r["case"], r["side"]): r["box_source"] for r in rows}
    assert sources == {("a", "right"): "stage1", ("a", "left"): "priors", ("b", "right"): "stage1",
                       ("b", "left"): "none"}
    assert all(r["dice"] == 1.0 for r in rows if r["variant"] == "stage2_gt_box")
    lost = [r for r in rows if r["case"] == "b" and r["side"] == "left" and r["variant"] not in
            ("stage1", "stage2_gt_box")]
    assert len(lost) == 3 and all(r["dice"] == 0.0 and math.isnan(r["roughness"]) and r["n_voxels"] == 0
                                  for r in lost)
    s = comparison.summarize(rows)
    assert set(s) == {"mean_dice", "mean_roughness", "n_cases", "n_regions"}
    assert (s["n_cases"], s["n_regions"]) == (2, 2)
    assert set(s["mean_dice"]) == set(s["mean_roughness"]) == set(comparison.VARIANTS)
    tta = [r["dice"] for r in rows if r["variant"] == "stage2_tta"]
    assert s["mean_dice"]["stage2_tta"] == pytest.approx(np.mean(tta))       # zeros count in the Dice mean
    rough = [r["roughness"] for r in rows if r["variant"] == "stage2_tta" and not math.isnan(r["roughness"])]
    assert len(rough) == 3 and s["mean_roughness"]["stage2_tta"] == pytest.approx(np.mean(rough))  # NaN skipped
    assert comparison.summarize(rows, box_source="none")["mean_dice"]["stage2_tta"] == 0.0
    assert comparison.summarize(rows, box_source="priors")["n_cases"] == 1
    paired = comparison.summarize(rows, paired=True)                          # the region without a box is out
    assert paired["n_paired"] == {"dice": 4, "roughness": 3}
    assert paired["mean_roughness"]["stage2_tta"] == pytest.approx(np.mean(rough))
    with pytest.raises(ValueError, match="box_source"):
        comparison.summarize(rows, box_source="found")
    table = comparison.summary_table(rows)
    assert [t["variant"] for t in table] == list(comparison.VARIANTS)
    assert table[-1]["n_empty"] == 1 and table[-1]["n_roughness"] == 3 and table[1]["dice_mean"] == 1.0
    with pytest.raises(ValueError, match="2 cases"):
        comparison.compare_cases(["a", "b"], [image], [labels], [stage1], [s1_boxes], {"adductor_longus": oracle})
    with pytest.raises(ValueError, match="no stage-2 model"):
        comparison.compare_case(image, labels, stage1, s1_boxes, {}, muscles=["adductor_longus"])


def test_summarize_all_nan_variant_is_nan():
    rows = [{"case": "a", "label": 1, "variant": v, "dice": 0.0 if v == "stage1" else 0.5,
             "roughness": float("nan"), "n_voxels": 0} for v in comparison.VARIANTS]
    s = comparison.summarize(rows)
    assert s["mean_dice"]["stage1"] == 0.0 and s["mean_dice"]["stage2_tta"] == 0.5
    assert all(math.isnan(v) for v in s["mean_roughness"].values())
    with pytest.raises(ValueError, match="empty"):
        comparison.summarize([])


def test_boxes_from_record():
    got = comparison.boxes_from_record({"boxes": {"2": [[1, 5], [0, 3], [2, 4]], "3": None}, "estimated": {}})
    assert list(got) == [2] and got[2].dtype == np.int64 and got[2].tolist() == [[1, 5], [0, 3], [2, 4]]
    assert comparison.boxes_from_record({"boxes": {}}) == {}
    with pytest.raises(TypeError):
        comparison.boxes_from_record([1, 2])


# --------------------------------------------------------------------------- figures


def test_figures(case, oracle, tmp_path):
    from llseg import io

    image, labels, stage1, s1_boxes = case
    masks = comparison.region_variants(oracle, image, labels, stage1, muscle="adductor_longus", side="right",
                                       stage1_box=s1_boxes[RIGHT], size=(8, 8, 8), n_tta_boxes=2)
    assert comparison.centre_slice(labels == RIGHT) in (5, 6)
    drawn = comparison.variant_boxes(labels, muscle="adductor_longus", side="right", stage1_box=s1_boxes[RIGHT],
                                     n_tta_boxes=2)
    fig = comparison.panel_figure(image, labels == RIGHT, masks, spacing_mm=(2.0, 2.0, 5.0), crop_boxes=drawn)
    assert len(fig.axes) == 5 and "\nDice 0.9" in fig.axes[1].get_title()       # (b): the oracle, resampled crop
    assert len(fig.axes[4].patches) == 2 and len(fig.axes[0].patches) == 1      # 2 TTA boxes; the stage-1 box
    io.save_figure(fig, tmp_path / "panels")
    rows = [{"case": "a", "label": 2, "variant": v, "dice": d, "roughness": r, "n_voxels": 1}
            for v in comparison.VARIANTS for d, r in ((0.5, 1.1), (0.7, float("nan")))]
    fig = comparison.dice_figure(rows, title="t")
    io.save_figure(fig, tmp_path / "dice")
    assert (tmp_path / "panels.png").stat().st_size > 5_000 and (tmp_path / "dice.svg").exists()
    with pytest.raises(ValueError, match="empty"):
        comparison.centre_slice(np.zeros((3, 3, 3), bool))


# --------------------------------------------------------------------------- notebook and stage


def _notebook_parameters() -> dict:
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "02_two_stages.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)                          # the cell holds plain assignments only
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def test_notebook_defaults_equal_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    t, s2, pp = params["two_stages"], params["stage2"], params["postprocess"]
    nb = _notebook_parameters()
    assert (nb["case"], nb["muscle"], nb["side"], nb["gt_ratio"]) == (t["case"], t["muscle"], t["side"], t["gt_ratio"])
    assert nb["ratios"] == [t["ratio_low"], t["ratio_high"]]
    assert nb["ratio_range"] == [s2["ratio_min"], s2["ratio_max"]]
    assert (nb["n_tta_boxes"], nb["tta_seed"], nb["threshold"]) == (s2["n_tta_boxes"], s2["seed"], pp["threshold"])


def test_dvc_stage_passes_every_notebook_parameter():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["two_stages"]
    cmd = stage["cmd"]
    for name in _notebook_parameters():
        assert f"-p {name} " in cmd or f"{name}: " in cmd, f"dvc stage two_stages does not pass {name}"
    assert "notebooks/02_two_stages.ipynb" in stage["deps"] and "llseg/study/comparison.py" in stage["deps"]
    outs = [next(iter(o)) for o in stage["outs"]]
    for stem in ("fig4_two_stages", "fig4_two_stages_dice"):
        assert f"reports/figures/{stem}.png" in outs and f"reports/figures/{stem}.svg" in outs
    assert json.dumps(stage["metrics"]) == json.dumps([{"metrics/two_stages.json": {"cache": False}}])
