"""The ``llseg`` command: the edge where params.yaml, argv and files meet the library.

Each subcommand reads its params.yaml section once, unpacks plain values and calls library
functions with keyword arguments. Errors about bad input are printed as one clear line naming
the file and the problem, with exit status 1 and no partial output.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # before anything can import TensorFlow
os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("LLSEG_TF_LOG_LEVEL", "3")  # TF's start-up lines stay out of the user's way

import argparse  # noqa: E402
import copy  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

log = logging.getLogger("llseg")


# ----------------------------------------------------------------------------- TensorFlow's start-up lines

class _QuietLoader:
    """Runs a module's import with file descriptor 2 sent to /dev/null (C++ log lines included)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            self.loader.exec_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class _QuietTensorFlow:
    """A ``sys.meta_path`` finder: the first ``import tensorflow`` runs silenced. TensorFlow >= 2.19 logs
    its start-up lines through absl, which ``TF_CPP_MIN_LOG_LEVEL`` no longer silences."""

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util

        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _quiet_tensorflow() -> None:
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())
    # Keras traces one predict function per network; TensorFlow warns about "retracing" once more
    # than five networks have predicted, which is how the cascade works, not a problem to report.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- params

from .params import PROFILES, load_params, section  # noqa: E402  (params.yaml read and checked once, llseg.params)


def apply_profile(params_path, name: str) -> list[str]:
    """Copy profile ``name``'s values (``profiles.<name>``, dotted keys) into the active sections
    of params.yaml, keeping comments and order. Returns the keys that changed."""
    from ruamel.yaml import YAML

    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    load_params(params_path)  # a file (or profile) the schema refuses is never switched
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


def set_study_networks(params_path, stage1_groups, stage2_muscles) -> list[str]:
    """Write the networks a cohort trains into params.yaml (``stage1_groups``, ``stage2_muscles``
    keeping existing per-muscle overrides); point ``ablation.muscle`` and ``two_stages.muscle`` at
    a trained muscle when theirs is not (the smallest by reference volume). Keeps comments and
    order; returns what changed."""
    from ruamel.yaml import YAML

    from . import anatomy, io

    load_params(params_path)
    yaml = YAML()
    yaml.preserve_quotes = True
    params_path = Path(params_path)
    with open(params_path) as fh:
        doc = yaml.load(fh)
    changed = []
    if list(doc["stage1_groups"]) != list(stage1_groups):
        doc["stage1_groups"] = copy.deepcopy(doc["stage1_groups"])
        doc["stage1_groups"].clear()
        doc["stage1_groups"].extend(stage1_groups)
        changed.append("stage1_groups")
    old = doc["stage2_muscles"]
    if set(old) != set(stage2_muscles):
        for key in [k for k in old if k not in stage2_muscles]:
            del old[key]
        for key in stage2_muscles:
            if key not in old:
                old[key] = {"iterations_factor": 1.0}
        changed.append("stage2_muscles")
    smallest = min(stage2_muscles, key=lambda k: anatomy.muscle(k).volume_ml)
    for section_name in ("ablation", "two_stages"):
        if doc[section_name]["muscle"] not in stage2_muscles:
            doc[section_name]["muscle"] = smallest
            changed.append(f"{section_name}.muscle")
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


def cmd_cohort_params(args) -> int:
    from . import cohort

    params = load_params(args.params)
    split = section(params, "split", args.params)
    results = cohort.check_cohort(args.data)
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise ValueError(f"{args.data}: {len(bad)} case(s) with problems (first: {bad[0]['case']}: "
                         f"{bad[0]['problems'][0]}); run `llseg check {args.data}` and fix them first")
    present = {r["case"]: r["regions_present"] for r in results}
    train = cohort.split_cases(sorted(present), test_fraction=float(split["test_fraction"]),
                               seed=int(split["seed"]))["train"]
    trainable = cohort.regions_by_training_cases(present, train, min_training_cases=args.min_training_cases)
    if trainable["problems"]:
        raise ValueError(f"{args.data}: " + "; ".join(trainable["problems"]))
    nets = cohort.trainable_networks(trainable)
    if not nets["stage2_muscles"]:
        raise ValueError(f"{args.data}: no muscle is labelled in {args.min_training_cases} training cases")
    changed = set_study_networks(args.params, nets["stage1_groups"], nets["stage2_muscles"])
    print(f"{args.params}: {len(nets['stage1_groups'])} stage-1 group(s) ({', '.join(nets['stage1_groups'])}), "
          f"{len(nets['stage2_muscles'])} muscle(s): {', '.join(nets['stage2_muscles'])}"
          f"{'; changed ' + ', '.join(changed) if changed else '; unchanged'}")
    return 0


