"""Partial phantom cohorts: whole-leg phantom cases cut to a stretch of the leg, with some muscles.

Real cohorts are often thigh-only or calf-only scans labelled for a few muscles. These functions
make such cohorts from the phantom, for the tests and the benchmarks: the cut follows the
subject's own skeleton (``subject.z_of_fraction``), so ``coverage=(0.19, 0.60)`` is this
subject's hip joint to knee joint, as ``llseg.coverage.COVERAGE_PRESETS["thigh"]`` names it.
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from llseg import anatomy, io

from .subject import Subject, z_of_fraction

__all__ = ["slices_of_coverage", "keep_regions", "cut_case", "write_partial_cohort"]


def slices_of_coverage(subject: Subject, affine, n_slices: int, coverage) -> slice:
    """Z slice of an axial RAS+ phantom grid covering ``coverage`` (top, bottom) of the subject's
    T12-to-ankle span; every slice whose centre lies inside, at least one."""
    affine = np.asarray(affine, float)
    top, bottom = (float(c) for c in coverage)
    z_top, z_bottom = z_of_fraction(subject, top), z_of_fraction(subject, bottom)   # world mm, z_top > z_bottom
    k = (np.array([z_bottom, z_top]) - affine[2, 3]) / affine[2, 2]                   # slice coordinates
    start = max(0, int(math.ceil(min(k) - 1e-9)))
    stop = min(n_slices, int(math.floor(max(k) + 1e-9)) + 1)
    if stop <= start:
        raise ValueError(f"coverage {coverage!r} holds no slice of this {n_slices}-slice grid")
    return slice(start, stop)


def keep_regions(labels: np.ndarray, muscles: Iterable[str] | None = None, *, sides=("right", "left")) -> np.ndarray:
    """The label map with only the regions of ``muscles`` (keys; None = all) on ``sides``."""
    keys = [m.key for m in anatomy.MUSCLES] if muscles is None else [anatomy.muscle(k).key for k in muscles]
    keep = np.zeros(anatomy.N_REGIONS + 1, dtype=bool)
    keep[[anatomy.label_id(k, s) for k in keys for s in sides]] = True
    return np.where(keep[labels], labels, 0).astype(labels.dtype)


def cut_case(image: nib.Nifti1Image, labels: nib.Nifti1Image, subject: Subject, coverage,
             muscles: Iterable[str] | None = None, *, sides=("right", "left")
             ) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """One phantom case (as written, axial RAS+) cut to ``coverage``, keeping ``muscles`` on ``sides``.

    The images keep their voxels and world positions (``nibabel`` slicing moves the affine's
    origin); the label map is the same cut with the other regions set to 0.
    """
    sl = slices_of_coverage(subject, image.affine, image.shape[2], coverage)
    img = image.slicer[:, :, sl]
    lab = labels.slicer[:, :, sl]
    data = keep_regions(np.asarray(lab.dataobj), muscles, sides=sides)
    return img, nib.Nifti1Image(data, lab.affine, lab.header)


def write_partial_cohort(src, dst, coverage, muscles: Iterable[str] | None = None, *, sides=("right", "left"),
                         cases: Iterable[str] | None = None, one_sided: dict[str, str] | None = None) -> list[str]:
    """Write a cut phantom cohort (``llseg.cohort`` layout) from a whole-leg one.

    Parameters
    ----------
    src, dst : path
        The phantom cohort (``images/``, ``labels/``, ``subjects/``) and the new folder.
    coverage : (float, float)
        Stretch of the T12 (0) to ankle (1) span kept.
    muscles : iterable of str, optional
        Muscle keys kept in the label maps (None = all).
    sides : tuple of str
        Sides kept.
    cases : iterable of str, optional
        Cases to cut (default: every case of ``src``).
    one_sided : dict of str to str, optional
        Muscle key -> the only side labelled for it (e.g. ``{"gracilis": "right"}``).

    Returns
    -------
    list of str
        The cases written.
    """
    src, dst = Path(src), Path(dst)
    names = sorted(p.name[: -len(".nii.gz")] for p in (src / "images").glob("*.nii.gz")) if cases is None else list(cases)
    for folder in ("images", "labels", "subjects"):
        (dst / folder).mkdir(parents=True, exist_ok=True)
    for case in names:
        meta = io.read_json(src / "subjects" / f"{case}.json")
        subject = Subject(**meta["subject"])
        img, lab = cut_case(nib.load(src / "images" / f"{case}.nii.gz"), nib.load(src / "labels" / f"{case}.nii.gz"),
                            subject, coverage, muscles, sides=sides)
        data = np.asarray(lab.dataobj)
        for key, side in (one_sided or {}).items():
            other = anatomy.label_id(key, "left" if side == "right" else "right")
            data = np.where(data == other, 0, data).astype(data.dtype)
        io.save_nifti(dst / "images" / f"{case}.nii.gz", np.asarray(img.dataobj), img.affine, dtype=img.get_data_dtype())
        io.save_nifti(dst / "labels" / f"{case}.nii.gz", data, lab.affine, dtype=np.uint8)
        shutil.copyfile(src / "subjects" / f"{case}.json", dst / "subjects" / f"{case}.json")
    return names
