"""`--mode=predict`: a trained checkpoint grades the user's own photographs and says where it looked.

    python -m zoomin_jax.main --config=C --workdir=W --mode=predict --input=PATH --output=DIR

PATH is one photograph or a folder searched recursively for JPEG, PNG and TIFF files of any size. Each is prepared
exactly as the builders prepare training photographs (decode, cut to the eye disc, resize to `model.image_size`,
field of view, Graham when `data.graham`, the stored JPEG and its decoding), on a thread pool, and graded in
batches of `data.eval_batch_size` by the evaluation's own jitted step (`eval_step.make_eval_step`: the same
test-time variants and field-of-view rule).

    python -m zoomin_jax.main --config=C --workdir=W --mode=predict --split=test --output=DIR

Without `--input`, a prepared split of the config's dataset (`predict_split`): its stored images, read as the
evaluation reads them; rows are named by the examples' ids, carry their true grade ('label') and boxes in the
stored image's pixels.

DIR receives:
  predictions.csv   one row per photograph: path (relative to PATH), photo height and width, Zoom-in-Net's most
                    likely grade (argmax), p0..p4, expected grade, thresholded grade (with the thresholds the run
                    fitted on its evaluation split at this checkpoint's step, and where: "fitted on S at step N",
                    "(in-sample)" when the graded split is S itself), P(abnormal), P(referable), the decision `refer`
                    (below), and the N boxes in the ORIGINAL photograph's pixels (y0, x0, y1, x1, end exclusive)
                    with scores.
  predictions.json  the same per photograph, plus every head's probabilities, the boxes in the prepared image's
                    pixels, the checkpoint step and the referral operating point with where it was fitted.
  pictures/<path>.jpg  per photograph (`overlay.picture`): the clean photograph and the map the boxes were chosen on
                    side by side with its colour bar, the boxes on both; the boxes' pixels cut from the original
                    photograph at its own resolution; the attention of the lesion levels (`pictures=False` /
                    `--nopictures`: none). Drawn on a thread pool while the next batch is graded.
  report.html       one self-contained page over all of it (`report.py`): the decision rule, sorted by referable
                    probability, grade or file, filterable by grade, each photograph with its picture (lazy).
  unreadable.csv    path, reason, detail for each file that could not be used (corrupt, truncated, grayscale, no
                    eye disc found, a memory error...); the run goes on without it.
  predictions.jsonl, unreadable.jsonl, predict_state.json: the record that lets the same command continue.

The decision (ours; the paper defines none): refer when P(grade >= 2) reaches the referral operating point the run
fitted on its evaluation split at this checkpoint (`config.referral.sensitivity` of its referable photographs
referred; `metrics.operating_point`); without one (an older run), no decision, P(referable) alone.
Boxes: the prepared image is the photograph's disc square (which may reach past the photograph's edges, padded
black) scaled to `image_size`; a box maps back by that square's corner and scale (`photo_boxes`), clipped to the
photograph, outer pixel edges rounded outwards.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import jax
import ml_collections
import numpy as np
from PIL import Image

from zoomin_jax import (
    evaluate,
    metrics,
    overlay,
    predict_log,
    predictions_csv,
    progress,
    report,
    restore,
    sharding,
    thread_map,
)
from zoomin_jax.data import fov as fov_lib
from zoomin_jax.data import input_pipeline, photo, preprocess
from zoomin_jax.eval_step import make_eval_step
from zoomin_jax.models.zoom_in import cell_centres
from zoomin_jax.validate import validate_config

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def list_photos(path: str) -> list[Path]:
    """The photograph `path`, or every JPEG / PNG / TIFF under the folder `path` (recursive, sorted)."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(x for x in p.rglob("*") if x.is_file() and x.suffix.lower() in PHOTO_SUFFIXES)
    raise FileNotFoundError(f"--input={path}: no such file or folder")


@dataclasses.dataclass
class Prepared:
    """A photograph as the model sees it, and what maps its boxes back."""

    image: np.ndarray  # uint8 (S, S, 3), as stored by the builders
    display: np.ndarray  # uint8 (S, S, 3), the disc square before Graham, for pictures
    fov_rows: np.ndarray  # int16 (S, 2)
    transform: preprocess.CropTransform  # from the decoded frame to the disc square
    photo_hw: tuple[int, int]  # the photograph's full (height, width)
    label: int | None = None  # the true grade, when the photograph comes from a prepared split
    source: str | None = None  # the photograph's file, whose own pixels the pictures' patches show


