"""Custom Keras layers of the networks in ``llseg.models``.

Both are registered with Keras by name (``"llseg>SampleBatchNormalization"``,
``"llseg>MaxUnpooling3D"``), so a saved ``.keras`` model loads once this module has been
imported (``llseg.models`` imports it; ``llseg.io.load_model`` imports ``llseg.models``).
Tensors are channels-last ``(N, X, Y, Z, C)``.
"""
from __future__ import annotations

import keras
from keras import layers, ops

__all__ = ["SampleBatchNormalization", "MaxUnpooling3D"]


@keras.saving.register_keras_serializable(package="llseg")
class SampleBatchNormalization(layers.BatchNormalization):
    """Batch normalisation that also uses each sample's own statistics at inference.

    Training (``training=True``) is :class:`keras.layers.BatchNormalization` unchanged: with
    batch size 1 (paper 2.2.3) its batch statistics are the crop's own per-channel mean and
    variance over X, Y, Z, and the moving averages are updated as usual. Keras' layer switches
    to those moving averages at inference, so a crop is then normalised differently from how
    it was in training; this layer instead normalises every sample of an inference batch by
    its own per-channel mean and variance over the spatial axes (samples are never pooled),
    the same computation as a training step with batch size 1, and changes no variable.

    Why: with batch size 1 the moving averages mix crops of different content, and using them
    lowered the mean Dice of the committed run (README). Keras has no option for this, hence
    the subclass (nnU-Net takes the same route by using instance normalisation throughout).
    """

    def call(self, inputs, training=None, mask=None):
        if (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = self.axis % len(x.shape)
        spatial = [a for a in range(1, len(x.shape)) if a != axis]
        mean, variance = ops.moments(x, axes=spatial, keepdims=True)   # (N, 1, 1, 1, C)
        y = (x - mean) * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            y = y * ops.cast(self.gamma, y.dtype)
        if self.center:
            y = y + ops.cast(self.beta, y.dtype)
        return ops.cast(y, self.compute_dtype)


def _upsample2(t):
    """Nearest-neighbour x2 along X, Y and Z of a ``(N, X, Y, Z, C)`` tensor."""
    for axis in (1, 2, 3):
        t = ops.repeat(t, 2, axis=axis)
    return t


@keras.saving.register_keras_serializable(package="llseg")
class MaxUnpooling3D(layers.Layer):
    """SegNet unpooling: place each value at the position its 2x2x2 max-pooling took it from.

    Called on ``[x, features]``: ``x`` is the tensor to unpool, ``(N, X/2, Y/2, Z/2, C)``;
    ``features`` is the encoder tensor *before* its 2x2x2 max-pooling (stride 2),
    ``(N, X, Y, Z, C)`` with the same channel count C. Returns ``(N, X, Y, Z, C)``: every value
    of ``x`` copied to the voxel(s) of its 2x2x2 window where ``features`` reached the window's
    maximum (the pooling "switches"), zeros elsewhere. Channels-last, any Keras backend.

    Notes
    -----
    The switches are recomputed from ``features`` as the mask
    ``M = (features == upsample(max_pool(features)))`` rather than stored as flat argmax
    indices (Keras has no max-pooling-with-argmax op on all backends); the values are the
    same as the encoder's pooling layer's. The output is ``upsample(x) * M``, with ``upsample``
    nearest-neighbour x2.

    Ties: a window whose maximum occurs more than once (typically a window of ReLU zeros)
    has several ones in ``M`` and receives the value at each of them, whereas SegNet's stored
    index picks a single position.

    No gradient flows through ``M`` (it is built under ``stop_gradient``; the comparison is
    not differentiable anyway): ``features`` gets no gradient from this layer, ``x`` gets the
    gradient summed over its window's switch positions.

    References
    ----------
    Badrinarayanan, Kendall and Cipolla, "SegNet", IEEE TPAMI 39(12) 2017, section 3, Fig. 3.
    """

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"{self.name}: expected two inputs [x, features], got shapes {input_shape!r}")
        x_shape, f_shape = (tuple(s) for s in input_shape)
        if len(x_shape) != 5 or len(f_shape) != 5:
            raise ValueError(f"{self.name}: expected 5-D (N, X, Y, Z, C) inputs, got x {x_shape} and "
                             f"features {f_shape}")
        if x_shape[-1] is not None and f_shape[-1] is not None and x_shape[-1] != f_shape[-1]:
            raise ValueError(f"{self.name}: x and features must have the same channel count, got x {x_shape} "
                             f"and features {f_shape}")
        for xs, fs in zip(x_shape[1:4], f_shape[1:4]):
            if xs is not None and fs is not None and fs != 2 * xs:
                raise ValueError(f"{self.name}: features must be twice the size of x along X, Y, Z, got x "
                                 f"{x_shape} and features {f_shape}")
        super().build(input_shape)

    def call(self, inputs):
        x, features = inputs                                            # (N, X/2, .., C), (N, X, .., C)
        features = ops.stop_gradient(features)
        peak = _upsample2(ops.max_pool(features, 2, strides=2, padding="valid",
                                       data_format="channels_last"))    # (N, X, Y, Z, C): window maxima
        mask = ops.cast(ops.equal(features, peak), self.compute_dtype)  # 1 at the switch positions
        return _upsample2(x) * mask                                     # (N, X, Y, Z, C)

    def compute_output_shape(self, input_shape):
        x_shape, f_shape = input_shape
        return (*tuple(f_shape)[:-1], tuple(x_shape)[-1])
