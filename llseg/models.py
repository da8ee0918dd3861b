"""3-D segmentation networks of the paper: plain / residual / dense U-Net, FCN-8s and SegNet.

All models are Keras 3 functional models built from ``keras.layers`` only, so they run on
any Keras backend (TensorFlow by default). Tensors are channels-last ``(N, X, Y, Z, C)``
with the volume axes in RAS+ order; the output is ``(N, X, Y, Z, n_classes)`` softmax
probabilities (float32).

Conventions shared by every builder (paper sections 2.2.1-2.2.3):

* a *conv unit* is a 3x3x3 convolution (padding "same", no bias because BatchNorm follows,
  He-normal initialisation, a truncated Gaussian: "weights were initialized randomly from
  Gaussian distribution") + batch normalisation + ReLU. The batch normalisation is
  ``llseg.custom_layers.SampleBatchNormalization``: with the paper's batch size 1, training
  normalises each crop by its own mean and variance, and this layer keeps doing so at
  inference instead of switching to moving averages. Training is Keras' BatchNormalization
  unchanged (momentum 0.9, so the moving statistics it still keeps follow the weights);
* ``levels`` counts *resolution levels*, so a network has ``levels - 1`` 2x2x2 max-poolings
  and every spatial input size must be divisible by ``2 ** (levels - 1)``
  (:func:`model_divisor`). A spatial size may be ``None`` for a fully convolutional model
  that accepts any (divisible) size;
* the custom layers (``llseg.custom_layers``) are registered with Keras by name, so a saved
  model loads once this module has been imported (``llseg.io.load_model`` does it).
"""
from __future__ import annotations

import logging
import numbers

import keras
from keras import layers

from .custom_layers import MaxUnpooling3D, SampleBatchNormalization

__all__ = [
    "ARCHS",
    "BLOCKS",
    "unet_3d",
    "fcn8s_3d",
    "segnet_3d",
    "build_model",
    "model_divisor",
]

logger = logging.getLogger(__name__)

#: Architectures :func:`build_model` knows (paper Fig. 5d).
ARCHS = ("unet", "fcn8s", "segnet")
#: Convolution blocks of the U-Net (paper Fig. 2 and Fig. 5c).
BLOCKS = ("plain", "residual", "dense")

_BN_MOMENTUM = 0.9
_INIT = "he_normal"


# --------------------------------------------------------------------------- checks


