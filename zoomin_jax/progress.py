"""Progress lines with rate and ETA, and metrics written as JSON lines and TensorBoard events in the workdir."""

from __future__ import annotations

import json
import os
import time

from absl import logging

from zoomin_jax import paths


def format_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def rate_and_eta(done: float, total: float, since_done: float, since_time: float,
                 now: float | None = None) -> tuple[float, str]:
    """The one rule for every progress line (training, evaluation, predict): the rate since a mark (items per
    second) and the time left at that rate, '?' while nothing has been done since the mark (no division by zero
    when the first line comes at once, e.g. after a slow first batch)."""
    now = time.perf_counter() if now is None else now
    rate = (done - since_done) / max(now - since_time, 1e-9)
    return rate, (format_seconds((total - done) / rate) if rate > 0 else "?")


class Progress:
    """Steps per second, images per second and ETA over a moving window of recent steps."""

    def __init__(self, total_steps: int, global_batch: int, start_step: int = 0):
        self.total, self.batch = total_steps, global_batch
        self.last_step, self.last_time = start_step, time.perf_counter()

    def line(self, step: int, stage: str, scalars: dict[str, float]) -> str:
        now = time.perf_counter()
        rate, eta = rate_and_eta(step, self.total, self.last_step, self.last_time, now)
        self.last_step, self.last_time = step, now
        values = " ".join(f"{k} {v:.4f}" for k, v in scalars.items())
        speed = f"{rate:.2f} steps/s {rate * self.batch:.1f} img/s"
        return f"[{stage}] step {step}/{self.total} {values} | {speed} ETA {eta}"


class MetricWriter:
    """Appends {'step', 'kind', ...} records to <workdir>/metrics.jsonl and scalars to TensorBoard event files.

    On resume (`resume_step`), rows of steps after it are dropped when the writer opens: those steps are trained
    again and write their rows anew, so each step has one row however often the run was interrupted.
    """

    def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = paths.join(workdir, "metrics.jsonl")
        self.remote = paths.is_remote(str(workdir))
        self.records: list[str] = []  # remote files cannot be appended to: rewritten whole
        self.tb = None
        if not enabled:
            return
        if self.path.exists() and (resume_step is not None or self.remote):
            self._rewrite([r for r in self.path.read_text().splitlines(keepends=True)
                           if r.strip() and (resume_step is None or _step(r) <= resume_step)])
        if not self.remote:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:  # TensorBoard files are a convenience; JSON lines are the record
                logging.warning("tensorboardX is not installed: writing metrics.jsonl only")

    def _rewrite(self, lines: list[str]) -> None:
        if self.remote:
            self.records = lines
            self.path.write_text("".join(lines))
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write("".join(lines))
        os.replace(tmp, self.path)  # a crash mid-rewrite leaves the old file, never half of it

    def drop(self, step: int, kind: str) -> None:
        """Removes the rows of one kind at one step (an evaluation about to be run again)."""
        if not self.enabled or not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        self._rewrite([r for r in lines if r.strip() and not (_step(r) == step and json.loads(r).get("kind") == kind)])

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), "kind": kind, **values}) + "\n"
        if self.remote:
            self.records.append(line)
            self.path.write_text("".join(self.records))
        else:
            with open(self.path, "a") as f:
                f.write(line)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line cut by a crash mid-write: dropped with the replayed steps
        return 1 << 62
