"""Input pipeline throughput: JPEG decode, warp, decode + augment per core (OpenCV, with the former PIL path for
comparison), and the end-to-end train iterator.

  python bench/input_pipeline.py                   # all of it (~3 min on 2 cores)
  python bench/input_pipeline.py --sizes=400 --skip_end_to_end

Decode and augment run in this process on in-memory JPEGs from `synthetic.generate_encoded` (so no dataset is
needed). The cases are timed round-robin, `--repeats` rounds, so background load hits them all alike; each round
reports the best of repeated passes over the JPEGs, and the table gives the range over the rounds. The "PIL" rows
are the pipeline's implementation before it moved to OpenCV (PIL decode, PIL bilinear affine transform, PIL `point`),
kept here for comparison only. The end-to-end part prepares a small 400 px synthetic dataset in a temporary folder
and times `input_pipeline.train_iterator` with 0 and 2 worker processes (and, in-process, with the PIL path patched
in). Results go to stdout; docs/input_pipeline.md records them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from configs import default
from zoomin_jax.data import augment, synthetic
from zoomin_jax.data import input_pipeline as ip


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


# ------------------------------------------------------------------------------------------------- the former PIL path


def pil_decode(data: bytes, size: int | None = None) -> np.ndarray:
    """The former `input_pipeline.decode_jpeg`: PIL, `draft` (DCT scaling) + bilinear resize when reduced."""
    im = Image.open(io.BytesIO(data))
    if size is not None and size < min(im.size):
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))


def _pil_warp(image: Image.Image, matrix: np.ndarray) -> Image.Image:
    inv = np.round(np.linalg.inv(matrix), 12)
    coeffs = tuple(float(v) for v in inv[:2].reshape(-1))
    return image.transform(image.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                           fillcolor=(0, 0, 0))


def pil_random_augment(image, boxes, kinds, rng, flags):
    """The former `augment.random_augment` (same draws and box transform; PIL affine and `point`)."""
    size = image.shape[0]
    u = rng.random(6)
    angle = 360.0 * u[0] if flags.get("rotate", False) else 0.0
    flip_lr = bool(flags.get("flip", False)) and u[1] < 0.5
    flip_ud = bool(flags.get("flip", False)) and u[2] < 0.5
    scale = 1.0 + float(flags.get("scale", 0.0)) * (2.0 * u[3] - 1.0)
    brightness = 1.0 + float(flags.get("brightness", 0.0)) * (2.0 * u[4] - 1.0)
    contrast = 1.0 + float(flags.get("contrast", 0.0)) * (2.0 * u[5] - 1.0)
    matrix = augment.affine_matrix(size, angle, scale, flip_lr, flip_ud)
    mean = augment.disc_mean(image) if contrast != 1.0 else np.zeros(3)
    pil = Image.fromarray(image)
    if angle == 0.0 and scale == 1.0:
        if flip_lr:
            pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if flip_ud:
            pil = pil.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    else:
        pil = _pil_warp(pil, matrix)
    if brightness != 1.0 or contrast != 1.0:
        pil = pil.point(augment.photometric_lut(brightness, contrast, mean).T.reshape(-1).tolist())
    boxes, keep = augment.transform_boxes(boxes, matrix, size)
    return np.asarray(pil), boxes, np.asarray(kinds).reshape(-1)[keep]


@contextlib.contextmanager
def pil_path() -> Iterator[None]:
    """Patches the PIL decode and augmentation into the pipeline (in this process only: not into workers)."""
    saved = ip.decode_jpeg, augment.random_augment
    ip.decode_jpeg, augment.random_augment = pil_decode, pil_random_augment
    try:
        yield
    finally:
        ip.decode_jpeg, augment.random_augment = saved


# ------------------------------------------------------------------------------------------------- per core


def bench_decode_augment(size: int, count: int, repeats: int, min_seconds: float) -> None:
    items = [synthetic.generate_encoded(synthetic.example_seed(0, "bench", i), 2, size, 0.3, 90) for i in range(count)]
    jpegs = [j for j, _, _ in items]
    low = round(size * 0.4)  # the low-res view's size (e.g. 1230 -> 492)
    flags = dict(default.get_config().data.augment)
    image = ip.decode_jpeg(jpegs[0])
    matrix = augment.affine_matrix(size, 37.0, 1.05)
    cores = cv2.getNumberOfCPUs()

    def train_map(decode, random_augment):
        def fn(b, k):
            _, boxes, kinds = items[k]
            rng = np.random.default_rng(k)
            return random_augment(decode(b), boxes, np.zeros(len(kinds)), rng, flags)

        return fn

    def augment_only(random_augment):
        def fn(_, k):
            return random_augment(image, items[k][1], np.zeros(len(items[k][2])), np.random.default_rng(k), flags)

        return fn

    def cv_warp_threads(_, __):
        cv2.setNumThreads(cores)
        try:
            return augment.warp_image(image, matrix)
        finally:
            cv2.setNumThreads(1)

    cases = {
        "decode, cv2 (the pipeline)": lambda b, _: ip.decode_jpeg(b),
        "decode, PIL": lambda b, _: pil_decode(b),
        f"decode reduced to {low}, cv2 DCT scaling + area resize": lambda b, _: ip.decode_jpeg(b, low),
        f"decode reduced to {low}, PIL draft + bilinear resize": lambda b, _: pil_decode(b, low),
        "rotate + zoom only, cv2.warpAffine (1 thread: the pipeline)": lambda b, _: augment.warp_image(image, matrix),
        f"rotate + zoom only, cv2.warpAffine ({cores} threads)": cv_warp_threads,
        "rotate + zoom only, PIL affine": lambda b, _: _pil_warp(Image.fromarray(image), matrix),
        "augment only, cv2 (rotate, flip, scale, brightness, contrast)": augment_only(augment.random_augment),
        "augment only, PIL": augment_only(pil_random_augment),
        "decode + augment, cv2 (the train map)": train_map(ip.decode_jpeg, augment.random_augment),
        "decode + augment, PIL (the former train map)": train_map(pil_decode, pil_random_augment),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            results[name].append(rate(fn, jpegs, min_seconds))
    print(f"\n{size} px, {count} JPEGs of {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB, one core, "
          f"img/s over {repeats} rounds (min-max, median):")
    for name, r in results.items():
        print(f"  {name:66s} {min(r):8.1f} - {max(r):8.1f}  ({np.median(r):.1f})")


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
    runs = [(w, False) for w in workers] + [(0, True)]
    for w, pil in runs:
        c.data.num_workers = w
        with pil_path() if pil else contextlib.nullcontext():
            t = time.perf_counter()
            it = ip.train_iterator(c, process_index=0, process_count=1, source=source)
            next(it)
            first = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(batches):
                next(it)
            dt = time.perf_counter() - t
            del it
        name = f"num_workers={w}" + (", PIL path" if pil else "")
        print(f"  {name:22s} {batches * c.batch_size / dt:8.1f} img/s  (first batch after {first:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,1230")
    parser.add_argument("--count", type=int, default=8, help="distinct JPEGs per size")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds over the per-core cases")
    parser.add_argument("--min_seconds", type=float, default=1.0, help="time per case and round")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--skip_end_to_end", action="store_true")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        bench_decode_augment(size, args.count, args.repeats, args.min_seconds)
    if not args.skip_end_to_end:
        bench_end_to_end([int(w) for w in args.workers.split(",")], args.batches)


if __name__ == "__main__":
    main()
