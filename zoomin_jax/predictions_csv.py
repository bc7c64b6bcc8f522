"""The predictions CSV of an evaluation: one row per photograph with every head's grade and probabilities, the
thresholded grades with where their thresholds came from, and the boxes."""

from __future__ import annotations

import csv

import numpy as np

from zoomin_jax import metrics, paths
from zoomin_jax.heads import HEADS


def prob_columns(head: str, k: int = 5) -> list[str]:
    """The predictions CSV's columns of one head's probabilities: p0..p4 for Zoom-in-Net (as before every head was
    written), `<head>_p0`.. for the others."""
    return [f"p{c}" if head == "zoom_in" else f"{head}_p{c}" for c in range(k)]


def thresholds_note(split: str, step: int, reported_on: str) -> str:
    """Where thresholds came from, for CSVs, JSON and reports: 'fitted on validation at step 2600', with
    ' (in-sample)' when they are applied to the split they were fitted on (optimistic)."""
    return f"fitted on {split} at step {step}" + (" (in-sample)" if split == reported_on else "")


def write_predictions(path: str, preds: dict, thresholds: dict[str, np.ndarray] | None = None,
                      note: str = "") -> None:
    """One CSV row per image: id, label, the patient (datasets with patients), each head's grade, the thresholded
    grades with where their thresholds came from (`note`, `thresholds_note`), every head's probabilities (so every
    figure of the ablation can be recomputed from the file), the boxes."""
    paths.ensure_dir(paths.join(path).parent)
    k = preds["probs"]["zoom_in"].shape[1]
    n_boxes = preds["boxes"].shape[1]
    patients = preds.get("patient")
    heads = [h for h in HEADS if h in preds["probs"]]
    columns = ["zoom_in"] + [h for h in heads if h != "zoom_in"]  # Zoom-in-Net's p0..p4 first, as before
    with paths.join(path).open("w") as f:
        w = csv.writer(f)
        header = ["id", "label"] + (["patient"] if patients is not None else []) + [f"grade_{h}" for h in heads]
        header += [f"grade_{h}_thresholded" for h in (thresholds or {})] + (["thresholds"] if thresholds else [])
        header += [c for h in columns for c in prob_columns(h, k)]
        header += [f"box{j}_{c}" for j in range(n_boxes) for c in ("y0", "x0", "y1", "x1")]
        w.writerow(header)
        grades = {h: preds["probs"][h].argmax(1) for h in heads}
        thr = {h: metrics.apply_thresholds(metrics.expected_grade(preds["probs"][h]), t)
               for h, t in (thresholds or {}).items()}
        for i, image_id in enumerate(preds["id"]):
            w.writerow([image_id, int(preds["label"][i])] + ([int(patients[i])] if patients is not None else [])
                       + [int(grades[h][i]) for h in heads] + [int(thr[h][i]) for h in thr] + ([note] if thr else [])
                       # 9 significant digits: a float32 exactly, so figures recomputed from the file are the run's
                       + [f"{p:.9g}" for h in columns for p in preds["probs"][h][i]]
                       + preds["boxes"][i].reshape(-1).tolist())
