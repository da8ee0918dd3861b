"""Measure the cascade's targets of issue #3 on this machine (run by hand, not by the tests).

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python benchmarks/bench_cascade.py [--case data/images/phantom_000.nii.gz]

Needs a trained study (``dvc repro`` or ``make study``: ``models/`` and ``data/``). Prints, each
measured in this run:

1. ``llseg segment`` of one case (both stages, six-box TTA, postprocessing), wall time of
   the whole command, against the 90 s target and the paper's 18-24 min per case on a GPU;
2. the training seconds of every stage-1 and stage-2 network (read from the model
   sidecars written by the training stages), their sum, and that sum divided by the number of
   trainings ``llseg repro`` runs at once, against the 45-minute budget of the whole
   ``make study``;
3. the mean Dice of stage 1 alone and of stage 2 (``metrics/evaluation.json``) against the
   0.90 target and the +0.05 stage-2 gain.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from llseg import repro  # noqa: E402  (after the oneDNN switch, like every llseg entry point)

ROOT = Path(__file__).resolve().parents[1]
SEGMENT_TARGET_S = 90.0
STUDY_BUDGET_S = 45 * 60.0
PAPER_CASE_S = (18 * 60.0, 24 * 60.0)


def _segment_seconds(case: Path) -> float:
    llseg = Path(sys.executable).with_name("llseg")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([str(llseg), "segment", str(case), "-o", str(Path(tmp) / "labels.nii.gz"),
                        "--models", str(ROOT / "models")], check=True, cwd=ROOT)
        return time.perf_counter() - t0


def _training_seconds() -> dict[str, float]:
    out = {}
    for stage in ("stage1", "stage2"):
        for sidecar in sorted((ROOT / "models" / stage).glob("*.json")):
            info = json.loads(sidecar.read_text())
            if "seconds" in info:
                out[f"{stage}/{sidecar.stem}"] = float(info["seconds"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=str(ROOT / "data" / "images" / "phantom_000.nii.gz"))
    args = ap.parse_args()
    if not (ROOT / "models" / "stage1").is_dir():
        print("no trained models: run `make study` (or `dvc repro predict`) first", file=sys.stderr)
        return 1

    seconds = _segment_seconds(Path(args.case))
    print(f"llseg segment {Path(args.case).name}: {seconds:.1f} s "
          f"(target {SEGMENT_TARGET_S:.0f} s: ratio {seconds / SEGMENT_TARGET_S:.2f}; "
          f"paper {PAPER_CASE_S[0] / 60:.0f}-{PAPER_CASE_S[1] / 60:.0f} min on a GPU at 1 x 1 x 5 mm)")

    train = _training_seconds()
    s1 = sum(v for k, v in train.items() if k.startswith("stage1"))
    s2 = sum(v for k, v in train.items() if k.startswith("stage2"))
    jobs = repro.default_jobs()
    wall = (s1 + s2) / jobs
    print(f"training loops, summed over the networks (one thread each): stage 1 {s1 / 60:.1f} min "
          f"({sum(k.startswith('stage1') for k in train)} networks), stage 2 {s2 / 60:.1f} min "
          f"({sum(k.startswith('stage2') for k in train)} networks); `llseg repro` runs {jobs} at a time here, "
          f"so about {wall / 60:.1f} min of wall time, {wall / STUDY_BUDGET_S:.2f} of the 45-min study budget "
          f"(process start, loading and DVC come on top: time `make study` for the whole)")

    evaluation = ROOT / "metrics" / "evaluation.json"
    if evaluation.exists():
        m = json.loads(evaluation.read_text())
        d1, d2 = m["dice_mean_stage1"], m["dice_mean_stage2"]
        print(f"mean Dice over 70 regions: stage 1 {d1:.3f}, stage 2 {d2:.3f} "
              f"(target 0.90: {'met' if d2 >= 0.90 else 'missed'}; stage-2 gain {d2 - d1:+.3f}, "
              f"target +0.05: {'met' if d2 - d1 >= 0.05 else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
