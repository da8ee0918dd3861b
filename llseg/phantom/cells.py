"""Muscle cells: each muscle (and each unlabelled trunk muscle or fat pad) as a tube whose centre,
area, elongation and pelvic-wall gate vary along the body axis, and the cost by which the cells
share the muscle compartment.

A muscle's centreline is placed by offsets around a bone axis (``tables.MUSCLE_GEOMETRY``); its
elliptical cross-section, elongated around that axis, rises from tendon to belly and falls again
within the SI extent, scaled so the volume is ``volume_ml x hypertrophy x body size``, split between
the legs so that left / right = ``asymmetry``. A compartment voxel goes to the cell with the
smallest anisotropic power distance ``(p - c)^T M (p - c) - w`` plus a smooth random perturbation
(organic boundaries); pelvic muscles are kept inside or outside the pelvic wall by a soft penalty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llseg import anatomy

from .solids import bbox
from .tables import FAT, MUSCLE, MUSCLE_GEOMETRY, OTHER_CELLS, PELVIC_WALL, REF_HEIGHT_M, REF_RATIOS

__all__ = ["N_WAVES", "bump", "Cell", "CellsMixin", "cores", "grad"]

_U_TAB = (-0.3, 1.2, 0.0005)   # u grid of the tabulated cell geometry
_GATE_RAMP, _GATE_PENALTY = 0.01, 400.0   # gate fade-in (fraction of span), penalty (mm^2 per mm)
_CORE = 0.6                 # relative size of the cell cores the compartment always contains
N_WAVES = 6                # smooth waves shared by the boundary perturbations


def bump(t, peak):
    """Belly profile on t in (0, 1): 0 at both tendon ends, 1 at ``peak``."""
    t = np.asarray(t, float)
    gamma = math.log(0.5) / math.log(peak)
    inside = (t > 0) & (t < 1)
    tt = np.where(inside, t, 0.5)
    return np.where(inside, np.sin(np.pi * tt ** gamma) ** 0.7, 0.0)


@dataclass
class Cell:
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
        return self.area_peak * bump((u - self.extent[0]) / (self.extent[1] - self.extent[0]), self.peak)

    def gate(self, u: float) -> float:
        """Signed gate strength at u: +1 outside / -1 inside the pelvic wall, ramped at the ends."""
        for g0, g1, g in self.gates:
            ramp = min(1.0, (u - g0) / _GATE_RAMP, (g1 - u) / _GATE_RAMP)
            if ramp > 0:
                return g * ramp
        return 0.0


class CellsMixin:
    """Methods of ``model.Model`` that build, tabulate and cost its cells (both legs)."""

    def _volume_targets(self, side):
        s = self.subject
        out = {}
        for m in anatomy.MUSCLES:
            v = m.volume_ml * s.hypertrophy[m.key] * self.size
            r = math.sqrt(s.asymmetry[m.key])
            out[m.key] = v * (r if side < 0 else 1.0 / r) * 1000.0   # mm^3
        return out

    def _peak_area(self, key, volume_mm3, subject_axis=True):
        geo = MUSCLE_GEOMETRY[key]
        top, bot = anatomy.muscle(key).si_extent
        u = np.linspace(top, bot, 2001)
        b = bump((u - top) / (bot - top), geo[0])
        if subject_axis:
            z = np.asarray(self.zu(u))
            length = np.abs(np.diff(z))
        else:
            length = np.full(len(u) - 1, np.diff(u)[0] * 1000.0 * REF_HEIGHT_M * sum(REF_RATIOS))
        integral = float(np.sum(0.5 * (b[1:] + b[:-1]) * length))
        return volume_mm3 / integral

    def _lambda(self, side):
        targets = self._volume_targets(side)
        sub = np.zeros_like(self._lambda_u)
        ref = np.zeros_like(self._lambda_u)
        for m in anatomy.MUSCLES:
            peak = MUSCLE_GEOMETRY[m.key][0]
            top, bot = m.si_extent
            b = bump((self._lambda_u - top) / (bot - top), peak)
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
            return rng.normal(0.0, 1.0, N_WAVES) * rng.uniform(0.15, 0.3) / math.sqrt(N_WAVES / 2)

        for m in anatomy.MUSCLES:
            peak, aspect, points, gates = MUSCLE_GEOMETRY[m.key]
            u, cx, cy, ox, oy = controls(points)
            cells.append(Cell(m.key, m.right_label if side > 0 else m.left_label, MUSCLE, u, cx, cy, ox, oy,
                              aspect, gates, area_peak=self._peak_area(m.key, targets[m.key]),
                              extent=m.si_extent, peak=peak, pert=pert()))
        other_scale = {MUSCLE: self.s ** 1.5 * self.subject.muscularity, FAT: self.s ** 2}
        for name, (tissue, area, points, aspect, gates, *absorb) in OTHER_CELLS.items():
            u, cx, cy, ox, oy = controls(points)
            au, av = np.array(area, float).T
            cells.append(Cell(name, 0, tissue, u, cx, cy, ox, oy, aspect, gates, area_u=au,
                              area_v=av * 100.0 * other_scale[tissue], pert=pert(), absorb=bool(absorb)))
        return cells

    def _build_wall(self):
        u = np.array([w[0] for w in PELVIC_WALL])
        p = np.array([w[1] for w in PELVIC_WALL], float) * [self.sp, self.s]
        a = np.array([w[2] for w in PELVIC_WALL], float) * [self.sp, self.s]
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


def cores(states, xs, ys):
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
            bb = bbox(xs, ys, cx - half, cx + half, cy - half, cy + half)
            if bb is None:
                continue
            i0, i1, j0, j1 = bb
            dx, dy = xs[i0:i1, None] - cx, ys[None, j0:j1] - cy
            mask[i0:i1, j0:j1] |= st["m11"][k] * dx * dx + 2 * st["m12"][k] * dx * dy + st["m22"][k] * dy * dy <= r2
    return mask


def grad(st, k, px, py, axis):
    """Component ``axis`` of the gradient 2 M (p - c) of cell ``k`` (per pixel)."""
    dx, dy = px - st["cx"][k], py - st["cy"][k]
    if axis == 0:
        return 2 * (st["m11"][k] * dx + st["m12"][k] * dy)
    return 2 * (st["m12"][k] * dx + st["m22"][k] * dy)
