"""`--mode=predict` geometry: boxes found on the prepared image map back to the ORIGINAL photograph's pixels.

Oracle: a marker painted at a known place of a large photograph (not the crop's own arithmetic): it is found again
by its colour in the prepared image, mapped back with `photo_boxes`, and must cover the painted box to within the
prepared image's pixel size. The photographs are big JPEGs (decoded at a reduced DCT scale, so the decoded frame
is not the photograph's size), with the eye disc whole or cut at top and bottom (the disc square then reaches past
the photograph). The model-side of predict is tested end to end in tests/test_train.py.
"""

import numpy as np
import pytest
from PIL import Image
from tiny import tiny_config

from zoomin_jax import predict


def _photo(path, hw, centre, radius, marker):
    """A red eye disc on black, with a pure blue square `marker` (y0, x0, y1, x1); saved as JPEG at `path`."""
    h, w = hw
    yy, xx = np.mgrid[:h, :w] + 0.5
    image = np.zeros((h, w, 3), np.uint8)
    image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] = (170, 70, 30)
    y0, x0, y1, x1 = marker
    image[y0:y1, x0:x1] = (0, 40, 255)
    Image.fromarray(image).save(path, quality=95)


def _found(image):
    """Box of the blue marker in a prepared image (prepared pixels, end exclusive)."""
    blue = (image[..., 2].astype(int) > 150) & (image[..., 0].astype(int) < 100)
    ys, xs = np.nonzero(blue)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])


@pytest.mark.parametrize("hw,centre,radius,marker", [
    ((1500, 2200), (760, 1120), 700, (500, 1300, 620, 1450)),  # whole disc, off-centre in a wide photograph
    ((1100, 1700), (550, 840), 760, (150, 600, 260, 720)),  # disc cut at top and bottom: the square leaves the photo
])
def test_boxes_map_back_onto_the_painted_marker(tmp_path, hw, centre, radius, marker):
    c = tiny_config()
    path = tmp_path / "photo.jpg"
    _photo(path, hw, centre, radius, marker)
    prep = predict.prepare(path, c)
    size = c.model.image_size
    assert prep.image.shape == (size, size, 3) and prep.photo_hw == hw
    assert prep.transform.frame_hw != hw  # decoded at a reduced scale: the frame is not the photograph
    back = predict.photo_boxes(_found(prep.image), prep.transform, size, hw)
    px = 2 * radius / size  # photograph pixels per prepared pixel (the disc square spans the disc's diameter)
    # Covers the marker up to one prepared pixel of blur, and is no bigger than it by more than two on a side.
    assert np.all(np.abs(back - np.asarray(marker)) <= 2 * px + 2), (back, marker, px)
    # A box reaching past the photograph (the square is wider than a cut photograph) is clipped to it.
    whole = predict.photo_boxes(np.array([0, 0, size, size]), prep.transform, size, hw)
    assert np.all(whole[:2] >= 0) and whole[2] <= hw[0] and whole[3] <= hw[1]
    if radius * 2 > hw[0]:
        assert whole[0] == 0 and whole[2] == hw[0]


