"""The cohort: the on-disk layout every stage reads, the train/test split, and the checks a real
cohort must pass (the phantom, ``llseg.phantom``, writes its cases in the same layout).

Layout (a real cohort uses the same)::

    data/
      images/<case>.nii.gz     3-D MR image, any orientation (reoriented to RAS+ on load)
      labels/<case>.nii.gz     label map, same grid; ids 0 and 1..70 (llseg.anatomy)
      subjects/<case>.json     optional sidecar (the phantom writes its subject parameters)

``<case>`` is any file-name-safe id; images without a label map are allowed only for
``llseg segment``, not for training or evaluation.

Partial label maps
------------------
A label map may hold any subset of the 70 regions (some muscles, one side only, a thigh-only or
calf-only scan): the kit trains the muscles the cohort has and scores only what each case's
ground truth labels. ``check_case`` lists the regions present; ``regions_by_training_cases``
finds the regions too rare in the training split to be trained.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
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
    "MIN_TRAINING_CASES",
    "check_case",
    "check_cohort",
    "describe_regions",
    "describe_training",
    "regions_by_training_cases",
    "trainable_networks",
]

log = logging.getLogger(__name__)

IMAGES, LABELS, SUBJECTS = "images", "labels", "subjects"

#: A region must be labelled in at least this many training cases to be trained. One case gives a
#: network one subject's anatomy: its stage-2 input size, its box prior (``box_priors``) and every
#: crop it sees come from that subject, so it learns the subject rather than the muscle (and a
#: one-case box prior has no spread). Two is the fewest from which anything varies between subjects.
MIN_TRAINING_CASES = 2


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
    known ids, on the image's grid, holding at least one region; and left/right: each muscle
    labelled on both legs must have its right region (id 1..35) at larger world x than its left
    one (RAS+), else the label map (or the image's affine) is mirrored.

    Returns
    -------
    dict
        ``case``, ``ok``, ``problems`` and, as far as the files could be read, ``shape``,
        ``spacing_mm``, ``orientation``, ``n_regions``, ``regions_present`` (sorted ids),
        ``labels`` (``describe_regions`` of them) and ``left_right`` (how the sides were checked).

    Notes
    -----
    A label map may hold any subset of the regions: a missing region is a fact, not a problem.
    The left/right check compares each muscle present on both sides with itself, so muscles
    labelled on one side only never enter it; a map without any such pair falls back to the
    centre of all right-side labels against that of all left-side labels (still sound: every
    right-leg region lies right of every left-leg one), and a map with labels on one side only
    cannot be checked (said in ``left_right``).
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
    counts, centres = _region_centres(lab.data)
    present = [int(k) for k in np.flatnonzero(counts[1:]) + 1]
    facts["n_regions"] = len(present)
    facts["regions_present"] = present
    facts["labels"] = describe_regions(present)
    if not present:
        problems.append(f"{label_path}: empty label map (no voxel holds a muscle id 1..{anatomy.N_REGIONS})")
        return {**facts, "ok": False, "problems": problems}
    world_x = centres @ lab.affine[0, :3] + lab.affine[0, 3]     # (71,) world x of each region's centre, mm
    side, facts["left_right"] = _left_right_check(present, counts, world_x)
    if side is not None:
        problems.append(f"{label_path}: {side}")
    return {**facts, "ok": not problems, "problems": problems}


def _region_centres(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count ``(71,)`` and voxel-index centre ``(71, 3)`` of every id 0..70 (NaN where absent),
    from one ``bincount`` per slab along each axis (no full-size temporary)."""
    n = anatomy.N_REGIONS + 1
    counts, sums = np.zeros(n), np.zeros((n, 3))
    for axis in range(3):
        per = np.stack([np.bincount(s.ravel(), minlength=n)[:n]
                        for s in np.moveaxis(labels, axis, 0)])      # (size along axis, 71)
        sums[:, axis] = np.arange(per.shape[0]) @ per
        counts = per.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, sums / counts[:, None]


