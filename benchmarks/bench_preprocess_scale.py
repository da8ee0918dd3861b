"""Phantom generation and N4 preprocessing at a profile's voxel size: time per case, cases one after
the other vs ``--jobs`` at once, peak memory, and whether the output depends on the job count
(issue 16, item 4). Run by hand from the repository root:

    .venv/bin/python benchmarks/bench_preprocess_scale.py [--profile paper] [--cases 4] [--jobs N]

Generates ``--cases`` phantom cases with the profile's ``phantom`` settings (``llseg.phantom``),
once with 1 job and once with ``--jobs`` (default: every core), then preprocesses them
(``pipeline.preprocess_cohort``: N4, resampling to the profile's ``preprocess.spacing_mm``) the same
two ways, and compares the files of the two runs byte for byte. Prints seconds per case (wall time
over the cases), the speed-up and the peak resident memory of one worker process.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llseg import cli, io, pipeline, runinfo  # noqa: E402
from llseg.phantom import write_cohort  # noqa: E402


def profile_params(name: str, folder: Path) -> dict:
    """params.yaml with ``profiles.<name>`` applied (``llseg profile`` on a copy in ``folder``)."""
    path = folder / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    cli.apply_profile(path, name)
    return cli.load_params(path)


def _phantom(out, p, n, jobs):
    return write_cohort(out, n_subjects=n, seed=int(p["seed"]), spiral_fraction=float(p["spiral_fraction"]),
                        downscale=float(p["downscale"]), bias_strength=float(p["bias_strength"]),
                        noise_sigma=float(p["noise_sigma"]), supersample=int(p["supersample"]), jobs=jobs,
                        progress=False)


def _preprocess(data, out, p, split, jobs):
    return pipeline.preprocess_cohort(data, out, spacing_mm=p["spacing_mm"], fov_mm=p["fov_mm"], n4=bool(p["n4"]),
                                      n4_shrink=int(p["n4_shrink"]), n4_iterations=p["n4_iterations"],
                                      test_fraction=float(split["test_fraction"]), seed=int(split["seed"]),
                                      jobs=jobs, progress=False)


def _measure(fn, *args) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - t0
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return seconds, peak_kib / 2**20


def _timed_in_child(fn, *args) -> tuple[float, float]:
    """Run ``fn(*args)`` in a fresh process: (seconds, peak RSS of that process or of its largest
    worker, GiB)."""
    with ProcessPoolExecutor(1) as pool:
        return pool.submit(_measure, fn, *args).result()


def same_files(a: Path, b: Path) -> tuple[int, list[str]]:
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    differ = [str(f) for f in files if not filecmp.cmp(a / f, b / f, shallow=False)]
    return len(files), differ


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=runinfo.usable_cores())
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llseg_scale_"))
    params = profile_params(args.profile, work)
    ph, pre = params["phantom"], params["preprocess"]
    print(f"profile {args.profile}: phantom downscale {ph['downscale']}, supersample {ph['supersample']}; "
          f"preprocess to {pre['spacing_mm']} mm, N4 iterations {pre['n4_iterations']}; {args.cases} cases, "
          f"1 job vs {args.jobs} on {runinfo.usable_cores()} cores")
    out = {"profile": args.profile, "cases": args.cases, "jobs": args.jobs, "cores": runinfo.usable_cores()}
    rows = {}
    for jobs in (1, args.jobs):
        rows[("phantom", jobs)] = _timed_in_child(_phantom, work / f"data_j{jobs}", ph, args.cases, jobs)
    n, differ = same_files(work / "data_j1", work / f"data_j{args.jobs}")
    out["phantom_identical"] = not differ
    for jobs in (1, args.jobs):
        rows[("N4 preprocess", jobs)] = _timed_in_child(_preprocess, work / "data_j1", work / f"pre_j{jobs}", pre,
                                                        params["split"], jobs)
    m, differ2 = same_files(work / "pre_j1", work / f"pre_j{args.jobs}")
    out["preprocess_identical"] = not differ2
    shape = io.load_image(next((work / "pre_j1" / "image").glob("*.nii.gz"))).data.shape
    out["preprocessed_shape"] = list(shape)
    print(f"{'step':14s} {'jobs':>4s} {'s/case':>8s} {'speed-up':>8s} {'peak GiB':>9s}")
    out["rows"] = []
    for (step, jobs), (seconds, peak) in rows.items():
        speedup = rows[(step, 1)][0] / seconds
        print(f"{step:14s} {jobs:4d} {seconds / args.cases:8.1f} {speedup:8.2f} {peak:9.2f}")
        out["rows"].append({"step": step, "jobs": jobs, "seconds_per_case": seconds / args.cases,
                            "speedup": speedup, "peak_rss_gib": peak})
    print(f"phantom files identical with 1 and {args.jobs} jobs: {not differ} ({n} files); preprocessed files "
          f"identical: {not differ2} ({m} files{'; differ: ' + ', '.join(differ2[:5]) if differ2 else ''}); "
          f"study-grid shape {tuple(shape)}")
    if args.json:
        io.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    raise SystemExit(main())
