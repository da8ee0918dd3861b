"""Reading and writing at the edge: NIfTI images and label maps, JSON, CSV, Keras models.

Every loader returns arrays in the kit's canonical frame: axes ``(X, Y, Z)`` with RAS+
world orientation (+x subject's Right, +y Anterior, +z Superior), via
``nibabel.as_closest_canonical``. Every loader checks its input and raises an error that names
the file and the problem. Every writer is atomic (temporary file in the target folder, then
``os.replace``), so an interrupted run never leaves a partial or corrupt output behind, and
gzip output is byte-reproducible (no time stamp, no file name in the gzip header). Checks of
output paths, image content and memory before heavy work are in ``llseg.guards``.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import json
import logging
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from . import _validate

__all__ = [
    "Volume",
    "load_image",
    "load_labels",
    "load_cached",
    "save_nifti",
    "write_json",
    "read_json",
    "write_csv",
    "read_csv",
    "write_text",
    "atomic_path",
    "atomic_dir",
    "check_same_geometry",
    "to_original_orientation",
    "save_figure",
    "save_model",
    "load_model",
]

log = logging.getLogger(__name__)

#: Largest world-coordinate disagreement (mm) tolerated between an image and its label map.
GEOMETRY_TOL_MM = 1e-3


@dataclass(frozen=True)
class Volume:
    """A 3-D volume in the canonical RAS+ frame plus what is needed to go back.

    Attributes
    ----------
    data : (X, Y, Z) ndarray
        Voxel values, canonical RAS+ axis order.
    affine : (4, 4) ndarray
        Voxel-to-world (mm) of ``data``.
    original_affine : (4, 4) ndarray
        Affine of the file as stored (before reorientation).
    original_shape : tuple of int
        Shape of the file as stored.
    path : str
        Where it came from (for error messages).
    """

    data: np.ndarray
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, ...]
    path: str

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm along (X, Y, Z)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def _load_nifti(path) -> nib.Nifti1Image:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
        # Read the payload once, now, so truncated or corrupt files fail here with the file's name.
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise ValueError(f"{path}: cannot read NIfTI data (truncated or corrupt file?): {exc}") from None
    except nib.filebasedimages.ImageFileError as exc:
        raise ValueError(f"{path}: not a valid NIfTI file (truncated or corrupt?): {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: cannot read NIfTI data: {exc}") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: not a NIfTI image (got {type(img).__name__})")
    return nib.Nifti1Image(data, img.affine, img.header)


def _canonical(img: nib.Nifti1Image, path) -> Volume:
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got {len(shape)}-D image of shape {shape} "
                         f"(one scalar per voxel is needed, not RGB, vectors or a time series)")
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError(f"{path}: invalid (singular or non-finite) affine:\n{affine}")
    canon = nib.as_closest_canonical(img)
    data = np.asanyarray(canon.dataobj)
    return Volume(data=data, affine=canon.affine.copy(), original_affine=affine.copy(),
                  original_shape=tuple(int(s) for s in shape), path=str(path))


def load_image(path) -> Volume:
    """Load an MR image as float32 ``(X, Y, Z)`` in RAS+.

    Raises
    ------
    FileNotFoundError
        Missing file.
    ValueError
        Not NIfTI, truncated/corrupt, not 3-D (a 4-D image with one volume is accepted),
        invalid affine, complex or RGB (not one real number per voxel), NaN or infinite voxels.
        The message names the file.
    """
    vol = _canonical(_load_nifti(path), path)
    raw = np.asarray(vol.data)
    if raw.dtype.names is not None or raw.dtype.kind not in "biuf":   # RGB24 / RGBA32 are structured dtypes
        kind = "complex" if raw.dtype.kind == "c" else "RGB / multi-component" if raw.dtype.names else str(raw.dtype)
        raise ValueError(f"{path}: expected a real scalar image (one real number per voxel), got {kind} "
                         f"voxels (dtype {raw.dtype})")
    data = raw.astype(np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} voxel(s) are NaN or infinite")
    return Volume(data, vol.affine, vol.original_affine, vol.original_shape, vol.path)


def load_labels(path, *, reference: Volume | None = None) -> Volume:
    """Load a label map as uint8 ``(X, Y, Z)`` in RAS+, with ids from ``llseg.anatomy``.

    Parameters
    ----------
    reference : Volume, optional
        The image the labels belong to; shape and affine must match it (within
        ``GEOMETRY_TOL_MM``), else ValueError naming both files.

    Raises
    ------
    ValueError
        Non-integer values, unknown label ids (listed), geometry mismatch, or any problem
        ``load_image`` reports.
    """
    vol = _canonical(_load_nifti(path), path)
    raw = np.asarray(vol.data)
    if np.issubdtype(raw.dtype, np.floating):
        if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
            raise ValueError(f"{path}: label map holds non-integer or NaN values")
    _validate.label_ids(raw, str(path))
    out = Volume(raw.astype(np.uint8), vol.affine, vol.original_affine, vol.original_shape, vol.path)
    if reference is not None:
        check_same_geometry(reference, out)
    return out


def load_cached(path, *, kind: str, cache_dir) -> np.ndarray:
    """The canonical data array of ``load_image`` / ``load_labels``, kept as an uncompressed ``.npy``.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` / ``.nii.gz`` file.
    kind : {"image", "labels"}
        Which loader reads ``path`` the first time (and checks it).
    cache_dir : str or Path
        Folder of the ``.npy`` copies (created if missing). A copy is keyed by the file's
        absolute path, size and modification time, so a rewritten file is read again; the
        stale copy of the same file is removed.

    Returns
    -------
    (X, Y, Z) ndarray
        As ``load_image(path).data`` or ``load_labels(path).data`` (RAS+).

    Notes
    -----
    Every training stage of the study reads all preprocessed volumes in a fresh process;
    decompressing 40 ``.nii.gz`` files took ~5 s of each stage, reading the ``.npy`` copies
    takes a fraction of a second (the same idea as nnU-Net's unpacking of its ``.npz``
    files). The cache lives outside DVC's outputs, so it never changes their hashes.
    """
    import hashlib

    loaders = {"image": load_image, "labels": load_labels}
    if kind not in loaders:
        raise ValueError(f"kind must be one of {sorted(loaders)}, got {kind!r}")
    path = Path(path)
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}".encode()).hexdigest()[:16]
    stem = path.name.split(".")[0]
    prefix = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{kind}_{stem}_{prefix}_{key}.npy"
    if target.exists():
        try:
            return np.load(target, allow_pickle=False)
        except (OSError, ValueError) as exc:       # damaged copy: read the source again
            log.warning("%s: unreadable cache copy (%s); reloading %s", target, exc, path)
    data = loaders[kind](path).data
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in cache_dir.glob(f"{kind}_{stem}_{prefix}_*.npy"):
        old.unlink(missing_ok=True)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, data, allow_pickle=False)
    return data


def check_same_geometry(a: Volume, b: Volume) -> None:
    """Raise ValueError naming both files if shapes or world geometry (affine) differ."""
    if a.data.shape != b.data.shape:
        raise ValueError(f"{b.path}: shape {b.original_shape} does not match {a.path} shape {a.original_shape}")
    diff = np.abs(a.affine - b.affine).max()
    if diff > GEOMETRY_TOL_MM:
        raise ValueError(f"{b.path}: voxel-to-world affine differs from {a.path} by up to {diff:.3g} mm "
                         f"(flipped or shifted label map?)\n{a.path}:\n{a.affine}\n{b.path}:\n{b.affine}")


def to_original_orientation(data: np.ndarray, canonical_affine: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Reorient canonical ``(X, Y, Z)`` RAS+ data back to a file's stored axis order/direction."""
    src = nib.io_orientation(canonical_affine)
    dst = nib.io_orientation(original_affine)
    transform = nib.orientations.ornt_transform(src, dst)
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, transform))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    A run that fails or is interrupted leaves the previous folder (or nothing) in place,
    never a half-written one.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_nifti(path, data: np.ndarray, affine: np.ndarray, *, dtype=None) -> Path:
    """Write ``data`` with ``affine`` atomically to ``.nii`` or ``.nii.gz``.

    The gzip stream carries no time stamp or file name, so identical arrays give identical
    bytes (the phantom cohort is reproducible bit for bit).
    """
    path = Path(path)
    data = np.asarray(data if dtype is None else np.asarray(data).astype(dtype))
    if data.ndim != 3:
        raise ValueError(f"{path}: expected 3-D data to write, got shape {data.shape}")
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    payload = img.to_bytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    elif not path.name.endswith(".nii"):
        raise ValueError(f"{path}: output must end in .nii or .nii.gz")
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def write_text(path, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(path, obj) -> Path:
    """Write JSON atomically (sorted keys, 2-space indent, trailing newline)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_json(path):
    """Read a JSON file, naming the file in any error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from None


def write_csv(path, rows: list[dict], *, fieldnames=None) -> Path:
    """Write a list of dicts as CSV atomically."""
    fieldnames = list(fieldnames or (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def read_csv(path) -> list[dict]:
    """Read a CSV table as a list of row dicts (numbers parsed, empty cells NaN), naming the file in any error."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return pd.read_csv(path).to_dict("records")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: invalid CSV: {str(exc).splitlines()[0]}") from None


def save_figure(fig, stem, *, formats=("png", "svg"), dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.svg`` (atomically), then close it."""
    import matplotlib.pyplot as plt

    out = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        out.append(path)
    plt.close(fig)
    return out


def save_model(model, path) -> Path:
    """Save a Keras model to a ``.keras`` file atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: model files must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_model(path):
    """Load a ``.keras`` model (compile=False: inference only)."""
    import zipfile

    path = Path(path)
    if not path.exists():                # checked first: a missing file fails without a TensorFlow import
        raise FileNotFoundError(f"{path}: no such model file (run the training stage first: dvc repro)")
    if path.is_dir() or not zipfile.is_zipfile(path):   # a .keras file is a zip archive
        raise ValueError(f"{path}: not a readable .keras model (truncated or corrupt file?); "
                         f"delete it and retrain it (dvc repro)")
    import keras  # deferred: importing llseg.io must not pull in TensorFlow

    from . import models  # noqa: F401  (registers llseg's custom layers, e.g. SegNet's MaxUnpooling3D)

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot load the model (corrupt file?): {first}") from None
