"""``dvc repro`` with the study's training stages run side by side (``llseg repro --jobs N``).

``dvc repro`` runs one stage at a time. The study's training stages (``train_stage1@*``,
``train_stage2@*``, ``train_variant@*``) read only ``work/preprocessed``, code and params, and
write disjoint outputs, so they can run at once: DVC releases its repository lock while a
stage's command runs, guards each stage's dependencies and outputs with read/write locks, and
``dvc --wait-for-lock`` makes each ``dvc`` process wait out the others' short locked sections
(reading and writing dvc.lock). Each training process uses one thread
(``llseg.train.use_training_threads``), so N jobs keep N cores busy and the weights are the
ones a plain ``dvc repro`` trains.

The run, in three steps:

1. ``dvc repro UPSTREAM...``: what the training stages read (the cohort check and preprocessing).
2. The training stages ``dvc status`` reports changed, ``jobs`` at a time, each by
   ``dvc --wait-for-lock repro --single-item STAGE``; each one's output goes to
   ``<log_dir>/<stage>.log``. The first failure stops new launches; running ones finish.
3. ``dvc repro``: every remaining stage, one at a time (and a check that step 2 left the
   training stages up to date).

DVC has no parallel ``repro`` of its own (iterative/dvc#755), which is why this is written here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

TRAINING_STAGES = ("train_stage1", "train_variant", "train_stage2")  # launch order: longest kinds first
# (cpu profile, two at a time: 72, 58 and 49 s per stage on average)
UPSTREAM = ("preprocess",)  # dvc repro of these brings every dependency of the training stages up to date


GIB_PER_JOB = 2.0  # a cpu-profile training process peaks at about 1.2 GiB resident


def default_jobs() -> int:
    """One job per core this process may use, but no more than the available memory holds at
    ``GIB_PER_JOB`` each (``psutil``, a DVC dependency); at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().available / 2**30 // GIB_PER_JOB)
    except ImportError:
        by_memory = cores
    return max(1, min(cores, by_memory))


def training_stages(names: Sequence[str], kinds: Sequence[str] = TRAINING_STAGES) -> list[str]:
    """The ``foreach`` instances (``kind@item``) of the training stages among ``names``, ordered
    by ``kinds`` (longest-running kinds first, so short stages fill the end), then as listed."""
    rank = {k: i for i, k in enumerate(kinds)}
    picked = [n for n in names if n.split("@", 1)[0] in rank and "@" in n]
    return sorted(picked, key=lambda n: rank[n.split("@", 1)[0]])  # sorted() is stable


def _run(cmd: Sequence[str], *, cwd, log=None) -> int:
    """Run ``cmd`` in ``cwd``; output to the file ``log`` (or to this process's stdout/stderr)."""
    if log is None:
        return subprocess.call(list(cmd), cwd=cwd)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        return subprocess.call(list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)


def _capture(cmd: Sequence[str], *, cwd) -> str:
    res = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {res.returncode}): {res.stderr.strip()[-1000:]}")
    return res.stdout


def changed_stages(names: Sequence[str], *, dvc: Sequence[str] = ("dvc",), cwd=".") -> list[str]:
    """Those of ``names`` that ``dvc status`` reports changed (in the order given)."""
    if not names:
        return []
    status = json.loads(_capture([*dvc, "status", "--json", *names], cwd=cwd) or "{}")
    return [n for n in names if n in status]


