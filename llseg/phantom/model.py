"""The subject model: one phantom subject built once and rendered at any axial grid.

Construction (after ``../shared/design/phantom.md``):

1. *Body axis* (``subject``): landmarks are fractions of the T12-to-ankle span; the subject's
   trunk, thigh and shank ratios stretch the three segments.
2. *Skeleton and organs* (``skeleton``, ``solids``): bones, joints, viscera and vessels as simple
   solids.
3. *Muscles as tubes* (``cells``): each of the 35 muscles, plus unlabelled trunk muscles and fat
   pads, has a centreline around a bone axis (``tables``) and an elliptical cross-section whose
   area follows the subject's volumes.
4. *Limb outline, packing and fat* (``packing``): the compartment is the smoothed union of the
   tubes and solids; its voxels go to the cells by a calibrated power diagram; subcutaneous and
   intermuscular fat surround them.

The anatomy is continuous in space: ``render_anatomy`` samples it at the voxel centres of any axial
grid, so a fine-z rendering and a coarse one show the same subject. Everything is deterministic
from the subject's seed.
"""
from __future__ import annotations

import math

import numpy as np

from .cells import N_WAVES, CellsMixin
from .packing import PackingMixin
from .skeleton import SkeletonMixin
from .subject import Subject, check_subject, fraction_of_z, span_mm, z_of_fraction
from .tables import REF_HEIGHT_M, U_HIP, U_KNEE

__all__ = ["Model", "render_anatomy"]


class Model(CellsMixin, SkeletonMixin, PackingMixin):
    """Everything needed to render one subject at any grid (built and calibrated once)."""

    def __init__(self, subject: Subject):
        self.subject = s = subject
        self.span = span_mm(s)
        self.s = s.height_m / REF_HEIGHT_M
        self.sp = self.s * s.pelvis_width_scale
        self.size = self.s ** 2.5 * s.muscularity                     # muscle volume factor
        tan = math.tan(math.radians(s.leg_abduction_deg))
        l_thigh = self.zu(U_HIP) - self.zu(U_KNEE)
        l_shank = self.zu(U_KNEE) - self.zu(1.0)
        self.hip = np.array([88.0 * self.sp, 0.0])
        self.fem_top = np.array([self.hip[0] + 32.0 * self.s, -6.0 * self.s])
        self.knee = np.array([95.0 * self.sp + l_thigh * tan, 3.0 * self.s])
        self.ankle = np.array([self.knee[0] + l_shank * tan, -4.0 * self.s])
        self.fat_base = 40.0 * s.body_fat
        wrng = np.random.default_rng([s.seed, 2])
        angle = wrng.uniform(0, np.pi, N_WAVES)
        k = 2 * np.pi / wrng.uniform(40.0, 110.0, N_WAVES)
        self.waves = np.stack([k * np.cos(angle), k * np.sin(angle),
                               2 * np.pi / wrng.uniform(80.0, 250.0, N_WAVES) * wrng.choice([-1.0, 1.0], N_WAVES),
                               wrng.uniform(0, 2 * np.pi, N_WAVES)], axis=1)          # (K, 4)
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
        return float(fraction_of_z(self.subject, z, self.span))

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
            a = float(np.clip((u - U_KNEE) / (1.0 - U_KNEE), 0.0, 1.0))
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
    subject = check_subject(subject)
    A = _check_affine(affine)
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    model = Model(subject)
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
