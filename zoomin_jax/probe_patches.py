"""What C-Net's patch head says about the patches it is given: does it see the lesions inside them?

    python -m zoomin_jax.probe_patches runs/default        # a run of a dataset with lesion boxes (synthetic, IDRiD)

Runs the checkpoint over the run's evaluation split (no test-time variants) and, for every selected patch, asks
whether it holds a lesion centre (`metrics.lesion_recall_at_k`'s rule) and what the patch head gives it,
P(patch grade >= 1). Prints, per image grade, the patches with and without a lesion centre (count and mean
P >= 1), then for grade-1 images (microaneurysms only, on the synthetic data) the AUC of P >= 1 between patches
with and without a microaneurysm, between those with one and the patches of grade-0 images, and how many grade-1
images have one in a box. It separates "the boxes miss the lesions" from "C-Net does not see what the boxes
hold" (README, "Grade 1").
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def patch_rows(labels: np.ndarray, boxes: np.ndarray, lesion_boxes: np.ndarray, lesion_valid: np.ndarray,
               patch_lesion_prob: np.ndarray) -> dict[str, np.ndarray]:
    """One row per selected patch: 'grade' (its image's), 'lesions' (lesion centres inside it), 'p' (its
    P(grade >= 1)), 'image' (row of its image). boxes (B, N, 4), lesion_boxes (B, L, 4), lesion_valid (B, L),
    patch_lesion_prob (B, N)."""
    from zoomin_jax.metrics import _centres

    cy, cx = _centres(lesion_boxes)  # (B, L)
    b = np.asarray(boxes, np.int64)[:, :, None, :]  # (B, N, 1, 4)
    inside = (np.asarray(lesion_valid, bool)[:, None, :] & (cy[:, None, :] >= b[..., 0]) & (cy[:, None, :] < b[..., 2])
              & (cx[:, None, :] >= b[..., 1]) & (cx[:, None, :] < b[..., 3]))  # (B, N, L)
    n = boxes.shape[1]
    return {"grade": np.repeat(np.asarray(labels), n), "lesions": inside.sum(-1).reshape(-1),
            "p": np.asarray(patch_lesion_prob, np.float64).reshape(-1), "image": np.repeat(np.arange(len(labels)), n)}


def summary(rows: dict[str, np.ndarray]) -> list[str]:
    """The printed lines (module docstring)."""
    from zoomin_jax.metrics import roc_auc

    g, has, p = rows["grade"], rows["lesions"] > 0, rows["p"]
    out = []
    for grade in range(int(g.max()) + 1):
        for with_lesion in (False, True):
            s = (g == grade) & (has == with_lesion)
            if s.any():
                out.append(f"grade {grade} patches {'with' if with_lesion else 'without'} a lesion centre: "
                           f"{int(s.sum())}, mean P(patch grade >= 1) {p[s].mean():.3f}")
    one = g == 1
    if one.any() and has[one].any() and (~has[one]).any():
        out.append(f"grade-1 images: AUC of P >= 1, patches with a lesion vs without: "
                   f"{roc_auc(has[one].astype(int), p[one]):.3f}")
        s = (one & has) | (g == 0)
        if (g == 0).any():
            out.append(f"patches with a lesion in grade-1 images vs patches of grade-0 images: "
                       f"{roc_auc(one[s].astype(int), p[s]):.3f}")
        images = np.unique(rows["image"][one])
        hit = np.unique(rows["image"][one & has])
        out.append(f"grade-1 images with a lesion centre in a box: {len(hit)} of {len(images)}")
    return out


def probe(workdir: str) -> list[str]:
    import jax
    import ml_collections

    from zoomin_jax.data import input_pipeline
    from zoomin_jax.restore import restore_model

    config = ml_collections.ConfigDict(json.load(open(os.path.join(workdir, "config.json"))))
    model, mesh, variables, step = restore_model(config, workdir)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    parts = {k: [] for k in ("label", "boxes", "lesion_boxes", "lesion_valid", "p")}
    for batch in input_pipeline.eval_iterator(config, config.data.eval_split):
        real = np.asarray(batch["index"]) >= 0
        out = jax.device_get(apply(variables, batch["image"]))
        parts["p"].append((1.0 - jax.nn.softmax(out["patch_logits"], axis=-1)[..., 0])[real])
        parts["boxes"].append(out["boxes"][real])
        for key in ("label", "lesion_boxes", "lesion_valid"):
            parts[key].append(np.asarray(batch[key])[real])
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    rows = patch_rows(cat["label"], cat["boxes"], cat["lesion_boxes"], cat["lesion_valid"], cat["p"])
    return [f"{workdir}: step {step}, {len(cat['label'])} images of {config.data.eval_split!r}, "
            f"{len(rows['p'])} patches"] + summary(rows)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for workdir in argv[1:]:
        print("\n".join(probe(workdir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
