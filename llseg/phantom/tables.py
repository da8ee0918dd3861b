"""Reference anatomy of the phantom: tissue classes, body-axis landmarks, and the tables that place
every muscle, fat pad, the pelvic wall and the leg vessels on a 1.8 m adult.

Tables describe the subject's right side. A control point is ``(u, frame, lat, ant)``: ``u`` is the
body-axis fraction (0 = T12, 1 = ankle), ``lat`` mm lateral and ``ant`` mm anterior of the frame's
origin. Frames: "mid" = body midline, "hip" = hip-joint centre, "fem" = femoral shaft axis, "tib" =
tibial axis. Offsets in "mid"/"hip" scale with the skeleton, in "fem"/"tib" with the local muscle size.
"""
from __future__ import annotations

from llseg import anatomy

__all__ = [
    "TISSUE",
    "FAT",
    "MUSCLE",
    "CORTEX",
    "MARROW",
    "VESSEL",
    "VISCERA",
    "LANDMARKS",
    "REF_HEIGHT_M",
    "REF_RATIOS",
    "U_HIP",
    "U_KNEE",
    "MUSCLE_GEOMETRY",
    "OTHER_CELLS",
    "PELVIC_WALL",
    "ARTERY",
    "VEIN_OFFSET",
    "ANTERIOR_TIBIAL",
]

#: Tissue classes of the tissue map ("fat" = subcutaneous + intermuscular fat, fat pads and
#: tendons; "viscera" = abdominal/pelvic organs, spinal canal, joint cartilage and fluid).
TISSUE: dict[str, int] = {"background": 0, "fat": 1, "muscle": 2, "cortical_bone": 3, "marrow": 4,
                          "vessel": 5, "viscera": 6}
FAT, MUSCLE, CORTEX, MARROW, VESSEL, VISCERA = (TISSUE[k] for k in ("fat", "muscle", "cortical_bone", "marrow",
                                                                    "vessel", "viscera"))

#: Reference landmark positions as fractions of the T12 (0) to ankle (1) span of a 1.8 m adult.
LANDMARKS: dict[str, float] = anatomy.LANDMARKS

REF_HEIGHT_M = 1.8
REF_RATIOS = (0.114, 0.246, 0.240)   # T12-hip, hip-knee, knee-ankle lengths / height
U_HIP, U_KNEE = LANDMARKS["hip_joint"], LANDMARKS["knee_joint"]

