"""`config.init_from`: the weights a run starts from when its workdir has no checkpoint yet.

Two sources, chosen by the path: a Keras Inception-ResNet-v2 weight file (`.h5`, e.g. Keras' ImageNet
`inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5`), read with h5py alone, whose backbone goes into
both M-Net and C-Net as the paper initialises them from ImageNet, the heads and A-Net keeping their fresh random
init; or another zoomin_jax workdir, whose latest checkpoint gives all the variables (weights only: no optimiser
state, no data position). Either way the result is placed on the target shardings.

`check` runs first thing in training: a named file or workdir that is missing stops the run before the dataset is
prepared or anything is compiled, saying where the file comes from. `init_from=""` is random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from zoomin_jax import checkpoint, paths
from zoomin_jax.models import keras_import
from zoomin_jax.models.inception_resnet import FULL_REPEATS

# The sub-networks that are Inception-ResNet-v2 backbones (top-level keys of params and batch_stats).
BACKBONES = ("mnet", "cnet")
# Keras' ImageNet weights of Inception-ResNet-v2 without the classifier: the file configs/full.py starts from.
KERAS_WEIGHTS = "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_CACHE = "~/.keras/models"  # where keras.applications keeps the files it fetches


def _has_checkpoint(workdir: str) -> bool:
    folder = paths.join(paths.resolve(workdir), "checkpoints")
    return folder.exists() and any(p.name.isdigit() for p in folder.iterdir())


def check(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises before anything is prepared or compiled when `config.init_from` is needed and cannot be used.

    Not needed when `workdir` already has a checkpoint (the run resumes from it and ignores init_from), nor with
    `init_from=""` (random initialisation).

    Raises:
      FileNotFoundError: the named `.h5` file or workdir does not exist; the message says where the file comes from.
      ValueError: a `.h5` file with M-Net or C-Net smaller than the network Keras' weights fit.
    """
    path = config.init_from
    if not path or _has_checkpoint(workdir):
        return
    if path.endswith(".h5"):
        check_full_backbones(config)
    if paths.join(paths.resolve(path)).exists():
        return
    if path.endswith(".h5"):
        raise FileNotFoundError(
            f"config.init_from={path!r} does not exist. It is meant to be Keras' ImageNet weight file for "
            f"Inception-ResNet-v2 without the top, {KERAS_WEIGHTS}: in Python with Keras installed, "
            "keras.applications.InceptionResNetV2(weights='imagenet', include_top=False) fetches it into "
            f"{KERAS_CACHE}/. Put it at {path} or pass --config.init_from=/path/to/{KERAS_WEIGHTS}; or train from "
            "random weights with --config.init_from='' (far from the paper's figures: it initialises from ImageNet)."
        )
    raise FileNotFoundError(
        f"config.init_from={path!r} does not exist: pass another run's workdir, a Keras Inception-ResNet-v2 .h5 "
        "weight file, or '' for random initialisation"
    )


