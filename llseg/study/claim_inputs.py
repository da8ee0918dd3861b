"""Reading the claims' inputs: accessors that say why a value is missing, the per-unit data the
intervals resample and the :class:`Claim` record the checks register.

A claim check asks a :class:`Context` for a number; when the file, key or value is missing (or
NaN) the accessor raises :class:`Untestable` with the reason, and the claim is reported as "not
testable here". The Figure-5 lookups are in ``claim_ablation``.

Cohorts without every muscle
----------------------------
A cohort's test labels may lack muscles (``llseg.study.evaluation``: a region a case does not
label is not scored). :meth:`Context.muscles_absent` says which; a claim over all 35 muscles
(a count or mean the paper gives for all of them) then asks :meth:`Context.require_all_muscles`,
a claim about one muscle :meth:`Context.require_muscles`, and a claim about a pattern over the
muscles (a rank correlation, larger vs smaller half, a rank among the worst)
:meth:`Context.require_n_muscles` with ``MIN_PATTERN_MUSCLES``: each raises :class:`Untestable`
naming what is missing. With every muscle present nothing changes.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .. import anatomy
from . import evaluation

__all__ = ["MIN_PATTERN_MUSCLES",
           "Untestable", "Context", "Claim", "registrar", "finite", "spearman", "above", "at_most", "at_least", "fmt",
           "RULES", "Comparison", "holds", "interval_holds", "bootstrap_interval", "compare", "by_case",
           "labelled", "fig4_regions", "cov_cases", "nanmean_units", "muscle_means", "spearman_rows"]


#: Float noise (e.g. means of equal values summed in another order) is not a difference: every
#: comparison with a threshold allows this much slack.
_EPS = 1e-9

#: A claim about a pattern over muscles needs at least this many muscles present. Below 10, a
#: Spearman rho must exceed about 0.65 (n = 10; 0.79 at n = 7) to differ from chance at 5 %, so the
#: rank correlations with Table 1, MSD and volume error say little; halves by size hold four muscles
#: or fewer; and "a rank among the worst" covers half the muscles or more.
MIN_PATTERN_MUSCLES = 10


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
        self._absent: list[str] | None = None
        self._absent_known = False

    def muscles_absent(self) -> list[str] | None:
        """Keys of the muscles this cohort's test labels lack (Table-1 order), or None when unknown.

        From the per-region rows of this stage (``evaluation.muscles_absent``); without them, from
        the ``muscles_absent`` a metrics JSON records (``dice_table``, ``volume_msd``,
        ``evaluation``). Files of a kit that did not record it (whole-leg studies) give None,
        read as "every muscle present".
        """
        if not self._absent_known:
            self._absent, self._absent_known = self._find_absent(), True
        return self._absent

    def _find_absent(self) -> list[str] | None:
        rows = self.inputs.get("per_region")
        if rows:
            try:
                rows = evaluation.select_stage(rows, self.stage)
            except (ValueError, TypeError):
                rows = []
            if rows:
                return evaluation.muscles_absent(rows)
        for name in ("dice_table", "volume_msd", "evaluation"):
            data = self.inputs.get(name)
            if isinstance(data, Mapping) and isinstance(data.get("muscles_absent"), list):
                return [anatomy.muscle(str(k)).key for k in data["muscles_absent"]]
        return None

    def present_mask(self) -> np.ndarray:
        """(35,) bool: the muscles present, Table-1 order (all True when unknown)."""
        absent = set(self.muscles_absent() or ())
        return np.array([m.key not in absent for m in anatomy.MUSCLES])

    def require_all_muscles(self, why: str) -> None:
        """Raise ``Untestable`` when the cohort lacks any muscle; ``why`` says what needs all 35."""
        absent = self.muscles_absent()
        if absent:
            raise Untestable(f"needs all {anatomy.N_MUSCLES} muscles ({why}); this cohort's test labels lack "
                             f"{len(absent)}: {_keys(absent)}")

    def require_muscles(self, keys: Sequence[str], why: str) -> None:
        """Raise ``Untestable`` when the cohort lacks one of ``keys``."""
        lacking = [k for k in keys if k in set(self.muscles_absent() or ())]
        if lacking:
            raise Untestable(f"needs {', '.join(lacking)} ({why}), absent from this cohort's test labels")

    def require_n_muscles(self, minimum: int, why: str) -> int:
        """The number of muscles present; raise ``Untestable`` when below ``minimum``."""
        n = int(self.present_mask().sum())
        if n < minimum:
            raise Untestable(f"needs at least {minimum} muscles ({why}); this cohort's test labels hold {n} of "
                             f"{anatomy.N_MUSCLES}")
        return n

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


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    claim: str
    paper: str | float
    rule: Callable[[Mapping], str]       # thresholds -> the rule in words
    check: Callable[[Context], tuple[str, Comparison | tuple[Comparison, ...]]]  # -> (measured, comparisons)


def registrar(claims: list) -> Callable:
    """A decorator ``claim(id, section, text, paper, rule)`` that appends the check it decorates to
    ``claims`` as a :class:`Claim` (paper order = order of definition)."""
    def claim(id_, section, text, paper, rule):
        def register(check):
            claims.append(Claim(id_, section, text, paper, rule, check))
            return check
        return register
    return claim


def _keys(keys: Sequence[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


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


# ----------------------------------------------------------------------------- intervals

#: Rules a comparison can state: ``difference`` vs ``threshold``.
RULES = ("above", "at_least", "at_most", "within", "outside")


@dataclass(frozen=True)
class Comparison:
    """One comparison of a claim: ``difference`` against ``threshold`` by ``rule``.

    ``samples`` hold the data the difference rests on, one test unit (case or region) per
    entry of axis 0; ``statistic`` maps the arrays with a leading resample axis, shape
    ``(n_resamples, n_units, ...)``, to the differences, shape ``(n_resamples,)``. Without
    samples the comparison has no interval and ``single`` says why. ``offset_sd`` (one per
    sample, or empty) is the spread that resampling the units cannot show, e.g. retraining the
    network the sample comes from (:func:`bootstrap_interval`); ``retraining_sd`` the same
    for the difference itself: its spread over retrainings of every network it rests on.
    """
    difference: float
    rule: str
    threshold: float
    samples: tuple = ()
    statistic: Callable | None = None
    unit: str = ""
    single: str = "single value"
    offset_sd: tuple = ()
    retraining_sd: float = 0.0


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
                       n_resamples: int = 2000, seed: int = 0, offset_sd: Sequence = (),
                       statistic_sd: float = 0.0) -> tuple[float, float]:
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
    offset_sd : sequence of float, optional
        One per sample (or empty: none): in each resample, every unit of that sample is shifted
        by one normal draw of this SD (seeded by ``seed``). It adds the variation the units do
        not hold, e.g. that of retraining the network whose outputs the sample holds, to the
        interval; the statistic's mean over units is shifted by the draw. With offsets, samples
        of a single unit (one value each) are allowed: the interval is then the percentile
        interval of the statistic over ``n_resamples`` draws of the offsets alone.
    statistic_sd : float, optional
        In each resample the statistic itself is shifted by one normal draw of this SD (seeded by
        ``seed``): variation of the whole result that neither the units nor one sample show, e.g.
        retraining every network a difference rests on.

    Returns
    -------
    (float, float)
        Lower and upper bound, in the statistic's units.

    Raises
    ------
    ValueError
        Fewer than two units (one, with offsets), or arrays of different lengths.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    sds, shift_sd = [float(x) for x in offset_sd], float(statistic_sd)
    if sds and (len(sds) != len(arrays) or min(sds) < 0):
        raise ValueError(f"offset_sd: need {len(arrays)} SDs >= 0, one per sample, got {sds}")
    if not shift_sd >= 0:
        raise ValueError(f"statistic_sd: need an SD >= 0, got {statistic_sd}")
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays) or n < (1 if any(sds) or shift_sd else 2):
        raise ValueError(f"need >= 2 units shared by every sample (1 with offsets), got lengths "
                         f"{[len(a) for a in arrays]}")
    offsets = np.random.default_rng([int(seed), 1])          # a stream of its own: same seed, same interval
    if n == 1:  # nothing to resample: the interval is the offsets' alone (percentiles of the draws)
        drawn = [a[None] + offsets.normal(0.0, sd, int(n_resamples)).reshape(-1, *[1] * a.ndim)
                 for a, sd in zip(arrays, sds or [0.0] * len(arrays))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.asarray(statistic(*drawn), dtype=float)
        out = out + offsets.normal(0.0, shift_sd, out.shape) if shift_sd else out
        tail = 50 * (1 - float(confidence))
        low, high = np.nanpercentile(out, [tail, 100 - tail])
        return float(low), float(high)

    def on_units(index, axis=-1):  # scipy resamples unit indices: the arrays stay paired
        flat = np.asarray(index).reshape(-1, n)
        drawn = [a[flat] for a in arrays]
        if any(sds):
            drawn = [d + offsets.normal(0.0, sd, len(flat)).reshape(-1, *[1] * (d.ndim - 1)) if sd else d
                     for d, sd in zip(drawn, sds)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: nan-aware means
            out = np.asarray(statistic(*drawn), dtype=float)
        out = out + offsets.normal(0.0, shift_sd, out.shape) if shift_sd else out
        return out.reshape(np.shape(index)[:-1])

    res = stats.bootstrap((np.arange(n),), on_units, vectorized=True, n_resamples=int(n_resamples),
                          confidence_level=float(confidence), method="percentile",
                          rng=np.random.default_rng(int(seed)))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def compare(difference: float, rule: str, threshold: float, resample=None, statistic: Callable | None = None,
            offset_sd: Sequence = ()) -> Comparison:
    """A :class:`Comparison`; ``resample`` is ``(samples, unit)`` from :func:`by_case` / :func:`fig4_regions`,
    or a str saying why there is nothing to resample (a single value). Data whose statistic is
    not ``difference`` (files of different runs) give no interval, with the reason. ``offset_sd``:
    as in :func:`bootstrap_interval`."""
    if resample is None or isinstance(resample, str):
        return Comparison(float(difference), rule, float(threshold), single=resample or "single value")
    samples, unit = resample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = float(np.asarray(statistic(*[np.asarray(a, dtype=float)[None] for a in samples])).ravel()[0])
    if not np.isclose(point, difference, rtol=1e-6, atol=1e-9):  # e.g. a table from another run than the JSON
        return Comparison(float(difference), rule, float(threshold),
                          single=f"no interval: the data to resample give {point:+.4g}, not {difference:+.4g}")
    return Comparison(float(difference), rule, float(threshold), tuple(samples), statistic, unit,
                      offset_sd=tuple(float(x) for x in offset_sd))


def _case_arrays(rows, columns, stage) -> tuple[list[str], list[np.ndarray]]:
    """Per-region rows -> the case ids and one (n_cases, n_muscles, 2 sides) array per column
    (NaN where a row or value is missing, or the case does not label the region), muscles in
    Table-1 order, sides right, left."""
    keys = {m.key: i for i, m in enumerate(anatomy.MUSCLES)}
    rows = [r for r in rows if isinstance(r, Mapping) and r.get("stage", stage) == stage
            and r.get("muscle") in keys and r.get("side") in ("right", "left") and labelled(r)]
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


def labelled(row: Mapping) -> bool:
    """``evaluation.is_labelled``, with a non-numeric ``volume_true_ml`` read as labelled."""
    try:
        return evaluation.is_labelled(row)
    except ValueError:
        return True


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


def cov_cases(ctx) -> tuple[list[np.ndarray], str] | str:
    """The per-case muscle-intensity CoV before and after N4 (``bias_correction_cov``: notebook 01's
    ``case, cov_before, cov_after`` rows) as two (n_cases,) arrays, the case as unit; or why not (str)."""
    rows = ctx.inputs.get("bias_correction_cov")
    if not rows:
        return f"no interval: {ctx.sources['bias_correction_cov']} missing"
    try:
        before, after = (np.array([np.nan if r.get(c) is None else float(r.get(c)) for r in rows])
                         for c in ("cov_before", "cov_after"))
    except (AttributeError, TypeError, ValueError):
        return f"no interval: {ctx.sources['bias_correction_cov']} lacks numeric cov_before / cov_after"
    if len(before) < 2:
        return f"no interval: {len(before)} case in {ctx.sources['bias_correction_cov']}"
    return [before, after], f"case (n={len(before)})"


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
