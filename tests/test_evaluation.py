"""Study-level evaluation: Table 1, counts, volume/MSD summary, correlations, Markdown, `llseg evaluate`."""
import math

import numpy as np
import pytest
from scipy import stats

from llseg import anatomy, cli, io
from llseg.study import evaluation

KEYS = [m.key for m in anatomy.MUSCLES]
NAN = float("nan")


def row(muscle, dice=0.9, msd=1.0, vol=2.0, *, side="right", case="c1", stage=None, volume_true=100.0):
    r = {"case": case, "muscle": muscle, "side": side, "dice": dice, "msd_mm": msd,
         "volume_error_abs_pct": vol, "volume_true_ml": volume_true}
    if stage is not None:
        r["stage"] = stage
    return r


def paper_rows():
    """Both sides of every muscle scored exactly at the paper's Table-1 mean."""
    return [row(m.key, m.paper_dice_mean, side=s, volume_true=m.volume_ml) for m in anatomy.MUSCLES
            for s in ("right", "left")]


# ----------------------------------------------------------------------------- Table 1

def test_table1_known_means_sd_and_verdicts():
    rows = [row("adductor_brevis", 0.9), row("adductor_brevis", 0.8, side="left"),    # mean .85 < .88
            row("adductor_longus", 0.95), row("adductor_longus", 0.97, side="left"),  # mean .96 >= .94
            row("gracilis", 0.96), row("gracilis", NAN, side="left")]                # one value, one NaN
    table = evaluation.table1(rows)
    assert [t["muscle"] for t in table] == ["adductor_brevis", "adductor_longus", "gracilis"]  # present only
    by = {t["muscle"]: t for t in table}
    ab = by["adductor_brevis"]
    assert ab["dice_mean"] == pytest.approx(0.85)
    assert ab["dice_sd"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert ab["n"] == 2 and ab["n_nan"] == 0 and ab["within_interobserver"] is False
    assert ab["interobserver_dice"] == 0.88 and ab["paper_dice_mean"] == 0.83 and ab["paper_dice_sd"] == 0.024
    assert ab["paper_mean_sd"] == "0.83 ± 0.024" and ab["this_run_mean_sd"] == "0.850 ± 0.071"
    assert ab["paper_within_interobserver"] is False
    assert by["adductor_longus"]["within_interobserver"] is True
    g = by["gracilis"]  # mean 0.96 >= interobserver 0.96 counts as within; sd undefined with n = 1
    assert g["n"] == 1 and g["n_nan"] == 1 and g["within_interobserver"] is True
    assert math.isnan(g["dice_sd"]) and g["this_run_mean_sd"] == "0.960"
    assert "soleus" not in by  # no rows at all: absent, not a row of NaN
    nan_only = {t["muscle"]: t for t in evaluation.table1(rows + [row("soleus", NAN)])}["soleus"]
    assert nan_only["n"] == 0 and math.isnan(nan_only["dice_mean"]) and nan_only["within_interobserver"] is None
    assert nan_only["this_run_mean_sd"] == "n/a"


def test_table1_counts_paper_values_give_the_table_counts():
    counts = evaluation.table1_counts(evaluation.table1(paper_rows()))
    # ">= interobserver" on Table 1's own rounded values gives 15 / 20, the text says 14 / 21.
    assert (counts["n_within"], counts["n_worse"], counts["n_undetermined"]) == (15, 20, 0)
    assert (counts["paper_table_within"], counts["paper_table_worse"]) == (15, 20)
    assert (counts["paper_stated_within"], counts["paper_stated_worse"]) == (14, 21)
    assert counts["n_same_as_paper_table"] == 35 and counts["n_muscles"] == 35
    assert "obturator_externus" in counts["within"] and "psoas_major" in counts["worse"]


def test_table1_counts_undetermined_and_perfect():
    counts = evaluation.table1_counts(evaluation.table1([row("soleus", 1.0), row("psoas_major", NAN)]))
    assert (counts["n_within"], counts["n_worse"], counts["n_undetermined"]) == (1, 0, 1)
    assert counts["within"] == ["soleus"] and counts["undetermined"] == ["psoas_major"]
    assert counts["n_muscles"] == 2 and counts["n_muscles_absent"] == 33 and "gracilis" in counts["muscles_absent"]
    assert counts["n_same_as_paper_table"] == 1  # soleus: within in both; undetermined never "same"
    with pytest.raises(ValueError, match="within_interobserver"):
        evaluation.table1_counts([{"muscle": "soleus"}])


def test_stage_selection():
    rows = [row("soleus", 0.5, stage="stage1"), row("soleus", 0.9, stage="stage2")]
    with pytest.raises(ValueError, match="mix stages"):
        evaluation.table1(rows)
    t2 = {t["muscle"]: t for t in evaluation.table1(rows, stage="stage2")}
    assert t2["soleus"]["dice_mean"] == 0.9 and t2["soleus"]["n"] == 1
    with pytest.raises(ValueError, match="no 'stage' column"):
        evaluation.select_stage([row("soleus")], "stage2")
    assert evaluation.select_stage(rows, "stage3") == []


def test_bad_rows_are_rejected_with_the_problem_named():
    with pytest.raises(ValueError, match="lacks column"):
        evaluation.table1([{"muscle": "soleus"}])
    with pytest.raises(ValueError, match="unknown muscle 'biceps'"):
        evaluation.table1([row("biceps")])
    with pytest.raises(TypeError, match="mapping"):
        evaluation.table1([("soleus", 0.9)])
    with pytest.raises(TypeError, match="iterable of mappings"):
        evaluation.table1(row("soleus"))
    with pytest.raises(ValueError, match="'abc' is not a number"):
        evaluation.table1([row("soleus", "abc")])
    # None and "" (a CSV's empty cell) are NaN, counted as such
    t = {r["muscle"]: r for r in evaluation.table1([row("soleus", None), row("soleus", ""), row("soleus", "0.5")])}
    assert t["soleus"]["n"] == 1 and t["soleus"]["n_nan"] == 2 and t["soleus"]["dice_mean"] == 0.5


def test_empty_rows_give_documented_nans():
    assert evaluation.table1([]) == []
    assert evaluation.table1_counts([])["muscles_absent"] == KEYS
    s = evaluation.volume_msd_summary([])
    assert s["n_rows"] == 0 and math.isnan(s["msd_mm_mean"]) and math.isnan(s["dice_msd_pearson_r"])
    assert s["n_muscles_volume_undetermined"] == 0 and s["n_muscles_absent"] == 35


def test_per_muscle_and_order_by_volume():
    rows = [row("soleus", volume_true=400), row("soleus", volume_true=500, side="left"),
            row("gracilis", volume_true=600), row("popliteus", volume_true=NAN)]
    pm = {e["muscle"]: e for e in evaluation.per_muscle(rows, columns=("volume_true_ml",))}
    assert list(pm) == ["gracilis", "popliteus", "soleus"]  # the muscles present, Table-1 order
    assert pm["soleus"]["volume_true_ml_mean"] == 450 and pm["soleus"]["n_volume_true_ml"] == 2
    assert pm["popliteus"]["n_volume_true_ml"] == 0 and pm["popliteus"]["n_volume_true_ml_nan"] == 1
    # unmeasured muscles follow the measured ones by anatomy reference volume; absent ones are not listed
    assert evaluation.muscles_by_volume(rows) == ["gracilis", "soleus", "popliteus"]
    assert evaluation.muscles_by_volume(rows + [row("external_rotators", volume_true=NAN),
                                                row("gluteus_maximus", volume_true=NAN)])[2:] == [
        "gluteus_maximus", "popliteus", "external_rotators"]


# ----------------------------------------------------------------------------- volume / MSD

def test_volume_msd_summary_known_means_nans_and_thresholds():
    rows = [row("soleus", 0.9, 1.0, 8.0), row("soleus", 0.8, 3.0, 14.0, side="left"),   # mean vol 11 > 10
            row("gracilis", 0.7, 5.0, 12.0), row("gracilis", 0.6, 4.0, 6.0, side="left"),  # mean vol 9, MSD 4.5
            row("pectineus", 0.5, NAN, NAN)]                                             # empty-mask row
    s = evaluation.volume_msd_summary(rows)
    assert s["n_rows"] == 5
    assert s["volume_error_abs_pct_mean"] == pytest.approx(10.0) and s["volume_error_abs_pct_median"] == 10.0
    assert s["n_volume"] == 4 and s["n_volume_nan"] == 1
    assert s["msd_mm_mean"] == pytest.approx(3.25) and s["n_msd"] == 4 and s["n_msd_nan"] == 1
    assert s["muscles_above_volume_threshold"] == ["soleus"] and s["n_muscles_above_volume_threshold"] == 1
    assert s["muscles_above_msd_threshold"] == ["gracilis"]  # a row above is not enough: soleus' mean MSD is 2
    assert s["n_muscles_volume_undetermined"] == 1  # pectineus (NaN); the 32 muscles without rows are absent
    assert s["n_muscles_absent"] == 32 and "pectineus" not in s["muscles_absent"]
    assert s["share_volume_below_typical"] == pytest.approx(0.0)  # no |error| below 5 %
    assert s["share_msd_below_threshold"] == pytest.approx(0.5)   # 1 and 3 mm of 1, 3, 5, 4
    assert s["overlap_above_volume_threshold"] == []
    assert s["paper_volume_error_abs_pct_mean"] == 6.5 and s["paper_msd_mm_mean"] == 2.9
    assert s["paper_n_muscles_above_volume_threshold"] == 7 and s["paper_n_muscles_above_msd_threshold"] == 7
    assert "quadratus_femoris" in s["paper_muscles_above_volume_threshold"]
    # Dice-MSD correlation: the NaN pair is dropped and counted
    d, m = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1.0, 3.0, 5.0, 4.0])
    assert s["n_dice_msd_pairs"] == 4 and s["n_dice_msd_pairs_dropped"] == 1
    assert s["dice_msd_pearson_r"] == pytest.approx(stats.pearsonr(d, m).statistic)
    assert s["dice_msd_spearman_rho"] == pytest.approx(-0.8)
    assert s["dice_msd_pearson_r"] < 0


