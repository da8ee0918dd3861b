"""Tests for llseg.models: shapes, hand-counted parameters, block structure, errors."""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llseg import custom_layers, models  # noqa: E402
from _oracles import unet_param_count  # noqa: E402


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
    assert not [l for l in seg.layers if isinstance(l, (keras.layers.Concatenate, keras.layers.UpSampling3D))]
    unpools = [l for l in seg.layers if isinstance(l, custom_layers.MaxUnpooling3D)]
    assert [l.name for l in unpools] == ["dec3_unpool", "dec2_unpool", "dec1_unpool", "dec0_unpool"]
    # each unpooling takes the deeper decoder output and the encoder features of its level
    for i, layer in enumerate(reversed(unpools)):
        x_in, feat_in = layer._inbound_nodes[0].input_tensors
        assert feat_in is seg.get_layer(f"enc{i}_2_relu").output
        assert x_in is seg.get_layer(f"enc{i + 1}_2_relu" if i == 3 else f"dec{i + 1}_2_relu").output
    # the last conv of every block below the top reduces the channels to the level above's
    assert [seg.get_layer(f"enc{i}_2_conv").filters for i in range(5)] == [2, 4, 8, 16, 16]
    assert [seg.get_layer(f"dec{i}_2_conv").filters for i in range(4)] == [2, 2, 4, 8]
    assert [seg.get_layer(f"dec{i}_1_conv").filters for i in range(4)] == [2, 4, 8, 16]
    fcn = models.fcn8s_3d((16, 16, 16, 1), 2, root_filters=2, levels=5)
    scores = sorted(l.name for l in fcn.layers if l.name.startswith("score"))
    assert scores == ["score2", "score3", "score4"]
    assert fcn.get_layer("upscore_final").strides == (4, 4, 4)
    assert len([l for l in fcn.layers if isinstance(l, keras.layers.Add)]) == 2


def test_models_reload_from_config_without_custom_objects():
    # segnet's MaxUnpooling3D is registered ("llseg>MaxUnpooling3D") by importing llseg.models (custom_layers)
    for arch in models.ARCHS:
        model = models.build_model(arch, (16, 16, 16, 1), 2, levels=3, root_filters=2)
        clone = keras.models.model_from_json(model.to_json())
        assert clone.count_params() == model.count_params()


# --------------------------------------------------------------------------- sample batch normalisation


def _bn_pair(channels=3, seed=0):
    """A SampleBatchNormalization and a Keras BatchNormalization with the same random weights."""
    rng = np.random.default_rng(seed)
    ours, ref = custom_layers.SampleBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for layer in (ours, ref):
        layer.build((None, 4, 5, 6, channels))
    w = [rng.uniform(0.5, 2.0, channels), rng.normal(size=channels), rng.normal(size=channels),
         rng.uniform(0.5, 2.0, channels)]                                # gamma, beta, moving mean, moving var
    ours.set_weights(w)
    ref.set_weights(w)
    return ours, ref


def test_sample_bn_training_is_keras_batchnorm():
    ours, ref = _bn_pair()
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(1, 4, 5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ours(x, training=True)), np.asarray(ref(x, training=True)), atol=1e-6)
    for a, b in zip(ours.get_weights(), ref.get_weights()):    # moving statistics updated alike
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_sample_bn_inference_uses_each_samples_own_statistics():
    ours, ref = _bn_pair()
    rng = np.random.default_rng(2)
    x = rng.normal(2.0, 3.0, size=(2, 4, 5, 6, 3)).astype(np.float32)
    x[1] = 5 * x[1] - 7                                                 # a very different second sample
    before = [w.copy() for w in ours.get_weights()]
    y = np.asarray(ours(x, training=False))
    for a, b in zip(before, ours.get_weights()):                        # inference changes no variable
        np.testing.assert_array_equal(a, b)
    gamma, beta = before[0], before[1]
    for i in range(2):                                                  # hand computation, per sample
        m, v = x[i].mean(axis=(0, 1, 2)), x[i].var(axis=(0, 1, 2))
        np.testing.assert_allclose(y[i], (x[i] - m) / np.sqrt(v + ours.epsilon) * gamma + beta, atol=1e-4)
        # the same as a training step with batch size 1 (what the network saw in training)
        np.testing.assert_allclose(y[i], np.asarray(ref(x[i:i + 1], training=True))[0], atol=1e-4)
    # Keras' own layer would use the moving statistics instead
    assert np.abs(np.asarray(_bn_pair()[1](x, training=False)) - y).max() > 0.5


