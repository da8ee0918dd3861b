"""Stage 1: localise every muscle on low-resolution body parts (paper section 2.2.1).

The whole-leg volume on the study grid (``(X, Y, Z)`` in RAS+, Z = 0 at the ankle, the top
slice at T12) is split into three overlapping parts (:func:`split_parts`), each part is
downsampled with linear interpolation (:func:`downsample`) and one 3-D U-Net per stage-1 group
(``llseg.anatomy.GROUPS``, about four muscles on both legs = 2k regions + background) segments
it (:func:`make_sampler` + ``llseg.train.fit``; :func:`predict_group`). The largest connected
component of each region gives a box at low resolution, mapped back to the study grid
(:func:`boxes_from_prediction`). Regions with no predicted voxel get boxes from their
neighbours (``llseg.box_priors``); ``llseg.cascade.run_stage1`` runs the whole stage on one image.

Network tensors are channels-last ``(N, X, Y, Z, C)``; boxes are ``(3, 2)`` int arrays of
half-open ``[lo, hi)`` voxel indices (``llseg.boxes``).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import cc3d
import numpy as np
from scipy import ndimage as ndi

from . import _validate, anatomy, augment, train
from . import boxes as bx

__all__ = [
    "DEFAULT_PART_RANGES",
    "split_parts",
    "downsample",
    "group_regions",
    "group_classes",
    "class_labels",
    "class_mirror",
    "make_sampler",
    "make_validator",
    "train_group",
    "predict_group",
    "boxes_from_prediction",
]

logger = logging.getLogger(__name__)

#: Part -> (top, bottom) as fractions of the T12 (0.0) to ankle (1.0) span, measured from the
#: top of the volume like ``Muscle.si_extent``. Every muscle's extent lies inside its part with
#: at least 0.08 of the span (~9 slices of a 110-slice study grid) to spare, except where a
#: part reaches the end of the volume (psoas starts at T12, the calf parts end at the ankle);
#: consecutive parts overlap by 0.34 and 0.23 of the span (paper: "significant overlap").
DEFAULT_PART_RANGES: dict[str, tuple[float, float]] = {
    "abdomen": (0.0, 0.38),
    "upper_leg": (0.04, 0.70),
    "lower_leg": (0.47, 1.0),
}

_CONNECTIVITY = 26


# --------------------------------------------------------------------------- helpers


def _factor(factor) -> tuple[float, float, float]:
    """A downsampling factor as one float >= 1 per axis."""
    arr = np.asarray(factor, dtype=float)
    if arr.ndim == 0:
        arr = np.full(3, float(arr))
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr < 1):
        raise ValueError(f"factor must be a number or 3 numbers (X, Y, Z), each finite and >= 1, got {factor!r}")
    return tuple(float(f) for f in arr)


def _low_shape(shape, factor) -> tuple[int, int, int]:
    """Shape after :func:`downsample`: ``round(n / f)`` per axis (as ``scipy.ndimage.zoom``)."""
    out = tuple(int(round(n / f)) for n, f in zip(shape, _factor(factor)))
    if min(out) < 1:
        raise ValueError(f"downsampling shape {tuple(shape)} by factor {factor!r} leaves an empty axis {out}")
    return out


def _check_group(group: int) -> int:
    if group not in anatomy.GROUPS:
        raise ValueError(f"group must be one of {sorted(anatomy.GROUPS)}, got {group!r}")
    return group


def _part_of_group(group: int) -> str:
    return anatomy.GROUPS[_check_group(group)][1]


def _part_slice(n_slices: int, group: int, part_ranges) -> slice:
    """Z slice of the group's body part."""
    part = _part_of_group(group)
    if part not in part_ranges:
        raise ValueError(f"part_ranges has no entry for {part!r} (group {group}); got {sorted(part_ranges)}")
    return split_parts(n_slices, part_ranges={part: part_ranges[part]})[part]


