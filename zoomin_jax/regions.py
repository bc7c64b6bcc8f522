"""Jittable top-N region selection on attention maps and the crops that feed C-Net.

Shape-static `jnp`/`lax` code, no Python control flow on values, so the zoom-in compiles into the same XLA program
as the networks around it; every table that depends only on shapes (cell centres, boxes, allowed cells) is numpy.

Candidates are the cells of a score map of shape (h, w). Cell (i, j) proposes a `patch_size` box in high-res pixels
centred where the cell looks: its receptive-field centre in the low-res input, `offset + stride * i` (continuous
pixels, pixel k spanning [k, k + 1); derived from the backbone by `inception_resnet.endpoint_geometry`), scaled to
the high-res image by `image_size / low_res_size` (`cell_centres`). The box's corner is that centre minus half the
patch, rounded half up in exact rational arithmetic, then shifted (clipped) so that the box lies inside the image.
The VALID stem and reductions make these centres differ from an even spread: at 160 px the 17x17 block35 cells look
at 13.5 + 8i px, not (i + 0.5) * 160 / 17 = 4.7 .. 155.3, which put the edge boxes up to 14 px (35 px at 400) off;
at 492 the 14x14 conv_7b cells look at 37.5 + 32i (20 px off at the edges, 50 px at 1230).

Border cells follow the same rule as every other cell: the box is centred on the unclipped geometric centre
`offset + stride * i`, then shifted inside the image; it is not moved towards where the clipped field looks. Near
the border part of a cell's theoretical field lies outside the image, where the SAME layers see zero padding, so
its effective field is clipped and its centroid lies between the geometric centre and the image centre (block35's
cell 0 about 4 px inward at any size, conv_7b's cell 0 at 492 about 13 px, i.e. 33 px at 1230). Measured on the
network, that centroid stays inside the cell's box for the tiny, default and paper configs (tests/test_geometry.py).

Candidates are ranked once with `lax.top_k` (descending score; ties keep the lower row-major index first, as a
stable sort would), then a `lax.fori_loop` picks `num_regions` boxes greedily: each pick is the best candidate that
is neither chosen nor suppressed, and after each pick every candidate whose box overlaps it with IoU above
`iou_threshold` is suppressed.

When suppression leaves fewer than `num_regions` candidates (a large patch on a small map, or a strict threshold),
the remaining picks take the best candidates not chosen yet regardless of overlap, so the output always has
`num_regions` distinct cells, best first, and every pick after the first unsuppressed run overlaps an earlier one.
Two cells can still propose the same box where the shift into the image makes their boxes coincide (borders).

`disc_radius` restricts candidates to cells whose centre (the same high-res centre as the box's, before the shift)
lies inside the circle of that radius (a fraction of half the image side) around the image centre: in a
disc-cropped fundus photograph the corners are black surround, and an attention map trained from image-level labels
can park weight there (a constant "bias" region), which would send crops into nothing. Cells outside the circle are
never picked.

`fov` (optional, per image) restricts candidates further to cells whose centre pixel lies in that photograph's
field of view: many real photographs are cut at top and bottom, so the circle holds black bands (Graham
normalisation turns them flat grey) where a crop shows nothing. An image with fewer than `num_regions` such cells
falls back to the circle alone, so the output keeps N distinct cells.

`avoid` (optional, per image) is a point to keep away from, in high-res pixels: candidates exclude cells whose
centre lies within `avoid_radius` (a fraction of the image side) of it. The model passes the optic disc found by
`locate_optic_disc` (config `model.regions.optic_disc_radius`): the disc is the brightest normal structure of a
fundus photograph, and an attention map trained from grades alone readily parks a box on it. Again an image left
with fewer than `num_regions` candidates falls back to the rules before this one.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def cell_centres(side: int, stride: int, offset: float, low_res_size: int, image_size: int) -> tuple[Fraction, ...]:
    """High-res centre of each cell along one axis, exact: `(offset + stride * i) * image_size / low_res_size`.

    Args:
      side, stride, offset: the map's geometry in low-res pixels (`inception_resnet.endpoint_geometry`).
      low_res_size: side of the low-res image the map was computed on.
      image_size: side of the high-res image the boxes refer to.

    Returns:
      `side` Fractions, in high-res pixels (pixel k spans [k, k + 1)).
    """
    scale = Fraction(image_size, low_res_size)
    return tuple((Fraction(offset) + stride * i) * scale for i in range(side))


def centre_arrays(centres: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(row centres, column centres) as float64 arrays, from `cell_centres`' Fractions (or floats)."""
    rows, cols = (np.asarray([float(c) for c in cs]) for cs in centres)
    return rows, cols


