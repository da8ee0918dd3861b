"""The paper's claims (sections 3 and 4, abstract), one named check each, in paper order; the
twelve Figure-5 (ablation) checks are in ``claim_ablation`` and take their place in ``CLAIMS``.

Each check takes a :class:`~llseg.study.claim_inputs.Context` and returns ``(measured text,
rule holds)``; thresholds come from ``ctx.t`` (params.yaml ``claims:``). Paper values come
from ``llseg.anatomy`` (Table 1 and the headline numbers) and ``llseg.study.evaluation`` (the
section-3.4 lists); the few qualitative statements with a number are named constants here.

A cohort whose test labels lack muscles (``Context.muscles_absent``): the mean Dice is compared
with Table 1's mean over the same muscles; the paper's counts and means over all 35 muscles
(within interobserver, volume error, MSD, the muscles above 10 % / 4 mm, "most muscles") are
not testable here; claims about a pattern over the muscles need ``MIN_PATTERN_MUSCLES`` of them,
and "external rotators among the worst" needs the external rotators. The reason names what is
missing.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import stats

from .. import anatomy
from . import evaluation
from .claim_ablation import ABLATION_CLAIMS, PAPER_BLOCK_DICE_SPREAD
from .claim_inputs import (MIN_PATTERN_MUSCLES, Claim, Comparison, Untestable, by_case, compare, cov_cases,
                           fig4_regions, finite, fmt, labelled, muscle_means, nanmean_units, registrar, spearman,
                           spearman_rows)

__all__ = ["Claim", "CLAIMS", "PAPER_TABLE1_MEAN_DICE", "PAPER_BLOCK_DICE_SPREAD",
           "n4_homogeneity",
           "stage2_beats_stage1",
           "stage1_localises",
           "stage1_jagged",
           "box_ratio_matters",
           "tta_beats_single_crop",
           "tta_like_gt_box",
           "tta_smooths_contours",
           "overall_mean_dice",
           "within_interobserver_count",
           "worse_only_slightly",
           "large_muscles_within",
           "small_muscles_worst",
           "external_rotators_among_worst",
           "table1_pattern",
           "volume_error_mean",
           "volume_error_above_10pct",
           "msd_mean",
           "msd_above_4mm",
           "most_below_5pct_4mm",
           "msd_tracks_dice",
           "volume_error_tracks_dice",
           ]

#: Table 1: mean of the 35 per-muscle Dice means (0.892; "~0.89").
PAPER_TABLE1_MEAN_DICE = float(np.mean([m.paper_dice_mean for m in anatomy.MUSCLES]))

_N_LARGER = (anatomy.N_MUSCLES + 1) // 2  # larger half: 18 muscles, smaller half: 17
_BY_REFERENCE_VOLUME = sorted(anatomy.MUSCLES, key=lambda m: -m.volume_ml)  # stable: Table-1 order on ties
_LARGER = frozenset(m.key for m in _BY_REFERENCE_VOLUME[:_N_LARGER])


def _paper_halves():
    within = [m.paper_dice_mean >= m.interobserver_dice for m in anatomy.MUSCLES]
    larger = [m.key in _LARGER for m in anatomy.MUSCLES]
    dice = np.array([m.paper_dice_mean for m in anatomy.MUSCLES])
    return (sum(w and lg for w, lg in zip(within, larger)), sum(w and not lg for w, lg in zip(within, larger)),
            float(dice[larger].mean()), float(dice[~np.array(larger)].mean()))


_P_WITHIN_L, _P_WITHIN_S, _P_DICE_L, _P_DICE_S = _paper_halves()
_P_GAPS = [m.interobserver_dice - m.paper_dice_mean for m in anatomy.MUSCLES
           if m.paper_dice_mean < m.interobserver_dice]
_P_ABOVE10 = [m.paper_dice_mean for m in anatomy.MUSCLES if m.key in evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT]
_P_REST = [m.paper_dice_mean for m in anatomy.MUSCLES if m.key not in evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT]


CLAIMS: list[Claim] = []
_claim = registrar(CLAIMS)


# ----------------------------------------------------------------------------- the claims
# Each check returns (measured text, its comparison(s) with the data they rest on). Thresholds: ctx.t.

_INTER = np.array([m.interobserver_dice for m in anatomy.MUSCLES])
_PAPER = np.array([m.paper_dice_mean for m in anatomy.MUSCLES])
_LARGER_MASK = np.array([m.key in _LARGER for m in anatomy.MUSCLES])
_ER = [m.key for m in anatomy.MUSCLES].index("external_rotators")


def _share_below(a: np.ndarray, threshold: float) -> np.ndarray:
    """Share of the finite values of each resample below ``threshold``: (B, ...) -> (B,)."""
    flat = a.reshape(len(a), -1)
    return (flat < threshold).sum(axis=1) / np.isfinite(flat).sum(axis=1)


def _mean_minus(offset: float) -> Callable:
    """Statistic: mean of the resampled per-region values minus ``offset``."""
    return lambda a: nanmean_units(a) - offset


@_claim("n4_homogeneity", "3.1", "N4 bias correction makes the muscle intensity more homogeneous",
        "qualitative (Fig. 3): \"improved the homogeneity of the images\"",
        lambda t: f"mean muscle-intensity CoV drops by >= {t['n4_min_cov_reduction_pct']:g} % and drops in "
                  f">= {t['n4_min_share_improved']:.0%} of cases")
def n4_homogeneity(ctx):
    before, after = ctx.num("bias_correction", "cov_before_mean"), ctx.num("bias_correction", "cov_after_mean")
    pct = ctx.num("bias_correction", "cov_reduction_pct")
    n, improved = ctx.num("bias_correction", "n_cases"), ctx.num("bias_correction", "n_improved")
    if n <= 0:
        raise Untestable(f"{ctx.sources['bias_correction']}: n_cases is {n:g}")
    cases = cov_cases(ctx)    # reports/plots/bias_correction_cov.csv: per-case CoV, the case as unit

    def reduction_pct(b, a):
        mean_b = np.nanmean(b, axis=1)
        return 100.0 * (mean_b - np.nanmean(a, axis=1)) / mean_b
    return (f"CoV {fmt(before)} -> {fmt(after)} (-{pct:.1f} %); lower in {improved:g} of {n:g} cases",
            (compare(pct, "at_least", ctx.t["n4_min_cov_reduction_pct"], cases, reduction_pct),
             compare(improved / n, "at_least", ctx.t["n4_min_share_improved"], cases,
                     lambda b, a: (a < b).mean(axis=1))))


@_claim("stage2_beats_stage1", "3.2, 4", "Stage 2 (full-resolution crops) segments more accurately than stage 1",
        "qualitative (Fig. 4a vs 4e): stage-1 boundaries \"inaccurate\"; final Table-1 mean 0.892",
        lambda t: f"mean Dice(stage 2) - mean Dice(stage 1) > {t['stage2_min_gain']:g}")
def stage2_beats_stage1(ctx):
    d1, d2 = ctx.num("evaluation", "dice_mean_stage1"), ctx.num("evaluation", "dice_mean_stage2")
    pairs = _per_case_dice(ctx.inputs.get("per_region") or [])
    per_case = f"; better in {sum(b > a for a, b in pairs)} of {len(pairs)} cases" if pairs else ""
    return (f"{fmt(d1)} -> {fmt(d2)} (gain {d2 - d1:+.3f}){per_case}",
            compare(d2 - d1, "above", ctx.t["stage2_min_gain"], by_case(ctx, "dice", stages=("stage1", "stage2")),
                    lambda a1, a2: nanmean_units(a2) - nanmean_units(a1)))


def _per_case_dice(rows) -> list[tuple[float, float]]:
    """(mean stage-1 Dice, mean stage-2 Dice) per case of the per-region rows, finite pairs only."""
    by = {}
    for r in rows:
        if isinstance(r, Mapping) and r.get("stage") in ("stage1", "stage2") and labelled(r):
            try:
                by.setdefault(r.get("case"), {}).setdefault(r["stage"], []).append(float(r.get("dice")))
            except (TypeError, ValueError):
                continue
    pairs = []
    for stages in by.values():
        means = [np.nanmean(stages[s]) if np.isfinite(stages.get(s, [np.nan])).any() else np.nan
                 for s in ("stage1", "stage2")]
        if all(math.isfinite(m) for m in means):
            pairs.append((float(means[0]), float(means[1])))
    return pairs


@_claim("stage1_localises", "3.2, 2.2.1, 4", "Stage 1 localises the muscles; only extremely small ones "
        "(e.g. external rotators) get no label and need estimated boxes",
        "\"the location of the RoI can be accurately identified\"; a few small muscles missed",
        lambda t: f"mean share of the regions labelled in a test case ({anatomy.N_REGIONS} in a whole-leg cohort) "
                  f"whose box is estimated (no stage-1 label) <= {t['stage1_max_estimated_share']:g}")
def stage1_localises(ctx):
    cases = ctx.data("cascade").get("cases")
    if not cases:
        raise Untestable(f"{ctx.sources['cascade']} has no 'cases'")
    n = np.array([finite(c.get("n_estimated_boxes"), f"{ctx.sources['cascade']}: 'cases[].n_estimated_boxes'")
                  for c in cases])
    of = _regions_labelled(ctx, [str(c.get("case")) for c in cases])
    share = float(np.mean(n / of))
    resample = ([n / of], f"test case (n={len(n)})") if len(n) >= 2 else "no interval: one test case"
    return (f"{np.mean(n):.1f} of {np.mean(of):g} boxes estimated per case ({share:.0%})",
            compare(share, "at_most", ctx.t["stage1_max_estimated_share"], resample, lambda a: a.mean(axis=1)))


def _regions_labelled(ctx, cases) -> np.ndarray:
    """Per test case, the regions stage 1 had to find: all 70 in a whole-leg cohort; in a cohort
    lacking muscles, the regions the case's ground truth labels (from the per-region rows)."""
    if not ctx.muscles_absent():
        return np.full(len(cases), float(anatomy.N_REGIONS))
    per_case = {}
    for r in ctx.inputs.get("per_region") or ():
        if isinstance(r, Mapping) and r.get("stage", ctx.stage) == ctx.stage and labelled(r):
            per_case.setdefault(str(r.get("case")), set()).add((r.get("muscle"), r.get("side")))
    lacking = [c for c in cases if not per_case.get(c)]
    if lacking:
        raise Untestable(f"the cohort lacks muscles and {ctx.sources['per_region']} has no labelled region of "
                         f"test case(s) {', '.join(lacking)}")
    return np.array([float(len(per_case[c])) for c in cases])