def check_full_backbones(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError unless M-Net and C-Net are the full network that Keras' weights fit."""
    wrong = []
    for name in BACKBONES:
        sub = config.model[name]
        if tuple(sub.repeats) != FULL_REPEATS:
            wrong.append(f"model.{name}.repeats={tuple(sub.repeats)}")
        if float(sub.width) != 1.0:
            wrong.append(f"model.{name}.width={sub.width}")
    if wrong:
        raise ValueError(
            f"config.init_from={config.init_from!r}: Keras' Inception-ResNet-v2 weights fit only the full network "
            f"(repeats {FULL_REPEATS}, width 1.0), but {', '.join(wrong)}. Use configs/full.py or set those fields, "
            "or start this reduced network from scratch (config.init_from='')."
        )


def merge_backbone(fresh: Any, backbone: Any, into: tuple[str, ...] = BACKBONES) -> dict:
    """The fresh variables with the backbone's `params` / `batch_stats` put under each of `into`.

    Args:
      fresh: {'params': {...}, 'batch_stats': {...}} of the whole model, freshly initialised.
      backbone: {'params': ..., 'batch_stats': ...} of one `InceptionResNetV2` (e.g. `from_keras_h5`).
      into: top-level keys of the sub-networks that receive a copy.

    Returns:
      A new tree (the inputs are not modified) with the same structure as `fresh`; everything outside `into`
      is `fresh`'s own leaves.

    Raises:
      ValueError: naming the first path whose structure or shape differs.
    """
    out = {col: dict(fresh[col]) for col in fresh}
    for col in ("params", "batch_stats"):
        for name in into:
            want = jax.tree_util.tree_flatten_with_path(fresh[col][name])
            got = jax.tree_util.tree_flatten_with_path(backbone[col])
            want_paths = [jax.tree_util.keystr(p) for p, _ in want[0]]
            got_paths = [jax.tree_util.keystr(p) for p, _ in got[0]]
            if want_paths != got_paths:
                missing = sorted(set(want_paths) - set(got_paths))[:3]
                extra = sorted(set(got_paths) - set(want_paths))[:3]
                raise ValueError(
                    f"{col}[{name!r}] does not have the backbone's layout: missing {missing}, unexpected {extra}"
                )
            for (path, w), (_, g) in zip(want[0], got[0], strict=True):
                if tuple(w.shape) != tuple(np.shape(g)):
                    raise ValueError(
                        f"{col}[{name!r}]{jax.tree_util.keystr(path)}: ours {tuple(w.shape)}, "
                        f"backbone {tuple(np.shape(g))}"
                    )
            out[col][name] = backbone[col]
    return out


def place(tree: Any, target: Any) -> Any:
    """Each leaf as a jax.Array with the target's dtype and sharding (target: ShapeDtypeStructs with shardings).

    Leaves already so placed are kept. Host values are copied per leaf and per device: on CPU, JAX may otherwise
    alias the numpy memory, and M-Net and C-Net, filled from the same numpy arrays, would share buffers in a
    state that the train step donates.
    """

    def one(x, t):
        if isinstance(x, jax.Array) and x.sharding == t.sharding and x.dtype == t.dtype:
            return x
        value = np.asarray(x, dtype=t.dtype)
        return jax.make_array_from_callback(t.shape, t.sharding, lambda index: np.array(value[index], copy=True))

    return jax.tree_util.tree_map(one, tree, target)


def load_workdir(path: str, target: Any) -> Any:
    """Weights only from another run's workdir (its latest checkpoint), restored onto `target`'s shardings."""
    ckpt, step = _source(path)
    logging.info("Initialising from %s step %d (weights only)", path, step)
    return ckpt.restore(step, target)["model"]


def _source(path: str) -> tuple[checkpoint.Checkpointer, int]:
    ckpt = checkpoint.Checkpointer(path, async_save=False)
    step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(
            f"config.init_from={path!r} has no checkpoint (looked in {ckpt.directory}); pass a workdir of a "
            "finished or running zoomin_jax run, or a Keras Inception-ResNet-v2 .h5 weight file"
        )
    return ckpt, step


def load_backbone(path: str, target: Any, init_fn: Callable[[], Any]) -> Any:
    """`config.init_from_backbone`: another run's M-Net (backbone and grading head) into M-Net, and its backbone
    into C-Net layer by layer (C-Net's stack may be shallower: it takes the layers of the same name and shape and
    keeps the rest of its fresh init); A-Net and the other heads fresh. The source may be of another config (e.g.
    `configs/eyepacs256_pretrain.py`, other image sizes): only the M-Net's layers must fit.

    Raises:
      ValueError: the source's M-Net does not have this config's M-Net layout (another width or depth), naming the
        first layer that differs.
    """
    ckpt, step = _source(path)
    repl = jax.tree_util.tree_leaves(target)[0].sharding
    import orbax.checkpoint as ocp

    saved = ocp.StandardCheckpointHandler().metadata(ckpt.step_dir(step) / "model")  # the source's own tree
    source_target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=repl),
                                           dict(saved))
    source = jax.device_get(ckpt.restore(step, source_target)["model"])
    fresh = jax.device_get(init_fn())
    out = {col: dict(fresh[col]) for col in fresh}
    for col in ("params", "batch_stats"):
        for part in ("mnet", "mnet_head"):
            if part not in fresh[col]:
                continue
            _check_fits(fresh[col][part], source[col].get(part), f"{col}[{part!r}]", path)
            out[col][part] = source[col][part]
        cnet, copied, kept = dict(fresh[col]["cnet"]), 0, []
        for layer, value in fresh[col]["cnet"].items():
            theirs = source[col]["mnet"].get(layer)
            if theirs is not None and _shapes(theirs) == _shapes(value):
                cnet[layer], copied = theirs, copied + 1
            else:
                kept.append(layer)
        out[col]["cnet"] = cnet
        logging.info("init_from_backbone %s: C-Net took %d of its %d %s layers from the source's M-Net%s", path,
                     copied, copied + len(kept), col, f" (fresh: {', '.join(kept[:5])})" if kept else "")
    logging.info("Initialising M-Net (backbone and head) and C-Net's backbone from %s step %d; A-Net and the other "
                 "heads fresh", path, step)
    return place(out, target)


def _shapes(tree: Any) -> list:
    return [(jax.tree_util.keystr(p), tuple(np.shape(x))) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _check_fits(ours: Any, theirs: Any, what: str, path: str) -> None:
    if theirs is None:
        raise ValueError(f"config.init_from={path!r}: its checkpoint has no {what}")
    mine, other = dict(_shapes(ours)), dict(_shapes(theirs))
    if mine != other:
        diff = sorted(set(mine.items()) ^ set(other.items()))[0][0]
        raise ValueError(f"config.init_from={path!r} with init_from_backbone: {what}{diff} is "
                         f"{other.get(diff, 'absent')} there, {mine.get(diff, 'absent')} here (another width or "
                         "depth of M-Net); use a source trained with this config's model.mnet")


def load(path: str, target: Any, config: ml_collections.ConfigDict, init_fn: Callable[[], Any]) -> Any:
    """The variables a run without a checkpoint starts from, per `config.init_from`.

    Args:
      path: a Keras Inception-ResNet-v2 weight file (`.h5`) or a zoomin_jax workdir.
      target: abstract variables (ShapeDtypeStructs carrying the shardings) of the whole model.
      config: the run's config (for a `.h5`, its M-Net and C-Net must be the full network).
      init_fn: () -> freshly initialised, sharded variables; called only for a `.h5`, after the file is read.

    Returns:
      {'params', 'batch_stats'} on `target`'s shardings.
    """
    if not path.endswith(".h5"):
        if config.get("init_from_backbone", False):
            return load_backbone(path, target, init_fn)
        return load_workdir(path, target)
    check_full_backbones(config)
    backbone = keras_import.from_keras_h5(paths.resolve(path))
    logging.info("Initialising M-Net and C-Net from the Keras weights in %s; heads and A-Net from scratch", path)
    return place(merge_backbone(init_fn(), backbone), target)
