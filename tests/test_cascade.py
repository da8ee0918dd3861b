"""End to end: the whole cascade through the ``llseg`` command on a tiny smoke-profile study.

One session fixture generates a 3-case smoke cohort, preprocesses it and trains all 10 stage-1
groups, the box priors and the 35 stage-2 muscles through ``cli.main`` (1-2 iterations each, so
the networks are untrained: the tests check geometry, files and contracts, not accuracy). Then:

* ``llseg predict`` writes each test case's label map in the case's own image space (the cohort's
  cases are stored in LPS, transposed and flipped orientations), metrics and timing tables;
* ``llseg segment`` writes a label map on the input grid, a volume CSV that matches the map and
  world-space contours;
* an LPS copy and an axis-permuted copy of a scan give the same labels in world space, right
  labels at larger world x than left ones;
* bad inputs give one error line, exit status 1 and no output;
* (slow) ``dvc repro`` runs the whole pipeline in a clone holding only committed files.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # before anything imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import anatomy, cli, export, io  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: On top of the smoke profile: the fewest cases, iterations and levels the pipeline accepts, so
#: that training all 45 networks is dominated by TensorFlow's one-off graph tracing (~3 s each).
SHRINK = {
    ("phantom", "n_subjects"): 3,       # 2 train + 1 test case
    ("stage1", "iterations"): 2,
    ("stage1", "levels"): 2,
    ("stage1", "validate_every"): 1000,  # validation only after the last iteration
    ("stage2", "iterations"): 1,
    ("stage2", "levels"): 2,
    ("stage2", "validate_every"): 1000,
    ("stage2", "n_tta_boxes"): 2,       # still averages over several boxes
}

#: nibabel orientation transforms applied to the stored cohort (case index modulo 3), so that
#: ``predict`` must map its labels back into non-RAS files: RAS -> LPS (flip X and Y),
#: RAS -> ARS (swap X and Y), RAS -> PLI (swap X and Y, flip all three).
STORED_ORIENTATIONS = (
    np.array([[0, -1], [1, -1], [2, 1]]),
    np.array([[1, 1], [0, 1], [2, 1]]),
    np.array([[1, -1], [0, -1], [2, -1]]),
)

TIMINGS: dict[str, float] = {}


# --------------------------------------------------------------------------- helpers


def shrink_params(path) -> None:
    """Switch a params.yaml to the smoke profile, then apply ``SHRINK`` (comments kept)."""
    from ruamel.yaml import YAML

    cli.apply_profile(path, "smoke")
    yaml = YAML()
    doc = yaml.load(Path(path))
    for (section, key), value in SHRINK.items():
        assert key in doc[section], f"params.yaml has no {section}.{key}"
        doc[section][key] = value
    yaml.dump(doc, Path(path))


def reorient_file(path, ornt) -> None:
    """Rewrite a NIfTI file with its axes reoriented by ``ornt``; world coordinates unchanged."""
    img = nib.load(str(path))
    out = img.as_reoriented(ornt)
    nib.save(nib.Nifti1Image(np.asarray(out.dataobj), out.affine, out.header), str(path))


def load(path):
    """(data, affine, shape) of a NIfTI file exactly as stored."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine, img.shape


