"""Tests for llseg.prefetch: samples drawn ahead in a thread, identical to the plain loop."""
import os
import threading
import time
import traceback

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import models, train  # noqa: E402
from llseg.prefetch import PrefetchSampler  # noqa: E402


def _sampler(shape=(8, 8, 8)):
    """A sample_batch that uses the generator several ways per call (the draw count varies)."""
    def sample_batch(rng):
        k = int(rng.integers(1, 4))
        x = rng.normal(size=(1, *shape, 1)).astype(np.float32) + rng.uniform(size=k).sum()
        return x, (x[..., 0] > k).astype(np.int32)
    return sample_batch


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "llseg-prefetch"]


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_same_samples_in_the_same_order_as_the_plain_loop(depth):
    sample_batch, n = _sampler(), 7
    rng = np.random.default_rng(3)
    plain = [sample_batch(rng) for _ in range(n)]
    rng_after = rng.bit_generator.state
    rng = np.random.default_rng(3)
    with PrefetchSampler(sample_batch, rng, n=n, depth=depth) as draw:
        got = [draw(rng) for _ in range(n)]
        with pytest.raises(StopIteration):      # exactly n samples, no extra draw from rng
            draw()
    assert len(got) == n
    for (xa, ya), (xb, yb) in zip(plain, got):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert rng.bit_generator.state == rng_after
    assert not draw.alive


def test_iterates_and_refuses_another_generator():
    rng = np.random.default_rng(0)
    with PrefetchSampler(lambda r: r.integers(100), rng, n=4) as draw:
        with pytest.raises(ValueError, match="other than the one"):
            draw(np.random.default_rng(0))
        values = list(draw)
    ref = np.random.default_rng(0)
    assert values == [ref.integers(100) for _ in range(4)]


def test_an_exception_in_sample_batch_reaches_the_consumer_with_its_traceback():
    def sample_batch(rng):
        if sample_batch.calls == 2:
            raise OSError("disk gone")
        sample_batch.calls += 1
        return sample_batch.calls
    sample_batch.calls = 0

    draw = PrefetchSampler(sample_batch, np.random.default_rng(0), n=10, depth=2)
    assert draw() == 1 and draw() == 2
    with pytest.raises(OSError, match="disk gone") as info:
        draw()
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "sample_batch" in frames             # raised where the sampler raised it
    draw._thread.join(5)
    assert not draw.alive
    with pytest.raises(StopIteration):
        draw()


def test_thread_ends_when_the_consumer_stops_early_or_fails():
    draws = []

    def sample_batch(rng):
        draws.append(1)
        return rng.normal()

    before = len(_prefetch_threads())
    with pytest.raises(RuntimeError, match="step failed"):
        with PrefetchSampler(sample_batch, np.random.default_rng(0), n=1000, depth=2) as draw:
            draw()
            time.sleep(0.05)                    # the producer fills the queue and blocks
            raise RuntimeError("step failed")
    assert not draw.alive
    assert len(_prefetch_threads()) == before
    assert len(draws) <= 1 + 2 + 1         # consumed + queued + the one blocked in put


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth must be a positive int"):
        PrefetchSampler(lambda r: 0, np.random.default_rng(0), n=3, depth=0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        PrefetchSampler(lambda r: 0, np.random.default_rng(0), n=0)


def test_fit_with_prefetch_trains_exactly_like_without():
    runs = []
    for prefetch in (0, 2):
        keras.utils.set_random_seed(7)
        model = models.unet_3d((8, 8, 8, 1), 2, levels=2, root_filters=2)
        runs.append((train.fit(model, _sampler(), iterations=4, learning_rate=0.01, seed=7, progress=False,
                               prefetch=prefetch), model.get_weights()))
    (h0, w0), (h2, w2) = runs
    assert h0["loss"] == h2["loss"]
    for a, b in zip(w0, w2):
        np.testing.assert_array_equal(a, b)
    assert not _prefetch_threads()
    model = models.unet_3d((8, 8, 8, 1), 2, levels=2, root_filters=2)
    with pytest.raises(ValueError, match="prefetch must be an int >= 0"):
        train.fit(model, _sampler(), iterations=1, learning_rate=0.01, seed=0, progress=False, prefetch=-1)
    with pytest.raises(TypeError, match="integer class ids"):   # a bad sample still fails in fit
        train.fit(model, lambda rng: (np.zeros((1, 8, 8, 8, 1)), np.zeros((1, 8, 8, 8))), iterations=3,
                  learning_rate=0.01, seed=0, progress=False, prefetch=2)
    assert not _prefetch_threads()