#: Peak memory of one phantom case being generated at the paper's size (downscale 1, measured 7.0
#: GiB: benchmarks/bench_preprocess_scale.py); bounds the default number of cases at once.
PHANTOM_GIB_PER_CASE = 7.0


def _phantom_jobs() -> int:
    """One phantom case per core, at most as many as the available memory holds."""
    from .repro import default_jobs

    return default_jobs(PHANTOM_GIB_PER_CASE)


def cmd_phantom(args) -> int:
    from .phantom import write_cohort

    p = section(load_params(args.params), "phantom", args.params)
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    cases = write_cohort(args.out, n_subjects=int(p["n_subjects"]), seed=int(p["seed"]),
                         spiral_fraction=float(p["spiral_fraction"]), downscale=float(p["downscale"]),
                         bias_strength=float(p["bias_strength"]), noise_sigma=float(p["noise_sigma"]),
                         supersample=int(p["supersample"]), jobs=args.jobs or _phantom_jobs(),
                         progress=not args.quiet)
    print(f"{args.out}: {len(cases)} phantom cases written")
    return 0


def cmd_check(args) -> int:
    from . import cohort, guards, io

    if args.report:  # before any work: the report must not land on (or in) the cohort's files
        guards.check_output_paths([args.report],
                                  [Path(args.data) / d for d in (cohort.IMAGES, cohort.LABELS, cohort.SUBJECTS)])
    split = None
    if args.params:  # the split `llseg preprocess` will make, so that regions are counted in the training cases
        s = section(load_params(args.params), "split", args.params)
        split = cohort.split_cases(cohort.list_cases(args.data, require_labels=False),
                                   test_fraction=float(s["test_fraction"]), seed=int(s["seed"]))
    results = cohort.check_cohort(args.data, require_labels=not args.images_only)
    bad = [r for r in results if not r["ok"]]
    for r in results:
        status = "ok " if r["ok"] else "BAD"
        facts = f"shape {r.get('shape')} spacing {r.get('spacing_mm')} mm {r.get('orientation', '')}"
        print(f"{status} {r['case']}: {facts}")
        if "labels" in r:
            print(f"      labels: {r['labels']}")
        for problem in r["problems"]:
            print(f"      - {problem}")
    present = {r["case"]: r["regions_present"] for r in results if "regions_present" in r}
    report = {"n_cases": len(results), "n_bad": len(bad)}
    problems: list[str] = []
    if present:
        train = None if split is None else [c for c in split["train"] if c in present]
        found = cohort.regions_by_training_cases(present, train, min_training_cases=args.min_training_cases)
        problems = found.pop("problems")
        where = (f"{found['n_training_cases']} training case(s) of the split in {args.params}" if split is not None
                 else f"all {found['n_cases']} case(s) (no --params: no split)")
        print(f"{cohort.describe_training(found)}; counted over {where}, at least {args.min_training_cases} "
              f"per region")
        for problem in problems[:10]:
            print(f"BAD cohort: {problem}")
        if len(problems) > 10:
            print(f"    ... {len(problems) - 10} more region(s) too rare to train"
                  f"{f' (all listed in {args.report})' if args.report else ' (--report lists all)'}")
        report.update({"training_cases_from": "split" if split is not None else "all cases", **found,
                       "n_muscles_trained": len(found["muscles_trained"]), "n_cohort_problems": len(problems),
                       "cohort_problems": problems})
    print(f"{len(results)} case(s), {len(bad)} with problems"
          + (f"; {len(problems)} cohort problem(s)" if problems else ""))
    if args.report:
        io.write_json(args.report, {**report, "cases": results})
    return 1 if bad or problems else 0


def _preprocess_kwargs(p) -> dict:
    """The preprocessing options of params.yaml's ``preprocess`` section (shared by preprocess and segment)."""
    return {"spacing_mm": [float(v) for v in p["spacing_mm"]], "fov_mm": [float(v) for v in p["fov_mm"]],
            "n4": bool(p["n4"]), "n4_shrink": int(p["n4_shrink"]), "n4_iterations": [int(i) for i in p["n4_iterations"]]}


