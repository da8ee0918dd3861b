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
import copy  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
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


def cmd_phantom(args) -> int:
    from tqdm.auto import tqdm

    from . import cohort, io

    p = section(load_params(args.params), "phantom", args.params)
    n, seed = int(p["n_subjects"]), int(p["seed"])
    out = Path(args.out)
    rng = np.random.default_rng(seed)
    protocols = ["spiral" if u < float(p["spiral_fraction"]) else "cartesian" for u in rng.random(n)]
    # Build the whole cohort in a sibling temp folder and swap it in at the end: an interrupted
    # run never leaves a half-written cohort.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for i in tqdm(range(n), desc="phantom cohort", unit="case", disable=args.quiet):
            case_id = f"phantom_{i:03d}"
            case = cohort.make_case(seed + i, protocol=protocols[i], downscale=float(p["downscale"]),
                                    bias_strength=float(p["bias_strength"]), noise_sigma=float(p["noise_sigma"]),
                                    supersample=int(p["supersample"]))
            paths = cohort.case_paths(tmp, case_id)
            io.save_nifti(paths["image"], case.image, case.affine, dtype=np.float32)
            io.save_nifti(paths["labels"], case.labels, case.affine, dtype=np.uint8)
            io.write_json(paths["subject"], {**case.meta, "case": case_id})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
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
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"{out}: {len(cases)} case(s) preprocessed ({len(split['train'])} train / {len(split['test'])} test)")
    return 0


# ----------------------------------------------------------------------------- main

EPILOG = textwrap.dedent("""\
    examples:
      llseg profile smoke                 switch params.yaml to the smoke profile
      llseg phantom --out data            regenerate the phantom cohort (bit for bit)
      llseg check data                    validate a cohort (yours or the phantom)
      llseg preprocess --data data --out work/preprocessed
    """)


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
