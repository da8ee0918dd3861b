"""Tests of llseg.coverage (a scan's stretch of the T12-to-ankle span) and llseg.phantom.cuts.

Known answers come from ``anatomy.LANDMARKS`` and ``anatomy.Muscle.si_extent``; the label maps of
``coverage_from_labels`` are hand-built on a linear z scale of 1 slice per 0.01 of the span
(10.8 mm slices: the reference span is 1080 mm), so every muscle end falls on a slice edge.
"""
from pathlib import Path

import numpy as np
import pytest

from llseg import anatomy, coverage, stage1
from llseg.coverage import COVERAGE_PRESETS, WHOLE

ROOT = Path(__file__).resolve().parents[1]

#: One slice per 0.01 of the T12-to-ankle span of the reference adult (1080 mm).
DZ_MM = 0.01 * coverage.REFERENCE_SPAN_MM


def _extent(key):
    return anatomy.muscle(key).si_extent


# --------------------------------------------------------------------------- parse_coverage


@pytest.mark.parametrize("name", ["whole", "pelvis_knee", "thigh", "calf"])
def test_parse_coverage_presets(name):
    assert coverage.parse_coverage(name) == COVERAGE_PRESETS[name]


def test_presets_follow_the_landmarks():
    lm = anatomy.LANDMARKS
    assert COVERAGE_PRESETS["whole"] == WHOLE == (0.0, 1.0)
    assert COVERAGE_PRESETS["thigh"] == (lm["hip_joint"], lm["knee_joint"]) == (0.19, 0.60)
    assert COVERAGE_PRESETS["calf"] == (lm["knee_joint"], lm["ankle_joint"]) == (0.60, 1.0)
    assert COVERAGE_PRESETS["pelvis_knee"] == (lm["iliac_crest"], lm["knee_joint"])


@pytest.mark.parametrize("value, expected", [("0.19:0.6", (0.19, 0.6)), ("0:1", (0.0, 1.0)),
                                             ((0.2, 0.5), (0.2, 0.5)), ([0, 1], (0.0, 1.0)),
                                             (np.array([0.6, 1.0]), (0.6, 1.0))])
def test_parse_coverage_fractions(value, expected):
    out = coverage.parse_coverage(value)
    assert out == expected and all(isinstance(v, float) for v in out)


@pytest.mark.parametrize("value", ["thighs", "", "0.1:0.2:0.3", "a:b", "0.2-0.6", None, 0.5, (0.1, 0.2, 0.3)])
def test_parse_coverage_bad_values(value):
    with pytest.raises(ValueError, match="coverage"):
        coverage.parse_coverage(value)


def test_parse_coverage_unknown_name_lists_the_presets():
    with pytest.raises(ValueError, match=r"'thighs'.*whole, pelvis_knee, thigh, calf"):
        coverage.parse_coverage("thighs")


@pytest.mark.parametrize("value", ["0.6:0.19", (0.6, 0.19), (0.3, 0.3), (-0.1, 0.5), (0.5, 1.2), "nan:0.5"])
def test_parse_coverage_out_of_order_or_range_names_the_value(value):
    with pytest.raises(ValueError, match="0 <= top < bottom <= 1") as exc:
        coverage.parse_coverage(value)
    text = str(value) if not isinstance(value, str) else value
    for number in text.replace(":", " ").strip("()").replace(",", " ").split():
        assert number in str(exc.value)                  # both fractions echoed


# --------------------------------------------------------------------------- part_ranges_in_view


@pytest.mark.parametrize("whole", [WHOLE, "whole", (0, 1), "0:1"])
def test_whole_leg_part_ranges_are_the_papers_value_for_value(whole):
    out = coverage.part_ranges_in_view(whole, stage1.DEFAULT_PART_RANGES)
    assert out == stage1.DEFAULT_PART_RANGES                      # exact float equality, same parts
    assert list(out) == list(stage1.DEFAULT_PART_RANGES)
    # and so the split of a whole-leg study grid is unchanged
    assert stage1.split_parts(110, part_ranges=out) == stage1.split_parts(110)


