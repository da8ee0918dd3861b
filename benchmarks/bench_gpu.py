"""Every network kind of every profile on this machine's accelerator (or CPU): step time with and
without sampling, six-box inference, peak memory, k trainings sharing the device, and the
projected training time of the whole study per profile (issue 16).

    python benchmarks/bench_gpu.py [--profiles cpu,gpu,paper] [--steps 5] [--share 1,2,4] [--json out.json]

Each (profile, kind) runs in its own process (``--worker``), so peak memory is that network's
alone and k copies of a worker run side by side for the sharing test. Network kinds: stage 1 (the
largest body part, 9 classes), stage 2 and the ablation's baseline variant (2 classes), built by
``models.build_model`` with the profile's levels and filters; input sizes follow the profile's
voxel size, field of view and ``max_voxels``. Sampling is the kit's own samplers
(``stage1.make_sampler``, ``stage2.make_sampler``, with ``params.yaml``'s augmentation) on a
synthetic case of the profile's size. Where no GPU is visible, the ``gpu`` and ``paper`` profiles
run reduced (input sides / 2, filters / 4; the table says so), so the CPU run finishes in minutes.

The projection is ``networks x iterations x seconds per iteration`` per kind, summed, one training
at a time ("serial"), with sampling overlapped by the prefetching sampler ("prefetch": the larger
of sampling and step), and divided by the measured k-sharing throughput gain.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("stage1", "stage2", "ablation")
N_NETWORKS = {"stage1": 10, "stage2": 35, "ablation": 10}   # trainings of that kind in one study
SPAN_MM, LONGEST_PART = 1080.0, 0.66       # T12-to-ankle of the reference adult; the upper-leg part's share


def _profile_params(name: str) -> dict:
    """params.yaml with profile ``name`` applied (in memory)."""
    import copy

    from llseg.params import load_params

    params = load_params(ROOT / "params.yaml")
    out = copy.deepcopy(params)
    for dotted, value in params["profiles"][name].items():
        section, key = dotted.split(".", 1)
        out[section][key] = value
    return out


def _round_up(n: float, d: int) -> int:
    return int(math.ceil(n / d) * d)


def network_spec(profile: str, kind: str, reduced: bool) -> dict:
    """Levels, filters, classes and input size of one network kind of a profile."""
    p = _profile_params(profile)
    if kind == "stage1":
        s = p["stage1"]
        levels, root, classes = int(s["levels"]), int(s["root_filters"]), 9
        d = 2 ** (levels - 1)
        sp, fov, f = p["preprocess"]["spacing_mm"], p["preprocess"]["fov_mm"], s["factor"]
        size = [_round_up(fov[0] / sp[0] / f[0], d), _round_up(fov[1] / sp[1] / f[1], d),
                _round_up(SPAN_MM * LONGEST_PART / sp[2] / f[2], d)]
    else:
        s = p["stage2"] if kind == "stage2" else {**p["ablation"], **p["ablation"]["variants"]["baseline"]}
        levels, root, classes = int(s["levels"]), int(s["root_filters"]), 2
        d = int(p["ablation"]["divisor"]) if kind == "ablation" else 2 ** (levels - 1)
        side = d * max(1, int(round(s["max_voxels"] ** (1 / 3))) // d)
        size = [side, side, side]
    if reduced:
        d = 2 ** (levels - 1)
        size = [max(d, _round_up(n / 2, d)) for n in size]
        root = max(2, root // 4)
    return {"profile": profile, "kind": kind, "levels": levels, "root_filters": root, "classes": classes,
            "input": size, "reduced": reduced}


def _synthetic_case(spec: dict, rng):
    """An image and a label map a few times the input size, holding the regions the sampler needs."""
    from llseg import anatomy

    if spec["kind"] == "stage1":
        p = _profile_params(spec["profile"])
        f = p["stage1"]["factor"]
        shape = [int(n * fi) for n, fi in zip(spec["input"], f)]
        shape[2] = int(shape[2] / LONGEST_PART)
        labels = np.zeros(shape, np.uint8)
        regions = anatomy.group_labels(5)
        for i, lab in enumerate(regions):   # slabs across X, the middle of the volume in Z
            x0 = int(shape[0] * i / len(regions))
            labels[x0:x0 + max(1, shape[0] // (2 * len(regions))), shape[1] // 3:2 * shape[1] // 3,
                   int(shape[2] * 0.3):int(shape[2] * 0.5)] = lab
    else:
        shape = [3 * n for n in spec["input"]]
        labels = np.zeros(shape, np.uint8)
        c = [n // 2 for n in shape]
        r = [n // 6 for n in spec["input"]]
        labels[c[0] - r[0]:c[0] + r[0], c[1] - r[1]:c[1] + r[1], c[2] - r[2]:c[2] + r[2]] = \
            anatomy.muscle("adductor_longus").right_label
    image = rng.normal(size=shape).astype(np.float32) + labels.astype(np.float32) / 10
    return image, labels


def _peak_memory_mib() -> tuple[float, str]:
    """Peak accelerator memory of this process where the backend reports it, else peak RSS."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return dev.memory_stats()["peak_bytes_in_use"] / 2**20, "GPU"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated() / 2**20, "GPU"
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, "GPU"
    except Exception:  # noqa: BLE001 - fall back to the process's RSS
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RSS"


