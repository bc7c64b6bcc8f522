"""The eyepacs, idrid and messidor builders on tiny fixtures in each download's real layout, and on the real IDRiD
training split in ../shared/data/idrid (or $ZOOMIN_IDRID_DIR) when it is there."""

import collections
import io
import os
from pathlib import Path

import fixtures_real as fx
import numpy as np
import pytest
from PIL import Image

from zoomin_jax.data import eyepacs, idrid, messidor, preprocess, skips

SIZE = 64


def _prepare(module, manual_dir, data_dir):
    return module.prepare(manual_dir, data_dir, SIZE, False, min_side=fx.MIN_SIDE, num_workers=1)


def _read(builder, split):
    return {ex["id"].decode(): ex for ex in builder.as_data_source(split)}


def _check_images(examples):
    for ex in examples.values():
        assert np.asarray(Image.open(io.BytesIO(ex["image"]))).shape == (SIZE, SIZE, 3)


@pytest.fixture(scope="module")
def eyepacs_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("eyepacs")
    expected = fx.make_eyepacs(root / "manual")
    _prepare(eyepacs, root / "manual", root / "tfds")
    # Re-open from disk, as a training run would: everything below reads the prepared files.
    return skips.open_builder(eyepacs.Eyepacs, root / "tfds", SIZE, False, fx.MIN_SIDE), expected


def test_eyepacs_labels_splits_and_skips(eyepacs_prepared):
    builder, expected = eyepacs_prepared
    assert set(builder.info.splits) == {"train", "validation", "test"}
    for split in ("train", "validation", "test"):
        got = _read(builder, split)
        assert {k: int(v["label"]) for k, v in got.items()} == expected[split], split
        _check_images(got)
    train = _read(builder, "train")
    assert int(train["13_right"]["patient_id"]) == 13 and int(train["13_right"]["eye"]) == 1  # right
    assert int(train["10_left"]["eye"]) == 0 and len(train["10_left"]["lesions"]["box"]) == 0
    skipped = builder.info.metadata["skipped"]
    for split in ("train", "validation", "test"):
        assert skipped[split] == expected["skipped"].get(split, {}), split


def test_eyepacs_without_test_folder_prepares_train_only(tmp_path):
    fx.make_eyepacs(tmp_path / "m")
    (tmp_path / "m" / "retinopathy_solution.csv").unlink()
    builder = _prepare(eyepacs, tmp_path / "m", tmp_path / "tfds")
    assert set(builder.info.splits) == {"train"} and builder.info.splits["train"].num_examples == 4


@pytest.fixture(scope="module")
def idrid_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("idrid")
    expected = fx.make_idrid(root / "manual", with_test=True)
    _prepare(idrid, root / "manual", root / "tfds")
    return skips.open_builder(idrid.Idrid, root / "tfds", SIZE, False, fx.MIN_SIDE), expected


def _expected_stored_box(box, hw):
    """The fixture disc: centre = photo centre, radius 0.46 * width; the stored square spans the diameter."""
    h, w = hw
    r = 0.46 * w
    scale = SIZE / (2 * r)
    y0, x0, y1, x1 = box
    return np.array([(y0 - (h / 2 - r)) * scale, (x0 - (w / 2 - r)) * scale,
                     (y1 - (h / 2 - r)) * scale, (x1 - (w / 2 - r)) * scale])


def test_idrid_grades_edema_and_skips(idrid_prepared):
    builder, expected = idrid_prepared
    assert set(builder.info.splits) == {"train", "test", "segmentation_train"}
    for split in ("train", "test"):
        got = _read(builder, split)
        assert {k: (int(v["label"]), int(v["macular_edema"])) for k, v in got.items()} == expected[split]
        _check_images(got)
    assert builder.info.metadata["skipped"] == {
        "train": expected["skipped"]["train"], "test": {},
        "segmentation_train": expected["skipped"]["segmentation_train"],
    }


def test_idrid_mask_boxes_land_on_the_lesions(idrid_prepared):
    builder, expected = idrid_prepared
    seg = _read(builder, "segmentation_train")
    assert list(seg) == ["IDRiD_01"]  # IDRiD_02 has no identical graded photo: skipped, never given a grade
    ex = seg["IDRiD_01"]
    assert (int(ex["label"]), int(ex["macular_edema"])) == expected["train"]["IDRiD_002"]
    assert ex["same_photo"].decode() == "IDRiD_002"
    kinds = np.asarray(ex["lesions"]["kind"])
    boxes = np.asarray(ex["lesions"]["box"])
    names = builder.info.features["lesions"]["kind"].names
    got = collections.defaultdict(list)
    for k, b in zip(kinds, boxes, strict=True):
        got[names[k]].append(b)
    assert sorted(got) == ["haemorrhage", "hard_exudate"]
    for kind, blobs in expected["seg_blobs"].items():
        want = sorted(_expected_stored_box(b, expected["seg_photo_hw"]).tolist() for b in blobs)
        np.testing.assert_allclose(sorted(np.asarray(got[kind]).tolist()), want, atol=1.5)
    # The graded copy of the same photograph carries the same boxes.
    graded = _read(builder, "train")["IDRiD_002"]
    np.testing.assert_array_equal(np.asarray(graded["lesions"]["box"]), boxes)
    assert graded["same_photo"].decode() == "IDRiD_01"
    assert len(_read(builder, "train")["IDRiD_001"]["lesions"]["box"]) == 0


def test_idrid_without_testing_set(tmp_path):
    fx.make_idrid(tmp_path / "m")
    builder = _prepare(idrid, tmp_path / "m", tmp_path / "tfds")
    assert set(builder.info.splits) == {"train", "segmentation_train"}