def test_thigh_part_ranges_clipped_and_rescaled():
    out = coverage.part_ranges_in_view("thigh", stage1.DEFAULT_PART_RANGES)    # (0.19, 0.60): 0.41 long
    assert set(out) == {"abdomen", "upper_leg", "lower_leg"}
    assert out["upper_leg"] == pytest.approx((0.0, 1.0))                        # (0.04, 0.70) holds the view
    assert out["abdomen"] == pytest.approx((0.0, (0.38 - 0.19) / 0.41))         # (0.19, 0.38) seen
    assert out["lower_leg"] == pytest.approx(((0.47 - 0.19) / 0.41, 1.0))       # (0.47, 0.60) seen
    assert all(0.0 <= lo < hi <= 1.0 for lo, hi in out.values())


def test_calf_part_ranges_drop_the_abdomen():
    out = coverage.part_ranges_in_view("calf", stage1.DEFAULT_PART_RANGES)     # (0.60, 1.0): 0.40 long
    assert set(out) == {"upper_leg", "lower_leg"}
    assert out["upper_leg"] == pytest.approx((0.0, (0.70 - 0.60) / 0.40))
    assert out["lower_leg"] == pytest.approx((0.0, 1.0))
    assert all(0.0 <= lo < hi <= 1.0 for lo, hi in out.values())


def test_part_with_less_than_005_in_view_is_dropped():
    # (0.67, 1.0) sees 0.03 of upper_leg (0.04, 0.70): dropped; (0.62, 1.0) sees 0.08: kept
    assert set(coverage.part_ranges_in_view((0.67, 1.0), stage1.DEFAULT_PART_RANGES)) == {"lower_leg"}
    kept = coverage.part_ranges_in_view((0.62, 1.0), stage1.DEFAULT_PART_RANGES)
    assert set(kept) == {"upper_leg", "lower_leg"}
    assert kept["upper_leg"] == pytest.approx((0.0, 0.08 / 0.38))
    # T12 to the iliac crest (0.08): 0.04 of upper_leg (0.04, 0.70) is in view, dropped
    assert coverage.part_ranges_in_view((0.0, 0.08), stage1.DEFAULT_PART_RANGES) == {"abdomen": (0.0, 1.0)}
    # too little of any part: nothing to run
    assert coverage.part_ranges_in_view((0.0, 0.03), stage1.DEFAULT_PART_RANGES) == {}


def test_part_ranges_in_view_split_a_thigh_scan_where_the_parts_lie():
    # a 41-slice thigh scan (1 slice per 0.01 of the span): the abdomen part is its top 19 slices
    out = coverage.part_ranges_in_view("thigh", stage1.DEFAULT_PART_RANGES)
    parts = stage1.split_parts(41, part_ranges=out)
    assert parts["abdomen"] == slice(41 - 19, 41)
    assert parts["upper_leg"] == slice(0, 41)
    assert parts["lower_leg"] == slice(0, 13)                    # 0.47 .. 0.60: the bottom 13 slices


# --------------------------------------------------------------------------- regions in view


def _in_view_by_hand(top, bottom):
    return {lab for lab in anatomy.REGIONS
            if min(anatomy.muscle_of_label(lab).si_extent[1], bottom)
            - max(anatomy.muscle_of_label(lab).si_extent[0], top) > 0}


def _inside_by_hand(top, bottom):
    return {lab for lab in anatomy.REGIONS
            if top <= anatomy.muscle_of_label(lab).si_extent[0] and anatomy.muscle_of_label(lab).si_extent[1] <= bottom}


