"""Tests for llseg.models: shapes, hand-counted parameters, block structure, errors."""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import models  # noqa: E402


def _conv3_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv3D) and l.kernel_size == (3, 3, 3)]


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("block", models.BLOCKS)
def test_unet_output_shape_per_block(block):
    model = models.unet_3d((16, 16, 16, 1), 3, levels=3, root_filters=4, block=block)
    assert model.input_shape == (None, 16, 16, 16, 1)
    assert model.output_shape == (None, 16, 16, 16, 3)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (1, 16, 16, 16, 3)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.all(p >= 0)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_build_model_shapes_anisotropic_grid_two_channels(arch):
    levels = 3 if arch == "unet" else 5
    shape = (32, 16, 48, 2)  # X, Y, Z all multiples of 16
    model = models.build_model(arch, shape, 4, levels=levels, root_filters=2, block="plain")
    assert model.output_shape == (None, 32, 16, 48, 4)
    p = np.asarray(model(np.zeros((1, *shape), np.float32), training=False))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch", ["fcn8s", "segnet"])
def test_five_level_archs_at_16_cubed(arch):
    model = models.build_model(arch, (16, 16, 16, 1), 2, levels=5, root_filters=2, block="plain")
    assert model.output_shape == (None, 16, 16, 16, 2)
    assert models.model_divisor(model) == 16
    assert len([l for l in model.layers if isinstance(l, keras.layers.MaxPooling3D)]) == 4


def test_fully_convolutional_none_shape_accepts_any_divisible_size():
    model = models.unet_3d((None, None, None, 1), 2, levels=2, root_filters=2)
    assert model.output_shape == (None, None, None, None, 2)
    p = np.asarray(model(np.zeros((1, 6, 4, 10, 1), np.float32), training=False))
    assert p.shape == (1, 6, 4, 10, 2)


def test_one_level_unet_is_two_convs_and_head():
    model = models.unet_3d((1, 1, 1, 1), 2, levels=1, root_filters=2)
    assert model.output_shape == (None, 1, 1, 1, 2)
    assert models.model_divisor(model) == 1
    assert len(_conv3_layers(model)) == 2


@pytest.mark.parametrize("levels, expected", [(1, 1), (2, 2), (3, 4), (4, 8)])
def test_model_divisor(levels, expected):
    model = models.unet_3d((None, None, None, 1), 2, levels=levels, root_filters=1)
    assert models.model_divisor(model) == expected


# --------------------------------------------------------------------------- structure


def test_plain_unet_structure_matches_paper():
    levels, root = 4, 2
    model = models.unet_3d((8, 8, 8, 1), 5, levels=levels, root_filters=root)
    # two 3x3x3 conv-BN-ReLU per level in the encoder and the decoder
    assert len(_conv3_layers(model)) == 2 * levels + 2 * (levels - 1)
    assert len([l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]) == 4 * levels - 2
    assert len([l for l in model.layers if isinstance(l, keras.layers.MaxPooling3D)]) == levels - 1
    ups = [l for l in model.layers if isinstance(l, keras.layers.Conv3DTranspose)]
    assert [u.strides for u in ups] == [(2, 2, 2)] * (levels - 1)
    assert [u.kernel_size for u in ups] == [(2, 2, 2)] * (levels - 1)
    # filters double per level: encoder widths 2, 4, 8, 16
    assert [model.get_layer(f"enc{i}_2_conv").filters for i in range(levels)] == [2, 4, 8, 16]
    # skip concatenation doubles the channels entering each decoder block
    assert [model.get_layer(f"dec{i}_cat").output.shape[-1] for i in range(levels - 1)] == [4, 8, 16]
    head = model.get_layer("logits")
    assert head.kernel_size == (1, 1, 1) and head.filters == 5


def test_dense_block_matches_plain_depth_and_width():
    kw = dict(levels=3, root_filters=6)
    plain = models.unet_3d((8, 8, 8, 1), 2, block="plain", **kw)
    dense = models.unet_3d((8, 8, 8, 1), 2, block="dense", **kw)
    assert len(_conv3_layers(dense)) == len(_conv3_layers(plain))           # depth
    for part in ("enc0", "enc1", "enc2", "dec1", "dec0"):                   # width after each block
        assert dense.get_layer(f"{part}_out").output.shape[-1] == plain.get_layer(f"{part}_2_relu").output.shape[-1]
    # the second layer sees the block input and the first layer's output
    assert dense.get_layer("enc1_2_cat").output.shape[-1] == 6 + 6       # input 6 + growth 6
    # odd width: growths 3 and 2 still sum to 5
    odd = models.unet_3d((4, 4, 4, 1), 2, levels=1, root_filters=5, block="dense")
    assert odd.get_layer("enc0_out").output.shape[-1] == 5


def test_residual_block_shortcuts():
    model = models.unet_3d((8, 8, 8, 1), 2, levels=3, root_filters=4, block="residual")
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 5                       # one per block: 3 encoder + 2 decoder
    projections = [l.name for l in model.layers if l.name.endswith("_proj_conv")]
    # every block changes the channel count here (1->4, 4->8, 8->16, 16->8 after cat, 8->4)
    assert sorted(projections) == sorted(f"{p}_proj_conv" for p in ("enc0", "enc1", "enc2", "dec1", "dec0"))
    # a block whose input already has `filters` channels uses the identity
    ident = models.unet_3d((4, 4, 4, 4), 2, levels=1, root_filters=4, block="residual")
    assert not [l for l in ident.layers if l.name.endswith("_proj_conv")]


