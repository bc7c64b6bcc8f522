"""`--mode=mine`: the paper's lesion mining. Features at the highest-response locations, clustered, shown and scored.

    python -m zoomin_jax.main --config=C --workdir=W --mode=mine --output=DIR [--split=test]

Over a split (default `config.data.eval_split`), every photograph's N selected regions (the top responses of the
map the boxes are chosen on, as in training) give N feature vectors: C-Net's pooled feature of each zoomed patch
(`patch_features`), L2-normalised. They are clustered by k-means in JAX (`kmeans`: k-means++ seeding, Lloyd
iterations, the best of `config.mine.restarts` by inertia; `config.mine.clusters` clusters).

The paper could only show the clusters as pictures. Where the split has lesion annotations (the synthetic dataset
knows every lesion it draws; IDRiD with its boxes CSV) each patch also gets a kind (`patch_kinds`): the annotated
object whose box centre lies in the patch nearest the patch's centre (a lesion kind, or the optic disc), else
"background". Purity counts the patches of annotated photographs only (`annotated_photographs`: a photograph
outside the annotation is unknown, not background) and a box chosen twice for one photograph once
(`counted_patches`). Each cluster's purity is the share of its patches of its most common kind; the overall purity is
their size-weighted mean, printed next to two references: the purity of one cluster holding everything (the
commonest kind's share) and the mean purity of random clusterings of the same sizes (`random_purity`). The same
three figures are given over the patches on an annotated object alone ('objects'): whether the clusters tell the
kinds apart, not only lesions from background.

DIR receives:
  mining.json     the purities, each cluster's size, majority kind and composition, the references, the step.
  clusters.csv    one row per patch: id, index, rank, box (y0, x0, y1, x1 in the stored image), score, cluster,
                  kind, distance to the cluster's centre.
  mosaics/cluster_XX.png  per cluster, its `config.mine.mosaic_patches` patches nearest the centre (high-res crops
                  read back from the split: what C-Net saw), and mosaics.png, all clusters one row each.
"""

from __future__ import annotations

import csv
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from zoomin_jax import evaluate, restore
from zoomin_jax.eval_step import make_eval_step
from zoomin_jax.lesions import LESION_KINDS
from zoomin_jax.validate import validate_config

KIND_NAMES = (*LESION_KINDS, "optic_disc", "background")
OPTIC_DISC, BACKGROUND = len(LESION_KINDS), len(LESION_KINDS) + 1