def _left_right_check(present: Sequence[int], counts: np.ndarray, world_x: np.ndarray) -> tuple[str | None, str]:
    """(A message if the sides look swapped, else None; how the check was made).

    Each muscle labelled on both legs is compared with itself (right region at larger world x,
    RAS+). Without such a muscle, the voxel-weighted centre of all right-side regions is compared
    with that of all left-side regions."""
    n = anatomy.N_MUSCLES
    right = [k for k in present if k <= n]
    left = [k for k in present if k > n]
    pairs = [k for k in right if k + n in left]
    if pairs:
        swapped = [k for k in pairs if world_x[k] <= world_x[k + n]]
        how = f"checked on the {len(pairs)} muscle(s) labelled on both sides"
        if not swapped:
            return None, how
        if len(swapped) == len(pairs):
            r, l = (float(np.average(world_x[ids], weights=counts[ids])) for ids in
                    (np.array(pairs), np.array(pairs) + n))
            return (f"left/right look swapped: right-leg labels (1..35) centre at x = {r:.1f} mm, left-leg "
                    f"labels (36..70) at x = {l:.1f} mm; in RAS+ the right leg must have the larger x "
                    f"({how})"), how
        named = ", ".join(f"{anatomy.muscle_of_label(k).key} (right x = {world_x[k]:.1f} mm, left x = "
                          f"{world_x[k + n]:.1f} mm)" for k in swapped[:5])
        return (f"left/right look swapped for {len(swapped)} of {len(pairs)} muscles labelled on both sides: "
                f"{named}{' ...' if len(swapped) > 5 else ''}; in RAS+ the right region must have the larger x"), how
    if right and left:
        r, l = (float(np.average(world_x[ids], weights=counts[ids])) for ids in (np.array(right), np.array(left)))
        how = "checked on the centres of all right-side against all left-side labels (no muscle on both sides)"
        if r <= l:
            return (f"left/right look swapped: right-leg labels (1..35) centre at x = {r:.1f} mm, left-leg "
                    f"labels (36..70) at x = {l:.1f} mm; in RAS+ the right leg must have the larger x"), how
        return None, how
    return None, f"not checked: {'right' if right else 'left'}-side labels only"


def describe_regions(present: Iterable[int]) -> str:
    """One line on which regions a label map holds, e.g. ``"14 of 70 regions: 7 muscles both sides
    (adductor_brevis, ...), semitendinosus right only"``.

    Parameters
    ----------
    present : iterable of int
        Region ids (1..70) present.

    Returns
    -------
    str
        The count of regions, then the muscles labelled on both sides, on the right only and
        on the left only (keys in Table-1 order; more than half of the 35 are named by the
        muscles they lack, "all but ...").

    Raises
    ------
    ValueError
        An id outside 1..70.
    """
    ids = sorted({int(k) for k in present})
    bad = [k for k in ids if k not in anatomy.REGIONS]
    if bad:
        raise ValueError(f"present: region ids must be in 1..{anatomy.N_REGIONS}, got {bad}")
    n = anatomy.N_MUSCLES
    sides = {m.key: (m.right_label in ids, m.left_label in ids) for m in anatomy.MUSCLES}
    groups = {"both sides": [k for k, (r, l) in sides.items() if r and l],
              "right only": [k for k, (r, l) in sides.items() if r and not l],
              "left only": [k for k, (r, l) in sides.items() if l and not r]}
    head = f"{len(ids)} of {anatomy.N_REGIONS} regions"
    if len(groups["both sides"]) == n:
        return f"{head}: all {n} muscles both sides"
    parts = [keys[0] + f" {where}" if len(keys) == 1 else f"{len(keys)} muscles {where} ({_names(keys)})"
             for where, keys in groups.items() if keys]
    return f"{head}: " + ", ".join(parts) if parts else f"{head}: no muscle"


def describe_training(found: Mapping) -> str:
    """One line on ``regions_by_training_cases`` output, e.g. ``"muscles trained: 7 of 35
    (adductor_brevis, ...); absent from the cohort: 28"``."""
    trained, absent = found["muscles_trained"], found["muscles_absent"]
    names = "" if len(trained) in (0, anatomy.N_MUSCLES) else f" ({_names(trained)})"
    lacking = f" ({_names(absent)})" if 0 < len(absent) <= anatomy.N_MUSCLES // 2 else ""
    return (f"muscles trained: {len(trained)} of {anatomy.N_MUSCLES}{names}; "
            f"absent from the cohort: {len(absent)}{lacking}")


