"""Opens a split of the configured dataset as a random-access source, preparing the dataset on first use.

The one place where `config.data.name` picks a builder (a plain if/elif: grep finds every dataset). Sources are TFDS
`array_record` data sources (`builder.as_data_source(split)`): random access by index, picklable into grain worker
processes, no TensorFlow. Split strings are TFDS split strings, so slices work: "train[:80%]", "train[80%:]",
"validation[:100]"; for a dataset with patients (EyePACS) a slice selects patients, both eyes together
(`patient_split.py` states the rule).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from zoomin_jax.data import patient_split

DATASETS = ("synthetic_fundus", "eyepacs", "idrid", "messidor")


def _data_dir(config: ml_collections.ConfigDict) -> Path:
    return Path(os.path.expanduser(config.data.data_dir))


def open_builder(config: ml_collections.ConfigDict) -> Any:
    """The prepared TFDS builder of `config.data.name`, preparing it first if this data_dir lacks it.

    Args:
      config: the run config; reads `data.name`, `data.data_dir`, `model.image_size`, and `data.synthetic`
        (synthetic_fundus) or `data.manual_dir` / `data.graham` (real datasets).

    Returns:
      The builder; `builder.as_data_source(split)` reads a split.

    Raises:
      ValueError: unknown dataset name.
      FileNotFoundError: a real dataset is not prepared and its manual folder is missing (the message says what
        to download and where to put it).
    """
    name = config.data.name
    data_dir = _data_dir(config)
    size = config.model.image_size
    if name == "synthetic_fundus":
        from zoomin_jax.data import synthetic_fundus

        synth = config.data.synthetic
        synth = synth.to_dict() if hasattr(synth, "to_dict") else dict(synth)
        builder = synthetic_fundus.prepare(synthetic_fundus.make_config(image_size=size, **synth), data_dir)
    elif name in ("eyepacs", "idrid", "messidor"):
        from zoomin_jax.data import real_builder

        if name == "eyepacs":
            from zoomin_jax.data import eyepacs as module

            builder_cls = module.Eyepacs
        elif name == "idrid":
            from zoomin_jax.data import idrid as module

            builder_cls = module.Idrid
        else:
            from zoomin_jax.data import messidor as module

            builder_cls = module.Messidor
        # A dataset already prepared in data_dir is used as it is, so hosts that received the prepared files do
        # not need the original download.
        boxes = config.data.get("lesion_boxes_csv", "")
        if boxes and name != "idrid":
            raise ValueError(f"config.data.lesion_boxes_csv={boxes!r} is read by the idrid builder only, not {name}")
        extra = {"lesion_boxes_csv": boxes} if name == "idrid" else {}
        if name == "idrid":  # the boxes CSV's hash names the prepared dataset
            builder = module.open_builder(data_dir, size, config.data.graham, lesion_boxes_csv=boxes,
                                          manual_dir=config.data.manual_dir)
        else:
            builder = real_builder.open_builder(builder_cls, data_dir, size, config.data.graham)
        if not builder.is_prepared():
            if not config.data.manual_dir:
                raise FileNotFoundError(
                    f"{name} is not prepared in {data_dir} and config.data.manual_dir is empty: set "
                    f"--config.data.manual_dir to the folder holding your {name} download "
                    f"(python -m zoomin_jax.data.{name} --help prepares it by hand)"
                )
            manual = os.path.expanduser(config.data.manual_dir)
            logging.info("%s: preparing from %s into %s", name, manual, data_dir)
            builder = module.prepare(manual, data_dir, size, config.data.graham, **extra)
    else:
        raise ValueError(f"unknown dataset config.data.name={name!r}: use one of {', '.join(DATASETS)}")
    logging.info("dataset %s: using %s", name, builder.data_dir)
    return builder


def open_split(config: ml_collections.ConfigDict, split: str) -> Any:
    """A random-access source over one split of the configured dataset (prepared on first use).

    Args:
      config: the run config (see `open_builder`).
      split: a TFDS split string, e.g. `config.data.train_split` ("train", "train[:80%]").

    Returns:
      A TFDS data source: `len(source)` examples, `source[i]` a dict with `image` (JPEG bytes), `label` (int),
      `id` (bytes) and `lesions` ({"box": list of int32[4], "kind": list of ints}).
    """
    builder = open_builder(config)
    patient_split.check(split, available_splits(builder), "the split")
    source = patient_split.open_source(builder, split)
    logging.info("dataset %s split %r: %d examples%s", config.data.name, split, len(source),
                 " (sliced by patient)" if isinstance(source, patient_split.Subset) else "")
    return source


def available_splits(builder: Any) -> dict[str, int]:
    """{split name: examples} of a prepared builder."""
    return {name: int(info.num_examples) for name, info in builder.info.splits.items()}


def check_splits(config: ml_collections.ConfigDict) -> None:
    """Refuses, before training, a train or eval split the prepared dataset does not have, naming those it has.

    Raises:
      patient_split.SplitError: the field, the split it named and the splits there are.
    """
    available = available_splits(open_builder(config))
    patient_split.check(config.data.train_split, available, "config.data.train_split")
    patient_split.check(config.data.eval_split, available, "config.data.eval_split")