@_claim("stage1_jagged", "3.2", "Stage-1 contours are jagged (loss of resolution); stage 2 is smoother",
        "qualitative (Fig. 4a): \"the contours were jagged\"",
        lambda t: f"roughness(stage 1) - roughness(stage 2, TTA) > {t['roughness_min_reduction']:g} "
                  "(perimeter / convex-hull perimeter per slice)")
def stage1_jagged(ctx):
    r1, r2 = ctx.num("two_stages", "mean_roughness", "stage1"), ctx.num("two_stages", "mean_roughness", "stage2_tta")
    return (f"roughness {fmt(r1)} (stage 1) vs {fmt(r2)} (stage 2 TTA)",
            compare(r1 - r2, "above", ctx.t["roughness_min_reduction"],
                    fig4_regions(ctx, "roughness", ("stage1", "stage2_tta")),
                    lambda a, b: nanmean_units(a) - nanmean_units(b)))


@_claim("box_ratio_matters", "3.2", "Different bounding boxes (enlargement ratios) change the stage-2 output",
        "qualitative (Fig. 4c vs 4d)",
        lambda t: f"|Dice(low ratio) - Dice(high ratio)| >= {t['box_ratio_min_dice_difference']:g}")
def box_ratio_matters(ctx):
    lo = ctx.num("two_stages", "mean_dice", "stage2_box_ratio_low")
    hi = ctx.num("two_stages", "mean_dice", "stage2_box_ratio_high")
    ratios = ctx.data("two_stages").get("ratios")
    note = f" (ratios {ratios})" if ratios is not None else ""
    return (f"Dice {fmt(lo)} (low) vs {fmt(hi)} (high){note}",
            compare(lo - hi, "outside", ctx.t["box_ratio_min_dice_difference"],
                    fig4_regions(ctx, "dice", ("stage2_box_ratio_low", "stage2_box_ratio_high")),
                    lambda a, b: nanmean_units(a) - nanmean_units(b)))


