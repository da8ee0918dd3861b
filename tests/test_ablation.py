"""Tests for llseg.study.ablation: the variant table, the shared input size, training one variant
(tiny cohort, 2 iterations), the dvclive curve collector, the summary / metrics / figure, and
the `llseg train-variant` command on the smoke study."""
import json
import math
import os
import re

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import cli, io  # noqa: E402
from llseg.study import ablation, ablation_results  # noqa: E402
from _oracles import unet_param_count  # noqa: E402

BASE = {"arch": "unet", "levels": 3, "root_filters": 16, "block": "plain", "panel": ["a", "b", "c"]}


def _variant(**changes):
    return {**BASE, **changes}


def _write_tsv(root, variant, text):
    path = root / variant / "plots" / "metrics" / "val" / "dice.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- variant table


def test_variant_table_normalises():
    table = ablation.variant_table({"baseline": _variant(panel=["c", "a", "b", "a"]),
                                    "fcn": _variant(arch="fcn8s", levels=5, panel="d")}, divisor=16)
    assert list(table) == ["baseline", "fcn"]
    assert table["baseline"]["panel"] == ("a", "b", "c")          # sorted, duplicates dropped
    assert ablation.variant_table({"b": _variant(panel="c,a")})["b"]["panel"] == ("a", "c")   # as in the records
    assert table["fcn"] == {"arch": "fcn8s", "levels": 5, "root_filters": 16, "block": "plain", "panel": ("d",)}


@pytest.mark.parametrize("spec, message", [
    (_variant(arch="vnet"), "unknown arch 'vnet'"),
    (_variant(block="inception"), "unknown block 'inception'"),
    (_variant(arch="segnet", block="residual"), "block 'residual' needs arch 'unet'"),
    (_variant(arch="fcn8s", levels=2), "needs levels >= 3"),
    (_variant(levels=0), "levels must be a positive int, got 0"),
    (_variant(root_filters=True), "root_filters must be a positive int, got True"),
    (_variant(root_filters=8.0), "root_filters must be a positive int, got 8.0"),
    (_variant(panel="e"), "panels among ('a', 'b', 'c', 'd'), got 'e'"),
    (_variant(panel=[]), "panels among"),
    ({k: v for k, v in BASE.items() if k != "block"}, "missing key(s) ['block']"),
    (_variant(depth=2), "unknown key(s) ['depth']"),
    ("unet", "expected a mapping"),
])
def test_variant_table_rejects_bad_variants_naming_them(spec, message):
    with pytest.raises(ValueError) as err:
        ablation.variant_table({"ok": BASE, "bad_one": spec})
    assert "'bad_one'" in str(err.value) and message in str(err.value)


def test_variant_table_rejects_bad_tables():
    with pytest.raises(ValueError, match="non-empty mapping"):
        ablation.variant_table({})
    for bad_name in ("a/b", "..", ""):
        with pytest.raises(ValueError, match="names files"):
            ablation.variant_table({bad_name: BASE})
    with pytest.raises(ValueError, match="divisible by 16, which does not divide the shared divisor 8"):
        ablation.variant_table({"deep": _variant(levels=5)}, divisor=8)
    with pytest.raises(ValueError, match="divisor must be a positive int"):
        ablation.variant_table({"b": BASE}, divisor=0)


def test_params_yaml_ablation_section_is_valid():
    p = cli.load_params(cli.Path(__file__).resolve().parents[1] / "params.yaml")["ablation"]
    table = ablation.variant_table(p["variants"], divisor=p["divisor"])
    assert {panel for spec in table.values() for panel in spec["panel"]} == set(ablation.PANELS)
    five = [spec["arch"] for spec in table.values() if "d" in spec["panel"]]
    assert sorted(five) == ["fcn8s", "segnet", "unet"]
    assert all(spec["levels"] == 5 for spec in table.values() if "d" in spec["panel"])   # paper: five levels


# --------------------------------------------------------------------------- input size


def test_input_size_known_answer_and_absent_muscle(two_leg_case):
    _, labels, _ = two_leg_case                                  # adductor longus boxes 6 x 8 x 8, both sides
    # mean box (6, 8, 8) x mean ratio 1.4 = (8.4, 11.2, 11.2) -> nearest multiples of 4
    assert ablation.input_size([labels], "adductor_longus", max_voxels=10**6, divisor=4) == (8, 12, 12)
    assert ablation.input_size([labels], "adductor_longus", max_voxels=10**6, divisor=4,
                               ratio_range=(1.0, 1.0)) == (8, 8, 8)
    with pytest.raises(ValueError, match="'gracilis' is absent from all 1 label maps"):
        ablation.input_size([labels], "gracilis", max_voxels=4096, divisor=4)


