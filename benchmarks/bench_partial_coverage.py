"""Whole-leg models on partial scans: each test case cut to its thigh and to its calf (issue 17).

For every test case of the committed study (``work/preprocessed/manifest.json``), the raw phantom
scan is cut to the subject's own hip-to-knee and knee-to-ankle stretch (``llseg.phantom.cuts``)
and segmented by ``llseg segment``'s code path (``pipeline.segment_scan``) with the committed
models and ``--coverage thigh`` / ``--coverage calf`` (``--coverage-from preset``, the default), or
without ``--coverage``, the coverage estimated from the scan's body outline
(``--coverage-from outline``; needs ``models/body_profile.json``; its error against the
preset is printed). Compared, on the same slices, with the committed whole-scan segmentation
(``work/predictions/labels``):

- mean Dice over the regions in the field of view (ground truth has voxels in the cut), cut vs
  whole scan;
- regions reported outside the field of view (segmented in the cut, no ground truth in it): must be 0;
- regions in view reported absent (with their reason).

Run from the repository root after ``dvc repro`` (``python benchmarks/bench_partial_coverage.py
[--cases N] [--json out.json]``); prints one table per cut and the totals.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llseg import anatomy, coverage, io, metrics, pipeline  # noqa: E402
from llseg.cli import _inference_kwargs, _preprocess_kwargs, load_params, section  # noqa: E402
from llseg.phantom import cuts  # noqa: E402
from llseg.phantom.subject import Subject  # noqa: E402


def _dice_by_region(pred: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    return {lab: float(metrics.dice(pred == lab, truth == lab)) for lab in np.unique(truth) if lab > 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=0, help="first N test cases only (default all)")
    ap.add_argument("--json", help="write the per-case results here")
    ap.add_argument("--cut-padding", default="edge", choices=coverage.CUT_PADDING_MODES,
                    help="llseg segment --cut-padding (default edge)")
    ap.add_argument("--coverage-from", default="preset", choices=("preset", "outline"),
                    help="give the cut's coverage (preset, default) or let segment estimate it from the body outline")
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    manifest = io.read_json(ROOT / "work/preprocessed/manifest.json")
    cases = manifest["split"]["test"][: args.cases or None]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in cases:
            subject = Subject(**io.read_json(ROOT / "data/subjects" / f"{case}.json")["subject"])
            image = nib.load(ROOT / "data/images" / f"{case}.nii.gz")
            truth = nib.load(ROOT / "data/labels" / f"{case}.nii.gz")
            whole = np.asarray(nib.load(ROOT / "work/predictions/labels" / f"{case}.nii.gz").dataobj)
            for name in ("thigh", "calf"):
                cut = coverage.COVERAGE_PRESETS[name]
                sl = cuts.slices_of_coverage(subject, image.affine, image.shape[2], cut)
                img_cut, lab_cut = cuts.cut_case(image, truth, subject, cut)
                path = tmp / f"{case}_{name}.nii.gz"
                nib.save(img_cut, path)
                t0 = time.perf_counter()
                found = pipeline.segment_scan(path, tmp / f"{case}_{name}_seg.nii.gz", ROOT / "models", progress=False,
                                              scan_coverage=name if args.coverage_from == "preset" else None,
                                              cut_padding=args.cut_padding,
                                              **_preprocess_kwargs(section(params, "preprocess")),
                                              **_inference_kwargs(params))
                seconds = time.perf_counter() - t0
                seg = np.asarray(nib.load(tmp / f"{case}_{name}_seg.nii.gz").dataobj)
                gt = np.asarray(lab_cut.dataobj)
                ref = whole[:, :, sl]
                in_view = sorted(int(v) for v in np.unique(gt) if v > 0)
                reported = sorted(int(v) for v in np.unique(seg) if v > 0)
                outside = [lab for lab in reported if lab not in in_view]
                missed = {lab: found["absent"].get(lab, "no voxel") for lab in in_view if lab not in reported}
                d_cut, d_whole = _dice_by_region(seg, gt), _dice_by_region(ref, gt)
                results.append({"case": case, "cut": name, "slices": [sl.start, sl.stop], "seconds": seconds,
                                "coverage": list(found["coverage"]), "coverage_source": found["coverage_source"],
                                "n_in_view": len(in_view), "outside_reported": outside,
                                "in_view_absent": {str(k): v for k, v in missed.items()},
                                "dice_cut": {str(k): v for k, v in d_cut.items()},
                                "dice_whole": {str(k): v for k, v in d_whole.items()}})
                r = results[-1]
                print(f"{case} {name:5s} slices {sl.start}-{sl.stop}: {len(in_view)} regions in view, mean Dice "
                      f"cut {np.mean(list(d_cut.values())):.3f} vs whole scan {np.mean(list(d_whole.values())):.3f}; "
                      f"{len(outside)} reported outside the view; {len(missed)} in view absent; coverage "
                      f"{found['coverage'][0]:.3f}-{found['coverage'][1]:.3f} ({found['coverage_source']}); {seconds:.0f} s",
                      flush=True)
    print()
    print("| cut | cases | regions in view (mean) | mean Dice, cut scan | mean Dice, whole scan | difference | "
          "reported outside view | in view, absent |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for name in ("thigh", "calf"):
        rows = [r for r in results if r["cut"] == name]
        cut_d = np.mean([np.mean(list(r["dice_cut"].values())) for r in rows])
        whole_d = np.mean([np.mean(list(r["dice_whole"].values())) for r in rows])
        outside = sum(len(r["outside_reported"]) for r in rows)
        absent = sum(len(r["in_view_absent"]) for r in rows)
        err = np.abs(np.array([r["coverage"] for r in rows]) - np.array(coverage.COVERAGE_PRESETS[name]))
        summary[name] = {"mean_dice_cut": cut_d, "mean_dice_whole": whole_d, "outside_reported": outside,
                         "in_view_absent": absent, "n_cases": len(rows),
                         "coverage_error_mean": err.mean(axis=0).tolist(), "coverage_error_max": err.max(axis=0).tolist()}
        print(f"| {name} | {len(rows)} | {np.mean([r['n_in_view'] for r in rows]):.1f} | {cut_d:.3f} | {whole_d:.3f} | "
              f"{cut_d - whole_d:+.3f} | {outside} | {absent} |")
    if args.coverage_from == "outline":
        print()
        for name in ("thigh", "calf"):
            s = summary[name]
            print(f"{name}: estimated coverage vs {coverage.COVERAGE_PRESETS[name]}: mean |error| top "
                  f"{s['coverage_error_mean'][0]:.3f}, bottom {s['coverage_error_mean'][1]:.3f}; max "
                  f"{s['coverage_error_max'][0]:.3f}, {s['coverage_error_max'][1]:.3f}")
    # per muscle, both sides pooled
    print()
    for name in ("thigh", "calf"):
        rows = [r for r in results if r["cut"] == name]
        per = {}
        for r in rows:
            for lab, d in r["dice_cut"].items():
                per.setdefault(anatomy.muscle_of_label(int(lab)).key, [[], []])[0].append(d)
                per[anatomy.muscle_of_label(int(lab)).key][1].append(r["dice_whole"][lab])
        print(f"{name}: mean Dice per muscle (cut / whole scan, same slices)")
        for key, (c, w) in sorted(per.items(), key=lambda kv: anatomy.muscle(kv[0]).index):
            print(f"  {key:26s} {np.mean(c):.3f} / {np.mean(w):.3f}  (n={len(c)})")
    if args.json:
        io.write_json(args.json, {"cut_padding": args.cut_padding, "coverage_from": args.coverage_from,
                                  "summary": summary, "cases": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
