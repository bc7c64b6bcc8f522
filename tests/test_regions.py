"""Region selection against a plain numpy greedy reference, plus edge cases and gradient flow."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoomin_jax.regions import crop, select_boxes


def reference(scores, image_size, patch, n, thr):
    """Greedy selection written the obvious way, one image at a time, in numpy."""
    h, w = scores.shape
    cands = []
    for i in range(h):
        for j in range(w):
            # Exact rationals, rounded half up: the corner of a box centred on the cell centre.
            cy, cx = Fraction(2 * i + 1, 2 * h) * image_size, Fraction(2 * j + 1, 2 * w) * image_size
            y0 = min(max(math.floor(cy - Fraction(patch, 2) + Fraction(1, 2)), 0), image_size - patch)
            x0 = min(max(math.floor(cx - Fraction(patch, 2) + Fraction(1, 2)), 0), image_size - patch)
            cands.append((float(scores[i, j]), i * w + j, (y0, x0, y0 + patch, x0 + patch)))
    order = sorted(cands, key=lambda c: (-c[0], c[1]))

    def iou(a, b):
        iy = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        ix = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iy * ix
        return inter / (2 * patch * patch - inter)

    chosen, boxes, vals = set(), [], []
    suppressed = set()
    for _ in range(n):
        free = [c for c in order if c[1] not in chosen and c[1] not in suppressed]
        pick = free[0] if free else [c for c in order if c[1] not in chosen][0]
        chosen.add(pick[1])
        boxes.append(pick[2])
        vals.append(pick[0])
        suppressed |= {c[1] for c in order if iou(c[2], pick[2]) > thr}
    return np.array(boxes), np.array(vals)


@pytest.mark.parametrize("h,image_size,patch,n,thr", [(7, 400, 96, 4, 0.25), (14, 1230, 294, 4, 0.3),
                                                        (5, 100, 30, 6, 0.0), (9, 200, 80, 8, 0.5)])
def test_matches_numpy_reference_on_random_maps(h, image_size, patch, n, thr):
    rng = np.random.default_rng(h * 1000 + n)
    scores = rng.normal(size=(6, h, h)).astype(np.float32)
    # Some quantised maps so that ties occur.
    scores[3:] = np.round(scores[3:] * 2) / 2
    boxes, vals = jax.jit(select_boxes, static_argnums=(1, 2, 3, 4))(scores, image_size, patch, n, thr)
    assert boxes.shape == (6, n, 4) and boxes.dtype == jnp.int32
    for b in range(6):
        want_boxes, want_vals = reference(scores[b], image_size, patch, n, thr)
        np.testing.assert_array_equal(np.asarray(boxes[b]), want_boxes)
        np.testing.assert_allclose(np.asarray(vals[b]), want_vals)


def test_peak_at_corner_and_border_gives_box_inside_image():
    scores = np.zeros((3, 7, 7), np.float32)
    scores[0, 0, 0] = 5  # top-left corner
    scores[1, 6, 6] = 5  # bottom-right corner
    scores[2, 3, 6] = 5  # right border, middle row
    boxes, vals = select_boxes(scores, 400, 96, 1, 0.25)
    boxes = np.asarray(boxes)[:, 0]
    np.testing.assert_array_equal(boxes[0], [0, 0, 96, 96])
    np.testing.assert_array_equal(boxes[1], [304, 304, 400, 400])
    cy = (3 + 0.5) * 400 / 7
    np.testing.assert_array_equal(boxes[2], [math.floor(cy - 48 + 0.5), 304, math.floor(cy - 48 + 0.5) + 96, 400])
    np.testing.assert_array_equal(np.asarray(vals)[:, 0], [5, 5, 5])


def test_all_equal_map_picks_row_major_first_and_spreads_out():
    boxes, vals = select_boxes(np.ones((1, 7, 7), np.float32), 400, 96, 4, 0.0)
    boxes = np.asarray(boxes[0])
    np.testing.assert_array_equal(boxes[0], [0, 0, 96, 96])  # cell (0, 0) wins the tie
    # With threshold 0 no two chosen boxes may overlap at all.
    for a in range(4):
        for b in range(a + 1, 4):
            iy = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
            ix = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
            assert iy <= 0 or ix <= 0
    assert np.all(np.asarray(vals) == 1)


def test_more_regions_than_suppression_leaves_fall_back_to_best_unchosen():
    # A 3x3 map with patches covering most of the image: after the first pick everything is suppressed.
    scores = np.arange(9, dtype=np.float32)[::-1].reshape(1, 3, 3)  # cell 0 best, cell 8 worst
    boxes, vals = select_boxes(scores, 90, 80, 5, 0.1)
    # Every pick is a distinct cell, in descending score order, since all but the first were suppressed.
    np.testing.assert_array_equal(np.asarray(vals[0]), [8, 7, 6, 5, 4])
    assert np.all(np.asarray(boxes) >= 0) and np.all(np.asarray(boxes) <= 90)


def test_iou_threshold_one_means_plain_top_n():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(2, 6, 6)).astype(np.float32)
    _, vals = select_boxes(scores, 300, 200, 7, 1.0)
    want = -np.sort(-scores.reshape(2, -1), axis=1)[:, :7]
    np.testing.assert_allclose(np.asarray(vals), want)


def test_disc_radius_never_picks_cells_outside_the_eye_disc():
    # The corners of an 8x8 map hold the highest scores (a "bias" region in the black surround); with the disc
    # restriction every pick is a cell whose centre lies inside the circle, and the best of those comes first.
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 8, 8)).astype(np.float32)
    scores[:, 0, 0] = scores[:, 7, 7] = scores[:, 0, 7] = 100.0
    boxes, vals = select_boxes(scores, 400, 96, 6, 1.0, disc_radius=1.0)
    yy, xx = np.meshgrid((np.arange(8) + 0.5) / 8 * 2 - 1, (np.arange(8) + 0.5) / 8 * 2 - 1, indexing="ij")
    inside = np.hypot(yy, xx) <= 1.0
    for i in range(2):
        allowed = np.where(inside, scores[i], -np.inf).reshape(-1)
        np.testing.assert_allclose(np.asarray(vals[i]), -np.sort(-allowed)[:6])  # plain top-6 of allowed cells
        centres = (np.asarray(boxes[i])[:, :2] + 48) / 200.0 - 1.0
        assert np.all(np.hypot(centres[:, 0], centres[:, 1]) <= 1.0)
    # Without it the corners win.
    _, vals = select_boxes(scores, 400, 96, 3, 1.0)
    np.testing.assert_array_equal(np.asarray(vals), 100.0)


def test_disc_radius_too_small_for_num_regions_is_an_error():
    with pytest.raises(ValueError, match="num_regions 5 exceeds the 4 cells"):
        select_boxes(np.zeros((1, 8, 8)), 400, 96, 5, 0.5, disc_radius=0.25)


def test_bad_arguments_name_the_numbers():
    with pytest.raises(ValueError, match="patch_size 500.*400"):
        select_boxes(np.zeros((1, 4, 4)), 400, 500, 2, 0.5)
    with pytest.raises(ValueError, match="num_regions 17.*16"):
        select_boxes(np.zeros((1, 4, 4)), 400, 50, 17, 0.5)


def test_crop_cuts_the_pixels_of_each_box():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(2, 64, 64, 3), dtype=np.uint8)
    boxes = np.array([[[0, 0, 16, 16], [48, 10, 64, 26]], [[5, 48, 21, 64], [30, 30, 46, 46]]], np.int32)
    patches = np.asarray(jax.jit(crop, static_argnums=2)(images, boxes, 16))
    assert patches.shape == (2, 2, 16, 16, 3) and patches.dtype == np.uint8
    for b in range(2):
        for n in range(2):
            y0, x0, y1, x1 = boxes[b, n]
            np.testing.assert_array_equal(patches[b, n], images[b, y0:y1, x0:x1])


def test_gradients_reach_patch_network_but_not_the_selection():
    """C-Net parameters get gradients; the map that chose the boxes gets exactly none."""
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.normal(size=(2, 40, 40, 3)), jnp.float32)
    score_map = jnp.asarray(rng.normal(size=(2, 5, 5)), jnp.float32)
    cnet_w = jnp.asarray(rng.normal(size=(3,)), jnp.float32)

    def loss(score_map, cnet_w, images):
        boxes, box_scores = select_boxes(score_map * 3.0, 40, 12, 3, 0.3)
        patches = crop(images, boxes, 12)
        return jnp.sum(jnp.tanh(patches @ cnet_w)) + jnp.sum(box_scores)

    g_map, g_w, g_img = jax.grad(loss, argnums=(0, 1, 2))(score_map, cnet_w, images)
    assert np.all(np.asarray(g_map) == 0)
    assert np.all(np.isfinite(np.asarray(g_w))) and np.linalg.norm(np.asarray(g_w)) > 0
    # Only pixels inside chosen boxes receive gradient.
    boxes, _ = select_boxes(score_map * 3.0, 40, 12, 3, 0.3)
    inside = np.zeros((2, 40, 40), bool)
    for b in range(2):
        for y0, x0, y1, x1 in np.asarray(boxes[b]):
            inside[b, y0:y1, x0:x1] = True
    g = np.abs(np.asarray(g_img)).sum(-1)
    assert np.all(g[~inside] == 0) and np.all(g[inside] > 0)
