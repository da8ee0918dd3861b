"""llseg: a reproducible study kit for cascaded 3-D U-Net segmentation of all 35 lower-limb
muscles (Ni et al., J. Med. Imag. 6(4) 044009, 2019).

Modules follow the paper and the data flow (raw cohort -> preprocessed -> stage-1 boxes ->
stage-2 probabilities -> postprocessed labels -> metrics -> figures and tables):

``anatomy``      the 35 muscles, label ids (right i, left i + 35), stage-1 groups, paper values
``phantom``      the digital lower-limb anatomy generator (label and tissue maps)
``mrsim``        the MR simulator (protocols, partial volume, B1 bias, Rician noise)
``cohort``       on-disk layout, phantom case generation, train/test split, cohort checks
``io``           NIfTI / JSON / CSV / model files at the edge, atomic writes
``preprocess``   N4 bias correction, resampling, field-of-view cropping, normalisation
``models``       3-D U-Net (plain / residual / dense blocks), FCN-8s, SegNet
``train``        augmentation, the training loop, padded prediction
``boxes``        bounding boxes, enlargement, the six test-time boxes
``stage1``       group localisation on downsampled body parts, box priors for missed muscles
``stage2``       per-muscle segmentation on enlarged crops, left/right mirrored
``cascade``      both stages and postprocessing on one image, with timings
``postprocess``  one component per region, closing, conflicts by probability, contours
``metrics``      Dice, mean surface distance, ASSD, HD95, volumes
``evaluation``   Table 1 against interobserver, volume / MSD summaries (Figure 6)
``comparison``   Figure 4: stage 1 alone vs stage 2 from different boxes and the six-box average
``ablation``     Figure 5: architecture variants of the adductor brevis network and their curves
``claims``       the paper's claims, each with this run's number and a computed verdict
``figures``      the paper's figures; ``viewer`` interactive slice viewer; ``export`` tables
``cli``          the ``llseg`` command

Import submodules explicitly; importing ``llseg`` itself stays cheap (no TensorFlow).
"""
import os

# oneDNN kernels make 3-D convolutions ~4x faster on CPU; must be set before TensorFlow loads
# (a notebook or script that imports llseg first gets it; the Makefile and CLI set it too).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
