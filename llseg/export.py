"""Exports of ``llseg segment`` and ``llseg predict``: muscle volumes and label colour tables.

Everything here returns Python objects or strings; writing them to disk is ``llseg.io``'s job
(``io.write_csv`` for :func:`volume_table`, ``io.write_text`` for the colour tables). Label
ids, names and colours come from ``llseg.anatomy`` and :func:`muscle_colors` (here) so that
the exported tables match the kit's figures and viewer exactly: right muscle ``i`` has label
``i`` and left muscle ``i`` has label ``i + 35``, and both legs share one colour.

Volume maps are ``(X, Y, Z)`` integer label maps (RAS+, as loaded by ``llseg.io``) with their
voxel spacing in mm.
"""
from __future__ import annotations

import logging
import re
import warnings

import numpy as np

from . import _validate, anatomy

__all__ = [
    "muscle_colors",
    "region_volumes_ml",
    "volume_table",
    "VOLUME_COLUMNS",
    "SEGMENTED",
    "NO_VOXEL",
    "slicer_color_table",
    "itksnap_label_descriptions",
    "parse_slicer_color_table",
    "parse_itksnap_label_descriptions",
]

log = logging.getLogger(__name__)

_MM3_PER_ML = 1000.0


def muscle_colors() -> dict[str, tuple[float, float, float]]:
    """One fixed RGB colour per muscle key (both legs share it), Table-1 order."""
    import seaborn as sns

    palette = sns.color_palette("husl", anatomy.N_MUSCLES)
    # Interleave the hue circle so that muscles adjacent in Table 1 get distant hues.
    order = [(i * 13) % anatomy.N_MUSCLES for i in range(anatomy.N_MUSCLES)]
    return {m.key: tuple(palette[order[i]]) for i, m in enumerate(anatomy.MUSCLES)}


# --------------------------------------------------------------------------- volumes


def region_volumes_ml(labels, spacing_mm) -> np.ndarray:
    """Volume of every label id 0..70 of one label map, in mL.

    Parameters
    ----------
    labels : (X, Y, Z) ndarray of int
        Label map with ids 0 (background) and 1..70 (``llseg.anatomy``).
    spacing_mm : tuple of 3 float
        Voxel spacing in mm, in axis order.

    Returns
    -------
    (71,) ndarray of float
        ``volumes[label]`` = voxel count of ``label`` x voxel volume (mm^3) / 1000. Index 0 is
        the background.

    Raises
    ------
    TypeError
        ``labels`` does not hold integers.
    ValueError
        Not 3-D, bad spacing, or ids outside 0..70 (the unknown ids are listed).

    Notes
    -----
    One ``np.bincount`` pass over the map (no per-label masks), so a whole-leg volume of
    ~10^8 voxels takes a fraction of a second.
    """
    labels = _validate.label_map(_validate.volume(labels, "labels"), "labels")
    voxel_ml = float(np.prod(_validate.spacing(spacing_mm, 3))) / _MM3_PER_ML
    counts = np.bincount(_validate.label_ids(labels, "labels").ravel(), minlength=anatomy.N_REGIONS + 1)
    return counts.astype(float) * voxel_ml


VOLUME_COLUMNS = ("subject", "muscle", "name", "right_ml", "left_ml", "asymmetry_pct", "right_status", "left_status")

#: ``right_status`` / ``left_status`` of a region with voxels in the label map, and of one
#: without voxels and without a reason (the method looked and found nothing: volume 0).
SEGMENTED, NO_VOXEL = "segmented", "no voxel"
"""Columns of :func:`volume_table`: one row per subject and muscle."""


