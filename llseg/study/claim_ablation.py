"""The Figure-5 claims (architecture ablation, sections 3.3 and 4) and the lookups they share.

Comparisons are found by the variants' fields in ``metrics/ablation.json``, never by their names:
panel a = plain U-Nets differing in ``levels`` at the root-filter count panel a's members share,
panel b the same for ``root_filters``, panel c = U-Nets of each ``block`` type at panel c's
levels, panel d = the architectures drawn in panel d. A variant's ``panel`` is one letter or a
list (the baseline is drawn in a, b and c); variants drawn only in panel d (five levels) do not
enter panels a-c.

The value compared. With params.yaml ``claims.ablation_dice: final_dice`` and every variant of a
comparison carrying ``final_crop_dice`` over the same held-out crops (runs since 7cd6b68), a
variant's value is its **end-of-training crop Dice**: the mean of its Dice per (test case, side)
crop, which is its last validation point (``final_dice`` is the mean of the last two). The
comparison then gets a paired bootstrap interval with the **test case** as the unit (both sides
of a case are resampled together; the variants share the crops, so they stay paired), widened by
the spread of retraining: each variant is trained once, and another seed or another CPU's kernels
move its end-of-training Dice by more than the test cases show, so each resample shifts each
variant's crops by a normal draw of SD ``claims.ablation_training_sd`` (measured by
``benchmarks/ablation_training_noise.py``; 0 turns it off). Without
per-crop Dice (older runs), with ``ablation_dice: best_dice``, and for parameter counts, the
value is that field and the verdict a point verdict ("no interval: ..."). ``early_dice`` (the
mean of a curve's first quarter) has no per-crop values either; with
``claims.ablation_early_training_sd`` (measured the same way) its interval is that of retraining
alone: each variant's value shifted by normal draws of that SD, nothing resampled.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import anatomy
from .claim_inputs import Comparison, Untestable, compare, finite, fmt, nanmean_units, registrar

__all__ = ["ABLATION_CLAIMS", "PAPER_BLOCK_DICE_SPREAD", "Fig5", "fig5", "fig5_compare", "series", "blocks", "archs",
           "more_levels_help", "levels_beyond_three_small", "more_filters_help", "width_beats_depth",
           "residual_about_plain", "blocks_within_001", "dense_worst", "residual_costs_more", "bigger_costs_more",
           "unet_about_segnet", "fcn_worse", "fcn_worse_early"]

#: Section 4: "the differences in Dice scores for the three networks are within 0.01".
PAPER_BLOCK_DICE_SPREAD = 0.01

#: The Figure-5 claims in paper order (``claim_checks.CLAIMS`` places them after section 3.2's).
ABLATION_CLAIMS: list = []
_claim = registrar(ABLATION_CLAIMS)

_SIDES = ("right", "left")
#: Why a field other than the end-of-training crop Dice has no interval.
_NO_CROPS = {"n_params": "no interval: exact parameter counts",
             "best_dice": "no interval: best_dice is each curve's maximum (the per-crop Dice are end-of-training)",
             "early_dice": "no interval: early_dice averages the first quarter of each curve (no per-crop Dice)"}


# ----------------------------------------------------------------------------- finding the variants

def _variants(ctx) -> list[dict]:
    data, src = ctx.data("ablation"), ctx.sources["ablation"]
    muscle = data.get("muscle") if isinstance(data, Mapping) else None
    if isinstance(muscle, str) and muscle in {m.key for m in anatomy.MUSCLES}:
        ctx.require_muscles([muscle], "the ablation muscle: the variants segment it")  # the cohort must have it
    variants = data.get("variants") if isinstance(data, Mapping) else None
    if not isinstance(variants, Mapping) or not variants:
        raise Untestable(f"{src} has no 'variants'")
    return [{**v, "name": name} for name, v in variants.items() if isinstance(v, Mapping)]


def _value(ctx, v: Mapping, key: str) -> float:
    if key not in v:
        raise Untestable(f"{ctx.sources['ablation']}: variant '{v['name']}' has no '{key}'")
    return finite(v[key], f"{ctx.sources['ablation']}: variant '{v['name']}' '{key}'")


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


def _series_groups(ctx, vary: str) -> tuple[dict[int, list[dict]], object]:
    """Plain U-Nets varying ``vary`` ("levels": panel a, "root_filters": panel b) with the other
    field held at the value most panel members share -> ({x: variants}, fixed value)."""
    panel, fixed = ("a", "root_filters") if vary == "levels" else ("b", "levels")
    vs = _variants(ctx)
    fixed_value = _mode([v.get(fixed) for v in _plain(vs) if _in(v, panel)])
    by = defaultdict(list)
    for v in _plain(vs):
        if v.get(fixed) == fixed_value and v.get(vary) is not None:
            by[int(v[vary])].append(v)
    if len(by) < 2:
        raise Untestable(f"{ctx.sources['ablation']}: fewer than two plain U-Nets differing only in {vary} "
                          f"(panel {panel})")
    return {x: by[x] for x in sorted(by)}, fixed_value


def _baseline(ctx) -> dict:
    """The plain U-Net shared by panels a and b (their fixed root filters and levels)."""
    vs = _plain(_variants(ctx))
    if not vs:
        raise Untestable(f"{ctx.sources['ablation']}: no plain U-Net variant")
    rf = _mode([v.get("root_filters") for v in vs if _in(v, "a")])
    lv = _mode([v.get("levels") for v in vs if _in(v, "b")])
    both = [v for v in vs if v.get("levels") == lv and v.get("root_filters") == rf]
    return both[0] if both else vs[0]


def _block_groups(ctx) -> dict[str, list[dict]]:
    """Panel c: the U-Nets of each block type (plain, residual, dense) at panel c's levels and the
    root-filter count closest to panel c's."""
    vs = _variants(ctx)
    panel = [v for v in vs if _in(v, "c")]
    if not panel:
        raise Untestable(f"{ctx.sources['ablation']}: no panel-c (block) variants")
    levels, rf = _mode([v.get("levels") for v in panel]), _mode([v.get("root_filters") for v in panel])
    out = {}
    for block in ("plain", "residual", "dense"):
        cands = [v for v in _abc(vs)
                 if v.get("arch") == "unet" and v.get("block") == block and v.get("levels") == levels]
        if not cands:
            raise Untestable(f"{ctx.sources['ablation']}: no {block} U-Net with {levels} levels")
        best = min(abs((v.get("root_filters") or 0) - (rf or 0)) for v in cands)
        out[block] = [v for v in cands if abs((v.get("root_filters") or 0) - (rf or 0)) == best]
    return out


