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


def test_tensorflow_python_warnings_stay_out_of_the_way(tmp_path, capsys, monkeypatch):
    """TensorFlow's "retracing" warnings (one per network after the fifth in llseg segment) are not shown;
    -v shows everything."""
    import logging

    tf_logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(tf_logger, "level", logging.NOTSET)
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    assert cli.main(["profile", "cpu", "--params", str(params)]) == 0
    assert tf_logger.getEffectiveLevel() == logging.ERROR
    monkeypatch.setattr(tf_logger, "level", logging.NOTSET)
    assert cli.main(["-v", "profile", "cpu", "--params", str(params)]) == 0
    assert tf_logger.level == logging.NOTSET                 # -v leaves it to the root logger (DEBUG)


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
    """Two cases labelling one muscle on both sides: partial labels are no problem, only a fact."""
    assert cli.main(["check", str(cohort_dir), "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("labels: 2 of 70 regions: adductor_longus both sides") == 2
    assert "muscles trained: 1 of 35 (adductor_longus); absent from the cohort: 34" in out
    report = io.read_json(tmp_path / "r.json")
    assert report["n_cases"] == 2 and report["n_bad"] == 0 and report["n_cohort_problems"] == 0
    assert [c["regions_present"] for c in report["cases"]] == [[2, 37], [2, 37]]
    assert report["regions_by_training_cases"] == [
        {"label": 2, "region": "Adductor longus (right)", "n_cases": 2, "n_training_cases": 2},
        {"label": 37, "region": "Adductor longus (left)", "n_cases": 2, "n_training_cases": 2}]
    # three cases needed per region: both regions fail, named with their counts
    assert cli.main(["check", str(cohort_dir), "--min-training-cases", "3"]) == 1
    out = capsys.readouterr().out
    assert "BAD cohort: Adductor longus (right) (label 2) is labelled in 2 case(s) but only 2 training case(s); " \
           "training needs at least 3" in out and "2 case(s), 0 with problems; 2 cohort problem(s)" in out
    with pytest.raises(SystemExit):
        cli.main(["check", str(cohort_dir), "--min-training-cases", "0"])
    assert "expected an integer >= 1, got '0'" in capsys.readouterr().err


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



def test_segment_options_all_have_help():
    parser = cli.build_parser()
    segment = next(a for a in parser._actions if a.dest == "command").choices["segment"]
    options = [a for a in segment._actions if a.dest != "help"]
    assert {"image", "output", "models", "params", "quiet"} <= {a.dest for a in options}
    assert all(a.help for a in options), [a.dest for a in options if not a.help]
    assert cli.build_parser().parse_args(["segment", "x.nii.gz", "-o", "y.nii.gz", "-q"]).quiet


# ----------------------------------------------------------------------------- colour / label tables beside label maps


def _tables_params(tmp_path) -> Path:
    """params.yaml with a study grid equal to the ``two_leg_case`` grid (2 x 2 x 5 mm, 24 x 16) and no N4."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preprocess"].update(n4=False, spacing_mm=[2.0, 2.0, 5.0], fov_mm=[48, 32])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def fake_cascade(monkeypatch):
    """No trained networks: ``pipeline.load_cascade`` returns placeholders and the cascade labels every study-grid
    voxel with ``flat index % 71``, so all 70 regions (and background) are present; atomic writes are recorded."""
    import contextlib

    from llseg import cascade, pipeline

    def run_stage1(models, image, **kwargs):
        lab = (np.arange(image.size) % 71).reshape(image.shape).astype(np.uint8)
        return {"labels": lab, "boxes": {}, "estimated": {}, "absent": {}, "seconds_per_group": {1: 0.1}}

    def run_stage2(models, image, boxes, **kwargs):
        lab = (np.arange(image.size) % 71).reshape(image.shape).astype(np.uint8)
        return {"labels": lab, "seconds_per_muscle": {"soleus": 0.1}, "seconds_postprocess": 0.0}

    def run_cascade(s1, s2, image, **kwargs):
        stage1 = run_stage1(s1, image)
        return {"labels": stage1["labels"], "seconds": 0.3, "stage1": stage1, "stage2": run_stage2(s2, image, {})}

    real_atomic = io.atomic_path
    written = []

    @contextlib.contextmanager
    def recording_atomic_path(path):
        written.append(Path(path).name)
        with real_atomic(path) as tmp:
            yield tmp

    monkeypatch.setattr(pipeline, "check_models_folder", lambda models: Path(models))
    monkeypatch.setattr(pipeline, "load_cascade", lambda models, **kw: (None, None, {}, {"part_ranges": {}, "factor": [1, 1, 1]}))
    monkeypatch.setattr(cascade, "run_stage1", run_stage1)
    monkeypatch.setattr(cascade, "run_stage2", run_stage2)
    monkeypatch.setattr(cascade, "run_cascade", run_cascade)
    monkeypatch.setattr(io, "atomic_path", recording_atomic_path)
    return written


def _check_tables(ctbl: Path, itksnap: Path):
    """Both tables list background + 70 regions, parse back, and carry the figures' colours."""
    from llseg import anatomy, export
    from llseg.study import figures

    slicer = export.parse_slicer_color_table(ctbl.read_text())
    snap = export.parse_itksnap_label_descriptions(itksnap.read_text())
    assert sorted(slicer) == sorted(snap) == list(range(anatomy.N_REGIONS + 1))
    assert ctbl.read_text().startswith(f"# Color table file {ctbl.name}\n# 71 values\n")
    cmap = figures.label_colormap()
    for label, (key, side) in anatomy.REGIONS.items():
        rgb = tuple(int(round(255 * c)) for c in cmap(label)[:3])
        assert slicer[label] == (f"{key}_{side}", (*rgb, 255))
        assert snap[label] == (anatomy.region_name(label), rgb, 1.0)
    assert slicer[0][1][3] == 0 and snap[0][2] == 0.0                  # background transparent in both


def test_segment_writes_slicer_and_itksnap_tables_beside_the_label_map(tmp_path, two_leg_case, fake_cascade, capsys):
    import csv

    from llseg import anatomy

    image, _, affine = two_leg_case
    io.save_nifti(tmp_path / "scan.nii.gz", image, affine)
    out_dir = tmp_path / "out"
    rc = cli.main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out_dir / "scan_muscles.nii.gz"),
                   "--models", str(tmp_path / "models"), "--params", str(_tables_params(tmp_path)),
                   "--coverage", "whole"])                              # a 60 mm test scan, declared whole-leg
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "scan_muscles.ctbl", "scan_muscles.nii.gz", "scan_muscles_contours.json", "scan_muscles_itksnap.txt",
        "scan_muscles_volumes.csv"]                                        # no temporary files left behind
    assert {"scan_muscles.ctbl", "scan_muscles_itksnap.txt", "scan_muscles_volumes.csv",
            "scan_muscles_contours.json"} <= set(fake_cascade)           # every output went through atomic_path
    _check_tables(out_dir / "scan_muscles.ctbl", out_dir / "scan_muscles_itksnap.txt")
    # The label map holds every id the tables list; the volume table has one row with left/right asymmetry.
    labels = io.load_labels(out_dir / "scan_muscles.nii.gz")
    assert set(np.unique(labels.data)) == set(range(71))
    rows = {r["muscle"]: r for r in csv.DictReader(open(out_dir / "scan_muscles_volumes.csv"))}
    assert len(rows) == anatomy.N_MUSCLES
    voxel_ml = 2.0 * 2.0 * 5.0 / 1000
    soleus_right = anatomy.label_id("soleus", "right")
    assert float(rows["soleus"]["right_ml"]) == pytest.approx(np.count_nonzero(labels.data == soleus_right) * voxel_ml,
                                                              abs=0.005)
    r, l = float(rows["gracilis"]["right_ml"]), float(rows["gracilis"]["left_ml"])
    assert float(rows["gracilis"]["asymmetry_pct"]) == pytest.approx(100 * (r - l) / ((r + l) / 2), abs=0.5)
    assert io.read_json(out_dir / "scan_muscles_contours.json")["regions"]


