"""Digital lower-limb phantom: a subject's anatomy as a muscle label map and a tissue map.

The paper's athlete data are private, so the kit generates its own subjects. This module builds
the anatomy only; ``llseg.mrsim`` turns the tissue map into fat-suppressed PD intensities and
``llseg.io`` writes files. Everything is deterministic from the subject's seed.

World frame
-----------
RAS+ millimetres (``anatomy.RIGHT_LEG_AT_POSITIVE_X``): +x is the subject's Right, +y
Anterior, +z Superior. The body midline is x = 0, y = 0 passes through the hip-joint centres,
z = 0 is the ankle joint and z = ``span_mm(subject)`` is T12. The subject's right leg lies at
+x, the left leg is its mirror image at -x (modulated by the subject's asymmetry factors).

Construction (after ``../shared/design/phantom.md``)
---------------------------------------------------
1. *Body axis*: landmarks are fractions of the T12-to-ankle span (``LANDMARKS``); the subject's
   trunk, thigh and shank ratios stretch the three segments piecewise linearly, so each
   muscle's ``anatomy.Muscle.si_extent`` maps onto the subject (``z_of_fraction``).
2. *Skeleton and organs*: lumbar spine (with discs and canal), sacrum, ilium wings,
   acetabulum, pubis and ischium, femur (head, neck, trochanters, tapered shaft with linea
   aspera, condyles), patella, tibia, fibula and talus as simple solids (ellipsoids,
   capsules, swept ellipses and swept polylines) with a cortical shell around marrow; joint
   spaces; viscera, kidneys and rectum; the abdominal wall; aorta, vena cava and each leg's
   femoral / popliteal / tibial vessels with a thin fat sheath. The femoral shaft runs from
   the trochanter medially down to the knee; each leg is abducted by ``leg_abduction_deg``.
3. *Muscles as tubes*: each of the 35 muscles (plus unlabelled trunk muscles and fat pads)
   has a centreline placed by offsets around a bone axis (tables below) and an elliptical
   cross-section, elongated around that axis, whose area rises from tendon to belly and falls
   again within the SI extent; the area is scaled so the volume is ``volume_ml x hypertrophy
   x body size``, split between the legs so that left / right = ``asymmetry``.
4. *Limb outline*: the muscle compartment is the smoothed union of the tubes, solids and
   viscera, thresholded so its area equals their summed target area (plus every tube's core);
   subcutaneous fat of position-dependent thickness surrounds it.
5. *Packing*: compartment voxels go to the cell with the smallest anisotropic power distance
   ``(p - c)^T M (p - c) - w`` plus a smooth random perturbation (organic boundaries), so
   muscles share touching boundaries as in athletes. Pelvic muscles are kept inside or
   outside the pelvic wall by a soft penalty. The weights ``w`` are calibrated on a coarse
   grid every few mm along z until every cell's area matches its target (a capacity-
   constrained power diagram, which no library provides, hence hand-written); two fat cells
   (pelvic and deep gluteal fat) take whatever space is left.
6. *Intermuscular fat*: voxels closer than half ``intermuscular_fat_mm`` to a boundary between
   two muscle cells become fat (sub-voxel layers give a sparse, faint line).

The anatomy is continuous in space: ``render_anatomy`` samples it at the voxel centres of any
axial grid, so a fine-z rendering and a coarse one show the same subject.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from llseg import _validate, anatomy

__all__ = [
    "TISSUE",
    "LANDMARKS",
    "Subject",
    "sample_subject",
    "span_mm",
    "z_of_fraction",
    "field_of_view",
    "render_anatomy",
]

log = logging.getLogger(__name__)

#: Tissue classes of the tissue map ("fat" = subcutaneous + intermuscular fat, fat pads and
#: tendons; "viscera" = abdominal/pelvic organs, spinal canal, joint cartilage and fluid).
TISSUE: dict[str, int] = {"background": 0, "fat": 1, "muscle": 2, "cortical_bone": 3, "marrow": 4,
                          "vessel": 5, "viscera": 6}
_FAT, _MUS, _CORT, _MAR, _VES, _VIS = (TISSUE[k] for k in ("fat", "muscle", "cortical_bone", "marrow",
                                                           "vessel", "viscera"))

#: Reference landmark positions as fractions of the T12 (0) to ankle (1) span of a 1.8 m adult.
LANDMARKS: dict[str, float] = {"t12": 0.0, "iliac_crest": 0.08, "hip_joint": 0.19, "knee_joint": 0.60,
                               "ankle_joint": 1.0}

_REF_HEIGHT_M = 1.8
_REF_RATIOS = (0.114, 0.246, 0.240)   # T12-hip, hip-knee, knee-ankle lengths / height
_U_HIP, _U_KNEE = LANDMARKS["hip_joint"], LANDMARKS["knee_joint"]

# Numerical settings (they shape the anatomy, not the sampling: any grid sees the same subject).
_H_MM = 3.5                 # in-plane spacing of the calibration grid
_DZ_NODE_MM = 6.0           # SI spacing of the calibration nodes
_U_RANGE = (-0.10, 1.08)    # modelled part of the body axis (beyond it the body is a prism)
_U_TAB = (-0.3, 1.2, 0.0005)   # u grid of the tabulated cell geometry
#: Smoothing of the compartment outline (u -> mm): trunk, thigh, knee and calf.
_SIGMA_OUTLINE_MM = ((-0.3, 0.17, 0.27, 0.52, 0.62, 1.2), (16.0, 16.0, 19.0, 19.0, 15.0, 15.0))
_N_ITER_FIRST, _N_ITER = 60, 12   # weight-calibration iterations at the first / a warm-started node
_RHO_RANGE = (-25.0, 25.0)  # bounds of the relative weight correction
_U_HOLES = 0.2              # above this fraction (trunk, pelvis) enclosed outline gaps are fat, below muscle
_GATE_RAMP, _GATE_PENALTY = 0.01, 400.0   # gate fade-in (fraction of span), penalty (mm^2 per mm)
_CORE = 0.6                 # relative size of the cell cores the compartment always contains
_N_WAVES = 6                # smooth waves shared by the boundary perturbations

# --------------------------------------------------------------------------------------------
# Anatomical tables (reference 1.8 m subject; right side; lat = mm lateral, ant = mm anterior)
# Frames: "mid" = body midline (lat from the midline), "hip" = hip-joint centre, "fem" = femoral
# shaft axis, "tib" = tibial axis. Offsets in "mid"/"hip" scale with the skeleton, in "fem"/"tib"
# with the local muscle size.
# --------------------------------------------------------------------------------------------

# key: (belly peak as fraction of the extent, aspect (tangential elongation), control points
#       (u, frame, lat, ant), gates ((u0, u1, +1 outside / -1 inside the pelvic wall), ...))
_MUSCLE_GEOMETRY = {
    "adductor_brevis": (0.45, 1.3, ((0.20, "mid", 40, 30), (0.23, "mid", 52, 15), (0.26, "fem", -62, 6),
                                    (0.30, "fem", -50, 0), (0.35, "fem", -35, -8)), ()),
    "adductor_longus": (0.35, 1.3, ((0.20, "mid", 25, 55), (0.23, "mid", 40, 45), (0.27, "fem", -68, 25),
                                    (0.33, "fem", -55, 15), (0.40, "fem", -42, 5), (0.45, "fem", -32, -2)), ()),
    "adductor_magnus": (0.40, 1.5, ((0.21, "mid", 45, -30), (0.24, "mid", 55, -30), (0.28, "fem", -58, -22),
                                    (0.36, "fem", -45, -20), (0.45, "fem", -38, -16), (0.52, "fem", -36, -8),
                                    (0.58, "fem", -38, -5)), ()),
    "biceps_femoris_long": (0.50, 1.3, ((0.22, "mid", 58, -55), (0.26, "fem", -34, -52), (0.32, "fem", 4, -52),
                                        (0.40, "fem", 12, -50), (0.48, "fem", 24, -42), (0.54, "fem", 32, -34),
                                        (0.58, "fem", 38, -28)), ()),
    "biceps_femoris_short": (0.60, 1.3, ((0.38, "fem", 14, -22), (0.46, "fem", 20, -24), (0.53, "fem", 28, -25),
                                         (0.58, "fem", 35, -22)), ()),
    "external_rotators": (0.50, 3.0, ((0.18, "hip", 0, -36), (0.195, "hip", 10, -36), (0.21, "hip", 20, -32)),
                          ((0.17, 0.22, 1),)),
    "fibulari": (0.40, 1.3, ((0.62, "tib", 50, -16), (0.70, "tib", 46, -14), (0.80, "tib", 42, -16),
                             (0.88, "tib", 36, -20), (0.92, "tib", 30, -22)), ()),
    "flexor_digitorum_longus": (0.50, 1.2, ((0.66, "tib", -6, -26), (0.75, "tib", -6, -24), (0.85, "tib", -8, -22),
                                            (0.93, "tib", -14, -18)), ()),
    "flexor_hallucis_longus": (0.50, 1.2, ((0.70, "tib", 26, -34), (0.80, "tib", 24, -32), (0.90, "tib", 14, -30),
                                           (0.95, "tib", 8, -28)), ()),
    "gastrocnemius_lateral": (0.35, 1.6, ((0.55, "fem", 30, -38), (0.60, "tib", 30, -40), (0.66, "tib", 30, -48),
                                          (0.73, "tib", 24, -54), (0.80, "tib", 14, -58)), ()),
    "gastrocnemius_medial": (0.35, 1.6, ((0.55, "fem", -30, -38), (0.60, "tib", -28, -42), (0.66, "tib", -28, -50),
                                         (0.73, "tib", -22, -56), (0.80, "tib", -12, -60)), ()),
    "gluteus_maximus": (0.45, 2.2, ((0.12, "mid", 62, -118), (0.15, "mid", 75, -118), (0.19, "hip", 6, -80),
                                    (0.23, "hip", 22, -70), (0.27, "fem", 12, -50), (0.30, "fem", 22, -36)),
                        ((0.11, 0.18, 1),)),
    "gluteus_medius": (0.45, 1.8, ((0.08, "mid", 132, -45), (0.11, "mid", 128, -52), (0.14, "mid", 128, -40),
                                   (0.17, "mid", 135, -20), (0.19, "hip", 52, -8)), ((0.07, 0.19, 1),)),
    "gluteus_minimus": (0.50, 1.8, ((0.10, "mid", 132, -15), (0.13, "mid", 122, -12), (0.16, "mid", 112, -5),
                                    (0.19, "hip", 32, 10)), ((0.09, 0.19, 1),)),
    "gracilis": (0.40, 1.4, ((0.21, "mid", 22, 35), (0.25, "mid", 30, 15), (0.30, "fem", -80, -5),
                             (0.40, "fem", -64, -15), (0.50, "fem", -56, -22), (0.58, "fem", -50, -32),
                             (0.62, "tib", -40, -30)), ()),
    "iliacus": (0.40, 1.6, ((0.08, "mid", 95, -30), (0.11, "mid", 92, -18), (0.14, "mid", 88, 0),
                            (0.17, "mid", 85, 25), (0.20, "hip", 5, 38), (0.23, "fem", -18, 8),
                            (0.26, "fem", -15, -8)), ((0.07, 0.16, -1),)),
    "obturator_externus": (0.50, 1.3, ((0.18, "mid", 48, 15), (0.20, "mid", 52, 8), (0.22, "mid", 68, -12)),
                           ((0.17, 0.23, 1),)),
    "obturator_internus": (0.50, 1.5, ((0.15, "mid", 55, -45), (0.17, "mid", 48, -25), (0.19, "mid", 42, -15),
                                       (0.20, "hip", -15, -40)), ((0.14, 0.193, -1),)),
    "pectineus": (0.50, 1.4, ((0.19, "mid", 50, 62), (0.215, "mid", 55, 45), (0.25, "fem", -48, 10),
                              (0.27, "fem", -38, 0)), ((0.18, 0.22, 1),)),
    "piriformis": (0.50, 1.8, ((0.14, "mid", 35, -70), (0.155, "mid", 65, -72), (0.17, "mid", 95, -50),
                               (0.18, "mid", 112, -35)), ((0.13, 0.148, -1), (0.162, 0.19, 1))),
    "phalangeal_extensors": (0.45, 1.3, ((0.63, "tib", 42, 6), (0.68, "tib", 36, 4), (0.76, "tib", 32, 6),
                                         (0.86, "tib", 22, 12), (0.95, "tib", 12, 20)), ()),
    "popliteus": (0.50, 1.8, ((0.60, "tib", 18, -34), (0.63, "tib", 2, -32), (0.66, "tib", -10, -26)), ()),
    "psoas_major": (0.45, 1.2, ((0.00, "mid", 38, -45), (0.04, "mid", 45, -32), (0.08, "mid", 52, -20),
                                (0.11, "mid", 60, -10), (0.14, "mid", 66, 8), (0.17, "mid", 70, 28),
                                (0.20, "hip", -18, 38), (0.235, "fem", -24, 0), (0.26, "fem", -18, -12)),
                    ((0.07, 0.16, -1),)),
    "quadratus_femoris": (0.50, 1.8, ((0.20, "mid", 82, -45), (0.22, "mid", 88, -42), (0.24, "mid", 95, -38)),
                          ((0.19, 0.235, 1),)),
    "rectus_femoris": (0.40, 1.2, ((0.14, "mid", 108, 15), (0.17, "hip", 20, 30), (0.20, "hip", 18, 45),
                                   (0.25, "fem", -12, 52), (0.35, "fem", -2, 52), (0.45, "fem", 0, 48),
                                   (0.55, "fem", 0, 42)), ()),
    "sartorius": (0.45, 1.6, ((0.12, "mid", 122, 28), (0.15, "mid", 118, 38), (0.19, "hip", 32, 55),
                              (0.24, "fem", -10, 62), (0.30, "fem", -30, 52), (0.38, "fem", -50, 32),
                              (0.46, "fem", -60, 10), (0.54, "fem", -60, -14), (0.62, "tib", -48, -22)), ()),
    "semimembranosus": (0.60, 1.3, ((0.23, "mid", 60, -45), (0.28, "fem", -48, -35), (0.36, "fem", -34, -36),
                                    (0.45, "fem", -28, -36), (0.53, "fem", -26, -32), (0.60, "tib", -25, -28)), ()),
    "semitendinosus": (0.40, 1.3, ((0.22, "mid", 48, -62), (0.27, "fem", -50, -55), (0.34, "fem", -32, -56),
                                   (0.42, "fem", -18, -54), (0.50, "fem", -18, -50), (0.57, "fem", -28, -44),
                                   (0.62, "tib", -34, -38)), ()),
    "soleus": (0.45, 2.6, ((0.63, "tib", 22, -40), (0.70, "tib", 5, -38), (0.80, "tib", 0, -40),
                           (0.88, "tib", 0, -36), (0.92, "tib", 0, -34)), ()),
    "tensor_fasciae_latae": (0.50, 1.5, ((0.13, "mid", 135, 18), (0.17, "mid", 140, 15), (0.20, "hip", 55, 32),
                                         (0.25, "fem", 35, 38)), ()),
    "tibialis_anterior": (0.35, 1.2, ((0.62, "tib", 36, 22), (0.66, "tib", 26, 20), (0.72, "tib", 20, 20),
                                      (0.82, "tib", 14, 22), (0.90, "tib", 6, 24)), ()),
    "tibialis_posterior": (0.40, 1.2, ((0.63, "tib", 14, -28), (0.70, "tib", 12, -20), (0.80, "tib", 10, -18),
                                       (0.88, "tib", 2, -18)), ()),
    "vastus_intermedius": (0.50, 2.6, ((0.22, "fem", 8, 28), (0.30, "fem", 4, 28), (0.45, "fem", 0, 28),
                                       (0.55, "fem", 0, 36)), ()),
    "vastus_lateralis": (0.50, 1.8, ((0.18, "fem", 28, 8), (0.24, "fem", 40, 0), (0.34, "fem", 46, -6),
                                     (0.44, "fem", 44, 0), (0.51, "fem", 38, 12), (0.56, "fem", 32, 22)), ()),
    "vastus_medialis": (0.70, 1.5, ((0.30, "fem", -20, 20), (0.40, "fem", -30, 20), (0.50, "fem", -40, 14),
                                    (0.56, "fem", -45, 10), (0.58, "fem", -40, 15)), ()),
}
assert set(_MUSCLE_GEOMETRY) == {m.key for m in anatomy.MUSCLES}

# Unlabelled cells: name: (tissue, area control (u, cm^2), control points, aspect, gates).
_OTHER_CELLS = {
    "erector_spinae": (_MUS, ((-0.3, 26), (0.0, 26), (0.06, 22), (0.10, 14), (0.13, 6), (0.15, 0)),
                       ((-0.3, "mid", 35, -95), (0.0, "mid", 35, -95), (0.06, "mid", 35, -85),
                        (0.10, "mid", 30, -100), (0.14, "mid", 25, -115)), 1.0, ()),
    "quadratus_lumborum": (_MUS, ((-0.3, 7), (0.0, 7), (0.06, 6), (0.085, 0)),
                           ((-0.3, "mid", 68, -60), (0.06, "mid", 72, -55), (0.085, "mid", 78, -60)), 1.2, ()),
    "abdominal_obliques": (_MUS, ((-0.3, 14), (0.0, 14), (0.05, 10), (0.08, 0)),
                           ((-0.3, "mid", 128, -15), (0.0, "mid", 128, -15), (0.08, "mid", 128, -20)), 2.5, ()),
    "pelvic_floor": (_MUS, ((0.18, 0), (0.20, 5), (0.23, 5), (0.245, 0)),
                     ((0.18, "mid", 20, -40), (0.245, "mid", 15, -50)), 1.2, ()),
    # Pelvic fat inside the lesser pelvis: takes whatever the inner muscles and organs leave
    # (its area is not calibrated, marked by the trailing True).
    "pelvic_fat": (_FAT, ((0.12, 0), (0.15, 6), (0.20, 6), (0.23, 0)),
                   ((0.12, "mid", 40, -50), (0.17, "mid", 42, -38), (0.20, "mid", 35, -32), (0.23, "mid", 30, -40)),
                   1.0, ((0.12, 0.23, -1),), True),
    # Fat around the sciatic nerve behind the hip: likewise takes what the small rotators leave.
    "deep_gluteal_fat": (_FAT, ((0.165, 0), (0.18, 4), (0.22, 4), (0.24, 0)),
                         ((0.165, "hip", -8, -50), (0.20, "hip", -8, -55), (0.24, "hip", -2, -55)),
                         1.0, ((0.16, 0.245, 1),), True),
    "ischioanal_fat": (_FAT, ((0.19, 0), (0.21, 8), (0.24, 8), (0.26, 0)),
                       ((0.19, "mid", 30, -75), (0.26, "mid", 25, -70)), 1.0, ()),
    "femoral_triangle_fat": (_FAT, ((0.18, 0), (0.20, 4), (0.26, 4), (0.30, 0)),
                             ((0.18, "hip", -25, 45), (0.22, "hip", -30, 48), (0.26, "fem", -45, 35),
                              (0.30, "fem", -45, 30)), 1.0, ()),
    "suprapatellar_fat": (_FAT, ((0.52, 0), (0.545, 4), (0.57, 0)), ((0.52, "fem", 0, 40), (0.57, "fem", 0, 42)),
                          1.5, ()),
    "popliteal_fat": (_FAT, ((0.53, 0), (0.57, 8), (0.62, 8), (0.66, 0)),
                      ((0.53, "fem", 0, -30), (0.58, "fem", 0, -32), (0.60, "tib", 0, -38),
                       (0.66, "tib", 0, -40)), 1.0, ()),
    "infrapatellar_fat": (_FAT, ((0.585, 0), (0.60, 5), (0.62, 4), (0.635, 0)),
                          ((0.585, "tib", 0, 32), (0.635, "tib", 0, 32)), 1.5, ()),
    "achilles_kager": (_FAT, ((0.82, 0), (0.90, 5), (1.0, 6), (1.1, 6)),
                       ((0.82, "tib", 0, -55), (0.92, "tib", 0, -38), (1.0, "tib", 0, -34)), 1.3, ()),
    "ankle_flexor_tendons": (_FAT, ((0.88, 0), (0.95, 3), (1.1, 3)), ((0.88, "tib", 4, -22), (1.0, "tib", 0, -20)),
                             1.5, ()),
    "ankle_tendons": (_FAT, ((0.88, 0), (0.95, 3), (1.1, 3)), ((0.88, "tib", 8, 24), (1.0, "tib", 5, 25)),
                      1.5, ()),
}

# Pelvic wall used to gate muscles inside (iliac fossa, lesser pelvis) or outside the pelvis:
# u, posterior point P, anterior point A (the inner side is to the left of P -> A).
_WALL = ((0.075, (50, -88), (128, 0)), (0.085, (46, -86), (128, 8)), (0.10, (45, -84), (124, 15)),
         (0.12, (47, -80), (118, 18)), (0.135, (52, -76), (108, 8)), (0.15, (62, -62), (98, -2)),
         (0.165, (70, -45), (90, -5)), (0.19, (52, -45), (30, 60)), (0.215, (45, -50), (20, 55)),
         (0.235, (45, -50), (20, 55)))

# Vessel paths (u, frame, lat, ant, radius mm); veins follow arteries with an offset.
_ARTERY = ((0.078, "mid", 2, -12, 5.0), (0.09, "mid", 25, -12, 4.5), (0.12, "mid", 45, 0, 4.5),
           (0.15, "mid", 58, 15, 4.5), (0.18, "mid", 66, 36, 4.5), (0.21, "hip", -22, 44, 4.2),
           (0.26, "fem", -48, 32, 4.0), (0.35, "fem", -45, 18, 3.8), (0.45, "fem", -40, 2, 3.6),
           (0.52, "fem", -24, -24, 3.5), (0.57, "fem", -2, -32, 3.3), (0.62, "tib", 2, -36, 3.0),
           (0.67, "tib", -2, -32, 2.6), (0.80, "tib", -8, -32, 2.3), (0.95, "tib", -16, -26, 2.0),
           (1.02, "tib", -18, -22, 1.8))
_VEIN_OFFSET = ((0.085, -10, -4, 6.0), (0.20, -10, -4, 5.5), (0.30, -8, -8, 5.0), (0.45, -5, -10, 4.5),
                (0.57, 5, -8, 4.0), (0.80, 6, -6, 2.8), (1.02, 6, -4, 2.2))
_ANTERIOR_TIBIAL = ((0.645, "tib", 20, -12, 2.0), (0.70, "tib", 16, -4, 1.8), (0.85, "tib", 12, 6, 1.6),
                    (0.97, "tib", 6, 18, 1.5))


# --------------------------------------------------------------------------------------------
# Subject
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """All parameters of one phantom subject (JSON-serialisable with ``to_dict``).

    Attributes
    ----------
    seed : int
        Seed the subject was drawn from; also seeds the subject's boundary perturbations.
    height_m : float
        Body height (m).
    trunk_ratio, thigh_ratio, shank_ratio : float
        T12-to-hip-joint, hip-to-knee-joint and knee-to-ankle-joint lengths / height
        (reference 0.114, 0.246, 0.240; their sum times height is ``span_mm``).
    pelvis_width_scale : float
        Relative pelvis width (1 = reference).
    muscularity : float
        Global muscle-volume factor (1 = reference).
    body_fat : float
        Body-fat fraction; sets the subcutaneous fat thickness (40 mm x body_fat on the thigh,
        about 1.6 times that over the abdomen and buttocks, half of it at the ankle).
    intermuscular_fat_mm : float
        Thickness of the fat layer carved at muscle-muscle boundaries (athletes: 0.3-1 mm).
    leg_abduction_deg : float
        Abduction of each leg's mechanical axis from the SI axis (feet apart in the scanner).
    hypertrophy : dict of str to float
        Per-muscle volume factor, keyed by ``anatomy.Muscle.key``.
    asymmetry : dict of str to float
        Per-muscle left/right volume ratio, keyed by ``anatomy.Muscle.key``.
    """

    seed: int
    height_m: float
    trunk_ratio: float
    thigh_ratio: float
    shank_ratio: float
    pelvis_width_scale: float
    muscularity: float
    body_fat: float
    intermuscular_fat_mm: float
    leg_abduction_deg: float
    hypertrophy: dict[str, float]
    asymmetry: dict[str, float]

    def __post_init__(self):
        checks = {"height_m": (1.0, 2.5), "trunk_ratio": (0.05, 0.3), "thigh_ratio": (0.1, 0.4),
                  "shank_ratio": (0.1, 0.4), "pelvis_width_scale": (0.7, 1.4), "muscularity": (0.3, 3.0),
                  "body_fat": (0.0, 0.6), "intermuscular_fat_mm": (0.0, 5.0), "leg_abduction_deg": (-5.0, 20.0)}
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating, np.integer)) and lo <= float(value) <= hi):
                raise ValueError(f"Subject.{name} must be a number in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"Subject.seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        keys = [m.key for m in anatomy.MUSCLES]
        for name in ("hypertrophy", "asymmetry"):
            d = getattr(self, name)
            if not isinstance(d, dict) or set(d) != set(keys):
                got = sorted(d) if isinstance(d, dict) else d
                raise ValueError(f"Subject.{name} must map every muscle key of llseg.anatomy to a factor, got {got!r}")
            values = {k: float(d[k]) for k in keys}
            bad = {k: v for k, v in values.items() if not (np.isfinite(v) and 0.2 <= v <= 5.0)}
            if bad:
                raise ValueError(f"Subject.{name} factors must be finite and in [0.2, 5], got {bad}")
            object.__setattr__(self, name, values)

    def __hash__(self):
        return hash(tuple(tuple(v.items()) if isinstance(v, dict) else v
                          for v in (getattr(self, f.name) for f in dataclasses.fields(self))))

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable) of all parameters."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Subject":
        """Inverse of ``to_dict``.

        Raises
        ------
        ValueError
            Missing or unknown keys, or out-of-range values.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = sorted(set(names) - set(d)), sorted(set(d) - set(names))
        if missing or unknown:
            raise ValueError(f"Subject.from_dict: missing keys {missing}, unknown keys {unknown}")
        return cls(**{n: (dict(d[n]) if isinstance(d[n], dict) else d[n]) for n in names})


