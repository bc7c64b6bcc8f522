"""The model of a training run's checkpoint, for evaluation, predict, lesion mining and export."""

from __future__ import annotations

import jax
import ml_collections

from zoomin_jax import checkpoint, sharding
from zoomin_jax.forward import abstract_variables, build


def restore_model(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
    """The model of a training run's checkpoint (no optimiser, no training data), replicated on the mesh.

    Returns:
      (model, mesh, variables, step). Raises FileNotFoundError when the workdir has no such checkpoint, and
      `checkpoint.BrokenCheckpoint` naming an intact step to use instead when it fails its checks.
    """
    mesh = sharding.make_mesh(config.mesh.data)
    model = build(config)
    ckpt = checkpoint.Checkpointer(workdir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None or step not in ckpt.all_steps():
        raise FileNotFoundError(
            f"No checkpoint{'' if step is None else f' at step {step}'} in {ckpt.directory} "
            f"(available: {ckpt.all_steps() or 'none'}); train first with --mode=train and the same --workdir"
        )
    abstract = abstract_variables(model, config)
    repl = sharding.replicated(mesh)
    target = checkpoint.abstract_with_sharding(abstract, jax.tree_util.tree_map(lambda _: repl, abstract))
    try:
        variables = ckpt.restore(step, target)["model"]
    except checkpoint.BrokenCheckpoint as e:  # refused, never used; the fix names an intact step
        good = ckpt.newest_intact_step(other_than=step)
        use = f"use step {good} with --step={good}" if good is not None else "no other step is intact"
        raise checkpoint.BrokenCheckpoint(step, e.reason, f"{use}, or remove {ckpt.step_dir(step)} (a training "
                                          "run moves it aside itself and resumes from the newest good step)"
                                          ) from None
    return model, mesh, variables, step
