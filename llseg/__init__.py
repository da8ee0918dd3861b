"""llseg: a reproducible study kit for cascaded 3-D U-Net segmentation of all 35 lower-limb
muscles (Ni et al., J. Med. Imag. 6(4) 044009, 2019).

Three layers. The method core (this folder) imports neither of the other two; the phantom knows
nothing of the method; the study, the CLI and the notebooks use all three.

The method, in the paper's order (data flow: cohort -> preprocessed -> stage-1 boxes ->
stage-2 probabilities -> labels -> metrics):

``anatomy``        the 35 muscles, label ids (right i, left i + 35), stage-1 groups, paper values
``cohort``         on-disk cohort layout, train/test split, cohort checks
``label_mapping``  other tools' label numberings (MuscleMap) onto llseg's ids
``coverage``       which stretch of the leg a scan covers: body parts and muscles in view
``io``             NIfTI / JSON / CSV / model files, atomic writes
``guards``         checks before heavy work: output paths, all-or-nothing outputs, image content, memory
``preprocess``     2.1: N4 bias correction, resampling, field-of-view cropping, geometry restore
``models``         2.2, 3.3: 3-D U-Net (plain / residual / dense blocks), FCN-8s, SegNet
``custom_layers``  per-sample batch normalisation, max-unpooling (Keras layers)
``augment``        2.2.3: rotation, shear and left/right flips of training samples
``train``          2.2: the training loop, losses, padded prediction
``prefetch``       training samples drawn in a background thread, ahead of the step
``boxes``          2.2.2: bounding boxes, enlargement, the six test-time boxes
``stage1``         2.2.1: group localisation on downsampled body parts
``box_priors``     2.2.1: boxes of muscles stage 1 misses, from their neighbours
``stage2``         2.2.2: per-muscle segmentation on enlarged crops, left/right mirrored
``postprocess``    2.3: one component per region, closing, conflicts by probability
``contours``       2.3: contour simplification (Prasad's RDP bound) and export
``cascade``        2.2.3: both stages and postprocessing on one image, with timings
``metrics``        2.3: Dice, mean surface distance, ASSD, HD95, volumes (engine: ``_surface``)
``export``         volume tables, colours, 3D Slicer / ITK-SNAP colour tables
``pipeline``       the method's file-level steps, one function per ``llseg`` command

The edge: ``cli`` (the ``llseg`` command), ``params`` (params.yaml, validated once),
``repro`` (DVC wiring: parallel training stages, code dependencies of each stage), ``runinfo``
(the machine and library versions recorded with each result).

``llseg.phantom``  the digital lower-limb phantom and MR simulator that make the default cohort
``llseg.study``    evaluation (Table 1, Fig. 6), comparison (Fig. 4), ablation (Fig. 5), claims,
                   figures, viewer, the end-of-study summary

Import submodules explicitly; importing ``llseg`` itself stays cheap (no TensorFlow).
"""
import os

# oneDNN kernels make 3-D convolutions ~4x faster on CPU; must be set before TensorFlow loads
# (a notebook or script that imports llseg first gets it; the Makefile and CLI set it too).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
