"""Jittable top-N region selection on attention maps and the crops that feed C-Net.

Shape-static `jnp`/`lax` code, no Python control flow on values, so the zoom-in compiles into the same XLA program
as the networks around it.

Candidates are the cells of a score map of shape (h, w). Cell (i, j) proposes a `patch_size` box in high-res pixels
centred on the cell centre, `((i + 0.5) * image_size / h, (j + 0.5) * image_size / w)` (the corner rounded half up,
in exact integer arithmetic), shifted to lie inside the image. Candidates are ranked once with `lax.top_k`
(descending score; ties keep the lower row-major index first, as a stable sort would), then a `lax.fori_loop` picks
`num_regions` boxes greedily: each pick is the best candidate that is neither chosen nor suppressed, and after each
pick every candidate whose box overlaps it with IoU above `iou_threshold` is suppressed.

When suppression leaves fewer than `num_regions` candidates (a large patch on a small map, or a strict threshold),
the remaining picks take the best candidates not chosen yet regardless of overlap, so the output always has
`num_regions` distinct cells, best first, and every pick after the first unsuppressed run overlaps an earlier one.
Two cells can still propose the same box where the shift into the image makes their boxes coincide (borders).

`disc_radius` restricts candidates to cells whose centre lies inside the circle of that radius (a fraction of half
the image side) around the image centre: in a disc-cropped fundus photograph the corners are black surround, and
an attention map trained from image-level labels can park weight there (a constant "bias" region), which would
send crops into nothing. Cells outside the circle are never picked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def cell_boxes(h: int, w: int, image_size: int, patch_size: int) -> jnp.ndarray:
    """Box of every cell of an (h, w) map, in row-major cell order.

    Args:
      h, w: map size.
      image_size: side of the square high-res image, in pixels.
      patch_size: side of the square boxes, in pixels (<= image_size).

    Returns:
      int32 (h * w, 4) boxes (y0, x0, y1, x1), end exclusive, inside [0, image_size).
    """
    # Exact integer arithmetic (all static): y0 = round_half_up((i + 0.5) * S / h - P / 2), clipped into the image.
    def corners(n):
        num = (2 * np.arange(n) + 1) * image_size - n * patch_size  # 2n * (centre - P/2)
        return np.clip((num + n) // (2 * n), 0, image_size - patch_size).astype(np.int32)

    y0, x0 = jnp.asarray(corners(h)), jnp.asarray(corners(w))
    y0, x0 = jnp.meshgrid(y0, x0, indexing="ij")
    y0, x0 = y0.reshape(-1), x0.reshape(-1)
    return jnp.stack([y0, x0, y0 + patch_size, x0 + patch_size], axis=-1)


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
    ok = jnp.asarray(allowed)[order]

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


def allowed_cells(h: int, w: int, disc_radius: float | None) -> np.ndarray:
    """bool (h * w,), row-major: whether cell (i, j)'s centre lies within `disc_radius` (a fraction of half the side)
    of the map centre. None allows every cell. Static (numpy), so it costs nothing in the compiled program."""
    if disc_radius is None:
        return np.ones(h * w, bool)
    yy = ((np.arange(h) + 0.5) / h - 0.5) * 2.0
    xx = ((np.arange(w) + 0.5) / w - 0.5) * 2.0
    return (np.hypot(yy[:, None], xx[None, :]) <= disc_radius).reshape(-1)


def select_boxes(
    scores: jnp.ndarray,
    image_size: int,
    patch_size: int,
    num_regions: int,
    iou_threshold: float,
    disc_radius: float | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Top-N boxes of each score map with greedy overlap suppression.

    Args:
      scores: (B, h, w) one map per image (e.g. A-Net's gated map or attention reduced over lesion levels 1..4).
      image_size: side of the square high-res image the boxes refer to.
      patch_size: side of the boxes, in high-res pixels; 1 <= patch_size <= image_size.
      num_regions: N, boxes per image; 1 <= N <= h * w.
      iou_threshold: candidates overlapping a chosen box with IoU above this are suppressed (1.0: none are).
      disc_radius: only cells whose centre is within this fraction of half the image side from the image centre
        are candidates (see the module docstring); None: every cell. At least `num_regions` cells must qualify.

    Returns:
      boxes: int32 (B, N, 4) as (y0, x0, y1, x1) in high-res pixels, end exclusive, best first;
      box_scores: (B, N) the map value at each chosen cell.
      Both carry `stop_gradient`: selection is not differentiable and nothing flows back through it.
    """
    b, h, w = scores.shape
    if not 1 <= patch_size <= image_size:
        raise ValueError(f"patch_size {patch_size} must be between 1 and the image size {image_size}")
    if not 1 <= num_regions <= h * w:
        raise ValueError(f"num_regions {num_regions} must be between 1 and the {h}x{w}={h * w} map cells")
    allowed = allowed_cells(h, w, disc_radius)
    if allowed.sum() < num_regions:
        raise ValueError(
            f"num_regions {num_regions} exceeds the {int(allowed.sum())} cells of the {h}x{w} map inside "
            f"disc_radius {disc_radius}"
        )
    scores = lax.stop_gradient(scores).reshape(b, h * w).astype(jnp.float32)
    boxes = cell_boxes(h, w, image_size, patch_size)
    cells = jax.vmap(lambda s: _select_one(s, boxes, num_regions, iou_threshold, allowed))(scores)
    return lax.stop_gradient(boxes[cells]), jnp.take_along_axis(scores, cells, axis=1)


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