# key: (belly peak as fraction of the extent, aspect (tangential elongation), control points
#       (u, frame, lat, ant), gates ((u0, u1, +1 outside / -1 inside the pelvic wall), ...))
MUSCLE_GEOMETRY = {
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
assert set(MUSCLE_GEOMETRY) == {m.key for m in anatomy.MUSCLES}

# Unlabelled cells: name: (tissue, area control (u, cm^2), control points, aspect, gates).
OTHER_CELLS = {
    "erector_spinae": (MUSCLE, ((-0.3, 26), (0.0, 26), (0.06, 22), (0.10, 14), (0.13, 6), (0.15, 0)),
                       ((-0.3, "mid", 35, -95), (0.0, "mid", 35, -95), (0.06, "mid", 35, -85),
                        (0.10, "mid", 30, -100), (0.14, "mid", 25, -115)), 1.0, ()),
    "quadratus_lumborum": (MUSCLE, ((-0.3, 7), (0.0, 7), (0.06, 6), (0.085, 0)),
                           ((-0.3, "mid", 68, -60), (0.06, "mid", 72, -55), (0.085, "mid", 78, -60)), 1.2, ()),
    "abdominal_obliques": (MUSCLE, ((-0.3, 14), (0.0, 14), (0.05, 10), (0.08, 0)),
                           ((-0.3, "mid", 128, -15), (0.0, "mid", 128, -15), (0.08, "mid", 128, -20)), 2.5, ()),
    "pelvic_floor": (MUSCLE, ((0.18, 0), (0.20, 5), (0.23, 5), (0.245, 0)),
                     ((0.18, "mid", 20, -40), (0.245, "mid", 15, -50)), 1.2, ()),
    # Pelvic fat inside the lesser pelvis: takes whatever the inner muscles and organs leave
    # (its area is not calibrated, marked by the trailing True).
    "pelvic_fat": (FAT, ((0.12, 0), (0.15, 6), (0.20, 6), (0.23, 0)),
                   ((0.12, "mid", 40, -50), (0.17, "mid", 42, -38), (0.20, "mid", 35, -32), (0.23, "mid", 30, -40)),
                   1.0, ((0.12, 0.23, -1),), True),
    # Fat around the sciatic nerve behind the hip: likewise takes what the small rotators leave.
    "deep_gluteal_fat": (FAT, ((0.165, 0), (0.18, 4), (0.22, 4), (0.24, 0)),
                         ((0.165, "hip", -8, -50), (0.20, "hip", -8, -55), (0.24, "hip", -2, -55)),
                         1.0, ((0.16, 0.245, 1),), True),
    "ischioanal_fat": (FAT, ((0.19, 0), (0.21, 8), (0.24, 8), (0.26, 0)),
                       ((0.19, "mid", 30, -75), (0.26, "mid", 25, -70)), 1.0, ()),
    "femoral_triangle_fat": (FAT, ((0.18, 0), (0.20, 4), (0.26, 4), (0.30, 0)),
                             ((0.18, "hip", -25, 45), (0.22, "hip", -30, 48), (0.26, "fem", -45, 35),
                              (0.30, "fem", -45, 30)), 1.0, ()),
    "suprapatellar_fat": (FAT, ((0.52, 0), (0.545, 4), (0.57, 0)), ((0.52, "fem", 0, 40), (0.57, "fem", 0, 42)),
                          1.5, ()),
    "popliteal_fat": (FAT, ((0.53, 0), (0.57, 8), (0.62, 8), (0.66, 0)),
                      ((0.53, "fem", 0, -30), (0.58, "fem", 0, -32), (0.60, "tib", 0, -38),
                       (0.66, "tib", 0, -40)), 1.0, ()),
    "infrapatellar_fat": (FAT, ((0.585, 0), (0.60, 5), (0.62, 4), (0.635, 0)),
                          ((0.585, "tib", 0, 32), (0.635, "tib", 0, 32)), 1.5, ()),
    "achilles_kager": (FAT, ((0.82, 0), (0.90, 5), (1.0, 6), (1.1, 6)),
                       ((0.82, "tib", 0, -55), (0.92, "tib", 0, -38), (1.0, "tib", 0, -34)), 1.3, ()),
    "ankle_flexor_tendons": (FAT, ((0.88, 0), (0.95, 3), (1.1, 3)), ((0.88, "tib", 4, -22), (1.0, "tib", 0, -20)),
                             1.5, ()),
    "ankle_tendons": (FAT, ((0.88, 0), (0.95, 3), (1.1, 3)), ((0.88, "tib", 8, 24), (1.0, "tib", 5, 25)),
                      1.5, ()),
}

# Pelvic wall used to gate muscles inside (iliac fossa, lesser pelvis) or outside the pelvis:
# u, posterior point P, anterior point A (the inner side is to the left of P -> A).
PELVIC_WALL = ((0.075, (50, -88), (128, 0)), (0.085, (46, -86), (128, 8)), (0.10, (45, -84), (124, 15)),
               (0.12, (47, -80), (118, 18)), (0.135, (52, -76), (108, 8)), (0.15, (62, -62), (98, -2)),
               (0.165, (70, -45), (90, -5)), (0.19, (52, -45), (30, 60)), (0.215, (45, -50), (20, 55)),
               (0.235, (45, -50), (20, 55)))

# Vessel paths (u, frame, lat, ant, radius mm); veins follow arteries with an offset.
ARTERY = ((0.078, "mid", 2, -12, 5.0), (0.09, "mid", 25, -12, 4.5), (0.12, "mid", 45, 0, 4.5),
          (0.15, "mid", 58, 15, 4.5), (0.18, "mid", 66, 36, 4.5), (0.21, "hip", -22, 44, 4.2),
          (0.26, "fem", -48, 32, 4.0), (0.35, "fem", -45, 18, 3.8), (0.45, "fem", -40, 2, 3.6),
          (0.52, "fem", -24, -24, 3.5), (0.57, "fem", -2, -32, 3.3), (0.62, "tib", 2, -36, 3.0),
          (0.67, "tib", -2, -32, 2.6), (0.80, "tib", -8, -32, 2.3), (0.95, "tib", -16, -26, 2.0),
          (1.02, "tib", -18, -22, 1.8))
VEIN_OFFSET = ((0.085, -10, -4, 6.0), (0.20, -10, -4, 5.5), (0.30, -8, -8, 5.0), (0.45, -5, -10, 4.5),
               (0.57, 5, -8, 4.0), (0.80, 6, -6, 2.8), (1.02, 6, -4, 2.2))
ANTERIOR_TIBIAL = ((0.645, "tib", 20, -12, 2.0), (0.70, "tib", 16, -4, 1.8), (0.85, "tib", 12, 6, 1.6),
                   (0.97, "tib", 6, 18, 1.5))