def prepare(path: Path, config: ml_collections.ConfigDict) -> Prepared:
    """One photograph prepared as the builders do (`data/photo.py`); raises `preprocess.BadPhoto` for an unusable
    file."""
    p = photo.prepare(str(path), config.model.image_size, bool(config.data.graham))
    # Through the builders' JPEG encoding and the input pipeline's decoder: the very pixels training and evaluation
    # read from a prepared dataset, so a photograph of the evaluation split gets the evaluation's prediction.
    image = input_pipeline.decode_jpeg(preprocess.encode_jpeg(p.stored))
    return Prepared(image, p.display, p.fov_rows.astype(np.int16), p.transform, preprocess.photo_size(str(path)),
                    source=str(path))


def photo_boxes(boxes: np.ndarray, t: preprocess.CropTransform, image_size: int,
                photo_hw: tuple[int, int]) -> np.ndarray:
    """Boxes in the prepared image's pixels -> the original photograph's pixels (inverse of `t.map_boxes`).

    Args:
      boxes: int (..., 4) (y0, x0, y1, x1), end exclusive, in the `image_size` square.
      t: the crop of the decoded frame (which may be a reduced decode of the photograph).
      photo_hw: the photograph's full (height, width).

    Returns:
      int32 (..., 4), end exclusive, clipped to the photograph; edges rounded outwards.
    """
    b = np.asarray(boxes, np.float64)
    scale = t.side / image_size
    fy, fx = photo_hw[0] / t.frame_hw[0], photo_hw[1] / t.frame_hw[1]
    y0, y1 = ((b[..., 0] * scale + t.y0) * fy, (b[..., 2] * scale + t.y0) * fy)
    x0, x1 = ((b[..., 1] * scale + t.x0) * fx, (b[..., 3] * scale + t.x0) * fx)
    out = np.stack([np.floor(y0 + 1e-9), np.floor(x0 + 1e-9), np.ceil(y1 - 1e-9), np.ceil(x1 - 1e-9)], axis=-1)
    hi = np.asarray([photo_hw[0], photo_hw[1], photo_hw[0], photo_hw[1]], np.float64)
    return np.clip(out, 0, hi).astype(np.int32)


