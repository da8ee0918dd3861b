"""Every study notebook executes under papermill on the smoke profile and writes what it promises."""
import shutil
from pathlib import Path

import numpy as np
import papermill as pm
import pytest

from llseg import cli, io

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def test_notebooks_have_a_tagged_parameters_cell_and_no_logic():
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert "def " not in cell.source and "class " not in cell.source, f"{path.name}: logic belongs in llseg"
                assert len(cell.source.splitlines()) <= 15, f"{path.name}: cell over 15 lines"


def test_01_bias_correction(smoke_study, tmp_path):
    w = smoke_study
    out = tmp_path / "reports"
    out.mkdir()
    pm.execute_notebook(
        str(NOTEBOOKS / "01_bias_correction.ipynb"), str(out / "01.ipynb"), progress_bar=False,
        parameters=dict(data_dir=str(w / "data"), preprocessed_dir=str(w / "work" / "preprocessed"),
                        figure_dir=str(out / "figures"), metrics_path=str(out / "metrics.json"),
                        plots_path=str(out / "cov.csv")))
    for stem in ("fig3_bias_correction", "bias_correction_cov"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{stem}.svg").exists()
    m = io.read_json(out / "metrics.json")
    assert m["n_cases"] == 4
    assert m["cov_after_mean"] < m["cov_before_mean"], "N4 should make muscle intensity more homogeneous"
    assert (out / "cov.csv").read_text().startswith("case,cov_before,cov_after")


# ----------------------------------------------------------------------------- 04, 05, 06 (evaluation)

@pytest.fixture(scope="session")
def truth_predictions(smoke_study, tmp_path_factory):
    """Predictions in the layout `llseg predict` writes, without training: the final (stage-2) labels
    are the ground truth itself; stage 1 is the truth shifted by one voxel along x with the right
    external rotators (label 6) deleted, so it has imperfect scores and a NaN MSD. Then `llseg evaluate`."""
    import numpy as np

    pre = smoke_study / "work" / "preprocessed"
    out = tmp_path_factory.mktemp("truth_predictions")
    pred = out / "predictions"
    for case in io.read_json(pre / "manifest.json")["split"]["test"]:
        truth = io.load_labels(pre / "labels" / f"{case}.nii.gz")
        stage1 = np.roll(truth.data, 1, axis=0)
        stage1[stage1 == 6] = 0
        io.save_nifti(pred / "study" / f"{case}_stage2.nii.gz", truth.data, truth.affine, dtype=np.uint8)
        io.save_nifti(pred / "study" / f"{case}_stage1.nii.gz", stage1, truth.affine, dtype=np.uint8)
        io.write_json(pred / "study" / f"{case}_boxes.json", {"boxes": {}, "estimated": {}})
        (pred / "labels").mkdir(parents=True, exist_ok=True)  # original space: the truth is the cohort's file
        shutil.copy(smoke_study / "data" / "labels" / f"{case}.nii.gz", pred / "labels" / f"{case}.nii.gz")
    table, metrics = out / "metrics_per_region.csv", out / "evaluation.json"
    assert cli.main(["evaluate", "--preprocessed", str(pre), "--predictions", str(pred), "--table", str(table),
                     "--metrics", str(metrics), "-q"]) == 0
    return {"preprocessed": pre, "predictions": pred, "table": table, "metrics": metrics}


def test_evaluate_with_the_truth_as_prediction(truth_predictions):
    import pandas as pd

    rows = pd.read_csv(truth_predictions["table"])
    final, first = rows[rows.stage == "stage2"], rows[rows.stage == "stage1"]
    assert len(final) == len(first) == 70 * rows.case.nunique()
    assert (final.dice == 1).all() and (final.msd_mm == 0).all() and (final.hd95_mm == 0).all()
    assert (final.volume_error_pct == 0).all()
    assert first.dice.max() < 1 and first.dice.min() == 0
    assert first.msd_mm.isna().sum() == rows.case.nunique()  # label 6 deleted from each case
    m = io.read_json(truth_predictions["metrics"])
    assert m["dice_mean_stage2"] == 1.0 and m["msd_mm_mean"] == 0.0 and m["volume_error_abs_pct_mean"] == 0.0
    assert 0 < m["dice_mean_stage1"] < 1
    assert (m["n_within_interobserver"], m["n_worse_than_interobserver"]) == (35, 0)


def test_04_dice_table(truth_predictions, tmp_path):
    import csv

    out = tmp_path / "reports"
    pm.execute_notebook(
        str(NOTEBOOKS / "04_dice_table.ipynb"), str(tmp_path / "04.ipynb"), progress_bar=False,
        parameters=dict(metrics_table=str(truth_predictions["table"]), stage="stage2",
                        figure_dir=str(out / "figures"), table_dir=str(out / "tables"),
                        metrics_path=str(out / "dice_table.json")))
    assert (out / "figures" / "table1_dice.png").stat().st_size > 10_000
    assert (out / "figures" / "table1_dice.svg").exists()
    table = list(csv.DictReader(open(out / "tables" / "table1_dice.csv")))
    assert len(table) == 35 and all(float(t["dice_mean"]) == 1.0 and t["within_interobserver"] == "True"
                                    for t in table)
    md = (out / "tables" / "table1_dice.md").read_text()
    assert sum(line.startswith("|") for line in md.splitlines()) == 37 and "0.83 ± 0.024" in md
    m = io.read_json(out / "dice_table.json")
    assert (m["n_within"], m["paper_table_within"], m["paper_stated_within"]) == (35, 15, 14)
    assert m["dice_mean_over_muscles"] == 1.0 and m["spearman_vs_paper"] is None  # constant Dice: undefined


def test_05_volume_msd_with_nans(truth_predictions, tmp_path):
    out = tmp_path / "reports"
    pm.execute_notebook(
        str(NOTEBOOKS / "05_volume_msd.ipynb"), str(tmp_path / "05.ipynb"), progress_bar=False,
        parameters=dict(metrics_table=str(truth_predictions["table"]), stage="stage1",
                        figure_dir=str(out / "figures"), table_dir=str(out / "tables"),
                        metrics_path=str(out / "volume_msd.json")))
    assert (out / "figures" / "fig6_volume_msd.png").stat().st_size > 10_000
    assert (out / "figures" / "fig6_volume_msd.svg").exists()
    assert len((out / "tables" / "volume_msd_per_muscle.csv").read_text().splitlines()) == 36
    m = io.read_json(out / "volume_msd.json")
    n_cases = m["n_rows"] // 70
    assert m["n_msd_nan"] == n_cases and m["n_dice_msd_pairs_dropped"] == n_cases  # counted, not dropped silently
    assert m["msd_mm_mean"] > 0 and m["n_msd"] == 69 * n_cases
    assert -1 <= m["dice_msd_pearson_r"] < 0, "a one-voxel shift: lower Dice goes with larger MSD"
    assert m["paper_msd_mm_mean"] == 2.9 and m["paper_volume_error_abs_pct_mean"] == 6.5


def test_06_rendering(truth_predictions, tmp_path):
    out = tmp_path / "figures"
    pm.execute_notebook(
        str(NOTEBOOKS / "06_rendering.ipynb"), str(tmp_path / "06.ipynb"), progress_bar=False,
        parameters=dict(preprocessed_dir=str(truth_predictions["preprocessed"]),
                        predictions_dir=str(truth_predictions["predictions"]), max_faces=800, figure_dir=str(out)))
    for stem in ("fig7_slices", "fig7_rendering"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert (out / f"{stem}.svg").exists()
    import nbformat

    executed = nbformat.read(str(tmp_path / "06.ipynb"), as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "70 of 70 ground-truth regions predicted; missing: none" in text


# ----------------------------------------------------------------------------- a cohort lacking muscles

PARTIAL = ("adductor_longus", "gracilis", "rectus_femoris", "sartorius", "vastus_intermedius", "vastus_lateralis",
           "vastus_medialis")


@pytest.fixture
def partial_study(tmp_path):
    """Two hand-built test cases of a thigh-only cohort (no phantom, no training): seven muscles on both sides
    and semitendinosus on the right only; stage 2 = the truth shifted by one voxel without the left gracilis (a
    miss), stage 1 = the truth shifted by two; then `llseg evaluate`."""
    from llseg import anatomy

    pre, pred = tmp_path / "pre", tmp_path / "pred"
    affine = np.diag([4.0, 4.0, 10.0, 1.0])
    for j, case in enumerate(("a", "b")):
        truth = np.zeros((48, 32, 24), np.uint8)
        for i, k in enumerate(PARTIAL):
            truth[28:40, 4 * i:4 * i + 3, 4:20] = anatomy.label_id(k, "right")
            truth[8:20, 4 * i:4 * i + 3, 4:20] = anatomy.label_id(k, "left")
        truth[40:44, 28:31, 4:20] = anatomy.label_id("semitendinosus", "right")
        stage2 = np.roll(truth, 1, axis=0)
        stage2[stage2 == anatomy.label_id("gracilis", "left")] = 0
        io.save_nifti(pre / "image" / f"{case}.nii.gz", np.where(truth > 0, 0.6, 0.1 + 0.01 * j).astype(np.float32),
                      affine)
        io.save_nifti(pre / "labels" / f"{case}.nii.gz", truth, affine, dtype=np.uint8)
        io.save_nifti(pred / "study" / f"{case}_stage2.nii.gz", stage2, affine, dtype=np.uint8)
        io.save_nifti(pred / "study" / f"{case}_stage1.nii.gz", np.roll(truth, 2, axis=0), affine, dtype=np.uint8)
        found = {str(k): [[int(a.min()), int(a.max()) + 1] for a in np.nonzero(truth == k)]
                 for k in np.unique(truth)[1:]}
        io.write_json(pred / "study" / f"{case}_boxes.json", {"boxes": found, "estimated": {}})
    io.write_json(pre / "manifest.json", {"split": {"train": [], "test": ["a", "b"]}, "spacing_mm": [4, 4, 10]})
    table = tmp_path / "metrics_per_region.csv"
    assert cli.main(["evaluate", "--preprocessed", str(pre), "--predictions", str(pred), "--table", str(table),
                     "--metrics", str(tmp_path / "evaluation.json"), "-q"]) == 0
    return {"preprocessed": pre, "predictions": pred, "table": table}


def _printed(path) -> str:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_notebooks_on_a_cohort_lacking_muscles(partial_study, tmp_path):
    """04, 05, 06 and the walkthrough run on a thigh-only cohort: tables and figures of the eight muscles present,
    the 27 absent ones named; the walkthrough's muscle (soleus) is absent, so it shows a labelled one instead."""
    import csv

    out, table = tmp_path / "reports", str(partial_study["table"])
    for name, params in (("04_dice_table", dict(metrics_path=str(out / "dice_table.json"))),
                         ("05_volume_msd", dict(metrics_path=str(out / "volume_msd.json")))):
        pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"), progress_bar=False,
                            parameters=dict(metrics_table=table, stage="stage2", figure_dir=str(out / "figures"),
                                            table_dir=str(out / "tables"), **params))
    rows = list(csv.DictReader(open(out / "tables" / "table1_dice.csv")))
    assert [r["muscle"] for r in rows] == sorted(PARTIAL + ("semitendinosus",))     # Table-1 order, present only
    absent = "Absent from this cohort's test labels (not scored), 27 of 35 muscles: Adductor brevis, "
    for md in ("table1_dice.md", "volume_msd_per_muscle.md"):
        text = (out / "tables" / md).read_text()
        assert sum(line.startswith("|") for line in text.splitlines()) == 2 + 8 and absent in text
    m = io.read_json(out / "dice_table.json")
    assert m["n_muscles"] == 8 and m["n_muscles_absent"] == 27 and m["n_undetermined"] == 0
    assert io.read_json(out / "volume_msd.json")["n_muscles_absent"] == 27
    assert absent in _printed(tmp_path / "05_volume_msd.ipynb")
    pm.execute_notebook(str(NOTEBOOKS / "06_rendering.ipynb"), str(tmp_path / "06.ipynb"), progress_bar=False,
                        parameters=dict(preprocessed_dir=str(partial_study["preprocessed"]),
                                        predictions_dir=str(partial_study["predictions"]), max_faces=400,
                                        figure_dir=str(out / "figures")))
    assert ("14 of 15 ground-truth regions predicted; missing: Gracilis (left); 55 regions not labelled in the "
            "ground truth") in _printed(tmp_path / "06.ipynb")
    pm.execute_notebook(str(NOTEBOOKS / "00_walkthrough.ipynb"), str(tmp_path / "00.ipynb"), progress_bar=False,
                        parameters=dict(preprocessed_dir=str(partial_study["preprocessed"]),
                                        predictions_dir=str(partial_study["predictions"]), widgets=False,
                                        muscle="soleus", stage1_factor=[2, 2, 1], n_tta_boxes=2,
                                        figure_dir=str(out / "figures")))
    text = _printed(tmp_path / "00.ipynb")
    assert ("15 of 70 regions labelled; not labelled: 27 muscles on both sides, 1 on the left only. Soleus (right) "
            "is not labelled on this case; showing Adductor longus (right) instead.") in text
    assert "Adductor longus (right) on a. Paper, Table 1: Dice 0.94 ± 0.011" in text
    for stem in ("table1_dice", "fig6_volume_msd", "fig7_slices", "fig7_rendering", "walkthrough_muscle"):
        assert (out / "figures" / f"{stem}.png").exists()


# ----------------------------------------------------------------------------- defaults work from notebooks/

def _parameter_defaults(path) -> dict:
    """Name -> literal default of a notebook's ``parameters`` cell."""
    import ast

    import nbformat

    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign)}


