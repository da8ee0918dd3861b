"""Cohort: phantom case generation through the simulator, split, layout, bit-for-bit regeneration;
``llseg check`` on each kind of bad case; (slow) retraining the study on a user's own cohort."""
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from llseg import anatomy, cli, cohort, io
from llseg.phantom import make_case, protocol_mix, write_cohort

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_case():
    return make_case(7, protocol="cartesian", downscale=0.25, bias_strength=0.6, noise_sigma=0.02)


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
    again = make_case(7, protocol="cartesian", downscale=0.25, bias_strength=0.6, noise_sigma=0.02)
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



def test_write_cohort_writes_make_case_arrays(tmp_path, small_case):
    cases = write_cohort(tmp_path / "d", n_subjects=1, seed=7, spiral_fraction=0.0, downscale=0.25,
                         bias_strength=0.6, noise_sigma=0.02, supersample=5, jobs=1, progress=False)
    assert cases == ["phantom_000"]
    img = io.load_image(tmp_path / "d" / "images" / "phantom_000.nii.gz")
    lab = io.load_labels(tmp_path / "d" / "labels" / "phantom_000.nii.gz", reference=img)
    np.testing.assert_array_equal(img.data, small_case.image)
    np.testing.assert_array_equal(lab.data, small_case.labels)
    np.testing.assert_allclose(img.affine, small_case.affine)
    assert io.read_json(tmp_path / "d" / "subjects" / "phantom_000.json")["protocol"] == "cartesian"


def test_protocol_mix_is_seeded():
    mix = protocol_mix(200, seed=2019, spiral_fraction=0.5)
    assert mix == protocol_mix(200, seed=2019, spiral_fraction=0.5) and set(mix) == {"spiral", "cartesian"}
    assert 70 < mix.count("spiral") < 130
    assert protocol_mix(5, seed=0, spiral_fraction=0.0) == ["cartesian"] * 5

# --------------------------------------------------------------------------- llseg check: each kind of bad cohort


def _complete_case():
    """A 24 x 16 x 14 RAS+ case at 2 x 2 x 5 mm holding all 70 regions: right-leg ids (1..35) in the
    x >= 13 half (larger world x = the subject's right), left-leg ids (36..70) mirrored into x <= 10."""
    labels = np.zeros((24, 16, 14), np.uint8)
    ids = 1 + (np.arange(16 * 14).reshape(16, 14) % anatomy.N_MUSCLES)     # (Y, Z): every muscle id at least once
    labels[13:23] = ids[None]
    labels[1:11] = ids[None] + anatomy.N_MUSCLES
    image = np.where(labels > 0, 0.5, 0.05).astype(np.float32)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[:3, 3] = [-24.0, -16.0, -35.0]
    return image, labels, affine


def _write(root, case, image, labels, affine, *, label_affine=None, ext=".nii.gz"):
    io.save_nifti(root / "images" / f"{case}{ext}", image, affine)
    if labels is not None:
        io.save_nifti(root / "labels" / f"{case}{ext}", labels, affine if label_affine is None else label_affine,
                      dtype=np.uint8)


def _bad_case(kind, image, labels, affine):
    """(image, labels, affine, label_affine, file the message must name, words it must contain)."""
    right_soleus, left_soleus = anatomy.label_id("soleus", "right"), anatomy.label_id("soleus", "left")
    lab, img, label_affine, blame = labels.copy(), image, None, "labels"
    if kind == "left/right labels swapped":
        lab = np.where(labels > anatomy.N_MUSCLES, labels - anatomy.N_MUSCLES,
                       np.where(labels > 0, labels + anatomy.N_MUSCLES, 0)).astype(np.uint8)
        words = ["left/right look swapped"]
    elif kind == "left/right mirrored data":          # image and labels mirrored in x, header unchanged
        img, lab = image[::-1].copy(), labels[::-1].copy()
        words = ["left/right look swapped"]
    elif kind == "spacing out of range":               # 30 mm slices
        affine = affine @ np.diag([1.0, 1.0, 6.0, 1.0])
        words, blame = ["voxel size", "exceeds 25.0 mm"], "images"
    elif kind == "empty label map":
        lab[:] = 0
        words = ["empty label map"]
    elif kind == "missing label map":
        lab, words = None, ["missing label map"]
    elif kind == "unknown label":
        lab[0, 0, 0] = 99
        words = ["unknown label id(s) 99"]
    elif kind == "geometry: shape":
        lab, words = labels[:, :, :-1].copy(), ["shape (24, 16, 13) does not match"]
    elif kind == "geometry: shifted affine":
        label_affine = affine.copy()
        label_affine[2, 3] += 10.0
        words = ["affine differs", "10 mm"]
    elif kind == "geometry: flipped affine":           # x axis flipped in the header only
        label_affine = affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
        words = ["affine differs"]
    else:
        raise AssertionError(kind)
    assert right_soleus in labels and left_soleus in labels
    return img, lab, affine, label_affine, blame, words


