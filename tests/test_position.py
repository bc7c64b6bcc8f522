"""A saved data position is used only where it continues the pipeline at the checkpoint's step (`data/position.py`).

The oracle is grain itself: every saved state is set on a real iterator of each worker count, and the batch that
iterator yields next is compared with the batch the step names (batch k of `range(n).batch(2)` is [2k, 2k + 1]).
Grain accepts some states that do not fit (one worker's state on a two-worker iterator continues from another
batch, without an error): `misfit` must refuse exactly those that do not give the step's batch.
"""

import grain
import pytest
from absl import flags

from zoomin_jax.data import position

STEP = 7
WORKERS = (0, 1, 2)


def _iterator(workers: int, start: int = 0):
    ds = grain.MapDataset.range(400).batch(2).slice(slice(start, None)).to_iter_dataset()
    if workers:
        flags.FLAGS.mark_as_parsed()  # grain's worker start reads its absl flags
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=1))
    return iter(ds)


def _state_after(workers: int, steps: int, start: int = 0) -> dict:
    it = _iterator(workers, start)
    for _ in range(steps):
        next(it)
    state = it.get_state()
    it.close()
    return state


def _next_after_set(workers: int, state: dict):
    """The batch an iterator of `workers` yields after `set_state(state)`, or None if grain refuses the state."""
    it = _iterator(workers)
    try:
        it.set_state(state)
        return [int(x) for x in next(it)]
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    finally:
        it.close()


@pytest.fixture(scope="module")
def saved():
    return {w: _state_after(w, STEP) for w in WORKERS}


@pytest.mark.slow  # worker processes
def test_a_position_is_used_exactly_where_it_gives_the_steps_batch(saved):
    want = [2 * STEP, 2 * STEP + 1]
    silent = []
    for w_saved in WORKERS:
        for w_now in WORKERS:
            reason = position.misfit(saved[w_saved], _iterator(w_now).get_state(), STEP)
            got = _next_after_set(w_now, saved[w_saved])
            assert (reason is None) == (got == want), (w_saved, w_now, reason, got)
            if reason is not None and got is not None:
                silent.append((w_saved, w_now, got))
            if w_saved == w_now:
                assert reason is None
    # Grain alone would have gone on from a wrong batch at least once (1 worker's state, 2 workers now).
    assert (1, 2, [4 * STEP, 4 * STEP + 1]) in silent, silent


@pytest.mark.slow  # worker processes
def test_the_derived_position_gives_the_steps_batch_for_every_worker_count():
    for w in WORKERS:
        it = _iterator(w, start=STEP)
        assert [int(x) for x in next(it)] == [2 * STEP, 2 * STEP + 1]
        it.close()


def test_a_state_saved_after_a_derived_start_counts_from_there_and_is_refused():
    """A run that resumed from a derived position (start 3) and saved at step 7 has counted 4 batches: set on a
    fresh iterator that state would yield batch 4."""
    state = _state_after(0, STEP - 3, start=3)
    assert position.produced(state) == STEP - 3
    assert "counts 4 batches, not 7" in position.misfit(state, _iterator(0).get_state(), STEP)
    assert _next_after_set(0, state) == [2 * (STEP - 3), 2 * (STEP - 3) + 1]
