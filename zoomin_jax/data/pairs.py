"""Both eyes of a patient side by side (`config.model.pair_eyes`): the rows of batches built by patient.

Kaggle's best EyePACS entries graded each eye with the other eye in view: a patient's two eyes have strongly
correlated grades. With `model.pair_eyes` every batch, in training and in evaluation, holds patients, not
photographs: rows 2k and 2k + 1 are the two eyes of one patient (in the split's record order), so
the model's pair head can read each row's partner by swapping the rows of each pair, with static shapes. A patient
with one photograph fills both rows with it: its photograph is paired with itself and still gets a grade.

Training (`PairIndices`): epoch e of the infinite stream is an order of the split's patients (a permutation from a
generator seeded by (seed, e); with class balancing, a draw with replacement weighted by each patient's highest
grade, the same weights `input_pipeline.balance_weights` gives photographs), two positions per patient.
Evaluation (`eval_rows`): the patients in the split's order, two rows each; the second row of a one-eyed patient
is marked not real (index -1, mask False), so every photograph is counted once.
"""

from __future__ import annotations

import grain
import numpy as np


def patient_rows(patients: np.ndarray) -> np.ndarray:
    """int64 (P, 2): the example indices of each patient's two rows (in order of first appearance; a one-eyed
    patient's photograph twice). Raises ValueError for a patient with more than two photographs."""
    first: dict[int, list[int]] = {}
    for i, p in enumerate(np.asarray(patients).tolist()):
        first.setdefault(int(p), []).append(i)
    too_many = [p for p, rows in first.items() if len(rows) > 2]
    if too_many:
        raise ValueError(f"model.pair_eyes: patient(s) {too_many[:5]} have more than two photographs in the split")
    return np.asarray([[rows[0], rows[-1]] for rows in first.values()], np.int64)


def eval_rows(patients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(example index per row, real per row) for an evaluation pass: two rows per patient, the repeated photograph
    of a one-eyed patient not real."""
    pairs = patient_rows(patients)
    real = np.ones_like(pairs, bool)
    real[:, 1] = pairs[:, 1] != pairs[:, 0]
    return pairs.reshape(-1), real.reshape(-1)


class PairIndices(grain.transforms.Map):
    """Global sample position -> example index, two consecutive positions per patient (module docstring)."""

    def __init__(self, patients: np.ndarray, labels: np.ndarray, seed: int, weights_fn=None):
        """weights_fn: epoch -> per-grade weights (`input_pipeline.balance_weights` of the patients' highest
        grades) for a balanced draw; None: a permutation of the patients every epoch."""
        self.pairs = patient_rows(patients)
        labels = np.asarray(labels, np.int64)
        self.grades = np.maximum(labels[self.pairs[:, 0]], labels[self.pairs[:, 1]])  # a patient's highest grade
        self.seed, self.weights_fn = int(seed), weights_fn
        self._cache: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def epoch_patients(self, epoch: int) -> np.ndarray:
        """The patients of epoch `epoch`, in order."""
        if epoch not in self._cache:
            n = len(self.pairs)
            rng = np.random.default_rng([self.seed, epoch, 0xE7E5])
            if self.weights_fn is None:
                order = rng.permutation(n)
            else:
                counts = np.bincount(self.grades, minlength=5)
                per_grade = self.weights_fn(counts, epoch)
                p = per_grade[self.grades] / counts[self.grades]
                order = rng.choice(n, size=n, replace=True, p=p / p.sum())
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = order
        return self._cache[epoch]

    def map(self, position: int) -> int:
        span = 2 * len(self.pairs)
        epoch, within = divmod(int(position), span)
        return int(self.pairs[self.epoch_patients(epoch)[within // 2], within % 2])


def indices(patients: np.ndarray, labels: np.ndarray, seed: int, weights_fn=None) -> grain.MapDataset:
    """The infinite MapDataset of example indices for training by patient."""
    return grain.MapDataset.range(0, 2**62).map(PairIndices(patients, labels, seed, weights_fn))