def _slice_len(sl: slice) -> int:
    if not isinstance(sl, slice) or sl.start is None or sl.stop is None or sl.step not in (None, 1):
        raise ValueError(f"part_slice must be a slice with explicit start and stop and step 1, got {sl!r}")
    if not 0 <= sl.start < sl.stop:
        raise ValueError(f"part_slice must satisfy 0 <= start < stop, got {sl!r}")
    return sl.stop - sl.start


# --------------------------------------------------------------------------- parts and grids


def split_parts(n_slices: int, *, part_ranges: Mapping[str, tuple[float, float]] = DEFAULT_PART_RANGES
                ) -> dict[str, slice]:
    """Z slices of the abdomen / upper-leg / lower-leg parts of a whole-leg volume.

    Parameters
    ----------
    n_slices : int
        Number of slices (Z size) of the study-grid volume; slice 0 is at the ankle, slice
        ``n_slices - 1`` at T12.
    part_ranges : mapping of str to (float, float), optional
        Part (a subset of ``anatomy.BODY_PARTS``) -> ``(top, bottom)`` fractions of the
        T12 (0.0) to ankle (1.0) span, ``0 <= top < bottom <= 1``.

    Returns
    -------
    dict of str to slice
        Part -> ``slice(start, stop)`` along Z (axis 2). Slice ``k`` covers the fractions
        ``[(n - 1 - k) / n, (n - k) / n]`` from the top; the part is every slice that
        touches its range: ``start = floor(n (1 - bottom))``, ``stop = ceil(n (1 - top))``,
        at least one slice.

    Raises
    ------
    ValueError
        Non-positive ``n_slices``, an unknown part or a range outside ``[0, 1]``.

    Notes
    -----
    Paper section 2.2.1: "the whole leg images were split into three parts ... based on the
    superior-inferior coordinates and the estimated ratios of the lengths of the three
    parts ... with significant overlap".
    """
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)) or n_slices < 1:
        raise ValueError(f"n_slices must be a positive int, got {n_slices!r}")
    out = {}
    for part, rng_ in part_ranges.items():
        if part not in anatomy.BODY_PARTS:
            raise ValueError(f"part_ranges: unknown part {part!r}; parts are {anatomy.BODY_PARTS}")
        try:
            top, bottom = (float(v) for v in rng_)
        except (TypeError, ValueError):
            raise ValueError(f"part_ranges[{part!r}] must be (top, bottom) fractions, got {rng_!r}") from None
        if not 0.0 <= top < bottom <= 1.0:
            raise ValueError(f"part_ranges[{part!r}] must satisfy 0 <= top < bottom <= 1, got {rng_!r}")
        # 1e-9 guards against 0.3 * 110 = 32.99999... (never grows a part by a slice)
        start = int(math.floor(n_slices * (1.0 - bottom) + 1e-9))
        stop = int(math.ceil(n_slices * (1.0 - top) - 1e-9))
        start = min(start, n_slices - 1)
        out[part] = slice(start, max(stop, start + 1))
    return out


def downsample(volume, factor, *, order: int) -> np.ndarray:
    """Reduce the resolution of a volume by ``factor`` per axis.

    Parameters
    ----------
    volume : (X, Y, Z) ndarray
        Image (float, ``order=1``) or label map (int, ``order=0``) in RAS+ order.
    factor : float or tuple of 3 float
        Downsampling factor per axis, each >= 1 (e.g. ``(2, 2, 1)``: half the in-plane
        voxels, all slices).
    order : {0, 1}
        0 = nearest neighbour (labels), 1 = linear interpolation (images).

    Returns
    -------
    (round(X / fx), round(Y / fy), round(Z / fz)) ndarray
        Same dtype for ``order=0``; float32 (or the input's float dtype) for ``order=1``.
        Output voxel ``j`` covers input voxels ``[j s, (j + 1) s)`` with ``s = n / m`` exactly
        (``scipy.ndimage.zoom(..., grid_mode=True)``: the two grids share their outer
        corners), which is what ``llseg.boxes.scale_box`` assumes when mapping back.

    Raises
    ------
    ValueError
        Not 3-D, empty, non-finite values, bad ``factor``/``order``, or an axis that would vanish.

    Notes
    -----
    Paper section 2.2.1: "the resolution of the input images needs to be reduced using linear
    interpolation". No anti-aliasing is applied, as in the paper; with nearest-neighbour
    labels a muscle thinner than the factor can vanish, the failure the paper reports for
    small muscles (section 4).
    """
    vol = _validate.volume(volume, "volume")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (labels) or 1 (images), got {order!r}")
    return _downsample(vol, factor, order)


