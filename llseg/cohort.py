"""The cohort: the phantom's cases, the on-disk layout every stage reads, the train/test split,
and the checks a real cohort must pass.

Layout (a real cohort uses the same)::

    data/
      images/<case>.nii.gz     3-D MR image, any orientation (reoriented to RAS+ on load)
      labels/<case>.nii.gz     label map, same grid; ids 0 and 1..70 (llseg.anatomy)
      subjects/<case>.json     optional sidecar (the phantom writes its subject parameters)

``<case>`` is any file-name-safe id; images without a label map are allowed only for
``llseg segment``, not for training or evaluation.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import anatomy, io, mrsim, phantom

__all__ = [
    "IMAGES",
    "LABELS",
    "SUBJECTS",
    "Case",
    "case_paths",
    "list_cases",
    "make_case",
    "split_cases",
    "check_case",
    "check_cohort",
]

log = logging.getLogger(__name__)

IMAGES, LABELS, SUBJECTS = "images", "labels", "subjects"


@dataclass(frozen=True)
class Case:
    """One generated phantom case: arrays in RAS+ ``(X, Y, Z)`` plus metadata."""

    image: np.ndarray
    labels: np.ndarray
    bias: np.ndarray
    affine: np.ndarray
    meta: dict


def case_paths(root, case: str) -> dict[str, Path]:
    """Paths of one case's files under a cohort root: the existing ``.nii.gz`` or ``.nii`` file of
    the image and the label map (``.nii.gz`` when there is none, the name new files get)."""
    root = Path(root)
    return {"image": _find(root / IMAGES, case) or root / IMAGES / f"{case}.nii.gz",
            "labels": _find(root / LABELS, case) or root / LABELS / f"{case}.nii.gz",
            "subject": root / SUBJECTS / f"{case}.json"}


def list_cases(root, *, require_labels: bool = True) -> list[str]:
    """Sorted case ids found under ``root/images`` (``.nii`` or ``.nii.gz``).

    Raises
    ------
    FileNotFoundError
        No ``images`` folder, or it holds no NIfTI file.
    """
    folder = Path(root) / IMAGES
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected the cohort layout, see llseg.cohort)")
    cases = sorted(p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem
                   for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not cases:
        raise FileNotFoundError(f"{folder}: no .nii or .nii.gz images")
    if require_labels:
        missing = [c for c in cases if not _find(Path(root) / LABELS, c)]
        if missing:
            raise FileNotFoundError(f"{Path(root) / LABELS}: no label map for case(s) {', '.join(missing[:10])}")
    return cases


def _find(folder: Path, case: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        if (folder / f"{case}{ext}").exists():
            return folder / f"{case}{ext}"
    return None


def make_case(seed: int, *, protocol: str, downscale: float, bias_strength: float, noise_sigma: float,
              supersample: int = 5, muscle_contrast: float = 0.03, texture_strength: float = 0.06) -> Case:
    """Generate one phantom subject and acquire it under ``protocol``.

    Anatomy is rendered on ``supersample`` thin slices per acquired slice, then the MR simulator
    averages them (through-plane partial volume); ground truth is the centre thin slice.

    Parameters
    ----------
    seed : int
        Subject seed (anatomy and acquisition are both deterministic from it).
    protocol : {"spiral", "cartesian"}
    downscale : float
        Global downscale of matrix and slice count (1 = the paper's 1 x 1 x 5 mm).
    bias_strength, noise_sigma : float
        See ``llseg.mrsim.simulate_image``.
    supersample : int
        Odd number of thin slices per acquired slice.
    """
    if protocol not in mrsim.PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(mrsim.PROTOCOLS)}, got {protocol!r}")
    if supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"supersample must be a positive odd integer, got {supersample!r}")
    proto = mrsim.PROTOCOLS[protocol]
    subject = phantom.sample_subject(seed)
    # 200-240 slices in the paper: T12 to ankle plus a small margin.
    n_slices = int(np.clip(math.ceil(phantom.span_mm(subject) / proto.slice_mm) + 6, 200, 240))
    shape, spacing = mrsim.acquisition_grid(proto, n_slices=n_slices, downscale=downscale)
    fine_shape = (shape[0], shape[1], shape[2] * supersample)
    fine_spacing = (spacing[0], spacing[1], spacing[2] / supersample)
    fine_affine = phantom.field_of_view(subject, matrix_xy=shape[:2], spacing_mm=fine_spacing,
                                        n_slices=fine_shape[2])
    labels_f, tissue_f = phantom.render_anatomy(subject, fine_affine, fine_shape)
    rng = np.random.default_rng([seed, 1])
    image, labels, bias = mrsim.simulate_image(
        labels_f, tissue_f, fine_spacing_mm=fine_spacing, slice_factor=supersample, rng=rng,
        bias_strength=bias_strength, noise_sigma=noise_sigma, muscle_contrast=muscle_contrast,
        texture_strength=texture_strength)
    affine = fine_affine.copy()
    affine[:3, 3] = fine_affine[:3, 3] + fine_affine[:3, 2] * (supersample - 1) / 2.0
    affine[:3, 2] = fine_affine[:3, 2] * supersample
    meta = {"subject": subject.to_dict(), "protocol": protocol, "downscale": downscale,
            "bias_strength": bias_strength, "noise_sigma": noise_sigma, "supersample": supersample,
            "shape": list(shape), "spacing_mm": list(spacing)}
    return Case(image=image, labels=labels, bias=bias, affine=affine, meta=meta)


def split_cases(cases, *, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Random, seeded train/test split (the paper: 51 train / 13 test of 64, ~80/20).

    At least one case goes to each side when there are two or more cases.
    """
    cases = sorted(cases)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if len(cases) < 2:
        raise ValueError(f"need at least 2 cases to split, got {len(cases)}")
    n_test = min(len(cases) - 1, max(1, round(len(cases) * test_fraction)))
    order = np.random.default_rng(seed).permutation(len(cases))
    test = sorted(cases[i] for i in order[:n_test])
    train = sorted(c for c in cases if c not in test)
    return {"train": train, "test": test}


def check_case(root, case: str, *, require_labels: bool = True, max_spacing_mm: float = 25.0) -> dict:
    """Check one case; return ``{"case", "ok", "problems": [...], ...facts}`` (never raises for bad data).

    Checks: readable 3-D NIfTI without NaN; plausible voxel size; label map present, integer,
    known ids, on the image's grid; which of the 70 regions are missing; and left/right: the
    right-leg labels must lie at larger world x than the left-leg labels (RAS+), else the label
    map (or the image's affine) is mirrored.
    """
    paths = case_paths(root, case)
    image_path = _find(Path(root) / IMAGES, case) or paths["image"]
    problems: list[str] = []
    facts: dict = {"case": case}
    try:
        img = io.load_image(image_path)
    except (ValueError, FileNotFoundError) as exc:
        return {**facts, "ok": False, "problems": [str(exc)]}
    facts["shape"] = list(img.data.shape)
    facts["spacing_mm"] = [round(s, 4) for s in img.spacing_mm]
    facts["orientation"] = "".join(__import__("nibabel").aff2axcodes(img.original_affine))
    if max(img.spacing_mm) > max_spacing_mm:
        problems.append(f"{image_path}: voxel size {facts['spacing_mm']} mm exceeds {max_spacing_mm} mm")
    label_path = _find(Path(root) / LABELS, case)
    if label_path is None:
        if require_labels:
            problems.append(f"{paths['labels']}: missing label map")
        return {**facts, "ok": not problems, "problems": problems}
    try:
        lab = io.load_labels(label_path, reference=img)
    except (ValueError, FileNotFoundError) as exc:
        return {**facts, "ok": False, "problems": problems + [str(exc)]}
    present = set(np.unique(lab.data).tolist()) - {0}
    missing = sorted(set(anatomy.REGIONS) - present)
    facts["n_regions"] = len(present)
    if missing:
        names = ", ".join(anatomy.region_name(m) for m in missing[:5])
        problems.append(f"{label_path}: {len(missing)} of 70 regions missing ({names}{' ...' if len(missing) > 5 else ''})")
    side = _left_right_check(lab.data, lab.affine)
    if side is not None:
        problems.append(f"{label_path}: {side}")
    return {**facts, "ok": not problems, "problems": problems}


def _left_right_check(labels: np.ndarray, affine: np.ndarray) -> str | None:
    """A message if right-leg labels are not at larger world x than left-leg labels (RAS+)."""
    xs = np.arange(labels.shape[0])
    right = labels.astype(np.int32)
    counts_r = (((right >= 1) & (right <= anatomy.N_MUSCLES)).sum(axis=(1, 2)))
    counts_l = ((right > anatomy.N_MUSCLES).sum(axis=(1, 2)))
    if counts_r.sum() == 0 or counts_l.sum() == 0:
        return None
    # Only the x row of the affine matters after canonical reorientation (diagonal-dominant).
    cx_r = float((xs * counts_r).sum() / counts_r.sum())
    cx_l = float((xs * counts_l).sum() / counts_l.sum())
    wx_r = affine[0, 0] * cx_r + affine[0, 3]
    wx_l = affine[0, 0] * cx_l + affine[0, 3]
    if wx_r <= wx_l:
        return (f"left/right look swapped: right-leg labels (1..35) centre at x = {wx_r:.1f} mm, left-leg "
                f"labels (36..70) at x = {wx_l:.1f} mm; in RAS+ the right leg must have the larger x")
    return None


def check_cohort(root, *, require_labels: bool = True) -> list[dict]:
    """``check_case`` for every case under ``root``."""
    return [check_case(root, c, require_labels=require_labels) for c in list_cases(root, require_labels=False)]
