"""The 35 lower-limb muscles: names, label ids, regions, stage-1 groups, paper values.

This module is the single source of truth for everything that names a muscle. Every other
module, notebook and test asks it; none keeps its own list.

Label-id convention (70 regions, background 0)
----------------------------------------------
Muscles are numbered 1..35 in the order of the paper's Table 1 (alphabetical).
The subject's **right** muscle of index ``i`` has label ``i``; the **left** one has label
``i + 35``.

World frame: RAS+ (nibabel's canonical orientation): +x points to the subject's Right,
+y Anterior, +z Superior. So the right leg lies at larger world x than the left leg
(``RIGHT_LEG_AT_POSITIVE_X``). Voxel arrays are ``(X, Y, Z)`` in that frame once loaded
through ``llseg.io``.

Stage-1 groups
--------------
The paper divides the 70 regions into 10 groups "each containing about four adjacent
muscles on both legs ... largely based on the anatomical location along the
superior-inferior direction" (section 2.2.1). The kit's grouping walks down the body:
three pelvic/hip groups (abdomen image part), four thigh groups (upper-leg part) and three
calf groups (lower-leg part); within a part, muscles that touch in cross-section share a
group. See ``GROUPS``.

Reference volumes
-----------------
``volume_ml`` holds approximate adult-male mean volumes in the spirit of Handsfield et al.
(2014), the paper's ref. 6, rounded to 5 mL and used only as the phantom's targets and for
plausibility checks; they are not a citation-grade table.

SI extents
----------
``si_extent`` is the muscle's belly extent along the superior-inferior axis, as fractions
of the T12 (0.0) to ankle (1.0) span, for a 1.8 m adult (``../shared/design/phantom.md``).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Muscle",
    "MUSCLES",
    "N_MUSCLES",
    "N_REGIONS",
    "REGIONS",
    "GROUPS",
    "BODY_PARTS",
    "LANDMARKS",
    "RIGHT_LEG_AT_POSITIVE_X",
    "PAPER_WITHIN_INTEROBSERVER",
    "PAPER_WORSE_THAN_INTEROBSERVER",
    "PAPER_MEAN_VOLUME_ERROR_PCT",
    "PAPER_MEAN_MSD_MM",
    "muscle",
    "label_id",
    "region_name",
    "muscle_of_label",
    "side_of_label",
    "mirror_label",
    "group_of",
    "group_labels",
    "labels_of_part",
]

N_MUSCLES = 35
N_REGIONS = 2 * N_MUSCLES

#: In the kit's RAS+ world frame (+x to the subject's Right, +y Anterior, +z Superior),
#: the right leg lies at larger x than the left leg.
RIGHT_LEG_AT_POSITIVE_X = True

#: The three image parts stage 1 splits a whole-leg volume into (paper section 2.2.1).
BODY_PARTS = ("abdomen", "upper_leg", "lower_leg")

#: Skeletal landmarks as fractions of the T12 (0.0) to ankle (1.0) span of a 1.8 m adult, the
#: scale of ``Muscle.si_extent`` (the phantom builds its subjects on them; ``llseg.coverage``
#: names partial scans by them).
LANDMARKS: dict[str, float] = {"t12": 0.0, "iliac_crest": 0.08, "hip_joint": 0.19, "knee_joint": 0.60,
                               "ankle_joint": 1.0}


@dataclass(frozen=True)
class Muscle:
    """One muscle (both legs share it).

    Attributes
    ----------
    index : int
        1..35, Table 1 order. Right label = index, left label = index + 35.
    key : str
        snake_case identifier used in file names and params.yaml.
    name : str
        Name exactly as in the paper's Table 1.
    part : str
        Body part whose stage-1 image contains it: one of ``BODY_PARTS``.
    group : int
        Stage-1 group, 1..10.
    interobserver_dice : float
        Table 1, interobserver Dice.
    paper_dice_mean, paper_dice_sd : float
        Table 1, the proposed method's Dice, mean and standard deviation over 13 test cases.
    volume_ml : float
        Approximate adult-male reference volume (mL), phantom target.
    si_extent : tuple of float
        (top, bottom) belly extent as fractions of the T12-to-ankle span.
    """

    index: int
    key: str
    name: str
    part: str
    group: int
    interobserver_dice: float
    paper_dice_mean: float
    paper_dice_sd: float
    volume_ml: float
    si_extent: tuple[float, float]

    @property
    def right_label(self) -> int:
        return self.index

    @property
    def left_label(self) -> int:
        return self.index + N_MUSCLES


_A, _U, _L = BODY_PARTS
# index, key, Table-1 name, part, group, interobserver, mean, sd, volume mL, SI extent
_TABLE = [
    (1, "adductor_brevis", "Adductor brevis", _U, 4, 0.88, 0.83, 0.024, 105, (0.20, 0.35)),
    (2, "adductor_longus", "Adductor longus", _U, 4, 0.94, 0.94, 0.011, 175, (0.20, 0.45)),
    (3, "adductor_magnus", "Adductor magnus", _U, 6, 0.92, 0.94, 0.015, 560, (0.21, 0.58)),
    (4, "biceps_femoris_long", "Biceps femoris: long head", _U, 7, 0.95, 0.94, 0.034, 210, (0.22, 0.58)),
    (5, "biceps_femoris_short", "Biceps femoris: short head", _U, 7, 0.95, 0.93, 0.013, 105, (0.38, 0.58)),
    (6, "external_rotators", "External rotators", _A, 3, 0.84, 0.70, 0.101, 10, (0.18, 0.21)),
    (7, "fibulari", "Fibulari", _L, 9, 0.93, 0.93, 0.036, 140, (0.62, 0.92)),
    (8, "flexor_digitorum_longus", "Flexor digitorum longus", _L, 10, 0.94, 0.85, 0.032, 35, (0.66, 0.93)),
    (9, "flexor_hallucis_longus", "Flexor hallucis longus", _L, 10, 0.83, 0.87, 0.038, 70, (0.70, 0.95)),
    (10, "gastrocnemius_lateral", "Gastrocnemius: lateral head", _L, 8, 0.92, 0.92, 0.016, 140, (0.55, 0.80)),
    (11, "gastrocnemius_medial", "Gastrocnemius: medial head", _L, 8, 0.94, 0.95, 0.012, 260, (0.55, 0.80)),
    (12, "gluteus_maximus", "Gluteus maximus", _A, 2, 0.97, 0.97, 0.006, 850, (0.12, 0.30)),
    (13, "gluteus_medius", "Gluteus medius", _A, 1, 0.94, 0.93, 0.013, 335, (0.08, 0.19)),
    (14, "gluteus_minimus", "Gluteus minimus", _A, 1, 0.90, 0.88, 0.015, 110, (0.10, 0.19)),
    (15, "gracilis", "Gracilis", _U, 6, 0.96, 0.94, 0.010, 110, (0.21, 0.62)),
    (16, "iliacus", "Iliacus", _A, 1, 0.91, 0.91, 0.033, 185, (0.08, 0.26)),
    (17, "obturator_externus", "Obturator externus", _A, 3, 0.66, 0.78, 0.058, 40, (0.18, 0.22)),
    (18, "obturator_internus", "Obturator internus", _A, 2, 0.78, 0.78, 0.043, 35, (0.15, 0.20)),
    (19, "pectineus", "Pectineus", _A, 3, 0.92, 0.84, 0.036, 60, (0.19, 0.27)),
    (20, "piriformis", "Piriformis", _A, 2, 0.86, 0.80, 0.050, 35, (0.14, 0.18)),
    (21, "phalangeal_extensors", "Phalangeal extensors", _L, 9, 0.89, 0.90, 0.030, 100, (0.63, 0.95)),
    (22, "popliteus", "Popliteus", _L, 8, 0.90, 0.88, 0.029, 20, (0.60, 0.66)),
    (23, "psoas_major", "Psoas major", _A, 1, 0.92, 0.78, 0.067, 260, (0.00, 0.26)),
    (24, "quadratus_femoris", "Quadratus femoris", _A, 3, 0.89, 0.81, 0.057, 30, (0.20, 0.24)),
    (25, "rectus_femoris", "Rectus femoris", _U, 5, 0.97, 0.96, 0.026, 265, (0.14, 0.55)),
    (26, "sartorius", "Sartorius", _U, 4, 0.95, 0.93, 0.020, 185, (0.12, 0.62)),
    (27, "semimembranosus", "Semimembranosus", _U, 6, 0.90, 0.93, 0.030, 255, (0.23, 0.60)),
    (28, "semitendinosus", "Semitendinosus", _U, 7, 0.95, 0.93, 0.011, 210, (0.22, 0.62)),
    (29, "soleus", "Soleus", _L, 8, 0.93, 0.94, 0.019, 475, (0.63, 0.92)),
    (30, "tensor_fasciae_latae", "Tensor fasciae latae", _A, 2, 0.96, 0.94, 0.016, 70, (0.13, 0.25)),
    (31, "tibialis_anterior", "Tibialis anterior", _L, 9, 0.88, 0.92, 0.015, 165, (0.62, 0.90)),
    (32, "tibialis_posterior", "Tibialis posterior", _L, 10, 0.94, 0.90, 0.034, 105, (0.63, 0.88)),
    (33, "vastus_intermedius", "Vastus intermedius", _U, 5, 0.87, 0.88, 0.026, 400, (0.22, 0.55)),
    (34, "vastus_lateralis", "Vastus lateralis", _U, 5, 0.95, 0.94, 0.018, 655, (0.18, 0.56)),
    (35, "vastus_medialis", "Vastus medialis", _U, 5, 0.96, 0.95, 0.009, 405, (0.30, 0.58)),
]

MUSCLES: tuple[Muscle, ...] = tuple(Muscle(*row) for row in _TABLE)

#: Stage-1 groups: group number -> (title, body part, muscle keys), superior to inferior.
GROUPS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    1: ("iliopsoas and lateral hip", _A, ("psoas_major", "iliacus", "gluteus_medius", "gluteus_minimus")),
    2: ("buttock", _A, ("gluteus_maximus", "piriformis", "obturator_internus", "tensor_fasciae_latae")),
    3: ("deep hip", _A, ("obturator_externus", "quadratus_femoris", "external_rotators", "pectineus")),
    4: ("proximal medial thigh", _U, ("sartorius", "adductor_longus", "adductor_brevis")),
    5: ("quadriceps", _U, ("rectus_femoris", "vastus_lateralis", "vastus_intermedius", "vastus_medialis")),
    6: ("medial and posteromedial thigh", _U, ("adductor_magnus", "gracilis", "semimembranosus")),
    7: ("posterolateral thigh", _U, ("biceps_femoris_long", "biceps_femoris_short", "semitendinosus")),
    8: ("superficial calf", _L, ("gastrocnemius_medial", "gastrocnemius_lateral", "soleus", "popliteus")),
    9: ("anterior and lateral calf", _L, ("tibialis_anterior", "phalangeal_extensors", "fibulari")),
    10: ("deep posterior calf", _L, ("tibialis_posterior", "flexor_digitorum_longus", "flexor_hallucis_longus")),
}

#: Label id -> (muscle key, side), side in {"right", "left"}; background 0 is not listed.
REGIONS: dict[int, tuple[str, str]] = {
    **{m.right_label: (m.key, "right") for m in MUSCLES},
    **{m.left_label: (m.key, "left") for m in MUSCLES},
}

#: The paper's own counts (abstract and section 3.4): muscles whose automatic Dice is within
#: interobserver variability, and those slightly worse. Note: applying ">= interobserver" to
#: Table 1's rounded values gives 15 and 20; the kit reports both.
PAPER_WITHIN_INTEROBSERVER = 14
PAPER_WORSE_THAN_INTEROBSERVER = 21
#: Section 3.4: mean percentage volume error and mean surface distance over all muscles.
PAPER_MEAN_VOLUME_ERROR_PCT = 6.5
PAPER_MEAN_MSD_MM = 2.9

_BY_KEY = {m.key: m for m in MUSCLES}
_BY_NAME = {m.name.lower(): m for m in MUSCLES}


def muscle(key_or_name: str) -> Muscle:
    """Look up a muscle by key (``"adductor_brevis"``) or Table-1 name (case-insensitive)."""
    found = _BY_KEY.get(key_or_name) or _BY_NAME.get(str(key_or_name).lower())
    if found is None:
        raise KeyError(f"unknown muscle {key_or_name!r}; known keys: {', '.join(_BY_KEY)}")
    return found


def label_id(key: str, side: str) -> int:
    """Label id of muscle ``key`` on ``side`` ("right" or "left")."""
    m = muscle(key)
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return m.right_label if side == "right" else m.left_label


def _check_label(label: int) -> int:
    label = int(label)
    if label not in REGIONS:
        raise ValueError(f"label {label} is not a muscle region (valid: 1..{N_REGIONS})")
    return label


def muscle_of_label(label: int) -> Muscle:
    """The muscle a region label (1..70) belongs to."""
    return _BY_KEY[REGIONS[_check_label(label)][0]]


def side_of_label(label: int) -> str:
    """"right" for labels 1..35, "left" for 36..70."""
    return REGIONS[_check_label(label)][1]


def region_name(label: int) -> str:
    """Human-readable region name, e.g. ``"Adductor brevis (right)"``."""
    key, side = REGIONS[_check_label(label)]
    return f"{_BY_KEY[key].name} ({side})"


def mirror_label(label: int) -> int:
    """The same muscle on the other leg."""
    label = _check_label(label)
    return label + N_MUSCLES if label <= N_MUSCLES else label - N_MUSCLES


def group_of(key: str) -> int:
    """Stage-1 group number (1..10) of a muscle."""
    return muscle(key).group


def group_labels(group: int) -> tuple[int, ...]:
    """Region labels of a stage-1 group: right labels first, then left, Table-1 order."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {sorted(GROUPS)}, got {group!r}")
    ms = sorted((muscle(k) for k in GROUPS[group][2]), key=lambda m: m.index)
    return tuple(m.right_label for m in ms) + tuple(m.left_label for m in ms)


def labels_of_part(part: str) -> tuple[int, ...]:
    """Region labels of all muscles whose stage-1 image is ``part``."""
    if part not in BODY_PARTS:
        raise ValueError(f"part must be one of {BODY_PARTS}, got {part!r}")
    ms = [m for m in MUSCLES if m.part == part]
    return tuple(m.right_label for m in ms) + tuple(m.left_label for m in ms)
