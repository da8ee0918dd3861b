"""The paper's claims (sections 3 and 4, abstract) checked against this run's metrics.

Every claim gets a verdict computed by a rule whose thresholds come from params.yaml's
``claims:`` section (passed in as a flat ``thresholds`` dict); nothing is typed by hand:

* ``"reproduced"``: the rule holds on this run's numbers;
* ``"not reproduced"``: the rule fails;
* ``"not testable here"``: an input is missing (file absent, key absent, value NaN/None,
  too few variants), with the reason.

Figure-5 comparisons (``metrics/ablation.json``) are found by the variants' fields, never by
their names: panel a = plain U-Nets differing in ``levels`` at the root-filter count panel a's
members share, panel b the same for ``root_filters``, panel c = U-Nets of each ``block`` type at
panel c's levels, panel d = the architectures drawn in panel d. A variant's ``panel`` is one
letter or a list (the baseline is drawn in a, b and c); variants drawn only in panel d (five
levels) do not enter panels a-c.

Inputs are the study's metrics, already read (``llseg claims`` reads them): a dict mapping
an input name of ``INPUTS`` to the parsed JSON (or the per-region rows for ``per_region``), or
to None when the file does not exist. Paper values come from ``llseg.anatomy`` (Table 1 and
the headline numbers) and ``llseg.evaluation`` (the section-3.4 lists); the few qualitative
statements with a number are kept here as named constants with the paper's words.
"""
from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from . import anatomy, evaluation

__all__ = [
    "REPRODUCED",
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "VERDICTS",
    "INPUTS",
    "THRESHOLD_KEYS",
    "PAPER_TABLE1_MEAN_DICE",
    "PAPER_BLOCK_DICE_SPREAD",
    "evaluate_claims",
    "count_verdicts",
    "claims_markdown",
]

log = logging.getLogger(__name__)

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE)

#: Input name -> the file it is read from (default locations; used in "not testable" reasons).
INPUTS = {
    "bias_correction": "metrics/bias_correction.json",
    "cascade": "metrics/cascade.json",
    "two_stages": "metrics/two_stages.json",
    "ablation": "metrics/ablation.json",
    "dice_table": "metrics/dice_table.json",
    "volume_msd": "metrics/volume_msd.json",
    "evaluation": "metrics/evaluation.json",
    "per_region": "reports/tables/metrics_per_region.csv",
}

#: params.yaml ``claims:`` keys (all required); ``ablation_dice`` is a string, the rest numbers.
THRESHOLD_KEYS = (
    "n4_min_cov_reduction_pct", "n4_min_share_improved", "stage2_min_gain", "stage1_max_estimated_share",
    "roughness_min_reduction", "box_ratio_min_dice_difference", "tta_min_gain", "similar_dice_tolerance",
    "ablation_dice", "better_min_gap", "levels_beyond_three_max_gain", "block_max_spread",
    "overall_dice_tolerance", "count_tolerance", "slightly_worse_max_gap", "worst_k", "table1_min_spearman",
    "volume_error_tolerance_pct", "msd_tolerance_mm", "most_share", "min_abs_spearman",
)
_ABLATION_DICE = ("final_dice", "best_dice")

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


#: Float noise (e.g. means of equal values summed in another order) is not a difference: every
#: comparison with a threshold allows this much slack.
_EPS = 1e-9


def _above(x: float, threshold: float) -> bool:
    return x > threshold + _EPS


def _at_most(x: float, threshold: float) -> bool:
    return x <= threshold + _EPS


def _at_least(x: float, threshold: float) -> bool:
    return x >= threshold - _EPS


class _Untestable(Exception):
    """Raised inside a rule when an input it needs is missing; the message is the reason."""


@dataclass(frozen=True)
class _Claim:
    id: str
    section: str
    claim: str
    paper: str | float
    rule: Callable[[Mapping], str]       # thresholds -> the rule in words
    check: Callable[["_Context"], tuple[str, bool]]  # -> (measured, holds)


_CLAIMS: list[_Claim] = []


def _claim(id_, section, claim, paper, rule):
    def register(check):
        _CLAIMS.append(_Claim(id_, section, claim, paper, rule, check))
        return check
    return register


# ----------------------------------------------------------------------------- input access

def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


class _Context:
    """The inputs of one evaluation with accessors that raise ``_Untestable`` with a reason."""

    def __init__(self, inputs: Mapping, thresholds: Mapping, stage: str, sources: Mapping):
        self.inputs, self.t, self.stage, self.sources = inputs, thresholds, stage, sources

    def data(self, name: str):
        value = self.inputs.get(name)
        if value is None:
            raise _Untestable(f"{self.sources[name]} missing")
        return value

    def num(self, name: str, *keys) -> float:
        value = self.data(name)
        for k in keys:
            if not isinstance(value, Mapping) or k not in value:
                raise _Untestable(f"{self.sources[name]} has no '{'.'.join(map(str, keys))}'")
            value = value[k]
        return _finite(value, f"{self.sources[name]}: '{'.'.join(map(str, keys))}'")

    def per_muscle(self, *columns) -> list[dict]:
        """Per-muscle means of this stage's rows (``evaluation.per_muscle``)."""
        rows = self.data("per_region")
        try:
            found = evaluation.per_muscle(evaluation.select_stage(rows, self.stage), columns=columns)
        except (ValueError, TypeError) as exc:
            raise _Untestable(f"{self.sources['per_region']}: {exc}") from None
        if not any(np.isfinite(e[f"{c}_mean"]) for e in found for c in columns):
            raise _Untestable(f"{self.sources['per_region']}: no finite {'/'.join(columns)} for stage '{self.stage}'")
        return found


