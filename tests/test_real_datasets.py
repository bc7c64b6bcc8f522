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

from zoomin_jax.data import eyepacs, fov, idrid, messidor, photo, preprocess, real_builder

SIZE = 64


def _prepare(module, manual_dir, data_dir, **kwargs):
    return module.prepare(manual_dir, data_dir, SIZE, False, min_side=fx.MIN_SIDE, num_workers=1, **kwargs)


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
    return real_builder.open_builder(eyepacs.Eyepacs, root / "tfds", SIZE, False, fx.MIN_SIDE), expected


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
    """The IDRiD fixture prepared with its lesion-boxes CSV (given relative to the manual folder, as configs do)."""
    root = tmp_path_factory.mktemp("idrid")
    expected = fx.make_idrid(root / "manual", with_test=True)
    _prepare(idrid, root / "manual", root / "tfds", lesion_boxes_csv="lesion_boxes.csv")
    builder = idrid.open_builder(root / "tfds", SIZE, False, fx.MIN_SIDE, lesion_boxes_csv="lesion_boxes.csv",
                                 manual_dir=root / "manual")
    assert builder.is_prepared()
    return builder, expected


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
        idrid.BOXES_SKIPS: expected["csv"]["skipped"],
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


def _painted_box(image, colour):
    """Bounding box (y0, x0, y1, x1) of the pixels of a painted colour, found by colour alone."""
    im = image.astype(int)
    if colour[2] > 200:  # white
        hit = (im > 190).all(axis=-1)
    else:  # yellow
        hit = (im[..., 0] > 190) & (im[..., 1] > 190) & (im[..., 2] < 140)
    ys, xs = np.nonzero(hit)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])


def _kind_boxes(builder, ex):
    names = builder.info.features["lesions"]["kind"].names
    return sorted((names[k], tuple(int(v) for v in b))
                  for k, b in zip(ex["lesions"]["kind"], ex["lesions"]["box"], strict=True))


def test_idrid_csv_boxes_land_on_the_painted_squares(idrid_prepared):
    builder, _ = idrid_prepared
    ex = _read(builder, "train")["IDRiD_003"]
    image = np.asarray(Image.open(io.BytesIO(ex["image"])).convert("RGB"))
    haem = [b for k, b in _kind_boxes(builder, ex) if k == "haemorrhage"]
    assert len(haem) == 1
    for box, (_, colour) in ((np.array(haem[0]), fx.IDRID_PAINTED["lesion"]),
                             (np.asarray(ex["optic_disc"]), fx.IDRID_PAINTED["optic_disc"])):
        painted = _painted_box(image, colour)
        # The stored box holds the painted square and is at most a pixel and a half larger on any side.
        assert (box[:2] <= painted[:2]).all() and (box[2:] >= painted[2:]).all(), (box, painted)
        assert np.abs(box - painted).max() <= 1.5, (box, painted)


def test_idrid_csv_lesions_optic_disc_and_merge_rule(idrid_prepared):
    builder, expected = idrid_prepared
    train = _read(builder, "train")
    hw = fx.PHOTO_HW
    for name, lesions in expected["csv"]["lesions"].items():
        got = _kind_boxes(builder, train[name])
        assert [k for k, _ in got] == sorted(k for k, _ in lesions), name
        want = sorted((k, tuple(_expected_stored_box(b, hw))) for k, b in lesions)
        for (_, g), (_, w) in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1.5)
        np.testing.assert_allclose(train[name]["optic_disc"], _expected_stored_box(
            expected["csv"]["optic_disc"][name], hw), atol=1.5)
    # The optic disc is not a lesion: IDRiD_001 has only an optic-disc row, so no lesion.
    assert len(train["IDRiD_001"]["lesions"]["box"]) == 0
    # IDRiD_002 is not in the CSV: it keeps its segmentation masks' boxes and has no optic-disc box.
    seg = _read(builder, "segmentation_train")["IDRiD_01"]
    np.testing.assert_array_equal(train["IDRiD_002"]["lesions"]["box"], seg["lesions"]["box"])
    assert not np.asarray(train["IDRiD_002"]["optic_disc"]).any()
    # Rows with split=test name the testing photo of that name, not the training one.
    test = _read(builder, "test")
    np.testing.assert_allclose(test["IDRiD_001"]["optic_disc"], _expected_stored_box(
        expected["csv"]["test_optic_disc"]["IDRiD_001"], hw), atol=1.5)
    assert not np.asarray(test["IDRiD_002"]["optic_disc"]).any()