def _arch_groups(ctx) -> dict[str, list[dict]]:
    """Panel d: the variants of each architecture; the U-Net is panel d's own or else the baseline."""
    vs = _variants(ctx)
    out = {}
    for arch in ("unet", "fcn8s", "segnet"):
        cands = [v for v in vs if v.get("arch") == arch and _in(v, "d")] or (
            [_baseline(ctx)] if arch == "unet" else [v for v in vs if v.get("arch") == arch])
        if not cands:
            raise Untestable(f"{ctx.sources['ablation']}: no {arch} variant")
        out[arch] = cands
    return out


# ----------------------------------------------------------------------------- values and intervals

@dataclass(frozen=True)
class Fig5:
    """Figure-5 values of groups of variants (a group's value: the mean over its variants).

    ``values``: group -> value compared; ``crops``: group -> ``(n_cases, 2)`` end-of-training
    crop Dice (sides right, left; NaN where missing), None without per-crop data; ``unit``: the
    resampling unit, or why there is no interval; ``what``: the value's name for the report;
    ``training_sd``: group -> SD of its value from retraining (params.yaml
    ``claims.ablation_training_sd`` over the square root of the group's variant count).
    """
    values: dict
    crops: dict | None
    unit: str
    what: str
    training_sd: dict | None = None


