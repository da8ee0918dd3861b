"""Phantom anatomy: subjects, grids, determinism, labels, volumes, mirror symmetry, positions."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage, stats

from llseg import anatomy, phantom


def _render(subject, spacing, matrix=(480, 380)):
    """Render ``subject`` on a field of view of ``matrix`` mm covering T12 to the ankle."""
    nx, ny = int(round(matrix[0] / spacing[0])), int(round(matrix[1] / spacing[1]))
    nz = int(np.ceil(phantom.span_mm(subject) / spacing[2])) + 2
    affine = phantom.field_of_view(subject, matrix_xy=(nx, ny), spacing_mm=spacing, n_slices=nz)
    labels, tissue = phantom.render_anatomy(subject, affine, (nx, ny, nz))
    return labels, tissue, affine


@pytest.fixture(scope="module")
def subject():
    return phantom.sample_subject(0)


@pytest.fixture(scope="module")
def moderate(subject):
    """Seed 0 at 2 x 2 x 5 mm (the grid the acceptance checks run on)."""
    return _render(subject, (2.0, 2.0, 5.0))


@pytest.fixture(scope="module")
def coarse(subject):
    return _render(subject, (4.0, 4.0, 10.0))


def _volumes_ml(labels, affine):
    return np.bincount(labels.ravel(), minlength=71) * abs(np.linalg.det(affine[:3, :3])) / 1000.0


def _centroids(mask2d, affine):
    """World (x, y) centroid of a 2-D mask of an axial slice."""
    ii, jj = np.nonzero(mask2d)
    return affine[0, 0] * ii.mean() + affine[0, 3], affine[1, 1] * jj.mean() + affine[1, 3]


def _slice_at(subject, affine, fraction):
    z = phantom.z_of_fraction(subject, fraction)
    return int(round((z - affine[2, 3]) / affine[2, 2]))


# ---- subjects ------------------------------------------------------------------------------
def test_sample_subject_is_deterministic_and_serialisable():
    a, b, c = phantom.sample_subject(3), phantom.sample_subject(3), phantom.sample_subject(4)
    assert a == b and a != c and hash(a) == hash(b)
    d = json.loads(json.dumps(a.to_dict()))
    assert phantom.Subject.from_dict(d) == a
    assert set(a.hypertrophy) == set(a.asymmetry) == {m.key for m in anatomy.MUSCLES}
    assert 0.3 <= a.intermuscular_fat_mm <= 1.0 and 0.07 <= a.body_fat <= 0.16


def test_sample_subject_spreads_follow_arguments():
    flat = phantom.sample_subject(5, asymmetry_sd=0.0, hypertrophy_sd=0.0)
    assert set(flat.asymmetry.values()) == {1.0} and set(flat.hypertrophy.values()) == {1.0}
    wide = phantom.sample_subject(5, asymmetry_sd=0.2)
    assert np.std(np.log(list(wide.asymmetry.values()))) > 0.1


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_sample_subject_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        phantom.sample_subject(bad)


def test_subject_validation_quotes_bad_values():
    d = phantom.sample_subject(0).to_dict()
    with pytest.raises(ValueError, match="height_m"):
        phantom.Subject.from_dict({**d, "height_m": 7.0})
    with pytest.raises(ValueError, match="hypertrophy"):
        phantom.Subject.from_dict({**d, "hypertrophy": {"soleus": 1.0}})
    with pytest.raises(ValueError, match="unknown keys"):
        phantom.Subject.from_dict({**d, "wingspan": 2.0})


def test_span_and_body_axis(subject):
    span = phantom.span_mm(subject)
    assert 0.55 * subject.height_m * 1000 < span < 0.65 * subject.height_m * 1000
    assert phantom.z_of_fraction(subject, 0.0) == pytest.approx(span)
    assert phantom.z_of_fraction(subject, 1.0) == pytest.approx(0.0)
    z = phantom.z_of_fraction(subject, np.linspace(-0.1, 1.1, 50))
    assert np.all(np.diff(z) < 0)       # superior (T12) at larger z
    hip = phantom.z_of_fraction(subject, phantom.LANDMARKS["hip_joint"])
    knee = phantom.z_of_fraction(subject, phantom.LANDMARKS["knee_joint"])
    assert hip - knee == pytest.approx(subject.thigh_ratio * subject.height_m * 1000)


# ---- grids ---------------------------------------------------------------------------------
def test_field_of_view_is_centred_ras_grid(subject):
    A = phantom.field_of_view(subject, matrix_xy=(100, 80), spacing_mm=(4.0, 4.0, 10.0), n_slices=120)
    assert np.allclose(A[:3, :3], np.diag([4.0, 4.0, 10.0]))
    centre = A @ np.array([99 / 2, 79 / 2, 119 / 2, 1.0])
    assert centre[0] == pytest.approx(0.0)                      # body midline
    assert centre[2] == pytest.approx(phantom.span_mm(subject) / 2)
    assert (A @ [0, 0, 0, 1])[2] < 0 < phantom.span_mm(subject) < (A @ [0, 0, 119, 1])[2]
    with pytest.raises(ValueError, match="spacing_mm"):
        phantom.field_of_view(subject, matrix_xy=(10, 10), spacing_mm=(1.0, 0.0, 5.0), n_slices=4)
    with pytest.raises(ValueError, match="matrix_xy"):
        phantom.field_of_view(subject, matrix_xy=(10, -1), spacing_mm=(1.0, 1.0, 5.0), n_slices=4)
    with pytest.raises(ValueError, match="n_slices"):
        phantom.field_of_view(subject, matrix_xy=(10, 10), spacing_mm=(1.0, 1.0, 5.0), n_slices=0)


def test_render_rejects_bad_inputs(subject):
    A = np.diag([4.0, 4.0, 10.0, 1.0])
    with pytest.raises(TypeError, match="Subject"):
        phantom.render_anatomy(subject.to_dict(), A, (4, 4, 4))
    oblique = A.copy()
    oblique[0, 1] = 1.0
    with pytest.raises(ValueError, match="axis-aligned"):
        phantom.render_anatomy(subject, oblique, (4, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        phantom.render_anatomy(subject, A, (4, 0, 4))
    with pytest.raises(ValueError, match="4x4"):
        phantom.render_anatomy(subject, A[:3], (4, 4, 4))


def test_one_voxel_and_empty_grids(subject, moderate):
    # A one-voxel grid at a vastus lateralis voxel of the 2 x 2 x 5 mm rendering samples the same
    # anatomy (the phantom is continuous in space, not tied to a grid).
    labels, _, affine = moderate
    k = _slice_at(subject, affine, 0.40)
    vl = labels[:, :, k] == anatomy.label_id("vastus_lateralis", "right")
    ii, jj = np.nonzero(ndimage.binary_erosion(vl, iterations=2))
    centre = affine @ [ii[len(ii) // 2], jj[len(jj) // 2], k, 1.0]
    A = np.diag([1.0, 1.0, 1.0, 1.0])
    A[:3, 3] = centre[:3]
    lab, tis = phantom.render_anatomy(subject, A, (1, 1, 1))
    assert lab.shape == tis.shape == (1, 1, 1) and lab.dtype == tis.dtype == np.uint8
    assert lab[0, 0, 0] == anatomy.label_id("vastus_lateralis", "right")
    assert tis[0, 0, 0] == phantom.TISSUE["muscle"]
    # Far outside the body: air only.
    A[:3, 3] = [900.0, 900.0, centre[2]]
    lab, tis = phantom.render_anatomy(subject, A, (3, 2, 2))
    assert not lab.any() and not tis.any()


def test_flipped_and_anisotropic_grids_sample_the_same_anatomy(subject):
    A = phantom.field_of_view(subject, matrix_xy=(96, 60), spacing_mm=(5.0, 6.0, 40.0), n_slices=20)
    lab, tis = phantom.render_anatomy(subject, A, (96, 60, 20))
    flipped = A.copy()
    flipped[0, 0], flipped[0, 3] = -A[0, 0], A[0, 3] + A[0, 0] * 95
    lab_f, tis_f = phantom.render_anatomy(subject, flipped, (96, 60, 20))
    assert np.array_equal(lab_f, lab[::-1]) and np.array_equal(tis_f, tis[::-1])
    assert lab.any()


# ---- determinism ----------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays(subject, coarse):
    labels, tissue, _ = _render(phantom.sample_subject(0), (4.0, 4.0, 10.0))
    assert np.array_equal(labels, coarse[0]) and np.array_equal(tissue, coarse[1])
    other, _, _ = _render(phantom.sample_subject(1), (4.0, 4.0, 10.0))
    assert not np.array_equal(other, coarse[0])


# ---- labels and tissues -----------------------------------------------------------------------
def test_all_70_labels_present_and_tissues_consistent(moderate):
    labels, tissue, _ = moderate
    assert labels.dtype == np.uint8 and tissue.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(71))
    assert set(np.unique(tissue)) == set(phantom.TISSUE.values())
    assert np.all(tissue[labels > 0] == phantom.TISSUE["muscle"])
    # Air outside, fat around the body: the first voxel row is background.
    assert not tissue[0].any() and not tissue[:, 0].any()


def test_right_leg_is_at_positive_x(moderate):
    labels, _, affine = moderate
    assert anatomy.RIGHT_LEG_AT_POSITIVE_X
    x = affine[0, 0] * np.arange(labels.shape[0]) + affine[0, 3]
    ii = np.nonzero(labels)[0]
    lab = labels[np.nonzero(labels)]
    assert np.all(x[ii[lab <= 35]] > 0) and np.all(x[ii[lab > 35]] < 0)


def test_volumes_match_targets_classes_and_order(subject, moderate):
    labels, _, affine = moderate
    vol = _volumes_ml(labels, affine)
    size = (subject.height_m / 1.8) ** 2.5 * subject.muscularity
    mean_lr, ref = [], []
    for m in anatomy.MUSCLES:
        target = m.volume_ml * subject.hypertrophy[m.key] * size
        r = np.sqrt(subject.asymmetry[m.key])
        assert vol[m.right_label] == pytest.approx(target / r, rel=0.35), m.key
        assert vol[m.left_label] == pytest.approx(target * r, rel=0.35), m.key
        mean_lr.append(0.5 * (vol[m.right_label] + vol[m.left_label]))
        ref.append(m.volume_ml)
    mean_lr, ref = np.array(mean_lr), np.array(ref)
    assert stats.spearmanr(ref, mean_lr).statistic > 0.9
    classes = [ref >= 400, (ref >= 150) & (ref < 400), (ref >= 50) & (ref < 150), ref < 50]
    medians = [np.median(mean_lr[c]) for c in classes]
    assert medians == sorted(medians, reverse=True)
    assert mean_lr[classes[0]].min() > mean_lr[classes[3]].max() * 5


def test_small_muscles_are_genuinely_small(moderate):
    vol = _volumes_ml(moderate[0], moderate[2])
    for key in ("external_rotators", "popliteus", "quadratus_femoris", "piriformis", "obturator_internus"):
        for side in ("right", "left"):
            assert 0 < vol[anatomy.label_id(key, side)] < 50, (key, side)


def test_left_leg_mirrors_right_within_asymmetry(subject, moderate):
    labels, _, affine = moderate
    vol = _volumes_ml(labels, affine)
    idx = np.nonzero(labels)
    xyz = (affine[:3, :3] @ np.array(idx)).T + affine[:3, 3]
    lab = labels[idx]
    for m in anatomy.MUSCLES:
        ratio = vol[m.left_label] / vol[m.right_label]
        tol = 0.12 if m.volume_ml >= 50 else 0.3
        assert ratio == pytest.approx(subject.asymmetry[m.key], rel=tol), m.key
        cr, cl = xyz[lab == m.right_label].mean(axis=0), xyz[lab == m.left_label].mean(axis=0)
        assert cl[0] == pytest.approx(-cr[0], abs=10.0), m.key
        assert cl[1:] == pytest.approx(cr[1:], abs=10.0), m.key


@pytest.mark.parametrize("side", ["right", "left"])
def test_relative_positions_mid_thigh_and_mid_calf(subject, moderate, side):
    labels, _, affine = moderate
    sgn = 1.0 if side == "right" else -1.0

    def pos(k, key):
        x, y = _centroids(labels[:, :, k] == anatomy.label_id(key, side), affine)
        return sgn * x, y                                   # (lateral, anterior)

    k = _slice_at(subject, affine, 0.40)
    rf, vi, vl, vm = (pos(k, m) for m in ("rectus_femoris", "vastus_intermedius", "vastus_lateralis",
                                          "vastus_medialis"))
    bf, st, sm = (pos(k, m) for m in ("biceps_femoris_long", "semitendinosus", "semimembranosus"))
    assert rf[1] > vi[1]                                    # rectus femoris anterior of intermedius
    assert vl[0] > vm[0]                                    # lateralis lateral of medialis
    assert max(bf[1], st[1], sm[1]) < min(vi[1], vl[1], vm[1])   # hamstrings posterior
    assert bf[0] > st[0]                                    # biceps femoris lateral of semitendinosus
    k = _slice_at(subject, affine, 0.75)
    so, gm, gl, ta = (pos(k, m) for m in ("soleus", "gastrocnemius_medial", "gastrocnemius_lateral",
                                          "tibialis_anterior"))
    assert so[1] > max(gm[1], gl[1])                        # soleus deep (anterior) to gastrocnemius
    assert gm[0] < gl[0]                                    # medial head medial
    others = [pos(k, m.key)[1] for m in anatomy.MUSCLES
              if m.part == "lower_leg" and m.key != "tibialis_anterior"
              and (labels[:, :, k] == anatomy.label_id(m.key, side)).any()]
    assert len(others) >= 6 and ta[1] > max(others)         # tibialis anterior most anterior


def test_every_muscle_touches_another(moderate):
    labels = moderate[0]
    for lab, box in enumerate(ndimage.find_objects(labels), start=1):
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        sub = labels[box]
        mask = sub == lab
        ring = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool)) & ~mask
        assert ((sub > 0) & (sub != lab) & ring).any(), anatomy.region_name(lab)


def test_intermuscular_fat_and_body_fat_follow_subject(subject):
    lean = dataclasses.replace(subject, intermuscular_fat_mm=0.0, body_fat=0.06)
    fatty = dataclasses.replace(subject, intermuscular_fat_mm=2.0, body_fat=0.25)
    A = phantom.field_of_view(subject, matrix_xy=(120, 95), spacing_mm=(4.0, 4.0, 20.0), n_slices=30)
    fat_per_muscle = []
    for s in (lean, fatty):
        labels, tissue = phantom.render_anatomy(s, A, (120, 95, 30))
        fat_per_muscle.append((tissue == phantom.TISSUE["fat"]).sum() / (tissue == phantom.TISSUE["muscle"]).sum())
        # Labelled voxels are muscle; the carved fat layer is unlabelled.
        assert np.all(tissue[labels > 0] == phantom.TISSUE["muscle"])
    assert fat_per_muscle[1] > 1.5 * fat_per_muscle[0]


def _llseg_modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('llseg')))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_phantom_imports_only_anatomy_validate_io():
    """The phantom knows nothing of the method, and the method's cohort module nothing of the phantom."""
    used = {m for m in _llseg_modules_after("import llseg.phantom") if not m.startswith("llseg.phantom")}
    assert used <= {"llseg", "llseg.anatomy", "llseg._validate", "llseg.io"}, used
    assert "llseg.phantom" not in _llseg_modules_after("import llseg.cohort")