def canonical(path):
    """(data, affine) in RAS+ canonical order."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.affine


def world_x_of_sides(data, affine) -> tuple[float, float]:
    """Mean world x (mm) of the right-leg (1..35) and the left-leg (36..70) voxels."""
    ijk = np.argwhere(data > 0)
    labels = data[tuple(ijk.T)]
    x = nib.affines.apply_affine(affine, ijk)[:, 0]
    right, left = labels <= anatomy.N_MUSCLES, labels > anatomy.N_MUSCLES
    return float(x[right].mean()) if right.any() else np.nan, float(x[left].mean()) if left.any() else np.nan


def run_cli(argv: list[str]) -> int:
    t0 = time.perf_counter()
    rc = cli.main(argv)
    TIMINGS[f"llseg {argv[0]}"] = TIMINGS.get(f"llseg {argv[0]}", 0.0) + time.perf_counter() - t0
    return rc


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """A trained smoke study: ``root`` with params.yaml, data/, work/preprocessed/, models/."""
    t0 = time.perf_counter()
    root = tmp_path_factory.mktemp("cascade_study")
    params = root / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    shrink_params(params)
    p = ["--params", str(params)]
    assert run_cli(["phantom", *p, "--out", str(root / "data"), "-q"]) == 0
    for i, image in enumerate(sorted((root / "data" / "images").glob("*.nii.gz"))):
        for kind in ("images", "labels"):
            reorient_file(root / "data" / kind / image.name, STORED_ORIENTATIONS[i % 3])
    pre, models = root / "work" / "preprocessed", root / "models"
    assert run_cli(["preprocess", *p, "--data", str(root / "data"), "--out", str(pre), "-q"]) == 0
    for g in anatomy.GROUPS:
        assert run_cli(["train-stage1", "--group", str(g), *p, "--preprocessed", str(pre),
                        "--out", str(models / "stage1" / f"group_{g:02d}.keras"), "-q"]) == 0
    assert run_cli(["box-priors", "--preprocessed", str(pre), "--out", str(models / "stage1" / "box_priors.json")]) == 0
    for m in anatomy.MUSCLES:
        assert run_cli(["train-stage2", "--muscle", m.key, *p, "--preprocessed", str(pre),
                        "--out", str(models / "stage2" / f"{m.key}.keras"), "-q"]) == 0
    TIMINGS["fixture study (phantom + preprocess + 45 trainings)"] = time.perf_counter() - t0
    manifest = io.read_json(pre / "manifest.json")
    assert len(manifest["split"]["test"]) >= 1 and len(manifest["split"]["train"]) >= 1
    return {"root": root, "params": params, "data": root / "data", "preprocessed": pre, "models": models,
            "test_cases": manifest["split"]["test"], "manifest": manifest}


@pytest.fixture(scope="module")
def model_cache():
    """Load each .keras file once per module: every ``llseg predict``/``segment`` call otherwise
    spends ~20 s re-reading the same 45 models. Same files, same models; the cache key includes
    the file's mtime and size, and missing files still go to the real loader (its error)."""
    real = io.load_model
    cache = {}

    def load_model(path):
        p = Path(path)
        if not p.exists():
            return real(path)
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        if key not in cache:
            cache[key] = real(path)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(io, "load_model", load_model)
        yield cache


@pytest.fixture(scope="module")
def predicted(study, model_cache, tmp_path_factory):
    """``llseg predict`` on the study's test cases."""
    out = tmp_path_factory.mktemp("predict")
    t0 = time.perf_counter()
    rc = cli.main(["predict", "--params", str(study["params"]), "--preprocessed", str(study["preprocessed"]),
                   "--models", str(study["models"]), "--out", str(out / "predictions"),
                   "--metrics", str(out / "metrics" / "cascade.json"), "--tables", str(out / "tables"), "-q"])
    TIMINGS["llseg predict"] = time.perf_counter() - t0
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def segmented(study, model_cache, tmp_path_factory):
    """``llseg segment`` on the first test case's stored image (a non-RAS file)."""
    case = study["test_cases"][0]
    image = study["data"] / "images" / f"{case}.nii.gz"
    out = tmp_path_factory.mktemp("segment") / "scan_muscles.nii.gz"
    t0 = time.perf_counter()
    rc = cli.main(["segment", str(image), "-o", str(out), "--models", str(study["models"]),
                   "--params", str(study["params"])])
    TIMINGS["llseg segment"] = time.perf_counter() - t0
    assert rc == 0
    return image, out


