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

The layers are one table (`network_units`): the module is built from it and `endpoint_geometry` derives from it
where each map's cells look in the input (side, stride, centre offset, field), which the zoom-in needs to put its
boxes where the cells look. Because the stem and reductions are VALID, the cells are not spread evenly over the
image: at 160 input the 17x17 cells are centred at 13.5 + 8i px, not at (i + 0.5) * 160 / 17.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

FULL_REPEATS = (10, 20, 10)
FEATURE_CHANNELS = 1536


class Layer(NamedTuple):
    """One convolution unit (`ConvBN`) or pooling window on a path through the network."""

    name: str  # ConvBN name inside its unit ("" = the unit's own name); unused for pooling
    features: int  # filters before `width` scaling; 0 for pooling (keeps the channels)
    kernel: tuple[int, int]
    stride: int = 1
    padding: str = "SAME"
    pool: str = ""  # "" convolution | "max" | "avg" (averages over the valid window, like Keras)


class Unit(NamedTuple):
    """A run of layers whose parallel branches are concatenated; optionally an Inception-ResNet residual block."""

    name: str  # prefix of its layers' names, e.g. "mixed_6a", "block17_3"
    branches: tuple[tuple[Layer, ...], ...]  # parallel paths from the unit's input (one path: a plain sequence)
    residual: float = 0.0  # > 0: out = x + residual * conv1x1(concat(branches)), then ReLU if `activation`
    activation: bool = True
    endpoint: str = ""  # key under which the unit's output is returned ("" : not returned)


def _conv(name: str, features: int, kernel, stride: int = 1, padding: str = "SAME") -> Layer:
    return Layer(name, features, (kernel, kernel) if isinstance(kernel, int) else tuple(kernel), stride, padding)


def _pool(kind: str, stride: int, padding: str) -> Layer:
    return Layer("", 0, (3, 3), stride, padding, kind)


# The network's definition, used both to build it (`InceptionResNetV2.__call__`) and to derive the geometry of its
# maps (`endpoint_geometry`), so the two cannot drift apart. Names and order are Keras' (weight import relies on it).
STEM = Unit("stem", ((
    _conv("0", 32, 3, 2, "VALID"), _conv("1", 32, 3, 1, "VALID"), _conv("2", 64, 3), _pool("max", 2, "VALID"),
    _conv("3", 80, 1, 1, "VALID"), _conv("4", 192, 3, 1, "VALID"), _pool("max", 2, "VALID"),
),))
MIXED_5B = Unit("mixed_5b", (  # Inception-A
    (_conv("b0_0", 96, 1),),
    (_conv("b1_0", 48, 1), _conv("b1_1", 64, 5)),
    (_conv("b2_0", 64, 1), _conv("b2_1", 96, 3), _conv("b2_2", 96, 3)),
    (_pool("avg", 1, "SAME"), _conv("b3_0", 64, 1)),
), endpoint="mixed_5b")
MIXED_6A = Unit("mixed_6a", (  # Reduction-A
    (_conv("b0_0", 384, 3, 2, "VALID"),),
    (_conv("b1_0", 256, 1), _conv("b1_1", 256, 3), _conv("b1_2", 384, 3, 2, "VALID")),
    (_pool("max", 2, "VALID"),),
), endpoint="mixed_6a")
MIXED_7A = Unit("mixed_7a", (  # Reduction-B
    (_conv("b0_0", 256, 1), _conv("b0_1", 384, 3, 2, "VALID")),
    (_conv("b1_0", 256, 1), _conv("b1_1", 288, 3, 2, "VALID")),
    (_conv("b2_0", 256, 1), _conv("b2_1", 288, 3), _conv("b2_2", 320, 3, 2, "VALID")),
    (_pool("max", 2, "VALID"),),
), endpoint="mixed_7a")
# Residual blocks: branches of stride-1 SAME layers (they keep the map's size, stride and cell centres).
BLOCK_BRANCHES = {
    "block35": (
        (_conv("b0_0", 32, 1),),
        (_conv("b1_0", 32, 1), _conv("b1_1", 32, 3)),
        (_conv("b2_0", 32, 1), _conv("b2_1", 48, 3), _conv("b2_2", 64, 3)),
    ),
    "block17": (
        (_conv("b0_0", 192, 1),),
        (_conv("b1_0", 128, 1), _conv("b1_1", 160, (1, 7)), _conv("b1_2", 192, (7, 1))),
    ),
    "block8": (
        (_conv("b0_0", 192, 1),),
        (_conv("b1_0", 192, 1), _conv("b1_1", 224, (1, 3)), _conv("b1_2", 256, (3, 1))),
    ),
}
BLOCK_SCALES = {"block35": 0.17, "block17": 0.1, "block8": 0.2}
CONV_7B = Unit("conv_7b", ((_conv("", FEATURE_CHANNELS, 1),),), endpoint="conv_7b_ac")


