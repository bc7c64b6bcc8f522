"""Tests of the synthetic fundus generator, the `synthetic_fundus` builder and the contact sheet (small images)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from zoomin_jax.data import synthetic
from zoomin_jax.data.features import LESION_KINDS

SIZE = 160
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def examples():
    """Four examples of each grade at SIZE px: {grade: [(seed, image, lesions), ...]}."""
    out = {}
    for g in range(5):
        out[g] = []
        for k in range(4):
            seed = 100 * g + k
            image, lesions = synthetic.generate_example(seed, g, SIZE, distractor_rate=0.5)
            out[g].append((seed, image, lesions))
    return out


def test_same_seed_same_bytes_other_seed_differs():
    a, la = synthetic.generate_example(7, 3, SIZE)
    b, lb = synthetic.generate_example(7, 3, SIZE)
    c, _ = synthetic.generate_example(8, 3, SIZE)
    assert a.dtype == np.uint8 and a.shape == (SIZE, SIZE, 3)
    assert a.tobytes() == b.tobytes() and la == lb
    assert np.mean(a != c) > 0.2
    assert synthetic.encode_jpeg(a) == synthetic.encode_jpeg(b)


def test_lesion_kinds_follow_the_grade(examples):
    ma, h, he, cws = synthetic.MICROANEURYSM, synthetic.HAEMORRHAGE, synthetic.HARD_EXUDATE, synthetic.COTTON_WOOL_SPOT
    for g, items in examples.items():
        for seed, _, lesions in items:
            kinds = [k for _, k in lesions]
            assert set(kinds) <= set(LESION_KINDS), (g, seed, kinds)
            if g == 0:
                assert kinds == [], seed
            elif g == 1:
                assert kinds and set(kinds) == {ma}, seed
            elif g == 2:
                assert set(kinds) <= {ma, h, he} and {h, he} & set(kinds), (seed, kinds)
            elif g == 3:
                assert set(kinds) <= {ma, h, he, cws} and cws in kinds, (seed, kinds)
                # haemorrhages in all four quadrants (box centres, around the image centre)
                c = (SIZE - 1) / 2
                quadrants = {((b[0] + b[2] - 1) / 2 > c, (b[1] + b[3] - 1) / 2 > c) for b, k in lesions if k == h}
                assert len(quadrants) == 4, (seed, quadrants)
            else:
                assert {"new_vessels", "preretinal_haemorrhage"} & set(kinds), (seed, kinds)
        if g > 0:
            assert np.mean([len(les) for _, _, les in items]) > {1: 0, 2: 2, 3: 15, 4: 10}[g]


def test_boxes_inside_image_and_eye_disc_and_off_the_optic_disc(examples):
    radius = synthetic.DISC_FILL * SIZE / 2
    c = (SIZE - 1) / 2
    n = 0
    for items in examples.values():
        for seed, _, lesions in items:
            eye = synthetic._Eye(np.random.default_rng(seed), SIZE)  # the generator's first draw: its geometry
            for (y0, x0, y1, x1), _ in lesions:
                n += 1
                assert 0 <= y0 < y1 <= SIZE and 0 <= x0 < x1 <= SIZE
                # every box touches its (roundish) lesion at its edge midpoints: they must be inside the eye disc
                for py, px in (
                    ((y0 + y1) / 2, x0),
                    ((y0 + y1) / 2, x1 - 1),
                    (y0, (x0 + x1) / 2),
                    (y1 - 1, (x0 + x1) / 2),
                ):
                    assert math.hypot(py - c, px - c) < radius, (seed, (y0, x0, y1, x1))
                # no box reaches into the optic disc
                ny, nx = np.clip(eye.oy, y0, y1 - 1), np.clip(eye.ox, x0, x1 - 1)
                assert math.hypot(ny - eye.oy, nx - eye.ox) > eye.od_r, (seed, (y0, x0, y1, x1))
    assert n > 100


def test_optic_disc_is_where_the_geometry_says(examples):
    for seed, image, _ in examples[0]:
        eye = synthetic._Eye(np.random.default_rng(seed), SIZE)
        lum = np.asarray(Image.fromarray(image).convert("L").resize((SIZE // 4, SIZE // 4), Image.BOX), np.float32)
        y, x = np.unravel_index(np.argmax(lum), lum.shape)
        assert math.hypot(4 * y + 1.5 - eye.oy, 4 * x + 1.5 - eye.ox) < eye.od_r + 3, seed


def test_microaneurysms_are_drawn_where_their_boxes_are():
    size, checked = 240, 0
    for seed in range(6):
        image, lesions = synthetic.generate_example(seed, 1, size, distractor_rate=0.0)
        img = image.astype(np.float32)
        for (y0, x0, y1, x1), kind in lesions:
            assert kind == synthetic.MICROANEURYSM
            inside = img[y0:y1, x0:x1].reshape(-1, 3)
            ring = np.ones((size, size), bool)
            ring[y0:y1, x0:x1] = False
            ring[: max(0, y0 - 4)] = ring[y1 + 4 :] = False
            ring[:, : max(0, x0 - 4)] = ring[:, x1 + 4 :] = False
            around = img[ring]
            g_in, g_out = inside[:, 1].min(), np.median(around[:, 1])
            assert g_in < 0.8 * g_out, (seed, (y0, x0, y1, x1), g_in, g_out)  # darker (green absorbed)
            darkest = inside[np.argmin(inside[:, 1])]
            assert darkest[0] / (darkest[1] + 1) > np.median(around[:, 0] / (around[:, 1] + 1)), seed  # redder
            assert (y1 - y0) <= 5 and (x1 - x0) <= 5  # tiny at this size: ~1 px radius
            checked += 1
    assert checked >= 6


def test_surround_is_black_and_eye_is_not(examples):
    r = synthetic._radius_map(SIZE)
    radius = synthetic.DISC_FILL * SIZE / 2
    for items in examples.values():
        for _, image, _ in items:
            assert image[r > radius + 2].max() <= 6
            assert image[r < 0.8 * radius].mean() > 40
            # orange/red: red above green above blue on average
            mean = image[r < 0.8 * radius].reshape(-1, 3).mean(0)
            assert mean[0] > mean[1] > mean[2]


def test_grade_quotas_and_assignment():
    p = np.asarray(synthetic.EYEPACS_GRADE_DISTRIBUTION) / np.sum(synthetic.EYEPACS_GRADE_DISTRIBUTION)
    for n in (5, 7, 12, 300, 2001):
        q = synthetic.grade_quotas(n)
        assert q.sum() == n and np.all(q >= 1)
        if n >= 300:
            assert np.all(np.abs(q - n * p) < 1), (n, q)
    assert list(synthetic.grade_quotas(3)) == [2, 0, 1, 0, 0]  # 2.19, 0.21, 0.45, 0.075, 0.075
    a = synthetic.assign_grades(300, seed=1)
    assert np.array_equal(a, synthetic.assign_grades(300, seed=1))
    assert np.array_equal(np.bincount(a, minlength=5), synthetic.grade_quotas(300))
    assert not np.array_equal(a, np.sort(a)) and not np.array_equal(a, synthetic.assign_grades(300, seed=2))
    seeds = {synthetic.example_seed(0, s, i) for s in ("train", "validation", "test") for i in range(50)}
    assert len(seeds) == 150


def test_grade_1_microaneurysms_come_as_a_cluster():
    # Grade 1 holds MA_COUNT_GRADE_1 microaneurysms, most of them within a few cluster sigmas of one point, so a
    # zoomed-in patch on the cluster shows several (what the default config's ablation relies on).
    size = 400
    lo, hi = synthetic.MA_COUNT_GRADE_1
    spread = synthetic.MA_CLUSTER_SIGMA * size
    for seed in range(6):
        _, lesions = synthetic.generate_example(1000 + seed, 1, size, distractor_rate=0.0)
        centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b, _ in lesions])
        assert lo <= len(centres) < hi, (seed, len(centres))
        d = np.hypot(*(centres - np.median(centres, axis=0)).T)
        assert np.mean(d < 3 * spread) >= 0.6, (seed, np.round(d))


def test_make_config_names():
    from zoomin_jax.data import synthetic_fundus as sf

    assert sf.make_config(400, 2000, 300, 300) is sf.S400
    a = sf.make_config(128, 10, 5, 5, seed=1)
    assert a.name != sf.make_config(128, 10, 5, 5, seed=2).name
    assert a.name != sf.make_config(128, 10, 5, 5, seed=1, distractor_rate=0.0).name
    assert a.name == sf.make_config(128, 10, 5, 5, seed=1).name
    with pytest.raises(ValueError, match="image_size"):
        sf.make_config(32, 1, 1, 1)
    with pytest.raises(ValueError, match="s400"):
        sf.get_config("s999")


_PREPARE_WITHOUT_TF = """
import importlib.machinery, json, sys
attempts = []