@pytest.mark.parametrize("sheet", ["xls", "csv"])
def test_messidor_grades_and_errata(tmp_path, sheet):
    if sheet == "xls":
        pytest.importorskip("xlwt", reason="xlwt writes the .xls fixture (test extra)")
        pytest.importorskip("xlrd", reason="xlrd reads Messidor's .xls sheets")
    expected = fx.make_messidor(tmp_path / "m", sheet=sheet)
    builder = _prepare(messidor, tmp_path / "m", tmp_path / "tfds")
    got = _read(builder, "test")
    assert {k: (int(v["label"]), int(v["macular_edema"])) for k, v in got.items()} == expected["test"]
    assert got["20051019_38558_0100_PP"]["base"].decode() == "Base11"
    assert got["20051019_38558_0100_PP"]["department"].decode() == "Service Ophtalmologie Lariboisière"
    _check_images(got)
    assert builder.info.metadata["skipped"] == expected["skipped"]


@pytest.mark.parametrize(
    "module,make,remove,named",
    [
        (eyepacs, fx.make_eyepacs, "train", "train"),
        (eyepacs, fx.make_eyepacs, "trainLabels.csv", "trainLabels.csv"),
        (idrid, fx.make_idrid, "B. Disease Grading", "B. Disease Grading"),
        (messidor, lambda m: fx.make_messidor(m, sheet="csv"), "Base11/Annotation_Base11.csv", "Annotation_Base11"),
        (messidor, None, "", "Base11"),
    ],
)
def test_missing_input_error_names_path_and_source(tmp_path, module, make, remove, named):
    manual = tmp_path / "m"
    if make:
        make(manual)
        target = manual / remove
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        else:
            target.unlink()
    else:
        manual.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        _prepare(module, manual, tmp_path / "tfds")
    msg = str(e.value)
    assert str(manual) in msg and named in msg and "Download" in msg


def test_missing_manual_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        _prepare(eyepacs, tmp_path / "nowhere", tmp_path / "tfds")


# --- The real IDRiD training split (../shared/data/idrid) --------------------------------------------------------

IDRID_DIR = Path(os.environ.get("ZOOMIN_IDRID_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
                                / "idrid")).resolve()


@pytest.mark.skipif(not (IDRID_DIR / idrid.GRADED).is_dir(), reason=f"real IDRiD not found at {IDRID_DIR}")
def test_real_idrid(tmp_path):
    builder = idrid.prepare(IDRID_DIR, tmp_path, 128, False, num_workers=2)
    train = builder.as_data_source("train")
    assert len(train) == 413
    counts = collections.Counter(int(ex["label"]) for ex in train)
    assert [counts[g] for g in range(5)] == [134, 20, 136, 74, 49]
    # 16 of the 19 segmentation photos are graded training photos; the other 3 have no grade here (skipped).
    assert builder.info.metadata["skipped"] == {"train": {}, "segmentation_train": {"no_grade": 3}}
    seg_root = IDRID_DIR / idrid.SEGMENTATION
    gt = seg_root / "2. All Segmentation Groundtruths" / "a. Training Set"
    photos = sorted((seg_root / "1. Original Images" / "a. Training Set").glob("*.jpg"))
    assert len(photos) == 19
    stored = {ex["id"].decode(): ex for ex in builder.as_data_source("segmentation_train")}
    assert len(stored) == 16
    ex_contrast = []
    for path in photos:
        image, t = preprocess.process_photo(path, 128)
        sets = idrid.lesion_sets(idrid._mask_files(gt, path.stem))
        assert {k for _, k, _ in sets} == {"haemorrhage", "hard_exudate"}
        all_boxes = []
        for raw, kind, hw in sets:
            assert len(raw) > 0
            boxes, keep = t.map_boxes(raw, 128, boxes_frame_hw=hw)
            assert keep.mean() > 0.95 and len(boxes) > 0
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all() and (boxes[:, 2:] > boxes[:, :2]).all()
            all_boxes.append(boxes)
            # The mask warped like the photo (to the decoded frame, crop, resize) lies inside the boxes and every
            # box holds some of it: boxes and image share one geometry.
            with Image.open(_mask_path(gt, path.stem, kind)) as m:
                m = m.convert("L").resize(t.frame_hw[::-1], Image.BOX)
            warped = Image.fromarray(preprocess.apply_crop(np.asarray(m), t)).resize((128, 128), Image.BOX)
            warped = np.asarray(warped) > 0
            covered = np.zeros_like(warped)
            for y0, x0, y1, x1 in boxes:
                assert warped[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1].any()
                covered[y0:y1, x0:x1] = True
            # Area filters smear a lesion's edge into the next pixel: allow one pixel around the boxes.
            grown = np.zeros_like(covered)
            for y0, x0, y1, x1 in boxes:
                grown[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
            assert (warped & ~grown).sum() <= 0.01 * warped.sum(), (path.stem, kind)
            if kind == "hard_exudate":
                # Hard exudates are bright yellow: greener than the rest of the disc in most photos.
                disc = image[..., 0] > 40
                ex_contrast.append(image[..., 1][covered & disc].mean() - image[..., 1][~covered & disc].mean())
        if path.stem in stored:
            np.testing.assert_array_equal(np.asarray(stored[path.stem]["lesions"]["box"]), np.concatenate(all_boxes))
    assert np.median(ex_contrast) > 5, ex_contrast


def _mask_path(gt, stem, kind):
    code = {"haemorrhage": "HE", "hard_exudate": "EX"}[kind]
    return next(p for p, k in idrid._mask_files(gt, stem) if k == kind and p.stem.endswith(code))
