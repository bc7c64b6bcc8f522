"""Weights from Keras' InceptionResNetV2 into our `InceptionResNetV2` variables.

The path to ImageNet initialisation without network access: a user who has Keras' weight file hands us the file
(`from_keras_h5`, read with h5py alone, no Keras or TensorFlow), or builds the Keras model from it (`from_keras`).
Also the proof that our backbone is Keras' network: tests/test_keras_parity.py converts a randomly initialised
Keras model and compares the forward passes.

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


# Canonical order of a Keras layer's weights, by the last part of their names ("conv2d_1/kernel:0" -> "kernel").
_WEIGHT_ORDER = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


def _h5_strings(group, name: str) -> list[str]:
    """A list-of-strings attribute, also when Keras split it into `name0`, `name1`, ... (HDF5's 64 KB header)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _weight_key(weight_name: str) -> str:
    return weight_name.split("/")[-1].split(":")[0]


def _legacy_layer_weights(root, path: str) -> dict[str, list[np.ndarray]]:
    """{layer name: [arrays in Keras order]} from the legacy (Keras 2, `layer_names`) HDF5 layout."""
    out = {}
    for layer in _h5_strings(root, "layer_names"):
        group = root[layer]
        names = _h5_strings(group, "weight_names")
        if not names:
            continue
        keys = [_weight_key(n) for n in names]
        arrays = [np.asarray(group[n]) for n in names]
        if "gamma" in keys and layer.startswith(("batch_normalization", "conv_7b_bn")):
            raise ValueError(
                f"{path}: layer {layer!r} has a BatchNorm scale (gamma); Keras' InceptionResNetV2 has none. "
                "Is this the weight file of another network?"
            )
        if all(k in _WEIGHT_ORDER for k in keys):  # the order convert_layer_weights expects, read from the names
            order = sorted(range(len(keys)), key=lambda i: _WEIGHT_ORDER.index(keys[i]))
            arrays = [arrays[i] for i in order]
        out[layer] = arrays
    return out


def read_keras_h5(path: str) -> dict[str, list[np.ndarray]]:
    """Reads a Keras HDF5 weight file into {layer name: [arrays in Keras order]}, with h5py alone.

    Reads the legacy layout that Keras 2 (and Keras 3's legacy `.h5` writer) use and that Keras' published
    ImageNet files have: a root attribute `layer_names`, one group per layer with an attribute `weight_names`
    (e.g. `conv2d_1/kernel:0`) and a dataset under each name. A whole-model `.h5` (weights under
    `model_weights`) works too. Each layer's weights are put in the order kernel, bias, gamma, beta,
    moving_mean, moving_variance by their names, not by their position in the file.

    Args:
      path: the `.h5` file.

    Returns:
      {layer name: [numpy arrays]} for the layers that have weights.

    Raises:
      ImportError: h5py is missing.
      ValueError: the file is not a readable HDF5 file, or not in a Keras layout we read.
    """
    try:
        import h5py
    except ImportError as e:
        raise ImportError("Reading Keras .h5 weight files needs h5py: pip install h5py") from e
    try:
        with h5py.File(path, "r") as f:
            root = f
            if not any(k.startswith("layer_names") for k in f.attrs) and "model_weights" in f:
                root = f["model_weights"]  # a whole model saved with model.save(...h5)
            if any(k.startswith("layer_names") for k in root.attrs):
                return _legacy_layer_weights(root, path)
            if "layers" in f and "vars" in f:
                raise ValueError(
                    f"{path} is a Keras 3 `.weights.h5` file; it names layers by class and position in the model "
                    "rather than by layer name, so it cannot be mapped without Keras. Load it into "
                    "keras.applications.InceptionResNetV2(weights=None) with model.load_weights(path) and convert "
                    "with zoomin_jax.models.keras_import.from_keras(model)."
                )
            raise ValueError(
                f"{path} is an HDF5 file but not a Keras weight file (no `layer_names` attribute at its root or "
                "under `model_weights`)"
            )
    except (OSError, KeyError) as e:
        raise ValueError(
            f"Could not read {path} as a Keras HDF5 weight file ({e}). Expected Keras' "
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels[_notop].h5; is the file complete?"
        ) from e


def from_keras_h5(path: str) -> dict[str, Any]:
    """Variables (`params`, `batch_stats`) for `InceptionResNetV2()` from a Keras InceptionResNetV2 weight file.

    No Keras or TensorFlow needed: the file is read with h5py (see `read_keras_h5` for the layouts read).

    Args:
      path: e.g. `inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5` (or the with-top file; the
        top is ignored).

    Returns:
      {'params': ..., 'batch_stats': ...} as numpy float32 arrays, equal to `from_keras` of the model built from
      the same file.
    """
    layer_weights = read_keras_h5(path)
    try:
        return convert_layer_weights(layer_weights)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
