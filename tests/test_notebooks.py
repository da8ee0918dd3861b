"""Every study notebook executes under papermill on the smoke profile and writes what it promises."""
import shutil
from pathlib import Path

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