def sample_subject(seed: int, *, asymmetry_sd: float = 0.05, hypertrophy_sd: float = 0.12,
                   height_mean_m: float = 1.82, height_sd_m: float = 0.07,
                   body_fat_range: tuple[float, float] = (0.07, 0.16),
                   intermuscular_fat_mm_range: tuple[float, float] = (0.3, 1.0),
                   leg_abduction_deg_range: tuple[float, float] = (1.0, 5.0)) -> Subject:
    """Draw one athlete-like subject, deterministically from ``seed``.

    Parameters
    ----------
    seed : int
        Non-negative seed of ``numpy.random.default_rng``.
    asymmetry_sd : float
        SD of the log left/right volume ratio of each muscle.
    hypertrophy_sd : float
        SD of the log per-muscle volume factor.
    height_mean_m, height_sd_m : float
        Normal height distribution (collegiate athletes), clipped to [1.55, 2.10] m.
    body_fat_range, intermuscular_fat_mm_range, leg_abduction_deg_range : tuple of float
        Uniform ranges of body-fat fraction, intermuscular fat thickness (mm) and leg
        abduction (degrees).

    Returns
    -------
    Subject
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("asymmetry_sd", asymmetry_sd), ("hypertrophy_sd", hypertrophy_sd),
                        ("height_sd_m", height_sd_m)):
        if not (np.isfinite(value) and 0 <= value <= 1):
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    for name, (lo, hi) in (("body_fat_range", body_fat_range), ("intermuscular_fat_mm_range",
                           intermuscular_fat_mm_range), ("leg_abduction_deg_range", leg_abduction_deg_range)):
        if not lo <= hi:
            raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)!r}")
    rng = np.random.default_rng(int(seed))
    height = float(np.clip(rng.normal(height_mean_m, height_sd_m), 1.55, 2.10))
    trunk, thigh, shank = (float(r * math.exp(rng.normal(0.0, sd))) for r, sd in zip(_REF_RATIOS, (0.04, 0.03, 0.03)))
    pelvis = float(math.exp(rng.normal(0.0, 0.04)))
    muscularity = float(math.exp(rng.normal(0.0, 0.10)))
    body_fat = float(rng.uniform(*body_fat_range))
    imf = float(rng.uniform(*intermuscular_fat_mm_range))
    abduction = float(rng.uniform(*leg_abduction_deg_range))
    keys = [m.key for m in anatomy.MUSCLES]
    hyp = {k: float(np.clip(math.exp(v), 0.5, 2.0)) for k, v in zip(keys, rng.normal(0, hypertrophy_sd, len(keys)))}
    asym = {k: float(np.clip(math.exp(v), 0.6, 1.6)) for k, v in zip(keys, rng.normal(0, asymmetry_sd, len(keys)))}
    return Subject(seed=int(seed), height_m=height, trunk_ratio=trunk, thigh_ratio=thigh, shank_ratio=shank,
                   pelvis_width_scale=pelvis, muscularity=muscularity, body_fat=body_fat,
                   intermuscular_fat_mm=imf, leg_abduction_deg=abduction, hypertrophy=hyp, asymmetry=asym)


def _check_subject(subject) -> Subject:
    if not isinstance(subject, Subject):
        raise TypeError(f"subject must be an llseg.phantom.Subject, got {type(subject).__name__}")
    return subject


def span_mm(subject: Subject) -> float:
    """T12-to-ankle length (mm) of ``subject``."""
    s = _check_subject(subject)
    return 1000.0 * s.height_m * (s.trunk_ratio + s.thigh_ratio + s.shank_ratio)


def _g_nodes(subject: Subject) -> np.ndarray:
    """Subject fractions of the reference landmarks 0, hip, knee, 1."""
    total = subject.trunk_ratio + subject.thigh_ratio + subject.shank_ratio
    return np.array([0.0, subject.trunk_ratio / total, (subject.trunk_ratio + subject.thigh_ratio) / total, 1.0])


_U_NODES = np.array([0.0, _U_HIP, _U_KNEE, 1.0])


def _piecewise(x, xs, ys):
    """Piecewise-linear map through (xs, ys), extrapolated linearly beyond both ends."""
    x = np.asarray(x, dtype=float)
    y = np.interp(x, xs, ys)
    lo, hi = x < xs[0], x > xs[-1]
    y = np.where(lo, ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0]), y)
    return np.where(hi, ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), y)


def z_of_fraction(subject: Subject, fraction) -> np.ndarray | float:
    """World z (mm) of a reference body-axis fraction (0 = T12, 1 = ankle; see ``LANDMARKS``).

    The reference fractions of a 1.8 m adult (``anatomy.Muscle.si_extent``) are mapped to the
    subject through its trunk, thigh and shank lengths (piecewise linear).
    """
    span = span_mm(subject)
    z = span * (1.0 - _piecewise(fraction, _U_NODES, _g_nodes(subject)))
    return float(z) if np.ndim(z) == 0 else z


def _fraction_of_z(subject: Subject, z, span: float) -> np.ndarray:
    return _piecewise(1.0 - np.asarray(z, float) / span, _g_nodes(subject), _U_NODES)


def field_of_view(subject: Subject, *, matrix_xy: tuple[int, int], spacing_mm: tuple[float, float, float],
                  n_slices: int) -> np.ndarray:
    """RAS+ affine of an axial acquisition grid covering ``subject`` from T12 to the ankle.

    Parameters
    ----------
    subject : Subject
    matrix_xy : tuple of 2 int
        In-plane matrix (X = left-right, Y = anterior-posterior).
    spacing_mm : tuple of 3 float
        Voxel size (X, Y, Z) in mm.
    n_slices : int
        Number of slices (Z).

    Returns
    -------
    (4, 4) ndarray of float
        ``world = affine @ [i, j, k, 1]``: a diagonal affine (axis 0 = x toward the subject's
        Right, axis 1 = y Anterior, axis 2 = z Superior, i.e. RAS+ canonical), so voxel
        (0, 0, 0) is the Left-Posterior-Inferior corner. The grid is centred on the body
        midline in x, on the body's AP centre in y and on the middle of the T12-to-ankle span in
        z (``n_slices x spacing`` shorter than ``span_mm`` clips both ends equally).

    Raises
    ------
    ValueError
        Non-positive matrix, slice count or spacing.
    """
    s = _check_subject(subject)
    spacing = _validate.spacing(spacing_mm, 3)
    try:
        nx, ny = (int(v) for v in matrix_xy)
    except (TypeError, ValueError):
        raise ValueError(f"matrix_xy must be two positive integers, got {matrix_xy!r}") from None
    if nx < 1 or ny < 1 or len(tuple(matrix_xy)) != 2:
        raise ValueError(f"matrix_xy must be two positive integers, got {matrix_xy!r}")
    if isinstance(n_slices, bool) or int(n_slices) != n_slices or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices!r}")
    scale = s.height_m / _REF_HEIGHT_M
    centre = np.array([0.0, -33.0 * scale, 0.5 * span_mm(s)])       # body AP extent ~ -160 .. +95 mm
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = centre - 0.5 * (np.array([nx, ny, int(n_slices)]) - 1) * np.array(spacing)
    return affine


# --------------------------------------------------------------------------------------------
# Geometric primitives (world mm). ``paint`` returns (i0, i1, j0, j1, outer, inner, kind) on the
# bounding box of the cross-section at height z, or None.
# --------------------------------------------------------------------------------------------
def _bbox(xs, ys, x0, x1, y0, y1):
    i0, i1 = np.searchsorted(xs, x0, "left"), np.searchsorted(xs, x1, "right")
    j0, j1 = np.searchsorted(ys, y0, "left"), np.searchsorted(ys, y1, "right")
    if i1 <= i0 or j1 <= j0:
        return None
    return int(i0), int(i1), int(j0), int(j1)


class _Prim:
    """A solid of the tissue map; subclasses implement ``paint(u, z, xs, ys)``."""

    kind = "bone"   # bone | joint | viscera | fat | vessel | muscle | cut (fat over bone)
    layer = 1       # painting order: 0 under bones, 1 bones, 2 over bones, 3 vessel rims, 4 vessels


class _CellDisc:
    """Disc around a muscle cell's centre (area x ``scale``), used to keep viscera off it."""

    def __init__(self, model, side, name, scale):
        self.model, self.side, self.scale = model, side, scale
        self.k = [c.name for c in model.cells[side]].index(name)

    def params(self, u):
        row = self.model.cell_row(self.side, u)[self.k]
        if row[0] <= 1.0:
            return None
        r = math.sqrt(row[0] * self.scale / math.pi)
        return row[1], row[2], r, r


