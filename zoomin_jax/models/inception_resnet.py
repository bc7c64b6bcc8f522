"""Inception-ResNet-v2 (Szegedy et al. 2016) in Flax linen, laid out like `keras.applications.InceptionResNetV2`.

Same layers in the same order as the Keras model, so `keras_import.from_keras` can copy its weights one to one:
VALID-padded stem and reductions, every convolution without bias followed by BatchNorm without scale
(epsilon 1e-3) and ReLU, residual branches summed with scales 0.17 / 0.1 / 0.2, block repeats (10, 20, 10), and
a final 1x1 convolution to 1536 channels. `repeats` and `width` shrink the network for tests and CPU runs while
keeping its structure; `InceptionResNetV2()` with no arguments is the full network.

Applied to (B, H, W, 3) images in [-1, 1] (Keras' "tf" preprocessing), it returns a dict of endpoints keyed by
the name of the Keras layer whose output each equals (`mixed_5b`, `block35_1_ac` .. `block35_10_ac`, `mixed_6a`,
`block17_*_ac`, `mixed_7a`, `block8_*_ac`, `block8_10`, `conv_7b_ac`) plus `pool`, the global average of
`conv_7b_ac`. At 299 input the maps are 35x35, 17x17 and 8x8; at 492 they are 59x59, 29x29 and 14x14.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Keras' minimum input side for this network: the 8x8 stage must keep at least one cell.
MIN_INPUT_SIZE = 75
FULL_REPEATS = (10, 20, 10)
FEATURE_CHANNELS = 1536


def stage_sizes(input_size: int) -> dict[str, int]:
    """Spatial side of each stage's maps for a square input (VALID stem and reductions).

    Args:
      input_size: side of the square input image.

    Returns:
      {'block35': s35, 'block17': s17, 'block8': s8}; e.g. 35/17/8 at 299 and 59/29/14 at 492.
    """
    s = (input_size - 3) // 2 + 1  # conv 3x3 stride 2
    s = s - 2  # conv 3x3 valid
    s = (s - 3) // 2 + 1  # max pool 3x3 stride 2
    s = s - 2  # conv 3x3 valid (after the 1x1)
    s35 = (s - 3) // 2 + 1  # max pool 3x3 stride 2
    s17 = (s35 - 3) // 2 + 1
    s8 = (s17 - 3) // 2 + 1
    return {"block35": s35, "block17": s17, "block8": s8}


def endpoint_names(repeats: Sequence[int] = FULL_REPEATS) -> list[str]:
    """Names of the endpoints the network returns for the given block repeats, in network order."""
    r35, r17, r8 = repeats
    names = ["mixed_5b"] + [f"block35_{i}_ac" for i in range(1, r35 + 1)]
    names += ["mixed_6a"] + [f"block17_{i}_ac" for i in range(1, r17 + 1)]
    names += ["mixed_7a"] + [f"block8_{i}_ac" for i in range(1, r8)] + [f"block8_{r8}", "conv_7b_ac"]
    return names


def endpoint_stage(name: str) -> str:
    """The stage ('block35', 'block17' or 'block8') whose spatial size an endpoint has."""
    if name in ("mixed_5b",) or name.startswith("block35"):
        return "block35"
    if name in ("mixed_6a",) or name.startswith("block17"):
        return "block17"
    return "block8"


class ConvBN(nn.Module):
    """Keras' `conv2d_bn`: convolution without bias, BatchNorm without scale (eps 1e-3), optional ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: str = "SAME"
    activation: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(
            self.features, self.kernel, strides=self.strides, padding=self.padding, use_bias=False,
            dtype=self.dtype, name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=0.99, epsilon=1e-3, use_scale=False, dtype=self.dtype, name="bn"
        )(x)
        return nn.relu(x) if self.activation else x