def _finite(value, what: str) -> float:
    if value is None or isinstance(value, bool):
        raise _Untestable(f"{what} is {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Untestable(f"{what} is not a number ({value!r})") from None
    if not math.isfinite(number):
        raise _Untestable(f"{what} is NaN")
    return number


def _spearman(x, y, what: str) -> tuple[float, int]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        raise _Untestable(f"{what}: fewer than 3 finite pairs or a constant variable ({int(ok.sum())} pairs)")
    return float(stats.spearmanr(x[ok], y[ok]).statistic), int(ok.sum())


# ----------------------------------------------------------------------------- ablation (Fig. 5)

def _variants(ctx) -> list[dict]:
    data, src = ctx.data("ablation"), ctx.sources["ablation"]
    variants = data.get("variants") if isinstance(data, Mapping) else None
    if not isinstance(variants, Mapping) or not variants:
        raise _Untestable(f"{src} has no 'variants'")
    return [{**v, "name": name} for name, v in variants.items() if isinstance(v, Mapping)]


def _value(ctx, v: Mapping, key: str | None = None) -> float:
    key = key or ctx.t["ablation_dice"]
    if key not in v:
        raise _Untestable(f"{ctx.sources['ablation']}: variant '{v['name']}' has no '{key}'")
    return _finite(v[key], f"{ctx.sources['ablation']}: variant '{v['name']}' '{key}'")


def _in(v: Mapping, panel: str) -> bool:
    """Whether variant ``v`` is drawn in ``panel`` (``panel`` field: one letter or a list of them)."""
    drawn = v.get("panel")
    return drawn == panel if isinstance(drawn, str) else isinstance(drawn, Sequence) and panel in drawn


def _abc(vs):
    """Variants drawn in panels a-c (they share the baseline; panel d's five-level networks are
    only compared with each other)."""
    return [v for v in vs if any(_in(v, p) for p in "abc")]


def _plain(vs):
    return [v for v in _abc(vs) if v.get("arch") == "unet" and v.get("block") == "plain"]


def _mode(values):
    values = [v for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else None


def _series(ctx, vary: str, key: str | None = None) -> tuple[dict, object]:
    """Plain U-Nets varying ``vary`` ("levels": panel a, "root_filters": panel b) with the
    other field held at the value most panel members share -> ({x: mean value}, fixed value)."""
    panel, fixed = ("a", "root_filters") if vary == "levels" else ("b", "levels")
    vs = _variants(ctx)
    fixed_value = _mode([v.get(fixed) for v in _plain(vs) if _in(v, panel)])
    by = defaultdict(list)
    for v in _plain(vs):
        if v.get(fixed) == fixed_value and v.get(vary) is not None:
            by[int(v[vary])].append(_value(ctx, v, key))
    if len(by) < 2:
        raise _Untestable(f"{ctx.sources['ablation']}: fewer than two plain U-Nets differing only in {vary} "
                          f"(panel {panel})")
    return {x: float(np.mean(by[x])) for x in sorted(by)}, fixed_value


def _baseline(ctx) -> dict:
    """The plain U-Net shared by panels a and b (their fixed root filters and levels)."""
    vs = _plain(_variants(ctx))
    if not vs:
        raise _Untestable(f"{ctx.sources['ablation']}: no plain U-Net variant")
    rf = _mode([v.get("root_filters") for v in vs if _in(v, "a")])
    lv = _mode([v.get("levels") for v in vs if _in(v, "b")])
    both = [v for v in vs if v.get("levels") == lv and v.get("root_filters") == rf]
    return both[0] if both else vs[0]


def _blocks(ctx, key: str | None = None) -> dict:
    """Panel c: mean value per block type (plain, residual, dense) at panel c's levels and the
    root-filter count closest to panel c's."""
    vs = _variants(ctx)
    panel = [v for v in vs if _in(v, "c")]
    if not panel:
        raise _Untestable(f"{ctx.sources['ablation']}: no panel-c (block) variants")
    levels, rf = _mode([v.get("levels") for v in panel]), _mode([v.get("root_filters") for v in panel])
    out = {}
    for block in ("plain", "residual", "dense"):
        cands = [v for v in _abc(vs)
                 if v.get("arch") == "unet" and v.get("block") == block and v.get("levels") == levels]
        if not cands:
            raise _Untestable(f"{ctx.sources['ablation']}: no {block} U-Net with {levels} levels")
        best = min(abs((v.get("root_filters") or 0) - (rf or 0)) for v in cands)
        out[block] = float(np.mean([_value(ctx, v, key) for v in cands
                                    if abs((v.get("root_filters") or 0) - (rf or 0)) == best]))
    return out


def _archs(ctx, key: str | None = None) -> dict:
    """Panel d: mean value per architecture; the U-Net is panel d's own or else the baseline."""
    vs = _variants(ctx)
    out = {}
    for arch in ("unet", "fcn8s", "segnet"):
        cands = [v for v in vs if v.get("arch") == arch and _in(v, "d")] or (
            [_baseline(ctx)] if arch == "unet" else [v for v in vs if v.get("arch") == arch])
        if not cands:
            raise _Untestable(f"{ctx.sources['ablation']}: no {arch} variant")
        out[arch] = float(np.mean([_value(ctx, v, key) for v in cands]))
    return out


def _ablation_note(ctx) -> str:
    data = ctx.data("ablation")
    return f" ({data.get('muscle', '?')}, {data.get('iterations', '?')} iterations, {ctx.t['ablation_dice']})"


def _fmt_series(series: dict) -> str:
    return ", ".join(f"{x}: {_f(d)}" for x, d in series.items())


# ----------------------------------------------------------------------------- the claims
# Each check returns (measured text, rule holds). Thresholds: ctx.t.

@_claim("n4_homogeneity", "3.1", "N4 bias correction makes the muscle intensity more homogeneous",
        "qualitative (Fig. 3): \"improved the homogeneity of the images\"",
        lambda t: f"mean muscle-intensity CoV drops by >= {t['n4_min_cov_reduction_pct']:g} % and drops in "
                  f">= {t['n4_min_share_improved']:.0%} of cases")
def _(ctx):
    before, after = ctx.num("bias_correction", "cov_before_mean"), ctx.num("bias_correction", "cov_after_mean")
    pct = ctx.num("bias_correction", "cov_reduction_pct")
    n, improved = ctx.num("bias_correction", "n_cases"), ctx.num("bias_correction", "n_improved")
    if n <= 0:
        raise _Untestable(f"{ctx.sources['bias_correction']}: n_cases is {n:g}")
    return (f"CoV {_f(before)} -> {_f(after)} (-{pct:.1f} %); lower in {improved:g} of {n:g} cases",
            _at_least(pct, ctx.t["n4_min_cov_reduction_pct"])
            and _at_least(improved / n, ctx.t["n4_min_share_improved"]))


@_claim("stage2_beats_stage1", "3.2, 4", "Stage 2 (full-resolution crops) segments more accurately than stage 1",
        "qualitative (Fig. 4a vs 4e): stage-1 boundaries \"inaccurate\"; final Table-1 mean 0.892",
        lambda t: f"mean Dice(stage 2) - mean Dice(stage 1) > {t['stage2_min_gain']:g}")
def _(ctx):
    d1, d2 = ctx.num("cascade", "mean_dice_stage1"), ctx.num("cascade", "mean_dice_stage2")
    cases = ctx.data("cascade").get("cases") or []
    pairs = [(c.get("dice_stage1"), c.get("dice_stage2")) for c in cases if isinstance(c, Mapping)]
    pairs = [(a, b) for a, b in pairs if isinstance(a, (int, float)) and isinstance(b, (int, float))
             and math.isfinite(a) and math.isfinite(b)]
    per_case = f"; better in {sum(b > a for a, b in pairs)} of {len(pairs)} cases" if pairs else ""
    return f"{_f(d1)} -> {_f(d2)} (gain {d2 - d1:+.3f}){per_case}", _above(d2 - d1, ctx.t["stage2_min_gain"])


@_claim("stage1_localises", "3.2, 2.2.1, 4", "Stage 1 localises the muscles; only extremely small ones "
        "(e.g. external rotators) get no label and need estimated boxes",
        "\"the location of the RoI can be accurately identified\"; a few small muscles missed",
        lambda t: f"mean share of the {anatomy.N_REGIONS} regions whose box is estimated (no stage-1 label) "
                  f"<= {t['stage1_max_estimated_share']:g}")
def _(ctx):
    cases = ctx.data("cascade").get("cases")
    if not cases:
        raise _Untestable(f"{ctx.sources['cascade']} has no 'cases'")
    n = [_finite(c.get("n_estimated_boxes"), f"{ctx.sources['cascade']}: 'cases[].n_estimated_boxes'") for c in cases]
    share = float(np.mean(n)) / anatomy.N_REGIONS
    return (f"{np.mean(n):.1f} of {anatomy.N_REGIONS} boxes estimated per case ({share:.0%})",
            _at_most(share, ctx.t["stage1_max_estimated_share"]))


@_claim("stage1_jagged", "3.2", "Stage-1 contours are jagged (loss of resolution); stage 2 is smoother",
        "qualitative (Fig. 4a): \"the contours were jagged\"",
        lambda t: f"roughness(stage 1) - roughness(stage 2, TTA) > {t['roughness_min_reduction']:g} "
                  "(perimeter / convex-hull perimeter per slice)")
def _(ctx):
    r1, r2 = ctx.num("two_stages", "mean_roughness", "stage1"), ctx.num("two_stages", "mean_roughness", "stage2_tta")
    return f"roughness {_f(r1)} (stage 1) vs {_f(r2)} (stage 2 TTA)", _above(r1 - r2, ctx.t["roughness_min_reduction"])


@_claim("box_ratio_matters", "3.2", "Different bounding boxes (enlargement ratios) change the stage-2 output",
        "qualitative (Fig. 4c vs 4d)",
        lambda t: f"|Dice(low ratio) - Dice(high ratio)| >= {t['box_ratio_min_dice_difference']:g}")
def _(ctx):
    lo = ctx.num("two_stages", "mean_dice", "stage2_box_ratio_low")
    hi = ctx.num("two_stages", "mean_dice", "stage2_box_ratio_high")
    ratios = ctx.data("two_stages").get("ratios")
    note = f" (ratios {ratios})" if ratios is not None else ""
    return (f"Dice {_f(lo)} (low) vs {_f(hi)} (high){note}",
            _at_least(abs(lo - hi), ctx.t["box_ratio_min_dice_difference"]))


@_claim("tta_beats_single_crop", "3.2, 4", "Averaging six test-time boxes beats a single stage-1-based crop",
        "qualitative (Fig. 4e vs 4c, 4d): \"robustness against the stage 1 error is improved\"",
        lambda t: f"Dice(TTA) - Dice(best single-box crop) > {t['tta_min_gain']:g}")
def _(ctx):
    tta = ctx.num("two_stages", "mean_dice", "stage2_tta")
    singles = [ctx.num("two_stages", "mean_dice", k) for k in ("stage2_box_ratio_low", "stage2_box_ratio_high")]
    best = max(singles)
    return (f"TTA {_f(tta)} vs single crops {_f(singles[0])} / {_f(singles[1])} (gain over best {tta - best:+.3f})",
            _above(tta - best, ctx.t["tta_min_gain"]))


@_claim("tta_like_gt_box", "3.2", "TTA on stage-1 boxes is comparable with (or better than) cropping at the "
        "ground-truth box", "qualitative (Fig. 4e vs 4b): \"comparable with or even superior\"",
        lambda t: f"Dice(TTA) >= Dice(ground-truth box) - {t['similar_dice_tolerance']:g}")
def _(ctx):
    tta, gt = ctx.num("two_stages", "mean_dice", "stage2_tta"), ctx.num("two_stages", "mean_dice", "stage2_gt_box")
    return f"TTA {_f(tta)} vs GT box {_f(gt)} ({tta - gt:+.3f})", _at_least(tta - gt, -ctx.t["similar_dice_tolerance"])


@_claim("tta_smooths_contours", "3.2, 4", "TTA smooths the contours (\"due to multiple averages\")",
        "qualitative (Fig. 4e; abstract)",
        lambda t: f"roughness(smoothest single-box crop) - roughness(TTA) > {t['roughness_min_reduction']:g}")
def _(ctx):
    tta = ctx.num("two_stages", "mean_roughness", "stage2_tta")
    singles = [ctx.num("two_stages", "mean_roughness", k) for k in ("stage2_box_ratio_low", "stage2_box_ratio_high")]
    return (f"roughness TTA {_f(tta)} vs single crops {_f(singles[0])} / {_f(singles[1])}",
            _above(min(singles) - tta, ctx.t["roughness_min_reduction"]))


@_claim("more_levels_help", "3.3", "More resolution levels tend to give better results (Fig. 5a)",
        "qualitative (Fig. 5a, adductor brevis)",
        lambda t: f"plain U-Net, same root filters: Dice(most levels) - Dice(fewest levels) > {t['better_min_gap']:g}")
def _(ctx):
    s, rf = _series(ctx, "levels")
    first, last = s[min(s)], s[max(s)]
    return (f"levels {_fmt_series(s)} (root filters {rf}){_ablation_note(ctx)}",
            _above(last - first, ctx.t["better_min_gap"]))


@_claim("levels_beyond_three_small", "3.3, 4", "Beyond three resolution levels the gain is marginal",
        "\"the difference is very small between three and four\"",
        lambda t: f"best Dice with > 3 levels - Dice with 3 levels <= {t['levels_beyond_three_max_gain']:g}")
def _(ctx):
    s, _rf = _series(ctx, "levels")
    deeper = [d for lv, d in s.items() if lv > 3]
    if 3 not in s or not deeper:
        raise _Untestable(f"{ctx.sources['ablation']}: needs plain U-Nets with 3 and with > 3 levels (has {sorted(s)})")
    gain = max(deeper) - s[3]
    return f"gain beyond 3 levels {gain:+.3f} ({_fmt_series(s)})", _at_most(gain, ctx.t["levels_beyond_three_max_gain"])


@_claim("more_filters_help", "3.3", "More filters at the root level give higher Dice (Fig. 5b)",
        "qualitative (Fig. 5b)",
        lambda t: f"plain U-Net, same levels: Dice(most root filters) - Dice(fewest) > {t['better_min_gap']:g}")
def _(ctx):
    s, lv = _series(ctx, "root_filters")
    return (f"root filters {_fmt_series(s)} ({lv} levels){_ablation_note(ctx)}",
            _above(s[max(s)] - s[min(s)], ctx.t["better_min_gap"]))


@_claim("width_beats_depth", "4", "Network width matters more than depth beyond three levels",
        "\"the width of the network has a more significant influence\"",
        lambda t: f"gain(fewest -> most root filters) - gain(3 -> best > 3 levels) > {t['better_min_gap']:g}")
def _(ctx):
    s_rf, _lv = _series(ctx, "root_filters")
    s_lv, _rf = _series(ctx, "levels")
    deeper = [d for lv, d in s_lv.items() if lv > 3]
    if 3 not in s_lv or not deeper:
        raise _Untestable(f"{ctx.sources['ablation']}: needs plain U-Nets with 3 and with > 3 levels "
                          f"(has {sorted(s_lv)})")
    width, depth = s_rf[max(s_rf)] - s_rf[min(s_rf)], max(deeper) - s_lv[3]
    return f"width gain {width:+.3f} vs depth gain {depth:+.3f}", _above(width - depth, ctx.t["better_min_gap"])


@_claim("residual_about_plain", "3.3, 4", "Residual blocks are about equal to (slightly above) the plain U-Net",
        "\"the difference with plain U-Net is small\"",
        lambda t: f"|Dice(residual) - Dice(plain)| <= {t['similar_dice_tolerance']:g}")
def _(ctx):
    b = _blocks(ctx)
    return (f"residual {_f(b['residual'])} vs plain {_f(b['plain'])}{_ablation_note(ctx)}",
            _at_most(abs(b["residual"] - b["plain"]), ctx.t["similar_dice_tolerance"]))


@_claim("blocks_within_001", "4", "Plain, residual and dense U-Nets are within 0.01 Dice of each other",
        PAPER_BLOCK_DICE_SPREAD, lambda t: f"max - min Dice over the three block types <= {t['block_max_spread']:g}")
def _(ctx):
    b = _blocks(ctx)
    spread = max(b.values()) - min(b.values())
    return (f"spread {spread:.3f} ({', '.join(f'{k} {_f(v)}' for k, v in b.items())})",
            _at_most(spread, ctx.t["block_max_spread"]))


@_claim("dense_worst", "3.3", "Dense blocks perform worst of the three block types", "qualitative (Fig. 5c)",
        lambda t: f"min(Dice plain, Dice residual) - Dice(dense) > {t['better_min_gap']:g}")
def _(ctx):
    b = _blocks(ctx)
    gap = min(b["plain"], b["residual"]) - b["dense"]
    return (f"dense {_f(b['dense'])} vs plain {_f(b['plain'])}, residual {_f(b['residual'])}",
            _above(gap, ctx.t["better_min_gap"]))


@_claim("residual_costs_more", "4", "The residual U-Net needs more parameters than the plain one",
        "\"the network with residual block needs more parameters and computations\"",
        lambda t: "n_params(residual) > n_params(plain), same levels")
def _(ctx):
    b = _blocks(ctx, "n_params")
    return f"{b['residual']:,.0f} vs {b['plain']:,.0f} parameters", b["residual"] > b["plain"]


@_claim("bigger_costs_more", "4", "Deeper and wider networks cost more (memory and computation)",
        "\"it comes at the cost of increased memory requirement and computation time\"",
        lambda t: "n_params(most levels) > n_params(fewest) and n_params(most root filters) > n_params(fewest)")
def _(ctx):
    s_lv, _ = _series(ctx, "levels", "n_params")
    s_rf, _ = _series(ctx, "root_filters", "n_params")
    return (f"levels {min(s_lv)}->{max(s_lv)}: {s_lv[min(s_lv)]:,.0f}->{s_lv[max(s_lv)]:,.0f}; root filters "
            f"{min(s_rf)}->{max(s_rf)}: {s_rf[min(s_rf)]:,.0f}->{s_rf[max(s_rf)]:,.0f} parameters",
            s_lv[max(s_lv)] > s_lv[min(s_lv)] and s_rf[max(s_rf)] > s_rf[min(s_rf)])


@_claim("unet_about_segnet", "3.3, 4", "U-Net and SegNet are comparable (Fig. 5d)", "qualitative (Fig. 5d)",
        lambda t: f"|Dice(U-Net) - Dice(SegNet)| <= {t['similar_dice_tolerance']:g}")
def _(ctx):
    a = _archs(ctx)
    return (f"U-Net {_f(a['unet'])} vs SegNet {_f(a['segnet'])}{_ablation_note(ctx)}",
            _at_most(abs(a["unet"] - a["segnet"]), ctx.t["similar_dice_tolerance"]))


@_claim("fcn_worse", "3.3", "FCN-8s is slightly worse than U-Net and SegNet", "qualitative (Fig. 5d)",
        lambda t: f"min(Dice U-Net, Dice SegNet) - Dice(FCN-8s) > {t['better_min_gap']:g}")
def _(ctx):
    a = _archs(ctx)
    return (f"FCN-8s {_f(a['fcn8s'])} vs U-Net {_f(a['unet'])}, SegNet {_f(a['segnet'])}",
            _above(min(a["unet"], a["segnet"]) - a["fcn8s"], ctx.t["better_min_gap"]))


@_claim("fcn_worse_early", "3.3", "FCN-8s lags \"especially at early epochs\"", "qualitative (Fig. 5d curves)",
        lambda t: "FCN-8s's shortfall to min(U-Net, SegNet) early ('early_dice': the first quarter of the "
                  "curve) is > 0 and larger than at the end (a negative shortfall means FCN-8s does not lag)")
def _(ctx):
    early = _archs(ctx, "early_dice")
    end = _archs(ctx)
    gap_early = min(early["unet"], early["segnet"]) - early["fcn8s"]
    gap_end = min(end["unet"], end["segnet"]) - end["fcn8s"]
    return (f"shortfall early {gap_early:+.3f} vs end {gap_end:+.3f}",
            _above(gap_early, 0.0) and _above(gap_early - gap_end, 0.0))


@_claim("overall_mean_dice", "3.4, Table 1", "Mean Dice over the 35 muscles ~0.89", round(PAPER_TABLE1_MEAN_DICE, 3),
        lambda t: f"|mean of per-muscle Dice - {PAPER_TABLE1_MEAN_DICE:.3f}| <= {t['overall_dice_tolerance']:g}")
def _(ctx):
    d = ctx.num("dice_table", "dice_mean_over_muscles")
    margin = ctx.data("dice_table").get("one_voxel_margin_dice_mean_over_muscles")
    note = ("" if margin is None or not np.isfinite(margin)       # resolution reference (metrics.one_voxel_margin_dice)
            else f"; truth vs truth grown by one in-plane voxel: {_f(margin)}")
    return (f"{_f(d)} ({d - PAPER_TABLE1_MEAN_DICE:+.3f}){note}",
            _at_most(abs(d - PAPER_TABLE1_MEAN_DICE), ctx.t["overall_dice_tolerance"]))


@_claim("within_interobserver_count", "abstract, 3.4, 4", "14 of 35 muscles are within interobserver variability "
        "(Table 1's rounded values give 15)",
        anatomy.PAPER_WITHIN_INTEROBSERVER,
        lambda t: f"|muscles with mean Dice >= interobserver - {anatomy.PAPER_WITHIN_INTEROBSERVER}| "
                  f"<= {t['count_tolerance']:g}")
def _(ctx):
    n = ctx.num("dice_table", "n_within")
    und = ctx.data("dice_table").get("n_undetermined") or 0
    note = f" ({und} undetermined)" if und else ""
    return (f"{n:g} of {anatomy.N_MUSCLES}{note}",
            _at_most(abs(n - anatomy.PAPER_WITHIN_INTEROBSERVER), ctx.t["count_tolerance"]))


@_claim("worse_only_slightly", "abstract, 4", "The other muscles are only slightly worse than humans",
        f"median shortfall {np.median(_P_GAPS):.2f} over the {len(_P_GAPS)} worse muscles of Table 1 "
        f"(max {max(_P_GAPS):.2f})",
        lambda t: f"median (interobserver - Dice) over muscles below interobserver <= {t['slightly_worse_max_gap']:g}")
def _(ctx):
    ctx.per_muscle("dice")  # raises when no finite Dice
    table = evaluation.table1(evaluation.select_stage(ctx.data("per_region"), ctx.stage))
    gaps = [t["interobserver_dice"] - t["dice_mean"] for t in table if t["within_interobserver"] is False]
    if not gaps:
        return "no muscle below interobserver", True
    return (f"median shortfall {np.median(gaps):.3f} over {len(gaps)} muscles (max {max(gaps):.3f})",
            _at_most(float(np.median(gaps)), ctx.t["slightly_worse_max_gap"]))


@_claim("large_muscles_within", "3.4", "Within interobserver variability \"especially for muscles with large "
        "volumes\"", f"{_P_WITHIN_L} (larger half) vs {_P_WITHIN_S} (smaller half), Table 1",
        lambda t: "muscles within interobserver: larger half (by ground-truth volume) > smaller half")
def _(ctx):
    lg, sm = ctx.num("dice_table", "n_within_larger_half"), ctx.num("dice_table", "n_within_smaller_half")
    return f"{lg:g} (larger half) vs {sm:g} (smaller half)", lg > sm


@_claim("small_muscles_worst", "3.4, 4", "Small muscles are the hardest (\"still suboptimal\")",
        f"mean Dice {_P_DICE_L:.3f} (larger half) vs {_P_DICE_S:.3f} (smaller half), Table 1",
        lambda t: f"mean Dice larger half - smaller half (by anatomy reference volume, {_N_LARGER}/"
                  f"{anatomy.N_MUSCLES - _N_LARGER}) > {t['better_min_gap']:g}")
def _(ctx):
    found = ctx.per_muscle("dice")
    dice = np.array([e["dice_mean"] for e in found])
    larger = np.array([e["muscle"] in _LARGER for e in found])
    lg, sm = dice[larger & np.isfinite(dice)], dice[~larger & np.isfinite(dice)]
    if not lg.size or not sm.size:
        raise _Untestable(f"{ctx.sources['per_region']}: no finite Dice in one half")
    return (f"mean Dice {_f(lg.mean())} (larger half) vs {_f(sm.mean())} (smaller half)",
            _above(lg.mean() - sm.mean(), ctx.t["better_min_gap"]))


@_claim("external_rotators_among_worst", "4, Table 1", "External rotators (smallest muscle) are among the worst",
        "lowest Dice of Table 1 (0.70)",
        lambda t: f"rank of external rotators by mean Dice (ascending, ties averaged) <= {t['worst_k']:g}")
def _(ctx):
    found = [e for e in ctx.per_muscle("dice") if np.isfinite(e["dice_mean"])]
    keys = [e["muscle"] for e in found]
    if "external_rotators" not in keys:
        raise _Untestable(f"{ctx.sources['per_region']}: no finite Dice for external rotators")
    ranks = stats.rankdata([e["dice_mean"] for e in found], method="average")
    rank = float(ranks[keys.index("external_rotators")])
    dice = found[keys.index("external_rotators")]["dice_mean"]
    return f"rank {rank:g} of {len(found)} (Dice {_f(dice)})", _at_most(rank, ctx.t["worst_k"])


@_claim("table1_pattern", "3.4, Table 1", "The same muscles are hard as in Table 1", "Table 1",
        lambda t: f"Spearman rho(per-muscle Dice, Table-1 Dice) >= {t['table1_min_spearman']:g}")
def _(ctx):
    rho = ctx.num("dice_table", "spearman_vs_paper")
    return f"rho {rho:.2f}", _at_least(rho, ctx.t["table1_min_spearman"])


@_claim("volume_error_mean", "3.4", "Mean volume error 6.5 %", anatomy.PAPER_MEAN_VOLUME_ERROR_PCT,
        lambda t: f"|mean absolute volume error - {anatomy.PAPER_MEAN_VOLUME_ERROR_PCT:g} %| "
                  f"<= {t['volume_error_tolerance_pct']:g} %")
def _(ctx):
    v = ctx.num("evaluation", "volume_error_abs_pct_mean")
    nan = ctx.data("evaluation").get("n_volume_nan") or 0
    note = f"; {nan} regions NaN" if nan else ""
    return (f"{v:.1f} %{note}",
            _at_most(abs(v - anatomy.PAPER_MEAN_VOLUME_ERROR_PCT), ctx.t["volume_error_tolerance_pct"]))


@_claim("volume_error_above_10pct", "3.4", "Seven muscles have volume errors above 10 % (all small ones)",
        f"{len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}: {', '.join(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}",
        lambda t: f"|muscles with mean volume error > 10 % - {len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)}| "
                  f"<= {t['count_tolerance']:g}")
def _(ctx):
    n = ctx.num("volume_msd", "n_muscles_above_volume_threshold")
    overlap = ctx.data("volume_msd").get("overlap_above_volume_threshold")
    note = f" ({len(overlap)} of the paper's seven among them)" if isinstance(overlap, list) else ""
    return f"{n:g}{note}", _at_most(abs(n - len(evaluation.PAPER_VOLUME_ERROR_ABOVE_10PCT)), ctx.t["count_tolerance"])


@_claim("msd_mean", "3.4", "Overall mean surface distance 2.9 mm", anatomy.PAPER_MEAN_MSD_MM,
        lambda t: f"|mean MSD - {anatomy.PAPER_MEAN_MSD_MM:g} mm| <= {t['msd_tolerance_mm']:g} mm")
def _(ctx):
    msd = ctx.num("evaluation", "msd_mm_mean")
    ev = ctx.data("evaluation")
    nan = ev.get("n_msd_nan") or 0
    rows = ev.get("n_rows")
    note = f"; over {rows - nan} of {rows} regions, {nan} NaN (empty masks)" if nan and rows else ""
    return f"{msd:.1f} mm{note}", _at_most(abs(msd - anatomy.PAPER_MEAN_MSD_MM), ctx.t["msd_tolerance_mm"])


@_claim("msd_above_4mm", "3.4", "Seven muscles have mean distances above 4 mm", evaluation.PAPER_N_MSD_ABOVE_4MM,
        lambda t: f"|muscles with mean MSD > 4 mm - {evaluation.PAPER_N_MSD_ABOVE_4MM}| <= {t['count_tolerance']:g}")
def _(ctx):
    n = ctx.num("volume_msd", "n_muscles_above_msd_threshold")
    und = ctx.data("volume_msd").get("n_muscles_msd_undetermined") or 0
    note = f" ({und} muscles without a finite MSD)" if und else ""
    return f"{n:g}{note}", _at_most(abs(n - evaluation.PAPER_N_MSD_ABOVE_4MM), ctx.t["count_tolerance"])


@_claim("most_below_5pct_4mm", "3.4", "Most muscles have < 5 % volume error and < 4 mm surface distance",
        "qualitative (Fig. 6 histograms)",
        lambda t: f"share of regions with volume error < 5 % and share with MSD < 4 mm both > {t['most_share']:g}")
def _(ctx):
    vol = ctx.num("volume_msd", "share_volume_below_typical")
    msd = ctx.num("volume_msd", "share_msd_below_threshold")
    return (f"{vol:.0%} below 5 %, {msd:.0%} below 4 mm",
            _above(vol, ctx.t["most_share"]) and _above(msd, ctx.t["most_share"]))


@_claim("msd_tracks_dice", "3.4", "MSD is consistent with Dice (\"strong positive correlation\": high Dice, "
        "small distance)", "qualitative, no coefficient given",
        lambda t: f"Spearman rho(per-muscle Dice, per-muscle MSD) <= -{t['min_abs_spearman']:g}")
def _(ctx):
    rho = ctx.num("volume_msd", "muscle_dice_msd_spearman_rho")
    n = ctx.data("volume_msd").get("n_muscle_dice_msd_pairs")
    return f"rho {rho:.2f}" + (f" over {n} muscles" if n is not None else ""), _at_most(rho, -ctx.t["min_abs_spearman"])


@_claim("volume_error_tracks_dice", "3.4", "Volume error is largest where Dice is low (small, irregular muscles)",
        f"Table-1 Dice {np.mean(_P_ABOVE10):.2f} for the seven > 10 % muscles vs {np.mean(_P_REST):.2f} for the rest",
        lambda t: f"Spearman rho(per-muscle Dice, per-muscle volume error) <= -{t['min_abs_spearman']:g}")
def _(ctx):
    found = ctx.per_muscle("dice", "volume_error_abs_pct")
    rho, n = _spearman([e["dice_mean"] for e in found], [e["volume_error_abs_pct_mean"] for e in found],
                       f"{ctx.sources['per_region']}: Dice vs volume error")
    return f"rho {rho:.2f} over {n} muscles", _at_most(rho, -ctx.t["min_abs_spearman"])


# ----------------------------------------------------------------------------- public API

def _check_thresholds(thresholds) -> dict:
    if not isinstance(thresholds, Mapping):
        raise TypeError(f"thresholds must be a mapping (params.yaml 'claims:'), got {type(thresholds).__name__}")
    missing = [k for k in THRESHOLD_KEYS if k not in thresholds]
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS))
    if missing or unknown:
        raise ValueError(f"thresholds: missing key(s) {missing}, unknown key(s) {unknown}")
    out = dict(thresholds)
    if out["ablation_dice"] not in _ABLATION_DICE:
        raise ValueError(f"thresholds: ablation_dice must be one of {_ABLATION_DICE}, got {out['ablation_dice']!r}")
    for k in THRESHOLD_KEYS:
        if k == "ablation_dice":
            continue
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"thresholds: {k} must be a finite number, got {v!r}")
    return out