class _Ellipsoid(_Prim):
    """Axis-aligned ellipsoid (centre and semi-axes in world mm)."""

    def __init__(self, kind, centre, semi, cortex=0.0, layer=1):
        self.kind, self.layer = kind, layer
        self.c, self.semi, self.cortex = np.asarray(centre, float), np.asarray(semi, float), float(cortex)

    def paint(self, u, z, xs, ys):
        dz = z - self.c[2]
        s2 = 1.0 - (dz / self.semi[2]) ** 2
        if s2 <= 0:
            return None
        ax, ay = self.semi[0] * math.sqrt(s2), self.semi[1] * math.sqrt(s2)
        bb = _bbox(xs, ys, self.c[0] - ax, self.c[0] + ax, self.c[1] - ay, self.c[1] + ay)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        dx, dy = (xs[i0:i1, None] - self.c[0]), (ys[None, j0:j1] - self.c[1])
        outer = (dx / ax) ** 2 + (dy / ay) ** 2 <= 1.0
        inner = None
        if self.cortex > 0:
            a, b, cz = self.semi - self.cortex
            if min(a, b, cz) > 0 and abs(dz) < cz:
                t = math.sqrt(1.0 - (dz / cz) ** 2)
                inner = (dx / (a * t)) ** 2 + (dy / (b * t)) ** 2 <= 1.0
        return i0, i1, j0, j1, outer, inner, self.kind


