"""The claims report: every rule on hand-made inputs (reproduced / not reproduced / inconclusive /
not testable), thresholds from params.yaml, the bootstrap intervals, the Markdown table and `llseg claims`."""
import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from llseg import anatomy, cli, io
from llseg.study import claim_ablation, claim_checks, claims
from llseg.study.claim_checks import CLAIMS
from llseg.study.claim_inputs import bootstrap_interval, compare

ROOT = Path(__file__).resolve().parents[1]

NAN = float("nan")
LARGER = {m.key for m in sorted(anatomy.MUSCLES, key=lambda m: -m.volume_ml)[:18]}


def params_claims():
    return yaml.safe_load((ROOT / "params.yaml").read_text())["claims"]


def thresholds():
    """params.yaml's rules and bootstrap settings without the study's measured retraining SDs: these
    tests are about the rules (the SDs have tests of their own)."""
    return {**params_claims(), "study_retraining_sd": {}}


def region_rows(dice_of=lambda m: m.paper_dice_mean, vol_of=lambda m, d: 100 * (1 - d)):
    """Both sides of every muscle at stage 2 (Dice from ``dice_of``), plus stage-1 rows at Dice 0.1
    that must never be scored."""
    rows = []
    for m in anatomy.MUSCLES:
        for side in ("right", "left"):
            d = dice_of(m)
            rows.append({"stage": "stage2", "case": "c1", "muscle": m.key, "side": side, "dice": d,
                         "msd_mm": 1.0, "volume_error_abs_pct": vol_of(m, d), "volume_true_ml": m.volume_ml})
            rows.append({"stage": "stage1", "case": "c1", "muscle": m.key, "side": side, "dice": 0.1,
                         "msd_mm": 9.0, "volume_error_abs_pct": 90.0, "volume_true_ml": m.volume_ml})
    return rows


def variant(panel, arch, levels, rf, block, dice, n_params, early=None):
    v = {"panel": panel, "arch": arch, "levels": levels, "root_filters": rf, "block": block,
         "final_dice": dice, "best_dice": dice + 0.01, "n_params": n_params, "seconds": 10.0}
    if early is not None:
        v["early_dice"] = early
    return v


def cov_rows(before, after):
    """Notebook 01's per-case CoV rows (reports/plots/bias_correction_cov.csv)."""
    return [{"case": f"p{i:03d}", "cov_before": b, "cov_after": a} for i, (b, a) in enumerate(zip(before, after))]


def good_inputs():
    """Inputs on which every claim holds with the params.yaml thresholds."""
    return {
        "bias_correction": {"cov_before_mean": 0.15, "cov_after_mean": 0.10, "cov_reduction_pct": 100 * 0.05 / 0.15,
                            "n_cases": 10, "n_improved": 10},
        "bias_correction_cov": cov_rows([0.14, 0.16] * 5, [0.095, 0.105] * 5),
        "cascade": {"cases": [{"case": "c1", "n_estimated_boxes": 2}]},
        "two_stages": {"mean_dice": {"stage1": 0.6, "stage2_gt_box": 0.89, "stage2_box_ratio_low": 0.85,
                                     "stage2_box_ratio_high": 0.87, "stage2_tta": 0.89},
                       "mean_roughness": {"stage1": 1.30, "stage2_gt_box": 1.05, "stage2_box_ratio_low": 1.08,
                                          "stage2_box_ratio_high": 1.07, "stage2_tta": 1.04},
                       "ratios": [1.2, 1.8], "n_cases": 4, "n_regions": 70},
        "ablation": {"muscle": "adductor_brevis", "iterations": 100, "variants": {
            "baseline": variant(["a", "b", "c"], "unet", 3, 16, "plain", 0.80, 1000),
            "levels_2": variant("a", "unet", 2, 16, "plain", 0.70, 500),
            "levels_4": variant("a", "unet", 4, 16, "plain", 0.81, 2000),
            "filters_8": variant("b", "unet", 3, 8, "plain", 0.75, 300),
            "filters_32": variant("b", "unet", 3, 32, "plain", 0.85, 4000),
            "residual": variant("c", "unet", 3, 16, "residual", 0.804, 1500),
            "dense": variant("c", "unet", 3, 16, "dense", 0.797, 1200),
            "unet_5": variant("d", "unet", 5, 16, "plain", 0.80, 5000, early=0.6),
            "fcn8s": variant("d", "fcn8s", 5, 16, "plain", 0.77, 5000, early=0.4),
            "segnet": variant("d", "segnet", 5, 16, "plain", 0.795, 5000, early=0.6)}},
        "dice_table": {"dice_mean_over_muscles": 0.88, "n_within": 13, "n_undetermined": 0,
                       "n_within_larger_half": 9, "n_within_smaller_half": 4, "spearman_vs_paper": 0.8},
        "volume_msd": {"n_muscles_above_volume_threshold": 8, "overlap_above_volume_threshold": ["pectineus"] * 6,
                       "n_muscles_above_msd_threshold": 6, "n_muscles_msd_undetermined": 0,
                       "share_volume_below_typical": 0.7, "share_msd_below_threshold": 0.8,
                       "muscle_dice_msd_spearman_rho": -0.8, "n_muscle_dice_msd_pairs": 35},
        "evaluation": {"dice_mean_stage1": 0.6, "dice_mean_stage2": 0.88, "volume_error_abs_pct_mean": 7.0,
                       "msd_mm_mean": 3.1, "n_rows": 70, "n_msd_nan": 0},
        "per_region": region_rows(),
    }


def verdicts(inputs, t=None, **kwargs):
    return {c["id"]: c for c in claims.evaluate_claims(inputs, t or thresholds(), **kwargs)}


# ----------------------------------------------------------------------------- reproduced

def test_params_yaml_has_exactly_the_thresholds():
    assert set(params_claims()) == set(claims.THRESHOLD_KEYS) | set(claims.BOOTSTRAP_DEFAULTS)


def test_paper_values_come_from_anatomy():
    assert claims.PAPER_TABLE1_MEAN_DICE == pytest.approx(0.892, abs=5e-4)
    found = verdicts(good_inputs())
    assert found["within_interobserver_count"]["paper"] == anatomy.PAPER_WITHIN_INTEROBSERVER
    assert found["volume_error_mean"]["paper"] == anatomy.PAPER_MEAN_VOLUME_ERROR_PCT
    assert found["msd_mean"]["paper"] == anatomy.PAPER_MEAN_MSD_MM
    assert found["large_muscles_within"]["paper"].startswith("10 (larger half) vs 5 (smaller half)")


def test_every_claim_reproduced_on_paper_like_inputs():
    found = claims.evaluate_claims(good_inputs(), thresholds())
    ids = [c["id"] for c in found]
    assert len(ids) == len(set(ids)) >= 30
    bad = {c["id"]: (c["verdict"], c["reason"], c["measured"]) for c in found if c["verdict"] != claims.REPRODUCED}
    assert not bad
    for c in found:
        assert set(c) == {"id", "section", "claim", "measured", "paper", "verdict", "reason", "rule", "difference",
                          "ci_low", "ci_high", "threshold", "resampling_unit", "interval", "comparisons"}
        assert c["reason"] == "" and c["measured"] != "n/a" and c["rule"]


def test_stage_one_rows_are_never_scored():
    """Per-muscle claims read the rows of the stage asked for (stage-1 rows: Dice 0.1 everywhere)."""
    assert verdicts(good_inputs())["small_muscles_worst"]["verdict"] == claims.REPRODUCED
    found = verdicts(good_inputs(), stage="stage1")["small_muscles_worst"]
    assert found["verdict"] == claims.NOT_REPRODUCED  # equal halves: a gap of 0 is not > 0
    assert found["measured"] == "mean Dice 0.100 (larger half) vs 0.100 (smaller half)"


# ----------------------------------------------------------------------------- not reproduced

