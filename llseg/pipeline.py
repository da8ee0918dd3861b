"""The method's file-level steps: one function per ``llseg`` command of the cascade.

Each function takes paths and plain keyword values (the CLI unpacks params.yaml), reads and
writes files only through ``llseg.io`` and calls the array-level modules (``preprocess``,
``stage1``, ``stage2``, ``train``, ``cascade``, ``postprocess``) in between.

Layout of a study (the defaults of the CLI)::

    data/{images,labels}/<case>.nii.gz       cohort (llseg.cohort)
    work/preprocessed/{image,labels,bias}/   study grid + manifest.json    preprocess_cohort
    models/stage1/group_NN.keras (+ .json)   stage-1 networks             train_stage1_group
    models/stage1/box_priors.json            box priors                   write_box_priors
    models/body_profile.json                 body outline along the leg   write_body_profile
    models/stage2/<muscle>.keras (+ .json)   stage-2 networks             train_stage2_muscle
    work/predictions/                        test-case label maps         predict_cases
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from . import io, runinfo

logger = logging.getLogger(__name__)

__all__ = [
    "preprocess_cohort",
    "load_split",
    "train_stage1_group",
    "write_box_priors",
    "write_body_profile",
    "load_body_profile",
    "train_stage2_muscle",
    "write_training_record",
    "load_cascade",
    "predict_cases",
    "segment_scan",
    "live_logger",
]


# ----------------------------------------------------------------------------- preprocessing


def _grid(spacing_mm, fov_mm) -> tuple[tuple[float, float, float], list[int]]:
    """The study grid: voxel size (mm) and in-plane matrix covering ``fov_mm``."""
    spacing = tuple(float(v) for v in spacing_mm)
    return spacing, [int(round(float(f) / sp)) for f, sp in zip(fov_mm, spacing[:2])]


def _case_record(image: io.Volume, result: dict) -> dict:
    """The manifest entry of one case: ``preprocess.preprocess_case``'s scalars and the geometry
    ``preprocess.restore_geometry`` needs to map study-grid labels back into the file's space."""
    record = {k: v for k, v in result.items() if k not in ("image", "labels", "bias", "affine")}
    record.update(affine=result["affine"].tolist(), original_affine=image.original_affine.tolist(),
                  canonical_affine=image.affine.tolist(), canonical_shape=list(image.data.shape))
    return record


def _preprocess_one(data_dir, tmp, case, kwargs) -> dict:
    """One case through ``preprocess.preprocess_case``, written under ``tmp``; returns its
    manifest record."""
    from . import cohort, preprocess

    paths = cohort.case_paths(data_dir, case)
    img = io.load_image(paths["image"])
    lab = io.load_labels(paths["labels"], reference=img)
    result = preprocess.preprocess_case(img.data, lab.data, img.affine, spacing_mm=img.spacing_mm, **kwargs)
    for kind in ("image", "labels", "bias"):
        dtype = np.uint8 if kind == "labels" else np.float32
        io.save_nifti(Path(tmp) / kind / f"{case}.nii.gz", result[kind], result["affine"], dtype=dtype)
    return _case_record(img, result)


