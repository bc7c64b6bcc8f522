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
"""

from __future__ import annotations

import jax.numpy as jnp

BLACK = 12  # a pixel all of whose channels are at or below this is background (JPEG noise included)
SUBSAMPLE = 8  # the disc's mean colour is taken on every SUBSAMPLE-th row and column


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
    sub = v[:, ::SUBSAMPLE, ::SUBSAMPLE]
    disc = (jnp.maximum(jnp.maximum(sub[..., 0], sub[..., 1]), sub[..., 2]) > BLACK).astype(jnp.float32)[..., None]
    count = disc.sum(axis=(1, 2))  # (B, 1)
    mean = jnp.where(count > 0, (sub * disc).sum(axis=(1, 2)) / jnp.maximum(count, 1.0), 128.0)  # (B, C)
    b = factors[:, 0].astype(jnp.float32)[:, None, None, None]
    c = factors[:, 1].astype(jnp.float32)[:, None, None, None]
    m = mean[:, None, None, :]
    out = jnp.where(v <= BLACK, v * b, ((v - m) * c + m) * b)
    return jnp.clip(jnp.round(out), 0.0, 255.0) / 127.5 - 1.0