@pytest.fixture(scope="module")
def silent_stage1_models(study, tmp_path_factory):
    """The study's models, except that every stage-1 network predicts background everywhere.

    Stage 1 then finds nothing and every box comes from the box priors, which were fitted on
    the training label maps: the regions land on their anatomical side whatever the (untrained)
    networks do, so left/right placement depends only on the geometry code under test.
    """
    import keras

    root = tmp_path_factory.mktemp("silent_models")
    (root / "stage1").mkdir()
    for src in (study["models"] / "stage1").iterdir():
        if src.suffix == ".keras":
            model = keras.models.load_model(src, compile=False)
            logits = model.get_layer("logits")
            kernel, bias = logits.get_weights()
            bias = np.zeros_like(bias)
            bias[0] = 50.0                                   # softmax -> background with p ~ 1
            logits.set_weights([np.zeros_like(kernel), bias])
            io.save_model(model, root / "stage1" / src.name)
        else:
            shutil.copy(src, root / "stage1" / src.name)
    (root / "stage2").symlink_to(study["models"] / "stage2", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def reoriented_segmentations(study, silent_stage1_models, model_cache, tmp_path_factory):
    """``llseg segment`` on an LPS copy and an axis-permuted (Y, X, Z) copy of a test image."""
    case = study["test_cases"][0]
    ras = nib.as_closest_canonical(nib.load(str(study["data"] / "images" / f"{case}.nii.gz")))
    root = tmp_path_factory.mktemp("orientations")
    variants = {"lps": ras.as_reoriented(STORED_ORIENTATIONS[0]), "yxz": ras.as_reoriented(STORED_ORIENTATIONS[1])}
    assert nib.aff2axcodes(variants["lps"].affine) == ("L", "P", "S")
    assert nib.aff2axcodes(variants["yxz"].affine) == ("A", "R", "S")
    out = {}
    for name, img in variants.items():
        image = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine), str(image))
        labels = root / f"{name}_muscles.nii.gz"
        t0 = time.perf_counter()
        rc = cli.main(["segment", str(image), "-o", str(labels), "--models", str(silent_stage1_models),
                       "--params", str(study["params"])])
        TIMINGS[f"llseg segment ({name})"] = time.perf_counter() - t0
        assert rc == 0
        out[name] = (image, labels)
    return out


@pytest.fixture(scope="module", autouse=True)
def _report_timings():
    yield
    if TIMINGS:
        print("\n" + "\n".join(f"  {k}: {v:.1f} s" for k, v in TIMINGS.items()))


# --------------------------------------------------------------------------- the study fixture


def test_study_trained_every_model(study):
    models = study["models"]
    for g in anatomy.GROUPS:
        assert (models / "stage1" / f"group_{g:02d}.keras").stat().st_size > 0
        meta = io.read_json(models / "stage1" / f"group_{g:02d}.json")
        assert meta["group"] == g and meta["iterations"] == SHRINK[("stage1", "iterations")]
    for m in anatomy.MUSCLES:
        meta = io.read_json(models / "stage2" / f"{m.key}.json")
        assert meta["muscle"] == m.key and meta["iterations"] == SHRINK[("stage2", "iterations")]
        assert len(meta["input_size"]) == 3
    priors = io.read_json(models / "stage1" / "box_priors.json")
    assert priors["n_cases"] == len(study["manifest"]["split"]["train"])


# --------------------------------------------------------------------------- llseg predict


def test_predict_writes_labels_in_each_cases_original_space(study, predicted):
    for case in study["test_cases"]:
        image, image_affine, image_shape = load(study["data"] / "images" / f"{case}.nii.gz")
        labels, affine, shape = load(predicted / "predictions" / "labels" / f"{case}.nii.gz")
        assert shape == image_shape
        np.testing.assert_allclose(affine, image_affine, atol=1e-4)
        assert nib.aff2axcodes(affine) == nib.aff2axcodes(image_affine) != ("R", "A", "S")
        assert labels.dtype == np.uint8
        assert labels.min() >= 0 and labels.max() <= anatomy.N_REGIONS


def test_predict_original_space_labels_match_the_study_grid_prediction_in_world_space(study, predicted):
    """Every voxel of the written map carries the label of the study-grid voxel at the same world
    position (the smoke study grid has the images' voxel size, so this is exact), 0 outside."""
    for case in study["test_cases"]:
        labels, affine, shape = load(predicted / "predictions" / "labels" / f"{case}.nii.gz")
        grid, grid_affine, _ = load(predicted / "predictions" / "study" / f"{case}_stage2.nii.gz")
        if study["manifest"]["cases"][case]["zoom"] != [1.0, 1.0, 1.0]:
            pytest.skip("the voxel-exact world mapping holds when the study grid has the images' voxel size")
        ijk = np.indices(shape).reshape(3, -1).T
        idx = np.rint(nib.affines.apply_affine(np.linalg.inv(grid_affine) @ affine, ijk)).astype(int)
        inside = np.all((idx >= 0) & (idx < np.array(grid.shape)), axis=1)
        expected = np.zeros(len(ijk), np.uint8)
        expected[inside] = grid[tuple(idx[inside].T)]
        np.testing.assert_array_equal(labels.reshape(-1), expected)
        assert (grid > 0).any(), "the untrained cascade still labels something"


