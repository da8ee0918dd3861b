"""Skeleton, organs and vessels of a phantom subject: the solids of its tissue map.

Lumbar spine (with discs and canal), sacrum, ilium wings, acetabulum, pubis and ischium, femur
(head, neck, trochanters, tapered shaft with linea aspera, condyles), patella, tibia, fibula and
talus, each a cortical shell around marrow; joint spaces; viscera, kidneys and rectum; the abdominal
wall; aorta, vena cava and each leg's femoral / popliteal / tibial vessels with a thin fat sheath.
The femoral shaft runs from the trochanter medially down to the knee; each leg is abducted by the
subject's ``leg_abduction_deg``.
"""
from __future__ import annotations

import numpy as np

from .solids import KIND_TISSUE, Capsule, CellDisc, Ellipsoid, Ring, Shell, SweptEllipse, SweptPolyline
from .tables import ANTERIOR_TIBIAL, ARTERY, CORTEX, MARROW, U_HIP, VEIN_OFFSET

__all__ = ["SkeletonMixin"]


class SkeletonMixin:
    """Methods of ``model.Model`` that build its solids and paint them on one axial grid."""

    def _build_prims(self):
        s, sp = self.s, self.sp
        prims = []
        yv_u, yv = [-0.3, 0.0, 0.05, 0.097], np.array([-48.0, -45.0, -28.0, -40.0]) * s
        # Midline: lumbar spine (with discs), arch and spinous process, canal, sacrum, viscera.
        discs = [(d - 0.0035, d + 0.0035) for d in np.arange(0.097, -0.31, -0.0194)]
        prims.append(SweptEllipse("bone", yv_u, 0.0, yv, np.array([22, 23, 25, 26]) * sp,
                                  np.array([16, 17, 18, 18]) * s, cortex=1.5, gaps=discs))
        arch = [[(-14, -20), (-9, -34), (0, -38), (9, -34), (14, -20)]]
        for pts in arch + [[(0, -38), (0, -66)]]:
            pu = np.array(yv_u + [0.105])
            pp = np.array([[(x * s, y * s + np.interp(uu, yv_u, yv)) for x, y in pts] for uu in pu])
            prims.append(SweptPolyline("bone", pu, pp, np.full((len(pu), len(pts)), 4.5 * s), cortex=1.5))
        prims.append(SweptEllipse("joint", yv_u, 0.0, yv - 27 * s, 10 * s, 7.5 * s, layer=0))
        prims.append(SweptEllipse("bone", [0.095, 0.11, 0.13, 0.15, 0.17, 0.19, 0.205, 0.215], 0.0,
                                  np.array([-62, -72, -84, -92, -97, -97, -92, -86]) * s,
                                  np.array([50, 50, 45, 36, 26, 16, 9, 5]) * sp,
                                  np.array([20, 20, 18, 15, 12, 9, 6, 4]) * s, cortex=2.0))
        cuts = [CellDisc(self, side, name, 1.0) for side in (1, -1)
                for name in ("psoas_major", "quadratus_lumborum", "iliacus", "obturator_internus", "piriformis",
                             "pelvic_floor")]
        viscera = SweptEllipse("viscera", [-0.3, 0.0, 0.04, 0.08, 0.11, 0.14, 0.17, 0.20, 0.225, 0.24], 0.0,
                               np.array([12, 12, 14, 14, 8, -8, -15, -28, -40, -48]) * s,
                               np.array([122, 122, 118, 100, 68, 62, 54, 44, 24, 6]) * sp,
                               np.array([62, 62, 62, 60, 60, 60, 52, 40, 24, 8]) * s, cuts=cuts, layer=0)
        prims.append(viscera)
        # Anterior and lateral abdominal wall (rectus, obliques, transversus): unlabelled muscle.
        prims.append(Ring("muscle", viscera, [-0.3, 0.06, 0.10, 0.14, 0.165, 0.175],
                          np.array([12, 12, 10, 8, 5, 0]) * s * self.subject.muscularity,
                          [0.2, 0.2, -0.2, -0.4, -0.5, -0.5]))
        # Kidneys beside the upper lumbar spine, rectum (and sigmoid) on the sacrum and coccyx.
        for side in (1, -1):
            prims.append(SweptEllipse("viscera", [-0.3, 0.0, 0.03, 0.06], side * 78 * sp,
                                      np.array([-48, -48, -44, -40]) * s, np.array([30, 30, 26, 0]) * s,
                                      np.array([24, 24, 20, 0]) * s, layer=0))
        ru = np.array([0.10, 0.13, 0.16, 0.19, 0.215, 0.235])
        prims.append(SweptEllipse("viscera", ru, 0.0, np.array([-45, -56, -64, -68, -62, -55]) * s,
                                  np.array([20, 24, 24, 22, 18, 10]) * s, np.array([16, 20, 20, 18, 16, 8]) * s,
                                  layer=0))
        # Aorta (left of the midline, to its bifurcation at L4) and inferior vena cava, fat-sheathed.
        au = [-0.3, 0.0, 0.05, 0.078]
        ay = np.interp(au, yv_u, yv) + 30 * s
        prims.append(SweptEllipse("fat", au, -14 * s, ay, 12 * s, 12 * s, layer=3))
        prims.append(SweptEllipse("vessel", au, -14 * s, ay, 10.5 * s, 10.5 * s, layer=4))
        vu = [-0.3, 0.0, 0.05, 0.09]
        vy = np.interp(vu, yv_u, yv) + 28 * s
        prims.append(SweptEllipse("fat", vu, 20 * s, vy, 13 * s, 13 * s, layer=3))
        prims.append(SweptEllipse("vessel", vu, 20 * s, vy, 11.5 * s, 11.5 * s, layer=4))
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
        out.append(SweptEllipse("bone", [0.188, 0.195, 0.22, 0.228], X(14 * sp), np.array([62, 62, 58, 52]) * s,
                                np.array([8, 12, 12, 7]) * s, np.array([7, 10, 10, 6]) * s, cortex=1.5))
        out.append(SweptEllipse("bone", [0.183, 0.195, 0.21, 0.225, 0.238, 0.244],       # ischium
                                X(np.array([60, 58, 54, 50, 48, 47]) * sp),
                                np.array([-42, -45, -46, -45, -42, -40]) * s, np.array([10, 13, 16, 17, 14, 6]) * s,
                                np.array([12, 15, 17, 17, 13, 6]) * s, cortex=2.0))
        # Hip joint: acetabulum, joint space, femoral head, neck, trochanters, shaft, linea aspera.
        r_head = 24.0 * s
        h3 = np.array([X(self.hip[0]), 0.0, zu(U_HIP)])
        out.append(Ellipsoid("joint", h3, (r_head + 2 * s,) * 3, layer=0))
        out.append(Shell("bone", h3, r_head + 2 * s, r_head + 13 * s, side, 10 * s, -16 * s, cortex=2.0))
        out.append(Ellipsoid("bone", h3, (r_head,) * 3, cortex=1.5))
        neck_end = np.array([X(self.hip[0] + 30 * s), -8 * s, h3[2] - 28 * s])
        out.append(Capsule("bone", h3, neck_end, 14 * s, 16 * s, cortex=2.5))
        out.append(Ellipsoid("bone", (X(self.hip[0] + 37 * s), -12 * s, zu(0.20)), np.array([17, 21, 24]) * s, 2.0))
        out.append(Ellipsoid("bone", (X(self.hip[0] + 17 * s), -20 * s, zu(0.225)), np.array([9, 10, 12]) * s, 2.0))
        top3 = (X(self.fem_top[0]), self.fem_top[1], zu(0.205))
        bot3 = (X(self.knee[0]), self.knee[1], zu(0.565))
        out.append(Capsule("bone", top3, bot3, 15 * s, 17 * s, cortex=5.5 * s))
        f26, f50 = self.frame("fem", 0.26), self.frame("fem", 0.50)
        out.append(Capsule("bone", (X(f26[0]), f26[1] - 15 * s, zu(0.26)), (X(f50[0]), f50[1] - 15 * s, zu(0.50)),
                           5 * s, 5 * s, cortex=20.0))
        # Distal femur, intercondylar notch, patella, knee joint spaces.
        du = [0.50, 0.53, 0.555, 0.575, 0.59, 0.598, 0.602]
        dc = np.array([self.frame("fem", u) for u in du])
        out.append(SweptEllipse("bone", du, X(dc[:, 0]), dc[:, 1] + np.array([2, 0, -2, -4, -5, -6, -7]) * s,
                                np.array([16, 19, 28, 40, 42, 40, 33]) * s, np.array([16, 17, 22, 29, 30, 27, 20]) * s,
                                cortex=[5, 3.5, 2, 1.5, 1.5, 1.5, 1.5]))
        out.append(SweptEllipse("cut", [0.578, 0.585, 0.602], X(self.knee[0]), self.knee[1] - 22 * s,
                                np.array([0, 10, 11]) * s, np.array([0, 14, 14]) * s, layer=2))
        pat = (X(self.knee[0] + 3 * s), 40 * s, zu(0.578))
        out.append(Ellipsoid("joint", (pat[0], 30 * s, pat[2]), np.array([22, 5, 20]) * s, layer=0))
        out.append(Ellipsoid("bone", pat, np.array([22, 10, 21]) * s, cortex=1.5))
        out.append(SweptEllipse("joint", [0.597, 0.601, 0.607, 0.610], X(self.knee[0]), 0.0,
                                np.array([36, 42, 42, 38]) * s, np.array([24, 29, 28, 26]) * s, layer=0))
        # Tibia (plateau, shaft, plafond), tuberosity, malleoli, fibula, talus.
        tu = [0.603, 0.612, 0.625, 0.64, 0.66, 0.72, 0.85, 0.93, 0.965, 0.99, 1.0]
        tc = np.array([self.frame("tib", u) for u in tu])
        off = np.array([(0, 0), (0, 0), (-1, 1), (-3, 3), (-4, 4), (-4, 4), (-4, 4), (-3, 3), (-2, 2), (-2, 2),
                        (-2, 2)], float) * s
        out.append(SweptEllipse("bone", tu, X(tc[:, 0] + off[:, 0]), tc[:, 1] + off[:, 1],
                                np.array([36, 39, 35, 26, 18, 14, 13, 15, 19, 22, 21]) * s,
                                np.array([24, 27, 25, 21, 18, 16, 14, 14, 16, 18, 17]) * s,
                                cortex=[1.5, 1.5, 1.5, 2, 3.5, 5.5, 5, 3.5, 2, 1.5, 1.5]))

        def tib(u, dlat, dant):
            o = self.frame("tib", u)
            return X(o[0] + dlat * s), o[1] + dant * s, zu(u)

        out.append(Ellipsoid("bone", tib(0.635, -2, 24), np.array([10, 8, 16]) * s, 2.0))
        out.append(Ellipsoid("bone", tib(0.995, -20, 0), np.array([9, 12, 15]) * s, 1.5))
        out.append(Ellipsoid("bone", tib(0.625, 33, -18), np.array([12, 12, 14]) * s, 1.5))
        out.append(Capsule("bone", tib(0.635, 31, -17), tib(0.975, 26, -10), 7 * s, 8 * s, cortex=2.5 * s))
        out.append(Ellipsoid("bone", tib(0.985, 27, -10), np.array([10, 13, 20]) * s, 1.5))
        ta = tib(1.0, 0, 0)
        out.append(Ellipsoid("joint", (ta[0], ta[1], ta[2] - 2 * s), np.array([22, 22, 4]) * s, layer=0))
        out.append(Ellipsoid("bone", (ta[0], ta[1], ta[2] - 18 * s), np.array([20, 25, 15]) * s, 1.5))
        # Vessels (femoral / popliteal / posterior tibial artery and vein, anterior tibial artery).
        lam = self.lam[side]
        art = [(u, *self._point(u, f, la, an, lam)[0], r) for u, f, la, an, r in ARTERY]
        au = np.array([a[0] for a in art])
        ax_, ay_, ar = (np.array([a[k] for a in art]) for k in (1, 2, 3))
        vo = np.array(VEIN_OFFSET)
        vx = ax_ + np.interp(au, vo[:, 0], vo[:, 1]) * s
        vy = ay_ + np.interp(au, vo[:, 0], vo[:, 2]) * s
        vr = np.interp(au, vo[:, 0], vo[:, 3]) * s
        at = [(u, *self._point(u, f, la, an, lam)[0], r) for u, f, la, an, r in ANTERIOR_TIBIAL]
        bu, bx, by, br = (np.array([a[k] for a in at]) for k in range(4))
        for (uu, xx, yy, rr) in ((au, ax_, ay_, ar * s), (au, vx, vy, vr), (bu, bx, by, br * s)):
            out.append(SweptEllipse("fat", uu, X(xx), yy, rr + 1.2, rr + 1.2, layer=3))
            out.append(SweptEllipse("vessel", uu, X(xx), yy, rr, rr, layer=4))
        return out

    def _polyline(self, side, nodes, cortex):
        u = [n[0] for n in nodes]
        pts = np.array([n[1] for n in nodes], float) * [self.sp, self.s]
        pts[..., 0] *= side
        half = np.array([n[2] for n in nodes], float) * self.s
        return SweptPolyline("bone", u, pts, half, cortex=cortex)

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
                    view[outer] = CORTEX
                else:
                    view[outer] = KIND_TISSUE[kind]
            if layer == 1:   # marrow after all cortices, so overlapping bones keep their marrow
                for lay, (i0, i1, j0, j1, outer, inner, kind) in results:
                    if lay == 1 and kind == "bone" and inner is not None:
                        tissue[i0:i1, j0:j1][inner & outer] = MARROW
        return tissue
