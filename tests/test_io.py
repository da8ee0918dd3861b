"""NIfTI edges: round trips, orientation, atomic and reproducible writes, every bad input."""
import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from llseg import guards, io


def test_roundtrip_and_canonical_orientation(tmp_path, two_leg_case):
    image, labels, affine = two_leg_case
    # Store in LPS-like order: flip x and y axes; the loader must give back the RAS+ array.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [image.shape[0] - 1, image.shape[1] - 1]
    lps_affine = affine @ flip
    io.save_nifti(tmp_path / "img.nii.gz", image[::-1, ::-1], lps_affine)
    vol = io.load_image(tmp_path / "img.nii.gz")
    assert nib.aff2axcodes(vol.original_affine) == ("L", "P", "S")
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(vol.data, image)
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.spacing_mm == (2.0, 2.0, 5.0)
    back = io.to_original_orientation(vol.data, vol.affine, vol.original_affine)
    np.testing.assert_array_equal(back, image[::-1, ::-1])


def test_gzip_output_is_byte_reproducible(tmp_path, two_leg_case):
    image, _, affine = two_leg_case
    a = io.save_nifti(tmp_path / "a.nii.gz", image, affine).read_bytes()
    b = io.save_nifti(tmp_path / "b.nii.gz", image, affine).read_bytes()
    assert a == b
    assert gzip.decompress(a)[:4] != b""  # valid gzip


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "x.json"
    io.write_json(target, {"old": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("interrupted")
    assert io.read_json(target) == {"old": 1}  # previous content intact
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temp file left
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    with pytest.raises(TypeError):
        io.write_json(target, {"bad": object()})
    assert io.read_json(target) == {"old": 1}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        io.load_image(tmp_path / "nope.nii.gz")


def test_wrong_file_type(tmp_path):
    p = tmp_path / "scan.png"
    p.write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match=r"scan.png: not a NIfTI file"):
        io.load_image(p)
    q = tmp_path / "fake.nii.gz"
    q.write_text("hello")
    with pytest.raises(ValueError, match="fake.nii.gz"):
        io.load_image(q)


def test_truncated_gzip(tmp_path, two_leg_case):
    image, _, affine = two_leg_case
    data = io.save_nifti(tmp_path / "ok.nii.gz", np.random.default_rng(0).random((32, 32, 32)), affine).read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"cut.nii.gz: .*(truncated|corrupt)"):
        io.load_image(bad)


def test_nan_voxels(tmp_path, two_leg_case):
    image, _, affine = two_leg_case
    image = image.copy()
    image[1, 2, 3] = np.nan
    io.save_nifti(tmp_path / "nan.nii.gz", image, affine)
    with pytest.raises(ValueError, match=r"nan.nii.gz: 1 voxel\(s\) are NaN"):
        io.load_image(tmp_path / "nan.nii.gz")


def test_4d_image(tmp_path, two_leg_case):
    image, _, affine = two_leg_case
    nib.save(nib.Nifti1Image(np.stack([image, image], axis=-1), affine), tmp_path / "dwi.nii.gz")
    with pytest.raises(ValueError, match=r"dwi.nii.gz: expected a 3-D volume, got 4-D"):
        io.load_image(tmp_path / "dwi.nii.gz")
    nib.save(nib.Nifti1Image(image[..., None], affine), tmp_path / "one.nii.gz")
    assert io.load_image(tmp_path / "one.nii.gz").data.shape == image.shape


