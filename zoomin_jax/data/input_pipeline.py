"""The input pipeline: grain over TFDS `array_record` data sources, host-local numpy batches, no TensorFlow.

Train (`train_iterator`): an infinite stream of global sample positions 0, 1, 2, ...; position p belongs to epoch
p // n (n = split size) and names an example through a per-epoch permutation (grain's index shuffle, reseeded every
epoch) or, with `config.data.balance.enabled`, through a per-epoch sample with replacement from class-balanced
weights. Each position is read, decoded and augmented (a grain `random_map`, so the augmentation's generator is
seeded by the config seed and the global position: the same whatever the number of processes or workers). Global
batch k holds positions [k G, (k+1) G) (G = config.batch_size); process i of P keeps the contiguous block
[k G + i b, k G + (i+1) b) of it (b = G / P rows), so processes see disjoint parts of every global batch and together
all of it, and the global array they assemble (devices in process order) has the one-process row order. Batching on
the random-access dataset, then grain turns it into an iterator with thread prefetch and `num_workers` worker
processes. The iterator's position is `iterator.get_state()`; `set_state` on a fresh iterator continues with
bit-identical batches (see `docs/input_pipeline.md` for Orbax).

Eval (`eval_iterator`): positions 0 .. n-1 padded to whole global batches, `num_eval_steps(n, G)` steps on every
process; process i reads a contiguous shard. Padding rows have mask False and index -1. Test-time variants are made
on the device by the eval step (`eval_step.forward_with_tta`), not here.

Host batch format (a dict of numpy arrays; b = global batch / process_count rows, S = model.image_size,
L = data.max_lesions):
  image        uint8 (b, S, S, 3)   the high-resolution image (the model derives the low-res view on device)
  label        int32 (b,)           grade 0-4
  lesion_boxes int32 (b, L, 4)      (y0, x0, y1, x1), end exclusive, image pixels; zero rows are padding
  lesion_kinds int32 (b, L)         index into features.LESION_KINDS
  lesion_valid bool  (b, L)
  index        int32 (b,)           the example's position in the split (-1: eval padding)
  photometric  float32 (b, 2)      train batches: each image's (brightness, contrast) factors, applied in the train
                                    step (`zoomin_jax.photometric`; the image itself is only moved, not recoloured)
  fov_rows     int16 (b, S, 2)      train batches with `model.regions.fov` (always in eval batches, below): the
                                    field of view moved with the augmented image
eval batches also:
  mask         bool  (b,)           False on padding rows
  id           object (b,) of str   the example's id ("" on padding); host only: pop it before `to_global`.
  fov_rows     int16 (b, S, 2)      field of view: per image row the columns [x0, x1) showing the retina (`fov.py`;
                                    stored by IDRiD, else found from the image's non-black pixels), for the chance
                                    level of lesion recall
  optic_disc   int32 (b, 4)         the optic disc's box where the dataset has one (IDRiD with a boxes CSV), else 0
  optic_disc_valid bool (b,)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import grain
import ml_collections
import numpy as np
from absl import flags, logging

from zoomin_jax.data import augment as augment_lib
from zoomin_jax.data import fov as fov_lib
from zoomin_jax.data import label_sidecar
from zoomin_jax.data import pairs as pairs_lib

# ------------------------------------------------------------------------------------------------- decoding


# Decode to RGB directly (no BGR pass) and ignore any EXIF orientation tag, as PIL does (OpenCV would otherwise turn
# the image; the builders store none). A grayscale JPEG comes out with its one plane repeated in all three channels.
_DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
def decode_jpeg(data: bytes) -> np.ndarray:
    """Decodes JPEG bytes to uint8 RGB (OpenCV's libjpeg-turbo; the pixels equal PIL's for the stored JPEGs).

    Raises:
      ValueError: if OpenCV cannot decode `data`.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    if image is None:
        raise ValueError(f"cannot decode the image ({len(data)} bytes; expected JPEG)")
    return image


# ------------------------------------------------------------------------------------------------- examples

_truncated = 0  # examples of this process whose lesion list was cut to max_lesions