def test_volume_msd_thresholds_and_overlap_with_paper():
    rows = [row("piriformis", vol=25.0), row("soleus", vol=10.0)]  # exactly at the threshold is not above
    s = evaluation.volume_msd_summary(rows)
    assert s["muscles_above_volume_threshold"] == ["piriformis"] == s["overlap_above_volume_threshold"]
    s5 = evaluation.volume_msd_summary(rows, volume_threshold_pct=5.0, msd_threshold_mm=0.5)
    assert s5["muscles_above_volume_threshold"] == ["piriformis", "soleus"] and s5["volume_threshold_pct"] == 5.0
    assert s5["n_muscles_above_msd_threshold"] == 2
    with pytest.raises(ValueError, match="msd_threshold_mm"):
        evaluation.volume_msd_summary(rows, msd_threshold_mm=NAN)


def test_correlation_undefined_for_constant_or_too_few_pairs():
    perfect = [row(k, 1.0, 0.0, 0.0) for k in KEYS[:5]]  # truth as prediction: constant values
    s = evaluation.volume_msd_summary(perfect)
    assert math.isnan(s["dice_msd_pearson_r"]) and math.isnan(s["dice_msd_spearman_rho"])
    assert s["n_dice_msd_pairs"] == 5 and s["msd_mm_mean"] == 0.0 and s["volume_error_abs_pct_mean"] == 0.0
    two = evaluation.volume_msd_summary([row("soleus", 0.9, 1.0), row("gracilis", 0.8, 2.0)])
    assert math.isnan(two["dice_msd_pearson_r"]) and two["n_dice_msd_pairs"] == 2
    exact = evaluation.volume_msd_summary([row(k, 0.9 - 0.1 * i, 1.0 + i) for i, k in enumerate(KEYS[:4])])
    assert exact["dice_msd_pearson_r"] == pytest.approx(-1.0) and exact["dice_msd_spearman_rho"] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- comparison / summaries

