"""Packing: the limb outline, the calibration of the cell weights, and the rendering of one slice.

The muscle compartment is the smoothed union of the cells, solids and viscera, thresholded so its
area equals their summed target area (plus every cell's core). The cell weights ``w`` are calibrated
on a coarse grid every few mm along z until every cell's area matches its target (a capacity-
constrained power diagram, which no library provides); two fat cells (pelvic and deep gluteal fat)
take whatever space is left. A rendered slice adds subcutaneous fat of position-dependent thickness
around the compartment and intermuscular fat where two muscle cells meet (sub-voxel layers give a
sparse, faint line).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from .cells import cores, grad
from .solids import bbox
from .tables import FAT, MUSCLE

__all__ = ["PackingMixin", "fit_weights", "interp2"]

log = logging.getLogger(__name__)

# Numerical settings (they shape the anatomy, not the sampling: any grid sees the same subject).
_H_MM = 3.5                 # in-plane spacing of the calibration grid
_DZ_NODE_MM = 6.0           # SI spacing of the calibration nodes
_U_RANGE = (-0.10, 1.08)    # modelled part of the body axis (beyond it the body is a prism)
#: Smoothing of the compartment outline (u -> mm): trunk, thigh, knee and calf.
_SIGMA_OUTLINE_MM = ((-0.3, 0.17, 0.27, 0.52, 0.62, 1.2), (16.0, 16.0, 19.0, 19.0, 15.0, 15.0))
_N_ITER_FIRST, _N_ITER = 60, 12   # weight-calibration iterations at the first / a warm-started node
_RHO_RANGE = (-25.0, 25.0)  # bounds of the relative weight correction
_U_HOLES = 0.2              # above this fraction (trunk, pelvis) enclosed outline gaps are fat, below muscle


class PackingMixin:
    """Methods of ``model.Model`` that calibrate the cell weights and render one axial slice."""

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
                    bb = bbox(self.cxs, self.cys, st["cx"][k] - r, st["cx"][k] + r, st["cy"][k] - r, st["cy"][k] + r)
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
            body = (f >= tau) | excl | cores(states, self.cxs, self.cys)
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
                delta, eta, err = fit_weights(C, w0, target, delta, np.where(st["absorb"], 0.0, eta), n_iter, h2)
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
        bb = bbox(xs, ys, self.cxs[ci.min()] - margin, self.cxs[ci.max()] + margin,
                  self.cys[cj.min()] - margin, self.cys[cj.max()] + margin)
        if bb is None:
            return None
        bi0, bi1, bj0, bj1 = bb
        X, Y = xs[bi0:bi1], ys[bj0:bj1]
        f = interp2(Fz, self.cxs, self.cys, X, Y)
        tissue = self.paint_prims(u, zc, X, Y)
        excl = tissue > 0
        states = {side: self.cell_state(side, u) for side in (1, -1)}
        body = (f >= tau) | excl | cores(states, X, Y)
        holes = ndimage.binary_fill_holes(body) & ~body          # enclosed gaps of the outline
        body |= holes
        if u < _U_HOLES:                                         # trunk and pelvis: fat, not muscle
            tissue[holes] = FAT
            excl |= holes
        # Subcutaneous fat: a band of position-dependent thickness outside the compartment.
        dist = ndimage.distance_transform_edt(~body, sampling=(dx, dy))
        skin = body | (dist <= self.fat_thickness(u, Y)[None, :])
        tissue[skin & ~body] = FAT
        labels = np.zeros(tissue.shape, np.uint8)
        imf = self.subject.intermuscular_fat_mm
        for si, side in enumerate((1, -1)):
            st = states[side]
            side_mask = (X >= 0)[:, None] if side > 0 else (X < 0)[:, None]     # midline column: right
            comp = body & ~excl & side_mask
            if st is None:
                tissue[comp] = FAT
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
            both = (st["tissue"][best] == MUSCLE) & (st["tissue"][second] == MUSCLE) & np.isfinite(cs)
            if imf > 0 and both.any():
                gx = grad(st, best, px, py, 0) - grad(st, second, px, py, 0)
                gy = grad(st, best, px, py, 1) - grad(st, second, px, py, 1)
                dist_b = (cs - cb) / np.maximum(np.hypot(gx, gy), 1e-6)
                fat = both & (dist_b < 0.5 * imf)
                tis[fat] = FAT
                lab = np.where(fat, 0, lab)
            tissue[ii, jj] = tis
            labels[ii, jj] = lab
        return bi0, bi1, bj0, bj1, labels, tissue


def fit_weights(C, w0, target, delta, eta, n_iter, h2):
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


def interp2(F, fx, fy, X, Y):
    """Bilinear interpolation of F (on the ascending regular axes fx, fy) at the grid X x Y."""
    def weights(axis, q):
        pos = np.clip((q - axis[0]) / (axis[1] - axis[0]), 0.0, len(axis) - 1.0)
        i0 = np.minimum(np.floor(pos).astype(int), len(axis) - 2)
        return i0, pos - i0

    ix, ax = weights(fx, X)
    iy, ay = weights(fy, Y)
    G = F[ix] * (1 - ax)[:, None] + F[ix + 1] * ax[:, None]          # (nX, ny)
    return G[:, iy] * (1 - ay)[None, :] + G[:, iy + 1] * ay[None, :]