def test_idrid_csv_content_names_the_prepared_dataset(idrid_prepared, tmp_path):
    builder, _ = idrid_prepared
    tfds_dir = Path(builder.data_dir).parents[2]
    manual = tfds_dir.parent / "manual"
    csv_path = manual / "lesion_boxes.csv"
    # The same content elsewhere is the same dataset; without the CSV, or with an edited one, it is not prepared.
    copy = tmp_path / "copy.csv"
    copy.write_bytes(csv_path.read_bytes())
    same = idrid.open_builder(tfds_dir, SIZE, False, fx.MIN_SIDE, lesion_boxes_csv=copy)
    assert same.builder_config.name == builder.builder_config.name and same.is_prepared()
    assert not idrid.open_builder(tfds_dir, SIZE, False, fx.MIN_SIDE).is_prepared()
    copy.write_bytes(csv_path.read_bytes() + b"IDRiD_001,haemorrhage,70,50,75,55\n")
    edited = idrid.open_builder(tfds_dir, SIZE, False, fx.MIN_SIDE, lesion_boxes_csv=copy)
    assert edited.builder_config.name != builder.builder_config.name and not edited.is_prepared()
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        idrid.open_builder(tfds_dir, SIZE, False, fx.MIN_SIDE, lesion_boxes_csv="nowhere.csv", manual_dir=manual)


def test_idrid_field_of_view_holds_the_black_bands(idrid_prepared):
    """Fixture photos are 120 px high with a disc of radius 73.6 px: the stored square (147.2 px of photo) has
    black bands of 13.6 photo px (5.9 stored px) at top and bottom, and the disc's chords in between."""
    builder, _ = idrid_prepared
    rows = np.asarray(_read(builder, "train")["IDRiD_001"]["fov_rows"])
    assert rows.shape == (SIZE, 2)
    band = 13.6 * SIZE / 147.2
    r = SIZE / 2
    for y in range(SIZE):
        centre = y + 0.5
        if centre < band - 1 or centre > SIZE - band + 1:
            assert rows[y, 1] == rows[y, 0] == 0, y
        elif band + 1 < centre < SIZE - band - 1:
            half = np.sqrt(r**2 - (centre - r) ** 2)
            np.testing.assert_allclose(rows[y], [r - half, r + half], atol=1.6, err_msg=str(y))


def test_idrid_eval_batches_carry_fov_and_optic_disc(idrid_prepared):
    from configs import default
    from zoomin_jax.data import input_pipeline as ip

    builder, _ = idrid_prepared
    source = builder.as_data_source("train")
    cfg = default.get_config()
    cfg.model.image_size, cfg.data.eval_batch_size, cfg.data.max_lesions = SIZE, 4, 8
    (ident,) = list(ip.eval_iterator(cfg, "train", process_index=0, process_count=1, source=source))  # 4 photos
    for i, index in enumerate(ident["index"]):
        record = source[int(index)]
        np.testing.assert_array_equal(ident["fov_rows"][i], record["fov_rows"])
        np.testing.assert_array_equal(ident["optic_disc"][i], record["optic_disc"])
        assert ident["optic_disc_valid"][i] == bool(np.asarray(record["optic_disc"]).any())
    assert ident["optic_disc_valid"].sum() == 3


def test_idrid_without_testing_set(tmp_path):
    fx.make_idrid(tmp_path / "m")
    builder = _prepare(idrid, tmp_path / "m", tmp_path / "tfds")
    assert set(builder.info.splits) == {"train", "segmentation_train"}
    # Without a boxes CSV: no optic-disc boxes, the field of view is stored all the same.
    train = _read(builder, "train")
    assert not any(np.asarray(ex["optic_disc"]).any() for ex in train.values())
    assert all(np.asarray(ex["fov_rows"]).shape == (SIZE, 2) for ex in train.values())
    assert idrid.BOXES_SKIPS not in builder.info.metadata["skipped"]


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
    assert builder.info.metadata["duplicate_rows"] == expected["duplicate_rows"]  # merged, not skipped


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
    builder = idrid.prepare(IDRID_DIR, tmp_path, 128, False, num_workers=2, lesion_boxes_csv="lesion_boxes.csv")
    train = builder.as_data_source("train")
    assert len(train) == 413
    counts = collections.Counter(int(ex["label"]) for ex in train)
    assert [counts[g] for g in range(5)] == [134, 20, 136, 74, 49]
    # 16 of the 19 segmentation photos are graded training photos; the other 3 have no grade here (skipped).
    # Every row of the shared boxes CSV is used.
    assert builder.info.metadata["skipped"] == {"train": {}, "segmentation_train": {"no_grade": 3},
                                                idrid.BOXES_SKIPS: {}}
    _check_real_csv_boxes(builder)
    seg_root = IDRID_DIR / idrid.SEGMENTATION
    gt = seg_root / "2. All Segmentation Groundtruths" / "a. Training Set"
    photos = sorted((seg_root / "1. Original Images" / "a. Training Set").glob("*.jpg"))
    assert len(photos) == 19
    stored = {ex["id"].decode(): ex for ex in builder.as_data_source("segmentation_train")}
    assert len(stored) == 16
    ex_contrast = []
    for path in photos:
        prepared = photo.prepare(path, 128, False)
        image, t = prepared.stored, prepared.transform
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


