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
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .. import anatomy
from . import evaluation

__all__ = ["Untestable", "Context", "finite", "spearman", "above", "at_most", "at_least", "fmt", "series",
           "blocks", "archs", "ablation_note", "fmt_series", "RULES", "Comparison", "holds", "interval_holds",
           "bootstrap_interval", "compare", "by_case", "fig4_regions", "nanmean_units", "muscle_means", "spearman_rows"]


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


# ----------------------------------------------------------------------------- intervals

#: Rules a comparison can state: ``difference`` vs ``threshold``.
RULES = ("above", "at_least", "at_most", "within", "outside")


@dataclass(frozen=True)
class Comparison:
    """One comparison of a claim: ``difference`` against ``threshold`` by ``rule``.

    ``samples`` hold the data the difference rests on, one test unit (case or region) per
    entry of axis 0; ``statistic`` maps the arrays with a leading resample axis, shape
    ``(n_resamples, n_units, ...)``, to the differences, shape ``(n_resamples,)``. Without
    samples the comparison has no interval and ``single`` says why.
    """
    difference: float
    rule: str
    threshold: float
    samples: tuple = ()
    statistic: Callable | None = None
    unit: str = ""
    single: str = "single value"


def holds(x: float, rule: str, threshold: float) -> bool:
    """Whether ``x`` satisfies ``rule`` (one of ``RULES``) at ``threshold``, with float slack."""
    checks = {"above": lambda: above(x, threshold), "at_least": lambda: at_least(x, threshold),
              "at_most": lambda: at_most(x, threshold), "within": lambda: at_most(abs(x), threshold),
              "outside": lambda: at_least(abs(x), threshold)}
    if rule not in checks:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return checks[rule]()


def interval_holds(low: float, high: float, rule: str, threshold: float) -> bool | None:
    """True when ``rule`` holds for every value in ``[low, high]``, False when for none, else None."""
    if rule == "outside":  # |x| >= t: fails on (-t, t), which may sit inside the interval
        if holds(low, "at_least", threshold) or holds(high, "at_most", -threshold):
            return True
        return False if holds(low, "above", -threshold) and not holds(high, "at_least", threshold) else None
    ends = (holds(low, rule, threshold), holds(high, rule, threshold))
    if rule == "within" and low < -threshold and high > threshold:
        return None  # both ends fail, the middle holds
    return ends[0] if ends[0] == ends[1] else None


