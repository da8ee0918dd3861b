"""Backend parity: the networks, custom layers, saved models and training loop under the JAX and
torch backends of Keras, on the CPU (issue 16, item 2).

Keras fixes its backend at import, so each backend runs ``tests/backend_probe.py`` once in a
subprocess (``KERAS_BACKEND=jax|torch``) on inputs and a ``.keras`` model written here under
TensorFlow, the default backend of this test session; this module compares its results with
TensorFlow's. A backend whose package is not installed is skipped with the reason (``make test``
installs the CPU wheels of both).
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llseg import io, models, train

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("jax", "torch")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Inputs, a model saved under TensorFlow, and TensorFlow's own results on them."""
    import keras

    sys.path.insert(0, str(ROOT / "tests"))
    import backend_probe

    d = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    inputs = {"bn_x": rng.normal(2.0, 3.0, size=(2, 4, 4, 4, 3)).astype(np.float32),
              "bn_gamma": rng.uniform(0.5, 2, size=3).astype(np.float32),
              "bn_beta": rng.normal(size=3).astype(np.float32),
              "unpool_x": rng.normal(size=(1, 2, 2, 2, 2)).astype(np.float32),
              "unpool_features": rng.normal(size=(1, 4, 4, 4, 2)).astype(np.float32),
              "predict_x": rng.normal(size=(20, 16, 12)).astype(np.float32)}
    np.savez(d / "inputs.npz", **inputs)
    keras.utils.set_random_seed(1)
    model = models.build_model("unet", (None, None, None, 1), 3, levels=3, root_filters=4, block="residual")
    io.save_model(model, d / "model.keras")
    tf_results = {**backend_probe.custom_layers(inputs), "predict": train.predict_proba(model, inputs["predict_x"])}
    return d, tf_results, backend_probe.param_counts()


@pytest.fixture(scope="module", params=BACKENDS)
def probe(request, reference):
    backend = request.param
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (make test installs its CPU wheel)")
    d, _, _ = reference
    out = d / backend
    out.mkdir()
    env = {**os.environ, "KERAS_BACKEND": backend}
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_probe.py"), str(d), str(out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return backend, json.loads((out / "results.json").read_text()), dict(np.load(out / "results.npz"))


def test_the_probe_ran_under_its_backend(probe):
    backend, meta, _ = probe
    assert meta["backend"] == backend


def test_every_network_has_the_same_parameter_count(probe, reference):
    _, meta, _ = probe
    assert meta["param_counts"] == reference[2]


@pytest.mark.parametrize("name", ["bn_infer", "bn_train", "unpool"])
def test_custom_layers_compute_the_same(probe, reference, name):
    _, _, arrays = probe
    np.testing.assert_allclose(arrays[name], reference[1][name], atol=1e-5, rtol=1e-5)


def test_a_model_saved_under_tensorflow_predicts_the_same(probe, reference):
    _, _, arrays = probe
    assert arrays["predict"].shape == reference[1]["predict"].shape == (20, 16, 12, 3)
    np.testing.assert_allclose(arrays["predict"], reference[1]["predict"], atol=1e-4)


def test_the_same_seed_gives_the_same_losses_and_training_lowers_them(probe):
    _, meta, _ = probe
    first, second = meta["losses"]
    assert first == second
    assert len(first) == 30 and all(np.isfinite(first))
    assert np.mean(first[-5:]) < np.mean(first[:5])


@pytest.mark.slow
def test_smoke_study_through_llseg_repro_under_jax(tmp_path):
    """The whole smoke study, networks trained and notebooks run, under the JAX backend."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (make test installs its CPU wheel)")
    from test_cascade import _sh, smoke_study_clone

    clone, env = smoke_study_clone(tmp_path, KERAS_BACKEND="jax")
    out = _sh(["llseg", "repro", "--jobs", "2"], clone, env, timeout=3600)
    assert "up to date" in _sh(["dvc", "status"], clone, env)
    assert "GPU(s) visible" not in out                      # no GPU here: the CPU placement
    logs = list((clone / "work" / "logs" / "repro").glob("train_stage2.*.log"))
    assert logs and all("llseg: Keras backend jax on the CPU" in p.read_text() for p in logs)
    records = [io.read_json(p) for p in (clone / "models" / "stage1").glob("group_*.json")]
    assert records and all(r["environment"]["keras_backend"] == "jax" for r in records)
    m = json.loads((clone / "metrics" / "cascade.json").read_text())
    assert m["n_test_cases"] >= 1 and m["environment"]["keras_backend"] == "jax"