def cmd_preprocess(args) -> int:
    from . import pipeline

    params = load_params(args.params)
    s = section(params, "split", args.params)
    manifest = pipeline.preprocess_cohort(args.data, args.out, **_preprocess_kwargs(section(params, "preprocess", args.params)),
                                          test_fraction=float(s["test_fraction"]), seed=int(s["seed"]),
                                          jobs=args.jobs, progress=not args.quiet)
    split = manifest["split"]
    print(f"{args.out}: {len(manifest['cases'])} case(s) preprocessed ({len(split['train'])} train / {len(split['test'])} test)")
    return 0


# ----------------------------------------------------------------------------- cascade

def _augment_kwargs(params) -> dict:
    a = section(params, "augment")
    return {"max_rotation_deg": float(a["max_rotation_deg"]), "max_shear": float(a["max_shear"]),
            "flip_lr": bool(a["flip_lr"])}


def _loss_kwargs(p) -> dict:
    """The loss options of a training section for ``train.fit`` (defaults: the paper's plain
    cross-entropy at a constant learning rate)."""
    return {"class_weight_power": float(p.get("class_weight_power", 0.0)), "loss": str(p.get("loss", "ce")),
            "lr_schedule": str(p.get("lr_schedule", "constant"))}


def _network_kwargs(params, p) -> dict:
    """The options every network's training takes from a training section ``p`` of params.yaml."""
    return {"levels": int(p["levels"]), "root_filters": int(p["root_filters"]), "iterations": int(p["iterations"]),
            "learning_rate": float(p["learning_rate"]), "seed": int(p["seed"]),
            "validate_every": int(p["validate_every"]), "augment_kwargs": _augment_kwargs(params), **_loss_kwargs(p)}


def _last_dice(history) -> float:
    return history["val_dice"][-1][1] if history["val_dice"] else float("nan")


def _say_device(*, training: bool) -> None:
    """Print which Keras backend and device the command computes on (``runinfo.device_line``).
    Training commands fix their thread count first (it must precede TensorFlow's first op)."""
    from . import runinfo, train

    if training:
        train.use_training_threads()
    print(runinfo.device_line(), flush=True)


def cmd_train_stage1(args) -> int:
    from . import pipeline

    _say_device(training=True)
    params = load_params(args.params)
    p = section(params, "stage1", args.params)
    history = pipeline.train_stage1_group(args.preprocessed, args.out, group=args.group, factor=p["factor"],
                                          live_dir=args.live or None, progress=not args.quiet,
                                          **_network_kwargs(params, p))
    print(f"{args.out}: group {args.group} trained in {history['seconds']:.0f} s, "
          f"test Dice (low res) {_last_dice(history):.3f}")
    return 0


def cmd_box_priors(args) -> int:
    from . import pipeline

    priors = pipeline.write_box_priors(args.preprocessed, args.out)
    print(f"{args.out}: box priors from {priors['n_cases']} training case(s)")
    return 0


def cmd_body_profile(args) -> int:
    from . import pipeline

    record = pipeline.write_body_profile(args.preprocessed, args.out)
    covered = [u for u, a in zip(record["fractions"], record["area_mm2"]) if a is not None]
    print(f"{args.out}: body outline of {record['n_cases']} training case(s), "
          f"{covered[0]:.2f}-{covered[-1]:.2f} of the T12-to-ankle span")
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
    from . import anatomy, pipeline

    _say_device(training=True)
    params = load_params(args.params)
    key = anatomy.muscle(args.muscle).key
    p = _stage2_settings(params, key)
    history = pipeline.train_stage2_muscle(args.preprocessed, args.out, muscle=key, max_voxels=int(p["max_voxels"]),
                                           ratio_range=(float(p["ratio_min"]), float(p["ratio_max"])),
                                           live_dir=args.live or None, progress=not args.quiet,
                                           **_network_kwargs(params, p))
    print(f"{args.out}: {key} {history['input_size']} trained in {history['seconds']:.0f} s, "
          f"test Dice (GT-box crop) {_last_dice(history):.3f}")
    return 0


