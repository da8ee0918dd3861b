"""The default cohort in data.dvc is regenerated bit for bit by `llseg phantom` from params.yaml."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _dvc(*args, cwd):
    dvc = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(dvc), *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.mark.slow
def test_phantom_regenerates_data_dvc_hash(tmp_path):
    committed = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["profile"] == "cpu", "data.dvc holds the default (cpu) cohort"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc("init", "-q", cwd=tmp_path)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run([sys.executable, "-m", "llseg.cli", "phantom", "--params", str(ROOT / "params.yaml"),
                    "--out", str(tmp_path / "data"), "-q"], check=True, env=env)
    _dvc("add", "--no-commit", "-q", "data", cwd=tmp_path)  # hash only, no cache copy
    regenerated = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    assert (regenerated["nfiles"], regenerated["size"]) == (committed["nfiles"], committed["size"])
    assert regenerated["md5"] == committed["md5"], "llseg phantom no longer reproduces data.dvc bit for bit"
