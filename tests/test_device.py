"""Which backend and device a command computes on (``runinfo.device_line``), the GPU backends'
install wiring (``make study BACKEND=...``) and the ``gpu`` profile.

No GPU exists here: the GPU lines are built from a given device list, and the CPU case is this
machine's."""
import re
import subprocess
from pathlib import Path

import pytest

from llseg import cli, params, runinfo

ROOT = Path(__file__).resolve().parents[1]


def test_device_line_on_the_cpu(monkeypatch):
    monkeypatch.delenv("LLSEG_DEVICE", raising=False)
    line = runinfo.device_line(gpus=[], backend="tensorflow")
    assert line.startswith("llseg: Keras backend tensorflow on the CPU (") and "cores)" in line
    assert "GPU" not in line


def test_device_line_names_the_gpu_and_how_many_more():
    one = runinfo.device_line(gpus=["cuda:0 NVIDIA H200"], backend="torch")
    assert one == "llseg: Keras backend torch on GPU cuda:0 NVIDIA H200"
    two = runinfo.device_line(gpus=["gpu:0 NVIDIA H100", "gpu:1 NVIDIA H100"], backend="jax")
    assert two == "llseg: Keras backend jax on GPU gpu:0 NVIDIA H100 (+1 more visible)"


def test_a_gpu_asked_for_but_not_seen_says_it_runs_on_the_cpu(monkeypatch):
    monkeypatch.setenv("LLSEG_DEVICE", "gpu")
    line = runinfo.device_line(gpus=[], backend="jax")
    assert "on the CPU" in line and "a GPU was asked for (LLSEG_DEVICE=gpu) but the jax backend sees none" in line
    assert "\n" not in line


def test_visible_gpus_of_a_missing_backend_is_none_with_a_warning(caplog, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jax(name, *args, **kw):
        if name == "jax":
            raise ModuleNotFoundError("No module named 'jax'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    assert runinfo.visible_gpus("jax") == []
    assert "jax backend: cannot list GPUs (ModuleNotFoundError" in caplog.text


def test_this_machine_has_no_gpu_for_tensorflow():
    # the test machine is CPU-only (tensorflow-cpu): the line says CPU
    assert runinfo.visible_gpus("tensorflow") == []


def _make_vars(backend: str) -> dict:
    out = subprocess.run(["make", "-pn", "setup", f"BACKEND={backend}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = {}
    for name in ("EXTRAS", "STAMP", "KERAS_BACKEND", "LLSEG_DEVICE"):
        m = re.search(rf"^(?:export )?{name} :?= (.*)$", out.stdout, re.M)
        found[name] = m.group(1).strip() if m else None
    return found


def test_make_backend_default_is_tensorflow_on_the_cpu():
    v = _make_vars("tensorflow")
    assert v["EXTRAS"] == "test" and v["KERAS_BACKEND"] is None and v["LLSEG_DEVICE"] is None


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_make_backend_installs_its_extra_and_asks_for_the_gpu(backend):
    v = _make_vars(backend)
    assert v["EXTRAS"] == f"test,{backend}" and v["KERAS_BACKEND"] == backend and v["LLSEG_DEVICE"] == "gpu"
    assert v["STAMP"].endswith(f".llseg-installed-{backend}")


def test_make_unknown_backend_is_an_error():
    out = subprocess.run(["make", "-n", "setup", "BACKEND=mxnet"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "BACKEND must be tensorflow, jax or torch, got 'mxnet'" in out.stderr


def test_gpu_extras_are_pinned():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    assert extras["jax"] and extras["torch"]
    for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "torch"):
        assert name in pins, f"constraints.txt does not pin {name}"


def test_gpu_profile_round_trips_through_llseg_profile(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    changed = cli.apply_profile(p, "gpu")
    gpu = params.load_params(p)
    paper = params.load_params(ROOT / "params.yaml")["profiles"]["paper"]
    # the paper's voxel size and network sizes, fewer iterations
    assert gpu["preprocess"]["spacing_mm"] == paper["preprocess.spacing_mm"] == [1.0, 1.0, 5.0]
    assert gpu["stage2"]["root_filters"] == paper["stage2.root_filters"]
    assert gpu["stage1"]["levels"] == paper["stage1.levels"]
    assert gpu["stage1"]["iterations"] < paper["stage1.iterations"]
    assert gpu["stage2"]["iterations"] < paper["stage2.iterations"]
    assert "stage2.iterations" in changed
    assert cli.apply_profile(p, "gpu") == []                       # applied twice: nothing more changes
    cli.apply_profile(p, "cpu")
    assert p.read_text() == (ROOT / "params.yaml").read_text()     # and back to the committed file
