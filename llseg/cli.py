"""The ``llseg`` command: the edge where params.yaml, argv and files meet the library.

Each subcommand reads its params.yaml section once, unpacks plain values and calls library
functions with keyword arguments. Errors about bad input are printed as one clear line naming
the file and the problem, with exit status 1 and no partial output.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # before anything can import TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

log = logging.getLogger("llseg")

PROFILES = ("smoke", "cpu", "paper")


# ----------------------------------------------------------------------------- params

def load_params(path="params.yaml") -> dict:
    """Read params.yaml (plain dict)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such params file (run from the study folder or pass --params)")
    with open(path) as fh:
        params = yaml.safe_load(fh)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections")
    return params


def section(params: dict, name: str, path="params.yaml") -> dict:
    if name not in params:
        raise KeyError(f"{path}: missing section '{name}'")
    return params[name]


def apply_profile(params_path, name: str) -> list[str]:
    """Copy profile ``name``'s values (``profiles.<name>``, dotted keys) into the active sections
    of params.yaml, keeping comments and order. Returns the keys that changed."""
    from ruamel.yaml import YAML

    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    yaml = YAML()
    yaml.preserve_quotes = True
    params_path = Path(params_path)
    with open(params_path) as fh:
        doc = yaml.load(fh)
    overrides = doc.get("profiles", {}).get(name)
    if overrides is None:
        raise KeyError(f"{params_path}: no 'profiles.{name}' section")
    changed = []
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = doc
        for p in parents:
            if p not in node:
                raise KeyError(f"{params_path}: profiles.{name}.{dotted}: no section '{p}'")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"{params_path}: profiles.{name}.{dotted}: no parameter '{leaf}' in '{'.'.join(parents)}'")
        if node[leaf] != value:
            changed.append(dotted)
        node[leaf] = copy.deepcopy(value)  # a shared node would be dumped as a YAML anchor
    doc["profile"] = name
    from . import io

    with io.atomic_path(params_path) as tmp:
        with open(tmp, "w") as fh:
            yaml.dump(doc, fh)
    return changed


# ----------------------------------------------------------------------------- commands

def cmd_profile(args) -> int:
    changed = apply_profile(args.params, args.name)
    print(f"{args.params}: profile set to '{args.name}' ({len(changed)} value(s) changed"
          f"{': ' + ', '.join(changed) if changed else ''})")
    return 0


def _write_phantom_case(root, case_id: str, seed: int, settings: dict) -> str:
    """Generate and write one phantom case (a process-pool task: one case per seed, deterministic)."""
    from . import cohort, io

    case = cohort.make_case(seed, **settings)
    paths = cohort.case_paths(root, case_id)
    io.save_nifti(paths["image"], case.image, case.affine, dtype=np.float32)
    io.save_nifti(paths["labels"], case.labels, case.affine, dtype=np.uint8)
    io.write_json(paths["subject"], {**case.meta, "case": case_id})
    return case_id


def cmd_phantom(args) -> int:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from . import io

    p = section(load_params(args.params), "phantom", args.params)
    n, seed = int(p["n_subjects"]), int(p["seed"])
    out = Path(args.out)
    rng = np.random.default_rng(seed)
    protocols = ["spiral" if u < float(p["spiral_fraction"]) else "cartesian" for u in rng.random(n)]
    settings = [dict(protocol=protocols[i], downscale=float(p["downscale"]), bias_strength=float(p["bias_strength"]),
                     noise_sigma=float(p["noise_sigma"]), supersample=int(p["supersample"])) for i in range(n)]
    # The whole cohort is built in a temporary folder swapped in at the end (io.atomic_dir).
    with io.atomic_dir(out) as tmp, ProcessPoolExecutor(max_workers=max(1, int(args.jobs))) as pool:
        futures = [pool.submit(_write_phantom_case, tmp, f"phantom_{i:03d}", seed + i, settings[i]) for i in range(n)]
        for future in tqdm(as_completed(futures), total=n, desc="phantom cohort", unit="case", disable=args.quiet):
            future.result()
    print(f"{out}: {n} phantom cases written")
    return 0


def cmd_check(args) -> int:
    from . import cohort, io

    results = cohort.check_cohort(args.data, require_labels=not args.images_only)
    bad = [r for r in results if not r["ok"]]
    for r in results:
        status = "ok " if r["ok"] else "BAD"
        facts = f"shape {r.get('shape')} spacing {r.get('spacing_mm')} mm {r.get('orientation', '')}"
        print(f"{status} {r['case']}: {facts}")
        for problem in r["problems"]:
            print(f"      - {problem}")
    print(f"{len(results)} case(s), {len(bad)} with problems")
    if args.report:
        io.write_json(args.report, {"n_cases": len(results), "n_bad": len(bad), "cases": results})
    return 1 if bad else 0


