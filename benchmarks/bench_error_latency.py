"""How soon ``llseg segment`` reports bad input (issue 20's target: within 2 s of starting).

    .venv/bin/python benchmarks/bench_error_latency.py

Runs every kind of the bad-input catalogue of ``tests/test_bad_input.py`` (bad scans, output
paths, model files, params values) as a real ``llseg segment`` process, from start to exit,
and prints its wall time, the slowest kinds and the share within the 2 s target, all measured
in this run. Needs no trained models: every kind must fail before they load.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0
sys.path.insert(0, str(ROOT / "tests"))

import test_bad_input as catalogue  # noqa: E402  (the kinds and their set-up, shared with the tests)


def _study(tmp: Path) -> Path:
    """The catalogue's ``study`` fixture, without pytest."""
    catalogue._nifti(tmp / "data" / "images" / "a.nii.gz", catalogue._scan())
    catalogue._nifti(tmp / "data" / "labels" / "a.nii.gz", catalogue._labels())
    catalogue._nifti(tmp / "scan.nii.gz", catalogue._scan())
    catalogue._params(tmp)
    return tmp


def main() -> int:
    llseg = Path(sys.executable).with_name("llseg")
    seconds = {}
    for kind, (setup, words) in catalogue.SEGMENT_CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            argv = setup(_study(Path(tmp)))
            t0 = time.perf_counter()
            done = subprocess.run([str(llseg), *argv], capture_output=True, text=True, cwd=tmp)
            seconds[kind] = time.perf_counter() - t0
            if done.returncode == 0 or words not in done.stderr:
                print(f"{kind}: unexpected result (exit {done.returncode}): {done.stderr.strip()[:200]}")
                return 1
    values = sorted(seconds.values())
    within = sum(v <= TARGET_S for v in values)
    print(f"llseg segment, {len(values)} kinds of bad input, each a fresh process (start to exit):")
    print(f"  median {statistics.median(values):.2f} s, max {values[-1]:.2f} s "
          f"(max / {TARGET_S:.0f} s target = {values[-1] / TARGET_S:.2f}); {within} of {len(values)} within the target")
    for kind, s in sorted(seconds.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  slowest: {s:5.2f} s  {kind}")
    return 0 if within == len(values) else 1


if __name__ == "__main__":
    raise SystemExit(main())