@_claim("tta_beats_single_crop", "3.2, 4", "Averaging six test-time boxes beats a single stage-1-based crop",
        "qualitative (Fig. 4e vs 4c, 4d): \"robustness against the stage 1 error is improved\"",
        lambda t: f"Dice(TTA) - Dice(best single-box crop) > {t['tta_min_gain']:g}")
def tta_beats_single_crop(ctx):
    tta = ctx.num("two_stages", "mean_dice", "stage2_tta")
    singles = [ctx.num("two_stages", "mean_dice", k) for k in ("stage2_box_ratio_low", "stage2_box_ratio_high")]
    best = max(singles)
    return (f"TTA {fmt(tta)} vs single crops {fmt(singles[0])} / {fmt(singles[1])} (gain over best {tta - best:+.3f})",
            compare(tta - best, "above", ctx.t["tta_min_gain"],
                    fig4_regions(ctx, "dice", ("stage2_tta", "stage2_box_ratio_low", "stage2_box_ratio_high")),
                    lambda t, lo, hi: nanmean_units(t) - np.maximum(nanmean_units(lo), nanmean_units(hi))))


@_claim("tta_like_gt_box", "3.2", "TTA on stage-1 boxes is comparable with (or better than) cropping at the "
        "ground-truth box", "qualitative (Fig. 4e vs 4b): \"comparable with or even superior\"",
        lambda t: f"Dice(TTA) >= Dice(ground-truth box) - {t['similar_dice_tolerance']:g}")
