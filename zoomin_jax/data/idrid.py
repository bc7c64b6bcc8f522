"""TFDS builder for IDRiD (Indian Diabetic Retinopathy Image Dataset), read in the download's own folder layout.

Splits:
  `train`, `test`: the graded set ("B. Disease Grading"), DR grade 0-4 (ICDR) and macular-edema risk 0-2 from the
    official CSVs. `test` is generated only when its photos and CSV are there (the shared copy has no test split).
  `segmentation_train`, `segmentation_test`: the photos of the segmentation set ("A. Segmentation") with one
    lesion box per connected component (8-connectivity) of each lesion mask (MA microaneurysm, HE haemorrhage,
    EX hard exudate, SE soft exudate = cotton-wool spot; the optic-disc mask is not a lesion and is ignored; any
    mask may be missing).

The segmentation set has no grades, but its photographs are graded photographs under other names (IDRiD_01 is
IDRiD_102, ...). The builder finds, for each segmentation photo, the identical graded photo by content (mean absolute
difference of 64x48 thumbnails below `_SAME_PHOTO_MAD`; on the real training split matches are below 0.7 grey
levels and the nearest non-match is above 4) and stores its grade and edema risk. A segmentation photo with no
identical graded photo is skipped ("no_grade"): the schema needs a grade 0-4 and none is guessed. In the other
direction, a graded photo that is also a segmentation photo carries that photo's mask boxes as its `lesions`
(empty otherwise). `same_photo` names the other set's id of the same photograph ("" if none), so nobody trains on
one copy and evaluates on the other by accident.

Lesion-boxes CSV (optional, `lesion_boxes_csv`; IDRiD has no boxes for most graded photos): rows
`image,class_name,x0,y0,x1,y1` in pixels of the photograph as found in the download folder, classes
`haemorrhage` -> lesion kind "haemorrhage", `hard_exudates` -> "hard_exudate", and `optic_disc`, which is not a lesion
and goes to the `optic_disc` feature instead (all zeros where a photo has none). An optional `split` column (train |
test) says which graded set a row names (default train: IDRiD's testing photos reuse the training names). Boxes go
through the photo's own disc crop and resize. Merge rule: a graded photo the CSV lists (any row, the optic disc
included) takes its lesions from the CSV alone; one it does not list keeps its mask boxes (if it is a segmentation
photo). One annotation standard per photo: the coarse CSV boxes and the masks' connected components count lesions
differently (one CSV box may cover a cluster of hundreds of exudate components), so mixing them would let the few
mask photos dominate a recall. The CSV's content hash is part of the builder config's name, so a dataset prepared
without it, or with another version of it, is never reused by mistake.

Every example also stores `fov_rows`, its field of view (`zoomin_jax.data.fov`), computed before Graham
normalisation, for the chance level of lesion recall.

Skipped and counted: `preprocess.BadPhoto` reasons, "missing_image", "no_label", "bad_label" (grade not 0-4 or
edema not 0-2), "conflicting_rows", "no_grade" (each photo once, under the first reason found; label rows that
repeat another exactly are merged, reported apart as duplicates, not skips); CSV rows under the pseudo-split
"lesion_boxes_csv": "unknown_image" (no graded photo of that name in its split), "unknown_class", "unknown_split",
"malformed_row" (a number that is not a finite number, a missing cell), "empty_box" (x1 <= x0 or y1 <= y0),
"extra_optic_disc" (a second optic-disc row for a photo; the first is kept), "outside_crop" (the box lies wholly
outside the stored square).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import math
import os
import threading
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from zoomin_jax.data import features, photo, preprocess, real_builder, skips

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download IDRiD (Indian Diabetic Retinopathy Image Dataset, Porwal et al. 2018, IEEE Dataport) and extract
"B. Disease Grading" (required) and "A. Segmentation" (optional) unchanged into one folder:
  <manual_dir>/B. Disease Grading/1. Original Images/a. Training Set/IDRiD_001.jpg ...
  <manual_dir>/B. Disease Grading/1. Original Images/b. Testing Set/ (optional)
  <manual_dir>/B. Disease Grading/2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv (+ b. ... Testing)
  <manual_dir>/A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg ... (+ b. Testing Set)
  <manual_dir>/A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/2. Haemorrhages/IDRiD_01_HE.tif ...
Then: python -m zoomin_jax.data.idrid --manual_dir=<manual_dir> --data_dir=<tfds dir> --image_size=400
"""

