"""Training augmentation of one high-resolution fundus image and its lesion boxes (test-time variants run on the
device: `eval_step.forward_with_tta`).

Everything is numpy/OpenCV on the host, per example, and deterministic given an `np.random.Generator` (the input
pipeline hands one per example from a grain `random_map`, so the result depends only on the seed and the example's
position in the sample stream, never on worker count or timing). OpenCV is the only implementation (no PIL path),
so the pixels do not depend on which libraries a machine happens to have; importing this module sets OpenCV's own
thread pool to one thread (`cv2.setNumThreads(1)`, process-wide): grain already runs the per-example work on
several threads and worker processes, and OpenCV's pool on top of them would only oversubscribe the cores.

Geometry: the stored image is the eye disc cropped and centred, so rotation by any angle about the image centre,
flips and a small isotropic zoom keep the disc in place; everything outside the source is filled black. The three
are composed into one affine map and resampled once (bilinear), so a rotated, flipped, zoomed image is blurred only
once (`cv2.warpAffine`, INTER_LINEAR, constant black border). Pure flips (no rotation, no zoom) are exact flips.

Coordinates are continuous pixel coordinates: pixel (i, j) covers [i, i+1) x [j, j+1), the image centre is (S/2, S/2),
the same convention as the stored lesion boxes (y0, x0, y1, x1), end exclusive (OpenCV puts pixel centres at integers:
`warp_image` shifts by half a pixel on both sides of the map). A box is
transformed by mapping its 4 corners, taking the enclosing axis-aligned box (floor/ceil), clipping it to the image and
dropping it if nothing of it is left inside.

Photometric: brightness (a factor on all channels) and contrast (scaling around the mean of the eye disc) are drawn
here and applied on the device, inside the train step (`zoomin_jax.photometric`): the example carries its two factors,
not changed pixels (the lookup over every pixel was a third of the host's work per example).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import cv2
import numpy as np

from zoomin_jax.data import fov as fov_lib

cv2.setNumThreads(1)  # see the module docstring



def affine_matrix(size: int, angle_deg: float = 0.0, scale: float = 1.0, flip_lr: bool = False,
                  flip_ud: bool = False) -> np.ndarray:
    """The forward map of an augmentation, from input to output continuous (x, y) pixel coordinates.

    Flips first, then rotation by `angle_deg` (counter-clockwise as displayed, i.e. with y pointing down), then
    zoom by `scale`, all about the image centre.

    Args:
      size: side S of the square image.
      angle_deg: rotation angle in degrees.
      scale: isotropic zoom factor (> 1 enlarges).
      flip_lr: mirror left-right (x -> S - x).
      flip_ud: mirror top-bottom (y -> S - y).

    Returns:
      A float64 (3, 3) homogeneous matrix M with [x_out, y_out, 1] = M @ [x_in, y_in, 1].
    """
    c = size / 2.0
    t = math.radians(angle_deg)
    # Counter-clockwise on screen with y down: x' = cos x + sin y, y' = -sin x + cos y.
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    flip = np.diag([-1.0 if flip_lr else 1.0, -1.0 if flip_ud else 1.0])
    lin = scale * rot @ flip
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = np.array([c, c]) - lin @ np.array([c, c])
    return m


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resamples `image` under the forward map `matrix` (bilinear, black fill).

    Args:
      image: uint8 (H, W), (H, W, 3) or (H, W, 4); each channel is resampled alike (OpenCV's 4-channel path is
        about twice as fast as its 3-channel one and gives the same values per channel: `random_augment` warps RGBA).
      matrix: (3, 3) forward map from `affine_matrix`.

    Returns:
      uint8 of the input's shape, the transformed image.
    """
    # Rounding snaps quarter turns to exact integers (cos 90 deg is 6e-17 in floating point), so they resample
    # pixel centres exactly instead of blending in 1e-16 of a neighbour and truncating 60 to 59.
    inv = np.round(np.linalg.inv(matrix), 12)  # output -> input, continuous coordinates
    # OpenCV's coordinates are ours minus half a pixel: x_in - 1/2 = A (x_out - 1/2 + 1/2) + b - 1/2.
    a = inv[:2, :2]
    m = np.concatenate([a, (inv[:2, 2] + 0.5 * a.sum(1) - 0.5)[:, None]], 1)
    h, w = image.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lesion boxes under the forward map: enclosing box of the 4 mapped corners, clipped to the image.

    Args:
      boxes: int (N, 4) boxes (y0, x0, y1, x1), end exclusive, in pixels of the input image.
      matrix: (3, 3) forward map from `affine_matrix`.
      size: side of the (square) output image.

    Returns:
      (new_boxes int32 (M, 4), keep bool (N,)): the transformed boxes that still overlap the image (M = keep.sum()),
      in input order.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 4), np.int32), np.zeros((0,), bool)
    y0, x0, y1, x1 = boxes.T
    xs = np.stack([x0, x1, x0, x1], -1)
    ys = np.stack([y0, y0, y1, y1], -1)
    nx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    ny = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    # Round away tiny float error before floor/ceil so that exact maps (flips, 90-degree turns) stay exact.
    nx, ny = np.round(nx, 6), np.round(ny, 6)
    out = np.stack([np.floor(ny.min(-1)), np.floor(nx.min(-1)), np.ceil(ny.max(-1)), np.ceil(nx.max(-1))], -1)
    out = np.clip(out, 0, size)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep].astype(np.int32), keep


