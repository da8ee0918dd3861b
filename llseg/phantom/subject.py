"""Phantom subjects: the parameters of one athlete-like subject, how they are drawn from a seed, and
the body axis and field of view they define.

World frame: RAS+ millimetres (``anatomy.RIGHT_LEG_AT_POSITIVE_X``): +x is the subject's Right, +y
Anterior, +z Superior. The body midline is x = 0, y = 0 passes through the hip-joint centres, z = 0
is the ankle joint and z = ``span_mm(subject)`` is T12. Landmarks are fractions of the T12-to-ankle
span (``tables.LANDMARKS``); the subject's trunk, thigh and shank ratios stretch the three segments
piecewise linearly, so each muscle's ``anatomy.Muscle.si_extent`` maps onto the subject.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from llseg import _validate, anatomy

from .tables import REF_HEIGHT_M, REF_RATIOS, U_HIP, U_KNEE

__all__ = [
    "Subject",
    "sample_subject",
    "check_subject",
    "span_mm",
    "z_of_fraction",
    "fraction_of_z",
    "field_of_view",
]


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
    trunk, thigh, shank = (float(r * math.exp(rng.normal(0.0, sd))) for r, sd in zip(REF_RATIOS, (0.04, 0.03, 0.03)))
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


def check_subject(subject) -> Subject:
    if not isinstance(subject, Subject):
        raise TypeError(f"subject must be an llseg.phantom.Subject, got {type(subject).__name__}")
    return subject


def span_mm(subject: Subject) -> float:
    """T12-to-ankle length (mm) of ``subject``."""
    s = check_subject(subject)
    return 1000.0 * s.height_m * (s.trunk_ratio + s.thigh_ratio + s.shank_ratio)


def _g_nodes(subject: Subject) -> np.ndarray:
    """Subject fractions of the reference landmarks 0, hip, knee, 1."""
    total = subject.trunk_ratio + subject.thigh_ratio + subject.shank_ratio
    return np.array([0.0, subject.trunk_ratio / total, (subject.trunk_ratio + subject.thigh_ratio) / total, 1.0])


_U_NODES = np.array([0.0, U_HIP, U_KNEE, 1.0])


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


def fraction_of_z(subject: Subject, z, span: float) -> np.ndarray:
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
    s = check_subject(subject)
    spacing = _validate.spacing(spacing_mm, 3)
    try:
        nx, ny = (int(v) for v in matrix_xy)
    except (TypeError, ValueError):
        raise ValueError(f"matrix_xy must be two positive integers, got {matrix_xy!r}") from None
    if nx < 1 or ny < 1 or len(tuple(matrix_xy)) != 2:
        raise ValueError(f"matrix_xy must be two positive integers, got {matrix_xy!r}")
    if isinstance(n_slices, bool) or int(n_slices) != n_slices or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices!r}")
    scale = s.height_m / REF_HEIGHT_M
    centre = np.array([0.0, -33.0 * scale, 0.5 * span_mm(s)])       # body AP extent ~ -160 .. +95 mm
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = centre - 0.5 * (np.array([nx, ny, int(n_slices)]) - 1) * np.array(spacing)
    return affine
