"""Training loop and the shared prediction function (paper section 2.2.3).

Stage 1 and stage 2 both call :func:`fit` (Adam, pixel-wise cross-entropy, batch size 1)
and :func:`predict_proba`; they differ only in the samples they feed (augmented by
``llseg.augment``). For short CPU
trainings, :func:`fit` also offers a soft-Dice term (:func:`segmentation_loss`) and a
polynomial learning-rate decay (:func:`learning_rate_schedule`); the paper profile uses
neither. Volumes are
``(X, Y, Z)`` arrays in RAS+ order; network tensors are ``(N, X, Y, Z, C)`` channels-last.

Only Keras APIs are used, so any Keras backend runs this module; TensorFlow (the default)
is imported lazily, only to switch on deterministic ops.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable

import numpy as np

from . import _validate, runinfo
from .prefetch import PrefetchSampler

__all__ = ["class_weights", "segmentation_loss", "learning_rate_schedule", "fit",
           "predict_proba"]

LOSSES = ("ce", "ce_dice")
LR_SCHEDULES = ("constant", "poly")

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- training


def _enable_determinism() -> None:
    """Deterministic ops where the backend allows it (TensorFlow only, imported lazily)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


TRAINING_THREADS = 1


def use_training_threads(n: int = TRAINING_THREADS) -> None:
    """Run this process's TensorFlow ops on ``n`` threads (intra- and inter-op); call it before
    the process runs its first TensorFlow op. No-op on the other Keras backends.

    The training commands use one thread, so that several trainings can run side by side
    (``llseg repro --jobs 2``; measurements in ``benchmarks/bench_parallel_training.py``). With
    the thread count fixed, a seed's weights do not depend on the machine's core count or on
    what runs beside it (oneDNN's sums
    depend on the thread count).
    """
    import keras

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"threads must be a positive int, got {n!r}")
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if (tf.config.threading.get_intra_op_parallelism_threads() == n
            and tf.config.threading.get_inter_op_parallelism_threads() == n):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(n))
        tf.config.threading.set_inter_op_parallelism_threads(int(n))
    except RuntimeError as exc:  # TensorFlow's runtime already started with its own thread pools
        raise RuntimeError(f"cannot set TensorFlow to {n} thread(s): call use_training_threads before "
                           f"the first TensorFlow op ({exc})") from None