def _set(path, value):
    def mutate(inputs):
        node = inputs
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


def _variant(name, **fields):
    def mutate(inputs):
        inputs["ablation"]["variants"][name].update(fields)
    return mutate


def _rows(**kwargs):
    def mutate(inputs):
        inputs["per_region"] = region_rows(**kwargs)
    return mutate


def _both(*mutations):
    def mutate(inputs):
        for m in mutations:
            m(inputs)
    return mutate


FAILING = {
    "n4_homogeneity": _set(("bias_correction", "n_improved"), 5),
    "stage2_beats_stage1": _set(("evaluation", "dice_mean_stage2"), 0.5),
    "stage1_localises": _set(("cascade", "cases"), [{"n_estimated_boxes": 30}]),
    "stage1_jagged": _set(("two_stages", "mean_roughness", "stage1"), 1.0),
    "box_ratio_matters": _set(("two_stages", "mean_dice", "stage2_box_ratio_low"), 0.87),
    "tta_beats_single_crop": _set(("two_stages", "mean_dice", "stage2_tta"), 0.86),
    "tta_like_gt_box": _set(("two_stages", "mean_dice", "stage2_gt_box"), 0.95),
    "tta_smooths_contours": _set(("two_stages", "mean_roughness", "stage2_tta"), 1.09),
    "more_levels_help": _variant("levels_4", final_dice=0.65),
    "levels_beyond_three_small": _variant("levels_4", final_dice=0.85),
    "more_filters_help": _variant("filters_32", final_dice=0.70),
    "width_beats_depth": _both(_variant("filters_8", final_dice=0.80), _variant("filters_32", final_dice=0.805),
                               _variant("levels_4", final_dice=0.82)),
    "residual_about_plain": _variant("residual", final_dice=0.85),
    "blocks_within_001": _variant("dense", final_dice=0.78),
    "dense_worst": _variant("dense", final_dice=0.81),
    "residual_costs_more": _variant("residual", n_params=900),
    "bigger_costs_more": _variant("levels_4", n_params=400),
    "unet_about_segnet": _variant("segnet", final_dice=0.70),
    "fcn_worse": _variant("fcn8s", final_dice=0.81),
    "fcn_worse_early": _variant("fcn8s", early_dice=0.79),
    "overall_mean_dice": _set(("dice_table", "dice_mean_over_muscles"), 0.80),
    "within_interobserver_count": _set(("dice_table", "n_within"), 5),
    "worse_only_slightly": _rows(dice_of=lambda m: m.paper_dice_mean - 0.2),
    "large_muscles_within": _set(("dice_table", "n_within_smaller_half"), 9),
    "small_muscles_worst": _rows(dice_of=lambda m: 0.5 if m.key in LARGER else 0.9),
    "external_rotators_among_worst": _rows(dice_of=lambda m: 0.99 if m.key == "external_rotators"
                                           else m.paper_dice_mean),
    "table1_pattern": _set(("dice_table", "spearman_vs_paper"), 0.2),
    "volume_error_mean": _set(("evaluation", "volume_error_abs_pct_mean"), 20.0),
    "volume_error_above_10pct": _set(("volume_msd", "n_muscles_above_volume_threshold"), 20),
    "msd_mean": _set(("evaluation", "msd_mm_mean"), 10.0),
    "msd_above_4mm": _set(("volume_msd", "n_muscles_above_msd_threshold"), 20),
    "most_below_5pct_4mm": _set(("volume_msd", "share_volume_below_typical"), 0.3),
    "msd_tracks_dice": _set(("volume_msd", "muscle_dice_msd_spearman_rho"), 0.1),
    "volume_error_tracks_dice": _rows(vol_of=lambda m, d: 100 * d),
}


def test_every_claim_has_a_failing_case():
    assert set(FAILING) == {c["id"] for c in claims.evaluate_claims(good_inputs(), thresholds())}


@pytest.mark.parametrize("claim_id", sorted(FAILING))
def test_rule_not_reproduced(claim_id):
    inputs = good_inputs()
    FAILING[claim_id](inputs)
    found = verdicts(inputs)
    assert found[claim_id]["verdict"] == claims.NOT_REPRODUCED, found[claim_id]
    assert found[claim_id]["measured"] != "n/a"


def test_stage2_dice_comes_from_the_evaluation_outputs():
    """Mean Dice per stage from metrics/evaluation.json, the per-case count from the per-region rows."""
    found = verdicts(good_inputs())["stage2_beats_stage1"]
    assert found["measured"] == "0.600 -> 0.880 (gain +0.280); better in 1 of 1 cases"
    inputs = good_inputs()
    inputs["per_region"] = None  # the per-case note needs the table; the verdict does not
    found = verdicts(inputs)["stage2_beats_stage1"]
    assert found["verdict"] == claims.REPRODUCED and found["measured"] == "0.600 -> 0.880 (gain +0.280)"


def test_thresholds_decide_and_appear_in_the_rule():
    t = thresholds()
    assert verdicts(good_inputs(), t)["tta_beats_single_crop"]["verdict"] == claims.REPRODUCED  # gain 0.02
    t["tta_min_gain"] = 0.05
    found = verdicts(good_inputs(), t)["tta_beats_single_crop"]
    assert found["verdict"] == claims.NOT_REPRODUCED and "> 0.05" in found["rule"]
    t["overall_dice_tolerance"] = 0.001
    found = verdicts(good_inputs(), t)["overall_mean_dice"]
    assert found["verdict"] == claims.NOT_REPRODUCED and "<= 0.001" in found["rule"] and "0.892" in found["rule"]


def test_overall_dice_names_the_one_voxel_margin_reference_when_known():
    inputs = good_inputs()
    assert "grown" not in verdicts(inputs)["overall_mean_dice"]["measured"]
    inputs["dice_table"]["one_voxel_margin_dice_mean_over_muscles"] = 0.8433
    found = verdicts(inputs)["overall_mean_dice"]
    assert found["measured"] == "0.880 (-0.012); truth vs truth grown by one in-plane voxel: 0.843"
    assert found["verdict"] == verdicts(good_inputs())["overall_mean_dice"]["verdict"]     # a note, not a criterion


def test_tie_is_not_a_gain():
    inputs = good_inputs()
    inputs["two_stages"]["mean_dice"]["stage2_tta"] = 0.87  # equals the best single crop
    assert verdicts(inputs)["tta_beats_single_crop"]["verdict"] == claims.NOT_REPRODUCED


def test_best_dice_is_used_when_asked():
    inputs = good_inputs()
    inputs["ablation"]["variants"]["residual"]["best_dice"] = 0.95  # final 0.804 stays close to plain
    t = thresholds()
    assert verdicts(inputs, t)["residual_about_plain"]["verdict"] == claims.REPRODUCED
    t["ablation_dice"] = "best_dice"
    assert verdicts(inputs, t)["residual_about_plain"]["verdict"] == claims.NOT_REPRODUCED


def test_comparisons_found_by_fields_not_names():
    """Renamed variants (and the baseline listed under panel 'a' only) give the same verdicts."""
    inputs = good_inputs()
    old = inputs["ablation"]["variants"]
    renamed = {f"v{i}": dict(v) for i, v in enumerate(old.values())}
    renamed["v0"]["panel"] = "a"
    inputs["ablation"]["variants"] = renamed
    expected = {k: v["verdict"] for k, v in verdicts(good_inputs()).items()}
    assert {k: v["verdict"] for k, v in verdicts(inputs).items()} == expected


# ----------------------------------------------------------------------------- not testable