def test_predict_metrics_and_timing_tables(study, predicted):
    cases = study["test_cases"]
    m = io.read_json(predicted / "metrics" / "cascade.json")
    assert set(m) == {"n_test_cases", "spacing_mm", "mean_seconds_per_case", "mean_seconds_per_group",
                      "mean_seconds_per_muscle", "cases", "environment"}      # the Dice is llseg evaluate's
    assert m["environment"]["cpu"] and m["environment"]["keras_backend"] == "tensorflow"
    assert m["n_test_cases"] == len(cases) and m["spacing_mm"] == study["manifest"]["spacing_mm"]
    assert [c["case"] for c in m["cases"]] == cases
    for c in m["cases"]:
        assert set(c) == {"case", "n_estimated_boxes"}
        assert 0 <= c["n_estimated_boxes"] <= anatomy.N_REGIONS
    assert 0 < m["mean_seconds_per_group"] and 0 < m["mean_seconds_per_muscle"] < m["mean_seconds_per_case"]

    with open(predicted / "tables" / "timing.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == cases
    for r in rows:
        t = {k: float(v) for k, v in r.items() if k != "case"}
        assert set(t) == {"seconds_total", "seconds_stage1", "seconds_stage2", "seconds_postprocess",
                          "seconds_per_group_mean", "seconds_per_muscle_mean"}
        assert all(v >= 0 for v in t.values())
        assert t["seconds_stage1"] + t["seconds_stage2"] + t["seconds_postprocess"] <= t["seconds_total"] * 1.001
        assert t["seconds_per_group_mean"] == pytest.approx(t["seconds_stage1"] / len(anatomy.GROUPS))
        assert t["seconds_per_muscle_mean"] == pytest.approx(t["seconds_stage2"] / anatomy.N_MUSCLES)

    md = (predicted / "tables" / "timing.md").read_text()
    assert "| step | this run (s, CPU) | paper (s, one GPU) |" in md
    # The paper's testing times (section 2.2.3): 25-40 s per group, 5-8 s per muscle, 18-24 min per case.
    for row, paper in (("stage 1, per group", "25-40"), ("stage 2, per muscle", "5-8"),
                       ("whole case", "1080-1440")):
        line = next((ln for ln in md.splitlines() if ln.startswith(f"| {row}")), None)
        assert line is not None, f"timing.md has no row '{row}'"
        assert line.rstrip().endswith(f"| {paper} |"), line
    assert f"{m['mean_seconds_per_group']:.1f}" in md


# --------------------------------------------------------------------------- llseg segment


def test_segment_output_on_the_input_grid(segmented):
    image, out = segmented
    _, image_affine, image_shape = load(image)
    labels, affine, shape = load(out)
    assert shape == image_shape
    np.testing.assert_allclose(affine, image_affine, atol=1e-4)
    assert labels.dtype == np.uint8 and labels.max() <= anatomy.N_REGIONS
    assert (labels > 0).any()


def test_segment_volume_csv_matches_the_written_label_map(segmented):
    """One row per muscle (Table-1 order), volumes rounded to 0.01 mL, asymmetry empty when absent."""
    image, out = segmented
    csv_path = out.with_name("scan_muscles_volumes.csv")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == export.VOLUME_COLUMNS
    assert [r["muscle"] for r in rows] == [m.key for m in anatomy.MUSCLES]
    assert {r["subject"] for r in rows} == {image.name}

    labels, affine, _ = load(out)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=anatomy.N_REGIONS + 1)
    for m, row in zip(anatomy.MUSCLES, rows):
        right, left = float(row["right_ml"]), float(row["left_ml"])
        assert right == pytest.approx(counts[m.right_label] * voxel_ml, abs=0.005), m.key
        assert left == pytest.approx(counts[m.left_label] * voxel_ml, abs=0.005), m.key
        assert len(row["right_ml"].partition(".")[2]) <= 2, row["right_ml"]
        if right + left == 0:
            assert row["asymmetry_pct"] == "", m.key
        else:
            r, l = counts[m.right_label], counts[m.left_label]
            assert float(row["asymmetry_pct"]) == pytest.approx(100.0 * (r - l) / ((r + l) / 2), abs=0.005), m.key