# --------------------------------------------------------------------------- training


def test_train_variant_two_iterations_logs_curves(two_leg_case, tmp_path):
    from dvclive import Live

    image, labels, _ = two_leg_case
    spec = ablation.variant_table({"residual": _variant(block="residual", root_filters=4, panel="c")})["residual"]
    with Live(dir=str(tmp_path / "residual"), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        model, history = ablation.train_variant(
            [image, image], [labels, labels], "adductor_longus", spec, test_images=[image], test_labels=[labels],
            size=(8, 12, 12), iterations=2, learning_rate=0.003, seed=0, validate_every=1, live=live)
    assert model.name == "unet3d_residual_l3_f4"
    assert any(layer.name.endswith("_add") for layer in model.layers)           # residual shortcuts
    assert model.input_shape == (None, 8, 12, 12, 1) and model.output_shape == (None, 8, 12, 12, 2)
    assert history["n_params"] == model.count_params() == unet_param_count(1, 2, levels=3, root_filters=4,
                                                                                   block="residual")
    assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["loss"])
    assert [step for step, _ in history["val_dice"]] == [1, 2]
    assert all(0.0 <= dice <= 1.0 for _, dice in history["val_dice"])
    curves = ablation_results.read_curves(tmp_path, {"residual": {**spec, "panel": ["c"]}})
    assert [(r["panel"], r["step"]) for r in curves] == [("c", 1), ("c", 2)]
    assert [r["dice"] for r in curves] == pytest.approx([d for _, d in history["val_dice"]])
    # The end-of-training Dice per held-out crop (the units the claims resample) average to the last point.
    assert [(c["case"], c["side"]) for c in history["final_crop_dice"]] == [(0, "right"), (0, "left")]
    assert np.mean([c["dice"] for c in history["final_crop_dice"]]) == pytest.approx(history["val_dice"][-1][1])


def test_train_variant_segnet_and_bad_size(two_leg_case):
    image, labels, _ = two_leg_case
    spec = {"arch": "segnet", "levels": 3, "root_filters": 4, "block": "plain", "panel": "d"}
    model, history = ablation.train_variant([image], [labels], "adductor_longus", spec, test_images=[image],
                                            test_labels=[labels], size=(8, 12, 12), iterations=2,
                                            learning_rate=0.003, seed=0, validate_every=5)
    assert model.name == "segnet3d_l3_f4" and not any("cat" in layer.name for layer in model.layers)  # no skips
    assert [step for step, _ in history["val_dice"]] == [2]                     # validated after the last one
    with pytest.raises(ValueError, match="multiples of 4"):
        ablation.train_variant([image], [labels], "adductor_longus", spec, test_images=[image], test_labels=[labels],
                               size=(8, 10, 12), iterations=1, learning_rate=0.003, seed=0, validate_every=1)


# --------------------------------------------------------------------------- curves and summary


def _table():
    return {"baseline": BASE, "dense": _variant(block="dense", panel="c"),
            "segnet_5": _variant(arch="segnet", levels=5, panel="d")}


def _runs():
    return {"baseline": {"n_params": 340226, "seconds": 30.0, "arch": "unet", "levels": 3, "iterations": 6},
            "dense": {"n_params": 204802, "seconds": 28.5},
            "segnet_5": {"n_params": 3537426, "seconds": 41.0}}


@pytest.fixture
def hand_curves(tmp_path):
    _write_tsv(tmp_path, "baseline", "step\tdice\n4\t0.6\n2\t0.4\n6\t0.7\n")    # unsorted on purpose
    _write_tsv(tmp_path, "dense", "step\tdice\n2\t0.2\n4\t0.3\n6\t0.5\n")
    _write_tsv(tmp_path, "segnet_5", "step\tdice\n6\tnan\n")                   # one undefined validation
    return tmp_path


def test_read_curves_tidy_rows(hand_curves):
    rows = ablation_results.read_curves(hand_curves, _table())
    base = [(r["panel"], r["step"], r["dice"]) for r in rows if r["variant"] == "baseline"]
    assert base == [(p, s, d) for p in "abc" for s, d in ((2, 0.4), (4, 0.6), (6, 0.7))]   # once per panel, sorted
    assert [(r["panel"], r["step"]) for r in rows if r["variant"] == "dense"] == [("c", 2), ("c", 4), ("c", 6)]
    assert len(rows) == 9 + 3 + 1 and math.isnan(rows[-1]["dice"])
    assert set(rows[0]) == {"variant", "panel", "step", "dice"}