def run_parallel(stages: Sequence[str], *, jobs: int, run_stage: Callable[[str], int],
                 on_done: Callable[[str, int, float], None] | None = None) -> list[str]:
    """Run ``run_stage(stage)`` for each stage, at most ``jobs`` at a time (threads; the work
    happens in child processes). After the first failure (non-zero return or exception) no new
    stage starts; the running ones finish. ``on_done(stage, exit_status, seconds)`` is called as
    each one ends. Returns the failed stages."""
    import threading
    from concurrent.futures import ThreadPoolExecutor, as_completed

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")

    stop = threading.Event()  # set by the worker that fails, before the pool can start another stage

    def timed(stage):
        if stop.is_set():
            return None
        t0 = time.perf_counter()
        try:
            rc = int(run_stage(stage))
        except Exception as exc:  # noqa: BLE001 - reported as this stage's failure
            print(f"{stage}: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = -1
        except BaseException:  # KeyboardInterrupt: stop here, before the pool starts another stage
            stop.set()
            raise
        if rc != 0:
            stop.set()
        return rc, time.perf_counter() - t0

    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(timed, stage): stage for stage in stages}
        try:
            for fut in as_completed(futures):
                result = fut.result()
                if result is None:  # skipped after a failure
                    continue
                rc, seconds = result
                if rc != 0:
                    failed.append(futures[fut])
                if on_done is not None:
                    on_done(futures[fut], rc, seconds)
        except BaseException:  # Ctrl-C: start nothing more (the running children got the signal too)
            stop.set()
            for fut in futures:
                fut.cancel()
            raise
    return failed


def reproduce(*, jobs: int | None = None, cwd=".", dvc: Sequence[str] = ("dvc",), log_dir="work/logs/repro",
              upstream: Sequence[str] = UPSTREAM, kinds: Sequence[str] = TRAINING_STAGES, progress: bool = True,
              dry: bool = False) -> int:
    """The three steps of the module docstring. Returns the exit status (0 = success)."""
    from tqdm.auto import tqdm

    jobs = default_jobs() if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    dvc = list(dvc)
    names = _capture([*dvc, "stage", "list", "--name-only"], cwd=cwd).split()
    parallel = training_stages(names, kinds)
    missing = [u for u in upstream if u not in names]
    if missing:
        raise ValueError(f"{Path(cwd) / 'dvc.yaml'}: no stage(s) {', '.join(missing)} to run before the training stages")
    if dry:
        print(f"1. dvc repro {' '.join(upstream)}\n2. {len(parallel)} training stages, {jobs} at a time "
              f"(those dvc status reports changed)\n3. dvc repro")
        return 0
    print(f"llseg repro: step 1 of 3, dvc repro {' '.join(upstream)}", flush=True)
    rc = _run([*dvc, "--wait-for-lock", "repro", *upstream], cwd=cwd)
    if rc:
        print(f"llseg repro: dvc repro {' '.join(upstream)} failed (exit {rc})", file=sys.stderr)
        return rc
    todo = changed_stages(parallel, dvc=dvc, cwd=cwd)
    print(f"llseg repro: step 2 of 3, {len(todo)} of {len(parallel)} training stages changed, "
          f"{jobs} at a time (logs in {log_dir}/)", flush=True)
    logs = {s: Path(cwd) / log_dir / f"{s.replace('@', '.')}.log" for s in todo}
    bar = tqdm(total=len(todo), unit="stage", disable=not progress or not todo, dynamic_ncols=True)

    def run_stage(stage):
        return _run([*dvc, "--wait-for-lock", "repro", "--single-item", stage], cwd=cwd, log=logs[stage])

    def on_done(stage, rc, seconds):
        bar.update(1)
        bar.write(f"  {stage}: {'done' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s")

    t0 = time.perf_counter()
    failed = run_parallel(todo, jobs=jobs, run_stage=run_stage, on_done=on_done)
    bar.close()
    if failed:
        for stage in failed:
            tail = logs[stage].read_text(errors="replace").splitlines()[-15:] if logs[stage].exists() else []
            print(f"llseg repro: {stage} failed; last lines of {logs[stage]}:\n    " + "\n    ".join(tail),
                  file=sys.stderr)
        return 1
    if todo:
        print(f"llseg repro: {len(todo)} training stages in {time.perf_counter() - t0:.0f} s", flush=True)
    print("llseg repro: step 3 of 3, dvc repro", flush=True)
    return _run([*dvc, "--wait-for-lock", "repro"], cwd=cwd)