def test_segment_contours_lie_on_their_regions_in_world_space(segmented):
    _, out = segmented
    contours = json.loads(out.with_name("scan_muscles_contours.json").read_text())
    data, affine = canonical(out)
    present = {int(v) for v in np.unique(data) if v}
    assert {int(k) for k in contours["regions"]} == present
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    for key, region in contours["regions"].items():
        ijk = np.argwhere(data == int(key))
        xyz = nib.affines.apply_affine(affine, ijk)
        lo, hi = xyz.min(axis=0) - spacing, xyz.max(axis=0) + spacing     # polygons run half a voxel out
        assert region["name"] == anatomy.region_name(int(key))
        assert {int(z) for z in region["slices"]} == {int(z) for z in np.unique(ijk[:, 2])}
        for polygons in region["slices"].values():
            for poly in polygons:
                pts = np.asarray(poly)
                assert pts.shape[1] == 3 and np.array_equal(pts[0], pts[-1])
                assert np.all(pts >= lo - 1e-3) and np.all(pts <= hi + 1e-3), f"region {key} contour off its voxels"


# --------------------------------------------------------------------------- orientation invariance


def test_segment_lps_and_permuted_copies_give_the_same_world_labels(reoriented_segmentations):
    (lps_image, lps_out), (yxz_image, yxz_out) = reoriented_segmentations["lps"], reoriented_segmentations["yxz"]
    for image, out in ((lps_image, lps_out), (yxz_image, yxz_out)):
        _, image_affine, image_shape = load(image)
        _, affine, shape = load(out)
        assert shape == image_shape
        np.testing.assert_allclose(affine, image_affine, atol=1e-4)
    a, a_affine = canonical(lps_out)
    b, b_affine = canonical(yxz_out)
    np.testing.assert_allclose(a_affine, b_affine, atol=1e-4)
    np.testing.assert_array_equal(a, b)
    assert (a > 0).any()
    ca = json.loads(lps_out.with_name("lps_muscles_contours.json").read_text())
    cb = json.loads(yxz_out.with_name("yxz_muscles_contours.json").read_text())
    assert ca == cb


def test_segment_right_leg_labels_lie_at_larger_world_x(reoriented_segmentations):
    for name, (_, out) in reoriented_segmentations.items():
        data, affine, _ = load(out)                                   # stored (non-RAS) order
        right_x, left_x = world_x_of_sides(data, affine)
        if np.isnan(right_x) or np.isnan(left_x):
            pytest.skip(f"{name}: prediction lacks one side")
        # measured: right +96 mm, left -102 mm (ground truth of the cohort: about +-109 mm)
        assert right_x > left_x + 50.0, f"{name}: right-leg labels at x={right_x:.0f} mm, left at {left_x:.0f} mm"
        ijk = np.argwhere(data > 0)                                   # and muscle by muscle
        labels, x = data[tuple(ijk.T)], nib.affines.apply_affine(affine, ijk)[:, 0]
        both = [m for m in anatomy.MUSCLES if {m.right_label, m.left_label} <= set(labels.tolist())]
        assert both
        for m in both:
            r, l = x[labels == m.right_label].mean(), x[labels == m.left_label].mean()
            assert r > l, f"{name}: {m.key} right at x={r:.0f} mm, left at {l:.0f} mm"


def test_study_labels_put_the_right_leg_at_larger_world_x(study):
    """The premise of the test above: in the (reoriented) stored cohort, right is +x in world space."""
    for label_file in sorted((study["data"] / "labels").glob("*.nii.gz")):
        right_x, left_x = world_x_of_sides(*load(label_file)[:2])
        assert right_x > left_x + 100.0, label_file.name


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_image(tmp_path):
    """A valid 8 x 8 x 4 float image, not constant (segment's checks on the output path come after loading)."""
    path = tmp_path / "small.nii.gz"
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    io.save_nifti(path, np.random.default_rng(0).random((8, 8, 4)).astype(np.float32) + 1, affine)
    return path, affine


