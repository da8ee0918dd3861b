"""llseg.pipeline without the CLI: each command's file-level step on a two-case cohort of 24 x 16 x 12 voxels."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from llseg import anatomy, cascade, io, pipeline, preprocess, runinfo

ROOT = Path(__file__).resolve().parents[1]

#: A study grid equal to the ``two_leg_case`` grid (2 x 2 x 5 mm, 24 x 16 in-plane) and no N4: fast and exact.
GRID = {"spacing_mm": [2.0, 2.0, 5.0], "fov_mm": [48, 32], "n4": False, "n4_shrink": 4, "n4_iterations": [2]}
INFERENCE = {"n_tta_boxes": 2, "ratio_range": (1.0, 1.8), "seed": 0, "threshold": 0.5, "closing_radius_vox": (1, 1, 0)}

#: RAS -> LPS (flip X and Y): the stored files are not in the canonical order.
LPS = np.array([[0, -1], [1, -1], [2, 1]])


@pytest.fixture
def lps_cohort(cohort_dir):
    """``cohort_dir`` with every file rewritten in LPS order (same world coordinates)."""
    for path in sorted(cohort_dir.glob("*/*.nii.gz")):
        img = nib.load(str(path))
        out = img.as_reoriented(LPS)
        nib.save(nib.Nifti1Image(np.asarray(out.dataobj), out.affine, out.header), str(path))
    return cohort_dir


@pytest.fixture
def preprocessed(lps_cohort, tmp_path):
    out = tmp_path / "pre"
    manifest = pipeline.preprocess_cohort(lps_cohort, out, **GRID, test_fraction=0.5, seed=0, progress=False)
    return out, manifest


def test_preprocess_cohort_in_parallel_writes_the_same_files(lps_cohort, tmp_path):
    """Cases preprocessed two at a time (N4 on, each on its share of the cores): the same files and manifest
    as one after the other."""
    grid = {**GRID, "n4": True, "n4_iterations": [3, 2]}
    one = pipeline.preprocess_cohort(lps_cohort, tmp_path / "one", **grid, test_fraction=0.5, seed=0, progress=False)
    two = pipeline.preprocess_cohort(lps_cohort, tmp_path / "two", **grid, test_fraction=0.5, seed=0, jobs=2,
                                     progress=False)
    assert one == two and list(two["cases"]) == ["a", "b"]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.nii.gz"))
    assert len(files) == 6
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        pipeline.preprocess_cohort(lps_cohort, tmp_path / "bad", **grid, test_fraction=0.5, seed=0, jobs=0)
    assert not (tmp_path / "bad").exists()


@pytest.fixture
def fake_cascade(monkeypatch):
    """No trained networks: every study-grid voxel gets label ``flat index % 71``."""
    def run_stage1(models, image, **kwargs):
        lab = (np.arange(image.size) % 71).reshape(image.shape).astype(np.uint8)
        return {"labels": lab, "boxes": {2: np.array([[0, 4], [0, 4], [0, 4]])}, "estimated": {37: 2}, "absent": {},
                "seconds_per_group": {1: 0.1, 2: 0.3}}

    def run_stage2(models, image, boxes, **kwargs):
        lab = (np.arange(image.size) % 71).reshape(image.shape).astype(np.uint8)
        return {"labels": lab, "seconds_per_muscle": {"soleus": 0.2}, "seconds_postprocess": 0.05}

    def run_cascade(s1, s2, image, **kwargs):
        first = run_stage1(s1, image)
        return {"labels": first["labels"], "seconds": 1.0, "stage1": first, "stage2": run_stage2(s2, image, {})}

    monkeypatch.setattr(pipeline, "check_models_folder", lambda models: Path(models))
    monkeypatch.setattr(pipeline, "load_cascade", lambda models, **kw: (None, None, {}, {"part_ranges": {}, "factor": [1, 1, 1]}))
    monkeypatch.setattr(cascade, "run_stage1", run_stage1)
    monkeypatch.setattr(cascade, "run_stage2", run_stage2)
    monkeypatch.setattr(cascade, "run_cascade", run_cascade)


def test_preprocess_cohort_writes_the_study_grid_and_the_manifest(preprocessed, lps_cohort, two_leg_case):
    out, manifest = preprocessed
    assert manifest == io.read_json(out / "manifest.json")
    assert manifest["split"] == {"train": ["a"], "test": ["b"]} or manifest["split"] == {"train": ["b"], "test": ["a"]}
    assert manifest["spacing_mm"] == [2.0, 2.0, 5.0] and manifest["matrix_xy"] == [24, 16]
    image, labels, affine = two_leg_case
    for case in ("a", "b"):
        record = manifest["cases"][case]
        assert set(record) == {"zoom", "offsets_xy", "cov_before", "cov_after", "affine", "original_affine",
                               "canonical_affine", "canonical_shape"}
        assert record["canonical_shape"] == list(image.shape) and nib.aff2axcodes(record["original_affine"]) == (
            "L", "P", "S")
        np.testing.assert_allclose(record["canonical_affine"], affine)
        study = io.load_labels(out / "labels" / f"{case}.nii.gz")
        np.testing.assert_array_equal(study.data, labels)       # same grid: the labels come through unchanged
        for kind in ("image", "bias"):
            assert (out / kind / f"{case}.nii.gz").exists()
    assert not [p for p in out.parent.glob(".*")], "temporary folder left behind"


def test_restore_geometry_maps_study_labels_back_into_the_stored_file(preprocessed, lps_cohort):
    out, manifest = preprocessed
    for case, record in manifest["cases"].items():
        study = io.load_labels(out / "labels" / f"{case}.nii.gz").data
        canonical, original = preprocess.restore_geometry(study, record)
        stored = nib.load(str(lps_cohort / "labels" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(original, np.asarray(stored.dataobj))
        np.testing.assert_array_equal(canonical, study)


def test_load_split_reads_only_what_is_asked(preprocessed):
    out, manifest = preprocessed
    m, cases, images, labels = pipeline.load_split(out, "test", labels=False)
    assert m == manifest and cases == manifest["split"]["test"] and labels is None
    assert len(images) == 1 and images[0].dtype == np.float32
    _, _, images, labels = pipeline.load_split(out, "train", images=False)
    assert images is None and labels[0].dtype == np.uint8


def test_write_box_priors(preprocessed, tmp_path):
    out, manifest = preprocessed
    priors = pipeline.write_box_priors(out, tmp_path / "models" / "box_priors.json")
    assert priors == io.read_json(tmp_path / "models" / "box_priors.json")
    assert priors["n_cases"] == len(manifest["split"]["train"])


@pytest.mark.parametrize("committed", ["stage1/group_01.json", "stage2/soleus.json"])
def test_training_record_has_the_committed_keys(tmp_path, committed):
    """The records of stage 1 and stage 2 keep the keys of the committed models/*/*.json."""
    keys = set(json.loads((ROOT / "models" / committed).read_text())) | {"environment"}  # the machine, recorded since 2026-12
    history = {"loss": list(np.linspace(2.0, 1.0, 30)), "val_dice": [[10, 0.5], [30, 0.6]], "seconds": 12.5,
               "class_weights": [0.5, 1.5], "n_params": 99}
    settings = {k: 1 for k in keys - {"seconds", "final_loss", "val_dice", "class_weights"}}
    path = pipeline.write_training_record(tmp_path / "r.json", settings, history, keep=("class_weights",))
    record = io.read_json(path)
    assert set(record) == keys
    assert record["final_loss"] == pytest.approx(np.mean(history["loss"][-10:]))
    assert record["val_dice"] == history["val_dice"] and record["class_weights"] == [0.5, 1.5]
    assert record["seconds"] == 12.5 and record["loss"] == 1 and "n_params" not in record  # "loss": the kind, not the curve


def test_predict_cases_writes_labels_timings_and_no_dice(preprocessed, lps_cohort, fake_cascade, tmp_path):
    pre, manifest = preprocessed
    out = tmp_path / "predictions"
    summary = pipeline.predict_cases(pre, tmp_path / "models", out, metrics_path=tmp_path / "cascade.json",
                                     tables_dir=tmp_path / "tables", **INFERENCE, progress=False)
    (case,) = manifest["split"]["test"]
    metrics = io.read_json(tmp_path / "cascade.json")
    assert metrics == {**summary, "cases": [{"case": case, "n_estimated_boxes": 1}], "environment": runinfo.environment()}
    assert not [k for k in json.dumps(metrics).split('"') if "dice" in k.lower()], "Dice is llseg evaluate's"
    assert summary["mean_seconds_per_case"] == 1.0 and summary["mean_seconds_per_group"] == pytest.approx(0.2)
    assert summary["mean_seconds_per_muscle"] == pytest.approx(0.2) and summary["spacing_mm"] == [2.0, 2.0, 5.0]
    stored = nib.load(str(lps_cohort / "images" / f"{case}.nii.gz"))
    written = nib.load(str(out / "labels" / f"{case}.nii.gz"))
    assert written.shape == stored.shape and nib.aff2axcodes(written.affine) == ("L", "P", "S")
    np.testing.assert_allclose(written.affine, stored.affine, atol=1e-6)
    study = io.load_labels(out / "study" / f"{case}_stage2.nii.gz").data
    np.testing.assert_array_equal(nib.as_closest_canonical(written).get_fdata().astype(np.uint8), study)
    assert io.read_json(out / "study" / f"{case}_boxes.json") == {"boxes": {"2": [[0, 4], [0, 4], [0, 4]]},
                                                                  "estimated": {"37": 2}}
    assert (tmp_path / "tables" / "timing.csv").exists() and "| stage 1, per group | 0.2 |" in (
        tmp_path / "tables" / "timing.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["labels", "llseg_itksnap.txt", "llseg_labels.ctbl", "study"]


def test_segment_scan_writes_the_label_map_and_its_tables(lps_cohort, fake_cascade, tmp_path, capsys):
    image = lps_cohort / "images" / "a.nii.gz"
    out = tmp_path / "seg" / "a_muscles.nii.gz"
    found = pipeline.segment_scan(image, out, tmp_path / "models", **GRID, **INFERENCE, progress=False,
                                  scan_coverage="whole")                # a 60 mm test scan, declared whole-leg
    assert found["n_regions"] == anatomy.N_REGIONS
    assert found["seconds_stage1"] == pytest.approx(0.4) and found["seconds_stage2"] == pytest.approx(0.25)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "a_muscles.ctbl", "a_muscles.nii.gz", "a_muscles_contours.json", "a_muscles_itksnap.txt",
        "a_muscles_volumes.csv"]
    written, stored = nib.load(str(out)), nib.load(str(image))
    assert written.shape == stored.shape and nib.aff2axcodes(written.affine) == ("L", "P", "S")
    assert capsys.readouterr().err == ""                       # progress=False: no bar


def test_segment_scan_checks_the_output_path_before_any_work(lps_cohort, tmp_path):
    image = lps_cohort / "images" / "a.nii.gz"
    with pytest.raises(ValueError, match="output must end in .nii or .nii.gz"):
        pipeline.segment_scan(image, tmp_path / "seg.png", tmp_path / "models", **GRID, **INFERENCE, progress=False)
    with pytest.raises(ValueError, match="refusing to overwrite the input image"):
        pipeline.segment_scan(image, image, tmp_path / "models", **GRID, **INFERENCE, progress=False)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        pipeline.segment_scan(image, tmp_path / "seg.nii.gz", tmp_path / "models", **GRID, **INFERENCE,
                              progress=False)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_train_stage2_muscle_writes_the_model_and_its_record(preprocessed, tmp_path):
    pre, _ = preprocessed
    out = tmp_path / "models" / "stage2" / "adductor_longus.keras"
    history = pipeline.train_stage2_muscle(
        pre, out, muscle="adductor_longus", levels=2, root_filters=2, iterations=2, learning_rate=1e-3, seed=0,
        validate_every=1000, max_voxels=512, ratio_range=(1.0, 1.8),
        augment_kwargs={"max_rotation_deg": 0.0, "max_shear": 0.0, "flip_lr": False}, progress=False)
    record = io.read_json(out.with_suffix(".json"))
    assert set(record) == set(json.loads((ROOT / "models" / "stage2" / "soleus.json").read_text())) | {"environment"}
    assert record["muscle"] == "adductor_longus" and record["input_size"] == list(history["input_size"])
    assert record["iterations"] == 2 and record["ratio_range"] == [1.0, 1.8] and record["loss"] == "ce"
    assert out.stat().st_size > 0


def test_train_stage1_group_writes_the_model_and_its_record(preprocessed, tmp_path):
    pre, _ = preprocessed
    group = next(g for g, (_, _, keys) in anatomy.GROUPS.items() if "adductor_longus" in keys)  # the case's muscle
    out = tmp_path / "models" / "stage1" / f"group_{group:02d}.keras"
    pipeline.train_stage1_group(
        pre, out, group=group, factor=(2, 2, 1), levels=2, root_filters=2, iterations=2, learning_rate=1e-3, seed=0,
        validate_every=1000, augment_kwargs={"max_rotation_deg": 0.0, "max_shear": 0.0, "flip_lr": False},
        live_dir=tmp_path / "live", progress=False)
    record = io.read_json(out.with_suffix(".json"))
    # the test case labels some of the group's muscles: the record says which regions it learned; its
    # short scan is a partial one (coverage from its labels), so the record says that too
    assert set(record) == set(json.loads((ROOT / "models" / "stage1" / "group_01.json").read_text())) | {
        "environment", "regions", "trained_on_partial_scans"}
    assert record["trained_on_partial_scans"] is True
    assert set(record["regions"]) < set(anatomy.group_labels(group))
    assert anatomy.label_id("adductor_longus", "right") in record["regions"]
    assert record["group"] == group and record["factor"] == [2.0, 2.0, 1.0] and record["iterations"] == 2
    assert out.stat().st_size > 0 and (tmp_path / "live" / f"group_{group:02d}").is_dir()