def worker(spec: dict, steps: int, inference: bool) -> dict:
    """Time one network kind in this process (see the module docstring)."""
    from llseg import boxes, cli, models, stage1, stage2, train

    train.use_training_threads(int(os.environ.get("LLSEG_BENCH_THREADS", "1")))
    import keras

    rng = np.random.default_rng(0)
    image, labels = _synthetic_case(spec, rng)
    params = _profile_params(spec["profile"])
    augment = cli._augment_kwargs(params)
    if spec["kind"] == "stage1":
        sampler = stage1.make_sampler([image], [labels], 5, factor=tuple(params["stage1"]["factor"]),
                                      augment_kwargs=augment, divisor=2 ** (spec["levels"] - 1))
    else:
        sampler = stage2.make_sampler([image], [labels], "adductor_longus", size=tuple(spec["input"]),
                                      augment_kwargs=augment)
    x, y = sampler(rng)
    shape = tuple(x.shape[1:4])
    model = models.build_model("unet", (*shape, 1), spec["classes"], levels=spec["levels"],
                               root_filters=spec["root_filters"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy())
    for _ in range(2):                      # tracing and warm-up, not timed
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    step = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = sampler(rng)
    sampling = (time.perf_counter() - t0) / steps
    out = {**spec, "input": list(shape), "n_params": int(model.count_params()), "step_s": step,
           "sampling_s": sampling, "backend": keras.backend.backend()}
    if inference:
        t0 = time.perf_counter()
        if spec["kind"] == "stage1":
            train.predict_proba(model, x[0, ..., 0])
            out["inference"] = "one part"
        else:
            box = boxes.bounding_box(labels > 0)                         # (3, 2), [lo, hi)
            stage2.predict_region(model, image, box, size=shape, mirror=False, n_boxes=6)
            out["inference"] = "six boxes"
        out["inference_s"] = time.perf_counter() - t0
    out["peak_mib"], out["peak_of"] = _peak_memory_mib()
    return out


def _spawn(spec: dict, steps: int, inference: bool) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec), "--steps", str(steps)]
    if not inference:
        cmd.append("--no-inference")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"worker failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="cpu,gpu,paper")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per network (after 2 untimed)")
    ap.add_argument("--share", default="1,2", help="k trainings sharing the device (stage 2 of each profile)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--no-inference", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker), args.steps, not args.no_inference)))
        return 0

    from llseg import runinfo

    gpus = runinfo.visible_gpus()
    print(runinfo.device_line(gpus))
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    shares = [int(k) for k in args.share.split(",")]
    rows, sharing = [], {}
    print("| profile | kind | input | levels x filters | parameters | step (ms) | sampling (ms) | step + sampling (ms) "
          "| inference (s) | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for profile in profiles:
        reduced = not gpus and profile in ("gpu", "paper")
        for kind in KINDS:
            r = _collect(_spawn(network_spec(profile, kind, reduced), args.steps, True))
            rows.append(r)
            print(f"| {profile}{' (reduced)' if reduced else ''} | {kind} | {'x'.join(map(str, r['input']))} | "
                  f"{r['levels']} x {r['root_filters']} | {r['n_params']:,} | {1e3 * r['step_s']:.1f} | "
                  f"{1e3 * r['sampling_s']:.1f} | {1e3 * (r['step_s'] + r['sampling_s']):.1f} | "
                  f"{r['inference_s']:.2f} ({r['inference']}) | {r['peak_mib']:.0f} ({r['peak_of']}) |", flush=True)
        spec = network_spec(profile, "stage2", reduced)
        for k in shares:
            t0 = time.perf_counter()
            results = [_collect(p) for p in [_spawn(spec, args.steps, False) for _ in range(k)]]
            sharing.setdefault(profile, {})[k] = {"steps_per_s": sum(1.0 / r["step_s"] for r in results),
                                                  "wall_s": time.perf_counter() - t0}
    print("\nk trainings of the stage-2 network sharing the device: total steps per second (gain over one)")
    for profile, by_k in sharing.items():
        base = by_k[min(by_k)]["steps_per_s"]
        print(f"  {profile}: " + ", ".join(f"k={k}: {v['steps_per_s']:.2f} ({v['steps_per_s'] / base:.2f}x)"
                                           for k, v in sorted(by_k.items())))
    print("\nProjected training time of the whole study (10 stage-1, 35 stage-2, 10 ablation networks), from the "
          "step times above; reduced profiles are not the real sizes")
    projection = {}
    for profile in profiles:
        p = _profile_params(profile)
        iters = {"stage1": p["stage1"]["iterations"], "stage2": p["stage2"]["iterations"],
                 "ablation": p["ablation"]["iterations"]}
        mine = [r for r in rows if r["profile"] == profile]
        serial = sum(N_NETWORKS[r["kind"]] * iters[r["kind"]] * (r["step_s"] + r["sampling_s"]) for r in mine)
        overlapped = sum(N_NETWORKS[r["kind"]] * iters[r["kind"]] * max(r["step_s"], r["sampling_s"]) for r in mine)
        gain = max(v["steps_per_s"] for v in sharing[profile].values()) / sharing[profile][min(sharing[profile])][
            "steps_per_s"]
        projection[profile] = {"serial_h": serial / 3600, "prefetch_h": overlapped / 3600,
                               "prefetch_shared_h": overlapped / gain / 3600, "sharing_gain": gain}
        print(f"  {profile}{' (reduced)' if mine[0]['reduced'] else ''}: {serial / 3600:.2f} h one at a time, "
              f"{overlapped / 3600:.2f} h with sampling overlapped, {overlapped / gain / 3600:.2f} h with the "
              f"best sharing ({gain:.2f}x)")
    if args.json:
        from llseg import io

        io.write_json(args.json, {"environment": runinfo.environment(), "gpus": gpus, "networks": rows,
                                  "sharing": sharing, "projection": projection})
    return 0


if __name__ == "__main__":
    sys.exit(main())