def test_label_geometry_mismatch_and_flip(tmp_path, two_leg_case):
    image, labels, affine = two_leg_case
    io.save_nifti(tmp_path / "img.nii.gz", image, affine)
    io.save_nifti(tmp_path / "small.nii.gz", labels[:-2], affine, dtype=np.uint8)
    flipped = affine @ np.array([[-1, 0, 0, labels.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    flipped[0, 3] += 4.0  # same voxel grid orientation after reorienting, but shifted: a mismatch
    io.save_nifti(tmp_path / "shifted.nii.gz", labels, flipped, dtype=np.uint8)
    img = io.load_image(tmp_path / "img.nii.gz")
    with pytest.raises(ValueError, match=r"small.nii.gz: shape .* does not match .*img.nii.gz"):
        io.load_labels(tmp_path / "small.nii.gz", reference=img)
    with pytest.raises(ValueError, match=r"shifted.nii.gz: voxel-to-world affine differs"):
        io.load_labels(tmp_path / "shifted.nii.gz", reference=img)


def test_unknown_and_non_integer_labels(tmp_path, two_leg_case):
    _, labels, affine = two_leg_case
    bad = labels.astype(np.int16)
    bad[0, 0, 0] = 99
    io.save_nifti(tmp_path / "unknown.nii.gz", bad, affine, dtype=np.int16)
    with pytest.raises(ValueError, match=r"unknown.nii.gz: unknown label id\(s\) 99"):
        io.load_labels(tmp_path / "unknown.nii.gz")
    frac = labels.astype(np.float32)
    frac[0, 0, 0] = 0.5
    io.save_nifti(tmp_path / "frac.nii.gz", frac, affine, dtype=np.float32)
    with pytest.raises(ValueError, match="non-integer"):
        io.load_labels(tmp_path / "frac.nii.gz")


def test_save_rejects_bad_suffix_and_shape(tmp_path, two_leg_case):
    image, _, affine = two_leg_case
    with pytest.raises(ValueError, match="must end in .nii"):
        io.save_nifti(tmp_path / "x.nrrd", image, affine)
    with pytest.raises(ValueError, match="expected 3-D"):
        io.save_nifti(tmp_path / "x.nii.gz", image[..., None, None], affine)
    assert not (tmp_path / "x.nii.gz").exists()


def test_json_and_csv(tmp_path):
    io.write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(2)})
    assert io.read_json(tmp_path / "a.json") == {"x": 1.5, "y": [0, 1]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        io.read_json(tmp_path / "bad.json")
    io.write_csv(tmp_path / "t.csv", [{"a": 1, "b": 2}])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,2"]


def _current_umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- load_cached


def test_load_cached_matches_loader_and_rereads_a_rewritten_file(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    affine = np.diag([-1.0, -1.0, 5.0, 1.0])                      # LPS: the cache keeps the RAS+ array
    path = io.save_nifti(tmp_path / "img.nii.gz", data, affine)
    cache = tmp_path / "cache"
    first = io.load_cached(path, kind="image", cache_dir=cache)
    np.testing.assert_array_equal(first, io.load_image(path).data)
    assert len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(io.load_cached(path, kind="image", cache_dir=cache), first)   # from the copy
    import os
    io.save_nifti(path, data * 2, affine)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # make sure the mtime differs
    again = io.load_cached(path, kind="image", cache_dir=cache)
    np.testing.assert_array_equal(again, io.load_image(path).data)
    assert len(list(cache.glob("*.npy"))) == 1                     # the stale copy is gone


def test_load_cached_labels_checks_and_damaged_copy_is_reloaded(tmp_path):
    lab = np.zeros((3, 3, 2), dtype=np.uint8)
    lab[1, 1, 1] = 5
    path = io.save_nifti(tmp_path / "lab.nii.gz", lab, np.eye(4))
    cache = tmp_path / "c"
    out = io.load_cached(path, kind="labels", cache_dir=cache)
    assert out.dtype == io.load_labels(path).data.dtype and out[1, 1, 1] == 5
    (copy,) = cache.glob("*.npy")
    copy.write_bytes(b"garbage")
    np.testing.assert_array_equal(io.load_cached(path, kind="labels", cache_dir=cache), out)
    with pytest.raises(ValueError, match="kind"):
        io.load_cached(path, kind="mask", cache_dir=cache)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(Exception, match="bad.nii.gz"):
        io.load_cached(bad, kind="image", cache_dir=cache)
    assert not list(cache.glob("image_bad*"))                     # nothing cached for a bad file


def test_load_model_missing_file_fails_without_importing_tensorflow(tmp_path):
    import subprocess
    import sys
    code = ("import sys; from llseg import io\n"
            "try:\n    io.load_model(sys.argv[1])\nexcept FileNotFoundError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope.keras")], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert "nope.keras: no such model file" in out[0]
    assert out[1] == "False False"


# ----------------------------------------------------------------------------- output paths, atomic sets, checks


def test_check_output_paths_refuses_inputs_by_any_spelling(tmp_path):
    src = tmp_path / "in" / "scan.nii.gz"
    src.parent.mkdir()
    src.write_bytes(b"x")
    os.link(src, tmp_path / "hard.nii.gz")
    os.symlink(src.parent, tmp_path / "alias")
    for out in (src, tmp_path / "in" / ".." / "in" / "scan.nii.gz", tmp_path / "hard.nii.gz",
                tmp_path / "alias" / "scan.nii.gz"):
        with pytest.raises(ValueError, match="is the input"):
            guards.check_output_paths([out], [src])
    with pytest.raises(ValueError, match="lies inside the input folder"):
        guards.check_output_paths([tmp_path / "alias" / "new.json"], [src.parent])
    with pytest.raises(ValueError, match="is a folder"):
        guards.check_output_paths([src.parent])
    with pytest.raises(ValueError, match="is a file, not a folder"):
        guards.check_output_paths([src / "x.csv"])
    with pytest.raises(ValueError, match="the same file as output"):
        guards.check_output_paths([tmp_path / "a.csv", tmp_path / "in" / ".." / "a.csv"])
    assert guards.check_output_paths([tmp_path / "new" / "a.csv"], [src]) == [tmp_path / "new" / "a.csv"]


def test_atomic_files_all_or_nothing(tmp_path):
    old = tmp_path / "a.txt"
    old.write_text("old")
    targets = [old, tmp_path / "sub" / "b.txt"]
    with pytest.raises(RuntimeError):
        with guards.atomic_files(targets) as staged:
            io.write_text(staged[old], "new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and old.read_text() == "old"
    with pytest.raises(FileNotFoundError, match="b.txt: was not written"):
        with guards.atomic_files(targets) as staged:
            io.write_text(staged[old], "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and old.read_text() == "old"
    with guards.atomic_files(targets) as staged:
        for path, tmp in staged.items():
            io.write_text(tmp, path.name)
    assert old.read_text() == "a.txt" and (tmp_path / "sub" / "b.txt").read_text() == "b.txt"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]   # no temporary folders


def test_image_content_and_memory_checks(tmp_path, two_leg_case):
    image, labels, affine = two_leg_case
    vol = io.Volume(image, affine, affine, image.shape, "scan.nii.gz")
    guards.check_image_content(vol)
    with pytest.raises(ValueError, match="scan.nii.gz: this looks like a label map"):
        guards.check_image_content(io.Volume(labels.astype(np.float32), affine, affine, labels.shape, "scan.nii.gz"))
    guards.check_image_content(io.Volume(labels.astype(np.float32), affine, affine, labels.shape, "s"), allow_label_like=True)
    with pytest.raises(ValueError, match="every voxel is 0"):
        guards.check_image_content(io.Volume(0 * image, affine, affine, image.shape, "s"))
    with pytest.raises(ValueError, match=r"voxel size \[2.0, 2.0, 30.0\] mm exceeds 25.0 mm"):
        guards.check_image_content(io.Volume(image, affine @ np.diag([1, 1, 6, 1]), affine, image.shape, "s"))
    need = guards.check_memory(vol, (2.0, 2.0, 5.0), available_bytes=10**9)
    assert need == 4 * (6 * image.size + 3 * image.size)
    with pytest.raises(ValueError, match=r"scan.nii.gz: preprocessing needs about .* GiB \(resampled grid 48 x 32 x 24"):
        guards.check_memory(vol, (1.0, 1.0, 2.5), available_bytes=1000)


def test_missing_and_corrupt_model_files_differ(tmp_path):
    with pytest.raises(FileNotFoundError, match="m.keras: no such model file"):
        io.load_model(tmp_path / "m.keras")
    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(ValueError, match=r"m.keras: not a readable .keras model \(truncated or corrupt"):
        io.load_model(tmp_path / "m.keras")