def test_compare_with_paper_on_the_papers_own_values():
    c = evaluation.compare_with_paper(paper_rows())
    assert c["n_muscles"] == 35 and c["n_muscles_undetermined"] == 0
    assert c["mean_difference_to_paper"] == pytest.approx(0.0, abs=1e-12)
    assert c["dice_mean_over_muscles"] == pytest.approx(np.mean([m.paper_dice_mean for m in anatomy.MUSCLES]))
    assert c["n_at_or_above_paper"] == 35 and c["spearman_vs_paper"] == pytest.approx(1.0)
    assert c["n_within_larger_half"] + c["n_within_smaller_half"] == 15
    assert (c["n_within_larger_half"], c["n_within_smaller_half"]) == (c["paper_within_larger_half"],
                                                                       c["paper_within_smaller_half"])
    worst = c["largest_shortfalls"]
    # Table 1's largest shortfalls: external rotators (0.70 vs 0.84) and psoas major (0.78 vs 0.92)
    assert {w["muscle"] for w in worst[:2]} == {"external_rotators", "psoas_major"}
    assert worst[0]["difference"] == pytest.approx(-0.14) and worst[1]["difference"] == pytest.approx(-0.14)
    assert [w["difference"] for w in worst] == sorted(w["difference"] for w in worst) and len(worst) == 5
    assert c["best_vs_interobserver"][0]["muscle"] == "obturator_externus"


