"""Results of the architecture ablation (paper section 3.3, Figure 5): the trained variants'
curves and records read back, summarised per variant and per panel, the ``metrics/ablation.json``
document and Figure 5.

Functions: :func:`read_curves` (dvclive TSV files -> tidy rows), :func:`read_runs` (the JSON
training records), :func:`summarize` (per-variant final / best Dice, parameters, seconds),
:func:`panel_summary` (per-panel ranking next to the paper's finding), :func:`ablation_metrics`,
:func:`summary_markdown` and :func:`ablation_figure`. The variants themselves and their training
are ``llseg.study.ablation``.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import anatomy
from .ablation import PANEL_TITLES, PANELS, PAPER_FINDINGS, _panels, _positive_int, variant_table

__all__ = ["read_curves", "read_runs", "summarize", "panel_summary", "ablation_metrics", "summary_markdown",
           "ablation_figure"]


def _read_tsv(path: Path, variant: str) -> list[tuple[int, float]]:
    """``step<TAB>dice`` rows of one dvclive plot file (dvclive writes TSV but has no reader)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no validation curve for variant {variant!r} (train it first: "
                                f"llseg train-variant --variant {variant})")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or not {"step", "dice"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected tab-separated columns 'step' and 'dice', got {reader.fieldnames}")
        try:
            return [(int(row["step"]), float(row["dice"])) for row in reader]
        except (TypeError, ValueError):
            raise ValueError(f"{path}: non-numeric step or dice value") from None


def read_curves(live_dir, variants: Mapping) -> list[dict]:
    """Collect the validation-Dice curves of all variants into one tidy table.

    Parameters
    ----------
    live_dir : str or Path
        dvclive root of the ablation: ``<live_dir>/<variant>/plots/metrics/val/dice.tsv``
        (written by ``llseg train-variant --live <live_dir>``).
    variants : mapping
        The variant table (:func:`variant_table` is applied).

    Returns
    -------
    list of dict
        ``{"variant", "panel", "step", "dice"}`` rows, one per validation and per panel the
        variant appears in (the baseline's curve is listed under a, b and c), in table
        order, then panel, then step.

    Raises
    ------
    FileNotFoundError
        A variant has no curve file.
    ValueError
        A malformed file or variant table.
    """
    table = variant_table(variants)
    rows = []
    for name, spec in table.items():
        points = sorted(_read_tsv(Path(live_dir) / name / "plots" / "metrics" / "val" / "dice.tsv", name))
        for panel in spec["panel"]:
            rows += [{"variant": name, "panel": panel, "step": step, "dice": dice} for step, dice in points]
    return rows


def read_runs(runs_dir, variants: Mapping) -> dict[str, dict]:
    """The training records ``<runs_dir>/<variant>.json`` of ``llseg train-variant``.

    Raises
    ------
    FileNotFoundError
        A variant of the table has no record (the message names it).
    """
    from .. import io

    out = {}
    for name in variant_table(variants):
        path = Path(runs_dir) / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no training record for variant {name!r} (train it first: "
                                    f"llseg train-variant --variant {name})")
        out[name] = io.read_json(path)
    return out


def _final(values: list[float], n_last: int) -> float:
    return float(np.mean(values[-n_last:])) if values else float("nan")


def summarize(curves: Sequence[Mapping], variants: Mapping, runs: Mapping[str, Mapping], *,
              n_last: int = 2, settings: Mapping | None = None) -> list[dict]:
    """One summary row per variant: final and best Dice, parameter count, training time.

    Parameters
    ----------
    curves : sequence of mapping
        Rows of :func:`read_curves`.
    variants : mapping
        The variant table.
    runs : mapping of str to mapping
        Per variant, its training record (the JSON sidecar of ``llseg train-variant``)
        with at least ``"n_params"`` and ``"seconds"``; if it also holds the variant
        settings (``arch``, ``levels``, ...) they must match the table.
    n_last : int, optional
        Validations averaged for the final Dice.
    settings : mapping, optional
        Further record fields every run must match, e.g. ``{"muscle": "adductor_brevis",
        "iterations": 300}`` (a field absent from a record is not checked).

    Returns
    -------
    list of dict
        ``{"variant", "panel", "arch", "levels", "root_filters", "block", "final_dice",
        "best_dice", "early_dice", "n_validations", "last_step", "n_params", "seconds"}``,
        table order; ``early_dice`` is the mean of the validations in the first quarter of
        the curve (steps <= last step / 4, at least the first one: the paper's "early epochs");
        ``panel`` the panel letters joined by commas ("d", or "a,b,c" for the baseline).
        ``final_dice`` is the mean of the last ``n_last`` validations (fewer if fewer exist),
        ``best_dice`` the maximum; both NaN when a variant has no finite validation.

    Raises
    ------
    ValueError
        A variant without a run record, a record lacking ``n_params`` / ``seconds``, or a
        record whose settings differ from the table (a stale run).
    """
    table = variant_table(variants)
    n_last = _positive_int(n_last, "n_last")
    out = []
    for name, spec in table.items():
        if name not in runs:
            raise ValueError(f"variant {name!r} has no training record "
                             f"(train it: llseg train-variant --variant {name})")
        run = runs[name]
        lacking = [k for k in ("n_params", "seconds") if k not in run]
        if lacking:
            raise ValueError(f"variant {name!r}: training record lacks {lacking}")
        expected = {**{k: spec[k] for k in ("arch", "levels", "root_filters", "block")}, **dict(settings or {})}
        stale = {k: (run[k], v) for k, v in expected.items() if k in run and run[k] != v}
        if stale:
            raise ValueError(f"variant {name!r}: its training record was made with other settings "
                             f"(record, table) = {stale}; retrain it")
        points = {}                                       # step -> dice (one panel's copy suffices)
        for row in curves:
            if row["variant"] == name:
                points[int(row["step"])] = float(row["dice"])
        steps = sorted(points)
        finite = [points[s] for s in steps if math.isfinite(points[s])]
        early = [points[s] for s in steps if (s <= steps[-1] / 4 or s == steps[0]) and math.isfinite(points[s])]
        out.append({"variant": name, "panel": ",".join(spec["panel"]), "arch": spec["arch"], "levels": spec["levels"],
                    "root_filters": spec["root_filters"], "block": spec["block"],
                    "final_dice": _final(finite, n_last), "best_dice": max(finite) if finite else float("nan"),
                    "early_dice": float(np.mean(early)) if early else float("nan"),
                    "n_validations": len(steps), "last_step": steps[-1] if steps else 0,
                    "n_params": int(run["n_params"]), "seconds": float(run["seconds"])})
    return out


def panel_summary(summary: Sequence[Mapping]) -> list[dict]:
    """Per Figure-5 panel: its variants ranked by final Dice, next to the paper's finding.

    Parameters
    ----------
    summary : sequence of mapping
        Rows of :func:`summarize`.

    Returns
    -------
    list of dict
        One row per panel with variants: ``{"panel", "compares", "ranking" (text, best
        first, undefined Dice last), "spread" (max - min finite final Dice, NaN if fewer
        than two), "paper"}``.
    """
    out = []
    for panel in PANELS:
        rows = [r for r in summary if panel in r["panel"].split(",")]
        if not rows:
            continue
        finite = [r for r in rows if math.isfinite(r["final_dice"])]
        ranked = sorted(finite, key=lambda r: -r["final_dice"]) + [r for r in rows if r not in finite]
        values = [r["final_dice"] for r in finite]
        out.append({"panel": panel, "compares": PANEL_TITLES[panel],
                    "ranking": " > ".join(f"{r['variant']} {r['final_dice']:.3f}" for r in ranked),
                    "spread": max(values) - min(values) if len(values) > 1 else float("nan"),
                    "paper": PAPER_FINDINGS[panel]})
    return out


def _json_float(value: float):
    return float(value) if math.isfinite(value) else None


def _crop_dice(record: Mapping, name: str) -> list[dict] | None:
    """A training record's ``final_crop_dice`` checked and in strict JSON (NaN Dice -> None); None
    when the record has none (a run older than the per-crop Dice)."""
    crops = record.get("final_crop_dice")
    if crops is None:
        return None
    if not isinstance(crops, Sequence) or isinstance(crops, str):
        raise ValueError(f"variant {name!r}: final_crop_dice must be a list of {{case, side, dice}}, got {crops!r}")
    out = []
    for i, c in enumerate(crops):
        if not isinstance(c, Mapping) or c.get("side") not in ("right", "left") or "case" not in c or "dice" not in c:
            raise ValueError(f"variant {name!r}: final_crop_dice[{i}] must be {{case, side: right|left, dice}}, "
                             f"got {c!r}")
        out.append({"case": str(c["case"]), "side": c["side"],
                    "dice": None if c["dice"] is None else _json_float(float(c["dice"]))})
    return out


def ablation_metrics(summary: Sequence[Mapping], *, muscle: str, iterations: int,
                     runs: Mapping[str, Mapping] | None = None) -> dict:
    """The ``metrics/ablation.json`` document (read by the claims report).

    Parameters
    ----------
    summary : sequence of mapping
        Rows of :func:`summarize`.
    muscle : str
        Muscle key the variants were trained on.
    iterations : int
        Training iterations per variant.
    runs : mapping of str to mapping, optional
        The training records (:func:`read_runs`); their ``final_crop_dice`` is carried over.

    Returns
    -------
    dict
        ``{"variants": {name: {"panel", "arch", "levels", "root_filters", "block",
        "final_dice", "best_dice", "early_dice", "n_params", "seconds"[, "final_crop_dice"]}},
        "muscle", "iterations"}``; ``panel`` is the list of panel letters the variant is drawn in
        (``["a", "b", "c"]`` for the baseline, ``["d"]`` for a panel-d network); undefined Dice
        values are None (strict JSON). ``final_crop_dice`` (only when ``runs`` are given and the
        variant's record has it): ``[{"case", "side", "dice"}]``, the trained network's Dice on
        each held-out crop (test case, side) at the end of training, the units the claims
        report resamples; its mean is the last validation point, while ``final_dice`` averages
        the last two.

    Raises
    ------
    ValueError
        A malformed ``final_crop_dice``.
    """
    keys = ("panel", "arch", "levels", "root_filters", "block", "final_dice", "best_dice", "early_dice", "n_params",
            "seconds")
    variants = {}
    for row in summary:
        entry = {k: row[k] for k in keys}
        entry["panel"] = list(_panels(row["panel"], f"summary row {row['variant']!r}: panel"))
        for k in ("final_dice", "best_dice", "early_dice"):
            entry[k] = _json_float(row[k])
        crops = _crop_dice((runs or {}).get(row["variant"]) or {}, row["variant"])
        if crops is not None:
            entry["final_crop_dice"] = crops
        variants[row["variant"]] = entry
    return {"variants": variants, "muscle": anatomy.muscle(muscle).key,
            "iterations": _positive_int(iterations, "iterations")}


def summary_markdown(summary: Sequence[Mapping], *, digits: int = 3) -> str:
    """The summary as a Markdown table (variant, panels, network, Dice, parameters, seconds)."""
    from .evaluation import table_markdown

    rows = [{**row, "n_params": f"{row['n_params']:,}",
             "seconds": f"{row['seconds']:.0f}"} for row in summary]
    columns = {"variant": "Variant", "panel": "Panel(s)", "arch": "Architecture", "levels": "Levels",
               "root_filters": "Root filters", "block": "Block", "final_dice": "Final Dice",
               "best_dice": "Best Dice", "n_params": "Parameters", "seconds": "Seconds"}
    return table_markdown(rows, columns, digits=digits)


# --------------------------------------------------------------------------- figure


def _label(row: Mapping) -> str:
    n = row["n_params"]
    count = f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"
    block = f", {row['block']}" if row["arch"] == "unet" else ""
    return f"{row['variant']}: {row['arch']} L{row['levels']} F{row['root_filters']}{block} ({count} params)"


def ablation_figure(curves: Sequence[Mapping], summary: Sequence[Mapping], *, title: str = ""):
    """Figure 5: mean test Dice vs training iteration, one panel per comparison.

    Parameters
    ----------
    curves : sequence of mapping
        Rows of :func:`read_curves` (``variant, panel, step, dice``).
    summary : sequence of mapping
        Rows of :func:`summarize` (legend labels with parameter counts).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        2 x 2 panels (a)-(d); one line (with markers at the validations) per variant, the
        same colour for a variant in every panel; a panel without variants says so.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    palette = sns.color_palette("tab10", max(10, len(summary)))
    colours = {row["variant"]: palette[i] for i, row in enumerate(summary)}
    by_name = {row["variant"]: row for row in summary}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, sharey=True)
    for ax, panel in zip(axes.ravel(), PANELS):
        names = [row["variant"] for row in summary if panel in row["panel"].split(",")]
        for name in names:
            pts = sorted((r["step"], r["dice"]) for r in curves if r["variant"] == name and r["panel"] == panel)
            if pts:
                steps, dice = zip(*pts)
                ax.plot(steps, dice, marker="o", ms=3, lw=1.5, color=colours[name], label=_label(by_name[name]))
        ax.set_title(f"({panel}) {PANEL_TITLES[panel]}", loc="left")
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no variant in this panel", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[1]:
        ax.set_xlabel("training iteration")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean test Dice")
    axes[0, 0].set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