def _downsample(vol: np.ndarray, factor, order: int) -> np.ndarray:
    # downsample for a checked volume and order.
    out_shape = _low_shape(vol.shape, factor)
    if out_shape == vol.shape:
        return vol.copy() if order == 0 or np.issubdtype(vol.dtype, np.floating) else vol.astype(np.float32)
    if order == 1:
        out_dtype = vol.dtype if np.issubdtype(vol.dtype, np.floating) else np.dtype(np.float32)
        vol = vol.astype(out_dtype, copy=False)
    zoom = [m / n for m, n in zip(out_shape, vol.shape)]
    out = ndi.zoom(vol, zoom, order=order, mode="nearest", grid_mode=True, prefilter=False)
    assert out.shape == out_shape, (out.shape, out_shape)
    return out


# --------------------------------------------------------------------------- classes


def group_regions(group: int, regions=None) -> tuple[int, ...]:
    """The region labels a group's network segments: ``anatomy.group_labels(group)``, or those of
    them in ``regions`` (a cohort labelled for some muscles only), in the same order.

    Raises
    ------
    ValueError
        A bad group, or ``regions`` holding none of the group's regions.
    """
    labels = anatomy.group_labels(_check_group(group))
    if regions is None:
        return labels
    wanted = {int(r) for r in regions}
    kept = tuple(lab for lab in labels if lab in wanted)
    if not kept:
        raise ValueError(f"group {group} has none of the regions {sorted(wanted)}; its regions are {list(labels)}")
    return kept


def group_classes(group: int, regions=None) -> np.ndarray:
    """Lookup table from region label id to the group network's class index.

    Parameters
    ----------
    group : int
        Stage-1 group, 1..10 (``anatomy.GROUPS``).
    regions : iterable of int, optional
        Only these of the group's regions get a class (:func:`group_regions`); default all.

    Returns
    -------
    (71,) ndarray of uint8
        ``lut[label]`` for label ids 0..70: the group's 2k regions, in
        ``anatomy.group_labels(group)`` order (right muscles, then left), map to classes
        1..2k; every other id, including 0, maps to 0 (background). Apply as ``lut[labels]``.
    """
    labels = group_regions(group, regions)
    lut = np.zeros(anatomy.N_REGIONS + 1, dtype=np.uint8)
    lut[list(labels)] = np.arange(1, len(labels) + 1)
    return lut


def class_labels(group: int, regions=None) -> np.ndarray:
    """Inverse of :func:`group_classes`: class index (0..2k) -> region label id (0 for background).

    Returns
    -------
    (2k + 1,) ndarray of int64
    """
    return np.array((0,) + group_regions(group, regions), dtype=np.int64)


def class_mirror(group: int, regions=None) -> np.ndarray:
    """Class -> class of the same muscle on the other leg, for ``augment.augment(label_mirror=...)``.

    Returns
    -------
    (2k + 1,) ndarray of int64
        ``augment.mirror_table(anatomy.group_labels(group))``: background stays 0; applying it
        twice is the identity.
    """
    return augment.mirror_table(group_regions(group, regions))


# --------------------------------------------------------------------------- training


class _GroupSampler:
    """Callable ``sampler(rng) -> (x, y)`` over precomputed low-resolution parts (see make_sampler)."""

    def __init__(self, images, labels, group, mirror, augment_kwargs):
        self.images, self.labels, self.group = images, labels, group
        self.mirror, self.augment_kwargs = mirror, augment_kwargs
        self.shape = (*images[0].shape, 1)
        self.n_classes = len(mirror)

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = int(rng.integers(len(self.images)))
        img, lab = augment.augment(self.images[i], self.labels[i], rng=rng, label_mirror=self.mirror,
                                 **self.augment_kwargs)
        return img[None, ..., None].astype(np.float32, copy=False), lab[None].astype(np.int32)  # (1,X,Y,Z,1), (1,X,Y,Z)