GRADED = "B. Disease Grading"
SEGMENTATION = "A. Segmentation"
# Mask code -> (words of its folder name, lesion kind). Folder names vary in spelling across IDRiD mirrors.
MASKS = {
    "MA": (("microaneurysm",), "microaneurysm"),
    "HE": (("haemorrhage", "hemorrhage"), "haemorrhage"),
    "EX": (("hard exudate",), "hard_exudate"),
    "SE": (("soft exudate",), "cotton_wool_spot"),
}
# Lesion-boxes CSV class -> lesion kind (zoomin_jax.lesions); the optic disc is stored apart, not as a lesion.
CSV_CLASSES = {"haemorrhage": "haemorrhage", "hard_exudates": "hard_exudate"}
CSV_OPTIC_DISC = "optic_disc"
CSV_COLUMNS = ("image", "class_name", "x0", "y0", "x1", "y1")
BOXES_SKIPS = "lesion_boxes_csv"  # the key of the CSV's skip counts in metadata["skipped"]
_SAME_PHOTO_MAD = 2.0
_THUMB = (64, 48)
_HOW = "How to get it:\n" + MANUAL_DOWNLOAD_INSTRUCTIONS


def _child(parent: Path, *words: str) -> Path | None:
    """The sub-folder of `parent` whose lower-cased name contains any of `words`, or None."""
    if not parent.is_dir():
        return None
    for p in sorted(parent.iterdir()):
        if p.is_dir() and any(w in p.name.lower() for w in words):
            return p
    return None


def find_root(manual_dir: Path) -> Path:
    """The folder holding "B. Disease Grading": manual_dir itself or one of its sub-folders (e.g. "IDRiD/")."""
    real_builder.require(manual_dir, "the folder with the extracted IDRiD download", "idrid", _HOW)
    if (manual_dir / GRADED).is_dir():
        return manual_dir
    for p in sorted(manual_dir.iterdir()):
        if (p / GRADED).is_dir():
            return p
    return real_builder.require(manual_dir / GRADED, f'the graded set "{GRADED}"', "idrid", _HOW)