class _Capsule(_Prim):
    """Segment a -> b with radius tapering ra -> rb (hemispherical caps)."""

    def __init__(self, kind, a, b, ra, rb, cortex=0.0, layer=1):
        self.kind, self.layer = kind, layer
        self.a, self.b = np.asarray(a, float), np.asarray(b, float)
        self.ra, self.rb, self.cortex = float(ra), float(rb), float(cortex)
        self.d = self.b - self.a
        self.len2 = float(self.d @ self.d)
        self.rmax = max(self.ra, self.rb)

    def paint(self, u, z, xs, ys):
        za, zb = self.a[2], self.b[2]
        if z < min(za, zb) - self.rmax or z > max(za, zb) + self.rmax:
            return None
        if abs(zb - za) > 1e-9:
            t_lo, t_hi = sorted(((z - self.rmax - za) / (zb - za), (z + self.rmax - za) / (zb - za)))
            t_lo, t_hi = max(t_lo, 0.0), min(t_hi, 1.0)
        else:
            t_lo, t_hi = 0.0, 1.0
        p_lo, p_hi = self.a + t_lo * self.d, self.a + t_hi * self.d
        r = self.rmax
        bb = _bbox(xs, ys, min(p_lo[0], p_hi[0]) - r, max(p_lo[0], p_hi[0]) + r,
                   min(p_lo[1], p_hi[1]) - r, max(p_lo[1], p_hi[1]) + r)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        px, py, pz = xs[i0:i1, None] - self.a[0], ys[None, j0:j1] - self.a[1], z - self.a[2]
        t = np.clip((px * self.d[0] + py * self.d[1] + pz * self.d[2]) / self.len2, 0.0, 1.0)
        d2 = (px - t * self.d[0]) ** 2 + (py - t * self.d[1]) ** 2 + (pz - t * self.d[2]) ** 2
        rad = self.ra + t * (self.rb - self.ra)
        outer = d2 <= rad ** 2
        inner = None
        if self.cortex > 0:
            ri = np.maximum(rad - self.cortex, 0.0)
            inner = d2 <= ri ** 2
        return i0, i1, j0, j1, outer, inner, self.kind


class _SweptEllipse(_Prim):
    """Axis-aligned ellipse whose centre and half-axes are interpolated along u."""

    def __init__(self, kind, u, cx, cy, ax, ay, cortex=None, cuts=(), gaps=(), gap_kind="joint", layer=1):
        self.kind, self.layer = kind, layer
        self.u = np.asarray(u, float)
        self.p = np.stack([np.broadcast_to(np.asarray(v, float), self.u.shape) for v in (cx, cy, ax, ay)])
        self.cortex = None if cortex is None else np.broadcast_to(np.asarray(cortex, float), self.u.shape)
        self.cuts, self.gaps, self.gap_kind = tuple(cuts), tuple(gaps), gap_kind

    def params(self, u):
        if u < self.u[0] or u > self.u[-1]:
            return None
        return [float(np.interp(u, self.u, row)) for row in self.p]

    def paint(self, u, z, xs, ys):
        prm = self.params(u)
        if prm is None or min(prm[2], prm[3]) <= 0.3:
            return None
        cx, cy, ax, ay = prm
        bb = _bbox(xs, ys, cx - ax, cx + ax, cy - ay, cy + ay)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        dx, dy = xs[i0:i1, None] - cx, ys[None, j0:j1] - cy
        outer = (dx / ax) ** 2 + (dy / ay) ** 2 <= 1.0
        kind = self.kind
        if any(g0 <= u <= g1 for g0, g1 in self.gaps):
            return i0, i1, j0, j1, outer, None, self.gap_kind
        inner = None
        if self.cortex is not None:
            c = float(np.interp(u, self.u, self.cortex))
            if ax - c > 0 and ay - c > 0:
                inner = (dx / (ax - c)) ** 2 + (dy / (ay - c)) ** 2 <= 1.0
        for cut in self.cuts:
            cp = cut.params(u)
            if cp is not None and min(cp[2], cp[3]) > 0.3:
                outer &= ((xs[i0:i1, None] - cp[0]) / cp[2]) ** 2 + ((ys[None, j0:j1] - cp[1]) / cp[3]) ** 2 > 1.0
        return i0, i1, j0, j1, outer, inner, kind


class _Ring(_Prim):
    """Band of thickness t(u) around a swept ellipse, anterior of a fraction of its height
    (the anterior and lateral abdominal wall around the viscera)."""

    def __init__(self, kind, base, u, thickness, front, layer=0):
        self.kind, self.layer, self.base = kind, layer, base
        self.u, self.t, self.front = np.asarray(u, float), np.asarray(thickness, float), np.asarray(front, float)

    def paint(self, u, z, xs, ys):
        prm = self.base.params(u)
        if prm is None or u < self.u[0] or u > self.u[-1]:
            return None
        cx, cy, ax, ay = prm
        t = float(np.interp(u, self.u, self.t))
        if t <= 0.3 or min(ax, ay) <= 0.3:
            return None
        y0 = cy - float(np.interp(u, self.u, self.front)) * ay
        bb = _bbox(xs, ys, cx - ax - t, cx + ax + t, y0, cy + ay + t)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        dx, dy = xs[i0:i1, None] - cx, ys[None, j0:j1] - cy
        outer = ((dx / (ax + t)) ** 2 + (dy / (ay + t)) ** 2 <= 1.0) & ((dx / ax) ** 2 + (dy / ay) ** 2 > 1.0)
        return i0, i1, j0, j1, outer, None, self.kind


class _SweptPolyline(_Prim):
    """Thick polyline (points and half-thicknesses interpolated along u), e.g. the ilium wing."""

    def __init__(self, kind, u, pts, half, cortex=0.0, layer=1):
        self.kind, self.layer = kind, layer
        self.u, self.pts, self.half = np.asarray(u, float), np.asarray(pts, float), np.asarray(half, float)
        self.cortex = float(cortex)

    def paint(self, u, z, xs, ys):
        if u < self.u[0] or u > self.u[-1]:
            return None
        k = int(np.clip(np.searchsorted(self.u, u) - 1, 0, len(self.u) - 2))
        a = (u - self.u[k]) / (self.u[k + 1] - self.u[k])
        pts = (1 - a) * self.pts[k] + a * self.pts[k + 1]
        half = (1 - a) * self.half[k] + a * self.half[k + 1]
        hmax = float(half.max())
        bb = _bbox(xs, ys, pts[:, 0].min() - hmax, pts[:, 0].max() + hmax, pts[:, 1].min() - hmax,
                   pts[:, 1].max() + hmax)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        X, Y = xs[i0:i1, None], ys[None, j0:j1]
        outer = np.zeros((i1 - i0, j1 - j0), bool)
        inner = np.zeros_like(outer)
        for m in range(len(pts) - 1):
            d = pts[m + 1] - pts[m]
            t = np.clip(((X - pts[m, 0]) * d[0] + (Y - pts[m, 1]) * d[1]) / max(d @ d, 1e-9), 0.0, 1.0)
            d2 = (X - pts[m, 0] - t * d[0]) ** 2 + (Y - pts[m, 1] - t * d[1]) ** 2
            h = half[m] + t * (half[m + 1] - half[m])
            outer |= d2 <= h ** 2
            if self.cortex > 0:
                inner |= d2 <= np.maximum(h - self.cortex, 0.0) ** 2
        return i0, i1, j0, j1, outer, (inner if self.cortex > 0 else None), self.kind


class _Shell(_Prim):
    """Acetabulum: spherical shell around the femoral head, medial and superior part only."""

    def __init__(self, kind, centre, r_in, r_out, side, lat_max, dz_min, cortex=0.0, layer=1):
        self.kind, self.layer = kind, layer
        self.c, self.r_in, self.r_out = np.asarray(centre, float), float(r_in), float(r_out)
        self.side, self.lat_max, self.dz_min, self.cortex = side, float(lat_max), float(dz_min), float(cortex)

    def paint(self, u, z, xs, ys):
        dz = z - self.c[2]
        if abs(dz) >= self.r_out or dz < self.dz_min:
            return None
        ro = math.sqrt(self.r_out ** 2 - dz ** 2)
        bb = _bbox(xs, ys, self.c[0] - ro, self.c[0] + ro, self.c[1] - ro, self.c[1] + ro)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        dx, dy = xs[i0:i1, None] - self.c[0], ys[None, j0:j1] - self.c[1]
        r2 = dx ** 2 + dy ** 2 + dz ** 2
        medial = self.side * dx < self.lat_max
        outer = (r2 <= self.r_out ** 2) & (r2 > self.r_in ** 2) & medial
        inner = None
        if self.cortex > 0:
            inner = (r2 <= (self.r_out - self.cortex) ** 2) & (r2 > (self.r_in + self.cortex) ** 2) & medial
        return i0, i1, j0, j1, outer, inner, self.kind


_KIND_TISSUE = {"bone": _CORT, "joint": _VIS, "viscera": _VIS, "fat": _FAT, "cut": _FAT, "vessel": _VES,
                "muscle": _MUS}


# --------------------------------------------------------------------------------------------
# The subject model: skeleton, cells, calibration
# --------------------------------------------------------------------------------------------
def _bump(t, peak):
    """Belly profile on t in (0, 1): 0 at both tendon ends, 1 at ``peak``."""
    t = np.asarray(t, float)
    gamma = math.log(0.5) / math.log(peak)
    inside = (t > 0) & (t < 1)
    tt = np.where(inside, t, 0.5)
    return np.where(inside, np.sin(np.pi * tt ** gamma) ** 0.7, 0.0)