def test_unet_inference_equals_its_batch_size_one_training_forward_pass():
    keras.utils.set_random_seed(4)
    model = models.build_model("unet", (8, 8, 4, 1), 3, levels=2, root_filters=2)
    assert any(isinstance(l, custom_layers.SampleBatchNormalization) for l in model.layers)
    x = np.random.default_rng(5).normal(size=(1, 8, 8, 4, 1)).astype(np.float32)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    train_out, _ = model.stateless_call(tv, ntv, x, training=True)
    np.testing.assert_allclose(model.predict_on_batch(x), np.asarray(train_out), atol=1e-5)


# --------------------------------------------------------------------------- segnet unpooling


def _unpool(x, features):
    return np.asarray(custom_layers.MaxUnpooling3D()([np.asarray(x, np.float32), np.asarray(features, np.float32)]))


def test_unpooling_known_answer_values_land_at_argmax():
    # two 2x2x2 windows along X, two channels; every maximum is unique
    feat = np.zeros((1, 4, 2, 2, 2), np.float32)
    rng = np.random.default_rng(0)
    feat[...] = rng.permutation(32).reshape(feat.shape)             # distinct values
    ones = np.ones((1, 2, 1, 1, 2), np.float32)
    out = _unpool(ones, feat)
    assert out.shape == (1, 4, 2, 2, 2)
    expected = np.zeros_like(feat)
    for w in range(2):
        for c in range(2):
            window = feat[0, 2 * w:2 * w + 2, :, :, c]
            ix, iy, iz = np.unravel_index(np.argmax(window), window.shape)
            expected[0, 2 * w + ix, iy, iz, c] = 1.0
    np.testing.assert_array_equal(out, expected)
    assert out.sum() == 4                                             # one 1 per window and channel
    # values (not just ones) are carried to the same positions
    vals = np.array([3.5, -2.0, 7.0, 0.25], np.float32).reshape(1, 2, 1, 1, 2)
    np.testing.assert_array_equal(_unpool(vals, feat), expected * np.repeat(vals, 2, axis=1))


def test_unpooling_hand_built_corner_and_ties():
    feat = np.zeros((1, 2, 2, 2, 1), np.float32)
    feat[0, 1, 0, 1, 0] = 5.0                                         # the single max at (1, 0, 1)
    out = _unpool(np.full((1, 1, 1, 1, 1), 2.0), feat)[0, ..., 0]
    assert out[1, 0, 1] == 2.0 and np.count_nonzero(out) == 1
    # a window of ReLU zeros ties everywhere: the value goes to all 8 positions (documented)
    np.testing.assert_array_equal(_unpool(np.ones((1, 1, 1, 1, 1)), np.zeros((1, 2, 2, 2, 1))),
                                  np.ones((1, 2, 2, 2, 1)))
    # a two-way tie gives two ones, negative features work too
    feat = -np.ones((1, 2, 2, 2, 1), np.float32)
    feat[0, 0, 0, 0, 0] = feat[0, 1, 1, 1, 0] = 0.5
    assert np.flatnonzero(_unpool(np.ones((1, 1, 1, 1, 1)), feat)).tolist() == [0, 7]