@pytest.mark.parametrize("name", list(COVERAGE_PRESETS))
def test_regions_in_and_inside_view_match_si_extent(name):
    top, bottom = COVERAGE_PRESETS[name]
    in_view, inside = coverage.regions_in_view(name), coverage.regions_inside_view(name)
    assert in_view == tuple(sorted(in_view)) and inside == tuple(sorted(inside))
    assert set(in_view) == _in_view_by_hand(top, bottom)
    assert set(inside) == _inside_by_hand(top, bottom)
    assert set(inside) <= set(in_view)
    # both legs alike
    assert {anatomy.mirror_label(v) for v in in_view} == set(in_view)
    assert {anatomy.mirror_label(v) for v in inside} == set(inside)


def test_whole_leg_shows_every_region():
    assert coverage.regions_in_view(WHOLE) == coverage.regions_inside_view(WHOLE) == tuple(range(1, 71))


def _labels(*keys):
    return {anatomy.label_id(k, s) for k in keys for s in ("right", "left")}


def test_regions_of_a_thigh_scan():
    in_view, inside = set(coverage.regions_in_view("thigh")), set(coverage.regions_inside_view("thigh"))
    # the calf below the knee: not in view (popliteus starts at the knee joint: zero overlap)
    assert not _labels("soleus", "popliteus", "tibialis_anterior", "fibulari") & in_view
    # the gluteus medius ends at the hip joint (0.08, 0.19): not in view
    assert not _labels("gluteus_medius", "gluteus_minimus") & in_view
    # reaching in from above / below: in view, not inside
    for key in ("psoas_major", "gluteus_maximus", "gastrocnemius_medial", "vastus_lateralis", "gracilis"):
        assert _labels(key) <= in_view and not _labels(key) & inside, key
    # vastus lateralis (0.18, 0.56) starts 0.01 above the hip joint (0.19): not inside
    assert anatomy.muscle("vastus_lateralis").si_extent[0] < COVERAGE_PRESETS["thigh"][0]
    # wholly in the thigh
    assert _labels("vastus_medialis", "vastus_intermedius", "adductor_longus", "adductor_magnus",
                   "biceps_femoris_short", "semimembranosus") <= inside


def test_regions_of_a_calf_scan():
    in_view, inside = set(coverage.regions_in_view("calf")), set(coverage.regions_inside_view("calf"))
    lower = set(anatomy.labels_of_part("lower_leg"))
    assert lower <= in_view
    assert not set(anatomy.labels_of_part("abdomen")) & in_view
    assert _labels("soleus", "popliteus", "tibialis_anterior", "flexor_hallucis_longus") <= inside
    assert _labels("gastrocnemius_medial", "gastrocnemius_lateral") <= in_view - inside   # from 0.55
    # thigh muscles reaching below the knee joint (0.62) are in view; semimembranosus ends at 0.60: not
    assert in_view - lower == _labels("gracilis", "sartorius", "semitendinosus")
    assert not _labels("semimembranosus", "vastus_lateralis", "psoas_major", "gluteus_maximus") & in_view


# --------------------------------------------------------------------------- coverage_from_labels


def _place(labels, top_u, key, side="right", *, x=None):
    """Paint muscle ``key`` over its reference extent on a scan whose top slice edge is ``top_u``
    (1 slice per 0.01), clipped to the scan; z = 0 is the inferior slice."""
    n = labels.shape[2]
    lo_u, hi_u = _extent(key)
    z_lo = max(0, int(round((top_u + n * 0.01 - hi_u) / 0.01)))
    z_hi = min(n, int(round((top_u + n * 0.01 - lo_u) / 0.01)))
    lab = anatomy.label_id(key, side)
    x = slice(0, 2) if x is None else x
    labels[x, 1:3, z_lo:z_hi] = lab
    return z_lo, z_hi


