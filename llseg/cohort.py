"""The cohort: the on-disk layout every stage reads, the train/test split, and the checks a real
cohort must pass (the phantom, ``llseg.phantom``, writes its cases in the same layout).

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
from pathlib import Path

import numpy as np

from . import anatomy, guards, io

__all__ = [
    "IMAGES",
    "LABELS",
    "SUBJECTS",
    "case_paths",
    "list_cases",
    "split_cases",
    "check_case",
    "check_cohort",
]

log = logging.getLogger(__name__)

IMAGES, LABELS, SUBJECTS = "images", "labels", "subjects"


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


def check_case(root, case: str, *, require_labels: bool = True, max_spacing_mm: float = guards.MAX_SPACING_MM) -> dict:
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
    except (ValueError, TypeError, OSError) as exc:   # OSError includes FileNotFoundError
        return {**facts, "ok": False, "problems": [str(exc)]}
    facts["shape"] = list(img.data.shape)
    facts["spacing_mm"] = [round(s, 4) for s in img.spacing_mm]
    facts["orientation"] = "".join(__import__("nibabel").aff2axcodes(img.original_affine))
    try:  # constant image, voxel size beyond the kit's range, a label map in images/
        guards.check_image_content(img, max_spacing_mm=max_spacing_mm)
    except ValueError as exc:
        problems.append(str(exc).replace("; pass --allow-label-like if it really is an image", ""))
    label_path = _find(Path(root) / LABELS, case)
    if label_path is None:
        if require_labels:
            problems.append(f"{paths['labels']}: missing label map")
        return {**facts, "ok": not problems, "problems": problems}
    try:
        lab = io.load_labels(label_path, reference=img)
    except (ValueError, TypeError, OSError) as exc:
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
    """``check_case`` for every case under ``root``, then one bad entry per label map without an image."""
    cases = list_cases(root, require_labels=False)
    results = [check_case(root, c, require_labels=require_labels) for c in cases]
    folder = Path(root) / LABELS
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            case = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem
            if p.name.endswith((".nii.gz", ".nii")) and case not in cases:
                results.append({"case": case, "ok": False, "problems": [
                    f"{p}: label map without an image (no {Path(root) / IMAGES / case}.nii.gz or .nii)"]})
    return results
