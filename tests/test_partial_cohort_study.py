"""A cohort labelled for some muscles, on part of the leg: which networks it trains, and the whole
study on a thigh-only phantom cohort through ``dvc repro`` (slow)."""
import json
import shutil
import time

import numpy as np
import pytest

from llseg import anatomy, cli, cohort, io
from llseg.coverage import COVERAGE_PRESETS

from conftest import ROOT

THIGH_MUSCLES = ("rectus_femoris", "vastus_lateralis", "vastus_intermedius", "vastus_medialis",
                 "biceps_femoris_long", "semitendinosus", "semimembranosus")


def _trainable(keys_by_case, train):
    present = {case: [anatomy.label_id(k, s) for k in keys for s in ("right", "left")]
               for case, keys in keys_by_case.items()}
    return cohort.regions_by_training_cases(present, train)


def test_trainable_networks_are_the_groups_of_the_labelled_muscles():
    trainable = _trainable({"a": THIGH_MUSCLES, "b": THIGH_MUSCLES, "c": THIGH_MUSCLES[:3]}, ["a", "b"])
    nets = cohort.trainable_networks(trainable)
    assert nets["stage2_muscles"] == sorted(THIGH_MUSCLES, key=lambda k: anatomy.muscle(k).index)
    assert nets["stage1_groups"] == ["05", "06", "07"]       # quadriceps; semimembranosus; biceps + semitendinosus


def test_set_study_networks_rewrites_params_keeping_comments_and_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text().replace("  rectus_femoris: {iterations_factor: 1.0}",
                                                      "  rectus_femoris: {iterations_factor: 2.0}")
    params.write_text(text)
    changed = cli.set_study_networks(params, ["05", "06", "07"], list(THIGH_MUSCLES))
    assert set(changed) == {"stage1_groups", "stage2_muscles", "ablation.muscle", "two_stages.muscle"}
    p = cli.load_params(params)                               # still valid for the schema
    assert p["stage1_groups"] == ["05", "06", "07"]
    assert set(p["stage2_muscles"]) == set(THIGH_MUSCLES)
    assert p["stage2_muscles"]["rectus_femoris"]["iterations_factor"] == 2.0
    smallest = min(THIGH_MUSCLES, key=lambda k: anatomy.muscle(k).volume_ml)
    assert p["ablation"]["muscle"] == p["two_stages"]["muscle"] == smallest
    assert "# stage-1 networks trained" in params.read_text()   # comments kept
    assert cli.set_study_networks(params, ["05", "06", "07"], list(THIGH_MUSCLES)) == []


def test_stage1_groups_are_validated(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("stage1_groups: ['01',", "stage1_groups: ['11',"))
    with pytest.raises(ValueError, match="stage1_groups"):
        cli.load_params(params)


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_smoke_study_on_a_thigh_only_cohort_through_dvc_repro(tmp_path):
    """The smoke phantom cut to the hip-to-knee stretch with 7 muscles per side: ``llseg check`` passes,
    ``llseg cohort-params`` keeps 3 groups and 7 muscles, and ``dvc repro`` trains, predicts, evaluates and
    runs every notebook on it; the predictions hold no region outside the labelled set, the evaluation
    scores only the 7 muscles, and the claims over all 35 muscles read "not testable here"."""
    from ruamel.yaml import YAML

    from llseg.phantom import cuts
    from test_cascade import _sh, clone_repo
    from test_cohort import RETRAIN_SHRINK

    t0 = time.perf_counter()
    clone, env = clone_repo(tmp_path)
    _sh(["llseg", "profile", "smoke"], clone, env)
    yaml = YAML()
    doc = yaml.load(clone / "params.yaml")
    for (section, key), value in RETRAIN_SHRINK.items():
        doc[section][key] = value
    yaml.dump(doc, clone / "params.yaml")
    _sh(["llseg", "phantom", "--out", str(tmp_path / "whole"), "-q"], clone, env)
    shutil.rmtree(clone / "data", ignore_errors=True)
    cuts.write_partial_cohort(tmp_path / "whole", clone / "data", COVERAGE_PRESETS["thigh"], THIGH_MUSCLES)

    out = _sh(["llseg", "check", "data", "--params", "params.yaml"], clone, env)
    assert "0 with problems" in out, out
    out = _sh(["llseg", "cohort-params", "data"], clone, env)
    assert "3 stage-1 group(s) (05, 06, 07), 7 muscle(s)" in out, out
    _sh(["dvc", "add", "data", "-q"], clone, env)
    _sh(["git", "add", "-A"], clone, env)
    _sh(["git", "commit", "-qm", "thigh-only cohort"], clone, env)
    _sh(["dvc", "repro"], clone, env, timeout=3600)
    assert "up to date" in _sh(["dvc", "status"], clone, env)

    labelled = {anatomy.label_id(k, s) for k in THIGH_MUSCLES for s in ("right", "left")}
    manifest = io.read_json(clone / "work" / "preprocessed" / "manifest.json")
    import nibabel as nib

    for case in manifest["split"]["test"]:
        final = np.asarray(nib.load(clone / "work" / "predictions" / "study" / f"{case}_stage2.nii.gz").dataobj)
        assert set(np.unique(final).tolist()) - {0} <= labelled
    # its networks learned cut parts: inference shows them partial scans as they are (no cut padding)
    records = [io.read_json(p) for p in sorted((clone / "models" / "stage1").glob("group_*.json"))]
    assert records and all(r["trained_on_partial_scans"] for r in records)
    evaluation = io.read_json(clone / "metrics" / "evaluation.json")
    assert evaluation["n_muscles"] == 7 and len(evaluation["muscles_absent"]) == 28
    claims = json.loads((clone / "metrics" / "claims.json").read_text())
    verdicts = {c["id"]: c["verdict"] for c in claims["claims"]}
    assert verdicts["within_interobserver_count"] == "not testable here"
    print(f"\n  thigh-only study through dvc repro: {time.perf_counter() - t0:.0f} s")