def test_predict_writes_one_pair_of_tables_per_output_folder(tmp_path, cohort_dir, fake_cascade, capsys):
    params = _tables_params(tmp_path)
    pre, out = tmp_path / "pre", tmp_path / "predictions"
    assert cli.main(["preprocess", "--params", str(params), "--data", str(cohort_dir), "--out", str(pre), "-q"]) == 0
    rc = cli.main(["predict", "--params", str(params), "--preprocessed", str(pre), "--models", str(tmp_path / "m"),
                   "--out", str(out), "--metrics", str(tmp_path / "cascade.json"), "--tables", str(tmp_path / "t"),
                   "-q"])
    assert rc == 0, capsys.readouterr().err
    test_cases = io.read_json(pre / "manifest.json")["split"]["test"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"{c}.nii.gz" for c in test_cases]
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*.ctbl"))] == ["llseg_labels.ctbl"]
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*itksnap*"))] == ["llseg_itksnap.txt"]
    assert {"llseg_labels.ctbl", "llseg_itksnap.txt"} <= set(fake_cascade)
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    _check_tables(out / "llseg_labels.ctbl", out / "llseg_itksnap.txt")
    labels = io.load_labels(out / "labels" / f"{test_cases[0]}.nii.gz")
    assert max(np.unique(labels.data)) <= 70


def test_phantom_jobs_default_to_the_cores_the_memory_allows(monkeypatch, tmp_path, capsys):
    import types

    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    fake = types.SimpleNamespace(virtual_memory=lambda: types.SimpleNamespace(available=50 * 2**30))
    monkeypatch.setitem(__import__("sys").modules, "psutil", fake)
    assert cli._phantom_jobs() == 7                      # 50 GiB free / 7 GiB per case, below 16 cores
    fake.virtual_memory = lambda: types.SimpleNamespace(available=500 * 2**30)
    assert cli._phantom_jobs() == 16                     # the cores
    fake.virtual_memory = lambda: types.SimpleNamespace(available=2 * 2**30)
    assert cli._phantom_jobs() == 1                      # at least one
    assert cli.main(["phantom", "--out", str(tmp_path / "data"), "--jobs", "0"]) != 0
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err and not (tmp_path / "data").exists()