BAD_KINDS = ["left/right labels swapped", "left/right mirrored data", "spacing out of range", "empty label map",
             "missing label map", "unknown label", "geometry: shape", "geometry: shifted affine",
             "geometry: flipped affine"]


def test_check_passes_a_complete_cohort_in_any_orientation_and_extension(tmp_path, capsys):
    """The reference for the test below: all 70 regions, RAS+ / LPS / permuted storage, .nii and .nii.gz."""
    import nibabel as nib

    image, labels, affine = _complete_case()
    _write(tmp_path, "ras", image, labels, affine)
    for case, ornt in (("lps", [[0, -1], [1, -1], [2, 1]]), ("yxz", [[1, 1], [0, 1], [2, 1]])):
        stored = [nib.Nifti1Image(a, affine).as_reoriented(np.array(ornt)) for a in (image, labels)]
        _write(tmp_path, case, np.asarray(stored[0].dataobj), np.asarray(stored[1].dataobj), stored[0].affine,
               ext=".nii" if case == "lps" else ".nii.gz")
    assert (tmp_path / "images" / "lps.nii").exists()
    assert cli.main(["check", str(tmp_path)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "3 case(s), 0 with problems" in out and "LPS" in out and "ARS" in out


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_check_flags_each_kind_of_bad_case_naming_the_file(kind, tmp_path, capsys):
    image, labels, affine = _complete_case()
    _write(tmp_path, "good", image, labels, affine)
    img, lab, aff, label_affine, blame, words = _bad_case(kind, image, labels, affine)
    _write(tmp_path, "bad", img, lab, aff, label_affine=label_affine)
    assert cli.main(["check", str(tmp_path), "--report", str(tmp_path / "report.json")]) == 1
    out = capsys.readouterr().out
    assert "ok  good:" in out and "BAD bad:" in out and "2 case(s), 1 with problems" in out
    problems = next(c for c in io.read_json(tmp_path / "report.json")["cases"] if c["case"] == "bad")["problems"]
    assert len(problems) == 1, problems
    named = str(tmp_path / blame / "bad.nii.gz")
    assert problems[0].startswith(named), f"{kind}: message does not start with the file: {problems[0]!r}"
    for word in words:
        assert word in problems[0], f"{kind}: {word!r} not in {problems[0]!r}"
    assert problems[0].splitlines()[0] in out


# --------------------------------------------------------------------------- llseg check: partial label maps

#: Seven thigh muscles labelled on both sides, and semitendinosus on the right only.
SEVEN = ("adductor_longus", "gracilis", "rectus_femoris", "sartorius", "vastus_intermedius", "vastus_lateralis",
         "vastus_medialis")


def _keep(labels, ids):
    """``labels`` with every region not in ``ids`` set to background."""
    return np.where(np.isin(labels, list(ids)), labels, 0).astype(np.uint8)


def _ids(keys, sides=("right", "left")):
    return [anatomy.label_id(k, s) for k in keys for s in sides]


def test_check_lists_the_muscles_of_a_partial_cohort(tmp_path, capsys):
    image, labels, affine = _complete_case()
    partial = _keep(labels, _ids(SEVEN) + _ids(["semitendinosus"], ["right"]))
    thigh = _keep(labels, anatomy.labels_of_part("upper_leg"))                  # a thigh-only cut
    for case, lab in (("p1", partial), ("p2", partial), ("t1", thigh), ("t2", thigh)):
        _write(tmp_path, case, np.where(lab > 0, 0.5, 0.05).astype(np.float32), lab, affine)
    assert cli.main(["check", str(tmp_path), "--report", str(tmp_path / "r.json")]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert out.count("labels: 15 of 70 regions: 7 muscles both sides (adductor_longus, gracilis, rectus_femoris, "
                     "sartorius, vastus_intermedius, vastus_lateralis, ...), semitendinosus right only") == 2
    assert out.count("labels: 26 of 70 regions: 13 muscles both sides (adductor_brevis, adductor_longus, ") == 2
    assert "muscles trained: 13 of 35 (adductor_brevis, " in out and "absent from the cohort: 22" in out
    assert "4 case(s), 0 with problems" in out
    report = io.read_json(tmp_path / "r.json")
    by = {c["case"]: c for c in report["cases"]}
    assert by["p1"]["regions_present"] == sorted(_ids(SEVEN) + [anatomy.label_id("semitendinosus", "right")])
    assert by["p1"]["n_regions"] == 15 and "7 muscle(s) labelled on both sides" in by["p1"]["left_right"]
    assert by["t1"]["regions_present"] == sorted(anatomy.labels_of_part("upper_leg"))
    counts = {e["label"]: e["n_training_cases"] for e in report["regions_by_training_cases"]}
    assert counts[anatomy.label_id("vastus_medialis", "left")] == 4
    assert counts[anatomy.label_id("semitendinosus", "left")] == 2              # the thigh cases only
    assert report["training_cases_from"] == "all cases" and report["n_training_cases"] == 4
    assert report["n_muscles_trained"] == 13 and len(report["muscles_absent"]) == 22


@pytest.mark.parametrize("kind, expect", [
    ("all swapped", "left/right look swapped: right-leg labels"),
    ("one muscle swapped", "left/right look swapped for 1 of 7 muscles labelled on both sides: gracilis (right x = "),
    ("no pair, swapped", "left/right look swapped: right-leg labels"),
    ("no pair", None), ("right only", None), ("one-sided muscle on the far side", None)])
def test_check_left_right_on_partial_labels(kind, expect, tmp_path):
    """Each muscle on both sides is compared with itself; one-sided muscles never raise a false alarm."""
    image, labels, affine = _complete_case()
    n = anatomy.N_MUSCLES
    lab = _keep(labels, _ids(SEVEN) + _ids(["semitendinosus"], ["right"]))
    gracilis = anatomy.label_id("gracilis", "right")
    if kind == "all swapped":
        lab = np.where(lab > n, lab - n, np.where(lab > 0, lab + n, 0)).astype(np.uint8)
    elif kind == "one muscle swapped":
        lab = np.where(lab == gracilis, gracilis + n, np.where(lab == gracilis + n, gracilis, lab)).astype(np.uint8)
    elif kind in ("no pair", "no pair, swapped"):    # right thigh muscles and different left ones
        lab = _keep(labels, _ids(SEVEN[:3], ["right"]) + _ids(SEVEN[3:], ["left"]))
        if kind == "no pair, swapped":
            lab = lab[::-1].copy()
    elif kind == "right only":
        lab = _keep(labels, _ids(SEVEN, ["right"]))
    elif kind == "one-sided muscle on the far side":  # a right-only region placed far right does not matter
        lab[22] = np.where(lab[22] > 0, anatomy.label_id("semitendinosus", "right"), 0)
    _write(tmp_path, "c", image, lab, affine)
    result = cohort.check_case(tmp_path, "c")
    if expect is None:
        assert result["ok"], result["problems"]
        if kind == "right only":
            assert result["left_right"] == "not checked: right-side labels only"
        if kind == "no pair":
            assert "no muscle on both sides" in result["left_right"]
    else:
        assert len(result["problems"]) == 1 and expect in result["problems"][0], result["problems"]
        assert result["problems"][0].startswith(str(tmp_path / "labels" / "c.nii.gz"))


def test_describe_regions():
    assert cohort.describe_regions(anatomy.REGIONS) == "70 of 70 regions: all 35 muscles both sides"
    no_left_soleus = set(anatomy.REGIONS) - {anatomy.label_id("soleus", "left")}
    assert cohort.describe_regions(no_left_soleus) == ("69 of 70 regions: 34 muscles both sides (all but soleus), "
                                                       "soleus right only")
    assert cohort.describe_regions([]) == "0 of 70 regions: no muscle"
    assert cohort.describe_regions([anatomy.label_id("soleus", "left")]) == "1 of 70 regions: soleus left only"
    with pytest.raises(ValueError, match=r"1..70, got \[0, 71\]"):
        cohort.describe_regions([0, 5, 71])


def test_regions_by_training_cases_names_regions_too_rare_to_train():
    present = {"a": [1, 36, 6], "b": [1], "c": [1, 36], "d": []}
    found = cohort.regions_by_training_cases(present, ["a", "b", "d"])
    assert [(e["label"], e["n_cases"], e["n_training_cases"]) for e in found["regions_by_training_cases"]] == [
        (1, 3, 2), (6, 1, 1), (36, 2, 1)]
    assert found["problems"] == [
        "External rotators (right) (label 6) is labelled in 1 case(s) but only 1 training case(s); training needs "
        "at least 2",
        "Adductor brevis (left) (label 36) is labelled in 2 case(s) but only 1 training case(s); training needs at "
        "least 2"]
    assert found["muscles_trained"] == ["adductor_brevis"] and len(found["muscles_absent"]) == 33
    assert found["n_training_cases"] == 3 and found["n_cases"] == 4 and found["min_training_cases"] == 2
    assert cohort.describe_training(found) == "muscles trained: 1 of 35 (adductor_brevis); absent from the cohort: 33"
    everywhere = cohort.regions_by_training_cases(present, min_training_cases=1)   # no split: all cases count
    assert everywhere["problems"] == [] and everywhere["muscles_trained"] == ["adductor_brevis", "external_rotators"]
    full = cohort.regions_by_training_cases({"a": list(anatomy.REGIONS), "b": list(anatomy.REGIONS)})
    assert full["problems"] == [] and len(full["muscles_trained"]) == 35 and full["muscles_absent"] == []
    assert cohort.describe_training(full) == "muscles trained: 35 of 35; absent from the cohort: 0"
    with pytest.raises(ValueError, match="min_training_cases must be an int >= 1, got 0"):
        cohort.regions_by_training_cases(present, min_training_cases=0)
    with pytest.raises(ValueError, match=r"train: case\(s\) \['e'\]"):
        cohort.regions_by_training_cases(present, ["a", "e"])
    with pytest.raises(ValueError, match=r"got \[99\]"):
        cohort.regions_by_training_cases({"a": [99]})


def test_check_counts_regions_in_the_training_split_of_params(tmp_path, capsys):
    """--params: the split `llseg preprocess` makes; a region labelled in a test case but in only one training
    case is a cohort problem naming the region and both counts."""
    image, labels, affine = _complete_case()
    cases = ["s1", "s2", "s3", "s4", "s5"]
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    split_params = cli.load_params(params)["split"]
    split = cohort.split_cases(cases, test_fraction=split_params["test_fraction"], seed=split_params["seed"])
    rare = anatomy.label_id("soleus", "left")
    holders = {split["train"][0], split["test"][0]}                      # one training case, one test case
    data = tmp_path / "data"
    for case in cases:
        lab = _keep(labels, [k for k in anatomy.REGIONS if k != rare or case in holders])
        _write(data, case, image, lab, affine)
    assert cli.main(["check", str(data), "--report", str(tmp_path / "r.json")]) == 0    # all cases: 2 hold it
    capsys.readouterr()
    assert cli.main(["check", str(data), "--params", str(params), "--report", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert ("BAD cohort: Soleus (left) (label 64) is labelled in 2 case(s) but only 1 training case(s); training "
            "needs at least 2") in out
    assert f"counted over {len(split['train'])} training case(s) of the split in {params}" in out
    assert "5 case(s), 0 with problems; 1 cohort problem(s)" in out
    report = io.read_json(tmp_path / "r.json")
    assert report["n_bad"] == 0 and report["n_cohort_problems"] == 1 and report["training_cases_from"] == "split"
    assert report["muscles_trained"] == [m.key for m in anatomy.MUSCLES]        # right soleus trains the muscle
    assert cli.main(["check", str(data), "--params", str(params), "--min-training-cases", "1"]) == 0


def test_check_min_training_cases_default_is_the_library_default():
    args = cli.build_parser().parse_args(["check", "data"])
    assert args.min_training_cases == cohort.MIN_TRAINING_CASES and args.params is None


# --------------------------------------------------------------------------- (slow) retrain on a user cohort

#: The user's scanner: 2.5 x 2.5 x 8 mm voxels (neither the phantom's 4 x 4 x 20 nor the paper's 1 x 1 x 5),
#: stored in LPS (DICOM-converted files usually are), as .nii.gz and as uncompressed .nii.
USER_SPACING_MM = (2.5, 2.5, 8.0)
LPS = np.array([[0, -1], [1, -1], [2, 1]])  # nibabel orientation transform RAS -> LPS (flip X and Y)

#: On top of the smoke profile (as tests/test_cascade.py): the fewest iterations and levels the pipeline
#: accepts, so that the 45 trainings are dominated by process start-up and TensorFlow's graph tracing.
RETRAIN_SHRINK = {("stage1", "iterations"): 2, ("stage1", "levels"): 2, ("stage1", "validate_every"): 1000,
                  ("stage2", "iterations"): 1, ("stage2", "levels"): 2, ("stage2", "validate_every"): 1000,
                  ("stage2", "n_tta_boxes"): 2}


def write_user_cohort(root, case_ids, *, nii_cases, seed=500) -> dict:
    """A cohort in the documented layout written with nibabel directly (not by ``llseg phantom``).

    Phantom subjects at the smoke resolution are resampled to ``USER_SPACING_MM`` (linear for the
    image, nearest for the labels, voxel corners kept), stored in LPS; image float32, labels int16;
    the cases in ``nii_cases`` as ``.nii``, the others as ``.nii.gz``. Returns case -> stored shape.
    """
    import nibabel as nib
    from scipy import ndimage

    root, shapes = Path(root), {}
    for i, case in enumerate(case_ids):
        c = make_case(seed + i, protocol=("cartesian", "spiral")[i % 2], downscale=0.25, bias_strength=0.6,
                             noise_sigma=0.02)
        zoom = np.sqrt((c.affine[:3, :3] ** 2).sum(axis=0)) / np.array(USER_SPACING_MM)
        image = ndimage.zoom(c.image, zoom, order=1, grid_mode=True, mode="grid-constant")
        labels = ndimage.zoom(c.labels, zoom, order=0, grid_mode=True, mode="grid-constant")
        affine = c.affine @ np.diag([*(1 / zoom), 1.0])
        affine[:3, 3] = c.affine[:3, 3] + c.affine[:3, :3] @ (0.5 / zoom - 0.5)   # same field of view
        ext = ".nii" if case in nii_cases else ".nii.gz"
        for kind, data, dtype in (("images", image, np.float32), ("labels", labels, np.int16)):
            stored = nib.Nifti1Image(data.astype(dtype), affine).as_reoriented(LPS)
            (root / kind).mkdir(parents=True, exist_ok=True)
            nib.save(stored, str(root / kind / f"{case}{ext}"))
        shapes[case] = stored.shape
    return shapes


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_retrain_the_study_on_a_user_cohort_in_a_clone(tmp_path):
    """README "Using your own cohort", step by step, in a clone holding only committed files: a user cohort
    (LPS, 2.5 x 2.5 x 8 mm, .nii and .nii.gz) passes ``llseg check``, is swapped in with ``dvc add data``,
    and ``dvc repro`` (smoke profile) retrains the cascade and runs every study notebook unchanged on it."""
    from ruamel.yaml import YAML

    t0, timings = time.perf_counter(), {}
    from test_cascade import _sh, clone_repo    # the same clone set-up as the phantom study's repro test

    clone, env = clone_repo(tmp_path)
    _sh(["llseg", "profile", "smoke"], clone, env)
    yaml = YAML()
    doc = yaml.load(clone / "params.yaml")
    for (section, key), value in RETRAIN_SHRINK.items():
        doc[section][key] = value
    yaml.dump(doc, clone / "params.yaml")
    params = cli.load_params(clone / "params.yaml")

    # The user's cohort replaces data/ (the phantom is never generated in this clone).
    cases = ["subj_a01", "subj_a02", "subj_b07"]
    split = cohort.split_cases(cases, test_fraction=params["split"]["test_fraction"], seed=params["split"]["seed"])
    nii_cases = {split["test"][0], split["train"][0]}       # the shown test case and a training case
    shutil.rmtree(clone / "data", ignore_errors=True)
    shapes = write_user_cohort(clone / "data", cases, nii_cases=nii_cases)
    assert (clone / "data" / "images" / f"{split['test'][0]}.nii").exists()
    timings["write cohort"] = time.perf_counter() - t0

    out = _sh(["llseg", "check", "data"], clone, env)
    assert "3 case(s), 0 with problems" in out, out
    assert out.count("spacing [2.5, 2.5, 8.0] mm LPS") == 3, out
    _sh(["dvc", "add", "data", "-q"], clone, env)
    _sh(["git", "add", "-A"], clone, env)
    _sh(["git", "commit", "-qm", "user cohort"], clone, env)
    t1 = time.perf_counter()
    _sh(["dvc", "repro"], clone, env, timeout=3600)
    timings["dvc repro"] = time.perf_counter() - t1
    assert "up to date" in _sh(["dvc", "status"], clone, env)

    # The cascade was retrained and evaluated on the user's cases (metrics/*.json are also committed, from
    # the cpu-profile phantom run: check they are this run's).
    manifest = io.read_json(clone / "work" / "preprocessed" / "manifest.json")
    assert manifest["split"] == split and manifest["spacing_mm"] == params["preprocess"]["spacing_mm"]
    assert io.read_json(clone / "metrics" / "cohort.json")["n_bad"] == 0
    m = io.read_json(clone / "metrics" / "cascade.json")
    assert m["n_test_cases"] == len(split["test"]) == len(m["cases"]) == 1
    assert [c["case"] for c in m["cases"]] == split["test"] and m["spacing_mm"] == manifest["spacing_mm"]
    assert io.read_json(clone / "models" / "stage1" / "box_priors.json")["n_cases"] == len(split["train"])
    for case in split["test"]:                               # labels back in the user's own grid and orientation
        import nibabel as nib

        stored = nib.load(str(clone / "data" / "images" / f"{case}{'.nii' if case in nii_cases else '.nii.gz'}"))
        pred = nib.load(str(clone / "work" / "predictions" / "labels" / f"{case}.nii.gz"))
        assert pred.shape == shapes[case] and nib.aff2axcodes(pred.affine) == ("L", "P", "S")
        np.testing.assert_allclose(pred.affine, stored.affine, atol=1e-4)

    # Every study notebook ran unchanged on the user cohort: its outputs exist and no cell failed.
    stages = yaml.load(clone / "dvc.yaml")["stages"]
    notebooks = {name: s for name, s in stages.items() if "papermill" in str(s.get("cmd", ""))}
    assert {"bias_correction", "walkthrough", "dice_table", "volume_msd", "rendering"} <= set(notebooks)
    for name, stage in notebooks.items():
        for entry in stage["outs"]:
            path = clone / (next(iter(entry)) if isinstance(entry, dict) else entry)
            assert path.exists() and path.stat().st_size > 0, f"{name}: {path} missing"
            if path.suffix == ".ipynb":
                cells = json.loads(path.read_text())["cells"]
                errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
                assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    executed = (clone / "reports" / "notebooks" / "01_bias_correction.ipynb").read_text()
    assert split["test"][0] in executed and "phantom_" not in executed
    timings["total"] = time.perf_counter() - t0
    print("\n" + "\n".join(f"  retrain on a user cohort, {k}: {v:.0f} s" for k, v in timings.items()))