def make_sampler(images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], group: int, *,
                 part_ranges=DEFAULT_PART_RANGES, factor=(2, 2, 1), augment_kwargs: Mapping | None = None,
                 divisor: int = 4, regions=None):
    """Training sampler of one stage-1 group for ``train.fit``.

    Parameters
    ----------
    images : sequence of (X, Y, Z) ndarray of float
        Training images on the study grid (z-scored), RAS+.
    label_maps : sequence of (X, Y, Z) ndarray of int
        Their label maps (0..70, ``anatomy``).
    group : int
        Stage-1 group, 1..10.
    part_ranges : mapping, or sequence of mappings (one per case), optional
        See :func:`split_parts`; the group's body part is cut from every case. Per case (a
        cohort of partial scans, ``llseg.coverage.part_ranges_in_view``), a case whose mapping
        lacks the part is left out.
    factor : float or tuple of 3 float, optional
        Downsampling factor (:func:`downsample`): linear for the image, nearest for labels.
    augment_kwargs : mapping, optional
        Extra keyword arguments of ``augment.augment`` (``max_rotation_deg``, ``max_shear``,
        ``flip_lr``, ``spacing_mm`` = the *low-resolution* spacing); ``rng`` and
        ``label_mirror`` are set here (``label_mirror = class_mirror(group)``).
    divisor : int, optional
        Every case is padded (edge mode, image and labels alike, as ``train.predict_proba``
        pads) to one common shape, a multiple of ``divisor`` (the model's
        ``2 ** (levels - 1)``), so the network sees a single input shape.
    regions : iterable of int, optional
        The group's regions the network learns (:func:`group_regions`); default all of them.

    Returns
    -------
    callable
        ``sampler(rng) -> (x, y)``: a random case, augmented; ``x`` is ``(1, X', Y', Z', 1)``
        float32, ``y`` ``(1, X', Y', Z')`` int32 of classes 0..2k (:func:`group_classes`).
        Attributes: ``shape`` = ``(X', Y', Z', 1)``, ``n_classes`` = 2k + 1.

    Raises
    ------
    ValueError
        No cases, unequal counts or shapes, bad ``group``/``factor``, a part missing from
        ``part_ranges`` or a forbidden ``augment_kwargs`` key.

    Notes
    -----
    The downsampled parts of all cases are computed once (memory: a few MB per case on the
    cpu profile); only the augmentation runs per call.
    """
    augment_kwargs = dict(augment_kwargs or {})
    bad = {"rng", "label_mirror"} & set(augment_kwargs)
    if bad:
        raise ValueError(f"augment_kwargs must not set {sorted(bad)}; make_sampler sets them")
    if isinstance(divisor, bool) or not isinstance(divisor, (int, np.integer)) or divisor < 1:
        raise ValueError(f"divisor must be a positive int, got {divisor!r}")
    low_images, low_labels = _low_parts(images, label_maps, group, part_ranges, factor, regions)
    common = np.max([im.shape for im in low_images], axis=0)
    common = -(-common // divisor) * divisor
    for i, (im, lab) in enumerate(zip(low_images, low_labels)):
        total = common - np.asarray(im.shape)
        pads = [(t // 2, t - t // 2) for t in total]
        low_images[i] = np.pad(im, pads, mode="edge").astype(np.float32, copy=False)
        low_labels[i] = np.pad(lab, pads, mode="edge")
    logger.info("stage-1 group %d: %d cases, part %s, low-resolution input %s", group, len(low_images),
                anatomy.GROUPS[group][1], tuple(int(c) for c in common))
    flips = augment_kwargs.get("flip_lr", True)
    mirror = class_mirror(group, regions) if flips else np.arange(len(class_labels(group, regions)))
    return _GroupSampler(low_images, low_labels, group, mirror, augment_kwargs)


def _ranges_per_case(part_ranges, n_cases: int) -> list:
    """One part-ranges mapping per case: ``part_ranges`` itself for all, or its items."""
    if isinstance(part_ranges, Mapping):
        return [part_ranges] * n_cases
    per_case = list(part_ranges)
    if len(per_case) != n_cases:
        raise ValueError(f"part_ranges: one mapping per case expected ({n_cases}), got {len(per_case)}")
    return per_case


def _low_parts(images, label_maps, group, part_ranges, factor, regions=None) -> tuple[list, list]:
    """Downsampled group part of every case that shows it: images (linear), class maps (nearest),
    unpadded. With per-case ranges, a case whose ranges lack the group's part is left out."""
    if len(images) == 0 or len(images) != len(label_maps):
        raise ValueError(f"images and label_maps must be non-empty and of equal length, got {len(images)} "
                         f"and {len(label_maps)}")
    per_case = _ranges_per_case(part_ranges, len(images))
    part = _part_of_group(group)
    if isinstance(part_ranges, Mapping):
        _part_slice(1, group, part_ranges)               # fail early on a bad part_ranges
    lut = group_classes(group, regions)
    low_images, low_classes = [], []
    for i, (image, labels, ranges) in enumerate(zip(images, label_maps, per_case)):
        if part not in ranges:
            continue                                     # this case does not show the part
        image = _validate.volume(image, f"images[{i}]")
        labels = _validate.label_map(_validate.volume(labels, f"label_maps[{i}]"), f"label_maps[{i}]",
                                     valid=range(1, anatomy.N_REGIONS + 1))
        _validate.same_shape(image, labels, f"images[{i}]", f"label_maps[{i}]")
        sl = _part_slice(image.shape[2], group, ranges)
        low_images.append(_downsample(image[:, :, sl], factor, 1))
        low_classes.append(_downsample(lut[labels[:, :, sl]], factor, 0))        # classes, uint8
    if not low_images:
        raise ValueError(f"no case shows the {part} part of group {group}")
    return low_images, low_classes


def make_validator(images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], group: int, *,
                   part_ranges=DEFAULT_PART_RANGES, factor=(2, 2, 1), regions=None):
    """Validation callback for ``train.fit``: mean low-resolution Dice of a group's regions.

    Parameters
    ----------
    images, label_maps : sequence of (X, Y, Z) ndarray
        Held-out study-grid images and label maps.
    group, part_ranges, factor, regions
        As in :func:`make_sampler`.

    Returns
    -------
    callable
        ``validate(model) -> float``: per case, ``metrics.dice`` of every region (argmax of
        ``train.predict_proba`` on the downsampled part vs the nearest-downsampled labels),
        averaged over the regions present in the prediction or the truth (a spurious region
        counts as Dice 0: it would give a wrong box), then over cases. NaN if no region is
        present in any case, or if no case is given (logged: nothing to validate on).
    """
    from . import metrics

    if len(images) == 0 and len(label_maps) == 0:
        logger.warning("make_validator: no held-out cases for group %d; validation returns NaN", group)
        return lambda model: float("nan")
    low_images, low_classes = _low_parts(images, label_maps, group, part_ranges, factor, regions)
    n_classes = len(class_labels(group, regions))

    def validate(model) -> float:
        per_case = []
        for image, truth in zip(low_images, low_classes):
            pred = np.argmax(train.predict_proba(model, image), axis=-1)        # (X', Y', Z'_part)
            present = [c for c in range(1, n_classes) if np.any(pred == c) or np.any(truth == c)]
            if present:
                per_case.append(np.mean([metrics.dice(pred == c, truth == c) for c in present]))
        return float(np.mean(per_case)) if per_case else float("nan")

    return validate


def train_group(images, label_maps, group: int, *, part_ranges=DEFAULT_PART_RANGES, factor=(2, 2, 1),
                arch: str = "unet", levels: int = 3, root_filters: int = 8, block: str = "plain",
                iterations: int = 2000, learning_rate: float = 0.01, seed: int = 0,
                augment_kwargs: Mapping | None = None, validate=None, validate_every: int = 50, live=None,
                progress: bool = True, class_weight_power: float = 0.0, loss: str = "ce",
                lr_schedule: str = "constant", regions=None):
    """Build and train the stage-1 network of one group (``models.build_model`` + ``train.fit``).

    Parameters
    ----------
    images, label_maps, group, part_ranges, factor, augment_kwargs, regions
        As in :func:`make_sampler`.
    arch, levels, root_filters, block
        As in ``llseg.models.build_model`` (paper stage 1: a plain U-Net with four levels).
    iterations, learning_rate, seed, validate, validate_every, live, progress, class_weight_power, loss, lr_schedule
        As in ``llseg.train.fit`` (paper: 2000 iterations, learning rate 0.01, plain
        cross-entropy, i.e. ``class_weight_power = 0``, ``loss = "ce"``, constant rate).

    Returns
    -------
    model : keras.Model
        Fully convolutional: input ``(N, None, None, None, 1)``, output ``(N, ..., 2k + 1)``.
    history : dict
        ``train.fit``'s history.
    """
    import keras

    from . import models

    keras.utils.set_random_seed(int(seed))           # the initial weights too (fit seeds again later)
    sampler = make_sampler(images, label_maps, group, part_ranges=part_ranges, factor=factor,
                           augment_kwargs=augment_kwargs, divisor=2 ** (levels - 1), regions=regions)
    model = models.build_model(arch, (None, None, None, 1), sampler.n_classes, levels=levels,
                               root_filters=root_filters, block=block)
    history = train.fit(model, sampler, iterations=iterations, learning_rate=learning_rate, seed=seed,
                        validate=validate, validate_every=validate_every, live=live, progress=progress,
                        class_weight_power=class_weight_power, loss=loss, lr_schedule=lr_schedule)
    return model, history


# --------------------------------------------------------------------------- inference


def predict_group(model, image, group: int, *, part_ranges=DEFAULT_PART_RANGES, factor=(2, 2, 1),
                  check_input: bool = True, regions=None, pad_slices=(0, 0), pad_mode: str = "edge") -> np.ndarray:
    """Class probabilities of one group's network on the downsampled body part.

    Parameters
    ----------
    model : keras.Model
        The group's network (2k + 1 output classes).
    image : (X, Y, Z) ndarray of float
        Whole study-grid image, RAS+.
    group : int
        Stage-1 group, 1..10.
    part_ranges, factor
        The values used in training (:func:`make_sampler`).
    check_input : bool, optional
        Check ``image``; False for callers that checked it already (``llseg.cascade``).
    regions : iterable of int, optional
        The regions the network was trained for (:func:`group_regions`); default all.
    pad_slices : (int, int), optional
        Study-grid slices ``(below, above)`` of the part that lie past the ends of a partial
        scan; the network sees the part at its trained extent, filled in by ``pad_mode``
        (a ``numpy.pad`` mode), and the probabilities are cropped back to the scan.

    Returns
    -------
    (X', Y', Z'_part, 2k + 1) ndarray of float32
        Probabilities at low resolution on the group's part (``train.predict_proba`` pads
        and crops back); pass them to :func:`boxes_from_prediction` with the part's slice.

    Raises
    ------
    ValueError
        Bad image, group or factor, or a model whose class count is not 2k + 1.
    """
    if check_input:
        image = _validate.volume(image, "image")
    sl = _part_slice(image.shape[2], group, part_ranges)
    low = _downsample(image[:, :, sl], factor, 1)                   # (X', Y', Z'_part)
    fz = _factor(factor)[2]
    below, above = (int(round(n / fz)) for n in pad_slices)
    padded = np.pad(low, [(0, 0), (0, 0), (below, above)], mode=pad_mode) if below or above else low
    probs = train.predict_proba(model, padded)[:, :, below:below + low.shape[2]]   # (X', Y', Z'_part, K)
    n_classes = len(class_labels(group, regions))
    if probs.shape[-1] != n_classes:
        raise ValueError(f"model {model.name} outputs {probs.shape[-1]} classes; group {group} needs {n_classes}")
    return probs


def boxes_from_prediction(probs, group: int, *, part_slice: slice, factor, full_shape, regions=None
                          ) -> dict[int, np.ndarray | None]:
    """Study-grid box of every region of a group from its low-resolution prediction.

    Parameters
    ----------
    probs : (X', Y', Z', 2k + 1) ndarray of float
        Output of :func:`predict_group` (or a one-hot label map of the part).
    group : int
        Stage-1 group, 1..10.
    part_slice : slice
        Z slice of the part on the study grid (:func:`split_parts`).
    factor : float or tuple of 3 float
        Downsampling factor used; ``probs.shape[:3]`` must equal the downsampled part shape.
    full_shape : tuple of 3 int
        Study-grid shape ``(X, Y, Z)``.
    regions : iterable of int, optional
        The regions of the network (:func:`group_regions`); default all of the group's.

    Returns
    -------
    dict of int to (3, 2) ndarray of int64 or None
        Region label id (``anatomy.group_labels`` order) -> ``[lo, hi)`` box on the study grid,
        or None if no voxel is predicted as that region.

    Raises
    ------
    ValueError
        Wrong shapes, class count or ``part_slice``.

    Notes
    -----
    Per region the largest 26-connected component of the argmax (``cc3d``) is kept (ties:
    the first in scan order). Its low-resolution box is mapped back with
    ``llseg.boxes.scale_box`` using the exact grid ratio ``n_full / n_low`` per axis (floor/ceil,
    so it covers every full-resolution voxel of the component's low-resolution voxels),
    shifted by the part's first slice and clipped to ``full_shape``.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4:
        raise ValueError(f"probs: expected (X, Y, Z, n_classes), got shape {probs.shape}")
    lab_of_class = class_labels(group, regions)
    if probs.shape[-1] != len(lab_of_class):
        raise ValueError(f"probs has {probs.shape[-1]} classes; group {group} has {len(lab_of_class)} "
                         f"(background + {len(lab_of_class) - 1} regions)")
    full_shape = tuple(int(s) for s in full_shape)
    if len(full_shape) != 3:
        raise ValueError(f"full_shape must have 3 entries (X, Y, Z), got {full_shape!r}")
    n_part = _slice_len(part_slice)
    if part_slice.stop > full_shape[2]:
        raise ValueError(f"part_slice {part_slice!r} exceeds the {full_shape[2]} slices of full_shape")
    part_shape = (full_shape[0], full_shape[1], n_part)
    low = _low_shape(part_shape, factor)
    if probs.shape[:3] != low:
        raise ValueError(f"probs shape {probs.shape[:3]} is not the part {part_shape} downsampled by "
                         f"{factor!r}, which is {low}")
    zoom = [n / m for n, m in zip(part_shape, low)]

    winner = np.argmax(probs, axis=-1).astype(np.uint8)                  # (X', Y', Z') classes
    comps = cc3d.connected_components(winner, connectivity=_CONNECTIVITY)  # per-class components
    counts = np.bincount(comps.ravel())
    comp_class = np.zeros(counts.size, dtype=np.int64)
    comp_class[comps.ravel()] = winner.ravel()
    objects = ndi.find_objects(comps)
    out: dict[int, np.ndarray | None] = {}
    for c in range(1, len(lab_of_class)):
        ids = np.flatnonzero(comp_class == c)
        ids = ids[ids > 0]
        if ids.size == 0:
            out[int(lab_of_class[c])] = None
            continue
        best = int(ids[np.argmax(counts[ids])])
        low_box = np.array([[s.start, s.stop] for s in objects[best - 1]], dtype=np.int64)
        box = bx.scale_box(low_box, zoom)
        box[2] += part_slice.start
        out[int(lab_of_class[c])] = bx.clip_box(box, full_shape)
    return out
