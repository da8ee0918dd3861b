"""The machine record (llseg.runinfo) and the end-of-study summary (llseg.study.summary)."""
import json

import numpy as np
import pytest

from llseg import io, pipeline, runinfo
from llseg.study import summary


def test_environment_names_cpu_isa_backend_and_versions():
    env = runinfo.environment()
    assert env["cpu"] and isinstance(env["cpu"], str)
    assert set(env["cpu_isa"]) <= set(runinfo._ISA_FLAGS)
    assert env["keras_backend"] in {"tensorflow", "jax", "torch"}
    assert "numpy" in env["versions"] and env["n_cpus"] >= 1
    json.dumps(env)                                         # fits a JSON record as it is


def test_training_record_carries_the_environment(tmp_path):
    history = {"seconds": 1.5, "loss": [1.0, 0.5], "val_dice": [[1, 0.4]]}
    path = pipeline.write_training_record(tmp_path / "net.json", {"group": 1}, history)
    record = io.read_json(path)
    assert record["group"] == 1 and record["final_loss"] == pytest.approx(0.75)
    assert record["environment"]["cpu"] == runinfo.cpu_model()


def _rows(per_case: dict) -> list[dict]:
    return [{"stage": stage, "case": case, "dice": d} for (stage, case), values in per_case.items() for d in values]


def test_mean_dice_interval_over_cases():
    rows = _rows({("stage2", "a"): [0.8, 0.9], ("stage2", "b"): [0.7, 0.7], ("stage2", "c"): [0.9, np.nan],
                  ("stage1", "a"): [0.1]})
    mean, low, high, n = summary.mean_dice_interval(rows, "stage2")
    assert n == 3 and mean == pytest.approx(np.mean([0.85, 0.7, 0.9]))      # NaN regions left out
    assert 0.7 - 1e-9 <= low <= mean <= high <= 0.9 + 1e-9
    assert summary.mean_dice_interval(rows, "stage2") == (mean, low, high, n)  # seeded
    m1, l1, h1, n1 = summary.mean_dice_interval(rows, "stage1")
    assert (m1, n1) == (0.1, 1) and np.isnan(l1) and np.isnan(h1)           # one case: no interval


def test_study_summary_lines(tmp_path):
    rows = _rows({("stage1", "a"): [0.5, 0.6], ("stage1", "b"): [0.6, 0.7],
                  ("stage2", "a"): [0.8, 0.9], ("stage2", "b"): [0.85, 0.95]})
    io.write_csv(tmp_path / "rows.csv", rows)
    metrics = tmp_path / "metrics"
    io.write_json(metrics / "claims.json", {"claims": [{"verdict": "reproduced"}, {"verdict": "inconclusive"},
                                                       {"verdict": "reproduced"}]})
    io.write_json(metrics / "cascade.json", {"mean_seconds_per_case": 11.54, "environment": runinfo.environment()})
    io.write_json(tmp_path / "models" / "stage1" / "group_01.json", {"seconds": 3.0})   # an older record
    io.write_json(tmp_path / "models" / "stage1" / "box_priors.json", {"boxes": {}})    # not a training record
    text = summary.study_summary(metrics, tmp_path / "rows.csv", tmp_path / "models", elapsed_s=1830)
    lines = text.splitlines()
    assert lines[0] == "llseg study summary (30.5 min)"
    assert "stage 1 alone: 0.600" in lines[1] and "over 2 test cases" in lines[1]
    assert "stage 1 + stage 2: 0.875" in lines[2]
    assert "paper claims (3): 2 reproduced, 1 inconclusive" in text and "11.5 s per test case" in text
    assert "unrecorded machine: trained 1 network(s)" in text
    assert f"{runinfo.cpu_model()} (" in text and "predicted the test cases" in text
    assert max(map(len, lines)) < 120                                          # readable, unlike dvc metrics show


def test_study_summary_counts_not_testable_claims_and_names_absent_muscles(tmp_path):
    rows = [{**r, "volume_true_ml": 10.0} for r in _rows({("stage1", "a"): [0.5], ("stage1", "b"): [0.6],
                                                          ("stage2", "a"): [0.8], ("stage2", "b"): [0.9]})]
    rows.append({"stage": "stage2", "case": "a", "dice": 0.0, "volume_true_ml": 0.0})   # not labelled: not scored
    io.write_csv(tmp_path / "rows.csv", rows)
    metrics = tmp_path / "metrics"
    io.write_json(metrics / "claims.json", {"claims": [{"verdict": "reproduced"}, {"verdict": "not testable here"},
                                                       {"verdict": "not testable here"}]})
    io.write_json(metrics / "cascade.json", {"mean_seconds_per_case": 2.0})
    io.write_json(metrics / "evaluation.json", {"muscles_absent": ["fibulari", "popliteus", "soleus", "gracilis"]})
    text = summary.study_summary(metrics, tmp_path / "rows.csv", tmp_path / "models")
    assert "stage 1 + stage 2: 0.850" in text                                     # the unlabelled row left out
    assert "paper claims (3): 1 reproduced, 2 not testable here" in text
    assert "muscles: 31 of 35 in the test labels; absent: fibulari, popliteus, soleus and 1 more" in text
    assert max(map(len, text.splitlines())) < 120
    io.write_json(metrics / "evaluation.json", {"muscles_absent": []})           # whole-leg cohort: no such line
    assert "absent" not in summary.study_summary(metrics, tmp_path / "rows.csv", tmp_path / "models")
