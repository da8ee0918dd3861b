"""Label maps numbered in another convention: map their ids onto llseg's (``llseg import-labels``).

A mapping file is a small CSV table, one row per source label::

    # MuscleMap whole-body labels (comment lines start with '#': cite the source and its version)
    source_id,source_name,muscle,side
    6121,Left Gluteus Maximus,gluteus_maximus,left
    6171,Left Femur,,left

``source_id``
    The label value in the source convention (integer >= 0; 0 is background and may only be
    listed with an empty ``muscle``).
``source_name``
    Free text (the source's own name), for people reading the file.
``muscle``
    A muscle key of ``llseg.anatomy`` (or its Table-1 name); **empty** for a source label that is
    known but has no llseg region (bones, upper-body muscles, a compartment that holds several
    llseg muscles): such voxels become background 0 without error.
``side``
    ``right`` or ``left``, the subject's side; may be empty when ``muscle`` is empty.

Labels present in an image but absent from the mapping are refused (their values and voxel
counts are listed) unless dropping them is asked for. Two source labels onto one llseg region
are refused unless ``allow_merge`` is given: llseg's combined muscles (``fibulari``,
``phalangeal_extensors``, ``external_rotators``) may legitimately gather several source labels,
but a merge is far more often a copy-paste error in the table.

Ready mappings ship with the package (``MAPPINGS``, files in ``llseg/data/label_maps/``);
``musclemap`` maps the MuscleMap whole-body model's labels (see the file's header for the
source, the version and each anatomical mismatch).

Label-id convention of the output: ``llseg.anatomy`` (right muscle ``i`` -> ``i``, left ->
``i + 35``). Volumes are ``(X, Y, Z)`` arrays (RAS+ once loaded through ``llseg.io``), but the
array functions here work on any shape.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from . import _validate, anatomy, guards, io

__all__ = [
    "COLUMNS",
    "MAPPINGS",
    "mapping_file",
    "load_mapping",
    "apply_mapping",
    "unmapped_values",
    "invert_mapping",
    "import_labels",
]

log = logging.getLogger(__name__)

#: The mapping file's header, in this order.
COLUMNS = ("source_id", "source_name", "muscle", "side")

_DATA = Path(__file__).resolve().parent / "data" / "label_maps"

#: Ready mappings shipped with the package: name -> file.
MAPPINGS: dict[str, Path] = {p.stem: p for p in sorted(_DATA.glob("*.csv"))}

#: Largest label value mapped through a lookup table (larger ones go through ``np.unique``).
_LUT_MAX = 1 << 20

#: A progress bar is shown from this many files on.
_PROGRESS_MIN_FILES = 5


def mapping_file(name_or_path) -> Path:
    """The mapping file a name of ``MAPPINGS`` (e.g. ``"musclemap"``) or a path stands for.

    Raises
    ------
    FileNotFoundError
        Neither a ready mapping's name nor an existing file (the ready names are listed).
    """
    spec = str(name_or_path)
    if spec in MAPPINGS:
        return MAPPINGS[spec]
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mapping file, and not a ready mapping "
                                f"(ready: {', '.join(MAPPINGS) or 'none'})")
    return path


def load_mapping(path, *, allow_merge: bool = False) -> dict[int, int]:
    """Read a mapping file: source label value -> llseg region id (0 for known-unmapped labels).

    Parameters
    ----------
    path : str or Path
        CSV file with the header ``source_id,source_name,muscle,side`` (module docstring);
        lines starting with ``#`` and blank lines are ignored.
    allow_merge : bool
        Accept several source labels onto one llseg region (e.g. fibularis longus and brevis
        onto ``fibulari``).

    Returns
    -------
    dict of int to int
        Sorted by source value; values are llseg ids 1..70 or 0 (known, not mapped). Background
        0 -> 0 is implied and not listed unless the file lists it.

    Raises
    ------
    FileNotFoundError
        Missing file.
    ValueError
        Wrong header, wrong number of fields, a source id that is not an integer >= 0, an unknown
        muscle, a side other than right/left, a duplicate source id, two source ids onto one
        region (unless ``allow_merge``), background 0 mapped to a muscle, or no rows. The message
        names the file and line (``file:line:``) and quotes the bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mapping file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file: {exc}") from None
    mapping: dict[int, int] = {}
    line_of_source: dict[int, int] = {}
    first_onto: dict[int, tuple[int, int]] = {}      # llseg id -> (line, source id) of its first row
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        fields = [f.strip() for f in next(csv.reader([line]))]
        if not header_seen:
            if tuple(f.lower() for f in fields) != COLUMNS:
                raise ValueError(f"{where}: expected the header {','.join(COLUMNS)!r}, got {line.strip()!r}")
            header_seen = True
            continue
        if len(fields) != len(COLUMNS):
            raise ValueError(f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(fields)}: "
                             f"{line.strip()!r}")
        source, _name, key, side = fields
        source_id = _source_id(source, where)
        region = _region(key, side.lower(), where)
        if source_id == 0 and region != 0:
            raise ValueError(f"{where}: source id 0 is background and cannot map to a muscle ({key!r})")
        if source_id in line_of_source:
            raise ValueError(f"{where}: source id {source_id} is listed twice (first on line "
                             f"{line_of_source[source_id]})")
        if region and region in first_onto and not allow_merge:
            first_line, first_source = first_onto[region]
            raise ValueError(f"{where}: source id {source_id} maps onto {anatomy.region_name(region)} (llseg id "
                             f"{region}), as does source id {first_source} on line {first_line}; merging two "
                             f"source labels into one region needs allow_merge (--allow-merge)")
        line_of_source[source_id] = lineno
        first_onto.setdefault(region, (lineno, source_id))
        mapping[source_id] = region
    if not header_seen:
        raise ValueError(f"{path}: no header line {','.join(COLUMNS)!r} (empty mapping file?)")
    if not mapping:
        raise ValueError(f"{path}: the mapping lists no labels")
    return dict(sorted(mapping.items()))