def test_one_voxel_margin_reference_in_table1_and_comparison():
    rows = paper_rows()
    assert all(math.isnan(t["one_voxel_margin_dice"]) for t in evaluation.table1(rows))     # column absent
    c = evaluation.compare_with_paper(rows)
    assert math.isnan(c["one_voxel_margin_dice_mean_over_muscles"]) and c["n_above_one_voxel_margin"] == 0
    # soleus scored 0.9 against margin Dice 0.8 and 0.7 (mean 0.75); every other muscle at 0.95 vs 0.9
    rows = [{**r, evaluation.MARGIN: 0.9, "dice": 0.95} for r in rows if r["muscle"] != "soleus"]
    rows += [{**row("soleus", 0.9), evaluation.MARGIN: 0.8}, {**row("soleus", 0.9, side="left"), evaluation.MARGIN: 0.7}]
    table = {t["muscle"]: t for t in evaluation.table1(rows)}
    assert table["soleus"]["one_voxel_margin_dice"] == pytest.approx(0.75)
    assert table["gracilis"]["one_voxel_margin_dice"] == pytest.approx(0.9)
    c = evaluation.compare_with_paper(rows)
    assert c["one_voxel_margin_dice_mean_over_muscles"] == pytest.approx((34 * 0.9 + 0.75) / 35)
    assert c["n_above_one_voxel_margin"] == 35
    rows[0] = {**rows[0], "dice": 0.87}          # one side below its margin: the muscle's mean 0.91 still above
    assert evaluation.compare_with_paper(rows)["n_above_one_voxel_margin"] == 35
    rows[1] = {**rows[1], "dice": 0.85}
    assert evaluation.compare_with_paper(rows)["n_above_one_voxel_margin"] == 34


def test_stage_and_evaluation_summary():
    rows = ([row("soleus", 0.5, 2.0, 10.0, stage="stage1"), row("gracilis", NAN, NAN, NAN, stage="stage1")]
            + [row("soleus", 1.0, NAN, 0.0, stage="stage2", case=c) for c in ("a", "b")])
    s1, s2 = evaluation.stage_summary(rows)
    assert s1["stage"] == "stage1" and s1["n_rows"] == 2 and s1["dice_mean"] == 0.5 and s1["n_dice_nan"] == 1
    assert s2["msd_mm_mean"] != s2["msd_mm_mean"] and s2["n_msd_nan"] == 2  # all NaN -> NaN mean
    e = evaluation.evaluation_summary(rows)
    assert e["dice_mean_stage1"] == 0.5 and e["dice_mean_stage2"] == 1.0 and e["n_cases"] == 2
    assert e["msd_mm_mean"] is None and e["n_msd_nan"] == 2  # strict JSON: None, not NaN
    assert e["n_within_interobserver"] == 1 and e["n_undetermined"] == 0 and e["n_muscles"] == 1
    assert e["muscles_absent"] == [k for k in KEYS if k != "soleus"]
    assert e["paper_within_interobserver_stated"] == 14 and e["paper_within_interobserver_table"] == 1  # soleus
    with pytest.raises(ValueError, match="stage2"):
        evaluation.evaluation_summary([row("soleus", stage="stage1")])


