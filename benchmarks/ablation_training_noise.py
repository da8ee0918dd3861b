"""How much retraining moves the Figure-5 comparisons, and whether the claim verdicts survive it
(issue 19; run by hand from the repository root after the study, not by the tests).

Each ablation variant is trained once (params.yaml ``ablation.seed``), so the test-case bootstrap of
a Figure-5 claim sees the test crops' spread but not the training's: another seed, or another CPU's
oneDNN kernels (another summation order), gives another network. Two measurements:

``--seeds 4 5 6 7 8 9``
    Retrains every variant (or ``--variants``) with each seed, the same seed for all variants as
    the study does, and prints each variant's end-of-training crop Dice (mean over the held-out
    crops) per seed, the SD over the seeds of every paired difference, and the per-network SD that
    params.yaml ``claims.ablation_training_sd`` takes: the pooled paired-difference SD over
    sqrt(2) (independent per-network draws of that SD give a difference that spread). Then the
    12 Figure-5 verdicts of the study's run and of each seed's run, with SD 0 and with params.yaml's.
``--isa AVX2``
    Retrains every variant at the study's seed with ``ONEDNN_MAX_CPU_ISA`` set (oneDNN's other
    kernels on this machine, as on a CPU without AVX-512), builds that run's ``metrics/ablation.json``
    and prints the Figure-5 verdicts of both runs, and how many differ. ``--isa-runs DIR`` reuses
    the records of an earlier ``--isa`` run.

    .venv/bin/python benchmarks/ablation_training_noise.py --preprocessed work/preprocessed \
        --seeds 4 5 6 7 8 9 --isa AVX2 --json reports/benchmarks/ablation_training_noise_DATE.json

Trainings run ``--jobs`` at a time (default 2); each pins TensorFlow to one thread, as in ``llseg repro``.
About 2 minutes per seed and 2 for the ISA run on a 2-core Intel Xeon.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llseg import io, runinfo  # noqa: E402
from llseg.study import ablation, ablation_results, claims  # noqa: E402
from llseg.study.claim_ablation import ABLATION_CLAIMS  # noqa: E402


def crop_dice_mean(record: dict) -> float:
    """A training record's end-of-training Dice: the mean over its held-out crops."""
    values = [c["dice"] for c in record["final_crop_dice"] if c["dice"] is not None]
    return float(np.mean(values))


def train_all(params: dict, variants, folder: Path, preprocessed: Path, env: dict, jobs: int) -> tuple[Path, Path]:
    """``llseg train-variant`` for each of ``variants`` with ``params`` (``jobs`` at a time); records
    in ``folder/runs/<variant>.json``, curves in ``folder/live/<variant>/``. Existing records are kept."""
    runs, live = folder / "runs", folder / "live"
    runs.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def one(v):
        out = runs / f"{v}.json"
        if not out.exists():
            subprocess.run([sys.executable, "-m", "llseg.cli", "train-variant", "--variant", v, "--params",
                            str(folder / "params.yaml"), "--preprocessed", str(preprocessed), "--live", str(live),
                            "--out", str(out), "--quiet"], check=True, cwd=ROOT, env=env)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, variants))
    return runs, live