def _source_id(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{where}: source_id must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise ValueError(f"{where}: source_id must be an integer >= 0, got {value}")
    return value


def _region(key: str, side: str, where: str) -> int:
    """llseg id of (muscle key or Table-1 name, side); 0 for an empty muscle."""
    if side not in ("right", "left", ""):
        raise ValueError(f"{where}: side must be 'right' or 'left' (or empty for a label without a muscle), "
                         f"got {side!r}")
    if not key:
        return 0
    if not side:
        raise ValueError(f"{where}: muscle {key!r} needs a side ('right' or 'left')")
    try:
        return anatomy.label_id(anatomy.muscle(key).key, side)
    except KeyError:
        raise ValueError(f"{where}: unknown muscle {key!r}; expected a key of llseg.anatomy "
                         f"({', '.join(m.key for m in anatomy.MUSCLES)}) or empty") from None


def _check_mapping(mapping) -> dict[int, int]:
    """Plain ``{int: int}`` with values >= 0 and 0 -> 0; ValueError quoting a bad entry."""
    try:
        out = {int(k): int(v) for k, v in dict(mapping).items()}
    except (TypeError, ValueError):
        raise ValueError(f"mapping must be a dict of integer label values, got {mapping!r:.200}") from None
    bad = {k: v for k, v in out.items() if k < 0 or v < 0}
    if bad:
        raise ValueError(f"mapping: label values must be >= 0, got {bad}")
    if out.get(0, 0) != 0:
        raise ValueError(f"mapping: background 0 must map to 0, got 0 -> {out[0]}")
    out[0] = 0
    return out


def _lookup(labels: np.ndarray, mapping: dict[int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """Map through a lookup table; unmapped voxels get -1. Returns (mapped, {value: voxel count}); the
    mapped array has the smallest signed dtype holding -1 and every target (int8 for llseg ids)."""
    dtype = np.promote_types(np.int8, np.min_scalar_type(max(mapping.values())))
    if labels.size == 0:
        return np.zeros(labels.shape, dtype), {}
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi <= _LUT_MAX:
        lut = np.full(hi + 1, -1, dtype)
        keys = [k for k in mapping if k <= hi]
        lut[keys] = [mapping[k] for k in keys]
        out = np.take(lut, labels)
    else:                                       # huge or negative values: only the values present
        values, inverse = np.unique(labels, return_inverse=True)
        lut = np.array([mapping.get(int(v), -1) for v in values], dtype)
        out = lut[inverse].reshape(labels.shape)
    missing = out < 0
    if not missing.any():
        return out, {}
    values, counts = np.unique(labels[missing], return_counts=True)
    return out, {int(v): int(c) for v, c in zip(values, counts)}


def _values_text(unmapped: dict[int, int], limit: int = 20) -> str:
    shown = [f"{v} ({c} voxel{'s' if c != 1 else ''})" for v, c in list(unmapped.items())[:limit]]
    return ", ".join(shown) + (f", ... ({len(unmapped)} values)" if len(unmapped) > limit else "")


def unmapped_values(labels, mapping) -> dict[int, int]:
    """Label values present in ``labels`` that ``mapping`` does not list, with their voxel counts.

    Parameters
    ----------
    labels : ndarray of int (or of integral floats)
        Label map in the source numbering, any shape.
    mapping : dict of int to int
        Source value -> target value (``load_mapping``); background 0 is always mapped.

    Returns
    -------
    dict of int to int
        ``{value: voxel count}``, sorted by value; empty when every value is mapped (and for an
        empty array).

    Raises
    ------
    TypeError
        Non-integer label values.
    ValueError
        A bad mapping (negative values, 0 mapped to non-zero).
    """
    labels = _validate.label_map(labels, "labels")
    return _lookup(labels, _check_mapping(mapping))[1]


def apply_mapping(labels, mapping, *, drop_unmapped: bool = False) -> np.ndarray:
    """Renumber a label map: each voxel's source value -> ``mapping[value]``.

    Parameters
    ----------
    labels : ndarray of int (or of integral floats)
        Label map in the source numbering, any shape (``(X, Y, Z)`` for a volume). Not modified.
    mapping : dict of int to int
        Source value -> target value, e.g. from ``load_mapping`` (targets are llseg ids 1..70,
        or 0 for labels known to have no llseg region) or ``invert_mapping``.
    drop_unmapped : bool
        Set voxels whose value the mapping does not list to 0 instead of refusing the map
        (``unmapped_values`` tells which values and how many voxels).

    Returns
    -------
    ndarray
        Same shape; dtype the smallest unsigned type that holds every target (uint8 for llseg
        ids). Background 0 stays 0; an empty array gives an empty array.

    Raises
    ------
    TypeError
        Non-integer label values.
    ValueError
        Values the mapping does not list, unless ``drop_unmapped``: the message lists them
        (sorted, with voxel counts). A bad mapping (negative values, 0 mapped to non-zero).

    Notes
    -----
    One lookup table indexed by the label values (``np.take``) for values in ``0..2**20``;
    other values go through ``np.unique``. Known-unmapped labels (target 0) become 0 silently.
    """
    labels = _validate.label_map(labels, "labels")
    mapping = _check_mapping(mapping)
    out, unmapped = _lookup(labels, mapping)
    if unmapped and not drop_unmapped:
        raise ValueError(f"labels: {len(unmapped)} label value(s) not in the mapping: {_values_text(unmapped)}; "
                         f"list them in the mapping (muscle empty to drop them knowingly) or drop them "
                         f"(drop_unmapped / --drop-unmapped)")
    out[out < 0] = 0
    return out.astype(np.min_scalar_type(max(mapping.values())))


def invert_mapping(mapping) -> dict[int, int]:
    """The reverse mapping, llseg id -> source value, to export llseg labels in the source numbering.

    Known-unmapped source labels (target 0) are left out; 0 maps to 0.

    Raises
    ------
    ValueError
        Two source values share one target (a merged mapping cannot be inverted); the message
        names them.
    """
    mapping = _check_mapping(mapping)
    inverse: dict[int, int] = {0: 0}
    for source, target in mapping.items():
        if target == 0:
            continue
        if target in inverse:
            raise ValueError(f"mapping: source values {inverse[target]} and {source} both map to {target}; "
                             f"a merged mapping cannot be inverted")
        inverse[target] = source
    return dict(sorted(inverse.items()))


def import_labels(src_dir, out_dir, mapping, *, drop_unmapped: bool = False, progress: bool = True) -> list[dict]:
    """Renumber every label map of a folder into llseg's ids; all files or none are written.

    Parameters
    ----------
    src_dir : str or Path
        Folder of ``.nii`` / ``.nii.gz`` label maps in the source numbering (not searched recursively).
    out_dir : str or Path
        Folder to write them to, under the same file names (e.g. a cohort's ``data/labels``); it
        must not be ``src_dir`` or lie inside it.
    mapping : dict of int to int
        Source value -> llseg id (``load_mapping``).
    drop_unmapped : bool
        Set values the mapping does not list to 0 (reported per file) instead of refusing the file.
    progress : bool
        Show a progress bar (from ``_PROGRESS_MIN_FILES`` files on).

    Returns
    -------
    list of dict
        Per file, in name order: ``source``, ``output`` (Paths), ``regions`` (llseg ids present
        after mapping), ``dropped`` (``{value: voxel count}`` set to 0 as unmapped).

    Raises
    ------
    FileNotFoundError
        No such folder, or no NIfTI file in it.
    ValueError
        Any file unreadable, or holding values the mapping does not list (without
        ``drop_unmapped``); the first line of the message names every such file with its values.
        Nothing is written then (all-or-nothing: the files are staged and moved into place only
        when every one succeeded).

    Notes
    -----
    Each output keeps its source's grid, axis order and affine: the map is read as RAS+
    (``io.load_image``: label values up to 2**24 are exact in float32), renumbered, turned back
    to the stored orientation and written with the stored affine, as uint8.
    """
    from tqdm.auto import tqdm

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: no such folder")
    sources = sorted(p for p in src_dir.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz")))
    if not sources:
        raise FileNotFoundError(f"{src_dir}: no .nii or .nii.gz label maps")
    mapping = _check_mapping(mapping)
    outputs = guards.check_output_paths([out_dir / p.name for p in sources], [src_dir])
    results, failed = [], []
    with guards.atomic_files(outputs) as staged:
        bar = tqdm(list(zip(sources, outputs)), desc="import labels", unit="file",
                   disable=not progress or len(sources) < _PROGRESS_MIN_FILES)
        for source, output in bar:
            try:
                vol = io.load_image(source)
                if float(np.abs(vol.data).max(initial=0)) > 2 ** 24:
                    raise ValueError(f"{source}: label values beyond 2**24 are not supported")
                labels = _validate.label_map(vol.data, str(source))
            except (ValueError, TypeError) as exc:
                failed.append(str(exc).splitlines()[0])
                continue
            mapped, dropped = _lookup(labels, mapping)
            if dropped and not drop_unmapped:
                failed.append(f"{source.name}: values not in the mapping: {_values_text(dropped)}")
                continue
            mapped[mapped < 0] = 0
            mapped = mapped.astype(np.uint8)
            io.save_nifti(staged[output], io.to_original_orientation(mapped, vol.affine, vol.original_affine),
                          vol.original_affine, dtype=np.uint8)
            regions = [int(v) for v in np.flatnonzero(np.bincount(mapped.ravel(), minlength=1)) if v]
            results.append({"source": source, "output": output, "regions": regions, "dropped": dropped})
            if dropped:
                log.info("%s: dropped unmapped label values %s", source, _values_text(dropped))
        if failed:
            hint = (" (list unmapped values in the mapping, muscle empty to drop them knowingly, or pass "
                    "--drop-unmapped)") if any("not in the mapping" in f for f in failed) else ""
            raise ValueError(f"{src_dir}: {len(failed)} of {len(sources)} file(s) cannot be imported, nothing "
                             f"written: " + "; ".join(failed) + hint)
    return results
