"""The few lines ``make study`` ends with: accuracy, verdicts, machines, where to look next.

``dvc metrics show`` prints every metric of the study as one table several thousand characters
wide; this is the short version a reader wants after a run.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .. import anatomy, io
from .claim_inputs import bootstrap_interval
from .claims import NOT_TESTABLE, VERDICTS
from .evaluation import is_labelled

__all__ = ["mean_dice_interval", "study_machines", "study_summary"]


def mean_dice_interval(rows: list[dict], stage: str, *, confidence: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float, float, int]:
    """Mean Dice of one stage over the test cases, with a bootstrap interval over cases.

    Parameters
    ----------
    rows : list of dict
        Per-region rows of ``llseg evaluate`` (keys ``stage``, ``case``, ``dice``); rows of
        regions a case does not label (``evaluation.is_labelled``) are left out.
    stage : str
        ``"stage1"`` or ``"stage2"``.
    confidence, n_resamples, seed
        The interval's level, number of bootstrap resamples and seed.

    Returns
    -------
    tuple
        ``(mean, low, high, n_cases)``: the mean over cases of each case's mean Dice over its
        regions, the percentile bootstrap interval (resampling unit: test case; ``nan`` with
        fewer than two cases) and the number of cases.
    """
    per_case: dict[str, list[float]] = {}
    for r in rows:
        if r["stage"] == stage and is_labelled(r) and np.isfinite(r["dice"]):
            per_case.setdefault(r["case"], []).append(float(r["dice"]))
    means = np.array([np.mean(v) for v in per_case.values()])
    if len(means) < 2:
        return (float(means.mean()) if len(means) else float("nan")), float("nan"), float("nan"), len(means)
    low, high = bootstrap_interval([means], lambda m: m.mean(axis=-1), confidence=confidence,
                                   n_resamples=n_resamples, seed=seed)
    return float(means.mean()), low, high, len(means)


def study_machines(models_dir, cascade_metrics) -> list[str]:
    """The CPUs that trained the networks and ran the predictions, one line each.

    Parameters
    ----------
    models_dir : str or Path
        Folder of the training records (``**/*.json`` with an ``environment`` entry).
    cascade_metrics : dict
        ``metrics/cascade.json`` (its ``environment`` entry is the prediction machine).

    Returns
    -------
    list of str
        ``"<cpu> (<best ISA>), <backend>: <what>"`` per distinct machine; records written before
        the environment was recorded count as "unrecorded".
    """
    def describe(env):
        if not env:
            return "unrecorded machine"
        isa = (env.get("cpu_isa") or ["?"])[-1]
        return f"{env.get('cpu', '?')} ({isa}), {env.get('keras_backend', '?')} backend"

    records = [io.read_json(p) for p in sorted(Path(models_dir).rglob("*.json"))]
    trained = Counter(describe(r.get("environment")) for r in records if "seconds" in r)
    lines = [f"{machine}: trained {n} network(s)" for machine, n in trained.items()]
    lines.append(f"{describe(cascade_metrics.get('environment'))}: predicted the test cases")
    return lines


def study_summary(metrics_dir, table, models_dir, *, elapsed_s: float | None = None) -> str:
    """A dozen lines on a finished study (``llseg summary``, the end of ``make study``).

    Parameters
    ----------
    metrics_dir : str or Path
        The study's ``metrics/`` folder (``claims.json``, ``cascade.json``; ``evaluation.json``,
        when present, names the muscles absent from the test labels).
    table : str or Path
        ``reports/tables/metrics_per_region.csv``.
    models_dir : str or Path
        Folder of the training records.
    elapsed_s : float, optional
        Wall time of the run in seconds, printed as given.

    Returns
    -------
    str
        The summary, lines separated by newlines.
    """
    metrics_dir = Path(metrics_dir)
    rows = io.read_csv(table)
    claims = io.read_json(metrics_dir / "claims.json")
    cascade = io.read_json(metrics_dir / "cascade.json")
    lines = ["llseg study summary" + (f" ({elapsed_s / 60:.1f} min)" if elapsed_s is not None else "")]
    for stage, label in (("stage1", "stage 1 alone"), ("stage2", "stage 1 + stage 2")):
        mean, low, high, n = mean_dice_interval(rows, stage)
        lines.append(f"  mean Dice, {label}: {mean:.3f} (95% CI {low:.3f}-{high:.3f} over {n} test cases)")
    verdicts = Counter(c["verdict"] for c in claims["claims"])
    lines.append(f"  paper claims ({len(claims['claims'])}): " + ", ".join(
        f"{verdicts[v]} {v}" for v in VERDICTS if verdicts[v] or v == NOT_TESTABLE))
    evaluation = metrics_dir / "evaluation.json"
    absent = io.read_json(evaluation).get("muscles_absent") if evaluation.exists() else None
    if absent:  # a cohort lacking muscles: say which, and why claims are not testable
        n_all = anatomy.N_MUSCLES
        lines.append(f"  muscles: {n_all - len(absent)} of {n_all} in the test labels; absent: {', '.join(absent[:3])}"
                     f"{f' and {len(absent) - 3} more' if len(absent) > 3 else ''}")
        lines.append("           (claims that need them are not testable here: reports/claims.md gives each reason)")
    lines.append(f"  segmentation: {cascade['mean_seconds_per_case']:.1f} s per test case")
    lines += [f"  machine: {m}" for m in study_machines(models_dir, cascade)]
    lines += ["  report:  reports/claims.md (claim by claim), reports/notebooks/ (executed notebooks)",
              "  figures: reports/figures/, tables: reports/tables/, all metrics: dvc metrics show"]
    return "\n".join(lines)
