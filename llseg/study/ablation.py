"""Architecture ablation of the stage-2 network (paper section 3.3, Figure 5).

The paper compares, on one small muscle (adductor brevis), the mean test Dice of the stage-2
network as a function of the training iteration for

* (a) the number of resolution levels of the plain U-Net,
* (b) the number of filters at the root level,
* (c) plain vs residual vs dense blocks at matched depth and width,
* (d) U-Net vs FCN-8s vs SegNet, all with five resolution levels.

Here a *variant* is one network: ``{"arch", "levels", "root_filters", "block", "panel"}``
(``panel``: the Figure-5 panels it is drawn in, e.g. ``("a", "b", "c")`` for the baseline
shared by the first three panels). Every variant trains on the same crops: one input size for
all (a multiple of the deepest variant's divisor), the same seed (so the same sequence of
training samples and augmentations) and the same test cases, so the curves differ only in the
network. Training reuses stage 2's sampler and validator and ``train.fit`` unchanged.

Functions: :func:`variant_table` (validation), :func:`input_size` (the shared input size),
:func:`train_variant`, :func:`read_curves` (dvclive TSV files -> tidy rows), :func:`read_runs`
(the JSON training records), :func:`summarize` (per-variant final / best Dice, parameters,
seconds), :func:`panel_summary` (per-panel ranking next to the paper's finding),
:func:`ablation_metrics` (the ``metrics/ablation.json`` document), :func:`summary_markdown` and
:func:`ablation_figure` (Figure 5).

References
----------
X. Ni et al., J. Med. Imag. 6(4), 044009 (2019), sections 2.2.2 and 3.3, Figs. 2 and 5.
"""
from __future__ import annotations

import csv
import logging
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import anatomy, models, stage2, train

__all__ = [
    "PANELS",
    "PANEL_TITLES",
    "PAPER_FINDINGS",
    "variant_table",
    "input_size",
    "train_variant",
    "train_variant_record",
    "read_curves",
    "read_runs",
    "summarize",
    "panel_summary",
    "ablation_metrics",
    "summary_markdown",
    "ablation_figure",
]

logger = logging.getLogger(__name__)

#: Panels of the paper's Figure 5 and what each compares.
PANELS = ("a", "b", "c", "d")
PANEL_TITLES = {"a": "resolution levels", "b": "root filters", "c": "convolution block",
                "d": "architecture (five levels)"}

#: What the paper reports for each panel (section 3.3), shown next to this run's ranking.
PAPER_FINDINGS = {
    "a": "more resolution levels tend to be better; very small difference between three and four",
    "b": "more root filters give higher Dice",
    "c": "residual slightly above plain (small difference in the end); dense the worst; all within 0.01",
    "d": "U-Net and SegNet comparable, slightly better than FCN-8s, especially early",
}

_KEYS = ("arch", "levels", "root_filters", "block", "panel")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")          # variant names become file names