def _crop_arrays(ctx, groups: Mapping) -> tuple[dict, str] | str:
    """Per group, the mean over its variants of their ``final_crop_dice`` as ``(n_cases, 2)``
    arrays with the test case as unit, or why not (str)."""
    src = ctx.sources["ablation"]
    members = {v["name"]: v for g in groups.values() for v in g}
    lacking = [n for n, v in members.items() if not v.get("final_crop_dice")]
    if lacking:
        return (f"no interval: {src} has no per-crop Dice ('final_crop_dice') for {len(lacking)} of "
                f"{len(members)} variants")
    tables = {}
    for name, v in members.items():
        try:
            tables[name] = {(str(c["case"]), c["side"]): math.nan if c["dice"] is None else float(c["dice"])
                            for c in v["final_crop_dice"] if c["side"] in _SIDES}
        except (TypeError, KeyError, ValueError):
            return f"no interval: {src}: variant '{name}' has a malformed 'final_crop_dice'"
    if len({frozenset(t) for t in tables.values()}) != 1:
        return f"no interval: {src}: the variants' 'final_crop_dice' cover different crops"
    cases = sorted({case for case, _ in next(iter(tables.values()))})
    if len(cases) < 2:
        return f"no interval: {len(cases)} test case in {src} 'final_crop_dice'"
    arrays = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # a crop undefined for every variant of a group
        for key, group in groups.items():
            arrays[key] = np.nanmean([[[tables[v["name"]].get((c, s), math.nan) for s in _SIDES] for c in cases]
                                      for v in group], axis=0)
    return arrays, f"test case (n={len(cases)})"


def fig5(ctx, groups: Mapping, key: str | None = None, *, crops: bool = True) -> Fig5:
    """The values of ``groups`` (group -> variants) for ``key`` (default: params ``ablation_dice``):
    the end-of-training crop Dice with its per-case arrays when ``key`` is ``final_dice`` and the
    per-crop Dice exist (and ``crops``), else the field ``key`` (single values, with the reason)."""
    key = key or ctx.t["ablation_dice"]
    found = (_crop_arrays(ctx, groups) if crops and key == "final_dice"
             else _NO_CROPS.get(key, f"no interval: {key} is one value per variant"))
    early_sd = float(ctx.t["ablation_early_training_sd"])
    if key == "early_dice" and early_sd:
        return _retraining_only(ctx, groups, key, early_sd)
    if isinstance(found, str):
        values = {k: float(np.mean([_value(ctx, v, key) for v in g])) for k, g in groups.items()}
        return Fig5(values, None, found, key)
    arrays, unit = found
    sd = float(ctx.t["ablation_training_sd"])
    if sd:
        unit += f", retraining SD {sd:g} per network"
    values = {}
    for k, a in arrays.items():
        values[k] = float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
        if not math.isfinite(values[k]):
            raise Untestable(f"{ctx.sources['ablation']}: no finite 'final_crop_dice' for "
                              f"{', '.join(repr(v['name']) for v in groups[k])}")
    return Fig5(values, arrays, unit, "end-of-training crop Dice",
                {k: sd / math.sqrt(len(g)) for k, g in groups.items()})


def _retraining_only(ctx, groups: Mapping, key: str, sd: float) -> Fig5:
    """The groups' ``key`` values as one-unit "crops": their interval holds the spread of
    retraining alone (``claim_inputs.bootstrap_interval`` with a single unit)."""
    values = {k: float(np.mean([_value(ctx, v, key) for v in g])) for k, g in groups.items()}
    return Fig5(values, {k: np.array([[x]]) for k, x in values.items()},
                f"network retrained (SD {sd:g}; no per-crop {key}: the spread of retraining only)", key,
                {k: sd / math.sqrt(len(g)) for k, g in groups.items()})


def fig5_compare(f: Fig5, difference: Callable[[Mapping], float], rule: str, threshold: float) -> Comparison:
    """``difference(values)`` against ``threshold``; with per-crop arrays the same function of the
    resampled group means gives the interval (write it with numpy, e.g. ``np.minimum``, so that it
    takes arrays of resamples as well as numbers)."""
    point = float(difference(f.values))
    if f.crops is None:
        return compare(point, rule, threshold, f.unit)
    keys = list(f.crops)
    return compare(point, rule, threshold, ([f.crops[k] for k in keys], f.unit),
                   lambda *a: difference(dict(zip(keys, map(nanmean_units, a)))),
                   offset_sd=[(f.training_sd or {}).get(k, 0.0) for k in keys])