def bootstrap_interval(samples: Sequence, statistic: Callable, *, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``statistic`` (``scipy.stats.bootstrap``).

    Parameters
    ----------
    samples : sequence of ndarray
        Arrays sharing axis 0 (the test units: cases or regions), resampled together.
    statistic : callable
        ``statistic(*arrays) -> (n_resamples,)``, the arrays with a leading resample axis.
    confidence : float, optional
        Confidence level of the two-sided interval.
    n_resamples, seed : int, optional
        Resamples drawn and the seed of their generator (same seed, same interval).

    Returns
    -------
    (float, float)
        Lower and upper bound, in the statistic's units.

    Raises
    ------
    ValueError
        Fewer than two units, or arrays of different lengths.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    n = len(arrays[0]) if arrays else 0
    if n < 2 or any(len(a) != n for a in arrays):
        raise ValueError(f"need >= 2 units shared by every sample, got lengths {[len(a) for a in arrays]}")

    def on_units(index, axis=-1):  # scipy resamples unit indices: the arrays stay paired
        flat = np.asarray(index).reshape(-1, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: nan-aware means
            out = np.asarray(statistic(*[a[flat] for a in arrays]), dtype=float)
        return out.reshape(np.shape(index)[:-1])

    res = stats.bootstrap((np.arange(n),), on_units, vectorized=True, n_resamples=int(n_resamples),
                          confidence_level=float(confidence), method="percentile",
                          rng=np.random.default_rng(int(seed)))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def compare(difference: float, rule: str, threshold: float, resample=None, statistic: Callable | None = None) -> Comparison:
    """A :class:`Comparison`; ``resample`` is ``(samples, unit)`` from :func:`by_case` / :func:`fig4_regions`,
    or a str saying why there is nothing to resample (a single value). Data whose statistic is
    not ``difference`` (files of different runs) give no interval, with the reason."""
    if resample is None or isinstance(resample, str):
        return Comparison(float(difference), rule, float(threshold), single=resample or "single value")
    samples, unit = resample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = float(np.asarray(statistic(*[np.asarray(a, dtype=float)[None] for a in samples])).ravel()[0])
    if not np.isclose(point, difference, rtol=1e-6, atol=1e-9):  # e.g. a table from another run than the JSON
        return Comparison(float(difference), rule, float(threshold),
                          single=f"no interval: the data to resample give {point:+.4g}, not {difference:+.4g}")
    return Comparison(float(difference), rule, float(threshold), tuple(samples), statistic, unit)


def _case_arrays(rows, columns, stage) -> tuple[list[str], list[np.ndarray]]:
    """Per-region rows -> the case ids and one (n_cases, n_muscles, 2 sides) array per column
    (NaN where a row or value is missing), muscles in Table-1 order, sides right, left."""
    keys = {m.key: i for i, m in enumerate(anatomy.MUSCLES)}
    rows = [r for r in rows if isinstance(r, Mapping) and r.get("stage", stage) == stage
            and r.get("muscle") in keys and r.get("side") in ("right", "left")]
    cases = sorted({str(r.get("case")) for r in rows})
    at = {c: i for i, c in enumerate(cases)}
    out = [np.full((len(cases), len(keys), 2), np.nan) for _ in columns]
    for r in rows:
        for a, c in zip(out, columns):
            try:
                a[at[str(r.get("case"))], keys[r["muscle"]], int(r["side"] == "left")] = float(r.get(c))
            except (TypeError, ValueError):
                continue
    return cases, out


def by_case(ctx, *columns, stages: Sequence[str] = ()) -> tuple[list[np.ndarray], str] | str:
    """The per-region ``columns`` of ``ctx.stage`` (or of each of ``stages``, column-major) as
    ``(n_cases, n_muscles, 2)`` arrays with the test case as resampling unit, or why not (str)."""
    rows = ctx.inputs.get("per_region")
    if not rows:
        return f"no interval: {ctx.sources['per_region']} missing"
    arrays, cases = [], set()
    for stage in stages or (ctx.stage,):
        found, a = _case_arrays(rows, columns, stage)
        arrays += a
        cases.add(tuple(found))
    if len(cases) != 1 or len(next(iter(cases))) < 2:
        return f"no interval: {min(len(c) for c in cases)} test case(s) in {ctx.sources['per_region']}"
    return arrays, f"test case (n={len(next(iter(cases)))})"


def fig4_regions(ctx, column: str, variants: Sequence[str]) -> tuple[list[np.ndarray], str] | str:
    """``metrics/two_stages.json`` ``per_region`` values of ``variants`` as (n_units, n) arrays:
    units = test cases, or the regions when the comparison covers one case; or why not (str)."""
    per = ctx.data("two_stages").get("per_region")
    table = per.get(column) if isinstance(per, Mapping) else None
    if not isinstance(table, Mapping) or any(v not in table for v in variants):
        return f"no interval: {ctx.sources['two_stages']} stores means only (no 'per_region.{column}')"
    arrays = [np.array([[np.nan if x is None else x for x in row] for row in table[v]], dtype=float)
              for v in variants]
    if arrays[0].ndim != 2 or any(a.shape != arrays[0].shape for a in arrays):
        return f"no interval: {ctx.sources['two_stages']} 'per_region.{column}' is not (cases x regions)"
    if len(arrays[0]) >= 2:
        return arrays, f"test case (n={len(arrays[0])})"
    if arrays[0].shape[1] < 2:
        return "no interval: one region"
    return [a.T for a in arrays], f"region of one case (n={arrays[0].shape[1]})"


def nanmean_units(a: np.ndarray) -> np.ndarray:
    """Mean over every axis but the first (the resample axis), ignoring NaN: (B, ...) -> (B,)."""
    return np.nanmean(a.reshape(len(a), -1), axis=1)


def muscle_means(a: np.ndarray) -> np.ndarray:
    """Per-muscle means of (B, n_cases, n_muscles, 2) resampled arrays, ignoring NaN -> (B, n_muscles)."""
    return np.nanmean(a, axis=(1, 3))


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho per row of (B, m) arrays (ties averaged, NaN ranked last)."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=1) / np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