def cmd_preprocess(args) -> int:
    from tqdm.auto import tqdm

    from . import cohort, io, preprocess

    params = load_params(args.params)
    p = section(params, "preprocess", args.params)
    s = section(params, "split", args.params)
    cases = cohort.list_cases(args.data)
    split = cohort.split_cases(cases, test_fraction=float(s["test_fraction"]), seed=int(s["seed"]))
    out = Path(args.out)
    spacing_target = tuple(float(v) for v in p["spacing_mm"])
    target_xy = [int(round(f / sp)) for f, sp in zip(p["fov_mm"], spacing_target[:2])]
    manifest = {"split": split, "spacing_mm": list(spacing_target), "matrix_xy": target_xy, "cases": {}}
    with io.atomic_dir(out) as tmp:
        for case in tqdm(cases, desc="preprocess (N4)", unit="case", disable=args.quiet):
            paths = cohort.case_paths(args.data, case)
            img = io.load_image(paths["image"])
            lab = io.load_labels(paths["labels"], reference=img)
            result = preprocess.preprocess_case(
                img.data, lab.data, img.affine, spacing_mm=img.spacing_mm, target_spacing_mm=spacing_target,
                target_xy=target_xy, n4=bool(p["n4"]), shrink_factor=int(p["n4_shrink"]),
                iterations=[int(i) for i in p["n4_iterations"]])
            for kind in ("image", "labels", "bias"):
                dtype = np.uint8 if kind == "labels" else np.float32
                io.save_nifti(tmp / kind / f"{case}.nii.gz", result[kind], result["affine"], dtype=dtype)
            manifest["cases"][case] = {k: v for k, v in result.items() if k not in ("image", "labels", "bias", "affine")}
            manifest["cases"][case]["affine"] = result["affine"].tolist()
            manifest["cases"][case]["original_affine"] = img.original_affine.tolist()
            manifest["cases"][case]["canonical_affine"] = img.affine.tolist()
            manifest["cases"][case]["canonical_shape"] = list(img.data.shape)
        io.write_json(tmp / "manifest.json", manifest)
    print(f"{out}: {len(cases)} case(s) preprocessed ({len(split['train'])} train / {len(split['test'])} test)")
    return 0


# ----------------------------------------------------------------------------- cascade

def _load_study(preprocessed, which: str):
    """Preprocessed images and label maps of the ``which`` split ("train" or "test")."""
    from . import io

    root = Path(preprocessed)
    manifest = io.read_json(root / "manifest.json")
    cases = manifest["split"][which]
    cache = root.parent / "cache" / root.name       # uncompressed copies (io.load_cached)
    images = [io.load_cached(root / "image" / f"{c}.nii.gz", kind="image", cache_dir=cache) for c in cases]
    labels = [io.load_cached(root / "labels" / f"{c}.nii.gz", kind="labels", cache_dir=cache) for c in cases]
    return manifest, cases, images, labels


def _live(directory, enabled: bool):
    """A dvclive logger writing TSV plots under ``directory`` (no HTML report, no dvc.yaml edits)."""
    if not enabled:
        return contextlib.nullcontext(None)
    from dvclive import Live

    return Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)


def _augment_kwargs(params) -> dict:
    a = section(params, "augment")
    return {"max_rotation_deg": float(a["max_rotation_deg"]), "max_shear": float(a["max_shear"]),
            "flip_lr": bool(a["flip_lr"])}


def _loss_kwargs(p) -> dict:
    """The loss options of a training section for ``train.fit`` (defaults: the paper's plain
    cross-entropy at a constant learning rate)."""
    return {"class_weight_power": float(p.get("class_weight_power", 0.0)), "loss": str(p.get("loss", "ce")),
            "lr_schedule": str(p.get("lr_schedule", "constant"))}


