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
:func:`train_variant` and :func:`train_variant_record`. Reading the trained variants back
(curves, summary, ``metrics/ablation.json``, Figure 5) is ``llseg.study.ablation_results``.

References
----------
X. Ni et al., J. Med. Imag. 6(4), 044009 (2019), sections 2.2.2 and 3.3, Figs. 2 and 5.
"""
from __future__ import annotations

import logging
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
        model's parameter count, BatchNorm statistics included) and ``"final_crop_dice"``
        (the trained network's Dice per held-out crop: ``{"case": index into test_images,
        "side", "dice"}``, the units a paired comparison of variants resamples).

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
    crops = stage2.validation_crops(test_images, test_labels, muscle_key)
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
    history["final_crop_dice"] = [{"case": i, "side": side, "dice": float(d)} for (i, side, *_), d
                                  in zip(crops, stage2.crop_dice(model, crops, size=size))]
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
        ``n_params``, ``seconds``, ``final_loss``, ``val_dice`` and ``final_crop_dice`` (per
        held-out crop, named by test case and side).

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
    _, test_cases, test_images, test_labels = pipeline.load_split(preprocessed, "test")
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
    history["final_crop_dice"] = [{**c, "case": test_cases[c["case"]]} for c in history["final_crop_dice"]]
    pipeline.write_training_record(out, settings, history, keep=("n_params", "final_crop_dice"))
    return {**settings, "n_params": history["n_params"], "seconds": history["seconds"],
            "final_loss": float(np.mean(history["loss"][-10:])), "val_dice": history["val_dice"],
            "final_crop_dice": history["final_crop_dice"]}