def _is_path(name: str, value) -> bool:
    return isinstance(value, str) and (name.endswith(("_dir", "_path", "_table")) or "/" in value)


def test_path_defaults_are_relative_to_notebooks_and_dvc_passes_every_path():
    """JupyterLab (``make lab``) starts kernels in notebooks/, so a default path must start with "../" and
    name the file that the DVC stage passes relative to the folder it runs the notebook in (``--cwd``)."""
    import re

    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        stage = [s for s in stages.values() if f"papermill notebooks/{path.name} " in " ".join(str(s.get("cmd")).split())]
        if len(stage) != 1:
            problems.append(f"{path.name}: expected one dvc.yaml stage running it, found {len(stage)}")
            continue
        cmd = " ".join(stage[0]["cmd"].split())
        passed = dict(re.findall(r'-p (\w+) ("[^"]*"|\S+)', cmd))
        cwd = re.search(r"--cwd (\S+)", cmd)
        if not cwd:
            problems.append(f"{path.name}: dvc.yaml runs it without --cwd (its relative paths would point elsewhere)")
            continue
        run_dir = ROOT / cwd.group(1)
        paths = {k: v for k, v in _parameter_defaults(path).items() if _is_path(k, v)}
        if not paths:
            problems.append(f"{path.name}: no path parameters found")
        for name, default in paths.items():
            if not default.startswith("../"):
                problems.append(f"{path.name}: {name} = {default!r} does not work from notebooks/ (needs '../')")
            elif name not in passed:
                problems.append(f"{path.name}: dvc.yaml does not pass -p {name}")
            elif (run_dir / passed[name]).resolve() != (NOTEBOOKS / default).resolve():
                problems.append(f"{path.name}: {name}: default {default!r}, dvc passes {passed[name]!r}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- 02 (Figure 4)

@pytest.fixture(scope="session")
def two_stage_inputs(smoke_study, tmp_path_factory):
    """What notebook 02 reads besides the preprocessed study, without training: stage-1 outputs in
    `llseg predict`'s layout (the truth shifted by one voxel along x with label 6 deleted; boxes = the
    shifted regions' boxes) and 35 copies of one stand-in stage-2 network: a fixed-input (8, 8, 4)
    per-voxel classifier, p(muscle) = sigmoid(4 x - 2), which Keras loads and traces ~10x faster than
    a U-Net (the notebook loads all 35)."""
    import keras
    import numpy as np

    from llseg import anatomy, boxes

    pre = smoke_study / "work" / "preprocessed"
    out = tmp_path_factory.mktemp("two_stage_inputs")
    for case in io.read_json(pre / "manifest.json")["split"]["test"]:
        truth = io.load_labels(pre / "labels" / f"{case}.nii.gz")
        stage1 = np.roll(truth.data, 1, axis=0)
        stage1[stage1 == 6] = 0
        io.save_nifti(out / "predictions" / "study" / f"{case}_stage1.nii.gz", stage1, truth.affine, dtype=np.uint8)
        found = {lab: boxes.bounding_box(stage1 == lab) for lab in anatomy.REGIONS}
        io.write_json(out / "predictions" / "study" / f"{case}_boxes.json",
                      {"boxes": {str(k): b.tolist() for k, b in found.items() if b is not None}, "estimated": {}})
    inp = keras.Input((8, 8, 4, 1))
    logits = keras.layers.Conv3D(2, 1, name="logits")
    model = keras.Model(inp, keras.layers.Softmax()(logits(inp)))
    logits.set_weights([np.array([0.0, 4.0], np.float32).reshape(1, 1, 1, 1, 2), np.array([0.0, -2.0], np.float32)])
    first = io.save_model(model, out / "models" / "stage2" / f"{anatomy.MUSCLES[0].key}.keras")
    for m in anatomy.MUSCLES[1:]:
        shutil.copy(first, out / "models" / "stage2" / f"{m.key}.keras")
    return {"preprocessed": pre, "predictions": out / "predictions", "models": out / "models"}


def test_02_two_stages(two_stage_inputs, tmp_path):
    import csv
    import math

    out = tmp_path / "reports"
    pm.execute_notebook(
        str(NOTEBOOKS / "02_two_stages.ipynb"), str(tmp_path / "02.ipynb"), progress_bar=False,
        parameters=dict(preprocessed_dir=str(two_stage_inputs["preprocessed"]), models_dir=str(two_stage_inputs["models"]),
                        predictions_dir=str(two_stage_inputs["predictions"]), n_tta_boxes=2,
                        figure_dir=str(out / "figures"), table_dir=str(out / "tables"),
                        metrics_path=str(out / "two_stages.json")))
    for stem in ("fig4_two_stages", "fig4_two_stages_dice"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{stem}.svg").exists()
    m = io.read_json(out / "two_stages.json")
    variants = {"stage1", "stage2_gt_box", "stage2_box_ratio_low", "stage2_box_ratio_high", "stage2_tta"}
    assert set(m) == {"mean_dice", "mean_roughness", "ratios", "n_cases", "n_regions", "muscle", "case", "per_region"}
    per_region = m["per_region"]                     # the claims' bootstrap units: (case, region) per variant
    assert len(per_region["cases"]) == m["n_cases"] and len(per_region["labels"]) == m["n_regions"]
    assert set(per_region["dice"]) == variants
    assert np.nanmean(per_region["dice"]["stage1"]) == pytest.approx(m["mean_dice"]["stage1"])
    assert set(m["mean_dice"]) == set(m["mean_roughness"]) == variants
    assert all(0 <= v <= 1 for v in m["mean_dice"].values())
    assert m["n_regions"] == 70 and m["ratios"] == [1.2, 1.8] and m["muscle"] == "adductor_longus"
    rows = list(csv.DictReader(open(out / "tables" / "two_stages.csv")))
    assert len(rows) == m["n_cases"] * 70 * 5
    stage1 = [float(r["dice"]) for r in rows if r["variant"] == "stage1"]
    assert 0 < sum(stage1) / len(stage1) < 1 and m["mean_dice"]["stage1"] == pytest.approx(sum(stage1) / len(stage1))
    lost = [r for r in rows if r["variant"] == "stage1" and r["label"] == "6"]  # label 6 deleted from stage 1
    assert lost and all(float(r["dice"]) == 0 and math.isnan(float(r["roughness"])) for r in lost)
    assert (out / "tables" / "two_stages.md").read_text().count("\n|") >= 6


# ----------------------------------------------------------------------------- 03 (Figure 5)

@pytest.fixture(scope="session")
def ablation_outputs(smoke_study, tmp_path_factory):
    """Two smoke-profile ablation variants trained by `llseg train-variant` (2 iterations each): the
    baseline (panels a, b, c) and a five-level SegNet (panel d), in a copy of the smoke params.yaml."""
    import yaml

    out = tmp_path_factory.mktemp("ablation_outputs")
    params = yaml.safe_load((smoke_study / "params.yaml").read_text())
    variants = params["ablation"]["variants"]
    params["ablation"]["variants"] = {"baseline": variants["baseline"], "segnet_5": variants["segnet_5"]}
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in params["ablation"]["variants"]:
        assert cli.main(["train-variant", "--variant", name, "--params", str(out / "params.yaml"), "--preprocessed",
                         str(smoke_study / "work" / "preprocessed"), "--live", str(out / "live"),
                         "--out", str(out / "runs" / f"{name}.json"), "-q"]) == 0
    return out


def test_03_architecture_ablation(ablation_outputs, tmp_path):
    import csv

    out = tmp_path / "reports"
    pm.execute_notebook(
        str(NOTEBOOKS / "03_architecture_ablation.ipynb"), str(tmp_path / "03.ipynb"), progress_bar=False,
        parameters=dict(params_path=str(ablation_outputs / "params.yaml"), live_dir=str(ablation_outputs / "live"),
                        runs_dir=str(ablation_outputs / "runs"), figure_dir=str(out / "figures"),
                        table_dir=str(out / "tables"), metrics_path=str(out / "ablation.json")))
    assert (out / "figures" / "fig5_ablation.png").stat().st_size > 10_000
    assert (out / "figures" / "fig5_ablation.svg").exists()
    m = io.read_json(out / "ablation.json")
    assert set(m) == {"variants", "muscle", "iterations"} and (m["muscle"], m["iterations"]) == ("adductor_brevis", 2)
    assert list(m["variants"]) == ["baseline", "segnet_5"]
    keys = {"panel", "arch", "levels", "root_filters", "block", "final_dice", "best_dice", "early_dice", "n_params",
            "seconds", "final_crop_dice"}
    assert all(set(v) == keys for v in m["variants"].values())
    crops = [[(c["case"], c["side"]) for c in v["final_crop_dice"]] for v in m["variants"].values()]
    assert crops[0] == crops[1] and {s for _, s in crops[0]} == {"right", "left"}   # the same crops: paired
    assert (m["variants"]["baseline"]["panel"], m["variants"]["segnet_5"]["panel"]) == (["a", "b", "c"], ["d"])
    seg = m["variants"]["segnet_5"]
    assert (seg["arch"], seg["levels"], seg["block"]) == ("segnet", 5, "plain") and seg["n_params"] > 10**6
    for v in m["variants"].values():
        assert 0 <= v["final_dice"] <= v["best_dice"] <= 1 and v["seconds"] > 0
    rows = list(csv.DictReader(open(out / "tables" / "ablation.csv")))
    assert [r["variant"] for r in rows] == ["baseline", "segnet_5"] and rows[0]["n_validations"] == "2"
    assert (out / "tables" / "ablation.md").read_text().count("\n|") == 3