def test_json_ready():
    out = evaluation.json_ready({"a": NAN, "b": [1.0, float("inf"), np.float64(2.5)], "c": (np.int64(3), "x")})
    assert out == {"a": None, "b": [1.0, None, 2.5], "c": [3, "x"]}
    assert type(out["b"][2]) is float and type(out["c"][0]) is int


# ----------------------------------------------------------------------------- Markdown

def test_table_markdown_shape_and_cells():
    rows = [{"name": "Soleus", "dice": 0.91234, "ok": True, "n": 2},
            {"name": "a|b", "dice": NAN, "ok": None, "n": 0}]
    md = evaluation.table_markdown(rows, {"name": "Muscle", "dice": "Dice", "ok": "Within?", "n": "n"}, digits=2)
    lines = md.rstrip("\n").split("\n")
    assert len(lines) == 2 + len(rows) and md.endswith("\n")
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["Muscle", "Dice", "Within?", "n"]
    assert set(lines[1].replace("|", "").replace("-", "")) <= {" ", ":"}
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["Soleus", "0.91", "yes", "2"]
    assert "a\\|b" in lines[3] and lines[3].count("n/a") == 2
    assert all(line.replace("\\|", "").count("|") == 5 for line in lines)
    plain = evaluation.table_markdown(rows, ["name"])
    assert plain.split("\n")[0].strip("| ") == "name"
    assert len(evaluation.table_markdown([], ["a", "b"]).rstrip("\n").split("\n")) == 2
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['x'\]"):
        evaluation.table_markdown(rows, ["x"])
    with pytest.raises(ValueError, match="at least one"):
        evaluation.table_markdown(rows, [])


def test_table1_markdown_has_one_line_per_muscle():
    md = evaluation.table_markdown(evaluation.table1(paper_rows()), ["name", "paper_mean_sd", "this_run_mean_sd"])
    lines = md.rstrip("\n").split("\n")
    assert len(lines) == 37 and "Adductor brevis" in lines[2] and "0.83 ± 0.024" in lines[2]


# ----------------------------------------------------------------------------- llseg evaluate

@pytest.fixture
def tiny_study(tmp_path, two_leg_case):
    """A preprocessed folder with one test case and predictions in the layout `llseg predict` writes:
    stage 2 = the truth, stage 1 = the truth shifted by one voxel along x."""
    _, labels, affine = two_leg_case
    pre, pred = tmp_path / "pre", tmp_path / "pred"
    io.write_json(pre / "manifest.json", {"split": {"train": [], "test": ["a"]}, "spacing_mm": [2, 2, 5]})
    io.save_nifti(pre / "labels" / "a.nii.gz", labels, affine, dtype=np.uint8)
    io.save_nifti(pred / "study" / "a_stage2.nii.gz", labels, affine, dtype=np.uint8)
    io.save_nifti(pred / "study" / "a_stage1.nii.gz", np.roll(labels, 1, axis=0), affine, dtype=np.uint8)
    return pre, pred


