"""The llseg command: profiles, the cohort check, clear errors and exit codes."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from llseg import cli, io

ROOT = Path(__file__).resolve().parents[1]


def test_profile_switch_roundtrip(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = params.read_text()
    assert cli.main(["profile", "smoke", "--params", str(params)]) == 0
    smoke = cli.load_params(params)
    assert smoke["profile"] == "smoke" and smoke["phantom"]["n_subjects"] == 4
    assert "# cases in the cohort" in params.read_text()  # comments kept
    assert cli.main(["profile", "cpu", "--params", str(params)]) == 0
    assert params.read_text() == original


def test_profiles_only_name_existing_parameters():
    params = cli.load_params(ROOT / "params.yaml")
    assert params["profile"] == "cpu", "the committed params.yaml must hold the default (cpu) profile"
    for name in cli.PROFILES:
        for dotted in params["profiles"][name]:
            section, key = dotted.split(".")
            assert key in params[section], f"profiles.{name}.{dotted}"
    cpu = params["profiles"]["cpu"]
    for name in cli.PROFILES:  # switching back to cpu must restore everything another profile changes
        assert set(params["profiles"][name]) <= set(cpu), f"profiles.{name} sets keys profiles.cpu does not"
    for dotted, value in cpu.items():
        section, key = dotted.split(".")
        assert params[section][key] == value, f"active value of {dotted} differs from the cpu profile"


def test_check_reports_ok_and_bad_cases(cohort_dir, two_leg_case, capsys, tmp_path):
    assert cli.main(["check", str(cohort_dir), "--report", str(tmp_path / "r.json")]) == 1  # regions missing
    out = capsys.readouterr().out
    assert "68 of 70 regions missing" in out
    report = io.read_json(tmp_path / "r.json")
    assert report["n_cases"] == 2


def test_check_flags_swapped_left_right(cohort_dir, two_leg_case, capsys):
    image, labels, affine = two_leg_case
    swapped = np.where(labels == 2, 37, np.where(labels == 37, 2, 0)).astype(np.uint8)
    io.save_nifti(cohort_dir / "labels" / "b.nii.gz", swapped, affine, dtype=np.uint8)
    cli.main(["check", str(cohort_dir)])
    out = capsys.readouterr().out
    assert "b.nii.gz: left/right look swapped" in out
    assert out.count("left/right look swapped") == 1


def test_check_flags_each_bad_input(cohort_dir, two_leg_case, capsys):
    image, labels, affine = two_leg_case
    (cohort_dir / "images" / "trunc.nii.gz").write_bytes((cohort_dir / "images" / "a.nii.gz").read_bytes()[:100])
    io.save_nifti(cohort_dir / "images" / "nan.nii.gz", np.where(labels > 0, np.nan, image), affine)
    io.save_nifti(cohort_dir / "images" / "geo.nii.gz", image, affine)
    io.save_nifti(cohort_dir / "labels" / "geo.nii.gz", labels[:, :, :-1], affine, dtype=np.uint8)
    io.save_nifti(cohort_dir / "images" / "unk.nii.gz", image, affine)
    io.save_nifti(cohort_dir / "labels" / "unk.nii.gz", labels + (labels > 0) * 100, affine, dtype=np.uint8)
    io.save_nifti(cohort_dir / "images" / "nolab.nii.gz", image, affine)
    assert cli.main(["check", str(cohort_dir)]) == 1
    out = capsys.readouterr().out
    assert "trunc.nii.gz: " in out and "corrupt" in out
    assert "nan.nii.gz: " in out and "NaN" in out
    assert "geo.nii.gz: shape" in out
    assert "unk.nii.gz: unknown label id(s) 102, 137" in out
    assert "nolab.nii.gz: missing label map" in out


def test_errors_are_one_line_with_exit_1(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llseg check: error: ") and "nowhere/images: no such folder" in err
    assert cli.main(["preprocess", "--params", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: no such params file" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "examples:" in capsys.readouterr().out
    for command in ("phantom", "check", "preprocess", "profile"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "example:" in capsys.readouterr().out
