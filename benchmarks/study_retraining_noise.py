"""How far retraining the study's 45 networks moves each claim (issue 19; run by hand, not by the tests).

    .venv/bin/python benchmarks/study_retraining_noise.py --runs HEAD runs/avx2-2026-12-06 runs/seed-2026-12-06 \
        [--sd-from REV ...] [--pair OLD NEW] [--params params.yaml] [--json out.json]

Each ``--runs`` revision holds the outputs of one complete study of the same code and cohort whose
networks were trained anew (other seeds, or other CPU kernels, which act like a seed). For every
claim comparison the script takes its compared value (the point difference) in each run and its
standard deviation over the ``--sd-from`` runs (default: all; ddof 1): the spread of retraining
alone, the test cases being the same in every run. It prints that as the params.yaml block
``claims.study_retraining_sd`` (claims whose value does not move are left out: N4 and the
committed Figure-5 networks are the same in every run), then every run's verdicts with intervals,
without and with that SD, and how many differ between any two runs and between the ``--pair``.
Measuring the SD on runs that exclude the pair (``--sd-from`` the reseeded runs, ``--pair`` the
committed and the AVX2 run) checks the term on runs it was not fitted to. About 10 s per run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from claims_across_machines import extract, run_inputs  # noqa: E402

from llseg.study import claims  # noqa: E402


def point_differences(inputs: dict, thresholds: dict) -> dict[str, list[float]]:
    """Claim id -> the point difference of each of its comparisons (testable claims only)."""
    found = claims.evaluate_claims(inputs, thresholds, intervals=False)
    return {c["id"]: [r["difference"] for r in c["comparisons"]] for c in found if c["comparisons"]}


def retraining_sd(values: dict[str, dict[str, list[float]]], revs: list[str]) -> dict[str, list[float]]:
    """Claim id -> SD (ddof 1) of each comparison's difference over ``revs``; claims that do not move
    (every SD below 1e-9) are left out, as are claims not testable in one of them."""
    out = {}
    for cid in values[revs[0]]:
        if not all(cid in values[r] and len(values[r][cid]) == len(values[revs[0]][cid]) for r in revs):
            continue
        table = np.array([values[r][cid] for r in revs], dtype=float)       # (runs, comparisons)
        sd = table.std(axis=0, ddof=1)
        if np.nanmax(sd) > 1e-9:
            out[cid] = [float(f"{s:.2g}") for s in sd]
    return out


def verdicts(inputs: dict, thresholds: dict) -> dict[str, dict]:
    return {c["id"]: c for c in claims.evaluate_claims(inputs, thresholds)}


def differing(found: dict[str, dict[str, dict]], revs: list[str]) -> tuple[list[str], list[str]]:
    """Claims whose verdict differs between any two of ``revs``, and those reproduced in one and
    not reproduced in another."""
    ids = list(found[revs[0]])
    differ = [c for c in ids if len({found[r][c]["verdict"] for r in revs}) > 1]
    opposite = [c for c in ids if {claims.REPRODUCED, claims.NOT_REPRODUCED} <= {found[r][c]["verdict"] for r in revs}]
    return differ, opposite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="revisions, each with one complete study's outputs")
    parser.add_argument("--sd-from", nargs="+", help="the runs the SD is measured on (default: all --runs)")
    parser.add_argument("--pair", nargs=2, metavar=("OLD", "NEW"), help="two runs whose verdicts are compared on their own")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="params.yaml with the claims: section")
    parser.add_argument("--json", help="write every number printed here to this file")
    args = parser.parse_args(argv)
    sd_from = args.sd_from or args.runs
    pair = args.pair or args.runs[:2]
    if not set(sd_from) | set(pair) <= set(args.runs):
        parser.error("--sd-from and --pair must name runs given with --runs")
    if len(sd_from) < 2:
        parser.error("--sd-from needs at least two runs")
    base = {**yaml.safe_load(Path(args.params).read_text())["claims"], "study_retraining_sd": {}}

    inputs, values = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for rev in args.runs:
            folder = Path(tmp) / rev.replace("/", "_")
            missing = extract(rev, folder)
            inputs[rev], _sources, notes = run_inputs(folder)
            print(f"{rev}: " + ("; ".join(notes) if notes else "all inputs found")
                  + (f"; not in git: {', '.join(missing)}" if missing else ""))
            values[rev] = point_differences(inputs[rev], base)
    sds = retraining_sd(values, sd_from)

    print(f"\nCompared value of each claim that moves, per run; SD over {len(sd_from)} runs ({', '.join(sd_from)}):")
    width = max(len(r) for r in args.runs)
    print(f"{'claim':28s} " + " ".join(f"{r[-width:]:>{width}s}" for r in args.runs) + "   SD")
    for cid, sd in sds.items():
        cells = [";".join(f"{v:+.4g}" for v in values[r][cid]) for r in args.runs]
        print(f"{cid:28s} " + " ".join(f"{c:>{width}s}" for c in cells) + "   " + ";".join(f"{s:.2g}" for s in sd))
    print("\nparams.yaml, claims:\n  study_retraining_sd:")
    for cid, sd in sds.items():
        print(f"    {cid}: {sd[0] if len(sd) == 1 else sd}")

    found = {"without": {r: verdicts(inputs[r], base) for r in args.runs},
             "with": {r: verdicts(inputs[r], {**base, "study_retraining_sd": sds}) for r in args.runs}}
    print(f"\n{'claim':28s} " + " ".join(f"{r[-width:]:>{width}s}" for r in args.runs) + "   (with the SD)")
    for cid in found["with"][args.runs[0]]:
        cells = [found["with"][r][cid]["verdict"] for r in args.runs]
        flag = " *" if len(set(cells)) > 1 else ""
        print(f"{cid:28s} " + " ".join(f"{c:>{width}s}" for c in cells) + flag)
    summary = {}
    for kind in ("without", "with"):
        for name, revs in (("all runs", args.runs), (f"{pair[0]} vs {pair[1]}", list(pair))):
            differ, opposite = differing(found[kind], revs)
            summary[f"{kind} SD, {name}"] = {"differ": differ, "opposite": opposite}
            print(f"{kind:>7s} the SD, {name}: {len(differ)} of {len(found[kind][revs[0]])} verdicts differ "
                  f"({', '.join(differ) or 'none'}); reproduced in one, not reproduced in another: {len(opposite)}")
    for r in args.runs:
        print(f"{r}: " + ", ".join(f"{n} {v}" for v, n in claims.count_verdicts(list(found['with'][r].values())).items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "runs": args.runs, "sd_from": sd_from, "pair": pair, "values": values, "study_retraining_sd": sds,
            "verdicts": {k: {r: {c: v["verdict"] for c, v in runs[r].items()} for r in runs} for k, runs in found.items()},
            "intervals": {r: {c: v["interval"] for c, v in found["with"][r].items()} for r in args.runs},
            "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
