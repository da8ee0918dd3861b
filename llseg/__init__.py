"""llseg: a reproducible study kit for cascaded 3-D U-Net segmentation of all 35 lower-limb
muscles (Ni et al., J. Med. Imag. 6(4) 044009, 2019).

Modules follow the paper: ``anatomy`` (muscle table), ``phantom`` (digital anatomy),
``mrsim`` (MR simulator), ``io`` (NIfTI/JSON at the edge), ``preprocess`` (N4, cropping,
normalisation), ``models``, ``train``, ``stage1``, ``stage2``, ``postprocess``, ``metrics``,
``figures``, ``cli``. Import submodules explicitly; importing ``llseg`` stays cheap (no
TensorFlow).
"""
__version__ = "0.1.0"