def cmd_train_stage1(args) -> int:
    from . import io, stage1, train

    train.use_training_threads()  # before any TensorFlow op (see its docstring)

    params = load_params(args.params)
    p = section(params, "stage1", args.params)
    group = int(args.group)
    _, _, images, labels = _load_study(args.preprocessed, "train")
    _, _, test_images, test_labels = _load_study(args.preprocessed, "test")
    factor = tuple(float(f) for f in p["factor"])
    validate = stage1.make_validator(test_images, test_labels, group, factor=factor)
    with _live(Path(args.live) / f"group_{group:02d}" if args.live else None, bool(args.live)) as live:
        model, history = stage1.train_group(
            images, labels, group, factor=factor, levels=int(p["levels"]), root_filters=int(p["root_filters"]),
            iterations=int(p["iterations"]), learning_rate=float(p["learning_rate"]), seed=int(p["seed"]) + group,
            augment_kwargs=_augment_kwargs(params), validate=validate, validate_every=int(p["validate_every"]),
            live=live, progress=not args.quiet, **_loss_kwargs(p))
    out = Path(args.out)
    io.save_model(model, out)
    io.write_json(out.with_suffix(".json"), {
        "group": group, "factor": list(factor), "part_ranges": stage1.DEFAULT_PART_RANGES,
        "levels": int(p["levels"]), "root_filters": int(p["root_filters"]), "iterations": int(p["iterations"]),
        "learning_rate": float(p["learning_rate"]), "seconds": history["seconds"],
        "class_weights": history["class_weights"], "loss": _loss_kwargs(p)["loss"],
        "lr_schedule": _loss_kwargs(p)["lr_schedule"],
        "final_loss": float(np.mean(history["loss"][-10:])), "val_dice": history["val_dice"]})
    print(f"{out}: group {group} trained in {history['seconds']:.0f} s, "
          f"test Dice (low res) {history['val_dice'][-1][1] if history['val_dice'] else float('nan'):.3f}")
    return 0


def cmd_box_priors(args) -> int:
    from . import io, stage1

    _, cases, _, labels = _load_study(args.preprocessed, "train")
    io.write_json(args.out, stage1.fit_box_priors(labels))
    print(f"{args.out}: box priors from {len(cases)} training case(s)")
    return 0


def _stage2_settings(params, key: str) -> dict:
    """The stage2 section with the muscle's overrides (``stage2_muscles.<key>``) applied."""
    p = dict(section(params, "stage2"))
    override = dict(params.get("stage2_muscles", {}).get(key) or {})
    factor = float(override.pop("iterations_factor", 1.0))
    unknown = set(override) - set(p)
    if unknown:
        raise KeyError(f"params.yaml: stage2_muscles.{key}: unknown key(s) {sorted(unknown)}")
    p.update(override)
    p["iterations"] = max(1, int(round(int(p["iterations"]) * factor)))
    return p


def cmd_train_stage2(args) -> int:
    from . import anatomy, io, models, stage2, train

    train.use_training_threads()

    params = load_params(args.params)
    key = anatomy.muscle(args.muscle).key
    p = _stage2_settings(params, key)
    _, _, images, labels = _load_study(args.preprocessed, "train")
    _, _, test_images, test_labels = _load_study(args.preprocessed, "test")
    levels = int(p["levels"])
    size = stage2.input_size_for(stage2.muscle_box_sizes(labels, key), max_voxels=int(p["max_voxels"]),
                                 divisor=2 ** (levels - 1), mean_ratio=(float(p["ratio_min"]) + float(p["ratio_max"])) / 2)
    ratio_range = (float(p["ratio_min"]), float(p["ratio_max"]))
    sampler = stage2.make_sampler(images, labels, key, size=size, ratio_range=ratio_range,
                                  augment_kwargs=_augment_kwargs(params))
    validate = stage2.make_validator(test_images, test_labels, key, size=size)
    import keras

    keras.utils.set_random_seed(int(p["seed"]))
    model = models.build_model("unet", (*size, 1), 2, levels=levels, root_filters=int(p["root_filters"]))
    with _live(Path(args.live) / key if args.live else None, bool(args.live)) as live:
        history = train.fit(model, sampler, iterations=int(p["iterations"]), learning_rate=float(p["learning_rate"]),
                            seed=int(p["seed"]), validate=validate, validate_every=int(p["validate_every"]),
                            live=live, progress=not args.quiet, **_loss_kwargs(p))
    out = Path(args.out)
    io.save_model(model, out)
    io.write_json(out.with_suffix(".json"), {
        "muscle": key, "input_size": list(size), "levels": levels, "root_filters": int(p["root_filters"]),
        "iterations": int(p["iterations"]), "learning_rate": float(p["learning_rate"]),
        "ratio_range": list(ratio_range), "seconds": history["seconds"],
        "class_weights": history["class_weights"], "loss": _loss_kwargs(p)["loss"],
        "lr_schedule": _loss_kwargs(p)["lr_schedule"],
        "final_loss": float(np.mean(history["loss"][-10:])), "val_dice": history["val_dice"]})
    print(f"{out}: {key} {size} trained in {history['seconds']:.0f} s, "
          f"test Dice (GT-box crop) {history['val_dice'][-1][1] if history['val_dice'] else float('nan'):.3f}")
    return 0