@dataclass
class _Cell:
    name: str
    label: int          # region id on this side (0 = unlabelled)
    tissue: int
    u: np.ndarray       # control u
    cx: np.ndarray      # world centre at the control points
    cy: np.ndarray
    ox: np.ndarray      # world frame origin (the axis the cell wraps around)
    oy: np.ndarray
    aspect: float
    gates: tuple
    area_peak: float = 0.0     # labelled: peak area (mm^2) of the bump
    extent: tuple = (0.0, 1.0)
    peak: float = 0.5
    area_u: np.ndarray | None = None   # unlabelled: control u and area (mm^2)
    area_v: np.ndarray | None = None
    pert: np.ndarray | None = None     # (K,) coefficients of the shared perturbation waves
    absorb: bool = False               # area not calibrated: takes what its neighbours leave

    def areas(self, u: np.ndarray) -> np.ndarray:
        """Target cross-sectional area (mm^2) at the body-axis fractions ``u``."""
        if self.area_u is not None:
            return np.interp(u, self.area_u, self.area_v)
        return self.area_peak * _bump((u - self.extent[0]) / (self.extent[1] - self.extent[0]), self.peak)

    def gate(self, u: float) -> float:
        """Signed gate strength at u: +1 outside / -1 inside the pelvic wall, ramped at the ends."""
        for g0, g1, g in self.gates:
            ramp = min(1.0, (u - g0) / _GATE_RAMP, (g1 - u) / _GATE_RAMP)
            if ramp > 0:
                return g * ramp
        return 0.0


