"""Skip counting of the real-dataset builders: what a split drops, by reason, each example once.

The builders (`real_builder.py` and the datasets on it) never guess a label or keep a damaged photograph: they skip
it and count the reason here, so a split's counts sum to the examples it dropped.
"""

from __future__ import annotations

import collections

from absl import logging


class SkipCounter:
    """Counts what one split drops, by reason, and remembers a few ids per reason for the log.

    unit="example" (photos and label rows): each example id is counted once, under the first reason found, so
    `total` is the number of examples dropped; a photo whose label rows conflict is "conflicting_rows", not also
    "no_label" when its (then absent) row is looked up. unit="row" (the lesion-boxes CSV, whose rows are not
    examples): every call counts. Repeated label rows that agree drop nothing (the example is kept once): they are
    noted apart, in `duplicates`, and not in the skip total.
    """

    def __init__(self, split: str, keep_ids: int = 5, unit: str = "example"):
        if unit not in ("example", "row"):
            raise ValueError(f"unit={unit!r}: 'example' or 'row'")
        self.split, self.unit = split, unit
        self.counts: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self._reason_of: dict[str, str] = {}
        self._ids: dict[str, list[str]] = collections.defaultdict(list)
        self._keep_ids = keep_ids

    def add(self, reason: str, example_id: str = "") -> bool:
        """Counts `example_id` as dropped for `reason`; False (nothing counted) if the example was counted before."""
        if self.unit == "example":
            if not example_id:
                raise ValueError(f"split {self.split}: an example skipped for {reason!r} needs its id")
            if example_id in self._reason_of:
                logging.debug("split %s: %s already skipped (%s), not again as %s", self.split, example_id,
                              self._reason_of[example_id], reason)
                return False
            self._reason_of[example_id] = reason
        self.counts[reason] += 1
        if example_id and len(self._ids[reason]) < self._keep_ids:
            self._ids[reason].append(example_id)
        return True

    def note_duplicate(self, example_id: str) -> None:
        """A label row that repeats another one exactly: merged, the example is kept (not a skip)."""
        self.duplicates += 1
        if len(self._ids["duplicate"]) < self._keep_ids:
            self._ids["duplicate"].append(example_id)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def log(self, kept: int) -> None:
        """Logs the split's totals (absl), with example ids per reason."""
        merged = (f"; {self.duplicates} duplicate label row(s) merged, kept once (e.g. "
                  f"{', '.join(self._ids['duplicate'])})" if self.duplicates else "")
        if not self.counts:
            logging.info("split %s: %d examples, none skipped%s", self.split, kept, merged)
            return
        detail = "; ".join(f"{r}: {n} (e.g. {', '.join(self._ids[r])})" for r, n in sorted(self.counts.items()))
        logging.warning("split %s: %d examples, %d %ss skipped -- %s%s", self.split, kept, self.total, self.unit,
                        detail, merged)