def tta_like_gt_box(ctx):
    tta, gt = ctx.num("two_stages", "mean_dice", "stage2_tta"), ctx.num("two_stages", "mean_dice", "stage2_gt_box")
    return (f"TTA {fmt(tta)} vs GT box {fmt(gt)} ({tta - gt:+.3f})",
            compare(tta - gt, "at_least", -ctx.t["similar_dice_tolerance"],
                    fig4_regions(ctx, "dice", ("stage2_tta", "stage2_gt_box")),
                    lambda a, b: nanmean_units(a) - nanmean_units(b)))


@_claim("tta_smooths_contours", "3.2, 4", "TTA smooths the contours (\"due to multiple averages\")",
        "qualitative (Fig. 4e; abstract)",
        lambda t: f"roughness(smoothest single-box crop) - roughness(TTA) > {t['roughness_min_reduction']:g}")
def tta_smooths_contours(ctx):
    tta = ctx.num("two_stages", "mean_roughness", "stage2_tta")
    singles = [ctx.num("two_stages", "mean_roughness", k) for k in ("stage2_box_ratio_low", "stage2_box_ratio_high")]
    return (f"roughness TTA {fmt(tta)} vs single crops {fmt(singles[0])} / {fmt(singles[1])}",
            compare(min(singles) - tta, "above", ctx.t["roughness_min_reduction"],
                    fig4_regions(ctx, "roughness", ("stage2_tta", "stage2_box_ratio_low", "stage2_box_ratio_high")),
                    lambda t, lo, hi: np.minimum(nanmean_units(lo), nanmean_units(hi)) - nanmean_units(t)))


# Figure 5 (section 3.3, 4): the ablation's twelve claims, in paper order, are in claim_ablation.
CLAIMS += ABLATION_CLAIMS


