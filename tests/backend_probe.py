"""Run by tests/test_backends.py under another Keras backend (``KERAS_BACKEND`` set by the caller):

    KERAS_BACKEND=jax python tests/backend_probe.py IN_DIR OUT_DIR

Reads the fixed inputs the test wrote to IN_DIR (``inputs.npz``, ``model.keras`` saved under
TensorFlow) and writes to OUT_DIR ``results.npz`` and ``results.json``: the parameter count of
every network kind, the outputs of the custom layers on the fixed inputs with fixed weights, the
loaded model's prediction, and the losses of two short trainings with the same seed.
"""
import json
import sys
from pathlib import Path

import numpy as np

NETWORKS = [("unet", 3, 8, "plain"), ("unet", 4, 4, "residual"), ("unet", 3, 4, "dense"),
            ("fcn8s", 5, 4, "plain"), ("segnet", 5, 4, "plain")]


def param_counts():
    from llseg import models

    return {f"{a}-{lv}-{rf}-{b}": int(models.build_model(a, (32, 32, 32, 1), 3, levels=lv, root_filters=rf,
                                                         block=b).count_params())
            for a, lv, rf, b in NETWORKS}


def custom_layers(inputs):
    from keras import ops

    from llseg.custom_layers import MaxUnpooling3D, SampleBatchNormalization

    bn = SampleBatchNormalization()
    bn.build(inputs["bn_x"].shape)
    bn.set_weights([inputs["bn_gamma"], inputs["bn_beta"], np.zeros_like(inputs["bn_gamma"]),
                    np.ones_like(inputs["bn_gamma"])])
    unpool = MaxUnpooling3D()
    return {"bn_infer": ops.convert_to_numpy(bn(inputs["bn_x"], training=False)),
            "bn_train": ops.convert_to_numpy(bn(inputs["bn_x"], training=True)),
            "unpool": ops.convert_to_numpy(unpool([inputs["unpool_x"], inputs["unpool_features"]]))}


def sphere(rng, shape=(16, 16, 16)):
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float32)
    radius = rng.uniform(3, 5)
    centre = rng.uniform(radius + 1, np.array(shape) - radius - 1)
    inside = np.linalg.norm(grid - centre, axis=-1) <= radius
    image = inside.astype(np.float32) + rng.normal(0, 0.5, size=shape).astype(np.float32)
    return image[None, ..., None], inside.astype(np.int32)[None]


def short_training(iterations=30):
    import keras

    from llseg import models, train

    losses = []
    for _ in range(2):
        keras.utils.set_random_seed(0)                 # the same initial weights both times
        model = models.unet_3d((16, 16, 16, 1), 2, levels=2, root_filters=4)
        hist = train.fit(model, sphere, iterations=iterations, learning_rate=0.003, seed=0, progress=False)
        losses.append(hist["loss"])
    return losses


def main(in_dir, out_dir):
    import keras

    from llseg import io, train

    inputs = dict(np.load(Path(in_dir) / "inputs.npz"))
    model = io.load_model(Path(in_dir) / "model.keras")
    arrays = {**custom_layers(inputs), "predict": train.predict_proba(model, inputs["predict_x"])}
    np.savez(Path(out_dir) / "results.npz", **arrays)
    (Path(out_dir) / "results.json").write_text(json.dumps(
        {"backend": keras.backend.backend(), "param_counts": param_counts(), "losses": short_training()}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