def test_list_photos_is_recursive_and_by_suffix(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("x.JPG", "a/y.png", "a/b/z.tif", "a/notes.txt", "a/b/w.jpeg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in predict.list_photos(str(tmp_path))] == [
        "a/b/w.jpeg", "a/b/z.tif", "a/y.png", "x.JPG"]
    assert predict.list_photos(str(tmp_path / "x.JPG")) == [tmp_path / "x.JPG"]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        predict.list_photos(str(tmp_path / "missing"))


def test_heat_peaks_on_the_pixel_the_cell_looks_at():
    """An impulse on cell (2, 3) of the tiny 7x7 map (centres 16.875 + 10i px of 100, worked by hand from
    block35's 13.5 + 8i at 80 px) peaks on pixel (36, 46): the pixel centre nearest (36.875, 46.875)."""
    from fractions import Fraction

    from zoomin_jax import overlay

    centres = tuple(Fraction(135, 8) + 10 * i for i in range(7))
    values = np.zeros((7, 7))
    values[2, 3] = 1.0
    heat = overlay.heat_image(values, (centres, centres), 100)
    assert np.unravel_index(np.argmax(heat), heat.shape) == (36, 46)
    assert heat[36, 46] == pytest.approx((1 - 0.375 / 10) ** 2)  # bilinear: 0.375 px from the centre each way
    assert np.all(heat[:, :6] == heat[:, :1]) and np.all(heat[90:] == heat[99:])  # held beyond the outer centres


def test_the_picture_shows_the_clean_photograph_the_map_with_its_bar_and_the_originals_pixels():
    """Oracles from the inputs themselves: the clean panel is the photograph scaled to the panel, the overlay panel
    differs from it only where the map is above the bottom of the scale, the bar holds viridis from
    matplotlib, and each patch panel is the given original pixels (a 7x5 checkerboard, padded square)."""
    from fractions import Fraction

    from matplotlib import colormaps
    from PIL import Image

    from zoomin_jax import overlay

    rng = np.random.default_rng(2)
    display = rng.integers(40, 200, (100, 100, 3), dtype=np.uint8)
    centres = tuple(Fraction(135, 8) + 10 * i for i in range(7))
    values = np.zeros((7, 7))
    values[2, 3] = 1.0  # one hot cell: the overlay changes near pixel (36, 46) only
    board = (np.indices((70, 50)).sum(0) // 10 % 2 * 255).astype(np.uint8)
    patch = np.stack([board] * 3, -1)  # original pixels: a 7 x 5 checkerboard of 10 px squares
    scale = overlay.Scale(0.0, 1.0)
    pic = np.asarray(overlay.picture(display, values, np.stack([values] * 2, -1), np.array([[20, 30, 60, 70]]),
                                     (centres, centres), ["REFER", "grade 2"], "gated", scale, scale, [patch]))
    p, head = overlay.PANEL, 10 + (overlay.FONT_PX + 6) * 2
    assert pic.shape[1] == 2 * p + overlay.BAR
    clean = np.asarray(Image.fromarray(display).resize((p, p), Image.BILINEAR))
    inside = np.ones((p, p), bool)
    inside[int(20 * 5.12) - 4: int(60 * 5.12) + 4, int(30 * 5.12) - 4: int(70 * 5.12) + 4] = False  # box outline
    inside[:40, :40] = False  # the rank label
    np.testing.assert_array_equal(pic[head: head + p, :p][inside], clean[inside])
    heated = pic[head: head + p, p: 2 * p].astype(int)
    changed = np.abs(heated - clean).max(-1) > 2
    far = np.ones((p, p), bool)
    far[int(26 * 5.12): int(47 * 5.12), int(36 * 5.12): int(57 * 5.12)] = False  # the hot cell's reach
    assert changed[~far].mean() > 0.5 and not (changed & far & inside).any()
    bar = pic[head + 20: head + p - 20, 2 * p + 6: 2 * p + 24].reshape(-1, 18, 3)[:, 9]  # the bar's middle column
    lut = (255 * colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]).round()
    assert np.abs(bar[0] - lut[-1]).max() <= 1 and np.abs(bar[-1] - lut[0]).max() <= 2  # top: high, bottom: low
    tile = pic[head + p + overlay.FONT_PX + 12:][:p, :p]  # the first patch panel
    shown = tile[40: p - 40, 40: p - 40, 0].astype(int)  # away from the frame and label
    square = np.zeros((70, 70), np.uint8)  # a box clipped by the photograph's edge is padded, not stretched
    square[:, :50] = board
    expect = np.asarray(Image.fromarray(square).resize((p, p), Image.LANCZOS)).astype(int)[40: p - 40, 40: p - 40]
    assert np.abs(shown - expect).mean() < 3