def network_units(repeats: Sequence[int] = FULL_REPEATS) -> tuple[Unit, ...]:
    """The whole network as units in call order, for the given block repeats (block35, block17, block8)."""
    r35, r17, r8 = repeats

    def blocks(kind, n):
        return [Unit(f"{kind}_{i}", BLOCK_BRANCHES[kind], BLOCK_SCALES[kind], endpoint=f"{kind}_{i}_ac")
                for i in range(1, n + 1)]

    # Keras' last block8 has scale 1 and no activation; its output is named after the block, without "_ac".
    last = Unit(f"block8_{r8}", BLOCK_BRANCHES["block8"], 1.0, activation=False, endpoint=f"block8_{r8}")
    return (STEM, MIXED_5B, *blocks("block35", r35), MIXED_6A, *blocks("block17", r17), MIXED_7A,
            *blocks("block8", r8 - 1), last, CONV_7B)


def layer_name(unit: Unit, layer: Layer) -> str:
    """Module name of a convolution layer: the unit's name, plus the layer's own after an underscore."""
    return f"{unit.name}_{layer.name}" if layer.name else unit.name


class Geometry(NamedTuple):
    """Where the cells of a map look in the input, along one axis (the network is symmetric in y and x).

    Continuous input coordinates: pixel k spans [k, k + 1). Cell i's receptive field is centred at
    `offset + stride * i` and spans `field` pixels (its theoretical extent, before any clipping by the image
    border: near the border part of it lies in the SAME layers' zero padding).
    """

    side: int  # cells per side of the map
    stride: int  # input pixels between neighbouring cells' centres
    offset: float  # centre of cell 0's field (a multiple of 0.5, exact in float)
    field: int  # theoretical receptive-field side, in input pixels


