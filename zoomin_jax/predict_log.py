"""The append-only record of a `--mode=predict` run: what is done survives a kill, and the same command continues.

Each graded batch appends its photographs' records to `<output>/predictions.jsonl` (one JSON object per line, the
records `predictions.json` holds) and each file that could not be used a line to `<output>/unreadable.jsonl`, both
flushed and fsynced before the next batch; `predictions.csv` and `unreadable.csv` grow with them. Run again with
the same output folder, predict reads both records, keeps every complete line (a line cut by a kill is dropped and
its photograph graded again), rewrites the two CSVs from them and grades only the photographs not yet in either.
`predictions.json` and `report.html` are written at the end, from every record.

A record belongs to one checkpoint step (`<output>/predict_state.json`): a folder holding another step's
predictions is refused (mixing two checkpoints' grades in one table would be a silent wrong answer), naming both
steps and the way out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from absl import logging

STATE = "predict_state.json"


class OtherStep(ValueError):
    """The output folder holds predictions of another checkpoint step."""


def _read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # cut by a kill mid-write: graded again
            logging.info("%s: dropped an incomplete line (graded again)", path.name)
    return out


class Record:
    """The predictions and unreadable files of one output folder, resumable (module docstring)."""

    def __init__(self, out_dir: Path, step: int, workdir: str):
        self.out_dir = out_dir
        state = out_dir / STATE
        if state.exists():
            before = json.loads(state.read_text())
            if int(before["step"]) != int(step):
                raise OtherStep(
                    f"{out_dir} holds predictions of checkpoint step {before['step']} (of {before['workdir']}); this "
                    f"run uses step {step}. Pass --step={before['step']} to continue them, or another --output")
            self.state = before
        else:
            self.state = {"step": int(step), "workdir": str(workdir)}
            state.write_text(json.dumps(self.state))
        self.rows = _read_lines(out_dir / "predictions.jsonl")
        self.unreadable = _read_lines(out_dir / "unreadable.jsonl")
        self.done = {r["item"] for r in self.rows} | {r["item"] for r in self.unreadable}
        for name, records in (("predictions.jsonl", self.rows), ("unreadable.jsonl", self.unreadable)):
            (out_dir / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        self._jsonl = {name: open(out_dir / name, "a", encoding="utf-8")
                       for name in ("predictions.jsonl", "unreadable.jsonl")}

    def save_state(self, **values) -> None:
        """Adds `values` to the folder's state (e.g. the pictures' colour scales, kept for a resumed run)."""
        self.state.update(values)
        path = self.out_dir / STATE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, path)

    def add(self, rows: list[dict], unreadable: list[dict]) -> None:
        """Appends and syncs a batch's records (each carries its 'item' key)."""
        for name, records, kept in (("predictions.jsonl", rows, self.rows),
                                    ("unreadable.jsonl", unreadable, self.unreadable)):
            if not records:
                continue
            f = self._jsonl[name]
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
            kept += records
            self.done |= {r["item"] for r in records}

    def close(self) -> None:
        for f in self._jsonl.values():
            f.close()


def unreadable_row(item: str, path: str, reason: str, detail: str) -> dict[str, Any]:
    return {"item": item, "path": path, "reason": reason, "detail": detail}
