"""Sampling vs training step, and ``llseg.train.fit`` with and without prefetching (run by hand).

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python benchmarks/bench_prefetch.py [--iterations N] [--size X Y Z]

A stage-2-like problem on synthetic data: four 96 x 96 x 40 z-scored images with one muscle
(right and left region) each, ``llseg.stage2.make_sampler`` (crop, resample, augment) at the
cpu profile's input size and a 3-level U-Net with 8 root filters, TensorFlow on one thread as
in the training commands. Prints:

1. milliseconds per ``sample_batch(rng)`` and per ``train_on_batch`` step, each alone;
2. the wall milliseconds per iteration of ``fit`` with ``prefetch=0`` (sample, then step)
   and ``prefetch=2`` (the next samples drawn in a background thread during the step),
   first period excluded (graph tracing). With prefetching an iteration approaches
   ``max(sampling, step)`` instead of their sum, given a free core.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from llseg import anatomy, models, stage2, train  # noqa: E402

MUSCLE = "adductor_longus"


def _cohort(n_cases=4, shape=(96, 96, 40), seed=0):
    """Synthetic z-scored images and label maps, the muscle as a box on each side."""
    m = anatomy.muscle(MUSCLE)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n_cases):
        lab = np.zeros(shape, np.uint8)
        o = i % 3
        lab[60 + o:78 + o, 30:52, 8:30] = m.right_label     # larger x = subject's right (RAS+)
        lab[18 - o:36 - o, 30:52, 8:30] = m.left_label
        img = rng.normal(size=shape).astype(np.float32) + 2.0 * (lab > 0)
        images.append((img - img.mean()) / img.std())
        labels.append(lab)
    return images, labels


def _ms(fn, reps):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1e3 * (time.perf_counter() - t) / reps


def _fit_ms_per_iteration(sample, size, iterations, prefetch, period=5):
    """Wall ms per iteration of ``train.fit``, from validate-callback timestamps (first period excluded)."""
    keras.utils.set_random_seed(0)
    model = models.unet_3d((*size, 1), 2, levels=3, root_filters=8)
    stamps = []

    def stamp(_model):
        stamps.append(time.perf_counter())
        return 0.0

    hist = train.fit(model, sample, iterations=iterations, learning_rate=0.01, seed=0, validate=stamp,
                     validate_every=period, progress=False, prefetch=prefetch)
    return 1e3 * (stamps[-1] - stamps[0]) / (iterations - period), hist["loss"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40, help="fit iterations per run (multiple of 5, >= 10)")
    parser.add_argument("--size", type=int, nargs=3, default=(32, 32, 24), help="network input (X Y Z), voxels")
    args = parser.parse_args(argv)
    train.use_training_threads()
    size = tuple(args.size)
    images, labels = _cohort()
    sample = stage2.make_sampler(images, labels, MUSCLE, size=size,
                                 augment_kwargs={"max_rotation_deg": 10.0, "max_shear": 0.1, "flip_lr": True,
                                                 "spacing_mm": (2.0, 2.0, 10.0)})
    rng = np.random.default_rng(0)
    sample(rng)
    sampling = _ms(lambda: sample(rng), 20)
    model = models.unet_3d((*size, 1), 2, levels=3, root_filters=8)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=train.segmentation_loss(None), jit_compile=False)
    model.optimizer.build(model.trainable_variables)                    # as fit does: one trace
    x, y = sample(rng)
    for _ in range(2):                                                   # trace, warm up
        model.train_on_batch(x, y)
    step = _ms(lambda: model.train_on_batch(x, y), 10)
    print(f"input {size}, root filters 8, 1 TensorFlow thread, {os.cpu_count()} cores")
    print(f"sampling      {sampling:7.1f} ms per sample_batch(rng)")
    print(f"step          {step:7.1f} ms per train_on_batch")
    print(f"sum / max     {sampling + step:7.1f} / {max(sampling, step):.1f} ms")
    losses = {}
    for prefetch in (0, 2):
        ms, losses[prefetch] = _fit_ms_per_iteration(sample, size, args.iterations, prefetch)
        print(f"fit prefetch={prefetch} {ms:7.1f} ms per iteration ({args.iterations} iterations)")
    print(f"same losses with and without prefetching: {losses[0] == losses[2]}")


if __name__ == "__main__":
    main()
