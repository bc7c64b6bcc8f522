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

Skipped and counted: `preprocess.BadPhoto` reasons, "missing_image", "no_label", "bad_label" (grade not 0-4 or
edema not 0-2), "duplicate_row", "conflicting_rows", "no_grade".
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from zoomin_jax.data import preprocess, skips

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
    skips.require(manual_dir, "the folder with the extracted IDRiD download", "idrid", _HOW)
    if (manual_dir / GRADED).is_dir():
        return manual_dir
    for p in sorted(manual_dir.iterdir()):
        if (p / GRADED).is_dir():
            return p
    return skips.require(manual_dir / GRADED, f'the graded set "{GRADED}"', "idrid", _HOW)


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
    for name, row in skips.unique_rows(dicts, "name", counter).items():
        grade, edema = skips.parse_int(row["grade"], 0, 4), skips.parse_int(row["edema"], 0, 2)
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


def lesion_sets(masks: list[tuple[Path, str]]) -> list[skips.LesionSet]:
    """Per mask: (connected-component boxes in the mask's pixels, kind, mask (h, w))."""
    out = []
    for path, kind in masks:
        with Image.open(path) as im:
            m = np.asarray(im if im.mode in ("L", "1") else im.convert("L"))
        out.append((preprocess.mask_boxes(m), kind, m.shape[:2]))
    return out


def _example(task, config: skips.RealConfig) -> dict:
    name, path, (grade, edema), same, masks = task
    fields = {"id": name, "label": grade, "macular_edema": edema, "same_photo": same}
    return skips.photo_example(path, config, fields, lesion_sets(masks))


class Idrid(skips.RealBuilder):
    """IDRiD graded photographs (grades 0-4, macular edema 0-2) and segmentation photographs with lesion boxes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
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
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = find_root(Path(dl_manager.manual_dir))
        images = skips.require(root / GRADED / "1. Original Images", "the graded photographs", "idrid", _HOW)
        gt = skips.require(root / GRADED / "2. Groundtruths", "the grading CSVs", "idrid", _HOW)
        fn = functools.partial(_example, config=self.builder_config)
        counters, graded = {}, {}
        for split, words in (("train", ("training",)), ("test", ("testing", "test set"))):
            folder = _child(images, *words)
            csv_path = next((p for p in sorted(gt.glob("*.csv")) if any(w in p.name.lower() for w in words)), None)
            if split == "train":
                skips.require(images / "a. Training Set" if folder is None else folder,
                              "the graded training photographs", "idrid", _HOW)
                skips.require(gt / "a. IDRiD_Disease Grading_Training Labels.csv" if csv_path is None else csv_path,
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
                                         masks_of_graded.get((split, name), [])))
            for name in sorted(set(photos) - set(grades)):
                c.add("no_label", name)
        for split, (photos, gt_dir) in seg.items():
            tasks[split] = []
            for name, path in photos.items():
                g = same.get((split, name))
                grade = graded[g[0]][1].get(g[1]) if g else None
                if grade is None:
                    counters[split].add("no_grade", name)
                    continue
                tasks[split].append((name, path, grade, g[1], _mask_files(gt_dir, name)))
        return {s: self._generate(s, t, fn, counters[s]) for s, t in tasks.items()}


def prepare(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    image_size: int = 400,
    graham: bool = False,
    *,
    min_side: int = 256,
    num_workers: int | None = None,
) -> Idrid:
    """Prepares IDRiD from `manual_dir` into `data_dir` (once) and returns the builder."""
    return skips.prepare_builder(Idrid, manual_dir, data_dir, image_size, graham, min_side, num_workers)


if __name__ == "__main__":
    skips.prepare_main(prepare)
