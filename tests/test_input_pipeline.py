"""Input pipeline: batch format, determinism, resume, process sharding, eval padding, augmentation geometry, TTA,
class balancing, worker processes. A 96 px synthetic dataset (40 train / 10 validation) is prepared once per module."""

import sys

import grain
import numpy as np
import pytest

from configs import default
from zoomin_jax.data import augment, datasets, label_sidecar
from zoomin_jax.data import input_pipeline as ip

SIZE = 96


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = default.get_config()
    c.model.image_size = SIZE
    c.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    c.data.synthetic = {"num_train": 40, "num_validation": 10, "num_test": 0, "seed": 0, "distractor_rate": 0.3}
    c.data.num_workers = 0
    c.data.max_lesions = 8
    c.batch_size = 4
    c.data.eval_batch_size = 4
    c.data.balance.enabled = False  # plain shuffled epochs; the balance tests switch it on themselves
    datasets.open_split(c, "train")  # prepare once
    return c


@pytest.fixture(scope="module")
def train_source(config):
    return datasets.open_split(config, config.data.train_split)


def take(it, k):
    return [next(it) for _ in range(k)]


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def replace(config, **data):
    c = config.copy_and_resolve_references()
    for k, v in data.items():
        c.data[k] = v
    return c


# ------------------------------------------------------------------------------------------------- datasets


def test_open_split_slices_and_errors(config):
    assert len(datasets.open_split(config, "train")) == 40
    assert len(datasets.open_split(config, "train[:75%]")) == 30
    assert len(datasets.open_split(config, "train[75%:]")) == 10
    bad = replace(config, name="kaggle")
    with pytest.raises(ValueError, match="synthetic_fundus, eyepacs, idrid, messidor"):
        datasets.open_split(bad, "train")
    missing = replace(config, name="idrid", manual_dir="")
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        datasets.open_split(missing, "train")


# ------------------------------------------------------------------------------------------------- train


def test_train_batch_format(config, train_source):
    batches = take(ip.train_iterator(config, process_index=0, process_count=1, source=train_source), 10)
    b, L = 4, config.data.max_lesions
    want = {
        "image": (np.uint8, (b, SIZE, SIZE, 3)),
        "label": (np.int32, (b,)),
        "lesion_boxes": (np.int32, (b, L, 4)),
        "lesion_kinds": (np.int32, (b, L)),
        "lesion_valid": (np.bool_, (b, L)),
        "index": (np.int32, (b,)),
        "photometric": (np.float32, (b, 2)),
    }
    for batch in batches:
        assert {k: (v.dtype.type, v.shape) for k, v in batch.items()} == want
        boxes, valid = batch["lesion_boxes"], batch["lesion_valid"]
        assert np.all(boxes[~valid] == 0)
        vb = boxes[valid]
        assert np.all((vb[:, :2] >= 0) & (vb[:, 2:] <= SIZE) & (vb[:, 2:] > vb[:, :2]))
        # labels are the stored grades of the indexed examples
        assert [int(train_source[int(i)]["label"]) for i in batch["index"]] == batch["label"].tolist()
    # one epoch = 10 batches of 4 = a permutation of the 40 examples; the next epoch is another permutation
    epoch0 = np.concatenate([x["index"] for x in batches])
    assert sorted(epoch0) == list(range(40))
    assert any(x["lesion_valid"].any() for x in batches)  # grades > 0 carry lesions


def test_epochs_reshuffle_and_truncation(config, train_source):
    it = ip.train_iterator(config, process_index=0, process_count=1, source=train_source)
    e0, e1 = (np.concatenate([x["index"] for x in take(it, 10)]) for _ in range(2))
    assert sorted(e1) == list(range(40)) and not np.array_equal(e0, e1)
    many = max(range(40), key=lambda i: len(train_source[i]["lesions"]["kind"]))
    assert len(train_source[many]["lesions"]["kind"]) > config.data.max_lesions  # truncation is exercised
    boxes, kinds, valid = ip.pad_lesions(
        train_source[many]["lesions"]["box"], train_source[many]["lesions"]["kind"], config.data.max_lesions
    )
    assert valid.all() and np.array_equal(boxes, np.asarray(train_source[many]["lesions"]["box"])[:8])


