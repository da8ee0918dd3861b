"""Shared fixtures: tiny, seeded volumes (<= 32^3) and environment for TensorFlow."""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # must precede any TensorFlow import
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import cli, io, train  # noqa: E402

# The training commands run TensorFlow on one thread and must set it before the process's
# first TensorFlow op; tests call them in-process, so the whole session uses that setting.
train.use_training_threads()

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def two_leg_case():
    """A 24 x 16 x 12 'subject' in RAS+: right-leg label 2 at +x, left-leg label 37 at -x, 2 x 2 x 5 mm."""
    image = np.full((24, 16, 12), 0.05, np.float32)
    labels = np.zeros((24, 16, 12), np.uint8)
    labels[14:20, 4:12, 2:10] = 2   # adductor longus, right (larger x = subject's right in RAS+)
    labels[4:10, 4:12, 2:10] = 37   # adductor longus, left
    image[labels > 0] = 0.5
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[:3, 3] = [-24.0, -16.0, -30.0]
    return image, labels, affine


@pytest.fixture
def cohort_dir(tmp_path, two_leg_case):
    """A two-case cohort folder in the documented layout."""
    image, labels, affine = two_leg_case
    for case in ("a", "b"):
        io.save_nifti(tmp_path / "images" / f"{case}.nii.gz", image, affine)
        io.save_nifti(tmp_path / "labels" / f"{case}.nii.gz", labels, affine, dtype=np.uint8)
    return tmp_path


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """A smoke-profile cohort, preprocessed, in a temporary study folder (built once per session)."""
    work = tmp_path_factory.mktemp("smoke_study")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    cli.apply_profile(work / "params.yaml", "smoke")
    params = str(work / "params.yaml")
    assert cli.main(["phantom", "--params", params, "--out", str(work / "data"), "-q"]) == 0
    assert cli.main(["preprocess", "--params", params, "--data", str(work / "data"),
                     "--out", str(work / "work" / "preprocessed"), "-q"]) == 0
    return work
