"""`--mode=export`: the trained inference function as one serialised `jax.export` artefact.

    python -m zoomin_jax.main --config=C --workdir=W --mode=export --output=model.jaxexport

The artefact holds the whole forward pass of a checkpoint (weights embedded as constants) from a uint8 high-res
batch (B, S, S, 3) with a symbolic batch size B to: 'grade' (B,) int32 (Zoom-in-Net's argmax), 'probabilities'
(B, 5) and 'probabilities_mnet', 'probabilities_mnet_anet', 'boxes' (B, N, 4) int32 in the S x S image's pixels,
'box_scores' (B, N), and the maps 'attention' and 'gated' (B, h, w, 5). With `model.regions.fov` it takes the
field of view too: int16 (B, S, 2) row extents (`zoomin_jax.data.fov`). Loading and running it needs jax alone:

    from jax import export
    exported = export.deserialize(bytearray(open("model.jaxexport", "rb").read()))
    out = exported.call(images)          # numpy uint8 (B, S, S, 3), any B

Images are prepared as for training (`predict.prepare`); the artefact does not decode or crop photographs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import export as jax_export

from zoomin_jax import evaluate, regions
from zoomin_jax.models.zoom_in import ZoomInNet


def inference_function(model: ZoomInNet, variables: Any, fov: bool):
    """images (and fov_rows when `fov`) -> the dict of outputs described in the module docstring."""

    def infer(images, fov_rows=None):
        mask = None if fov_rows is None else regions.fov_mask(fov_rows, images.shape[1])
        out = model.apply(variables, images, train=False, fov=mask)
        probs = evaluate.head_probabilities(out)
        return {
            "grade": jnp.argmax(probs["zoom_in"], axis=-1).astype(jnp.int32),
            "probabilities": probs["zoom_in"],
            "probabilities_mnet": probs["mnet"],
            "probabilities_mnet_anet": probs["mnet_anet"],
            "boxes": out["boxes"],
            "box_scores": out["box_scores"],
            "attention": out["attention"],
            "gated": out["gated"],
        }

    return infer if fov else (lambda images: infer(images))


def export_model(model: ZoomInNet, variables: Any, config: ml_collections.ConfigDict,
                 platforms: tuple[str, ...] | None = None) -> jax_export.Exported:
    """The `jax.export.Exported` of the inference function, batch size symbolic."""
    s = config.model.image_size
    (b,) = jax_export.symbolic_shape("b")
    args = [jax.ShapeDtypeStruct((b, s, s, 3), jnp.uint8)]
    if config.model.regions.fov:
        args.append(jax.ShapeDtypeStruct((b, s, 2), jnp.int16))
    variables = jax.device_get(variables)  # constants of the artefact, not sharded arrays of this process
    fn = jax.jit(inference_function(model, variables, config.model.regions.fov))
    return jax_export.export(fn, platforms=platforms)(*args)


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str, output: str, step: int | None = None) -> Path:
    """Restores the checkpoint, exports its inference function for this machine's platform and CPU, writes it."""
    model, _, variables, step = evaluate.restore_model(config, workdir, step)
    platforms = tuple(dict.fromkeys([jax.default_backend(), "cpu"]))
    exported = export_model(model, variables, config, platforms=platforms)
    path = Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = exported.serialize()
    path.write_bytes(blob)
    s = config.model.image_size
    print(f"Exported step {step} of {workdir} to {path} ({len(blob) / 2**20:.1f} MiB; platforms "
          f"{', '.join(platforms)}; input uint8 (B, {s}, {s}, 3), any B)", flush=True)
    return path
