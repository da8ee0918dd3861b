"""notebooks/00_walkthrough.ipynb: its exercises name real parameters, its DVC stage is wired to the
predictions, it executes headless (widgets off and on, with and without predictions), and one
exercise runs for real through ``dvc exp run`` in a clone of the repository."""
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill as pm
import pytest
import yaml
from scipy import ndimage

from llseg import anatomy, boxes, io

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_walkthrough.ipynb"
FIGURES = ("walkthrough_case", "walkthrough_muscle")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# The estimated region of the fake stage 1: the smallest muscle, as in the paper.
MISSED = anatomy.label_id("external_rotators", "left")


# --------------------------------------------------------------------------- helpers


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters() -> dict:
    """Name -> default value of the notebook's ``parameters`` cell (literal assignments)."""
    cell = next(c for c in _notebook().cells if "parameters" in c.metadata.get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign)}


def _exercise_commands() -> list[str]:
    """Every ``dvc exp run`` line of the notebook's markdown cells."""
    lines = [line.strip() for c in _notebook().cells if c.cell_type == "markdown" for line in c.source.splitlines()]
    return [line for line in lines if line.startswith("dvc exp run")]


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def write_fake_predictions(study: Path, out: Path) -> str:
    """Fake ``llseg predict`` output for the first test case of a preprocessed smoke study.

    Stage 2 = ground truth with a few voxels of the right adductor longus removed; stage 1 = ground
    truth shifted by one voxel along X without the left external rotators (a "vanished" muscle);
    boxes = the tight ground-truth boxes, the missed region's marked as estimated. Written in the
    predict layout: ``out/study/<case>_{stage1,stage2}.nii.gz`` and ``<case>_boxes.json``.
    Returns the case id.
    """
    pre = study / "work" / "preprocessed"
    manifest = io.read_json(pre / "manifest.json")
    case = manifest["split"]["test"][0]
    truth = io.load_labels(pre / "labels" / f"{case}.nii.gz").data
    affine = np.asarray(manifest["cases"][case]["affine"])
    focus = anatomy.label_id("adductor_longus", "right")
    stage2 = truth.copy()
    stage2[tuple(np.argwhere(truth == focus)[:5].T)] = 0
    stage1 = np.roll(truth, 1, axis=0)
    stage1[stage1 == MISSED] = 0
    found = ndimage.find_objects(truth.astype(np.int32), max_label=anatomy.N_REGIONS)
    tight = {lab: np.array([[s.start, s.stop] for s in sl]) for lab, sl in enumerate(found, start=1) if sl}
    tight[MISSED] = boxes.enlarge_box(tight[MISSED], 1.5, 1.5, truth.shape)
    io.save_nifti(out / "study" / f"{case}_stage1.nii.gz", stage1, affine, dtype=np.uint8)
    io.save_nifti(out / "study" / f"{case}_stage2.nii.gz", stage2, affine, dtype=np.uint8)
    io.write_json(out / "study" / f"{case}_boxes.json", {"boxes": {str(k): v.tolist() for k, v in tight.items()},
                                                         "estimated": {str(MISSED): "group"}})
    return case


def _run(study: Path, tmp_path: Path, *, predictions: Path, **parameters):
    """Execute the walkthrough with papermill from the study folder; return the executed notebook."""
    out = tmp_path / "00_walkthrough.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), cwd=str(study), progress_bar=False, parameters=dict(
        preprocessed_dir=str(study / "work" / "preprocessed"), predictions_dir=str(predictions),
        figure_dir=str(tmp_path / "figures"), **parameters))
    return nbformat.read(out, as_version=4)