def _check_real_csv_boxes(builder):
    """The shared CSV's boxes on the stored photographs, checked against the pictures and the masks."""
    train = {ex["id"].decode(): ex for ex in builder.as_data_source("train")}
    names = builder.info.features["lesions"]["kind"].names
    kinds = collections.Counter(names[k] for ex in train.values() for k in ex["lesions"]["kind"])
    assert kinds == {"hard_exudate": 1568, "haemorrhage": 1103}  # the CSV's rows; the optic disc is no lesion
    discs = [ex for ex in train.values() if np.asarray(ex["optic_disc"]).any()]
    assert len(discs) == 411  # two photographs have no row in the CSV
    brighter = []
    for ex in discs:
        # The optic disc is the brightest structure of a fundus: its box is brighter than the rest of the retina.
        image = np.asarray(Image.open(io.BytesIO(ex["image"])).convert("RGB")).max(axis=-1).astype(float)
        retina = fov.rows_to_mask(ex["fov_rows"], 128)
        y0, x0, y1, x1 = ex["optic_disc"]
        box = np.zeros_like(retina)
        box[y0:y1, x0:x1] = True
        brighter.append(image[box & retina].mean() - image[~box & retina].mean())
        # Cut at top and bottom: about 21 of the 128 rows are black bands, outside the field of view.
        assert 15 <= (~retina.any(axis=1)).sum() <= 28, ex["id"]
    assert min(brighter) > 0 and np.median(brighter) > 40, (min(brighter), np.median(brighter))
    # Where a photograph also has pixel masks, the CSV's boxes sit on masked lesions.
    seg = {ex["id"].decode(): ex for ex in builder.as_data_source("segmentation_train")}
    for kind, share in (("hard_exudate", 0.95), ("haemorrhage", 0.8)):
        k = names.index(kind)
        hits = []
        for ex in seg.values():
            masked = np.zeros((128, 128), bool)
            for (y0, x0, y1, x1), kk in zip(ex["lesions"]["box"], ex["lesions"]["kind"], strict=True):
                masked[y0:y1, x0:x1] |= kk == k
            graded = train[ex["same_photo"].decode()]
            hits += [masked[y0:y1, x0:x1].any()
                     for (y0, x0, y1, x1), kk in zip(graded["lesions"]["box"], graded["lesions"]["kind"], strict=True)
                     if kk == k]
        assert len(hits) > 50 and np.mean(hits) >= share, (kind, len(hits), np.mean(hits))


def _mask_path(gt, stem, kind):
    code = {"haemorrhage": "HE", "hard_exudate": "EX"}[kind]
    return next(p for p, k in idrid._mask_files(gt, stem) if k == kind and p.stem.endswith(code))


# --- splits by patient ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eyepacs_patients(tmp_path_factory):
    """30 patients (two with one eye), a solution file with Private rows only: prepared once."""
    root = tmp_path_factory.mktemp("eyepacs_patients")
    expected = fx.make_eyepacs_patients(root / "manual", usage="Private")
    eyepacs.prepare(root / "manual", root / "tfds", SIZE, False, num_workers=1)  # as a config opens it (min 256)
    return root, expected


def _config(root, **data):
    from configs import default

    c = default.get_config()
    c.data.name, c.data.data_dir, c.data.manual_dir = "eyepacs", str(root / "tfds"), str(root / "manual")
    c.model.image_size = SIZE
    for k, v in data.items():
        c.data[k] = v
    return c


def _patients_of(source):
    """Patient of each example read from its id string (`<patient>_<eye>`), not from the stored patient_id."""
    return [int(source[i]["id"].decode().split("_")[0]) for i in range(len(source))]


