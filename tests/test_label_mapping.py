"""Label maps in another numbering: mapping files, renumbering, the MuscleMap mapping, llseg import-labels."""
import textwrap

import nibabel as nib
import numpy as np
import pytest

from llseg import anatomy, cli, label_mapping

GMAX_R, GMAX_L = anatomy.label_id("gluteus_maximus", "right"), anatomy.label_id("gluteus_maximus", "left")
SOL_R = anatomy.label_id("soleus", "right")

#: A made-up convention: 10/11 gluteus maximus L/R, 20 right soleus, 99 femur (known, not mapped).
EXAMPLE = """\
# Example convention (made up for the tests), version 1
source_id,source_name,muscle,side

10,Gmax L,gluteus_maximus,left
11,Gmax R,Gluteus maximus,Right
  # an indented comment
20,"Soleus, right",soleus,right
99,Femur,,
"""


def _write(tmp_path, text, name="map.csv"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def example(tmp_path):
    return label_mapping.load_mapping(_write(tmp_path, EXAMPLE))


def test_load_mapping_reads_rows_names_and_known_unmapped(example):
    assert example == {10: GMAX_L, 11: GMAX_R, 20: SOL_R, 99: 0}   # Table-1 names and any case accepted


def test_apply_mapping_renumbers_a_tiny_volume(example):
    labels = np.zeros((3, 2, 2), np.int16)
    labels[0, 0, 0], labels[1, :, :], labels[2, 1, 1], labels[2, 0, 0] = 10, 11, 20, 99
    before = labels.copy()
    out = label_mapping.apply_mapping(labels, example)
    want = np.zeros((3, 2, 2), np.uint8)
    want[0, 0, 0], want[1, :, :], want[2, 1, 1] = GMAX_L, GMAX_R, SOL_R      # 99 (femur) -> 0 silently
    assert out.dtype == np.uint8 and np.array_equal(out, want)
    assert np.array_equal(labels, before)                                      # input untouched


def test_apply_mapping_edges(example):
    assert label_mapping.apply_mapping(np.zeros((0, 4, 4), np.int32), example).shape == (0, 4, 4)
    assert label_mapping.apply_mapping(np.full((1, 1, 1), 11.0), example).tolist() == [[[GMAX_R]]]  # integral floats
    with pytest.raises(TypeError, match="integers"):
        label_mapping.apply_mapping(np.full((1, 1, 1), 10.5), example)
    big = np.array([[[0, 2**40, 11]]], np.int64)                               # beyond the lookup table
    assert label_mapping.unmapped_values(big, example) == {2**40: 1}
    with pytest.raises(ValueError, match="background 0 must map to 0"):
        label_mapping.apply_mapping(np.zeros((2, 2, 2), int), {0: 5})


def test_unmapped_values_are_refused_with_values_and_counts(example):
    labels = np.array([[[0, 10, 7, 7], [500, -3, 7, 11]]])
    with pytest.raises(ValueError, match=r"3 label value\(s\) not in the mapping: -3 \(1 voxel\), 7 \(3 voxels\), "
                                         r"500 \(1 voxel\)"):
        label_mapping.apply_mapping(labels, example)


def test_drop_unmapped_sets_them_to_0_and_they_are_reported(example):
    labels = np.array([[[0, 10, 7, 7], [500, 99, 7, 11]]])
    assert label_mapping.unmapped_values(labels, example) == {7: 3, 500: 1}   # 99 is known: not unmapped
    out = label_mapping.apply_mapping(labels, example, drop_unmapped=True)
    assert out.tolist() == [[[0, GMAX_L, 0, 0], [0, 0, 0, GMAX_R]]]


def test_musclemap_round_trip_over_every_mapped_id():
    mapping = label_mapping.load_mapping(label_mapping.mapping_file("musclemap"))
    mapped = [s for s, r in mapping.items() if r]
    assert len(mapped) == 50 and len(mapping) == 99                            # 25 muscles x 2 sides; all labels
    assert mapping[6122] == GMAX_R and mapping[6121] == GMAX_L                # MuscleMap: ...1 left, ...2 right
    assert mapping[8121] == anatomy.label_id("fibulari", "left")
    for known in (6151, 6160, 6172, 6221, 8101, 8111, 8141, 8152, 1162):     # bones, compartments, upper body
        assert mapping[known] == 0
    source = np.array(mapped, np.int32).reshape(5, 5, 2)
    ours = label_mapping.apply_mapping(source, mapping)
    assert ours.dtype == np.uint8 and len(np.unique(ours)) == 50 and ours.min() >= 1
    back = label_mapping.apply_mapping(ours, label_mapping.invert_mapping(mapping))
    assert np.array_equal(back, source)


@pytest.mark.parametrize("row, line, match", [
    ("5,x,gluteus_maximal,left", 3, "unknown muscle 'gluteus_maximal'"),
    ("10,again,soleus,left", 4, "source id 10 is listed twice \\(first on line 3\\)"),
    ("5,x,soleus,up", 3, "side must be 'right' or 'left'.*got 'up'"),
    ("5,x,soleus,", 3, "muscle 'soleus' needs a side"),
    ("five,x,soleus,left", 3, "source_id must be an integer >= 0, got 'five'"),
    ("-5,x,soleus,left", 3, "source_id must be an integer >= 0, got -5"),
    ("0,background,soleus,left", 3, "source id 0 is background"),
    ("5,x,soleus", 3, "expected 4 fields"),
    ("11,x,gluteus_maximus,left", 4, "source id 11 maps onto Gluteus maximus \\(left\\).*source id 10 on line 3.*allow_merge"),
])
def test_bad_mapping_files_are_refused_naming_file_and_line(tmp_path, row, line, match):
    rows = ["10,Gmax L,gluteus_maximus,left", row] if line == 4 else [row]
    path = _write(tmp_path, "# comment\nsource_id,source_name,muscle,side\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=f"{path}:{line}: {match}"):
        label_mapping.load_mapping(path)


def test_bad_header_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match=r"map.csv:2: expected the header 'source_id,source_name,muscle,side'"):
        label_mapping.load_mapping(_write(tmp_path, "# c\nid,name,muscle,side\n1,a,soleus,left\n"))
    with pytest.raises(ValueError, match="lists no labels"):
        label_mapping.load_mapping(_write(tmp_path, "source_id,source_name,muscle,side\n"))
    with pytest.raises(FileNotFoundError, match="ready: musclemap"):
        label_mapping.mapping_file(tmp_path / "nowhere.csv")


def test_merges_need_allow_merge_and_cannot_be_inverted(tmp_path):
    path = _write(tmp_path, "source_id,source_name,muscle,side\n1,fib longus,fibulari,left\n2,fib brevis,fibulari,left\n")
    with pytest.raises(ValueError, match="allow_merge"):
        label_mapping.load_mapping(path)
    merged = label_mapping.load_mapping(path, allow_merge=True)
    fib_l = anatomy.label_id("fibulari", "left")
    assert merged == {1: fib_l, 2: fib_l}
    with pytest.raises(ValueError, match=f"source values 1 and 2 both map to {fib_l}"):
        label_mapping.invert_mapping(merged)


# ----------------------------------------------------------------------------- llseg import-labels

def _source_folder(tmp_path, values_b=(10, 20)):
    """Two tiny maps in the example numbering: a.nii.gz stored LPS (flipped axes, int16), b.nii in RAS."""
    src = tmp_path / "theirs"
    src.mkdir()
    a = np.zeros((4, 3, 2), np.int16)
    a[0, 0, 0], a[3, 2, 1], a[1, 1, 1] = 10, 11, 99
    lps = np.array([[-2.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(a, lps), src / "a.nii.gz")
    b = np.zeros((3, 3, 3), np.uint16)
    b[0, 0, 0], b[2, 2, 2] = values_b
    nib.save(nib.Nifti1Image(b, np.diag([1.0, 1.5, 2.0, 1.0])), src / "b.nii")
    return src, {"a.nii.gz": a, "b.nii": b}


def test_import_labels_keeps_each_files_grid_and_orientation(tmp_path, capsys):
    src, raw = _source_folder(tmp_path)
    mapping = _write(tmp_path, EXAMPLE)
    out = tmp_path / "data" / "labels"
    assert cli.main(["import-labels", str(src), "--mapping", str(mapping), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'a.nii.gz'}: 2 of 70 regions (1 right, 1 left)" in printed
    assert f"{out / 'b.nii'}: 2 of 70 regions (1 right, 1 left)" in printed
    example = label_mapping.load_mapping(mapping)
    for name, stored in raw.items():
        theirs, ours = nib.load(src / name), nib.load(out / name)
        assert np.allclose(ours.affine, theirs.affine) and ours.shape == theirs.shape
        assert ours.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(ours.dataobj), label_mapping.apply_mapping(stored, example))


def test_import_labels_refuses_unmapped_values_and_writes_nothing(tmp_path, capsys):
    src, _ = _source_folder(tmp_path, values_b=(10, 7))
    out = tmp_path / "data" / "labels"
    args = ["import-labels", str(src), "--mapping", str(_write(tmp_path, EXAMPLE)), "--out", str(out), "-q"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("llseg import-labels: error: ") and len(err.strip().splitlines()) == 1
    assert "1 of 2 file(s) cannot be imported, nothing written: b.nii: values not in the mapping: 7 (1 voxel)" in err
    assert not out.exists() or not any(out.iterdir())                          # a.nii.gz was fine: not written either
    assert cli.main(args + ["--drop-unmapped"]) == 0
    assert "b.nii: 1 of 70 regions (0 right, 1 left); dropped unmapped 7 (1 voxel)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii"]


def test_import_labels_with_the_musclemap_mapping_and_guarded_output(tmp_path, capsys):
    src = tmp_path / "mm"
    src.mkdir()
    labels = np.zeros((3, 3, 3), np.uint16)
    labels[0, 0, 0], labels[1, 1, 1], labels[2, 2, 2] = 6122, 8131, 6171          # R Gmax, L soleus, L femur
    nib.save(nib.Nifti1Image(labels, np.eye(4)), src / "case1.nii.gz")
    assert cli.main(["import-labels", str(src), "--mapping", "musclemap", "--out", str(tmp_path / "ours"), "-q"]) == 0
    ours = np.asanyarray(nib.load(tmp_path / "ours" / "case1.nii.gz").dataobj)
    assert (ours[0, 0, 0], ours[1, 1, 1], ours[2, 2, 2]) == (GMAX_R, anatomy.label_id("soleus", "left"), 0)
    capsys.readouterr()
    assert cli.main(["import-labels", str(src), "--mapping", "musclemap", "--out", str(src / "x"), "-q"]) == 1
    assert "lies inside the input folder" in capsys.readouterr().err
    assert cli.main(["import-labels", str(src), "--mapping", "nomap", "--out", str(tmp_path / "o"), "-q"]) == 1
    assert "nomap: no such mapping file, and not a ready mapping (ready: musclemap)" in capsys.readouterr().err