def test_coverage_from_labels_two_muscles_inside():
    labels = np.zeros((6, 4, 40), np.uint8)                      # scan 0.20 .. 0.60
    assert _place(labels, 0.20, "biceps_femoris_short", "right", x=slice(0, 2)) == (2, 22)   # (0.38, 0.58)
    assert _place(labels, 0.20, "vastus_medialis", "left", x=slice(3, 5)) == (2, 30)         # (0.30, 0.58)
    top, bottom = coverage.coverage_from_labels(labels, DZ_MM)
    assert top == pytest.approx(0.20, abs=0.02) and bottom == pytest.approx(0.60, abs=0.02)
    assert (top, bottom) == pytest.approx((0.20, 0.60), abs=1e-9)      # exact on this linear scale


def test_coverage_from_labels_fits_the_scale_of_a_smaller_subject():
    # the same layout with 12 mm slices: the reference says 1080 / 12 = 90 slices per unit of the
    # span, the muscles say 100 (a taller subject); 100 / 90 = 1.11 lies inside 0.6-1.6, so the
    # fitted slope is used and the answer is still exact
    labels = np.zeros((6, 4, 40), np.uint8)
    _place(labels, 0.20, "biceps_femoris_short", "right")
    _place(labels, 0.20, "vastus_medialis", "left", x=slice(3, 5))
    assert coverage.coverage_from_labels(labels, 12.0) == pytest.approx((0.20, 0.60), abs=1e-9)


def test_coverage_from_labels_ignores_ends_cut_by_the_scan_edge():
    labels = np.zeros((8, 4, 30), np.uint8)                      # scan 0.30 .. 0.60
    # adductor longus (0.20, 0.45) is cut by the top edge: its top slice (z = 30 = n) is no 0.20
    assert _place(labels, 0.30, "adductor_longus", "right", x=slice(0, 2)) == (15, 30)
    # gracilis (0.21, 0.62) is cut at both ends: no information at all
    assert _place(labels, 0.30, "gracilis", "right", x=slice(2, 4)) == (0, 30)
    assert _place(labels, 0.30, "biceps_femoris_short", "left", x=slice(4, 6)) == (2, 22)
    assert coverage.coverage_from_labels(labels, DZ_MM) == pytest.approx((0.30, 0.60), abs=1e-9)


def test_coverage_from_labels_one_cut_muscle_uses_the_reference_slope():
    labels = np.zeros((4, 4, 30), np.uint8)                      # scan 0.30 .. 0.60
    _place(labels, 0.30, "adductor_longus", "right")             # only its bottom (0.45, z = 15) counts
    assert coverage.coverage_from_labels(labels, DZ_MM) == pytest.approx((0.30, 0.60), abs=1e-9)


def test_coverage_from_labels_clips_to_the_span():
    labels = np.zeros((4, 4, 50), np.uint8)                      # scan 0.60 .. 1.10 (past the ankle)
    assert _place(labels, 0.60, "soleus", "right") == (18, 47)   # (0.63, 0.92)
    assert _place(labels, 0.60, "popliteus", "left", x=slice(2, 4)) == (44, 50)
    top, bottom = coverage.coverage_from_labels(labels, DZ_MM)
    assert top == pytest.approx(0.60, abs=0.02) and bottom == 1.0


def test_coverage_from_labels_muscle_touching_both_ends_centres_on_it():
    labels = np.zeros((4, 4, 40), np.uint8)
    labels[:2, :2, :] = anatomy.label_id("gracilis", "right")    # every slice: no end seen
    top, bottom = coverage.coverage_from_labels(labels, DZ_MM)
    lo, hi = _extent("gracilis")
    assert (top + bottom) / 2 == pytest.approx((lo + hi) / 2)  # centred on the muscle
    assert bottom - top == pytest.approx(0.40)                 # 40 slices of 0.01


def test_coverage_from_labels_empty_map():
    with pytest.raises(ValueError, match="no muscle"):
        coverage.coverage_from_labels(np.zeros((4, 4, 10), np.uint8), 10.0)