def pad_lesions(boxes: Any, kinds: Any, max_lesions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lesion boxes and kinds padded with zeros (or truncated) to `max_lesions`, with a validity mask.

    Truncations are counted per process and logged (at most once a minute).

    Args:
      boxes: (N, 4) boxes or a list of 4-vectors (possibly empty).
      kinds: (N,) lesion kinds.
      max_lesions: L.

    Returns:
      (boxes int32 (L, 4), kinds int32 (L,), valid bool (L,)).
    """
    global _truncated
    boxes = np.asarray(boxes, np.int32).reshape(-1, 4)
    kinds = np.asarray(kinds, np.int32).reshape(-1)
    n = len(boxes)
    if n > max_lesions:
        _truncated += 1
        logging.log_every_n_seconds(
            logging.WARNING,
            "%d example(s) in this process had more than data.max_lesions=%d lesion boxes (latest: %d); the extra "
            "boxes were dropped",
            60,
            _truncated,
            max_lesions,
            n,
        )
        n = max_lesions
    out_boxes = np.zeros((max_lesions, 4), np.int32)
    out_kinds = np.zeros((max_lesions,), np.int32)
    valid = np.zeros((max_lesions,), bool)
    out_boxes[:n], out_kinds[:n], valid[:n] = boxes[:n], kinds[:n], True
    return out_boxes, out_kinds, valid


def _check_size(image: np.ndarray, size: int, index: int) -> None:
    if image.shape != (size, size, 3):
        raise ValueError(
            f"example {index}: stored image is {image.shape[1]}x{image.shape[0]} but model.image_size={size}; "
            "prepare the dataset at model.image_size (datasets.open_split does this for the configured size)"
        )


def _example(record: dict, index: int, image: np.ndarray, boxes: Any, kinds: Any, max_lesions: int) -> dict:
    lesion_boxes, lesion_kinds, lesion_valid = pad_lesions(boxes, kinds, max_lesions)
    return {
        "image": image,
        "label": np.int32(record["label"]),
        "lesion_boxes": lesion_boxes,
        "lesion_kinds": lesion_kinds,
        "lesion_valid": lesion_valid,
        "index": np.int32(index),
    }


class DecodedCache:
    """Decoded training examples kept in memory, up to a byte budget (`config.data.cache_gb`, per process).

    Epochs after the first then skip reading and decoding (0.6 ms of a 400 px photograph's 1.5 ms of host work on
    one core, docs/input_pipeline.md): the first examples read fill it, later ones past the budget are decoded every
    time (no eviction: nothing to tune, nothing thrashes). The cached image is the one decoding gives, so batches
    are bit-identical with or without it. Thread-safe (grain's read threads share it); a worker process gets an
    empty one of the same budget (the contents are not pickled).
    """

    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self._items: dict[int, tuple[dict, np.ndarray]] = {}
        self._used = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"budget": self.budget}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["budget"])

    def get(self, index: int) -> tuple[dict, np.ndarray] | None:
        return self._items.get(index)

    def put(self, index: int, record: dict, image: np.ndarray) -> None:
        with self._lock:
            if index in self._items or self._used + image.nbytes > self.budget:
                return
            image.setflags(write=False)  # shared by every later epoch: no consumer may change it in place
            self._items[index] = ({k: v for k, v in record.items() if k != "image"}, image)
            self._used += image.nbytes


class _TrainExample(grain.transforms.RandomMap):
    """Example index -> decoded, augmented, padded example (the generator comes from grain, per position)."""

    def __init__(self, source: Any, image_size: int, max_lesions: int, flags: dict, fov: bool = False,
                 graham: bool = False, cache: DecodedCache | None = None):
        self.source, self.image_size, self.max_lesions, self.flags = source, image_size, max_lesions, flags
        self.fov, self.graham = fov, graham  # field of view carried (moved with the image) for the region choice
        self.cache = cache

    def _decoded(self, index: int) -> tuple[dict, np.ndarray]:
        hit = self.cache.get(index) if self.cache is not None else None
        if hit is not None:
            return hit
        record = self.source[index]
        image = decode_jpeg(record["image"])
        _check_size(image, self.image_size, index)
        if self.cache is not None:
            self.cache.put(index, record, image)
        return record, image

    def random_map(self, index: int, rng: np.random.Generator) -> dict:
        index = int(index)
        record, image = self._decoded(index)
        lesions = record["lesions"]
        rows = stored_fov_rows(record, image, self.graham) if self.fov else None
        out = augment_lib.random_augment(image, lesions["box"], lesions["kind"], rng, self.flags, fov_rows=rows)
        example = _example(record, index, out.image, out.boxes, out.kinds, self.max_lesions)
        example["photometric"] = out.photometric
        if self.fov:
            example["fov_rows"] = out.fov_rows.astype(np.int16)
        return example


class _EvalExample(grain.transforms.Map):
    """Position in the padded split -> decoded, padded example with mask and id (a blank row past the end)."""

    def __init__(self, source: Any, num_examples: int, image_size: int, max_lesions: int, graham: bool = False,
                 rows: np.ndarray | None = None, real: np.ndarray | None = None):
        self.source, self.n, self.image_size, self.max_lesions = source, num_examples, image_size, max_lesions
        self.graham = graham  # for the field of view of datasets that do not store it
        self.rows, self.real = rows, real  # rows by patient (`pairs.eval_rows`): the example of each position

    def map(self, position: int) -> dict:
        position = int(position)
        if position < self.n and self.rows is not None:
            out = self._example(int(self.rows[position]))
            if not self.real[position]:  # a one-eyed patient's photograph again: its partner, not counted twice
                out["index"], out["mask"] = np.int32(-1), np.bool_(False)
            return out
        if position >= self.n:
            s, lm = self.image_size, self.max_lesions
            return {
                "image": np.zeros((s, s, 3), np.uint8),
                "label": np.int32(0),
                "lesion_boxes": np.zeros((lm, 4), np.int32),
                "lesion_kinds": np.zeros((lm,), np.int32),
                "lesion_valid": np.zeros((lm,), bool),
                "index": np.int32(-1),
                "mask": np.bool_(False),
                "id": "",
                "fov_rows": np.zeros((s, 2), np.int16),
                "optic_disc": np.zeros((4,), np.int32),
                "optic_disc_valid": np.bool_(False),
            }
        return self._example(position)

    def _example(self, index: int) -> dict:
        record = self.source[index]
        image = decode_jpeg(record["image"])
        _check_size(image, self.image_size, index)
        lesions = record["lesions"]
        out = _example(record, index, image, lesions["box"], lesions["kind"], self.max_lesions)
        rid = record["id"]
        out["mask"] = np.bool_(True)
        out["id"] = rid.decode("utf-8") if isinstance(rid, bytes) else str(rid)
        out.update(_localisation_fields(record, image, self.graham))
        return out


def _localisation_fields(record: dict, image: np.ndarray, graham: bool) -> dict:
    """`fov_rows` (`stored_fov_rows`) and the optic disc (stored, else none) of an eval example."""
    disc = np.asarray(record.get("optic_disc", np.zeros(4)), np.int32).reshape(4)
    return {"fov_rows": stored_fov_rows(record, image, graham), "optic_disc": disc,
            "optic_disc_valid": np.bool_(disc[2] > disc[0])}


def stored_fov_rows(record: dict, image: np.ndarray, graham: bool) -> np.ndarray:
    """int16 (S, 2) field of view of an example: stored by the builder, else found on the decoded image."""
    rows = record.get("fov_rows")
    rows = fov_lib.field_of_view(image, graham=graham) if rows is None else np.asarray(rows).reshape(-1, 2)
    if len(rows) != image.shape[0]:
        raise ValueError(f"stored fov_rows has {len(rows)} rows for a {image.shape[0]}-pixel image")
    return rows.astype(np.int16)


def collate(examples: Sequence[dict]) -> dict:
    """Stacks examples into a batch: numpy arrays, and `id` (if present) as an object array of str.

    Args:
      examples: dicts from the example transforms.

    Returns:
      The host batch (see the module docstring).
    """
    out = {}
    for key in examples[0]:
        if key == "id":
            ids = np.empty(len(examples), object)
            ids[:] = [e["id"] for e in examples]
            out[key] = ids
        else:
            out[key] = np.stack([e[key] for e in examples])
    return out


# ------------------------------------------------------------------------------------------------- sampling


def balance_weights(counts: np.ndarray, epoch: int, decay: float, floor: float = 0.0) -> np.ndarray:
    """Per-grade sampling weights of an epoch: from balanced (epoch 0) towards the true distribution.

    w_e = decay^e * balanced + (1 - decay^e) * true; grades under floor * balanced are raised to it and the others
    scaled down to keep the sum 1. Balanced gives every grade present in the split the same share; grades absent
    from the split get weight 0.

    Args:
      counts: (K,) examples per grade in the split.
      epoch: e >= 0.
      decay: in [0, 1]; 0 samples the true distribution from epoch 1 on, 1 stays balanced.
      floor: lower bound on a grade's weight as a fraction of its balanced weight.

    Returns:
      float64 (K,) weights summing to 1: the share of the epoch's samples drawn from each grade.
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    balanced = present / present.sum()
    true = counts / counts.sum()
    a = float(decay) ** epoch
    w = a * balanced + (1.0 - a) * true
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"data.balance.floor must be in [0, 1], got {floor}")
    # Raise the grades under the floor to it and scale the others down to keep the sum 1; scaling may push another
    # grade under the floor, so repeat (at most once per grade).
    low = floor * balanced
    fixed = np.zeros_like(present)
    while True:
        under = ~fixed & (w < low - 1e-15)
        if not under.any():
            return w
        fixed |= under
        w = np.where(fixed, low, w)
        free = ~fixed & (w > 0)
        if free.any():
            w[free] *= (1.0 - w[fixed].sum()) / w[free].sum()


class BalancedIndices(grain.transforms.Map):
    """Global sample position -> example index, drawn per epoch with replacement from `balance_weights`.

    Epoch e (positions e n .. (e+1) n - 1) is one draw of n indices from a generator seeded by (seed, e), computed
    on first use and cached, so any position can be looked up in any order (grain reads positions in parallel and
    restores to any position).
    """

    def __init__(self, labels: np.ndarray, seed: int, decay: float, floor: float, num_grades: int = 5):
        self.labels = np.asarray(labels, np.int64)
        self.seed, self.decay, self.floor = int(seed), float(decay), float(floor)
        self.counts = np.bincount(self.labels, minlength=num_grades)
        self._cache: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The n example indices of epoch `epoch` (int64, in sample order)."""
        if epoch not in self._cache:
            n = len(self.labels)
            per_grade = balance_weights(self.counts, epoch, self.decay, self.floor)
            p = per_grade[self.labels] / self.counts[self.labels]
            rng = np.random.default_rng([self.seed, epoch, 0xBA1A])
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = rng.choice(n, size=n, replace=True, p=p / p.sum())
        return self._cache[epoch]

    def map(self, position: int) -> int:
        n = len(self.labels)
        return int(self.epoch_indices(int(position) // n)[int(position) % n])


def _patients(source: Any) -> np.ndarray:
    from zoomin_jax.data import patient_split

    patients = patient_split.patients_of(source)
    if patients is None:
        raise ValueError("model.pair_eyes builds batches by patient, but this dataset records no patients (EyePACS "
                         "does: <patient>_<left|right>); set --config.model.pair_eyes=False")
    return patients


def read_labels(source: Any) -> np.ndarray:
    """The grade of every example of a source, aligned with `source[i]`.

    From the dataset's label sidecar (`label_sidecar.py`, written at preparation): no record is read. A dataset prepared
    before the sidecar existed still works: every record is read once (logged, as it takes a while on EyePACS).
    """
    labels = label_sidecar.read(source)
    if labels is not None:
        return labels
    t = time.perf_counter()
    labels = np.asarray([int(source[i]["label"]) for i in range(len(source))], np.int64)
    logging.info("read %d labels for class balancing from the records in %.1f s (no %s sidecar: python -m "
                 "zoomin_jax.data.label_sidecar <prepared dataset folder> writes it once)", len(labels),
                 time.perf_counter() - t, label_sidecar.SIDECAR)
    return labels


def _augment_seed(seed: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xA06]).generate_state(1, np.uint32)[0])


# ------------------------------------------------------------------------------------------------- train


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # only here: grain workers import this module and need no JAX

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
    return process_index, process_count


def _local_batch(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(
            f"batch_size={global_batch} does not split over {process_count} processes; use a multiple of "
            f"{process_count}"
        )
    return global_batch // process_count


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
    # The elements are whole batches: a few threads and a short buffer (grain's default buffers 500 elements).
    return grain.ReadOptions(
        num_threads=int(config.data.read_threads), prefetch_buffer_size=max(1, int(config.data.prefetch))
    )


def _with_workers(ds: grain.IterDataset, config: ml_collections.ConfigDict) -> grain.IterDataset:
    if config.data.num_workers > 0:
        if not flags.FLAGS.is_parsed():
            # Grain's worker start reads its absl flags; outside `absl.app.run` (tests, notebooks, bench scripts)
            # nothing parsed them, so take the defaults rather than fail.
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=int(config.data.num_workers), per_worker_buffer_size=max(1, int(config.data.prefetch))
            )
        )
    return ds


def train_dataset(
    config: ml_collections.ConfigDict,
    source: Any,
    *,
    process_index: int,
    process_count: int,
    start_step: int = 0,
    labels: np.ndarray | None = None,
) -> grain.IterDataset:
    """The train pipeline over `source` as a grain IterDataset of host-local batches (see the module docstring).

    Args:
      config: the run config (batch_size, seed, model.image_size, data.*).
      source: random-access source of the train split (`datasets.open_split`).
      process_index, process_count: this process among those sharing the global batch.
      start_step: first global batch (a cheap skip, for runs that resume without an iterator state).
      labels: the split's grades, for class balancing (read from `source` when needed and not given).

    Returns:
      An infinite IterDataset; `iter()` of it gives a checkpointable `grain.DatasetIterator`.
    """
    b = _local_batch(config.batch_size, process_count)
    n = len(source)
    if n == 0:
        raise ValueError("the train split is empty")
    balance = config.data.balance
    if config.model.get("pair_eyes", False):  # batches built by patient: rows 2k, 2k + 1 one patient's eyes
        labels = read_labels(source) if labels is None else np.asarray(labels)
        weights = (lambda counts, epoch: balance_weights(counts, epoch, balance.decay, balance.floor)
                   ) if balance.enabled else None
        indices = pairs_lib.indices(_patients(source), labels, config.data.shuffle_seed, weights)
    elif balance.enabled:
        labels = read_labels(source) if labels is None else np.asarray(labels)
        indices = grain.MapDataset.range(0, 2**62).map(
            BalancedIndices(labels, config.data.shuffle_seed, balance.decay, balance.floor)
        )
    else:
        # Grain's index shuffle, reseeded for each repetition: a fresh permutation every epoch, O(1) per lookup.
        indices = grain.MapDataset.range(n).shuffle(seed=int(config.data.shuffle_seed)).repeat()
    flags = config.data.augment.to_dict() if hasattr(config.data.augment, "to_dict") else dict(config.data.augment)
    examples = indices.random_map(
        _TrainExample(source, config.model.image_size, config.data.max_lesions, flags, config.model.regions.fov,
                      config.data.graham, DecodedCache(int(config.data.cache_gb * 2**30))),
        seed=_augment_seed(config.seed),
    )
    # Blocks of b consecutive positions; global batch k is blocks kP .. kP + P - 1, process i takes block kP + i.
    batches = examples.batch(b, drop_remainder=True, batch_fn=collate).slice(slice(process_index, None, process_count))
    if start_step:
        batches = batches.slice(slice(int(start_step), None))
    return _with_workers(batches.to_iter_dataset(_read_options(config)), config)


def num_train_examples(config: ml_collections.ConfigDict) -> int:
    """Examples in `config.data.train_split` (no image is read; a patient-wise slice reads the patients' sidecar).

    Prepares the dataset first if this data_dir lacks it, as the train iterator would. Stages given in epochs are
    converted to steps with it (`schedule.resolve`).
    """
    from zoomin_jax.data import datasets

    return len(datasets.open_split(config, config.data.train_split))


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    start_step: int = 0,
    source: Any = None,
) -> grain.DatasetIterator:
    """An infinite, deterministic, checkpointable iterator over this process's train batches.

    Args:
      config: the run config; the split is `config.data.train_split`.
      process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
      start_step: the first global batch to produce. To resume from a saved iterator state instead, build with
        start_step=0 and call `set_state` (the state counts from the iterator's own start).
      source: the split's source (default: `datasets.open_split(config, config.data.train_split)`).

    Returns:
      A `grain.DatasetIterator` of host batches of `config.batch_size // process_count` rows; `get_state()` and
      `set_state(state)` save and restore its position; `grain.checkpoint.CheckpointSave(it)` /
      `CheckpointRestore(it)` do it through Orbax.
    """
    process_index, process_count = _process(process_index, process_count)
    if source is None:
        from zoomin_jax.data import datasets

        source = datasets.open_split(config, config.data.train_split)
    ds = train_dataset(
        config, source, process_index=process_index, process_count=process_count, start_step=start_step
    )
    return iter(ds)


# ------------------------------------------------------------------------------------------------- eval


def num_eval_steps(num_examples: int, global_batch: int) -> int:
    """Steps every process runs to cover `num_examples` in global batches of `global_batch` (the last one padded)."""
    return max(1, math.ceil(num_examples / global_batch))


def eval_dataset(
    config: ml_collections.ConfigDict, source: Any, *, process_index: int, process_count: int
) -> grain.IterDataset:
    """The eval pipeline over `source` (no augmentation, no test-time variants) as a grain IterDataset.

    Every process gets `num_eval_steps(n, G)` batches of G / P rows, G = `config.data.eval_batch_size` (default
    `config.batch_size`); process i reads positions [i s b, (i+1) s b) of the split padded to s G positions.

    Args:
      config: the run config.
      source: random-access source of the eval split.
      process_index, process_count: this process among those sharing the global batch.

    Returns:
      A finite IterDataset of host batches with `mask`, `index` and `id`.
    """
    g = int(config.data.eval_batch_size)
    b = _local_batch(g, process_count)
    rows = real = None
    if config.model.get("pair_eyes", False):  # two rows per patient, as training built its batches
        rows, real = pairs_lib.eval_rows(_patients(source))
    n = len(source) if rows is None else len(rows)
    steps = num_eval_steps(n, g)
    start = process_index * steps * b
    positions = grain.MapDataset.range(start, start + steps * b)
    examples = positions.map(_EvalExample(source, n, config.model.image_size, config.data.max_lesions,
                                          bool(config.data.graham), rows=rows, real=real))
    batches = examples.batch(b, drop_remainder=True, batch_fn=collate)
    return _with_workers(batches.to_iter_dataset(_read_options(config)), config)


def eval_iterator(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    source: Any = None,
) -> Iterator[dict]:
    """A deterministic pass over an eval split, padded so that every process runs the same number of steps.

    Test-time variants are not made here: the eval step applies `config.data.eval_tta` on the device
    (`eval_step.forward_with_tta`, the one definition).

    Args:
      config: the run config.
      split: a TFDS split string (e.g. `config.data.eval_split`).
      process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
      source: the split's source (default: `datasets.open_split(config, split)`).

    Returns:
      An iterator of `num_eval_steps(n, G)` host batches; rows with `mask` False are padding.
    """
    process_index, process_count = _process(process_index, process_count)
    if source is None:
        from zoomin_jax.data import datasets

        source = datasets.open_split(config, split)
    return iter(eval_dataset(config, source, process_index=process_index, process_count=process_count))