def cmd_train_variant(args) -> int:
    from . import ablation, anatomy, io, train

    train.use_training_threads()

    params = load_params(args.params)
    p, s2 = section(params, "ablation", args.params), section(params, "stage2", args.params)
    divisor = int(p["divisor"])
    table = ablation.variant_table(p["variants"], divisor=divisor)
    if args.variant not in table:
        raise ValueError(f"{args.params}: no variant {args.variant!r} in ablation.variants (has {', '.join(table)})")
    out = Path(args.out)
    if out.suffix != ".json":
        raise ValueError(f"{out}: the training record must be a .json file")
    spec, key = table[args.variant], anatomy.muscle(p["muscle"]).key
    _, _, images, labels = _load_study(args.preprocessed, "train")
    _, _, test_images, test_labels = _load_study(args.preprocessed, "test")
    ratio_range = (float(s2["ratio_min"]), float(s2["ratio_max"]))
    size = ablation.input_size(labels, key, max_voxels=int(p["max_voxels"]), divisor=divisor, ratio_range=ratio_range)
    with _live(Path(args.live) / args.variant if args.live else None, bool(args.live)) as live:
        _, history = ablation.train_variant(
            images, labels, key, spec, test_images=test_images, test_labels=test_labels, size=size,
            iterations=int(p["iterations"]), learning_rate=float(p["learning_rate"]), seed=int(p["seed"]),
            validate_every=int(p["validate_every"]), ratio_range=ratio_range, augment_kwargs=_augment_kwargs(params),
            **_loss_kwargs(p), live=live, progress=not args.quiet)
    io.write_json(out, {  # no .keras file: the ablation keeps only the curves and this record
        "variant": args.variant, "muscle": key, **spec, "panel": list(spec["panel"]), "input_size": list(size),
        "iterations": int(p["iterations"]), "learning_rate": float(p["learning_rate"]), "seed": int(p["seed"]),
        "class_weight_power": float(p["class_weight_power"]), "ratio_range": list(ratio_range),
        "n_params": history["n_params"], "seconds": history["seconds"],
        "final_loss": float(np.mean(history["loss"][-10:])), "val_dice": history["val_dice"]})
    print(f"{out}: variant {args.variant} ({spec['arch']}, {spec['levels']} levels, {spec['root_filters']} root "
          f"filters, {spec['block']}; {history['n_params']:,} parameters) on {key} {size}: {history['seconds']:.0f} s, "
          f"test Dice {history['val_dice'][-1][1] if history['val_dice'] else float('nan'):.3f}")
    return 0


def _load_cascade(models_dir):
    from . import anatomy, io

    root = Path(models_dir)
    for sub in ("stage1", "stage2"):  # checked before Keras is imported: a missing folder is one clear line
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub}: no such folder, so no trained models (run `make study` or `dvc repro` first)")
    s1 = {g: io.load_model(root / "stage1" / f"group_{g:02d}.keras") for g in anatomy.GROUPS}
    cfg1 = io.read_json(root / "stage1" / "group_01.json")
    priors = io.read_json(root / "stage1" / "box_priors.json")
    s2 = {m.key: io.load_model(root / "stage2" / f"{m.key}.keras") for m in anatomy.MUSCLES}
    cfg2 = io.read_json(root / "stage2" / f"{anatomy.MUSCLES[0].key}.json")
    return s1, s2, priors, cfg1, cfg2


def _cascade_kwargs(params, cfg1, cfg2, priors) -> dict:
    p2, pp = section(params, "stage2"), section(params, "postprocess")
    return dict(priors=priors, part_ranges={k: tuple(v) for k, v in cfg1["part_ranges"].items()},
                factor=tuple(cfg1["factor"]), n_boxes=int(p2["n_tta_boxes"]),
                ratio_range=(float(p2["ratio_min"]), float(p2["ratio_max"])), seed=int(p2["seed"]),
                threshold=float(pp["threshold"]), closing_radius_vox=tuple(int(r) for r in pp["closing_radius_vox"]))