def test_coverage_from_labels_does_not_mutate_its_input():
    labels = np.zeros((6, 4, 40), np.uint8)
    _place(labels, 0.20, "biceps_femoris_short")
    before = labels.copy()
    coverage.coverage_from_labels(labels, DZ_MM)
    np.testing.assert_array_equal(labels, before)


# --------------------------------------------------------------------------- coverage_of_scan


def test_coverage_of_scan_long_scan_is_whole_leg():
    assert coverage.coverage_of_scan(110, 10.0) == WHOLE
    assert coverage.coverage_of_scan(80, 10.0) == WHOLE                    # exactly 800 mm
    # the labels are not consulted for a whole-leg scan
    assert coverage.coverage_of_scan(160, 5.0, labels=np.zeros((2, 2, 160), np.uint8)) == WHOLE


def test_coverage_of_scan_short_without_labels_asks_for_coverage():
    with pytest.raises(ValueError, match=r"790 mm.*--coverage"):
        coverage.coverage_of_scan(79, 10.0)


def test_coverage_of_scan_short_with_labels_reads_them():
    labels = np.zeros((6, 4, 40), np.uint8)
    _place(labels, 0.20, "biceps_femoris_short")
    _place(labels, 0.20, "vastus_medialis", "left", x=slice(3, 5))
    assert coverage.coverage_of_scan(40, DZ_MM, labels=labels) == pytest.approx((0.20, 0.60), abs=1e-9)


def test_coverage_of_scan_user_coverage_wins():
    labels = np.zeros((6, 4, 40), np.uint8)
    _place(labels, 0.20, "biceps_femoris_short")
    assert coverage.coverage_of_scan(40, DZ_MM, labels=labels, coverage="calf") == COVERAGE_PRESETS["calf"]
    assert coverage.coverage_of_scan(110, 10.0, coverage="thigh") == COVERAGE_PRESETS["thigh"]   # even if long
    assert coverage.coverage_of_scan(30, 10.0, coverage="0.3:0.5") == (0.3, 0.5)
    with pytest.raises(ValueError, match="coverage"):
        coverage.coverage_of_scan(30, 10.0, coverage="knee")


# --------------------------------------------------------------------------- phantom cuts


def test_keep_regions_on_a_hand_built_map():
    from llseg.phantom import cuts

    labels = np.zeros((3, 2, 2), np.uint8)
    gr, gl = anatomy.label_id("gracilis", "right"), anatomy.label_id("gracilis", "left")
    sr, sl = anatomy.label_id("soleus", "right"), anatomy.label_id("soleus", "left")
    labels[0, :, 0], labels[1, :, 0], labels[2, :, 0], labels[0, 0, 1] = gr, gl, sr, sl
    before = labels.copy()
    out = cuts.keep_regions(labels, ["gracilis"], sides=("right",))
    assert out.dtype == labels.dtype and out.shape == labels.shape
    assert set(np.unique(out)) == {0, gr} and np.count_nonzero(out) == 2
    np.testing.assert_array_equal(labels, before)                         # input untouched
    assert set(np.unique(cuts.keep_regions(labels, ["Soleus", "gracilis"]))) == {0, gr, gl, sr, sl}
    np.testing.assert_array_equal(cuts.keep_regions(labels), labels)      # None = all
    assert set(np.unique(cuts.keep_regions(labels, [], sides=("left",)))) == {0}


@pytest.fixture(scope="module")
def phantom_000():
    """The committed phantom case 0 (label map only, loaded lazily): skip when absent."""
    nib = pytest.importorskip("nibabel")
    from llseg import io
    from llseg.phantom.subject import Subject

    meta_path = ROOT / "data" / "subjects" / "phantom_000.json"
    lab_path = ROOT / "data" / "labels" / "phantom_000.nii.gz"
    img_path = ROOT / "data" / "images" / "phantom_000.nii.gz"
    if not (meta_path.exists() and lab_path.exists() and img_path.exists()):
        pytest.skip("phantom data (data/subjects/phantom_000.json and its NIfTI files) not present")
    meta = io.read_json(meta_path)
    return Subject(**meta["subject"]), nib.load(img_path), nib.load(lab_path), meta


