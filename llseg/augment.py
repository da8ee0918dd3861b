"""Training-time data augmentation (paper section 2.2.3): rotation about the superior-inferior
axis, in-plane shear and left-right flips, applied alike to an image and its label map.

Volumes are ``(X, Y, Z)`` arrays in RAS+ order. Stage 1 flips with a label mirror table
(:func:`mirror_table`, right muscle <-> left muscle); stage 2 crops are binary and flip as they are.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi

from . import _validate

__all__ = ["augment", "mirror_table"]


def mirror_table(class_labels) -> np.ndarray:
    """Lookup table that swaps left and right classes, for :func:`augment`'s ``label_mirror``.

    Parameters
    ----------
    class_labels : sequence of int
        Region label id (``llseg.anatomy``, 1..70) of each network class 1..K, in class
        order; class 0 is background and is *not* listed. E.g. a stage-1 group's
        ``anatomy.group_labels(g)``.

    Returns
    -------
    (K + 1,) ndarray of int64
        ``table[c]`` is the class holding the mirrored region of class ``c``; 0 maps to 0.

    Raises
    ------
    ValueError
        If a region's mirror is not among ``class_labels`` (flipping would create a class
        the network does not have) or a label is listed twice.
    """
    from . import anatomy

    labels = [int(v) for v in class_labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"class_labels must be distinct, got {labels}")
    index = {lab: c + 1 for c, lab in enumerate(labels)}
    table = np.zeros(len(labels) + 1, dtype=np.int64)
    for lab, c in index.items():
        mirrored = anatomy.mirror_label(lab)
        if mirrored not in index:
            raise ValueError(f"class_labels: region {lab} ({anatomy.region_name(lab)}) is listed but its "
                             f"mirror {mirrored} is not; a left-right flip cannot be relabelled")
        table[c] = index[mirrored]
    return table


def _check_mirror(label_mirror, labels: np.ndarray) -> np.ndarray:
    lut = np.asarray(label_mirror)
    if lut.ndim != 1 or not np.issubdtype(lut.dtype, np.integer):
        raise TypeError(f"label_mirror must be a 1-D integer array, got dtype {lut.dtype}, shape {lut.shape}")
    top = int(labels.max()) if labels.size else 0
    if int(labels.min()) < 0 or top >= lut.size:
        raise ValueError(f"label_mirror has {lut.size} entries but labels span "
                         f"{int(labels.min())}..{top}; it needs one entry per id 0..{top}")
    return lut


def augment(image, labels, *, rng: np.random.Generator, max_rotation_deg: float = 10.0,
            max_shear: float = 0.1, flip_lr: bool = True, label_mirror=None,
            spacing_mm=None) -> tuple[np.ndarray, np.ndarray]:
    """Randomly rotate, shear and left-right flip an image and its label map together.

    Parameters
    ----------
    image : (X, Y, Z) ndarray of float
        Image, RAS+ axis order.
    labels : (X, Y, Z) ndarray of int
        Label map on the same grid.
    rng : numpy.random.Generator
        Source of randomness. Exactly four uniform draws are taken per call whatever the
        options (angle, two shears, flip), so a seeded generator gives a reproducible stream.
    max_rotation_deg : float, optional
        Rotation about the superior-inferior axis (Z, axis 2) uniform in
        ``[-max_rotation_deg, max_rotation_deg]`` degrees.
    max_shear : float, optional
        In-plane shear factors ``s_xy, s_yx`` uniform in ``[-max_shear, max_shear]``:
        ``x' = x + s_xy y``, ``y' = y + s_yx x`` (mm per mm).
    flip_lr : bool, optional
        Flip axis 0 (X, left-right) with probability 0.5.
    label_mirror : (L,) ndarray of int, optional
        Lookup table applied to the labels when flipped (``labels = label_mirror[labels]``),
        e.g. :func:`mirror_table`, so that a flipped right muscle becomes the left one. It
        needs an entry for every id present. ``None`` keeps the ids (single-muscle stage 2).
    spacing_mm : tuple of 3 float, optional
        Voxel spacing; the rotation and shear are applied in mm so that anisotropic
        in-plane voxels are rotated physically. ``None`` means isotropic voxels.

    Returns
    -------
    image : (X, Y, Z) ndarray
        Transformed image, same dtype as the input if floating, else float32.
    labels : (X, Y, Z) ndarray
        Transformed labels, same dtype as the input.

    Raises
    ------
    ValueError
        Shape mismatch, non-3-D input, negative limits, or a ``label_mirror`` too short.
    TypeError
        Non-integer labels or ``label_mirror``.

    Notes
    -----
    The paper uses "shearing, rotation, and left-right flipping" in both stages (section
    2.2.3) without stating ranges; the defaults are modest. The transform is about the
    volume centre, resampled with ``scipy.ndimage.affine_transform``: linear interpolation
    for the image (outside filled with the image minimum, i.e. background) and
    nearest-neighbour (order 0) for the labels (outside = 0). The inputs are never modified.
    """
    image = _validate.volume(image, "image")
    labels = _validate.label_map(_validate.volume(labels, "labels"), "labels")
    _validate.same_shape(image, labels, "image", "labels")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise TypeError(f"image must be real-valued, got dtype {image.dtype}")
    if max_rotation_deg < 0 or max_shear < 0:
        raise ValueError(f"max_rotation_deg and max_shear must be >= 0, got {max_rotation_deg!r}, {max_shear!r}")
    sp = np.asarray(_validate.spacing(spacing_mm, 3))
    lut = None if label_mirror is None else _check_mirror(label_mirror, labels)
    out_dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.dtype(np.float32)

    u = rng.uniform(-1.0, 1.0, size=3)      # angle, shear xy, shear yx
    flip = bool(rng.uniform() < 0.5) and flip_lr
    theta = math.radians(max_rotation_deg * u[0])
    s_xy, s_yx = max_shear * u[1], max_shear * u[2]

    img = image.astype(out_dtype, copy=True)
    lab = labels.copy()
    if flip:
        img = img[::-1].copy()
        lab = lab[::-1].copy()
        if lut is not None:
            lab = lut[lab].astype(labels.dtype, copy=False)

    if theta != 0.0 or s_xy != 0.0 or s_yx != 0.0:
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        shear = np.array([[1.0, s_xy, 0.0], [s_yx, 1.0, 0.0], [0.0, 0.0, 1.0]])
        forward_mm = rot @ shear                                   # physical, input -> output
        forward = np.diag(1.0 / sp) @ forward_mm @ np.diag(sp)      # in voxel units
        inverse = np.linalg.inv(forward)                           # output -> input coordinates
        centre = (np.asarray(image.shape, dtype=float) - 1.0) / 2.0
        offset = centre - inverse @ centre
        img = ndi.affine_transform(img, inverse, offset=offset, order=1, mode="constant",
                                   cval=float(img.min()), output=out_dtype)
        lab = ndi.affine_transform(lab, inverse, offset=offset, order=0, mode="constant", cval=0,
                                   output=labels.dtype)
    return img, lab
