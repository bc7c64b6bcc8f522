"""Zoom-in-Net: M-Net on the low-res view, A-Net's gated attention, top-N zoom-in crops, C-Net and fusion.

One module, one forward pass, one XLA program: the low-res view is derived on device, the regions are chosen with
`zoomin_jax.regions` (shape-static, `stop_gradient` on the indices) and C-Net runs on the high-res crops.

Choices the paper leaves open, each a config field (see configs/default.py): A-Net reads one named M-Net endpoint;
its attention branch is conv3x3(hidden) + ReLU + conv1x1(K) followed by a spatial softmax per grade; regions are
chosen on the gated map G (the paper's) or the attention A (`regions.map`), reduced over lesion levels 1..4 (max) or
per level, among the cells inside the eye disc (`regions.disc_radius`) and, optionally, away from the optic disc
found on the low-res image (`regions.optic_disc_radius`, `regions.locate_optic_disc`); each cell's box is centred
where the cell looks, its receptive-field centre derived from M-Net's layers (`cell_centres`); C-Net patch features
are pooled over the patches (max or mean) and concatenated with M-Net's pooled feature before the final linear
layer; a per-patch linear head grades each patch on its own (the "patch" loss).

Every field of `ZoomInNet` is set from the config (`ZoomInNet.from_config`); none has a default of its own, so
configs/default.py is the only place a default lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from zoomin_jax import regions
from zoomin_jax.models.inception_resnet import InceptionResNetV2, endpoint_geometry

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
POOLINGS = ("max", "mean")


def cell_centres(endpoint: str, low_res_size: int, image_size: int, repeats: Sequence[int]) -> tuple:
    """(row, column) high-res centres of the cells of M-Net's `endpoint` map: where each cell's receptive field is
    centred in the low-res view, scaled to the high-res image. Static; used for the boxes and the disc rule alike
    (here and in validate.py)."""
    g = endpoint_geometry(endpoint, low_res_size, repeats)
    c: tuple[Fraction, ...] = regions.cell_centres(g.side, g.stride, g.offset, low_res_size, image_size)
    return c, c


class ANet(nn.Module):
    """Attention network on an M-Net feature map.

    S = conv1x1(F) gives one score map per grade; A = spatial softmax (per grade) of a small conv stack on F;
    G = S * A; the logits are the spatial sums of G, i.e. each grade's score averaged under its own attention.
    """

    num_classes: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, f: jnp.ndarray) -> dict[str, jnp.ndarray]:
        s = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="score")(f).astype(jnp.float32)
        a = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME", dtype=self.dtype, name="attention_0")(f))
        a = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="attention_1")(a).astype(jnp.float32)
        b, h, w, k = a.shape
        a = jax.nn.softmax(a.reshape(b, h * w, k), axis=1).reshape(b, h, w, k)
        g = s * a
        return {"scores": s, "attention": a, "gated": g, "logits": g.sum(axis=(1, 2))}


class ZoomInNet(nn.Module):
    """The whole network. Build it with `ZoomInNet.from_config(config.model)`.

    Attributes mirror `config.model`; see configs/default.py for their meaning and values (the only defaults).
    """

    image_size: int
    low_res_size: int
    num_classes: int
    mnet_repeats: Sequence[int]
    mnet_width: float
    cnet_repeats: Sequence[int]
    cnet_width: float
    cnet_input_size: int
    anet_endpoint: str
    anet_hidden: int
    num_regions: int
    patch_size: int
    iou_threshold: float
    region_disc_radius: float | None
    region_optic_disc_radius: float
    region_optic_disc_window: float
    region_map: str
    region_levels: Sequence[int]
    region_reduce: str
    pooling: str
    dropout: float
    dtype: Any
    pair_eyes: bool

    @classmethod
    def from_config(cls, m: ml_collections.ConfigDict) -> ZoomInNet:
        """The module described by `config.model`."""
        return cls(
            image_size=m.image_size, low_res_size=m.low_res_size, num_classes=m.num_classes,
            mnet_repeats=tuple(m.mnet.repeats), mnet_width=m.mnet.width,
            cnet_repeats=tuple(m.cnet.repeats), cnet_width=m.cnet.width,
            cnet_input_size=int(m.cnet.get("input_size", 0)),
            anet_endpoint=m.anet.endpoint, anet_hidden=m.anet.hidden,
            num_regions=m.regions.num_regions, patch_size=m.regions.patch_size,
            iou_threshold=m.regions.iou_threshold, region_disc_radius=m.regions.disc_radius,
            region_optic_disc_radius=m.regions.optic_disc_radius,
            region_optic_disc_window=m.regions.optic_disc_window,
            region_map=m.regions.map,
            region_levels=tuple(m.regions.levels),
            region_reduce=m.regions.reduce, pooling=m.pooling, dropout=m.dropout, dtype=DTYPES[m.dtype],
            pair_eyes=bool(m.pair_eyes),
        )

    def _select(self, maps: jnp.ndarray, fov: jnp.ndarray | None = None, avoid: jnp.ndarray | None = None):
        lesion = maps[..., jnp.asarray(self.region_levels)]  # (B, h, w, L): A-Net's gated maps or attention
        centres = cell_centres(self.anet_endpoint, self.low_res_size, self.image_size, self.mnet_repeats)
        args = (centres, self.image_size, self.patch_size, self.num_regions, self.iou_threshold,
                self.region_disc_radius, fov, avoid, self.region_optic_disc_radius)
        if self.region_reduce == "max":
            return regions.select_boxes(lesion.max(axis=-1), *args)
        # "per_level": N boxes from each level's map, concatenated level by level -> (B, L * N, 4).
        per_level = [regions.select_boxes(lesion[..., i], *args) for i in range(lesion.shape[-1])]
        return tuple(jnp.concatenate(parts, axis=1) for parts in zip(*per_level, strict=True))

    def _pool(self, feats: jnp.ndarray) -> jnp.ndarray:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} must be one of {POOLINGS}")
        return feats.max(axis=1) if self.pooling == "max" else feats.mean(axis=1)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False, frozen: Sequence[str] = (),
                 fov: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """Grades a batch of high-res fundus images.

        Args:
          images: (B, S, S, 3), S = image_size; uint8 in [0, 255], or float already scaled to [-1, 1].
          train: BatchNorm batch statistics and dropout (needs a 'dropout' rng when dropout > 0).
          frozen: sub-networks ('mnet', 'anet', 'cnet') held fixed in this training stage: their BatchNorms use
            (and keep) the running averages, and their outputs carry `stop_gradient`, so no backward pass is
            spent on them. The optimiser masks their parameters too (train.py).
          fov: optional bool (B, S, S) field of view of each image (`regions.fov_mask`): boxes only on cells whose
            centre shows the retina (`config.model.regions.fov`; the callers pass it when that is set).

        Returns:
          logits (B, K) of the fused head; mnet_logits, anet_logits (B, K); patch_logits (B, N', K) of each patch
          on its own; patch_features (B, N', D) C-Net's pooled feature of each patch (lesion mining, `mine.py`);
          gated, attention, scores (B, h, w, K);
          boxes (B, N', 4) int32 high-res (y0, x0, y1, x1) end exclusive; box_scores (B, N') — N' = N, or
          N * len(region_levels) with region_reduce 'per_level'; with `pair_eyes` also pair_logits (B, K), each row
          graded on its fused feature and its partner row's (rows 2k and 2k + 1: one patient's two eyes).
        """
        x = images.astype(jnp.float32)
        if images.dtype == jnp.uint8:
            x = x / 127.5 - 1.0
        b = x.shape[0]
        low = jax.image.resize(x, (b, self.low_res_size, self.low_res_size, x.shape[-1]), "linear", antialias=True)
        drop = nn.Dropout(self.dropout, deterministic=not train)

        def fix(name, tree):
            return jax.tree_util.tree_map(jax.lax.stop_gradient, tree) if name in frozen else tree

        m = InceptionResNetV2(self.mnet_repeats, self.mnet_width, self.dtype, name="mnet")(
            low, train and "mnet" not in frozen
        )
        f_m, feature_map = fix("mnet", (m["pool"], m[self.anet_endpoint]))
        mnet_logits = fix("mnet", nn.Dense(self.num_classes, name="mnet_head")(drop(f_m)))

        a = fix("anet", ANet(self.num_classes, self.anet_hidden, self.dtype, name="anet")(feature_map))
        optic_disc = None
        if self.region_optic_disc_radius:  # boxes keep away from the optic disc found on the low-res image
            window = 2 * int(self.region_optic_disc_window * self.low_res_size / 2) + 1  # odd: centred
            optic_disc = regions.locate_optic_disc(low, window) * (self.image_size / self.low_res_size)
        boxes, box_scores = self._select(a[self.region_map], fov, optic_disc)

        patches = regions.crop(x, boxes, self.patch_size)  # (B, N', P, P, 3)
        n = patches.shape[1]
        patches = patches.reshape(b * n, *patches.shape[2:])
        if self.cnet_input_size and self.cnet_input_size != self.patch_size:  # C-Net sees the patch enlarged
            patches = jax.image.resize(patches, (b * n, self.cnet_input_size, self.cnet_input_size,
                                                 patches.shape[-1]), "linear", antialias=True)
        c = InceptionResNetV2(self.cnet_repeats, self.cnet_width, self.dtype, name="cnet")(
            patches, train and "cnet" not in frozen
        )
        per_patch = c["pool"].reshape(b, n, -1)
        # Each patch graded on its own (trained with the image's grade when config's stage loss "patch" > 0): every
        # patch gets a gradient, not only the one that wins the pooling, so C-Net learns small lesions much sooner.
        patch_logits = fix("cnet", nn.Dense(self.num_classes, name="patch_head")(drop(per_patch)))
        f_c = self._pool(per_patch)
        fused = jnp.concatenate([f_m, f_c], axis=-1)
        logits = fix("cnet", nn.Dense(self.num_classes, name="fusion_head")(drop(fused)))
        extra = {}
        if self.pair_eyes:  # rows 2k, 2k + 1 are one patient's eyes (data/pairs.py): each row reads its partner's
            own = fix("cnet", fused)
            # Static indices; an odd last row (only initialisation's batch of one: validate.py asks for whole
            # patients) is its own partner.
            partner = own[jnp.minimum(jnp.arange(b) ^ 1, b - 1)]
            both = jnp.concatenate([own, partner], axis=-1)
            extra["pair_logits"] = fix("pair", nn.Dense(self.num_classes, name="pair_head")(drop(both)))
        return extra | {
            "logits": logits.astype(jnp.float32),
            "mnet_logits": mnet_logits.astype(jnp.float32),
            "patch_logits": patch_logits.astype(jnp.float32),
            "patch_features": per_patch.astype(jnp.float32),
            "anet_logits": a["logits"],
            "gated": a["gated"],
            "attention": a["attention"],
            "scores": a["scores"],
            "boxes": boxes,
            "box_scores": box_scores,
        }


# Top-level parameter collections of each sub-network, for counting, freezing and reporting.
SUBNETWORKS = {"mnet": ("mnet", "mnet_head"), "anet": ("anet",), "cnet": ("cnet", "patch_head", "fusion_head"),
               "pair": ("pair_head",)}


def param_counts(params: dict) -> dict[str, int]:
    """Number of parameters per sub-network (M-Net incl. its head, A-Net, C-Net incl. the fusion head) and total."""
    counts = {
        name: sum(int(x.size) for k in keys if k in params for x in jax.tree_util.tree_leaves(params[k]))
        for name, keys in SUBNETWORKS.items()
    }
    counts["total"] = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    return counts