def _through(g: Geometry, layer: Layer, axis: int) -> Geometry:
    """Geometry after one layer, with XLA's padding rule (SAME puts the smaller half of the padding first)."""
    k, s = layer.kernel[axis], layer.stride
    if layer.padding == "VALID":
        if g.side < k:
            raise ValueError(f"a {k}-wide VALID window does not fit a {g.side}-cell map: the input is too small")
        side, lo = (g.side - k) // s + 1, 0
    else:
        side = -(-g.side // s)
        lo = max((side - 1) * s + k - g.side, 0) // 2
    return Geometry(side, g.stride * s, g.offset + ((k - 1) / 2 - lo) * g.stride, g.field + (k - 1) * g.stride)


def _unit_geometry(g: Geometry, unit: Unit, axis: int) -> Geometry:
    outs = []
    for branch in unit.branches:
        b = g
        for layer in branch:
            b = _through(b, layer, axis)
        outs.append(b)
    if unit.residual:
        outs.append(g)  # the identity path of the residual sum
    if len({o[:3] for o in outs}) != 1:  # concatenation and sums need the same cells at the same places
        raise AssertionError(f"{unit.name}: branches disagree on the map geometry {outs}")
    return outs[0]._replace(field=max(o.field for o in outs))


def endpoint_geometries(input_size: int, repeats: Sequence[int] = FULL_REPEATS) -> dict[str, Geometry]:
    """Geometry of every endpoint for a square input, derived from the layer table (`network_units`).

    Args:
      input_size: side of the square input image.
      repeats: block repeats; they change only the theoretical `field`, never side, stride or offset (residual
        blocks are stride-1 SAME).

    Returns:
      Endpoint name -> Geometry; e.g. at 160 every block35 endpoint is Geometry(17, 8, 13.5, ...) and at 492
      conv_7b_ac is Geometry(14, 32, 37.5, ...). Raises ValueError when the input is too small for the network.
    """
    out = {}
    per_axis = [Geometry(input_size, 1, 0.5, 1)] * 2
    for unit in network_units(repeats):
        per_axis = [_unit_geometry(g, unit, axis) for axis, g in enumerate(per_axis)]
        if per_axis[0] != per_axis[1]:
            raise AssertionError(f"{unit.name}: y and x geometry differ {per_axis}")
        if unit.endpoint:
            out[unit.endpoint] = per_axis[0]
    return out


def endpoint_geometry(name: str, input_size: int, repeats: Sequence[int] = FULL_REPEATS) -> Geometry:
    """Geometry of one endpoint's map (see `endpoint_geometries`); KeyError names the endpoints that exist."""
    geometries = endpoint_geometries(input_size, repeats)
    if name not in geometries:
        raise KeyError(f"no endpoint {name!r} with repeats {tuple(repeats)}; endpoints: {list(geometries)}")
    return geometries[name]


def _fits(input_size: int) -> bool:
    try:
        endpoint_geometries(input_size, (1, 1, 1))
    except ValueError:
        return False
    return True


# The smallest input side the network accepts (75, as Keras says): every VALID window must fit.
MIN_INPUT_SIZE = next(n for n in range(1, 1000) if _fits(n))


def stage_sizes(input_size: int) -> dict[str, int]:
    """Spatial side of each stage's maps for a square input (VALID stem and reductions).

    Args:
      input_size: side of the square input image.

    Returns:
      {'block35': s35, 'block17': s17, 'block8': s8}; e.g. 35/17/8 at 299 and 59/29/14 at 492.
    """
    g = endpoint_geometries(input_size, (1, 1, 1))
    return {"block35": g["mixed_5b"].side, "block17": g["mixed_6a"].side, "block8": g["mixed_7a"].side}


def endpoint_names(repeats: Sequence[int] = FULL_REPEATS) -> list[str]:
    """Names of the endpoints the network returns for the given block repeats, in network order."""
    return [u.endpoint for u in network_units(repeats) if u.endpoint]


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

    def _path(self, unit: Unit, layers: tuple[Layer, ...], x, train: bool):
        for layer in layers:
            window, strides = layer.kernel, (layer.stride, layer.stride)
            if layer.pool == "max":
                x = nn.max_pool(x, window, strides=strides, padding=layer.padding)
            elif layer.pool == "avg":
                x = nn.avg_pool(x, window, strides=strides, padding=layer.padding, count_include_pad=False)
            else:
                x = ConvBN(
                    self._f(layer.features), layer.kernel, layer.stride, layer.padding, True, self.dtype,
                    name=layer_name(unit, layer),
                )(x, train)
        return x

    def _unit(self, unit: Unit, x, train: bool):
        ys = [self._path(unit, branch, x, train) for branch in unit.branches]
        y = ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=-1)
        if not unit.residual:
            return y
        up = nn.Conv(x.shape[-1], (1, 1), use_bias=True, dtype=self.dtype, name=f"{unit.name}_conv")(y)
        x = x + up * unit.residual
        return nn.relu(x) if unit.activation else x

    @nn.compact
    def __call__(self, x, train: bool = False) -> dict[str, jnp.ndarray]:
        """Runs the network.

        Args:
          x: (B, H, W, 3) float images in [-1, 1]; H, W >= 75.
          train: BatchNorm uses batch statistics (and updates `batch_stats`) when True.

        Returns:
          Endpoint name -> activation (see `endpoint_names`), plus 'pool': (B, 1536 * width) global average.
        """
        out = {}
        x = x.astype(self.dtype)
        for unit in network_units(self.repeats):
            x = self._unit(unit, x, train)
            if unit.endpoint:
                out[unit.endpoint] = x
        out["pool"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return out