def volume_table(label_maps: dict, decimals: int = 2, *, absent: dict | None = None) -> list[dict]:
    """Muscle volumes (mL) and left-right asymmetry (%), one row per subject and muscle.

    Parameters
    ----------
    label_maps : dict of str -> (ndarray, tuple of 3 float)
        Subject id -> ``(labels, spacing_mm)``: an ``(X, Y, Z)`` integer label map (ids 0..70)
        and its voxel spacing in mm. Subjects may have different grids and spacings.
    decimals : int
        Decimals kept for the volumes and the asymmetry (voxel counts times a voxel volume
        carry no more precision than that).
    absent : dict of str -> dict of int -> str, optional
        Subject id -> {region label: why it is absent} (``pipeline.region_status``, e.g. "not
        in field of view"): those regions get an empty volume and the reason as their status.

    Returns
    -------
    list of dict
        Keys :data:`VOLUME_COLUMNS`; subjects in the order of ``label_maps``, muscles in Table-1
        order. ``asymmetry_pct`` is ``None`` (an empty CSV cell) when the muscle is absent on
        both legs, or when one side is listed in ``absent`` (its volume is unknown, not zero).
        ``right_status`` / ``left_status``: :data:`SEGMENTED`, the reason from ``absent``, or
        :data:`NO_VOXEL` (volume 0).

    Raises
    ------
    TypeError, ValueError
        As :func:`region_volumes_ml`, with the subject id in the message.

    Warns
    -----
    UserWarning
        Once per subject that lacks some muscle on both legs, naming the subject and the muscles.

    Notes
    -----
    Asymmetry = 100 x (right - left) / ((right + left) / 2): positive when the right muscle is
    bigger, in [-200, 200]; +-200 when one side is empty.
    """
    if not isinstance(label_maps, dict):
        raise TypeError(f"label_maps must be a dict subject -> (labels, spacing_mm), got {type(label_maps).__name__}")
    rows = []
    for subject, item in label_maps.items():
        try:
            labels, spacing_mm = item
        except (TypeError, ValueError):
            raise ValueError(f"label_maps[{subject!r}]: expected a (labels, spacing_mm) pair, got "
                             f"{type(item).__name__}") from None
        try:
            vol = region_volumes_ml(labels, spacing_mm)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"subject {subject!r}: {exc}") from None
        reasons = (absent or {}).get(subject, {})
        missing = []
        for m in anatomy.MUSCLES:
            right, left = float(vol[m.right_label]), float(vol[m.left_label])
            mean = (right + left) / 2.0
            asym = round(100.0 * (right - left) / mean, decimals) if mean > 0 else None
            status = {}
            for side, lab, ml in (("right", m.right_label, right), ("left", m.left_label, left)):
                status[side] = SEGMENTED if ml > 0 else reasons.get(lab, NO_VOXEL)
            if all(v == NO_VOXEL for v in status.values()):
                missing.append(m.key)
            known = [status[side] in (SEGMENTED, NO_VOXEL) for side in ("right", "left")]
            rows.append({"subject": subject, "muscle": m.key, "name": m.name,
                         "right_ml": round(right, decimals) if known[0] else None,
                         "left_ml": round(left, decimals) if known[1] else None,
                         "asymmetry_pct": asym if all(known) else None,
                         "right_status": status["right"], "left_status": status["left"]})
        if missing:
            warnings.warn(f"subject {subject!r}: {len(missing)} muscle(s) absent on both legs: "
                          f"{', '.join(missing)}", stacklevel=2)
    return rows


# --------------------------------------------------------------------------- colour tables


def _region_rgb255() -> dict[int, tuple[int, int, int]]:
    """Label id 1..70 -> the figures' muscle colour as 0-255 ints (both legs share it)."""
    by_key = muscle_colors()
    return {label: tuple(int(round(255 * c)) for c in by_key[key])
            for label, (key, _side) in sorted(anatomy.REGIONS.items())}


def _slicer_name(label: int) -> str:
    key, side = anatomy.REGIONS[label]
    return f"{key}_{side}"


def slicer_color_table(*, title: str = "llseg lower-limb muscles") -> str:
    """3D Slicer colour table (``.ctbl``) for the 70 muscle regions plus background.

    Parameters
    ----------
    title : str
        Put after ``# Color table file`` on the first header line (Slicer writes the file path
        there; readers ignore it).

    Returns
    -------
    str
        The file's text: two header comments (``# Color table file ...``, ``# 71 values``),
        then one line ``id name R G B A`` per label 0..70 with 0-255 integers: ``0 background
        0 0 0 0`` and e.g. ``1 adductor_brevis_right R G B 255``, colours from
        ``muscle_colors()``.

    Notes
    -----
    Format of Slicer's "discrete scale color lookup table" text file: header lines start
    with ``#``, the first being ``# Color table file <name>``; data lines are
    space-separated ``index name red green blue opacity`` with names free of spaces (the
    format asks for underscores instead). In Slicer, load the ``.ctbl`` first (*File > Add
    Data*), then add the label map with *Description* = ``Segmentation`` and this table as
    *Color node* in the options (segment names and colours then come from the table), or as a
    ``LabelMap`` volume with this table as its colour table. ``llseg segment`` writes it as
    ``<stem>.ctbl`` beside ``<stem>.nii.gz``; ``llseg predict`` writes ``llseg_labels.ctbl``
    once per output folder.

    References
    ----------
    3D Slicer documentation, "Colors: Color table file format (.txt, .ctbl)",
    https://slicer.readthedocs.io/en/latest/developer_guide/modules/colors.html ; writer:
    ``vtkMRMLColorTableStorageNode::WriteCtblFile`` in Slicer's source. Loading a label map
    with a colour table: "Segmentations: Import an existing segmentation from volume file",
    https://slicer.readthedocs.io/en/latest/user_guide/modules/segmentations.html
    """
    rgb = _region_rgb255()
    lines = [f"# Color table file {title}", f"# {anatomy.N_REGIONS + 1} values", "0 background 0 0 0 0"]
    lines += [f"{label} {_slicer_name(label)} {r} {g} {b} 255" for label, (r, g, b) in rgb.items()]
    return "\n".join(lines) + "\n"


_ITKSNAP_HEADER = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    IDX:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""  # ITK-SNAP's header (its writer also leaves trailing blanks on some lines)


def _itksnap_line(idx: int, rgb, alpha: float, vis: int, mesh: int, label: str) -> str:
    # Column widths as ColorLabelTable::SaveToFile: setw(3) fields, setw(7) alpha (precision 2).
    return (f"  {idx:>3}   {rgb[0]:>3}  {rgb[1]:>3}  {rgb[2]:>3}  {alpha:>7.2g}  {vis:>1}  {mesh:>1}"
            f'    "{label}"')