def series(ctx, vary: str, key: str | None = None) -> tuple[Fig5, object]:
    """Panel a (``vary="levels"``) or b (``"root_filters"``): ({x: value}, ...) and the fixed value."""
    groups, fixed = _series_groups(ctx, vary)
    return fig5(ctx, groups, key), fixed


def blocks(ctx, key: str | None = None) -> Fig5:
    """Panel c: the value per block type (plain, residual, dense)."""
    return fig5(ctx, _block_groups(ctx), key)


def archs(ctx, key: str | None = None, *, crops: bool = True) -> Fig5:
    """Panel d: the value per architecture (unet, fcn8s, segnet)."""
    return fig5(ctx, _arch_groups(ctx), key, crops=crops)


def _note(ctx, f: Fig5) -> str:
    data = ctx.data("ablation")
    return f" ({data.get('muscle', '?')}, {data.get('iterations', '?')} iterations, {f.what})"


def _fmt_series(values: Mapping) -> str:
    return ", ".join(f"{x}: {fmt(d)}" for x, d in values.items())


def _best(values: Mapping, keys) -> float | np.ndarray:
    """Max over ``keys`` of ``values`` (numbers or arrays of resamples)."""
    return np.max([values[k] for k in keys], axis=0)


def _spread(values: Mapping) -> float | np.ndarray:
    vs = list(values.values())
    return np.max(vs, axis=0) - np.min(vs, axis=0)


# ----------------------------------------------------------------------------- the claims

@_claim("more_levels_help", "3.3", "More resolution levels tend to give better results (Fig. 5a)",
        "qualitative (Fig. 5a, adductor brevis)",
        lambda t: f"plain U-Net, same root filters: Dice(most levels) - Dice(fewest levels) > {t['better_min_gap']:g}")
def more_levels_help(ctx):
    return _most_beats_fewest(ctx, "levels", "root filters {}")


def _most_beats_fewest(ctx, vary: str, fixed_text: str):
    """Panel a or b: value(largest ``vary``) - value(smallest) above ``better_min_gap``."""
    f, fixed = series(ctx, vary)
    lo, hi = min(f.values), max(f.values)
    return (f"{vary.replace('_', ' ')} {_fmt_series(f.values)} ({fixed_text.format(fixed)}){_note(ctx, f)}",
            fig5_compare(f, lambda s: s[hi] - s[lo], "above", ctx.t["better_min_gap"]))


def _three_and_deeper(ctx, levels) -> list[int]:
    """The level counts above 3 among ``levels``; Untestable unless 3 and a deeper one are there."""
    deeper = [lv for lv in levels if lv > 3]
    if 3 not in levels or not deeper:
        raise Untestable(f"{ctx.sources['ablation']}: needs plain U-Nets with 3 and with > 3 levels "
                          f"(has {sorted(levels)})")
    return deeper


@_claim("levels_beyond_three_small", "3.3, 4", "Beyond three resolution levels the gain is marginal",
        "\"the difference is very small between three and four\"",
        lambda t: f"best Dice with > 3 levels - Dice with 3 levels <= {t['levels_beyond_three_max_gain']:g}")
def levels_beyond_three_small(ctx):
    f, _rf = series(ctx, "levels")
    deeper = _three_and_deeper(ctx, list(f.values))
    gain = _best(f.values, deeper) - f.values[3]
    return (f"gain beyond 3 levels {gain:+.3f} ({_fmt_series(f.values)}){_note(ctx, f)}",
            fig5_compare(f, lambda s: _best(s, deeper) - s[3], "at_most", ctx.t["levels_beyond_three_max_gain"]))


@_claim("more_filters_help", "3.3", "More filters at the root level give higher Dice (Fig. 5b)",
        "qualitative (Fig. 5b)",
        lambda t: f"plain U-Net, same levels: Dice(most root filters) - Dice(fewest) > {t['better_min_gap']:g}")
def more_filters_help(ctx):
    return _most_beats_fewest(ctx, "root_filters", "{} levels")