def evaluate_claims(inputs: Mapping, thresholds: Mapping, *, stage: str = "stage2",
                    sources: Mapping | None = None) -> list[dict]:
    """Check every claim of the paper against this run's metrics.

    Parameters
    ----------
    inputs : mapping
        Input name (a key of ``INPUTS``) -> the parsed JSON of that metrics file (dict), the
        per-region rows for ``"per_region"`` (list of mappings, as ``llseg evaluate`` writes
        them), or None when the file is missing. Absent names count as missing.
    thresholds : mapping
        params.yaml's ``claims:`` section: every key of ``THRESHOLD_KEYS``, flat values.
    stage : str, optional
        Stage of the per-region rows scored (params.yaml ``evaluation.stage``).
    sources : mapping, optional
        Input name -> path shown in "not testable" reasons (default ``INPUTS``).

    Returns
    -------
    list of dict
        One dict per claim, in paper order: ``id``, ``section``, ``claim``, ``measured``
        (str; "n/a" when not testable), ``paper`` (str or number), ``verdict`` (one of
        ``VERDICTS``), ``reason`` (why not testable, else "") and ``rule`` (in words, with
        the threshold values filled in).

    Raises
    ------
    TypeError
        ``inputs`` or ``thresholds`` is not a mapping.
    ValueError
        A threshold is missing, unknown or not a finite number; an unknown input name.

    Notes
    -----
    A rule that needs a missing file, key or a NaN/None value gives ``"not testable here"``
    with the reason; it never guesses a value.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of input name -> data, got {type(inputs).__name__}")
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise ValueError(f"inputs: unknown name(s) {unknown}; expected some of {sorted(INPUTS)}")
    t = _check_thresholds(thresholds)
    ctx = _Context(inputs, t, stage, {**INPUTS, **(sources or {})})
    out = []
    for c in _CLAIMS:
        try:
            measured, holds = c.check(ctx)
            verdict, reason = (REPRODUCED if holds else NOT_REPRODUCED), ""
        except _Untestable as exc:
            measured, verdict, reason = "n/a", NOT_TESTABLE, str(exc)
        paper = float(c.paper) if isinstance(c.paper, (int, float, np.number)) else c.paper
        out.append({"id": c.id, "section": c.section, "claim": c.claim, "measured": measured, "paper": paper,
                    "verdict": verdict, "reason": reason, "rule": c.rule(t)})
        log.debug("claim %s: %s %s", c.id, verdict, reason)
    return out


def count_verdicts(claims: Sequence[Mapping]) -> dict:
    """Claims per verdict: ``{"reproduced": n, "not reproduced": n, "not testable here": n}``.

    Raises
    ------
    ValueError
        A claim has no ``verdict`` or an unknown one.
    """
    counts = dict.fromkeys(VERDICTS, 0)
    for i, c in enumerate(claims):
        if c.get("verdict") not in counts:
            raise ValueError(f"claims[{i}]: verdict must be one of {VERDICTS}, got {c.get('verdict')!r}")
        counts[c["verdict"]] += 1
    return counts


def _paper_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def claims_markdown(claims: Sequence[Mapping], *, profile: str = "", notes: Sequence[str] = ()) -> str:
    """The claims report: a header, the count per verdict, then one table row per claim.

    Parameters
    ----------
    claims : sequence of mapping
        ``evaluate_claims`` output.
    profile : str, optional
        params.yaml profile the run used (shown in the header).
    notes : sequence of str, optional
        Extra lines listed under the table (e.g. inputs that were missing).

    Returns
    -------
    str
        GitHub-flavoured Markdown ending in a newline.

    Raises
    ------
    ValueError
        A claim lacks a key or has an unknown verdict.
    """
    counts = count_verdicts(claims)
    rows = []
    for i, c in enumerate(claims, 1):
        missing = [k for k in ("id", "section", "claim", "measured", "paper", "verdict", "rule") if k not in c]
        if missing:
            raise ValueError(f"claims[{i - 1}] lacks key(s) {missing}")
        verdict = f"{c['verdict']}: {c['reason']}" if c.get("reason") else c["verdict"]
        rows.append({"n": str(i), "claim": f"**{c['id']}**: {c['claim']}", "section": c["section"],
                     "measured": str(c["measured"]), "paper": _paper_text(c["paper"]),
                     "verdict": f"**{verdict}**" if c["verdict"] == REPRODUCED else verdict, "rule": c["rule"]})
    lines = [
        "# Paper claims checked against this run",
        "",
        f"Ni et al. 2019, sections 3-4 and abstract. Profile: `{profile or 'unknown'}`. Every verdict is computed by "
        "`llseg claims` from this run's metrics with the thresholds in `params.yaml` (`claims:`); none is typed "
        "by hand. \"Not testable here\" means an input file or value was missing or NaN (reason given).",
        "",
        f"**{len(claims)} claims: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".**",
        "",
        evaluation.table_markdown(rows, {"n": "#", "claim": "claim", "section": "paper section",
                                         "measured": "this run", "paper": "paper", "verdict": "verdict",
                                         "rule": "rule"}).rstrip("\n"),
    ]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