def cmd_train_variant(args) -> int:
    from .study import ablation

    _say_device(training=True)
    params = load_params(args.params)
    p, s2 = section(params, "ablation", args.params), section(params, "stage2", args.params)
    r = ablation.train_variant_record(
        args.preprocessed, args.out, variant=args.variant, variants=p["variants"], muscle=p["muscle"],
        divisor=int(p["divisor"]), max_voxels=int(p["max_voxels"]), iterations=int(p["iterations"]),
        learning_rate=float(p["learning_rate"]), seed=int(p["seed"]), validate_every=int(p["validate_every"]),
        ratio_range=(float(s2["ratio_min"]), float(s2["ratio_max"])), augment_kwargs=_augment_kwargs(params),
        **_loss_kwargs(p), live_dir=Path(args.live) / args.variant if args.live else None, progress=not args.quiet)
    print(f"{args.out}: variant {args.variant} ({r['arch']}, {r['levels']} levels, {r['root_filters']} root "
          f"filters, {r['block']}; {r['n_params']:,} parameters) on {r['muscle']} {tuple(r['input_size'])}: "
          f"{r['seconds']:.0f} s, test Dice {r['val_dice'][-1][1] if r['val_dice'] else float('nan'):.3f}")
    return 0


def _inference_kwargs(params) -> dict:
    """The cascade's inference options (params.yaml ``stage2`` and ``postprocess``)."""
    p2, pp = section(params, "stage2"), section(params, "postprocess")
    return {"n_tta_boxes": int(p2["n_tta_boxes"]), "ratio_range": (float(p2["ratio_min"]), float(p2["ratio_max"])),
            "seed": int(p2["seed"]), "threshold": float(pp["threshold"]),
            "closing_radius_vox": tuple(int(r) for r in pp["closing_radius_vox"])}


def cmd_predict(args) -> int:
    from . import pipeline

    params = load_params(args.params)
    _say_device(training=False)
    summary = pipeline.predict_cases(args.preprocessed, args.models, args.out, metrics_path=args.metrics,
                                     tables_dir=args.tables, progress=not args.quiet,
                                     stage1_groups=[int(g) for g in params["stage1_groups"]],
                                     stage2_muscles=list(params["stage2_muscles"]), **_inference_kwargs(params))
    print(f"{args.out}: {summary['n_test_cases']} test case(s); {summary['mean_seconds_per_case']:.1f} s per case "
          f"(Dice: llseg evaluate)")
    return 0


def cmd_evaluate(args) -> int:
    from .study import evaluation

    summary = evaluation.evaluate_predictions(args.preprocessed, args.predictions, args.table, args.metrics,
                                              progress=not args.quiet)
    d1, d2 = (summary[f"dice_mean_stage{i}"] for i in (1, 2))  # None when no Dice is defined
    print(f"{args.table}: {summary['n_cases']} test case(s), {summary['n_rows']} regions x 2 stages; mean Dice stage 1 "
          f"{'n/a' if d1 is None else f'{d1:.3f}'}, stage 2 {'n/a' if d2 is None else f'{d2:.3f}'}; "
          f"{summary['n_within_interobserver']} of {summary['n_muscles']} muscles within interobserver Dice"
          + (f"; {len(summary['muscles_absent'])} muscle(s) absent from the test labels, not scored"
             if summary["muscles_absent"] else ""))
    return 0


def _segment_outputs(output) -> list[Path]:
    """The files ``llseg segment -o output`` writes: the label map first, then the tables beside it."""
    out = Path(output)
    if not out.name.endswith((".nii", ".nii.gz")) or out.name in (".nii", ".nii.gz"):
        raise ValueError(f"{out}: output must end in .nii or .nii.gz")
    stem = out.name[: -len(".nii.gz")] if out.name.endswith(".nii.gz") else out.stem
    return [out] + [out.with_name(f"{stem}{suffix}") for suffix in ("_volumes.csv", "_contours.json", ".ctbl",
                                                                     "_itksnap.txt")]


def cmd_segment(args) -> int:
    from . import coverage, guards, io, pipeline

    params = load_params(args.params)
    # Everything that can be checked is checked before the models load (all-or-nothing outputs, llseg.io).
    outputs = _segment_outputs(args.output)
    guards.check_output_paths(outputs, [args.image, args.params, args.models])
    scan = io.load_image(args.image)
    guards.check_image_content(scan, allow_label_like=args.allow_label_like)
    guards.check_memory(scan, section(params, "preprocess", args.params)["spacing_mm"])
    _say_device(training=False)
    with guards.atomic_files(outputs) as staged:
        found = pipeline.segment_scan(scan, staged[outputs[0]], args.models, progress=not args.quiet,
                                      scan_coverage=args.coverage, cut_padding=args.cut_padding,
                                      **_preprocess_kwargs(section(params, "preprocess", args.params)),
                                      **_inference_kwargs(params))
    print(f"{args.output}: {found['n_regions']} regions; preprocessing {found['seconds_preprocess']:.1f} s, stage 1 "
          f"{found['seconds_stage1']:.1f} s, stage 2 + postprocessing {found['seconds_stage2']:.1f} s")
    top, bottom = found["coverage"]
    if (top, bottom) != coverage.WHOLE:
        by_reason: dict = {}
        for lab, reason in found["absent"].items():
            by_reason.setdefault(reason, []).append(lab)
        print(f"coverage {top:.2f}-{bottom:.2f} of the T12-to-ankle span ({found['coverage_source']}); absent: " + "; ".join(
            f"{len(labs)} {reason}" for reason, labs in sorted(by_reason.items())) + " (see the volumes CSV)")
    return 0


