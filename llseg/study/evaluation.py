"""Study-level evaluation: per-region metric rows in, the paper's tables and summaries out
(paper sections 3.4 and 4, Table 1, Figure 6).

A *row* is one region of one case as ``llseg.metrics.evaluate_regions`` returns it: a mapping
with at least ``muscle`` (anatomy key) and the metric columns used (``dice``, ``msd_mm``,
``volume_error_abs_pct``, ``volume_true_ml``), optionally ``case``, ``side`` and ``stage``
(``"stage1"``/``"stage2"``, added by ``llseg evaluate``). Rows read back from the CSV written by
``llseg evaluate`` (``pandas.read_csv(...).to_dict("records")``) work as they are.

NaN policy
----------
A metric is NaN where ``llseg.metrics`` documents it (e.g. MSD when a mask is empty). Every
mean here is over the finite values only, and every result says how many values were NaN
next to it (``n_*_nan``); a mean over no finite value is NaN (``None`` in the JSON-ready
``evaluation_summary``). Nothing is dropped without being counted.

Regions a case does not label
-----------------------------
A real cohort's label maps may hold any subset of the 70 regions (some muscles, one side, a
thigh-only scan). A region absent from a case's ground truth is *not labelled* there: it is not
scored at all, never a Dice of 0. ``llseg evaluate`` writes rows only for the regions each
case's ground truth labels, and every function here drops a row whose ``volume_true_ml`` is 0
(:func:`is_labelled`; e.g. rows of older tables). A region the ground truth labels but the
prediction misses still scores Dice 0: a miss. The per-muscle results (``per_muscle``,
``table1``, the counts and comparisons) cover the muscles *present*, those with at least one
labelled row, and name the others (``muscles_absent``, :func:`absent_line`). With all 70
regions labelled, as in the phantom study, nothing changes.

Paper values
------------
Per-muscle Table-1 values and the stated counts come from ``llseg.anatomy``; the section-3.4
facts that name muscles (the seven muscles with volume error above 10 %, the seven with MSD
above 4 mm) are kept here (``PAPER_VOLUME_ERROR_ABOVE_10PCT``, ``PAPER_N_MSD_ABOVE_4MM``).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from .. import anatomy, io, metrics

__all__ = [
    "PAPER_VOLUME_ERROR_ABOVE_10PCT",
    "PAPER_N_MSD_ABOVE_4MM",
    "PAPER_VOLUME_THRESHOLD_PCT",
    "PAPER_MSD_THRESHOLD_MM",
    "is_labelled",
    "select_stage",
    "muscles_present",
    "muscles_absent",
    "absent_line",
    "per_muscle",
    "muscles_by_volume",
    "table1",
    "table1_counts",
    "volume_msd_summary",
    "stage_summary",
    "evaluation_summary",
    "compare_with_paper",
    "json_ready",
    "table_markdown",
    "evaluate_predictions",
]

log = logging.getLogger(__name__)

#: Section 3.4: "seven muscles have errors larger than 10 %" (named in the text).
PAPER_VOLUME_ERROR_ABOVE_10PCT = ("adductor_brevis", "flexor_digitorum_longus", "obturator_externus",
                                  "obturator_internus", "pectineus", "piriformis", "quadratus_femoris")
#: Section 3.4: "seven muscles have mean distance values larger than 4 mm" (not named).
PAPER_N_MSD_ABOVE_4MM = 7
#: The thresholds of those two statements.
PAPER_VOLUME_THRESHOLD_PCT = 10.0
PAPER_MSD_THRESHOLD_MM = 4.0

assert all(anatomy.muscle(k).key == k for k in PAPER_VOLUME_ERROR_ABOVE_10PCT)

_NA = "n/a"
#: Per-region column of ``metrics.evaluate_regions``: Dice of the truth against itself grown by
#: one in-plane voxel (a resolution reference).
MARGIN = "dice_one_voxel_margin"


# ----------------------------------------------------------------------------- rows

def _float(value) -> float:
    """A metric cell as float: None, "" and NaN become NaN."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric value {value!r} is not a number") from None


