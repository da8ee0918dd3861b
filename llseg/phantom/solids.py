"""Solids of the tissue map: bones (a cortex around marrow), joint spaces, organs, fat and vessels as
simple shapes in world mm (ellipsoids, capsules, swept ellipses and polylines, shells).

Each solid's ``paint(u, z, xs, ys)`` returns ``(i0, i1, j0, j1, outer, inner, kind)`` on the bounding
box of its cross-section at height ``z`` (body-axis fraction ``u``) of the grid ``xs x ys``, or None.
"""
from __future__ import annotations

import math

import numpy as np

from .tables import CORTEX, FAT, MUSCLE, VESSEL, VISCERA

__all__ = [
    "bbox",
    "Solid",
    "CellDisc",
    "Ellipsoid",
    "Capsule",
    "SweptEllipse",
    "Ring",
    "SweptPolyline",
    "Shell",
    "KIND_TISSUE",
]


def bbox(xs, ys, x0, x1, y0, y1):
    """Index ranges ``(i0, i1, j0, j1)`` of the ascending axes xs, ys inside [x0, x1] x [y0, y1], or None."""
    i0, i1 = np.searchsorted(xs, x0, "left"), np.searchsorted(xs, x1, "right")
    j0, j1 = np.searchsorted(ys, y0, "left"), np.searchsorted(ys, y1, "right")
    if i1 <= i0 or j1 <= j0:
        return None
    return int(i0), int(i1), int(j0), int(j1)


class Solid:
    """A solid of the tissue map; subclasses implement ``paint(u, z, xs, ys)``."""

    kind = "bone"   # bone | joint | viscera | fat | vessel | muscle | cut (fat over bone)
    layer = 1       # painting order: 0 under bones, 1 bones, 2 over bones, 3 vessel rims, 4 vessels


class CellDisc:
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


class Ellipsoid(Solid):
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
        bb = bbox(xs, ys, self.c[0] - ax, self.c[0] + ax, self.c[1] - ay, self.c[1] + ay)
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


class Capsule(Solid):
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
        bb = bbox(xs, ys, min(p_lo[0], p_hi[0]) - r, max(p_lo[0], p_hi[0]) + r,
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


class SweptEllipse(Solid):
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
        bb = bbox(xs, ys, cx - ax, cx + ax, cy - ay, cy + ay)
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


class Ring(Solid):
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
        bb = bbox(xs, ys, cx - ax - t, cx + ax + t, y0, cy + ay + t)
        if bb is None:
            return None
        i0, i1, j0, j1 = bb
        dx, dy = xs[i0:i1, None] - cx, ys[None, j0:j1] - cy
        outer = ((dx / (ax + t)) ** 2 + (dy / (ay + t)) ** 2 <= 1.0) & ((dx / ax) ** 2 + (dy / ay) ** 2 > 1.0)
        return i0, i1, j0, j1, outer, None, self.kind


class SweptPolyline(Solid):
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
        bb = bbox(xs, ys, pts[:, 0].min() - hmax, pts[:, 0].max() + hmax, pts[:, 1].min() - hmax,
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


class Shell(Solid):
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
        bb = bbox(xs, ys, self.c[0] - ro, self.c[0] + ro, self.c[1] - ro, self.c[1] + ro)
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


KIND_TISSUE = {"bone": CORTEX, "joint": VISCERA, "viscera": VISCERA, "fat": FAT, "cut": FAT, "vessel": VESSEL,
               "muscle": MUSCLE}
