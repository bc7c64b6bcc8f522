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

Probabilities are averaged over the config's test-time variants (`data.eval_tta`), as evaluation and predict do;
boxes and maps come from the image as it is. Images are prepared as for training (`predict.prepare`); the artefact
does not decode or crop photographs. `<output>.json`, written beside it, says how: the checkpoint step, the image
size, Graham and field-of-view settings, the variants, and the grade thresholds with where they were fitted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import export as jax_export

from zoomin_jax import eval_step, evaluate, restore
from zoomin_jax.data import photo
from zoomin_jax.models.zoom_in import ZoomInNet


def inference_function(model: ZoomInNet, variables: Any, fov: bool, tta: tuple[str, ...] = ("identity",)):
    """images (and fov_rows when `fov`) -> the dict of outputs described in the module docstring; probabilities
    averaged over the test-time variants `tta` as the evaluation does (`eval_step.forward_with_tta`)."""
    eval_step.check_tta(tta)

    def infer(images, fov_rows=None):
        probs, out = eval_step.forward_with_tta(model, variables, images, tta, fov_rows)
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
    model = model.clone(pair_eyes=False)  # photographs one by one: no partner row to pair with
    fn = jax.jit(inference_function(model, variables, config.model.regions.fov, tuple(config.data.eval_tta)))
    return jax_export.export(fn, platforms=platforms)(*args)


def metadata(config: ml_collections.ConfigDict, workdir: str, step: int) -> dict:
    """What a user of the artefact needs to prepare its input and read its output (written beside it as JSON)."""
    thresholds = evaluate.saved_thresholds(workdir, step).get("zoom_in")
    return {
        "format": 1, "workdir": str(workdir), "step": int(step),
        "input": {"image_size": int(config.model.image_size), "dtype": "uint8", "layout": "(B, S, S, 3) RGB",
                  "preparation": "zoomin_jax.data.photo.prepare: decode, eye-disc crop, resize, field of view "
                                 "before Graham, Graham when 'graham'; then the JPEG round trip of the builders",
                  "graham": bool(config.data.graham), "field_of_view_input": bool(config.model.regions.fov),
                  "min_side": photo.MIN_SIDE},
        "test_time_variants": list(config.data.eval_tta),
        "regions": {"num_regions": int(config.model.regions.num_regions),
                    "patch_size": int(config.model.regions.patch_size), "levels": list(config.model.regions.levels),
                    "map": config.model.regions.map},
        "thresholds": None if thresholds is None else {
            "values": [float(t) for t in thresholds["values"]], "fitted_on": thresholds["split"],
            "step": thresholds["step"], "applies_to": "the expected grade sum(k * p_k) of 'probabilities'"},
        "outputs": ["grade", "probabilities", "probabilities_mnet", "probabilities_mnet_anet", "boxes", "box_scores",
                    "attention", "gated"],
    }


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str, output: str, step: int | None = None) -> Path:
    """Restores the checkpoint, exports its inference function for this machine's platform and CPU, writes it."""
    model, _, variables, step = restore.restore_model(config, workdir, step)
    platforms = tuple(dict.fromkeys([jax.default_backend(), "cpu"]))
    exported = export_model(model, variables, config, platforms=platforms)
    path = Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = exported.serialize()
    path.write_bytes(blob)
    meta = Path(f"{path}.json")
    meta.write_text(json.dumps(metadata(config, workdir, step), indent=1))
    s = config.model.image_size
    print(f"Exported step {step} of {workdir} to {path} ({len(blob) / 2**20:.1f} MiB; platforms "
          f"{', '.join(platforms)}; input uint8 (B, {s}, {s}, 3), any B; test-time variants "
          f"{', '.join(config.data.eval_tta)}) and its metadata to {meta.name}", flush=True)
    return path
