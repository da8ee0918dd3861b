"""The claim verdicts of two complete runs of the same code on two CPUs, with and without intervals
(issue 19; run by hand, not by the tests).

    .venv/bin/python benchmarks/claims_across_machines.py [--old 43d8b00] [--new 567b580] [--params params.yaml]

Extracts each run's claim inputs (``metrics/*.json``, ``reports/tables/metrics_per_region.csv``,
``reports/plots/bias_correction_cov.csv``) from git into a temporary folder, checks the claims with the thresholds and bootstrap settings of
``--params`` (``claims:``) and prints, per claim, both runs' point verdicts (every comparison
judged on its point value, as before intervals) and interval verdicts, then how many differ.

Figure 4's per-region values (``two_stages.json`` key ``per_region``) are newer than these runs;
when a run's ``two_stages.json`` lacks them they are rebuilt from that run's
``reports/tables/two_stages.csv`` (the same rows) and the script says so. The N4 claim's interval
resamples the per-case CoV of ``reports/plots/bias_correction_cov.csv``. The ablation's claims get
an interval only where ``metrics/ablation.json`` holds each variant's end-of-training Dice per
held-out crop (``final_crop_dice``, runs since 7cd6b68); the script prints how many variants do,
and without them those claims keep point verdicts in both columns. About 5 s.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llseg import io  # noqa: E402
from llseg.study import claims, comparison  # noqa: E402

FIG4_TABLE = "reports/tables/two_stages.csv"


def extract(rev: str, folder: Path) -> list[str]:
    """Write ``rev``'s claim inputs (and Figure 4's per-region table) under ``folder``; return the
    repository paths that ``rev`` lacks."""
    missing = []
    for path in [*claims.INPUTS.values(), FIG4_TABLE]:
        found = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True)
        if found.returncode:
            missing.append(path)
            continue
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(found.stdout)
    return missing


def run_inputs(folder: Path) -> tuple[dict, dict, list[str]]:
    """One run's claim inputs, Figure 4's per-region values added from its CSV where missing."""
    inputs, sources, notes = claims.read_claim_inputs(folder / "metrics", folder / claims.INPUTS["per_region"])
    fig4 = inputs.get("two_stages")
    if isinstance(fig4, dict) and "per_region" not in fig4 and (folder / FIG4_TABLE).exists():
        fig4["per_region"] = comparison.region_values(io.read_csv(folder / FIG4_TABLE))
        notes.append(f"two_stages.json has no 'per_region': rebuilt from {FIG4_TABLE}")
    variants = (inputs.get("ablation") or {}).get("variants") or {}
    with_crops = sum(bool(v.get("final_crop_dice")) for v in variants.values())
    notes.append(f"ablation.json: per-crop Dice (final_crop_dice) for {with_crops} of {len(variants)} variants")
    return inputs, sources, notes


def verdicts(inputs: dict, thresholds: dict, *, intervals: bool) -> dict[str, dict]:
    """Claim id -> its claims entry, with intervals or with point verdicts only."""
    return {c["id"]: c for c in claims.evaluate_claims(inputs, thresholds, intervals=intervals)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="43d8b00", help="first run (default: the AMD EPYC run)")
    parser.add_argument("--new", default="567b580", help="second run (default: the Intel Xeon run)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="params.yaml with the claims: section")
    args = parser.parse_args(argv)
    thresholds = yaml.safe_load(Path(args.params).read_text())["claims"]
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rev in (args.old, args.new):
            folder = Path(tmp) / rev.replace("/", "_")
            missing = extract(rev, folder)
            inputs, _sources, notes = run_inputs(folder)
            print(f"{rev}: " + ("; ".join(notes) if notes else "all inputs found")
                  + (f"; not in git: {', '.join(missing)}" if missing else ""))
            found[rev] = {"point": verdicts(inputs, thresholds, intervals=False),
                          "interval": verdicts(inputs, thresholds, intervals=True)}
    old, new = found[args.old], found[args.new]
    print(f"\n{'claim':32s} {'point ' + args.old:>16s} {'point ' + args.new:>16s}   "
          f"interval verdicts and intervals ({args.old} | {args.new})")
    differ, opposite = {"point": 0, "interval": 0}, {"point": 0, "interval": 0}
    for cid in old["interval"]:
        for kind in differ:
            pair = {old[kind][cid]["verdict"], new[kind][cid]["verdict"]}
            differ[kind] += len(pair) > 1
            opposite[kind] += pair == {claims.REPRODUCED, claims.NOT_REPRODUCED}
        a, b = old["interval"][cid], new["interval"][cid]
        flag = " *" if a["verdict"] != b["verdict"] else ""
        print(f"{cid:32s} {old['point'][cid]['verdict']:>16s} {new['point'][cid]['verdict']:>16s}   "
              f"{a['verdict']}: {a['interval'] or a['reason']} | {b['verdict']}: {b['interval'] or b['reason']}{flag}")
    for rev, runs in found.items():
        for kind in ("point", "interval"):
            counts = claims.count_verdicts(list(runs[kind].values()))
            print(f"{rev} {kind:8s}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    print(f"\nverdicts that differ between {args.old} and {args.new}: {differ['point']} of {len(old['point'])} "
          f"with point verdicts, {differ['interval']} with intervals; reproduced in one run and not reproduced in "
          f"the other: {opposite['point']} with point verdicts, {opposite['interval']} with intervals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
