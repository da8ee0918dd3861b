"""Reading the claims' inputs: accessors that say why a value is missing, and the Figure-5 lookups.

A claim check asks a :class:`Context` for a number; when the file, key or value is missing (or
NaN) the accessor raises :class:`Untestable` with the reason, and the claim is reported as "not
testable here". Figure-5 comparisons (``metrics/ablation.json``) are found by the variants'
fields, never by their names: panel a = plain U-Nets differing in ``levels`` at the root-filter
count panel a's members share, panel b the same for ``root_filters``, panel c = U-Nets of each
``block`` type at panel c's levels, panel d = the architectures drawn in panel d. A variant's
``panel`` is one letter or a list (the baseline is drawn in a, b and c); variants drawn only in
panel d (five levels) do not enter panels a-c.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from . import evaluation

__all__ = ["Untestable", "Context", "finite", "spearman", "above", "at_most", "at_least", "fmt", "series",
           "blocks", "archs", "ablation_note", "fmt_series"]


#: Float noise (e.g. means of equal values summed in another order) is not a difference: every
#: comparison with a threshold allows this much slack.
_EPS = 1e-9


def above(x: float, threshold: float) -> bool:
    return x > threshold + _EPS


def at_most(x: float, threshold: float) -> bool:
    return x <= threshold + _EPS


def at_least(x: float, threshold: float) -> bool:
    return x >= threshold - _EPS


class Untestable(Exception):
    """Raised inside a rule when an input it needs is missing; the message is the reason."""


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


class Context:
    """The inputs of one evaluation with accessors that raise ``Untestable`` with a reason."""

    def __init__(self, inputs: Mapping, thresholds: Mapping, stage: str, sources: Mapping):
        self.inputs, self.t, self.stage, self.sources = inputs, thresholds, stage, sources

    def data(self, name: str):
        value = self.inputs.get(name)
        if value is None:
            raise Untestable(f"{self.sources[name]} missing")
        return value

    def num(self, name: str, *keys) -> float:
        value = self.data(name)
        for k in keys:
            if not isinstance(value, Mapping) or k not in value:
                raise Untestable(f"{self.sources[name]} has no '{'.'.join(map(str, keys))}'")
            value = value[k]
        return finite(value, f"{self.sources[name]}: '{'.'.join(map(str, keys))}'")

    def per_muscle(self, *columns) -> list[dict]:
        """Per-muscle means of this stage's rows (``evaluation.per_muscle``)."""
        rows = self.data("per_region")
        try:
            found = evaluation.per_muscle(evaluation.select_stage(rows, self.stage), columns=columns)
        except (ValueError, TypeError) as exc:
            raise Untestable(f"{self.sources['per_region']}: {exc}") from None
        if not any(np.isfinite(e[f"{c}_mean"]) for e in found for c in columns):
            raise Untestable(f"{self.sources['per_region']}: no finite {'/'.join(columns)} for stage '{self.stage}'")
        return found


def finite(value, what: str) -> float:
    if value is None or isinstance(value, bool):
        raise Untestable(f"{what} is {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Untestable(f"{what} is not a number ({value!r})") from None
    if not math.isfinite(number):
        raise Untestable(f"{what} is NaN")
    return number


def spearman(x, y, what: str) -> tuple[float, int]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        raise Untestable(f"{what}: fewer than 3 finite pairs or a constant variable ({int(ok.sum())} pairs)")
    return float(stats.spearmanr(x[ok], y[ok]).statistic), int(ok.sum())


# ----------------------------------------------------------------------------- ablation (Fig. 5)

def _variants(ctx) -> list[dict]:
    data, src = ctx.data("ablation"), ctx.sources["ablation"]
    variants = data.get("variants") if isinstance(data, Mapping) else None
    if not isinstance(variants, Mapping) or not variants:
        raise Untestable(f"{src} has no 'variants'")
    return [{**v, "name": name} for name, v in variants.items() if isinstance(v, Mapping)]


def _value(ctx, v: Mapping, key: str | None = None) -> float:
    key = key or ctx.t["ablation_dice"]
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


def series(ctx, vary: str, key: str | None = None) -> tuple[dict, object]:
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
        raise Untestable(f"{ctx.sources['ablation']}: fewer than two plain U-Nets differing only in {vary} "
                          f"(panel {panel})")
    return {x: float(np.mean(by[x])) for x in sorted(by)}, fixed_value


def _baseline(ctx) -> dict:
    """The plain U-Net shared by panels a and b (their fixed root filters and levels)."""
    vs = _plain(_variants(ctx))
    if not vs:
        raise Untestable(f"{ctx.sources['ablation']}: no plain U-Net variant")
    rf = _mode([v.get("root_filters") for v in vs if _in(v, "a")])
    lv = _mode([v.get("levels") for v in vs if _in(v, "b")])
    both = [v for v in vs if v.get("levels") == lv and v.get("root_filters") == rf]
    return both[0] if both else vs[0]


def blocks(ctx, key: str | None = None) -> dict:
    """Panel c: mean value per block type (plain, residual, dense) at panel c's levels and the
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
        out[block] = float(np.mean([_value(ctx, v, key) for v in cands
                                    if abs((v.get("root_filters") or 0) - (rf or 0)) == best]))
    return out


def archs(ctx, key: str | None = None) -> dict:
    """Panel d: mean value per architecture; the U-Net is panel d's own or else the baseline."""
    vs = _variants(ctx)
    out = {}
    for arch in ("unet", "fcn8s", "segnet"):
        cands = [v for v in vs if v.get("arch") == arch and _in(v, "d")] or (
            [_baseline(ctx)] if arch == "unet" else [v for v in vs if v.get("arch") == arch])
        if not cands:
            raise Untestable(f"{ctx.sources['ablation']}: no {arch} variant")
        out[arch] = float(np.mean([_value(ctx, v, key) for v in cands]))
    return out


def ablation_note(ctx) -> str:
    data = ctx.data("ablation")
    return f" ({data.get('muscle', '?')}, {data.get('iterations', '?')} iterations, {ctx.t['ablation_dice']})"


def fmt_series(series: dict) -> str:
    return ", ".join(f"{x}: {fmt(d)}" for x, d in series.items())