class _Model:
    """Everything needed to render one subject at any grid (built and calibrated once)."""

    def __init__(self, subject: Subject):
        self.subject = s = subject
        self.span = span_mm(s)
        self.s = s.height_m / _REF_HEIGHT_M
        self.sp = self.s * s.pelvis_width_scale
        self.size = self.s ** 2.5 * s.muscularity                     # muscle volume factor
        tan = math.tan(math.radians(s.leg_abduction_deg))
        l_thigh = self.zu(_U_HIP) - self.zu(_U_KNEE)
        l_shank = self.zu(_U_KNEE) - self.zu(1.0)
        self.hip = np.array([88.0 * self.sp, 0.0])
        self.fem_top = np.array([self.hip[0] + 32.0 * self.s, -6.0 * self.s])
        self.knee = np.array([95.0 * self.sp + l_thigh * tan, 3.0 * self.s])
        self.ankle = np.array([self.knee[0] + l_shank * tan, -4.0 * self.s])
        self.fat_base = 40.0 * s.body_fat
        wrng = np.random.default_rng([s.seed, 2])
        angle = wrng.uniform(0, np.pi, _N_WAVES)
        k = 2 * np.pi / wrng.uniform(40.0, 110.0, _N_WAVES)
        self.waves = np.stack([k * np.cos(angle), k * np.sin(angle),
                               2 * np.pi / wrng.uniform(80.0, 250.0, _N_WAVES) * wrng.choice([-1.0, 1.0], _N_WAVES),
                               wrng.uniform(0, 2 * np.pi, _N_WAVES)], axis=1)          # (K, 4)
        self._lambda_u = np.linspace(-0.3, 1.2, 1501)
        self.lam = {side: self._lambda(side) for side in (1, -1)}
        self.cells = {side: self._build_cells(side) for side in (1, -1)}
        self.prims = self._build_prims()
        self.wall = self._build_wall()
        self._tabulate_cells()
        self._calibrate()

    def zu(self, u):
        """World z (mm) of body-axis fraction(s) u."""
        return z_of_fraction(self.subject, u)

    def uz(self, z: float) -> float:
        """Body-axis fraction of world z (mm)."""
        return float(_fraction_of_z(self.subject, z, self.span))

    # ---- frames ------------------------------------------------------------------------
    def frame(self, name: str, u: float) -> np.ndarray:
        """Right-side (lat, ant) origin of a frame at u (mm)."""
        if name == "mid":
            return np.zeros(2)
        if name == "hip":
            return self.hip.copy()
        if name == "fem":
            a = float(np.clip((u - 0.205) / (0.565 - 0.205), 0.0, 1.0))
            return (1 - a) * self.fem_top + a * self.knee
        if name == "tib":
            a = float(np.clip((u - _U_KNEE) / (1.0 - _U_KNEE), 0.0, 1.0))
            return (1 - a) * np.array([self.knee[0], 0.0]) + a * self.ankle
        raise ValueError(f"unknown frame {name!r}")

    def _point(self, u, frame, lat, ant, lam):
        """World-side-independent (lat, ant) of a control point: frame origin + scaled offset."""
        o = self.frame(frame, u)
        if frame in ("mid", "hip"):
            off = np.array([lat * self.sp, ant * self.s])
        else:
            off = np.array([lat, ant]) * float(np.interp(u, self._lambda_u, lam))
        return o + off, o

    # ---- cells --------------------------------------------------------------------------
    def _volume_targets(self, side):
        s = self.subject
        out = {}
        for m in anatomy.MUSCLES:
            v = m.volume_ml * s.hypertrophy[m.key] * self.size
            r = math.sqrt(s.asymmetry[m.key])
            out[m.key] = v * (r if side < 0 else 1.0 / r) * 1000.0   # mm^3
        return out

    def _peak_area(self, key, volume_mm3, subject_axis=True):
        geo = _MUSCLE_GEOMETRY[key]
        top, bot = anatomy.muscle(key).si_extent
        u = np.linspace(top, bot, 2001)
        b = _bump((u - top) / (bot - top), geo[0])
        if subject_axis:
            z = np.asarray(self.zu(u))
            length = np.abs(np.diff(z))
        else:
            length = np.full(len(u) - 1, np.diff(u)[0] * 1000.0 * _REF_HEIGHT_M * sum(_REF_RATIOS))
        integral = float(np.sum(0.5 * (b[1:] + b[:-1]) * length))
        return volume_mm3 / integral

    def _lambda(self, side):
        targets = self._volume_targets(side)
        sub = np.zeros_like(self._lambda_u)
        ref = np.zeros_like(self._lambda_u)
        for m in anatomy.MUSCLES:
            peak = _MUSCLE_GEOMETRY[m.key][0]
            top, bot = m.si_extent
            b = _bump((self._lambda_u - top) / (bot - top), peak)
            sub += b * self._peak_area(m.key, targets[m.key])
            ref += b * self._peak_area(m.key, m.volume_ml * 1000.0, subject_axis=False)
        lam = np.where(ref > 100.0, np.sqrt(sub / np.maximum(ref, 1e-9)), 1.0)
        return np.clip(lam, 0.75, 1.35)

    def _build_cells(self, side):
        lam = self.lam[side]
        targets = self._volume_targets(side)
        rng = np.random.default_rng([self.subject.seed, 1])
        cells = []

        def controls(points):
            c, o = zip(*(self._point(u, f, la, an, lam) for u, f, la, an in points))
            c, o = np.array(c), np.array(o)
            return np.array([p[0] for p in points]), side * c[:, 0], c[:, 1], side * o[:, 0], o[:, 1]

        def pert():
            return rng.normal(0.0, 1.0, _N_WAVES) * rng.uniform(0.15, 0.3) / math.sqrt(_N_WAVES / 2)

        for m in anatomy.MUSCLES:
            peak, aspect, points, gates = _MUSCLE_GEOMETRY[m.key]
            u, cx, cy, ox, oy = controls(points)
            cells.append(_Cell(m.key, m.right_label if side > 0 else m.left_label, _MUS, u, cx, cy, ox, oy,
                               aspect, gates, area_peak=self._peak_area(m.key, targets[m.key]),
                               extent=m.si_extent, peak=peak, pert=pert()))
        other_scale = {_MUS: self.s ** 1.5 * self.subject.muscularity, _FAT: self.s ** 2}
        for name, (tissue, area, points, aspect, gates, *absorb) in _OTHER_CELLS.items():
            u, cx, cy, ox, oy = controls(points)
            au, av = np.array(area, float).T
            cells.append(_Cell(name, 0, tissue, u, cx, cy, ox, oy, aspect, gates, area_u=au,
                               area_v=av * 100.0 * other_scale[tissue], pert=pert(), absorb=bool(absorb)))
        return cells

    def _build_wall(self):
        u = np.array([w[0] for w in _WALL])
        p = np.array([w[1] for w in _WALL], float) * [self.sp, self.s]
        a = np.array([w[2] for w in _WALL], float) * [self.sp, self.s]
        return u, p, a

    def wall_at(self, side, u):
        wu, wp, wa = self.wall
        if u < wu[0] or u > wu[-1]:
            return None
        p = np.array([np.interp(u, wu, wp[:, 0]), np.interp(u, wu, wp[:, 1])])
        a = np.array([np.interp(u, wu, wa[:, 0]), np.interp(u, wu, wa[:, 1])])
        d = a - p
        n = np.array([-d[1], d[0]]) / max(math.hypot(*d), 1e-9)    # inner (medial/anterior) normal
        return np.array([side * p[0], p[1]]), np.array([side * n[0], n[1]])

    # ---- skeleton, viscera, vessels -------------------------------------------------------
    def _build_prims(self):
        s, sp = self.s, self.sp
        prims = []
        yv_u, yv = [-0.3, 0.0, 0.05, 0.097], np.array([-48.0, -45.0, -28.0, -40.0]) * s
        # Midline: lumbar spine (with discs), arch and spinous process, canal, sacrum, viscera.
        discs = [(d - 0.0035, d + 0.0035) for d in np.arange(0.097, -0.31, -0.0194)]
        prims.append(_SweptEllipse("bone", yv_u, 0.0, yv, np.array([22, 23, 25, 26]) * sp,
                                   np.array([16, 17, 18, 18]) * s, cortex=1.5, gaps=discs))
        arch = [[(-14, -20), (-9, -34), (0, -38), (9, -34), (14, -20)]]
        for pts in arch + [[(0, -38), (0, -66)]]:
            pu = np.array(yv_u + [0.105])
            pp = np.array([[(x * s, y * s + np.interp(uu, yv_u, yv)) for x, y in pts] for uu in pu])
            prims.append(_SweptPolyline("bone", pu, pp, np.full((len(pu), len(pts)), 4.5 * s), cortex=1.5))
        prims.append(_SweptEllipse("joint", yv_u, 0.0, yv - 27 * s, 10 * s, 7.5 * s, layer=0))
        prims.append(_SweptEllipse("bone", [0.095, 0.11, 0.13, 0.15, 0.17, 0.19, 0.205, 0.215], 0.0,
                                   np.array([-62, -72, -84, -92, -97, -97, -92, -86]) * s,
                                   np.array([50, 50, 45, 36, 26, 16, 9, 5]) * sp,
                                   np.array([20, 20, 18, 15, 12, 9, 6, 4]) * s, cortex=2.0))
        cuts = [_CellDisc(self, side, name, 1.0) for side in (1, -1)
                for name in ("psoas_major", "quadratus_lumborum", "iliacus", "obturator_internus", "piriformis",
                             "pelvic_floor")]
        viscera = _SweptEllipse("viscera", [-0.3, 0.0, 0.04, 0.08, 0.11, 0.14, 0.17, 0.20, 0.225, 0.24], 0.0,
                                np.array([12, 12, 14, 14, 8, -8, -15, -28, -40, -48]) * s,
                                np.array([122, 122, 118, 100, 68, 62, 54, 44, 24, 6]) * sp,
                                np.array([62, 62, 62, 60, 60, 60, 52, 40, 24, 8]) * s, cuts=cuts, layer=0)
        prims.append(viscera)
        # Anterior and lateral abdominal wall (rectus, obliques, transversus): unlabelled muscle.
        prims.append(_Ring("muscle", viscera, [-0.3, 0.06, 0.10, 0.14, 0.165, 0.175],
                           np.array([12, 12, 10, 8, 5, 0]) * s * self.subject.muscularity,
                           [0.2, 0.2, -0.2, -0.4, -0.5, -0.5]))
        # Kidneys beside the upper lumbar spine, rectum (and sigmoid) on the sacrum and coccyx.
        for side in (1, -1):
            prims.append(_SweptEllipse("viscera", [-0.3, 0.0, 0.03, 0.06], side * 78 * sp,
                                       np.array([-48, -48, -44, -40]) * s, np.array([30, 30, 26, 0]) * s,
                                       np.array([24, 24, 20, 0]) * s, layer=0))
        ru = np.array([0.10, 0.13, 0.16, 0.19, 0.215, 0.235])
        prims.append(_SweptEllipse("viscera", ru, 0.0, np.array([-45, -56, -64, -68, -62, -55]) * s,
                                   np.array([20, 24, 24, 22, 18, 10]) * s, np.array([16, 20, 20, 18, 16, 8]) * s,
                                   layer=0))
        # Aorta (left of the midline, to its bifurcation at L4) and inferior vena cava, fat-sheathed.
        au = [-0.3, 0.0, 0.05, 0.078]
        ay = np.interp(au, yv_u, yv) + 30 * s
        prims.append(_SweptEllipse("fat", au, -14 * s, ay, 12 * s, 12 * s, layer=3))
        prims.append(_SweptEllipse("vessel", au, -14 * s, ay, 10.5 * s, 10.5 * s, layer=4))
        vu = [-0.3, 0.0, 0.05, 0.09]
        vy = np.interp(vu, yv_u, yv) + 28 * s
        prims.append(_SweptEllipse("fat", vu, 20 * s, vy, 13 * s, 13 * s, layer=3))
        prims.append(_SweptEllipse("vessel", vu, 20 * s, vy, 11.5 * s, 11.5 * s, layer=4))
        for side in (1, -1):
            prims += self._side_prims(side)
        return prims

    def _side_prims(self, side):
        s, sp, zu = self.s, self.sp, self.zu
        X = lambda lat: side * lat        # noqa: E731
        out = []
        # Ilium wing: (P, M, A) points and half-thicknesses at each u.
        wing = ((0.075, ((50, -88), (110, -50), (128, 0)), (3, 2.5, 3)),
                (0.085, ((46, -86), (112, -45), (128, 8)), (7, 4, 6)),
                (0.10, ((45, -84), (108, -42), (124, 15)), (9, 3.5, 7)),
                (0.12, ((47, -80), (100, -42), (118, 18)), (10, 3.5, 7)),
                (0.135, ((52, -76), (92, -45), (108, 8)), (10, 5, 8)),
                (0.15, ((62, -62), (82, -40), (98, -2)), (9, 8, 9)),
                (0.165, ((70, -45), (78, -25), (90, -5)), (8, 11, 10)),
                (0.178, ((72, -35), (78, -20), (86, -5)), (6, 8, 7)))
        out.append(self._polyline(side, wing, cortex=1.5))
        # Hip bone medial to the acetabulum, pubic rami, pubic body, ischium.
        out.append(self._polyline(side, ((0.165, ((66, -50), (64, -10), (56, 25)), (7, 7, 6)),
                                         (0.185, ((62, -48), (62, -5), (52, 32)), (7, 7, 6)),
                                         (0.205, ((58, -46), (58, -10), (48, 25)), (6, 6, 5))), cortex=1.5))
        out.append(self._polyline(side, ((0.182, ((70, 28), (42, 48), (16, 60)), (6, 5, 6)),
                                         (0.19, ((70, 28), (42, 48), (16, 60)), (9, 7, 10)),
                                         (0.20, ((70, 28), (42, 48), (16, 60)), (9, 7, 10)),
                                         (0.207, ((70, 28), (42, 48), (16, 60)), (5, 4, 6))), cortex=1.5))
        out.append(self._polyline(side, ((0.203, ((18, 56), (32, 24), (48, -28)), (4, 5, 6)),
                                         (0.215, ((20, 52), (34, 16), (48, -32)), (5, 5, 6)),
                                         (0.228, ((24, 44), (38, 6), (48, -36)), (5, 5, 6)),
                                         (0.24, ((28, 36), (42, 0), (48, -38)), (4, 4, 5))), cortex=1.5))
        out.append(_SweptEllipse("bone", [0.188, 0.195, 0.22, 0.228], X(14 * sp), np.array([62, 62, 58, 52]) * s,
                                 np.array([8, 12, 12, 7]) * s, np.array([7, 10, 10, 6]) * s, cortex=1.5))
        out.append(_SweptEllipse("bone", [0.183, 0.195, 0.21, 0.225, 0.238, 0.244],       # ischium
                                 X(np.array([60, 58, 54, 50, 48, 47]) * sp),
                                 np.array([-42, -45, -46, -45, -42, -40]) * s, np.array([10, 13, 16, 17, 14, 6]) * s,
                                 np.array([12, 15, 17, 17, 13, 6]) * s, cortex=2.0))
        # Hip joint: acetabulum, joint space, femoral head, neck, trochanters, shaft, linea aspera.
        r_head = 24.0 * s
        h3 = np.array([X(self.hip[0]), 0.0, zu(_U_HIP)])
        out.append(_Ellipsoid("joint", h3, (r_head + 2 * s,) * 3, layer=0))
        out.append(_Shell("bone", h3, r_head + 2 * s, r_head + 13 * s, side, 10 * s, -16 * s, cortex=2.0))
        out.append(_Ellipsoid("bone", h3, (r_head,) * 3, cortex=1.5))
        neck_end = np.array([X(self.hip[0] + 30 * s), -8 * s, h3[2] - 28 * s])
        out.append(_Capsule("bone", h3, neck_end, 14 * s, 16 * s, cortex=2.5))
        out.append(_Ellipsoid("bone", (X(self.hip[0] + 37 * s), -12 * s, zu(0.20)), np.array([17, 21, 24]) * s, 2.0))
        out.append(_Ellipsoid("bone", (X(self.hip[0] + 17 * s), -20 * s, zu(0.225)), np.array([9, 10, 12]) * s, 2.0))
        top3 = (X(self.fem_top[0]), self.fem_top[1], zu(0.205))
        bot3 = (X(self.knee[0]), self.knee[1], zu(0.565))
        out.append(_Capsule("bone", top3, bot3, 15 * s, 17 * s, cortex=5.5 * s))
        f26, f50 = self.frame("fem", 0.26), self.frame("fem", 0.50)
        out.append(_Capsule("bone", (X(f26[0]), f26[1] - 15 * s, zu(0.26)), (X(f50[0]), f50[1] - 15 * s, zu(0.50)),
                            5 * s, 5 * s, cortex=20.0))
        # Distal femur, intercondylar notch, patella, knee joint spaces.
        du = [0.50, 0.53, 0.555, 0.575, 0.59, 0.598, 0.602]
        dc = np.array([self.frame("fem", u) for u in du])
        out.append(_SweptEllipse("bone", du, X(dc[:, 0]), dc[:, 1] + np.array([2, 0, -2, -4, -5, -6, -7]) * s,
                                 np.array([16, 19, 28, 40, 42, 40, 33]) * s, np.array([16, 17, 22, 29, 30, 27, 20]) * s,
                                 cortex=[5, 3.5, 2, 1.5, 1.5, 1.5, 1.5]))
        out.append(_SweptEllipse("cut", [0.578, 0.585, 0.602], X(self.knee[0]), self.knee[1] - 22 * s,
                                 np.array([0, 10, 11]) * s, np.array([0, 14, 14]) * s, layer=2))
        pat = (X(self.knee[0] + 3 * s), 40 * s, zu(0.578))
        out.append(_Ellipsoid("joint", (pat[0], 30 * s, pat[2]), np.array([22, 5, 20]) * s, layer=0))
        out.append(_Ellipsoid("bone", pat, np.array([22, 10, 21]) * s, cortex=1.5))
        out.append(_SweptEllipse("joint", [0.597, 0.601, 0.607, 0.610], X(self.knee[0]), 0.0,
                                 np.array([36, 42, 42, 38]) * s, np.array([24, 29, 28, 26]) * s, layer=0))
        # Tibia (plateau, shaft, plafond), tuberosity, malleoli, fibula, talus.
        tu = [0.603, 0.612, 0.625, 0.64, 0.66, 0.72, 0.85, 0.93, 0.965, 0.99, 1.0]
        tc = np.array([self.frame("tib", u) for u in tu])
        off = np.array([(0, 0), (0, 0), (-1, 1), (-3, 3), (-4, 4), (-4, 4), (-4, 4), (-3, 3), (-2, 2), (-2, 2),
                        (-2, 2)], float) * s
        out.append(_SweptEllipse("bone", tu, X(tc[:, 0] + off[:, 0]), tc[:, 1] + off[:, 1],
                                 np.array([36, 39, 35, 26, 18, 14, 13, 15, 19, 22, 21]) * s,
                                 np.array([24, 27, 25, 21, 18, 16, 14, 14, 16, 18, 17]) * s,
                                 cortex=[1.5, 1.5, 1.5, 2, 3.5, 5.5, 5, 3.5, 2, 1.5, 1.5]))

        def tib(u, dlat, dant):
            o = self.frame("tib", u)
            return X(o[0] + dlat * s), o[1] + dant * s, zu(u)

        out.append(_Ellipsoid("bone", tib(0.635, -2, 24), np.array([10, 8, 16]) * s, 2.0))
        out.append(_Ellipsoid("bone", tib(0.995, -20, 0), np.array([9, 12, 15]) * s, 1.5))
        out.append(_Ellipsoid("bone", tib(0.625, 33, -18), np.array([12, 12, 14]) * s, 1.5))
        out.append(_Capsule("bone", tib(0.635, 31, -17), tib(0.975, 26, -10), 7 * s, 8 * s, cortex=2.5 * s))
        out.append(_Ellipsoid("bone", tib(0.985, 27, -10), np.array([10, 13, 20]) * s, 1.5))
        ta = tib(1.0, 0, 0)
        out.append(_Ellipsoid("joint", (ta[0], ta[1], ta[2] - 2 * s), np.array([22, 22, 4]) * s, layer=0))
        out.append(_Ellipsoid("bone", (ta[0], ta[1], ta[2] - 18 * s), np.array([20, 25, 15]) * s, 1.5))
        # Vessels (femoral / popliteal / posterior tibial artery and vein, anterior tibial artery).
        lam = self.lam[side]
        art = [(u, *self._point(u, f, la, an, lam)[0], r) for u, f, la, an, r in _ARTERY]
        au = np.array([a[0] for a in art])
        ax_, ay_, ar = (np.array([a[k] for a in art]) for k in (1, 2, 3))
        vo = np.array(_VEIN_OFFSET)
        vx = ax_ + np.interp(au, vo[:, 0], vo[:, 1]) * s
        vy = ay_ + np.interp(au, vo[:, 0], vo[:, 2]) * s
        vr = np.interp(au, vo[:, 0], vo[:, 3]) * s
        at = [(u, *self._point(u, f, la, an, lam)[0], r) for u, f, la, an, r in _ANTERIOR_TIBIAL]
        bu, bx, by, br = (np.array([a[k] for a in at]) for k in range(4))
        for (uu, xx, yy, rr) in ((au, ax_, ay_, ar * s), (au, vx, vy, vr), (bu, bx, by, br * s)):
            out.append(_SweptEllipse("fat", uu, X(xx), yy, rr + 1.2, rr + 1.2, layer=3))
            out.append(_SweptEllipse("vessel", uu, X(xx), yy, rr, rr, layer=4))
        return out

    def _polyline(self, side, nodes, cortex):
        u = [n[0] for n in nodes]
        pts = np.array([n[1] for n in nodes], float) * [self.sp, self.s]
        pts[..., 0] *= side
        half = np.array([n[2] for n in nodes], float) * self.s
        return _SweptPolyline("bone", u, pts, half, cortex=cortex)

    # ---- per-slice evaluation -------------------------------------------------------------
    def paint_prims(self, u, z, xs, ys):
        """Tissue codes of the solids (0 where none) on the grid xs x ys (ascending)."""
        tissue = np.zeros((len(xs), len(ys)), np.uint8)
        results = [(p.layer, r) for p in self.prims if (r := p.paint(u, z, xs, ys)) is not None]
        for layer in (0, 1, 2, 3, 4):
            for lay, (i0, i1, j0, j1, outer, inner, kind) in results:
                if lay != layer:
                    continue
                view = tissue[i0:i1, j0:j1]
                if kind == "bone":
                    view[outer] = _CORT
                else:
                    view[outer] = _KIND_TISSUE[kind]
            if layer == 1:   # marrow after all cortices, so overlapping bones keep their marrow
                for lay, (i0, i1, j0, j1, outer, inner, kind) in results:
                    if lay == 1 and kind == "bone" and inner is not None:
                        tissue[i0:i1, j0:j1][inner & outer] = _MAR
        return tissue

    def _tabulate_cells(self):
        """Sample every cell's area, centre, frame origin and gate on a fine u grid (fast lookup)."""
        self.tab_u = np.arange(_U_TAB[0], _U_TAB[1] + _U_TAB[2], _U_TAB[2])
        self.tab = {}
        for side, cells in self.cells.items():
            t = np.empty((len(self.tab_u), len(cells), 6))
            for k, c in enumerate(cells):
                t[:, k, 0] = c.areas(self.tab_u)
                for j, arr in enumerate((c.cx, c.cy, c.ox, c.oy), start=1):
                    t[:, k, j] = np.interp(self.tab_u, c.u, arr)
                t[:, k, 5] = [c.gate(u) for u in self.tab_u]
            self.tab[side] = t
        self.cell_label = {sd: np.array([c.label for c in cs], np.uint8) for sd, cs in self.cells.items()}
        self.cell_tissue = {sd: np.array([c.tissue for c in cs], np.uint8) for sd, cs in self.cells.items()}
        right = self.cells[1]              # both sides share shape parameters (mirror images)
        self.cell_aspect = np.array([c.aspect for c in right])
        self.cell_pert = np.array([c.pert for c in right])
        self.cell_absorb = np.array([c.absorb for c in right])

    def cell_row(self, side, u):
        """(n_cells, 6) tabulated area, cx, cy, ox, oy, gate of one side at u."""
        pos = (min(max(u, _U_TAB[0]), _U_TAB[1]) - _U_TAB[0]) / _U_TAB[2]
        i = min(int(pos), len(self.tab_u) - 2)
        a = pos - i
        return (1 - a) * self.tab[side][i] + a * self.tab[side][i + 1]

    def cell_state(self, side, u):
        """Arrays describing the active cells of one side at u (None if there are none)."""
        row = self.cell_row(side, u)
        gate = row[:, 5]
        idx = np.flatnonzero(row[:, 0] > 1.0)
        if len(idx) == 0:
            return None
        cx, cy, ox, oy = row[idx, 1], row[idx, 2], row[idx, 3], row[idx, 4]
        vx, vy = cx - ox, cy - oy
        norm = np.hypot(vx, vy)
        ok = norm > 1.0
        safe = np.where(ok, norm, 1.0)
        tx, ty = np.where(ok, -vy / safe, 1.0), np.where(ok, vx / safe, 0.0)
        k_ = self.cell_aspect[idx]
        return {"idx": idx, "cx": cx, "cy": cy, "area": row[idx, 0], "gate": gate[idx],
                "m11": tx * tx / k_ + ty * ty * k_, "m22": ty * ty / k_ + tx * tx * k_,
                "m12": tx * ty * (1.0 / k_ - k_), "label": self.cell_label[side][idx],
                "tissue": self.cell_tissue[side][idx], "pert": self.cell_pert[idx],
                "absorb": self.cell_absorb[idx]}

    def costs(self, st, side, z, u, px, py, w0):
        """(n_px, n_cells) anisotropic quadratic distance + perturbation + gate penalty.

        The power distance of cell k is ``C[:, k] - w[k]``. The perturbation of each cell is
        its own random combination of a few smooth waves shared by all cells (mirrored on the
        left leg), scaled by the nominal weight ``w0`` (area / pi) so small muscles get small
        wiggles; sharing the waves keeps the cost independent of the number of cells.
        """
        x0, y0 = float(np.mean(st["cx"])), float(np.mean(st["cy"]))
        X, Y = px - x0, py - y0
        cx, cy = st["cx"] - x0, st["cy"] - y0
        m11, m12, m22 = st["m11"], st["m12"], st["m22"]
        waves = self.waves
        phase = np.multiply.outer(side * px, waves[:, 0]) + np.multiply.outer(py, waves[:, 1])
        phase += waves[:, 2] * z + waves[:, 3]
        # (p-c)^T M (p-c) + perturbation expanded into a feature matrix times per-cell coefficients.
        feats = np.concatenate([np.stack([X * X, 2 * X * Y, Y * Y, X, Y, np.ones_like(X)], axis=1),
                                np.sin(phase)], axis=1)                                 # (n_px, 6 + K)
        coef = np.concatenate([np.stack([m11, m12, m22, -2 * (m11 * cx + m12 * cy), -2 * (m12 * cx + m22 * cy),
                                         m11 * cx * cx + 2 * m12 * cx * cy + m22 * cy * cy]),
                               (st["pert"] * w0[:, None]).T])                          # (6 + K, n)
        C = feats @ coef                                                               # (n_px, n)
        wall = self.wall_at(side, u)
        if wall is not None and np.any(st["gate"] != 0):
            (wpx, wpy), (nx, ny) = wall
            sgn = (px - wpx) * nx + (py - wpy) * ny          # signed distance (mm), > 0 inside the pelvis
            for k in np.flatnonzero(st["gate"]):
                g = st["gate"][k]
                # Penalty grows with the distance on the wrong side of the wall (smooth in space and u).
                C[:, k] += abs(g) * _GATE_PENALTY * np.maximum(0.0, (sgn if g > 0 else -sgn) - 1.0)
        return C

    # ---- calibration ------------------------------------------------------------------------
    def _calibrate(self):
        s = self.s
        half_x = max(230.0 * self.sp, self.ankle[0] + 110.0 * s, self.knee[0] + 130 * s)
        nxh = int(math.ceil(half_x / _H_MM))
        self.cxs = (np.arange(-nxh, nxh) + 0.5) * _H_MM
        self.cys = np.arange(-230.0 * s, 190.0 * s, _H_MM)
        z_lo, z_hi = self.zu(_U_RANGE[1]), self.zu(_U_RANGE[0])
        n_nodes = int(math.ceil((z_hi - z_lo) / _DZ_NODE_MM)) + 1
        self.node_z = z_lo + _DZ_NODE_MM * np.arange(n_nodes)
        nc = len(self.cells[1])
        self.F = np.zeros((n_nodes, len(self.cxs), len(self.cys)), np.float32)
        self.tau = np.zeros(n_nodes)
        self.scale = np.ones((n_nodes, 2))
        self.rho = np.zeros((n_nodes, 2, nc))    # calibrated weight = nominal x (1 + rho)
        self.calib_err = np.zeros((n_nodes, 2, nc))   # area error (mm^2) after calibration, diagnostic
        h2 = _H_MM ** 2
        XX, YY = np.meshgrid(self.cxs, self.cys, indexing="ij")
        prev = {1: None, -1: None}
        order = range(n_nodes - 1, -1, -1)            # top (trunk) to bottom
        for n in order:
            z = float(self.node_z[n])
            u = self.uz(z)
            tissue = self.paint_prims(u, z, self.cxs, self.cys)
            excl = tissue > 0
            ind = excl.astype(np.float64)
            states = {side: self.cell_state(side, u) for side in (1, -1)}
            total = excl.sum() * h2
            for side, st in states.items():
                if st is None:
                    continue
                total += st["area"].sum()
                for k in range(len(st["idx"])):
                    r = math.sqrt(st["area"][k] / math.pi) * 1.6
                    bb = _bbox(self.cxs, self.cys, st["cx"][k] - r, st["cx"][k] + r, st["cy"][k] - r, st["cy"][k] + r)
                    if bb is None:
                        continue
                    i0, i1, j0, j1 = bb
                    dx, dy = XX[i0:i1, j0:j1] - st["cx"][k], YY[i0:i1, j0:j1] - st["cy"][k]
                    q = st["m11"][k] * dx * dx + 2 * st["m12"][k] * dx * dy + st["m22"][k] * dy * dy
                    ind[i0:i1, j0:j1] += q <= st["area"][k] / math.pi
            sigma = float(np.interp(u, *_SIGMA_OUTLINE_MM)) / _H_MM
            f = ndimage.gaussian_filter(ind, sigma, mode="constant")
            n_in = int(round(total / h2))
            flat = f.ravel()
            if n_in <= 0:
                self.tau[n] = np.inf
                continue
            n_in = min(n_in, flat.size - 1)
            tau = float(np.partition(flat, flat.size - n_in)[flat.size - n_in])
            self.tau[n] = tau
            self.F[n] = f
            body = (f >= tau) | excl | _cores(states, self.cxs, self.cys)
            holes = ndimage.binary_fill_holes(body) & ~body        # enclosed gaps of the outline
            body |= holes
            if u < _U_HOLES:                                       # trunk and pelvis: fat, not muscle
                excl |= holes
            if body[0, :].any() or body[-1, :].any() or body[:, 0].any() or body[:, -1].any():
                log.warning("phantom seed %d: body touches the calibration grid border at z=%.0f mm",
                            self.subject.seed, z)
            for si, side in enumerate((1, -1)):
                st = states[side]
                if st is None:
                    prev[side] = None
                    continue
                comp = body & ~excl & ((XX > 0) if side > 0 else (XX < 0))
                ii, jj = np.nonzero(comp)
                area_comp = len(ii) * h2
                sc = area_comp / st["area"].sum() if len(ii) else 1.0
                self.scale[n, si] = sc
                target = st["area"] * sc
                w0 = target / math.pi
                delta = np.zeros(len(st["idx"]))
                eta = np.full(len(st["idx"]), 0.45)
                if prev[side] is not None:
                    delta = prev[side][0][st["idx"]] * w0
                    eta = np.where(prev[side][1][st["idx"]] > 0, prev[side][1][st["idx"]], 0.45)
                if len(ii) == 0:
                    continue
                px, py = self.cxs[ii], self.cys[jj]
                n_iter = _N_ITER_FIRST if prev[side] is None else _N_ITER
                C = self.costs(st, side, z, u, px, py, w0)
                delta, eta, err = _fit_weights(C, w0, target, delta, np.where(st["absorb"], 0.0, eta), n_iter, h2)
                self.calib_err[n, si, st["idx"]] = err
                full, full_eta = np.zeros(nc), np.zeros(nc)
                full[st["idx"]], full_eta[st["idx"]] = np.clip(delta / w0, *_RHO_RANGE), eta
                self.rho[n, si] = full
                prev[side] = (full, full_eta)

    # ---- rendering ---------------------------------------------------------------------------
    def node_interp(self, z):
        pos = (np.clip(z, self.node_z[0], self.node_z[-1]) - self.node_z[0]) / _DZ_NODE_MM
        i0 = int(min(math.floor(pos), len(self.node_z) - 2))
        return i0, i0 + 1, pos - i0

    def fat_thickness(self, u, ys):
        reg = np.interp(u, [-0.3, 0.0, 0.08, 0.2, 0.3, 0.45, 0.6, 0.75, 0.95, 1.1],
                        [1.7, 1.7, 1.6, 1.5, 1.2, 1.0, 0.8, 0.8, 0.55, 0.5])
        q = np.interp(u, [-0.3, 0.28, 0.35, 0.6, 0.7, 1.1], [0.35, 0.35, 0.1, 0.1, 0.3, 0.3])
        return self.fat_base * reg * (1.0 + q * np.tanh(-ys / 60.0))

    def render_slice(self, z, xs, ys, dx, dy):
        """Labels and tissue on a bounding box of the grid xs x ys at height z (or None)."""
        i0, i1, a = self.node_interp(z)
        zc = float(np.clip(z, self.node_z[0], self.node_z[-1]))
        u = self.uz(zc)
        tau = (1 - a) * self.tau[i0] + a * self.tau[i1]
        if not np.isfinite(tau):
            return None
        Fz = (1 - a) * self.F[i0] + a * self.F[i1]
        inside = Fz >= tau
        if not inside.any():
            return None
        ci, cj = np.nonzero(inside)
        margin = float(self.fat_base * 1.7 * 1.4) + 2 * _H_MM + max(dx, dy) * 2
        bb = _bbox(xs, ys, self.cxs[ci.min()] - margin, self.cxs[ci.max()] + margin,
                   self.cys[cj.min()] - margin, self.cys[cj.max()] + margin)
        if bb is None:
            return None
        bi0, bi1, bj0, bj1 = bb
        X, Y = xs[bi0:bi1], ys[bj0:bj1]
        f = _interp2(Fz, self.cxs, self.cys, X, Y)
        tissue = self.paint_prims(u, zc, X, Y)
        excl = tissue > 0
        states = {side: self.cell_state(side, u) for side in (1, -1)}
        body = (f >= tau) | excl | _cores(states, X, Y)
        holes = ndimage.binary_fill_holes(body) & ~body          # enclosed gaps of the outline
        body |= holes
        if u < _U_HOLES:                                         # trunk and pelvis: fat, not muscle
            tissue[holes] = _FAT
            excl |= holes
        # Subcutaneous fat: a band of position-dependent thickness outside the compartment.
        dist = ndimage.distance_transform_edt(~body, sampling=(dx, dy))
        skin = body | (dist <= self.fat_thickness(u, Y)[None, :])
        tissue[skin & ~body] = _FAT
        labels = np.zeros(tissue.shape, np.uint8)
        imf = self.subject.intermuscular_fat_mm
        for si, side in enumerate((1, -1)):
            st = states[side]
            side_mask = (X >= 0)[:, None] if side > 0 else (X < 0)[:, None]     # midline column: right
            comp = body & ~excl & side_mask
            if st is None:
                tissue[comp] = _FAT
                continue
            ii, jj = np.nonzero(comp)
            if len(ii) == 0:
                continue
            sc = (1 - a) * self.scale[i0, si] + a * self.scale[i1, si]
            rho = ((1 - a) * self.rho[i0, si] + a * self.rho[i1, si])[st["idx"]]
            w0 = st["area"] * sc / math.pi
            px, py = X[ii], Y[jj]
            C = self.costs(st, side, zc, u, px, py, w0)
            C -= w0 * (1.0 + rho)
            rows = np.arange(len(ii))
            best = np.argmin(C, axis=1)
            cb = C[rows, best]
            C[rows, best] = np.inf
            second = np.argmin(C, axis=1)
            cs = C[rows, second]
            lab = st["label"][best]
            tis = st["tissue"][best].copy()
            # Intermuscular fat: distance to the boundary with the runner-up muscle cell.
            both = (st["tissue"][best] == _MUS) & (st["tissue"][second] == _MUS) & np.isfinite(cs)
            if imf > 0 and both.any():
                gx = _grad(st, best, px, py, 0) - _grad(st, second, px, py, 0)
                gy = _grad(st, best, px, py, 1) - _grad(st, second, px, py, 1)
                dist_b = (cs - cb) / np.maximum(np.hypot(gx, gy), 1e-6)
                fat = both & (dist_b < 0.5 * imf)
                tis[fat] = _FAT
                lab = np.where(fat, 0, lab)
            tissue[ii, jj] = tis
            labels[ii, jj] = lab
        return bi0, bi1, bj0, bj1, labels, tissue


