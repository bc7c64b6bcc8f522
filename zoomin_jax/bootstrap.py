"""Paired bootstrap intervals for the ablation: how much a head differs from M-Net, with its uncertainty.

Two heads graded on the same photographs are compared on the same resamples (paired), so what both get right or
wrong cancels and the interval is that of the difference itself. Resampling is over patients where the dataset has
them (a patient's photographs drawn together, with replacement: EyePACS's two eyes have strongly correlated
grades, and resampling eyes apart would narrow the interval falsely), else over photographs.

Each resample draws as many patients as there are, with replacement, from a generator seeded by `seed`; the
metrics are computed by `metrics` on the resampled rows (a patient drawn twice counts twice), differences are
taken per resample, and the interval is the 2.5th and 97.5th percentile of the differences (percentile bootstrap).
Over several runs of one config (seeds) that share the evaluation photographs, the same resample is applied to
every run and the difference averaged over the runs: the interval of the mean difference (`pooled=`).
A resample with only one class of a binary task has no AUC there; it is left out of that metric (counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from zoomin_jax import metrics

RESAMPLES = 2000
SEED = 0

# The figures compared: name -> f(labels, probs (n, 5)) -> float (raises ValueError where undefined).
FIGURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "kappa": lambda y, p: metrics.quadratic_weighted_kappa(y, p.argmax(1), p.shape[1]),
    "AUC normal": lambda y, p: metrics.roc_auc((y >= 1).astype(np.int64), 1.0 - p[:, 0]),
    "AUC referable": lambda y, p: metrics.roc_auc((y >= 2).astype(np.int64), p[:, 2:].sum(1)),
}


def group_rows(groups: Sequence) -> list[np.ndarray]:
    """Row indices of each group (patient), in order of first appearance."""
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(v, np.int64) for v in index.values()]


def resamples(groups: Sequence, n: int = RESAMPLES, seed: int = SEED) -> list[np.ndarray]:
    """`n` resamples of row indices: each draws len(groups) groups with replacement and takes all their rows."""
    members = group_rows(groups)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(members), size=(n, len(members)))
    return [np.concatenate([members[g] for g in d]) for d in draws]


def _value(fn, labels, probs) -> float:
    try:
        return float(fn(labels, probs))
    except ValueError:  # one class only in this resample
        return float("nan")


def figure_values(labels: Sequence[np.ndarray], probs: Sequence[np.ndarray], rows: list[np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Each figure of one head on each resample of each run.

    Args:
      labels: per run, int (n,) grades (the same photographs in the same order in every run).
      probs: per run, float (n, K) the head's probabilities.
      rows: the resamples (`resamples`), or [all rows].

    Returns:
      {figure: float (runs, len(rows))}, NaN where a resample leaves the figure undefined.
    """
    return {name: np.asarray([[_value(fn, y[r], p[r]) for r in rows] for y, p in zip(labels, probs, strict=True)])
            for name, fn in FIGURES.items()}


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """(low, high, resamples used): the percentile interval of the finite values."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), int(finite.size)


def compare(labels: Sequence[np.ndarray], probs: Sequence[dict[str, np.ndarray]], groups: Sequence,
            reference: str, heads: Sequence[str], n: int = RESAMPLES, seed: int = SEED) -> dict:
    """The paired comparison of each head with `reference`, over one run or pooled over several.

    Args:
      labels: per run, int (n,) grades of the same photographs in the same order.
      probs: per run, {head: float (n, K)}.
      groups: the patient (or photograph) of each row, shared by the runs.
      reference: the head compared against (M-Net).
      heads: the heads compared with it.

    Returns:
      {"resamples": n, "seed": seed, "groups": number of patients, "rows": n photographs, "runs": number of runs,
       head: {figure: {"difference": mean over runs of the difference on all photographs, "low", "high",
       "used": resamples where it was defined}}}.
    """
    rows = resamples(groups, n, seed)
    out = {"resamples": n, "seed": seed, "groups": len(group_rows(groups)), "rows": len(groups), "runs": len(labels)}
    everything = [np.arange(len(groups))]
    point = {h: figure_values(labels, [p[h] for p in probs], everything) for h in (reference, *heads)}
    spread = {h: figure_values(labels, [p[h] for p in probs], rows) for h in (reference, *heads)}
    for head in heads:
        out[head] = {}
        for name in FIGURES:
            diff = np.mean(spread[head][name] - spread[reference][name], axis=0)  # mean over runs, per resample
            low, high, used = interval(diff)
            out[head][name] = {"difference": float(np.mean(point[head][name] - point[reference][name])),
                               "low": low, "high": high, "used": used}
    return out