@pytest.mark.parametrize("name", ["thigh", "calf"])
def test_cut_phantom_coverage_is_recovered_from_its_labels(phantom_000, name):
    from llseg.phantom import cuts

    subject, image, labels, meta = phantom_000
    dz = float(meta["spacing_mm"][2])
    full = np.asarray(labels.dataobj)
    assert coverage.coverage_from_labels(full, dz) == pytest.approx(WHOLE, abs=0.03)
    img_cut, lab_cut = cuts.cut_case(image, labels, subject, COVERAGE_PRESETS[name])
    data = np.asarray(lab_cut.dataobj)
    assert img_cut.shape == lab_cut.shape == data.shape
    assert data.shape[:2] == full.shape[:2] and data.shape[2] * dz < coverage.WHOLE_LEG_MIN_MM
    # same voxels and world positions as the original slab
    sl = cuts.slices_of_coverage(subject, labels.affine, full.shape[2], COVERAGE_PRESETS[name])
    np.testing.assert_array_equal(data, full[:, :, sl])
    np.testing.assert_allclose(lab_cut.affine[2, 3], labels.affine[2, 3] + sl.start * dz)
    np.testing.assert_allclose(img_cut.affine, lab_cut.affine)
    # the coverage read back from the cut labels
    est = coverage.coverage_from_labels(data, dz)
    assert est == pytest.approx(COVERAGE_PRESETS[name], abs=0.03)
    assert coverage.coverage_of_scan(data.shape[2], dz, labels=data) == est
    # what the cut shows agrees with regions_in_view / regions_inside_view
    present = set(np.unique(data).tolist()) - {0}
    assert present <= set(coverage.regions_in_view(name))
    assert set(coverage.regions_inside_view(name)) <= present


def test_cut_phantom_keeps_only_the_asked_muscles_and_sides(phantom_000):
    from llseg.phantom import cuts

    subject, image, labels, meta = phantom_000
    _, lab_cut = cuts.cut_case(image, labels, subject, COVERAGE_PRESETS["thigh"],
                               ["vastus_medialis", "gracilis"], sides=("right",))
    data = np.asarray(lab_cut.dataobj)
    assert set(np.unique(data).tolist()) == {0, anatomy.label_id("vastus_medialis", "right"),
                                             anatomy.label_id("gracilis", "right")}
    # the kept regions are unchanged voxel for voxel
    sl = cuts.slices_of_coverage(subject, labels.affine, labels.shape[2], COVERAGE_PRESETS["thigh"])
    full = np.asarray(labels.dataobj)[:, :, sl]
    for key in ("vastus_medialis", "gracilis"):
        lab = anatomy.label_id(key, "right")
        np.testing.assert_array_equal(data == lab, full == lab)
    _, both = cuts.cut_case(image, labels, subject, COVERAGE_PRESETS["calf"], ["soleus"])
    assert set(np.unique(np.asarray(both.dataobj)).tolist()) == {0, anatomy.label_id("soleus", "right"),
                                                                 anatomy.label_id("soleus", "left")}


def test_slices_of_coverage_errors_on_an_empty_stretch(phantom_000):
    from llseg.phantom import cuts

    subject, _, labels, _ = phantom_000
    with pytest.raises(ValueError, match="holds no slice"):
        cuts.slices_of_coverage(subject, labels.affine, 3, (0.0, 0.1))   # a 3-slice grid at the ankle


def test_part_with_exactly_005_in_view_is_kept():
    assert "upper_leg" in coverage.part_ranges_in_view((0.65, 1.0), stage1.DEFAULT_PART_RANGES)