def _corners(centres, image_size: int, patch_size: int) -> np.ndarray:
    # round_half_up(c - P / 2) = floor(c - P / 2 + 1 / 2), exact on Fractions, then shifted into the image.
    c0 = [math.floor(Fraction(c) - Fraction(patch_size - 1, 2)) for c in centres]
    return np.clip(np.asarray(c0, np.int64), 0, image_size - patch_size).astype(np.int32)


def cell_boxes(centres: tuple, image_size: int, patch_size: int) -> jnp.ndarray:
    """Box of every cell of a map, in row-major cell order.

    Args:
      centres: (row centres, column centres), high-res pixels (Fractions or floats), e.g. from `cell_centres`.
      image_size: side of the square high-res image, in pixels.
      patch_size: side of the square boxes, in pixels (<= image_size).

    Returns:
      int32 (h * w, 4) boxes (y0, x0, y1, x1), end exclusive, inside [0, image_size).
    """
    rows, cols = centres
    y0, x0 = np.meshgrid(_corners(rows, image_size, patch_size), _corners(cols, image_size, patch_size), indexing="ij")
    y0, x0 = y0.reshape(-1), x0.reshape(-1)
    return jnp.asarray(np.stack([y0, x0, y0 + patch_size, x0 + patch_size], axis=-1))


def box_iou(box: jnp.ndarray, boxes: jnp.ndarray) -> jnp.ndarray:
    """IoU of one box (4,) with each of (M, 4) boxes, all (y0, x0, y1, x1) end exclusive."""
    iy = jnp.maximum(0, jnp.minimum(box[2], boxes[:, 2]) - jnp.maximum(box[0], boxes[:, 0]))
    ix = jnp.maximum(0, jnp.minimum(box[3], boxes[:, 3]) - jnp.maximum(box[1], boxes[:, 1]))
    inter = (iy * ix).astype(jnp.float32)
    area = lambda b: ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])).astype(jnp.float32)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _select_one(scores: jnp.ndarray, boxes: jnp.ndarray, num_regions: int, iou_threshold: float, allowed):
    """Greedy selection on one flattened map: scores (M,), boxes (M, 4), allowed bool (M,) -> (N,) cell indices."""
    m = scores.shape[0]
    _, order = lax.top_k(scores, m)  # full descending sort; ties: lower index first
    sorted_boxes = boxes[order]
    ok = allowed[order]

    def pick(n, carry):
        chosen, suppressed, picks = carry
        free = ~chosen & ~suppressed & ok
        # First free candidate in score order; if none is free, the first allowed one not chosen yet.
        k = jnp.where(jnp.any(free), jnp.argmax(free), jnp.argmax(~chosen & ok))
        chosen = chosen.at[k].set(True)
        suppressed = suppressed | (box_iou(sorted_boxes[k], sorted_boxes) > iou_threshold)
        return chosen, suppressed, picks.at[n].set(k)

    init = (jnp.zeros(m, bool), jnp.zeros(m, bool), jnp.zeros(num_regions, jnp.int32))
    _, _, picks = lax.fori_loop(0, num_regions, pick, init)
    return order[picks]


def allowed_cells(centres: tuple, image_size: int, disc_radius: float | None) -> np.ndarray:
    """bool (h * w,), row-major: whether cell (i, j)'s high-res centre lies within `disc_radius` (a fraction of half
    the image side) of the image centre. `centres` as in `cell_boxes`; None allows every cell. Static (numpy), so it
    costs nothing in the compiled program."""
    rows, cols = centre_arrays(centres)
    if disc_radius is None:
        return np.ones(len(rows) * len(cols), bool)
    half = image_size / 2.0
    dist = np.hypot((rows[:, None] - half), (cols[None, :] - half)) / half
    return (dist <= disc_radius).reshape(-1)


