"""Our Inception-ResNet-v2 is Keras' network: converted weights give the same forward pass at 299 and 492."""

import numpy as np
import pytest
from keras_models import random_keras_irv2

keras = pytest.importorskip("keras", reason="the parity test needs the test extra (tensorflow-cpu / keras)")

from zoomin_jax.models.inception_resnet import InceptionResNetV2, endpoint_names, stage_sizes  # noqa: E402
from zoomin_jax.models.keras_import import from_keras  # noqa: E402

pytestmark = pytest.mark.slow  # parity with Keras (TensorFlow)


@pytest.fixture(scope="module")
def keras_model():
    return random_keras_irv2(keras, seed=0)


@pytest.fixture(scope="module")
def variables(keras_model):
    return from_keras(keras_model)


@pytest.mark.parametrize("size", [299, 492])
def test_forward_matches_keras(keras_model, variables, size):
    x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    want = np.asarray(keras_model(x, training=False))
    got = InceptionResNetV2().apply(variables, x, train=False)
    s8 = stage_sizes(size)["block8"]
    assert got["conv_7b_ac"].shape == want.shape == (2, s8, s8, 1536)
    rel = np.linalg.norm(np.asarray(got["conv_7b_ac"]) - want) / np.linalg.norm(want)
    assert rel < 1e-4, f"relative error {rel:.2e} at {size}"
    np.testing.assert_allclose(np.asarray(got["pool"]), want.mean(axis=(1, 2)), rtol=1e-3, atol=1e-4)


def test_named_endpoints_equal_keras_layers(keras_model, variables):
    names = ["block35_10_ac", "block17_20_ac", "block8_10", "mixed_6a"]
    # Keras' last block8 ends in an auto-named scale layer; its output is conv_7b's input.
    layer = keras_model.get_layer
    outs = [layer("conv_7b").input if n == "block8_10" else layer(n).output for n in names]
    probe = keras.Model(keras_model.input, outs)
    x = np.random.default_rng(7).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    want = probe(x, training=False)
    got = InceptionResNetV2().apply(variables, x, train=False)
    assert set(endpoint_names()) <= set(got)
    assert {"block35_10_ac", "block17_20_ac", "conv_7b_ac", "pool"} <= set(got)
    for name, w in zip(names, want, strict=True):
        w = np.asarray(w)
        rel = np.linalg.norm(np.asarray(got[name]) - w) / np.linalg.norm(w)
        assert rel < 1e-4, f"{name}: relative error {rel:.2e}"
    assert got["block35_10_ac"].shape[1:3] == (35, 35) and got["block17_20_ac"].shape[1:3] == (17, 17)


def test_converter_rejects_a_different_network():
    small = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    with pytest.raises(ValueError, match="InceptionResNetV2"):
        from_keras(small)