# --------------------------------------------------------------------------- body outline


def _outline(u):
    """A made-up body area (mm^2) along the span of the reference adult: a wide pelvis, the two
    thighs tapering to a narrow knee, the calves bulging and tapering to the ankle."""
    u = np.asarray(u, float)
    return np.interp(u, [0.0, 0.15, 0.25, 0.58, 0.62, 0.72, 1.0],
                     [60000, 64000, 36000, 18000, 14000, 20000, 6000])


def _scan_profile(coverage_, scale, dz=10.0):
    """The outline of a subject ``scale`` times the reference adult, scanned over ``coverage_``."""
    top, bottom = coverage_
    n = int(round((bottom - top) * scale * coverage.REFERENCE_SPAN_MM / dz))
    u = bottom - (np.arange(n) + 0.5) / n * (bottom - top)
    return scale ** 2 * _outline(u), n


def test_body_area_profile_fills_holes_in_each_slice():
    """A bright cylinder with a dark core (bone marrow, say) on a dark background: its area is
    the whole disc, in mm^2, in every slice it crosses, and 0 where it is absent."""
    x, y = np.mgrid[:40, :30]
    r2 = (x - 20.0) ** 2 + (y - 15.0) ** 2
    disc, core = r2 <= 10 ** 2, r2 <= 4 ** 2
    image = np.zeros((40, 30, 5), np.float32)
    image[:, :, 1:4] = np.where(disc & ~core, 100.0, 0.0)[:, :, None]
    image += np.random.default_rng(0).normal(0, 1, image.shape).astype(np.float32)
    areas = coverage.body_area_profile(image, (2.0, 3.0, 10.0))
    assert areas.shape == (5,)
    np.testing.assert_allclose(areas[1:4], disc.sum() * 6.0)
    np.testing.assert_array_equal(areas[[0, 4]], 0.0)


def test_reference_body_profile_undoes_each_subjects_scale():
    """Two subjects of other sizes, one scanned whole and one from the hip to the knee: the
    reference is the adult's outline where they are seen, NaN where none is (here: none)."""
    whole, _ = _scan_profile(WHOLE, 1.1)
    thigh, _ = _scan_profile(COVERAGE_PRESETS["thigh"], 0.9)
    ref = coverage.reference_body_profile([whole, thigh], [WHOLE, COVERAGE_PRESETS["thigh"]], 10.0)
    assert ref.shape == coverage.PROFILE_GRID.shape
    inner = (coverage.PROFILE_GRID > 0.01) & (coverage.PROFILE_GRID < 0.99)
    np.testing.assert_allclose(ref[inner], _outline(coverage.PROFILE_GRID[inner]), rtol=0.03)
    calf_only = coverage.reference_body_profile([_scan_profile(COVERAGE_PRESETS["calf"], 1.0)[0]],
                                                [COVERAGE_PRESETS["calf"]], 10.0)
    assert np.isnan(calf_only[coverage.PROFILE_GRID < 0.59]).all()
    assert not np.isnan(calf_only[(coverage.PROFILE_GRID > 0.61) & (coverage.PROFILE_GRID < 0.99)]).any()


@pytest.mark.parametrize("name,scale", [("thigh", 1.0), ("calf", 1.15), ("pelvis_knee", 0.85), ("0.3:0.8", 1.05)])
def test_coverage_from_profile_finds_the_stretch_and_the_size(name, scale):
    ref = _outline(coverage.PROFILE_GRID)
    truth = coverage.parse_coverage(name)
    profile, n = _scan_profile(truth, scale)
    found, misfit = coverage.coverage_from_profile(profile, 10.0, ref)
    assert found == pytest.approx(truth, abs=0.02)
    assert misfit < 0.05