def _max_pool(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2 feature extractor returning Keras-named endpoints and the pooled feature.

    Attributes:
      repeats: number of block35 / block17 / block8 units (Keras: 10, 20, 10).
      width: multiplier on every filter count (1.0 is the published network).
      dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    """

    repeats: Sequence[int] = FULL_REPEATS
    width: float = 1.0
    dtype: Any = jnp.float32

    def _f(self, n: int) -> int:
        return max(1, int(round(n * self.width)))

    def _cbn(self, name, features, kernel, strides=1, padding="SAME", activation=True):
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return ConvBN(self._f(features), k, strides, padding, activation, self.dtype, name=name)

    def _residual(self, x, kind: str, idx: int, scale: float, activation: bool, train: bool):
        name = f"{kind}_{idx}"
        if kind == "block35":
            b0 = self._cbn(f"{name}_b0_0", 32, 1)(x, train)
            b1 = self._cbn(f"{name}_b1_0", 32, 1)(x, train)
            b1 = self._cbn(f"{name}_b1_1", 32, 3)(b1, train)
            b2 = self._cbn(f"{name}_b2_0", 32, 1)(x, train)
            b2 = self._cbn(f"{name}_b2_1", 48, 3)(b2, train)
            b2 = self._cbn(f"{name}_b2_2", 64, 3)(b2, train)
            branches = [b0, b1, b2]
        elif kind == "block17":
            b0 = self._cbn(f"{name}_b0_0", 192, 1)(x, train)
            b1 = self._cbn(f"{name}_b1_0", 128, 1)(x, train)
            b1 = self._cbn(f"{name}_b1_1", 160, (1, 7))(b1, train)
            b1 = self._cbn(f"{name}_b1_2", 192, (7, 1))(b1, train)
            branches = [b0, b1]
        else:
            b0 = self._cbn(f"{name}_b0_0", 192, 1)(x, train)
            b1 = self._cbn(f"{name}_b1_0", 192, 1)(x, train)
            b1 = self._cbn(f"{name}_b1_1", 224, (1, 3))(b1, train)
            b1 = self._cbn(f"{name}_b1_2", 256, (3, 1))(b1, train)
            branches = [b0, b1]
        mixed = jnp.concatenate(branches, axis=-1)
        up = nn.Conv(x.shape[-1], (1, 1), use_bias=True, dtype=self.dtype, name=f"{name}_conv")(mixed)
        x = x + up * scale
        return nn.relu(x) if activation else x

    @nn.compact
    def __call__(self, x, train: bool = False) -> dict[str, jnp.ndarray]:
        """Runs the network.

        Args:
          x: (B, H, W, 3) float images in [-1, 1]; H, W >= 75.
          train: BatchNorm uses batch statistics (and updates `batch_stats`) when True.

        Returns:
          Endpoint name -> activation (see `endpoint_names`), plus 'pool': (B, 1536 * width) global average.
        """
        r35, r17, r8 = self.repeats
        out = {}
        x = x.astype(self.dtype)
        # Stem.
        x = self._cbn("stem_0", 32, 3, strides=2, padding="VALID")(x, train)
        x = self._cbn("stem_1", 32, 3, padding="VALID")(x, train)
        x = self._cbn("stem_2", 64, 3)(x, train)
        x = _max_pool(x)
        x = self._cbn("stem_3", 80, 1, padding="VALID")(x, train)
        x = self._cbn("stem_4", 192, 3, padding="VALID")(x, train)
        x = _max_pool(x)
        # Mixed 5b (Inception-A).
        b0 = self._cbn("mixed_5b_b0_0", 96, 1)(x, train)
        b1 = self._cbn("mixed_5b_b1_0", 48, 1)(x, train)
        b1 = self._cbn("mixed_5b_b1_1", 64, 5)(b1, train)
        b2 = self._cbn("mixed_5b_b2_0", 64, 1)(x, train)
        b2 = self._cbn("mixed_5b_b2_1", 96, 3)(b2, train)
        b2 = self._cbn("mixed_5b_b2_2", 96, 3)(b2, train)
        bp = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)
        bp = self._cbn("mixed_5b_b3_0", 64, 1)(bp, train)
        x = out["mixed_5b"] = jnp.concatenate([b0, b1, b2, bp], axis=-1)
        for i in range(1, r35 + 1):
            x = out[f"block35_{i}_ac"] = self._residual(x, "block35", i, 0.17, True, train)
        # Mixed 6a (Reduction-A).
        b0 = self._cbn("mixed_6a_b0_0", 384, 3, strides=2, padding="VALID")(x, train)
        b1 = self._cbn("mixed_6a_b1_0", 256, 1)(x, train)
        b1 = self._cbn("mixed_6a_b1_1", 256, 3)(b1, train)
        b1 = self._cbn("mixed_6a_b1_2", 384, 3, strides=2, padding="VALID")(b1, train)
        x = out["mixed_6a"] = jnp.concatenate([b0, b1, _max_pool(x)], axis=-1)
        for i in range(1, r17 + 1):
            x = out[f"block17_{i}_ac"] = self._residual(x, "block17", i, 0.1, True, train)
        # Mixed 7a (Reduction-B).
        b0 = self._cbn("mixed_7a_b0_0", 256, 1)(x, train)
        b0 = self._cbn("mixed_7a_b0_1", 384, 3, strides=2, padding="VALID")(b0, train)
        b1 = self._cbn("mixed_7a_b1_0", 256, 1)(x, train)
        b1 = self._cbn("mixed_7a_b1_1", 288, 3, strides=2, padding="VALID")(b1, train)
        b2 = self._cbn("mixed_7a_b2_0", 256, 1)(x, train)
        b2 = self._cbn("mixed_7a_b2_1", 288, 3)(b2, train)
        b2 = self._cbn("mixed_7a_b2_2", 320, 3, strides=2, padding="VALID")(b2, train)
        x = out["mixed_7a"] = jnp.concatenate([b0, b1, b2, _max_pool(x)], axis=-1)
        for i in range(1, r8):
            x = out[f"block8_{i}_ac"] = self._residual(x, "block8", i, 0.2, True, train)
        # Keras' last block8 has scale 1 and no activation.
        x = out[f"block8_{r8}"] = self._residual(x, "block8", r8, 1.0, False, train)
        x = out["conv_7b_ac"] = self._cbn("conv_7b", FEATURE_CHANNELS, 1)(x, train)
        out["pool"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return out