@_claim("width_beats_depth", "4", "Network width matters more than depth beyond three levels",
        "\"the width of the network has a more significant influence\"",
        lambda t: f"gain(fewest -> most root filters) - gain(3 -> best > 3 levels) > {t['better_min_gap']:g}")
def width_beats_depth(ctx):
    by_rf, _lv = _series_groups(ctx, "root_filters")
    by_lv, _rf = _series_groups(ctx, "levels")
    f = fig5(ctx, {**{("rf", x): g for x, g in by_rf.items()}, **{("lv", x): g for x, g in by_lv.items()}})
    deeper = [("lv", x) for x in _three_and_deeper(ctx, list(by_lv))]
    lo, hi = ("rf", min(by_rf)), ("rf", max(by_rf))

    def gains(s):
        return s[hi] - s[lo], _best(s, deeper) - s[("lv", 3)]
    width, depth = gains(f.values)
    return (f"width gain {width:+.3f} vs depth gain {depth:+.3f}{_note(ctx, f)}",
            fig5_compare(f, lambda s: np.subtract(*gains(s)), "above", ctx.t["better_min_gap"]))


@_claim("residual_about_plain", "3.3, 4", "Residual blocks are about equal to (slightly above) the plain U-Net",
        "\"the difference with plain U-Net is small\"",
        lambda t: f"|Dice(residual) - Dice(plain)| <= {t['similar_dice_tolerance']:g}")
def residual_about_plain(ctx):
    f = blocks(ctx)
    return (f"residual {fmt(f.values['residual'])} vs plain {fmt(f.values['plain'])}{_note(ctx, f)}",
            fig5_compare(f, lambda b: b["residual"] - b["plain"], "within", ctx.t["similar_dice_tolerance"]))


@_claim("blocks_within_001", "4", "Plain, residual and dense U-Nets are within 0.01 Dice of each other",
        PAPER_BLOCK_DICE_SPREAD, lambda t: f"max - min Dice over the three block types <= {t['block_max_spread']:g}")
def blocks_within_001(ctx):
    f = blocks(ctx)
    return (f"spread {_spread(f.values):.3f} ({', '.join(f'{k} {fmt(v)}' for k, v in f.values.items())})",
            fig5_compare(f, _spread, "at_most", ctx.t["block_max_spread"]))


@_claim("dense_worst", "3.3", "Dense blocks perform worst of the three block types", "qualitative (Fig. 5c)",
        lambda t: f"min(Dice plain, Dice residual) - Dice(dense) > {t['better_min_gap']:g}")
def dense_worst(ctx):
    return _worse_than_both(ctx, blocks(ctx), "dense", "plain", "residual")


def _shortfall(worse: str, a: str, b: str) -> Callable:
    """Statistic: min(value a, value b) - value ``worse`` (numbers or arrays of resamples)."""
    return lambda v: np.minimum(v[a], v[b]) - v[worse]


def _worse_than_both(ctx, f: Fig5, worse: str, a: str, b: str, names: Mapping | None = None):
    """``worse`` behind both ``a`` and ``b`` by more than ``better_min_gap``."""
    name = (names or {}).get
    v = f.values
    return (f"{name(worse, worse)} {fmt(v[worse])} vs {name(a, a)} {fmt(v[a])}, {name(b, b)} {fmt(v[b])}"
            f"{_note(ctx, f)}", fig5_compare(f, _shortfall(worse, a, b), "above", ctx.t["better_min_gap"]))


@_claim("residual_costs_more", "4", "The residual U-Net needs more parameters than the plain one",
        "\"the network with residual block needs more parameters and computations\"",
        lambda t: "n_params(residual) > n_params(plain), same levels")
def residual_costs_more(ctx):
    f = blocks(ctx, "n_params")
    b = f.values
    return (f"{b['residual']:,.0f} vs {b['plain']:,.0f} parameters",
            fig5_compare(f, lambda s: s["residual"] - s["plain"], "above", 0.0))


