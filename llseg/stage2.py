"""Stage 2: one network per muscle segments crops around its stage-1 box (paper 2.2.2).

Volumes are preprocessed study-grid arrays ``(X, Y, Z)`` in RAS+ (z-scored float32 images,
uint8 label maps 0..70, see ``llseg.anatomy``). For each muscle:

* **Input size** (:func:`input_size_for`): one fixed network input per muscle, from the
  average training box size times the mean enlargement, shrunk uniformly to a voxel budget
  and rounded to the network's divisor ("optimized based on the average muscle sizes to
  maintain the aspect ratio").
* **Crops** (:func:`crop_to_input`, :func:`labels_to_input`, :func:`probs_from_input`): a box
  is cut out and resampled to the input size; left muscles are mirrored along X so that the
  right and left muscle share one model ("left and right muscles were combined together to
  share the same model due to their symmetry"). :func:`probs_from_input` is the exact inverse
  geometry.
* **Training** (:func:`make_sampler`): random case and side, the tight ground-truth box
  randomly enlarged per edge (``boxes.random_enlargement``, ratio 1.0-1.8 in the paper),
  crop, binary target, then ``augment.augment`` *after* cropping (paper 2.2.3); fed to
  ``train.fit``.
* **Inference** (:func:`predict_region`, :func:`predict_all`): six enlarged boxes around the
  stage-1 box (``boxes.tta_boxes``), each crop through the network, the foreground
  probabilities put back into the uncropped volume and averaged; the result per region is
  ``(slices, probability crop)``, the form ``postprocess.merge_regions`` takes.

Keras is used only through ``llseg.train`` and ``llseg.models``; this module imports no
deep-learning framework.

References
----------
X. Ni et al., "Automatic segmentation of all lower limb muscles from high-resolution MRI
using a cascaded 3-D DCNN", J. Med. Imag. 6(4), 044009 (2019), sections 2.2.2 and 2.2.3.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Callable

import numpy as np
from scipy import ndimage

from . import _validate, anatomy, augment, boxes, train

__all__ = [
    "muscle_box_sizes",
    "input_size_for",
    "crop_to_input",
    "labels_to_input",
    "probs_from_input",
    "make_sampler",
    "predict_region",
    "validation_crops",
    "crop_dice",
    "make_validator",
    "predict_all",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers


def _check_size(size, name: str = "size") -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in size)
    except TypeError:
        raise ValueError(f"{name}: expected 3 positive ints (X, Y, Z), got {size!r}") from None
    if len(out) != 3 or any(s < 1 for s in out) or any(float(s) != o for s, o in zip(size, out)):
        raise ValueError(f"{name}: expected 3 positive ints (X, Y, Z), got {size!r}")
    return out


def _check_image(image) -> np.ndarray:
    """A finite, real-valued 3-D image (the checks done once per image, not once per crop)."""
    image = _validate.volume(image, "image")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image) or image.dtype == bool:
        raise TypeError(f"image must be real-valued, got dtype {image.dtype}")
    return image


def _resample(arr: np.ndarray, out_shape, *, order: int, output=None) -> np.ndarray:
    """Resample ``arr`` onto ``out_shape`` voxels covering the same extent.

    Voxel edges are aligned (output voxel ``j`` covers the same fraction of the axis as the
    input voxels under it; its centre maps to ``(j + 0.5) * n_in / n_out - 0.5``), the
    geometry of ``scipy.ndimage.zoom(..., grid_mode=True)``. ``zoom`` derives the output
    shape by rounding ``n_in * zoom``, which can miss the requested shape by one voxel, so
    the same diagonal mapping is given to ``affine_transform`` with an explicit shape.
    Borders repeat the edge voxel (``mode="nearest"``); every sample lies within half an
    input voxel of the data.
    """
    out_shape = tuple(int(s) for s in out_shape)
    if out_shape == arr.shape:
        return np.array(arr, dtype=output if output is not None else arr.dtype, copy=True)
    scale = np.asarray(arr.shape, dtype=float) / np.asarray(out_shape, dtype=float)
    offset = 0.5 * scale - 0.5
    return ndimage.affine_transform(arr, scale, offset=offset, output_shape=out_shape, order=order,
                                    mode="nearest", output=output if output is not None else arr.dtype)


# --------------------------------------------------------------------------- input size


def _tight_boxes(label_maps, muscle_key: str):
    """``(index, label map, label, tight box)`` for every (case, side) where the muscle is present.

    One ``ndimage.find_objects`` pass per map gives the boxes of both sides.
    """
    m = anatomy.muscle(muscle_key)
    for i, lab in enumerate(label_maps):
        lab = _validate.label_map(_validate.volume(lab, f"label_maps[{i}]"), f"label_maps[{i}]")
        found = ndimage.find_objects(lab, max_label=max(m.right_label, m.left_label))
        for label in (m.right_label, m.left_label):
            if found[label - 1] is None:
                logger.debug("%s absent in label map %d", anatomy.region_name(label), i)
                continue
            yield i, lab, label, np.array([[sl.start, sl.stop] for sl in found[label - 1]], dtype=np.int64)


def muscle_box_sizes(label_maps, muscle_key: str) -> np.ndarray:
    """Tight box sizes (voxels) of one muscle, both sides, over a set of label maps.

    Parameters
    ----------
    label_maps : sequence of (X, Y, Z) ndarray of int
        Training label maps (``llseg.anatomy`` ids).
    muscle_key : str
        Muscle key or Table-1 name.

    Returns
    -------
    (N, 3) ndarray of int64
        One row per (case, side) where the region is present, X, Y, Z order; the input of
        :func:`input_size_for`. ``N`` may be 0.
    """
    sizes = [boxes.box_size(box) for _, _, _, box in _tight_boxes(label_maps, muscle_key)]
    return np.array(sizes, dtype=np.int64).reshape(-1, 3)


def input_size_for(box_sizes_vox, *, max_voxels: int, divisor: int, mean_ratio: float = 1.4) -> tuple[int, int, int]:
    """Network input size of one muscle: average enlarged box, within a voxel budget.

    Parameters
    ----------
    box_sizes_vox : (N, 3) array of float
        Tight training box sizes of the muscle in voxels (X, Y, Z), e.g. from
        :func:`muscle_box_sizes`.
    max_voxels : int
        Upper bound of ``X * Y * Z`` (memory / time budget of one training step).
    divisor : int
        Every axis is a multiple of it: ``2 ** (levels - 1)`` for a U-Net with ``levels``
        resolution levels (``llseg.models.model_divisor``).
    mean_ratio : float, optional
        Mean enlargement of the training boxes, ``(low + high) / 2`` of the ratio range
        (1.4 for the paper's 1.0-1.8).

    Returns
    -------
    tuple of 3 int
        ``(X, Y, Z)`` input size, each a positive multiple of ``divisor``, product
        ``<= max_voxels``.

    Raises
    ------
    ValueError
        Empty or non-positive sizes, ``max_voxels < divisor ** 3``, ``divisor < 1`` or
        ``mean_ratio < 1``.

    Notes
    -----
    The target is ``t = mean(box_sizes_vox) * mean_ratio``; if ``prod(t) > max_voxels`` it is
    scaled by ``(max_voxels / prod(t)) ** (1/3)``, keeping the aspect ratio (never scaled
    up: stage 2 works near the study-grid resolution). An axis that would fall below
    ``divisor`` is set to ``divisor`` and the other axes are rescaled to the remaining
    budget. Each axis then becomes the multiple of ``divisor`` just below or above its
    target; of those (up to 8) combinations within the budget, the one with the smallest
    squared log-size error is taken (the floors always fit).
    """
    sizes = np.asarray(box_sizes_vox, dtype=float)
    if sizes.ndim == 1:
        sizes = sizes[None]
    if sizes.ndim != 2 or sizes.shape[1] != 3 or sizes.shape[0] == 0:
        raise ValueError(f"box_sizes_vox: expected an (N, 3) array with N >= 1, got shape {np.shape(box_sizes_vox)}")
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError("box_sizes_vox: sizes must be finite and > 0 voxels")
    if isinstance(divisor, bool) or not isinstance(divisor, (int, np.integer)) or divisor < 1:
        raise ValueError(f"divisor must be a positive int, got {divisor!r}")
    if not (mean_ratio >= 1 and math.isfinite(mean_ratio)):
        raise ValueError(f"mean_ratio must be a finite float >= 1, got {mean_ratio!r}")
    if max_voxels < divisor ** 3:
        raise ValueError(f"max_voxels={max_voxels!r} is below the smallest input divisor**3 = {divisor ** 3}")
    target = sizes.mean(axis=0) * float(mean_ratio)                  # (3,) voxels
    # Uniform shrink to the budget; an axis that falls below `divisor` is pinned there and
    # the others share what is left of the budget (so their aspect ratio is kept).
    pinned = np.zeros(3, bool)
    while True:
        free_budget = float(max_voxels) / float(divisor) ** int(pinned.sum())
        scale = min(1.0, (free_budget / float(np.prod(target[~pinned]))) ** (1.0 / int((~pinned).sum())))
        scaled = np.where(pinned, divisor, target * scale)
        newly = ~pinned & (scaled < divisor)
        if not newly.any():
            break
        pinned |= newly
        if pinned.all():
            break
    # Each axis: the multiple of `divisor` just below or above (at least `divisor`); of the
    # 8 combinations within the budget, the one closest to the target in log-size.
    lo = np.maximum(np.floor(scaled / divisor), 1) * divisor
    hi = np.maximum(np.ceil(scaled / divisor), 1) * divisor
    best, best_err = None, np.inf
    for pick in np.ndindex(2, 2, 2):
        cand = np.where(np.array(pick) == 1, hi, lo)
        err = float(np.sum(np.log(cand / scaled) ** 2))
        if np.prod(cand) <= max_voxels and err < best_err:
            best, best_err = cand, err
    assert best is not None, "the floors always fit the budget"
    out = best.astype(np.int64)
    return tuple(int(s) for s in out)


# --------------------------------------------------------------------------- crops


def crop_to_input(image, box, size, *, mirror: bool = False) -> np.ndarray:
    """Cut a box out of an image and resample it to the network input size.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Study-grid image, RAS+.
    box : (3, 2) array of int
        Crop box ``[lo, hi)`` per axis, non-empty, inside the image (``llseg.boxes``).
    size : tuple of 3 int
        Network input size ``(X, Y, Z)``.
    mirror : bool, optional
        Flip axis 0 (X, left-right) so that a left muscle looks like a right one.

    Returns
    -------
    (X', Y', Z') ndarray of float32
        ``X', Y', Z' = size``; linear interpolation, voxel edges of the crop and the output
        aligned (see :func:`probs_from_input` for the inverse).

    Raises
    ------
    ValueError
        A box outside the image or empty, a bad size, a non-3-D or non-finite image.
    """
    image = _check_image(image)
    return _crop_to_input(image, _validate.box(box, ndim=3, shape=image.shape, nonempty=True), _check_size(size), mirror)


def _crop_to_input(image: np.ndarray, box: np.ndarray, size, mirror: bool) -> np.ndarray:
    # crop_to_input for callers that checked the image once.
    crop = image[boxes.box_slices(box)].astype(np.float32, copy=False)
    out = _resample(crop, size, order=1, output=np.float32)
    return np.ascontiguousarray(out[::-1]) if mirror else out


def labels_to_input(mask, box, size, *, mirror: bool = False) -> np.ndarray:
    """The target of :func:`crop_to_input`: same box and geometry, nearest neighbour.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray of bool or int
        Foreground mask on the image grid; non-zero voxels are foreground.
    box, size, mirror
        As in :func:`crop_to_input`.

    Returns
    -------
    (X', Y', Z') ndarray of uint8
        1 = foreground, 0 = background.
    """
    arr = _validate.mask(mask, "mask")
    b = _validate.box(box, ndim=3, shape=arr.shape, nonempty=True)
    size = _check_size(size)
    crop = arr[boxes.box_slices(b)].astype(np.uint8)
    out = _resample(crop, size, order=0, output=np.uint8)
    return np.ascontiguousarray(out[::-1]) if mirror else out


def probs_from_input(prob, box, *, mirror: bool = False) -> np.ndarray:
    """Put a network-grid probability map back onto the grid of its crop box.

    Parameters
    ----------
    prob : (X', Y', Z') ndarray of float
        Foreground probability on the network input grid (the ``size`` of
        :func:`crop_to_input`).
    box : (3, 2) array of int
        The box the input was cropped at.
    mirror : bool, optional
        The ``mirror`` used for the crop; the map is flipped back along X first.

    Returns
    -------
    ndarray of float32, shape ``box_size(box)``
        Linear interpolation with the voxel geometry of :func:`crop_to_input` (its exact
        inverse mapping); values stay in the input range.
    """
    prob = _validate.volume(prob, "prob")
    if not np.issubdtype(prob.dtype, np.floating):
        raise TypeError(f"prob: expected floating-point probabilities, got dtype {prob.dtype}")
    return _probs_from_input(prob, _validate.box(box, ndim=3, nonempty=True), mirror)


def _probs_from_input(prob: np.ndarray, box: np.ndarray, mirror: bool) -> np.ndarray:
    # probs_from_input for checked arguments.
    p = prob[::-1] if mirror else prob
    return _resample(np.ascontiguousarray(p, dtype=np.float32), boxes.box_size(box), order=1, output=np.float32)


# --------------------------------------------------------------------------- training


def _image_regions(images: Sequence, label_maps: Sequence, muscle_key: str) -> list[tuple]:
    """``(case index, image, label map, label, tight box)`` per (case, side) where the muscle is
    present, after checking the images once (same count as the maps, finite, same shapes)."""
    if len(images) != len(label_maps):
        raise ValueError(f"images and label_maps differ in length: {len(images)} vs {len(label_maps)}")
    images = [_validate.volume(img, f"images[{i}]") for i, img in enumerate(images)]
    out = []
    for i, lab, label, tight in _tight_boxes(label_maps, muscle_key):
        _validate.same_shape(images[i], lab, f"images[{i}]", f"label_maps[{i}]")
        out.append((i, images[i], lab, label, tight))
    return out


def make_sampler(images: Sequence, label_maps: Sequence, muscle_key: str, *, size, ratio_range=(1.0, 1.8),
                 augment_kwargs: Mapping | None = None) -> Callable:
    """Training-sample generator of one muscle's network, for ``train.fit``.

    Parameters
    ----------
    images : sequence of (X, Y, Z) ndarray of float
        Training images on the study grid (z-scored), RAS+.
    label_maps : sequence of (X, Y, Z) ndarray of int
        Their label maps (``llseg.anatomy`` ids), same shapes.
    muscle_key : str
        Muscle key or Table-1 name; its right and left regions both train the model.
    size : tuple of 3 int
        Network input size ``(X, Y, Z)`` (:func:`input_size_for`).
    ratio_range : (float, float), optional
        Per-edge enlargement ratio range of the training crops (paper: 1.0 to 1.8).
    augment_kwargs : mapping, optional
        Keyword arguments of ``augment.augment`` (``max_rotation_deg``, ``max_shear``,
        ``flip_lr``, ``spacing_mm``). ``spacing_mm`` is the *study-grid* spacing; each sample
        passes the crop's effective spacing ``spacing_mm * box_size / size`` so that
        rotations stay physical. ``label_mirror`` is not allowed (the target is binary).

    Returns
    -------
    callable
        ``sample(rng) -> (x, y)``: ``x`` a ``(1, X', Y', Z', 1)`` float32 image crop, ``y`` a
        ``(1, X', Y', Z')`` int32 target (1 = the muscle, 0 = anything else).

    Raises
    ------
    ValueError
        Mismatched lengths or shapes, no case containing the muscle, or ``label_mirror``
        in ``augment_kwargs``.

    Notes
    -----
    Each call draws one (case, side) pair uniformly from those where the region is present
    (absent sides are skipped), takes the region's tight ground-truth box, enlarges it with
    ``boxes.random_enlargement`` (so the whole muscle is in the crop), crops and resamples
    image and target to ``size`` (mirroring left sides along X), then applies
    ``augment.augment`` (shear, rotation, left-right flip) to the crop (paper 2.2.3: "for
    stage 2, augmentation was performed after cropping"). All randomness comes from ``rng``.
    """
    m = anatomy.muscle(muscle_key)
    size = _check_size(size)
    ratio_range = _validate.ratio_range(ratio_range)
    kwargs = dict(augment_kwargs or {})
    if "label_mirror" in kwargs:
        raise ValueError("augment_kwargs: label_mirror is not allowed in stage 2 (the target is binary; "
                         "flips must not swap labels)")
    spacing = kwargs.pop("spacing_mm", None)
    spacing = None if spacing is None else np.asarray(_validate.spacing(spacing, 3))
    cases = [(img, lab, label, tight, label == m.left_label)     # (..., mirror)
             for _, img, lab, label, tight in _image_regions(images, label_maps, m.key)]
    if not cases:
        raise ValueError(f"make_sampler: muscle {m.key!r} (labels {m.right_label}, {m.left_label}) is absent "
                         f"from all {len(label_maps)} label maps")
    logger.info("stage-2 sampler for %s: %d (case, side) samples, input %s", m.key, len(cases), size)

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        img, lab, label, tight, mirror = cases[int(rng.integers(len(cases)))]
        box = boxes.random_enlargement(tight, ratio_range=ratio_range, rng=rng, shape=img.shape)
        x = _crop_to_input(img, box, size, mirror)                            # (X', Y', Z')
        y = labels_to_input(lab[boxes.box_slices(box)] == label, box - box[:, :1], size, mirror=mirror)
        sp = None if spacing is None else tuple(spacing * boxes.box_size(box) / np.asarray(size))
        x, y = augment.augment(x, y, rng=rng, label_mirror=None, spacing_mm=sp, **kwargs)
        return x[None, ..., None].astype(np.float32, copy=False), y[None].astype(np.int32)

    return sample


# --------------------------------------------------------------------------- inference


def predict_region(model, image, box, *, size, mirror: bool, n_boxes: int = 6, ratio_range=(1.0, 1.8),
                   seed=0) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Foreground probability of one region, averaged over enlarged boxes (paper 2.2.2).

    Parameters
    ----------
    model : keras.Model
        The muscle's stage-2 network (2 classes, class 0 = background), called through
        ``train.predict_proba``.
    image : (X, Y, Z) ndarray of float
        Study-grid image, RAS+.
    box : (3, 2) array of int
        The region's box (stage-1 output, or the ground-truth box for the paper's Fig. 4b),
        non-empty and inside the image.
    size : tuple of 3 int
        The model's input size.
    mirror : bool
        True for left regions (the model was trained on right-looking crops).
    n_boxes : int, optional
        Number of test-time boxes (paper: six).
    ratio_range : (float, float), optional
        Per-edge enlargement ratio range, as in training. ``n_boxes=1`` with
        ``ratio_range=(r, r)`` gives a single crop at a fixed ratio (paper Fig. 4c/d).
    seed : int or numpy.random.Generator, optional
        Seed of ``boxes.tta_boxes``.

    Returns
    -------
    slices : tuple of 3 slice
        The union of the test-time boxes in the full image.
    prob : ndarray of float32, shape of the union box
        ``sum_i p_i / n_boxes``, with ``p_i`` the foreground probability ``1 - P(class 0)``
        of box ``i`` put back onto the image grid and 0 outside box ``i``. A voxel covered by
        3 of 6 boxes that all say 1 gets 0.5.
    """
    image = _check_image(image)
    return _predict_region(model, image, _validate.box(box, ndim=3, shape=image.shape, nonempty=True),
                           _check_size(size), mirror, n_boxes, ratio_range, seed)


def _predict_region(model, image: np.ndarray, b: np.ndarray, size, mirror: bool, n_boxes: int, ratio_range,
                    seed) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    # predict_region for a checked image, box and size.
    tta = boxes.tta_boxes(b, n=n_boxes, ratio_range=ratio_range, seed=seed, shape=image.shape)
    union = boxes.union_box(tta)
    acc = np.zeros(boxes.box_size(union), dtype=np.float32)           # (X_u, Y_u, Z_u)
    for tb in tta:
        x = _crop_to_input(image, tb, size, mirror)                      # (X', Y', Z')
        proba = train.predict_proba(model, x)                            # (X', Y', Z', K)
        fg = 1.0 - np.asarray(proba, dtype=np.float32)[..., 0]          # (X', Y', Z')
        acc[boxes.box_slices(tb - union[:, :1])] += _probs_from_input(fg, tb, mirror)
    acc /= float(len(tta))
    return boxes.box_slices(union), acc


def validation_crops(images: Sequence, label_maps: Sequence, muscle_key: str, *, ratio: float = 1.4) -> list[tuple]:
    """The held-out crops of one muscle: every (case, side) where it exists, at its ground-truth
    box enlarged by ``ratio`` on every edge (a single box, no test-time augmentation).

    Returns
    -------
    list of tuple
        ``(case_index, side, image, truth, box, mirror)`` per crop: the index into ``images``,
        ``"right"`` or ``"left"``, the case's image, the bool truth inside the box, the box and
        whether the crop is mirrored (left side).
    """
    m = anatomy.muscle(muscle_key)
    crops = []
    for i, image, labels, label, tight in _image_regions(images, label_maps, m.key):
        box = boxes.enlarge_box(tight, (ratio,) * 3, (ratio,) * 3, labels.shape)
        left = label == m.left_label
        crops.append((i, "left" if left else "right", image, labels[boxes.box_slices(box)] == label, box, left))
    return crops


def crop_dice(model, crops: Sequence[tuple], *, size) -> np.ndarray:
    """Dice of ``model``'s thresholded output inside each of :func:`validation_crops`.

    Returns
    -------
    (n_crops,) ndarray of float
        One Dice per crop, in the order of ``crops`` (1.0 where prediction and truth are empty).
    """
    scores = []
    for _, _, image, truth, box, mirror in crops:
        proba = train.predict_proba(model, _crop_to_input(image, box, size, mirror))
        pred = _probs_from_input(1.0 - proba[..., 0], box, mirror) >= 0.5
        denom = pred.sum() + truth.sum()
        scores.append(2.0 * np.logical_and(pred, truth).sum() / denom if denom else 1.0)
    return np.asarray(scores, dtype=float)


def make_validator(images: Sequence, label_maps: Sequence, muscle_key: str, *, size, ratio: float = 1.4):
    """A ``validate(model) -> mean Dice`` callable for ``train.fit``: the mean of :func:`crop_dice`
    over :func:`validation_crops`.

    Used for the training curves (monitoring only: no model selection is made from it).
    Returns NaN when no case contains the muscle.
    """
    crops = validation_crops(images, label_maps, muscle_key, ratio=ratio)

    def validate(model) -> float:
        return float(np.mean(crop_dice(model, crops, size=size))) if crops else float("nan")

    return validate


def predict_all(models_by_key: Mapping, image, boxes_by_label: Mapping, *, sizes_by_key: Mapping | None = None,
                n_boxes: int = 6, ratio_range=(1.0, 1.8), seed=0, check_input: bool = True) -> dict[int, tuple]:
    """Stage-2 probabilities of every region with a box, for ``postprocess.merge_regions``.

    Parameters
    ----------
    models_by_key : mapping of str -> keras.Model
        Muscle key -> its stage-2 network (shared by the right and left region).
    image : (X, Y, Z) ndarray of float
        Study-grid image, RAS+.
    boxes_by_label : mapping of int -> (3, 2) array of int or None
        Region label (1..70) -> stage-1 box on the study grid; ``None`` (region not found)
        is skipped.
    sizes_by_key : mapping of str -> tuple of 3 int, optional
        Input size per muscle key; if ``None`` or a key is missing, the model's fixed input
        shape is used.
    n_boxes, ratio_range, seed
        As in :func:`predict_region` (the same seed for every region).
    check_input : bool, optional
        Check ``image``; False for callers that checked it already (``llseg.cascade``).

    Returns
    -------
    dict of int -> (tuple of 3 slice, ndarray of float32)
        Label -> (slices, averaged probability crop).

    Raises
    ------
    ValueError
        A label that is not a region, a bad box, or no usable input size.

    Notes
    -----
    Right labels (1..35) are predicted as is, left labels (36..70) mirrored along X with the
    same muscle's model. A region whose muscle has no model is skipped with a logged
    warning (e.g. a study that trained a subset of the muscles).
    """
    image = _check_image(image) if check_input else image
    sizes_by_key = {} if sizes_by_key is None else dict(sizes_by_key)
    out: dict[int, tuple] = {}
    for label in sorted(int(k) for k in boxes_by_label):
        box = boxes_by_label[label]
        if box is None:
            logger.info("predict_all: no box for %s, skipped", anatomy.region_name(label))
            continue
        m = anatomy.muscle_of_label(label)
        if m.key not in models_by_key:
            logger.warning("predict_all: no stage-2 model for %s, %s skipped", m.key, anatomy.region_name(label))
            continue
        model = models_by_key[m.key]
        size = sizes_by_key.get(m.key)
        if size is None:
            size = tuple(model.input_shape[1:4])
            if any(s is None for s in size):
                raise ValueError(f"predict_all: model of {m.key!r} has no fixed input size {size}; "
                                 f"pass sizes_by_key[{m.key!r}]")
        mirror = anatomy.side_of_label(label) == "left"
        box = _validate.box(box, ndim=3, shape=image.shape, nonempty=True)
        out[label] = _predict_region(model, image, box, _check_size(size), mirror, n_boxes, ratio_range, seed)
    return out
