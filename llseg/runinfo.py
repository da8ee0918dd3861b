"""What machine and software produced a result: CPU, instruction set, backend, library versions.

Trained weights and metrics agree digit for digit only on the same CPU type (oneDNN picks its
kernels, and so its summation order, by instruction set), so every training record and the
prediction metrics carry :func:`environment`, in the spirit of TotalSegmentator's ``--report``.
"""
from __future__ import annotations

import functools
import os
import platform
from importlib import metadata

__all__ = ["environment", "cpu_model", "cpu_isa"]

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
