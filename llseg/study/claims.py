"""The paper's claims checked against this run's metrics: verdicts, the report and its files.

Every claim (``claim_checks``) gets a verdict computed by a rule whose thresholds come from
params.yaml's ``claims:`` section (a flat ``thresholds`` dict); nothing is typed by hand:

* ``"reproduced"``: the rule holds on this run's numbers;
* ``"not reproduced"``: the rule fails;
* ``"inconclusive"``: the confidence interval of the difference contains the threshold;
* ``"not testable here"``: an input is missing (file absent, key absent, value NaN/None,
  too few variants), or the claim needs muscles this cohort's test labels lack (a count or mean
  over all 35, the external rotators, the ablation muscle, at least ``MIN_PATTERN_MUSCLES`` for
  a pattern over muscles; ``claim_inputs``), with the reason.

A comparison whose data has one value per test unit (per-region rows, per-case counts, the
Figure-4 regions, the per-case CoV of the N4 claim, the ablation's end-of-training Dice per
held-out crop) gets a paired bootstrap interval over those units (``confidence``,
``bootstrap_resamples``, ``bootstrap_seed`` of ``claims:``) and reads "reproduced" / "not
reproduced" only when the whole interval agrees; a comparison of single values keeps a point
verdict and says so ("no interval: ...").

Inputs are the study's metrics: a dict mapping an input name of ``INPUTS`` to the parsed JSON
(or the rows of the CSV inputs ``per_region`` and ``bias_correction_cov``), or to None when the
file does not exist (:func:`read_claim_inputs` builds it from the files).

The Figure-5 claims compare, where ``metrics/ablation.json`` holds each variant's
``final_crop_dice`` (and ``ablation_dice`` is ``final_dice``), the end-of-training crop Dice (the
mean over the held-out crops = the last validation point, while ``final_dice`` averages the last
two) with the test case as resampling unit; see ``claim_ablation``.

The other claims rest on the study's 45 networks, trained once. Where ``claims:`` names a claim
in ``study_retraining_sd`` (its compared value's SD over whole-study retrainings with other seeds
or CPU kernels, measured by ``benchmarks/study_retraining_noise.py``), every resample of that
claim's interval is also shifted by a normal draw of that SD, so that a difference a retraining
could undo does not decide its verdict.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import anatomy, io
from . import evaluation
from .claim_checks import CLAIMS, PAPER_BLOCK_DICE_SPREAD, PAPER_TABLE1_MEAN_DICE
from .claim_inputs import (MIN_PATTERN_MUSCLES, Comparison, Context, Untestable, bootstrap_interval, holds,
                           interval_holds)

__all__ = [
    "REPRODUCED",
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "INCONCLUSIVE",
    "VERDICTS",
    "INPUTS",
    "THRESHOLD_KEYS",
    "BOOTSTRAP_DEFAULTS",
    "judge",
    "PAPER_TABLE1_MEAN_DICE",
    "PAPER_BLOCK_DICE_SPREAD",
    "evaluate_claims",
    "count_verdicts",
    "claims_markdown",
    "input_paths",
    "read_claim_inputs",
    "write_claims",
]

log = logging.getLogger(__name__)

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE)

#: Input name -> the file it is read from (default locations; used in "not testable" reasons).
#: The Dice of both stages comes from ``evaluation`` (``llseg evaluate``), per case from ``per_region``.
#: ``bias_correction_cov`` (notebook 01's per-case CoV) only gives the N4 claim its interval.
INPUTS = {
    "bias_correction": "metrics/bias_correction.json",
    "bias_correction_cov": "reports/plots/bias_correction_cov.csv",
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
#: params.yaml ``claims:`` interval settings (optional here; params.py validates them).
BOOTSTRAP_DEFAULTS = {"confidence": 0.95, "bootstrap_resamples": 2000, "bootstrap_seed": 0, "ablation_training_sd": 0.0,
                      "ablation_early_training_sd": 0.0, "study_retraining_sd": {}}
_ABLATION_DICE = ("final_dice", "best_dice")


def _check_thresholds(thresholds) -> dict:
    if not isinstance(thresholds, Mapping):
        raise TypeError(f"thresholds must be a mapping (params.yaml 'claims:'), got {type(thresholds).__name__}")
    missing = [k for k in THRESHOLD_KEYS if k not in thresholds]
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS) - set(BOOTSTRAP_DEFAULTS))
    if missing or unknown:
        raise ValueError(f"thresholds: missing key(s) {missing}, unknown key(s) {unknown}")
    out = {**BOOTSTRAP_DEFAULTS, **thresholds}
    if out["ablation_dice"] not in _ABLATION_DICE:
        raise ValueError(f"thresholds: ablation_dice must be one of {_ABLATION_DICE}, got {out['ablation_dice']!r}")
    out["study_retraining_sd"] = _check_retraining_sd(out["study_retraining_sd"])
    for k in (*THRESHOLD_KEYS, *BOOTSTRAP_DEFAULTS):
        if k in ("ablation_dice", "study_retraining_sd"):
            continue
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"thresholds: {k} must be a finite number, got {v!r}")
    return out


def _check_retraining_sd(sds) -> dict[str, tuple[float, ...]]:
    """``claims.study_retraining_sd``: claim id -> one SD >= 0 (every comparison) or a list of
    them (one per comparison) -> claim id -> tuple of SDs."""
    if not isinstance(sds, Mapping):
        raise ValueError(f"thresholds: study_retraining_sd must map claim ids to SDs, got {sds!r}")
    known = {c.id for c in CLAIMS}
    unknown = sorted(set(sds) - known)
    if unknown:
        raise ValueError(f"thresholds: study_retraining_sd names unknown claim(s) {unknown}")
    out = {}
    for cid, value in sds.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v)
                             for v in values):
            raise ValueError(f"thresholds: study_retraining_sd.{cid} must be a finite SD >= 0 or a list of them, "
                             f"got {value!r}")
        out[cid] = tuple(float(v) for v in values)
    return out


def _with_retraining(cid: str, comparisons: tuple[Comparison, ...], sds: tuple[float, ...]) -> tuple[Comparison, ...]:
    """``comparisons`` with their study retraining SD: one for all, or one each."""
    if len(sds) not in (1, len(comparisons)):
        raise ValueError(f"thresholds: study_retraining_sd.{cid} gives {len(sds)} SDs for {len(comparisons)} "
                         "comparisons (give one, or one per comparison)")
    sds = sds * len(comparisons) if len(sds) == 1 else sds
    return tuple(replace(c, retraining_sd=sd) for c, sd in zip(comparisons, sds))


def judge(comparison: Comparison, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
          interval: bool = True) -> dict:
    """The verdict of one comparison, with the interval of its difference where data allow.

    Parameters
    ----------
    comparison : Comparison
        From a claim check (``claim_inputs.compare``).
    confidence, n_resamples, seed
        Bootstrap settings (params.yaml ``claims:`` ``confidence``, ``bootstrap_resamples``,
        ``bootstrap_seed``).
    interval : bool, optional
        False: judge the point value only, as if there were no data to resample.

    Returns
    -------
    dict
        ``verdict`` (reproduced / not reproduced / inconclusive), ``difference``, ``ci_low``,
        ``ci_high`` (None without an interval; units of the difference), ``threshold``,
        ``rule`` (``claim_inputs.RULES``), ``resampling_unit`` (or why there is no interval),
        ``retraining_sd`` (the comparison's study retraining SD, 0 for none) and ``interval``
        (the text of the report's column).

    Notes
    -----
    A comparison with a retraining SD but no per-unit data gets the interval of retraining
    alone (the difference plus a normal draw of that SD, percentiles of ``n_resamples`` draws).
    """
    c = comparison
    sd = float(c.retraining_sd) if interval else 0.0
    resample = interval and c.statistic is not None and bool(c.samples)
    single = c.single if c.statistic is None or not c.samples else "no interval asked"
    out = {"difference": c.difference, "ci_low": None, "ci_high": None, "threshold": c.threshold, "rule": c.rule,
           "resampling_unit": c.unit if resample else single, "retraining_sd": sd}
    retraining = f", study retraining SD {sd:.2g}" if sd else ""
    if resample:
        low, high = bootstrap_interval(c.samples, c.statistic, confidence=confidence, n_resamples=n_resamples,
                                       seed=seed, offset_sd=c.offset_sd, statistic_sd=sd)
        text = f"{c.difference:+.3g} [{low:+.3g}, {high:+.3g}] per {c.unit}{retraining}"
    elif sd:
        low, high = bootstrap_interval([[c.difference]], lambda d: d[:, 0], confidence=confidence,
                                       n_resamples=n_resamples, seed=seed, statistic_sd=sd)
        out["resampling_unit"] = f"retraining only ({single})"
        text = f"{c.difference:+.3g} [{low:+.3g}, {high:+.3g}] ({single}; study retraining SD {sd:.2g} only)"
    else:
        verdict = REPRODUCED if holds(c.difference, c.rule, c.threshold) else NOT_REPRODUCED
        return {"verdict": verdict, **out, "interval": f"{c.difference:+.3g} ({single})"}
    inside = interval_holds(low, high, c.rule, c.threshold)
    verdict = INCONCLUSIVE if inside is None else REPRODUCED if inside else NOT_REPRODUCED
    return {"verdict": verdict, **out, "ci_low": low, "ci_high": high, "interval": text}


def _interval_text(results: Sequence[Mapping]) -> str:
    """The report's interval cell: each comparison's text, a shared "no interval" reason said once."""
    single = {r["resampling_unit"] for r in results if r["ci_low"] is None}
    if len(results) > 1 and len(single) == 1 and all(r["ci_low"] is None for r in results):
        return "; ".join(f"{r['difference']:+.3g}" for r in results) + f" ({single.pop()})"
    return "; ".join(r["interval"] for r in results)


def _combine(results: Sequence[Mapping]) -> str:
    """All comparisons of a claim must hold: any "not reproduced" wins, then "inconclusive"."""
    found = {r["verdict"] for r in results}
    return next(v for v in (NOT_REPRODUCED, INCONCLUSIVE, REPRODUCED) if v in found)


def evaluate_claims(inputs: Mapping, thresholds: Mapping, *, stage: str = "stage2",
                    sources: Mapping | None = None, intervals: bool = True) -> list[dict]:
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
    intervals : bool, optional
        False: point verdicts only (for comparing with the verdicts before intervals).

    Returns
    -------
    list of dict
        One dict per claim, in paper order: ``id``, ``section``, ``claim``, ``measured``
        (str; "n/a" when not testable), ``paper`` (str or number), ``verdict`` (one of
        ``VERDICTS``), ``reason`` (why not testable, else ""), ``rule`` (in words, with
        the threshold values filled in), the deciding comparison's ``difference``, ``ci_low``,
        ``ci_high``, ``threshold``, ``resampling_unit`` and ``interval`` (:func:`judge`; None /
        "" when not testable) and ``comparisons`` (every comparison of the claim).

    Raises
    ------
    TypeError
        ``inputs`` or ``thresholds`` is not a mapping.
    ValueError
        A threshold is missing, unknown or not a finite number; an unknown input name.

    Notes
    -----
    A rule that needs a missing file, key or a NaN/None value gives ``"not testable here"``
    with the reason; it never guesses a value. A claim of several comparisons (all must hold)
    reports the one that decides its verdict.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of input name -> data, got {type(inputs).__name__}")
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise ValueError(f"inputs: unknown name(s) {unknown}; expected some of {sorted(INPUTS)}")
    t = _check_thresholds(thresholds)
    ctx = Context(inputs, t, stage, {**INPUTS, **(sources or {})})
    settings = {"confidence": t["confidence"], "n_resamples": int(t["bootstrap_resamples"]),
                "seed": int(t["bootstrap_seed"]), "interval": bool(intervals)}
    empty = dict.fromkeys(("difference", "ci_low", "ci_high", "threshold", "resampling_unit"), None)
    out = []
    for c in CLAIMS:
        try:
            measured, comparisons = c.check(ctx)
            comparisons = (comparisons,) if isinstance(comparisons, Comparison) else tuple(comparisons)
            if c.id in t["study_retraining_sd"]:
                comparisons = _with_retraining(c.id, comparisons, t["study_retraining_sd"][c.id])
            results = [judge(k, **settings) for k in comparisons]
            verdict, reason = _combine(results), ""
            decisive = next(r for r in results if r["verdict"] == verdict)
            interval = _interval_text(results)
        except Untestable as exc:
            measured, verdict, reason, results, decisive, interval = "n/a", NOT_TESTABLE, str(exc), [], empty, ""
        paper = float(c.paper) if isinstance(c.paper, (int, float, np.number)) else c.paper
        out.append({"id": c.id, "section": c.section, "claim": c.claim, "measured": measured, "paper": paper,
                    "verdict": verdict, "reason": reason, "rule": c.rule(t), **{k: decisive[k] for k in empty},
                    "interval": interval, "comparisons": results})
        log.debug("claim %s: %s %s", c.id, verdict, reason)
    return out


def count_verdicts(claims: Sequence[Mapping]) -> dict:
    """Claims per verdict: ``{"reproduced": n, "not reproduced": n, "inconclusive": n, "not testable here": n}``.

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


def claims_markdown(claims: Sequence[Mapping], *, profile: str = "", notes: Sequence[str] = (),
                    confidence: float = BOOTSTRAP_DEFAULTS["confidence"],
                    resamples: int = BOOTSTRAP_DEFAULTS["bootstrap_resamples"]) -> str:
    """The claims report: a header, the count per verdict, then one table row per claim.

    Parameters
    ----------
    claims : sequence of mapping
        ``evaluate_claims`` output.
    profile : str, optional
        params.yaml profile the run used (shown in the header).
    notes : sequence of str, optional
        Extra lines listed under the table (e.g. inputs that were missing).
    confidence, resamples : optional
        Bootstrap settings, named in the header.

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
                     "interval": c.get("interval") or "",
                     "verdict": f"**{verdict}**" if c["verdict"] == REPRODUCED else verdict, "rule": c["rule"]})
    lines = [
        "# Paper claims checked against this run",
        "",
        f"Ni et al. 2019, sections 3-4 and abstract. Profile: `{profile or 'unknown'}`. Every verdict is computed by "
        "`llseg claims` from this run's metrics with the thresholds in `params.yaml` (`claims:`); none is typed "
        "by hand. \"Not testable here\" means an input file or value was missing or NaN, or the claim needs muscles "
        "this cohort's test labels lack (reason given). "
        f"The interval column gives the value (mostly a difference) the rule compares with its threshold and, where the data "
        f"have one value per test unit, its {confidence:.0%} paired percentile bootstrap interval ({resamples} "
        "resamples, seeded; the resampling unit is named: a test case carries all its regions). Figure 5's "
        "variants are each trained once: where a retraining SD is named, every resample also shifts each "
        "network's Dice by a normal draw of that SD (params.yaml `claims.ablation_training_sd`, measured by "
        "retraining with other seeds), so that a difference another seed or CPU could undo does not decide; the "
        "early-training Dice has no per-crop values, so its interval is that of retraining alone "
        "(`claims.ablation_early_training_sd`). The other claims rest on the study's 45 networks, also trained "
        "once: where \"study retraining SD\" is named, every resample also shifts the compared value by a normal "
        "draw of that SD (`claims.study_retraining_sd`, the value's spread over whole-study retrainings with other "
        "seeds and CPU kernels). A verdict is "
        "\"reproduced\" or \"not reproduced\" only when the interval lies wholly on one side of the threshold, "
        "else \"inconclusive\"; a difference of single values (\"no interval\") keeps a point verdict.",
        "",
        f"**{len(claims)} claims: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".**",
        "",
        evaluation.table_markdown(rows, {"n": "#", "claim": "claim", "section": "paper section",
                                         "measured": "this run", "paper": "paper",
                                         "interval": "value compared [interval] per unit", "verdict": "verdict",
                                         "rule": "rule"}).rstrip("\n"),
    ]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


#: Inputs whose absence costs an interval, not a verdict: what the report's note says.
_INTERVAL_ONLY = {"bias_correction_cov": "the N4 claim keeps a point verdict (no interval)"}
_CSV_INPUTS = ("per_region", "bias_correction_cov")


def input_paths(metrics_dir, table) -> dict[str, Path]:
    """Input name -> the file it is read from: ``metrics_dir/<name>.json``, the per-region
    ``table``, and the per-case CoV at its place beside the metrics folder
    (``<metrics_dir>/../reports/plots/bias_correction_cov.csv``)."""
    paths = {name: Path(metrics_dir) / f"{name}.json" for name in INPUTS}
    paths["per_region"] = Path(table)
    paths["bias_correction_cov"] = Path(metrics_dir).parent / INPUTS["bias_correction_cov"]
    return paths


def read_claim_inputs(metrics_dir, table) -> tuple[dict, dict, list[str]]:
    """Read the claims' inputs (:func:`input_paths`): ``metrics_dir/<name>.json``, the per-region
    ``table`` and the per-case CoV beside the metrics folder.

    Returns
    -------
    inputs : dict
        Input name -> parsed JSON / per-region rows, or None for a missing file.
    sources : dict
        Input name -> the path read (shown in "not testable" reasons).
    notes : list of str
        One line per missing file (a missing file is never an error).

    Raises
    ------
    ValueError
        A file exists but is not valid JSON / CSV (the message names it).
    """
    inputs, sources, notes = {}, {}, []
    for name, path in input_paths(metrics_dir, table).items():
        sources[name] = str(path)
        if not path.exists():
            inputs[name] = None
            what = _INTERVAL_ONLY.get(name, "the claims that need it are not testable here")
            notes.append(f"`{path}` missing: {what}.")
        else:
            inputs[name] = io.read_csv(path) if name in _CSV_INPUTS else io.read_json(path)
    return inputs, sources, notes


def write_claims(metrics_dir, table, out, json_out, *, thresholds: Mapping, stage: str = "stage2",
                 profile: str = "") -> dict:
    """Check the claims on the files of one run; write the Markdown report and its JSON.

    Parameters
    ----------
    metrics_dir, table : path
        Folder of the ``metrics/*.json`` inputs and the per-region CSV (``llseg evaluate``); the
        per-case CoV is read from ``<metrics_dir>/../reports/plots/bias_correction_cov.csv``.
    out, json_out : path
        The Markdown report and the JSON summary to write (atomically).
    thresholds : mapping
        params.yaml's ``claims:`` section.
    stage : str, optional
        Stage scored by the per-muscle claims (params.yaml ``evaluation.stage``).
    profile : str, optional
        params.yaml profile, shown in the report.

    Returns
    -------
    dict
        Claims per verdict (``count_verdicts``).
    """
    inputs, sources, notes = read_claim_inputs(metrics_dir, table)
    found = evaluate_claims(inputs, thresholds, stage=stage, sources=sources)
    counts = count_verdicts(found)
    notes.append(f"Per-muscle claims score the `{stage}` labels (params.yaml `evaluation.stage`).")
    absent = Context(inputs, thresholds, stage, {**INPUTS, **sources}).muscles_absent()
    if absent:
        notes.append(f"{evaluation.absent_line(absent)} Claims over all {len(anatomy.MUSCLES)} muscles are not "
                     f"testable here, claims about a pattern over muscles need at least {MIN_PATTERN_MUSCLES} of "
                     "them, and the mean Dice is compared with Table 1's mean over the muscles present.")
    t = {**BOOTSTRAP_DEFAULTS, **thresholds}
    io.write_json(json_out, {"profile": profile, "n_claims": len(found),
                             **{f"n_{v.replace(' ', '_')}": n for v, n in counts.items()},
                             "confidence": t["confidence"], "bootstrap_resamples": t["bootstrap_resamples"],
                             "bootstrap_seed": t["bootstrap_seed"], "ablation_training_sd": t["ablation_training_sd"],
                             "ablation_early_training_sd": t["ablation_early_training_sd"],
                             "study_retraining_sd": t["study_retraining_sd"], "claims": found})
    io.write_text(out, claims_markdown(found, profile=profile, notes=notes, confidence=t["confidence"],
                                       resamples=t["bootstrap_resamples"]))
    return counts