USES = {
    "two_stages": {"stage1_jagged", "box_ratio_matters", "tta_beats_single_crop", "tta_like_gt_box",
                   "tta_smooths_contours"},
    "ablation": {"more_levels_help", "levels_beyond_three_small", "more_filters_help", "width_beats_depth",
                 "residual_about_plain", "blocks_within_001", "dense_worst", "residual_costs_more",
                 "bigger_costs_more", "unet_about_segnet", "fcn_worse", "fcn_worse_early"},
    "bias_correction": {"n4_homogeneity"},
    "bias_correction_cov": set(),          # the N4 claim loses its interval, not its verdict
    "cascade": {"stage1_localises"},
    "dice_table": {"overall_mean_dice", "within_interobserver_count", "large_muscles_within", "table1_pattern"},
    "volume_msd": {"volume_error_above_10pct", "msd_above_4mm", "most_below_5pct_4mm", "msd_tracks_dice"},
    "evaluation": {"stage2_beats_stage1", "volume_error_mean", "msd_mean"},
    "per_region": {"worse_only_slightly", "small_muscles_worst", "external_rotators_among_worst",
                   "volume_error_tracks_dice"},
}


@pytest.mark.parametrize("name", sorted(claims.INPUTS))
@pytest.mark.parametrize("how", ["none", "absent"])
def test_missing_input_file(name, how):
    inputs = good_inputs()
    if how == "none":
        inputs[name] = None
    else:
        del inputs[name]
    found = verdicts(inputs)
    untestable = {k for k, c in found.items() if c["verdict"] == claims.NOT_TESTABLE}
    assert untestable == USES[name]
    for k in untestable:
        assert found[k]["reason"] == f"{claims.INPUTS[name]} missing" and found[k]["measured"] == "n/a"
        assert found[k]["rule"]  # the rule is still stated


def test_sources_name_the_real_paths():
    inputs = good_inputs()
    inputs["evaluation"] = None
    found = verdicts(inputs, sources={"evaluation": "/tmp/x/evaluation.json"})
    assert found["stage2_beats_stage1"]["reason"] == "/tmp/x/evaluation.json missing"


@pytest.mark.parametrize("value, word", [(NAN, "NaN"), (None, "None"), ("abc", "not a number")])
def test_nan_or_null_value(value, word):
    inputs = good_inputs()
    inputs["evaluation"]["msd_mm_mean"] = value
    found = verdicts(inputs)["msd_mean"]
    assert found["verdict"] == claims.NOT_TESTABLE
    assert "metrics/evaluation.json" in found["reason"] and "msd_mm_mean" in found["reason"] and word in found["reason"]
    assert verdicts(inputs)["volume_error_mean"]["verdict"] == claims.REPRODUCED  # the rest of the file still counts


def test_missing_key():
    inputs = good_inputs()
    del inputs["evaluation"]["dice_mean_stage1"]
    del inputs["two_stages"]["mean_roughness"]
    found = verdicts(inputs)
    assert found["stage2_beats_stage1"]["verdict"] == claims.NOT_TESTABLE
    assert found["stage2_beats_stage1"]["reason"] == "metrics/evaluation.json has no 'dice_mean_stage1'"
    assert found["stage1_localises"]["verdict"] == claims.REPRODUCED
    assert found["tta_smooths_contours"]["reason"] == "metrics/two_stages.json has no 'mean_roughness.stage2_tta'"
    assert found["tta_beats_single_crop"]["verdict"] == claims.REPRODUCED


def test_ablation_gaps():
    inputs = good_inputs()
    inputs["ablation"]["variants"]["dense"]["final_dice"] = None     # JSON null: training gave no Dice
    del inputs["ablation"]["variants"]["levels_4"]                    # no variant deeper than 3 levels
    for v in inputs["ablation"]["variants"].values():
        v.pop("early_dice", None)
    found = verdicts(inputs)
    assert found["dense_worst"]["verdict"] == claims.NOT_TESTABLE and "'dense'" in found["dense_worst"]["reason"]
    assert found["levels_beyond_three_small"]["verdict"] == claims.NOT_TESTABLE
    assert "> 3 levels" in found["levels_beyond_three_small"]["reason"]
    assert found["more_levels_help"]["verdict"] == claims.REPRODUCED    # levels 2 and 3 remain
    assert "early_dice" in found["fcn_worse_early"]["reason"]
    assert found["residual_costs_more"]["verdict"] == claims.REPRODUCED  # n_params still there
    inputs["ablation"]["variants"] = {}
    assert verdicts(inputs)["fcn_worse"]["reason"] == "metrics/ablation.json has no 'variants'"


def test_per_region_rows_of_another_stage_only():
    inputs = good_inputs()
    inputs["per_region"] = [r for r in inputs["per_region"] if r["stage"] == "stage1"]
    found = verdicts(inputs)
    for k in USES["per_region"]:
        assert found[k]["verdict"] == claims.NOT_TESTABLE and "stage2" in found[k]["reason"]


def test_empty_segmentation_all_zero_dice():
    """Every stage-2 Dice 0: ties are averaged, so external rotators are not 'the worst'."""
    inputs = good_inputs()
    inputs["per_region"] = region_rows(dice_of=lambda m: 0.0, vol_of=lambda m, d: 100.0)
    found = verdicts(inputs)
    assert found["external_rotators_among_worst"]["verdict"] == claims.NOT_REPRODUCED
    assert "rank 18 of 35" in found["external_rotators_among_worst"]["measured"]
    assert found["small_muscles_worst"]["verdict"] == claims.NOT_REPRODUCED          # gap 0 is not > 0
    assert found["volume_error_tracks_dice"]["verdict"] == claims.NOT_TESTABLE       # constant values
    assert found["worse_only_slightly"]["verdict"] == claims.NOT_REPRODUCED


# ----------------------------------------------------------------------------- bad arguments

def test_bad_thresholds_and_inputs():
    t = thresholds()
    with pytest.raises(ValueError, match="missing key"):
        claims.evaluate_claims(good_inputs(), {k: v for k, v in t.items() if k != "tta_min_gain"})
    with pytest.raises(ValueError, match="unknown key"):
        claims.evaluate_claims(good_inputs(), {**t, "tta_min_gian": 0.0})
    with pytest.raises(ValueError, match="worst_k must be a finite number, got 'five'"):
        claims.evaluate_claims(good_inputs(), {**t, "worst_k": "five"})
    with pytest.raises(ValueError, match="must be a finite number"):
        claims.evaluate_claims(good_inputs(), {**t, "msd_tolerance_mm": NAN})
    with pytest.raises(ValueError, match="ablation_dice"):
        claims.evaluate_claims(good_inputs(), {**t, "ablation_dice": "last_dice"})
    with pytest.raises(TypeError, match="thresholds must be a mapping"):
        claims.evaluate_claims(good_inputs(), [1, 2])
    with pytest.raises(TypeError, match="inputs must be a mapping"):
        claims.evaluate_claims([], t)
    with pytest.raises(ValueError, match="unknown name"):
        claims.evaluate_claims({"casacde": {}}, t)