def read_grades(path: Path, counter: skips.SkipCounter) -> dict[str, tuple[int, int] | None]:
    """Image name -> (grade, edema) from an IDRiD grading CSV; None for rows out of range.

    The header's names are matched stripped and lower-cased ("Risk of macular edema " has a trailing space in the
    official file); trailing empty columns and blank rows are ignored.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]]
    try:
        i_name, i_grade = header.index("image name"), header.index("retinopathy grade")
        i_edema = next(i for i, h in enumerate(header) if h.startswith("risk of macular edema"))
    except (ValueError, StopIteration) as e:
        raise ValueError(f"idrid: {path} lacks a column of 'Image name', 'Retinopathy grade', "
                         f"'Risk of macular edema' (header: {rows[0]})") from e
    dicts = [
        {"name": r[i_name].strip(), "grade": r[i_grade].strip(), "edema": r[i_edema].strip()}
        for r in rows[1:]
        if len(r) > max(i_name, i_grade, i_edema)
    ]
    out = {}
    for name, row in real_builder.unique_rows(dicts, "name", counter).items():
        grade, edema = real_builder.parse_int(row["grade"], 0, 4), real_builder.parse_int(row["edema"], 0, 2)
        out[name] = None if grade is None or edema is None else (grade, edema)
    return out


def _photos(folder: Path | None) -> dict[str, Path]:
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".tif", ".png")}


def _thumb(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (2 * _THUMB[0], 2 * _THUMB[1]))
            return np.asarray(im.convert("RGB").resize(_THUMB, Image.BILINEAR), np.float32)
    except (OSError, SyntaxError, ValueError):
        return None


def match_photos(queries: dict[str, Path], candidates: dict[str, Path]) -> dict[str, str]:
    """query name -> candidate name of the identical photograph (thumbnail MAD below `_SAME_PHOTO_MAD`)."""
    names = [n for n in candidates]
    thumbs = [_thumb(candidates[n]) for n in names]
    keep = [i for i, t in enumerate(thumbs) if t is not None]
    if not keep:
        return {}
    stack = np.stack([thumbs[i] for i in keep])
    out = {}
    for q, path in queries.items():
        t = _thumb(path)
        if t is None:
            continue
        mad = np.abs(stack - t).mean(axis=(1, 2, 3))
        best = int(np.argmin(mad))
        if mad[best] < _SAME_PHOTO_MAD:
            out[q] = names[keep[best]]
    return out


def _mask_files(gt_dir: Path | None, stem: str) -> list[tuple[Path, str]]:
    """(mask path, lesion kind) of each lesion mask present for a segmentation photo."""
    out = []
    for code, (words, kind) in MASKS.items():
        folder = _child(gt_dir, *words) if gt_dir is not None else None
        if folder is None:
            continue
        out += [(p, kind) for p in sorted(folder.glob(f"{stem}_{code}.*")) if p.suffix.lower() in (".tif", ".tiff")]
    return out


def lesion_sets(masks: list[tuple[Path, str]]) -> list[real_builder.LesionSet]:
    """Per mask: (connected-component boxes in the mask's pixels, kind, mask (h, w))."""
    out = []
    for path, kind in masks:
        with Image.open(path) as im:
            m = np.asarray(im if im.mode in ("L", "1") else im.convert("L"))
        out.append((preprocess.mask_boxes(m), kind, m.shape[:2]))
    return out


@dataclasses.dataclass
class CsvBoxes:
    """One photo's rows of the lesion-boxes CSV: boxes (y0, x0, y1, x1) in the photo's pixels, float."""

    lesions: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)
    kinds: list[str] = dataclasses.field(default_factory=list)
    optic_disc: tuple[float, float, float, float] | None = None