@_claim("bigger_costs_more", "4", "Deeper and wider networks cost more (memory and computation)",
        "\"it comes at the cost of increased memory requirement and computation time\"",
        lambda t: "n_params(most levels) > n_params(fewest) and n_params(most root filters) > n_params(fewest)")
def bigger_costs_more(ctx):
    lv, rf = series(ctx, "levels", "n_params")[0], series(ctx, "root_filters", "n_params")[0]
    s_lv, s_rf = lv.values, rf.values
    return (f"levels {min(s_lv)}->{max(s_lv)}: {s_lv[min(s_lv)]:,.0f}->{s_lv[max(s_lv)]:,.0f}; root filters "
            f"{min(s_rf)}->{max(s_rf)}: {s_rf[min(s_rf)]:,.0f}->{s_rf[max(s_rf)]:,.0f} parameters",
            tuple(fig5_compare(f, lambda s: s[max(s)] - s[min(s)], "above", 0.0) for f in (lv, rf)))


@_claim("unet_about_segnet", "3.3, 4", "U-Net and SegNet are comparable (Fig. 5d)", "qualitative (Fig. 5d)",
        lambda t: f"|Dice(U-Net) - Dice(SegNet)| <= {t['similar_dice_tolerance']:g}")
def unet_about_segnet(ctx):
    f = archs(ctx)
    return (f"U-Net {fmt(f.values['unet'])} vs SegNet {fmt(f.values['segnet'])}{_note(ctx, f)}",
            fig5_compare(f, lambda a: a["unet"] - a["segnet"], "within", ctx.t["similar_dice_tolerance"]))


_ARCH_NAMES = {"unet": "U-Net", "segnet": "SegNet", "fcn8s": "FCN-8s"}
_fcn_shortfall = _shortfall("fcn8s", "unet", "segnet")


@_claim("fcn_worse", "3.3", "FCN-8s is slightly worse than U-Net and SegNet", "qualitative (Fig. 5d)",
        lambda t: f"min(Dice U-Net, Dice SegNet) - Dice(FCN-8s) > {t['better_min_gap']:g}")
def fcn_worse(ctx):
    return _worse_than_both(ctx, archs(ctx), "fcn8s", "unet", "segnet", _ARCH_NAMES)


@_claim("fcn_worse_early", "3.3", "FCN-8s lags \"especially at early epochs\"", "qualitative (Fig. 5d curves)",
        lambda t: "FCN-8s's shortfall to min(U-Net, SegNet) early ('early_dice': the first quarter of the "
                  "curve) is > 0 and larger than at the end (a negative shortfall means FCN-8s does not lag)")
def fcn_worse_early(ctx):
    early = archs(ctx, "early_dice")
    end = archs(ctx, crops=False)          # both ends of the same validation curves
    gap_early, gap_end = float(_fcn_shortfall(early.values)), float(_fcn_shortfall(end.values))
    note = f"shortfall early {gap_early:+.3f} vs end {gap_end:+.3f} (curves: early_dice vs {end.what})"
    if early.crops is None:
        return note, (compare(gap_early, "above", 0.0, early.unit),
                      compare(gap_early - gap_end, "above", 0.0, early.unit))
    # Retraining moves both ends of a curve: the end gets ablation_training_sd per network (the two
    # taken as independent draws, which widens the interval where they move together).
    sd_end = float(ctx.t["ablation_training_sd"])
    both = Fig5({**{("early", k): x for k, x in early.values.items()}, **{("end", k): x for k, x in end.values.items()}},
                {**{("early", k): a for k, a in early.crops.items()},
                 **{("end", k): np.array([[x]]) for k, x in end.values.items()}},
                f"{early.unit}; end: SD {sd_end:g} per network", "early_dice - final_dice",
                {**{("early", k): s for k, s in early.training_sd.items()},
                 **{("end", k): sd_end / math.sqrt(len(g)) for k, g in _arch_groups(ctx).items()}})

    def gap_change(values):
        return (_fcn_shortfall({k: values[("early", k)] for k in early.values})
                - _fcn_shortfall({k: values[("end", k)] for k in end.values}))

    return note, (fig5_compare(early, _fcn_shortfall, "above", 0.0), fig5_compare(both, gap_change, "above", 0.0))
