"""Every study notebook executes under papermill on the smoke profile and writes what it promises."""
import shutil
from pathlib import Path

import papermill as pm
import pytest

from llseg import cli, io

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """A smoke-profile cohort, preprocessed, in a temporary study folder."""
    work = tmp_path_factory.mktemp("smoke_study")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    cli.apply_profile(work / "params.yaml", "smoke")
    params = str(work / "params.yaml")
    assert cli.main(["phantom", "--params", params, "--out", str(work / "data"), "-q"]) == 0
    assert cli.main(["preprocess", "--params", params, "--data", str(work / "data"),
                     "--out", str(work / "work" / "preprocessed"), "-q"]) == 0
    return work


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
