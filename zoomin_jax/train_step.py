"""The pure pieces of training: TrainState, the stage plan, the masked optimiser, and the jitted train step.

No data-pipeline or checkpoint imports, so benchmarks can time the step on in-memory arrays on a bare machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from zoomin_jax import photometric, regions, sharding
from zoomin_jax.models.zoom_in import SUBNETWORKS, ZoomInNet

# The host batch's fields the train step reads (train.py sends these to the devices; the others stay on the host).
STEP_KEYS = ("image", "label", "photometric", "fov_rows")

# Loss-weight key -> model output. "patch" grades each zoomed-in patch with its image's grade (B, N', K).
HEAD_LOGITS = {"final": "logits", "mnet": "mnet_logits", "anet": "anet_logits", "patch": "patch_logits",
               "pair": "pair_logits"}


PATCH_LABELS = ("image", "most_lesion_like")


def _cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, patch_labels: str = "image") -> jnp.ndarray:
    """Mean cross-entropy. Per-patch logits (B, N, K): with patch_labels "image" every patch takes its image's
    grade; with "most_lesion_like" (multiple-instance) a grade-0 image's patches all take grade 0 (none shows a
    lesion) and a graded image's grade is carried by one patch only, the one its own prediction finds least like
    grade 0 (the choice is not differentiated): a patch beside the lesion is no longer taught that it shows it."""
    if logits.ndim == 2:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    per_patch = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(labels[:, None], logits.shape[:2]))  # (B, N)
    if patch_labels == "image":
        return per_patch.mean()
    n = logits.shape[1]
    lesion_like = jax.lax.stop_gradient(1.0 - jax.nn.softmax(logits, axis=-1)[..., 0])  # (B, N)
    one = jax.nn.one_hot(jnp.argmax(lesion_like, axis=1), n, dtype=per_patch.dtype)
    weight = jnp.where(labels[:, None] == 0, 1.0 / n, one)  # each image's weights sum to one
    return jnp.sum(weight * per_patch) / logits.shape[0]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


class Stage(NamedTuple):
    name: str
    begin: int  # first global step of the stage
    end: int  # one past its last step
    config: ml_collections.ConfigDict


def stages(config: ml_collections.ConfigDict) -> list[Stage]:
    """The stages in order with their global step ranges.

    Raises:
      ValueError: a stage without steps (one given in epochs needs `schedule.resolve` first).
    """
    out, step = [], 0
    for name in config.stage_order:
        s = config.stages[name]
        if s.steps <= 0:
            raise ValueError(
                f"stage {name!r} has steps={s.steps}: set config.stages.{name}.steps, or its epochs (> 0) and pass "
                "the config through schedule.resolve(config, num_train) first, as train_and_evaluate does"
            )
        out.append(Stage(name, step, step + s.steps, s))
        step += s.steps
    return out


def frozen_subnetworks(stage: ml_collections.ConfigDict) -> tuple[str, ...]:
    return tuple(k for k in SUBNETWORKS if k not in stage.trainable)


def make_optimizer(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict, params: Any):
    """The stage's optimiser: warm-up + cosine decay, clipping, weight decay; frozen sub-networks get zero updates."""
    o = config.optimizer
    warmup = int(round(o.warmup_fraction * stage.steps))
    lr = optax.warmup_cosine_decay_schedule(
        0.0, stage.lr, max(warmup, 1), max(stage.steps, warmup + 1), end_value=stage.lr * o.final_lr_fraction
    )
    if o.name == "adamw":
        core = optax.adamw(lr, weight_decay=o.weight_decay)
    elif o.name == "sgd":
        core = optax.chain(optax.add_decayed_weights(o.weight_decay), optax.sgd(lr, momentum=0.9, nesterov=True))
    else:
        raise ValueError(f"config.optimizer.name={o.name!r}: use 'adamw' or 'sgd'")
    if o.clip_norm:
        core = optax.chain(optax.clip_by_global_norm(o.clip_norm), core)
    owner = {key: sub for sub, keys in SUBNETWORKS.items() for key in keys}
    labels = {k: "train" if owner[k] in stage.trainable else "frozen" for k in params}
    return optax.multi_transform({"train": core, "frozen": optax.set_to_zero()}, labels)


def make_train_step(model: ZoomInNet, config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict, tx,
                    mesh: Mesh, state_sharding: Any) -> Callable:
    """jit(state, batch) -> (state, metrics) for one stage; donates the state; batch sharded on 'data'."""
    frozen = frozen_subnetworks(stage)
    weights = {k: float(w) for k, w in stage.loss.items() if w}
    if not weights:
        raise ValueError(f"stage {stage} has no loss weight above zero")

    def loss_fn(params, batch_stats, images, labels, rng, fov_rows):
        fov = None if fov_rows is None else regions.fov_mask(fov_rows, images.shape[1])
        out, new = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, frozen=frozen, fov=fov,
            rngs={"dropout": rng}, mutable=["batch_stats"],
        )
        # Only heads with a weight enter the loss, so XLA drops what a stage does not need (C-Net in stage 1).
        losses = {
            k: _cross_entropy(out[HEAD_LOGITS[k]], labels, config.get("patch_labels", "image")) for k in weights
        }
        total = sum(weights[k] * losses[k] for k in weights)
        head = max((k for k in weights if k != "patch"), key=weights.get, default="final")
        accuracy = jnp.mean(jnp.argmax(out[HEAD_LOGITS[head]], -1) == labels)
        return total, (losses, accuracy, new["batch_stats"])

    def step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)
        images = batch["image"]
        if "photometric" in batch:  # brightness x contrast drawn by the host's augmentation, applied here
            images = photometric.jitter(images, batch["photometric"])
        (loss, (losses, accuracy, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, images, batch["label"], rng, batch.get("fov_rows")
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
        metrics.update({f"loss_{k}": v for k, v in losses.items()})
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new_state, metrics

    return jax.jit(
        step,
        in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=0,
    )
