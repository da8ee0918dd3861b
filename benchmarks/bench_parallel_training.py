"""Two trainings one after the other (TensorFlow's default threads) vs side by side (one thread each).

    .venv/bin/python benchmarks/bench_parallel_training.py [--steps 60]

This is the measurement behind ``llseg.train.use_training_threads`` and ``llseg repro --jobs``.
Each training is a separate Python process, as a DVC stage is, training a 3-level U-Net with
``llseg.train.fit`` on random data for ``--steps`` iterations; three network shapes:

- stage-2-like: 8 root filters (the cpu profile's stage 2), input 32 x 28 x 24, 2 classes;
- stage-2-wide: the same with 16 root filters (the cpu profile's stage 2 before it moved to 8);
- stage-1-like: 8 root filters, input 60 x 48 x 24, 9 classes.

Printed per shape: wall seconds of (a) two default-thread processes run one after the other,
(b) two one-thread processes run at the same time, (c) one one-thread process alone, and the
ratios (a)/(b) (what parallel training gains) and (c)/(default one-process time) (what one
thread costs a lone training). Process start-up (importing Keras, tracing) is included, as in
the study. All in one run, so the ratios compare like with like on this noisy machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = """
import sys, numpy as np
threads = int(sys.argv[1]); shape = tuple(int(v) for v in sys.argv[2].split("x")); root = int(sys.argv[3])
n_classes = int(sys.argv[4]); steps = int(sys.argv[5])
from llseg import models, train
if threads:
    train.use_training_threads(threads)
rng = np.random.default_rng(0)
x = rng.normal(size=(1, *shape, 1)).astype(np.float32)
y = rng.integers(0, n_classes, size=(1, *shape)).astype(np.int32)
model = models.build_model("unet", (*shape, 1), n_classes, levels=3, root_filters=root)
train.fit(model, lambda r: (x, y), iterations=steps, learning_rate=0.01, seed=0, progress=False)
"""

SHAPES = {"stage-2-like": ("32x28x24", 8, 2), "stage-2-wide": ("32x28x24", 16, 2), "stage-1-like": ("60x48x24", 8, 9)}


def _start(threads: int, shape: str, root: int, n_classes: int, steps: int) -> subprocess.Popen:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(threads), shape, str(root), str(n_classes), str(steps)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(*procs) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"training process failed (exit {p.returncode}):\n{err[-2000:]}")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="training iterations per process (default 60)")
    a = ap.parse_args()
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}; {a.steps} iterations per training")
    for name, (shape, root, n_classes) in SHAPES.items():
        args = (shape, root, n_classes, a.steps)
        one_default = _timed(lambda: _wait(_start(0, *args)))
        sequential = one_default + _timed(lambda: _wait(_start(0, *args)))
        parallel = _timed(lambda: _wait(_start(1, *args), _start(1, *args)))
        one_single = _timed(lambda: _wait(_start(1, *args)))
        print(f"{name:13s} (a) 2 x default threads, one after the other {sequential:6.1f} s | "
              f"(b) 2 x 1 thread side by side {parallel:6.1f} s | (a)/(b) = {sequential / parallel:.2f}")
        print(f"{'':13s} one training alone: default threads {one_default:6.1f} s, 1 thread {one_single:6.1f} s "
              f"(1-thread cost x{one_single / one_default:.2f})")


if __name__ == "__main__":
    main()