def test_coverage_from_profile_only_where_the_reference_has_data():
    """A cohort of calf scans: a thigh scan cannot be placed in the thigh (no data there)."""
    ref = np.where(coverage.PROFILE_GRID >= 0.6, _outline(coverage.PROFILE_GRID), np.nan)
    found, _ = coverage.coverage_from_profile(_scan_profile(COVERAGE_PRESETS["calf"], 1.0)[0], 10.0, ref)
    assert found == pytest.approx(COVERAGE_PRESETS["calf"], abs=0.02)
    found, _ = coverage.coverage_from_profile(_scan_profile(COVERAGE_PRESETS["thigh"], 1.0)[0], 10.0, ref)
    assert found[0] >= 0.6 - 0.04


def test_coverage_of_scan_from_the_outline_and_its_source():
    ref = _outline(coverage.PROFILE_GRID)
    profile, n = _scan_profile(COVERAGE_PRESETS["thigh"], 1.0)
    found, source = coverage.coverage_of_scan(n, 10.0, profile=profile, reference=ref, return_source=True)
    assert found == pytest.approx(COVERAGE_PRESETS["thigh"], abs=0.02)
    assert source.startswith("body outline, misfit 0.0")
    # the other sources, in the order of the rule: given, scan length, labels
    assert coverage.coverage_of_scan(n, 10.0, coverage="calf", profile=profile, reference=ref,
                                     return_source=True) == (COVERAGE_PRESETS["calf"], "given")
    assert coverage.coverage_of_scan(110, 10.0, profile=profile, reference=ref,
                                     return_source=True) == (WHOLE, "scan length")
    labels = np.zeros((6, 4, 40), np.uint8)
    _place(labels, 0.20, "biceps_femoris_short")
    assert coverage.coverage_of_scan(40, DZ_MM, labels=labels, profile=profile, reference=ref,
                                     return_source=True)[1] == "labels"


@pytest.mark.parametrize("profile", [np.random.default_rng(1).uniform(0, 60000, 45),         # noise
                                     _scan_profile(COVERAGE_PRESETS["thigh"], 1.0)[0][::-1]])  # upside down
def test_coverage_of_scan_refuses_an_outline_that_fits_nothing(profile):
    """(A uniform cylinder is not refused by every reference: it looks like the pelvis of a small
    adult here; the printed source and misfit, and --coverage, are the user's check.)"""
    with pytest.raises(ValueError, match=r"does not match the training cohort's .*misfit.*--coverage"):
        coverage.coverage_of_scan(profile.size, 10.0, profile=profile, reference=_outline(coverage.PROFILE_GRID))


def test_view_margin_moves_only_the_cut_ends():
    """With a margin, a muscle must reach that far past a cut end; the span's own ends (T12,
    ankle) are not cut and keep everything that reaches them."""
    rot = [anatomy.label_id("external_rotators", s) for s in ("right", "left")]      # extent 0.18-0.21
    thigh, margin = COVERAGE_PRESETS["thigh"], coverage.ESTIMATE_VIEW_MARGIN
    assert set(rot) <= set(coverage.regions_in_view(thigh))
    assert not set(rot) & set(coverage.regions_in_view(thigh, margin))
    expected = {lab for lab in anatomy.REGIONS
                if _overlap_len(_extent(anatomy.muscle_of_label(lab).key), (0.19 + margin, 0.60 - margin)) > 0}
    assert set(coverage.regions_in_view(thigh, margin)) == expected
    assert coverage.regions_in_view(WHOLE, margin) == coverage.regions_in_view(WHOLE)
    calf = COVERAGE_PRESETS["calf"]                       # only its top is cut
    assert set(coverage.regions_inside_view(calf, margin)) == {
        lab for lab in anatomy.REGIONS if _extent(anatomy.muscle_of_label(lab).key)[0] >= 0.60 + margin}
    assert set(coverage.regions_inside_view(thigh, margin)) <= set(coverage.regions_inside_view(thigh))


def _overlap_len(extent, view):
    return min(extent[1], view[1]) - max(extent[0], view[0])
