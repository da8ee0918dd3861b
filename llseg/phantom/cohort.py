"""The phantom cohort: one case (a subject acquired under a protocol) and the whole cohort on disk.

Cases are written in the cohort layout every stage reads (``llseg.cohort``): ``images/<case>.nii.gz``,
``labels/<case>.nii.gz`` and ``subjects/<case>.json`` (the subject's parameters and acquisition).
The cohort is deterministic from its settings: case ``i`` is subject ``seed + i``, and the same
settings give the same files bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llseg import io

from . import mrsim
from .model import render_anatomy
from .subject import field_of_view, sample_subject, span_mm

__all__ = ["Case", "make_case", "protocol_mix", "write_cohort"]


@dataclass(frozen=True)
class Case:
    """One generated phantom case: arrays in RAS+ ``(X, Y, Z)`` plus metadata."""

    image: np.ndarray
    labels: np.ndarray
    bias: np.ndarray
    affine: np.ndarray
    meta: dict


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
    bias_strength, noise_sigma, muscle_contrast, texture_strength : float
        See ``mrsim.simulate_image``.
    supersample : int
        Odd number of thin slices per acquired slice.
    """
    if protocol not in mrsim.PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(mrsim.PROTOCOLS)}, got {protocol!r}")
    if supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"supersample must be a positive odd integer, got {supersample!r}")
    proto = mrsim.PROTOCOLS[protocol]
    subject = sample_subject(seed)
    # 200-240 slices in the paper: T12 to ankle plus a small margin.
    n_slices = int(np.clip(math.ceil(span_mm(subject) / proto.slice_mm) + 6, 200, 240))
    shape, spacing = mrsim.acquisition_grid(proto, n_slices=n_slices, downscale=downscale)
    fine_shape = (shape[0], shape[1], shape[2] * supersample)
    fine_spacing = (spacing[0], spacing[1], spacing[2] / supersample)
    fine_affine = field_of_view(subject, matrix_xy=shape[:2], spacing_mm=fine_spacing, n_slices=fine_shape[2])
    labels_f, tissue_f = render_anatomy(subject, fine_affine, fine_shape)
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


def protocol_mix(n_subjects: int, *, seed: int, spiral_fraction: float) -> list[str]:
    """Protocol of each case: "spiral" with probability ``spiral_fraction``, else "cartesian" (seeded)."""
    rng = np.random.default_rng(seed)
    return ["spiral" if u < spiral_fraction else "cartesian" for u in rng.random(n_subjects)]


def _write_case(root, case_id: str, seed: int, settings: dict) -> str:
    """Generate and write one case (a process-pool task)."""
    case = make_case(seed, **settings)
    root = Path(root)
    io.save_nifti(root / "images" / f"{case_id}.nii.gz", case.image, case.affine, dtype=np.float32)
    io.save_nifti(root / "labels" / f"{case_id}.nii.gz", case.labels, case.affine, dtype=np.uint8)
    io.write_json(root / "subjects" / f"{case_id}.json", {**case.meta, "case": case_id})
    return case_id


def write_cohort(out, *, n_subjects: int, seed: int, spiral_fraction: float, downscale: float,
                 bias_strength: float, noise_sigma: float, supersample: int, jobs: int = 2,
                 progress: bool = True) -> list[str]:
    """Generate the phantom cohort into the folder ``out`` (replaced as a whole when done).

    Case ``phantom_{i:03d}`` is subject ``seed + i`` acquired under ``protocol_mix(...)[i]``.

    Parameters
    ----------
    out : str or Path
        Cohort folder; built in a temporary folder beside it and swapped in at the end.
    n_subjects, seed : int
        Number of cases and the seed of the first.
    spiral_fraction : float
        Share of cases acquired with the spiral protocol (the rest Cartesian).
    downscale, bias_strength, noise_sigma, supersample
        See ``make_case``.
    jobs : int
        Cases generated in parallel (processes).
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of str
        The case ids, in order.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    n, seed = int(n_subjects), int(seed)
    protocols = protocol_mix(n, seed=seed, spiral_fraction=float(spiral_fraction))
    settings = [dict(protocol=protocols[i], downscale=float(downscale), bias_strength=float(bias_strength),
                     noise_sigma=float(noise_sigma), supersample=int(supersample)) for i in range(n)]
    cases = [f"phantom_{i:03d}" for i in range(n)]
    with io.atomic_dir(out) as tmp, ProcessPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        futures = [pool.submit(_write_case, tmp, cases[i], seed + i, settings[i]) for i in range(n)]
        for future in tqdm(as_completed(futures), total=n, desc="phantom cohort", unit="case", disable=not progress):
            future.result()
    return cases
