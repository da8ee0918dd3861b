"""Guards at the boundary, before any heavy work: output paths that can and may be written,
all-or-nothing writes of a command's whole set of outputs, an image's content (a real scan, not
a label map, a plausible voxel size) and the memory its resampling will need.

``llseg check``, ``llseg segment`` and the other commands call these once, where their inputs
enter; the method's functions trust what was checked here.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from . import anatomy
from .io import Volume, _umask

__all__ = ["MAX_SPACING_MM", "check_output_paths", "atomic_files", "check_image_content", "available_memory_bytes",
           "check_memory"]


#: Largest voxel edge (mm) the kit accepts (``llseg check`` and ``llseg segment`` use the same limit).
MAX_SPACING_MM = 25.0

#: An integer image with at most this many distinct values, all label ids, "looks like a label map".
LABEL_LIKE_MAX_VALUES = anatomy.N_REGIONS + 1


def check_output_paths(outputs, inputs=()) -> list[Path]:
    """Check files about to be written, before any work: raise if one cannot or must not be written.

    Parameters
    ----------
    outputs : iterable of str or Path
        Files a command will write.
    inputs : iterable of str or Path
        Files or folders it reads; no output may be one of them (by any spelling: symbolic links
        and ``..`` are resolved, hard links compared by inode) or lie inside an input folder.

    Returns
    -------
    list of Path
        ``outputs`` as Paths, in order.

    Raises
    ------
    ValueError
        An output is a folder, lies under a file, equals or lies inside an input, or is named twice.
        The message names the output and, where one is involved, the input.
    """
    outputs = [Path(p) for p in outputs]
    resolved_inputs = [(Path(p), Path(os.path.realpath(p))) for p in inputs]
    seen: dict[Path, Path] = {}
    for out in outputs:
        real = Path(os.path.realpath(out))
        if out.is_dir() or real.is_dir():
            raise ValueError(f"{out}: is a folder; expected a file path to write")
        for parent in real.parents:
            if parent.exists() and not parent.is_dir():
                raise ValueError(f"{out}: cannot write here, {parent} is a file, not a folder")
        if real in seen:
            raise ValueError(f"{out}: the same file as output {seen[real]}; choose distinct output paths")
        seen[real] = out
        for given, source in resolved_inputs:
            if real == source or (out.exists() and source.exists() and os.path.samefile(out, source)):
                raise ValueError(f"{out}: is the input {given}; refusing to overwrite an input, choose another path")
            if source.is_dir() and source in real.parents:
                raise ValueError(f"{out}: lies inside the input folder {given}; write outputs elsewhere")
    return outputs


@contextlib.contextmanager
def atomic_files(paths):
    """Write a set of files all-or-nothing: yield ``{target: temporary path}``, then move them into place.

    The temporary paths lie in a hidden folder beside each target. If the block raises, nothing
    new is left behind and existing targets are untouched; if moving one file into place fails,
    the ones already moved are restored to their previous state.

    Parameters
    ----------
    paths : iterable of str or Path
        The target files (checked with ``check_output_paths`` first).
    """
    import shutil

    targets = check_output_paths(paths)
    tmp_dirs: dict[Path, Path] = {}
    made: list[Path] = []                       # parent folders this call created (removed on failure)
    try:
        for target in targets:
            parent = target.parent
            if parent not in tmp_dirs:
                missing = [p for p in [parent, *parent.parents] if not p.exists()]
                parent.mkdir(parents=True, exist_ok=True)
                made += missing
                tmp_dirs[parent] = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
        staged = {target: tmp_dirs[target.parent] / target.name for target in targets}
        yield staged
        for target, tmp in staged.items():
            if not tmp.exists():
                raise FileNotFoundError(f"{target}: was not written")
        moved: list[tuple[Path, Path | None]] = []
        try:
            for target, tmp in staged.items():
                backup = None
                if target.exists():
                    backup = tmp.with_name(f".{target.name}.previous")
                    os.replace(target, backup)
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, target)
                moved.append((target, backup))
        except BaseException:
            for target, backup in reversed(moved):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink(missing_ok=True)
            raise
    except BaseException:
        for tmp in tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
        tmp_dirs = {}
        for folder in made:                     # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        for tmp in tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)


def check_image_content(volume: Volume, *, max_spacing_mm: float = MAX_SPACING_MM,
                        allow_label_like: bool = False) -> None:
    """Refuse an image that cannot be a scan to segment, before any heavy work.

    Parameters
    ----------
    volume : Volume
        As returned by ``load_image`` (real, scalar, finite: checked there).
    max_spacing_mm : float
        Largest voxel edge accepted (``MAX_SPACING_MM``, as ``llseg check``).
    allow_label_like : bool
        Accept an image whose values look like label ids.

    Raises
    ------
    ValueError
        Constant (e.g. all-zero) image, voxel size beyond ``max_spacing_mm``, or (unless
        ``allow_label_like``) integer values that are all label ids: "looks like a label map".
        The message names the file.
    """
    data, path = volume.data, volume.path
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise ValueError(f"{path}: every voxel is {lo:g}; a constant (e.g. all-zero) image holds nothing to segment")
    spacing = [round(s, 4) for s in volume.spacing_mm]
    if max(spacing) > max_spacing_mm:
        raise ValueError(f"{path}: voxel size {spacing} mm exceeds {max_spacing_mm} mm, the kit's limit "
                         f"(wrong header units?)")
    if not allow_label_like and lo >= 0 and hi <= anatomy.N_REGIONS and np.all(data == np.round(data)):
        values = np.unique(data)
        if len(values) <= LABEL_LIKE_MAX_VALUES:
            raise ValueError(f"{path}: this looks like a label map, not a scan ({len(values)} distinct integer values, "
                             f"all label ids 0..{anatomy.N_REGIONS}); pass --allow-label-like if it really is an image")


def available_memory_bytes() -> int:
    """Memory available to a new allocation (``MemAvailable`` of /proc/meminfo, else free physical pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(volume: Volume, target_spacing_mm, *, available_bytes: int | None = None) -> int:
    """Estimate the memory preprocessing ``volume`` onto the study grid needs; refuse if it cannot fit.

    Parameters
    ----------
    volume : Volume
        The scan (canonical shape and spacing).
    target_spacing_mm : tuple of 3 float
        The study voxel size (params.yaml ``preprocess.spacing_mm``).
    available_bytes : int, optional
        Memory available (default: ``available_memory_bytes()``).

    Returns
    -------
    int
        The estimate in bytes.

    Raises
    ------
    ValueError
        The estimate exceeds the available memory; the message names the file, both sizes and
        the resampled grid.

    Notes
    -----
    N4 works on the scan's own grid (about six float32 copies); resampling to the study voxel
    size allocates the whole resampled grid before the in-plane crop (about three float32
    copies). The estimate is ``4 * (6 * scan voxels + 3 * resampled voxels)`` bytes.
    """
    shape = np.asarray(volume.data.shape, float)
    zoom = np.asarray(volume.spacing_mm, float) / np.asarray(target_spacing_mm, float)
    resampled = np.maximum(1, np.round(shape * zoom))
    need = int(4 * (6 * np.prod(shape) + 3 * np.prod(resampled)))
    have = available_memory_bytes() if available_bytes is None else int(available_bytes)
    if need > have:
        grid = " x ".join(str(int(n)) for n in resampled)
        raise ValueError(f"{volume.path}: preprocessing needs about {need / 2**30:.1f} GiB (resampled grid {grid} at "
                         f"{list(target_spacing_mm)} mm), only {have / 2**30:.1f} GiB available; check the voxel size "
                         f"in the header ({[round(s, 4) for s in volume.spacing_mm]} mm)")
    return need
