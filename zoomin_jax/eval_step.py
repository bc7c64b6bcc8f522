"""The evaluation's jitted step: the model over a sharded batch, its heads' probabilities averaged over the
test-time variants (the one definition of them, used by evaluation, predict and the exported artefact), the boxes
and, on request, the maps and the patches' features.

Heads (the paper's ablation): "M-Net" = softmax of M-Net's logits; "M-Net + A-Net" = the mean of M-Net's and A-Net's
probabilities; "Zoom-in-Net" = softmax of the fused logits; "Both eyes" = softmax of the pair head's logits (with
`model.pair_eyes`). Test-time variants (`config.data.eval_tta`: flips and right-angle rotations) turn the image, and
the field of view with it; boxes always come from the untransformed image.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from zoomin_jax import regions, sharding
from zoomin_jax.models.zoom_in import ZoomInNet

TTA = {
    "identity": lambda x: x,
    "flip_lr": lambda x: x[:, :, ::-1],
    "flip_ud": lambda x: x[:, ::-1],
    "rot90": lambda x: jnp.rot90(x, 1, axes=(1, 2)),
    "rot180": lambda x: jnp.rot90(x, 2, axes=(1, 2)),
    "rot270": lambda x: jnp.rot90(x, 3, axes=(1, 2)),
}


def head_probabilities(out: dict) -> dict[str, jnp.ndarray]:
    """Class probabilities of each head from the model's outputs."""
    p_m = jax.nn.softmax(out["mnet_logits"])
    probs = {"mnet": p_m, "mnet_anet": (p_m + jax.nn.softmax(out["anet_logits"])) / 2,
             "zoom_in": jax.nn.softmax(out["logits"])}
    if "pair_logits" in out:
        probs["pair"] = jax.nn.softmax(out["pair_logits"])
    return probs


def check_tta(tta: tuple[str, ...]) -> None:
    unknown = [t for t in tta if t not in TTA]
    if unknown or not tta:
        raise ValueError(f"config.data.eval_tta has unknown variants {unknown or '(none given)'}; choose from "
                         f"{sorted(TTA)}")


def forward_with_tta(model: ZoomInNet, variables: Any, images: jnp.ndarray, tta: tuple[str, ...],
                     fov_rows: jnp.ndarray | None = None) -> tuple[dict, dict]:
    """The one definition of test-time variants (evaluation, predict and the exported artefact use it): each head's
    probabilities averaged over `tta` (each variant turning the image, and the field of view with it), and the
    untransformed pass's outputs (boxes, maps), which always come from the image as it is.

    Returns:
      ({head: (B, K) probabilities}, the model's outputs on the untransformed images).
    """
    fov = None if fov_rows is None else regions.fov_mask(fov_rows, images.shape[1])
    base = model.apply(variables, images, train=False, fov=fov)
    probs = head_probabilities(base) if "identity" in tta else None
    for name in tta:
        if name == "identity":
            continue
        turned = None if fov is None else TTA[name](fov)
        p = head_probabilities(model.apply(variables, TTA[name](images), train=False, fov=turned))
        probs = p if probs is None else jax.tree_util.tree_map(jnp.add, probs, p)
    return jax.tree_util.tree_map(lambda p: p / len(tta), probs), base


def make_eval_step(model: ZoomInNet, mesh: Mesh, tta: tuple[str, ...] = ("identity",), fov: bool = False,
                   maps: bool = False, features: bool = False):
    """jit(variables, images, index[, fov_rows]) -> {'probs': {head: (B, K)}, 'boxes', 'box_scores', 'index'}.

    Images and index are sharded on 'data'; the index (each row's position in the split, -1 on padding) travels
    with the outputs, so a row's predictions are joined to its label by the index, never by position. With `fov`
    (`config.model.regions.fov`) the step takes `fov_rows` too (int (B, S, 2), the batches' field of view), and
    each test-time variant turns it with the image. With `maps` the outputs also hold the untransformed pass's
    'attention' and 'gated' maps (B, h, w, K), for pictures; with `features` its 'patch_features' (B, N, D), C-Net's
    feature of each zoomed patch, for lesion mining.
    """
    check_tta(tta)

    def step(variables, images, index, fov_rows=None):
        probs, base = forward_with_tta(model, variables, images, tta, fov_rows)
        out = {"probs": probs, "boxes": base["boxes"], "box_scores": base["box_scores"], "index": index}
        if maps:
            out.update(attention=base["attention"], gated=base["gated"])
        if features:
            out["patch_features"] = base["patch_features"]
        return out

    batch = sharding.batch_sharding(mesh)
    data = (batch, batch, batch) if fov else (batch, batch)
    return jax.jit(step, in_shardings=(sharding.replicated(mesh), *data), out_shardings=batch)


