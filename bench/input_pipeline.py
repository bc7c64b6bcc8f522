"""Input pipeline throughput: JPEG decode, warp, decode + augment per core (OpenCV), and the end-to-end train iterator
with and without the decoded-image cache.

  python bench/input_pipeline.py                   # all of it (~2 min on 2 cores)
  python bench/input_pipeline.py --sizes=400 --skip_end_to_end

Decode and augment run in this process on in-memory JPEGs from `synthetic.generate_encoded` (so no dataset is
needed). The cases are timed round-robin, `--repeats` rounds, so background load hits them all alike; each round
reports the best of repeated passes over the JPEGs, and the table gives the range over the rounds. The augmentation
on the host is the geometry (rotation, flips, zoom: one warp); brightness and contrast are drawn there and applied in
the train step (`zoomin_jax/photometric.py`). The former PIL path (PIL decode, affine and `point`) is gone from the
pipeline and from this bench; its figures stay in docs/input_pipeline.md. The end-to-end part prepares a small 400 px
synthetic dataset in a temporary folder and times `input_pipeline.train_iterator` over two epochs with 0 and 2 worker
processes, with the cache on and off. Results go to stdout; docs/input_pipeline.md records them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import cv2
import numpy as np

from configs import default
from zoomin_jax.data import augment, synthetic
from zoomin_jax.data import input_pipeline as ip

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # JPEG frame headers
_REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding (None if not found)."""
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 5: i + 7], "big"), int.from_bytes(data[i + 7: i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2: i + 4], "big")
    return None


def decode_reduced(data: bytes, size: int) -> np.ndarray:
    """A measured alternative the pipeline does not use: libjpeg's DCT scaling to the largest power-of-two reduction
    (at most 8) not below `size`, then an area resize to size x size."""
    hw = jpeg_size(data)
    side = min(hw) if hw else 0
    factor = max((f for f in (2, 4, 8) if side // f >= size), default=1)
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    if factor > 1:
        flags |= _REDUCED[factor]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) if size < min(image.shape[:2]) else image


def rate(fn: Callable[[bytes, int], object], items: list[bytes], min_seconds: float) -> float:
    """Images per second of fn over items, repeated for at least min_seconds (best of the passes)."""
    best, spent, i = 0.0, 0.0, 0
    while spent < min_seconds or i < 2:
        t = time.perf_counter()
        for k, x in enumerate(items):
            fn(x, k)
        dt = time.perf_counter() - t
        spent += dt
        best = max(best, len(items) / dt)
        i += 1
    return best


# ------------------------------------------------------------------------------------------------- per core


def bench_decode_augment(size: int, count: int, repeats: int, min_seconds: float) -> None:
    items = [synthetic.generate_encoded(synthetic.example_seed(0, "bench", i), 2, size, 0.3, 90) for i in range(count)]
    jpegs = [j for j, _, _ in items]
    low = round(size * 0.4)  # the low-res view's size (e.g. 1230 -> 492)
    flags = dict(default.get_config().data.augment)
    image = ip.decode_jpeg(jpegs[0])
    matrix = augment.affine_matrix(size, 37.0, 1.05)
    cores = cv2.getNumberOfCPUs()

    def train_map(_, k):  # an example read for the first time (or with the cache off): decode, then augment
        _, boxes, kinds = items[k]
        return augment.random_augment(ip.decode_jpeg(jpegs[k]), boxes, np.zeros(len(kinds)), np.random.default_rng(k),
                                      flags)

    def augment_only(_, k):  # an example from the decoded-image cache
        return augment.random_augment(image, items[k][1], np.zeros(len(items[k][2])), np.random.default_rng(k), flags)

    def cv_warp_threads(_, __):
        cv2.setNumThreads(cores)
        try:
            return augment.warp_image(image, matrix)
        finally:
            cv2.setNumThreads(1)

    cases = {
        "decode, cv2": lambda b, _: ip.decode_jpeg(b),
        f"decode reduced to {low}, cv2 DCT scaling + area resize": lambda b, _: decode_reduced(b, low),
        "rotate + zoom only, cv2.warpAffine (1 thread: the pipeline)": lambda b, _: augment.warp_image(image, matrix),
        f"rotate + zoom only, cv2.warpAffine ({cores} threads)": cv_warp_threads,
        "augment (the host's part: the warp in RGBA, boxes, draws): from the cache": augment_only,
        "decode + augment (the train map, first read or no cache)": train_map,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            results[name].append(rate(fn, jpegs, min_seconds))
    print(f"\n{size} px, {count} JPEGs of {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB, one core, "
          f"img/s over {repeats} rounds (min-max, median):")
    for name, r in results.items():
        print(f"  {name:66s} {min(r):8.1f} - {max(r):8.1f}  ({np.median(r):.1f})")


def bench_end_to_end(workers: list[int]) -> None:

    c = default.get_config()
    c.model.image_size = 400
    c.batch_size = 8
    c.data.synthetic = {"num_train": 400, "num_validation": 0, "num_test": 0, "seed": 0, "distractor_rate": 0.3}
    with tempfile.TemporaryDirectory(prefix="zoomin_bench_") as data_dir:
        c.data.data_dir = data_dir
        _end_to_end(c, workers)


def _end_to_end(c, workers: list[int]) -> None:
    from zoomin_jax.data import datasets

    t = time.perf_counter()
    source = datasets.open_split(c, "train")
    print(f"\nend to end, 400 px, batch {c.batch_size}, default augmentation "
          f"(prepared {len(source)} examples in {time.perf_counter() - t:.1f} s):")
    epoch = len(source) // c.batch_size
    for w in workers:
        for cache_gb in (0.0, 1.0):
            c.data.num_workers, c.data.cache_gb = w, cache_gb
            t = time.perf_counter()
            it = ip.train_iterator(c, process_index=0, process_count=1, source=source)
            next(it)
            first = time.perf_counter() - t
            rates = []
            for _ in range(2):  # the first epoch fills the cache, the second reads from it
                t = time.perf_counter()
                for _ in range(epoch):
                    next(it)
                rates.append(epoch * c.batch_size / (time.perf_counter() - t))
            del it
            name = f"num_workers={w}, cache_gb={cache_gb:g}"
            print(f"  {name:30s} epoch 1 {rates[0]:7.1f} img/s, epoch 2 {rates[1]:7.1f} img/s  "
                  f"(first batch after {first:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,1230")
    parser.add_argument("--count", type=int, default=8, help="distinct JPEGs per size")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds over the per-core cases")
    parser.add_argument("--min_seconds", type=float, default=1.0, help="time per case and round")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--skip_end_to_end", action="store_true")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        bench_decode_augment(size, args.count, args.repeats, args.min_seconds)
    if not args.skip_end_to_end:
        bench_end_to_end([int(w) for w in args.workers.split(",")])


if __name__ == "__main__":
    main()
