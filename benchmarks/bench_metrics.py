"""Speed and agreement of ``llseg.metrics`` vs MedPy 0.5.2 and DeepMind's ``surface-distance``
(run by hand, not by the tests).

    .venv/bin/python benchmarks/bench_metrics.py [--medpy-regions 2] [--medpy-cropped 70]
                                                 [--sd-regions 70] [--no-backends] [--seed 0]

Needs ``medpy==0.5.2``, ``surface-distance==0.1`` (PyPI, DeepMind) and ``edt``. About
5-10 min on the 2-core machine, most of it MedPy.

Builds, inside this script (no ``llseg.phantom``), an anisotropic 1 x 1 x 5 mm pair of
512 x 512 x 220 label maps with 70 large regions: each of two ellipsoidal "legs" is split
into 35 Voronoi cells (anisotropic distance in mm); the "prediction" jitters every seed by
N(0, 3 mm), shifts both legs by (2, -1) voxels and scales them by 1.01, so every region is
shifted, dilated or eroded. Then, in one run:

1. ``llseg.metrics.evaluate_regions`` on all 70 regions (Dice, MSD, ASSD, HD95, volumes);
2. ``surface_distance`` (PyPI ``surface-distance`` 0.1, DeepMind) on ``--sd-regions``
   regions, extrapolated to 70 if fewer: Dice, average surface distance, robust HD95;
3. MedPy ``dc``, ``asd``, ``assd``, ``hd95`` on ``--medpy-regions`` regions (each call runs
   full-volume distance transforms: ~50 s per region), extrapolated to 70; and, for the
   agreement check only, MedPy on ``--medpy-cropped`` regions' padded union boxes;
4. unless ``--no-backends``: the per-region distance step with the alternative backends
   (scipy EDT and the ``edt`` package on the cropped box, scipy's cKDTree, llseg's).

Times are wall-clock and process CPU seconds: the machine is shared, and the CPU time of
single-threaded code depends much less on other users' load than wall time does.

Prints per-region agreement (absolute differences) and the speed ratios. MedPy's
definitions are llseg's, so its differences must be <= 1e-6 mm; ``surface-distance``
weighs surface elements by area and takes the max of two directed percentiles, so only its
Dice is comparable exactly (its distances are shown for orientation).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage

from llseg import _surface, metrics

SHAPE = (512, 512, 220)                 # voxels, (X, Y, Z)
SPACING = (1.0, 1.0, 5.0)               # mm
N_PER_LEG = 35
SEED_JITTER_MM = 3.0                    # prediction: seed displacement sd
SHIFT_VOX = (2, -1, 0)                  # prediction: shift of both legs
SCALE = 1.01                            # prediction: leg size factor


# ----------------------------------------------------------------------------- phantom pair
def _voronoi_legs(seeds: list[np.ndarray], *, shift=(0, 0, 0), scale: float = 1.0) -> np.ndarray:
    """Label map: two ellipsoids (right leg at large x, labels 1..35; left 36..70), each
    split into Voronoi cells of its 35 seeds (voxel coordinates) under mm distances."""
    nx, ny, nz = SHAPE
    sx, sy, sz = SPACING
    centres = [(0.75 * nx, 0.5 * ny), (0.25 * nx, 0.5 * ny)]
    semi = np.array([0.21 * nx, 0.23 * ny, 0.49 * nz]) * scale
    labels = np.zeros(SHAPE, np.uint8)
    xs, ys = np.arange(nx, dtype=float)[:, None], np.arange(ny, dtype=float)[None, :]
    for z in range(nz):
        for leg, (cx, cy) in enumerate(centres):
            inside = (((xs - cx - shift[0]) / semi[0]) ** 2 + ((ys - cy - shift[1]) / semi[1]) ** 2
                      + ((z - nz / 2 - shift[2]) / semi[2]) ** 2 <= 1.0)                  # (X, Y)
            ix, iy = np.nonzero(inside)
            if ix.size == 0:
                continue
            s = seeds[leg]                                                                  # (35, 3)
            d2 = (((ix[:, None] - s[None, :, 0]) * sx) ** 2 + ((iy[:, None] - s[None, :, 1]) * sy) ** 2
                  + ((z - s[None, :, 2]) * sz) ** 2)                                        # (n, 35)
            labels[ix, iy, z] = np.argmin(d2, axis=1) + 1 + N_PER_LEG * leg
    return labels


def make_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(pred, truth) uint8 label maps of shape SHAPE; see the module docstring."""
    nx, ny, nz = SHAPE
    semi = np.array([0.21 * nx, 0.23 * ny, 0.49 * nz])
    seeds = []
    for cx, cy in [(0.75 * nx, 0.5 * ny), (0.25 * nx, 0.5 * ny)]:
        u = rng.normal(size=(N_PER_LEG, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        r = 0.85 * rng.uniform(0.0, 1.0, N_PER_LEG) ** (1 / 3)
        seeds.append(np.array([cx, cy, nz / 2]) + u * r[:, None] * semi)
    truth = _voronoi_legs(seeds)
    jittered = [s + rng.normal(scale=SEED_JITTER_MM, size=s.shape) / np.array(SPACING) for s in seeds]
    pred = _voronoi_legs(jittered, shift=SHIFT_VOX, scale=SCALE)
    return pred, truth


# ----------------------------------------------------------------------------- runs
class Timer:
    """Wall-clock and process CPU seconds (the CPU time of single-threaded code hardly
    depends on what other users run on the machine; wall time does)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_llseg(pred, truth, threads):
    with Timer() as tm:
        rows = metrics.evaluate_regions(pred, truth, SPACING, threads=threads)
    return {r["label"]: r for r in rows}, tm


def run_surface_distance(pred, truth, labels):
    import surface_distance as sd
    out = {}
    with Timer() as tm:
        for label in labels:
            p, t = pred == label, truth == label
            dists = sd.compute_surface_distances(t, p, SPACING)
            avg_t2p, avg_p2t = sd.compute_average_surface_distance(dists)
            out[label] = {"dice": sd.compute_dice_coefficient(t, p), "msd_mm": avg_p2t,
                          "hd95_mm": sd.compute_robust_hausdorff(dists, 95)}
    return out, tm


def run_medpy(pred, truth, labels):
    from medpy.metric import binary
    out = {}
    with Timer() as tm:
        for label in labels:
            t0 = time.perf_counter()
            p, t = pred == label, truth == label
            out[label] = {"dice": binary.dc(p, t), "msd_mm": binary.asd(p, t, SPACING),
                          "assd_mm": binary.assd(p, t, SPACING), "hd95_mm": binary.hd95(p, t, SPACING)}
            print(f"  medpy label {label:2d}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out, tm


def run_medpy_cropped(pred, truth, labels):
    """MedPy on each region's union box padded by one background voxel: the same values as
    on the full volume (nothing outside the box is foreground) at a fraction of the cost."""
    from medpy.metric import binary
    out = {}
    for label, (p, t) in zip(range(1, 71), _crops(pred, truth)):
        if label not in labels:
            continue
        p, t = np.pad(p, 1), np.pad(t, 1)
        out[label] = {"dice": binary.dc(p, t), "msd_mm": binary.asd(p, t, SPACING),
                      "assd_mm": binary.assd(p, t, SPACING), "hd95_mm": binary.hd95(p, t, SPACING)}
    return out


def _crops(pred, truth):
    """Per region: union-box crops of both masks (setup shared by all backends)."""
    bp = ndimage.find_objects(pred, max_label=70)
    bt = ndimage.find_objects(truth, max_label=70)
    for label in range(1, 71):
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(bp[label - 1], bt[label - 1]))
        yield pred[box] == label, truth[box] == label


def run_backends(pred, truth):
    """Seconds for the distance step (surfaces + both directed distance sets) of all 70
    regions, per backend; and the max abs difference of the distances from scipy's EDT."""
    import edt
    from scipy.spatial import cKDTree

    crops = list(_crops(pred, truth))
    sp = np.asarray(SPACING)

    def scipy_edt(p, t):
        ps, ts = _surface.surface(p), _surface.surface(t)
        return (ndimage.distance_transform_edt(~ts, sampling=SPACING)[ps],
                ndimage.distance_transform_edt(~ps, sampling=SPACING)[ts])

    def edt_pkg(p, t):
        ps, ts = _surface.surface(p), _surface.surface(t)
        return (edt.edt(~ts, anisotropy=SPACING, black_border=False, parallel=1)[ps],
                edt.edt(~ps, anisotropy=SPACING, black_border=False, parallel=1)[ts])

    def edt_pkg2(p, t):
        ps, ts = _surface.surface(p), _surface.surface(t)
        return (edt.edt(~ts, anisotropy=SPACING, black_border=False, parallel=2)[ps],
                edt.edt(~ps, anisotropy=SPACING, black_border=False, parallel=2)[ts])

    def ckdtree(p, t):
        ps, ts = _surface.surface(p), _surface.surface(t)
        a, b = np.argwhere(ps) * sp, np.argwhere(ts) * sp
        return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]

    def llseg_kd(p, t):
        with _surface.single_thread():
            return _surface.both_directions(p, t, SPACING)

    results, ref = {}, None
    for name, fn in [("scipy EDT (crop)", scipy_edt), ("edt pkg, 1 thread (crop)", edt_pkg),
                     ("edt pkg, 2 threads (crop)", edt_pkg2), ("scipy cKDTree", ckdtree),
                     ("llseg (pykdtree + shortcuts, 1 thread)", llseg_kd)]:
        with Timer() as tm:
            vals = [np.concatenate(fn(p, t)) for p, t in crops]
        results[name] = tm
        if ref is None:
            ref = vals
        diff = max(float(np.abs(v - r).max()) for v, r in zip(vals, ref))
        print(f"  {name:42s} wall {tm.wall:6.2f} s  cpu {tm.cpu:6.2f} s   "
              f"max |d - scipy EDT| = {diff:.2e} mm", flush=True)
    return results


# ----------------------------------------------------------------------------- main
def _fmt(x):
    return f"{x:9.2e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--medpy-regions", type=int, default=2, help="regions timed with MedPy (~50 s each)")
    ap.add_argument("--medpy-cropped", type=int, default=70,
                    help="regions checked against MedPy run on the padded union box (~1 s each)")
    ap.add_argument("--sd-regions", type=int, default=70, help="regions timed with surface-distance")
    ap.add_argument("--no-backends", action="store_true", help="skip the distance-backend comparison")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    t0 = time.perf_counter()
    pred, truth = make_pair(np.random.default_rng(args.seed))
    counts = np.bincount(truth.ravel(), minlength=71)[1:]
    print(f"phantom pair {SHAPE} at {SPACING} mm built in {time.perf_counter() - t0:.1f} s; "
          f"truth region sizes {counts.min()}..{counts.max()} voxels "
          f"({counts.min() * np.prod(SPACING) / 1000:.0f}..{counts.max() * np.prod(SPACING) / 1000:.0f} mL)")

    ours, serial = run_llseg(pred, truth, threads=1)
    _, par = run_llseg(pred, truth, threads=None)
    print(f"\nllseg.evaluate_regions, 70 regions: 1 thread: wall {serial.wall:.2f} s, cpu {serial.cpu:.2f} s; "
          f"{metrics._n_threads(None, 70)} threads: wall {par.wall:.2f} s, cpu {par.cpu:.2f} s")

    order = sorted(ours, key=lambda k: -ours[k]["volume_true_ml"])
    sd_labels = sorted(order[:: max(1, 70 // max(1, args.sd_regions))][: args.sd_regions])
    print(f"\nsurface-distance on {len(sd_labels)} regions ...", flush=True)
    sd_vals, sd_tm = run_surface_distance(pred, truth, sd_labels)
    scale = 70 / len(sd_labels)
    print(f"surface-distance: wall {sd_tm.wall:.1f} s, cpu {sd_tm.cpu:.1f} s for {len(sd_labels)} regions "
          f"({sd_tm.wall / len(sd_labels):.3f} s/region)"
          f"{f' -> {sd_tm.wall * scale:.1f} s for 70 (extrapolated)' if scale > 1 else ''}")

    # llseg once more, after surface-distance, so that both see similar machine load
    _, serial2 = run_llseg(pred, truth, threads=1)
    _, par2 = run_llseg(pred, truth, threads=None)
    serial = min(serial, serial2, key=lambda tm: tm.wall)
    par = min(par, par2, key=lambda tm: tm.wall)

    md_labels = sorted({order[0], order[len(order) // 2], order[-1]}, key=order.index)[: args.medpy_regions]
    md_vals, md_tm = {}, None
    if md_labels:
        print(f"\nMedPy 0.5.2 (dc + asd + assd + hd95, full volume) on labels {md_labels} ...", flush=True)
        md_vals, md_tm = run_medpy(pred, truth, md_labels)
        print(f"MedPy: wall {md_tm.wall / len(md_labels):.1f} s/region, cpu {md_tm.cpu / len(md_labels):.1f} "
              f"s/region -> {md_tm.wall / len(md_labels) * 70:.0f} s for 70 (extrapolated)")

    print("\nagreement with MedPy (|llseg - medpy|; definitions identical):")
    print("label  volume_mL      dice    msd_mm   assd_mm   hd95_mm")
    worst = 0.0
    for label in md_labels:
        diffs = [abs(ours[label][k] - md_vals[label][k]) for k in ("dice", "msd_mm", "assd_mm", "hd95_mm")]
        worst = max(worst, *diffs)
        print(f"{label:5d} {ours[label]['volume_true_ml']:10.1f} " + " ".join(_fmt(d) for d in diffs))
    if md_labels:
        print(f"max abs difference vs MedPy: {worst:.2e} ({'OK' if worst <= 1e-6 else 'FAIL'}: target 1e-6)")
    if args.medpy_cropped:
        crop_labels = sorted(order[:: max(1, 70 // args.medpy_cropped)][: args.medpy_cropped])
        print(f"\nagreement with MedPy run on each region's padded union box ({len(crop_labels)} regions):")
        with Timer() as tm:
            mc = run_medpy_cropped(pred, truth, crop_labels)
        diffs = np.array([[abs(ours[k][m] - mc[k][m]) for m in ("dice", "msd_mm", "assd_mm", "hd95_mm")]
                          for k in crop_labels])                                        # (n, 4)
        print("label      dice    msd_mm   assd_mm   hd95_mm")
        for k, row in zip(crop_labels, diffs):
            print(f"{k:5d} " + " ".join(_fmt(d) for d in row))
        print(f"max abs difference per metric (dice, msd, assd, hd95): {' '.join(_fmt(d) for d in diffs.max(0))} "
              f"({'OK' if diffs.max() <= 1e-6 else 'FAIL'}: target 1e-6); MedPy on boxes took {tm.wall:.0f} s")

    print("\nvs surface-distance (Dice identical by definition; distances use surfel areas, "
          "HD95 = max of directed percentiles):")
    print("label      dice  llseg_msd    sd_msd  llseg_hd95   sd_hd95")
    dice_diff = []
    for label in sd_labels:
        o, s = ours[label], sd_vals[label]
        dice_diff.append(abs(o["dice"] - s["dice"]))
        print(f"{label:5d} {_fmt(dice_diff[-1])} {o['msd_mm']:10.3f} {s['msd_mm']:9.3f} "
              f"{o['hd95_mm']:11.3f} {s['hd95_mm']:9.3f}")
    msd_rel = np.median([abs(ours[k]["msd_mm"] - sd_vals[k]["msd_mm"]) / sd_vals[k]["msd_mm"] for k in sd_labels])
    print(f"max |dice diff| = {max(dice_diff):.2e}; median relative MSD difference = {msd_rel:.1%}")

    if not args.no_backends:
        print("\ndistance step only (surfaces + both directions, 70 regions), by backend:")
        run_backends(pred, truth)

    print("\nsummary (best of 2 llseg runs; 'cpu' = process CPU seconds, all threads)")
    print(f"  llseg, 70 regions, 1 thread:   wall {serial.wall:6.2f} s  cpu {serial.cpu:6.2f} s")
    print(f"  llseg, 70 regions, threads:    wall {par.wall:6.2f} s  cpu {par.cpu:6.2f} s  "
          f"(target < 5 s: {'OK' if min(serial.wall, par.wall) < 5 else 'MISSED'})")
    sd_wall, sd_cpu = sd_tm.wall * scale, sd_tm.cpu * scale
    print(f"  surface-distance, 70 regions:  wall {sd_wall:6.1f} s  cpu {sd_cpu:6.1f} s")
    for name, tm in (("1 thread", serial), ("threads", par)):
        print(f"    llseg ({name}) is {sd_wall / tm.wall:5.1f}x faster (wall), {sd_cpu / tm.cpu:5.1f}x (cpu)")
    best = sd_wall / min(serial.wall, par.wall)
    print(f"    target >= 10x (wall): {'OK' if best >= 10 else 'MISSED'}")
    if md_tm is not None:
        md_wall = md_tm.wall / len(md_labels) * 70
        print(f"  MedPy, 70 regions (extrap.):   wall {md_wall:6.0f} s  -> llseg is "
              f"{md_wall / min(serial.wall, par.wall):.0f}x faster")
    print(f"  load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
