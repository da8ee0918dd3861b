"""The bad-input catalogue (issue 20): every kind of bad input to `llseg check`, `llseg segment` and
`llseg profile` gives a non-zero exit, one error naming the file or key, no traceback, nothing new
on disk, and leaves the inputs' bytes unchanged. Kinds that would need trained models to reach the
failure must fail before the models load, so ``--models`` points at a folder that does not exist."""
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from llseg import cli, io

ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.diag([2.0, 2.0, 5.0, 1.0])


def _scan(rng=None):
    """A 24 x 16 x 12 float scan: noisy background, two brighter 'legs' (not label-like)."""
    rng = rng or np.random.default_rng(0)
    image = 0.05 + 0.01 * rng.random((24, 16, 12), dtype=np.float32)
    image[14:20, 4:12, 2:10] += 0.5
    image[4:10, 4:12, 2:10] += 0.5
    return image


def _labels():
    labels = np.zeros((24, 16, 12), np.uint8)
    labels[14:20, 4:12, 2:10] = 2    # adductor longus, right (larger x in RAS+)
    labels[4:10, 4:12, 2:10] = 37    # adductor longus, left
    return labels


def _nifti(path, data, affine=AFFINE, dtype=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    singular = abs(np.linalg.det(affine[:3, :3])) < 1e-9
    img = nib.Nifti1Image(data, None if singular else affine)
    if singular:                                  # only the sform can hold a singular matrix
        img.set_sform(affine, code=1)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, path)
    return path


