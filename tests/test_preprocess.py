"""Photo validation, disc cropping, box mapping, Graham normalisation and skip counting (zoomin_jax.data.preprocess)."""

import io

import numpy as np
import pytest
from fixtures_real import fundus_photo, jpeg_bytes
from PIL import Image, ImageFile

from zoomin_jax.data import photo, preprocess, real_builder, skips


def _png(img: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


GOOD = fundus_photo((300, 400), seed=1)


@pytest.mark.parametrize(
    "reason,data",
    [
        ("corrupt", b"not an image at all"),
        ("corrupt", jpeg_bytes(GOOD)[:20] + bytes(range(256)) * 8),
        ("truncated", jpeg_bytes(GOOD)[: len(jpeg_bytes(GOOD)) // 2]),
        ("grayscale", jpeg_bytes(GOOD, mode="L")),
        ("grayscale", jpeg_bytes(np.repeat(GOOD[..., 1:2], 3, axis=2))),  # grey saved as RGB
        ("cmyk", jpeg_bytes(GOOD, mode="CMYK")),
        ("palette", _png(GOOD, "P")),
        ("too_small", jpeg_bytes(fundus_photo((200, 300), seed=2))),
    ],
)
def test_decode_photo_rejects_with_reason(reason, data):
    with pytest.raises(preprocess.BadPhoto) as e:
        preprocess.decode_photo(data, min_side=256)
    assert e.value.reason == reason


def test_decode_photo_good_and_draft(tmp_path):
    big = fundus_photo((600, 800), seed=3)
    path = tmp_path / "a.jpeg"
    path.write_bytes(jpeg_bytes(big))
    full = preprocess.decode_photo(path)
    assert full.shape == (600, 800, 3) and full.dtype == np.uint8
    assert np.abs(full.astype(int) - big).mean() < 4
    small = preprocess.decode_photo(path, draft_size=150)
    # DCT scaling picks 1/4, the smallest scale that keeps both sides at least 150 pixels.
    assert small.shape == (150, 200, 3)


def test_load_truncated_images_must_stay_off():
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
            preprocess.decode_photo(jpeg_bytes(GOOD))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


@pytest.mark.parametrize(
    "hw,centre,radius",
    [
        ((300, 400), (140, 230), 110),  # off-centre, black borders all round
        ((400, 300), (230, 120), 100),  # portrait, off-centre
        ((240, 400), (120, 200), 170),  # disc cut off at top and bottom (EyePACS-like)
        ((240, 400), (100, 180), 150),  # cut off at the top only, off-centre
    ],
)
def test_crop_to_disc_recovers_disc(hw, centre, radius):
    img = fundus_photo(hw, centre, radius, seed=4)
    cy, cx, r = preprocess.find_disc(img)
    assert abs(cy - centre[0]) < 2 and abs(cx - centre[1]) < 2 and abs(r - radius) < 2
    square, t = preprocess.crop_to_disc(img)
    assert square.shape == (t.side, t.side, 3) and abs(t.side - 2 * radius) <= 3
    assert abs(t.y0 - (centre[0] - radius)) <= 2 and abs(t.x0 - (centre[1] - radius)) <= 2
    # The square's centre pixel is the disc centre; pixels the photo does not cover are black padding.
    np.testing.assert_array_equal(square[t.side // 2, t.side // 2], img[t.y0 + t.side // 2, t.x0 + t.side // 2])
    if t.y0 < 0:
        assert square[: -t.y0].max() == 0


def test_find_disc_rejects_blank_photo():
    with pytest.raises(preprocess.BadPhoto) as e:
        preprocess.find_disc(np.full((300, 400, 3), 7, np.uint8))
    assert e.value.reason == "no_disc"


def test_lesion_box_maps_to_blob_in_stored_image():
    # A pure-green blob (no fundus pixel is green-dominant) at a known spot of an off-centre photo.
    img = fundus_photo((300, 400), (140, 230), 110, seed=5)
    blob = (150, 250, 170, 280)
    img[blob[0] : blob[2], blob[1] : blob[3]] = (0, 255, 0)
    size = 128
    prepared = photo.prepare(jpeg_bytes(img, quality=98), size, False, min_side=64)
    stored, t = prepared.stored, prepared.transform
    assert stored.shape == (size, size, 3)
    box, keep = t.map_boxes(np.array([blob]), size)
    assert keep.tolist() == [True]
    green = (stored[..., 1].astype(int) - stored[..., 0]) > 100
    ys, xs = np.nonzero(green)
    found = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    np.testing.assert_allclose(box[0], found, atol=1)
    # The same blob given on a mask at twice the photo's resolution maps to the same box.
    box2, _ = t.map_boxes(np.array([blob]) * 2, size, boxes_frame_hw=(600, 800))
    np.testing.assert_array_equal(box2, box)


def test_map_boxes_drops_outside_and_keeps_tiny():
    t = preprocess.CropTransform(y0=-10, x0=20, side=100, frame_hw=(80, 140))
    boxes = np.array([[0, 0, 5, 5], [40, 60, 40.2, 60.2], [-30, 20, -20, 30]])
    out, keep = t.map_boxes(boxes, 50)
    assert keep.tolist() == [False, True, False]  # left of the square / inside / above it
    np.testing.assert_array_equal(out, [[25, 20, 26, 21]])  # a sub-pixel lesion still covers its pixel


def test_mask_boxes_8_connectivity():
    m = np.zeros((50, 60), np.uint8)
    m[10:13, 10:13] = 255
    m[13:15, 13:16] = 255  # touches the first blob only diagonally: same lesion under 8-connectivity
    m[30:40, 5:7] = 255
    boxes = preprocess.mask_boxes(m)
    assert sorted(map(tuple, boxes.tolist())) == [(10, 10, 15, 16), (30, 5, 40, 7)]
    assert preprocess.mask_boxes(np.zeros((5, 5))).shape == (0, 4)
    np.testing.assert_array_equal(preprocess.mask_boxes((m > 0).astype(np.uint8)), boxes)  # 0/1 masks too


def test_graham_mean_128_inside_and_keeps_lesions():
    size = 200
    img = fundus_photo((size, size), radius=size / 2, seed=6)
    img[90:96, 60:66] = (60, 10, 5)  # a small dark lesion
    out = preprocess.graham(img)
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(yy - size / 2, xx - size / 2)
    inner = d < 0.7 * size / 2
    assert abs(out[inner].mean() - 128) < 6
    assert (out[d > 0.9 * size / 2 + 1] == 128).all()
    assert out[91:95, 61:65].mean() < 90  # the lesion stands out below mid-grey
    # Illumination is removed: a photo 40 % darker normalises to nearly the same image.
    dark = preprocess.graham((img * 0.6).astype(np.uint8))
    assert abs(dark[inner].mean() - out[inner].mean()) < 6
    assert (preprocess.graham(img, outside=0)[d > 0.9 * size / 2 + 1] == 0).all()


def test_skip_counter():
    c = skips.SkipCounter("train")
    for reason, i in [("corrupt", "a"), ("no_label", "b"), ("corrupt", "c")]:
        assert c.add(reason, i)
    assert not c.add("no_label", "a")  # one example, one reason: the first
    assert c.as_dict() == {"corrupt": 2, "no_label": 1} and c.total == 3
    rows = skips.SkipCounter("csv", unit="row")  # rows are not examples: every bad row counts
    for _ in range(3):
        rows.add("malformed_row", "IDRiD_001")
    assert rows.as_dict() == {"malformed_row": 3}


def test_unique_rows_never_guesses():
    c = skips.SkipCounter("train")
    rows = [{"image": "a", "level": "1"}, {"image": "a", "level": "1"}, {"image": "b", "level": "1"},
            {"image": "b", "level": "2"}, {"image": "", "level": ""}, {"image": "c", "level": "0"}]
    out = real_builder.unique_rows(rows, "image", c)
    assert sorted(out) == ["a", "c"]
    assert c.as_dict() == {"conflicting_rows": 1} and c.duplicates == 1  # the repeat of "a" drops nothing
    assert [real_builder.parse_int(v, 0, 4) for v in ("3", "3.0", 3.0, "5", "-1", "x", "2.5")] == [3, 3, 3, None, None,
                                                                                           None, None]