def test_train_deterministic_and_seeded(config, train_source):
    a = take(ip.train_iterator(config, process_index=0, process_count=1, source=train_source), 4)
    b = take(ip.train_iterator(config, process_index=0, process_count=1, source=train_source), 4)
    assert_same_batches(a, b)
    c = take(ip.train_iterator(replace(config, shuffle_seed=1), process_index=0, process_count=1,
                               source=train_source), 4)
    assert not np.array_equal(np.stack([x["index"] for x in a]), np.stack([x["index"] for x in c]))
    other = config.copy_and_resolve_references()
    other.seed = 1  # augmentation seed only: same order, other images
    d = take(ip.train_iterator(other, process_index=0, process_count=1, source=train_source), 4)
    assert np.array_equal(np.stack([x["index"] for x in a]), np.stack([x["index"] for x in d]))
    assert not np.array_equal(a[0]["image"], d[0]["image"])


def test_resume_in_process_and_start_step(config, train_source):
    it = ip.train_iterator(config, process_index=0, process_count=1, source=train_source)
    take(it, 3)
    state = it.get_state()
    want = take(it, 9)  # crosses the epoch boundary
    fresh = ip.train_iterator(config, process_index=0, process_count=1, source=train_source)
    fresh.set_state(state)
    assert_same_batches(take(fresh, 9), want)
    skipped = ip.train_iterator(config, process_index=0, process_count=1, start_step=3, source=train_source)
    assert_same_batches(take(skipped, 2), want[:2])


def test_process_sharding(config, train_source):
    whole = take(ip.train_iterator(config, process_index=0, process_count=1, source=train_source), 5)
    parts = [take(ip.train_iterator(config, process_index=p, process_count=2, source=train_source), 5)
             for p in range(2)]
    for k in range(5):
        p0, p1 = parts[0][k], parts[1][k]
        assert p0["image"].shape[0] == 2
        assert not set(p0["index"]) & set(p1["index"])
        assert sorted([*p0["index"], *p1["index"]]) == sorted(whole[k]["index"])
        # process p holds rows 2p, 2p+1 of the global batch (its contiguous block, so the global array has the
        # one-process row order), augmented identically (seeded by global position)
        for p, part in enumerate((p0, p1)):
            for key in part:
                np.testing.assert_array_equal(part[key], whole[k][key][2 * p:2 * p + 2], err_msg=key)


def tf_loaded(_):
    return "tensorflow" in sys.modules


@pytest.mark.slow  # worker processes
def test_worker_resume_and_no_tensorflow(config, train_source):
    in_process = take(ip.train_iterator(config, process_index=0, process_count=1, source=train_source), 6)
    cfg = replace(config, num_workers=1)
    it = ip.train_iterator(cfg, process_index=0, process_count=1, source=train_source)
    first = take(it, 2)
    state = it.get_state()
    rest = take(it, 4)
    assert_same_batches(first + rest, in_process)  # workers do not change the data
    fresh = ip.train_iterator(cfg, process_index=0, process_count=1, source=train_source)
    fresh.set_state(state)
    assert_same_batches(take(fresh, 4), rest)
    # A worker that unpickles the TFDS source and this module (which imports the pipeline) has no TensorFlow.
    probe = grain.MapDataset.source(train_source).map(tf_loaded).to_iter_dataset().mp_prefetch(
        grain.MultiprocessingOptions(num_workers=1)
    )
    assert next(iter(probe)) is False