def select_boxes(
    scores: jnp.ndarray,
    centres: tuple,
    image_size: int,
    patch_size: int,
    num_regions: int,
    iou_threshold: float,
    disc_radius: float | None = None,
    fov: jnp.ndarray | None = None,
    avoid: jnp.ndarray | None = None,
    avoid_radius: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Top-N boxes of each score map with greedy overlap suppression.

    Args:
      scores: (B, h, w) one map per image (e.g. A-Net's gated map or attention reduced over lesion levels 1..4).
      centres: (h row centres, w column centres) of the cells in high-res pixels (`cell_centres`); static.
      image_size: side of the square high-res image the boxes refer to.
      patch_size: side of the boxes, in high-res pixels; 1 <= patch_size <= image_size.
      num_regions: N, boxes per image; 1 <= N <= h * w.
      iou_threshold: candidates overlapping a chosen box with IoU above this are suppressed (1.0: none are).
      disc_radius: only cells whose centre is within this fraction of half the image side from the image centre
        are candidates (see the module docstring); None: every cell. At least `num_regions` cells must qualify.
      fov: optional bool (B, image_size, image_size), each image's field of view at high res (`fov_mask`): a cell
        is a candidate only where the pixel holding its centre is True (images with fewer than `num_regions` such
        cells use the disc rule alone).
      avoid: optional float (B, 2) one (row, column) point per image in high-res pixels (e.g. the optic disc,
        `locate_optic_disc`): cells whose centre lies within `avoid_radius * image_size` of it are not candidates
        (images with fewer than `num_regions` other candidates keep the rules above alone).

    Returns:
      boxes: int32 (B, N, 4) as (y0, x0, y1, x1) in high-res pixels, end exclusive, best first;
      box_scores: (B, N) the map value at each chosen cell.
      Both carry `stop_gradient`: selection is not differentiable and nothing flows back through it.
    """
    b, h, w = scores.shape
    if tuple(map(len, centres)) != (h, w):
        raise ValueError(f"centres for a {tuple(map(len, centres))} map given for a {h}x{w} score map")
    if not 1 <= patch_size <= image_size:
        raise ValueError(f"patch_size {patch_size} must be between 1 and the image size {image_size}")
    if not 1 <= num_regions <= h * w:
        raise ValueError(f"num_regions {num_regions} must be between 1 and the {h}x{w}={h * w} map cells")
    allowed = allowed_cells(centres, image_size, disc_radius)
    if allowed.sum() < num_regions:
        raise ValueError(
            f"num_regions {num_regions} exceeds the {int(allowed.sum())} cells of the {h}x{w} map inside "
            f"disc_radius {disc_radius}"
        )
    scores = lax.stop_gradient(scores).reshape(b, h * w).astype(jnp.float32)
    boxes = cell_boxes(centres, image_size, patch_size)
    allowed = jnp.broadcast_to(jnp.asarray(allowed), (b, h * w))
    if fov is not None:
        if fov.shape != (b, image_size, image_size):
            raise ValueError(f"fov must be ({b}, {image_size}, {image_size}), got {fov.shape}")
        cy, cx = (np.clip([math.floor(c) for c in cs], 0, image_size - 1) for cs in centres)
        inside = lax.stop_gradient(fov)[:, cy[:, None], cx[None, :]].reshape(b, h * w)
        allowed = _narrow(allowed, inside, num_regions)
    if avoid is not None:
        if avoid.shape != (b, 2):
            raise ValueError(f"avoid must be ({b}, 2), got {avoid.shape}")
        rows, cols = centre_arrays(centres)
        cy = jnp.asarray(np.repeat(rows, w))  # row-major cell order
        cx = jnp.asarray(np.tile(cols, h))
        p = lax.stop_gradient(avoid).astype(jnp.float32)
        far = jnp.hypot(cy - p[:, :1], cx - p[:, 1:]) > avoid_radius * image_size
        allowed = _narrow(allowed, far, num_regions)
    cells = jax.vmap(lambda s, ok: _select_one(s, boxes, num_regions, iou_threshold, ok))(scores, allowed)
    return lax.stop_gradient(boxes[cells]), jnp.take_along_axis(scores, cells, axis=1)


def _narrow(allowed: jnp.ndarray, keep: jnp.ndarray, num_regions: int) -> jnp.ndarray:
    """allowed & keep per image (rows of (B, M)), where that leaves at least `num_regions` cells; else allowed."""
    narrowed = allowed & keep
    return jnp.where(narrowed.sum(axis=1, keepdims=True) >= num_regions, narrowed, allowed)


def locate_optic_disc(low: jnp.ndarray, window: int, rim: float = 0.9) -> jnp.ndarray:
    """The optic disc of each low-res fundus image: the centre of its brightest `window` x `window` square in green.

    The disc is the largest bright patch of a fundus photograph; hard exudates are brighter in places but small,
    so averaged over a window about the disc's size (7% of the side) the disc wins. Green, not luminance: Graham's
    normalisation keeps the disc's green excess but flattens its red (on the 411 IDRiD photographs with an
    annotated disc, Graham-normalised at 160 px: green 81% inside the annotated disc box, luminance 47%; without
    Graham, luminance 98%). Only windows centred inside `rim` (a fraction of half the side) of the image centre
    count: the eye disc's edge is no disc. Nothing here is learned or differentiated.

    Args:
      low: (B, s, s, 3) low-res images, RGB, any affine scaling of the pixels (e.g. [-1, 1]).
      window: side of the averaging square in low-res pixels (odd keeps it centred on a pixel).
      rim: windows must be centred within this fraction of half the side from the image centre.

    Returns:
      float32 (B, 2) (row, column) of the disc's centre in low-res continuous pixels (pixel k spans [k, k + 1)).
    """
    b, s = low.shape[0], low.shape[1]
    green = lax.stop_gradient(low[..., 1]).astype(jnp.float32)
    means = lax.reduce_window(green, 0.0, lax.add, (1, window, window), (1, 1, 1), "SAME")
    centre = np.arange(s) + 0.5
    inside = np.hypot(centre[:, None] - s / 2, centre[None, :] - s / 2) <= rim * s / 2
    means = jnp.where(jnp.asarray(inside), means, -jnp.inf).reshape(b, s * s)
    k = jnp.argmax(means, axis=1)
    return jnp.stack([k // s, k % s], axis=-1).astype(jnp.float32) + 0.5


def fov_mask(fov_rows: jnp.ndarray, image_size: int) -> jnp.ndarray:
    """bool (B, S, S) field-of-view masks from int (B, S, 2) per-row extents [x0, x1) (`zoomin_jax.data.fov`)."""
    x = jnp.arange(image_size, dtype=jnp.int32)
    rows = fov_rows.astype(jnp.int32)
    return (rows[..., 0:1] <= x) & (x < rows[..., 1:2])


def crop(images: jnp.ndarray, boxes: jnp.ndarray, patch_size: int) -> jnp.ndarray:
    """Cuts fixed-size patches with `lax.dynamic_slice`.

    Args:
      images: (B, H, W, C) high-res images.
      boxes: (B, N, 4) int boxes from `select_boxes` (only y0, x0 are read).
      patch_size: P, the patch side (the boxes' size).

    Returns:
      (B, N, P, P, C) patches, same dtype as `images`. Gradients flow to the image pixels, not to the boxes.
    """
    corners = lax.stop_gradient(boxes[..., :2]).astype(jnp.int32)
    c = images.shape[-1]

    def one(image, corner):
        return lax.dynamic_slice(image, (corner[0], corner[1], 0), (patch_size, patch_size, c))

    return jax.vmap(lambda image, cs: jax.vmap(lambda cr: one(image, cr))(cs))(images, corners)
