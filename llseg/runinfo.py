"""What machine and software produced a result: CPU, instruction set, backend, library versions.

Trained weights and metrics agree digit for digit only on the same CPU type (oneDNN picks its
kernels, and so its summation order, by instruction set), so every training record and the
prediction metrics carry :func:`environment`, in the spirit of TotalSegmentator's ``--report``.
"""
from __future__ import annotations

import functools
import logging
import os
import platform
from importlib import metadata

__all__ = ["environment", "cpu_model", "cpu_isa", "keras_backend", "visible_gpus", "device_line"]

# The instruction-set extensions that decide which oneDNN kernels run (best last).
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
_PACKAGES = ("numpy", "scipy", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "SimpleITK", "nibabel")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo as key -> value ({} where there is none)."""
    # Read by hand: the file is four lines of parsing, and py-cpuinfo (the library for it)
    # starts a subprocess and takes about a second.
    try:
        with open("/proc/cpuinfo") as fh:
            block = fh.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_isa() -> list[str]:
    """The oneDNN-relevant instruction-set extensions the CPU has, e.g. ``["avx2", "avx512f"]``."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in _ISA_FLAGS if f in flags]


def keras_backend() -> str:
    """The Keras backend this process uses (``KERAS_BACKEND``, default ``tensorflow``)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def visible_gpus(backend: str | None = None) -> list[str]:
    """Names of the GPUs the Keras backend sees (empty: it runs on the CPU).

    Asks the backend itself (TensorFlow's physical devices, ``jax.devices()``,
    ``torch.cuda``), so a GPU that ``nvidia-smi`` shows but the installed wheel cannot use
    (a CPU-only build, a CUDA mismatch) counts as none. For TensorFlow, call it after
    ``train.use_training_threads``: listing devices is allowed before the runtime starts.
    """
    backend = backend or keras_backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_physical_devices("GPU")]
        if backend == "jax":
            import jax

            return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices() if d.platform != "cpu"]
        if backend == "torch":
            import torch

            return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup reads as "no GPU", with the reason
        logging.getLogger(__name__).warning("%s backend: cannot list GPUs (%s: %s)", backend, type(exc).__name__, exc)
    return []


def device_line(gpus: list[str] | None = None, backend: str | None = None) -> str:
    """One line saying which Keras backend and device this process computes on.

    ``LLSEG_DEVICE=gpu`` (set by ``make study BACKEND=jax|torch``) asks for a GPU; where the
    backend sees none, the line says so plainly and that the work runs on the CPU.
    """
    backend = backend or keras_backend()
    gpus = visible_gpus(backend) if gpus is None else gpus
    if gpus:
        more = f" (+{len(gpus) - 1} more visible)" if len(gpus) > 1 else ""
        return f"llseg: Keras backend {backend} on GPU {gpus[0]}{more}"
    line = f"llseg: Keras backend {backend} on the CPU ({cpu_model()}, {os.cpu_count()} cores)"
    if os.environ.get("LLSEG_DEVICE", "").lower() == "gpu":
        line += (f"; a GPU was asked for (LLSEG_DEVICE=gpu) but the {backend} backend sees none: check "
                 f"`nvidia-smi` and that the {backend} CUDA wheels are installed (README, 'Running on a GPU')")
    return line


def usable_cores() -> int:
    """The CPU cores this process may use (its affinity where the OS tells it), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def environment() -> dict:
    """CPU, threads, Keras backend, oneDNN settings and library versions of this process.

    Returns
    -------
    dict
        ``cpu`` (model name), ``cpu_isa`` (list of str), ``n_cpus``, ``os``, ``python``,
        ``keras_backend``, ``onednn`` (the ``TF_ENABLE_ONEDNN_OPTS`` and ``ONEDNN_MAX_CPU_ISA``
        settings, unset ones omitted) and ``versions`` (installed packages among numpy, scipy,
        keras, tensorflow, jax, torch, SimpleITK, nibabel).
    """
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_model(), "cpu_isa": cpu_isa(), "n_cpus": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
            "onednn": {k: os.environ[k] for k in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA") if k in os.environ},
            "versions": versions}