def test_decoded_cache_changes_no_batch_and_keeps_to_its_budget(config, train_source):
    """Three epochs with no cache, with one holding three images, and with one holding the split: the same batches
    to the bit (the oracle decodes every time); the small cache holds exactly the three images its budget allows,
    each equal to decoding its record afresh, and a pickled cache (a worker's) arrives empty with the same budget."""
    image_bytes = SIZE * SIZE * 3
    runs = {}
    for name, gb in (("none", 0.0), ("three", 3.5 * image_bytes / 2**30), ("all", 1.0)):
        it = ip.train_iterator(replace(config, cache_gb=gb), process_index=0, process_count=1, source=train_source)
        runs[name] = take(it, 30)  # 3 epochs of 10 batches
    assert_same_batches(runs["three"], runs["none"])
    assert_same_batches(runs["all"], runs["none"])
    cache = ip.DecodedCache(int(3.5 * image_bytes))
    example = ip._TrainExample(train_source, SIZE, 8, {}, cache=cache)
    for i in range(10):
        example.random_map(i, np.random.default_rng(i))
    assert sorted(cache._items) == [0, 1, 2]
    for i, (record, image) in cache._items.items():
        np.testing.assert_array_equal(image, ip.decode_jpeg(train_source[i]["image"]))
        assert int(record["label"]) == int(train_source[i]["label"]) and "image" not in record
    import pickle

    copy = pickle.loads(pickle.dumps(cache))
    assert copy.budget == cache.budget and not copy._items


def test_balanced_sampling_pipeline(config, train_source):
    cfg = replace(config, balance={"enabled": True, "decay": 0.5, "floor": 0.0})
    batches = take(ip.train_iterator(cfg, process_index=0, process_count=1, source=train_source), 10)
    labels = ip.read_labels(train_source)
    sampler = ip.BalancedIndices(labels, cfg.data.shuffle_seed, 0.5, 0.0)
    np.testing.assert_array_equal(np.concatenate([x["index"] for x in batches]), sampler.epoch_indices(0))
    # epoch 0 is balanced: the rare grades (1 example each of 3, 4 in this split) are drawn far above their share
    counts = np.bincount(labels[sampler.epoch_indices(0)], minlength=5)
    assert counts[0] < 0.5 * np.sum(labels == 0)


