"""Input pipeline throughput: JPEG decode options, decode + augment per core, and the end-to-end train iterator.

  python bench/input_pipeline.py                   # all of it (~2 min on 2 cores)
  python bench/input_pipeline.py --sizes=400 --skip_end_to_end

Decode and augment run in this process on in-memory JPEGs from `synthetic.generate_encoded` (so no dataset is
needed); the end-to-end part prepares a small 400 px synthetic dataset in a temporary folder and times
`input_pipeline.train_iterator` with 0 and 2 worker processes. Results go to stdout; docs/input_pipeline.md records
them. OpenCV is timed only if `cv2` is importable (it is not a dependency).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from configs import default
from zoomin_jax.data import augment, synthetic
from zoomin_jax.data import input_pipeline as ip


def rate(fn: Callable[[bytes, int], object], items: list[bytes], min_seconds: float = 1.5) -> float:
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


def bench_decode_augment(size: int, count: int) -> None:
    items = [synthetic.generate_encoded(synthetic.example_seed(0, "bench", i), 2, size, 0.3, 90) for i in range(count)]
    jpegs = [j for j, _, _ in items]
    low = round(size * 0.4)  # the low-res view's size (e.g. 1230 -> 492)
    flags = dict(default.get_config().data.augment)
    rngs = [np.random.default_rng(i) for i in range(count)]

    def pil_resize(b, _):
        return np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((low, low), Image.Resampling.BILINEAR))

    def pil_gap(b, _):
        im = Image.open(io.BytesIO(b)).convert("RGB")
        return np.asarray(im.resize((low, low), Image.Resampling.BILINEAR, reducing_gap=2.0))

    def decode_augment(b, k):
        _, boxes, kinds = items[k]
        return augment.random_augment(ip.decode_jpeg(b), boxes, np.zeros(len(kinds)), rngs[k], flags)

    image = ip.decode_jpeg(jpegs[0])

    def augment_only(_, k):
        return augment.random_augment(image, items[k][1], np.zeros(len(items[k][2])), rngs[k], flags)

    matrix = augment.affine_matrix(size, 37.0, 1.05)
    cases = {
        "decode (PIL, stored size)": lambda b, _: ip.decode_jpeg(b),
        f"decode + resize to {low} (PIL)": pil_resize,
        f"decode + resize to {low} (PIL reducing_gap=2)": pil_gap,
        f"decode reduced to {low} (PIL draft + resize)": lambda b, _: ip.decode_jpeg(b, low),
        "rotate + zoom only (PIL bilinear affine)": lambda b, _: augment.warp_image(image, matrix),
        "augment only (rotate, flip, scale, brightness, contrast)": augment_only,
        "decode + augment (the train map)": decode_augment,
    }
    try:
        import cv2

        cv2.setNumThreads(1)

        def cv_decode(b, _):
            return cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

        def cv_reduced(b, _):
            a = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
            return cv2.resize(a, (low, low), interpolation=cv2.INTER_AREA)

        def cv_warp(b, _):
            inv = np.linalg.inv(matrix)[:2]
            return cv2.warpAffine(image, inv, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)

        cases["decode (cv2.imdecode + BGR->RGB)"] = cv_decode
        cases["rotate + zoom only (cv2.warpAffine linear)"] = cv_warp
        cases[f"decode reduced to {low} (cv2 REDUCED_2 + resize)"] = cv_reduced
    except ImportError:
        print("(cv2 not importable: OpenCV decode not timed)")
    print(f"\n{size} px, {count} JPEGs of {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB, one core:")
    for name, fn in cases.items():
        print(f"  {name:58s} {rate(fn, jpegs):8.1f} img/s")


def bench_end_to_end(workers: list[int], batches: int) -> None:

    c = default.get_config()
    c.model.image_size = 400
    c.batch_size = 8
    c.data.synthetic = {"num_train": 96, "num_validation": 0, "num_test": 0, "seed": 0, "distractor_rate": 0.3}
    with tempfile.TemporaryDirectory(prefix="zoomin_bench_") as data_dir:
        c.data.data_dir = data_dir
        _end_to_end(c, workers, batches)


def _end_to_end(c, workers: list[int], batches: int) -> None:
    from zoomin_jax.data import datasets

    t = time.perf_counter()
    source = datasets.open_split(c, "train")
    print(f"\nend to end, 400 px, batch {c.batch_size}, default augmentation "
          f"(prepared {len(source)} examples in {time.perf_counter() - t:.1f} s):")
    for w in workers:
        c.data.num_workers = w
        t = time.perf_counter()
        it = ip.train_iterator(c, process_index=0, process_count=1, source=source)
        next(it)
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        dt = time.perf_counter() - t
        print(f"  num_workers={w}: {batches * c.batch_size / dt:8.1f} img/s  (first batch after {first:.1f} s)")
        del it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,1230")
    parser.add_argument("--count", type=int, default=8, help="distinct JPEGs per size")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--skip_end_to_end", action="store_true")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        bench_decode_augment(size, args.count)
    if not args.skip_end_to_end:
        bench_end_to_end([int(w) for w in args.workers.split(",")], args.batches)


if __name__ == "__main__":
    main()