def read_lesion_boxes(
    path: Path, known: dict[str, set[str]], counter: skips.SkipCounter
) -> dict[tuple[str, str], CsvBoxes]:
    """(split, image name) -> its CSV boxes; bad rows are skipped and counted in `counter`.

    Args:
      path: the CSV (`image,class_name,x0,y0,x1,y1`, optional `split`; header names matched stripped, lower-cased).
      known: split -> names of its graded photographs; rows naming others are "unknown_image".
      counter: where skipped rows are counted (reasons in the module docstring).

    Raises:
      ValueError: the header lacks a required column (the whole file is wrong, not one row).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"idrid: lesion boxes CSV {path} lacks the column(s) {missing}; expected a header "
                         f"{','.join(CSV_COLUMNS)} (optionally ,split), got {rows[0] if rows else 'an empty file'}")
    col = {c: header.index(c) for c in (*CSV_COLUMNS, "split") if c in header}
    out: dict[tuple[str, str], CsvBoxes] = {}
    for row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        cells = {c: row[i].strip() if i < len(row) else None for c, i in col.items()}
        name, cls, split = cells["image"] or "", (cells["class_name"] or "").lower(), cells.get("split") or "train"
        try:
            x0, y0, x1, y1 = (float(cells[c]) for c in ("x0", "y0", "x1", "y1"))
        except (TypeError, ValueError):
            counter.add("malformed_row", name)
            continue
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            counter.add("malformed_row", name)
        elif split not in known:
            counter.add("unknown_split", name)
        elif name not in known[split]:
            counter.add("unknown_image", name)
        elif cls != CSV_OPTIC_DISC and cls not in CSV_CLASSES:
            counter.add("unknown_class", name)
        elif x1 <= x0 or y1 <= y0:
            counter.add("empty_box", name)
        else:
            entry = out.setdefault((split, name), CsvBoxes())
            if cls == CSV_OPTIC_DISC:
                if entry.optic_disc is not None:
                    counter.add("extra_optic_disc", name)
                else:
                    entry.optic_disc = (y0, x0, y1, x1)
            else:
                entry.lesions.append((y0, x0, y1, x1))
                entry.kinds.append(CSV_CLASSES[cls])
    return out


_count_lock = threading.Lock()  # examples are made on threads; SkipCounter is not thread-safe


def _example(task, config: real_builder.RealConfig, boxes_counter: skips.SkipCounter | None = None) -> dict:
    """One stored example: the photo cut to its disc, lesion boxes (CSV, else masks), optic disc, field of view."""
    name, path, (grade, edema), same, masks, csv_boxes = task
    size = config.image_size
    prepared = photo.prepare(path, size, config.graham, min_side=config.min_side)
    stored, t, fov_rows = prepared.stored, prepared.transform, prepared.fov_rows
    boxes, kinds = [], []
    for raw, kind, frame_hw in lesion_sets(masks) if csv_boxes is None else ():
        boxes.append(t.map_boxes(raw, size, boxes_frame_hw=frame_hw)[0])
        kinds += [kind] * len(boxes[-1])
    optic_disc = np.zeros(4, np.int32)  # all zeros: no optic-disc box
    if csv_boxes is not None:  # pixels of the photograph in the download folder
        full_hw = preprocess.photo_size(path)
        raw = np.asarray(csv_boxes.lesions + [csv_boxes.optic_disc or (0, 0, 0, 0)], np.float64)
        mapped, keep = t.map_boxes(raw, size, boxes_frame_hw=full_hw)
        keep[-1] &= csv_boxes.optic_disc is not None
        where = np.cumsum(keep) - 1  # row of each kept input in `mapped`
        if keep[-1]:
            optic_disc = mapped[where[-1]]
        boxes.append(mapped[where[:-1][keep[:-1]]])
        kinds += [k for k, kept in zip(csv_boxes.kinds, keep[:-1], strict=True) if kept]
        lost = int((~keep[:-1]).sum()) + int(csv_boxes.optic_disc is not None and not keep[-1])
        with _count_lock:
            for _ in range(lost):
                boxes_counter.add("outside_crop", name)
    return {
        "id": name, "label": grade, "macular_edema": edema, "same_photo": same,
        "image": preprocess.encode_jpeg(stored),
        "lesions": {"box": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int32), "kind": kinds},
        "optic_disc": optic_disc.astype(np.int32),
        "fov_rows": fov_rows,
    }


@dataclasses.dataclass(eq=False)
class IdridConfig(real_builder.RealConfig):
    """A real-dataset config plus IDRiD's optional lesion-boxes CSV.

    Attributes:
      lesion_boxes_csv: absolute path of the CSV ("" = none).
      lesion_boxes_sha: its content's SHA-256 (part of the config's name).
    """

    lesion_boxes_csv: str = ""
    lesion_boxes_sha: str = ""


def boxes_csv_path(manual_dir: str | os.PathLike, lesion_boxes_csv: str | os.PathLike) -> Path | None:
    """The CSV's path: as given when absolute, else relative to `manual_dir`; None for ""."""
    if not lesion_boxes_csv:
        return None
    path = Path(os.path.expanduser(os.fspath(lesion_boxes_csv)))
    return path if path.is_absolute() else Path(os.path.expanduser(os.fspath(manual_dir))) / path