def _params(tmp, **changes):
    """A copy of params.yaml with ``{"section.key": value}`` changes."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        sec, key = dotted.split(".")
        params[sec][key] = value
    path = tmp / "study_params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def study(tmp_path):
    """A cohort with one good case ``a``, a scan to segment and a params file; no trained models."""
    _nifti(tmp_path / "data" / "images" / "a.nii.gz", _scan())
    _nifti(tmp_path / "data" / "labels" / "a.nii.gz", _labels())
    _nifti(tmp_path / "scan.nii.gz", _scan())
    _params(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- llseg check

def _bad_case(t, image=None, labels="good", affine=AFFINE, name="bad"):
    """Add case ``name`` to the cohort: an image array (or raw bytes) and a label map."""
    img_path = t / "data" / "images" / f"{name}.nii.gz"
    if isinstance(image, bytes):
        img_path.write_bytes(image)
    elif image is not None:
        _nifti(img_path, image, affine)
    if isinstance(labels, str) and labels == "good":
        _nifti(t / "data" / "labels" / f"{name}.nii.gz", _labels(), affine)
    elif labels is not None:
        _nifti(t / "data" / "labels" / f"{name}.nii.gz", labels, affine)
    return img_path


def _rgb():
    rgb = np.zeros((24, 16, 12), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = (255 * _scan()).astype(np.uint8)
    return rgb


def _shifted():
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0
    return shifted


CHECK_CASES = {
    # kind: (setup(t) -> extra argv, words the output must hold)
    "truncated image": (lambda t: _bad_case(t, (t / "data/images/a.nii.gz").read_bytes()[:100]),
                        ["bad.nii.gz: ", "corrupt"]),
    "not gzip data": (lambda t: _bad_case(t, b"this is not a NIfTI file" * 20), ["bad.nii.gz: ", "corrupt"]),
    "NaN voxels": (lambda t: _bad_case(t, np.where(_labels() > 0, np.nan, _scan()).astype(np.float32)),
                   ["bad.nii.gz: ", "NaN"]),
    "infinite voxels": (lambda t: _bad_case(t, np.where(_labels() > 0, np.inf, _scan()).astype(np.float32)),
                        ["bad.nii.gz: ", "infinite"]),
    "RGB image": (lambda t: _bad_case(t, _rgb()), ["bad.nii.gz: expected a real scalar image", "RGB"]),
    "complex image": (lambda t: _bad_case(t, (_scan() + 1j).astype(np.complex64)),
                      ["bad.nii.gz: expected a real scalar image", "complex"]),
    "4-D image": (lambda t: _bad_case(t, np.stack([_scan()] * 3, axis=-1)), ["bad.nii.gz: expected a 3-D volume"]),
    "2-D image": (lambda t: _bad_case(t, _scan()[:, :, 0], labels=None), ["bad.nii.gz: expected a 3-D volume"]),
    "all-zero image": (lambda t: _bad_case(t, np.zeros((24, 16, 12), np.float32)), ["bad.nii.gz: every voxel is 0"]),
    "constant image": (lambda t: _bad_case(t, np.full((24, 16, 12), 7.5, np.float32)),
                       ["bad.nii.gz: every voxel is 7.5"]),
    "label map as image": (lambda t: _bad_case(t, _labels()), ["bad.nii.gz: this looks like a label map"]),
    "voxel size out of range": (lambda t: _bad_case(t, _scan(), affine=np.diag([2.0, 2.0, 30.0, 1.0])),
                                ["bad.nii.gz: voxel size", "exceeds 25.0 mm"]),
    "singular affine": (lambda t: _bad_case(t, _scan(), labels=None, affine=np.diag([2.0, 0.0, 5.0, 1.0])),
                        ["bad.nii.gz: invalid (singular or non-finite) affine"]),
    "label map without image": (lambda t: _nifti(t / "data" / "labels" / "orphan.nii.gz", _labels()),
                                ["orphan.nii.gz: label map without an image"]),
    "missing label map": (lambda t: _bad_case(t, _scan(), labels=None), ["bad.nii.gz: missing label map"]),
    "label shape mismatch": (lambda t: _bad_case(t, _scan(), labels=_labels()[:, :, :-1]),
                             ["bad.nii.gz: shape", "does not match"]),
    "label affine mismatch": (lambda t: (_bad_case(t, _scan(), labels=None),
                                         _nifti(t / "data/labels/bad.nii.gz", _labels(), _shifted())),
                              ["bad.nii.gz: voxel-to-world affine differs"]),
    "unknown label ids": (lambda t: _bad_case(t, _scan(), labels=(_labels() + (_labels() > 0) * 100).astype(np.uint8)),
                          ["bad.nii.gz: unknown label id(s) 102, 137"]),
    "non-integer labels": (lambda t: _bad_case(t, _scan(), labels=_labels().astype(np.float32) * 0.5),
                           ["bad.nii.gz: label map holds non-integer"]),
    "left/right swapped": (lambda t: _bad_case(t, _scan(), labels=np.where(_labels() == 2, 37, np.where(
        _labels() == 37, 2, 0)).astype(np.uint8)), ["bad.nii.gz: left/right look swapped"]),
}


@pytest.mark.parametrize("kind", CHECK_CASES)
def test_check_reports_bad_case_and_continues(kind, study, capsys):
    setup, words = CHECK_CASES[kind]
    setup(study)
    before = _snapshot(study)
    rc = cli.main(["check", str(study / "data")])
    out, err = capsys.readouterr()
    assert rc == 1
    for w in words:
        assert w in out, f"{kind}: {w!r} not in\n{out}"
    assert " a: shape [24, 16, 12]" in out, f"{kind}: the good case is not reported\n{out}"  # continues past the bad one
    assert "Traceback" not in out + err and not err
    assert _snapshot(study) == before


def _report_into(t, rel):
    return ["--report", str(t / rel)]


CHECK_REPORT_CASES = {
    # kind: (argv after `check DATA`, words of the one-line error)
    "report is an input image": (lambda t: _report_into(t, "data/images/a.nii.gz"), "inside the input folder"),
    "report inside the labels folder": (lambda t: _report_into(t, "data/labels/report.json"),
                                        "lies inside the input folder"),
    "report is a folder": (lambda t: _report_into(t, "data"), "is a folder"),
    "report under a file": (lambda t: _report_into(t, "scan.nii.gz/report.json"), "is a file, not a folder"),
    "report via '..' spelling": (lambda t: _report_into(t, "data/labels/../images/a.nii.gz"), "inside the input"),
    "report via a symbolic link": (lambda t: (os.symlink(t / "data/images/a.nii.gz", t / "link.json"),
                                              ["--report", str(t / "link.json")])[1], "inside the input folder"),
}


@pytest.mark.parametrize("kind", CHECK_REPORT_CASES)
def test_check_refuses_report_paths_before_work(kind, study, capsys):
    extra = CHECK_REPORT_CASES[kind][0](study)
    before = _snapshot(study)
    rc = cli.main(["check", str(study / "data"), *extra])
    out, err = capsys.readouterr()
    assert rc == 1 and err.startswith("llseg check: error: ") and err.count("\n") == 1
    assert CHECK_REPORT_CASES[kind][1] in err and Path(extra[-1]).name in err
    assert " a: shape" not in out, "the paths must be refused before any case is checked"
    assert _snapshot(study) == before


def test_check_missing_folder_and_good_report(study, capsys):
    assert cli.main(["check", str(study / "nowhere")]) == 1
    assert "nowhere/images: no such folder" in capsys.readouterr().err
    # one case: each region is in fewer than the 2 training cases needed
    assert cli.main(["check", str(study / "data"), "--report", str(study / "data" / "report.json")]) == 1
    report = io.read_json(study / "data" / "report.json")
    assert report["n_cases"] == 1 and report["n_bad"] == 0 and report["n_cohort_problems"] == 2


# ----------------------------------------------------------------------------- llseg segment

def _seg(t, image="scan.nii.gz", out="out/scan_muscles.nii.gz", params="study_params.yaml", models="models", *more):
    return ["segment", str(t / image), "-o", str(t / out), "--models", str(t / models), "--params", str(t / params),
            "-q", *more]


def _seg_whole(t):
    """``_seg`` of the (60 mm) test scan declared whole-leg, to reach the model checks."""
    return _seg(t, "scan.nii.gz", "out/scan_muscles.nii.gz", "study_params.yaml", "models", "--coverage", "whole")


def _write_params_text(t, text):
    (t / "study_params.yaml").write_text(text)


def _models(t, *, truncate=False, missing=False, junk_zip=False):
    """A models folder whose first stage-1 file is missing, truncated or a zip without a model."""
    for sub in ("stage1", "stage2"):
        (t / "models" / sub).mkdir(parents=True)
    path = t / "models" / "stage1" / "group_01.keras"
    if truncate:
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    if junk_zip:
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{not a model")
    return path


SEGMENT_CASES = {
    # kind: (setup(t) -> argv, words of the one-line error)
    "missing image": (lambda t: _seg(t, image="nowhere.nii.gz"), "nowhere.nii.gz: no such file"),
    "image not NIfTI": (lambda t: ((t / "scan.txt").write_text("x"), _seg(t, image="scan.txt"))[1],
                        "scan.txt: not a NIfTI file"),
    "truncated image": (lambda t: ((t / "trunc.nii.gz").write_bytes((t / "scan.nii.gz").read_bytes()[:80]),
                                   _seg(t, image="trunc.nii.gz"))[1], "trunc.nii.gz: "),
    "RGB image": (lambda t: (_nifti(t / "rgb.nii.gz", _rgb()), _seg(t, image="rgb.nii.gz"))[1],
                  "rgb.nii.gz: expected a real scalar image"),
    "complex image": (lambda t: (_nifti(t / "c.nii.gz", (_scan() + 1j).astype(np.complex64)),
                                 _seg(t, image="c.nii.gz"))[1], "c.nii.gz: expected a real scalar image"),
    "4-D image": (lambda t: (_nifti(t / "v.nii.gz", np.stack([_scan()] * 2, -1)), _seg(t, image="v.nii.gz"))[1],
                  "v.nii.gz: expected a 3-D volume"),
    "NaN voxels": (lambda t: (_nifti(t / "n.nii.gz", np.full((24, 16, 12), np.nan, np.float32)),
                              _seg(t, image="n.nii.gz"))[1], "n.nii.gz: 4608 voxel(s) are NaN"),
    "all-zero image": (lambda t: (_nifti(t / "z.nii.gz", np.zeros((24, 16, 12), np.float32)),
                                  _seg(t, image="z.nii.gz"))[1], "z.nii.gz: every voxel is 0"),
    "label map as scan": (lambda t: (_nifti(t / "l.nii.gz", _labels()), _seg(t, image="l.nii.gz"))[1],
                          "l.nii.gz: this looks like a label map"),
    "50 mm voxels": (lambda t: (_nifti(t / "big.nii.gz", _scan(), np.diag([50.0, 50.0, 50.0, 1.0])),
                                _seg(t, image="big.nii.gz"))[1], "big.nii.gz: voxel size [50.0, 50.0, 50.0] mm"),
    "study grid too large for memory": (lambda t: (_params(t, **{"preprocess.spacing_mm": [0.01, 0.01, 0.01]}),
                                                   _seg(t))[1], "scan.nii.gz: preprocessing needs about"),
    "output is the input": (lambda t: _seg(t, out="scan.nii.gz"), "is the input"),
    "output is the input by another spelling": (lambda t: _seg(t, out="data/../scan.nii.gz"), "is the input"),
    "output is a link to the input": (lambda t: (os.symlink(t / "scan.nii.gz", t / "link.nii.gz"),
                                                 _seg(t, out="link.nii.gz"))[1], "is the input"),
    "output is a folder": (lambda t: ((t / "dir.nii.gz").mkdir(), _seg(t, out="dir.nii.gz"))[1],
                           "dir.nii.gz: is a folder"),
    "output under a file": (lambda t: _seg(t, out="scan.nii.gz/x.nii.gz"), "is a file, not a folder"),
    "derived volumes CSV is a folder": (lambda t: ((t / "out" / "scan_muscles_volumes.csv").mkdir(parents=True),
                                                   _seg(t))[1], "scan_muscles_volumes.csv: is a folder"),
    "derived colour table is a folder": (lambda t: ((t / "out" / "scan_muscles.ctbl").mkdir(parents=True),
                                                    _seg(t))[1], "scan_muscles.ctbl: is a folder"),
    "output not .nii.gz": (lambda t: _seg(t, out="out/scan.png"), "scan.png: output must end in .nii or .nii.gz"),
    "output inside the models folder": (lambda t: ((t / "models").mkdir(), _seg(t, out="models/seg.nii.gz"))[1],
                                        "lies inside the input folder"),
    "output is the params file": (lambda t: _seg(t, out="study_params.yaml"), "output must end in .nii"),
    "no models folder": (lambda t: _seg(t), "no such folder"),
    "missing model file": (lambda t: (_models(t), _seg_whole(t))[1], "group_01.keras: no such model file"),
    "truncated model file": (lambda t: (_models(t, truncate=True), _seg_whole(t))[1],
                             "group_01.keras: not a readable .keras model (truncated or corrupt"),
    "short scan without --coverage": (lambda t: (_models(t), _seg(t))[1],
                                      "scan.nii.gz: the scan is 60 mm long, shorter than a whole leg"),
    "unknown --coverage": (lambda t: (_models(t), _seg(t, "scan.nii.gz", "out/scan_muscles.nii.gz",
                                                        "study_params.yaml", "models", "--coverage", "knee"))[1],
                           "coverage 'knee': give a preset (whole, pelvis_knee, thigh, calf) or TOP:BOTTOM"),
    "--coverage out of order": (lambda t: (_models(t), _seg(t, "scan.nii.gz", "out/scan_muscles.nii.gz",
                                                             "study_params.yaml", "models", "--coverage", "0.6:0.2"))[1],
                                "fractions must satisfy 0 <= top < bottom <= 1"),
    "label-like scan allowed, then no models": (lambda t: (_nifti(t / "l.nii.gz", _labels()),
                                                           _seg(t, "l.nii.gz", "out/l_seg.nii.gz", "study_params.yaml",
                                                                "models", "--allow-label-like"))[1], "no such folder"),
    "params: missing file": (lambda t: _seg(t, params="nowhere.yaml"), "nowhere.yaml: no such params file"),
    "params: a folder": (lambda t: _seg(t, params="data"), "data: is a folder"),
    "params: YAML syntax": (lambda t: (_write_params_text(t, "phantom:\n  n_subjects: [4\nsplit: {}\n"), _seg(t))[1],
                            "study_params.yaml:3:"),
    "params: empty file": (lambda t: (_write_params_text(t, ""), _seg(t))[1],
                           "study_params.yaml: expected a mapping of sections"),
    "params: missing section": (lambda t: (_write_params_text(t, (ROOT / "params.yaml").read_text().replace(
        "\nstage2:", "\nstage2_old:")), _seg(t))[1], "study_params.yaml: missing section 'stage2'"),
    "params: fractional count": (lambda t: (_params(t, **{"stage2.n_tta_boxes": 2.7}), _seg(t))[1],
                                 "study_params.yaml: stage2.n_tta_boxes: expected an integer, got 2.7"),
    "params: negative count": (lambda t: (_params(t, **{"stage2.n_tta_boxes": -1}), _seg(t))[1],
                               "stage2.n_tta_boxes: expected a value >= 1, got -1"),
    "params: text for a number": (lambda t: (_params(t, **{"postprocess.threshold": "m"}), _seg(t))[1],
                                  "postprocess.threshold: expected a number, got 'm'"),
    "params: wrong list length": (lambda t: (_params(t, **{"preprocess.spacing_mm": [2.0, 2.0]}), _seg(t))[1],
                                  "preprocess.spacing_mm: expected a list of exactly 3 values"),
    "params: zero spacing": (lambda t: (_params(t, **{"preprocess.spacing_mm": [2.0, 0, 10.0]}), _seg(t))[1],
                             "preprocess.spacing_mm.1: expected a value > 0"),
    "params: unknown key": (lambda t: (_params(t, **{"stage2.n_tta_boxs": 6}), _seg(t))[1],
                            "stage2.n_tta_boxs: unknown key"),
    "params: bad choice": (lambda t: (_params(t, **{"stage2.loss": "dice"}), _seg(t))[1],
                           "stage2.loss: expected one of 'ce' or 'ce_dice', got 'dice'"),
    "params: bad profile value": (lambda t: ((lambda p: (p.write_text(p.read_text().replace(
        "stage2.iterations: 3", "stage2.iterations: 2.5")), None))(_params(t)), _seg(t))[1],
                                  "profiles.smoke.stage2.iterations: expected an integer, got 2.5"),
}


@pytest.mark.parametrize("kind", SEGMENT_CASES)
def test_segment_refuses_bad_input_before_the_models(kind, study, capsys):
    argv = SEGMENT_CASES[kind][0](study)
    before = _snapshot(study)
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 1, f"{kind}: exit {rc}\n{out}{err}"
    assert err.startswith("llseg segment: error: ") and err.count("\n") == 1, err
    assert SEGMENT_CASES[kind][1] in err, f"{kind}: {SEGMENT_CASES[kind][1]!r} not in {err!r}"
    assert "Traceback" not in out + err
    assert _snapshot(study) == before, f"{kind}: files changed or left behind"


PROFILE_CASES = {
    "fractional count": ("n_tta_boxes: 6 ", "n_tta_boxes: 2.7 ", "params.yaml: stage2.n_tta_boxes: expected an integer"),
    "unknown key": ("  n_tta_boxes: 6 ", "  n_tta_boxs: 6 ", "params.yaml: stage2.n_tta_boxs: unknown key"),
    "YAML syntax": ("profile: cpu", "profile: [cpu", "params.yaml:"),
}


@pytest.mark.parametrize("kind", PROFILE_CASES)
def test_profile_refuses_a_bad_file_unchanged(kind, tmp_path, capsys):
    old, new, words = PROFILE_CASES[kind]
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace(old, new, 1))
    before = _snapshot(tmp_path)
    assert cli.main(["profile", "smoke", "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llseg profile: error: ") and words in err and err.count("\n") == 1
    assert _snapshot(tmp_path) == before


def test_segment_failure_while_writing_leaves_nothing(study, monkeypatch, capsys):
    """All-or-nothing: a failure after the label map is written removes it again (no partial output)."""
    from llseg import pipeline

    def segment_scan(image, out, models, **kwargs):
        io.save_nifti(out, np.zeros((24, 16, 12), np.uint8), AFFINE)
        raise ValueError(f"{out.name}: simulated failure after the first file")

    monkeypatch.setattr(pipeline, "segment_scan", segment_scan)
    before = _snapshot(study)
    assert cli.main(_seg(study)) == 1
    assert "simulated failure" in capsys.readouterr().err
    assert _snapshot(study) == before


def test_corrupt_model_in_a_fresh_process_is_one_line(study):
    """A zip that is not a Keras model: one stderr line naming the file, no TensorFlow start-up lines."""
    path = _models(study, junk_zip=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}   # the CLI must quieten TensorFlow itself
    res = subprocess.run([sys.executable, "-m", "llseg.cli", *_seg_whole(study)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llseg segment: error: "), res.stderr
    assert f"{path}: cannot load the model" in lines[0]
    assert not (study / "out").exists()


# ----------------------------------------------------------------------------- helpers

def _snapshot(root):
    """Every path under ``root`` with the bytes of its files (folders and links as markers)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            found[os.path.join(dirpath, d)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            found[p] = ("link", os.readlink(p)) if os.path.islink(p) else Path(p).read_bytes()
    return found
