"""What the real-dataset builders (EyePACS, IDRiD, Messidor) share: their config, the builder base with its
counting generator, preparing and opening a builder, the command line, and the step from a photograph to a stored
example. Skip counting itself is `skips.py`.

A real download always has some unusable entries: unreadable or grey photographs, label rows without a photo,
photos without a row, grades out of range, duplicated rows. A builder never guesses: it skips the example and
counts the reason (`skips.SkipCounter`), each example once under one reason. The totals are logged at the end of
each split and stored in the prepared dataset's metadata, so `builder.info.metadata["skipped"]` gives
`{split: {reason: count}}` after re-opening; label rows that repeat another exactly are merged (nothing dropped)
and reported apart, in `metadata["duplicate_rows"]` `{split: count}`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from zoomin_jax import thread_map
from zoomin_jax.data import features as features_lib
from zoomin_jax.data import label_sidecar, photo, preprocess
from zoomin_jax.data.skips import SkipCounter


@dataclasses.dataclass(eq=False)
class RealConfig(tfds.core.BuilderConfig):
    """Config of a real-dataset builder.

    Attributes:
      image_size: side of the stored square image (400 for CPU runs, 1230 as in the paper).
      graham: apply Ben Graham's normalisation before storing (see `preprocess.graham`).
      min_side: photographs whose shorter side is below this many pixels are skipped ("too_small").
    """

    image_size: int = 400
    graham: bool = False
    min_side: int = photo.MIN_SIDE


def config_name(image_size: int, graham: bool, min_side: int = 256) -> str:
    name = f"{image_size}px" + ("_graham" if graham else "")
    return name if min_side == 256 else f"{name}_min{min_side}"


def make_config(image_size: int, graham: bool = False, min_side: int = 256) -> RealConfig:
    return RealConfig(
        name=config_name(image_size, graham, min_side),
        description=f"{image_size}x{image_size} disc crops{', Graham-normalised' if graham else ''}",
        image_size=image_size,
        graham=graham,
        min_side=min_side,
    )


STANDARD_CONFIGS = [make_config(s, g) for s in (400, 1230) for g in (False, True)]


def require(path: Path, what: str, dataset: str, how: str) -> Path:
    """Returns `path` if it exists, else raises FileNotFoundError naming what was expected where and how to get it."""
    if not path.exists():
        raise FileNotFoundError(f"{dataset}: expected {what} at {path}, but it does not exist.\n{how}")
    return path


def unique_rows(
    rows: Iterable[dict[str, str]], key: str, counter: SkipCounter, compare: tuple[str, ...] | None = None
) -> dict[str, dict[str, str]]:
    """Label rows by `key` with repeats resolved: repeats that agree on the `compare` fields (default all) are kept
    once (each extra row noted with `counter.note_duplicate`: nothing is dropped, so it is no skip), disagreeing
    repeats are dropped altogether ("conflicting_rows"), so no example is ever stored with a guessed label. Rows
    with an empty key (blank lines at a sheet's end) are ignored."""
    by_key: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row.get(key):
            by_key.setdefault(row[key], []).append(row)
    out = {}
    for name, group in by_key.items():
        if len({tuple((k, r.get(k)) for k in (compare or sorted(r))) for r in group}) > 1:
            counter.add("conflicting_rows", name)
            continue
        for _ in group[1:]:
            counter.note_duplicate(name)
        out[name] = group[0]
    return out


def parse_int(value: str | float, low: int, high: int) -> int | None:
    """An integer in [low, high] from a sheet cell ("3", "3.0", 3.0), else None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() and low <= f <= high else None


LesionSet = tuple[np.ndarray, str, tuple[int, int] | None]  # boxes (N, 4) y0,x0,y1,x1; kind; frame (h, w) of boxes


def photo_example(
    source: preprocess.PhotoSource,
    config: RealConfig,
    fields: dict[str, Any],
    lesion_sets: Iterable[LesionSet] = (),
) -> dict[str, Any]:
    """Preprocesses one photograph and assembles the stored example.

    Args:
      source: photo path or bytes.
      config: the builder config (size, Graham, minimum size).
      fields: `label`, `id` and the dataset's extra features.
      lesion_sets: boxes in the full-resolution photo's frame (or a mask's, with its (h, w)), per lesion kind.

    Raises:
      BadPhoto: from `preprocess` (unusable photo).
    """
    prepared = photo.prepare(source, config.image_size, config.graham, min_side=config.min_side)
    stored, transform = prepared.stored, prepared.transform
    full_hw = None
    boxes, kinds = [], []
    for raw, kind, frame_hw in lesion_sets:
        if frame_hw is None:
            full_hw = full_hw or preprocess.photo_size(source)
            frame_hw = full_hw
        mapped, _ = transform.map_boxes(raw, config.image_size, boxes_frame_hw=frame_hw)
        boxes.append(mapped)
        kinds += [kind] * len(mapped)
    return {
        **fields,
        "image": preprocess.encode_jpeg(stored),
        "fov_rows": prepared.fov_rows,
        "lesions": {
            "box": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int32),
            "kind": kinds,
        },
    }


class RealBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared base of the real-dataset builders: configs, info with skip metadata, and the counting generator.

    Subclasses set VERSION, MANUAL_DOWNLOAD_INSTRUCTIONS, `_DESCRIPTION`, `_HOMEPAGE`, `_CITATION`, `_extra_features`
    and implement `_split_generators` with `self._generate(split, tasks, fn, counter)`.
    """

    BUILDER_CONFIGS = STANDARD_CONFIGS
    DEFAULT_CONFIG_NAME = "400px"
    _DESCRIPTION = ""
    _HOMEPAGE = ""
    _CITATION = ""
    # What the manual folder must hold, for the error when it is missing or empty.
    _MANUAL_WHAT = "the extracted download"
    # Threads that decode photos while preparing; `prepare(num_workers=...)` sets it.
    num_workers = 1

    def _extra_features(self) -> dict:
        return {}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._DESCRIPTION,
            # Every real example stores its field of view (data/photo.py), taken before Graham hides it.
            features=features_lib.example_features(
                extra={"fov_rows": features_lib.localisation_features()["fov_rows"], **self._extra_features()}),
            homepage=self._HOMEPAGE,
            citation=self._CITATION,
            # Filled with {"skipped": {split: {reason: count}}} while preparing; saved as metadata.json.
            metadata=tfds.core.MetadataDict(),
        )

    def _generate_examples(self, **kwargs):
        # Unused: `_split_generators` returns `self._generate(...)` generators directly.
        raise NotImplementedError

    def _generate(
        self, split: str, tasks: list[Any], fn: Callable[[Any], dict], counter: SkipCounter
    ) -> Iterator[tuple[str, dict]]:
        """Yields (key, example) for each task whose photo is usable; counts the others; records the totals.

        Each task's first element is its example key (the id, unique within the split).
        """
        def call(task):
            try:
                return fn(task)
            except preprocess.BadPhoto as e:
                return e

        kept = 0
        for task, result in zip(tasks, thread_map.ordered_map(call, tasks, self.num_workers), strict=True):
            if isinstance(result, preprocess.BadPhoto):
                counter.add(result.reason, task[0])
                continue
            kept += 1
            yield task[0], result
        counter.log(kept)
        self.info.metadata.setdefault("skipped", {})[split] = counter.as_dict()
        if counter.duplicates:  # merged rows, not skips: apart, so "skipped" sums to the examples dropped
            self.info.metadata.setdefault("duplicate_rows", {})[split] = counter.duplicates


