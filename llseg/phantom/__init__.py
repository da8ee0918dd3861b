"""The digital phantom: the kit's default data, generated since the paper's athlete scans are private.

It makes subjects, renders their lower-limb anatomy as a label map and a tissue map, "acquires"
them as fat-suppressed PD images and writes the cohort in the layout the method reads
(``llseg.cohort``). It knows nothing of the method: it uses only ``llseg.anatomy`` (the 70
regions), ``llseg._validate`` and ``llseg.io``. Everything is deterministic from the seeds.

Modules
-------
``subject``   subject parameters, their seeded sampler, body axis and field of view
``tables``    reference anatomy: tissue classes, landmarks, muscle / fat-pad / vessel tables
``solids``    geometric solids of the tissue map (ellipsoids, capsules, swept shapes)
``skeleton``  bones, joints, organs and vessels of a subject, built from the solids
``cells``     muscles as tubes (cells) and the cost by which they share the compartment
``packing``   limb outline, calibration of the cell areas, rendering of one slice with fat
``model``     the subject model and ``render_anatomy`` (label and tissue maps on any grid)
``mrsim``     the MR simulator: protocols, partial volume, B1 bias, Rician noise
``cohort``    one case (``make_case``) and the whole cohort on disk (``write_cohort``)
"""
from __future__ import annotations

from . import mrsim
from .cohort import Case, make_case, protocol_mix, write_cohort
from .model import render_anatomy
from .subject import Subject, field_of_view, sample_subject, span_mm, z_of_fraction
from .tables import LANDMARKS, TISSUE

__all__ = [
    "TISSUE",
    "LANDMARKS",
    "Subject",
    "sample_subject",
    "span_mm",
    "z_of_fraction",
    "field_of_view",
    "render_anatomy",
    "Case",
    "make_case",
    "protocol_mix",
    "write_cohort",
    "mrsim",
]