def test_read_curves_errors(hand_curves):
    with pytest.raises(FileNotFoundError, match="no validation curve for variant 'extra'"):
        ablation_results.read_curves(hand_curves, {**_table(), "extra": BASE})
    _write_tsv(hand_curves, "dense", "step\tloss\n2\t0.2\n")
    with pytest.raises(ValueError, match="expected tab-separated columns 'step' and 'dice'"):
        ablation_results.read_curves(hand_curves, _table())
    _write_tsv(hand_curves, "dense", "step\tdice\n2\tabc\n")
    with pytest.raises(ValueError, match="non-numeric"):
        ablation_results.read_curves(hand_curves, _table())


def test_read_runs(tmp_path):
    io.write_json(tmp_path / "baseline.json", {"n_params": 1, "seconds": 2.0})
    assert ablation_results.read_runs(tmp_path, {"baseline": BASE}) == {"baseline": {"n_params": 1, "seconds": 2.0}}
    with pytest.raises(FileNotFoundError, match="no training record for variant 'dense'"):
        ablation_results.read_runs(tmp_path, {"baseline": BASE, "dense": _variant(block="dense")})


def test_summarize_known_answers(hand_curves):
    summary = ablation_results.summarize(ablation_results.read_curves(hand_curves, _table()), _table(), _runs(),
                                 settings={"iterations": 6})
    by = {r["variant"]: r for r in summary}
    assert [r["variant"] for r in summary] == ["baseline", "dense", "segnet_5"]
    assert by["baseline"]["final_dice"] == pytest.approx(0.65) and by["baseline"]["best_dice"] == 0.7
    assert by["baseline"]["panel"] == "a,b,c" and by["dense"]["panel"] == "c"
    assert (by["baseline"]["n_validations"], by["baseline"]["last_step"]) == (3, 6)   # not tripled by the panels
    assert by["dense"]["final_dice"] == pytest.approx(0.4) and by["dense"]["n_params"] == 204802
    assert math.isnan(by["segnet_5"]["final_dice"]) and math.isnan(by["segnet_5"]["best_dice"])
    assert by["baseline"]["early_dice"] == pytest.approx(0.4) and by["dense"]["early_dice"] == pytest.approx(0.2)
    assert math.isnan(by["segnet_5"]["early_dice"])              # first validation only, and it is undefined
    long = [{"variant": "dense", "panel": "c", "step": s, "dice": s / 100} for s in range(25, 301, 25)]
    (row,) = ablation_results.summarize(long, {"dense": _table()["dense"]}, _runs())
    assert row["early_dice"] == pytest.approx(0.5)                  # mean of steps 25, 50, 75 (<= 300 / 4)
    one = ablation_results.summarize([{"variant": "dense", "panel": "c", "step": 2, "dice": 0.3}], {"dense": _table()["dense"]},
                             _runs(), n_last=2)
    assert one[0]["final_dice"] == 0.3                           # fewer validations than n_last: their mean


def test_summarize_rejects_missing_and_stale_runs(hand_curves):
    curves = ablation_results.read_curves(hand_curves, _table())
    with pytest.raises(ValueError, match="'dense' has no training record"):
        ablation_results.summarize(curves, _table(), {k: v for k, v in _runs().items() if k != "dense"})
    with pytest.raises(ValueError, match=r"'baseline'.*other settings.*'levels': \(4, 3\)"):
        ablation_results.summarize(curves, _table(), {**_runs(), "baseline": {**_runs()["baseline"], "levels": 4}})
    with pytest.raises(ValueError, match=r"'iterations': \(6, 300\)"):
        ablation_results.summarize(curves, _table(), _runs(), settings={"iterations": 300})
    with pytest.raises(ValueError, match=r"lacks \['seconds'\]"):
        ablation_results.summarize(curves, _table(), {**_runs(), "dense": {"n_params": 3}})


