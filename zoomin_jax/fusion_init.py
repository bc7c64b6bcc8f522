"""`config.model.fusion_init`: where the fused head starts when C-Net's first stage begins (ours; the paper is silent).

"fresh" (the default): the fused head keeps its random initialisation, so Zoom-in-Net's grade starts from nothing
and has C-Net's stage to learn what M-Net's head already knows (from a pretrained M-Net whose head saw thousands
of photographs, on 495 EyePACS ones; what it changed there, over 3 seeds: README, "The EyePACS sample").
"mnet_head": at the start of the first stage that trains C-Net, the fused head's rows for M-Net's feature become
M-Net's head (kernel and bias) and its rows for C-Net's pooled feature zero, so Zoom-in-Net grades exactly as M-Net
does (in evaluation) and C-Net's evidence is added as it is learnt (the C-Net rows get a gradient at once: their
input is not zero).
"""

from typing import Any

import jax.numpy as jnp

FUSION_INITS = ("fresh", "mnet_head")


def from_mnet_head(params: dict) -> dict:
    """`params` with fusion_head = [mnet_head's kernel; zeros] and mnet_head's bias (a pure function; jit it).

    The fused head reads concat(f_M, f_C) (models/zoom_in.py), f_M being what M-Net's head reads.
    """
    m, f = params["mnet_head"], params["fusion_head"]
    d = m["kernel"].shape[0]
    kernel = jnp.zeros_like(f["kernel"]).at[:d].set(m["kernel"].astype(f["kernel"].dtype))
    return {**params, "fusion_head": {**f, "kernel": kernel, "bias": m["bias"].astype(f["bias"].dtype)}}


def applies(config: Any, plan: list, stage: Any, start: int) -> bool:
    """Whether `stage` (of `plan`, train_step.stages) starts here with fusion_init "mnet_head": it is the first stage
    that trains C-Net (which holds the fused head) and `start` is its first step. A run resumed inside that stage (or
    later) restored the head it had; one resumed at the stage's first step sets it again, the same (M-Net frozen)."""
    if config.model.get("fusion_init", "fresh") != "mnet_head" or start != stage.begin:
        return False
    first = next((s for s in plan if "cnet" in s.config.trainable and s.end > s.begin), None)
    return first is not None and first.name == stage.name
