"""The grades of a prepared dataset in a sidecar file, so a sampler can learn them without reading any image.

Class-balanced sampling needs every training example's grade at the start of each run, on every host. Read from the
records, that is one full pass over the split, JPEG bytes included (35,126 photographs at 1230 px for EyePACS).
So preparation writes `labels.json` next to the array_record shards, once:

    {"version": 1, "shards": {"<shard file name>": [grade of record 0, grade of record 1, ...], ...},
     "patients": {"<shard file name>": [patient id of record 0, ...], ...}}      (datasets with patients only)

The patients serve the patient-wise split rule (`patient_split.py`) without reading the records either.

Per shard file, in record order, because TFDS shuffles records into shards at preparation: the file order is the only
order a source reads in. Any split string (slices such as "train[:80%]", unions such as "train+validation") is mapped
to the sidecar through the split's own file instructions (shard, skip, take), so the labels line up with `source[i]`
whatever the slice.

Written once for a dataset prepared before the sidecar existed:

    python -m zoomin_jax.data.label_sidecar ~/.cache/zoomin_jax/tfds/eyepacs/1230px/1.0.0
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
from absl import logging
from etils import epath

SIDECAR = "labels.json"
_VERSION = 1


def sidecar_path(data_dir: str | os.PathLike) -> epath.Path:
    """Where the sidecar of the prepared dataset in `data_dir` (a builder's versioned folder) lives."""
    return epath.Path(str(data_dir)) / SIDECAR


def write(builder: Any) -> epath.Path | None:
    """Writes the sidecar of a prepared builder (every split) unless it is there already; returns its path.

    Reads every record once (the same pass a run without the sidecar makes at each start), on the machine that
    prepares the dataset. The file is written under a temporary name and renamed, so a reader never sees half of it.
    A folder that cannot be written (a read-only copy of a prepared dataset) is logged and left as it is (None):
    readers then fall back to the records.
    """
    path = sidecar_path(builder.info.data_dir)
    if path.exists():
        return path
    t = time.perf_counter()
    with_patients = "patient_id" in builder.info.features
    shards: dict[str, list[int]] = {}
    patients: dict[str, list[int]] = {}
    for split, info in builder.info.splits.items():
        source = builder.as_data_source(split)
        records = [source[i] for i in range(len(source))]
        grades = [int(r["label"]) for r in records]
        ids = [int(r["patient_id"]) for r in records] if with_patients else []
        start = 0
        for fi in info.file_instructions:  # a whole split: every shard from record 0, in source order
            shards[os.path.basename(fi.filename)] = grades[start: start + fi.take]
            if with_patients:
                patients[os.path.basename(fi.filename)] = ids[start: start + fi.take]
            start += fi.take
    content = {"version": _VERSION, "shards": shards, **({"patients": patients} if with_patients else {})}
    tmp = path.parent / f".{SIDECAR}.tmp{os.getpid()}"
    try:
        tmp.write_text(json.dumps(content))
        tmp.rename(path)
    except OSError as e:
        logging.warning("could not write %s (%s); the labels will be read from the records at each start", path, e)
        return None
    logging.info("wrote %s (%d labels) in %.1f s", path, sum(map(len, shards.values())), time.perf_counter() - t)
    return path


def read(source: Any, field: str = "labels") -> np.ndarray | None:
    """The grade (or patient id) of every example of a TFDS data source, from the sidecar; None where it cannot say.

    Args:
      source: `builder.as_data_source(split)` (it carries `dataset_info` and `split`), or a
        `patient_split.Subset` of one (its `base` and `indices`); anything else gives None.
      field: "labels" (grades) or "patients" (patient ids; datasets with patients only).

    Returns:
      int64 (len(source),) aligned with `source[i]`, or None when the dataset has no sidecar (prepared before it
      existed), no such field, or the sidecar does not cover the split's shards.
    """
    base, indices = getattr(source, "base", None), getattr(source, "indices", None)
    if base is not None and indices is not None:
        values = read(base, field)
        return None if values is None else values[indices]
    info, split = getattr(source, "dataset_info", None), getattr(source, "split", None)
    if info is None or split is None:
        return None
    path = sidecar_path(info.data_dir)
    if not path.exists():
        return None
    shards = json.loads(path.read_text()).get("shards" if field == "labels" else field)
    if shards is None:
        return None
    out = []
    for fi in info.splits[str(split)].file_instructions:
        grades = shards.get(os.path.basename(fi.filename))
        if grades is None or len(grades) != fi.examples_in_shard:
            logging.warning("%s does not match shard %s; ignoring it", path, fi.filename)
            return None
        out.extend(grades[fi.skip: fi.skip + fi.take])
    labels = np.asarray(out, np.int64)
    return labels if len(labels) == len(source) else None


def main(argv: list[str]) -> None:
    import tensorflow_datasets as tfds

    if len(argv) != 2:
        raise SystemExit(f"usage: python -m zoomin_jax.data.label_sidecar <prepared dataset folder>\n\n{__doc__}")
    logging.set_verbosity(logging.INFO)
    print(write(tfds.builder_from_directory(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