def _check_rows(rows, columns: Sequence[str]) -> list[Mapping]:
    if isinstance(rows, Mapping) or not isinstance(rows, Iterable):
        raise TypeError(f"rows must be an iterable of mappings (one per region and case), got {type(rows).__name__}")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a mapping, got {type(row).__name__}")
        missing = [c for c in ("muscle", *columns) if c not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks column(s) {missing}; it has {sorted(row)}")
        try:
            anatomy.muscle(row["muscle"])
        except KeyError:
            raise ValueError(f"rows[{i}]: unknown muscle {row['muscle']!r} (see llseg.anatomy)") from None
    return [r for r in rows if is_labelled(r)]


def is_labelled(row: Mapping) -> bool:
    """Whether a per-region row scores a region its case's ground truth labels.

    Parameters
    ----------
    row : mapping
        A per-region row.

    Returns
    -------
    bool
        False when ``volume_true_ml`` is 0 (no ground-truth voxel: the region is not labelled in
        that case, so it is not scored); True otherwise, including rows without the column or
        with a NaN there (nothing says the region is unlabelled).

    Raises
    ------
    ValueError
        ``volume_true_ml`` is not a number.
    """
    return "volume_true_ml" not in row or _float(row["volume_true_ml"]) != 0.0


def select_stage(rows, stage: str | None) -> list[Mapping]:
    """The rows of one cascade stage.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows; with ``stage`` given, each needs a ``stage`` column.
    stage : str or None
        Keep rows whose ``stage`` equals it. None keeps all rows, which must then not mix
        stages (rows without a ``stage`` column count as one stage).

    Returns
    -------
    list of mapping
        The selected rows, in input order (may be empty), without rows of regions the case
        does not label (:func:`is_labelled`).

    Raises
    ------
    ValueError
        ``stage`` given but a row has no ``stage`` column, or ``stage`` is None and the rows
        hold several stages (averaging stage 1 with stage 2 is never what is wanted).
    """
    rows = _check_rows(rows, ())
    if stage is None:
        stages = sorted({str(r.get("stage")) for r in rows})
        if len(stages) > 1:
            raise ValueError(f"rows mix stages {stages}; pass stage= to choose one")
        return rows
    if any("stage" not in r for r in rows):
        raise ValueError(f"stage={stage!r} given but some rows have no 'stage' column")
    return [r for r in rows if r["stage"] == stage]


def _values(rows, column: str) -> np.ndarray:
    return np.array([_float(r[column]) for r in rows], dtype=np.float64)


def _mean_sd(values: np.ndarray) -> tuple[float, float, int, int]:
    """Mean and sample sd (ddof=1) of the finite values, their count, and the NaN count.
    Mean NaN when no value is finite; sd NaN when fewer than two are."""
    finite = values[np.isfinite(values)]
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    sd = float(finite.std(ddof=1)) if n > 1 else math.nan
    return mean, sd, n, int(values.size - n)


def muscles_present(rows, *, stage: str | None = None) -> list[str]:
    """Keys of the muscles with at least one labelled row (either side, any case), Table-1 order.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows.
    stage : str, optional
        Select one stage first (see ``select_stage``).

    Raises
    ------
    ValueError, TypeError
        Bad rows or stages mixed.
    """
    found = {anatomy.muscle(r["muscle"]).key for r in select_stage(rows, stage)}
    return [m.key for m in anatomy.MUSCLES if m.key in found]


def muscles_absent(rows, *, stage: str | None = None) -> list[str]:
    """Keys of the muscles without any labelled row (the cohort's test labels lack them), Table-1
    order; the complement of :func:`muscles_present`."""
    found = set(muscles_present(rows, stage=stage))
    return [m.key for m in anatomy.MUSCLES if m.key not in found]


def absent_line(absent: Sequence[str]) -> str:
    """The line shown under a table or figure of a cohort lacking muscles.

    Parameters
    ----------
    absent : sequence of str
        Muscle keys (``muscles_absent``).

    Returns
    -------
    str
        ``"Absent from this cohort's test labels (not scored), 2 of 35 muscles: Popliteus,
        Soleus."``; "" when nothing is absent.

    Raises
    ------
    KeyError
        An unknown muscle key.
    """
    if not absent:
        return ""
    names = ", ".join(anatomy.muscle(k).name for k in absent)
    return f"Absent from this cohort's test labels (not scored), {len(absent)} of {anatomy.N_MUSCLES} muscles: {names}."


def per_muscle(rows, *, stage: str | None = None, columns=("dice", "msd_mm", "volume_error_abs_pct")) -> list[dict]:
    """Per-muscle mean, sd and counts of metric columns, over cases and both sides.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows (``llseg.metrics.evaluate_regions`` output, possibly of many cases).
    stage : str, optional
        Select one stage first (see ``select_stage``).
    columns : sequence of str
        Metric columns to summarise.

    Returns
    -------
    list of dict
        One dict per muscle present (:func:`muscles_present`; all 35 when every region is
        labelled somewhere), in Table-1 order, each with ``index``, ``muscle`` (key), ``name``
        and, per column ``c``: ``c + "_mean"``, ``c + "_sd"`` (ddof=1), ``"n_" + c`` (finite
        values) and ``"n_" + c + "_nan"``. A muscle whose rows hold no finite value has NaN
        mean and sd. Muscles without a labelled row are left out (see ``muscles_absent``).

    Raises
    ------
    ValueError, TypeError
        Bad rows (missing column, unknown muscle, non-numeric value) or stages mixed.
    """
    columns = tuple(columns)
    rows = _check_rows(select_stage(rows, stage), columns)
    by_key: dict[str, list[Mapping]] = {m.key: [] for m in anatomy.MUSCLES}
    for r in rows:
        by_key[anatomy.muscle(r["muscle"]).key].append(r)
    out = []
    for m in anatomy.MUSCLES:
        if not by_key[m.key]:
            continue
        entry = {"index": m.index, "muscle": m.key, "name": m.name}
        for c in columns:
            mean, sd, n, n_nan = _mean_sd(_values(by_key[m.key], c))
            entry.update({f"{c}_mean": mean, f"{c}_sd": sd, f"n_{c}": n, f"n_{c}_nan": n_nan})
        out.append(entry)
    return out


def muscles_by_volume(rows, *, stage: str | None = None) -> list[str]:
    """Keys of the muscles present (:func:`muscles_present`) sorted by mean ground-truth volume
    (``volume_true_ml``), largest first.

    Muscles present without a finite volume in ``rows`` are placed by their anatomy reference
    volume (``Muscle.volume_ml``) after the measured ones; ties keep Table-1 order.
    """
    means = per_muscle(rows, stage=stage, columns=("volume_true_ml",))
    measured = [(e["volume_true_ml_mean"], e["muscle"]) for e in means if np.isfinite(e["volume_true_ml_mean"])]
    missing = [e["muscle"] for e in means if not np.isfinite(e["volume_true_ml_mean"])]
    return ([k for _, k in sorted(measured, key=lambda t: -t[0])]
            + sorted(missing, key=lambda k: -anatomy.muscle(k).volume_ml))


# ----------------------------------------------------------------------------- Table 1

def _mean_sd_text(mean: float, sd: float, *, mean_digits: int, sd_digits: int) -> str:
    if not np.isfinite(mean):
        return _NA
    return f"{mean:.{mean_digits}f} ± {sd:.{sd_digits}f}" if np.isfinite(sd) else f"{mean:.{mean_digits}f}"


def table1(rows, *, stage: str | None = None) -> list[dict]:
    """The paper's Table 1 next to this run's Dice, one row per muscle in Table-1 order.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows with ``muscle`` and ``dice``, and optionally ``dice_one_voxel_margin``
        (``llseg.metrics.evaluate_regions``).
    stage : str, optional
        Select one stage first (see ``select_stage``); normally ``"stage2"`` (final labels).

    Returns
    -------
    list of dict
        One dict per muscle present in ``rows`` (:func:`muscles_present`: all 35 when every
        region is labelled somewhere; the absent ones are left out), Table-1 order, with
        ``index``, ``muscle``, ``name``, ``interobserver_dice``,
        ``paper_dice_mean``, ``paper_dice_sd``, ``paper_within_interobserver`` (Table 1's own
        rounded values: paper mean >= interobserver), ``dice_mean``, ``dice_sd`` (ddof=1, over
        test cases and both sides), ``n`` (finite Dice values), ``n_nan``,
        ``within_interobserver`` (``dice_mean >= interobserver_dice``; None when ``dice_mean``
        is NaN), ``one_voxel_margin_dice`` (mean of ``dice_one_voxel_margin``: the Dice a
        boundary one in-plane voxel too far out would score on these muscles; NaN when the
        rows lack the column) and two display strings, ``paper_mean_sd`` ("0.83 ± 0.024") and
        ``this_run_mean_sd`` ("n/a" when undefined).

    Raises
    ------
    ValueError, TypeError
        Bad rows or stages mixed.

    Notes
    -----
    The paper's Dice are over 13 test cases and, presumably, both legs; its sd convention is
    not stated. This run's mean is compared unrounded.
    """
    rows = select_stage(rows, stage)
    margin = bool(rows) and all(MARGIN in r for r in rows)
    out = []
    for e in per_muscle(rows, columns=("dice", MARGIN) if margin else ("dice",)):
        m = anatomy.muscle(e["muscle"])
        mean, sd = e["dice_mean"], e["dice_sd"]
        out.append({
            "index": m.index, "muscle": m.key, "name": m.name,
            "interobserver_dice": m.interobserver_dice, "paper_dice_mean": m.paper_dice_mean,
            "paper_dice_sd": m.paper_dice_sd, "paper_within_interobserver": m.paper_dice_mean >= m.interobserver_dice,
            "dice_mean": mean, "dice_sd": sd, "n": e["n_dice"], "n_nan": e["n_dice_nan"],
            "within_interobserver": bool(mean >= m.interobserver_dice) if np.isfinite(mean) else None,
            "one_voxel_margin_dice": e[f"{MARGIN}_mean"] if margin else math.nan,
            "paper_mean_sd": _mean_sd_text(m.paper_dice_mean, m.paper_dice_sd, mean_digits=2, sd_digits=3),
            "this_run_mean_sd": _mean_sd_text(mean, sd, mean_digits=3, sd_digits=3),
        })
    return out


def table1_counts(table: Sequence[Mapping]) -> dict:
    """How many muscles reach interobserver agreement, in this run and in the paper.

    Parameters
    ----------
    table : sequence of mapping
        ``table1`` output (needs ``muscle``, ``within_interobserver`` and
        ``paper_within_interobserver``).

    Returns
    -------
    dict
        ``n_muscles`` (rows of ``table``: the muscles present); this run's ``n_within``,
        ``n_worse`` and ``n_undetermined`` (no finite Dice) with the lists ``within`` /
        ``worse`` / ``undetermined`` (muscle keys); ``paper_table_within`` /
        ``paper_table_worse`` (Table 1's rounded values over the same muscles: 15 / 20 over
        all 35); ``paper_stated_within`` / ``paper_stated_worse`` (the text's 14 / 21 over all
        35, ``anatomy.PAPER_WITHIN_INTEROBSERVER``); ``n_same_as_paper_table``: muscles whose
        within/worse verdict equals the one from Table 1's values; ``muscles_absent`` and
        ``n_muscles_absent``: the muscles ``table`` lacks (not in the cohort's test labels).

    Raises
    ------
    ValueError
        A row lacks a needed key.
    """
    needed = ("muscle", "within_interobserver", "paper_within_interobserver")
    for i, row in enumerate(table):
        missing = [k for k in needed if k not in row]
        if missing:
            raise ValueError(f"table[{i}] lacks key(s) {missing}; pass the output of table1()")
    verdict = {True: "within", False: "worse", None: "undetermined"}
    groups = {name: [r["muscle"] for r in table if verdict[r["within_interobserver"]] == name]
              for name in verdict.values()}
    paper_within = sum(bool(r["paper_within_interobserver"]) for r in table)
    listed = {anatomy.muscle(r["muscle"]).key for r in table}
    absent = [m.key for m in anatomy.MUSCLES if m.key not in listed]
    return {
        "n_muscles": len(table),
        "n_within": len(groups["within"]), "n_worse": len(groups["worse"]),
        "n_undetermined": len(groups["undetermined"]), **groups,
        "paper_table_within": paper_within, "paper_table_worse": len(table) - paper_within,
        "paper_stated_within": anatomy.PAPER_WITHIN_INTEROBSERVER,
        "paper_stated_worse": anatomy.PAPER_WORSE_THAN_INTEROBSERVER,
        "n_same_as_paper_table": sum(r["within_interobserver"] is not None
                                     and bool(r["within_interobserver"]) == bool(r["paper_within_interobserver"])
                                     for r in table),
        "n_muscles_absent": len(absent), "muscles_absent": absent,
    }


def compare_with_paper(rows, *, stage: str | None = None, n_listed: int = 5) -> dict:
    """Where this run's per-muscle Dice agrees with the paper's Table 1 and where it does not.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows with ``muscle``, ``dice`` and ``volume_true_ml``.
    stage : str, optional
        Select one stage first (see ``select_stage``).
    n_listed : int, optional
        How many muscles to list as largest shortfalls / best results.

    Returns
    -------
    dict
        Over the ``n_muscles`` muscles present with a finite mean Dice
        (``n_muscles_undetermined`` present without one; absent muscles are left out, see
        ``table1_counts``): ``dice_mean_over_muscles`` (mean of per-muscle means),
        ``paper_dice_mean_over_muscles``, ``interobserver_dice_mean_over_muscles`` (same
        muscles), ``mean_difference_to_paper``, ``mean_difference_to_interobserver``,
        ``n_at_or_above_paper``; ``largest_shortfalls`` and ``best_vs_interobserver`` (lists
        of ``{"muscle", "dice_mean", "interobserver_dice", "difference"}``, most negative /
        most positive ``dice_mean - interobserver_dice`` first); ``spearman_vs_paper`` (do
        the same muscles come out hard?), ``spearman_dice_vs_volume`` (this run's Dice vs
        its mean ground-truth volume) and ``paper_spearman_dice_vs_volume`` (Table 1 vs the
        anatomy reference volumes), each with its number of pairs; and, splitting the
        muscles by ``muscles_by_volume`` into a larger half (18) and a smaller half (17),
        ``n_within_larger_half`` / ``n_within_smaller_half`` for this run and
        ``paper_within_larger_half`` / ``paper_within_smaller_half`` for Table 1 (the paper:
        "especially for muscles with large volumes"); ``one_voxel_margin_dice_mean_over_muscles``
        (same muscles; the mean Dice of boundaries one in-plane voxel too far out everywhere)
        and ``n_above_one_voxel_margin`` (muscles whose Dice beats their own margin Dice).
        NaN where undefined.

    Raises
    ------
    ValueError, TypeError
        Bad rows or stages mixed.
    """
    rows = select_stage(rows, stage)
    table = table1(rows)
    ours = np.array([t["dice_mean"] for t in table])
    paper = np.array([t["paper_dice_mean"] for t in table])
    inter = np.array([t["interobserver_dice"] for t in table])
    margin = np.array([t["one_voxel_margin_dice"] for t in table])
    ok = np.isfinite(ours)
    gap = ours - inter
    ranked = [int(i) for i in np.argsort(gap, kind="stable") if ok[i]]

    def listed(indices) -> list[dict]:
        return [{"muscle": table[i]["muscle"], "dice_mean": float(ours[i]), "interobserver_dice": float(inter[i]),
                 "difference": float(gap[i])} for i in indices[:n_listed]]

    measured = {e["muscle"]: e["volume_true_ml_mean"] for e in per_muscle(rows, columns=("volume_true_ml",))}
    volumes = np.array([measured.get(t["muscle"], math.nan) for t in table])
    reference = np.array([anatomy.muscle(t["muscle"]).volume_ml for t in table])
    larger = set(muscles_by_volume(rows)[: (len(table) + 1) // 2])
    in_larger = np.array([t["muscle"] in larger for t in table])
    within = np.array([t["within_interobserver"] is True for t in table])
    paper_within = np.array([bool(t["paper_within_interobserver"]) for t in table])
    vs_paper, vs_volume = _correlation(ours, paper), _correlation(ours, volumes)
    paper_vs_volume = _correlation(paper, reference)

    def mean(values: np.ndarray) -> float:  # over the muscles with a finite Dice
        return float(values[ok].mean()) if ok.any() else math.nan

    return {
        "n_muscles": int(ok.sum()), "n_muscles_undetermined": int((~ok).sum()),
        "dice_mean_over_muscles": mean(ours), "paper_dice_mean_over_muscles": mean(paper),
        "interobserver_dice_mean_over_muscles": mean(inter),
        "mean_difference_to_paper": mean(ours - paper), "mean_difference_to_interobserver": mean(gap),
        "n_at_or_above_paper": int(np.count_nonzero(ours[ok] >= paper[ok])),
        "largest_shortfalls": listed(ranked), "best_vs_interobserver": listed(ranked[::-1]),
        "spearman_vs_paper": vs_paper["spearman_rho"], "n_spearman_vs_paper": vs_paper["n_pairs"],
        "spearman_dice_vs_volume": vs_volume["spearman_rho"], "n_spearman_dice_vs_volume": vs_volume["n_pairs"],
        "paper_spearman_dice_vs_volume": paper_vs_volume["spearman_rho"],
        "n_within_larger_half": int(np.count_nonzero(within & in_larger)),
        "n_within_smaller_half": int(np.count_nonzero(within & ~in_larger)),
        "paper_within_larger_half": int(np.count_nonzero(paper_within & in_larger)),
        "paper_within_smaller_half": int(np.count_nonzero(paper_within & ~in_larger)),
        "one_voxel_margin_dice_mean_over_muscles": mean(margin),
        "n_above_one_voxel_margin": int(np.count_nonzero(ours[ok] > margin[ok])),
    }


# ----------------------------------------------------------------------------- Figure 6 / section 3.4

def _correlation(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson and Spearman correlation of the pairs where both values are finite.
    NaN coefficients (no scipy call) with fewer than 3 pairs or a constant input, where the
    coefficient is undefined."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"n_pairs": int(ok.sum()), "n_pairs_dropped": int(ok.size - ok.sum()),
           "pearson_r": math.nan, "pearson_p": math.nan, "spearman_rho": math.nan, "spearman_p": math.nan}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        log.info("Dice-MSD correlation undefined (%d finite pairs%s)", x.size,
                 ", constant values" if x.size >= 3 else "")
        return out
    pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    out.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
               spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    return out


def volume_msd_summary(rows, *, stage: str | None = None, volume_threshold_pct: float = PAPER_VOLUME_THRESHOLD_PCT,
                       msd_threshold_mm: float = PAPER_MSD_THRESHOLD_MM, typical_volume_pct: float = 5.0) -> dict:
    """Section 3.4 / Figure 6: volume error and MSD over all muscles, with the paper's numbers.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows with ``muscle``, ``dice``, ``msd_mm`` and ``volume_error_abs_pct``.
    stage : str, optional
        Select one stage first (see ``select_stage``).
    volume_threshold_pct, msd_threshold_mm : float
        A muscle is listed as "above" when its mean (over cases and sides) exceeds these
        (paper: 10 % and 4 mm).
    typical_volume_pct : float
        The paper's "most muscles have less than 5 % volume errors and less than 4 mm":
        the share of rows below ``typical_volume_pct`` and below ``msd_threshold_mm``.

    Returns
    -------
    dict
        * ``n_rows``; ``volume_error_abs_pct_mean`` / ``_median``, ``n_volume``,
          ``n_volume_nan``; ``msd_mm_mean`` / ``_median``, ``n_msd``, ``n_msd_nan`` (over
          all rows: muscles x sides x cases, finite values only);
        * ``share_volume_below_typical``, ``share_msd_below_threshold`` (of finite values);
        * ``muscles_above_volume_threshold``, ``muscles_above_msd_threshold`` (keys, Table-1
          order, by muscle mean) and their ``n_`` counts; ``n_muscles_volume_undetermined``
          and ``n_muscles_msd_undetermined`` (present, but no finite value);
          ``muscles_absent`` / ``n_muscles_absent`` (no labelled row: not scored);
        * ``dice_msd_pearson_r`` / ``_p``, ``dice_msd_spearman_rho`` / ``_p`` over rows,
          ``n_dice_msd_pairs``, ``n_dice_msd_pairs_dropped``; the same over muscle means as
          ``muscle_dice_msd_pearson_r`` and ``muscle_dice_msd_spearman_rho``;
        * the paper's values: ``paper_volume_error_abs_pct_mean`` (6.5),
          ``paper_msd_mm_mean`` (2.9), ``paper_muscles_above_volume_threshold`` (7 named),
          ``paper_n_muscles_above_volume_threshold`` and ``paper_n_muscles_above_msd_threshold``
          (7 each), and ``overlap_above_volume_threshold`` (muscles in both lists);
        * the thresholds used.

    Raises
    ------
    ValueError, TypeError
        Bad rows or stages mixed; non-finite thresholds.

    Notes
    -----
    Correlations are undefined (NaN) with fewer than three finite pairs or constant values
    (e.g. a perfect segmentation: every Dice 1, every MSD 0). A good segmentation gives a
    *negative* Dice-MSD correlation (high overlap, small distance); the paper's "strong
    positive correlation" is read as "the two metrics agree".
    """
    for name, value in (("volume_threshold_pct", volume_threshold_pct), ("msd_threshold_mm", msd_threshold_mm),
                        ("typical_volume_pct", typical_volume_pct)):
        if not np.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
    columns = ("dice", "msd_mm", "volume_error_abs_pct")
    rows = _check_rows(select_stage(rows, stage), columns)
    vol, msd, dice = (_values(rows, c) for c in ("volume_error_abs_pct", "msd_mm", "dice"))
    fin_vol, fin_msd = vol[np.isfinite(vol)], msd[np.isfinite(msd)]
    means = per_muscle(rows, columns=columns)

    def above(column: str, threshold: float) -> tuple[list[str], int]:
        values = [(e["muscle"], e[f"{column}_mean"]) for e in means]
        return [k for k, v in values if np.isfinite(v) and v > threshold], sum(not np.isfinite(v) for _, v in values)

    vol_above, vol_undetermined = above("volume_error_abs_pct", volume_threshold_pct)
    msd_above, msd_undetermined = above("msd_mm", msd_threshold_mm)
    corr = _correlation(dice, msd)
    corr_muscles = _correlation(np.array([e["dice_mean"] for e in means]), np.array([e["msd_mm_mean"] for e in means]))
    return {
        "n_rows": len(rows),
        "volume_error_abs_pct_mean": float(fin_vol.mean()) if fin_vol.size else math.nan,
        "volume_error_abs_pct_median": float(np.median(fin_vol)) if fin_vol.size else math.nan,
        "n_volume": int(fin_vol.size), "n_volume_nan": int(vol.size - fin_vol.size),
        "msd_mm_mean": float(fin_msd.mean()) if fin_msd.size else math.nan,
        "msd_mm_median": float(np.median(fin_msd)) if fin_msd.size else math.nan,
        "n_msd": int(fin_msd.size), "n_msd_nan": int(msd.size - fin_msd.size),
        "share_volume_below_typical": float(np.mean(fin_vol < typical_volume_pct)) if fin_vol.size else math.nan,
        "share_msd_below_threshold": float(np.mean(fin_msd < msd_threshold_mm)) if fin_msd.size else math.nan,
        "muscles_above_volume_threshold": vol_above, "n_muscles_above_volume_threshold": len(vol_above),
        "n_muscles_volume_undetermined": vol_undetermined,
        "muscles_above_msd_threshold": msd_above, "n_muscles_above_msd_threshold": len(msd_above),
        "n_muscles_msd_undetermined": msd_undetermined,
        "dice_msd_pearson_r": corr["pearson_r"], "dice_msd_pearson_p": corr["pearson_p"],
        "dice_msd_spearman_rho": corr["spearman_rho"], "dice_msd_spearman_p": corr["spearman_p"],
        "n_dice_msd_pairs": corr["n_pairs"], "n_dice_msd_pairs_dropped": corr["n_pairs_dropped"],
        "muscle_dice_msd_pearson_r": corr_muscles["pearson_r"],
        "muscle_dice_msd_spearman_rho": corr_muscles["spearman_rho"],
        "n_muscle_dice_msd_pairs": corr_muscles["n_pairs"],
        "paper_volume_error_abs_pct_mean": anatomy.PAPER_MEAN_VOLUME_ERROR_PCT,
        "paper_msd_mm_mean": anatomy.PAPER_MEAN_MSD_MM,
        "paper_muscles_above_volume_threshold": list(PAPER_VOLUME_ERROR_ABOVE_10PCT),
        "paper_n_muscles_above_volume_threshold": len(PAPER_VOLUME_ERROR_ABOVE_10PCT),
        "paper_n_muscles_above_msd_threshold": PAPER_N_MSD_ABOVE_4MM,
        "overlap_above_volume_threshold": [k for k in vol_above if k in PAPER_VOLUME_ERROR_ABOVE_10PCT],
        "volume_threshold_pct": float(volume_threshold_pct), "msd_threshold_mm": float(msd_threshold_mm),
        "typical_volume_pct": float(typical_volume_pct),
        "n_muscles_absent": anatomy.N_MUSCLES - len(means),
        "muscles_absent": [m.key for m in anatomy.MUSCLES if m.key not in {e["muscle"] for e in means}],
    }


# ----------------------------------------------------------------------------- stages / metrics JSON

def stage_summary(rows) -> list[dict]:
    """Mean Dice, MSD and |volume error| per stage, with NaN counts.

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows with ``stage``, ``muscle``, ``dice``, ``msd_mm``, ``volume_error_abs_pct``.

    Returns
    -------
    list of dict
        One per stage, in order of first appearance: ``stage``, ``n_rows``, ``dice_mean``,
        ``n_dice_nan``, ``msd_mm_mean``, ``n_msd_nan``, ``volume_error_abs_pct_mean``,
        ``n_volume_nan`` (means over finite values; NaN if none).
    """
    rows = _check_rows(rows, ("stage", "dice", "msd_mm", "volume_error_abs_pct"))
    out = []
    for stage in dict.fromkeys(r["stage"] for r in rows):
        sel = [r for r in rows if r["stage"] == stage]
        entry = {"stage": stage, "n_rows": len(sel)}
        for column, short in (("dice", "dice"), ("msd_mm", "msd"), ("volume_error_abs_pct", "volume")):
            mean, _, _, n_nan = _mean_sd(_values(sel, column))
            entry.update({f"{column}_mean": mean, f"n_{short}_nan": n_nan})
        out.append(entry)
    return out


def json_ready(value):
    """A copy of ``value`` (nested dicts, lists, tuples, scalars) with every non-finite float
    (NaN, inf) replaced by None and NumPy scalars made Python scalars, for strict JSON
    (``io.write_json`` would otherwise write the non-standard token ``NaN``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def evaluation_summary(rows, *, first_stage: str = "stage1", final_stage: str = "stage2") -> dict:
    """The study's headline numbers for ``metrics/evaluation.json`` (``llseg evaluate``).

    Parameters
    ----------
    rows : iterable of mapping
        Per-region rows of both stages (``stage`` column), as ``llseg evaluate`` writes them.
    first_stage, final_stage : str
        Stage names of the stage-1 labels and of the final (stage-2, postprocessed) labels.

    Returns
    -------
    dict
        JSON-ready (undefined values are None, not NaN): ``n_cases``, ``n_rows`` (labelled
        regions of the final stage), ``n_muscles`` (muscles present) and ``muscles_absent``,
        ``dice_mean_stage1``, ``dice_mean_stage2``, ``msd_mm_mean``,
        ``volume_error_abs_pct_mean`` (final stage), their NaN counts
        (``n_dice_nan_stage1`` ...), ``n_within_interobserver``,
        ``n_worse_than_interobserver``, ``n_undetermined`` (final stage, ``table1_counts``),
        the paper's ``paper_within_interobserver_stated`` (14), ``..._table`` (15),
        ``paper_volume_error_abs_pct_mean`` (6.5) and ``paper_msd_mm_mean`` (2.9).

    Raises
    ------
    ValueError
        A stage is missing from ``rows``.
    """
    by_stage = {s["stage"]: s for s in stage_summary(rows)}
    missing = [s for s in (first_stage, final_stage) if s not in by_stage]
    if missing:
        raise ValueError(f"rows hold no {missing} rows; stages present: {sorted(by_stage)}")
    first, final = by_stage[first_stage], by_stage[final_stage]
    counts = table1_counts(table1(rows, stage=final_stage))
    return json_ready({
        "n_cases": len({r.get("case") for r in rows if r["stage"] == final_stage}),
        "n_rows": final["n_rows"],
        "n_muscles": counts["n_muscles"], "muscles_absent": counts["muscles_absent"],
        "dice_mean_stage1": first["dice_mean"], "n_dice_nan_stage1": first["n_dice_nan"],
        "dice_mean_stage2": final["dice_mean"], "n_dice_nan_stage2": final["n_dice_nan"],
        "msd_mm_mean": final["msd_mm_mean"], "n_msd_nan": final["n_msd_nan"],
        "volume_error_abs_pct_mean": final["volume_error_abs_pct_mean"], "n_volume_nan": final["n_volume_nan"],
        "n_within_interobserver": counts["n_within"], "n_worse_than_interobserver": counts["n_worse"],
        "n_undetermined": counts["n_undetermined"],
        "paper_within_interobserver_stated": counts["paper_stated_within"],
        "paper_within_interobserver_table": counts["paper_table_within"],
        "paper_volume_error_abs_pct_mean": anatomy.PAPER_MEAN_VOLUME_ERROR_PCT,
        "paper_msd_mm_mean": anatomy.PAPER_MEAN_MSD_MM,
    })


# ----------------------------------------------------------------------------- Markdown

def _cell(value, digits: int) -> str:
    if value is None:
        return _NA
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if np.isfinite(value) else _NA
    return str(value).replace("|", "\\|").replace("\n", " ")


def table_markdown(rows: Sequence[Mapping], columns, *, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``rows``.

    Parameters
    ----------
    rows : sequence of mapping
        One mapping per table row.
    columns : mapping of str to str, or sequence of str
        Keys to show, in order; a mapping gives each key its header (else the key is the header).
    digits : int, optional
        Decimals of float cells.

    Returns
    -------
    str
        Header line, separator line and one line per row, ending in a newline. Cells: floats
        with ``digits`` decimals, NaN and None as "n/a", booleans as "yes"/"no", "|" escaped.

    Raises
    ------
    ValueError
        No columns, or a row lacks a column.
    """
    from tabulate import tabulate

    headers = dict(columns) if isinstance(columns, Mapping) else {str(c): str(c) for c in columns}
    if not headers:
        raise ValueError("columns must name at least one key")
    body = []
    for i, row in enumerate(rows):
        missing = [k for k in headers if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks column(s) {missing}")
        body.append([_cell(row[k], digits) for k in headers])
    return tabulate(body, headers=list(headers.values()), tablefmt="github", disable_numparse=True) + "\n"


def evaluate_predictions(preprocessed, predictions, table, metrics_json, *, progress: bool = True) -> dict:
    """Score the test predictions of both stages against the ground truth (``llseg evaluate``).

    Parameters
    ----------
    preprocessed : path
        Preprocessed study folder (``manifest.json`` with the test split, ``labels/<case>.nii.gz``).
    predictions : path
        Folder holding ``study/<case>_stage1.nii.gz`` and ``study/<case>_stage2.nii.gz``.
    table, metrics_json : path
        The per-region CSV (one row per stage, case and region) and the summary JSON to write.
    progress : bool, optional
        Show a progress bar over the cases.

    Returns
    -------
    dict
        ``evaluation_summary`` of the rows (also written to ``metrics_json``).

    Notes
    -----
    Only the regions a case's ground truth labels are scored (rows for those only): a region
    absent from the ground truth is "not labelled" there, whatever the prediction holds (a
    partial cohort; logged), while a labelled region the prediction misses scores Dice 0.
    Empty predictions give NaN surface distances (``llseg.metrics``); they are counted and
    logged once per case and stage instead of warned once per region.
    """
    import warnings

    from tqdm.auto import tqdm

    root, predictions = Path(preprocessed), Path(predictions)
    cases = io.read_json(root / "manifest.json")["split"]["test"]
    rows = []
    for case in tqdm(cases, desc="evaluate test cases", unit="case", disable=not progress):
        truth = io.load_labels(root / "labels" / f"{case}.nii.gz")
        counts = np.bincount(truth.data.ravel(), minlength=anatomy.N_REGIONS + 1)
        labelled = [int(k) for k in np.flatnonzero(counts[1:]) + 1]            # the regions its ground truth labels
        if len(labelled) < anatomy.N_REGIONS:
            log.info("%s: %d of %d regions labelled in the ground truth; the other %d are not scored", case,
                     len(labelled), anatomy.N_REGIONS, anatomy.N_REGIONS - len(labelled))
        for stage in ("stage1", "stage2"):
            pred = io.load_labels(predictions / "study" / f"{case}_{stage}.nii.gz", reference=truth)
            extra = sorted(set(np.unique(pred.data).tolist()) - set(labelled) - {0})
            if extra:
                log.info("%s %s: %d predicted region(s) not labelled in the ground truth, not scored: %s", case,
                         stage, len(extra), ", ".join(anatomy.region_name(k) for k in extra[:5])
                         + (" ..." if len(extra) > 5 else ""))
            with warnings.catch_warnings(record=True) as caught:  # one summary line instead of one per region
                warnings.simplefilter("always", metrics.EmptyMaskWarning)
                found = metrics.evaluate_regions(pred.data, truth.data, truth.spacing_mm, labels=labelled, case=case)
            for w in caught:
                log.debug("%s", w.message)
            if caught:
                log.info("%s %s: %d region(s) missed (empty prediction: Dice 0, NaN distances)", case, stage,
                         len(caught))
            rows += [{"stage": stage, **row} for row in found]
    summary = evaluation_summary(rows)
    io.write_csv(table, rows)
    io.write_json(metrics_json, summary)
    return summary