def test_inputs_not_mutated():
    inputs = good_inputs()
    before = copy.deepcopy(inputs)
    claims.evaluate_claims(inputs, thresholds())
    assert json.dumps(inputs, sort_keys=True, default=str) == json.dumps(before, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- Markdown

def _table_rows(md):
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    return lines[2:]  # header and separator


def test_markdown_one_row_per_claim_and_counts():
    inputs = good_inputs()
    inputs["ablation"] = None
    FAILING["msd_mean"](inputs)
    found = claims.evaluate_claims(inputs, thresholds())
    counts = claims.count_verdicts(found)
    assert counts == {claims.REPRODUCED: len(found) - 13, claims.NOT_REPRODUCED: 1, claims.INCONCLUSIVE: 0,
                      claims.NOT_TESTABLE: 12}
    md = claims.claims_markdown(found, profile="cpu", notes=["`metrics/ablation.json` missing."])
    rows = _table_rows(md)
    assert len(rows) == len(found)
    for c, row in zip(found, rows):
        assert f"**{c['id']}**" in row
    assert "Profile: `cpu`" in md and "params.yaml" in md
    assert (f"**{len(found)} claims: {len(found) - 13} reproduced, 1 not reproduced, 0 inconclusive, "
            "12 not testable here.**") in md
    assert "not testable here: metrics/ablation.json missing" in md
    assert md.rstrip().endswith("- `metrics/ablation.json` missing.")
    assert "\\|mean MSD" in md  # the rule's bars are escaped, so the row keeps its columns


def test_markdown_and_counts_reject_bad_claims():
    with pytest.raises(ValueError, match="verdict must be one of"):
        claims.count_verdicts([{"verdict": "maybe"}])
    with pytest.raises(ValueError, match="lacks key"):
        claims.claims_markdown([{"verdict": claims.REPRODUCED}])
    assert _table_rows(claims.claims_markdown([])) == []


# ----------------------------------------------------------------------------- llseg claims

def _study(tmp_path, names):
    metrics = tmp_path / "metrics"
    inputs = good_inputs()
    for name in names:
        io.write_json(metrics / f"{name}.json", inputs[name])
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    return metrics, params


def test_cli_with_a_subset_of_metrics(tmp_path, capsys):
    metrics, params = _study(tmp_path, ["bias_correction", "cascade", "evaluation"])
    out, js = tmp_path / "reports" / "claims.md", metrics / "claims.json"
    argv = ["claims", "--params", str(params), "--metrics", str(metrics), "--table", str(tmp_path / "none.csv"),
            "--out", str(out), "--json", str(js)]
    assert cli.main(argv) == 0
    summary = json.loads(js.read_text())
    by = {c["id"]: c for c in summary["claims"]}
    assert summary["profile"] == "cpu" and summary["n_claims"] == len(by) == len(FAILING)
    assert summary["n_reproduced"] == 5 and summary["n_not_reproduced"] == 0
    assert summary["n_not_testable_here"] == len(by) - 5
    assert by["n4_homogeneity"]["verdict"] == "reproduced"
    assert by["tta_beats_single_crop"]["reason"] == f"{metrics / 'two_stages.json'} missing"
    md = out.read_text()
    assert len(_table_rows(md)) == len(by)
    assert f"`{metrics / 'ablation.json'}` missing" in md and "`stage2` labels" in md
    assert "5 reproduced" in capsys.readouterr().out
    assert not list(tmp_path.rglob(".*.tmp"))  # atomic writes leave no temporary files


def test_cli_reads_the_per_region_table(tmp_path):
    metrics, params = _study(tmp_path, [n for n, path in claims.INPUTS.items() if path.endswith(".json")])
    table = tmp_path / "metrics_per_region.csv"
    io.write_csv(table, good_inputs()["per_region"])
    out, js = tmp_path / "claims.md", tmp_path / "claims.json"
    assert cli.main(["claims", "--params", str(params), "--metrics", str(metrics), "--table", str(table),
                     "--out", str(out), "--json", str(js)]) == 0
    summary = json.loads(js.read_text())
    failed = [c for c in summary["claims"] if c["verdict"] != "reproduced"]
    # params.yaml's study retraining SDs reach the claims: only claims they widen fall short of reproduced
    assert failed and all(c["verdict"] == claims.INCONCLUSIVE for c in failed)
    assert all(c["id"] in params_claims()["study_retraining_sd"] and any(k["retraining_sd"] > 0 for k in c["comparisons"])
               for c in failed)


def test_cli_errors_are_one_line(tmp_path, capsys):
    metrics, params = _study(tmp_path, ["cascade"])
    params.write_text(params.read_text().replace("\nclaims:", "\nclaims_old:"))
    argv = ["claims", "--params", str(params), "--metrics", str(metrics), "--out", str(tmp_path / "c.md"),
            "--json", str(tmp_path / "c.json")]
    assert cli.main(argv) == 1
    assert "missing section 'claims'" in capsys.readouterr().err
    assert not (tmp_path / "c.md").exists() and not (tmp_path / "c.json").exists()
    params.write_text((ROOT / "params.yaml").read_text())
    (metrics / "cascade.json").write_text("{not json")
    assert cli.main(argv) == 1
    assert "invalid JSON" in capsys.readouterr().err


def test_nan_in_written_json_is_not_testable(tmp_path):
    """io.write_json writes NaN as the token NaN; json reads it back as float NaN."""
    metrics, params = _study(tmp_path, ["evaluation"])
    data = good_inputs()["evaluation"]
    data["msd_mm_mean"] = math.nan
    io.write_json(metrics / "evaluation.json", data)
    js = tmp_path / "c.json"
    assert cli.main(["claims", "--params", str(params), "--metrics", str(metrics), "--out", str(tmp_path / "c.md"),
                     "--json", str(js)]) == 0
    by = {c["id"]: c for c in json.loads(js.read_text())["claims"]}
    assert by["msd_mean"]["verdict"] == "not testable here" and "NaN" in by["msd_mean"]["reason"]
    assert by["volume_error_mean"]["verdict"] == "reproduced"


def test_fcn_that_never_lags_does_not_reproduce_lagging_early():
    # FCN-8s ahead of min(U-Net, SegNet) early and at the end, by less early: the gap "grows" but never lags
    inputs = good_inputs()
    v = inputs["ablation"]["variants"]
    for name in v:
        if v[name]["arch"] == "segnet":
            v[name].update(final_dice=0.50, early_dice=0.30)
        elif v[name]["arch"] == "fcn8s":
            v[name].update(final_dice=0.70, early_dice=0.45)
    found = verdicts(inputs)["fcn_worse_early"]         # ahead by 0.15 early: beyond the retraining spread
    assert found["verdict"] == claims.NOT_REPRODUCED and "-0.150" in found["measured"], found


def test_write_claims_without_the_cli(tmp_path):
    metrics, _ = _study(tmp_path, ["bias_correction", "cascade", "evaluation"])
    out, js = tmp_path / "claims.md", tmp_path / "claims.json"
    counts = claims.write_claims(metrics, tmp_path / "none.csv", out, js, thresholds=thresholds(), profile="cpu")
    assert counts[claims.REPRODUCED] == 5 and sum(counts.values()) == len(FAILING)
    summary = io.read_json(js)
    assert summary["n_reproduced"] == 5 and summary["profile"] == "cpu"
    assert f"`{tmp_path / 'none.csv'}` missing" in out.read_text()


# ----------------------------------------------------------------------------- intervals

def _judge(values, threshold=0.0, rule="above"):
    values = np.asarray(values, dtype=float)
    return claims.judge(compare(values.mean(), rule, threshold, ([values], "test case"), lambda a: a.mean(axis=1)),
                        n_resamples=500)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(1).normal(0.01, 0.02, 13)
    twice = [bootstrap_interval([values], lambda a: a.mean(axis=1), n_resamples=500, seed=3) for _ in range(2)]
    assert twice[0] == twice[1]
    low, high = twice[0]
    assert low < values.mean() < high and high - low < 4 * values.std()
    assert bootstrap_interval([values], lambda a: a.mean(axis=1), n_resamples=500, seed=4) != twice[0]
    with pytest.raises(ValueError, match=">= 2 units"):
        bootstrap_interval([values[:1]], lambda a: a.mean(axis=1))


def test_interval_decides_the_verdict():
    assert _judge([0.001, -0.004, 0.006, -0.002, 0.003])["verdict"] == claims.INCONCLUSIVE   # straddles 0
    clear = _judge([0.10, 0.12, 0.09, 0.11])
    assert clear["verdict"] == claims.REPRODUCED and 0.09 <= clear["ci_low"] < clear["ci_high"] <= 0.12
    assert clear["resampling_unit"] == "test case" and "per test case" in clear["interval"]
    assert _judge([-0.10, -0.12, -0.09])["verdict"] == claims.NOT_REPRODUCED
    assert _judge([0.01, -0.01, 0.005], 0.02, "within")["verdict"] == claims.REPRODUCED
    assert _judge([0.03, -0.03, 0.0], 0.02, "within")["verdict"] == claims.INCONCLUSIVE
    assert _judge([0.03, -0.03, 0.0], 0.005, "outside")["verdict"] == claims.INCONCLUSIVE
    single = claims.judge(compare(0.001, "above", 0.0, "no interval: single value"))
    assert single["verdict"] == claims.REPRODUCED and single["ci_low"] is None
    assert single["interval"] == "+0.001 (no interval: single value)"


def _cases(n):
    """``n`` test cases of per-region rows; case i scales Dice by 1 - 0.01 i."""
    return [{**r, "case": f"c{i}", "dice": r["dice"] * (1 - 0.01 * i) if r["stage"] == "stage2" else r["dice"]}
            for i in range(n) for r in region_rows()]


def test_claims_on_several_cases_get_intervals_in_json_and_report(tmp_path):
    inputs = good_inputs()
    inputs["per_region"] = _cases(3)
    d2 = float(np.mean([float(r["dice"]) for r in inputs["per_region"] if r["stage"] == "stage2"]))
    inputs["evaluation"].update(dice_mean_stage1=0.1, dice_mean_stage2=d2)   # the table's stage-1 rows: 0.1
    found = verdicts(inputs)["stage2_beats_stage1"]
    assert found["verdict"] == claims.REPRODUCED and found["resampling_unit"] == "test case (n=3)"
    assert found["ci_low"] > 0 and found["difference"] == pytest.approx(d2 - 0.1)
    # the evaluation JSON of another run than the table: no interval, said plainly
    assert verdicts(good_inputs() | {"per_region": _cases(3)})["stage2_beats_stage1"]["ci_low"] is None
    js, md = tmp_path / "claims.json", tmp_path / "claims.md"
    (tmp_path / "metrics").mkdir()
    for name, path in claims.INPUTS.items():
        if path.endswith(".json"):
            io.write_json(tmp_path / "metrics" / f"{name}.json", inputs[name])
    io.write_csv(tmp_path / "per_region.csv", inputs["per_region"])
    counts = claims.write_claims(tmp_path / "metrics", tmp_path / "per_region.csv", md, js, thresholds=thresholds())
    summary = json.loads(js.read_text())
    assert summary["n_inconclusive"] == counts[claims.INCONCLUSIVE] and summary["confidence"] == 0.95
    by = {c["id"]: c for c in summary["claims"]}
    assert by["stage2_beats_stage1"]["ci_low"] == pytest.approx(found["ci_low"])
    assert "no interval" in by["more_filters_help"]["resampling_unit"]
    header = [ln for ln in md.read_text().splitlines() if ln.startswith("|")][0]
    assert "interval" in header
    assert "per test case (n=3)" in md.read_text() and "95%" in md.read_text()


def test_figure4_regions_resampled_per_case():
    from llseg.study import comparison
    rows = [{"case": f"c{i}", "label": lb, "variant": v, "dice": 0.8 + (0.02 if v == "stage2_tta" else 0) + 0.01 * i,
             "roughness": 1.1} for i in range(3) for lb in (1, 2) for v in comparison.VARIANTS]
    inputs = good_inputs()
    inputs["two_stages"]["per_region"] = comparison.region_values(rows)
    inputs["two_stages"]["mean_dice"] = {v: 0.81 + (0.02 if v == "stage2_tta" else 0) for v in comparison.VARIANTS}
    found = verdicts(inputs)
    assert found["tta_beats_single_crop"]["resampling_unit"] == "test case (n=3)"
    assert found["tta_beats_single_crop"]["ci_low"] == pytest.approx(0.02)
    assert found["tta_beats_single_crop"]["verdict"] == claims.REPRODUCED


def test_every_claim_has_a_named_check():
    for c in CLAIMS:
        assert c.check.__name__ == c.id and c.id in claim_checks.__all__ + claim_ablation.__all__
    ids = [c.id for c in CLAIMS]
    assert ids.index("tta_smooths_contours") + 1 == ids.index("more_levels_help")     # paper order: 3.2, 3.3, 3.4
    assert ids.index("fcn_worse_early") + 1 == ids.index("overall_mean_dice")


# ----------------------------------------------------------------------------- N4: per-case CoV

def test_n4_interval_over_cases_from_the_cov_table():
    found = verdicts(good_inputs())["n4_homogeneity"]
    assert found["verdict"] == claims.REPRODUCED and found["resampling_unit"] == "case (n=10)"
    pct, share = found["comparisons"]
    assert pct["difference"] == pytest.approx(100 / 3) and 10 < pct["ci_low"] < 100 / 3 < pct["ci_high"]
    assert (share["difference"], share["ci_low"], share["ci_high"]) == (1.0, 1.0, 1.0)   # every case improves
    # 8 of 10 cases improve: the point share (0.8) meets the 0.8 threshold, the interval does not decide
    inputs = good_inputs()
    before, after = [0.14, 0.16] * 5, [0.095, 0.105] * 4 + [0.15, 0.17]
    inputs["bias_correction_cov"] = cov_rows(before, after)
    inputs["bias_correction"].update(cov_after_mean=float(np.mean(after)), n_improved=8,
                                     cov_reduction_pct=100 * (0.15 - np.mean(after)) / 0.15)
    found = verdicts(inputs)["n4_homogeneity"]
    assert found["verdict"] == claims.INCONCLUSIVE and found["difference"] == pytest.approx(0.8)
    assert found["ci_low"] < 0.8 <= found["ci_high"] and "per case (n=10)" in found["interval"]
    assert verdicts(inputs, intervals=False)["n4_homogeneity"]["verdict"] == claims.REPRODUCED


def test_n4_without_or_with_another_cov_table_keeps_a_point_verdict():
    inputs = good_inputs()
    inputs["bias_correction_cov"] = None
    found = verdicts(inputs)["n4_homogeneity"]
    assert found["verdict"] == claims.REPRODUCED and found["ci_low"] is None
    assert found["resampling_unit"] == "no interval: reports/plots/bias_correction_cov.csv missing"
    inputs["bias_correction_cov"] = cov_rows([0.2, 0.2], [0.1, 0.1])     # another run's table: not these means
    assert "give +50" in verdicts(inputs)["n4_homogeneity"]["resampling_unit"]


def test_claims_read_the_cov_table_beside_the_metrics_folder(tmp_path):
    metrics, _ = _study(tmp_path, ["bias_correction"])
    out, js = tmp_path / "claims.md", tmp_path / "claims.json"
    claims.write_claims(metrics, tmp_path / "none.csv", out, js, thresholds=thresholds())
    table = tmp_path / "reports" / "plots" / "bias_correction_cov.csv"
    assert f"`{table}` missing: the N4 claim keeps a point verdict (no interval)." in out.read_text()
    io.write_csv(table, good_inputs()["bias_correction_cov"])
    claims.write_claims(metrics, tmp_path / "none.csv", out, js, thresholds=thresholds())
    n4 = next(c for c in io.read_json(js)["claims"] if c["id"] == "n4_homogeneity")
    assert n4["resampling_unit"] == "case (n=10)" and n4["ci_low"] > 10


# ----------------------------------------------------------------------------- Figure 5: per-crop Dice

SHARED = [0.02, -0.02, 0.01, -0.01, 0.03, -0.03, 0.0, 0.0]   # per (case, side) crop, every variant: mean 0


def crop_dice(dice, offsets=SHARED):
    """``final_crop_dice`` of a variant: 4 test cases x 2 sides around ``dice``."""
    return [{"case": f"t{i // 2}", "side": ("right", "left")[i % 2], "dice": dice + o} for i, o in enumerate(offsets)]


def with_crops(inputs=None):
    inputs = inputs or good_inputs()
    for v in inputs["ablation"]["variants"].values():
        v["final_crop_dice"] = crop_dice(v["final_dice"])
    return inputs


def case_bootstrap_only():
    """params.yaml's claims settings without the retraining SD: the test cases' spread alone."""
    return {**thresholds(), "ablation_training_sd": 0.0}


def test_ablation_claims_get_a_case_bootstrap_of_the_end_of_training_crop_dice():
    found = verdicts(with_crops(), case_bootstrap_only())
    for cid in USES["ablation"] - {"residual_costs_more", "bigger_costs_more", "fcn_worse_early"}:
        assert found[cid]["verdict"] == claims.REPRODUCED, found[cid]
        assert found[cid]["resampling_unit"] == "test case (n=4)" and found[cid]["ci_low"] is not None
    assert "end-of-training crop Dice" in found["more_filters_help"]["measured"]
    assert found["residual_costs_more"]["resampling_unit"] == "no interval: exact parameter counts"
    assert "early_dice" in found["fcn_worse_early"]["resampling_unit"]
    # filters_32 ahead of filters_8 by 0.10 +- 0.04 per case: the interval is the bootstrap of the per-case gaps
    inputs = with_crops()
    v = inputs["ablation"]["variants"]
    v["filters_32"]["final_crop_dice"] = crop_dice(0.85, [o + g for o, g in zip(SHARED, [0.04] * 2 + [-0.04] * 6)])
    gaps = np.array([0.04, -0.04, -0.04, -0.04]) + 0.10
    found = verdicts(inputs, case_bootstrap_only())["more_filters_help"]
    assert found["difference"] == pytest.approx(gaps.mean())                 # the crop mean, not final_dice
    assert (found["ci_low"], found["ci_high"]) == pytest.approx(bootstrap_interval([gaps], lambda a: a.mean(axis=1)))


def test_ablation_interval_decides_and_old_runs_keep_a_point_verdict():
    inputs = with_crops()
    # levels_4 ahead of levels_2 (0.70) by +0.1 in two cases and -0.09 in two: a point gain, no decision
    swing = [0.1, 0.1, -0.09, -0.09, 0.1, 0.1, -0.09, -0.09]
    inputs["ablation"]["variants"]["levels_4"]["final_crop_dice"] = crop_dice(0.70, np.add(SHARED, swing).tolist())
    found = verdicts(inputs)["more_levels_help"]
    assert found["verdict"] == claims.INCONCLUSIVE and found["difference"] == pytest.approx(0.005)
    assert found["ci_low"] < 0 < found["ci_high"]
    del inputs["ablation"]["variants"]["levels_2"]["final_crop_dice"]       # an old run: no per-crop Dice
    found = verdicts(inputs)["more_levels_help"]
    assert found["verdict"] == claims.REPRODUCED and found["ci_low"] is None   # final_dice 0.81 - 0.70, single
    assert found["difference"] == pytest.approx(0.11) and "('final_crop_dice') for 1 of 3 variants" in found["interval"]
    inputs = with_crops()
    inputs["ablation"]["variants"]["dense"]["final_crop_dice"] = crop_dice(0.797)[:6]   # another set of crops
    assert "cover different crops" in verdicts(inputs)["dense_worst"]["resampling_unit"]
    t = thresholds()
    t["ablation_dice"] = "best_dice"
    assert "best_dice" in verdicts(with_crops(), t)["residual_about_plain"]["resampling_unit"]
    inputs = with_crops()
    for c in inputs["ablation"]["variants"]["dense"]["final_crop_dice"]:
        c["dice"] = None                                                     # NaN in the JSON: never a guess
    found = verdicts(inputs)["dense_worst"]
    assert found["verdict"] == claims.NOT_TESTABLE and "'dense'" in found["reason"]


def test_bootstrap_offset_sd_adds_the_spread_the_units_do_not_hold():
    values = np.random.default_rng(2).normal(0.01, 0.002, 13)            # tight per-case values: a narrow interval
    mean = lambda a: a.mean(axis=1)  # noqa: E731
    narrow = bootstrap_interval([values], mean, n_resamples=2000, seed=3)
    assert bootstrap_interval([values], mean, n_resamples=2000, seed=3, offset_sd=[0.0]) == narrow
    wide = bootstrap_interval([values], mean, n_resamples=2000, seed=3, offset_sd=[0.01])
    assert wide == bootstrap_interval([values], mean, n_resamples=2000, seed=3, offset_sd=[0.01])   # seeded
    # a normal draw of SD 0.01 on top: the 95 % interval is about +-1.96 * 0.01 wide around the mean
    assert wide[1] - wide[0] == pytest.approx(2 * 1.96 * np.hypot(0.01, values.std() / np.sqrt(13)), rel=0.1)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    # a difference of two samples, each with its own offset: SDs add in quadrature
    a, b = values, values + 0.02
    both = bootstrap_interval([a, b], lambda x, y: (y - x).mean(axis=1), n_resamples=4000, seed=1, offset_sd=[0.01, 0.01])
    assert both[1] - both[0] == pytest.approx(2 * 1.96 * 0.01 * np.sqrt(2), rel=0.1)
    with pytest.raises(ValueError, match="one per sample"):
        bootstrap_interval([a, b], lambda x, y: (y - x).mean(axis=1), offset_sd=[0.01])


def test_ablation_training_sd_widens_the_figure5_intervals():
    inputs = with_crops()
    v = inputs["ablation"]["variants"]
    v["levels_4"]["final_crop_dice"] = crop_dice(0.712)                   # 0.012 ahead of levels_2 in every crop
    v["levels_2"]["final_crop_dice"] = crop_dice(0.700)
    found = verdicts(inputs, case_bootstrap_only())["more_levels_help"]
    assert found["verdict"] == claims.REPRODUCED and found["ci_low"] == pytest.approx(0.012)   # no spread over cases
    t = {**thresholds(), "ablation_training_sd": 0.01}                   # each network's retraining SD
    found = verdicts(inputs, t)["more_levels_help"]
    assert found["verdict"] == claims.INCONCLUSIVE and found["ci_low"] < 0 < found["ci_high"]
    assert found["difference"] == pytest.approx(0.012)                   # the point value stays the measured one
    assert "retraining SD 0.01 per network" in found["resampling_unit"]
    # a gap far beyond the retraining spread still decides
    v["levels_4"]["final_crop_dice"] = crop_dice(0.80)
    assert verdicts(inputs, t)["more_levels_help"]["verdict"] == claims.REPRODUCED
    # params.yaml's SD (measured) is what the study uses; the claims without per-crop Dice ignore it
    found, zero = verdicts(inputs), verdicts(inputs, case_bootstrap_only())
    sd = thresholds()["ablation_training_sd"]
    assert sd > 0 and f"retraining SD {sd:g} per network" in found["more_levels_help"]["resampling_unit"]
    assert {k: c for k, c in found.items() if k not in USES["ablation"]} == \
        {k: c for k, c in zero.items() if k not in USES["ablation"]}
    assert found["bigger_costs_more"] == zero["bigger_costs_more"]


def test_bootstrap_of_one_unit_is_the_offsets_spread_alone():
    """One value per sample (nothing to resample): with offsets, the interval is the percentile
    interval of the draws, about +-1.96 SD; without offsets, an error."""
    low, high = bootstrap_interval([np.array([0.3])], lambda a: a.mean(axis=1), n_resamples=4000, seed=0,
                                   offset_sd=[0.02])
    assert (low + high) / 2 == pytest.approx(0.3, abs=0.003)
    assert high - low == pytest.approx(2 * 1.96 * 0.02, rel=0.1)
    assert (low, high) == bootstrap_interval([np.array([0.3])], lambda a: a.mean(axis=1), n_resamples=4000, seed=0,
                                             offset_sd=[0.02])                                 # seeded
    two = bootstrap_interval([np.array([0.3]), np.array([0.5])], lambda x, y: (y - x).mean(axis=1),
                             n_resamples=4000, seed=1, offset_sd=[0.02, 0.02])
    assert two[1] - two[0] == pytest.approx(2 * 1.96 * 0.02 * np.sqrt(2), rel=0.1)          # in quadrature
    with pytest.raises(ValueError, match="need >= 2 units"):
        bootstrap_interval([np.array([0.3])], lambda a: a.mean(axis=1))


def test_fcn_worse_early_gets_the_retraining_interval():
    """fcn_worse_early has no per-crop Dice early in training: with ablation_early_training_sd its
    interval is the spread of retraining alone, so a lag smaller than that spread is inconclusive;
    with SD 0 it keeps its point verdict; a lag far beyond it still decides."""
    inputs = good_inputs()
    inputs["ablation"]["variants"]["fcn8s"]["early_dice"] = 0.58     # 0.02 behind early, 0.025 behind at the end
    point = verdicts(inputs, {**thresholds(), "ablation_early_training_sd": 0.0})["fcn_worse_early"]
    assert point["verdict"] == claims.NOT_REPRODUCED and point["ci_low"] is None
    t = {**thresholds(), "ablation_early_training_sd": 0.027}
    found = verdicts(inputs, t)["fcn_worse_early"]
    assert found["verdict"] == claims.INCONCLUSIVE
    first, second = found["comparisons"]
    assert first["difference"] == pytest.approx(0.02) and first["ci_low"] < 0 < first["ci_high"]
    assert second["difference"] == pytest.approx(-0.005) and second["ci_low"] < 0 < second["ci_high"]
    assert first["resampling_unit"].startswith("network retrained (SD 0.027; no per-crop early_dice")
    # FCN-8s's lag early (0.2) far beyond the spread, and far larger than at the end (0.025): reproduced
    assert verdicts(good_inputs(), t)["fcn_worse_early"]["verdict"] == claims.REPRODUCED


def test_bootstrap_statistic_sd_adds_the_spread_of_retraining_everything():
    """statistic_sd shifts the statistic of every resample by a normal draw: the interval widens to
    about sqrt(case spread^2 + SD^2), stays seeded, and alone (one unit) is +-1.96 SD."""
    values = np.random.default_rng(2).normal(0.01, 0.004, 13)
    mean = lambda a: a.mean(axis=1)  # noqa: E731
    low, high = bootstrap_interval([values], mean, n_resamples=4000, seed=0)
    wide = bootstrap_interval([values], mean, n_resamples=4000, seed=0, statistic_sd=0.005)
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert wide[1] - wide[0] == pytest.approx(2 * 1.96 * np.hypot(se, 0.005), rel=0.1)
    assert wide == bootstrap_interval([values], mean, n_resamples=4000, seed=0, statistic_sd=0.005)
    alone = bootstrap_interval([[0.5]], lambda d: d[:, 0], n_resamples=4000, seed=0, statistic_sd=0.1)
    assert alone[1] - alone[0] == pytest.approx(2 * 1.96 * 0.1, rel=0.1) and alone[0] < 0.5 < alone[1]
    with pytest.raises(ValueError, match="statistic_sd"):
        bootstrap_interval([values], mean, statistic_sd=-0.1)


def tta_inputs(gain):
    """Figure 4 on 4 test cases of 2 regions: TTA ``gain`` ahead of the best single crop in every region."""
    from llseg.study import comparison
    rows = [{"case": f"c{i}", "label": lb, "variant": v, "roughness": 1.1,
             "dice": 0.8 + 0.01 * i + (gain if v == "stage2_tta" else 0.0)}
            for i in range(4) for lb in (1, 2) for v in comparison.VARIANTS]
    inputs = good_inputs()
    inputs["two_stages"]["per_region"] = comparison.region_values(rows)
    inputs["two_stages"]["mean_dice"] = {v: 0.815 + (gain if v == "stage2_tta" else 0.0) for v in comparison.VARIANTS}
    return inputs


def test_study_retraining_sd_widens_the_claims_of_the_study_networks():
    """A TTA gain of 0.004 in every case is reproduced by the case bootstrap alone; with the study's
    retraining SD (0.006) it is inconclusive, its point value unchanged; a gain far beyond the
    spread still decides; claims the SD does not name are untouched."""
    t0 = {**thresholds(), "study_retraining_sd": {}}
    found = verdicts(tta_inputs(0.004), t0)["tta_beats_single_crop"]
    assert found["verdict"] == claims.REPRODUCED and found["ci_low"] == pytest.approx(0.004)
    t = {**t0, "study_retraining_sd": {"tta_beats_single_crop": 0.006}}
    found = verdicts(tta_inputs(0.004), t)
    tta = found["tta_beats_single_crop"]
    assert tta["verdict"] == claims.INCONCLUSIVE and tta["ci_low"] < 0 < tta["ci_high"]
    assert tta["difference"] == pytest.approx(0.004) and tta["comparisons"][0]["retraining_sd"] == 0.006
    assert "study retraining SD 0.006" in tta["interval"] and tta["resampling_unit"] == "test case (n=4)"
    assert verdicts(tta_inputs(0.05), t)["tta_beats_single_crop"]["verdict"] == claims.REPRODUCED
    alone = verdicts(tta_inputs(0.004), t0)
    assert {k: c for k, c in found.items() if k != "tta_beats_single_crop"} == \
        {k: c for k, c in alone.items() if k != "tta_beats_single_crop"}
    # point verdicts ignore it
    assert verdicts(tta_inputs(0.004), t, intervals=False)["tta_beats_single_crop"]["verdict"] == claims.REPRODUCED


def test_study_retraining_sd_per_comparison_and_on_single_values():
    """One SD per comparison (most_below_5pct_4mm has two); a comparison without per-unit data gets
    the interval of retraining alone; the wrong number of SDs, an unknown claim or a negative SD
    is an error naming the key."""
    t = {**thresholds(), "study_retraining_sd": {"most_below_5pct_4mm": [0.0, 0.5]}}
    most = verdicts(good_inputs(), t)["most_below_5pct_4mm"]["comparisons"]
    assert [c["retraining_sd"] for c in most] == [0.0, 0.5]
    single = claims.judge(compare(0.05, "above", 0.0, "no interval: single value", None), n_resamples=4000)
    assert single["verdict"] == claims.REPRODUCED and single["ci_low"] is None
    sd = claims.judge(replace(compare(0.05, "above", 0.0, "no interval: single value"), retraining_sd=0.1),
                      n_resamples=4000)
    assert sd["verdict"] == claims.INCONCLUSIVE and sd["ci_low"] < 0 < sd["ci_high"]
    assert sd["resampling_unit"].startswith("retraining only") and "study retraining SD 0.1 only" in sd["interval"]
    for bad, match in (({"most_below_5pct_4mm": [0.1, 0.1, 0.1]}, "3 SDs for 2 comparisons"),
                       ({"no_such_claim": 0.1}, "unknown claim"), ({"msd_mean": -0.1}, "study_retraining_sd.msd_mean"),
                       ([0.1], "must map claim ids")):
        with pytest.raises(ValueError, match=match):
            verdicts(good_inputs(), {**thresholds(), "study_retraining_sd": bad})


# ----------------------------------------------------------------------------- cohorts lacking muscles

SEVEN = ("adductor_longus", "gracilis", "rectus_femoris", "sartorius", "vastus_intermedius", "vastus_lateralis",
         "vastus_medialis")
#: Claims over all 35 muscles (the paper's counts and means), and claims about a pattern over muscles.
ALL_35 = {"within_interobserver_count", "volume_error_mean", "volume_error_above_10pct", "msd_mean", "msd_above_4mm",
          "most_below_5pct_4mm"}
PATTERN = {"large_muscles_within", "small_muscles_worst", "table1_pattern", "msd_tracks_dice",
           "volume_error_tracks_dice"}


def partial_inputs(keep, cases=("c1", "c2")):
    """good_inputs() for a cohort whose test labels hold only the muscles ``keep`` (both sides, two cases);
    dice_table, volume_msd and evaluation recomputed from those rows, as the notebooks and `llseg evaluate` do."""
    from llseg.study import evaluation

    inputs = good_inputs()
    rows = [{**r, "case": c, "dice": r["dice"] - 0.01 * i, "msd_mm": 1.0 + 10 * (1 - r["dice"]) + 0.1 * i}
            for i, c in enumerate(cases) for r in region_rows() if r["muscle"] in keep]
    inputs["per_region"] = rows
    final = evaluation.select_stage(rows, "stage2")
    table = evaluation.table1(final)
    inputs["dice_table"] = evaluation.json_ready({**evaluation.table1_counts(table),
                                                  **evaluation.compare_with_paper(final)})
    inputs["volume_msd"] = evaluation.json_ready(evaluation.volume_msd_summary(final))
    inputs["evaluation"] = evaluation.evaluation_summary(rows)
    return inputs


def test_a_cohort_of_seven_muscles_tests_only_what_it_can():
    found = verdicts(partial_inputs(SEVEN))
    untestable = {k for k, c in found.items() if c["verdict"] == claims.NOT_TESTABLE}
    assert untestable == ALL_35 | PATTERN | {"external_rotators_among_worst"} | set(USES["ablation"])
    lacking = "this cohort's test labels lack 28: adductor_brevis, adductor_magnus, biceps_femoris_long"
    assert found["within_interobserver_count"]["reason"].startswith(
        "needs all 35 muscles (the paper's count is out of all 35); " + lacking)
    assert found["msd_mean"]["reason"].startswith("needs all 35 muscles (the paper's mean is over all 35)")
    assert found["table1_pattern"]["reason"] == ("needs at least 10 muscles (a rank correlation with Table 1); "
                                                 "this cohort's test labels hold 7 of 35")
    assert found["external_rotators_among_worst"]["reason"].startswith("needs external_rotators (the claim is about "
                                                                       "them), absent from this cohort's test labels")
    assert found["more_levels_help"]["reason"].startswith("needs adductor_brevis (the ablation muscle")
    for k in untestable:
        assert found[k]["measured"] == "n/a" and found[k]["rule"]
    # what does not need the missing muscles is still judged, on the muscles present
    assert found["stage2_beats_stage1"]["verdict"] != claims.NOT_TESTABLE
    assert found["worse_only_slightly"]["verdict"] != claims.NOT_TESTABLE
    overall = found["overall_mean_dice"]
    paper7 = np.mean([anatomy.muscle(k).paper_dice_mean for k in SEVEN])
    assert overall["verdict"] == claims.REPRODUCED and f"over 7 of 35 muscles; Table 1 over the same {paper7:.3f}" \
        in overall["measured"]
    assert overall["difference"] == pytest.approx(np.mean([anatomy.muscle(k).paper_dice_mean - 0.005 for k in SEVEN])
                                                  - paper7)
    assert overall["resampling_unit"] == "test case (n=2)"     # the interval's data agree with the JSON


def test_stage1_localises_counts_the_regions_a_partial_cohort_labels():
    """Estimated boxes are a share of the regions each test case labels (14 for 7 muscles per side), not of 70."""
    inputs = partial_inputs(SEVEN)
    inputs["cascade"] = {"cases": [{"case": "c1", "n_estimated_boxes": 4}, {"case": "c2", "n_estimated_boxes": 2}]}
    found = verdicts(inputs)["stage1_localises"]
    assert found["difference"] == pytest.approx((4 / 14 + 2 / 14) / 2)
    assert found["measured"].startswith("3.0 of 14 boxes estimated per case (21%)")
    assert found["verdict"] == claims.INCONCLUSIVE and found["resampling_unit"] == "test case (n=2)"
    inputs["cascade"]["cases"][0]["n_estimated_boxes"] = 1
    assert verdicts(inputs)["stage1_localises"]["verdict"] == claims.REPRODUCED    # 1/14 and 2/14 <= 0.2
    whole = good_inputs()                                                          # a whole-leg cohort: of 70
    assert verdicts(whole)["stage1_localises"]["measured"].startswith("2.0 of 70 boxes")
    inputs["per_region"] = None                                                    # lacking muscles, no table
    inputs["dice_table"]["muscles_absent"] = [m.key for m in anatomy.MUSCLES if m.key not in SEVEN]
    found = verdicts(inputs)["stage1_localises"]
    assert found["verdict"] == claims.NOT_TESTABLE and "no labelled region of test case(s) c1, c2" in found["reason"]


def test_a_cohort_with_most_muscles_keeps_its_pattern_claims():
    """20 muscles with the external rotators and the ablation muscle: pattern, rank and ablation claims are
    judged over the muscles present; only the claims over all 35 are not testable."""
    keep = [m.key for m in anatomy.MUSCLES][:20]
    assert "external_rotators" in keep and "adductor_brevis" in keep
    found = verdicts(partial_inputs(keep))
    untestable = {k for k, c in found.items() if c["verdict"] == claims.NOT_TESTABLE}
    assert untestable == ALL_35
    assert "rank 1 of 20" in found["external_rotators_among_worst"]["measured"]
    assert found["table1_pattern"]["measured"] == "rho 1.00 over 20 muscles"
    assert found["table1_pattern"]["resampling_unit"] == "test case (n=2)"   # statistic over the same 20 muscles


def test_regions_not_labelled_are_not_scored_in_claims():
    """Rows of regions absent from a case's ground truth (volume_true_ml 0, Dice 0 in an older table) mark the
    muscle absent; they never count as misses."""
    inputs = good_inputs()
    for r in inputs["per_region"]:
        if r["muscle"] == "soleus":
            r.update(volume_true_ml=0.0, dice=0.0)
    found = verdicts(inputs)
    assert found["within_interobserver_count"]["verdict"] == claims.NOT_TESTABLE
    assert found["within_interobserver_count"]["reason"].endswith("lack 1: soleus")
    assert found["small_muscles_worst"]["verdict"] == claims.REPRODUCED
    assert found["worse_only_slightly"]["verdict"] == claims.REPRODUCED


def test_absent_muscles_read_from_the_metrics_json_without_the_table():
    inputs = good_inputs()
    inputs["per_region"] = None
    inputs["dice_table"]["muscles_absent"] = ["soleus", "popliteus"]
    found = verdicts(inputs)
    assert found["within_interobserver_count"]["reason"].endswith("lack 2: soleus, popliteus")
    assert found["msd_mean"]["verdict"] == claims.NOT_TESTABLE
    inputs["dice_table"]["muscles_absent"] = []                     # a whole-leg cohort: as before
    assert verdicts(inputs)["within_interobserver_count"]["verdict"] == claims.REPRODUCED


def test_report_counts_and_explains_not_testable_claims(tmp_path):
    inputs = partial_inputs(SEVEN)
    metrics = tmp_path / "metrics"
    for name, data in inputs.items():
        if name == "per_region":
            io.write_csv(tmp_path / "rows.csv", data)
        elif name != "bias_correction_cov":
            io.write_json(metrics / f"{name}.json", data)
    out, js = tmp_path / "claims.md", tmp_path / "claims.json"
    counts = claims.write_claims(metrics, tmp_path / "rows.csv", out, js, thresholds=thresholds())
    n_untestable = len(ALL_35 | PATTERN) + 1 + len(USES["ablation"])
    assert counts[claims.NOT_TESTABLE] == n_untestable == io.read_json(js)["n_not_testable_here"]
    md = out.read_text()
    assert f"{n_untestable} not testable here.**" in md
    assert ("Absent from this cohort's test labels (not scored), 28 of 35 muscles: Adductor brevis, Adductor magnus"
            in md) and "need at least 10 of them" in md
    assert "not testable here: needs at least 10 muscles (a rank correlation with Table 1)" in md
