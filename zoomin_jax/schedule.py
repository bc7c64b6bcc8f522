"""Stage lengths in epochs and learning rates for a reference batch, resolved to steps and the run's batch.

A recipe for a real dataset is written in epochs over its training split and in learning rates for a stated global
batch (configs/full.py); the trainer counts steps at `config.batch_size`. `resolve` turns the first into the second
once the training split's size is known (`input_pipeline.num_train_examples`), so the same recipe stays right when the
user changes the batch or trains on a slice of the split. Stages given in steps (configs/default.py) pass unchanged.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_collections


def epochs_to_steps(epochs: float, num_examples: int, batch_size: int) -> int:
    """Steps that show the model `epochs` passes over `num_examples` examples at `batch_size` per step.

    Rounded up, so a stage never sees less than it asked for: ceil(epochs * num_examples / batch_size).
    """
    if epochs <= 0 or num_examples <= 0 or batch_size <= 0:
        raise ValueError(f"need epochs, examples and batch > 0, got {epochs}, {num_examples}, {batch_size}")
    # Exact arithmetic: 0.1 epoch of 320 examples at batch 32 is 1 step, not ceil(1.0000000000000002) = 2.
    return math.ceil(Fraction(repr(float(epochs))) * num_examples / batch_size)


def lr_scale(optimizer: str, batch_size: int, reference_batch: int) -> float:
    """The factor a learning rate tuned at `reference_batch` takes at `batch_size` (1.0 when reference_batch is 0).

    SGD: linear in the batch (Goyal et al. 2017, "Accurate, large minibatch SGD"). AdamW: square root of the batch,
    because Adam normalises the update by the gradient's scale, and the noise of a mean over b examples falls as
    1/sqrt(b) (Malladi et al. 2022, "On the SDEs and scaling rules for adaptive gradient algorithms").
    """
    if not reference_batch:
        return 1.0
    ratio = batch_size / reference_batch
    if optimizer == "sgd":
        return ratio
    if optimizer == "adamw":
        return math.sqrt(ratio)
    raise ValueError(f"config.optimizer.name={optimizer!r}: use 'adamw' or 'sgd'")


def resolve(config: ml_collections.ConfigDict, num_train: int) -> ml_collections.ConfigDict:
    """A copy of `config` whose stages have steps and learning rates for `config.batch_size`.

    Args:
      config: a full config; a stage with `epochs > 0` lasts `epochs_to_steps(epochs, num_train, batch_size)` steps
        (its `steps` is replaced); with `optimizer.reference_batch > 0` every stage's lr is scaled by
        `lr_scale(...)` and `reference_batch` is set to the batch, so resolving twice changes nothing.
      num_train: examples in the training split (`input_pipeline.num_train_examples(config)`).

    Returns:
      The resolved copy (the input, possibly locked by the command line, is left as it was).
    """
    out = config.copy_and_resolve_references()
    batch = int(out.batch_size)
    scale = lr_scale(out.optimizer.name, batch, int(out.optimizer.reference_batch))
    for name in out.stage_order:
        stage = out.stages[name]
        if stage.epochs:
            stage.steps = epochs_to_steps(float(stage.epochs), num_train, batch)
        stage.lr = float(stage.lr) * scale
    if out.optimizer.reference_batch:
        out.optimizer.reference_batch = batch
    return out