def test_evaluate_command(tiny_study, tmp_path, capsys):
    import csv

    pre, pred = tiny_study
    table, metrics = tmp_path / "out" / "rows.csv", tmp_path / "out" / "evaluation.json"
    assert cli.main(["evaluate", "--preprocessed", str(pre), "--predictions", str(pred), "--table", str(table),
                     "--metrics", str(metrics), "-q"]) == 0
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 4 and {r["stage"] for r in rows} == {"stage1", "stage2"}  # the 2 labelled regions only
    final = {int(r["label"]): r for r in rows if r["stage"] == "stage2"}
    assert float(final[2]["dice"]) == 1.0 and float(final[2]["msd_mm"]) == 0.0
    assert float(final[37]["volume_error_pct"]) == 0.0
    assert float(final[2]["volume_true_ml"]) == pytest.approx(6 * 8 * 8 * 2 * 2 * 5 / 1000)  # voxels x mm^3 / 1000
    assert 1 not in final  # absent from truth and prediction: not labelled, no row
    first = {int(r["label"]): r for r in rows if r["stage"] == "stage1"}
    # a 6-voxel-wide block shifted by one voxel: Dice = 2 * 5/6 / 2
    assert float(first[2]["dice"]) == pytest.approx(5 / 6) and float(first[2]["msd_mm"]) > 0
    m = io.read_json(metrics)
    assert m["dice_mean_stage2"] == 1.0 and m["dice_mean_stage1"] == pytest.approx(5 / 6)
    assert m["n_dice_nan_stage2"] == 0 and m["msd_mm_mean"] == 0.0 and m["n_cases"] == 1 and m["n_rows"] == 2
    assert (m["n_within_interobserver"], m["n_worse_than_interobserver"], m["n_undetermined"]) == (1, 0, 0)
    assert m["n_muscles"] == 1 and len(m["muscles_absent"]) == 34
    assert ("mean Dice stage 1 0.833, stage 2 1.000; 1 of 1 muscles within interobserver Dice; 34 muscle(s) absent "
            "from the test labels, not scored") in capsys.readouterr().out


def test_evaluate_command_names_a_missing_prediction(tiny_study, tmp_path, capsys):
    pre, pred = tiny_study
    (pred / "study" / "a_stage1.nii.gz").unlink()
    assert cli.main(["evaluate", "--preprocessed", str(pre), "--predictions", str(pred),
                     "--table", str(tmp_path / "t.csv"), "--metrics", str(tmp_path / "m.json"), "-q"]) == 1
    assert "a_stage1.nii.gz: no such file" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "m.json").exists()


def test_evaluate_predictions_without_the_cli(tiny_study, tmp_path):
    pre, pred = tiny_study
    table, metrics = tmp_path / "out" / "rows.csv", tmp_path / "out" / "evaluation.json"
    summary = evaluation.evaluate_predictions(pre, pred, table, metrics, progress=False)
    assert summary == io.read_json(metrics)
    assert summary["dice_mean_stage2"] == 1.0 and summary["dice_mean_stage1"] == pytest.approx(5 / 6)
    assert len(io.read_csv(table)) == 4


# ----------------------------------------------------------------------------- cohorts lacking muscles

SEVEN = ("adductor_longus", "gracilis", "rectus_femoris", "sartorius", "vastus_intermedius", "vastus_lateralis",
         "vastus_medialis")


def test_rows_of_regions_a_case_does_not_label_are_not_scored():
    rows = [row("soleus", 0.9, volume_true=100.0), row("soleus", 0.0, side="left", volume_true=0.0),   # not labelled
            row("gracilis", 0.0, volume_true=50.0)]                                                     # a miss
    assert [evaluation.is_labelled(r) for r in rows] == [True, False, True]
    assert evaluation.is_labelled({"muscle": "soleus", "dice": 0.5})                  # no column: labelled
    assert evaluation.is_labelled(row("soleus", volume_true=NAN))
    table = {t["muscle"]: t for t in evaluation.table1(rows)}
    assert table["soleus"]["dice_mean"] == 0.9 and table["soleus"]["n"] == 1         # the unlabelled side: no 0
    assert table["gracilis"]["dice_mean"] == 0.0 and table["gracilis"]["within_interobserver"] is False  # a miss
    assert evaluation.select_stage(rows, None) == [rows[0], rows[2]]
    assert evaluation.volume_msd_summary(rows)["n_rows"] == 2
    with pytest.raises(ValueError, match="'x' is not a number"):
        evaluation.is_labelled(row("soleus", volume_true="x"))


