"""Tests for llseg.export: volume table and Slicer / ITK-SNAP colour tables."""
import math
import re
import warnings

import numpy as np
import pytest

from llseg import anatomy, export
from llseg.study import figures


@pytest.fixture
def hand_map():
    """10 x 8 x 6 map: right adductor brevis (1) 24 voxels, left (36) 12, right gracilis (15) 1."""
    lab = np.zeros((10, 8, 6), np.uint8)
    lab[6:9, 1:5, 1:3] = 1      # 3 * 4 * 2 = 24 voxels
    lab[1:4, 1:3, 1:3] = 36     # 3 * 2 * 2 = 12 voxels
    lab[0, 7, 5] = 15           # one voxel
    return lab


# --------------------------------------------------------------------------- volumes


def test_region_volumes_known_counts_anisotropic(hand_map):
    spacing = (0.5, 1.0, 2.5)   # 1.25 mm^3 per voxel
    vol = export.region_volumes_ml(hand_map, spacing)
    assert vol.shape == (anatomy.N_REGIONS + 1,)
    assert vol[1] == pytest.approx(24 * 1.25 / 1000)
    assert vol[36] == pytest.approx(12 * 1.25 / 1000)
    assert vol[15] == pytest.approx(1.25 / 1000)
    assert vol[0] == pytest.approx((hand_map.size - 37) * 1.25 / 1000)
    assert np.count_nonzero(vol[1:]) == 3