def _check_input_shape(input_shape, levels: int, min_levels: int = 1) -> tuple:
    """Validate ``(X, Y, Z, C)`` and the divisibility of X, Y, Z by ``2 ** (levels - 1)``."""
    if not _is_int(levels) or levels < min_levels:
        raise ValueError(f"levels must be an int >= {min_levels}, got {levels!r}")
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be (X, Y, Z, C), got {input_shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (X, Y, Z, C) channels-last, got {input_shape!r}")
    if shape[3] is None or shape[3] < 1:
        raise ValueError(f"input_shape: the channel count must be a positive int, got {input_shape!r}")
    div = 2 ** (levels - 1)
    bad = [s for s in shape[:3] if s is not None and (s < 1 or s % div)]
    if bad:
        raise ValueError(f"input_shape {shape}: spatial sizes (X, Y, Z) must be positive multiples of "
                         f"{div} (= 2**(levels-1) with levels={levels}); {bad} are not")
    return shape


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_common(n_classes, root_filters) -> None:
    if not _is_int(n_classes) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2 (background + at least one label), got {n_classes!r}")
    if not _is_int(root_filters) or root_filters < 1:
        raise ValueError(f"root_filters must be a positive int, got {root_filters!r}")


# --------------------------------------------------------------------------- blocks


def _conv_unit(x, filters: int, name: str, kernel: int = 3):
    """Conv3D (no bias) + BN + ReLU."""
    x = layers.Conv3D(filters, kernel, padding="same", use_bias=False, kernel_initializer=_INIT,
                      name=f"{name}_conv")(x)
    x = SampleBatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _plain_block(x, filters: int, name: str):
    """Two conv units (paper Fig. 2, left)."""
    x = _conv_unit(x, filters, f"{name}_1")
    return _conv_unit(x, filters, f"{name}_2")


def _residual_block(x, filters: int, name: str):
    """Two conv units with a shortcut added before the second ReLU (paper Fig. 2, top right).

    The shortcut is the identity when the channel count already equals ``filters``, else a
    1x1x1 projection conv + BN (He et al. 2016, "option B").
    """
    y = _conv_unit(x, filters, f"{name}_1")
    y = layers.Conv3D(filters, 3, padding="same", use_bias=False, kernel_initializer=_INIT,
                      name=f"{name}_2_conv")(y)
    y = SampleBatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_2_bn")(y)
    if x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = layers.Conv3D(filters, 1, use_bias=False, kernel_initializer=_INIT,
                                 name=f"{name}_proj_conv")(x)
        shortcut = SampleBatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu")(y)


def _dense_growths(filters: int, n_layers: int = 2) -> list[int]:
    """Per-layer growth so that the new feature maps sum to ``filters``."""
    base, extra = divmod(filters, n_layers)
    return [base + (1 if i < extra else 0) for i in range(n_layers)]


def _dense_block(x, filters: int, name: str):
    """Dense block with the plain block's depth (2 conv units) and width (``filters`` out).

    Each layer sees the concatenation of the block input and all previous layers' outputs
    (Huang et al. 2017). The block returns the concatenation of the new feature maps only
    (as in the Tiramisu's up path, Jegou et al. 2017), with growth ``filters // 2`` per
    layer, so the channel count passed on equals the plain block's ("matched depth and
    width", paper section 2.2.2 and Fig. 2).
    """
    features = [x]
    new = []
    for i, growth in enumerate(_dense_growths(filters)):
        inp = features[0] if len(features) == 1 else layers.Concatenate(name=f"{name}_{i + 1}_cat")(features)
        y = _conv_unit(inp, growth, f"{name}_{i + 1}")
        features.append(y)
        new.append(y)
    return layers.Concatenate(name=f"{name}_out")(new)


_BLOCK_FNS = {"plain": _plain_block, "residual": _residual_block, "dense": _dense_block}


# --------------------------------------------------------------------------- models


def unet_3d(input_shape, n_classes: int, *, levels: int = 3, root_filters: int = 16,
            block: str = "plain", name: str | None = None) -> keras.Model:
    """Build the paper's 3-D U-Net (plain, residual or dense blocks).

    Parameters
    ----------
    input_shape : tuple of 4 ints
        ``(X, Y, Z, C)``, channels-last, volume axes in RAS+ order. X, Y and Z must be
        divisible by ``2 ** (levels - 1)``; any of them may be ``None`` (any divisible size).
    n_classes : int
        Number of output classes including background (>= 2).
    levels : int, optional
        Resolution levels of the encoder (= of the decoder, counting the bottom level).
        The paper uses 4 in stage 1 and 3 in stage 2.
    root_filters : int, optional
        Filters of the first level; they double at each level down (the paper's stage-2
        network uses 96).
    block : {"plain", "residual", "dense"}, optional
        Convolution block at every level (paper Fig. 2).
    name : str, optional
        Model name; default ``f"unet3d_{block}_l{levels}_f{root_filters}"``.

    Returns
    -------
    keras.Model
        Input ``(N, X, Y, Z, C)`` float; output ``(N, X, Y, Z, n_classes)`` float32 softmax.

    Raises
    ------
    ValueError
        Bad shape (non-divisible spatial size), ``levels``, ``n_classes``, ``root_filters``
        or ``block``.

    Notes
    -----
    Encoder level ``i`` (0 = full resolution) applies the block with
    ``root_filters * 2**i`` filters and, except at the bottom, a 2x2x2 max-pooling.
    Decoder level ``i`` applies a 2x2x2 transposed convolution with stride 2 (with bias,
    ``root_filters * 2**i`` filters), concatenates the encoder output of level ``i``
    (skip connection) and applies the block again. A 1x1x1 convolution (with bias) and a
    softmax over the class axis end the network (paper section 2.2.1).

    References
    ----------
    Ni et al., J. Med. Imag. 6(4) 044009 (2019), sections 2.2.1-2.2.2, Fig. 2.
    Cicek et al., "3D U-Net", MICCAI 2016.
    """
    if block not in _BLOCK_FNS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    _check_common(n_classes, root_filters)
    shape = _check_input_shape(input_shape, levels)
    block_fn = _BLOCK_FNS[block]

    inputs = keras.Input(shape=shape, name="image")                     # (N, X, Y, Z, C)
    x = inputs
    skips = []
    for i in range(levels):
        x = block_fn(x, root_filters * 2**i, f"enc{i}")                 # (N, X/2^i, ..., f*2^i)
        if i < levels - 1:
            skips.append(x)
            x = layers.MaxPooling3D(2, name=f"enc{i}_pool")(x)
    for i in reversed(range(levels - 1)):
        x = layers.Conv3DTranspose(root_filters * 2**i, 2, strides=2, padding="same",
                                   kernel_initializer=_INIT, name=f"dec{i}_up")(x)
        x = layers.Concatenate(name=f"dec{i}_cat")([x, skips[i]])      # (N, X/2^i, ..., 2*f*2^i)
        x = block_fn(x, root_filters * 2**i, f"dec{i}")
    x = layers.Conv3D(n_classes, 1, name="logits")(x)                  # (N, X, Y, Z, n_classes)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name=name or f"unet3d_{block}_l{levels}_f{root_filters}")


def _vgg_encoder(inputs, levels: int, root_filters: int) -> list:
    """Encoder of plain blocks; returns each level's output before pooling."""
    feats = []
    x = inputs
    for i in range(levels):
        x = _plain_block(x, root_filters * 2**i, f"enc{i}")
        feats.append(x)
        if i < levels - 1:
            x = layers.MaxPooling3D(2, name=f"enc{i}_pool")(x)
    return feats


def fcn8s_3d(input_shape, n_classes: int, *, root_filters: int = 16, levels: int = 5,
             name: str | None = None) -> keras.Model:
    """Build a 3-D analogue of FCN-8s (Long et al. 2015) for the paper's ablation.

    Parameters
    ----------
    input_shape : tuple of 4 ints
        ``(X, Y, Z, C)`` channels-last; X, Y, Z divisible by ``2 ** (levels - 1)`` (or None).
    n_classes : int
        Number of classes including background.
    root_filters : int, optional
        Filters of the first encoder level, doubling per level.
    levels : int, optional
        Resolution levels of the encoder (>= 3; the paper's comparison uses five).
    name : str, optional
        Model name; default ``f"fcn8s3d_l{levels}_f{root_filters}"``.

    Returns
    -------
    keras.Model
        ``(N, X, Y, Z, C)`` -> ``(N, X, Y, Z, n_classes)`` float32 softmax.

    Raises
    ------
    ValueError
        As :func:`unet_3d`; also ``levels < 3``.

    Notes
    -----
    The encoder is the plain U-Net encoder (two conv units per level, filters doubling,
    ``levels - 1`` poolings), so the comparison with the U-Net changes only the decoder.
    The FCN-8s decoder fuses *class-score predictions* from the three coarsest scales: a
    1x1x1 score layer on the bottom level is upsampled x2 by a learnable transposed
    convolution (kernel 4 = 2 x stride, as in FCN), added to a score layer on the level
    above, upsampled x2 again, added to the score of the next level, and finally upsampled
    by ``2 ** (levels - 3)`` (kernel 2 x stride) to full resolution before the softmax.

    Simplification: 2-D FCN-8s on VGG16 fuses strides 32, 16 and 8 (the fully connected
    layers sit after a fifth pooling). Counting five *resolution levels* as the paper does
    puts the coarsest scale at 1/16, so with ``levels=5`` the fused scales are 1/16, 1/8
    and 1/4 and the final upsampling is x4; the bottom level's two conv units play the
    role of fc6/fc7. BatchNorm is used as in the U-Net for a like-for-like comparison.
    """
    _check_common(n_classes, root_filters)
    shape = _check_input_shape(input_shape, levels, min_levels=3)
    inputs = keras.Input(shape=shape, name="image")
    feats = _vgg_encoder(inputs, levels, root_filters)
    b = levels - 1                                                      # bottom level index
    score = layers.Conv3D(n_classes, 1, name=f"score{b}")(feats[b])     # (N, X/2^b, ..., n_classes)
    for i in (b - 1, b - 2):
        up = layers.Conv3DTranspose(n_classes, 4, strides=2, padding="same", kernel_initializer=_INIT,
                                    name=f"upscore{i}")(score)
        skip = layers.Conv3D(n_classes, 1, name=f"score{i}")(feats[i])
        score = layers.Add(name=f"fuse{i}")([up, skip])                 # (N, X/2^i, ..., n_classes)
    factor = 2 ** (b - 2)
    if factor > 1:
        score = layers.Conv3DTranspose(n_classes, 2 * factor, strides=factor, padding="same",
                                       kernel_initializer=_INIT, name="upscore_final")(score)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(score)
    return keras.Model(inputs, outputs, name=name or f"fcn8s3d_l{levels}_f{root_filters}")


def segnet_3d(input_shape, n_classes: int, *, root_filters: int = 16, levels: int = 5,
              name: str | None = None) -> keras.Model:
    """Build a 3-D analogue of SegNet (Badrinarayanan et al. 2017) for the paper's ablation.

    Parameters
    ----------
    input_shape : tuple of 4 ints
        ``(X, Y, Z, C)`` channels-last; X, Y, Z divisible by ``2 ** (levels - 1)`` (or None).
    n_classes : int
        Number of classes including background.
    root_filters : int, optional
        Filters of the first encoder level, doubling per level.
    levels : int, optional
        Resolution levels (>= 1; the paper's comparison uses five).
    name : str, optional
        Model name; default ``f"segnet3d_l{levels}_f{root_filters}"``.

    Returns
    -------
    keras.Model
        ``(N, X, Y, Z, C)`` -> ``(N, X, Y, Z, n_classes)`` float32 softmax.

    Raises
    ------
    ValueError
        As :func:`unet_3d`.

    Notes
    -----
    With ``f_i = root_filters * 2**i``: encoder level ``i`` (above the bottom) is the plain
    block with ``f_i`` filters, giving ``E_i``, then a 2x2x2 max-pooling. Every remaining
    block (the bottom level and each decoder level) is two conv units, ``f_i`` then
    ``f_{i-1}`` filters (``f_0`` at level 0): as in SegNet, where each decoder block's last
    convolution reduces the channels to the next level up's, so that they match ``E_{i-1}``.
    Going up to level ``i``, the decoder unpools with the encoder's max-pooling switches
    (``custom_layers.MaxUnpooling3D`` on ``[decoder, E_i]``: each value goes back to where the max
    of its 2x2x2 window was, zeros elsewhere), then applies that level's block. There is
    *no* skip concatenation (the defining difference from the U-Net: only the switches
    pass from encoder to decoder). A 1x1x1 convolution and softmax end the network.

    Simplification: the original's variable conv count per level (2-2-3-3-3) is replaced by
    two per level, and its encoder and decoder blocks at the coarsest scale (around the
    fifth pooling) by the single bottom block. Ties in a pooling window are unpooled to
    every tied position (see ``custom_layers.MaxUnpooling3D``).
    """
    _check_common(n_classes, root_filters)
    shape = _check_input_shape(input_shape, levels)

    def out_filters(i):                                                 # channels of E_{i-1}
        return root_filters * 2 ** max(i - 1, 0)

    inputs = keras.Input(shape=shape, name="image")                     # (N, X, Y, Z, C)
    x = inputs
    feats = []
    for i in range(levels - 1):
        x = _plain_block(x, root_filters * 2**i, f"enc{i}")             # E_i: (N, X/2^i, ..., f_i)
        feats.append(x)
        x = layers.MaxPooling3D(2, name=f"enc{i}_pool")(x)
    b = levels - 1
    x = _conv_unit(x, root_filters * 2**b, f"enc{b}_1")
    x = _conv_unit(x, out_filters(b), f"enc{b}_2")                      # (N, X/2^b, ..., f_{b-1})
    for i in reversed(range(levels - 1)):
        x = MaxUnpooling3D(name=f"dec{i}_unpool")([x, feats[i]])        # (N, X/2^i, ..., f_i)
        x = _conv_unit(x, root_filters * 2**i, f"dec{i}_1")
        x = _conv_unit(x, out_filters(i), f"dec{i}_2")                  # (N, X/2^i, ..., f_{i-1})
    x = layers.Conv3D(n_classes, 1, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name=name or f"segnet3d_l{levels}_f{root_filters}")


def build_model(arch: str, input_shape, n_classes: int, *, levels: int = 3, root_filters: int = 16,
                block: str = "plain") -> keras.Model:
    """Build a network by name (the single entry point stage 1 and stage 2 use).

    Parameters
    ----------
    arch : {"unet", "fcn8s", "segnet"}
        Architecture.
    input_shape : tuple of 4 ints
        ``(X, Y, Z, C)``, channels-last.
    n_classes : int
        Number of classes including background.
    levels, root_filters : int, optional
        Resolution levels and first-level filters.
    block : {"plain", "residual", "dense"}, optional
        U-Net block; must be "plain" for fcn8s and segnet.

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        Unknown ``arch``, a non-plain ``block`` with fcn8s/segnet, or any error of the builder.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if arch == "unet":
        model = unet_3d(input_shape, n_classes, levels=levels, root_filters=root_filters, block=block)
    elif block != "plain":
        raise ValueError(f"block={block!r} is only available for arch='unet'; {arch} uses plain blocks")
    else:
        builder = fcn8s_3d if arch == "fcn8s" else segnet_3d
        model = builder(input_shape, n_classes, root_filters=root_filters, levels=levels)
    logger.info("built %s: input %s, %d classes, %d parameters", model.name, tuple(input_shape), n_classes,
                model.count_params())
    return model


def model_divisor(model: keras.Model) -> int:
    """Factor every spatial input size of ``model`` must be a multiple of.

    The product of the strides of the model's ``MaxPooling3D`` layers (all builders here
    chain their poolings, so this is ``2 ** (levels - 1)``). Works on reloaded models too.
    Only isotropic pooling strides are supported.
    """
    div = 1
    for layer in model.layers:
        if isinstance(layer, layers.MaxPooling3D):
            strides = tuple(layer.strides) if layer.strides is not None else tuple(layer.pool_size)
            if len(set(strides)) != 1:
                raise ValueError(f"model {model.name}: anisotropic pooling strides {strides} are not supported")
            div *= int(strides[0])
    return div