def cmd_predict(args) -> int:
    from tqdm.auto import tqdm

    from . import cascade, export, io, metrics, preprocess

    params = load_params(args.params)
    manifest, cases, images, truths = _load_study(args.preprocessed, "test")
    s1, s2, priors, cfg1, cfg2 = _load_cascade(args.models)
    kwargs = _cascade_kwargs(params, cfg1, cfg2, priors)
    spacing = tuple(manifest["spacing_mm"])
    out = Path(args.out)
    timing, quality = [], []
    for case, image, truth in tqdm(list(zip(cases, images, truths)), desc="segment test cases", unit="case",
                                   disable=args.quiet):
        entry = manifest["cases"][case]
        res = cascade.run_cascade(s1, s2, image, **kwargs)
        affine = np.asarray(entry["affine"])
        io.save_nifti(out / "study" / f"{case}_stage1.nii.gz", res["stage1"]["labels"], affine, dtype=np.uint8)
        io.save_nifti(out / "study" / f"{case}_stage2.nii.gz", res["labels"], affine, dtype=np.uint8)
        io.write_json(out / "study" / f"{case}_boxes.json", {
            "boxes": {str(k): v.tolist() for k, v in res["stage1"]["boxes"].items()},
            "estimated": {str(k): v for k, v in res["stage1"]["estimated"].items()}})
        canonical = preprocess.from_study_grid(res["labels"], canonical_shape=entry["canonical_shape"],
                                               zoom=entry["zoom"], offsets_xy=entry["offsets_xy"])
        original = io.to_original_orientation(canonical, np.asarray(entry["canonical_affine"]),
                                              np.asarray(entry["original_affine"]))
        io.save_nifti(out / "labels" / f"{case}.nii.gz", original, np.asarray(entry["original_affine"]), dtype=np.uint8)
        d1 = [metrics.dice(res["stage1"]["labels"] == lab, truth == lab) for lab in range(1, 71)]
        d2 = [metrics.dice(res["labels"] == lab, truth == lab) for lab in range(1, 71)]
        quality.append({"case": case, "dice_stage1": float(np.nanmean(d1)), "dice_stage2": float(np.nanmean(d2)),
                        "n_estimated_boxes": len(res["stage1"]["estimated"])})
        timing.append({"case": case, "seconds_total": res["seconds"],
                       "seconds_stage1": sum(res["stage1"]["seconds_per_group"].values()),
                       "seconds_stage2": sum(res["stage2"]["seconds_per_muscle"].values()),
                       "seconds_postprocess": res["stage2"]["seconds_postprocess"],
                       "seconds_per_group_mean": float(np.mean(list(res["stage1"]["seconds_per_group"].values()))),
                       "seconds_per_muscle_mean": float(np.mean(list(res["stage2"]["seconds_per_muscle"].values())))})
    # One colour / label table per output folder, for every labels/<case>.nii.gz (3D Slicer, ITK-SNAP).
    io.write_text(out / "llseg_labels.ctbl", export.slicer_color_table(title="llseg_labels.ctbl"))
    io.write_text(out / "llseg_itksnap.txt", export.itksnap_label_descriptions())
    summary = {"n_test_cases": len(cases), "spacing_mm": list(spacing),
               "mean_dice_stage1": float(np.mean([q["dice_stage1"] for q in quality])),
               "mean_dice_stage2": float(np.mean([q["dice_stage2"] for q in quality])),
               "mean_seconds_per_case": float(np.mean([t["seconds_total"] for t in timing])),
               "mean_seconds_per_group": float(np.mean([t["seconds_per_group_mean"] for t in timing])),
               "mean_seconds_per_muscle": float(np.mean([t["seconds_per_muscle_mean"] for t in timing]))}
    io.write_json(args.metrics, {**summary, "cases": quality})
    io.write_csv(Path(args.tables) / "timing.csv", timing)
    io.write_text(Path(args.tables) / "timing.md", _timing_table(summary))
    print(f"{out}: {len(cases)} test case(s); mean Dice stage 1 {summary['mean_dice_stage1']:.3f}, "
          f"stage 2 {summary['mean_dice_stage2']:.3f}; {summary['mean_seconds_per_case']:.1f} s per case")
    return 0


def _timing_table(summary: dict) -> str:
    from .cascade import PAPER_SECONDS

    rows = [("stage 1, per group", summary["mean_seconds_per_group"], PAPER_SECONDS["stage1_per_group"]),
            ("stage 2, per muscle (both sides, all TTA boxes)", summary["mean_seconds_per_muscle"],
             PAPER_SECONDS["stage2_per_muscle"]),
            ("whole case (both stages + postprocessing)", summary["mean_seconds_per_case"], PAPER_SECONDS["per_case"])]
    lines = ["| step | this run (s, CPU) | paper (s, one GPU) |", "|---|---|---|"]
    lines += [f"| {name} | {ours:.1f} | {lo:.0f}-{hi:.0f} |" for name, ours, (lo, hi) in rows]
    return "\n".join(lines) + f"\n\nVoxel size here: {summary['spacing_mm']} mm (paper: 1 x 1 x 5 mm).\n"


