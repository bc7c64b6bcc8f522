"""The ablation of one run or of several runs of one config, with paired intervals, from the files a run writes.

Everything is recomputed from the predictions CSVs (every head's five probabilities, the label and the patient of
each photograph) named by the run's `eval_results.json` (each head's step and split), so any reader can check it:

    python -m zoomin_jax.ablation runs/idrid_s0                       # one run: its table and paired intervals
    python -m zoomin_jax.ablation runs/idrid_s0 runs/idrid_s1 runs/idrid_s2   # seeds: mean, spread, pooled interval
    python -m zoomin_jax.ablation runs/pt_s0 runs/pt_s1 --against runs/s0 runs/s1  # a lever: set minus set, per head

For M-Net + A-Net and Zoom-in-Net: the difference to M-Net in kappa, normal and referable AUC on the evaluation
photographs, with the 95% paired bootstrap interval (`bootstrap.py`: patients resampled where the dataset has
them, the seed and the number of resamples printed and fixed, so a re-run prints the same interval). Over several
runs: per head the mean, standard deviation and range of each figure over the runs (and of recall@4 with its
chance level), and the interval of the mean difference, the runs resampled together on the same photographs.
A run with the both-eyes head also gets its difference to Zoom-in-Net, the head whose features it reads.
With `--against`, a lever (e.g. the pretrained backbone): both sets' tables, then per head the difference of the
sets' means with its interval, the i-th run of one set paired with the i-th of the other (same seed) and all
resampled together on the same photographs.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from zoomin_jax import bootstrap
from zoomin_jax.evaluate import RESULTS_FILE
from zoomin_jax.heads import HEADS
from zoomin_jax.predictions_csv import prob_columns

REFERENCE = "mnet"


class Run:
    """One run's evaluation photographs: ids, labels, groups (patients, else ids) and each head's probabilities
    ({head: float (n, 5)}), aligned by id; `reports` from eval_results.json."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        path = os.path.join(workdir, RESULTS_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: {workdir} is not a finished zoomin_jax run (train it first)")
        self.reports = json.loads(open(path).read())
        if HEADS[REFERENCE] not in self.reports:
            raise ValueError(f"{workdir}: eval_results.json has no {HEADS[REFERENCE]}, the head the others are "
                             "compared with (a run with stage mnet is needed)")
        self.heads = [h for h, name in HEADS.items() if name in self.reports]  # in display order
        self.split = self.reports[HEADS[REFERENCE]]["split"]
        self.probs, ids, labels, groups = {}, None, None, None
        for head in self.heads:
            name = HEADS[head]
            rows = _read_csv(self._csv(self.reports[name]["step"], self.reports[name]["split"]))
            cols = prob_columns(head)
            if cols[0] not in rows[0]:
                raise ValueError(f"{workdir}: the predictions CSV of {name} has no {cols[0]} column (written before "
                                 "every head's probabilities were kept): run --mode=eval on that step again")
            by_id = {r["id"]: r for r in rows}
            if ids is None:
                ids = sorted(by_id)
                labels = np.asarray([int(by_id[i]["label"]) for i in ids])
                groups = [by_id[i].get("patient", i) for i in ids]
            elif sorted(by_id) != ids:
                raise ValueError(f"{workdir}: the heads were evaluated on different photographs")
            self.probs[head] = np.asarray([[float(by_id[i][c]) for c in cols] for i in ids])
        self.ids, self.labels, self.groups = ids, labels, groups
        self.has_patients = groups != ids

    def _csv(self, step: int, split: str) -> str:
        """The predictions CSV of that evaluation (`<stage or eval>_step<step>_<split>.csv`; any, they agree)."""
        folder = os.path.join(self.workdir, "predictions")
        found = sorted(glob.glob(os.path.join(glob.escape(folder), "*" + glob.escape(f"_step{step}_{split}.csv"))))
        if not found:
            raise FileNotFoundError(f"no predictions CSV for step {step} on {split!r} in {self.workdir}/predictions")
        return found[0]


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def figures(run: Run) -> dict[str, dict[str, float]]:
    """{head name: {figure: value}} recomputed from the CSV, plus recall@4 and its chance from the report."""
    out = {}
    for head in run.heads:
        name = HEADS[head]
        out[name] = {f: bootstrap.figure_values([run.labels], [run.probs[head]], [np.arange(len(run.ids))])[f][0, 0]
                     for f in bootstrap.FIGURES}
        recall = run.reports[name].get("lesion_recall") or {}
        if recall.get("recall@4") is not None:
            out[name]["recall@4"] = recall["recall@4"]
            out[name]["chance@4"] = recall["chance@4"]
    return out


def _check_paired(runs: Sequence[Run]) -> None:
    first = runs[0]
    for r in runs[1:]:
        if r.ids != first.ids or not np.array_equal(r.labels, first.labels) or r.heads != first.heads:
            raise ValueError(f"{r.workdir} was evaluated on other photographs (or heads) than {first.workdir}: the "
                             "runs cannot be paired")


def compare(runs: Sequence[Run], n: int = bootstrap.RESAMPLES, seed: int = bootstrap.SEED,
            reference: str = REFERENCE, heads: Sequence[str] | None = None) -> dict:
    """The paired comparison of `heads` (default: every other head) with `reference` (M-Net) over the runs
    (`bootstrap.compare`); the runs must share their photographs."""
    _check_paired(runs)
    first = runs[0]
    others = [h for h in first.heads if h != reference] if heads is None else list(heads)
    return bootstrap.compare([r.labels for r in runs], [r.probs for r in runs], first.groups, reference, others,
                             n, seed)