# --------------------------------------------------------------------------- variants


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _panels(value, what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        items = [str(p) for p in items]
    except TypeError:
        raise ValueError(f"{what} must be a panel letter or a list of them ({', '.join(PANELS)}), "
                         f"got {value!r}") from None
    bad = [p for p in items if p not in PANELS]
    if not items or bad:
        raise ValueError(f"{what} must name panels among {PANELS}, got {value!r}")
    return tuple(sorted(set(items)))


def variant_table(variants: Mapping, *, divisor: int | None = None) -> dict[str, dict]:
    """Check and normalise the table of ablation variants.

    Parameters
    ----------
    variants : mapping of str to mapping
        ``name -> {"arch", "levels", "root_filters", "block", "panel"}``: ``arch`` one of
        ``llseg.models.ARCHS``, ``block`` one of ``llseg.models.BLOCKS`` ("plain" unless
        ``arch == "unet"``), ``levels`` and ``root_filters`` positive ints (``levels >= 3``
        for FCN-8s), ``panel`` a letter of :data:`PANELS`, a list of them or a
        comma-separated string ("a,b,c"). Names are used as file names (letters, digits,
        ``_ . -``, not starting with a dot).
    divisor : int, optional
        The shared input-size divisor; if given, every variant's ``2 ** (levels - 1)`` must
        divide it (all variants then accept the same input).

    Returns
    -------
    dict of str to dict
        Same order; values with ``levels`` and ``root_filters`` as int and ``panel`` a
        sorted tuple of letters.

    Raises
    ------
    ValueError
        An empty table, a bad name, missing or unknown keys, an unknown ``arch`` or ``block``
        (the message names the variant and the value), a non-plain block outside the U-Net,
        too few levels, an empty or unknown panel, or a divisor the variant does not fit.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError(f"variants must be a non-empty mapping name -> settings, got {variants!r}")
    if divisor is not None:
        divisor = _positive_int(divisor, "divisor")
    out = {}
    for name, spec in variants.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"variant name {name!r}: use letters, digits, '_', '.' or '-' (it names files)")
        if not isinstance(spec, Mapping):
            raise ValueError(f"variant {name!r}: expected a mapping of {_KEYS}, got {spec!r}")
        missing, unknown = set(_KEYS) - set(spec), set(spec) - set(_KEYS)
        if missing or unknown:
            raise ValueError(f"variant {name!r}: missing key(s) {sorted(missing)}, unknown key(s) {sorted(unknown)}; "
                             f"expected exactly {list(_KEYS)}")
        arch, block = spec["arch"], spec["block"]
        if arch not in models.ARCHS:
            raise ValueError(f"variant {name!r}: unknown arch {arch!r}; choose one of {models.ARCHS}")
        if block not in models.BLOCKS:
            raise ValueError(f"variant {name!r}: unknown block {block!r}; choose one of {models.BLOCKS}")
        if arch != "unet" and block != "plain":
            raise ValueError(f"variant {name!r}: block {block!r} needs arch 'unet' ({arch} uses plain blocks)")
        levels = _positive_int(spec["levels"], f"variant {name!r}: levels")
        if arch == "fcn8s" and levels < 3:
            raise ValueError(f"variant {name!r}: fcn8s fuses three scales and needs levels >= 3, got {levels}")
        root = _positive_int(spec["root_filters"], f"variant {name!r}: root_filters")
        if divisor is not None and divisor % 2 ** (levels - 1):
            raise ValueError(f"variant {name!r}: {levels} levels need input sizes divisible by {2 ** (levels - 1)}, "
                             f"which does not divide the shared divisor {divisor}")
        out[name] = {"arch": arch, "levels": levels, "root_filters": root, "block": block,
                     "panel": _panels(spec["panel"], f"variant {name!r}: panel")}
    return out


def input_size(label_maps: Sequence, muscle_key: str, *, max_voxels: int, divisor: int,
               ratio_range=(1.0, 1.8)) -> tuple[int, int, int]:
    """The input size shared by all variants: stage 2's rule with the ablation's divisor.

    Parameters
    ----------
    label_maps : sequence of (X, Y, Z) ndarray of int
        Training label maps (study grid, RAS+).
    muscle_key : str
        Muscle key or Table-1 name.
    max_voxels : int
        Voxel budget of one crop.
    divisor : int
        Multiple every axis must have, e.g. ``2 ** (5 - 1) = 16`` when the deepest variant
        has five levels.
    ratio_range : (float, float), optional
        Training enlargement range; its mean scales the average box.

    Returns
    -------
    tuple of 3 int
        ``(X, Y, Z)``, see ``llseg.stage2.input_size_for``.

    Raises
    ------
    ValueError
        The muscle is absent from every label map, or a bad budget / divisor.
    """
    sizes = stage2.muscle_box_sizes(label_maps, muscle_key)
    if len(sizes) == 0:
        raise ValueError(f"muscle {anatomy.muscle(muscle_key).key!r} is absent from all {len(label_maps)} label maps")
    lo, hi = (float(r) for r in ratio_range)
    return stage2.input_size_for(sizes, max_voxels=int(max_voxels), divisor=int(divisor), mean_ratio=(lo + hi) / 2)


# --------------------------------------------------------------------------- training


def train_variant(images: Sequence, label_maps: Sequence, muscle_key: str, variant: Mapping, *,
                  test_images: Sequence, test_labels: Sequence, size, iterations: int, learning_rate: float,
                  seed: int, validate_every: int, ratio_range=(1.0, 1.8), augment_kwargs: Mapping | None = None,
                  class_weight_power: float = 0.0, loss: str = "ce", lr_schedule: str = "constant",
                  live=None, progress: bool = False):
    """Train one variant's network on one muscle, as stage 2 trains it.

    Parameters
    ----------
    images, label_maps : sequence of (X, Y, Z) ndarray
        Training images (float, z-scored) and label maps (``llseg.anatomy`` ids), RAS+.
    muscle_key : str
        Muscle key or Table-1 name (the paper: adductor brevis).
    variant : mapping
        One entry of :func:`variant_table` (``arch``, ``levels``, ``root_filters``, ``block``).
    test_images, test_labels : sequence of (X, Y, Z) ndarray
        Held-out cases; the validation Dice is the mean over every (case, side) holding the
        muscle, on its ground-truth box enlarged 1.4x (``stage2.make_validator``).
    size : tuple of 3 int
        Network input ``(X, Y, Z)`` (:func:`input_size`); divisible by ``2 ** (levels - 1)``.
    iterations, learning_rate, seed, validate_every
        As in ``llseg.train.fit`` (batch size 1, Adam). ``seed`` also seeds the weights, so
        variants trained with one seed see the same training samples.
    ratio_range : (float, float), optional
        Enlargement range of the training crops (``stage2.make_sampler``).
    augment_kwargs : mapping, optional
        Keyword arguments of ``llseg.augment.augment``.
    class_weight_power : float, optional
        Class weighting of the loss (``llseg.train.fit``; 0 = the paper's plain
        cross-entropy).
    loss, lr_schedule : str, optional
        As in ``llseg.train.fit`` (paper: "ce", "constant").
    live : dvclive.Live, optional
        Receives ``train/loss`` and ``val/dice`` per iteration (``train.fit``).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    model : keras.Model
        The trained network, input ``(N, X, Y, Z, 1)``, output ``(N, X, Y, Z, 2)`` softmax.
    history : dict
        ``train.fit``'s ``{"loss", "val_dice", "seconds"}`` plus ``"n_params"`` (the
        model's parameter count, BatchNorm statistics included).

    Raises
    ------
    ValueError
        A bad variant, a size the network cannot take, or any error of the sampler/fit.
    """
    import keras

    spec = variant_table({"variant": dict(variant)})["variant"]
    size = tuple(int(s) for s in size)
    sampler = stage2.make_sampler(images, label_maps, muscle_key, size=size, ratio_range=ratio_range,
                                  augment_kwargs=augment_kwargs)
    validate = stage2.make_validator(test_images, test_labels, muscle_key, size=size)
    logger.info("ablation variant %s on %s, input %s", spec, muscle_key, size)
    keras.utils.set_random_seed(int(seed))                            # the same initial draw for every run
    model = models.build_model(spec["arch"], (*size, 1), 2, levels=spec["levels"],
                               root_filters=spec["root_filters"], block=spec["block"])
    history = train.fit(model, sampler, iterations=int(iterations), learning_rate=float(learning_rate),
                        seed=int(seed), validate=validate, validate_every=int(validate_every), live=live,
                        progress=progress, class_weight_power=float(class_weight_power), loss=loss,
                        lr_schedule=lr_schedule)
    history["n_params"] = int(model.count_params())
    return model, history


def train_variant_record(preprocessed, out, *, variant: str, variants: Mapping, muscle: str, divisor: int,
                         max_voxels: int, iterations: int, learning_rate: float, seed: int, validate_every: int,
                         ratio_range=(1.0, 1.8), augment_kwargs: Mapping | None = None,
                         class_weight_power: float = 0.0, loss: str = "ce", lr_schedule: str = "constant",
                         live_dir=None, progress: bool = False) -> dict:
    """Train one variant on the preprocessed study and write its training record (``llseg train-variant``).

    Parameters
    ----------
    preprocessed : path
        Preprocessed study folder (train split for training, test split for the curves).
    out : path
        The ``.json`` training record; the ablation keeps no model file.
    variant : str
        A name of ``variants``.
    variants : mapping
        params.yaml ``ablation.variants`` (checked by :func:`variant_table`).
    muscle : str
        Muscle key or Table-1 name trained on.
    divisor, max_voxels : int
        Input-size rule of :func:`input_size`.
    live_dir : path, optional
        dvclive folder of this variant's curves (None: no curves).
    iterations, learning_rate, seed, validate_every, ratio_range, augment_kwargs, class_weight_power, loss, lr_schedule, progress
        As in :func:`train_variant`.

    Returns
    -------
    dict
        The record written: the variant's fields, ``input_size``, the training settings,
        ``n_params``, ``seconds``, ``final_loss`` and ``val_dice``.

    Raises
    ------
    ValueError
        An unknown variant name, or ``out`` is not a ``.json`` file.
    """
    from .. import pipeline

    table = variant_table(variants, divisor=int(divisor))
    if variant not in table:
        raise ValueError(f"no variant {variant!r} in ablation.variants (has {', '.join(table)})")
    out = Path(out)
    if out.suffix != ".json":
        raise ValueError(f"{out}: the training record must be a .json file")
    spec, key = table[variant], anatomy.muscle(muscle).key
    _, _, images, labels = pipeline.load_split(preprocessed, "train")
    _, _, test_images, test_labels = pipeline.load_split(preprocessed, "test")
    ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
    size = input_size(labels, key, max_voxels=int(max_voxels), divisor=int(divisor), ratio_range=ratio_range)
    with pipeline.live_logger(live_dir) as live:
        _, history = train_variant(
            images, labels, key, spec, test_images=test_images, test_labels=test_labels, size=size,
            iterations=int(iterations), learning_rate=float(learning_rate), seed=int(seed),
            validate_every=int(validate_every), ratio_range=ratio_range, augment_kwargs=augment_kwargs,
            class_weight_power=float(class_weight_power), loss=loss, lr_schedule=lr_schedule, live=live,
            progress=progress)
    settings = {"variant": variant, "muscle": key, **spec, "panel": list(spec["panel"]), "input_size": list(size),
                "iterations": int(iterations), "learning_rate": float(learning_rate), "seed": int(seed),
                "class_weight_power": float(class_weight_power), "ratio_range": list(ratio_range)}
    pipeline.write_training_record(out, settings, history, keep=("n_params",))
    return {**settings, "n_params": history["n_params"], "seconds": history["seconds"],
            "final_loss": float(np.mean(history["loss"][-10:])), "val_dice": history["val_dice"]}


# --------------------------------------------------------------------------- curves and summary


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


def ablation_metrics(summary: Sequence[Mapping], *, muscle: str, iterations: int) -> dict:
    """The ``metrics/ablation.json`` document (read by the claims report).

    Parameters
    ----------
    summary : sequence of mapping
        Rows of :func:`summarize`.
    muscle : str
        Muscle key the variants were trained on.
    iterations : int
        Training iterations per variant.

    Returns
    -------
    dict
        ``{"variants": {name: {"panel", "arch", "levels", "root_filters", "block",
        "final_dice", "best_dice", "early_dice", "n_params", "seconds"}}, "muscle", "iterations"}``;
        ``panel`` is the list of panel letters the variant is drawn in (``["a", "b", "c"]``
        for the baseline, ``["d"]`` for a panel-d network); undefined Dice values are None
        (strict JSON).
    """
    keys = ("panel", "arch", "levels", "root_filters", "block", "final_dice", "best_dice", "early_dice", "n_params",
            "seconds")
    variants = {}
    for row in summary:
        entry = {k: row[k] for k in keys}
        entry["panel"] = list(_panels(row["panel"], f"summary row {row['variant']!r}: panel"))
        for k in ("final_dice", "best_dice", "early_dice"):
            entry[k] = _json_float(row[k])
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