def cmd_import_labels(args) -> int:
    from . import anatomy, label_mapping

    mapping = label_mapping.load_mapping(label_mapping.mapping_file(args.mapping), allow_merge=args.allow_merge)
    results = label_mapping.import_labels(args.src, args.out, mapping, drop_unmapped=args.drop_unmapped,
                                          progress=not args.quiet)
    for r in results:
        n_right = sum(1 for v in r["regions"] if anatomy.side_of_label(v) == "right")
        dropped = ", ".join(f"{v} ({n} voxel{'s' if n != 1 else ''})" for v, n in r["dropped"].items())
        print(f"{r['output']}: {len(r['regions'])} of {anatomy.N_REGIONS} regions ({n_right} right, "
              f"{len(r['regions']) - n_right} left)" + (f"; dropped unmapped {dropped}" if dropped else ""))
    print(f"{args.out}: {len(results)} label map(s) imported with mapping {args.mapping}")
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
      llseg summary                       mean Dice with intervals, verdicts, machines, where the reports are
      llseg segment scan.nii.gz -o scan_muscles.nii.gz
      llseg import-labels their_labels/ --mapping musclemap --out data/labels
    """)


def cmd_claims(args) -> int:
    from .study import claims

    params = load_params(args.params)
    thresholds = section(params, "claims", args.params)
    stage = str((params.get("evaluation") or {}).get("stage", "stage2"))
    counts = claims.write_claims(args.metrics, args.table, args.out, args.json, thresholds=thresholds, stage=stage,
                                 profile=str(params.get("profile", "")))
    print(f"{args.out}: {sum(counts.values())} claims; " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 0


def cmd_summary(args) -> int:
    from .study import summary

    print(summary.study_summary(args.metrics, args.table, args.models, elapsed_s=args.elapsed))
    return 0


def cmd_repro(args) -> int:
    from . import repro

    try:
        return repro.reproduce(jobs=args.jobs, log_dir=args.log_dir, progress=not args.quiet, dry=args.dry)
    except RuntimeError as exc:  # dvc itself failed (not a stage): one line, exit 1
        print(f"llseg repro: error: {exc}", file=sys.stderr)
        return 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


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

    sp = add("profile", cmd_profile, f"Switch params.yaml to a profile ({', '.join(PROFILES)}).", "llseg profile smoke")
    sp.add_argument("name", choices=PROFILES)
    sp.add_argument("--params", default="params.yaml")

    sp = add("cohort-params", cmd_cohort_params, "Set params.yaml's stage1_groups and stage2_muscles to the "
             "networks a cohort can train (its labelled muscles), so dvc repro trains and runs only those.",
             "llseg cohort-params data")
    sp.add_argument("data")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--min-training-cases", type=int, default=2, help="training cases a region must be labelled "
                    "in (as llseg check; default 2)")

    sp = add("phantom", cmd_phantom, "Generate the digital phantom cohort from params.yaml's 'phantom' section.",
             "llseg phantom --out data")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--out", default="data")
    sp.add_argument("-j", "--jobs", type=int, default=None,
                    help="cases generated at once (default: one per core, at most one per 7 GiB of free memory); "
                         "the cohort is the same for any count")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sp = add("check", cmd_check, "Validate a cohort folder (images/, labels/): geometry, labels, left/right; "
             "list the muscles each label map holds (any subset of the 70 regions is fine) and the regions "
             "labelled in too few training cases to be trained.",
             "llseg check data --params params.yaml --report metrics/cohort.json")
    sp.add_argument("data")
    sp.add_argument("--report", help="write the per-case results as JSON")
    sp.add_argument("--images-only", action="store_true", help="label maps are optional (segmentation only)")
    sp.add_argument("--params", help="params.yaml whose 'split' section gives the train/test split; regions are "
                    "then counted in the training cases only (default: over all cases)")
    sp.add_argument("--min-training-cases", type=_positive_int, default=2, metavar="N",
                    help="fewest training cases a region must be labelled in to be trained (default 2: from a "
                    "single subject, a muscle's network, input size and box prior all learn that one anatomy; "
                    "two is the fewest that shows any variation between subjects)")

    sp = add("preprocess", cmd_preprocess, "N4 bias correction, resampling, FOV cropping, train/test split.",
             "llseg preprocess --data data --out work/preprocessed")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--data", default="data")
    sp.add_argument("--out", default="work/preprocessed")
    sp.add_argument("-j", "--jobs", type=int, default=None,
                    help="cases preprocessed at once (default: one per 2 cores, as N4 runs on 2 threads); the "
                         "output is the same for any count")
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

    sp = add("body-profile", cmd_body_profile, "Record the training cases' body outline along the leg, from which "
             "`llseg segment` estimates what a short scan covers.",
             "llseg body-profile --out models/body_profile.json")
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

    sp = add("summary", cmd_summary, "A short summary of the study's results: mean Dice per stage with its "
             "confidence interval, claim verdicts, the machines that produced them, where the reports are.",
             "llseg summary --elapsed 1830")
    sp.add_argument("--metrics", default="metrics", help="folder of the study's metrics/*.json")
    sp.add_argument("--table", default="reports/tables/metrics_per_region.csv", help="per-region rows (llseg evaluate)")
    sp.add_argument("--models", default="models", help="folder of the training records (*.json)")
    sp.add_argument("--elapsed", type=float, default=None, help="seconds the run took (printed as given)")

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
    sp.add_argument("image", help="the scan to segment (.nii or .nii.gz, any orientation)")
    sp.add_argument("-o", "--output", required=True, help="label map to write (.nii or .nii.gz); the volumes, "
                    "contours and colour tables are written beside it")
    sp.add_argument("--models", default="models", help="folder of the trained cascade (stage1/, stage2/; default models)")
    sp.add_argument("--params", default="params.yaml", help="params.yaml whose preprocess, stage2 and postprocess "
                    "sections match the models' training (default params.yaml)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--allow-label-like", action="store_true", help="segment an image even if its values look "
                    "like label ids (by default such an image is refused as a label map)")
    sp.add_argument("--coverage", help="the stretch of the leg the scan covers: whole, pelvis_knee, thigh (hip to "
                    "knee joint), calf (knee to ankle joint), or TOP:BOTTOM fractions of the T12 (0) to ankle (1) "
                    "span; default: whole leg for a scan of 800 mm or more, else estimated from the body outline "
                    "(models/body_profile.json; printed). Muscles outside it are "
                    "reported absent ('not in field of view' in the volumes CSV)")
    sp.add_argument("--cut-padding", choices=("edge", "reflect", "none"), default="edge",
                    help="on a partial scan, how the networks see a body part or muscle cut by the scan's ends: "
                    "filled in past the ends by repeating the end slice (edge, default) or mirroring (reflect), "
                    "or cut as it is (none); models trained on partial scans are never padded")

    sp = add("import-labels", cmd_import_labels, "Renumber a folder of label maps from another convention into "
             "llseg's ids (0, 1..70) with a mapping file; all files or none are written.",
             "llseg import-labels their_labels/ --mapping musclemap --out data/labels")
    sp.add_argument("src", help="folder of .nii / .nii.gz label maps in the other numbering")
    sp.add_argument("--mapping", required=True, help="a ready mapping (musclemap) or a CSV file "
                    "source_id,source_name,muscle,side (see llseg.label_mapping)")
    sp.add_argument("--out", required=True, help="folder to write the renumbered maps to (same file names), "
                    "e.g. data/labels")
    sp.add_argument("--drop-unmapped", action="store_true", help="set label values the mapping does not list to 0 "
                    "(reported per file) instead of refusing the files")
    sp.add_argument("--allow-merge", action="store_true", help="accept several source labels onto one llseg region")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_tensorflow()
    try:  # TensorFlow's Python-side (absl) log lines: errors only
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, OSError) as exc:  # OSError: FileNotFoundError, IsADirectoryError, ...
        msg = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        lines = msg.splitlines() or [type(exc).__name__]
        print(f"llseg {args.command}: error: {lines[0] if not args.verbose else msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
