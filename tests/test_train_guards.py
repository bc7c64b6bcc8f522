"""The trainer's guards: a non-finite loss stops the run naming the steps; SIGTERM is caught; progress has an ETA."""

import os
import signal

import jax.numpy as jnp
import pytest

from zoomin_jax import train
from zoomin_jax.progress import Progress


def test_non_finite_loss_names_the_step_and_the_last_good_checkpoint():
    pending = [(10, {"loss": jnp.float32(1.0)}), (11, {"loss": jnp.float32(jnp.nan)}),
               (12, {"loss": jnp.float32(jnp.inf)})]
    expected = r"at step 12 \(checked steps 11-13\).*last good checkpoint is step 10"
    with pytest.raises(FloatingPointError, match=expected):
        train._check_finite(pending, last_good=10)
    fetched = train._check_finite(pending[:1], last_good=10)
    assert float(fetched[0]["loss"]) == 1.0


def test_sigterm_requests_a_save_and_exit_instead_of_killing():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        p = train._Preemption()
        assert not p.requested
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
        assert p.requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_progress_line_has_rate_images_per_second_and_eta(monkeypatch):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr("zoomin_jax.progress.time.perf_counter", lambda: next(clock))
    p = Progress(total_steps=1000, global_batch=8, start_step=0)
    line = p.line(50, "mnet", {"loss": 0.5})
    # 50 steps in 10 s: 5 steps/s, 40 img/s, 950 steps left -> 190 s.
    assert "step 50/1000" in line and "5.00 steps/s" in line and "40.0 img/s" in line and "ETA 3m10s" in line