def test_table1_counts_and_summaries_restricted_to_the_muscles_present():
    """Seven muscles on both sides plus semitendinosus on the right only."""
    rows = [row(k, anatomy.muscle(k).interobserver_dice + 0.01, side=s) for k in SEVEN for s in ("right", "left")]
    rows.append(row("semitendinosus", 0.5))
    present = list(SEVEN) + ["semitendinosus"]
    assert evaluation.muscles_present(rows) == [k for k in KEYS if k in present]
    absent = evaluation.muscles_absent(rows)
    assert len(absent) == 27 and "soleus" in absent and "semitendinosus" not in absent
    table = evaluation.table1(rows)
    assert [t["muscle"] for t in table] == evaluation.muscles_present(rows)
    counts = evaluation.table1_counts(table)
    assert (counts["n_muscles"], counts["n_within"], counts["n_worse"], counts["n_undetermined"]) == (8, 7, 1, 0)
    assert counts["muscles_absent"] == absent and counts["n_muscles_absent"] == 27
    assert counts["paper_table_within"] + counts["paper_table_worse"] == 8      # Table 1 over the same muscles
    c = evaluation.compare_with_paper(rows)
    assert c["n_muscles"] == 8 and c["n_muscles_undetermined"] == 0
    assert c["paper_dice_mean_over_muscles"] == pytest.approx(np.mean([anatomy.muscle(k).paper_dice_mean
                                                                       for k in present]))
    assert c["n_within_larger_half"] + c["n_within_smaller_half"] == 7
    s = evaluation.volume_msd_summary(rows)
    assert s["n_muscles_absent"] == 27 and s["n_muscles_volume_undetermined"] == 0 and s["n_rows"] == 15
    line = evaluation.absent_line(absent)
    assert line.startswith("Absent from this cohort's test labels (not scored), 27 of 35 muscles: Adductor brevis, ")
    assert evaluation.absent_line([]) == "" and evaluation.absent_line(evaluation.muscles_absent(paper_rows())) == ""
    md = evaluation.table_markdown(table, ["name", "this_run_mean_sd"])
    assert len(md.rstrip("\n").split("\n")) == 2 + 8


@pytest.fixture
def partial_study(tmp_path):
    """One test case of a thigh-only cohort labelling seven muscles on both sides and semitendinosus on the right
    only. Stage 2 = the truth, except that it misses the left gracilis and adds a soleus the truth does not label;
    stage 1 = stage 2."""
    truth = np.zeros((24, 16, 12), np.uint8)
    for i, k in enumerate(SEVEN):
        truth[14:20, 2 * i:2 * i + 2, 2:10] = anatomy.label_id(k, "right")
        truth[4:10, 2 * i:2 * i + 2, 2:10] = anatomy.label_id(k, "left")
    truth[20:23, 14:16, 2:10] = anatomy.label_id("semitendinosus", "right")
    pred = truth.copy()
    pred[pred == anatomy.label_id("gracilis", "left")] = 0
    pred[14:20, 0:2, 10:12] = anatomy.label_id("soleus", "right")
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    pre, out = tmp_path / "pre", tmp_path / "pred"
    io.write_json(pre / "manifest.json", {"split": {"train": [], "test": ["a"]}, "spacing_mm": [2, 2, 5]})
    io.save_nifti(pre / "labels" / "a.nii.gz", truth, affine, dtype=np.uint8)
    for stage in ("stage1", "stage2"):
        io.save_nifti(out / "study" / f"a_{stage}.nii.gz", pred, affine, dtype=np.uint8)
    return pre, out


def test_evaluate_scores_only_the_regions_the_truth_labels(partial_study, tmp_path):
    pre, pred = partial_study
    table, metrics = tmp_path / "rows.csv", tmp_path / "evaluation.json"
    summary = evaluation.evaluate_predictions(pre, pred, table, metrics, progress=False)
    rows = io.read_csv(table)
    final = {(r["muscle"], r["side"]): r for r in rows if r["stage"] == "stage2"}
    assert len(final) == 15 and ("semitendinosus", "left") not in final    # 7 x 2 + 1 labelled regions
    assert ("soleus", "right") not in final                                # predicted, not labelled: no row, no 0
    assert final[("gracilis", "left")]["dice"] == 0.0                      # labelled, missed: a miss
    assert final[("gracilis", "right")]["dice"] == 1.0
    assert summary["n_rows"] == 15 and summary["n_muscles"] == 8 and len(summary["muscles_absent"]) == 27
    assert summary["dice_mean_stage2"] == pytest.approx(14 / 15)
    assert summary == io.read_json(metrics)
    table1 = evaluation.table1(evaluation.select_stage(rows, "stage2"))
    assert len(table1) == 8 and {t["muscle"] for t in table1} == set(SEVEN) | {"semitendinosus"}