def _outputs(nb) -> list[str]:
    """The text of every output (stream or text/plain), in order; fails on an error output."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o.output_type != "error", f"cell failed: {o.get('ename')}: {o.get('evalue')}"
            parts.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return parts


def _texts(nb) -> str:
    return "\n".join(_outputs(nb))


def _widget_models(nb) -> list[dict]:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return list(state.values())


# --------------------------------------------------------------------------- static checks (fast)


def test_exercises_are_single_dvc_exp_runs_on_existing_params(tmp_path):
    from dvc.utils.hydra import apply_overrides

    params = _params()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = _exercise_commands()
    assert len(commands) >= 5, f"expected >= 5 exercises, found {commands}"
    keys = []
    for command in commands:
        tokens = shlex.split(command)
        assert tokens[:3] == ["dvc", "exp", "run"], command
        assert tokens.count("-S") == 1 and tokens[3] == "-S", f"one -S per exercise: {command}"
        key, _, value = tokens[4].partition("=")
        targets = tokens[5:]
        assert all(t in stages for t in targets), f"{command}: unknown stage in {targets}"
        current = _lookup(params, key)                       # KeyError names a key missing from params.yaml
        new = yaml.safe_load(value)
        assert new != current, f"{command}: sets {key} to its current value"
        assert type(new) is type(current) or {type(new), type(current)} <= {int, float}, \
            f"{command}: {key} is {type(current).__name__}, the exercise gives {type(new).__name__}"
        # DVC's own parser (hydra, struct mode: unknown keys are errors) applies it as `dvc exp run` will.
        copy = tmp_path / f"params_{len(keys)}.yaml"
        shutil.copy(ROOT / "params.yaml", copy)
        apply_overrides(copy, [tokens[4]])
        assert _lookup(yaml.safe_load(copy.read_text()), key) == new
        keys.append(key)
    assert len(set(keys)) == len(keys), f"exercises repeat a parameter: {keys}"
    assert {"preprocess.n4", "stage2.ratio_max", "stage2.n_tta_boxes", "stage2.root_filters"} <= set(keys)


def test_every_exercise_states_the_paper_prediction_and_the_comparison():
    cells = [c.source for c in _notebook().cells if c.cell_type == "markdown" and "dvc exp run -S" in c.source]
    assert len(cells) >= 5
    for source in cells:
        assert "**The paper**" in source and "**Expect**" in source, source[:80]
    intro = next(c.source for c in _notebook().cells if c.cell_type == "markdown" and "## 7" in c.source)
    assert "dvc exp show" in intro and "dvc metrics diff" in intro


def test_parameter_defaults_equal_params_yaml():
    p, defaults = _params(), _parameters()
    assert defaults["stage1_factor"] == p["stage1"]["factor"]
    assert (defaults["ratio_min"], defaults["ratio_max"]) == (p["stage2"]["ratio_min"], p["stage2"]["ratio_max"])
    assert defaults["n_tta_boxes"] == p["stage2"]["n_tta_boxes"]
    assert defaults["tta_seed"] == p["stage2"]["seed"]
    assert defaults["widgets"] is True and defaults["case"] == ""
    anatomy.muscle(defaults["muscle"])


def test_dvc_stage_runs_the_notebook_after_predict_with_widgets_off():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stage = stages["walkthrough"]
    cmd = " ".join(stage["cmd"].split())
    assert "-p widgets False" in cmd
    assert "papermill notebooks/00_walkthrough.ipynb reports/notebooks/00_walkthrough.ipynb" in cmd
    passed = set(re.findall(r"-p (\w+) ", cmd)) | set(re.findall(r'-y "(\w+):', cmd))
    assert passed <= set(_parameters()), f"dvc passes unknown parameters {passed - set(_parameters())}"
    predict_outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages["predict"]["outs"]]
    assert "work/predictions" in predict_outs and "work/predictions" in stage["deps"]
    assert {"notebooks/00_walkthrough.ipynb", "work/preprocessed"} <= set(stage["deps"])
    imports = next(c.source for c in _notebook().cells if c.cell_type == "code" and "from llseg import" in c.source)
    modules = re.search(r"from llseg import ([\w, ]+)", imports).group(1).split(", ")
    assert {f"llseg/{m}.py" for m in modules} <= set(stage["deps"])
    outs = {next(iter(o)): o[next(iter(o))] for o in stage["outs"]}
    assert all(v == {"cache": False} for v in outs.values())
    assert {f"reports/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "svg")} <= set(outs)
    for p in ("stage1.factor", "stage2.ratio_min", "stage2.ratio_max", "stage2.n_tta_boxes", "stage2.seed"):
        assert p in stage["params"] and f"${{{p}" in cmd


# --------------------------------------------------------------------------- executions (papermill)


def test_walkthrough_runs_headless_with_predictions(smoke_study, tmp_path):
    case = write_fake_predictions(smoke_study, tmp_path / "predictions")
    nb = _run(smoke_study, tmp_path, predictions=tmp_path / "predictions", widgets=False, n_tta_boxes=3,
              stage1_factor=[2, 2, 1])
    text = _texts(nb)
    assert "NO PREDICTIONS" not in text and "Predictions loaded" in text
    assert f"Stage 1 found {len(anatomy.REGIONS) - 1} of {len(anatomy.REGIONS)} regions on {case}" in text
    assert re.search(r"External rotators \(left\)\s+group", text)          # the estimated region is listed
    assert "(contains the whole muscle)" in text                            # fake stage-1 box = tight box
    table = next(t for t in _outputs(nb) if t.lstrip().startswith("test-time box"))
    assert len(table.strip().splitlines()) == 1 + 3                         # header + n_tta_boxes rows
    assert re.search(r"stage 2\s+[\d.]+\s+0\.9\d\d", text), "stage-2 Dice of the focus muscle (5 voxels off)"
    for stem in FIGURES:
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 10_000
        assert (tmp_path / "figures" / f"{stem}.svg").exists()
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 2
    assert not any(WIDGET_VIEW in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_walkthrough_builds_the_viewer_headless(smoke_study, tmp_path):
    write_fake_predictions(smoke_study, tmp_path / "predictions")
    nb = _run(smoke_study, tmp_path, predictions=tmp_path / "predictions", widgets=True)
    _texts(nb)                                                              # no error output
    assert not (tmp_path / "figures").exists(), "widgets on: no static figures written"
    shown = [o for c in nb.cells for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert len(shown) == 1 and "image/png" in shown[0]["data"]              # widget + PNG fallback
    models = _widget_models(nb)
    toggles = [m["state"] for m in models if m["model_name"] == "ToggleButtonsModel"]
    assert ["ground truth", "stage 1", "stage 2"] in [t["_options_labels"] for t in toggles]
    dropdown = next(m["state"] for m in models if m["model_name"] == "DropdownModel")
    assert dropdown["_options_labels"][dropdown["index"]] == "Adductor longus (right)"
    info = " ".join(m["state"].get("value", "") for m in models if m["model_name"] == "HTMLModel")
    assert "stage-1 box" in info and "6 TTA boxes" in info


@pytest.mark.parametrize("widgets", [True, False], ids=["widgets", "static"])
def test_walkthrough_without_predictions_says_so_and_shows_ground_truth(smoke_study, tmp_path, widgets):
    nb = _run(smoke_study, tmp_path, predictions=tmp_path / "missing", widgets=widgets)
    text = _texts(nb)
    assert "NO PREDICTIONS" in text and "dvc repro" in text
    assert "No stage-1 output yet" in text
    assert "ground truth" in text and "stage 1" not in text.split("Dice vs ground truth")[1]
    if widgets:
        toggles = [m["state"]["_options_labels"] for m in _widget_models(nb) if m["model_name"] == "ToggleButtonsModel"]
        assert ["ground truth"] in toggles and not any("stage 1" in t for t in toggles)
    else:
        for stem in FIGURES:
            assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 10_000


# --------------------------------------------------------------------------- one exercise for real


def _sh(args, cwd, env, timeout=300) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, args))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_exercise_n4_off_runs_with_dvc_exp_in_a_clone(tmp_path):
    """Exercise 1 up to the bias_correction stage (no training) in a clone holding only committed files."""
    from ruamel.yaml import YAML

    clone = tmp_path / "study"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(clone),
           "DVC_NO_ANALYTICS": "1", "TF_ENABLE_ONEDNN_OPTS": "1", "MPLBACKEND": "Agg"}
    dvc, llseg, git = [sys.executable, "-m", "dvc"], [sys.executable, "-m", "llseg.cli"], ["git"]
    _sh(git + ["config", "user.name", "llseg test"], clone, env)
    _sh(git + ["config", "user.email", "test@llseg.invalid"], clone, env)
    _sh(dvc + ["config", "--local", "core.analytics", "false"], clone, env)
    _sh(llseg + ["profile", "smoke"], clone, env)
    yml = YAML()
    doc = yml.load(clone / "params.yaml")
    doc["phantom"]["n_subjects"] = 3
    yml.dump(doc, clone / "params.yaml")
    _sh(llseg + ["phantom", "--out", "data", "-q"], clone, env)
    _sh(dvc + ["add", "data", "-q"], clone, env)
    _sh(git + ["add", "-A"], clone, env)
    _sh(git + ["commit", "-qm", "smoke cohort"], clone, env)
    _sh(dvc + ["repro", "bias_correction"], clone, env)
    _sh(git + ["add", "-A"], clone, env)
    _sh(git + ["commit", "-qm", "baseline"], clone, env)

    command = next(c for c in _exercise_commands() if "preprocess.n4=false" in c)
    _sh(dvc + shlex.split(command)[1:] + ["bias_correction"], clone, env)
    assert not list((clone / "models").rglob("*.keras")), "only the stages up to bias_correction may run"

    shown = json.loads(_sh(dvc + ["exp", "show", "--json"], clone, env))
    baseline = next(e for e in shown if e["rev"] != "workspace")
    experiments = [r for e in baseline["experiments"] or [] for r in e["revs"]]
    assert len(experiments) == 1
    base_p, exp_p = (d["data"]["params"]["params.yaml"]["data"]["preprocess"]["n4"] for d in (baseline, experiments[0]))
    assert base_p is True and exp_p is False
    base_m, exp_m = (d["data"]["metrics"]["metrics/bias_correction.json"]["data"] for d in (baseline, experiments[0]))
    assert base_m["cov_after_mean"] < base_m["cov_before_mean"]               # N4 on: muscle CoV falls
    assert exp_m["cov_after_mean"] == pytest.approx(exp_m["cov_before_mean"])  # N4 off: nothing corrected
    assert exp_m["cov_after_mean"] > base_m["cov_after_mean"]
    diff = json.loads(_sh(dvc + ["metrics", "diff", "--json"], clone, env))["metrics/bias_correction.json"]
    assert diff["cov_after_mean"]["diff"] > 0 and diff["cov_reduction_pct"]["new"] == pytest.approx(0.0, abs=1e-9)