def preparer(builder_cls: type[RealBuilder]):
    """The `prepare` function of a dataset whose builder needs nothing beyond the standard config (EyePACS,
    Messidor): `prepare(manual_dir, data_dir, image_size=400, graham=False, *, min_side=256, num_workers=None)`
    prepares it from `manual_dir` into `data_dir` (once) and returns the builder."""

    def prepare(
        manual_dir: str | os.PathLike,
        data_dir: str | os.PathLike,
        image_size: int = 400,
        graham: bool = False,
        *,
        min_side: int = 256,
        num_workers: int | None = None,
    ) -> RealBuilder:
        return prepare_builder(builder_cls, manual_dir, data_dir, image_size, graham, min_side, num_workers)

    prepare.__doc__ = f"Prepares {builder_cls.name} from `manual_dir` into `data_dir` (once) and returns the builder."
    return prepare


def prepare_builder(
    builder_cls: type[RealBuilder],
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    image_size: int,
    graham: bool,
    min_side: int = 256,
    num_workers: int | None = None,
    config: RealConfig | None = None,
) -> RealBuilder:
    """Prepares (once) and returns a real-dataset builder, with its labels sidecar; read it with
    `builder.as_data_source(split)`.

    `config`: a builder config of the builder's own (e.g. IDRiD's with a lesion-boxes CSV) instead of the
    standard one for (image_size, graham, min_side)."""
    manual = Path(manual_dir)
    if not manual.is_dir() or not any(manual.iterdir()):
        # TFDS would raise a bare AssertionError here; say what belongs where instead.
        raise FileNotFoundError(
            f"{builder_cls.name}: expected {builder_cls._MANUAL_WHAT} at {manual}, but the folder is missing or "
            f"empty.\nHow to get it:\n{builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    builder = open_builder(builder_cls, data_dir, image_size, graham, min_side, config=config)
    builder.num_workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)),
    )
    label_sidecar.write(builder)  # the grades alone, for the class-balanced sampler
    return builder


def open_builder(
    builder_cls: type[RealBuilder], data_dir: str | os.PathLike, image_size: int, graham: bool, min_side: int = 256,
    config: RealConfig | None = None,
) -> RealBuilder:
    """The builder for these settings (a standard config when one matches, or `config`), preparing nothing."""
    if config is None:
        name = config_name(image_size, graham, min_side)
        config = next((c for c in builder_cls.BUILDER_CONFIGS if c.name == name), None)
    return builder_cls(
        config=config or make_config(image_size, graham, min_side),
        data_dir=os.fspath(data_dir),
        file_format="array_record",
    )


def prepare_main(prepare_fn: Callable[..., RealBuilder], argv: list[str] | None = None) -> None:
    """Command line of `python -m zoomin_jax.data.<dataset>`: prepares the dataset and prints splits and skips."""
    import argparse

    parser = argparse.ArgumentParser(description=prepare_fn.__doc__)
    parser.add_argument("--manual_dir", required=True, help="the folder holding the user's download")
    parser.add_argument("--data_dir", required=True, help="the TFDS data dir to write the prepared dataset to")
    parser.add_argument("--image_size", type=int, default=400)
    parser.add_argument("--graham", action="store_true")
    parser.add_argument("--min_side", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    builder = prepare_fn(args.manual_dir, args.data_dir, args.image_size, args.graham,
                         min_side=args.min_side, num_workers=args.num_workers)
    for split, info in builder.info.splits.items():
        print(f"{split}: {info.num_examples} examples")
    for split, reasons in (builder.info.metadata.get("skipped") or {}).items():
        print(f"{split}: {sum(reasons.values())} skipped {reasons}")
    if builder.info.metadata.get("duplicate_rows"):
        print("duplicate label rows merged (kept once):", builder.info.metadata["duplicate_rows"])
    print("prepared in", builder.data_dir)