def make_config(image_size: int, graham: bool = False, min_side: int = 256,
                lesion_boxes_csv: Path | None = None) -> real_builder.RealConfig:
    """The standard config without a CSV; with one, a config named after the CSV's content (`_boxes<sha>`)."""
    if lesion_boxes_csv is None:
        return real_builder.make_config(image_size, graham, min_side)
    path = real_builder.require(Path(lesion_boxes_csv), "the lesion boxes CSV (config.data.lesion_boxes_csv)", "idrid",
                         "Set data.lesion_boxes_csv to an existing file, relative to data.manual_dir or absolute, or "
                         "to \"\" for none.")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    base = real_builder.make_config(image_size, graham, min_side)
    return IdridConfig(
        name=f"{base.name}_boxes{sha[:12]}",
        description=f"{base.description}, lesion boxes from {path.name} (sha256 {sha[:12]})",
        image_size=image_size, graham=graham, min_side=min_side,
        lesion_boxes_csv=os.fspath(path.resolve()), lesion_boxes_sha=sha,
    )


class Idrid(real_builder.RealBuilder):
    """IDRiD graded photographs (grades 0-4, macular edema 0-2) and segmentation photographs with lesion boxes."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "optic_disc and fov_rows features; optional lesion-boxes CSV (IdridConfig).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    _MANUAL_WHAT = 'the IDRiD folders "B. Disease Grading" (and "A. Segmentation")'
    _DESCRIPTION = "IDRiD fundus photographs: DR grade 0-4, macular-edema risk 0-2, lesion boxes from pixel masks."
    _HOMEPAGE = "https://idrid.grand-challenge.org/"
    _CITATION = (
        "Porwal et al., Indian Diabetic Retinopathy Image Dataset (IDRiD): A Database for Diabetic Retinopathy "
        "Screening Research, Data 3(3):25, 2018."
    )

    def _extra_features(self) -> dict:
        return {
            "macular_edema": tfds.features.ClassLabel(num_classes=3),
            "same_photo": tfds.features.Text(),
            **features.localisation_features(),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = find_root(Path(dl_manager.manual_dir))
        images = real_builder.require(root / GRADED / "1. Original Images", "the graded photographs", "idrid", _HOW)
        gt = real_builder.require(root / GRADED / "2. Groundtruths", "the grading CSVs", "idrid", _HOW)
        counters, graded = {}, {}
        for split, words in (("train", ("training",)), ("test", ("testing", "test set"))):
            folder = _child(images, *words)
            csv_path = next((p for p in sorted(gt.glob("*.csv")) if any(w in p.name.lower() for w in words)), None)
            if split == "train":
                real_builder.require(images / "a. Training Set" if folder is None else folder,
                              "the graded training photographs", "idrid", _HOW)
                real_builder.require(
                    gt / "a. IDRiD_Disease Grading_Training Labels.csv" if csv_path is None else csv_path,
                    "the training grades CSV", "idrid", _HOW)
            elif folder is None or csv_path is None:
                logging.warning("idrid: no graded testing set (photos %s, CSV %s); split test not generated.",
                                folder, csv_path)
                continue
            counters[split] = skips.SkipCounter(split)
            graded[split] = (_photos(folder), read_grades(csv_path, counters[split]))

        seg = {}
        seg_images = root / SEGMENTATION / "1. Original Images"
        seg_gt = root / SEGMENTATION / "2. All Segmentation Groundtruths"
        for split, words in (("segmentation_train", ("training",)), ("segmentation_test", ("testing", "test set"))):
            folder = _child(seg_images, *words)
            if folder is None:
                logging.info("idrid: no segmentation photographs for %s under %s.", split, seg_images)
                continue
            seg[split] = (_photos(folder), _child(seg_gt, *words))
            counters[split] = skips.SkipCounter(split)

        # Segmentation photo -> the identical graded photo (split, name), by content.
        candidates = {(s, n): p for s, (photos, _) in graded.items() for n, p in photos.items()}
        queries = {(s, n): p for s, (photos, _) in seg.items() for n, p in photos.items()}
        same = match_photos(queries, candidates) if queries else {}
        masks_of_graded = {g: _mask_files(seg[s][1], n) for (s, n), g in same.items()}
        logging.info("idrid: %d of %d segmentation photographs matched to graded ones.", len(same), len(queries))

        csv_path = getattr(self.builder_config, "lesion_boxes_csv", "")
        boxes_counter = skips.SkipCounter(BOXES_SKIPS, unit="row")  # rows, not photos: each bad row counts
        csv_boxes = {}
        if csv_path:
            csv_boxes = read_lesion_boxes(Path(csv_path), {s: set(p) for s, (p, _) in graded.items()}, boxes_counter)
            logging.info("idrid: lesion boxes for %d photographs from %s", len(csv_boxes), csv_path)
        fn = functools.partial(_example, config=self.builder_config, boxes_counter=boxes_counter)

        tasks = {}
        for split, (photos, grades) in graded.items():
            c, tasks[split] = counters[split], []
            for name, grade in grades.items():
                if name not in photos:
                    c.add("missing_image", name)
                elif grade is None:
                    c.add("bad_label", name)
                else:
                    seg_key = next((q for q, g in same.items() if g == (split, name)), None)
                    tasks[split].append((name, photos[name], grade, seg_key[1] if seg_key else "",
                                         masks_of_graded.get((split, name), []), csv_boxes.get((split, name))))
            for name in sorted(set(photos) - set(grades)):
                c.add("no_label", name)  # not again for a photo whose rows conflict: counted once, as that
        for split, (photos, gt_dir) in seg.items():
            tasks[split] = []
            for name, path in photos.items():
                g = same.get((split, name))
                grade = graded[g[0]][1].get(g[1]) if g else None
                if grade is None:
                    counters[split].add("no_grade", name)
                    continue
                tasks[split].append((name, path, grade, g[1], _mask_files(gt_dir, name), None))
        gens = {s: self._generate(s, t, fn, counters[s]) for s, t in tasks.items()}
        if csv_path:
            gens = {s: self._record_boxes_skips(g, boxes_counter) for s, g in gens.items()}
        return gens

    def _record_boxes_skips(self, examples, counter: skips.SkipCounter):
        """Passes a split's examples through, then records the CSV's skip counts (final after the last split)."""
        yield from examples
        self.info.metadata.setdefault("skipped", {})[BOXES_SKIPS] = counter.as_dict()
        logging.info("idrid: lesion boxes CSV rows skipped so far: %s", counter.as_dict() or "none")


def prepare(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    image_size: int = 400,
    graham: bool = False,
    *,
    min_side: int = 256,
    num_workers: int | None = None,
    lesion_boxes_csv: str | os.PathLike = "",
) -> Idrid:
    """Prepares IDRiD from `manual_dir` into `data_dir` (once) and returns the builder.

    `lesion_boxes_csv`: optional boxes CSV (module docstring), relative to `manual_dir` unless absolute.
    """
    config = make_config(image_size, graham, min_side, boxes_csv_path(manual_dir, lesion_boxes_csv))
    builder = real_builder.prepare_builder(Idrid, manual_dir, data_dir, image_size, graham, min_side, num_workers,
                                    config=config)
    return builder


def open_builder(
    data_dir: str | os.PathLike, image_size: int, graham: bool, min_side: int = 256, *,
    lesion_boxes_csv: str | os.PathLike = "", manual_dir: str | os.PathLike = "",
) -> Idrid:
    """The IDRiD builder for these settings, preparing nothing (the CSV, if any, must be readable: its hash names
    the config)."""
    config = make_config(image_size, graham, min_side, boxes_csv_path(manual_dir, lesion_boxes_csv))
    return real_builder.open_builder(Idrid, data_dir, image_size, graham, min_side, config=config)


def _main() -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--lesion_boxes_csv", default="", help="lesion boxes CSV, relative to --manual_dir")
    known, rest = parser.parse_known_args(sys.argv[1:])

    def prepare_with_boxes(*args, **kwargs) -> Idrid:
        return prepare(*args, lesion_boxes_csv=known.lesion_boxes_csv, **kwargs)

    prepare_with_boxes.__doc__ = prepare.__doc__ + "\nAlso: --lesion_boxes_csv=<CSV>."
    real_builder.prepare_main(prepare_with_boxes, rest)


if __name__ == "__main__":
    _main()
