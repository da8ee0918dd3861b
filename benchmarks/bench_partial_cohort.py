"""A study on a thigh-only cohort labelled for 7 muscles per side, cut from the phantom (issue 17 (c)).

The committed phantom cohort (``data/``) is cut to each subject's hip-to-knee stretch
(``llseg.phantom.cuts``) and its label maps keep the quadriceps and the three hamstrings only;
then the study's commands run on it, as a user with such a cohort would run them: ``llseg check``,
``llseg preprocess``, ``llseg train-stage1`` for the groups that hold labelled muscles,
``llseg box-priors``, ``llseg train-stage2`` for the 7 muscles, ``llseg predict``. Prints the
test Dice per muscle (final labels vs ground truth on the study grid) and the regions predicted
that the cohort does not label (must be 0).

Settings: params.yaml (cpu profile) with the iteration counts given here (default: stage 1 300,
stage 2 400, about half the cpu profile's, to fit a CPU benchmark). Run from the repository root:
``python benchmarks/bench_partial_cohort.py [--work DIR] [--json out.json]``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llseg import anatomy, io, metrics  # noqa: E402
from llseg.coverage import COVERAGE_PRESETS  # noqa: E402
from llseg.phantom import cuts  # noqa: E402

MUSCLES = ("rectus_femoris", "vastus_lateralis", "vastus_intermedius", "vastus_medialis",
           "biceps_femoris_long", "semitendinosus", "semimembranosus")


def _llseg(*args, check: bool = True) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llseg.cli", *args], check=check, cwd=ROOT)
    if proc.returncode:
        print(f"llseg {args[0]}: exit {proc.returncode}", flush=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/llseg_thigh_cohort", help="folder for the cohort, models and outputs")
    ap.add_argument("--stage1-iterations", type=int, default=300)
    ap.add_argument("--stage2-iterations", type=int, default=400)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    work = Path(args.work)
    data, pre, models, pred = work / "data", work / "preprocessed", work / "models", work / "predictions"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["stage1"]["iterations"] = args.stage1_iterations
    params["stage2"]["iterations"] = args.stage2_iterations
    work.mkdir(parents=True, exist_ok=True)
    params_path = work / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    seconds = {}

    t0 = time.perf_counter()
    cases = cuts.write_partial_cohort(ROOT / "data", data, COVERAGE_PRESETS["thigh"], MUSCLES)
    seconds["cut"] = time.perf_counter() - t0
    seconds["check"] = _llseg("check", str(data), "--report", str(work / "cohort.json"), check=False)
    seconds["preprocess"] = _llseg("preprocess", "--params", str(params_path), "--data", str(data), "--out", str(pre),
                                   "--quiet")
    groups = sorted({anatomy.muscle(k).group for k in MUSCLES})
    for g in groups:
        seconds[f"stage1_group_{g:02d}"] = _llseg("train-stage1", "--group", str(g), "--params", str(params_path),
                                                  "--preprocessed", str(pre), "--out",
                                                  str(models / "stage1" / f"group_{g:02d}.keras"), "--quiet")
    seconds["box_priors"] = _llseg("box-priors", "--preprocessed", str(pre), "--out",
                                   str(models / "stage1" / "box_priors.json"))
    for key in MUSCLES:
        seconds[f"stage2_{key}"] = _llseg("train-stage2", "--muscle", key, "--params", str(params_path),
                                          "--preprocessed", str(pre), "--out", str(models / "stage2" / f"{key}.keras"),
                                          "--quiet")
    seconds["predict"] = _llseg("predict", "--params", str(params_path), "--preprocessed", str(pre), "--models",
                                str(models), "--out", str(pred), "--metrics", str(work / "cascade.json"), "--tables",
                                str(work / "tables"), "--quiet")

    manifest = io.read_json(pre / "manifest.json")
    labelled = [anatomy.label_id(k, s) for k in MUSCLES for s in ("right", "left")]
    dice = {lab: [] for lab in labelled}
    extra = 0
    for case in manifest["split"]["test"]:
        truth = np.asarray(nib.load(pre / "labels" / f"{case}.nii.gz").dataobj)
        final = np.asarray(nib.load(pred / "study" / f"{case}_stage2.nii.gz").dataobj)
        extra += len(set(np.unique(final).tolist()) - set(labelled) - {0})
        for lab in labelled:
            if (truth == lab).any():
                dice[lab].append(float(metrics.dice(final == lab, truth == lab)))
    print(f"\nthigh-only cohort: {len(cases)} cases ({len(manifest['split']['train'])} train, "
          f"{len(manifest['split']['test'])} test), 7 muscles per side; stage 1 {args.stage1_iterations} / stage 2 "
          f"{args.stage2_iterations} iterations")
    print("| muscle | right Dice | left Dice |\n|---|---|---|")
    per_muscle = {}
    for key in MUSCLES:
        r, l = (np.mean(dice[anatomy.label_id(key, s)]) for s in ("right", "left"))
        per_muscle[key] = {"right": r, "left": l}
        print(f"| {key} | {r:.3f} | {l:.3f} |")
    mean = float(np.mean([v for vals in dice.values() for v in vals]))
    print(f"mean test Dice over the 14 regions: {mean:.3f}; regions predicted outside the labelled set: {extra}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    if args.json:
        io.write_json(args.json, {"mean_dice": mean, "per_muscle": per_muscle, "extra_regions": extra,
                                  "seconds": seconds, "n_cases": len(cases),
                                  "iterations": [args.stage1_iterations, args.stage2_iterations]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
