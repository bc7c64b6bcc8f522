"""The `synthetic_fundus` TFDS builder: the project's embedded default dataset, generated, never downloaded.

Images come from `zoomin_jax.data.synthetic` (see its docstring for what is drawn and the per-grade lesion rules).
Examples follow the common schema of `zoomin_jax.data.features`: JPEG bytes, grade, id, lesion boxes and kinds.

Determinism: example i of split s uses the generator seed `synthetic.example_seed(config.seed, s, i)` and the grade
`assign_grades(n, distribution, seed)[i]`, so the dataset is the same whatever the number of worker processes, and
every split holds exactly the largest-remainder quota of each grade (every grade present when n >= 5). Records are
written in index order (`disable_shuffling`): record i of a split is example i, with id `<split>_<i:06d>`.

Preparation needs no TensorFlow: `prepare(...)` writes `array_record` files, read back with
`builder.as_data_source(split)` or `tfds.data_source('synthetic_fundus/s400', data_dir=...)`.

  builder = prepare("s400", "/data/tfds")                # first call generates, later calls reuse
  builder = prepare(make_config(600, 5000, 500, 500), "/data/tfds", num_workers=8)
  train = builder.as_data_source("train")               # train[i]["image"] is JPEG bytes
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds

from zoomin_jax.data import label_sidecar, synthetic
from zoomin_jax.data.features import example_features

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class SyntheticFundusConfig(tfds.core.BuilderConfig):
    """What to generate. The name must identify the fields: use `make_config` for anything but the named configs.

    Attributes:
      image_size: stored image side in pixels (the model's high-resolution input).
      num_train, num_validation, num_test: split sizes; a split of size 0 is not written.
      grade_distribution: weights of grades 0-4 (normalised); each split gets the largest-remainder quotas.
      seed: base seed of the whole dataset.
      distractor_rate: per-image probability of each distractor type (see `synthetic.generate_example`).
      jpeg_quality: PIL JPEG quality of the stored images.
    """

    image_size: int = 400
    num_train: int = 2000
    num_validation: int = 300
    num_test: int = 300
    grade_distribution: tuple[float, ...] = synthetic.EYEPACS_GRADE_DISTRIBUTION
    seed: int = 0
    distractor_rate: float = 0.3
    jpeg_quality: int = 90

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}


# CPU default: ~80 s to prepare on one core (docs/synthetic_fundus.md), ~50 MB.
S400 = SyntheticFundusConfig(
    name="s400",
    description="400 px, 2000/300/300 images: the small CPU default.",
    image_size=400,
    num_train=2000,
    num_validation=300,
    num_test=300,
)
# Paper resolution (1230 px high-res input): ~45 core-minutes to prepare, ~1.5 GB of JPEGs.
S1230 = SyntheticFundusConfig(
    name="s1230",
    description="1230 px (the paper's high-resolution input), 10000/1000/1000 images.",
    image_size=1230,
    num_train=10000,
    num_validation=1000,
    num_test=1000,
)
NAMED_CONFIGS = {c.name: c for c in (S400, S1230)}


def _fields(config: SyntheticFundusConfig) -> tuple:
    return (
        config.image_size,
        config.num_train,
        config.num_validation,
        config.num_test,
        tuple(np.round(synthetic.normalise_distribution(config.grade_distribution), 6).tolist()),
        config.seed,
        float(config.distractor_rate),
        config.jpeg_quality,
    )


def make_config(
    image_size: int,
    num_train: int,
    num_validation: int,
    num_test: int,
    seed: int = 0,
    grade_distribution=synthetic.EYEPACS_GRADE_DISTRIBUTION,
    distractor_rate: float = 0.3,
    jpeg_quality: int = 90,
) -> SyntheticFundusConfig:
    """A config for any size, named from its fields (so different fields never share a prepared folder).

    Returns the named config (`s400`, `s1230`) itself when the fields equal one of them, so its prepared copy is
    reused. Otherwise the name is e.g. `s256_n100-20-20_seed0_d0.3_q90_g0.73-0.07-0.15-0.025-0.025`.

    Raises:
      ValueError: on a size under 64 px, a negative split size, a bad distribution, rate or quality.
    """
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 px, got {image_size}")
    if min(num_train, num_validation, num_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got {num_train}/{num_validation}/{num_test}")
    if not 0.0 <= distractor_rate <= 1.0:
        raise ValueError(f"distractor_rate must be in [0, 1], got {distractor_rate}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    dist = tuple(np.round(synthetic.normalise_distribution(grade_distribution), 6).tolist())
    config = SyntheticFundusConfig(
        name="",
        image_size=image_size,
        num_train=num_train,
        num_validation=num_validation,
        num_test=num_test,
        grade_distribution=dist,
        seed=seed,
        distractor_rate=float(distractor_rate),
        jpeg_quality=jpeg_quality,
    )
    for named in NAMED_CONFIGS.values():
        if _fields(named) == _fields(config):
            return named
    config.name = (
        f"s{image_size}_n{num_train}-{num_validation}-{num_test}_seed{seed}_d{distractor_rate:g}_q{jpeg_quality}"
        f"_g{'-'.join(f'{p:g}' for p in dist)}"
    )
    config.description = f"make_config: {config.name}"
    return config


def _generate_one(task: tuple) -> tuple:
    """Worker entry point (top-level, so a spawned process can import it)."""
    return synthetic.generate_encoded(*task)


class SyntheticFundus(tfds.core.GeneratorBasedBuilder):
    """Synthetic fundus photographs with DR grades and exact lesion boxes."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Microaneurysms cluster in the posterior pole; grade 1 has 4-10 of them (was 1-4).",
    }
    BUILDER_CONFIGS = [S400, S1230]
    DEFAULT_CONFIG_NAME = "s400"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """Args: num_workers: generator processes (None: all cores, <= 1: in this process); kwargs: to TFDS."""
        self._num_workers = num_workers
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=example_features(),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {s: self._generate_examples(s) for s, n in self.builder_config.split_sizes().items() if n > 0}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        n = cfg.split_sizes()[split]
        grades = synthetic.assign_grades(
            n, cfg.grade_distribution, synthetic.example_seed(cfg.seed, f"{split}/grades", 0)
        )
        tasks = [
            (
                synthetic.example_seed(cfg.seed, split, i),
                int(grades[i]),
                cfg.image_size,
                cfg.distractor_rate,
                cfg.jpeg_quality,
            )
            for i in range(n)
        ]
        workers = self._num_workers if self._num_workers is not None else (os.cpu_count() or 1)
        workers = min(workers, max(1, n // 4))
        if workers <= 1:
            results = map(_generate_one, tasks)
            yield from self._records(split, grades, results)
        else:
            # spawn, not fork: the parent may hold JAX/XLA threads, which fork does not survive. An executor, not a
            # Pool: a worker that dies (e.g. a calling script without `if __name__ == "__main__":`) raises
            # BrokenProcessPool instead of being respawned forever.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                results = pool.map(_generate_one, tasks, chunksize=4)
                yield from self._records(split, grades, results)

    @staticmethod
    def _records(split, grades, results):
        for i, (jpeg, boxes, kinds) in enumerate(results):
            yield (
                i,
                {
                    "image": jpeg,
                    "label": int(grades[i]),
                    "id": f"{split}_{i:06d}",
                    "lesions": {"box": boxes, "kind": kinds},
                },
            )


def get_config(config_or_name: SyntheticFundusConfig | str) -> SyntheticFundusConfig:
    """The config itself, or the named one (`s400`, `s1230`); raises ValueError naming the choices."""
    if isinstance(config_or_name, SyntheticFundusConfig):
        return config_or_name
    if config_or_name in NAMED_CONFIGS:
        return NAMED_CONFIGS[config_or_name]
    raise ValueError(
        f"unknown synthetic_fundus config {config_or_name!r}: use one of {sorted(NAMED_CONFIGS)} "
        "or make_config(image_size, num_train, num_validation, num_test, ...)"
    )


def prepare(
    config_or_name: SyntheticFundusConfig | str, data_dir: str | os.PathLike, num_workers: int | None = None
) -> SyntheticFundus:
    """Prepares the dataset on first use (array_record files under data_dir), reuses it afterwards.

    Args:
      config_or_name: a `SyntheticFundusConfig` (e.g. from `make_config`) or a named config: 's400', 's1230'.
      data_dir: TFDS data directory; the dataset lands in data_dir/synthetic_fundus/<config name>/<version>.
      num_workers: generator processes; None uses every core, 0 or 1 generates in this process. The data do not
        depend on it.

    Returns:
      The prepared builder; read with `builder.as_data_source(split)`.
    """
    config = get_config(config_or_name)
    builder = SyntheticFundus(config=config, data_dir=os.fspath(data_dir), num_workers=num_workers)
    builder.download_and_prepare(file_format="array_record")
    label_sidecar.write(builder)  # the grades alone, for the class-balanced sampler (written once, kept)
    return builder
