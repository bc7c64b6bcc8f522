"""Building the model from a config, creating its variables already sharded, and the jitted forward pass.

Also `forward_demo` (`--mode=forward`): one sharded forward pass of the configured, untrained network on freshly
generated synthetic fundus photographs, printing what comes out (shapes, parameters, boxes): a check of a config's
geometry and a machine's set-up without a dataset or a checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from zoomin_jax import metrics, sharding
from zoomin_jax.models.zoom_in import ZoomInNet, param_counts
from zoomin_jax.validate import validate_config


def build(config: ml_collections.ConfigDict) -> ZoomInNet:
    """The ZoomInNet that `config.model` describes."""
    return ZoomInNet.from_config(config.model)


def abstract_variables(model: ZoomInNet, config: ml_collections.ConfigDict) -> Any:
    """Shapes and dtypes of the model's variables, without allocating or compiling anything."""
    s = config.model.image_size
    dummy = jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8)
    return jax.eval_shape(lambda rng, x: model.init(rng, x, train=False), jax.random.PRNGKey(0), dummy)


# Flax's defaults, the only initialisers the modules use: kernels LeCun normal (truncated at two standard deviations,
# flax's variance_scaling(1, "fan_in", "truncated_normal")), biases and BatchNorm offsets and means zero, scales and
# variances one.
_TRUNCATED_STD = 0.87962566103423978  # standard deviation of a unit normal truncated to [-2, 2]
_CONSTANT = {"bias": 0.0, "scale": 1.0, "mean": 0.0, "var": 1.0}


def host_variables(shapes: Any, seed: int) -> Any:
    """Variables of the given shapes drawn with numpy on the host, with flax's default initialisers' distributions.

    Nothing is traced or compiled (the jitted init compiles the whole network's parameter creation: ~65 s at paper
    scale on 2 CPU cores, against ~2 s here). The values follow from `seed` alone, so every process draws the same.
    Leaves are named as flax names them; any other name is an error, not a guess.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, sd):
        name = getattr(path[-1], "key", str(path[-1]))
        if name in _CONSTANT:
            return np.full(sd.shape, _CONSTANT[name], sd.dtype)
        if name != "kernel":
            raise ValueError(f"host_variables: no initialiser known for {jax.tree_util.keystr(path)}")
        x = rng.standard_normal(sd.shape, dtype=np.float32)
        bad = np.abs(x) > 2.0
        while bad.any():  # redraw outside [-2, 2]: a truncated normal
            x[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
            bad = np.abs(x) > 2.0
        fan_in = int(np.prod(sd.shape[:-1]))
        return (x * np.float32(np.sqrt(1.0 / fan_in) / _TRUNCATED_STD)).astype(sd.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def init_variables(model: ZoomInNet, config: ml_collections.ConfigDict, mesh: Mesh, rng: jax.Array) -> Any:
    """Variables created with their (replicated) sharding: by a jitted init, or drawn on the host
    (`config.init_on_host`, `host_variables`, seeded by `config.seed`; `rng` is then unused)."""
    s = config.model.image_size
    shapes = abstract_variables(model, config)
    if config.init_on_host:
        repl = sharding.replicated(mesh)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_callback(x.shape, repl, lambda index: x[index]),
            host_variables(shapes, config.seed))
    out = jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), shapes)
    init = jax.jit(lambda r: model.init(r, jnp.zeros((1, s, s, 3), jnp.uint8), train=False), out_shardings=out)
    return init(rng)


def make_forward(model: ZoomInNet, mesh: Mesh):
    """jit(variables, images) -> outputs, inference mode, batch sharded on 'data', variables replicated."""
    return jax.jit(
        lambda v, images: model.apply(v, images, train=False),
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
        out_shardings=sharding.batch_sharding(mesh),
    )


def _synthetic_batch(config, n: int):
    from zoomin_jax.data import synthetic  # the generator only; no dataset preparation needed

    images, grades, lesions = [], [], []
    for i in range(n):
        image, found = synthetic.generate_example(seed=config.seed * 100_003 + i, grade=i % 5,
                                                  image_size=config.model.image_size)
        images.append(image)
        grades.append(i % 5)
        lesions.append(found)
    return np.stack(images), np.asarray(grades), lesions


def forward_demo(config: ml_collections.ConfigDict) -> dict:
    """One sharded forward pass of an untrained network on synthetic photographs; prints shapes and boxes.

    Returns:
      The outputs as numpy arrays, plus 'param_counts' and 'lesion_recall' (of the untrained boxes).
    """
    validate_config(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    mesh = sharding.make_mesh(config.mesh.data)
    model = build(config)
    counts = param_counts(abstract_variables(model, config)["params"])
    print("Parameters per sub-network: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

    t0 = time.perf_counter()
    variables = init_variables(model, config, mesh, jax.random.PRNGKey(config.seed))
    images, grades, lesions = _synthetic_batch(config, config.batch_size)
    batch = sharding.to_global(images, mesh)
    forward = make_forward(model, mesh)
    out = jax.device_get(forward(variables, batch))
    t1 = time.perf_counter()
    out = jax.device_get(forward(variables, batch))
    t2 = time.perf_counter()
    logging.info("init + compile + first pass %.1f s, second pass %.2f s", t1 - t0, t2 - t1)

    print(f"Mesh: {dict(mesh.shape)} over {mesh.size} {jax.devices()[0].platform} devices; "
          f"batch {tuple(batch.shape)} {batch.dtype} sharded as {batch.sharding.spec}")
    for k in ("logits", "mnet_logits", "anet_logits", "gated", "boxes", "box_scores"):
        print(f"  {k:12s} {tuple(out[k].shape)} {out[k].dtype}")
    print(f"Forward pass: {config.batch_size / (t2 - t1):.1f} images/s after compilation ({t1 - t0:.1f} s to compile)")
    print("Selected boxes (y0, x0, y1, x1) at high res, untrained network:")
    for i in range(min(5, len(grades))):
        print(f"  image {i} (grade {grades[i]}, {len(lesions[i])} lesions): {out['boxes'][i].tolist()}")

    kinds = {k: j for j, k in enumerate(metrics.LESION_KINDS)}
    width = max(1, max(len(x) for x in lesions))
    lb = np.zeros((len(lesions), width, 4), np.int32)
    lk = np.zeros((len(lesions), width), np.int32)
    lv = np.zeros((len(lesions), width), bool)
    for i, found in enumerate(lesions):
        for j, (box, kind) in enumerate(found):
            lb[i, j], lk[i, j], lv[i, j] = box, kinds[kind], True
    recall = metrics.lesion_recall_at_k(out["boxes"], lb, lk, lv, ks=(out["boxes"].shape[1],))
    print(f"Lesion recall@{out['boxes'].shape[1]} of the untrained boxes: "
          + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in recall.items()
                      if "/" not in k))
    out["param_counts"], out["lesion_recall"] = counts, recall
    return out
