"""Tiny copies of the real datasets' download layouts, written into a tmp dir for the builder tests.

Photos are synthetic fundus-like discs (black border, red disc with vignetting, optional off-centre position and
top/bottom cut-off); bad files of each kind the builders must skip are written beside good ones. Each `make_*`
returns what a correct builder must produce, so tests compare against it.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# Photos in the fixtures are small for speed; tests prepare with min_side=MIN_SIDE and TINY is below it.
PHOTO_HW = (120, 160)
MIN_SIDE = 64
TINY_HW = (40, 50)


def fundus_photo(
    hw: tuple[int, int] = PHOTO_HW,
    centre: tuple[float, float] | None = None,
    radius: float | None = None,
    seed: int = 0,
    blobs: list[tuple[int, int, int, int]] = (),
    paint: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]] = (),
) -> np.ndarray:
    """A fundus-like RGB photo: black background, red disc with darker rim (vignetting) and mild texture.

    Args:
      hw: (height, width).
      centre: disc centre (y, x) in pixels; default the photo centre.
      radius: disc radius; default 0.46 * width (so a landscape photo cuts the disc at top and bottom).
      seed: texture and tint seed (different seeds give photos a content match can tell apart).
      blobs: dark-red rectangles (y0, x0, y1, x1) drawn on the disc, e.g. where a mask marks a lesion.
      paint: (rectangle, RGB colour) drawn on the disc, e.g. bright squares where a boxes CSV puts a box.
    """
    h, w = hw
    rng = np.random.default_rng(seed)
    cy, cx = centre if centre is not None else (h / 2, w / 2)
    r = radius if radius is not None else 0.46 * w
    yy, xx = np.mgrid[:h, :w] + 0.5
    d = np.hypot(yy - cy, xx - cx) / r
    inside = d <= 1.0
    shade = 1.0 - 0.55 * np.clip(d, 0, 1) ** 2
    tint = np.array([200, 90, 40], np.float32) * (0.8 + 0.4 * rng.random(3))
    img = shade[..., None] * tint + rng.normal(0, 4, (h, w, 3))
    img += 25 * np.sin(xx / (3 + 4 * rng.random()) + seed)[..., None] * np.array([0.3, 1.0, 0.5])
    for y0, x0, y1, x1 in blobs:
        img[y0:y1, x0:x1] = (90, 20, 15)
    for (y0, x0, y1, x1), colour in paint:
        img[y0:y1, x0:x1] = colour
    img = np.where(inside[..., None], img, rng.normal(3, 2, (h, w, 3)))
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 92, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(img)
    if mode:
        im = im.convert(mode)
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_bad_photos(folder: Path, names: dict[str, str], ext: str = ".jpeg") -> None:
    """Writes one unusable file per requested reason: names maps file stem -> reason.

    Reasons: corrupt (JPEG header then garbage), truncated (first half of a JPEG), grayscale ('L' JPEG),
    cmyk (CMYK JPEG), tiny (below MIN_SIDE).
    """
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(fundus_photo(seed=99))
    for stem, reason in names.items():
        path = folder / f"{stem}{ext}"
        if reason == "corrupt":
            data = good[:20] + bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8))
        elif reason == "truncated":
            data = good[: len(good) // 2]
        elif reason == "grayscale":
            data = jpeg_bytes(fundus_photo(seed=98), mode="L")
        elif reason == "cmyk":
            data = jpeg_bytes(fundus_photo(seed=97), mode="CMYK")
        elif reason == "tiny":
            data = jpeg_bytes(fundus_photo(hw=TINY_HW, seed=96))
        else:
            raise ValueError(reason)
        path.write_bytes(data)


def _write_csv(path: Path, header: list[str], rows: list[list], line_end: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator=line_end)
        w.writerow(header)
        w.writerows(rows)


def make_eyepacs(root: Path) -> dict:
    """Kaggle "Diabetic Retinopathy Detection" layout with good photos and every kind of bad input.

    Returns:
      {"train": {id: level}, "validation": {...}, "test": {...}, "skipped": {split: {reason: n}}}
    """
    train, test = root / "train", root / "test"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    expected = {"train": {}, "validation": {}, "test": {}}
    train_rows, sol_rows = [], []
    for i, (pid, eye, level) in enumerate([(10, "left", 0), (10, "right", 1), (13, "left", 2), (13, "right", 4)]):
        name = f"{pid}_{eye}"
        (train / f"{name}.jpeg").write_bytes(jpeg_bytes(fundus_photo(seed=i)))
        train_rows.append([name, level])
        expected["train"][name] = level
    # Bad photos in train, each with a label row.
    bad = {"15_left": "corrupt", "15_right": "truncated", "16_left": "grayscale", "16_right": "cmyk", "17_left": "tiny"}
    write_bad_photos(train, bad)
    train_rows += [[n, 1] for n in bad]
    # A row whose image is missing, an image without a row, an out-of-range level.
    train_rows.append(["18_left", 2])
    (train / "19_left.jpeg").write_bytes(jpeg_bytes(fundus_photo(seed=19)))
    (train / "20_left.jpeg").write_bytes(jpeg_bytes(fundus_photo(seed=20)))
    train_rows.append(["20_left", 7])
    (train / ".DS_Store").write_bytes(b"junk")
    _write_csv(root / "trainLabels.csv", ["image", "level"], train_rows)

    for i, (name, level, usage) in enumerate(
        [("1_left", 0, "Public"), ("1_right", 3, "Public"), ("2_left", 1, "Private"), ("2_right", 2, "Private"),
         ("3_left", 4, "Private")]
    ):
        (test / f"{name}.jpeg").write_bytes(jpeg_bytes(fundus_photo(seed=50 + i)))
        sol_rows.append([name, level, usage])
        expected["validation" if usage == "Public" else "test"][name] = level
    (test / "4_left.jpeg").write_bytes(jpeg_bytes(fundus_photo(seed=60)))  # no solution row
    sol_rows.append(["5_left", 1, "Private"])  # image missing
    _write_csv(root / "retinopathy_solution.csv", ["image", "level", "Usage"], sol_rows)
    (root / "sample.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # stale extra, must be ignored
    (root / "sample").mkdir()
    (root / "sample" / "99_left.jpeg").write_bytes(jpeg_bytes(fundus_photo(seed=61)))
    expected["skipped"] = {
        "train": {"corrupt": 1, "truncated": 1, "grayscale": 1, "cmyk": 1, "too_small": 1, "missing_image": 1,
                  "no_label": 1, "bad_label": 1},
        "test": {"no_label": 1, "missing_image": 1},
    }
    return expected


IDRID_GRADED = "B. Disease Grading"
IDRID_SEG = "A. Segmentation"
IDRID_MASK_DIRS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
                   "SE": "4. Soft Exudates"}


# IDRiD_003 carries two painted squares (y0, x0, y1, x1) that its rows in the boxes CSV name: a white "lesion" and a
# yellow "optic disc", so a test can find them in the stored image by colour alone.
IDRID_PAINTED = {"lesion": ((50, 90, 62, 104), (250, 250, 250)), "optic_disc": ((30, 40, 44, 56), (250, 250, 40))}


def make_idrid(root: Path, with_test: bool = False) -> dict:
    """IDRiD layout: graded training set (+ optional testing set) and a segmentation training set with masks.

    Segmentation photo IDRiD_01 is the same photograph as graded IDRiD_002 (grade 3) and has an HE mask with two
    blobs and an EX mask with one; IDRiD_02 is not among the graded photos (skipped, no grade).
    `<root>/lesion_boxes.csv` (read only when a test asks for it) lists IDRiD_001 (optic disc only), IDRiD_003 (the
    painted squares, `IDRID_PAINTED`, and a hard exudate) and IDRiD_004 (a haemorrhage, one box outside the disc
    crop), not IDRiD_002 (which keeps its mask boxes), plus one bad row of each kind the builder must count.

    Returns:
      {"train": {id: (grade, edema)}, "test": {...}, "seg_blobs": {kind: [boxes in photo pixels]},
       "seg_photo_hw": (h, w), "skipped": {...}, "csv": {"lesions": {id: [(kind, box yx)]}, "optic_disc": {id: box},
       "skipped": {reason: n}}}
    """
    img_dir = root / IDRID_GRADED / "1. Original Images" / "a. Training Set"
    gt_dir = root / IDRID_GRADED / "2. Groundtruths"
    img_dir.mkdir(parents=True)
    he_boxes = [(40, 50, 46, 58), (70, 100, 75, 104)]
    ex_boxes = [(55, 70, 60, 80)]
    expected = {"train": {}, "test": {}}
    rows = []
    for i, (grade, edema) in enumerate([(0, 0), (3, 2), (2, 1), (4, 2)]):
        name = f"IDRiD_{i + 1:03d}"
        blobs = he_boxes + ex_boxes if i == 1 else []
        paint = list(IDRID_PAINTED.values()) if i == 2 else []
        photo = fundus_photo(seed=200 + i, blobs=blobs, paint=paint)
        (img_dir / f"{name}.jpg").write_bytes(jpeg_bytes(photo, quality=95))
        rows.append([name, grade, edema, "", ""])
        expected["train"][name] = (grade, edema)
    write_bad_photos(img_dir, {"IDRiD_005": "truncated"}, ext=".jpg")
    rows.append(["IDRiD_005", 1, 0, "", ""])
    rows.append(["IDRiD_006", 9, 0, "", ""])  # grade out of range, photo present
    (img_dir / "IDRiD_006.jpg").write_bytes(jpeg_bytes(fundus_photo(seed=206)))
    rows.append(["", "", "", "", ""])  # the official CSV ends in empty rows
    # Header as in the official file: trailing space, trailing empty columns, CRLF line ends.
    _write_csv(gt_dir / "a. IDRiD_Disease Grading_Training Labels.csv",
               ["Image name", "Retinopathy grade", "Risk of macular edema ", "", ""], rows, line_end="\r\n")
    skipped = {"train": {"truncated": 1, "bad_label": 1}}
    if with_test:
        t_dir = root / IDRID_GRADED / "1. Original Images" / "b. Testing Set"
        t_dir.mkdir(parents=True)
        t_rows = []
        for i, (grade, edema) in enumerate([(1, 0), (2, 2)]):
            name = f"IDRiD_{i + 1:03d}"  # test names repeat training names, as in the real download
            (t_dir / f"{name}.jpg").write_bytes(jpeg_bytes(fundus_photo(seed=300 + i)))
            t_rows.append([name, grade, edema])
            expected["test"][name] = (grade, edema)
        _write_csv(gt_dir / "b. IDRiD_Disease Grading_Testing Labels.csv",
                   ["Image name", "Retinopathy grade", "Risk of macular edema "], t_rows)

    seg_img = root / IDRID_SEG / "1. Original Images" / "a. Training Set"
    seg_gt = root / IDRID_SEG / "2. All Segmentation Groundtruths" / "a. Training Set"
    seg_img.mkdir(parents=True)
    # The same photograph as graded IDRiD_002, under its segmentation-set name (re-encoded, as in the real set).
    graded2 = np.asarray(Image.open(img_dir / "IDRiD_002.jpg"))
    (seg_img / "IDRiD_01.jpg").write_bytes(jpeg_bytes(graded2, quality=90))
    (seg_img / "IDRiD_02.jpg").write_bytes(jpeg_bytes(fundus_photo(seed=400)))
    h, w = PHOTO_HW
    for kind, boxes in (("HE", he_boxes), ("EX", ex_boxes)):
        mask = np.zeros((h, w), np.uint8)
        for y0, x0, y1, x1 in boxes:
            mask[y0:y1, x0:x1] = 255
        d = seg_gt / IDRID_MASK_DIRS[kind]
        d.mkdir(parents=True)
        Image.fromarray(mask).save(d / f"IDRiD_01_{kind}.tif", compression="tiff_lzw")
    expected["seg_blobs"] = {"haemorrhage": he_boxes, "hard_exudate": ex_boxes}
    expected["seg_photo_hw"] = PHOTO_HW
    skipped["segmentation_train"] = {"no_grade": 1}
    expected["skipped"] = skipped
    expected["csv"] = _write_idrid_boxes(root / "lesion_boxes.csv", with_test)
    return expected


def _write_idrid_boxes(path: Path, with_test: bool) -> dict:
    """The fixture's lesion-boxes CSV (columns as the shared file's, plus the optional split column)."""
    yx = lambda x0, y0, x1, y1: (y0, x0, y1, x1)  # noqa: E731  CSV order is x0, y0, x1, y1
    lesion, disc = IDRID_PAINTED["lesion"][0], IDRID_PAINTED["optic_disc"][0]
    good = [
        ["IDRiD_001", "optic_disc", 60, 40, 80, 60, ""],
        ["IDRiD_003", "haemorrhage", lesion[1], lesion[0], lesion[3], lesion[2], ""],
        ["IDRiD_003", "hard_exudates", 100, 70, 110.5, 78, "train"],
        ["IDRiD_003", "optic_disc", disc[1], disc[0], disc[3], disc[2], ""],
        ["IDRiD_004", "haemorrhage", 120, 60, 130, 66, ""],
        ["IDRiD_004", "optic_disc", 30, 50, 45, 65, ""],
    ]
    bad = [
        ["IDRiD_004", "optic_disc", 35, 50, 50, 65, ""],  # extra_optic_disc (the first is kept)
        ["IDRiD_004", "hard_exudates", 0, 50, 3, 60, ""],  # outside_crop: the disc square starts at x = 6.4
        ["IDRiD_999", "haemorrhage", 10, 10, 20, 20, ""],  # unknown_image
        ["IDRiD_001", "cotton_wool_spots", 10, 10, 20, 20, ""],  # unknown_class
        ["IDRiD_001", "haemorrhage", "abc", 10, 20, 20, ""],  # malformed_row
        ["IDRiD_001", "haemorrhage", 10, 10, "nan", 20, ""],  # malformed_row
        ["IDRiD_001", "haemorrhage", 10, 10, 20],  # malformed_row (cells missing)
        ["IDRiD_004", "haemorrhage", 10, 10, 10, 20, ""],  # empty_box
        ["IDRiD_001", "optic_disc", 60, 40, 80, 60, "validation"],  # unknown_split
    ]
    skipped = {"extra_optic_disc": 1, "outside_crop": 1, "unknown_image": 1, "unknown_class": 1,
               "malformed_row": 3, "empty_box": 1, "unknown_split": 1}
    if with_test:
        good.append(["IDRiD_001", "optic_disc", 70, 40, 90, 60, "test"])  # the testing set's IDRiD_001
    else:
        bad.append(["IDRiD_001", "optic_disc", 70, 40, 90, 60, "test"])  # no testing set: unknown_split
        skipped["unknown_split"] += 1
    _write_csv(path, ["image", "class_name", "x0", "y0", "x1", "y1", "split"], good + bad)
    return {
        "lesions": {"IDRiD_001": [], "IDRiD_003": [("haemorrhage", lesion), ("hard_exudate", yx(100, 70, 110.5, 78))],
                    "IDRiD_004": [("haemorrhage", yx(120, 60, 130, 66))]},
        "optic_disc": {"IDRiD_001": yx(60, 40, 80, 60), "IDRiD_003": disc, "IDRiD_004": yx(30, 50, 45, 65)},
        "test_optic_disc": {"IDRiD_001": yx(70, 40, 90, 60)} if with_test else {},
        "skipped": skipped,
    }


def make_messidor(root: Path, sheet: str = "xls", hw: tuple[int, int] = PHOTO_HW) -> dict:
    """Messidor layout: Base11 and Base12 folders with .tif photos and Annotation_BaseNN.{xls,csv}.

    Base12 lists one image twice with the same grade (kept once, the duplicate reported apart: nothing dropped) and
    one twice with different grades (skipped: conflicting rows), as in Messidor's errata.

    Returns:
      {"test": {id: (grade, edema)}, "skipped": {"test": {reason: n}}, "duplicate_rows": {"test": n}}
    """
    header = ["Image name", "Ophthalmologic department", "Retinopathy grade", "Risk of macular edema "]
    expected = {}
    seed = 500
    bases = {
        "Base11": [("20051019_38557_0100_PP", 0, 0), ("20051019_38558_0100_PP", 3, 2)],
        "Base12": [("20051020_43808_0100_PP", 1, 0), ("20051020_43809_0100_PP", 2, 1),
                   ("20051020_43809_0100_PP", 2, 1), ("20051020_43810_0100_PP", 1, 0),
                   ("20051020_43810_0100_PP", 2, 0), ("20051020_43811_0100_PP", 5, 0)],
    }
    for base, rows in bases.items():
        d = root / base
        d.mkdir(parents=True)
        for name in dict.fromkeys(r[0] for r in rows):
            seed += 1
            Image.fromarray(fundus_photo(hw=hw, seed=seed)).save(d / f"{name}.tif")
        table = [[f"{n}.tif", "Service Ophtalmologie Lariboisière", g, e] for n, g, e in rows]
        if sheet == "xls":
            import xlwt

            wb = xlwt.Workbook()
            ws = wb.add_sheet("Feuil1")
            for c, v in enumerate(header):
                ws.write(0, c, v)
            for r, row in enumerate(table, start=1):
                for c, v in enumerate(row):
                    ws.write(r, c, v)
            wb.save(os.fspath(d / f"Annotation_{base}.xls"))
        else:
            _write_csv(d / f"Annotation_{base}.csv", header, table)
    (root / "Base11" / "20051019_99999_0100_PP.tif").write_bytes(b"II*\x00garbage")  # corrupt, and no row
    for n, g, e in bases["Base11"] + bases["Base12"][:2]:
        expected[n] = (g, e)
    expected["20051020_43809_0100_PP"] = (2, 1)
    return {"test": expected,
            "skipped": {"test": {"conflicting_rows": 1, "bad_label": 1, "no_label": 1}},
            "duplicate_rows": {"test": 1}}


def make_eyepacs_patients(root: Path, patients: int = 30, one_eyed: tuple[int, ...] = (7, 19), usage: str = "") -> dict:
    """A Kaggle-layout EyePACS train folder of `patients` patients (ids 100, 103, 106, ...), both eyes each but for
    the `one_eyed` positions (left eye only); with `usage`, a test/ folder and a solution file whose rows all have
    that Usage (a download with Private rows only, say). Returns {photo name: level}."""
    train = root / "train"
    train.mkdir(parents=True)
    rows, expected = [], {}
    for k in range(patients):
        for eye in ("left",) if k in one_eyed else ("left", "right"):
            name = f"{100 + 3 * k}_{eye}"
            (train / f"{name}.jpeg").write_bytes(jpeg_bytes(fundus_photo(hw=(256, 320), seed=k)))
            level = (k * 7 + (eye == "right")) % 5
            rows.append([name, level])
            expected[name] = level
    _write_csv(root / "trainLabels.csv", ["image", "level"], rows)
    if usage:
        (root / "test").mkdir()
        (root / "test" / "1_left.jpeg").write_bytes(jpeg_bytes(fundus_photo(hw=(256, 320), seed=99)))
        _write_csv(root / "retinopathy_solution.csv", ["image", "level", "Usage"], [["1_left", 2, usage]])
    return expected


def make_idrid_graded(root: Path, grades: tuple[int, ...] = (0, 2, 3, 4), hw: tuple[int, int] = (300, 420)) -> dict:
    """The graded training set of the IDRiD layout alone (no segmentation set, no boxes CSV), photographs of `hw`
    (large enough for the default minimum side). Returns {id: grade}."""
    img_dir = root / IDRID_GRADED / "1. Original Images" / "a. Training Set"
    img_dir.mkdir(parents=True)
    rows, expected = [], {}
    for i, grade in enumerate(grades):
        name = f"IDRiD_{i + 1:03d}"
        (img_dir / f"{name}.jpg").write_bytes(jpeg_bytes(fundus_photo(hw=hw, seed=900 + i), quality=95))
        rows.append([name, grade, 0])
        expected[name] = grade
    _write_csv(root / IDRID_GRADED / "2. Groundtruths" / "a. IDRiD_Disease Grading_Training Labels.csv",
               ["Image name", "Retinopathy grade", "Risk of macular edema "], rows)
    return expected