def preprocess_cohort(data_dir, out_dir, *, spacing_mm, fov_mm, n4: bool, n4_shrink: int, n4_iterations,
                      test_fraction: float, seed: int, jobs: int | None = None, progress: bool = True) -> dict:
    """Split a cohort and bring every case onto the study grid (paper section 2.1).

    Writes ``out_dir/{image,labels,bias}/<case>.nii.gz`` and ``out_dir/manifest.json``
    (split, grid, and per case the CoV before/after N4 and its geometry) as one atomic folder.
    ``jobs`` cases run at once (processes; None: one per ``preprocess.N4_THREADS`` cores, so
    every core works); 1 runs them one after the other in this process. N4 runs on
    ``preprocess.N4_THREADS`` threads in every case, so the output does not depend on ``jobs``
    or on the machine's core count.

    Returns
    -------
    dict
        The manifest.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from . import cohort, preprocess

    cases = cohort.list_cases(data_dir)
    split = cohort.split_cases(cases, test_fraction=float(test_fraction), seed=int(seed))
    spacing, target_xy = _grid(spacing_mm, fov_mm)
    kwargs = {"target_spacing_mm": spacing, "target_xy": target_xy, "n4": bool(n4), "shrink_factor": int(n4_shrink),
              "iterations": [int(i) for i in n4_iterations]}
    manifest = {"split": split, "spacing_mm": list(spacing), "matrix_xy": target_xy, "cases": {}}
    if jobs is None:
        jobs = max(1, runinfo.usable_cores() // preprocess.N4_THREADS)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    jobs = min(jobs, len(cases))
    bar = tqdm(total=len(cases), desc="preprocess (N4)", unit="case", disable=not progress)
    with io.atomic_dir(out_dir) as tmp:
        if jobs == 1:
            for case in cases:
                manifest["cases"][case] = _preprocess_one(data_dir, tmp, case, kwargs)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {case: pool.submit(_preprocess_one, data_dir, tmp, case, kwargs) for case in cases}
                for case in cases:   # manifest in case order
                    manifest["cases"][case] = futures[case].result()
                    bar.update(1)
        io.write_json(tmp / "manifest.json", manifest)
    bar.close()
    return manifest


def load_split(preprocessed, which: str, *, images: bool = True, labels: bool = True):
    """The preprocessed images and label maps of the ``which`` split ("train" or "test").

    Returns ``(manifest, cases, images, labels)``; a list is None when not asked for. The
    volumes are read through ``io.load_cached`` (uncompressed copies under
    ``<preprocessed>/../cache/<name>``).
    """
    root = Path(preprocessed)
    manifest = io.read_json(root / "manifest.json")
    cases = manifest["split"][which]
    cache = root.parent / "cache" / root.name

    def read(kind, folder):
        return [io.load_cached(root / folder / f"{c}.nii.gz", kind=kind, cache_dir=cache) for c in cases]

    return manifest, cases, read("image", "image") if images else None, read("labels", "labels") if labels else None


# ----------------------------------------------------------------------------- training


def live_logger(directory):
    """A dvclive logger writing TSV plots under ``directory`` (no HTML report, no dvc.yaml
    edits), or a null context when ``directory`` is None."""
    if directory is None:
        return contextlib.nullcontext(None)
    from dvclive import Live

    return Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)


def write_training_record(path, settings: dict, history: dict, *, keep=()) -> Path:
    """Write a network's training record (JSON): ``settings`` plus the outcome of ``history``.

    Parameters
    ----------
    path : str or Path
        The ``.json`` file.
    settings : dict
        What the network was trained with (written as given).
    history : dict
        ``train.fit``'s history: ``seconds``, ``val_dice`` and ``final_loss`` (mean of the
        last 10 losses) are recorded, with the machine (``runinfo.environment``).
    keep : sequence of str
        Further history keys to record as they are (e.g. ``"class_weights"``, ``"n_params"``).
    """
    record = {**settings, **{k: history[k] for k in keep}, "seconds": history["seconds"],
              "final_loss": float(np.mean(history["loss"][-10:])), "val_dice": history["val_dice"],
              "environment": runinfo.environment()}
    return io.write_json(path, record)


def scan_coverages(label_maps, spacing_z_mm: float) -> list[tuple[float, float]]:
    """Each case's coverage of the T12-to-ankle span (``coverage.coverage_of_scan``: whole-leg
    when long enough, else from its labels)."""
    from . import coverage

    return [coverage.coverage_of_scan(lab.shape[2], spacing_z_mm, labels=lab) for lab in label_maps]


def present_regions(label_maps) -> set[int]:
    """Region ids (1..70) present in any of ``label_maps``."""
    present: set[int] = set()
    for lab in label_maps:
        present |= {int(v) for v in np.flatnonzero(np.bincount(lab.ravel(), minlength=1))} - {0}
    return present


def train_stage1_group(preprocessed, out, *, group: int, factor, levels: int, root_filters: int, iterations: int,
                       learning_rate: float, seed: int, validate_every: int, augment_kwargs: dict,
                       class_weight_power: float = 0.0, loss: str = "ce", lr_schedule: str = "constant",
                       live_dir=None, progress: bool = True) -> dict:
    """Train the stage-1 network of ``group`` (1..10) on the training split (paper section 2.2.1).

    Writes the model to ``out`` (.keras) and its training record beside it (.json); the
    curves go to ``live_dir/group_NN`` when ``live_dir`` is given. The group trains with seed
    ``seed + group``; validation is on the test split at low resolution.

    Returns
    -------
    dict
        ``train.fit``'s history.
    """
    from . import anatomy, coverage, stage1, train

    train.use_training_threads()  # before any TensorFlow op
    group = int(group)
    factor = tuple(float(f) for f in factor)
    manifest, _, images, labels = load_split(preprocessed, "train")
    _, _, test_images, test_labels = load_split(preprocessed, "test")
    dz = float(manifest["spacing_mm"][2])
    # A cohort labelled for some muscles trains the group on those; partial scans give each case
    # its own part ranges (the whole-leg cohort: the paper's fixed split, unchanged).
    all_regions = anatomy.group_labels(group)
    regions = tuple(lab for lab in all_regions if lab in present_regions(labels))
    if not regions:
        raise ValueError(f"group {group}: no training case holds any of its regions "
                         f"({', '.join(anatomy.region_name(r) for r in all_regions)}); leave it out of the study")
    coverages = scan_coverages(labels, dz)
    ranges = [coverage.part_ranges_in_view(c, stage1.DEFAULT_PART_RANGES) for c in coverages]
    test_ranges = [coverage.part_ranges_in_view(c, stage1.DEFAULT_PART_RANGES)
                   for c in scan_coverages(test_labels, dz)]
    part = anatomy.GROUPS[group][1]
    shown = [i for i, r in enumerate(test_ranges) if part in r]
    subset = None if regions == all_regions else regions
    if subset is not None and not _mirror_closed(regions):
        augment_kwargs = {**augment_kwargs, "flip_lr": False}   # a one-sided label has no mirror class
        logger.info("group %d: regions labelled on one side only; left-right flips off", group)
    validate = stage1.make_validator([test_images[i] for i in shown], [test_labels[i] for i in shown], group,
                                     part_ranges=[test_ranges[i] for i in shown], factor=factor, regions=subset)
    with live_logger(None if live_dir is None else Path(live_dir) / f"group_{group:02d}") as live:
        model, history = stage1.train_group(
            images, labels, group, part_ranges=ranges, factor=factor, levels=levels, root_filters=root_filters,
            iterations=iterations, learning_rate=learning_rate, seed=seed + group, augment_kwargs=augment_kwargs,
            validate=validate, validate_every=validate_every, live=live, progress=progress,
            class_weight_power=class_weight_power, loss=loss, lr_schedule=lr_schedule, regions=subset)
    out = Path(out)
    io.save_model(model, out)
    settings = {"group": group, "factor": list(factor), "part_ranges": stage1.DEFAULT_PART_RANGES, "levels": levels,
                "root_filters": root_filters, "iterations": iterations, "learning_rate": learning_rate,
                "loss": loss, "lr_schedule": lr_schedule}
    if subset is not None:  # absent key = all of the group's regions (the whole-leg records predate it)
        settings["regions"] = list(subset)
    if any(tuple(c) != coverage.WHOLE for c in coverages):  # absent key = whole-leg training cases only
        settings["trained_on_partial_scans"] = True
    write_training_record(out.with_suffix(".json"), settings, history, keep=("class_weights",))
    return history


def _mirror_closed(regions) -> bool:
    from . import anatomy

    return all(anatomy.mirror_label(r) in regions for r in regions)


def write_box_priors(preprocessed, out) -> dict:
    """Fit the box priors (regions stage 1 misses) on the training label maps; write them to ``out``."""
    from . import box_priors

    _, _, _, labels = load_split(preprocessed, "train", images=False)
    priors = box_priors.fit_box_priors(labels)
    io.write_json(out, priors)
    return priors


def write_body_profile(preprocessed, out) -> dict:
    """The training cases' body outline along the leg (``coverage.reference_body_profile``), from
    which ``llseg segment`` estimates what a short scan without ``--coverage`` covers; written to ``out``."""
    from . import coverage

    manifest, _, images, labels = load_split(preprocessed, "train")
    spacing = [float(s) for s in manifest["spacing_mm"]]
    profiles = [coverage.body_area_profile(image, spacing) for image in images]
    reference = coverage.reference_body_profile(profiles, scan_coverages(labels, spacing[2]), spacing[2])
    record = {"fractions": [round(float(u), 6) for u in coverage.PROFILE_GRID],
              "area_mm2": [None if np.isnan(a) else round(float(a), 1) for a in reference],
              "n_cases": len(images), "spacing_mm": spacing}
    io.write_json(out, record)
    return record


def load_body_profile(path) -> np.ndarray | None:
    """``write_body_profile``'s reference (NaN where no case covered it), or None when ``path``
    does not exist (models trained before it: short scans then need ``--coverage``)."""
    from . import coverage

    path = Path(path)
    if not path.exists():
        return None
    record = io.read_json(path)
    if not np.allclose(record["fractions"], coverage.PROFILE_GRID, atol=1e-6):
        raise ValueError(f"{path}: sampled at other fractions of the leg than this llseg expects; "
                         "rerun `llseg body-profile`")
    return np.array([np.nan if a is None else a for a in record["area_mm2"]], float)


def train_stage2_muscle(preprocessed, out, *, muscle: str, levels: int, root_filters: int, iterations: int,
                        learning_rate: float, seed: int, validate_every: int, max_voxels: int, ratio_range,
                        augment_kwargs: dict, class_weight_power: float = 0.0, loss: str = "ce",
                        lr_schedule: str = "constant", live_dir=None, progress: bool = True) -> dict:
    """Train the stage-2 network of one muscle, both sides (the left mirrored), on the training
    split (paper section 2.2.2).

    The input size follows the muscle's training boxes (``stage2.input_size_for``). Writes the
    model to ``out`` (.keras) and its training record beside it (.json); the curves go to
    ``live_dir/<muscle>`` when ``live_dir`` is given.

    Returns
    -------
    dict
        ``train.fit``'s history plus ``input_size``.
    """
    from . import anatomy, models, stage2, train

    train.use_training_threads()  # before any TensorFlow op
    key = anatomy.muscle(muscle).key
    ratio_range = tuple(float(r) for r in ratio_range)
    _, _, images, labels = load_split(preprocessed, "train")
    _, _, test_images, test_labels = load_split(preprocessed, "test")
    size = stage2.input_size_for(stage2.muscle_box_sizes(labels, key), max_voxels=max_voxels,
                                 divisor=2 ** (levels - 1), mean_ratio=sum(ratio_range) / 2)
    sampler = stage2.make_sampler(images, labels, key, size=size, ratio_range=ratio_range,
                                  augment_kwargs=augment_kwargs)
    validate = stage2.make_validator(test_images, test_labels, key, size=size)
    import keras

    keras.utils.set_random_seed(seed)
    model = models.build_model("unet", (*size, 1), 2, levels=levels, root_filters=root_filters)
    with live_logger(None if live_dir is None else Path(live_dir) / key) as live:
        history = train.fit(model, sampler, iterations=iterations, learning_rate=learning_rate, seed=seed,
                            validate=validate, validate_every=validate_every, live=live, progress=progress,
                            class_weight_power=class_weight_power, loss=loss, lr_schedule=lr_schedule)
    out = Path(out)
    io.save_model(model, out)
    write_training_record(out.with_suffix(".json"), {
        "muscle": key, "input_size": list(size), "levels": levels, "root_filters": root_filters,
        "iterations": iterations, "learning_rate": learning_rate, "ratio_range": list(ratio_range), "loss": loss,
        "lr_schedule": lr_schedule}, history, keep=("class_weights",))
    return {**history, "input_size": tuple(size)}


# ----------------------------------------------------------------------------- inference


def _trained(folder: Path, stems) -> list:
    """The networks a models folder holds: those with a ``.keras`` or ``.json`` file (a cohort
    labelled for some muscles trains only those); all of them when it holds none (so a missing
    file is reported by name)."""
    held = [s for s in stems if (folder / f"{s}.keras").exists() or (folder / f"{s}.json").exists()]
    return held or list(stems)


def check_models_folder(models_dir) -> Path:
    """``models_dir`` as a Path, if it has ``stage1/`` and ``stage2/`` (checked before Keras is
    imported: a missing folder is one clear line)."""
    root = Path(models_dir)
    for sub in ("stage1", "stage2"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub}: no such folder, so no trained models (run `make study` or `dvc repro` first)")
    return root


def load_cascade(models_dir, *, groups=None, muscles=None):
    """The trained cascade under ``models_dir``: ``(stage1 models {group: model}, stage2 models
    {muscle key: model}, box priors, stage-1 training record)``.

    The stage-1 record gains ``regions_by_group`` ({group: regions}, for groups trained on some
    of their regions only) and ``trained_on_partial_scans`` (any group). Groups and muscles without a network are left out (logged);
    ``groups`` (ints) and ``muscles`` (keys), when given, are the networks to load (the study's
    ``stage1_groups`` / ``stage2_muscles``: files left from another cohort are ignored).
    """
    from . import anatomy

    root = check_models_folder(models_dir)
    groups = (_trained(root / "stage1", [f"group_{g:02d}" for g in anatomy.GROUPS]) if groups is None
              else [f"group_{int(g):02d}" for g in groups])
    keys = _trained(root / "stage2", [m.key for m in anatomy.MUSCLES]) if muscles is None else list(muscles)
    s1 = {int(g[-2:]): io.load_model(root / "stage1" / f"{g}.keras") for g in groups}
    records = {g: io.read_json(root / "stage1" / f"group_{g:02d}.json") for g in s1}
    record1 = dict(records[min(records)])
    record1["regions_by_group"] = {g: tuple(r["regions"]) for g, r in records.items() if "regions" in r}
    record1["trained_on_partial_scans"] = any(r.get("trained_on_partial_scans", False) for r in records.values())
    priors = io.read_json(root / "stage1" / "box_priors.json")
    s2 = {k: io.load_model(root / "stage2" / f"{k}.keras") for k in keys}
    untrained = [m.key for m in anatomy.MUSCLES if m.key not in s2]
    if untrained:
        logger.warning("%s: no stage-2 network for %d muscle(s): %s", root, len(untrained), ", ".join(untrained))
    return s1, s2, priors, record1


def _cascade_kwargs(record1: dict, priors: dict, *, n_tta_boxes, ratio_range, seed, threshold,
                    closing_radius_vox, cut_padding: str = "edge") -> dict:
    """``cascade.run_cascade``'s options: the grid of stage 1's training, the inference settings.

    ``cut_padding`` applies to networks trained on whole-leg scans; those trained on partial
    scans learned cut parts and muscles as they are, so they get ``"none"``.
    """
    if record1.get("trained_on_partial_scans") and cut_padding != "none":
        logger.info("models trained on partial scans: cut ends of a partial scan are not padded")
        cut_padding = "none"
    return dict(priors=priors, part_ranges={k: tuple(v) for k, v in record1["part_ranges"].items()},
                cut_padding=cut_padding,
                factor=tuple(record1["factor"]), regions_by_group=record1.get("regions_by_group", {}),
                n_boxes=int(n_tta_boxes),
                ratio_range=tuple(float(r) for r in ratio_range), seed=int(seed), threshold=float(threshold),
                closing_radius_vox=tuple(int(r) for r in closing_radius_vox))


def _write_label_tables(ctbl, itksnap) -> None:
    """The 3D Slicer colour table (``ctbl``) and the ITK-SNAP label descriptions (``itksnap``)."""
    from . import export

    io.write_text(ctbl, export.slicer_color_table(title=Path(ctbl).name))
    io.write_text(itksnap, export.itksnap_label_descriptions())


def _timing_table(summary: dict) -> str:
    from .cascade import PAPER_SECONDS

    rows = [("stage 1, per group", summary["mean_seconds_per_group"], PAPER_SECONDS["stage1_per_group"]),
            ("stage 2, per muscle (both sides, all TTA boxes)", summary["mean_seconds_per_muscle"],
             PAPER_SECONDS["stage2_per_muscle"]),
            ("whole case (both stages + postprocessing)", summary["mean_seconds_per_case"], PAPER_SECONDS["per_case"])]
    lines = ["| step | this run (s, CPU) | paper (s, one GPU) |", "|---|---|---|"]
    lines += [f"| {name} | {ours:.1f} | {lo:.0f}-{hi:.0f} |" for name, ours, (lo, hi) in rows]
    return "\n".join(lines) + f"\n\nVoxel size here: {summary['spacing_mm']} mm (paper: 1 x 1 x 5 mm).\n"


def predict_cases(preprocessed, models_dir, out_dir, *, metrics_path, tables_dir, n_tta_boxes: int, ratio_range,
                  seed: int, threshold: float, closing_radius_vox, stage1_groups=None, stage2_muscles=None,
                  progress: bool = True) -> dict:
    """Segment every test case with the cascade (paper Fig. 1) and time it (section 2.2.3).

    Writes, under ``out_dir``: ``study/<case>_stage1.nii.gz``, ``study/<case>_stage2.nii.gz``
    (study grid, for ``llseg evaluate``), ``study/<case>_boxes.json``, ``labels/<case>.nii.gz``
    (the case's own grid and orientation) and one pair of colour tables; ``metrics_path``
    (timings, estimated boxes per case and the machine; the Dice is ``llseg evaluate``'s) and
    ``tables_dir/timing.{csv,md}``.

    Returns
    -------
    dict
        The summary written to ``metrics_path`` (without the per-case rows).
    """
    from tqdm.auto import tqdm

    from . import cascade, preprocess

    manifest, cases, images, test_labels = load_split(preprocessed, "test")
    coverages = scan_coverages(test_labels, float(manifest["spacing_mm"][2]))   # whole leg, or from the labels
    del test_labels
    s1, s2, priors, record1 = load_cascade(models_dir, groups=stage1_groups, muscles=stage2_muscles)
    kwargs = _cascade_kwargs(record1, priors, n_tta_boxes=n_tta_boxes, ratio_range=ratio_range, seed=seed,
                             threshold=threshold, closing_radius_vox=closing_radius_vox)
    out = Path(out_dir)
    timing, boxes = [], []
    for case, image, scan_coverage in tqdm(list(zip(cases, images, coverages)), desc="segment test cases",
                                           unit="case", disable=not progress):
        record = manifest["cases"][case]
        res = cascade.run_cascade(s1, s2, image, scan_coverage=scan_coverage, **kwargs)
        absent = res["stage1"]["absent"]   # regions without a box: outside the view, unplaced, untrained
        affine = np.asarray(record["affine"])
        io.save_nifti(out / "study" / f"{case}_stage1.nii.gz", res["stage1"]["labels"], affine, dtype=np.uint8)
        io.save_nifti(out / "study" / f"{case}_stage2.nii.gz", res["labels"], affine, dtype=np.uint8)
        boxes_record = {"boxes": {str(k): v.tolist() for k, v in res["stage1"]["boxes"].items()},
                        "estimated": {str(k): v for k, v in res["stage1"]["estimated"].items()}}
        if absent:  # a partial scan or cohort (a whole-leg case with all networks has none)
            boxes_record.update(coverage=list(scan_coverage), absent={str(k): v for k, v in absent.items()})
        io.write_json(out / "study" / f"{case}_boxes.json", boxes_record)
        _, original = preprocess.restore_geometry(res["labels"], record)
        io.save_nifti(out / "labels" / f"{case}.nii.gz", original, np.asarray(record["original_affine"]),
                      dtype=np.uint8)
        boxes.append({"case": case, "n_estimated_boxes": len(res["stage1"]["estimated"]),
                      **({"n_absent_regions": len(absent)} if absent else {})})
        timing.append({"case": case, "seconds_total": res["seconds"],
                       "seconds_stage1": sum(res["stage1"]["seconds_per_group"].values()),
                       "seconds_stage2": sum(res["stage2"]["seconds_per_muscle"].values()),
                       "seconds_postprocess": res["stage2"]["seconds_postprocess"],
                       "seconds_per_group_mean": float(np.mean(list(res["stage1"]["seconds_per_group"].values()))),
                       "seconds_per_muscle_mean": float(np.mean(list(res["stage2"]["seconds_per_muscle"].values())))})
    _write_label_tables(out / "llseg_labels.ctbl", out / "llseg_itksnap.txt")  # one pair for all labels/*.nii.gz
    summary = {"n_test_cases": len(cases), "spacing_mm": list(manifest["spacing_mm"]),
               "mean_seconds_per_case": float(np.mean([t["seconds_total"] for t in timing])),
               "mean_seconds_per_group": float(np.mean([t["seconds_per_group_mean"] for t in timing])),
               "mean_seconds_per_muscle": float(np.mean([t["seconds_per_muscle_mean"] for t in timing]))}
    io.write_json(metrics_path, {**summary, "cases": boxes, "environment": runinfo.environment()})
    io.write_csv(Path(tables_dir) / "timing.csv", timing)
    io.write_text(Path(tables_dir) / "timing.md", _timing_table(summary))
    return summary


def region_status(stage1_absent, labels, stage2_models) -> dict[int, str]:
    """The regions of a final label map whose volume is unknown, with the reason: stage 1's
    (``cascade.run_stage1(...)["absent"]``: outside the field of view, not placed, no network)
    or no stage-2 network. A region stage 2 segmented nothing of is not listed (volume 0)."""
    from . import anatomy, cascade

    present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=anatomy.N_REGIONS + 1)).tolist())
    status = {lab: reason for lab, reason in stage1_absent.items() if lab not in present}
    for lab in anatomy.REGIONS:
        if lab not in present and lab not in status and anatomy.muscle_of_label(lab).key not in stage2_models:
            status[lab] = cascade.NOT_TRAINED
    return dict(sorted(status.items()))


SEGMENT_STEPS = ("load", "preprocess", "stage 1", "stage 2", "postprocess", "write")


@contextlib.contextmanager
def _steps(names, *, desc: str, progress: bool):
    """A tqdm bar over named steps; yields ``step(name)``, which finishes the previous step and
    names the next. The bar shows on a terminal only and is cleared when a step fails, so an
    error stays one line."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(names), desc=desc, unit="step", disable=None if progress else True)
    started = []

    def step(name):
        if started:
            bar.update(1)
        started.append(name)
        bar.set_postfix_str(name)

    try:
        yield step
        bar.update(1)
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()


def segment_scan(image, out_path, models_dir, *, spacing_mm, fov_mm, n4: bool, n4_shrink: int, n4_iterations,
                 n_tta_boxes: int, ratio_range, seed: int, threshold: float, closing_radius_vox,
                 scan_coverage=None, cut_padding: str = "edge", progress: bool = True) -> dict:
    """Segment one NIfTI scan with the trained cascade, in the scan's own grid and orientation.

    ``image`` is the scan's path, or the scan already read by ``io.load_image`` (not read again).
    ``scan_coverage`` says which stretch of the leg it covers (``coverage.parse_coverage``: a
    preset such as ``"thigh"`` or ``(top, bottom)``); None = whole leg, or for a scan shorter than
    ``coverage.WHOLE_LEG_MIN_MM`` an estimate from its body outline (``coverage.coverage_of_scan``
    with the models' ``body_profile.json``; an error without one). Regions outside it are reported absent;
    ``cut_padding`` is ``cascade.run_stage1``'s (``"none"`` for models trained on partial scans).

    Writes ``out_path`` (the 70-region label map) and beside it ``<stem>_volumes.csv``
    (``export.volume_table``), ``<stem>_contours.json`` (world-space contours),
    ``<stem>.ctbl`` (3D Slicer) and ``<stem>_itksnap.txt`` (ITK-SNAP).

    Returns
    -------
    dict
        ``n_regions`` found, ``coverage``, ``coverage_source`` (``coverage.coverage_of_scan``),
        ``absent`` {region label: reason},
        ``seconds_preprocess``, ``seconds_stage1`` and ``seconds_stage2`` (networks and merging).
    """
    from . import cascade, contours, coverage, export, preprocess

    out = Path(out_path)
    image_path = Path(image.path if isinstance(image, io.Volume) else image)
    with _steps(SEGMENT_STEPS, desc=f"segment {image_path.name}", progress=progress) as step:
        step("load")
        img = image if isinstance(image, io.Volume) else io.load_image(image_path)
        if not out.name.endswith((".nii", ".nii.gz")):
            raise ValueError(f"{out}: output must end in .nii or .nii.gz")
        if out.resolve() == image_path.resolve():
            raise ValueError(f"{out}: refusing to overwrite the input image; choose another output path")
        if min(img.data.shape) < 2:
            raise ValueError(f"{image_path}: a 3-D volume needs at least 2 voxels on every axis, "
                             f"got shape {img.data.shape}")
        root = check_models_folder(models_dir)      # cheap checks first: a missing folder, a short scan
        body_reference = load_body_profile(root / "body_profile.json")
        # A short scan without --coverage: estimated from its outline after preprocessing, if the models can.
        from_outline = (scan_coverage is None and body_reference is not None
                        and img.data.shape[2] * img.spacing_mm[2] < coverage.WHOLE_LEG_MIN_MM)
        if not from_outline:
            try:
                scan_coverage, coverage_source = coverage.coverage_of_scan(
                    img.data.shape[2], img.spacing_mm[2], coverage=scan_coverage, return_source=True)
            except ValueError as exc:
                raise ValueError(f"{image_path}: {exc}") from None
        s1, s2, priors, record1 = load_cascade(models_dir)
        kwargs = _cascade_kwargs(record1, priors, n_tta_boxes=n_tta_boxes, ratio_range=ratio_range, seed=seed,
                                 threshold=threshold, closing_radius_vox=closing_radius_vox, cut_padding=cut_padding)

        step("preprocess")
        spacing, target_xy = _grid(spacing_mm, fov_mm)
        t0 = time.perf_counter()
        try:
            pre = preprocess.preprocess_case(img.data, None, img.affine, spacing_mm=img.spacing_mm,
                                             target_spacing_mm=spacing, target_xy=target_xy, n4=bool(n4),
                                             shrink_factor=int(n4_shrink), iterations=[int(i) for i in n4_iterations])
        except (ValueError, RuntimeError) as exc:  # SimpleITK reports through RuntimeError
            raise ValueError(f"{image_path}: cannot preprocess: {str(exc).splitlines()[0]}") from None
        t_pre = time.perf_counter() - t0
        if from_outline:
            profile = coverage.body_area_profile(pre["image"], spacing)
            try:
                scan_coverage, coverage_source = coverage.coverage_of_scan(
                    pre["image"].shape[2], spacing[2], profile=profile, reference=body_reference, return_source=True)
            except ValueError as exc:
                raise ValueError(f"{image_path}: {exc}") from None

        step("stage 1")
        found = cascade.run_stage1(s1, pre["image"], priors=kwargs["priors"], part_ranges=kwargs["part_ranges"],
                                   factor=kwargs["factor"], scan_coverage=scan_coverage,
                                   regions_by_group=kwargs["regions_by_group"], cut_padding=kwargs["cut_padding"],
                                   view_margin=coverage.ESTIMATE_VIEW_MARGIN if from_outline else 0.0)
        step("stage 2")
        res = cascade.run_stage2(s2, pre["image"], found["boxes"], n_boxes=kwargs["n_boxes"],
                                 ratio_range=kwargs["ratio_range"], seed=kwargs["seed"],
                                 threshold=kwargs["threshold"], closing_radius_vox=kwargs["closing_radius_vox"],
                                 scan_coverage=scan_coverage, cut_padding=kwargs["cut_padding"])

        step("postprocess")
        canonical, original = preprocess.restore_geometry(res["labels"], _case_record(img, pre))
        absent = region_status(found["absent"], res["labels"], s2)
        volumes = export.volume_table({image_path.name: (canonical, img.spacing_mm)},
                                      absent={image_path.name: absent})
        region_contours = contours.contours_from_labels(canonical, img.spacing_mm, img.affine)

        step("write")
        stem = out.name[: -len(".nii.gz")] if out.name.endswith(".nii.gz") else out.stem
        io.save_nifti(out, original, img.original_affine, dtype=np.uint8)
        io.write_csv(out.with_name(f"{stem}_volumes.csv"), volumes, fieldnames=export.VOLUME_COLUMNS)
        io.write_json(out.with_name(f"{stem}_contours.json"), region_contours)
        _write_label_tables(out.with_name(f"{stem}.ctbl"), out.with_name(f"{stem}_itksnap.txt"))
    return {"n_regions": len(np.unique(canonical)) - 1, "coverage": scan_coverage, "coverage_source": coverage_source,
            "absent": absent,
            "seconds_preprocess": t_pre,
            "seconds_stage1": sum(found["seconds_per_group"].values()),
            "seconds_stage2": sum(res["seconds_per_muscle"].values()) + res["seconds_postprocess"]}