class BlockTensorFlow:  # any import of tensorflow fails (and is recorded), as if it were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        attempts.append(spec.name)
        raise ModuleNotFoundError("blocked: " + spec.name, name=spec.name)
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, BlockTensorFlow())
import tensorflow_datasets as tfds
from zoomin_jax.data import synthetic_fundus as sf

config = sf.make_config(128, 10, 5, 0, seed=5)
sf.prepare(config, sys.argv[1], num_workers=2)
out = {}
for split in ("train", "validation"):
    source = tfds.data_source("synthetic_fundus", split=split, data_dir=sys.argv[1],
                              builder_kwargs={"config": config}, download=False)
    out[split] = [[r["image"].hex(), int(r["label"]), [b.tolist() for b in r["lesions"]["box"]]] for r in source]
out["tensorflow_imports"] = attempts + [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
print("RESULT " + json.dumps(out))
"""


def test_builder_prepares_in_workers_without_tensorflow_and_reads_back(tmp_path):
    from zoomin_jax.data import synthetic_fundus as sf

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PREPARE_WITHOUT_TF), str(tmp_path / "a")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(tmp_path),
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    got = json.loads(lines[0][len("RESULT ") :])
    assert got["tensorflow_imports"] == []

    config = sf.make_config(128, 10, 5, 0, seed=5)
    assert sorted(k for k in got if k != "tensorflow_imports") == ["train", "validation"]  # empty test: no split
    for split, n in (("train", 10), ("validation", 5)):
        records = got[split]
        labels = [r[1] for r in records]
        assert len(records) == n
        assert np.array_equal(np.bincount(labels, minlength=5), synthetic.grade_quotas(n, config.grade_distribution))
        for i, (jpeg_hex, label, boxes) in enumerate(records):
            # record i is example i: same bytes as generating that example here, in this process
            jpeg, want_boxes, _ = synthetic.generate_encoded(
                synthetic.example_seed(config.seed, split, i), label, 128, config.distractor_rate, config.jpeg_quality
            )
            assert bytes.fromhex(jpeg_hex) == jpeg, (split, i)
            assert boxes == want_boxes.tolist(), (split, i)
            assert Image.open(io.BytesIO(jpeg)).size == (128, 128)


def test_builder_in_process_and_reuse(tmp_path):
    import tensorflow_datasets as tfds

    from zoomin_jax.data import synthetic_fundus as sf

    config = sf.make_config(96, 6, 0, 5, seed=9, grade_distribution=(1, 1, 1, 1, 1))
    builder = sf.prepare(config, tmp_path, num_workers=0)
    test = builder.as_data_source("test")
    assert sorted(builder.info.splits.keys()) == ["test", "train"]
    assert sorted(int(r["label"]) for r in test) == [0, 1, 2, 3, 4]
    r = test[0]
    assert r["id"] in (b"test_000000", "test_000000")
    img = np.asarray(Image.open(io.BytesIO(r["image"])))
    assert img.shape == (96, 96, 3)
    kinds = [LESION_KINDS[int(k)] for k in r["lesions"]["kind"]]
    _, want = synthetic.generate_example(synthetic.example_seed(9, "test", 0), int(r["label"]), 96, 0.3)
    assert kinds == [k for _, k in want]
    files = sorted(builder.data_path.glob("*.array_record*"))
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = sf.prepare(config, tmp_path, num_workers=0)  # reuses the folder: nothing rewritten
    assert [os.stat(f).st_mtime_ns for f in files] == stamps and files
    assert (
        len(
            tfds.data_source(
                "synthetic_fundus", split="train", data_dir=tmp_path, builder_kwargs={"config": config}, download=False
            )
        )
        == 6
    )
    assert again.data_path == builder.data_path


def test_contact_sheet_draws_rows_boxes_and_legend():
    from zoomin_jax.data import contact_sheet as cs

    examples = cs.synthetic_examples(128, per_grade=2, seed=1)
    tile = 64
    sheet = np.asarray(cs.contact_sheet(examples, per_grade=2, tile=tile))
    assert sheet.shape == (5 * (tile + 4) + 44, 96 + 2 * (tile + 4), 3)
    cyan = np.all(sheet == cs.KIND_COLOURS["microaneurysm"], axis=-1)
    rows_with_cyan = {int(y) // (tile + 4) for y in np.flatnonzero(cyan.any(axis=1))}
    assert 0 not in rows_with_cyan and 1 in rows_with_cyan  # grade 0 has no boxes, grade 1 has MA boxes
    assert cyan[5 * (tile + 4) :].any()  # the legend swatch
    plain = np.asarray(cs.contact_sheet(examples, per_grade=2, tile=tile, draw_boxes=False))
    assert not np.all(plain[: 5 * (tile + 4)] == cs.KIND_COLOURS["microaneurysm"], axis=-1).any()
