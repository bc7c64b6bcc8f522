"""A thin Orbax wrapper: the model variables, the optimiser state and the data-iterator position, saved together.

Three items per step, so evaluation can restore the model alone (without the optimiser of whichever stage wrote
it, and without the training data): `model` = {params, batch_stats}, `opt` = {step, opt_state}, `data` = the grain
iterator state. Saves are asynchronous; the manager keeps the last `keep` steps.
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from zoomin_jax import paths


def _write_replicated_arrays_once() -> None:
    """Orbax's default 'replica-parallel' save slices each replicated array over its replicas, jitting one small
    program per array shape: ~330 compilations on the first save of even the tiny test model (15-55 s on 2 CPU
    cores, in every new process). Parameters and optimiser state are replicated here (data parallelism only), so
    the first replica writes each array whole instead: one host writes, which for the paper-scale model is ~1.3 GB
    per checkpoint, asynchronously."""
    from orbax.checkpoint._src.metadata import array_metadata_store

    handler = ocp.type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                             use_replica_parallel=False)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def abstract_with_sharding(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for restoring straight into sharded arrays."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


class Checkpointer:
    """Saves and restores one run's checkpoints under `<workdir>/checkpoints`."""

    _registered = False  # the array handler above, once per process

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        if not Checkpointer._registered:
            _write_replicated_arrays_once()
            Checkpointer._registered = True
        self.directory = str(paths.join(paths.resolve(workdir), "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("model", "opt", "data"))

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, model: Any, opt: Any, data_iterator: Any | None) -> None:
        """Starts an asynchronous save of `model` ({params, batch_stats}), `opt` and the iterator position."""
        items = {"model": ocp.args.StandardSave(model), "opt": ocp.args.StandardSave(opt)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, model: Any | None, opt: Any | None = None, data_iterator: Any | None = None) -> dict:
        """Restores the items asked for.

        Args:
          step: which checkpoint.
          model: abstract target of {params, batch_stats} (see `abstract_with_sharding`), or None to skip it.
          opt: abstract target of {step, opt_state}, or None to skip the optimiser.
          data_iterator: a grain iterator whose position is set in place, or None.

        Returns:
          {'model': ..., 'opt': ... (if asked)}.
        """
        items = {}
        if model is not None:
            items["model"] = ocp.args.StandardRestore(model)
        if opt is not None:
            items["opt"] = ocp.args.StandardRestore(opt)
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return {k: restored[k] for k in ("model", "opt") if k in items}

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
