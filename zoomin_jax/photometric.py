"""Brightness and contrast jitter of a training batch, inside the jitted train step.

The host draws each example's two factors (`data.augment.brightness`, `.contrast`; `augment.random_augment`) and
the batch carries them as `photometric` float32 (B, 2); this applies them on the device, fused by XLA into the
uint8 -> float conversion the model does anyway. On the host the same work was a per-channel lookup table over every
pixel (OpenCV's `LUT`, ~0.8 ms per 400 px photograph on one core, about a third of the host's work per example);
here it is one elementwise pass and a masked mean per image (bench/RESULTS.md, "Input").

Per image and channel, with brightness b, contrast c and m the channel's mean over the eye disc (the pixels some
channel of which is above the background level `BLACK`, after the geometric augmentation; on every 8th row and
column):
    v -> clip(rint(((v - m) * c + m) * b), 0, 255)   for v > BLACK,
    v -> clip(rint(v * b), 0, 255)                   for v <= BLACK (the black outside the disc stays black);
then scaled to [-1, 1] as the model scales uint8 input (v / 127.5 - 1). Factors (1, 1) give the image unchanged.

Exact, so the same batch gives the same pixels in any compile (one process or several, fused multiply-adds or
not, any reduction order): the disc's sums are integers; m is rounded to 1/16 of a grey level and b, c to 1/1024
(`STEP_MEAN`, `STEP_FACTOR`), which makes (v - m) * c + m exact in float32 and leaves one rounding, in the last
product, before rint. Without this, a mean or product one unit in the last place apart moved a pixel by a grey
level wherever rint sat on .5, and one process and two trained parameters 1e-4 apart after 8 steps (1e-6 without
the jitter; tests/test_multiprocess.py).
"""

from __future__ import annotations

import jax.numpy as jnp

from zoomin_jax.data.fov import BLACK_LEVEL

# A pixel all of whose channels are at or below this is background (JPEG noise included): the field of view's level.
BLACK = BLACK_LEVEL
SUBSAMPLE = 8  # the disc's mean colour is taken on every SUBSAMPLE-th row and column
STEP_MEAN = 16.0  # the mean is rounded to 1/STEP_MEAN of a grey level
STEP_FACTOR = 1024.0  # brightness and contrast are rounded to 1/STEP_FACTOR


def _quantised(x: jnp.ndarray, steps: float) -> jnp.ndarray:
    return jnp.round(x * steps) / steps


def jitter(images: jnp.ndarray, factors: jnp.ndarray) -> jnp.ndarray:
    """Brightness x contrast of a uint8 batch, returned as the model's float input.

    Args:
      images: uint8 (B, H, W, 3).
      factors: float (B, 2): each image's (brightness, contrast).

    Returns:
      float32 (B, H, W, 3) in [-1, 1].
    """
    v = images.astype(jnp.float32)
    # The mean on every 8th row and column: XLA's CPU reductions over the whole image cost 20x the jitter itself
    # (19 ms against 1 ms for a batch of 8 at 400 px, 2 cores), and 1/64 of the disc's pixels give the same mean to
    # within a grey level. Channels compared one by one: a max over a minor axis of 3 is slow on XLA's CPU backend.
    # Integer sums: the same in any order.
    sub = images[:, ::SUBSAMPLE, ::SUBSAMPLE].astype(jnp.int32)
    disc = (jnp.maximum(jnp.maximum(sub[..., 0], sub[..., 1]), sub[..., 2]) > BLACK).astype(jnp.int32)[..., None]
    count = disc.sum(axis=(1, 2)).astype(jnp.float32)  # (B, 1)
    sums = (sub * disc).sum(axis=(1, 2)).astype(jnp.float32)  # (B, C), exact (at most 255 * H * W / 64)
    mean = jnp.where(count > 0, sums / jnp.maximum(count, 1.0), 128.0)  # one correctly rounded division
    b = _quantised(factors[:, 0].astype(jnp.float32), STEP_FACTOR)[:, None, None, None]
    c = _quantised(factors[:, 1].astype(jnp.float32), STEP_FACTOR)[:, None, None, None]
    m = _quantised(mean, STEP_MEAN)[:, None, None, :]
    out = jnp.where(v <= BLACK, v * b, ((v - m) * c + m) * b)
    return jnp.clip(jnp.round(out), 0.0, 255.0) / 127.5 - 1.0