def predict_folder(config: ml_collections.ConfigDict, workdir: str, input_path: str, output_dir: str,
                   step: int | None = None, pictures: bool = True) -> dict[str, Any]:
    """Grades every photograph under `input_path` with the checkpoint; writes `output_dir` (module docstring).

    Returns:
      {'rows': the per-photograph records written to predictions.json, 'unreadable': [(path, reason, detail)],
       'step': the checkpoint step}.
    """
    photos = list_photos(input_path)
    root = Path(input_path).expanduser()
    root = root if root.is_dir() else root.parent
    if not photos:
        raise FileNotFoundError(f"--input={input_path}: no JPEG, PNG or TIFF photographs found ({PHOTO_SUFFIXES})")

    def load(path):
        name = str(path.relative_to(root))
        try:
            return name, prepare(path, config), None
        except preprocess.BadPhoto as e:
            return name, None, (e.reason, str(e))
        except (OSError, ValueError) as e:  # unreadable file (permissions, vanished), undecodable content
            return name, None, ("unreadable", f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - any other failure on one photograph (a memory error on a huge
            return name, None, ("error", f"{type(e).__name__}: {e}")  # TIFF, a decoder's bomb guard): a row, go on

    return _predict(config, workdir, photos, load, output_dir, step, pictures, f"photographs under {input_path}",
                    reported_on=None, key_of=lambda path: str(path.relative_to(root)))


def predict_split(config: ml_collections.ConfigDict, workdir: str, output_dir: str, split: str | None = None,
                  step: int | None = None, pictures: bool = True) -> dict[str, Any]:
    """`--mode=predict` without `--input`: grades a prepared split of the configured dataset (default
    `config.data.eval_split`), read as evaluation reads it, into the same outputs as `predict_folder`. Rows are
    named by the examples' ids and carry their true grade ('label'); boxes are in the stored image's pixels (the
    stored square is all a prepared dataset keeps of the photograph) and pictures show the stored image."""
    from zoomin_jax.data import datasets

    split = split or config.data.eval_split
    source = datasets.open_split(config, split)
    size = config.model.image_size
    whole = preprocess.CropTransform(0, 0, size, (size, size))

    def load(i):
        record = source[i]
        image = input_pipeline.decode_jpeg(record["image"])
        rid = record["id"]
        name = rid.decode("utf-8") if isinstance(rid, bytes) else str(rid)
        rows = input_pipeline.stored_fov_rows(record, image, bool(config.data.graham))
        return name, Prepared(image, image, rows, whole, (size, size), int(record["label"])), None

    return _predict(config, workdir, range(len(source)), load, output_dir, step, pictures,
                    f"photographs of {config.data.name} '{split}'", reported_on=split, key_of=lambda i: f"#{i}")


def _predict(config, workdir, items, load, output_dir, step, pictures, what, reported_on, key_of=str
             ) -> dict[str, Any]:
    """Loads `items` (`load(item)` -> (name, Prepared | None, (reason, detail) | None)) on a thread pool, grades
    them in batches, writes `output_dir` as it goes (`predict_log.py`: the same command again continues; `key_of`
    names an item in the record)."""
    if jax.process_count() > 1:
        raise ValueError("--mode=predict runs in one process (it reads local files); start it without --distributed")
    validate_config(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    out_dir = Path(output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)

    model, mesh, variables, step = restore.restore_model(config, workdir, step)
    model = model.clone(pair_eyes=False)  # photographs one by one: no partner row to pair with
    record = predict_log.Record(out_dir, step, workdir)
    labelled = reported_on is not None
    _rewrite_csvs(out_dir, record, config, labelled)
    todo = [it for it in items if key_of(it) not in record.done]
    # The run's thresholds of this very checkpoint, with where they were fitted; grading the split they were fitted
    # on (`reported_on`) is flagged in-sample in the CSV, the JSON and the report.
    thresholds = evaluate.saved_thresholds(workdir, step).get("zoom_in")
    if thresholds is not None:
        thresholds["note"] = predictions_csv.thresholds_note(thresholds["split"], step, reported_on)
    # The one decision: refer when P(referable) reaches the operating point fitted on the run's evaluation split.
    referral = evaluate.saved_referral(workdir, step, config.referral.sensitivity)
    if referral is not None:
        referral = {**referral, "note": predictions_csv.thresholds_note(referral["fitted_on"], step, reported_on)}
    eval_step = make_eval_step(model, mesh, tuple(config.data.eval_tta), config.model.regions.fov, maps=pictures)
    painter = _Painter(config, out_dir / "pictures", record, referral) if pictures else None
    size, batch = config.model.image_size, config.data.eval_batch_size
    total = len(todo)
    again = f" ({len(items) - total} done before, in {out_dir})" if len(items) > total else ""
    print(f"Predicting {total} {what}{again} with step {step} of {workdir}", flush=True)

    start = time.perf_counter()
    first = None  # (files, time) when the first batch, which compiles the step, was done: rates count after it
    workers = max(2, min(8, os.cpu_count() or 2))
    unreadable_now = 0

    def keyed(item):
        return key_of(item), load(item)

    try:  # the photographs are prepared on `workers` threads, in order, a bounded number ahead
        pending: list[tuple[str, str, Prepared]] = []
        bad_rows: list[dict] = []
        prepared = thread_map.ordered_map(keyed, todo, workers, window=2 * batch + workers)
        for k, (key, (name, prep, bad)) in enumerate(prepared, 1):
            if bad is not None:
                bad_rows.append(predict_log.unreadable_row(key, name, *bad))
            else:
                pending.append((key, name, prep))
            if len(pending) == batch or k == total:
                rows = _grade([(n, p) for _, n, p in pending], eval_step, variables, mesh, size, batch,
                              thresholds, referral, config.model.regions.fov, painter) if pending else []
                if painter is not None:
                    painter.wait()  # this batch's pictures are on disk before its rows are recorded
                for (key_, _, _), r in zip(pending, rows, strict=True):
                    r["item"] = key_
                record.add(rows, bad_rows)
                _append_csvs(out_dir, rows, bad_rows, labelled)
                unreadable_now += len(bad_rows)
                pending, bad_rows = [], []
                now = time.perf_counter()
                if first is None:
                    first = (k, now)
                    speed = f"first batch in {now - start:.1f} s (compiling included)"
                else:
                    rate, eta = progress.rate_and_eta(k, total, first[0], first[1], now)
                    speed = f"{rate:.2f} photographs/s ETA {eta}"
                print(f"[predict] {k}/{total} photographs ({unreadable_now} unreadable) | {speed}", flush=True)
    finally:
        record.close()
        if painter is not None:
            painter.close()
    rows, unreadable = record.rows, [(u["path"], u["reason"], u["detail"]) for u in record.unreadable]
    (out_dir / "predictions.json").write_text(json.dumps({"step": step, "referral": referral, "photographs": rows},
                                                         indent=1))
    page = report.write_report(out_dir, rows, unreadable, step, workdir, referral,
                               levels=tuple(config.model.regions.levels))
    print(f"Wrote {out_dir / 'predictions.csv'} ({len(rows)} photographs), predictions.json and {page.name}"
          + (f"; {len(unreadable)} unreadable, listed in {out_dir / 'unreadable.csv'}" if unreadable else ""),
          flush=True)
    return {"rows": rows, "unreadable": unreadable, "step": step}


class _Painter:
    """Writes the picture of each graded photograph (`overlay.picture`) on a thread pool, while the next batch is
    prepared and graded. The colour scales are fixed by the run's first batch and kept in the record's state, so a
    resumed run paints on the same scales."""

    def __init__(self, config: ml_collections.ConfigDict, folder: Path, record: predict_log.Record,
                 referral: dict | None):
        m = config.model
        self.m, self.folder, self.record, self.referral = m, folder, record, referral
        self.centres = cell_centres(m.anet.endpoint, m.low_res_size, m.image_size, tuple(m.mnet.repeats))
        self.levels = list(m.regions.levels)
        saved = record.state.get("colour_scales")
        self.scales = None if saved is None else tuple(overlay.Scale(*x) for x in saved)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)))
        self.pending: list[concurrent.futures.Future] = []

    def batch(self, records: list[dict], items: list[tuple[str, Prepared]], out: dict) -> None:
        """Queues the pictures of a graded batch (`out`: the eval step's outputs, rows as `items`)."""
        n = len(items)
        chosen = np.asarray(out[self.m.regions.map])[:n][..., self.levels].max(axis=-1)  # (n, h, w)
        attention = np.asarray(out["attention"])[:n][..., self.levels]  # (n, h, w, L)
        if self.scales is None:  # the first batch fixes the run's scales
            self.scales = (overlay.Scale.of(chosen), overlay.Scale(0.0, overlay.Scale.of(attention).hi))
            self.record.save_state(colour_scales=[list(x) for x in self.scales])
        for i, (rec, (_, prep)) in enumerate(zip(records, items, strict=True)):
            path = self.folder / (rec["path"] + ".jpg")
            rec["picture"] = str(path.relative_to(self.folder.parent))
            self.pending.append(self.pool.submit(self._draw, rec, prep, chosen[i], attention[i], path))

    def _draw(self, rec: dict, prep: Prepared, chosen: np.ndarray, attention: np.ndarray, path: Path) -> None:
        if prep.source is not None:  # the boxes' pixels in the original photograph, at its own resolution
            original = _read_rgb(prep.source)
            patches = [original[y0:y1, x0:x1] for y0, x0, y1, x1 in rec["boxes"]]
        else:  # a prepared split keeps only the stored square
            patches = [prep.display[y0:y1, x0:x1] for y0, x0, y1, x1 in rec["boxes_prepared"]]
        decision = _decision_line(rec, self.referral)
        title = [decision, f"most likely grade {rec['grade']} (p {max(rec['probabilities']):.2f})"
                 + (f", true grade {rec['label']}" if "label" in rec else "") + f"; {rec['path']}"]
        im = overlay.picture(prep.display, chosen, attention, np.asarray(rec["boxes_prepared"]), self.centres, title,
                             self.m.regions.map, self.scales[0], self.scales[1], patches,
                             fov=fov_lib.rows_to_mask(prep.fov_rows, prep.display.shape[0]),
                             levels=tuple(self.levels))
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, quality=90)

    def wait(self) -> None:
        for f in self.pending:
            f.result()
        self.pending = []

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _read_rgb(path: str) -> np.ndarray:
    """A photograph at its own resolution, uint8 RGB (the pictures' patches)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:  # formats OpenCV does not read (some TIFFs): PIL
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    return image


def _decision_line(rec: dict, referral: dict | None) -> str:
    """The one decision, in words, with its rule."""
    if referral is None or rec.get("refer") is None:
        return f"P(referable) {rec['p_referable']:.2f} (no referral operating point for this checkpoint)"
    verdict = "REFER" if rec["refer"] else "no referral"
    sign = ">=" if rec["refer"] else "<"
    return f"{verdict}: P(referable) {rec['p_referable']:.2f} {sign} {referral['threshold']:.2f}"


def _grade(items, eval_step, variables, mesh, size, batch, thresholds, referral, fov, painter=None) -> list[dict]:
    n = len(items)
    images = np.zeros((batch, size, size, 3), np.uint8)
    rows_fov = np.zeros((batch, size, 2), np.int16)
    for i, (_, prep) in enumerate(items):
        images[i], rows_fov[i] = prep.image, prep.fov_rows
    index = np.where(np.arange(batch) < n, np.arange(batch), -1).astype(np.int32)
    args = (images, index, rows_fov) if fov else (images, index)
    out = jax.device_get(eval_step(variables, *sharding.to_global(args, mesh)))
    probs = {h: np.asarray(p)[:n] for h, p in out["probs"].items()}
    zoom = probs["zoom_in"]
    expected = metrics.expected_grade(zoom)
    thr = None if thresholds is None else metrics.apply_thresholds(expected, thresholds["values"])
    records = []
    for i, (name, prep) in enumerate(items):
        boxes = np.asarray(out["boxes"][i])
        records.append({
            "path": name,
            "photo_height": prep.photo_hw[0], "photo_width": prep.photo_hw[1],
            "grade": int(zoom[i].argmax()),
            "probabilities": [float(p) for p in zoom[i]],
            "expected_grade": float(expected[i]),
            "grade_thresholded": None if thr is None else int(thr[i]),
            "thresholds": None if thresholds is None else thresholds["note"],
            "p_abnormal": float(zoom[i, 1:].sum()), "p_referable": float(zoom[i, 2:].sum()),
            "refer": None if referral is None else bool(zoom[i, 2:].sum() >= referral["threshold"]),
            "boxes": photo_boxes(boxes, prep.transform, size, prep.photo_hw).tolist(),
            "box_scores": [float(s) for s in np.asarray(out["box_scores"][i])],
            "boxes_prepared": boxes.tolist(),
            "heads": {h: [float(p) for p in probs[h][i]] for h in probs},
        } | ({} if prep.label is None else {"label": prep.label}))
    if painter is not None:
        painter.batch(records, items, out)
    return records


def _csv_header(config: ml_collections.ConfigDict, labelled: bool) -> list[str]:
    k, n_boxes = config.model.num_classes, config.model.regions.num_regions
    return (["path", "photo_height", "photo_width"] + (["label"] if labelled else []) + ["grade"]
            + [f"p{c}" for c in range(k)]
            + ["expected_grade", "grade_thresholded", "thresholds", "p_abnormal", "p_referable", "refer"]
            + [f"box{j}_{c}" for j in range(n_boxes) for c in ("y0", "x0", "y1", "x1", "score")])


def _csv_row(r: dict, labelled: bool) -> list:
    thr = r["grade_thresholded"]
    boxes = [v for b, s in zip(r["boxes"], r["box_scores"], strict=True) for v in (*b, f"{s:.5f}")]
    return ([r["path"], r["photo_height"], r["photo_width"]] + ([r["label"]] if labelled else []) + [r["grade"]]
            + [f"{p:.5f}" for p in r["probabilities"]]
            + [f"{r['expected_grade']:.4f}", "" if thr is None else thr, r["thresholds"] or ""]
            + [f"{r['p_abnormal']:.5f}", f"{r['p_referable']:.5f}", "" if r.get("refer") is None else int(r["refer"])]
            + boxes)


def _rewrite_csvs(out_dir: Path, record: predict_log.Record, config: ml_collections.ConfigDict,
                  labelled: bool) -> None:
    """predictions.csv and unreadable.csv from the record (a resumed run drops a row cut by a kill)."""
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_csv_header(config, labelled))
        w.writerows(_csv_row(r, labelled) for r in record.rows)
    with open(out_dir / "unreadable.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason", "detail"])
        w.writerows((u["path"], u["reason"], u["detail"]) for u in record.unreadable)


def _append_csvs(out_dir: Path, rows: list[dict], unreadable: list[dict], labelled: bool) -> None:
    with open(out_dir / "predictions.csv", "a", newline="") as f:
        csv.writer(f).writerows(_csv_row(r, labelled) for r in rows)
    with open(out_dir / "unreadable.csv", "a", newline="") as f:
        csv.writer(f).writerows((u["path"], u["reason"], u["detail"]) for u in unreadable)