def test_unpooling_anisotropic_grid_and_batch():
    rng = np.random.default_rng(1)
    feat = rng.normal(size=(2, 4, 6, 2, 3)).astype(np.float32)
    x = rng.normal(size=(2, 2, 3, 1, 3)).astype(np.float32)
    out = _unpool(x, feat)
    assert out.shape == (2, 4, 6, 2, 3)
    # each window holds exactly its x value, once, at the position of its maximum
    win = out.reshape(2, 2, 2, 3, 2, 1, 2, 3).transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(2, 2, 3, 1, 3, 8)
    fwin = feat.reshape(2, 2, 2, 3, 2, 1, 2, 3).transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(2, 2, 3, 1, 3, 8)
    assert np.all(np.count_nonzero(win, axis=-1) == 1)
    np.testing.assert_array_equal(np.take_along_axis(win, fwin.argmax(-1)[..., None], -1)[..., 0], x)


def test_unpooling_gradient_goes_to_x_only():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    import tensorflow as tf

    rng = np.random.default_rng(2)
    feat = tf.constant(rng.normal(size=(1, 4, 4, 2, 2)).astype(np.float32))
    x = tf.constant(rng.normal(size=(1, 2, 2, 1, 2)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, feat])
        loss = tf.reduce_sum(custom_layers.MaxUnpooling3D()([x, feat]) * 3.0)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 3.0)  # one switch per window
    g_feat = tape.gradient(loss, feat)
    assert g_feat is None or not np.any(g_feat.numpy())


@pytest.mark.parametrize("x_shape, f_shape, match", [
    ((None, 2, 2, 2, 3), (None, 4, 4, 4, 2), "same channel count"),
    ((None, 2, 2, 2, 2), (None, 4, 4, 6, 2), "twice the size"),
    ((None, 2, 2, 2), (None, 4, 4, 4), "5-D"),
])
def test_unpooling_bad_shapes(x_shape, f_shape, match):
    with pytest.raises(ValueError, match=match):
        custom_layers.MaxUnpooling3D()([keras.Input(batch_shape=x_shape), keras.Input(batch_shape=f_shape)])


def test_segnet_unpools_at_the_encoder_switches():
    # inside a built segnet, dec0_unpool = upsample(bottom output) where enc0's output is its
    # 2x2x2 window maximum, 0 elsewhere (nearest upsampling would fill every voxel)
    keras.utils.set_random_seed(2)
    model = models.segnet_3d((4, 4, 4, 1), 2, levels=2, root_filters=3)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("enc0_2_relu", "enc1_2_relu",
                                                                          "dec0_unpool")])
    x = np.random.default_rng(5).normal(size=(1, 4, 4, 4, 1)).astype(np.float32)
    enc, deep, unpooled = (np.asarray(t) for t in probe(x, training=False))
    up = lambda t: t.repeat(2, 1).repeat(2, 2).repeat(2, 3)           # noqa: E731
    peak = up(enc.reshape(1, 2, 2, 2, 2, 2, 2, 3).max(axis=(2, 4, 6)))
    np.testing.assert_array_equal(unpooled, up(deep) * (enc == peak))
    assert np.count_nonzero(unpooled) < unpooled.size                # some voxels are not switches


def test_segnet_dynamic_shape_and_round_trip_in_fresh_process(tmp_path):
    import subprocess
    import sys

    from llseg import io

    keras.utils.set_random_seed(0)
    model = models.segnet_3d((None, None, None, 1), 2, levels=3, root_filters=2)
    x = np.random.default_rng(3).normal(size=(1, 8, 12, 4, 1)).astype(np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (1, 8, 12, 4, 2)
    path = io.save_model(model, tmp_path / "segnet.keras")
    np.testing.assert_array_equal(np.asarray(io.load_model(path)(x, training=False)), p)
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, llseg.models\nfrom llseg import io\n"
            f"m = io.load_model({str(path)!r})\nx = np.load({str(tmp_path / 'x.npy')!r})\n"
            f"np.save({str(tmp_path / 'p.npy')!r}, np.asarray(m(x, training=False)))\n")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), p)