def test_metrics_markdown_panels_and_figure(hand_curves):
    curves = ablation_results.read_curves(hand_curves, _table())
    summary = ablation_results.summarize(curves, _table(), _runs())
    m = ablation_results.ablation_metrics(summary, muscle="Adductor brevis", iterations=6)
    assert set(m) == {"variants", "muscle", "iterations"} and (m["muscle"], m["iterations"]) == ("adductor_brevis", 6)
    assert set(m["variants"]["dense"]) == {"panel", "arch", "levels", "root_filters", "block", "final_dice",
                                           "best_dice", "early_dice", "n_params", "seconds"}
    assert m["variants"]["baseline"]["panel"] == ["a", "b", "c"] and m["variants"]["segnet_5"]["panel"] == ["d"]
    assert m["variants"]["segnet_5"]["final_dice"] is None                   # NaN -> null
    json.dumps(m, allow_nan=False)                                           # strict JSON
    md = ablation_results.summary_markdown(summary)
    assert len(md.splitlines()) == 2 + 3 and re.search(r"\| baseline +\| a,b,c +\|", md)
    assert "340,226" in md and "n/a" in md                                    # NaN Dice shown as n/a
    panels = {p["panel"]: p for p in ablation_results.panel_summary(summary)}
    assert set(panels) == {"a", "b", "c", "d"}
    assert panels["c"]["ranking"] == "baseline 0.650 > dense 0.400" and panels["c"]["spread"] == pytest.approx(0.25)
    assert math.isnan(panels["d"]["spread"])
    fig = ablation_results.ablation_figure(curves, summary, title="test")
    axes = fig.axes
    assert [len(ax.get_lines()) for ax in axes] == [1, 1, 2, 1]
    assert axes[2].get_title(loc="left") == "(c) convolution block"
    assert "340 k params" in axes[0].get_legend().get_texts()[0].get_text()
    empty = ablation_results.ablation_figure(curves, [r for r in summary if r["variant"] == "dense"])
    assert any("no variant in this panel" in t.get_text() for t in empty.axes[0].texts)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_metrics_carry_the_per_crop_dice_of_the_records(hand_curves):
    summary = ablation_results.summarize(ablation_results.read_curves(hand_curves, _table()), _table(), _runs())
    crops = [{"case": "phantom_003", "side": "right", "dice": 0.7}, {"case": "phantom_003", "side": "left",
                                                                      "dice": math.nan}]
    runs = {**_runs(), "baseline": {**_runs()["baseline"], "final_crop_dice": crops}}
    m = ablation_results.ablation_metrics(summary, muscle="adductor_brevis", iterations=6, runs=runs)
    assert m["variants"]["baseline"]["final_crop_dice"] == [{"case": "phantom_003", "side": "right", "dice": 0.7},
                                                            {"case": "phantom_003", "side": "left", "dice": None}]
    assert "final_crop_dice" not in m["variants"]["dense"]                   # an older record: no per-crop Dice
    json.dumps(m, allow_nan=False)
    bad = {**runs, "dense": {**_runs()["dense"], "final_crop_dice": [{"case": "x", "side": "both", "dice": 0.5}]}}
    with pytest.raises(ValueError, match=r"'dense': final_crop_dice\[0\]"):
        ablation_results.ablation_metrics(summary, muscle="adductor_brevis", iterations=6, runs=bad)


# --------------------------------------------------------------------------- command


def test_cli_train_variant_on_smoke_study(smoke_study, tmp_path, capsys):
    params = str(smoke_study / "params.yaml")
    out = tmp_path / "models" / "baseline.json"
    assert cli.main(["train-variant", "--variant", "baseline", "--params", params, "--preprocessed",
                     str(smoke_study / "work" / "preprocessed"), "--live", str(tmp_path / "live"),
                     "--out", str(out), "-q"]) == 0
    assert "variant baseline (unet, 3 levels, 16 root filters, plain" in capsys.readouterr().out
    record = io.read_json(out)
    assert (record["variant"], record["muscle"], record["panel"], record["iterations"]) == \
        ("baseline", "adductor_brevis", ["a", "b", "c"], 2)
    assert record["input_size"] == [16, 16, 16]                 # smoke budget 4096 = 16^3, divisor 16
    assert record["n_params"] == unet_param_count(1, 2, levels=3, root_filters=16)
    assert [s for s, _ in record["val_dice"]] == [1, 2] and record["seconds"] > 0
    assert not list(out.parent.glob("*.keras"))                 # the ablation keeps no model file
    assert (tmp_path / "live" / "baseline" / "metrics.json").exists()
    curves = ablation_results.read_curves(tmp_path / "live", {"baseline": BASE})
    assert [r["step"] for r in curves if r["panel"] == "a"] == [1, 2]


def test_cli_train_variant_errors(smoke_study, tmp_path, capsys):
    params = str(smoke_study / "params.yaml")
    assert cli.main(["train-variant", "--variant", "vgg", "--params", params, "--out", str(tmp_path / "v.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llseg train-variant: error: ") and "no variant 'vgg' in ablation.variants" in err
    assert cli.main(["train-variant", "--variant", "baseline", "--params", params,
                     "--out", str(tmp_path / "v.keras")]) == 1
    assert "must be a .json file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train-variant", "--help"])
    assert "example:\n  llseg train-variant --variant residual" in capsys.readouterr().out