def test_segnet_has_no_skips_and_fcn_fuses_three_scales():
    seg = models.segnet_3d((16, 16, 16, 1), 2, root_filters=2, levels=5)
    assert not [l for l in seg.layers if isinstance(l, keras.layers.Concatenate)]
    assert len([l for l in seg.layers if isinstance(l, keras.layers.UpSampling3D)]) == 4
    fcn = models.fcn8s_3d((16, 16, 16, 1), 2, root_filters=2, levels=5)
    scores = sorted(l.name for l in fcn.layers if l.name.startswith("score"))
    assert scores == ["score2", "score3", "score4"]
    assert fcn.get_layer("upscore_final").strides == (4, 4, 4)
    assert len([l for l in fcn.layers if isinstance(l, keras.layers.Add)]) == 2


def test_models_reload_from_config_without_custom_objects():
    for arch in models.ARCHS:
        model = models.build_model(arch, (16, 16, 16, 1), 2, levels=3, root_filters=2)
        clone = keras.models.model_from_json(model.to_json())
        assert clone.count_params() == model.count_params()


# --------------------------------------------------------------------------- parameter counts


def test_hand_count_known_answer_one_level():
    # conv 27*1*2 + BN 4*2 + conv 27*2*2 + BN 4*2 + head (2*2 + 2) = 54 + 8 + 108 + 8 + 6
    assert models.unet_param_count(1, 2, levels=1, root_filters=2) == 184
    assert models.unet_3d((2, 2, 2, 1), 2, levels=1, root_filters=2).count_params() == 184


@pytest.mark.parametrize("in_ch, k, levels, root", [(1, 2, 3, 4), (1, 9, 3, 8), (2, 5, 4, 3), (3, 2, 2, 16),
                                                   (1, 71, 4, 16), (1, 2, 3, 96)])
def test_param_count_plain_equals_keras(in_ch, k, levels, root):
    model = models.unet_3d((None, None, None, in_ch), k, levels=levels, root_filters=root)
    assert model.count_params() == models.unet_param_count(in_ch, k, levels=levels, root_filters=root)


@pytest.mark.parametrize("block", ["residual", "dense"])
@pytest.mark.parametrize("in_ch, k, levels, root", [(1, 2, 3, 4), (2, 3, 2, 5), (4, 2, 1, 4)])
def test_param_count_other_blocks_equals_keras(block, in_ch, k, levels, root):
    model = models.unet_3d((None, None, None, in_ch), k, levels=levels, root_filters=root, block=block)
    assert model.count_params() == models.unet_param_count(in_ch, k, levels=levels, root_filters=root,
                                                           block=block)


def test_paper_stage2_network_size():
    # 3 levels, 96 root filters, 1 channel, binary: the network the paper trains per muscle
    # (the paper does not report it; 12.2 M, all but 0.01 % in the 3x3x3 convolutions)
    n = models.unet_param_count(1, 2, levels=3, root_filters=96)
    assert n == 12_194_306
    convs = sum(27 * a * b for a, b in [(1, 96), (96, 96), (96, 192), (192, 192), (192, 384), (384, 384),
                                        (384, 192), (192, 192), (192, 96), (96, 96)])
    transposed = 8 * 384 * 192 + 192 + 8 * 192 * 96 + 96
    assert n == convs + transposed + 4 * 2 * (96 + 192 + 384 + 192 + 96) + (96 * 2 + 2)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("shape, levels, div", [((16, 16, 12, 1), 4, 8), ((10, 16, 16, 1), 3, 4),
                                                ((16, 16, 15, 1), 2, 2)])
def test_divisibility_error_names_shape_and_divisor(shape, levels, div):
    with pytest.raises(ValueError) as err:
        models.unet_3d(shape, 2, levels=levels, root_filters=2)
    msg = str(err.value)
    assert str(shape) in msg and f"multiples of {div}" in msg


def test_fcn_and_segnet_check_divisibility_too():
    with pytest.raises(ValueError, match="multiples of 16"):
        models.fcn8s_3d((24, 16, 16, 1), 2, root_filters=2)
    with pytest.raises(ValueError, match="multiples of 16"):
        models.segnet_3d((16, 16, 8, 1), 2, root_filters=2)
    with pytest.raises(ValueError, match="levels must be an int >= 3"):
        models.fcn8s_3d((16, 16, 16, 1), 2, root_filters=2, levels=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(16, 16, 1), n_classes=2), "X, Y, Z, C"),
    (dict(input_shape=(16, 16, 16, 0), n_classes=2), "channel count"),
    (dict(input_shape=(16, 16, 16, 1), n_classes=1), "n_classes"),
    (dict(input_shape=(16, 16, 16, 1), n_classes=2, root_filters=0), "root_filters"),
    (dict(input_shape=(16, 16, 16, 1), n_classes=2, levels=0), "levels"),
    (dict(input_shape=(16, 16, 16, 1), n_classes=2, block="inception"), "block must be one of"),
])
def test_unet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.unet_3d(**kwargs)


def test_build_model_bad_arch_and_block():
    with pytest.raises(ValueError, match="arch must be one of"):
        models.build_model("vnet", (16, 16, 16, 1), 2, levels=3, root_filters=2, block="plain")
    with pytest.raises(ValueError, match="only available for arch='unet'"):
        models.build_model("segnet", (16, 16, 16, 1), 2, levels=5, root_filters=2, block="residual")
