"""The paper's claims (sections 3 and 4, abstract), one named check each, in paper order.

Each check takes a :class:`~llseg.study.claim_inputs.Context` and returns ``(measured text,
rule holds)``; thresholds come from ``ctx.t`` (params.yaml ``claims:``). Paper values come
from ``llseg.anatomy`` (Table 1 and the headline numbers) and ``llseg.study.evaluation`` (the
section-3.4 lists); the few qualitative statements with a number are named constants here.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .. import anatomy
from . import evaluation
from .claim_inputs import (Context, Untestable, ablation_note, above, archs, at_least, at_most, blocks, finite, fmt,
                           fmt_series, series, spearman)

__all__ = ["Claim", "CLAIMS", "PAPER_TABLE1_MEAN_DICE", "PAPER_BLOCK_DICE_SPREAD",
           "n4_homogeneity",
           "stage2_beats_stage1",
           "stage1_localises",
           "stage1_jagged",
           "box_ratio_matters",
           "tta_beats_single_crop",
           "tta_like_gt_box",
           "tta_smooths_contours",
           "more_levels_help",
           "levels_beyond_three_small",
           "more_filters_help",
           "width_beats_depth",
           "residual_about_plain",
           "blocks_within_001",
           "dense_worst",
           "residual_costs_more",
           "bigger_costs_more",
           "unet_about_segnet",
           "fcn_worse",
           "fcn_worse_early",
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
#: Section 4: "the differences in Dice scores for the three networks are within 0.01".
PAPER_BLOCK_DICE_SPREAD = 0.01

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


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    claim: str
    paper: str | float
    rule: Callable[[Mapping], str]       # thresholds -> the rule in words
    check: Callable[["Context"], tuple[str, bool]]  # -> (measured, holds)


CLAIMS: list[Claim] = []


def _claim(id_, section, claim, paper, rule):
    def register(check):
        CLAIMS.append(Claim(id_, section, claim, paper, rule, check))
        return check
    return register


# ----------------------------------------------------------------------------- the claims
# Each check returns (measured text, rule holds). Thresholds: ctx.t.

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
    return (f"CoV {fmt(before)} -> {fmt(after)} (-{pct:.1f} %); lower in {improved:g} of {n:g} cases",
            at_least(pct, ctx.t["n4_min_cov_reduction_pct"])
            and at_least(improved / n, ctx.t["n4_min_share_improved"]))


@_claim("stage2_beats_stage1", "3.2, 4", "Stage 2 (full-resolution crops) segments more accurately than stage 1",
        "qualitative (Fig. 4a vs 4e): stage-1 boundaries \"inaccurate\"; final Table-1 mean 0.892",
        lambda t: f"mean Dice(stage 2) - mean Dice(stage 1) > {t['stage2_min_gain']:g}")
def stage2_beats_stage1(ctx):
    d1, d2 = ctx.num("evaluation", "dice_mean_stage1"), ctx.num("evaluation", "dice_mean_stage2")
    pairs = _per_case_dice(ctx.inputs.get("per_region") or [])
    per_case = f"; better in {sum(b > a for a, b in pairs)} of {len(pairs)} cases" if pairs else ""
    return f"{fmt(d1)} -> {fmt(d2)} (gain {d2 - d1:+.3f}){per_case}", above(d2 - d1, ctx.t["stage2_min_gain"])


def _per_case_dice(rows) -> list[tuple[float, float]]:
    """(mean stage-1 Dice, mean stage-2 Dice) per case of the per-region rows, finite pairs only."""
    by = {}
    for r in rows:
        if isinstance(r, Mapping) and r.get("stage") in ("stage1", "stage2"):
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
        lambda t: f"mean share of the {anatomy.N_REGIONS} regions whose box is estimated (no stage-1 label) "
                  f"<= {t['stage1_max_estimated_share']:g}")
def stage1_localises(ctx):
    cases = ctx.data("cascade").get("cases")
    if not cases:
        raise Untestable(f"{ctx.sources['cascade']} has no 'cases'")
    n = [finite(c.get("n_estimated_boxes"), f"{ctx.sources['cascade']}: 'cases[].n_estimated_boxes'") for c in cases]
    share = float(np.mean(n)) / anatomy.N_REGIONS
    return (f"{np.mean(n):.1f} of {anatomy.N_REGIONS} boxes estimated per case ({share:.0%})",
            at_most(share, ctx.t["stage1_max_estimated_share"]))


@_claim("stage1_jagged", "3.2", "Stage-1 contours are jagged (loss of resolution); stage 2 is smoother",
        "qualitative (Fig. 4a): \"the contours were jagged\"",
        lambda t: f"roughness(stage 1) - roughness(stage 2, TTA) > {t['roughness_min_reduction']:g} "
                  "(perimeter / convex-hull perimeter per slice)")
def stage1_jagged(ctx):
    r1, r2 = ctx.num("two_stages", "mean_roughness", "stage1"), ctx.num("two_stages", "mean_roughness", "stage2_tta")
    return f"roughness {fmt(r1)} (stage 1) vs {fmt(r2)} (stage 2 TTA)", above(r1 - r2, ctx.t["roughness_min_reduction"])


@_claim("box_ratio_matters", "3.2", "Different bounding boxes (enlargement ratios) change the stage-2 output",
        "qualitative (Fig. 4c vs 4d)",
        lambda t: f"|Dice(low ratio) - Dice(high ratio)| >= {t['box_ratio_min_dice_difference']:g}")
def box_ratio_matters(ctx):
    lo = ctx.num("two_stages", "mean_dice", "stage2_box_ratio_low")
    hi = ctx.num("two_stages", "mean_dice", "stage2_box_ratio_high")
    ratios = ctx.data("two_stages").get("ratios")
    note = f" (ratios {ratios})" if ratios is not None else ""
    return (f"Dice {fmt(lo)} (low) vs {fmt(hi)} (high){note}",
            at_least(abs(lo - hi), ctx.t["box_ratio_min_dice_difference"]))


@_claim("tta_beats_single_crop", "3.2, 4", "Averaging six test-time boxes beats a single stage-1-based crop",
        "qualitative (Fig. 4e vs 4c, 4d): \"robustness against the stage 1 error is improved\"",
        lambda t: f"Dice(TTA) - Dice(best single-box crop) > {t['tta_min_gain']:g}")
def tta_beats_single_crop(ctx):
    tta = ctx.num("two_stages", "mean_dice", "stage2_tta")
    singles = [ctx.num("two_stages", "mean_dice", k) for k in ("stage2_box_ratio_low", "stage2_box_ratio_high")]
    best = max(singles)
    return (f"TTA {fmt(tta)} vs single crops {fmt(singles[0])} / {fmt(singles[1])} (gain over best {tta - best:+.3f})",
            above(tta - best, ctx.t["tta_min_gain"]))


@_claim("tta_like_gt_box", "3.2", "TTA on stage-1 boxes is comparable with (or better than) cropping at the "
        "ground-truth box", "qualitative (Fig. 4e vs 4b): \"comparable with or even superior\"",
        lambda t: f"Dice(TTA) >= Dice(ground-truth box) - {t['similar_dice_tolerance']:g}")
def tta_like_gt_box(ctx):
    tta, gt = ctx.num("two_stages", "mean_dice", "stage2_tta"), ctx.num("two_stages", "mean_dice", "stage2_gt_box")
    return f"TTA {fmt(tta)} vs GT box {fmt(gt)} ({tta - gt:+.3f})", at_least(tta - gt, -ctx.t["similar_dice_tolerance"])


@_claim("tta_smooths_contours", "3.2, 4", "TTA smooths the contours (\"due to multiple averages\")",
        "qualitative (Fig. 4e; abstract)",
        lambda t: f"roughness(smoothest single-box crop) - roughness(TTA) > {t['roughness_min_reduction']:g}")
def tta_smooths_contours(ctx):
    tta = ctx.num("two_stages", "mean_roughness", "stage2_tta")
    singles = [ctx.num("two_stages", "mean_roughness", k) for k in ("stage2_box_ratio_low", "stage2_box_ratio_high")]
    return (f"roughness TTA {fmt(tta)} vs single crops {fmt(singles[0])} / {fmt(singles[1])}",
            above(min(singles) - tta, ctx.t["roughness_min_reduction"]))


@_claim("more_levels_help", "3.3", "More resolution levels tend to give better results (Fig. 5a)",
        "qualitative (Fig. 5a, adductor brevis)",
        lambda t: f"plain U-Net, same root filters: Dice(most levels) - Dice(fewest levels) > {t['better_min_gap']:g}")
def more_levels_help(ctx):
    s, rf = series(ctx, "levels")
    first, last = s[min(s)], s[max(s)]
    return (f"levels {fmt_series(s)} (root filters {rf}){ablation_note(ctx)}",
            above(last - first, ctx.t["better_min_gap"]))


@_claim("levels_beyond_three_small", "3.3, 4", "Beyond three resolution levels the gain is marginal",
        "\"the difference is very small between three and four\"",
        lambda t: f"best Dice with > 3 levels - Dice with 3 levels <= {t['levels_beyond_three_max_gain']:g}")
def levels_beyond_three_small(ctx):
    s, _rf = series(ctx, "levels")
    deeper = [d for lv, d in s.items() if lv > 3]
    if 3 not in s or not deeper:
        raise Untestable(f"{ctx.sources['ablation']}: needs plain U-Nets with 3 and with > 3 levels (has {sorted(s)})")
    gain = max(deeper) - s[3]
    return f"gain beyond 3 levels {gain:+.3f} ({fmt_series(s)})", at_most(gain, ctx.t["levels_beyond_three_max_gain"])


@_claim("more_filters_help", "3.3", "More filters at the root level give higher Dice (Fig. 5b)",
        "qualitative (Fig. 5b)",
        lambda t: f"plain U-Net, same levels: Dice(most root filters) - Dice(fewest) > {t['better_min_gap']:g}")
def more_filters_help(ctx):
    s, lv = series(ctx, "root_filters")
    return (f"root filters {fmt_series(s)} ({lv} levels){ablation_note(ctx)}",
            above(s[max(s)] - s[min(s)], ctx.t["better_min_gap"]))


@_claim("width_beats_depth", "4", "Network width matters more than depth beyond three levels",
        "\"the width of the network has a more significant influence\"",
        lambda t: f"gain(fewest -> most root filters) - gain(3 -> best > 3 levels) > {t['better_min_gap']:g}")
def width_beats_depth(ctx):
    s_rf, _lv = series(ctx, "root_filters")
    s_lv, _rf = series(ctx, "levels")
    deeper = [d for lv, d in s_lv.items() if lv > 3]
    if 3 not in s_lv or not deeper:
        raise Untestable(f"{ctx.sources['ablation']}: needs plain U-Nets with 3 and with > 3 levels "
                          f"(has {sorted(s_lv)})")
    width, depth = s_rf[max(s_rf)] - s_rf[min(s_rf)], max(deeper) - s_lv[3]
    return f"width gain {width:+.3f} vs depth gain {depth:+.3f}", above(width - depth, ctx.t["better_min_gap"])


@_claim("residual_about_plain", "3.3, 4", "Residual blocks are about equal to (slightly above) the plain U-Net",
        "\"the difference with plain U-Net is small\"",
        lambda t: f"|Dice(residual) - Dice(plain)| <= {t['similar_dice_tolerance']:g}")
def residual_about_plain(ctx):
    b = blocks(ctx)
    return (f"residual {fmt(b['residual'])} vs plain {fmt(b['plain'])}{ablation_note(ctx)}",
            at_most(abs(b["residual"] - b["plain"]), ctx.t["similar_dice_tolerance"]))


@_claim("blocks_within_001", "4", "Plain, residual and dense U-Nets are within 0.01 Dice of each other",
        PAPER_BLOCK_DICE_SPREAD, lambda t: f"max - min Dice over the three block types <= {t['block_max_spread']:g}")
def blocks_within_001(ctx):
    b = blocks(ctx)
    spread = max(b.values()) - min(b.values())
    return (f"spread {spread:.3f} ({', '.join(f'{k} {fmt(v)}' for k, v in b.items())})",
            at_most(spread, ctx.t["block_max_spread"]))


@_claim("dense_worst", "3.3", "Dense blocks perform worst of the three block types", "qualitative (Fig. 5c)",
        lambda t: f"min(Dice plain, Dice residual) - Dice(dense) > {t['better_min_gap']:g}")
def dense_worst(ctx):
    b = blocks(ctx)
    gap = min(b["plain"], b["residual"]) - b["dense"]
    return (f"dense {fmt(b['dense'])} vs plain {fmt(b['plain'])}, residual {fmt(b['residual'])}",
            above(gap, ctx.t["better_min_gap"]))


@_claim("residual_costs_more", "4", "The residual U-Net needs more parameters than the plain one",
        "\"the network with residual block needs more parameters and computations\"",
        lambda t: "n_params(residual) > n_params(plain), same levels")
def residual_costs_more(ctx):
    b = blocks(ctx, "n_params")
    return f"{b['residual']:,.0f} vs {b['plain']:,.0f} parameters", b["residual"] > b["plain"]


@_claim("bigger_costs_more", "4", "Deeper and wider networks cost more (memory and computation)",
        "\"it comes at the cost of increased memory requirement and computation time\"",
        lambda t: "n_params(most levels) > n_params(fewest) and n_params(most root filters) > n_params(fewest)")
def bigger_costs_more(ctx):
    s_lv, _ = series(ctx, "levels", "n_params")
    s_rf, _ = series(ctx, "root_filters", "n_params")
    return (f"levels {min(s_lv)}->{max(s_lv)}: {s_lv[min(s_lv)]:,.0f}->{s_lv[max(s_lv)]:,.0f}; root filters "
            f"{min(s_rf)}->{max(s_rf)}: {s_rf[min(s_rf)]:,.0f}->{s_rf[max(s_rf)]:,.0f} parameters",
            s_lv[max(s_lv)] > s_lv[min(s_lv)] and s_rf[max(s_rf)] > s_rf[min(s_rf)])


@_claim("unet_about_segnet", "3.3, 4", "U-Net and SegNet are comparable (Fig. 5d)", "qualitative (Fig. 5d)",
        lambda t: f"|Dice(U-Net) - Dice(SegNet)| <= {t['similar_dice_tolerance']:g}")
def unet_about_segnet(ctx):
    a = archs(ctx)
    return (f"U-Net {fmt(a['unet'])} vs SegNet {fmt(a['segnet'])}{ablation_note(ctx)}",
            at_most(abs(a["unet"] - a["segnet"]), ctx.t["similar_dice_tolerance"]))


@_claim("fcn_worse", "3.3", "FCN-8s is slightly worse than U-Net and SegNet", "qualitative (Fig. 5d)",
        lambda t: f"min(Dice U-Net, Dice SegNet) - Dice(FCN-8s) > {t['better_min_gap']:g}")
def fcn_worse(ctx):
    a = archs(ctx)
    return (f"FCN-8s {fmt(a['fcn8s'])} vs U-Net {fmt(a['unet'])}, SegNet {fmt(a['segnet'])}",
            above(min(a["unet"], a["segnet"]) - a["fcn8s"], ctx.t["better_min_gap"]))


@_claim("fcn_worse_early", "3.3", "FCN-8s lags \"especially at early epochs\"", "qualitative (Fig. 5d curves)",
        lambda t: "FCN-8s's shortfall to min(U-Net, SegNet) early ('early_dice': the first quarter of the "
                  "curve) is > 0 and larger than at the end (a negative shortfall means FCN-8s does not lag)")
def fcn_worse_early(ctx):
    early = archs(ctx, "early_dice")
    end = archs(ctx)
    gap_early = min(early["unet"], early["segnet"]) - early["fcn8s"]
    gap_end = min(end["unet"], end["segnet"]) - end["fcn8s"]
    return (f"shortfall early {gap_early:+.3f} vs end {gap_end:+.3f}",
            above(gap_early, 0.0) and above(gap_early - gap_end, 0.0))


@_claim("overall_mean_dice", "3.4, Table 1", "Mean Dice over the 35 muscles ~0.89", round(PAPER_TABLE1_MEAN_DICE, 3),
        lambda t: f"|mean of per-muscle Dice - {PAPER_TABLE1_MEAN_DICE:.3f}| <= {t['overall_dice_tolerance']:g}")
def overall_mean_dice(ctx):
    d = ctx.num("dice_table", "dice_mean_over_muscles")
    margin = ctx.data("dice_table").get("one_voxel_margin_dice_mean_over_muscles")
    note = ("" if margin is None or not np.isfinite(margin)       # resolution reference (metrics.one_voxel_margin_dice)
            else f"; truth vs truth grown by one in-plane voxel: {fmt(margin)}")
    return (f"{fmt(d)} ({d - PAPER_TABLE1_MEAN_DICE:+.3f}){note}",
            at_most(abs(d - PAPER_TABLE1_MEAN_DICE), ctx.t["overall_dice_tolerance"]))


@_claim("within_interobserver_count", "abstract, 3.4, 4", "14 of 35 muscles are within interobserver variability "
        "(Table 1's rounded values give 15)",
        anatomy.PAPER_WITHIN_INTEROBSERVER,
        lambda t: f"|muscles with mean Dice >= interobserver - {anatomy.PAPER_WITHIN_INTEROBSERVER}| "
                  f"<= {t['count_tolerance']:g}")
def within_interobserver_count(ctx):
    n = ctx.num("dice_table", "n_within")
    und = ctx.data("dice_table").get("n_undetermined") or 0
    note = f" ({und} undetermined)" if und else ""
    return (f"{n:g} of {anatomy.N_MUSCLES}{note}",
            at_most(abs(n - anatomy.PAPER_WITHIN_INTEROBSERVER), ctx.t["count_tolerance"]))


@_claim("worse_only_slightly", "abstract, 4", "The other muscles are only slightly worse than humans",
        f"median shortfall {np.median(_P_GAPS):.2f} over the {len(_P_GAPS)} worse muscles of Table 1 "
        f"(max {max(_P_GAPS):.2f})",
        lambda t: f"median (interobserver - Dice) over muscles below interobserver <= {t['slightly_worse_max_gap']:g}")
def worse_only_slightly(ctx):
    ctx.per_muscle("dice")  # raises when no finite Dice
    table = evaluation.table1(evaluation.select_stage(ctx.data("per_region"), ctx.stage))
    gaps = [t["interobserver_dice"] - t["dice_mean"] for t in table if t["within_interobserver"] is False]
    if not gaps:
        return "no muscle below interobserver", True
    return (f"median shortfall {np.median(gaps):.3f} over {len(gaps)} muscles (max {max(gaps):.3f})",
            at_most(float(np.median(gaps)), ctx.t["slightly_worse_max_gap"]))


@_claim("large_muscles_within", "3.4", "Within interobserver variability \"especially for muscles with large "
        "volumes\"", f"{_P_WITHIN_L} (larger half) vs {_P_WITHIN_S} (smaller half), Table 1",
        lambda t: "muscles within interobserver: larger half (by ground-truth volume) > smaller half")
def large_muscles_within(ctx):
    lg, sm = ctx.num("dice_table", "n_within_larger_half"), ctx.num("dice_table", "n_within_smaller_half")
    return f"{lg:g} (larger half) vs {sm:g} (smaller half)", lg > sm


@_claim("small_muscles_worst", "3.4, 4", "Small muscles are the hardest (\"still suboptimal\")",
        f"mean Dice {_P_DICE_L:.3f} (larger half) vs {_P_DICE_S:.3f} (smaller half), Table 1",
        lambda t: f"mean Dice larger half - smaller half (by anatomy reference volume, {_N_LARGER}/"
                  f"{anatomy.N_MUSCLES - _N_LARGER}) > {t['better_min_gap']:g}")
def small_muscles_worst(ctx):
    found = ctx.per_muscle("dice")
    dice = np.array([e["dice_mean"] for e in found])
    larger = np.array([e["muscle"] in _LARGER for e in found])
    lg, sm = dice[larger & np.isfinite(dice)], dice[~larger & np.isfinite(dice)]
    if not lg.size or not sm.size:
        raise Untestable(f"{ctx.sources['per_region']}: no finite Dice in one half")
    return (f"mean Dice {fmt(lg.mean())} (larger half) vs {fmt(sm.mean())} (smaller half)",
            above(lg.mean() - sm.mean(), ctx.t["better_min_gap"]))


@_claim("external_rotators_among_worst", "4, Table 1", "External rotators (smallest muscle) are among the worst",
        "lowest Dice of Table 1 (0.70)",
        lambda t: f"rank of external rotators by mean Dice (ascending, ties averaged) <= {t['worst_k']:g}")
def external_rotators_among_worst(ctx):
    found = [e for e in ctx.per_muscle("dice") if np.isfinite(e["dice_mean"])]
    keys = [e["muscle"] for e in found]
    if "external_rotators" not in keys:
        raise Untestable(f"{ctx.sources['per_region']}: no finite Dice for external rotators")
    ranks = stats.rankdata([e["dice_mean"] for e in found], method="average")
    rank = float(ranks[keys.index("external_rotators")])
    dice = found[keys.index("external_rotators")]["dice_mean"]
    return f"rank {rank:g} of {len(found)} (Dice {fmt(dice)})", at_most(rank, ctx.t["worst_k"])


@_claim("table1_pattern", "3.4, Table 1", "The same muscles are hard as in Table 1", "Table 1",
        lambda t: f"Spearman rho(per-muscle Dice, Table-1 Dice) >= {t['table1_min_spearman']:g}")
def table1_pattern(ctx):
    rho = ctx.num("dice_table", "spearman_vs_paper")
    return f"rho {rho:.2f}", at_least(rho, ctx.t["table1_min_spearman"])


@_claim("volume_error_mean", "3.4", "Mean volume error 6.5 %", anatomy.PAPER_MEAN_VOLUME_ERROR_PCT,
        lambda t: f"|mean absolute volume error - {anatomy.PAPER_MEAN_VOLUME_ERROR_PCT:g} %| "
                  f"<= {t['volume_error_tolerance_pct']:g} %")
def volume_error_mean(ctx):
    v = ctx.num("evaluation", "volume_error_abs_pct_mean")
    nan = ctx.data("evaluation").get("n_volume_nan") or 0
    note = f"; {nan} regions NaN" if nan else ""
    return (f"{v:.1f} %{note}",
            at_most(abs(v - anatomy.PAPER_MEAN_VOLUME_ERROR_PCT), ctx.t["volume_error_tolerance_pct"]))


@_claim("volume_error_above_10pct", "3.4", "Seven muscles have volume errors above 10 % (all small ones)",
        f"{len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}: {', '.join(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}",
        lambda t: f"|muscles with mean volume error > 10 % - {len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}| "
                  f"<= {t['count_tolerance']:g}")
def volume_error_above_10pct(ctx):
    n = ctx.num("volume_msd", "n_muscles_above_volume_threshold")
    overlap = ctx.data("volume_msd").get("overlap_above_volume_threshold")
    note = f" ({len(overlap)} of the paper's seven among them)" if isinstance(overlap, list) else ""
    return f"{n:g}{note}", at_most(abs(n - len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)), ctx.t["count_tolerance"])


@_claim("msd_mean", "3.4", "Overall mean surface distance 2.9 mm", anatomy.PAPER_MEAN_MSD_MM,
        lambda t: f"|mean MSD - {anatomy.PAPER_MEAN_MSD_MM:g} mm| <= {t['msd_tolerance_mm']:g} mm")
def msd_mean(ctx):
    msd = ctx.num("evaluation", "msd_mm_mean")
    ev = ctx.data("evaluation")
    nan = ev.get("n_msd_nan") or 0
    rows = ev.get("n_rows")
    note = f"; over {rows - nan} of {rows} regions, {nan} NaN (empty masks)" if nan and rows else ""
    return f"{msd:.1f} mm{note}", at_most(abs(msd - anatomy.PAPER_MEAN_MSD_MM), ctx.t["msd_tolerance_mm"])


@_claim("msd_above_4mm", "3.4", "Seven muscles have mean distances above 4 mm", evaluation.PAPER_N_MSD_ABOVE_4MM,
        lambda t: f"|muscles with mean MSD > 4 mm - {evaluation.PAPER_N_MSD_ABOVE_4MM}| <= {t['count_tolerance']:g}")
def msd_above_4mm(ctx):
    n = ctx.num("volume_msd", "n_muscles_above_msd_threshold")
    und = ctx.data("volume_msd").get("n_muscles_msd_undetermined") or 0
    note = f" ({und} muscles without a finite MSD)" if und else ""
    return f"{n:g}{note}", at_most(abs(n - evaluation.PAPER_N_MSD_ABOVE_4MM), ctx.t["count_tolerance"])


@_claim("most_below_5pct_4mm", "3.4", "Most muscles have < 5 % volume error and < 4 mm surface distance",
        "qualitative (Fig. 6 histograms)",
        lambda t: f"share of regions with volume error < 5 % and share with MSD < 4 mm both > {t['most_share']:g}")
def most_below_5pct_4mm(ctx):
    vol = ctx.num("volume_msd", "share_volume_below_typical")
    msd = ctx.num("volume_msd", "share_msd_below_threshold")
    return (f"{vol:.0%} below 5 %, {msd:.0%} below 4 mm",
            above(vol, ctx.t["most_share"]) and above(msd, ctx.t["most_share"]))


@_claim("msd_tracks_dice", "3.4", "MSD is consistent with Dice (\"strong positive correlation\": high Dice, "
        "small distance)", "qualitative, no coefficient given",
        lambda t: f"Spearman rho(per-muscle Dice, per-muscle MSD) <= -{t['min_abs_spearman']:g}")
def msd_tracks_dice(ctx):
    rho = ctx.num("volume_msd", "muscle_dice_msd_spearman_rho")
    n = ctx.data("volume_msd").get("n_muscle_dice_msd_pairs")
    return f"rho {rho:.2f}" + (f" over {n} muscles" if n is not None else ""), at_most(rho, -ctx.t["min_abs_spearman"])


@_claim("volume_error_tracks_dice", "3.4", "Volume error is largest where Dice is low (small, irregular muscles)",
        f"Table-1 Dice {np.mean(_P_ABOVE10):.2f} for the seven > 10 % muscles vs {np.mean(_P_REST):.2f} for the rest",
        lambda t: f"Spearman rho(per-muscle Dice, per-muscle volume error) <= -{t['min_abs_spearman']:g}")
def volume_error_tracks_dice(ctx):
    found = ctx.per_muscle("dice", "volume_error_abs_pct")
    rho, n = spearman([e["dice_mean"] for e in found], [e["volume_error_abs_pct_mean"] for e in found],
                       f"{ctx.sources['per_region']}: Dice vs volume error")
    return f"rho {rho:.2f} over {n} muscles", at_most(rho, -ctx.t["min_abs_spearman"])