def _cores(states, xs, ys):
    """Union of every active cell's core (its nominal ellipse shrunk to ``_CORE`` of the size):
    the compartment always contains it, so small peripheral muscles are never smoothed away."""
    mask = np.zeros((len(xs), len(ys)), bool)
    for st in states.values():
        if st is None:
            continue
        for k in range(len(st["idx"])):
            r2 = _CORE ** 2 * st["area"][k] / math.pi
            half = math.sqrt(r2 * max(st["m11"][k], st["m22"][k]) / (st["m11"][k] * st["m22"][k] - st["m12"][k] ** 2))
            cx, cy = st["cx"][k], st["cy"][k]
            bb = _bbox(xs, ys, cx - half, cx + half, cy - half, cy + half)
            if bb is None:
                continue
            i0, i1, j0, j1 = bb
            dx, dy = xs[i0:i1, None] - cx, ys[None, j0:j1] - cy
            mask[i0:i1, j0:j1] |= st["m11"][k] * dx * dx + 2 * st["m12"][k] * dx * dy + st["m22"][k] * dy * dy <= r2
    return mask


def _fit_weights(C, w0, target, delta, eta, n_iter, h2):
    """Adjust the power weights ``w0 + delta`` until each cell's area (argmin count x h2)
    matches ``target``: a Newton-like step per cell whose size halves when the area error
    changes sign and grows slowly otherwise (neighbours make dA/dw vary a lot between cells).

    Returns delta, the per-cell step sizes and the final area error (mm^2).
    """
    n = len(w0)
    fixed = eta == 0                               # absorbers: their weight is the gauge
    delta = np.where(fixed, 0.0, delta)
    err_prev = np.zeros(n)
    for _ in range(n_iter):
        err = target - np.bincount(np.argmin(C - (w0 + delta), axis=1), minlength=n) * h2
        flip = err * err_prev < 0
        eta = np.where(eta > 0, np.clip(np.where(flip, eta * 0.5, eta * 1.15), 0.02, 1.5), 0.0)
        delta = delta + eta * err
        if not fixed.any():                        # a common shift changes nothing: keep it at zero
            delta -= np.average(delta, weights=w0)
        err_prev = err
    err = np.bincount(np.argmin(C - (w0 + delta), axis=1), minlength=n) * h2 - target
    return delta, eta, err


