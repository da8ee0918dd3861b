"""Time U-Net training steps and predictions on this machine (run by hand, not by the tests).

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python benchmarks/bench_unet_step.py [--quick] [--deterministic]

Prints, for a 3-level plain U-Net (1 input channel):

1. steady-state seconds per ``train_on_batch`` step and per prediction
   (``predict_on_batch``), for root filters 8/16/32, inputs 32^3, 48x48x32, 64x64x32 and
   2 / 9 classes. The first call (graph tracing) is timed separately and excluded.
2. ``model.fit`` on a ``keras.utils.PyDataset`` vs a Python loop of ``train_on_batch``
   (same model, same number of steps) and the ratio.
3. ``predict_on_batch`` vs ``model(x, training=False)`` vs ``model.predict``.
4. The first ``train_on_batch`` (graph tracing) with and without building Adam's variables
   first, as ``llseg.train.fit`` does (TensorFlow otherwise traces the step twice).

``--deterministic`` switches on TensorFlow op determinism first (as ``llseg.train.fit``
does) so its cost can be compared with a run without it.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from llseg.models import unet_3d  # noqa: E402

SHAPES = [(32, 32, 32), (48, 48, 32), (64, 64, 32)]
ROOTS = [8, 16, 32]
CLASSES = [2, 9]


def _compiled(shape, n_classes, root):
    model = unet_3d((*shape, 1), n_classes, levels=3, root_filters=root)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(),
                  jit_compile=False)
    return model


def _data(shape, n_classes, rng, n=1):
    x = rng.normal(size=(n, *shape, 1)).astype(np.float32)
    y = rng.integers(0, n_classes, size=(n, *shape)).astype(np.int32)
    return x, y


def _time(fn, reps):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def grid(reps_train, reps_pred):
    rng = np.random.default_rng(0)
    print(f"{'root':>4} {'shape':>12} {'K':>2} {'params':>9} | {'1st step':>8} {'s/step':>7} | "
          f"{'1st pred':>8} {'s/pred':>7}")
    for root in ROOTS:
        for shape in SHAPES:
            for k in CLASSES:
                model = _compiled(shape, k, root)
                x, y = _data(shape, k, rng)
                t0 = time.perf_counter()
                model.train_on_batch(x, y)
                first = time.perf_counter() - t0
                model.train_on_batch(x, y)
                step = _time(lambda: model.train_on_batch(x, y), reps_train)
                t0 = time.perf_counter()
                model.predict_on_batch(x)
                pfirst = time.perf_counter() - t0
                pred = _time(lambda: model.predict_on_batch(x), reps_pred)
                print(f"{root:>4} {'x'.join(map(str, shape)):>12} {k:>2} {model.count_params():>9,} | "
                      f"{first:8.2f} {step:7.3f} | {pfirst:8.2f} {pred:7.3f}", flush=True)
                keras.backend.clear_session()


class _Samples(keras.utils.PyDataset):
    """One random (x, y) pair per step, like fit's sample_batch."""

    def __init__(self, shape, n_classes, steps, **kw):
        super().__init__(**kw)
        self.shape, self.k, self.steps = shape, n_classes, steps
        self.rng = np.random.default_rng(1)

    def __len__(self):
        return self.steps

    def __getitem__(self, i):
        return _data(self.shape, self.k, self.rng)


def fit_vs_loop(shape, k, root, steps, rounds):
    """Alternate blocks of ``steps`` steps of both methods on one model (the machine is
    shared, so interleaving exposes both to the same load); report medians."""
    rng = np.random.default_rng(2)
    model = _compiled(shape, k, root)
    x, y = _data(shape, k, rng)
    model.train_on_batch(x, y)                                    # trace train_on_batch
    model.fit(_Samples(shape, k, 2), epochs=1, verbose=0)         # trace fit's train function
    loop, fit = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):                                    # data made in the loop, like llseg.train.fit
            x, y = _data(shape, k, rng)
            model.train_on_batch(x, y)
        loop.append((time.perf_counter() - t0) / steps)
        t0 = time.perf_counter()
        model.fit(_Samples(shape, k, steps), epochs=1, verbose=0)
        fit.append((time.perf_counter() - t0) / steps)
    keras.backend.clear_session()
    a, b = float(np.median(loop)), float(np.median(fit))
    print(f"\nfit vs loop: root {root}, {'x'.join(map(str, shape))}, {k} classes, {rounds} rounds of {steps} steps")
    print(f"  train_on_batch loop        {a:7.3f} s/step (median; rounds {np.round(loop, 3).tolist()})")
    print(f"  model.fit(PyDataset)       {b:7.3f} s/step (median; rounds {np.round(fit, 3).tolist()})")
    print(f"  ratio fit / loop           {b / a:7.2f}")


def predict_variants(shape, k, root, reps):
    rng = np.random.default_rng(3)
    model = _compiled(shape, k, root)
    x, _ = _data(shape, k, rng)
    fns = {
        "predict_on_batch": lambda: model.predict_on_batch(x),
        "model(x, training=False)": lambda: keras.ops.convert_to_numpy(model(x, training=False)),
        "model.predict": lambda: model.predict(x, verbose=0),
    }
    print(f"\nprediction variants: root {root}, {'x'.join(map(str, shape))}, {k} classes")
    base = None
    for name, fn in fns.items():
        fn()
        s = _time(fn, reps)
        base = base or s
        print(f"  {name:<28} {s:7.3f} s  (ratio to predict_on_batch {s / base:5.2f})")
    keras.backend.clear_session()


def first_step_prebuilt(shape, k, root, rounds):
    """First train_on_batch of a fresh model, plain vs optimizer built first, alternated (after a
    warm-up model) so that both see the same load; medians."""
    rng = np.random.default_rng(4)
    x, y = _data(shape, k, rng)
    times = {"plain": [], "optimizer built first": []}
    for i in range(rounds + 1):
        for name in times:
            model = _compiled(shape, k, root)
            t0 = time.perf_counter()
            if name != "plain":
                model.optimizer.build(model.trainable_variables)
            model.train_on_batch(x, y)
            if i:                                                  # round 0 warms up Python and TF
                times[name].append(time.perf_counter() - t0)
            keras.backend.clear_session()
    print(f"\nfirst training step (tracing): root {root}, {'x'.join(map(str, shape))}, {k} classes, {rounds} rounds")
    med = {name: float(np.median(v)) for name, v in times.items()}
    for name, v in times.items():
        print(f"  {name:<28} {med[name]:7.2f} s (median; rounds {np.round(v, 2).tolist()})")
    print(f"  ratio built first / plain  {med['optimizer built first'] / med['plain']:7.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--deterministic", action="store_true", help="enable TF op determinism first")
    args = ap.parse_args()
    if args.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    reps = 3 if args.quick else 8
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, deterministic={args.deterministic}, "
          f"cpus={os.cpu_count()}")
    grid(reps, reps)
    fit_vs_loop((32, 32, 32), 2, 8, steps=10 if args.quick else 20, rounds=3 if args.quick else 5)
    fit_vs_loop((48, 48, 32), 2, 16, steps=5 if args.quick else 10, rounds=3 if args.quick else 5)
    predict_variants((48, 48, 32), 2, 16, reps)
    first_step_prebuilt((24, 28, 32), 2, 8, rounds=3 if args.quick else 5)


if __name__ == "__main__":
    main()
