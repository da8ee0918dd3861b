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

On a GPU host (``nvidia-smi`` lists GPUs, restricted to ``CUDA_VISIBLE_DEVICES`` if set) each
GPU gets job slots (:func:`gpu_slots`: its memory over ``GPU_GIB_PER_JOB``, at most 4), and each
training stage runs on one free slot's GPU with the environment of :func:`job_env` (one
visible GPU, no up-front grab of all its memory). Without a GPU, nothing of this applies.

DVC has no parallel ``repro`` of its own (iterative/dvc#755), which is why this is written here.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from . import runinfo

TRAINING_STAGES = ("train_stage1", "train_variant", "train_stage2")  # launch order: longest kinds first
# (cpu profile, two at a time: 72, 58 and 49 s per stage on average)
UPSTREAM = ("preprocess",)  # dvc repro of these brings every dependency of the training stages up to date


GIB_PER_JOB = 2.0  # a cpu-profile training process peaks at about 1.2 GiB resident

# GPU memory one training process of each kind may need (GiB). Estimates for paper-size networks,
# not measurements: replace them by the peaks a GPU run measures.
GPU_GIB_PER_JOB = {"train_stage1": 12.0, "train_stage2": 12.0, "train_variant": 12.0}
GPU_GIB_DEFAULT = 12.0  # a kind missing from GPU_GIB_PER_JOB
GPU_MAX_JOBS_PER_GPU = 4  # beyond this, jobs on one GPU mostly wait for each other

logger = logging.getLogger(__name__)


def _cores() -> int:
    """The cores this process may use."""
    return runinfo.usable_cores()


def default_jobs(gib_per_job: float = GIB_PER_JOB) -> int:
    """One job per core this process may use, but no more than the available memory holds at
    ``gib_per_job`` each (``psutil``, a DVC dependency); at least 1."""
    cores = _cores()
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().available / 2**30 // gib_per_job)
    except ImportError:
        by_memory = cores
    return max(1, min(cores, by_memory))


# ----------------------------------------------------------------------------- GPU placement


def parse_nvidia_smi(text: str, visible: str | None = None) -> list[tuple[int, float]]:
    """The GPUs in the output of ``nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,nounits``.

    Parameters
    ----------
    text : str
        One ``index, memory`` line per GPU, memory in MiB. Lines that are not two numbers
        (an ``[N/A]``, an error message) are skipped with a warning.
    visible : str, optional
        The value of ``CUDA_VISIBLE_DEVICES``: only the GPUs it lists are kept, in its order
        (as CUDA numbers them). None keeps all; ``""`` or ``"-1"`` keeps none. Entries that
        are not indices (GPU UUIDs, MIG devices) cannot be matched: the result is then empty,
        with a warning.

    Returns
    -------
    list of (int, float)
        ``(index, memory_GiB)`` per GPU: the ``nvidia-smi`` index and the total memory in GiB.
    """
    gpus = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            index, mib = int(fields[0]), float(fields[1])
        except (ValueError, IndexError):
            logger.warning("nvidia-smi: skipped line %r (expected 'index, memory MiB')", line)
            continue
        if len(fields) == 2 and index >= 0 and mib > 0:
            gpus[index] = mib / 1024
        else:
            logger.warning("nvidia-smi: skipped line %r (expected 'index, memory MiB')", line)
    if visible is None:
        return sorted(gpus.items())
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if not all(v.lstrip("-").isdigit() for v in wanted):
        logger.warning("CUDA_VISIBLE_DEVICES=%s: only GPU indices can be matched to nvidia-smi; "
                       "no GPU placement (give --jobs)", visible)
        return []
    picked = []
    for v in wanted:
        i = int(v)
        if i < 0:      # CUDA stops at the first invalid entry
            break
        if i in gpus and all(i != j for j, _ in picked):
            picked.append((i, gpus[i]))
    return picked


def visible_gpus(*, nvidia_smi: str = "nvidia-smi", timeout_s: float = 30.0) -> list[tuple[int, float]]:
    """The GPUs this process may use, ``(index, memory_GiB)`` each (:func:`parse_nvidia_smi`
    of ``nvidia-smi``'s output, restricted to ``CUDA_VISIBLE_DEVICES``). Empty when there is
    no ``nvidia-smi``, it fails or it takes over ``timeout_s`` seconds."""
    cmd = [nvidia_smi, "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return []
    if res.returncode:
        logger.warning("%s failed (exit %d): %s", nvidia_smi, res.returncode, (res.stderr or res.stdout).strip()[-300:])
        return []
    return parse_nvidia_smi(res.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))


def gpu_slots(gpus, gib_per_job: float, max_per_gpu: int = GPU_MAX_JOBS_PER_GPU) -> list[str]:
    """Job slots on ``gpus``: one device index (str) per slot, round robin over the GPUs.

    Parameters
    ----------
    gpus : sequence of (int, float)
        ``(index, memory_GiB)`` per GPU (:func:`visible_gpus`).
    gib_per_job : float
        GPU memory one job needs (GiB, > 0).
    max_per_gpu : int, optional
        Most slots on one GPU (>= 1).

    Returns
    -------
    list of str
        A GPU holds ``floor(memory / gib_per_job)`` slots, at least 1 (a job that does not
        fit still gets the GPU to itself) and at most ``max_per_gpu``. The list takes one
        slot of each GPU in turn (``["0", "1", "0", "1", ...]``), so that the first jobs spread
        over the GPUs. Empty for no GPUs.

    Raises
    ------
    ValueError
        ``gib_per_job`` not a finite number > 0, or ``max_per_gpu`` not a positive int.
    """
    import math

    if not (isinstance(gib_per_job, (int, float)) and math.isfinite(gib_per_job) and gib_per_job > 0):
        raise ValueError(f"gib_per_job must be a finite number > 0, got {gib_per_job!r}")
    if isinstance(max_per_gpu, bool) or not isinstance(max_per_gpu, int) or max_per_gpu < 1:
        raise ValueError(f"max_per_gpu must be a positive int, got {max_per_gpu!r}")
    counts = [(str(index), min(max_per_gpu, max(1, int(gib // gib_per_job)))) for index, gib in gpus]
    return [dev for r in range(max_per_gpu) for dev, n in counts if n > r]


def job_env(slot_device: str | None, threads: int) -> dict[str, str]:
    """Environment variables for one training job on GPU ``slot_device`` with ``threads`` CPU threads.

    Parameters
    ----------
    slot_device : str or None
        The GPU's index (:func:`gpu_slots`); None for a CPU-only run.
    threads : int
        CPU threads the job may use (>= 1).

    Returns
    -------
    dict of str to str
        Empty for ``slot_device`` None (the environment stays as it is). Otherwise
        ``CUDA_VISIBLE_DEVICES`` (that GPU only); ``TF_FORCE_GPU_ALLOW_GROWTH`` and
        ``XLA_PYTHON_CLIENT_PREALLOCATE`` so that neither TensorFlow nor JAX takes the
        whole GPU's memory at start (other jobs share it; ``XLA_PYTHON_CLIENT_MEM_FRACTION``
        is left as it is); and the thread counts of OpenMP, MKL, OpenBLAS and TensorFlow's
        op pools. (The training commands pin TensorFlow's pools to
        ``llseg.train.TRAINING_THREADS`` themselves.)
    """
    if slot_device is None:
        return {}
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    n = str(threads)
    return {"CUDA_VISIBLE_DEVICES": str(slot_device), "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n}


def _gpu_gib_per_job(stages: Sequence[str]) -> float:
    """The largest ``GPU_GIB_PER_JOB`` of the kinds among ``stages`` (``kind@item``)."""
    kinds = {s.split("@", 1)[0] for s in stages}
    return max([GPU_GIB_PER_JOB.get(k, GPU_GIB_DEFAULT) for k in kinds] or [GPU_GIB_DEFAULT])


def _placement_line(gpus, slots: Sequence[str], threads: int) -> str:
    """``llseg repro: 2 GPU(s) visible (0: 80 GiB, 1: 80 GiB): 8 training jobs, 4 per GPU, 2 CPU threads each``."""
    per = [slots.count(str(i)) for i, _ in gpus]
    per_gpu = f"{per[0]} per GPU" if len(set(per)) == 1 else \
        "per GPU " + ", ".join(f"{i}: {n}" for (i, _), n in zip(gpus, per))
    listed = ", ".join(f"{i}: {gib:.0f} GiB" for i, gib in gpus)
    return (f"llseg repro: {len(gpus)} GPU(s) visible ({listed}): {len(slots)} training jobs, {per_gpu}, "
            f"{threads} CPU thread{'s' if threads != 1 else ''} each")


# ----------------------------------------------------------------------------- training stages


def training_stages(names: Sequence[str], kinds: Sequence[str] = TRAINING_STAGES) -> list[str]:
    """The ``foreach`` instances (``kind@item``) of the training stages among ``names``, ordered
    by ``kinds`` (longest-running kinds first, so short stages fill the end), then as listed."""
    rank = {k: i for i, k in enumerate(kinds)}
    picked = [n for n in names if n.split("@", 1)[0] in rank and "@" in n]
    return sorted(picked, key=lambda n: rank[n.split("@", 1)[0]])  # sorted() is stable


def _run(cmd: Sequence[str], *, cwd, log=None, env: dict | None = None) -> int:
    """Run ``cmd`` in ``cwd``, with this process's environment updated by ``env``; output to the
    file ``log`` (or to this process's stdout/stderr)."""
    full_env = {**os.environ, **env} if env else None
    if log is None:
        return subprocess.call(list(cmd), cwd=cwd, env=full_env)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        return subprocess.call(list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)


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
              dry: bool = False, gpus=None) -> int:
    """The three steps of the module docstring. Returns the exit status (0 = success).

    ``gpus``: ``(index, memory_GiB)`` per GPU to train on; None (default) asks
    :func:`visible_gpus`, ``[]`` trains on the CPU. With GPUs, ``jobs`` defaults to the number
    of :func:`gpu_slots` (a given ``jobs`` is spread over the slots round robin), each stage runs
    with :func:`job_env` of a free slot and ``max(1, cores // jobs)`` CPU threads, and one line
    reports the placement. Without, ``jobs`` defaults to :func:`default_jobs`."""
    from tqdm.auto import tqdm

    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    gpus = visible_gpus() if gpus is None else [(int(i), float(gib)) for i, gib in gpus]
    dvc = list(dvc)
    names = _capture([*dvc, "stage", "list", "--name-only"], cwd=cwd).split()
    parallel = training_stages(names, kinds)
    missing = [u for u in upstream if u not in names]
    if missing:
        raise ValueError(f"{Path(cwd) / 'dvc.yaml'}: no stage(s) {', '.join(missing)} to run before the training stages")
    slots, threads = [], 0
    if gpus:
        slots = gpu_slots(gpus, _gpu_gib_per_job(parallel))
        jobs = len(slots) if jobs is None else jobs
        slots = [slots[i % len(slots)] for i in range(jobs)]   # one slot per job
        threads = max(1, _cores() // jobs)
        print(_placement_line(gpus, slots, threads), flush=True)
    else:
        jobs = default_jobs() if jobs is None else jobs
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

    free: queue.Queue = queue.Queue()   # the slots of no running stage (run_parallel runs at most `jobs`)
    for slot in slots:
        free.put(slot)
    placed = {}

    def run_stage(stage):
        slot = free.get_nowait() if slots else None
        placed[stage] = slot
        try:
            return _run([*dvc, "--wait-for-lock", "repro", "--single-item", stage], cwd=cwd, log=logs[stage],
                        env=job_env(slot, threads) or None)
        finally:
            if slot is not None:
                free.put(slot)

    def on_done(stage, rc, seconds):
        bar.update(1)
        where = "" if placed.get(stage) is None else f" on GPU {placed[stage]}"
        bar.write(f"  {stage}: {'done' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s{where}")

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


# ----------------------------------------------------------------------------- code dependencies

PACKAGE = "llseg"


def _module_path(root: Path, name: str) -> Path | None:
    """The file of module ``name`` (dotted) under ``root``: ``a/b.py`` or ``a/b/__init__.py``."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(root: Path, nodes, module: str, is_package: bool) -> set[str]:
    """The package modules (dotted) that the import statements among ``nodes`` (AST nodes, walked
    whole) name, from the code of ``module``; ``from X import y`` adds ``X.y`` when it is a module."""
    found = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - (node.level - is_package)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            package = root.joinpath(*base.split("."))
            found.update(f"{base}.{a.name}" for a in node.names if a.name != "*" and package.is_dir()
                         and (_module_path(root, f"{base}.{a.name}") or a.name not in _names(package)))
    return found


def _names(package: Path) -> set[str]:
    """The names a package's ``__init__.py`` binds at its top level."""
    init = package / "__init__.py"
    names = set()
    for node in ast.parse(init.read_text()).body if init.is_file() else []:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _closure(root: Path, modules, importer: str, walked=()) -> set[str]:
    """The files of ``modules`` (dotted), of their parent packages and of every package module they
    import, at any depth (imports inside functions count: a conservative closure), relative to
    ``root``. Modules in ``walked`` count as files, their imports are not followed (the caller
    resolved them). A module with no file is an error naming ``importer`` or the importing file."""
    todo, seen, files = [(m, importer) for m in modules], set(), set()
    while todo:
        name, by = todo.pop()
        parts = name.split(".")
        todo.extend((".".join(parts[:i]), by) for i in range(1, len(parts)))
        if name in seen:
            continue
        seen.add(name)
        path = _module_path(root, name)
        if path is None:
            if root.joinpath(*parts).is_dir():
                continue  # a namespace package: no file of its own
            raise ValueError(f"{by}: imports {name}, but there is no {'/'.join(parts)}.py")
        rel = path.relative_to(root).as_posix()
        files.add(rel)
        if name not in walked:
            tree = ast.parse(path.read_text(), filename=str(path))
            todo.extend((m, rel) for m in _imported(root, [tree], name, path.name == "__init__.py") - seen)
    return files


def _cli_command_modules(root: Path, command: str) -> set[str]:
    """The package modules ``llseg <command>`` imports: those of cli.py's top level, of ``main``
    and of the ``cmd_*`` function registered for ``command``, following the cli.py functions they
    use (a registration such as ``add("predict", cmd_predict, ...)`` does not run the other handlers)."""
    path = root / PACKAGE / "cli.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    handlers = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and isinstance(node.args[1], ast.Name) \
                and node.args[1].id in funcs:
            handlers[node.args[0].value] = node.args[1].id
    handler = handlers.get(command)
    if handler is None:
        raise ValueError(f"{path}: no handler registered for `{PACKAGE} {command}` "
                         f"(commands: {', '.join(sorted(handlers))})")
    registered = set(handlers.values())
    module = f"{PACKAGE}.cli"
    nodes = [n for n in tree.body if n not in funcs.values()]  # imports and code at the top level
    todo, seen = ["main", handler], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in funcs:
            continue
        seen.add(name)
        nodes.append(funcs[name])
        todo.extend(n.id for n in ast.walk(funcs[name]) if isinstance(n, ast.Name) and n.id in funcs
                    and (n.id == handler or n.id not in registered))
    return {module} | _imported(root, nodes, module, False)


def _source_modules(root: Path, path: Path) -> set[str]:
    """The package modules a notebook's code cells or a script import (``%`` / ``!`` lines skipped)."""
    if path.suffix == ".ipynb":
        cells = [c for c in json.loads(path.read_text())["cells"] if c.get("cell_type") == "code"]
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    else:
        sources = [path.read_text()]
    found = set()
    for i, src in enumerate(sources):
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            raise ValueError(f"{path}: code cell {i}: {exc.msg} (line {exc.lineno})") from None
        found |= _imported(root, [tree], "__main__", False)
    return found


def command_code_deps(cmd: str, root=".") -> list[str]:
    """The package source files (and notebooks / scripts) a stage command runs, relative to
    ``root``: for ``llseg <command>``, cli.py and the import closure of that command's handler; for
    ``papermill NB ...`` or ``python SCRIPT``, the file and the closure of what it imports; for
    ``python -m llseg.x``, that module's closure. Other commands (``mkdir``...) add nothing."""
    import shlex

    root = Path(root)
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    segments, current = [], []
    for w in words:
        if w and all(ch in "&|;()" for ch in w):
            segments.append(current)
            current = []
        else:
            current.append(w)
    segments.append(current)
    files, cli = set(), f"{PACKAGE}/cli.py"
    for seg in segments:
        if not seg:
            continue
        prog, args = Path(seg[0]).name, seg[1:]
        plain = [a for a in args if not a.startswith("-")]
        if prog.startswith("python") and args[:2] == ["-m", f"{PACKAGE}.cli"]:
            prog, plain = PACKAGE, [a for a in args[2:] if not a.startswith("-")]
        if prog == PACKAGE and plain:
            files |= _closure(root, _cli_command_modules(root, plain[0]), cli, walked={f"{PACKAGE}.cli"})
        elif prog.startswith("python") and args[:1] == ["-m"] and len(args) > 1:
            if args[1].split(".")[0] == PACKAGE:
                files |= _closure(root, [args[1]], f"`{' '.join(seg)}`")
        elif (prog == "papermill" or prog.startswith("python")) and plain:
            source = root / plain[0]
            if source.suffix in (".ipynb", ".py") and source.is_file():
                files.add(plain[0])
                files |= _closure(root, _source_modules(root, source), plain[0])
    return sorted(files, key=lambda f: (f.startswith(f"{PACKAGE}/"), f))


def _stage_body(stage: dict) -> dict:
    return stage["do"] if "foreach" in stage else stage


def stage_code_deps(dvc_yaml="dvc.yaml", root=None) -> dict[str, list[str]]:
    """For each stage of ``dvc_yaml`` (a ``foreach`` stage once, from its template), the code its
    command runs (``command_code_deps``, relative to ``root``, by default the folder of ``dvc_yaml``)."""
    import yaml

    dvc_yaml = Path(dvc_yaml)
    root = dvc_yaml.parent if root is None else Path(root)
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    deps = {}
    for name, stage in stages.items():
        cmd = _stage_body(stage)["cmd"]
        deps[name] = command_code_deps(cmd if isinstance(cmd, str) else " && ".join(cmd), root=root)
    return deps


def _is_code(dep: str) -> bool:
    return dep.startswith(f"{PACKAGE}/") and dep.endswith(".py")


def code_deps_diff(dvc_yaml="dvc.yaml", root=None) -> dict[str, tuple[list[str], list[str]]]:
    """``{stage: (missing, extra)}`` for the stages whose listed package ``.py`` deps (and notebooks
    or scripts they run) differ from ``stage_code_deps``; empty when all are complete and exact."""
    import yaml

    stages = yaml.safe_load(Path(dvc_yaml).read_text()).get("stages", {})
    diff = {}
    for name, want in stage_code_deps(dvc_yaml, root).items():
        listed = [d if isinstance(d, str) else next(iter(d)) for d in _stage_body(stages[name]).get("deps", [])]
        missing = [d for d in want if d not in listed]
        extra = [d for d in listed if _is_code(d) and d not in want]
        if missing or extra:
            diff[name] = (missing, extra)
    return diff


def sync_code_deps(dvc_yaml="dvc.yaml", root=None, *, write: bool = True) -> dict[str, tuple[list[str], list[str]]]:
    """Make each stage's package ``.py`` deps exactly ``stage_code_deps`` (the notebook or script a
    stage runs is added if missing; other deps stay as they are, in order). The computed code deps
    take the place of the first listed one (sorted). The file is rewritten only with ``write`` and
    a difference, keeping comments and layout (ruamel.yaml round trip). Returns ``code_deps_diff``
    as it was before."""
    from ruamel.yaml import YAML

    dvc_yaml = Path(dvc_yaml)
    diff = code_deps_diff(dvc_yaml, root)
    if not diff or not write:
        return diff
    want = stage_code_deps(dvc_yaml, root)
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # never refold the commands
    rt.indent(mapping=2, sequence=2, offset=0)
    doc = rt.load(dvc_yaml.read_text())
    for name in diff:
        deps = _stage_body(doc["stages"][name]).setdefault("deps", [])
        at = next((i for i, d in enumerate(deps) if isinstance(d, str) and _is_code(d)), len(deps))
        for i in reversed(range(len(deps))):  # item by item: the comments of the others stay in place
            if isinstance(deps[i], str) and _is_code(deps[i]):
                del deps[i]
        for d in reversed([d for d in want[name] if _is_code(d)]):
            deps.insert(at, d)
        for d in reversed([d for d in want[name] if not _is_code(d) and d not in deps]):
            deps.insert(0, d)
    from io import StringIO

    from .io import atomic_path

    buf = StringIO()
    rt.dump(doc, buf)

    with atomic_path(dvc_yaml) as tmp:
        Path(tmp).write_text(buf.getvalue())
    return diff


def _main(argv=None) -> int:
    """``python -m llseg.repro [--sync-deps] [--check] [--root DIR] [DVC_YAML]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m llseg.repro",
                                     description="Compare (or set) each dvc.yaml stage's code deps with the "
                                                 "import closure of its command.")
    parser.add_argument("dvc_yaml", nargs="?", default="dvc.yaml")
    parser.add_argument("--sync-deps", action="store_true", help="rewrite the deps lists in place")
    parser.add_argument("--check", action="store_true", help="exit 1 if any stage's code deps differ")
    parser.add_argument("--root", help="the folder the commands run in (default: that of DVC_YAML)")
    args = parser.parse_args(argv)
    try:
        diff = sync_code_deps(args.dvc_yaml, args.root, write=args.sync_deps)
    except (ValueError, OSError) as exc:
        print(f"{args.dvc_yaml}: error: {exc}", file=sys.stderr)
        return 1
    for stage, (missing, extra) in diff.items():
        print(f"{stage}: " + "; ".join(part for part in (
            "missing " + ", ".join(missing) if missing else "", "extra " + ", ".join(extra) if extra else "") if part))
    verb = "updated" if args.sync_deps else "differ"
    print(f"{args.dvc_yaml}: {len(diff)} stage(s) {verb}" if diff else f"{args.dvc_yaml}: code deps complete")
    return 1 if diff and args.check else 0


if __name__ == "__main__":
    sys.exit(_main())