def _names(keys: Sequence[str], *, limit: int = 6) -> str:
    """Muscle keys, compactly: ``"a, b, c"``, ``"a, b, ..., f, ..."`` or ``"all but x, y"`` (more
    than half of the 35, few lacking)."""
    lacking = [m.key for m in anatomy.MUSCLES if m.key not in keys]
    if len(keys) > anatomy.N_MUSCLES // 2 and len(lacking) <= limit:
        return f"all but {', '.join(lacking)}"
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def regions_by_training_cases(present: Mapping[str, Iterable[int]], train: Sequence[str] | None = None, *,
                              min_training_cases: int = MIN_TRAINING_CASES) -> dict:
    """Which regions the training split can train: in how many training cases each region is labelled.

    Parameters
    ----------
    present : mapping of str to iterable of int
        Case id -> the region ids (1..70) its label map holds (``check_case``'s
        ``regions_present``), for every case whose labels could be read.
    train : sequence of str, optional
        The training cases (``split_cases(...)["train"]``); None counts over all cases of
        ``present`` (no split known).
    min_training_cases : int, optional
        Fewest training cases a region must be labelled in (default ``MIN_TRAINING_CASES``).

    Returns
    -------
    dict
        ``n_cases``, ``n_training_cases``, ``min_training_cases``;
        ``regions_by_training_cases``: one entry per region labelled in any case, Table-1 order
        (right, then left), ``{"label", "region", "n_cases", "n_training_cases"}``;
        ``muscles_trained`` (keys: at least one side trainable), ``muscles_absent`` (keys: in no
        case at all); ``problems``: one line per region labelled somewhere but in fewer than
        ``min_training_cases`` training cases (it cannot be trained, yet a test case labels it).

    Raises
    ------
    ValueError
        ``min_training_cases`` below 1, a training case missing from ``present``, or a region
        id outside 1..70.
    """
    if isinstance(min_training_cases, bool) or not isinstance(min_training_cases, (int, np.integer)) \
            or min_training_cases < 1:
        raise ValueError(f"min_training_cases must be an int >= 1, got {min_training_cases!r}")
    sets = {str(c): {int(k) for k in ids} for c, ids in present.items()}
    bad = sorted({k for ids in sets.values() for k in ids} - set(anatomy.REGIONS))
    if bad:
        raise ValueError(f"present: region ids must be in 1..{anatomy.N_REGIONS}, got {bad}")
    train = sorted(sets) if train is None else [str(c) for c in train]
    unknown = [c for c in train if c not in sets]
    if unknown:
        raise ValueError(f"train: case(s) {unknown} have no regions_present (unreadable labels?)")
    entries, problems, trained = [], [], set()
    order = [m.right_label for m in anatomy.MUSCLES] + [m.left_label for m in anatomy.MUSCLES]
    for label in order:
        n_all = sum(label in ids for ids in sets.values())
        if not n_all:
            continue
        n_train = sum(label in sets[c] for c in train)
        entries.append({"label": label, "region": anatomy.region_name(label), "n_cases": n_all,
                        "n_training_cases": n_train})
        if n_train >= min_training_cases:
            trained.add(anatomy.muscle_of_label(label).key)
        else:
            problems.append(f"{anatomy.region_name(label)} (label {label}) is labelled in {n_all} case(s) but only "
                            f"{n_train} training case(s); training needs at least {min_training_cases}")
    labelled = {anatomy.muscle_of_label(e["label"]).key for e in entries}
    return {"n_cases": len(sets), "n_training_cases": len(train), "min_training_cases": int(min_training_cases),
            "regions_by_training_cases": entries,
            "muscles_trained": [m.key for m in anatomy.MUSCLES if m.key in trained],
            "muscles_absent": [m.key for m in anatomy.MUSCLES if m.key not in labelled],
            "problems": problems}


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


def trainable_networks(trainable: Mapping) -> dict:
    """The stage-1 groups and stage-2 muscles a cohort can train, from :func:`regions_by_training_cases`.

    Returns
    -------
    dict
        ``stage1_groups``: two-digit group ids ("01".."10") holding a trainable muscle;
        ``stage2_muscles``: trainable muscle keys, Table-1 order.
    """
    keys = [m.key for m in anatomy.MUSCLES if m.key in set(trainable["muscles_trained"])]
    groups = sorted({anatomy.muscle(k).group for k in keys})
    return {"stage1_groups": [f"{g:02d}" for g in groups], "stage2_muscles": keys}
