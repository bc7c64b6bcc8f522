"""Splits of a dataset with patients: a patient's photographs always fall on one side of a split.

The rule. Where a prepared dataset records a patient for each photograph (EyePACS: `<patient>_<left|right>`, the
`patient_id` feature), a slice of one of its splits selects **patients**, not photographs:
- the split's patients are put in a fixed order: by the sha256 of the decimal patient id (the same order in every
  run, for every seed and every process, and unrelated to the ids' own order, so a slice is a fair sample);
- `split[a%:b%]` takes the patients from position round(n a / 100) to round(n b / 100) of that order (n patients;
  the same rounding for the two ends of adjacent slices, so `[:80%]` and `[80%:]` share no patient and miss none);
  `split[i:j]` takes patients i to j; negative bounds count from the end, as in Python;
- with every photograph of those patients, in the split's own record order.
A split without a slice is the whole split; unions (`train[:10%]+validation`) are taken part by part. A dataset
without patients (synthetic, IDRiD, Messidor) is sliced by TFDS over photographs, as before.

The patients come from the label sidecar (`label_sidecar.py`, written at preparation), else from the records
(one pass, logged).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
from absl import logging

from zoomin_jax.data import label_sidecar

_PART = re.compile(r"^\s*(\w+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


class SplitError(ValueError):
    """A split string that names a split the prepared dataset does not have, or that cannot be read."""


def parse(split: str) -> list[tuple[str, str | None, str | None]]:
    """'train[:80%]+validation' -> [('train', None, '80%'), ('validation', None, None)]; the bounds as written.

    Raises:
      SplitError: a part that is not `name` or `name[from:to]`.
    """
    out = []
    for part in split.split("+"):
        m = _PART.match(part)
        if not m:
            raise SplitError(f"split {split!r}: {part!r} is not NAME or NAME[FROM:TO] (e.g. train[:80%])")
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def check(split: str, available: dict[str, int], what: str) -> None:
    """Raises SplitError naming the splits there are when `split` names one that is not in `available`.

    Args:
      split: a split string.
      available: {split name: number of examples} of the prepared dataset.
      what: what asked for it, for the message (e.g. "config.data.eval_split").
    """
    for name, _, _ in parse(split):
        if name not in available:
            there = ", ".join(f"{k} ({v} examples)" for k, v in available.items()) or "none"
            raise SplitError(f"{what}={split!r} names the split {name!r}, which this prepared dataset does not have: "
                             f"it has {there}. Choose one of those (slices such as '{next(iter(available), 'train')}"
                             "[:80%]' work), or prepare the download that holds it")


def patient_order(patients: np.ndarray) -> np.ndarray:
    """The distinct patient ids in the fixed order of the module docstring."""
    ids = sorted({int(p) for p in patients})
    return np.asarray(sorted(ids, key=lambda p: hashlib.sha256(str(p).encode()).hexdigest()), np.int64)


def _bound(text: str | None, n: int, default: int) -> int:
    if text is None:
        return default
    if text.endswith("%"):
        pct = int(text[:-1])
        k = int(np.floor(n * abs(pct) / 100 + 0.5))  # half up: the same for both ends of adjacent slices
        return k if pct >= 0 else max(n - k, 0)
    i = int(text)
    return min(i, n) if i >= 0 else max(n + i, 0)


def select(patients: np.ndarray, start: str | None, stop: str | None) -> np.ndarray:
    """Indices (record order) of the photographs whose patient is in the slice [start:stop] of the patients.

    Args:
      patients: the patient id of each photograph of one split, in record order.
      start, stop: the slice's bounds as written (`'80%'`, `'-20%'`, `'10'`, None).
    """
    order = patient_order(patients)
    n = len(order)
    chosen = order[_bound(start, n, 0): _bound(stop, n, n)]
    return np.flatnonzero(np.isin(patients, chosen))


class Subset:
    """Photographs `indices` of a random-access source: len, [i] and a batch read, picklable into grain workers.

    `base` and `indices` are public: `label_sidecar.read` maps the base split's grades through them."""

    def __init__(self, base: Any, indices: np.ndarray):
        self.base, self.indices = base, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[int(self.indices[i])]

    def __getitems__(self, keys) -> list:
        idx = [int(self.indices[k]) for k in keys]
        many = getattr(self.base, "__getitems__", None)
        return list(many(idx)) if many is not None else [self.base[i] for i in idx]

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {len(self.base)} examples)"


class Concat:
    """Sources one after another (a union of split parts)."""

    def __init__(self, parts: list[Any]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Any:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[k][int(i - self.offsets[k])]


def read_patients(source: Any) -> np.ndarray:
    """The patient id of every example of a whole split's source (record order), from the sidecar or the records."""
    patients = label_sidecar.read(source, field="patients")
    if patients is None:
        logging.info("reading the patient of each of %d records (no patients in the %s sidecar)", len(source),
                     label_sidecar.SIDECAR)
        patients = np.asarray([int(source[i]["patient_id"]) for i in range(len(source))], np.int64)
    return patients


def has_patients(builder: Any) -> bool:
    return "patient_id" in builder.info.features


def open_source(builder: Any, split: str) -> Any:
    """The source of `split` under the rule above (a TFDS data source where no patient is involved)."""
    parts = parse(split)
    if not has_patients(builder) or all(a is None and b is None for _, a, b in parts):
        return builder.as_data_source(split)
    sources = []
    for name, start, stop in parts:
        base = builder.as_data_source(name)
        sources.append(base if start is None and stop is None else Subset(base, select(read_patients(base), start,
                                                                                        stop)))
    return sources[0] if len(sources) == 1 else Concat(sources)


def patients_of(source: Any) -> np.ndarray | None:
    """The patient id of each example of a source from `open_source` (record order), or None for a dataset without
    patients."""
    if isinstance(source, Concat):
        parts = [patients_of(p) for p in source.parts]
        return None if any(p is None for p in parts) else np.concatenate(parts)
    base = source.base if isinstance(source, Subset) else source
    info = getattr(base, "dataset_info", None)
    if info is None or "patient_id" not in info.features:
        return None
    patients = read_patients(base)
    return patients[source.indices] if isinstance(source, Subset) else patients