def itksnap_label_descriptions() -> str:
    """ITK-SNAP label description file for the 70 muscle regions plus the clear label.

    Returns
    -------
    str
        The file's text: ITK-SNAP's header comment block, then ``0 0 0 0 0 0 0 "Clear Label"``
        and one line per label 1..70, e.g.
        ``    1   R   G   B        1  1  1    "Adductor brevis (right)"`` (names from
        ``anatomy.region_name``, colours from ``muscle_colors()``, opaque, visible
        in 2-D and as mesh).

    Notes
    -----
    Format written by ITK-SNAP's *Label Editor > Actions > Export* (``ColorLabelTable::
    SaveToFile``): ``#`` comment lines, then per label ``IDX R G B A VIS MSH "LABEL"`` with
    R, G, B in 0..255, A (opacity) in 0..1, VIS and MSH 0 or 1, the description in double
    quotes. Load it with *Segmentation > Import Label Descriptions...* after *File > Open Main
    Image...* and *Segmentation > Open Segmentation...*, or on the command line with
    ``itksnap -g scan.nii.gz -s labels.nii.gz -l labels_itksnap.txt``. ``llseg segment`` writes
    it as ``<stem>_itksnap.txt``; ``llseg predict`` writes ``llseg_itksnap.txt`` once per
    output folder.

    References
    ----------
    ITK-SNAP source, ``Logic/Common/ColorLabelTable.cxx`` (``SaveToFile``/``LoadFromFile``),
    https://github.com/pyushkevich/itksnap
    """
    rgb = _region_rgb255()
    lines = [_itksnap_line(0, (0, 0, 0), 0, 0, 0, "Clear Label")]
    lines += [_itksnap_line(label, c, 1, 1, 1, anatomy.region_name(label)) for label, c in rgb.items()]
    return _ITKSNAP_HEADER + "\n".join(lines) + "\n"


def _data_lines(text: str):
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _check_byte(value: int, what: str, number: int) -> int:
    if not 0 <= value <= 255:
        raise ValueError(f"line {number}: {what} must be in 0..255, got {value}")
    return value


def parse_slicer_color_table(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """Read a 3D Slicer ``.ctbl`` colour table (the format of :func:`slicer_color_table`).

    Parameters
    ----------
    text : str
        File contents.

    Returns
    -------
    dict of int -> (str, (int, int, int, int))
        Label id -> (name, (R, G, B, A)) with 0-255 components.

    Raises
    ------
    ValueError
        A data line with fewer than six fields, non-integer values, components outside
        0..255 or a repeated id (the line number is quoted).
    """
    out: dict[int, tuple[str, tuple[int, int, int, int]]] = {}
    for number, line in _data_lines(text):
        fields = line.split()
        if len(fields) < 6:
            raise ValueError(f"line {number}: expected 'id name R G B A', got {line!r}")
        try:
            idx = int(fields[0])
            rgba = tuple(_check_byte(int(v), "colour component", number) for v in fields[2:6])
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc} in {line!r}") from None
        if idx in out:
            raise ValueError(f"line {number}: label id {idx} listed twice")
        out[idx] = (fields[1], rgba)
    return out


_ITKSNAP_LINE = re.compile(r'^(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s+(\d+)\s+(\d+)\s+"(.*)"$')


def parse_itksnap_label_descriptions(text: str) -> dict[int, tuple[str, tuple[int, int, int], float]]:
    """Read an ITK-SNAP label description file (the format of :func:`itksnap_label_descriptions`).

    Parameters
    ----------
    text : str
        File contents.

    Returns
    -------
    dict of int -> (str, (int, int, int), float)
        Label id -> (description, (R, G, B) in 0..255, opacity in 0..1). The VIS and MSH flags
        are checked but not returned.

    Raises
    ------
    ValueError
        A data line not of the form ``IDX R G B A VIS MSH "LABEL"``, components out of range
        or a repeated id (the line number is quoted).
    """
    out: dict[int, tuple[str, tuple[int, int, int], float]] = {}
    for number, line in _data_lines(text):
        match = _ITKSNAP_LINE.match(line)
        if match is None:
            raise ValueError(f'line {number}: expected \'IDX R G B A VIS MSH "LABEL"\', got {line!r}')
        idx = int(match[1])
        rgb = tuple(_check_byte(int(match[i]), "colour component", number) for i in (2, 3, 4))
        try:
            alpha = float(match[5])
        except ValueError:
            raise ValueError(f"line {number}: opacity {match[5]!r} is not a number") from None
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"line {number}: opacity must be in 0..1, got {alpha}")
        if int(match[6]) not in (0, 1) or int(match[7]) not in (0, 1):
            raise ValueError(f"line {number}: VIS and MSH must be 0 or 1, got {match[6]} {match[7]}")
        if idx in out:
            raise ValueError(f"line {number}: label id {idx} listed twice")
        out[idx] = (match[8], rgb, alpha)
    return out