def cmd_evaluate(args) -> int:
    import warnings

    from tqdm.auto import tqdm

    from . import evaluation, io, metrics

    root, predictions = Path(args.preprocessed), Path(args.predictions)
    cases = io.read_json(root / "manifest.json")["split"]["test"]
    rows = []
    for case in tqdm(cases, desc="evaluate test cases", unit="case", disable=args.quiet):
        truth = io.load_labels(root / "labels" / f"{case}.nii.gz")
        for stage in ("stage1", "stage2"):
            pred = io.load_labels(predictions / "study" / f"{case}_{stage}.nii.gz", reference=truth)
            with warnings.catch_warnings(record=True) as caught:  # one summary line instead of one per region
                warnings.simplefilter("always", metrics.EmptyMaskWarning)
                found = metrics.evaluate_regions(pred.data, truth.data, truth.spacing_mm, case=case)
            for w in caught:
                log.debug("%s", w.message)
            if caught:
                log.info("%s %s: %d region(s) with an empty mask (NaN metrics in the table)", case, stage, len(caught))
            rows += [{"stage": stage, **row} for row in found]
    summary = evaluation.evaluation_summary(rows)
    io.write_csv(args.table, rows)
    io.write_json(args.metrics, summary)
    d1, d2 = (summary[f"dice_mean_stage{i}"] for i in (1, 2))  # None when no Dice is defined
    print(f"{args.table}: {len(rows)} rows ({len(cases)} test case(s), 2 stages); mean Dice stage 1 "
          f"{'n/a' if d1 is None else f'{d1:.3f}'}, stage 2 {'n/a' if d2 is None else f'{d2:.3f}'}; "
          f"{summary['n_within_interobserver']} of 35 muscles within interobserver Dice")
    return 0


def cmd_segment(args) -> int:
    from . import cascade, export, io, postprocess, preprocess

    params = load_params(args.params)
    p = section(params, "preprocess", args.params)
    img = io.load_image(args.image)
    out = Path(args.output)
    if not out.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{out}: output must end in .nii or .nii.gz")
    if out.resolve() == Path(args.image).resolve():
        raise ValueError(f"{out}: refusing to overwrite the input image; choose another output path")
    stem = out.name[: -len(".nii.gz")] if out.name.endswith(".nii.gz") else out.stem
    if min(img.data.shape) < 2:
        raise ValueError(f"{args.image}: a 3-D volume needs at least 2 voxels on every axis, got shape {img.data.shape}")
    s1, s2, priors, cfg1, cfg2 = _load_cascade(args.models)
    target = tuple(float(v) for v in p["spacing_mm"])
    target_xy = [int(round(f / sp)) for f, sp in zip(p["fov_mm"], target[:2])]
    t0 = time.perf_counter()
    try:
        pre = preprocess.preprocess_case(img.data, None, img.affine, spacing_mm=img.spacing_mm, target_spacing_mm=target,
                                         target_xy=target_xy, n4=bool(p["n4"]), shrink_factor=int(p["n4_shrink"]),
                                         iterations=[int(i) for i in p["n4_iterations"]])
    except (ValueError, RuntimeError) as exc:  # SimpleITK reports through RuntimeError
        raise ValueError(f"{args.image}: cannot preprocess: {str(exc).splitlines()[0]}") from None
    t_pre = time.perf_counter() - t0
    res = cascade.run_cascade(s1, s2, pre["image"], **_cascade_kwargs(params, cfg1, cfg2, priors))
    canonical = preprocess.from_study_grid(res["labels"], canonical_shape=img.data.shape, zoom=pre["zoom"],
                                           offsets_xy=pre["offsets_xy"])
    original = io.to_original_orientation(canonical, img.affine, img.original_affine)
    volumes = export.volume_table({Path(args.image).name: (canonical, img.spacing_mm)})
    contours = postprocess.contours_from_labels(canonical, img.spacing_mm, img.affine)
    io.save_nifti(out, original, img.original_affine, dtype=np.uint8)
    io.write_csv(out.with_name(f"{stem}_volumes.csv"), volumes)
    io.write_json(out.with_name(f"{stem}_contours.json"), contours)
    io.write_text(out.with_name(f"{stem}.ctbl"), export.slicer_color_table(title=f"{stem}.ctbl"))
    io.write_text(out.with_name(f"{stem}_itksnap.txt"), export.itksnap_label_descriptions())
    print(f"{out}: {len(np.unique(canonical)) - 1} regions; preprocessing {t_pre:.1f} s, stage 1 "
          f"{sum(res['stage1']['seconds_per_group'].values()):.1f} s, stage 2 + postprocessing "
          f"{sum(res['stage2']['seconds_per_muscle'].values()) + res['stage2']['seconds_postprocess']:.1f} s")
    return 0