class Augmented(NamedTuple):
    """One augmented example (`random_augment`)."""

    image: np.ndarray  # uint8 (S, S, 3), geometrically transformed
    boxes: np.ndarray  # int32 (M, 4) the lesion boxes still on the image
    kinds: np.ndarray  # (M,) their kinds
    photometric: np.ndarray  # float32 (2,) (brightness, contrast), applied in the train step
    fov_rows: np.ndarray | None  # int32 (S, 2) the moved field of view, when one was given


def random_augment(
    image: np.ndarray, boxes: np.ndarray, kinds: np.ndarray, rng: np.random.Generator, flags: Mapping[str, Any],
    fov_rows: np.ndarray | None = None,
) -> Augmented:
    """One random training augmentation of an example: the geometry applied, the photometric factors drawn.

    The random draws always happen in the same order, whatever the flags, so turning one augmentation off does not
    change the others.

    Args:
      image: uint8 (S, S, 3) high-resolution image.
      boxes: int (N, 4) lesion boxes (y0, x0, y1, x1), end exclusive.
      kinds: int (N,) lesion kinds.
      rng: the example's generator.
      flags: `config.data.augment`: rotate (bool, uniform angle in [0, 360)), flip (bool, each axis with
        probability 1/2), scale (zoom in [1 - scale, 1 + scale]), brightness, contrast (factors in [1 - x, 1 + x],
        returned, not applied: the train step applies them, `zoomin_jax.photometric`).
      fov_rows: optional int (S, 2) field of view of `image` (`zoomin_jax.data.fov`), moved with the image.

    Returns:
      `Augmented`: the transformed uint8 image, the boxes still on the image with their kinds, the (brightness,
      contrast) factors, and with `fov_rows` the field of view of the transformed image (else None).
    """
    size = image.shape[0]
    u = rng.random(6)
    angle = 360.0 * u[0] if flags.get("rotate", False) else 0.0
    flip_lr = bool(flags.get("flip", False)) and u[1] < 0.5
    flip_ud = bool(flags.get("flip", False)) and u[2] < 0.5
    s = float(flags.get("scale", 0.0))
    scale = 1.0 + s * (2.0 * u[3] - 1.0)
    b = float(flags.get("brightness", 0.0))
    c = float(flags.get("contrast", 0.0))
    factors = np.array([1.0 + b * (2.0 * u[4] - 1.0), 1.0 + c * (2.0 * u[5] - 1.0)], np.float32)

    matrix = affine_matrix(size, angle, scale, flip_lr, flip_ud)
    warp = not (angle == 0.0 and scale == 1.0)
    # OpenCV's 4-channel warp is about twice as fast as its 3-channel one and gives the same values per channel
    # (tested): RGB -> RGBA -> warp -> RGB costs two cheap conversions and halves the warp.
    rgba = warp and image.ndim == 3 and image.shape[-1] == 3
    if rgba:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2RGBA)
    if not warp:  # flips only: exact, no resampling
        if flip_lr or flip_ud:
            image = cv2.flip(np.ascontiguousarray(image), -1 if flip_lr and flip_ud else (1 if flip_lr else 0))
    else:
        image = warp_image(image, matrix)
    if rgba:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    boxes, keep = transform_boxes(boxes, matrix, size)
    kinds = np.asarray(kinds).reshape(-1)[keep]
    if fov_rows is None:
        return Augmented(np.asarray(image), boxes, kinds, factors, None)
    mask = fov_lib.rows_to_mask(fov_rows, size).astype(np.uint8) * 255
    if not warp:
        if flip_lr or flip_ud:
            mask = cv2.flip(mask, -1 if flip_lr and flip_ud else (1 if flip_lr else 0))
    else:
        mask = warp_image(mask, matrix)  # bilinear: a pixel is in where more than half of it was
    return Augmented(np.asarray(image), boxes, kinds, factors, fov_lib.mask_to_rows(mask > 127))