def _grad(st, k, px, py, axis):
    """Component ``axis`` of the gradient 2 M (p - c) of cell ``k`` (per pixel)."""
    dx, dy = px - st["cx"][k], py - st["cy"][k]
    if axis == 0:
        return 2 * (st["m11"][k] * dx + st["m12"][k] * dy)
    return 2 * (st["m12"][k] * dx + st["m22"][k] * dy)


def _interp2(F, fx, fy, X, Y):
    """Bilinear interpolation of F (on the ascending regular axes fx, fy) at the grid X x Y."""
    def weights(axis, q):
        pos = np.clip((q - axis[0]) / (axis[1] - axis[0]), 0.0, len(axis) - 1.0)
        i0 = np.minimum(np.floor(pos).astype(int), len(axis) - 2)
        return i0, pos - i0

    ix, ax = weights(fx, X)
    iy, ay = weights(fy, Y)
    G = F[ix] * (1 - ax)[:, None] + F[ix + 1] * ax[:, None]          # (nX, ny)
    return G[:, iy] * (1 - ay)[None, :] + G[:, iy + 1] * ay[None, :]


def _check_affine(affine) -> np.ndarray:
    A = np.asarray(affine, dtype=float)
    if A.shape != (4, 4) or not np.all(np.isfinite(A)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {A.shape}")
    rot = A[:3, :3]
    off = rot - np.diag(np.diag(rot))
    if np.any(np.abs(off) > 1e-6 * np.abs(rot).max()) or np.any(np.diag(rot) == 0):
        raise ValueError(f"affine must be axis-aligned (axial slices, x/y/z along axes 0/1/2; flips allowed), "
                         f"got {rot.tolist()}")
    if not np.allclose(A[3], [0, 0, 0, 1]):
        raise ValueError(f"affine's last row must be [0, 0, 0, 1], got {A[3].tolist()}")
    return A


def render_anatomy(subject: Subject, affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Render the subject's anatomy at the voxel centres of an axial grid.

    Parameters
    ----------
    subject : Subject
    affine : (4, 4) ndarray
        RAS+ voxel-to-world matrix; must be axis-aligned (axis 0 along x, 1 along y, 2 along
        z; negative entries = flipped axes are allowed), e.g. from ``field_of_view``.
    shape : tuple of 3 int
        Grid shape (X, Y, Z).

    Returns
    -------
    labels : (X, Y, Z) ndarray of uint8
        Region ids 0..70 (``llseg.anatomy``: right = 1..35, left = 36..70; 0 elsewhere,
        including intermuscular fat).
    tissue : (X, Y, Z) ndarray of uint8
        ``TISSUE`` codes.

    Raises
    ------
    TypeError
        ``subject`` is not a ``Subject``.
    ValueError
        Bad affine or shape.

    Notes
    -----
    The anatomy is defined in continuous world coordinates and sampled per voxel centre
    (no partial volume; the MR simulator averages fine slices). Outside the modelled axis
    (about 0.1 span above T12 and below the ankle) the body continues as a prism of the last
    modelled cross-section. The same subject always gives bit-identical arrays.
    """
    subject = _check_subject(subject)
    A = _check_affine(affine)
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    model = _Model(subject)
    xs = A[0, 0] * np.arange(shape[0]) + A[0, 3]
    ys = A[1, 1] * np.arange(shape[1]) + A[1, 3]
    zs = A[2, 2] * np.arange(shape[2]) + A[2, 3]
    fx, fy = A[0, 0] < 0, A[1, 1] < 0
    xs_s, ys_s = (xs[::-1] if fx else xs), (ys[::-1] if fy else ys)
    labels = np.zeros(shape, np.uint8)
    tissue = np.zeros(shape, np.uint8)
    dx, dy = abs(A[0, 0]), abs(A[1, 1])
    for k, z in enumerate(zs):
        out = model.render_slice(float(z), xs_s, ys_s, dx, dy)
        if out is None:
            continue
        i0, i1, j0, j1, lab, tis = out
        if fx:
            i0, i1, lab, tis = shape[0] - i1, shape[0] - i0, lab[::-1], tis[::-1]
        if fy:
            j0, j1, lab, tis = shape[1] - j1, shape[1] - j0, lab[:, ::-1], tis[:, ::-1]
        labels[i0:i1, j0:j1, k] = lab
        tissue[i0:i1, j0:j1, k] = tis
    return labels, tissue
