"""Whether a saved data-iterator position fits this run's train pipeline.

The train pipeline is a pure function of the global step (`input_pipeline`: global batch k holds positions
[k G, (k+1) G), whatever the number of processes or workers), so a resume can always continue from the position
the step implies (`train_iterator(start_step=step)`). A saved grain iterator state is used only where it is
exactly what this pipeline would have saved at that step; grain itself does not check that: a state saved with one
input worker, set on an iterator with two, continues without an error from another batch than the step's.

A state fits when
- its layout equals the current iterator's own state (the same keys, the same number of per-worker states: the
  same `data.num_workers`), and
- the batches it has produced, the sum of its `next_index` counters (one per worker; grain's `next_index` counts
  the elements an iterator has yielded), equal the step. A state saved by a run that itself resumed from a derived
  position counts from that run's start (`start_step`) and fails this test: it is then derived again.
"""

from __future__ import annotations

from typing import Any


def _layout(state: Any) -> Any:
    """The state with every value but dict keys and list lengths forgotten."""
    if isinstance(state, dict):
        return {k: _layout(v) for k, v in sorted(state.items())}
    if isinstance(state, list | tuple):
        return [_layout(v) for v in state]
    return type(state).__name__


def produced(state: Any) -> int:
    """The sum of the `next_index` counters anywhere in a grain iterator state."""
    if isinstance(state, dict):
        return sum(int(v) if k == "next_index" and isinstance(v, int) else produced(v) for k, v in state.items())
    if isinstance(state, list | tuple):
        return sum(produced(v) for v in state)
    return 0


def misfit(saved: dict, fresh: dict, step: int) -> str | None:
    """Why `saved` cannot continue `fresh`'s pipeline at `step` (one phrase), or None where it fits.

    Args:
      saved: the iterator state stored with the checkpoint.
      fresh: `get_state()` of the current pipeline's iterator, not yet advanced.
      step: the checkpoint's global step.
    """
    if _layout(saved) != _layout(fresh):
        return "saved by a pipeline of another layout (another data.num_workers?)"
    if (n := produced(saved)) != step:
        return f"it counts {n} batches, not {step} (saved by a run that itself started from a derived position?)"
    return None
