"""Weights from Keras' InceptionResNetV2 into our `InceptionResNetV2` variables.

The path to ImageNet initialisation without network access: a user who has Keras' weight file builds the Keras
model from it (or hands us the file) and converts it once. Also the proof that our backbone is Keras' network:
tests/test_keras_parity.py converts a randomly initialised Keras model and compares the forward passes.

Keras names the unnamed `conv2d_bn` layers `conv2d`, `conv2d_1`, ... and `batch_normalization`, ... in creation
order (`model.layers` is in topological order, which differs), so the numeric suffix recovers the order in which
the Keras code created them; our module creates its `ConvBN` units in that same order. The residual `blockNN_i_conv`
layers and `conv_7b` carry names and map by name. Every copy checks the shape, so a mismatch fails loudly.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoomin_jax.models.inception_resnet import FULL_REPEATS, ConvBN, InceptionResNetV2

_RESIDUAL_CONV = re.compile(r"^block(35|17|8)_\d+_conv$")
_AUTO_NAME = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")


def _creation_order(names: list[str], prefix: str) -> list[str]:
    """Keras auto-named layers of one kind, sorted by their numeric suffix (no suffix first)."""
    found = []
    for n in names:
        m = _AUTO_NAME.match(n)
        if m and m.group(1) == prefix:
            found.append((int(m.group(2) or -1), n))
    return [n for _, n in sorted(found)]


def _our_layout():
    """Parameter shapes of the full network and its ConvBN unit names in call order (= Keras creation order).

    jax pytrees come back with sorted keys, so the call order is recorded with a method interceptor while tracing.
    """
    order = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, ConvBN) and context.method_name == "__call__":
            order.append(context.module.name)
        return next_fun(*args, **kwargs)

    model = InceptionResNetV2()
    with nn.intercept_methods(record):
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)), train=False))
    return shapes["params"], shapes["batch_stats"], order


def convert_layer_weights(layer_weights: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Converts Keras InceptionResNetV2 weights given as {layer name: [arrays in Keras order]}.

    Args:
      layer_weights: for Conv2D layers [kernel] or [kernel, bias]; for BatchNormalization (scale=False)
        [beta, moving_mean, moving_variance]. Other layers (e.g. the top `predictions`) are ignored.

    Returns:
      {'params': ..., 'batch_stats': ...} for `InceptionResNetV2()` (the full network).

    Raises:
      ValueError: when the Keras layers do not match the network (count or shape), naming the first mismatch.
    """
    names = list(layer_weights)
    convs = _creation_order(names, "conv2d") + ["conv_7b"]
    bns = _creation_order(names, "batch_normalization") + ["conv_7b_bn"]
    params_shape, stats_shape, ours = _our_layout()
    if len(ours) != len(convs) or len(bns) != len(convs):
        raise ValueError(
            f"Keras model has {len(convs)} conv+BN units and {len(bns)} BatchNorms; InceptionResNetV2 with "
            f"repeats {FULL_REPEATS} has {len(ours)}. Pass keras.applications.InceptionResNetV2 (with or without top)."
        )

    def check(arr, shape, what):
        arr = np.asarray(arr, np.float32)
        if arr.shape != tuple(shape):
            raise ValueError(f"{what}: Keras shape {arr.shape}, ours {tuple(shape)}")
        return arr

    params, stats = {}, {}
    for unit, conv, bn in zip(ours, convs, bns, strict=True):
        if conv not in layer_weights or bn not in layer_weights:
            raise ValueError(f"Keras layer {conv!r} or {bn!r} missing (maps to our {unit!r})")
        kernel = layer_weights[conv][0]
        beta, mean, var = layer_weights[bn]
        params[unit] = {
            "conv": {"kernel": check(kernel, params_shape[unit]["conv"]["kernel"].shape, f"{conv} -> {unit}")},
            "bn": {"bias": check(beta, params_shape[unit]["bn"]["bias"].shape, f"{bn} -> {unit}")},
        }
        stats[unit] = {"bn": {"mean": check(mean, (beta.shape[0],), bn), "var": check(var, (beta.shape[0],), bn)}}
    for name in params_shape:
        if _RESIDUAL_CONV.match(name):
            if name not in layer_weights:
                raise ValueError(f"Keras layer {name!r} missing")
            kernel, bias = layer_weights[name]
            params[name] = {
                "kernel": check(kernel, params_shape[name]["kernel"].shape, name),
                "bias": check(bias, params_shape[name]["bias"].shape, name),
            }
    return {"params": params, "batch_stats": stats}


def from_keras(keras_model) -> dict[str, Any]:
    """Variables (`params`, `batch_stats`) for `InceptionResNetV2()` from a Keras InceptionResNetV2 model.

    Args:
      keras_model: `keras.applications.InceptionResNetV2(...)`, with or without top, any input size; for
        ImageNet weights build it with `weights='/path/to/the/weight/file.h5'` (no download).

    Returns:
      {'params': ..., 'batch_stats': ...} as numpy float32 arrays.
    """
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in keras_model.layers}
    return convert_layer_weights(weights)
