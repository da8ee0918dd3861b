"""Cohort: phantom case generation through the simulator, split, layout, bit-for-bit regeneration."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from llseg import anatomy, cli, cohort, io

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_case():
    return cohort.make_case(7, protocol="cartesian", downscale=0.25, bias_strength=0.6, noise_sigma=0.02)


def test_make_case_geometry(small_case):
    c = small_case
    assert c.image.shape == c.labels.shape == c.bias.shape
    assert c.image.shape[:2] == (119, 95)  # 476 x 380 at downscale 0.25
    assert 50 <= c.image.shape[2] <= 60    # 200-240 slices at downscale 0.25
    spacing = np.sqrt((c.affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, [4.0, 4.0, 20.0])
    assert c.image.dtype == np.float32 and c.labels.dtype == np.uint8
    assert np.isfinite(c.image).all() and c.image.min() >= 0
    assert c.meta["protocol"] == "cartesian" and c.meta["subject"]["seed"] == 7


def test_make_case_deterministic(small_case):
    again = cohort.make_case(7, protocol="cartesian", downscale=0.25, bias_strength=0.6, noise_sigma=0.02)
    np.testing.assert_array_equal(again.image, small_case.image)
    np.testing.assert_array_equal(again.labels, small_case.labels)


def test_make_case_contrast_and_sides(small_case, tmp_path):
    c = small_case
    muscle = c.labels > 0
    assert muscle.sum() > 1000
    assert np.median(c.image[muscle]) > 2 * np.median(c.image[~muscle & (c.image > 0.05)])
    io.save_nifti(tmp_path / "images" / "p.nii.gz", c.image, c.affine)
    io.save_nifti(tmp_path / "labels" / "p.nii.gz", c.labels, c.affine, dtype=np.uint8)
    result = cohort.check_case(tmp_path, "p")
    assert not any("swapped" in p for p in result["problems"]), result["problems"]


def test_split_is_seeded_and_about_80_20():
    cases = [f"c{i:02d}" for i in range(64)]
    s = cohort.split_cases(cases, test_fraction=0.2, seed=13)
    assert len(s["test"]) == 13 and len(s["train"]) == 51  # the paper's 51 / 13
    assert set(s["train"]).isdisjoint(s["test"]) and sorted(s["train"] + s["test"]) == cases
    assert s == cohort.split_cases(list(reversed(cases)), test_fraction=0.2, seed=13)
    assert s != cohort.split_cases(cases, test_fraction=0.2, seed=14)
    assert cohort.split_cases(["a", "b"], test_fraction=0.2, seed=0)["test"] != []
    with pytest.raises(ValueError, match="at least 2 cases"):
        cohort.split_cases(["a"], test_fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        cohort.split_cases(cases, test_fraction=1.0, seed=0)


def test_list_cases_layout_errors(tmp_path, cohort_dir):
    assert cohort.list_cases(cohort_dir) == ["a", "b"]
    (cohort_dir / "labels" / "b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no label map for case"):
        cohort.list_cases(cohort_dir)
    assert cohort.list_cases(cohort_dir, require_labels=False) == ["a", "b"]
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .nii or .nii.gz images"):
        cohort.list_cases(tmp_path / "empty")


def _tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_phantom_command_regenerates_bit_for_bit(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    cli.apply_profile(params, "smoke")
    text = params.read_text().replace("n_subjects: 4 ", "n_subjects: 2 ")
    params.write_text(text)
    assert cli.main(["phantom", "--params", str(params), "--out", str(tmp_path / "d1"), "-q"]) == 0
    assert cli.main(["phantom", "--params", str(params), "--out", str(tmp_path / "d2"), "-q"]) == 0
    d1, d2 = _tree_digest(tmp_path / "d1"), _tree_digest(tmp_path / "d2")
    assert d1 == d2 and len(d1) == 6  # 2 cases x (image, labels, subject)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    meta = io.read_json(tmp_path / "d1" / "subjects" / "phantom_000.json")
    assert meta["case"] == "phantom_000" and meta["downscale"] == 0.25
    lab = io.load_labels(tmp_path / "d1" / "labels" / "phantom_000.nii.gz")
    assert len(set(np.unique(lab.data)) - {0}) >= 60  # nearly all 70 regions even at 4 x 4 x 20 mm
    assert max(np.unique(lab.data)) <= anatomy.N_REGIONS
