"""Evaluation: sharded inference over a split, the heads' metrics, the run's results and thresholds.

The step itself is `eval_step.py`; the predictions CSV `predictions_csv.py`; a checkpoint's model `restore.py`.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from zoomin_jax import metrics, paths, progress, sharding
from zoomin_jax.data import input_pipeline, patient_split
from zoomin_jax.eval_step import make_eval_step
from zoomin_jax.heads import HEADS
from zoomin_jax.models.zoom_in import ZoomInNet
from zoomin_jax.predictions_csv import prob_columns, thresholds_note, write_predictions
from zoomin_jax.preemption import Preempted, Preemption, compile_promptly
from zoomin_jax.restore import restore_model
from zoomin_jax.validate import validate_config

RESULTS_FILE = "eval_results.json"
PROGRESS_EVERY_S = 30.0  # an evaluation pass prints how far it is at most this often (none on short splits)
ID_BYTES = 64  # longest image id carried between hosts


HOST_KEYS = ("label", "lesion_boxes", "lesion_kinds", "lesion_valid", "index", "fov_rows", "optic_disc",
             "optic_disc_valid")


def infer_split(model: ZoomInNet, variables: Any, config: ml_collections.ConfigDict, mesh: Mesh, split: str,
            eval_step=None, preemption: Preemption | None = None) -> dict:
    """Runs the eval step over a whole split (`eval_step` from `make_eval_step`, to reuse its compilation).

    Device outputs (gathered in device order) and host rows (labels, ids, lesions; gathered in process order) are
    joined by the example index each carries; padding rows (index -1, mask False) are dropped.

    Args:
      preemption: checked before every batch (on every process alike); after SIGTERM, raises `Preempted`.

    Returns:
      numpy arrays over the split's examples in split order: 'probs' {head: (n, K)}, 'boxes' (n, N, 4),
      'box_scores', 'label', 'lesion_boxes', 'lesion_kinds', 'lesion_valid', 'index', 'fov_rows', 'optic_disc',
      'optic_disc_valid', 'id' (list of str), and any further array the eval step returns (e.g. 'patch_features').
    """
    from zoomin_jax.data import datasets

    eval_step = eval_step or make_eval_step(model, mesh, tuple(config.data.eval_tta), config.model.regions.fov)
    device_rows: dict[str, list] = {}
    host_rows: dict[str, list] = {}
    source = datasets.open_split(config, split)
    steps = input_pipeline.num_eval_steps(len(source), int(config.data.eval_batch_size))
    start = last = time.perf_counter()
    for k, batch in enumerate(input_pipeline.eval_iterator(config, split, source=source)):
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S and jax.process_index() == 0:  # long splits only: say how far, how fast
            rate, eta = progress.rate_and_eta(k, steps, 0, start, now)
            print(f"[eval] {split}: batch {k}/{steps} | {rate * config.data.eval_batch_size:.1f} images/s ETA {eta}",
                  flush=True)
            last = now
        if preemption is not None and preemption.check():
            raise Preempted(f"SIGTERM during the evaluation on {split!r} (before batch {k + 1}); nothing new saved")
        keys = ("image", "index", "fov_rows") if config.model.regions.fov else ("image", "index")
        args = (variables, *sharding.to_global(tuple(batch[key] for key in keys), mesh))
        if k == 0 and preemption is not None:  # the first call compiles: SIGTERM honoured during it too
            compile_promptly(eval_step, args, preemption, "the evaluation step")
        out = multihost_utils.process_allgather(eval_step(*args), tiled=True)
        host = {key: batch[key] for key in HOST_KEYS}
        host["id"] = np.asarray(batch["id"], dtype=object)
        if jax.process_count() > 1:  # every host needs every row's labels to compute the metrics
            host = {key: _allgather_host(v) for key, v in host.items()}
        for key, v in {**{k: v for k, v in out.items() if k != "probs"},
                       **{f"probs/{h}": p for h, p in out["probs"].items()}}.items():
            device_rows.setdefault(key, []).append(np.asarray(v))
        for key, v in host.items():
            host_rows.setdefault(key, []).append(np.asarray(v))
    if not host_rows:
        raise ValueError(f"split {split!r} of {config.data.name} has no examples to evaluate")
    device, host = _real_rows_by_index(device_rows), _real_rows_by_index(host_rows)
    if not np.array_equal(device["index"], host["index"]):
        raise AssertionError(f"evaluation rows do not pair up: device indices {device['index'][:10]}..., host "
                             f"indices {host['index'][:10]}...")
    cat = {**host, **{k: v for k, v in device.items() if k != "index" and not k.startswith("probs/")}}
    cat["probs"] = {h: device[f"probs/{h}"] for h in HEADS if f"probs/{h}" in device}
    cat["id"] = [str(x) for x in cat["id"]]
    patients = patient_split.patients_of(source)
    if patients is not None:  # the bootstrap resamples patients, both eyes together
        cat["patient"] = patients[cat["index"]]
    return cat


def _real_rows_by_index(rows: dict[str, list]) -> dict[str, np.ndarray]:
    """Concatenates batches, drops padding (index < 0) and sorts by index; duplicate indices are an error."""
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    real = cat["index"] >= 0
    order = np.argsort(cat["index"][real], kind="stable")
    out = {k: v[real][order] for k, v in cat.items()}
    if len(out["index"]) and np.any(np.diff(out["index"]) == 0):
        raise AssertionError("an example index occurs twice in the evaluation rows")
    return out


def _allgather_host(x: np.ndarray) -> np.ndarray:
    """Concatenates a host-local array over all hosts; strings travel as fixed-width bytes."""
    if x.dtype == object:
        raw = np.asarray([s.encode()[:ID_BYTES].ljust(ID_BYTES, b"\0") for s in x.tolist()], dtype=f"S{ID_BYTES}")
        codes = np.frombuffer(raw.tobytes(), np.uint8).reshape(len(x), ID_BYTES)
        codes = np.asarray(multihost_utils.process_allgather(codes, tiled=True))
        return np.asarray([bytes(r).rstrip(b"\0").decode() for r in codes], dtype=object)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate_heads(model: ZoomInNet, variables: Any, config: ml_collections.ConfigDict, mesh: Mesh, workdir: str,
                   step: int, head: str = "all", tag: str = "eval", split: str | None = None,
                   thresholds: dict[str, list] | None = None, eval_step=None,
                   preemption: Preemption | None = None) -> dict[str, dict]:
    """Evaluates the asked head(s) on a split, writes the predictions CSV, prints a summary.

    Args:
      head: 'mnet' | 'mnet_anet' | 'zoom_in' | 'all'.
      split: defaults to config.data.eval_split.
      thresholds: `saved_thresholds` ({head: {"values", "split", "step"}}) fitted elsewhere (e.g. on validation at
        this step); heads without them get thresholds fitted on this split's expected grades, which is optimistic
        for this split and recorded as in-sample.
      preemption: checked between batches; after SIGTERM `Preempted` is raised and nothing is written.

    Returns:
      {display name: grading report (+ 'lesion_recall' with its chance levels 'chance@k', 'optic_disc' where the
      dataset has optic-disc boxes, 'split', 'step', 'thresholds_fitted_on', 'thresholds_step',
      'thresholds_in_sample')}.
    """
    split = split or config.data.eval_split
    preds = infer_split(model, variables, config, mesh, split, eval_step, preemption)
    heads = [h for h in HEADS if h in preds["probs"]] if head == "all" else [head]
    recall, patch = None, int(config.model.regions.patch_size)
    if preds["lesion_valid"].any():
        recall = metrics.lesion_recall_at_k(preds["boxes"], preds["lesion_boxes"], preds["lesion_kinds"],
                                            preds["lesion_valid"], ks=range(1, 9))
        recall.update(metrics.lesion_recall_chance(preds["lesion_boxes"], preds["lesion_kinds"], preds["lesion_valid"],
                                                   preds["fov_rows"], patch, ks=range(1, 9)))
    disc = metrics.optic_disc_first(preds["boxes"], preds["optic_disc"], preds["optic_disc_valid"], preds["fov_rows"],
                                    patch)
    reports, used, notes = {}, {}, set()
    for h in heads:
        probs, labels = preds["probs"][h], preds["label"]
        if thresholds and h in thresholds:
            t, source, at = np.asarray(thresholds[h]["values"]), thresholds[h]["split"], int(thresholds[h]["step"])
        else:
            t, source, at = metrics.fit_thresholds(metrics.expected_grade(probs), labels), split, int(step)
        used[h] = t
        notes.add(thresholds_note(source, at, split))
        report = metrics.grading_report(labels, probs, thresholds=t)
        report.update({"split": split, "step": int(step), "thresholds_fitted_on": source, "thresholds_step": at,
                       "thresholds_in_sample": source == split, "num_examples": len(labels)})
        referable = (labels >= 2).astype(np.int64)
        if 0 < referable.sum() < len(referable):  # the referral operating point predict's decision uses
            report["referral"] = {**metrics.operating_point(referable, probs[:, 2:].sum(1),
                                                            config.referral.sensitivity),
                                  "fitted_on": split, "step": int(step)}
        if recall is not None:
            report["lesion_recall"] = recall
        if disc["num_images"]:
            report["optic_disc"] = disc
        reports[HEADS[h]] = report
        line = f"[eval {tag}] {HEADS[h]} on {split} ({len(labels)} images): kappa {report['kappa']:.3f}"
        line += f", kappa(thr) {report['kappa_thresholded']:.3f}, accuracy {report['accuracy']:.3f}"
        line += "".join(f", AUC {name} {report[key]['auc']:.3f}" for name, key in
                        (("normal", "normal_vs_abnormal"), ("referable", "referable_vs_non_referable"))
                        if report.get(key, {}).get("auc") is not None)
        print(line, flush=True)
    for line in metrics.format_localisation(recall, disc, k=4):
        print(f"[eval {tag}] {line}", flush=True)
    if jax.process_index() == 0:
        write_predictions(str(paths.join(workdir, "predictions", f"{tag}_step{step}_{split}.csv")), preds, used,
                          "; ".join(sorted(notes)))
    logging.info("Evaluated %s on %s at step %d", heads, split, step)
    return reports


def load_results(workdir: str) -> dict:
    path = paths.join(workdir, RESULTS_FILE)
    return json.loads(path.read_text()) if path.exists() else {}


def saved_thresholds(workdir: str, step: int) -> dict[str, dict]:
    """{head: {"values": 4 thresholds, "split": where they were fitted, "step": of which checkpoint}} the run fitted
    at `step` (its stage-end evaluations; heads evaluated at another step are left out, with one line: thresholds of
    another checkpoint's expected grades would cut this one's in the wrong places)."""
    saved = load_results(workdir)
    out, other = {}, []
    for h, name in HEADS.items():
        r = saved.get(name, {})
        if "thresholds" not in r:
            continue
        if int(r.get("thresholds_step", r.get("step", -1))) == int(step):
            out[h] = {"values": r["thresholds"], "split": r.get("thresholds_fitted_on", r.get("split")),
                      "step": int(step)}
        else:
            other.append(f"{name} (step {r.get('step')})")
    if other:
        logging.warning("thresholds of %s not applied to step %d: fitted on another checkpoint", ", ".join(other),
                        step)
    return out


def saved_referral(workdir: str, step: int, sensitivity: float = 0.9, head: str = "zoom_in") -> dict | None:
    """The referral operating point (`metrics.operating_point` on P(grade >= 2), with "fitted_on" and "step") the
    run fitted for `head` at `step`; for a run older than the operating point, fitted now the same way from the
    predictions CSV of that evaluation (its labels and probabilities); None where neither exists (another step's
    would cut this checkpoint's probabilities elsewhere)."""
    report = load_results(workdir).get(HEADS[head], {})
    r = report.get("referral")
    if r is not None and int(r["step"]) == int(step):
        return r
    if int(report.get("step", -1)) != int(step):
        return None
    split = report["split"]
    folder = paths.join(workdir, "predictions")
    found = sorted(folder.glob(f"*_step{step}_{glob.escape(split)}.csv")) if folder.exists() else []
    if not found:
        return None
    with found[0].open() as f:
        rows = list(csv.DictReader(f))
    cols = prob_columns(head)
    if not rows or cols[0] not in rows[0]:
        return None
    labels = np.asarray([int(r["label"]) for r in rows])
    referable = np.asarray([sum(float(r[c]) for c in cols[2:]) for r in rows])
    if not 0 < (labels >= 2).sum() < len(labels):
        return None
    return {**metrics.operating_point((labels >= 2).astype(np.int64), referable, sensitivity),
            "fitted_on": split, "step": int(step)}


def save_results(workdir: str, results: dict) -> None:
    """Writes eval_results.json (process 0); locally via a rename, so a kill mid-write leaves the previous file."""
    if jax.process_index() == 0:
        path = paths.join(workdir, RESULTS_FILE)
        if paths.is_remote(str(workdir)):  # object stores replace whole objects anyway
            path.write_text(json.dumps(results, indent=1))
            return
        tmp = path.parent / (path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                        split: str | None = None) -> dict[str, dict]:
    """`--mode=eval`: restores a checkpoint's model (no optimiser, no training data) and evaluates all heads.

    Thresholds fitted on `config.data.eval_split` during training are applied when evaluating another split.
    SIGTERM stops it between batches (`Preempted`, exit status 75 from main.py); nothing is written.
    """
    validate_config(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    with Preemption() as preemption:  # SIGTERM from here on: noted, acted on before the next batch
        workdir = paths.resolve(workdir)
        model, mesh, variables, step = restore_model(config, workdir, step)
        split = split or config.data.eval_split
        thresholds = saved_thresholds(workdir, step) if split != config.data.eval_split else None
        reports = evaluate_heads(model, variables, config, mesh, workdir, step, head="all", tag="eval",
                                 split=split, thresholds=thresholds, preemption=preemption)
    print(f"\nCheckpoint step {step} on '{split}' ({config.data.name}):\n{metrics.format_ablation_table(reports)}")
    if jax.process_index() == 0:
        name = f"eval_step{step}_{split}.json".replace("/", "_")
        paths.join(workdir, name).write_text(json.dumps(reports, indent=1))
    return reports