def _sq_distances(x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    """(n, d), (k, d) -> (n, k) squared Euclidean distances."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return jnp.maximum(d, 0.0)


def _seed_plus_plus(x: jnp.ndarray, k: int, key: jax.Array) -> jnp.ndarray:
    """k-means++: the first centre uniformly, each next one with probability proportional to D(x)^2."""
    key, sub = jax.random.split(key)
    first = x[jax.random.randint(sub, (), 0, x.shape[0])]
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = ((x - first) ** 2).sum(1)

    def add(i, carry):
        centres, d2, key = carry
        key, sub = jax.random.split(key)
        total = d2.sum()
        # All points already on a centre (duplicates): uniform. Otherwise proportional to D^2.
        logits = jnp.where(total > 0, jnp.log(jnp.maximum(d2, 1e-30)), 0.0)
        j = jax.random.categorical(sub, logits)
        return centres.at[i].set(x[j]), jnp.minimum(d2, ((x - x[j]) ** 2).sum(1)), key

    centres, _, _ = jax.lax.fori_loop(1, k, add, (centres, d2, key))
    return centres


@functools.partial(jax.jit, static_argnames=("k", "iterations", "restarts"))
def kmeans(x: jnp.ndarray, k: int, key: jax.Array, iterations: int = 50, restarts: int = 4):
    """k-means of the rows of `x`, the best of `restarts` k-means++ seedings by inertia.

    Returns:
      (centres (k, d), assignment int32 (n,), inertia: the sum of squared distances to the assigned centres). A
      centre left without points keeps its place.
    """
    x = x.astype(jnp.float32)

    def one(key):
        def lloyd(_, c):
            a = _sq_distances(x, c).argmin(1)
            onehot = jax.nn.one_hot(a, k, dtype=x.dtype)
            counts = onehot.sum(0)
            sums = onehot.T @ x
            return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)

        c = jax.lax.fori_loop(0, iterations, lloyd, _seed_plus_plus(x, k, key))
        d = _sq_distances(x, c)
        return c, d.argmin(1).astype(jnp.int32), d.min(1).sum()

    centres, assignment, inertia = jax.vmap(one)(jax.random.split(key, restarts))
    best = inertia.argmin()
    return centres[best], assignment[best], inertia[best]


def patch_kinds(boxes: np.ndarray, lesion_boxes: np.ndarray, lesion_kinds: np.ndarray, lesion_valid: np.ndarray,
                optic_disc: np.ndarray | None = None, optic_disc_valid: np.ndarray | None = None) -> np.ndarray:
    """What each patch shows: int (B, N) codes into `KIND_NAMES`.

    Among the annotated objects whose box centre ((y0 + y1) // 2, (x0 + x1) // 2, as lesion recall counts it) lies
    in the patch (half-open), the one whose centre is nearest the patch's centre gives the kind (ties: the first
    annotated; lesions before the optic disc); a patch with none is "background".

    Args:
      boxes: int (B, N, 4) the selected patches, (y0, x0, y1, x1) end exclusive.
      lesion_boxes, lesion_kinds, lesion_valid: (B, L, 4), (B, L), (B, L) as the eval batches carry them.
      optic_disc, optic_disc_valid: optional (B, 4), (B,): the optic disc counts as an object of its own.
    """
    boxes = np.asarray(boxes, np.int64)
    obj = np.asarray(lesion_boxes, np.int64)
    kinds = np.asarray(lesion_kinds, np.int64)
    valid = np.asarray(lesion_valid, bool)
    if optic_disc is not None:
        obj = np.concatenate([obj, np.asarray(optic_disc, np.int64)[:, None]], axis=1)
        kinds = np.concatenate([kinds, np.full((len(kinds), 1), OPTIC_DISC)], axis=1)
        valid = np.concatenate([valid, np.asarray(optic_disc_valid, bool)[:, None]], axis=1)
    cy, cx = (obj[..., 0] + obj[..., 2]) // 2, (obj[..., 1] + obj[..., 3]) // 2  # (B, L)
    b = boxes[:, :, None, :]  # (B, N, 1, 4)
    inside = ((b[..., 0] <= cy[:, None]) & (cy[:, None] < b[..., 2]) & (b[..., 1] <= cx[:, None])
              & (cx[:, None] < b[..., 3]) & valid[:, None])  # (B, N, L)
    py, px = (boxes[..., 0] + boxes[..., 2]) / 2.0, (boxes[..., 1] + boxes[..., 3]) / 2.0
    dist = (cy[:, None] + 0.5 - py[..., None]) ** 2 + (cx[:, None] + 0.5 - px[..., None]) ** 2
    nearest = np.where(inside, dist, np.inf).argmin(-1)  # (B, N): first of equals
    found = np.take_along_axis(kinds[:, None, :].repeat(boxes.shape[1], 1), nearest[..., None], -1)[..., 0]
    return np.where(inside.any(-1), found, BACKGROUND).astype(np.int32)


def counted_patches(boxes: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """bool (B, N): the patches purity counts. A patch of a photograph without annotations is not "background", it
    is unknown (left out); a box chosen twice for one photograph (`regions.reduce="per_level"` picks N boxes per
    level, and two levels may pick the same cell) is one patch (counted once, its first rank).

    Args:
      boxes: int (B, N, 4) the selected patches.
      annotated: bool (B,) whether each photograph's objects are annotated (`annotated_photographs`).
    """
    boxes = np.asarray(boxes)
    same = (boxes[:, :, None, :] == boxes[:, None, :, :]).all(-1)  # (B, N, N)
    first = ~np.tril(same, k=-1).any(-1)  # no equal box at an earlier rank
    return first & np.asarray(annotated, bool)[:, None]


def annotated_photographs(dataset: str, lesion_valid: np.ndarray, optic_disc_valid: np.ndarray) -> np.ndarray:
    """bool (B,): which photographs have their objects annotated. The synthetic dataset knows every lesion it
    draws (a photograph without any is lesion-free); a real dataset's photograph is annotated when it has an
    annotated object (a lesion box or its optic disc: IDRiD's boxes CSV gives every photograph it covers its disc),
    else it is not in the annotation and its patches' kinds are unknown."""
    if dataset == "synthetic_fundus":
        return np.ones(len(lesion_valid), bool)
    return np.asarray(lesion_valid, bool).any(-1) | np.asarray(optic_disc_valid, bool)


def purity(assignment: np.ndarray, labels: np.ndarray, k: int, num_labels: int) -> dict:
    """Purity of a clustering against labels: per cluster the share of its commonest label; overall the
    size-weighted mean (the share of all items that carry their cluster's commonest label)."""
    table = np.zeros((k, num_labels), np.int64)
    np.add.at(table, (np.asarray(assignment), np.asarray(labels)), 1)
    sizes = table.sum(1)
    return {"overall": float(table.max(1).sum() / max(1, sizes.sum())), "table": table,
            "sizes": sizes, "majority": table.argmax(1),
            "per_cluster": np.where(sizes > 0, table.max(1) / np.maximum(sizes, 1), np.nan)}


def random_purity(assignment: np.ndarray, labels: np.ndarray, k: int, num_labels: int, trials: int = 200,
                  seed: int = 0) -> float:
    """Mean overall purity of random clusterings with the same cluster sizes (labels shuffled over the items)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return float(np.mean([purity(assignment, rng.permutation(labels), k, num_labels)["overall"]
                          for _ in range(trials)]))


def _purities(assignment: np.ndarray, kinds: np.ndarray, k: int, seed: int) -> dict:
    """The clustering's purity and its two references: one cluster (the commonest kind's share) and random
    clusterings of the same sizes."""
    return {"purity": purity(assignment, kinds, k, len(KIND_NAMES))["overall"],
            "purity_one_cluster": float(np.bincount(kinds).max() / len(kinds)),
            "purity_random_clusters": random_purity(assignment, kinds, k, len(KIND_NAMES), seed=seed)}


def mine_split(config: ml_collections.ConfigDict, workdir: str, output_dir: str, split: str | None = None,
               step: int | None = None) -> dict:
    """`--mode=mine` (module docstring). Returns what mining.json holds, plus 'assignment', 'kinds' (codes),
    'boxes', 'index' and 'features' as arrays."""
    validate_config(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    mc = config.mine
    split = split or config.data.eval_split
    out_dir = Path(output_dir).expanduser()
    model, mesh, variables, step = restore.restore_model(config, workdir, step)
    eval_step = make_eval_step(model, mesh, ("identity",), config.model.regions.fov, features=True)
    t0 = time.perf_counter()
    print(f"Mining lesions on {config.data.name} '{split}' with step {step} of {workdir}", flush=True)
    preds = evaluate.infer_split(model, variables, config, mesh, split, eval_step)
    n, per = preds["boxes"].shape[:2]
    feats = preds["patch_features"].reshape(n * per, -1)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    k = int(mc.clusters)
    if n * per < k:
        raise ValueError(f"config.mine.clusters={k} but split {split!r} gives only {n * per} patches ({n} photographs"
                         f" x {per}); choose fewer clusters or a larger split")
    centres, assignment, inertia = jax.device_get(kmeans(jnp.asarray(feats), k, jax.random.PRNGKey(mc.seed),
                                                         int(mc.iterations), int(mc.restarts)))
    distance = np.sqrt(((feats - centres[assignment]) ** 2).sum(1))
    kinds = patch_kinds(preds["boxes"], preds["lesion_boxes"], preds["lesion_kinds"], preds["lesion_valid"],
                        preds["optic_disc"], preds["optic_disc_valid"]).reshape(-1)
    photos = annotated_photographs(config.data.name, preds["lesion_valid"], preds["optic_disc_valid"])
    counted = counted_patches(preds["boxes"], photos).reshape(-1)
    annotated = bool(counted.any())
    result = {"split": split, "step": int(step), "dataset": config.data.name, "photographs": int(n),
              "patches": int(n * per), "clusters": k, "inertia": float(inertia), "annotated": annotated,
              "annotated_photographs": int(photos.sum()), "patches_counted": int(counted.sum()),
              "kind_rule": "the annotated object (lesion or optic disc) whose box centre lies in the patch nearest "
                           "its centre; none: background. Counted: patches of annotated photographs, a box chosen "
                           "twice for one photograph once"}
    p = purity(assignment[counted], kinds[counted], k, len(KIND_NAMES))
    result["cluster_table"] = [
        {"cluster": c, "size": int(p["sizes"][c]),
         "composition": {KIND_NAMES[j]: int(v) for j, v in enumerate(p["table"][c]) if v}}
        | ({"majority": KIND_NAMES[int(p["majority"][c])], "purity": float(p["per_cluster"][c])}
           if annotated and p["sizes"][c] else {})
        for c in range(k)]
    if annotated:
        result.update(_purities(assignment[counted], kinds[counted], k, mc.seed))
        shown = counted & (kinds != BACKGROUND)  # patches on an annotated object: do the clusters tell kinds apart?
        if shown.any():
            result["objects"] = {"patches": int(shown.sum()),
                                 **_purities(assignment[shown], kinds[shown], k, mc.seed)}
        result["kinds"] = {KIND_NAMES[j]: int(v) for j, v in
                           enumerate(np.bincount(kinds[counted], minlength=len(KIND_NAMES))) if v}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_rows(out_dir / "clusters.csv", preds, assignment, kinds, distance, counted)
    (out_dir / "mining.json").write_text(json.dumps(result, indent=1))
    _mosaics(config, split, out_dir / "mosaics", preds, assignment, distance, result)
    for line in _summary(result):
        print(line, flush=True)
    print(f"Wrote {out_dir / 'mining.json'}, clusters.csv and mosaics/ ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {**result, "assignment": assignment, "kinds": kinds, "boxes": preds["boxes"], "index": preds["index"],
            "features": feats}


def _summary(result: dict) -> list[str]:
    lines = [f"[mine] {result['patches']} patches of {result['photographs']} photographs ({result['split']}) in "
             f"{result['clusters']} clusters; purity counts {result['patches_counted']} patches of the "
             f"{result['annotated_photographs']} annotated photographs"]
    if result["annotated"]:
        lines.append(f"[mine] purity {result['purity']:.3f} (one cluster: {result['purity_one_cluster']:.3f}, random "
                     f"clusters of these sizes: {result['purity_random_clusters']:.3f})")
    if "objects" in result:
        o = result["objects"]
        lines.append(f"[mine] the {o['patches']} patches on an annotated object (a lesion or the optic disc): purity "
                     f"{o['purity']:.3f} (one cluster: {o['purity_one_cluster']:.3f}, random clusters of these sizes:"
                     f" {o['purity_random_clusters']:.3f})")
    for row in result["cluster_table"]:
        top = sorted(row["composition"].items(), key=lambda kv: -kv[1])[:3]
        share = ", ".join(f"{name} {v}" for name, v in top)
        head = f"purity {row['purity']:.2f} " if "purity" in row else ""
        lines.append(f"[mine]   cluster {row['cluster']:2d}: {row['size']:5d} patches {head}({share})")
    return lines


def _write_rows(path: Path, preds: dict, assignment, kinds, distance, counted: np.ndarray) -> None:
    """A row per patch; `kind` is empty where it is unknown or the box repeats an earlier rank (not counted)."""
    per = preds["boxes"].shape[1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "index", "rank", "y0", "x0", "y1", "x1", "score", "cluster", "kind", "distance"])
        for i, image_id in enumerate(preds["id"]):
            for r in range(per):
                j = i * per + r
                w.writerow([image_id, int(preds["index"][i]), r + 1, *preds["boxes"][i, r].tolist(),
                            f"{preds['box_scores'][i, r]:.6g}", int(assignment[j]),
                            KIND_NAMES[kinds[j]] if counted[j] else "", f"{distance[j]:.5f}"])


def _mosaics(config, split, folder: Path, preds, assignment, distance, result) -> None:
    """Per cluster the patches nearest its centre, read back from the split's stored images (random access)."""
    from zoomin_jax.data import datasets, input_pipeline

    mc, per = config.mine, preds["boxes"].shape[1]
    px, cols = int(mc.mosaic_px), int(mc.mosaic_patches)
    chosen = {c: np.flatnonzero(assignment == c)[np.argsort(distance[assignment == c], kind="stable")][:cols]
              for c in range(int(mc.clusters))}
    needed = sorted({int(preds["index"][j // per]) for js in chosen.values() for j in js})
    source = datasets.open_split(config, split)
    images = {i: input_pipeline.decode_jpeg(source[i]["image"]) for i in needed}
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in result["cluster_table"]:
        c = row["cluster"]
        title = f"cluster {c}: {row['size']} patches" + (
            f", purity {row['purity']:.2f} ({row['majority']})" if "purity" in row else "")
        strip = Image.new("RGB", (max(cols * px, 360), px + 16), (20, 20, 20))
        ImageDraw.Draw(strip).text((4, 2), title, fill=(255, 255, 255))
        for slot, j in enumerate(chosen[c]):
            y0, x0, y1, x1 = preds["boxes"][j // per, j % per].tolist()
            patch = images[int(preds["index"][j // per])][y0:y1, x0:x1]
            strip.paste(Image.fromarray(patch).resize((px, px), Image.LANCZOS), (slot * px, 16))
        strip.save(folder / f"cluster_{c:02d}.png")
        rows.append(strip)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (20, 20, 20))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    sheet.save(folder.parent / "mosaics.png")