def fit(model, sample_batch: Callable, *, iterations: int, learning_rate: float, seed: int,
        validate: Callable | None = None, validate_every: int = 50, live=None, log_every: int = 10,
        progress: bool = True, class_weight_power: float = 0.0, weight_samples: int = 20,
        loss: str = "ce", lr_schedule: str = "constant", prefetch: int | None = None) -> dict:
    """Train ``model`` with Adam and pixel-wise cross-entropy, one sample per iteration.

    Parameters
    ----------
    model : keras.Model
        Output ``(1, X, Y, Z, n_classes)`` softmax probabilities (``llseg.models``). It is
        (re)compiled here.
    sample_batch : callable
        ``sample_batch(rng) -> (x, y)`` with ``x`` a ``(1, X, Y, Z, C)`` float32 array and
        ``y`` a ``(1, X, Y, Z)`` int array of class ids: one augmented training sample. The
        caller does augmentation and cropping; ``rng`` is a ``numpy.random.Generator``
        seeded from ``seed``.
    iterations : int
        Number of optimisation steps (batch size 1; the paper uses 2000 in stage 1 and 5000
        in stage 2).
    learning_rate : float
        Adam's initial learning rate (paper: 0.01).
    seed : int
        Seeds Keras (``keras.utils.set_random_seed``, which seeds Python, NumPy and the
        backend *globally*) and the ``rng`` given to ``sample_batch``.
    validate : callable, optional
        ``validate(model) -> float``, the mean Dice on held-out data; called every
        ``validate_every`` iterations and after the last one.
    validate_every : int, optional
        Validation period in iterations.
    live : dvclive.Live, optional
        Logs ``"train/loss"`` (mean over the last ``log_every`` iterations) and
        ``"val/dice"``, with ``live.step`` set to the iteration number, followed by
        ``live.next_step()``.
    log_every : int, optional
        Period, in iterations, of the dvclive loss log and the progress-bar update.
    progress : bool, optional
        Show a ``tqdm`` progress bar.
    class_weight_power : float, optional
        0 (default) is the paper's plain cross-entropy. Above 0, each voxel's loss is
        weighted by :func:`class_weights` of its class, with the class shares estimated
        from ``weight_samples`` extra draws of ``sample_batch`` (a separate generator, so
        the training samples are the same as without weights).
    weight_samples : int, optional
        Draws used to estimate the class shares.
    loss : {"ce", "ce_dice"}, optional
        "ce" (default, the paper's) or cross-entropy plus a soft-Dice term
        (:func:`segmentation_loss`).
    lr_schedule : {"constant", "poly"}, optional
        "constant" (default, the paper's Adam at ``learning_rate``) or a polynomial decay to
        0 over ``iterations`` (:func:`learning_rate_schedule`).
    prefetch : int, optional
        0 draws each sample in the loop, before its step. ``k > 0`` draws them up to ``k``
        ahead in a background thread (``llseg.prefetch.PrefetchSampler``, same generator, same
        samples in the same order), so that sampling overlaps the network step. Default: 2
        where the Keras backend sees a GPU (``runinfo.visible_gpus``), else 0.

    Returns
    -------
    dict
        ``{"loss": [float per iteration], "val_dice": [(iteration, dice), ...],
        "seconds": float, "class_weights": list of float or None}`` (wall time of the loop,
        validation included).

    Raises
    ------
    ValueError
        Non-positive ``iterations``, ``validate_every``, ``log_every`` or ``learning_rate``,
        an unknown ``loss`` or ``lr_schedule``, or a ``sample_batch`` result of the wrong
        shape.

    Notes
    -----
    A Python loop of ``model.train_on_batch`` is used: ``model.fit`` on a
    ``keras.utils.PyDataset`` was not materially faster (a step is dominated by the 3-D
    convolutions, see ``benchmarks/bench_unet_step.py``), and the loop keeps validation,
    logging and the progress bar simple. With TensorFlow, op determinism is switched on
    (``tf.config.experimental.enable_op_determinism``, process-wide and irreversible), so a
    given seed reproduces the same losses. XLA is not used (slower on CPU).

    References
    ----------
    Ni et al. (2019), section 2.2.3; Kingma and Ba, "Adam", arXiv:1412.6980.
    """
    import keras
    from tqdm.auto import tqdm

    for nm, v in (("iterations", iterations), ("validate_every", validate_every), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a finite float > 0, got {learning_rate!r}")
    if not (math.isfinite(class_weight_power) and class_weight_power >= 0):
        raise ValueError(f"class_weight_power must be a finite float >= 0, got {class_weight_power!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if prefetch is None:
        prefetch = 2 if runinfo.visible_gpus() else 0
    if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
        raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
    weights = None
    if class_weight_power > 0:
        n_classes = int(model.output_shape[-1])
        freq = _sampled_frequencies(sample_batch, n_classes, n_samples=int(weight_samples), seed=int(seed))
        weights = class_weights(freq, power=float(class_weight_power))
        logger.info("%s: class weights %s (power %.2f)", model.name, np.round(weights, 2).tolist(), class_weight_power)

    keras.utils.set_random_seed(int(seed))
    _enable_determinism()
    rng = np.random.default_rng(seed)
    jit = False if keras.backend.backend() == "tensorflow" else "auto"
    model.compile(optimizer=keras.optimizers.Adam(
                      learning_rate=learning_rate_schedule(learning_rate, iterations, kind=lr_schedule)),
                  loss=segmentation_loss(weights, dice=loss == "ce_dice"), jit_compile=jit)
    # Create Adam's slot variables now: otherwise the first train_on_batch creates them inside
    # the traced step, and TensorFlow traces that step a second time without them (first step of
    # a cpu-profile stage-2 network 4.5 s -> 2.1 s, benchmarks/bench_unet_step.py). Same weights.
    model.optimizer.build(model.trainable_variables)

    history: dict = {"loss": [], "val_dice": [], "seconds": 0.0,
                     "class_weights": None if weights is None else weights.tolist()}
    t0 = time.perf_counter()
    bar = tqdm(range(1, iterations + 1), disable=not progress, desc=model.name, unit="it")
    samples = (PrefetchSampler(sample_batch, rng, n=iterations, depth=prefetch) if prefetch
               else contextlib.nullcontext(sample_batch))                 # draw(rng): the next sample
    with samples as draw:
        for it in bar:
            x, y = draw(rng)
            x, y = _check_batch(x, y)
            value = float(np.asarray(model.train_on_batch(x, y)))            # scalar: no extra metrics
            history["loss"].append(value)
            if not math.isfinite(value):
                logger.warning("%s: loss became %s at iteration %d", model.name, value, it)
            do_val = validate is not None and (it % validate_every == 0 or it == iterations)
            do_log = it % log_every == 0 or it == iterations
            if not (do_log or do_val):
                continue
            recent = float(np.mean(history["loss"][-log_every:]))            # mean loss of the last period
            if do_val:
                dice = float(validate(model))
                history["val_dice"].append((it, dice))
                logger.info("%s iteration %d: loss %.4f, val dice %.4f", model.name, it, recent, dice)
            postfix = {"loss": f"{recent:.4f}"}
            if history["val_dice"]:
                postfix["dice"] = f"{history['val_dice'][-1][1]:.3f}"
            bar.set_postfix(postfix)
            if live is not None:
                live.step = it
                live.log_metric("train/loss", recent)
                if do_val:
                    live.log_metric("val/dice", dice)
                live.next_step()
    bar.close()
    history["seconds"] = time.perf_counter() - t0
    logger.info("%s: %d iterations in %.1f s", model.name, iterations, history["seconds"])
    return history


def _check_batch(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(f"sample_batch: x must have shape (1, X, Y, Z, C), got {x.shape}")
    if y.shape != x.shape[:4]:
        raise ValueError(f"sample_batch: y must have shape {x.shape[:4]} (x without channels), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"sample_batch: y must hold integer class ids, got dtype {y.dtype}")
    return x, y.astype(np.int32, copy=False)


# --------------------------------------------------------------------------- class weights


def class_weights(frequencies, *, power: float) -> np.ndarray:
    """Per-class loss weights ``w_c ~ f_c ** -power``, normalised so that ``sum_c f_c w_c = 1``.

    Parameters
    ----------
    frequencies : (K,) array_like of float
        Share of the training voxels in each class (non-negative, not all zero; they are
        rescaled to sum to 1).
    power : float
        0 gives the paper's plain cross-entropy (all weights 1); 0.5 weights a class
        100 times rarer 10 times more; 1 is full inverse-frequency balancing.

    Returns
    -------
    (K,) ndarray of float32
        Weights; the expected weight of a voxel is 1, so the loss keeps its scale. A class
        absent from ``frequencies`` gets the largest weight of the present ones.

    Raises
    ------
    ValueError
        Negative, non-finite or all-zero frequencies, or a negative ``power``.

    Notes
    -----
    A deviation from the paper (plain cross-entropy over 2000-5000 iterations): with the
    cpu profile's 150 iterations, a stage-1 group network trained with plain cross-entropy
    still predicted background everywhere (the regions are 0.2-0.5 % of the voxels each);
    with ``power = 0.5`` its low-resolution test Dice reached 0.70 after 150 iterations.
    """
    f = np.asarray(frequencies, dtype=np.float64)
    if f.ndim != 1 or f.size == 0 or not np.all(np.isfinite(f)) or np.any(f < 0) or f.sum() <= 0:
        raise ValueError(f"frequencies must be a 1-D array of finite values >= 0, not all 0, got {frequencies!r}")
    if not (math.isfinite(power) and power >= 0):
        raise ValueError(f"power must be a finite float >= 0, got {power!r}")
    f = f / f.sum()
    present = f > 0
    w = np.ones_like(f)
    w[present] = f[present] ** -float(power)
    w[~present] = w[present].max()
    w /= float(np.sum(f * w))
    return w.astype(np.float32)


def segmentation_loss(class_weights=None, *, dice: bool = False, smooth: float = 1.0) -> Callable:
    """Keras loss ``f(y_true, y_pred)``: (class-weighted) pixel-wise cross-entropy, optionally + soft Dice.

    Parameters
    ----------
    class_weights : (K,) array_like of float, optional
        Weight of each class's voxels in the cross-entropy (:func:`class_weights`); None
        weights all voxels 1 (the paper's plain cross-entropy).
    dice : bool, optional
        Add ``1 - mean_c soft Dice_c`` over the foreground classes ``c = 1 .. K-1``
        (probabilities, not thresholded, summed over the batch and all voxels).
    smooth : float, optional
        Added to numerator and denominator of each soft Dice (voxels): a class absent
        from the sample and not predicted scores 1.

    Returns
    -------
    callable
        ``f(y_true, y_pred)`` with ``y_true`` ``(N, X, Y, Z)`` int class ids and ``y_pred``
        ``(N, X, Y, Z, K)`` softmax probabilities; returns the scalar loss. Written with
        ``keras.ops`` only (any backend).

    Notes
    -----
    A deviation for the cpu profile (the paper trains with cross-entropy alone): the Dice
    term is the usual companion of cross-entropy in short trainings of small structures
    (Milletari et al., V-Net, 2016; nnU-Net uses the same sum). Measured on six hard
    stage-2 muscles, 150 iterations, Adam 0.01 with polynomial decay, class weights of power
    0.5: mean test Dice 0.485 (cross-entropy) vs 0.571 (plus Dice); without class weights
    0.563 (plus Dice).
    """
    from keras import ops

    w = None if class_weights is None else np.asarray(class_weights, dtype="float32")
    if w is not None and (w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0)):
        raise ValueError(f"class_weights must be a 1-D array of finite values >= 0, got {class_weights!r}")
    if not (math.isfinite(smooth) and smooth > 0):
        raise ValueError(f"smooth must be a finite float > 0, got {smooth!r}")

    def loss(y_true, y_pred):
        n_classes = y_pred.shape[-1]
        y = ops.cast(y_true, "int32")
        if len(y.shape) == len(y_pred.shape):                      # (N, X, Y, Z, 1) labels
            y = ops.squeeze(y, axis=-1)
        onehot = ops.one_hot(y, n_classes, dtype=y_pred.dtype)     # (N, X, Y, Z, K)
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        ce = -ops.sum(onehot * log_p, axis=-1)                     # (N, X, Y, Z)
        if w is not None:
            ce = ce * ops.take(ops.convert_to_tensor(w, dtype=y_pred.dtype), y)
        total = ops.mean(ce)
        if dice and n_classes > 1:
            axes = tuple(range(len(y_pred.shape) - 1))             # batch and voxels
            inter = ops.sum(onehot * y_pred, axis=axes)[1:]        # (K-1,)
            denom = ops.sum(onehot, axis=axes)[1:] + ops.sum(y_pred, axis=axes)[1:]
            total = total + 1.0 - ops.mean((2.0 * inter + smooth) / (denom + smooth))
        return total

    loss.__name__ = "ce_dice" if dice else "ce"
    return loss


def learning_rate_schedule(learning_rate: float, iterations: int, *, kind: str = "constant", power: float = 0.9):
    """Adam's learning rate: a constant, or ``lr * (1 - step / iterations) ** power`` ("poly").

    "poly" is nnU-Net's decay (Isensee et al., Nature Methods 2021): large steps early,
    fine steps at the end, which matters when a network gets only a few hundred iterations.
    Measured on six hard stage-2 muscles, 150 iterations, cross-entropy + Dice, mean test
    Dice: constant 0.003 gave 0.336, poly from 0.003 0.270, poly from 0.01 0.563.
    Returns a float or a ``keras.optimizers.schedules.LearningRateSchedule``.
    """
    import keras

    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    if kind == "constant":
        return float(learning_rate)
    return keras.optimizers.schedules.PolynomialDecay(float(learning_rate), decay_steps=int(iterations),
                                                      end_learning_rate=0.0, power=float(power))


def _sampled_frequencies(sample_batch: Callable, n_classes: int, *, n_samples: int, seed: int) -> np.ndarray:
    """Class shares over ``n_samples`` draws of ``sample_batch`` (its own generator: training is unaffected)."""
    rng = np.random.default_rng([int(seed), 7919])
    counts = np.zeros(n_classes, dtype=np.float64)
    for _ in range(n_samples):
        _, y = _check_batch(*sample_batch(rng))
        counts += np.bincount(y.ravel(), minlength=n_classes)[:n_classes]
    return counts / counts.sum()


# --------------------------------------------------------------------------- prediction


def predict_proba(model, x, *, pad_mode: str = "edge") -> np.ndarray:
    """Softmax probabilities of ``model`` for one volume, padding to a valid size and back.

    Parameters
    ----------
    model : keras.Model
        Channels-last segmentation network (``llseg.models``).
    x : (X, Y, Z) or (X, Y, Z, C) ndarray of float
        Image in RAS+ order; a 3-D input is treated as one channel.
    pad_mode : str, optional
        ``numpy.pad`` mode for the padding (default ``"edge"``: repeat the border voxels).

    Returns
    -------
    (X, Y, Z, n_classes) ndarray of float32
        Class probabilities on the input grid (they sum to 1 over the last axis).

    Raises
    ------
    ValueError
        Wrong ndim or channel count, non-finite values, or an axis longer than a fixed
        model input size.

    Notes
    -----
    Each spatial axis is padded (split evenly before and after) up to the model's input
    size if it is fixed, else up to the next multiple of
    :func:`llseg.models.model_divisor`; the prediction is cropped back. The model runs in inference mode
    (llseg's networks then normalise by the input's own statistics, as in batch-size-1
    training: ``llseg.custom_layers.SampleBatchNormalization``).
    """
    from .models import model_divisor

    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"x: expected (X, Y, Z) or (X, Y, Z, C), got shape {x.shape}")
    _validate.volume(x, "x", ndim=4)
    in_shape = tuple(model.input_shape)                                 # (None, X, Y, Z, C)
    if in_shape[-1] != x.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} channel(s), model {model.name} expects {in_shape[-1]}")
    div = model_divisor(model)
    target = []
    for ax, (n, fixed) in enumerate(zip(x.shape[:3], in_shape[1:4])):
        if fixed is None:
            target.append(-(-n // div) * div)
        elif n > fixed:
            raise ValueError(f"x shape {x.shape[:3]}: axis {ax} has {n} voxels, more than the model's "
                             f"fixed input size {in_shape[1:4]}")
        else:
            target.append(fixed)
    before = [(t - n) // 2 for t, n in zip(target, x.shape[:3])]
    pads = [(b, t - n - b) for b, t, n in zip(before, target, x.shape[:3])] + [(0, 0)]
    xp = np.pad(x.astype(np.float32, copy=False), pads, mode=pad_mode)  # (X', Y', Z', C)
    prob = np.asarray(model.predict_on_batch(xp[None]), dtype=np.float32)[0]   # (X', Y', Z', K)
    crop = tuple(slice(b, b + n) for b, n in zip(before, x.shape[:3]))
    return np.ascontiguousarray(prob[crop])