class _NoRecords:
    """Stands in for a source's record reader: its length is known, reading any record fails."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        raise AssertionError("a record (JPEG bytes included) was read")

    __getitems__ = __getitem__


@pytest.mark.parametrize("split", ["train", "train[5:35]", "train[:3]+validation[2:5]"])
def test_sampler_gets_the_labels_without_reading_a_record(config, split):
    oracle = [int(x["label"]) for x in datasets.open_split(config, split)]  # from the records themselves
    blind = datasets.open_split(config, split)
    blind.data_source = _NoRecords(len(blind))
    np.testing.assert_array_equal(ip.read_labels(blind), oracle)
    cfg = replace(config, balance={"enabled": True, "decay": 0.5, "floor": 0.0})
    ip.train_dataset(cfg, blind, process_index=0, process_count=1)  # the sampler is built without a record read


def test_dataset_prepared_without_sidecar_falls_back_to_the_records(config, caplog):
    builder = datasets.open_builder(config)
    path = label_sidecar.sidecar_path(builder.info.data_dir)
    written = path.read_text()
    source = datasets.open_split(config, "train[10:]")
    oracle = [int(x["label"]) for x in source]
    path.unlink()  # as prepared before the sidecar existed
    try:
        with caplog.at_level("INFO"):
            np.testing.assert_array_equal(ip.read_labels(source), oracle)
        assert "from the records" in caplog.text and "label_sidecar" in caplog.text
    finally:
        label_sidecar.write(builder)  # what `python -m zoomin_jax.data.label_sidecar <folder>` does
    assert path.read_text() == written


def test_num_train_examples_is_the_split_size(config):
    assert ip.num_train_examples(config) == 40
    assert ip.num_train_examples(replace(config, train_split="train[:75%]")) == 30


# ------------------------------------------------------------------------------------------------- balance


def test_balance_weights_schedule():
    counts = np.array([730, 70, 150, 25, 25])
    true = counts / counts.sum()
    np.testing.assert_allclose(ip.balance_weights(counts, 0, 0.7), np.full(5, 0.2))
    np.testing.assert_allclose(ip.balance_weights(counts, 40, 0.7), true, atol=1e-5)
    w1 = ip.balance_weights(counts, 1, 0.7)
    np.testing.assert_allclose(w1, 0.7 * 0.2 + 0.3 * true)
    floored = ip.balance_weights(counts, 40, 0.7, floor=0.5)
    np.testing.assert_allclose(floored.sum(), 1.0)
    np.testing.assert_allclose(floored[[1, 3, 4]], 0.1)  # raised to exactly floor * balanced
    np.testing.assert_allclose(floored[[0, 2]] / floored[[0, 2]].sum(), true[[0, 2]] / true[[0, 2]].sum(), rtol=1e-5)
    np.testing.assert_allclose(ip.balance_weights([5, 0, 5, 0, 10], 0, 0.7), [1 / 3, 0, 1 / 3, 0, 1 / 3])

    labels = np.repeat(np.arange(5), counts)
    sampler = ip.BalancedIndices(labels, seed=0, decay=0.7, floor=0.0)
    share0 = np.bincount(labels[sampler.epoch_indices(0)], minlength=5) / len(labels)
    share20 = np.bincount(labels[sampler.epoch_indices(20)], minlength=5) / len(labels)
    np.testing.assert_allclose(share0, 0.2, atol=0.05)
    np.testing.assert_allclose(share20, true, atol=0.04)
    assert sampler.map(3 * len(labels) + 7) == sampler.epoch_indices(3)[7]


# ------------------------------------------------------------------------------------------------- eval


def test_eval_padding_and_shards(config):
    cfg = replace(config, eval_split="validation")  # 10 examples, global batch 4, 2 processes
    assert ip.num_eval_steps(10, 4) == 3
    per_process = [list(ip.eval_iterator(cfg, "validation", process_index=p, process_count=2)) for p in range(2)]
    assert [len(x) for x in per_process] == [3, 3]
    rows = [(int(i), bool(m), s) for batches in per_process for b in batches
            for i, m, s in zip(b["index"], b["mask"], b["id"], strict=True)]
    real = [r for r in rows if r[1]]
    assert len(real) == 10 and sorted(r[0] for r in real) == list(range(10))
    assert all(s == f"validation_{i:06d}" for i, _, s in real)
    assert all(i == -1 and s == "" for i, m, s in rows if not m)
    assert [i for i, *_ in rows[:6]] == list(range(6))  # process 0: a contiguous shard
    last = per_process[1][-1]
    assert last["image"].dtype == np.uint8 and not last["image"][~last["mask"]].any()
    assert last["id"].dtype == object


# ------------------------------------------------------------------------------------------------- augmentation


def disc_with_square(size=SIZE, box=(20, 50, 30, 62)):
    yy, xx = np.mgrid[:size, :size] + 0.5
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (0.45 * size) ** 2)
    image = np.zeros((size, size, 3), np.uint8)
    image[disc] = 60
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = 250
    return image, np.array([box], np.int32)


@pytest.mark.parametrize("angle,scale,flip_lr", [(90.0, 1.0, False), (37.0, 1.0, False), (37.0, 1.08, True),
                                                 (-123.0, 0.92, False)])
def test_box_follows_lesion(angle, scale, flip_lr):
    image, boxes = disc_with_square()
    m = augment.affine_matrix(SIZE, angle, scale, flip_lr=flip_lr)
    out = augment.warp_image(image, m)
    new, keep = augment.transform_boxes(boxes, m, SIZE)
    assert keep.all()
    ys, xs = np.nonzero(out[..., 0] > 150)  # the square's pixels after the transform
    assert len(ys) > 50
    y0, x0, y1, x1 = new[0]
    assert ys.min() >= y0 and ys.max() < y1 and xs.min() >= x0 and xs.max() < x1
    # and the box is tight: not more than ~2 px beyond the square's extent
    assert y0 >= ys.min() - 2 and x0 >= xs.min() - 2 and y1 <= ys.max() + 3 and x1 <= xs.max() + 3


def test_quarter_turn_and_flip_are_exact():
    """A 90-degree warp is numpy's quarter turn to the pixel; boxes follow the painted square (found again in the
    turned picture, not through the box arithmetic)."""
    image, boxes = disc_with_square()
    image[5:9, 40:44] = 200  # asymmetric marks
    m = augment.affine_matrix(SIZE, 90.0)
    turned = np.rot90(image, 1, axes=(0, 1))
    np.testing.assert_array_equal(augment.warp_image(image, m), turned)

    def extent(mask):
        ys, xs = np.nonzero(mask)
        return [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]

    painted = np.zeros((SIZE, SIZE), bool)
    y0, x0, y1, x1 = boxes[0]
    painted[y0:y1, x0:x1] = True
    assert augment.transform_boxes(boxes, m, SIZE)[0][0].tolist() == extent(np.rot90(painted, 1))
    mf = augment.affine_matrix(SIZE, 0.0, flip_lr=True)
    assert augment.transform_boxes(boxes, mf, SIZE)[0][0].tolist() == extent(painted[:, ::-1])


def test_rotation_keeps_disc_centred():
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[(yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 <= (0.45 * SIZE) ** 2] = 120
    for angle, scale in ((37.0, 1.0), (200.0, 1.1), (75.0, 0.9)):
        out = augment.warp_image(image, augment.affine_matrix(SIZE, angle, scale)).astype(np.float64)[..., 0]
        w = out / out.sum()
        cy, cx = (w * yy).sum(), (w * xx).sum()
        assert abs(cy - SIZE / 2) < 0.5 and abs(cx - SIZE / 2) < 0.5
        assert abs(out.sum() / image[..., 0].sum() - scale**2) < 0.05  # zoom changes the disc's area by scale^2


def test_random_augment_deterministic_and_consistent():
    image, boxes = disc_with_square()
    flags = {"rotate": True, "flip": True, "scale": 0.1, "brightness": 0.0, "contrast": 0.0}
    a = augment.random_augment(image, boxes, np.array([2]), np.random.default_rng(5), flags)
    b = augment.random_augment(image, boxes, np.array([2]), np.random.default_rng(5), flags)
    for x, y in zip(a[:4], b[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.fov_rows is None and a.photometric.tolist() == [1.0, 1.0]  # brightness and contrast off
    for seed in range(6):
        out, new, kinds, _, _ = augment.random_augment(image, boxes, np.array([2]), np.random.default_rng(seed),
                                                       flags)
        assert out.dtype == np.uint8 and out.shape == image.shape and kinds.tolist() == [2]
        ys, xs = np.nonzero(out[..., 0] > 150)
        y0, x0, y1, x1 = new[0]
        assert ys.min() >= y0 and ys.max() < y1 and xs.min() >= x0 and xs.max() < x1


def test_boxes_outside_are_dropped():
    boxes = np.array([[0, 0, 4, 4], [44, 44, 52, 52]], np.int32)  # a corner box leaves the image under rotation
    new, keep = augment.transform_boxes(boxes, augment.affine_matrix(SIZE, 45.0), SIZE)
    assert keep.tolist() == [False, True] and len(new) == 1


def test_device_test_time_variants_are_exact_flips_and_turns():
    """The eval step's variants (eval_step.TTA, the one definition) against numpy's own flips and turns."""
    from zoomin_jax import eval_step

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    want = {"identity": x, "flip_lr": x[:, :, ::-1], "flip_ud": x[:, ::-1], "rot90": np.rot90(x, 1, axes=(1, 2)),
            "rot180": x[:, ::-1, ::-1], "rot270": np.rot90(x, -1, axes=(1, 2))}
    assert sorted(eval_step.TTA) == sorted(want)
    for name, w in want.items():
        np.testing.assert_array_equal(np.asarray(eval_step.TTA[name](x)), w, err_msg=name)
    with pytest.raises(ValueError, match="rot45"):
        eval_step.check_tta(("identity", "rot45"))


def test_decode_grayscale_orientation_and_errors():
    import io

    from PIL import Image

    gray = (np.arange(64 * 48) % 251).reshape(48, 64).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG", quality=90)  # a one-component JPEG
    out = ip.decode_jpeg(buf.getvalue())
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))  # what the builders would see
    assert np.abs(out.astype(int) - want).max() <= 1
    # an EXIF orientation tag is ignored (as PIL does): the stored pixel layout is what the boxes refer to
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.fromarray(np.stack([gray] * 3, -1)).save(buf, format="JPEG", quality=90, exif=exif)
    assert ip.decode_jpeg(buf.getvalue()).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="cannot decode"):
        ip.decode_jpeg(b"not a jpeg")


def test_orbax_saves_and_restores_iterator(config, train_source, tmp_path):
    import orbax.checkpoint as ocp

    it = ip.train_iterator(config, process_index=0, process_count=1, source=train_source)
    take(it, 3)
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    want = take(it, 3)
    fresh = ip.train_iterator(config, process_index=0, process_count=1, source=train_source)
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as mngr:
        mngr.restore(mngr.latest_step(), args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert_same_batches(take(fresh, 3), want)


def test_train_examples_carry_the_field_of_view_moved_with_the_image():
    """With `model.regions.fov`, each training example carries its field of view after the augmentation. Oracle: the
    field of view found afresh on the augmented pixels (`fov.field_of_view`), not the warp of the stored one."""
    from zoomin_jax.data import fov, preprocess

    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    disc = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 <= (0.48 * SIZE) ** 2
    image[disc] = (150, 90, 60)
    image[:22] = image[-18:] = 0  # a photograph cut at top and bottom: black bands inside the disc
    stored = fov.mask_to_rows(disc & (yy >= 22) & (yy < SIZE - 18))
    record = {"image": preprocess.encode_jpeg(image), "label": 2, "id": "cut",
              "lesions": {"box": np.zeros((0, 4), np.int32), "kind": np.zeros((0,), np.int64)}, "fov_rows": stored}
    flags = {"rotate": True, "flip": True, "scale": 0.1, "brightness": 0.1, "contrast": 0.1}
    with_fov = ip._TrainExample([record], SIZE, 4, flags, fov=True)
    without = ip._TrainExample([record], SIZE, 4, flags, fov=False)
    for seed in range(8):
        ex = with_fov.random_map(0, np.random.default_rng(seed))
        plain = without.random_map(0, np.random.default_rng(seed))
        np.testing.assert_array_equal(ex["image"], plain["image"])  # carrying it changes no pixel
        assert ex["fov_rows"].dtype == np.int16 and ex["fov_rows"].shape == (SIZE, 2)
        carried = fov.rows_to_mask(ex["fov_rows"], SIZE)
        found = fov.rows_to_mask(fov.field_of_view(ex["image"]), SIZE)
        assert (carried & found).sum() / (carried | found).sum() > 0.95, seed
    turned = [with_fov.random_map(0, np.random.default_rng(s))["fov_rows"] for s in range(8)]
    assert sum(not np.array_equal(t, stored) for t in turned) >= 6


def test_random_augment_pixels_equal_each_channel_warped_alone_and_factors_are_the_draws():
    """The augmentation warps RGBA (OpenCV's fast 4-channel path). Oracle: each colour channel alone, as a 2-D array
    (OpenCV's single-channel warp), with the same draws replayed from the generator: the values must be the same to
    the bit; the photometric factors are the replayed draws (applied in the train step, not here)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    flags = {"rotate": True, "flip": True, "scale": 0.1, "brightness": 0.1, "contrast": 0.2}
    for seed in range(4):
        out = augment.random_augment(image, np.zeros((0, 4)), np.zeros(0), np.random.default_rng(seed), flags)
        u = np.random.default_rng(seed).random(6)
        m = augment.affine_matrix(SIZE, 360.0 * u[0], 1.0 + 0.1 * (2 * u[3] - 1), u[1] < 0.5, u[2] < 0.5)
        want = np.stack([augment.warp_image(np.ascontiguousarray(image[..., c]), m) for c in range(3)], -1)
        np.testing.assert_array_equal(out.image, want)
        np.testing.assert_allclose(out.photometric, [1.0 + 0.1 * (2 * u[4] - 1), 1.0 + 0.2 * (2 * u[5] - 1)],
                                   rtol=1e-6)