# ----------------------------------------------------------------------------- main

EPILOG = textwrap.dedent("""\
    examples:
      llseg profile smoke                 switch params.yaml to the smoke profile
      llseg phantom --out data            regenerate the phantom cohort (bit for bit)
      llseg check data                    validate a cohort (yours or the phantom)
      llseg preprocess --data data --out work/preprocessed
      llseg train-stage1 --group 1 --out models/stage1/group_01.keras
      llseg train-stage2 --muscle soleus --out models/stage2/soleus.keras
      llseg repro --jobs 2                dvc repro, training two networks at a time
      llseg predict                       segment the test cases (after dvc repro trained the models)
      llseg evaluate                      score the test predictions (Dice, MSD, volumes)
      llseg train-variant --variant residual --out models/ablation/residual.json   (Figure 5)
      llseg claims                        the paper's claims with this run's numbers and verdicts
      llseg segment scan.nii.gz -o scan_muscles.nii.gz
    """)


def cmd_claims(args) -> int:
    import pandas as pd

    from . import claims, io

    params = load_params(args.params)
    thresholds = section(params, "claims", args.params)
    stage = str((params.get("evaluation") or {}).get("stage", "stage2"))
    inputs, sources, notes = {}, {}, []
    for name in claims.INPUTS:  # a missing file makes its claims "not testable here", never an error
        path = Path(args.table) if name == "per_region" else Path(args.metrics) / f"{name}.json"
        sources[name] = str(path)
        if not path.exists():
            inputs[name] = None
            notes.append(f"`{path}` missing: the claims that need it are not testable here.")
        else:
            inputs[name] = pd.read_csv(path).to_dict("records") if name == "per_region" else io.read_json(path)
    found = claims.evaluate_claims(inputs, thresholds, stage=stage, sources=sources)
    counts = claims.count_verdicts(found)
    profile = str(params.get("profile", ""))
    notes.append(f"Per-muscle claims score the `{stage}` labels (params.yaml `evaluation.stage`).")
    io.write_json(args.json, {"profile": profile, "n_claims": len(found),
                              **{f"n_{v.replace(' ', '_')}": n for v, n in counts.items()}, "claims": found})
    io.write_text(args.out, claims.claims_markdown(found, profile=profile, notes=notes))
    print(f"{args.out}: {len(found)} claims; " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 0


def cmd_repro(args) -> int:
    from . import repro

    try:
        return repro.reproduce(jobs=args.jobs, log_dir=args.log_dir, progress=not args.quiet, dry=args.dry)
    except RuntimeError as exc:  # dvc itself failed (not a stage): one line, exit 1
        print(f"llseg repro: error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llseg", description="Cascaded 3-D U-Net lower-limb muscle study kit.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_, example):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=func)
        return sp

    sp = add("profile", cmd_profile, "Switch params.yaml to a profile (smoke, cpu, paper).", "llseg profile smoke")
    sp.add_argument("name", choices=PROFILES)
    sp.add_argument("--params", default="params.yaml")

    sp = add("phantom", cmd_phantom, "Generate the digital phantom cohort from params.yaml's 'phantom' section.",
             "llseg phantom --out data")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--out", default="data")
    sp.add_argument("-j", "--jobs", type=int, default=2, help="cases generated in parallel (default 2)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("check", cmd_check, "Validate a cohort folder (images/, labels/): geometry, labels, left/right.",
             "llseg check data --report metrics/cohort.json")
    sp.add_argument("data")
    sp.add_argument("--report", help="write the per-case results as JSON")
    sp.add_argument("--images-only", action="store_true", help="label maps are optional (segmentation only)")

    sp = add("preprocess", cmd_preprocess, "N4 bias correction, resampling, FOV cropping, train/test split.",
             "llseg preprocess --data data --out work/preprocessed")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--data", default="data")
    sp.add_argument("--out", default="work/preprocessed")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("train-stage1", cmd_train_stage1, "Train the stage-1 network of one group (1..10).",
             "llseg train-stage1 --group 3 --out models/stage1/group_03.keras")
    sp.add_argument("--group", type=int, required=True, choices=range(1, 11), metavar="1..10")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--preprocessed", default="work/preprocessed")
    sp.add_argument("--out", required=True, help=".keras file (a .json sidecar is written beside it)")
    sp.add_argument("--live", help="dvclive folder for loss / Dice curves")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("box-priors", cmd_box_priors, "Fit the box priors used for regions stage 1 misses.",
             "llseg box-priors --out models/stage1/box_priors.json")
    sp.add_argument("--preprocessed", default="work/preprocessed")
    sp.add_argument("--out", required=True)

    sp = add("train-stage2", cmd_train_stage2, "Train the stage-2 network of one muscle (both sides, mirrored).",
             "llseg train-stage2 --muscle adductor_brevis --out models/stage2/adductor_brevis.keras")
    sp.add_argument("--muscle", required=True, help="muscle key or Table-1 name (see llseg.anatomy)")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--preprocessed", default="work/preprocessed")
    sp.add_argument("--out", required=True)
    sp.add_argument("--live", help="dvclive folder for loss / Dice curves")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("train-variant", cmd_train_variant, "Train one architecture-ablation variant (params.yaml "
             "'ablation.variants') on the ablation muscle; write its training record (JSON, no model file).",
             "llseg train-variant --variant residual --live reports/training/ablation --out models/ablation/residual.json")
    sp.add_argument("--variant", required=True, help="a name under ablation.variants in params.yaml")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--preprocessed", default="work/preprocessed")
    sp.add_argument("--out", required=True, help="training record (.json): settings, parameters, seconds, Dice")
    sp.add_argument("--live", help="dvclive folder; the curves go to <live>/<variant>/")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("predict", cmd_predict, "Segment the test cases with both stages; write label maps and timings.",
             "llseg predict --out work/predictions --metrics metrics/cascade.json")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--preprocessed", default="work/preprocessed")
    sp.add_argument("--models", default="models")
    sp.add_argument("--out", default="work/predictions")
    sp.add_argument("--metrics", default="metrics/cascade.json")
    sp.add_argument("--tables", default="reports/tables")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("evaluate", cmd_evaluate, "Score the stage-1 and final labels of every test case against the ground "
             "truth (Dice, MSD, ASSD, HD95, volumes) on the study grid.",
             "llseg evaluate --table reports/tables/metrics_per_region.csv --metrics metrics/evaluation.json")
    sp.add_argument("--preprocessed", default="work/preprocessed")
    sp.add_argument("--predictions", default="work/predictions")
    sp.add_argument("--table", default="reports/tables/metrics_per_region.csv", help="per-region rows (CSV)")
    sp.add_argument("--metrics", default="metrics/evaluation.json", help="summary (DVC metrics)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("claims", cmd_claims, "Check the paper's claims against this run's metrics; verdicts from the "
             "thresholds in params.yaml 'claims' (missing metrics make a claim 'not testable here').",
             "llseg claims --metrics metrics --out reports/claims.md --json metrics/claims.json")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--metrics", default="metrics", help="folder of the study's metrics/*.json")
    sp.add_argument("--table", default="reports/tables/metrics_per_region.csv", help="per-region rows (llseg evaluate)")
    sp.add_argument("--out", default="reports/claims.md", help="Markdown report")
    sp.add_argument("--json", default="metrics/claims.json", help="counts per verdict and the claims (DVC metrics)")

    sp = add("repro", cmd_repro, "dvc repro, with the training stages run side by side: preprocessing first, "
             "then the changed training stages N at a time (one thread each), then the rest.",
             "llseg repro --jobs 2")
    sp.add_argument("-j", "--jobs", type=int, default=None, help="training stages at once (default: one per CPU core, at most one per 2 GiB free memory)")
    sp.add_argument("--log-dir", default="work/logs/repro", help="one log per training stage")
    sp.add_argument("--dry", action="store_true", help="print the plan only")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("segment", cmd_segment, "Segment one NIfTI scan: 70-region label map in the scan's own space, "
             "muscle volumes (CSV, mL), contours (JSON) and colour tables for 3D Slicer (.ctbl) and "
             "ITK-SNAP (_itksnap.txt).", "llseg segment scan.nii.gz -o scan_muscles.nii.gz")
    sp.add_argument("image")
    sp.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz)")
    sp.add_argument("--models", default="models")
    sp.add_argument("--params", default="params.yaml")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"llseg {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
