"""Training samples drawn in a background thread, ahead of the training step.

A training iteration is a CPU part (``sample_batch(rng)``: crop, resample, augment) and a
network step. On a GPU the two can overlap: while the network trains on sample ``i``, a
background thread draws sample ``i + 1``. :class:`PrefetchSampler` does this with the
training's own ``numpy.random.Generator``, used by that one thread only, so the samples and
their order are exactly those of the plain loop ``for _ in range(n): sample_batch(rng)``
(``llseg.train.fit(..., prefetch=k)``).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

__all__ = ["PrefetchSampler"]

_DONE = object()      # queue item: the producer drew all its samples
_POLL_S = 0.1         # how often a blocked producer checks for close() (s)


class _Failure:
    """Queue item: the exception ``sample_batch`` raised in the producer thread."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class PrefetchSampler:
    """The first ``n`` draws of ``sample_batch(rng)``, computed ``depth`` ahead in a thread.

    Parameters
    ----------
    sample_batch : callable
        ``sample_batch(rng) -> sample``, as in ``llseg.train.fit``. It runs in the
        background thread; it must return new arrays (not a buffer it reuses), since up to
        ``depth + 1`` samples are alive at once.
    rng : numpy.random.Generator
        Handed to every call, in sequence. The thread owns it until the sampler is closed:
        the caller must not draw from it meanwhile.
    n : int
        Number of samples (the training's iterations); the thread stops after them.
    depth : int, optional
        Samples drawn ahead of the consumer (queue size), >= 1.

    Raises
    ------
    ValueError
        ``n`` or ``depth`` not a positive int.

    Notes
    -----
    Use it as a context manager (``with PrefetchSampler(...) as draw``) so that the thread
    ends also when the training fails. ``draw()`` (or ``next(draw)``) returns the next
    sample; an exception raised by ``sample_batch`` is raised there, with the traceback of
    the background thread. After ``n`` samples, ``draw()`` raises ``StopIteration``.
    Python-level code in ``sample_batch`` shares the GIL with the caller; the overlap comes
    from the network step, which runs outside the GIL (TensorFlow, JAX).
    """

    def __init__(self, sample_batch: Callable, rng: np.random.Generator, *, n: int, depth: int = 2):
        for name, v in (("n", n), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self._sample_batch = sample_batch
        self._rng = rng
        self._n = int(n)
        self._queue: queue.Queue = queue.Queue(maxsize=int(depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name="llseg-prefetch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer (background thread)

    def _put(self, item) -> bool:
        """Queue ``item``, waiting for room; False if the sampler was closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for _ in range(self._n):
                if self._stop.is_set() or not self._put(self._sample_batch(self._rng)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failure(exc))
            return
        self._put(_DONE)

    # ------------------------------------------------------------------ consumer

    def __call__(self, rng: np.random.Generator | None = None):
        """The next sample; ``rng``, if given, must be the generator the sampler owns (a
        drop-in for ``sample_batch(rng)``)."""
        if rng is not None and rng is not self._rng:
            raise ValueError("PrefetchSampler: called with a generator other than the one it draws from")
        return next(self)

    def __next__(self):
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            self.close()
            raise item.exc   # keeps the producer's traceback (exc.__traceback__)
        return item

    def __iter__(self):
        return self

    @property
    def alive(self) -> bool:
        """Whether the background thread is still running."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the background thread and wait for it (at most the end of the draw in progress)."""
        self._stop.set()
        self._finished = True
        while True:            # make room, so that a blocked put returns at once
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