@_claim("overall_mean_dice", "3.4, Table 1", "Mean Dice over the 35 muscles ~0.89", round(PAPER_TABLE1_MEAN_DICE, 3),
        lambda t: f"|mean of per-muscle Dice - {PAPER_TABLE1_MEAN_DICE:.3f}| <= {t['overall_dice_tolerance']:g} "
                  "(a cohort lacking muscles: Table 1's mean over the muscles it has)")
def overall_mean_dice(ctx):
    d = ctx.num("dice_table", "dice_mean_over_muscles")
    margin = ctx.data("dice_table").get("one_voxel_margin_dice_mean_over_muscles")
    note = ("" if margin is None or not np.isfinite(margin)       # resolution reference (metrics.one_voxel_margin_dice)
            else f"; truth vs truth grown by one in-plane voxel: {fmt(margin)}")
    present = ctx.present_mask()
    paper = PAPER_TABLE1_MEAN_DICE if present.all() else float(_PAPER[present].mean())
    scope = ("" if present.all()
             else f" over {int(present.sum())} of {anatomy.N_MUSCLES} muscles; Table 1 over the same {paper:.3f}")
    return (f"{fmt(d)} ({d - paper:+.3f}){scope}{note}",
            compare(d - paper, "within", ctx.t["overall_dice_tolerance"], by_case(ctx, "dice"),
                    lambda a: np.nanmean(muscle_means(a), axis=1) - paper))


@_claim("within_interobserver_count", "abstract, 3.4, 4", "14 of 35 muscles are within interobserver variability "
        "(Table 1's rounded values give 15)",
        anatomy.PAPER_WITHIN_INTEROBSERVER,
        lambda t: f"|muscles with mean Dice >= interobserver - {anatomy.PAPER_WITHIN_INTEROBSERVER}| "
                  f"<= {t['count_tolerance']:g}")
def within_interobserver_count(ctx):
    ctx.require_all_muscles("the paper's count is out of all 35")
    n = ctx.num("dice_table", "n_within")
    und = ctx.data("dice_table").get("n_undetermined") or 0
    note = f" ({und} undetermined)" if und else ""
    return (f"{n:g} of {anatomy.N_MUSCLES}{note}",
            compare(n - anatomy.PAPER_WITHIN_INTEROBSERVER, "within", ctx.t["count_tolerance"], by_case(ctx, "dice"),
                    lambda a: (muscle_means(a) >= _INTER).sum(axis=1) - anatomy.PAPER_WITHIN_INTEROBSERVER))


@_claim("worse_only_slightly", "abstract, 4", "The other muscles are only slightly worse than humans",
        f"median shortfall {np.median(_P_GAPS):.2f} over the {len(_P_GAPS)} worse muscles of Table 1 "
        f"(max {max(_P_GAPS):.2f})",
        lambda t: f"median (interobserver - Dice) over muscles below interobserver <= {t['slightly_worse_max_gap']:g}")
def worse_only_slightly(ctx):
    ctx.per_muscle("dice")  # raises when no finite Dice
    table = evaluation.table1(evaluation.select_stage(ctx.data("per_region"), ctx.stage))
    gaps = [t["interobserver_dice"] - t["dice_mean"] for t in table if t["within_interobserver"] is False]
    if not gaps:
        return "no muscle below interobserver", compare(0.0, "at_most", ctx.t["slightly_worse_max_gap"])
    return (f"median shortfall {np.median(gaps):.3f} over {len(gaps)} muscles (max {max(gaps):.3f})",
            compare(float(np.median(gaps)), "at_most", ctx.t["slightly_worse_max_gap"], by_case(ctx, "dice"),
                    _median_shortfall))


def _median_shortfall(a: np.ndarray) -> np.ndarray:
    """Median (interobserver - Dice) over the muscles below interobserver, 0 where none: (B,)."""
    gap = _INTER - muscle_means(a)
    below = np.where(gap > 0, gap, np.nan)
    return np.nan_to_num(np.nanmedian(below, axis=1), nan=0.0)


@_claim("large_muscles_within", "3.4", "Within interobserver variability \"especially for muscles with large "
        "volumes\"", f"{_P_WITHIN_L} (larger half) vs {_P_WITHIN_S} (smaller half), Table 1",
        lambda t: "muscles within interobserver: larger half (by ground-truth volume) > smaller half")