def _bad_inputs(tmp_path, small_image):
    """name -> (image path, output path, expected words in the message)."""
    good, affine = small_image
    cases = {"missing": (tmp_path / "nope.nii.gz", ["nope.nii.gz", "no such file"])}
    png = tmp_path / "scan.png"
    import matplotlib.image

    matplotlib.image.imsave(png, np.zeros((4, 4)))
    cases["png"] = (png, ["scan.png", "NIfTI"])
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cases["truncated"] = (trunc, ["trunc.nii.gz", "truncated"])
    nan = tmp_path / "nan.nii.gz"
    data = np.ones((8, 8, 4), np.float32)
    data[2, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(data, affine), str(nan))
    cases["nan"] = (nan, ["nan.nii.gz", "NaN"])
    four = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4, 2), np.float32), affine), str(four))
    cases["4-D"] = (four, ["four_d.nii.gz", "3-D", "(8, 8, 4, 2)"])
    return cases


@pytest.mark.parametrize("kind", ["missing", "png", "truncated", "nan", "4-D"])
def test_segment_bad_image_one_error_line_exit_1_no_output(kind, tmp_path, small_image, capsys):
    image, words = _bad_inputs(tmp_path, small_image)[kind]
    out_dir = tmp_path / "out"
    capsys.readouterr()
    rc = cli.main(["segment", str(image), "-o", str(out_dir / "seg.nii.gz"), "--models", str(tmp_path / "models"),
                   "--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llseg segment: error: ")
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("name", ["seg.png", "seg.nii.gz.bak", "seg"])
def test_segment_output_must_be_nifti(name, tmp_path, small_image, capsys):
    image, _ = small_image
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    capsys.readouterr()
    rc = cli.main(["segment", str(image), "-o", str(out_dir / name), "--models", str(tmp_path / "models"),
                   "--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llseg segment: error: "), err
    assert name in lines[0] and ".nii" in lines[0]
    assert list(out_dir.iterdir()) == []


def test_segment_missing_models_dir(tmp_path, small_image, capsys):
    image, _ = small_image
    capsys.readouterr()
    rc = cli.main(["segment", str(image), "-o", str(tmp_path / "seg.nii.gz"), "--models", str(tmp_path / "nomodels"),
                   "--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and "nomodels" in err, err
    assert not (tmp_path / "seg.nii.gz").exists()


def test_segment_missing_models_dir_is_one_stderr_line_from_the_shell(tmp_path, small_image):
    image, _ = small_image
    proc = subprocess.run([sys.executable, "-m", "llseg.cli", "segment", str(image), "-o", str(tmp_path / "seg.nii.gz"),
                           "--models", str(tmp_path / "nomodels"), "--params", str(ROOT / "params.yaml")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nomodels" in lines[0], proc.stderr
    assert not (tmp_path / "seg.nii.gz").exists()


def test_segment_one_slice_image_is_a_clear_error(study, model_cache, tmp_path, capsys):
    case = study["test_cases"][0]
    img = nib.as_closest_canonical(nib.load(str(study["data"] / "images" / f"{case}.nii.gz")))
    image = tmp_path / "one_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32)[:, :, 20:21], img.affine), str(image))
    capsys.readouterr()
    rc = cli.main(["segment", str(image), "-o", str(tmp_path / "out" / "seg.nii.gz"), "--models", str(study["models"]),
                   "--params", str(study["params"])])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llseg segment: error: ") and "one_slice.nii.gz" in lines[0], err
    assert not (tmp_path / "out").exists()


def test_segment_blank_image_error_names_the_file(study, model_cache, tmp_path, capsys):
    image = tmp_path / "blank.nii.gz"
    io.save_nifti(image, np.zeros((16, 16, 8), np.float32), np.diag([4.0, 4.0, 20.0, 1.0]))
    capsys.readouterr()
    rc = cli.main(["segment", str(image), "-o", str(tmp_path / "out" / "seg.nii.gz"), "--models", str(study["models"]),
                   "--params", str(study["params"])])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "blank.nii.gz" in lines[0] and "constant" in lines[0], err
    assert not (tmp_path / "out").exists()


def test_segment_refuses_to_overwrite_its_input(study, model_cache, tmp_path, capsys):
    case = study["test_cases"][0]
    image = tmp_path / f"{case}.nii.gz"
    shutil.copy(study["data"] / "images" / f"{case}.nii.gz", image)
    before = image.read_bytes()
    capsys.readouterr()
    rc = cli.main(["segment", str(image), "-o", str(image), "--models", str(study["models"]),
                   "--params", str(study["params"])])
    err = capsys.readouterr().err
    assert image.read_bytes() == before, "the input scan was overwritten"
    assert rc == 1 and len(err.strip().splitlines()) == 1 and image.name in err, err


def test_predict_missing_models_dir_is_a_clear_error(study, tmp_path, capsys):
    capsys.readouterr()
    rc = cli.main(["predict", "--params", str(study["params"]), "--preprocessed", str(study["preprocessed"]),
                   "--models", str(tmp_path / "nomodels"), "--out", str(tmp_path / "pred"),
                   "--metrics", str(tmp_path / "m.json"), "--tables", str(tmp_path / "tables"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llseg predict: error: "), err
    assert "nomodels" in lines[0] and ("no such" in lines[0] or "not found" in lines[0])
    assert not (tmp_path / "pred").exists() and not (tmp_path / "m.json").exists()


# --------------------------------------------------------------------------- dvc repro in a clone


def _sh(cmd, cwd, env, timeout=1800) -> str:
    """Run ``cmd``; fail the test with its output tail unless it exits 0; return its stdout."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def clone_repo(tmp_path) -> tuple[Path, dict]:
    """A fresh git clone of this repository under ``tmp_path`` and the environment to run it in."""
    clone = tmp_path / "study"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(clone),           # the clone's llseg, not the editable install's
           "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg", "DVC_NO_ANALYTICS": "1"}
    _sh(["git", "config", "user.name", "llseg test"], clone, env)
    _sh(["git", "config", "user.email", "test@llseg.invalid"], clone, env)
    return clone, env


def smoke_study_clone(tmp_path, **env_extra) -> tuple[Path, dict]:
    """A fresh clone switched to the shrunk smoke profile, its phantom cohort generated and
    committed with ``dvc add``: ready for ``dvc repro``. ``env_extra`` is added to its environment."""
    clone, env = clone_repo(tmp_path)
    env = {**env, **env_extra}
    _sh(["llseg", "profile", "smoke"], clone, env)
    shrink_params(clone / "params.yaml")
    _sh(["llseg", "phantom", "--out", "data", "-q"], clone, env)
    _sh(["dvc", "add", "data", "-q"], clone, env)
    _sh(["git", "add", "-A"], clone, env)
    _sh(["git", "commit", "-qm", "smoke cohort"], clone, env)
    return clone, env


@pytest.mark.slow
def test_dvc_repro_smoke_study_in_a_clone(tmp_path):
    """The committed repository alone runs the whole study with ``dvc repro`` (smoke profile)."""
    t0 = time.perf_counter()
    clone, env = smoke_study_clone(tmp_path)
    imported = _sh([sys.executable, "-c", "import llseg; print(llseg.__file__)"], clone, env)
    assert Path(imported.strip()).is_relative_to(clone)
    _sh(["dvc", "repro"], clone, env, timeout=3600)
    status = _sh(["dvc", "status"], clone, env)
    assert "up to date" in status, status
    # metrics/cascade.json is also committed (the cpu-profile run): check it is this run's.
    m = json.loads((clone / "metrics" / "cascade.json").read_text())
    smoke = cli.load_params(clone / "params.yaml")
    assert m["spacing_mm"] == smoke["preprocess"]["spacing_mm"]
    manifest = io.read_json(clone / "work" / "preprocessed" / "manifest.json")
    assert [c["case"] for c in m["cases"]] == manifest["split"]["test"] and m["n_test_cases"] >= 1
    for case in m["cases"]:
        assert (clone / "work" / "predictions" / "labels" / f"{case['case']}.nii.gz").exists()
    assert sorted(p.name for p in (clone / "data" / "images").iterdir()) == [
        f"phantom_{i:03d}.nii.gz" for i in range(SHRINK[("phantom", "n_subjects")])]
    print(f"\n  dvc repro smoke study in a clone: {time.perf_counter() - t0:.0f} s")


def write_thigh_cut(study, path):
    """The first test case cut to its hip-to-knee stretch (``phantom.cuts``), image only, written to ``path``."""
    from llseg import coverage
    from llseg.phantom import cuts
    from llseg.phantom.subject import Subject

    case = study["test_cases"][0]
    img = nib.as_closest_canonical(nib.load(str(study["data"] / "images" / f"{case}.nii.gz")))
    lab = nib.as_closest_canonical(nib.load(str(study["data"] / "labels" / f"{case}.nii.gz")))
    subject = Subject(**io.read_json(study["data"] / "subjects" / f"{case}.json")["subject"])
    cut, _ = cuts.cut_case(img, lab, subject, coverage.COVERAGE_PRESETS["thigh"])
    nib.save(nib.Nifti1Image(np.asarray(cut.dataobj, np.float32), cut.affine), str(path))
    return path


def test_segment_a_thigh_cut_in_lps_reports_no_region_outside_the_view(study, model_cache, tmp_path, capsys):
    """A test case cut to its hip-to-knee stretch and stored in LPS: refused without --coverage (too short for
    a whole leg); with --coverage thigh, no region of a muscle outside the thigh in the label map, and the
    volumes CSV says "not in field of view" (empty volume) for the calf and pelvic muscles."""
    from llseg import coverage

    image = write_thigh_cut(study, tmp_path / "thigh.nii.gz")
    reorient_file(image, np.array([[0, -1], [1, -1], [2, 1]]))              # stored as LPS
    assert nib.aff2axcodes(nib.load(str(image)).affine) == ("L", "P", "S")
    args = ["segment", str(image), "-o", str(tmp_path / "out" / "thigh_seg.nii.gz"), "--models", str(study["models"]),
            "--params", str(study["params"]), "-q"]
    capsys.readouterr()
    assert cli.main(args) == 1
    assert "shorter than a whole leg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    assert cli.main([*args, "--coverage", "thigh"]) == 0, capsys.readouterr().err
    assert "not in field of view" in capsys.readouterr().out
    labels = io.load_labels(tmp_path / "out" / "thigh_seg.nii.gz").data
    in_view = set(coverage.regions_in_view("thigh"))
    assert set(np.unique(labels).tolist()) - {0} <= in_view
    rows = {r["muscle"]: r for r in csv.DictReader(open(tmp_path / "out" / "thigh_seg_volumes.csv"))}
    for key in ("soleus", "gluteus_medius", "tibialis_anterior"):
        assert rows[key]["right_status"] == rows[key]["left_status"] == "not in field of view", rows[key]
        assert rows[key]["right_ml"] == rows[key]["left_ml"] == "", rows[key]


def test_segment_a_thigh_cut_without_coverage_estimates_it_from_the_body_outline(study, model_cache, tmp_path,
                                                                                capsys):
    """With the training cases' body outline beside the models (``llseg body-profile``), the thigh
    cut of a test case needs no --coverage: the coverage is estimated (printed with its source)
    close to the hip-to-knee stretch, and no region of a muscle outside it is labelled."""
    from llseg import coverage

    models = tmp_path / "models"
    shutil.copytree(study["models"], models)
    assert run_cli(["body-profile", "--preprocessed", str(study["preprocessed"]),
                    "--out", str(models / "body_profile.json")]) == 0
    assert "body outline of" in capsys.readouterr().out
    image = write_thigh_cut(study, tmp_path / "thigh.nii.gz")
    out = tmp_path / "out" / "thigh_seg.nii.gz"
    rc = cli.main(["segment", str(image), "-o", str(out), "--models", str(models), "--params", str(study["params"]), "-q"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    line = next(s for s in printed.out.splitlines() if s.startswith("coverage "))
    assert "(body outline, misfit" in line
    top, bottom = (float(v) for v in line.split()[1].split("-"))
    assert (top, bottom) == pytest.approx(coverage.COVERAGE_PRESETS["thigh"], abs=0.05)
    labelled = set(np.unique(io.load_labels(out).data).tolist()) - {0}
    rows = {r["muscle"]: r for r in csv.DictReader(open(tmp_path / "out" / "thigh_seg_volumes.csv"))}
    outside = {anatomy.label_id(key, side) for key, r in rows.items() for side in ("right", "left")
               if r[f"{side}_status"] == "not in field of view"}
    assert outside and not labelled & outside
    assert {anatomy.label_id("soleus", "right"), anatomy.label_id("tibialis_anterior", "left")} <= outside