def test_region_volumes_rejects_bad_ids_and_dtypes(hand_map):
    bad = hand_map.astype(np.int16)
    bad[0, 0, 0] = 71
    with pytest.raises(ValueError, match=r"unknown label id\(s\) 71;"):
        export.region_volumes_ml(bad, (1, 1, 1))
    bad[0, 0, 0] = -3
    with pytest.raises(ValueError, match="negative"):
        export.region_volumes_ml(bad, (1, 1, 1))
    with pytest.raises(TypeError, match="integers"):
        export.region_volumes_ml(hand_map + 0.5, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        export.region_volumes_ml(hand_map, (1, 1))
    with pytest.raises(ValueError, match="3-D"):
        export.region_volumes_ml(hand_map[0], (1, 1, 1))


def _by_muscle(rows):
    return {r["muscle"]: r for r in rows}


def test_volume_table_matches_count_nonzero(hand_map):
    spacing = (0.8, 1.2, 3.0)
    voxel_ml = 0.8 * 1.2 * 3.0 / 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = export.volume_table({"s01": (hand_map, spacing)}, decimals=9)
    assert [r["muscle"] for r in rows] == [m.key for m in anatomy.MUSCLES]      # one row per muscle, Table-1 order
    assert all(tuple(r) == export.VOLUME_COLUMNS and r["subject"] == "s01" for r in rows)
    for m, row in zip(anatomy.MUSCLES, rows):
        assert row["name"] == m.name
        for side, label in (("right", m.right_label), ("left", m.left_label)):
            expected = np.count_nonzero(hand_map == label) * voxel_ml
            assert row[f"{side}_ml"] == pytest.approx(expected, abs=1e-9)


def test_volume_table_rounds(hand_map):
    """Voxel counts x voxel volume print as 9.04, not 9.040000000000001."""
    labels = np.zeros((20, 20, 20), np.uint8)
    labels.reshape(-1)[:226] = 1                                                   # 226 x 0.04 mL = 9.04 mL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = _by_muscle(export.volume_table({"s": (labels, (2.0, 2.0, 10.0))}))["adductor_brevis"]
    assert repr(row["right_ml"]) == "9.04" and row["left_ml"] == 0.0 and row["asymmetry_pct"] == 200.0


def test_asymmetry_sign_and_edge_values(hand_map):
    with pytest.warns(UserWarning, match=r"'s01'.*absent on both legs"):
        row = _by_muscle(export.volume_table({"s01": (hand_map, (1, 1, 1))}))
    # right 24, left 12 -> 100 * 12 / 18 = +66.67 % (right bigger -> positive)
    assert row["adductor_brevis"]["asymmetry_pct"] == pytest.approx(100 * 12 / 18, abs=0.005)
    # swap the legs -> same magnitude, negative
    swapped = np.where(hand_map == 1, 36, np.where(hand_map == 36, 1, hand_map)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row2 = _by_muscle(export.volume_table({"s02": (swapped, (1, 1, 1))}))
    assert row2["adductor_brevis"]["asymmetry_pct"] == -row["adductor_brevis"]["asymmetry_pct"]
    # one-voxel right gracilis, no left -> +200 %; muscles absent on both legs -> no asymmetry (empty cell)
    assert row["gracilis"]["asymmetry_pct"] == pytest.approx(200.0)
    assert row["soleus"]["asymmetry_pct"] is None
    assert row["soleus"]["right_ml"] == 0.0


def test_volume_table_several_subjects_and_errors(hand_map):
    full = np.zeros((4, 4, 5), np.uint8)
    full.reshape(-1)[:70] = np.arange(1, 71)          # every region once, one voxel each
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # no muscle missing -> no warning
        rows = export.volume_table({"b": (full, (20.0, 20.0, 20.0)), "a": (full, (10.0, 10.0, 10.0))})
    assert [r["subject"] for r in rows] == ["b"] * anatomy.N_MUSCLES + ["a"] * anatomy.N_MUSCLES  # input order kept
    assert _by_muscle(rows[:35])["vastus_medialis"]["left_ml"] == pytest.approx(8.0)
    assert _by_muscle(rows[35:])["vastus_medialis"]["left_ml"] == pytest.approx(1.0)
    assert _by_muscle(rows[35:])["vastus_medialis"]["asymmetry_pct"] == 0.0
    assert export.volume_table({}) == []
    bad = hand_map.copy()
    bad[0, 0, 0] = 99
    with pytest.raises(ValueError, match=r"subject 'x'.*id\(s\) 99;"):
        export.volume_table({"x": (bad, (1, 1, 1))})
    with pytest.raises(ValueError, match="pair"):
        export.volume_table({"x": hand_map})
    with pytest.raises(TypeError, match="dict"):
        export.volume_table([(hand_map, (1, 1, 1))])


# --------------------------------------------------------------------------- colour tables


def _expected_rgb255():
    colors = figures.muscle_colors()
    return {label: tuple(int(round(255 * c)) for c in colors[key]) for label, (key, _s) in anatomy.REGIONS.items()}


def test_slicer_color_table_round_trip():
    text = export.slicer_color_table()
    lines = text.splitlines()
    assert lines[0].startswith("# Color table file ")
    assert lines[1] == "# 71 values"
    assert lines[2] == "0 background 0 0 0 0"
    table = export.parse_slicer_color_table(text)
    assert sorted(table) == list(range(anatomy.N_REGIONS + 1))
    assert table[0] == ("background", (0, 0, 0, 0))
    expected = _expected_rgb255()
    for label, (key, side) in anatomy.REGIONS.items():
        name, rgba = table[label]
        assert name == f"{key}_{side}"
        assert " " not in name
        assert rgba == (*expected[label], 255)
    assert table[1][0] == "adductor_brevis_right"
    assert table[36][0] == "adductor_brevis_left"
    assert table[1][1] == table[36][1]               # both legs share a colour
    # data lines are exactly "id name R G B A"
    assert all(re.fullmatch(r"\d+ \S+ \d+ \d+ \d+ \d+", line) for line in lines[2:])


def test_itksnap_label_descriptions_round_trip():
    text = export.itksnap_label_descriptions()
    assert text.startswith("################################################\n# ITK-SnAP Label Description File\n")
    assert "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL" in text
    table = export.parse_itksnap_label_descriptions(text)
    assert sorted(table) == list(range(anatomy.N_REGIONS + 1))
    assert table[0] == ("Clear Label", (0, 0, 0), 0.0)
    expected = _expected_rgb255()
    for label in anatomy.REGIONS:
        name, rgb, alpha = table[label]
        assert name == anatomy.region_name(label)
        assert rgb == expected[label]
        assert alpha == 1.0
    data = [line for line in text.splitlines() if not line.startswith("#")]
    assert data[0] == '    0     0    0    0        0  0  0    "Clear Label"'
    r, g, b = expected[1]
    assert data[1] == f'    1   {r:>3}  {g:>3}  {b:>3}        1  1  1    "Adductor brevis (right)"'


def test_parsers_accept_foreign_files_and_reject_bad_lines():
    slicer = "# Color table file x\n# 3 values\n0 Background 0 0 0 0\n\n7 bone 241 214 145 255\n"
    assert export.parse_slicer_color_table(slicer) == {0: ("Background", (0, 0, 0, 0)),
                                                       7: ("bone", (241, 214, 145, 255))}
    with pytest.raises(ValueError, match="line 2"):
        export.parse_slicer_color_table("0 a 0 0 0 0\n1 b 0 0 0\n")
    with pytest.raises(ValueError, match="0..255"):
        export.parse_slicer_color_table("1 b 0 300 0 255\n")
    with pytest.raises(ValueError, match="twice"):
        export.parse_slicer_color_table("1 b 0 0 0 255\n1 c 0 0 0 255\n")
    snap = '# ITK-SnAP Label Description File\n  12   255  255  150     0.5    1   0  "My label"\n'
    assert export.parse_itksnap_label_descriptions(snap) == {12: ("My label", (255, 255, 150), 0.5)}
    with pytest.raises(ValueError, match="line 1"):
        export.parse_itksnap_label_descriptions("1 255 0 0 1 1 1 no quotes\n")
    with pytest.raises(ValueError, match="opacity"):
        export.parse_itksnap_label_descriptions('1 255 0 0 2 1 1 "x"\n')
    with pytest.raises(TypeError):
        export.parse_itksnap_label_descriptions(b"1 255 0 0 1 1 1 \"x\"")


def test_colour_tables_match_the_figures_label_colormap_and_names_are_unique():
    """The viewer / figures colour of every label id (``figures.label_colormap``) is the exported one."""
    cmap = figures.label_colormap()
    slicer = export.parse_slicer_color_table(export.slicer_color_table(title="x.ctbl"))
    snap = export.parse_itksnap_label_descriptions(export.itksnap_label_descriptions())
    for label in range(anatomy.N_REGIONS + 1):
        r, g, b, a = (int(round(255 * c)) for c in cmap(label))
        assert slicer[label][1] == (r, g, b, a), label                 # background: (0, 0, 0, 0)
        assert snap[label][1] == (r, g, b) and snap[label][2] == a / 255, label
    assert len({name for name, _ in slicer.values()}) == anatomy.N_REGIONS + 1
    assert len({name for name, _, _ in snap.values()}) == anatomy.N_REGIONS + 1
    assert export.slicer_color_table(title="x.ctbl").startswith("# Color table file x.ctbl\n")