def large_muscles_within(ctx):
    ctx.require_n_muscles(MIN_PATTERN_MUSCLES, "halves by volume")
    lg, sm = ctx.num("dice_table", "n_within_larger_half"), ctx.num("dice_table", "n_within_smaller_half")
    rows = ctx.inputs.get("per_region") or []
    order = evaluation.muscles_by_volume(evaluation.select_stage(rows, ctx.stage)) if rows else []
    larger = np.array([m.key in order[: (len(order) + 1) // 2] for m in anatomy.MUSCLES])

    def halves(a):
        within = muscle_means(a) >= _INTER
        return within[:, larger].sum(axis=1) - within[:, ~larger].sum(axis=1)
    return f"{lg:g} (larger half) vs {sm:g} (smaller half)", compare(lg - sm, "above", 0.0, by_case(ctx, "dice"), halves)


@_claim("small_muscles_worst", "3.4, 4", "Small muscles are the hardest (\"still suboptimal\")",
        f"mean Dice {_P_DICE_L:.3f} (larger half) vs {_P_DICE_S:.3f} (smaller half), Table 1",
        lambda t: f"mean Dice larger half - smaller half (by anatomy reference volume, {_N_LARGER}/"
                  f"{anatomy.N_MUSCLES - _N_LARGER}) > {t['better_min_gap']:g}")
def small_muscles_worst(ctx):
    ctx.require_n_muscles(MIN_PATTERN_MUSCLES, "halves by volume")
    found = ctx.per_muscle("dice")
    dice = np.array([e["dice_mean"] for e in found])
    larger = np.array([e["muscle"] in _LARGER for e in found])
    lg, sm = dice[larger & np.isfinite(dice)], dice[~larger & np.isfinite(dice)]
    if not lg.size or not sm.size:
        raise Untestable(f"{ctx.sources['per_region']}: no finite Dice in one half")
    return (f"mean Dice {fmt(lg.mean())} (larger half) vs {fmt(sm.mean())} (smaller half)",
            compare(lg.mean() - sm.mean(), "above", ctx.t["better_min_gap"], by_case(ctx, "dice"),
                    lambda a: (np.nanmean(muscle_means(a)[:, _LARGER_MASK], axis=1)
                               - np.nanmean(muscle_means(a)[:, ~_LARGER_MASK], axis=1))))


@_claim("external_rotators_among_worst", "4, Table 1", "External rotators (smallest muscle) are among the worst",
        "lowest Dice of Table 1 (0.70)",
        lambda t: f"rank of external rotators by mean Dice (ascending, ties averaged) <= {t['worst_k']:g}")
def external_rotators_among_worst(ctx):
    ctx.require_muscles(["external_rotators"], "the claim is about them")
    ctx.require_n_muscles(max(MIN_PATTERN_MUSCLES, 2 * int(ctx.t["worst_k"])),
                          f"a rank <= {ctx.t['worst_k']:g} must leave out at least half of them")
    found = [e for e in ctx.per_muscle("dice") if np.isfinite(e["dice_mean"])]
    keys = [e["muscle"] for e in found]
    if "external_rotators" not in keys:
        raise Untestable(f"{ctx.sources['per_region']}: no finite Dice for external rotators")
    ranks = stats.rankdata([e["dice_mean"] for e in found], method="average")
    rank = float(ranks[keys.index("external_rotators")])
    dice = found[keys.index("external_rotators")]["dice_mean"]
    return (f"rank {rank:g} of {len(found)} (Dice {fmt(dice)})",
            compare(rank, "at_most", ctx.t["worst_k"], by_case(ctx, "dice"),
                    lambda a: stats.rankdata(np.nan_to_num(muscle_means(a), nan=np.inf), axis=1)[:, _ER]))


@_claim("table1_pattern", "3.4, Table 1", "The same muscles are hard as in Table 1", "Table 1",
        lambda t: f"Spearman rho(per-muscle Dice, Table-1 Dice) >= {t['table1_min_spearman']:g}")
def table1_pattern(ctx):
    n = ctx.require_n_muscles(MIN_PATTERN_MUSCLES, "a rank correlation with Table 1")
    rho = ctx.num("dice_table", "spearman_vs_paper")
    present = ctx.present_mask()
    paper = _PAPER[present]
    return (f"rho {rho:.2f}" + ("" if present.all() else f" over {n} muscles"),
            compare(rho, "at_least", ctx.t["table1_min_spearman"], by_case(ctx, "dice"),
                    lambda a: spearman_rows(muscle_means(a)[:, present], np.broadcast_to(paper, (len(a), len(paper))))))


@_claim("volume_error_mean", "3.4", "Mean volume error 6.5 %", anatomy.PAPER_MEAN_VOLUME_ERROR_PCT,
        lambda t: f"|mean absolute volume error - {anatomy.PAPER_MEAN_VOLUME_ERROR_PCT:g} %| "
                  f"<= {t['volume_error_tolerance_pct']:g} %")
def volume_error_mean(ctx):
    ctx.require_all_muscles("the paper's mean is over all 35")
    v = ctx.num("evaluation", "volume_error_abs_pct_mean")
    nan = ctx.data("evaluation").get("n_volume_nan") or 0
    note = f"; {nan} regions NaN" if nan else ""
    return (f"{v:.1f} %{note}",
            compare(v - anatomy.PAPER_MEAN_VOLUME_ERROR_PCT, "within", ctx.t["volume_error_tolerance_pct"],
                    by_case(ctx, "volume_error_abs_pct"), _mean_minus(anatomy.PAPER_MEAN_VOLUME_ERROR_PCT)))


@_claim("volume_error_above_10pct", "3.4", "Seven muscles have volume errors above 10 % (all small ones)",
        f"{len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}: {', '.join(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}",
        lambda t: f"|muscles with mean volume error > 10 % - {len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}| "
                  f"<= {t['count_tolerance']:g}")
def volume_error_above_10pct(ctx):
    ctx.require_all_muscles("the paper's count is out of all 35")
    n = ctx.num("volume_msd", "n_muscles_above_volume_threshold")
    overlap = ctx.data("volume_msd").get("overlap_above_volume_threshold")
    note = f" ({len(overlap)} of the paper's seven among them)" if isinstance(overlap, list) else ""
    return f"{n:g}{note}", _count_above(ctx, n, "volume_error_abs_pct", "volume_threshold_pct", 10.0,
                                          len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT))


def _count_above(ctx, n: float, column: str, key: str, default: float, paper: int) -> Comparison:
    """``n`` muscles with a mean ``column`` above volume_msd.json's ``key`` vs the paper's count."""
    threshold = float(ctx.data("volume_msd").get(key, default))
    return compare(n - paper, "within", ctx.t["count_tolerance"], by_case(ctx, column),
                   lambda a: (muscle_means(a) > threshold).sum(axis=1) - paper)


@_claim("msd_mean", "3.4", "Overall mean surface distance 2.9 mm", anatomy.PAPER_MEAN_MSD_MM,
        lambda t: f"|mean MSD - {anatomy.PAPER_MEAN_MSD_MM:g} mm| <= {t['msd_tolerance_mm']:g} mm")
def msd_mean(ctx):
    ctx.require_all_muscles("the paper's mean is over all 35")
    msd = ctx.num("evaluation", "msd_mm_mean")
    ev = ctx.data("evaluation")
    nan = ev.get("n_msd_nan") or 0
    rows = ev.get("n_rows")
    note = f"; over {rows - nan} of {rows} regions, {nan} NaN (empty masks)" if nan and rows else ""
    return (f"{msd:.1f} mm{note}", compare(msd - anatomy.PAPER_MEAN_MSD_MM, "within", ctx.t["msd_tolerance_mm"],
                                           by_case(ctx, "msd_mm"), _mean_minus(anatomy.PAPER_MEAN_MSD_MM)))


@_claim("msd_above_4mm", "3.4", "Seven muscles have mean distances above 4 mm", evaluation.PAPER_N_MSD_ABOVE_4MM,
        lambda t: f"|muscles with mean MSD > 4 mm - {evaluation.PAPER_N_MSD_ABOVE_4MM}| <= {t['count_tolerance']:g}")
def msd_above_4mm(ctx):
    ctx.require_all_muscles("the paper's count is out of all 35")
    n = ctx.num("volume_msd", "n_muscles_above_msd_threshold")
    und = ctx.data("volume_msd").get("n_muscles_msd_undetermined") or 0
    note = f" ({und} muscles without a finite MSD)" if und else ""
    return f"{n:g}{note}", _count_above(ctx, n, "msd_mm", "msd_threshold_mm", 4.0, evaluation.PAPER_N_MSD_ABOVE_4MM)


@_claim("most_below_5pct_4mm", "3.4", "Most muscles have < 5 % volume error and < 4 mm surface distance",
        "qualitative (Fig. 6 histograms)",
        lambda t: f"share of regions with volume error < 5 % and share with MSD < 4 mm both > {t['most_share']:g}")
def most_below_5pct_4mm(ctx):
    ctx.require_all_muscles("\"most muscles\" is said of all 35")
    vol = ctx.num("volume_msd", "share_volume_below_typical")
    msd = ctx.num("volume_msd", "share_msd_below_threshold")
    data = ctx.data("volume_msd")
    limits = (float(data.get("typical_volume_pct", 5.0)), float(data.get("msd_threshold_mm", 4.0)))
    return (f"{vol:.0%} below 5 %, {msd:.0%} below 4 mm",
            tuple(compare(share, "above", ctx.t["most_share"], by_case(ctx, column),
                          lambda a, limit=limit: _share_below(a, limit))
                  for share, column, limit in zip((vol, msd), ("volume_error_abs_pct", "msd_mm"), limits)))


@_claim("msd_tracks_dice", "3.4", "MSD is consistent with Dice (\"strong positive correlation\": high Dice, "
        "small distance)", "qualitative, no coefficient given",
        lambda t: f"Spearman rho(per-muscle Dice, per-muscle MSD) <= -{t['min_abs_spearman']:g}")
def msd_tracks_dice(ctx):
    ctx.require_n_muscles(MIN_PATTERN_MUSCLES, "a rank correlation over muscles")
    rho = ctx.num("volume_msd", "muscle_dice_msd_spearman_rho")
    n = ctx.data("volume_msd").get("n_muscle_dice_msd_pairs")
    present = ctx.present_mask()
    return (f"rho {rho:.2f}" + (f" over {n} muscles" if n is not None else ""),
            compare(rho, "at_most", -ctx.t["min_abs_spearman"], by_case(ctx, "dice", "msd_mm"),
                    lambda d, m: spearman_rows(muscle_means(d)[:, present], muscle_means(m)[:, present])))


@_claim("volume_error_tracks_dice", "3.4", "Volume error is largest where Dice is low (small, irregular muscles)",
        f"Table-1 Dice {np.mean(_P_ABOVE10):.2f} for the seven > 10 % muscles vs {np.mean(_P_REST):.2f} for the rest",
        lambda t: f"Spearman rho(per-muscle Dice, per-muscle volume error) <= -{t['min_abs_spearman']:g}")
def volume_error_tracks_dice(ctx):
    ctx.require_n_muscles(MIN_PATTERN_MUSCLES, "a rank correlation over muscles")
    found = ctx.per_muscle("dice", "volume_error_abs_pct")
    rho, n = spearman([e["dice_mean"] for e in found], [e["volume_error_abs_pct_mean"] for e in found],
                       f"{ctx.sources['per_region']}: Dice vs volume error")
    present = ctx.present_mask()
    return (f"rho {rho:.2f} over {n} muscles",
            compare(rho, "at_most", -ctx.t["min_abs_spearman"], by_case(ctx, "dice", "volume_error_abs_pct"),
                    lambda d, v: spearman_rows(muscle_means(d)[:, present], muscle_means(v)[:, present])))