def compare_sets(runs: Sequence[Run], against: Sequence[Run], n: int = bootstrap.RESAMPLES,
                 seed: int = bootstrap.SEED) -> dict:
    """Per head, set `runs` minus set `against`: the mean over pairs (i-th with i-th) of the difference, which is
    the difference of the sets' means, and its interval with every pair resampled on the same photographs.

    Returns {"resamples", "seed", "groups", "rows", "runs": pairs, head: {figure: {"difference", "low", "high",
    "used"}}} (the form `bootstrap.compare` returns, with the head compared against itself in the other set).
    """
    if len(runs) != len(against):
        raise ValueError(f"--against needs as many runs as it is compared with ({len(runs)} vs {len(against)}): "
                         "the i-th run of each set is paired with the i-th of the other")
    _check_paired([*runs, *against])
    out = {}
    for head in runs[0].heads:
        probs = [{"lever": a.probs[head], "without": b.probs[head]} for a, b in zip(runs, against, strict=True)]
        result = bootstrap.compare([r.labels for r in runs], probs, runs[0].groups, "without", ["lever"], n, seed)
        out[head] = result.pop("lever")
        out.update(result)
    return out


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def format_intervals(result: dict, unit: str, against: str = "", reference: str = REFERENCE) -> str:
    """The paired-difference table: a line per compared head, `+0.012 [-0.031, +0.058]` per figure, against the
    `reference` head (M-Net); with `against`, the lever's table (`compare_sets`: each head against itself in the
    other set)."""
    header = [f"vs {HEADS[reference]}" if not against else "head", *bootstrap.FIGURES]
    lines = []
    for head, name in HEADS.items():
        if head in result:
            lines.append([name] + [f"{_signed(c['difference'])} [{_signed(c['low'])}, {_signed(c['high'])}]"
                                   for c in result[head].values()])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    pooled = f", mean over {result['runs']} runs resampled together" if result["runs"] > 1 else ""
    if against:
        pooled = f", mean over {result['runs']} pairs of runs resampled together"
    used = min(c["used"] for h in HEADS if h in result for c in result[h].values())
    what = f"Paired difference to {HEADS[reference]}" if not against else f"Each head minus the same head {against}"
    title = (f"{what}, 95% bootstrap interval ({result['resamples']} resamples of the "
             f"{result['groups']} {unit}, seed {result['seed']}{pooled}"
             + (f"; {used} resamples define every figure" if used < result["resamples"] else "") + "):")
    return "\n".join([title, render(header), "  ".join("-" * w for w in widths), *(render(r) for r in lines)])


def format_runs(runs: Sequence[Run]) -> str:
    """Per head and figure over the runs: mean +- standard deviation (min .. max)."""
    per_run = [figures(r) for r in runs]
    names = [f for f in ("kappa", "AUC normal", "AUC referable", "recall@4") if f in per_run[0][HEADS[REFERENCE]]]
    header = ["model", *names]
    lines = []
    for name in (HEADS[h] for h in runs[0].heads):
        cells = [name]
        for f in names:
            v = np.asarray([p[name][f] for p in per_run])
            cells.append(f"{v[0]:.3f}" if len(v) == 1 else
                         f"{v.mean():.3f} +- {v.std(ddof=1):.3f} ({v.min():.3f} .. {v.max():.3f})")
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    chance = per_run[0][HEADS[REFERENCE]].get("chance@4")
    note = f"; recall@4 chance {chance:.3f}" if chance is not None else ""
    what = f"{len(runs)} runs" if len(runs) > 1 else runs[0].workdir
    spread = ": mean +- sd (min .. max)" if len(runs) > 1 else ""
    title = f"{what} on '{runs[0].split}' ({len(runs[0].ids)} photographs{note}){spread}"
    return "\n".join([title, render(header), "  ".join("-" * w for w in widths), *(render(r) for r in lines)])


def report(workdirs: Sequence[str], n: int = bootstrap.RESAMPLES, seed: int = bootstrap.SEED,
           against: Sequence[str] = ()) -> str:
    """The text `python -m zoomin_jax.ablation` prints: the runs' figures and the paired intervals; with `against`,
    the other set's too and the lever's intervals."""
    runs = [Run(w) for w in workdirs]
    unit = "patients" if runs[0].has_patients else "photographs"
    text = format_runs(runs) + "\n\n" + format_intervals(compare(runs, n, seed), unit)
    if "pair" in runs[0].heads and "zoom_in" in runs[0].heads:  # both eyes against the head it is built on
        text += "\n\n" + format_intervals(compare(runs, n, seed, "zoom_in", ["pair"]), unit, reference="zoom_in")
    if against:
        others = [Run(w) for w in against]
        text += ("\n\nAgainst: " + format_runs(others) + "\n\n" + format_intervals(compare(others, n, seed), unit)
                 + "\n\n" + format_intervals(compare_sets(runs, others, n, seed), unit,
                                             against=f"in {', '.join(against)}"))
    return text


def intervals_or_note(workdir: str) -> str:
    """One run's paired intervals, for the end of training; where they cannot be computed (a remote workdir, CSVs
    of an older version), one line saying why and how to get them."""
    try:
        run = Run(str(workdir))
        return format_intervals(compare([run]), "patients" if run.has_patients else "photographs")
    except (OSError, ValueError, KeyError) as e:
        return f"(paired intervals not computed: {e}; python -m zoomin_jax.ablation WORKDIR prints them)"


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    args = argv[1:]
    if "--against" in args:
        k = args.index("--against")
        runs, against = args[:k], args[k + 1:]
        if not runs or not against:
            raise SystemExit("usage: python -m zoomin_jax.ablation RUN [RUN ...] --against RUN [RUN ...]")
        print(report(runs, against=against))
    else:
        print(report(args))


if __name__ == "__main__":
    main(sys.argv)
