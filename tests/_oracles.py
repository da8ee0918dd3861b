"""Test oracles: independent re-computations that the package's results are checked against."""
from __future__ import annotations

__all__ = ["unet_param_count"]


def _dense_growths(filters: int, n_layers: int = 2) -> list[int]:
    """Per-layer growth of a dense block: the new feature maps sum to ``filters``."""
    base, extra = divmod(filters, n_layers)
    return [base + (1 if i < extra else 0) for i in range(n_layers)]


def _conv_params(k: int, c_in: int, c_out: int, bias: bool) -> int:
    return k**3 * c_in * c_out + (c_out if bias else 0)


def _bn_params(c: int) -> int:
    return 4 * c  # gamma, beta (trainable), moving mean, moving variance (non-trainable)


def _block_params(block: str, c_in: int, f: int) -> int:
    if block == "plain":
        return _conv_params(3, c_in, f, False) + _bn_params(f) + _conv_params(3, f, f, False) + _bn_params(f)
    if block == "residual":
        n = _conv_params(3, c_in, f, False) + _bn_params(f) + _conv_params(3, f, f, False) + _bn_params(f)
        if c_in != f:
            n += _conv_params(1, c_in, f, False) + _bn_params(f)
        return n
    if block == "dense":
        n, seen = 0, c_in
        for g in _dense_growths(f):
            n += _conv_params(3, seen, g, False) + _bn_params(g)
            seen += g
        return n
    raise ValueError(f"block must be one of ('plain', 'residual', 'dense'), got {block!r}")


def unet_param_count(in_channels: int, n_classes: int, *, levels: int = 3, root_filters: int = 16,
                     block: str = "plain") -> int:
    """Count the parameters of ``llseg.models.unet_3d`` by hand, layer by layer.

    Independent of Keras (pure arithmetic) so that a test can check the built model against
    the architecture described in the paper.

    Parameters
    ----------
    in_channels, n_classes : int
        Input channels and output classes.
    levels, root_filters : int, optional
        As in ``llseg.models.unet_3d``.
    block : {"plain", "residual", "dense"}, optional
        As in ``llseg.models.unet_3d``.

    Returns
    -------
    int
        Total parameter count, including BatchNorm's non-trainable moving statistics (as
        ``keras.Model.count_params`` reports).

    Notes
    -----
    With ``f_i = root_filters * 2**i``: a k^3 conv has ``k^3 c_in c_out`` weights (+ ``c_out``
    bias only for the transposed and final convs); each BatchNorm has ``4 c``. Encoder level
    ``i`` is ``block(c_in -> f_i)`` with ``c_in = in_channels`` or ``f_{i-1}``; decoder level
    ``i`` is a 2^3 transposed conv ``f_{i+1} -> f_i`` (with bias) and ``block(2 f_i -> f_i)``;
    the head is a 1^3 conv ``f_0 -> n_classes`` with bias.
    """
    total = 0
    c = in_channels
    for i in range(levels):
        f = root_filters * 2**i
        total += _block_params(block, c, f)
        c = f
    for i in reversed(range(levels - 1)):
        f = root_filters * 2**i
        total += _conv_params(2, c, f, True)        # transposed conv, kernel 2^3
        total += _block_params(block, 2 * f, f)     # after concatenation with the skip
        c = f
    total += _conv_params(1, c, n_classes, True)
    return total