def test_a_slice_keeps_each_patients_eyes_on_one_side(eyepacs_patients):
    from zoomin_jax.data import datasets, input_pipeline, label_sidecar

    root, expected = eyepacs_patients
    c = _config(root)
    parts = {s: datasets.open_split(c, s) for s in ("train[:80%]", "train[80%:]", "train[:10]", "train[-5:]")}
    first, rest = (set(_patients_of(parts[s])) for s in ("train[:80%]", "train[80%:]"))
    assert not first & rest and len(first | rest) == 30  # no patient on both sides, none lost
    assert len(first) == 24 and len(rest) == 6  # 80% of 30 patients, counted as patients
    photos = {parts[s][i]["id"].decode() for s in ("train[:80%]", "train[80%:]") for i in range(len(parts[s]))}
    assert photos == set(expected)  # every photograph, each once, both eyes with their patient
    assert len(set(_patients_of(parts["train[:10]"]))) == 10 and len(set(_patients_of(parts["train[-5:]"]))) == 5
    assert set(_patients_of(parts["train[-5:]"])) <= rest  # the last five patients are in the last 20%
    # The sampler's grades, from the sidecar through the subset, are the records' own.
    sub = parts["train[80%:]"]
    want = [expected[sub[i]["id"].decode()] for i in range(len(sub))]
    assert list(label_sidecar.read(sub)) == want == list(input_pipeline.read_labels(sub))
    assert input_pipeline.num_train_examples(_config(root, train_split="train[80%:]")) == len(sub)
    # A fixed order unrelated to the ids: the held-out six are not simply the largest or smallest ids.
    ids = sorted(first | rest)
    assert rest != set(ids[-6:]) and rest != set(ids[:6])


def test_an_empty_split_is_left_out_and_a_config_asking_for_it_is_refused_naming_the_splits(eyepacs_patients):
    from zoomin_jax.data import datasets, patient_split

    root, _ = eyepacs_patients
    builder = real_builder.open_builder(eyepacs.Eyepacs, root / "tfds", SIZE, False)
    assert set(builder.info.splits) == {"train", "test"}  # no Public row: no validation split, no traceback
    assert builder.info.splits["test"].num_examples == 1
    c = _config(root, eval_split="validation")
    with pytest.raises(patient_split.SplitError, match=r"config.data.eval_split='validation' names the split "
                                                       r"'validation', .* it has train \(58 examples\), test \(1 "
                                                       r"examples\)"):
        datasets.check_splits(c)
    datasets.check_splits(_config(root, train_split="train[:80%]", eval_split="train[80%:]+test"))


def test_pair_eyes_builds_every_batch_by_patient(eyepacs_patients):
    """With model.pair_eyes, train batches hold rows 2k, 2k + 1 of one patient (both eyes; a one-eyed patient's
    photograph twice) and an epoch visits every patient once; evaluation rows pair the eyes the same way and count
    each photograph once. The oracle reads the patient from each id string."""
    from zoomin_jax.data import datasets, input_pipeline, pairs

    root, expected = eyepacs_patients
    c = _config(root, train_split="train", eval_split="train[:30%]", balance=dict(enabled=False, decay=0.7,
                                                                                    floor=0.5))
    c.model.pair_eyes, c.batch_size, c.data.eval_batch_size = True, 8, 8
    c.data.augment.rotate = c.data.augment.flip = False
    it = input_pipeline.train_iterator(c, process_index=0, process_count=1)
    ids = [str(x) for _ in range(8) for x in next(it)["index"]]  # 8 batches of 8 rows: 64 rows, 32 patients' worth
    source = datasets.open_split(c, "train")
    names = [source[int(i)]["id"].decode() for i in ids]
    patients = [n.split("_")[0] for n in names]
    assert all(patients[2 * k] == patients[2 * k + 1] for k in range(32))
    for k in range(32):
        left, right = names[2 * k], names[2 * k + 1]
        both = f"{patients[2 * k]}_right" in expected
        assert sorted((left, right)) == ([f"{patients[2 * k]}_left", f"{patients[2 * k]}_right"] if both
                                         else [left, left])
    assert len(set(patients[:60])) == 30  # the first epoch: the 30 patients, each once
    # Evaluation: two rows a patient, the repeated photograph of a one-eyed patient not counted.
    batches = list(input_pipeline.eval_iterator(c, "train[:30%]", process_index=0, process_count=1))
    rows = [(i, m, name) for b in batches for i, m, name in zip(b["index"], b["mask"], b["id"], strict=True)]
    sub = datasets.open_split(c, "train[:30%]")
    counted = [name for i, m, name in rows if m]
    assert sorted(counted) == sorted(sub[i]["id"].decode() for i in range(len(sub)))  # every photograph once
    real_rows = [name for _, _, name in rows if name]
    assert all(real_rows[2 * k].split("_")[0] == real_rows[2 * k + 1].split("_")[0] for k in range(len(real_rows) // 2))
    assert pairs.eval_rows(np.array([5, 3, 5, 9, 3]))[0].tolist() == [0, 2, 1, 4, 3, 3]
    assert pairs.eval_rows(np.array([5, 3, 5, 9, 3]))[1].tolist() == [True, True, True, True, True, False]