def test_tiny_segnet_learns():
    # a bright cube on noise; 30 Adam steps on one 16^3 sample must cut the loss clearly
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(4)
    img = rng.normal(0.0, 0.3, size=(2, 16, 16, 16, 1)).astype(np.float32)
    lab = np.zeros((2, 16, 16, 16), np.int32)
    lab[0, 3:9, 5:12, 4:10] = 1
    lab[1, 8:14, 2:7, 9:15] = 1
    img[lab == 1] += 1.0
    model = models.segnet_3d((16, 16, 16, 1), 2, levels=3, root_filters=4)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    losses = [float(model.train_on_batch(img, lab)) for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


# --------------------------------------------------------------------------- parameter counts


def test_hand_count_known_answer_one_level():
    # conv 27*1*2 + BN 4*2 + conv 27*2*2 + BN 4*2 + head (2*2 + 2) = 54 + 8 + 108 + 8 + 6
    assert unet_param_count(1, 2, levels=1, root_filters=2) == 184
    assert models.unet_3d((2, 2, 2, 1), 2, levels=1, root_filters=2).count_params() == 184


@pytest.mark.parametrize("in_ch, k, levels, root", [(1, 2, 3, 4), (1, 9, 3, 8), (2, 5, 4, 3), (3, 2, 2, 16),
                                                   (1, 71, 4, 16), (1, 2, 3, 96)])
def test_param_count_plain_equals_keras(in_ch, k, levels, root):
    model = models.unet_3d((None, None, None, in_ch), k, levels=levels, root_filters=root)
    assert model.count_params() == unet_param_count(in_ch, k, levels=levels, root_filters=root)


@pytest.mark.parametrize("block", ["residual", "dense"])
@pytest.mark.parametrize("in_ch, k, levels, root", [(1, 2, 3, 4), (2, 3, 2, 5), (4, 2, 1, 4)])
def test_param_count_other_blocks_equals_keras(block, in_ch, k, levels, root):
    model = models.unet_3d((None, None, None, in_ch), k, levels=levels, root_filters=root, block=block)
    assert model.count_params() == unet_param_count(in_ch, k, levels=levels, root_filters=root,
                                                           block=block)


def _segnet_param_count(in_ch, k, levels, root):
    """Hand count of segnet_3d: encoder blocks f_i; bottom and decoder blocks f_i then f_{i-1}."""
    f = [root * 2**i for i in range(levels)]
    out = [f[max(i - 1, 0)] for i in range(levels)]
    conv_bn = lambda a, b: 27 * a * b + 4 * b                         # noqa: E731 (no bias + BN)
    total, c = 0, in_ch
    for i in range(levels - 1):
        total += conv_bn(c, f[i]) + conv_bn(f[i], f[i])
        c = f[i]
    total += conv_bn(c, f[-1]) + conv_bn(f[-1], out[-1])              # bottom
    for i in reversed(range(levels - 1)):
        total += conv_bn(f[i], f[i]) + conv_bn(f[i], out[i])          # unpooled input has f_i channels
    return total + f[0] * k + k                                       # 1x1x1 head with bias


def test_segnet_param_count_known_answer():
    # levels 2, root 2: enc0 (54+8)+(108+8); bottom (216+16)+(216+8); dec0 (108+8)+(108+8); head 6
    assert _segnet_param_count(1, 2, 2, 2) == 872
    assert models.segnet_3d((2, 2, 2, 1), 2, levels=2, root_filters=2).count_params() == 872


@pytest.mark.parametrize("in_ch, k, levels, root", [(1, 2, 1, 4), (1, 2, 5, 2), (2, 5, 3, 3), (1, 2, 5, 16)])
def test_param_count_segnet_equals_keras(in_ch, k, levels, root):
    model = models.segnet_3d((None, None, None, in_ch), k, levels=levels, root_filters=root)
    assert model.count_params() == _segnet_param_count(in_ch, k, levels, root)


def test_paper_stage2_network_size():
    # 3 levels, 96 root filters, 1 channel, binary: the network the paper trains per muscle
    # (the paper does not report it; 12.2 M, all but 0.01 % in the 3x3x3 convolutions)
    n = unet_param_count(1, 2, levels=3, root_filters=96)
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