def training_env(isa: str | None = None) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def seed_spread(params, variants, seeds, work, preprocessed, jobs) -> tuple[dict, dict]:
    """Every variant retrained with each seed -> (spread summary, {seed: (runs, live)})."""
    folders = {}
    for s in seeds:
        p = json.loads(json.dumps(params))
        p["ablation"]["seed"] = int(s)
        folders[s] = train_all(p, variants, work / f"seed{s}", preprocessed, training_env(), jobs)
    dice = {v: [crop_dice_mean(io.read_json(folders[s][0] / f"{v}.json")) for s in seeds] for v in variants}
    pairs = [(a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]
    diff_var = {f"{b} - {a}": float(np.var(np.subtract(dice[b], dice[a]), ddof=1)) for a, b in pairs}
    # The study trains every variant with one shared seed: what moves a comparison is the spread of
    # the paired difference. Independent per-network draws of SD sigma give a difference SD of
    # sigma * sqrt(2), so sigma = sqrt(mean paired-difference variance / 2).
    pooled = float(np.sqrt(np.mean(list(diff_var.values())) / 2)) if pairs else float("nan")
    out = {"seeds": list(seeds), "dice": dice,
           "sd": {v: float(np.std(dice[v], ddof=1)) for v in variants},
           "paired_difference_sd": {k: float(np.sqrt(x)) for k, x in diff_var.items()},
           "network_sd_from_pairs": pooled}
    if set(variants) == set(params["ablation"]["variants"]):
        # The same for each curve's first quarter (``early_dice``, what fcn_worse_early compares):
        # claims.ablation_early_training_sd.
        docs = {s: ablation_json(*folders[s], params)["variants"] for s in seeds}
        early = {v: [docs[s][v]["early_dice"] for s in seeds] for v in variants}
        early_var = [np.var(np.subtract(early[b], early[a]), ddof=1) for a, b in pairs]
        out.update(early_dice=early, early_sd={v: float(np.std(early[v], ddof=1)) for v in variants},
                   early_network_sd_from_pairs=float(np.sqrt(np.mean(early_var) / 2)) if pairs else float("nan"))
    return out, folders


def ablation_json(runs_dir: Path, live_dir: Path, params: dict) -> dict:
    """``metrics/ablation.json`` of the records in ``runs_dir`` (as notebook 03 builds it)."""
    p = params["ablation"]
    variants = ablation.variant_table(p["variants"], divisor=int(p["divisor"]))
    curves = ablation_results.read_curves(live_dir, variants)
    runs = ablation_results.read_runs(runs_dir, variants)
    summary = ablation_results.summarize(curves, variants, runs,
                                         settings={"muscle": p["muscle"], "iterations": p["iterations"]})
    return ablation_results.ablation_metrics(summary, muscle=p["muscle"], iterations=int(p["iterations"]), runs=runs)


def verdicts(ablation_metrics: dict, thresholds: dict) -> dict:
    inputs, sources, _notes = claims.read_claim_inputs(ROOT / "metrics", ROOT / claims.INPUTS["per_region"])
    inputs["ablation"] = ablation_metrics
    ids = {c.id for c in ABLATION_CLAIMS}
    return {r["id"]: r for r in claims.evaluate_claims(inputs, thresholds, sources=sources) if r["id"] in ids}


def _fcn_early_shortfall(doc: dict) -> float | None:
    v = doc.get("variants", {})
    try:
        return float(min(v["unet_5"]["early_dice"], v["segnet_5"]["early_dice"]) - v["fcn8s_5"]["early_dice"])
    except (KeyError, TypeError):
        return None


def isa_run(params, isa, folder, preprocessed, jobs) -> tuple[Path, Path]:
    return train_all(params, list(params["ablation"]["variants"]), folder, preprocessed, training_env(isa), jobs)


def verdict_table(runs: Mapping, thresholds: dict, sds) -> list[dict]:
    """The Figure-5 verdicts of each run (name -> ablation.json document) at each retraining SD (at
    SD 0 the early-Dice SD is 0 too; otherwise it is params.yaml's)."""
    rows = []
    for sd in sds:
        t = {**thresholds, "ablation_training_sd": sd}
        if not sd:
            t["ablation_early_training_sd"] = 0.0
        found = {name: verdicts(doc, t) for name, doc in runs.items()}
        for cid in next(iter(found.values())):
            rows.append({"training_sd": sd, "claim": cid,
                         **{name: {"verdict": f[cid]["verdict"], "interval": f[cid]["interval"]}
                            for name, f in found.items()}})
    return rows


def print_verdicts(rows: list[dict], names: list[str]) -> None:
    for sd in sorted({r["training_sd"] for r in rows}):
        part = [r for r in rows if r["training_sd"] == sd]
        differ = [r["claim"] for r in part if len({r[n]["verdict"] for n in names}) > 1]
        flips = [r["claim"] for r in part
                 if {claims.REPRODUCED, claims.NOT_REPRODUCED} <= {r[n]["verdict"] for n in names}]
        print(f"\nablation_training_sd = {sd:g}: verdicts differ between the runs in {len(differ)} of {len(part)} claims"
              + (f" ({', '.join(differ)})" if differ else "")
              + f"; reproduced in one run and not reproduced in another: {len(flips)}"
              + (f" ({', '.join(flips)})" if flips else ""))
        print(f"  {'claim':26s} " + " ".join(f"{n[:14]:>14s}" for n in names))
        for r in part:
            short = {claims.REPRODUCED: "reproduced", claims.NOT_REPRODUCED: "NOT repr.",
                     claims.INCONCLUSIVE: "inconclusive", claims.NOT_TESTABLE: "not testable"}
            print(f"  {r['claim']:26s} " + " ".join(f"{short.get(r[n]['verdict'], r[n]['verdict']):>14s}"
                                                     for n in names))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preprocessed", default="work/preprocessed")
    ap.add_argument("--variants", nargs="+", help="variants retrained per seed (default: all of params.yaml)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[])
    ap.add_argument("--isa", help="ONEDNN_MAX_CPU_ISA for the retrained ablation, e.g. AVX2")
    ap.add_argument("--isa-runs", help="folder of an earlier --isa run (runs/, live/) to reuse")
    ap.add_argument("--work", help="folder for the trainings (default: a temporary one)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    thresholds = params["claims"]
    work = Path(args.work or tempfile.mkdtemp(prefix="llseg_noise_"))
    preprocessed = (ROOT / args.preprocessed).resolve()
    result = {"date": time.strftime("%Y-%m-%d"), "machine": runinfo.environment(),
              "ablation_training_sd": thresholds.get("ablation_training_sd", 0.0)}
    t0 = time.perf_counter()

    sd_now = float(thresholds.get("ablation_training_sd", 0.0))
    sds = sorted({0.0, sd_now})
    if args.seeds:
        variants = args.variants or list(params["ablation"]["variants"])
        spread, folders = seed_spread(params, variants, args.seeds, work, preprocessed, args.jobs)
        result["seeds"] = spread
        print(f"end-of-training crop Dice (mean over the held-out crops) per seed {args.seeds}:")
        for v in variants:
            print(f"  {v:12s} " + " ".join(f"{d:.4f}" for d in spread["dice"][v]) + f"  SD {spread['sd'][v]:.4f}")
        print("paired differences (one seed for both, as the study trains them), SD over the seeds:")
        for k, x in spread["paired_difference_sd"].items():
            print(f"  {k:28s} {x:.4f}")
        print(f"per-network SD (pooled paired-difference SD / sqrt 2): {spread['network_sd_from_pairs']:.4f} "
              f"(params.yaml claims.ablation_training_sd: {sd_now:g})")
        if "early_dice" in spread:
            print("early Dice (mean of each curve's first quarter) per seed:")
            for v in variants:
                print(f"  {v:12s} " + " ".join(f"{d:.4f}" for d in spread["early_dice"][v])
                      + f"  SD {spread['early_sd'][v]:.4f}")
            print(f"per-network SD of the early Dice (pooled paired-difference SD / sqrt 2): "
                  f"{spread['early_network_sd_from_pairs']:.4f} (params.yaml claims.ablation_early_training_sd: "
                  f"{thresholds.get('ablation_early_training_sd', 0.0):g})")
        if set(variants) == set(params["ablation"]["variants"]):
            docs = {f"seed {s}": ablation_json(*folders[s], params) for s in args.seeds}
            docs = {f"study (seed {params['ablation']['seed']})": io.read_json(ROOT / "metrics/ablation.json"), **docs}
            rows = verdict_table(docs, thresholds, sds)
            result["seed_verdicts"] = rows
            print_verdicts(rows, list(docs))
            # fcn_worse_early compares the curves' first quarter (no per-crop data, so no interval):
            # how far does its value move between seeds?
            early = {name: _fcn_early_shortfall(doc) for name, doc in docs.items()}
            result["fcn_early_shortfall"] = early
            values = [x for x in early.values() if x is not None]
            if len(values) > 1:
                print("\nfcn_worse_early: FCN-8s's early shortfall to min(U-Net, SegNet) per run: "
                      + ", ".join(f"{x:+.3f}" for x in values) + f"; SD over the runs {np.std(values, ddof=1):.3f}")

    if args.isa or args.isa_runs:
        folder = Path(args.isa_runs) if args.isa_runs else work / f"isa_{args.isa}"
        runs, live = (folder / "runs", folder / "live") if args.isa_runs else \
            isa_run(params, args.isa, folder, preprocessed, args.jobs)
        other = ablation_json(runs, live, params)
        base = io.read_json(ROOT / "metrics/ablation.json")
        names = ["study", f"ONEDNN_MAX_CPU_ISA={args.isa or '(reused)'}"]
        rows = verdict_table(dict(zip(names, (base, other))), thresholds, sds)
        result["isa"] = {"isa": args.isa or "(reused)", "ablation": other, "claims": rows,
                         "dice": {v: (base["variants"][v]["final_dice"], other["variants"][v]["final_dice"])
                                  for v in base["variants"]}}
        print(f"\nFigure-5 end-of-training Dice, the study's run vs {names[1]}:")
        for v, (x, y) in result["isa"]["dice"].items():
            print(f"  {v:12s} {x:.4f} {y:.4f} ({y - x:+.4f})")
        print_verdicts(rows, names)

    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n{result['seconds']:.0f} s; trainings under {work}")
    if args.json:
        io.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
