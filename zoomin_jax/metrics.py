"""Evaluation metrics for DR grading and lesion localisation: plain numpy on host arrays.

Everything here runs after the jitted eval step has brought predictions back to the host; nothing imports jax.

- Grading: quadratic weighted kappa (the Kaggle EyePACS metric), accuracy, confusion matrix, and thresholds on the
  expected grade fitted on validation (the usual Kaggle trick: regress, then cut).
- Screening: AUC, accuracy and sensitivity at fixed specificity for normal vs abnormal (0 vs 1-4) and referable vs
  non-referable (0-1 vs 2-4), the Messidor-style binary tasks.
- Localisation: lesion recall@k, the share of annotated lesions whose centre lies inside one of the top-k selected
  boxes (the paper's "four boxes cover 80% of the lesions"), next to its chance level (k random boxes of the same
  size centred uniformly in each image's field of view, computed exactly); and how often the first box sits on the
  optic disc, which is bright and normal, not a lesion.

Conventions shared by all functions: a "positive" binary prediction means `score > threshold` (a score equal to the
threshold is negative); undefined values (an AUC with one class present, a recall with no lesions) are reported as
`None` in the dict-returning helpers, so reports stay strict JSON, and raise `ValueError` in the scalar functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from zoomin_jax.lesions import LESION_KINDS

# Specificities at which the binary tasks report sensitivity.
REPORTED_SPECIFICITIES = (0.90, 0.95)


# ---------------------------------------------------------------------------------------------------------------
# Multi-class grading.
# ---------------------------------------------------------------------------------------------------------------


def _as_grades(values: np.ndarray | Sequence[int], num_classes: int, name: str) -> np.ndarray:
    """Checks that `values` is a 1-D array of integer grades in [0, num_classes) and returns it as int64."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{name} must hold integer grades, got dtype {array.dtype} with non-integer values.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values in [{array.min()}, {array.max()}]; "
            "pass num_classes if the grading scale is larger."
        )
    return array


def _check_pair(labels: np.ndarray, predictions: np.ndarray) -> None:
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} vs {predictions.shape}.")
    if labels.size == 0:
        raise ValueError("labels and predictions are empty; a metric over no examples is undefined.")


def confusion_matrix(
    labels: np.ndarray | Sequence[int], predictions: np.ndarray | Sequence[int], num_classes: int
) -> np.ndarray:
    """Counts of (true grade, predicted grade) pairs.

    Args:
      labels: int[n], true grades in [0, num_classes).
      predictions: int[n], predicted grades in [0, num_classes).
      num_classes: the number of grades K.

    Returns:
      int64[K, K]; entry [i, j] is the number of examples of true grade i predicted as grade j (rows are truth).
    """
    labels = _as_grades(labels, num_classes, "labels")
    predictions = _as_grades(predictions, num_classes, "predictions")
    _check_pair(labels, predictions)
    return _confusion_counts(labels, predictions, num_classes)


def _confusion_counts(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """confusion_matrix without the checks (empty inputs give zeros)."""
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(labels: np.ndarray | Sequence[int], predictions: np.ndarray | Sequence[int]) -> float:
    """Share of examples whose prediction equals the label.

    Args:
      labels: [n] true classes (any integer coding).
      predictions: [n] predicted classes, same coding.

    Returns:
      The fraction in [0, 1].
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    _check_pair(labels, predictions)
    return float(np.mean(labels == predictions))


def _quadratic_weights(num_classes: int) -> np.ndarray:
    if num_classes < 2:
        raise ValueError(f"quadratic weighted kappa needs num_classes >= 2, got {num_classes}.")
    grades = np.arange(num_classes, dtype=np.float64)
    return (grades[:, None] - grades[None, :]) ** 2 / (num_classes - 1) ** 2


def _kappa_from_sums(weighted_observed: np.ndarray | float, weighted_expected: np.ndarray | float) -> np.ndarray:
    """1 - sum(w O) / sum(w E), with the degenerate 0 / 0 case (one shared constant grade) defined as 1."""
    weighted_observed = np.asarray(weighted_observed, dtype=np.float64)
    weighted_expected = np.asarray(weighted_expected, dtype=np.float64)
    degenerate = weighted_expected <= 0.0
    safe = np.where(degenerate, 1.0, weighted_expected)
    return np.where(degenerate, 1.0, 1.0 - weighted_observed / safe)


def quadratic_weighted_kappa(
    labels: np.ndarray | Sequence[int], predictions: np.ndarray | Sequence[int], num_classes: int = 5
) -> float:
    """Quadratic weighted kappa, the Kaggle EyePACS definition.

    O is the confusion matrix, E the outer product of the label and prediction histograms scaled to O's sum,
    w[i, j] = (i - j)^2 / (K - 1)^2, and kappa = 1 - sum(w O) / sum(w E). Unlike Kaggle's reference code the
    scale is fixed by `num_classes` rather than inferred from the observed range, so kappa does not change when a
    batch happens to miss the extreme grades.

    Degenerate case: sum(w E) = 0 only when labels and predictions are all one and the same grade (then O = E
    and sum(w O) = 0 too). That is perfect agreement, so it returns 1.0 (Kaggle's reference divides 0 by 0).
    When both are constant but different, sum(w E) > 0 and kappa is 1 - 1 = 0.

    Args:
      labels: int[n] true grades in [0, num_classes).
      predictions: int[n] predicted grades in [0, num_classes).
      num_classes: the number of grades K (5 for DR).

    Returns:
      Kappa in [-1, 1]; symmetric in its two arguments.
    """
    observed = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    weights = _quadratic_weights(num_classes)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    return float(_kappa_from_sums(np.sum(weights * observed), np.sum(weights * expected)))


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """The mean grade under the predicted distribution.

    Args:
      probs: float[n, K] class probabilities (rows sum to 1).

    Returns:
      float[n], probs @ arange(K), in [0, K - 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [n, num_classes], got shape {probs.shape}.")
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def apply_thresholds(expected: np.ndarray, thresholds: np.ndarray | Sequence[float]) -> np.ndarray:
    """Cuts continuous grades into integer grades.

    Args:
      expected: float[n] continuous grades (e.g. `expected_grade(probs)`).
      thresholds: float[K - 1] increasing cut points.

    Returns:
      int64[n]; grade g is the number of thresholds <= value (np.digitize), so a value equal to a threshold goes
      to the upper grade.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or np.any(np.diff(thresholds) <= 0):
        raise ValueError(f"thresholds must be a strictly increasing 1-D array, got {thresholds}.")
    return np.digitize(np.asarray(expected, dtype=np.float64), thresholds).astype(np.int64)


def fit_thresholds(
    expected_grades: np.ndarray, labels: np.ndarray | Sequence[int], num_classes: int = 5, max_sweeps: int = 100
) -> np.ndarray:
    """Thresholds on the expected grade that maximise quadratic weighted kappa on the given (validation) data.

    Deterministic coordinate ascent starting from plain rounding (0.5, 1.5, ...). Each step moves one threshold to
    the best cut strictly between its neighbours; the candidate cuts are the midpoints between consecutive distinct
    data values (every distinct partition of the data is one of them), plus points beyond the data range so that
    the lowest or highest grades can be left empty. Kappa of every candidate of one threshold is evaluated at once
    from cumulative label counts, so a sweep costs O(n log n). A move is taken only if it strictly improves kappa
    (ties keep the current threshold), so the result is never worse than rounding and the search terminates.
    It finds a coordinate-wise optimum, not necessarily the global one.

    Args:
      expected_grades: float[n] continuous grades on validation data.
      labels: int[n] true grades.
      num_classes: K; K - 1 thresholds are fitted.
      max_sweeps: cap on full passes over the thresholds.

    Returns:
      float64[K - 1] strictly increasing thresholds for `apply_thresholds`.
    """
    values = np.asarray(expected_grades, dtype=np.float64)
    labels = _as_grades(labels, num_classes, "labels")
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"expected_grades must be a finite 1-D array, got shape {values.shape}.")
    _check_pair(labels, values)
    weights = _quadratic_weights(num_classes)
    n = values.size

    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    sorted_labels = labels[order]
    distinct = np.unique(sorted_values)
    span = max(1.0, float(distinct[-1] - distinct[0]))
    outside = span * np.arange(1, num_classes, dtype=np.float64)
    candidates = np.unique(
        np.concatenate(
            [
                (distinct[:-1] + distinct[1:]) / 2.0,
                distinct[0] - outside,
                distinct[-1] + outside,
            ]
        )
    )
    label_hist = np.bincount(labels, minlength=num_classes).astype(np.float64)
    label_weight = label_hist @ weights  # sum(w E) = label_weight . prediction_hist / n

    def kappa_of(thr: np.ndarray) -> float:
        return quadratic_weighted_kappa(labels, apply_thresholds(values, thr), num_classes)

    thresholds = np.arange(num_classes - 1, dtype=np.float64) + 0.5
    best = kappa_of(thresholds)
    for _ in range(max_sweeps):
        moved = False
        for j in range(num_classes - 1):
            low = thresholds[j - 1] if j > 0 else -np.inf
            high = thresholds[j + 1] if j + 1 < num_classes - 1 else np.inf
            options = candidates[(candidates > low) & (candidates < high)]
            if options.size == 0:
                continue
            # Samples in [low, high) are predicted j if below the cut, j + 1 otherwise; the rest stay fixed.
            start, stop = np.searchsorted(sorted_values, [low, high], side="left")
            inside_labels = sorted_labels[start:stop]
            predicted = apply_thresholds(values, thresholds)
            outside_mask = np.ones(n, dtype=bool)
            outside_mask[order[start:stop]] = False
            fixed = _confusion_counts(labels[outside_mask], predicted[outside_mask], num_classes)
            cumulative = np.concatenate(
                [
                    np.zeros((1, num_classes)),
                    np.cumsum(np.eye(num_classes)[inside_labels], axis=0),
                ]
            )  # [m + 1, K]: label counts of the first p inside samples
            below = np.searchsorted(sorted_values[start:stop], options, side="left")
            counts_low = cumulative[below]  # [C, K] go to grade j
            counts_high = cumulative[-1] - counts_low  # go to grade j + 1
            weighted_observed = np.sum(weights * fixed) + counts_low @ weights[:, j] + counts_high @ weights[:, j + 1]
            prediction_hist = np.tile(fixed.sum(axis=0).astype(np.float64), (options.size, 1))
            prediction_hist[:, j] += below
            prediction_hist[:, j + 1] += (stop - start) - below
            kappas = _kappa_from_sums(weighted_observed, prediction_hist @ label_weight / n)
            pick = int(np.argmax(kappas))
            if kappas[pick] > best + 1e-12:
                thresholds[j] = options[pick]
                best = float(kappas[pick])
                moved = True
        if not moved:
            break
    return thresholds


# ---------------------------------------------------------------------------------------------------------------
# Binary screening tasks.
# ---------------------------------------------------------------------------------------------------------------


def _binary_inputs(binary_labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]):
    labels = np.asarray(binary_labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"binary_labels and scores must be 1-D of equal length, got {labels.shape}, {scores.shape}.")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("binary_labels must be 0 (negative) or 1 (positive).")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite.")
    return labels.astype(bool), scores


def roc_auc(binary_labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve, as the Mann-Whitney statistic.

    AUC = P(score of a random positive > score of a random negative), a tied pair counting one half; computed
    from average ranks in O(n log n).

    Args:
      binary_labels: [n] 0 (negative) or 1 (positive).
      scores: float[n], higher means more likely positive.

    Returns:
      The AUC in [0, 1].

    Raises:
      ValueError: if only one class is present (the AUC is undefined).
    """
    labels, scores = _binary_inputs(binary_labels, scores)
    num_pos = int(labels.sum())
    num_neg = labels.size - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(
            f"roc_auc needs both classes, got {num_pos} positives and {num_neg} negatives; "
            "the AUC is undefined on this set."
        )
    rank_sum = stats.rankdata(scores)[labels].sum()  # ties share the mean of their ranks
    return float((rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def sensitivity_at_specificity(
    binary_labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float], specificity: float
) -> float:
    """Sensitivity at the lowest operating point whose specificity reaches `specificity`.

    The threshold is chosen on the negatives only: with positives predicted for `score > t`, t is the smallest
    negative score such that at least ceil(specificity * num_negatives) negatives score <= t (t = -inf when the
    target is 0). Ties: negatives tied at t all count as true negatives, so the achieved specificity can exceed
    the target; positives tied at t count as missed (score > t is required), so sensitivity is never flattered
    by ties.

    Args:
      binary_labels: [n] 0 (negative) or 1 (positive).
      scores: float[n], higher means more likely positive.
      specificity: target specificity in [0, 1].

    Returns:
      The share of positives with score > t.

    Raises:
      ValueError: if there are no negatives (no threshold can be set) or no positives (sensitivity undefined).
    """
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must lie in [0, 1], got {specificity}.")
    labels, scores = _binary_inputs(binary_labels, scores)
    negatives = np.sort(scores[~labels])
    positives = scores[labels]
    if negatives.size == 0 or positives.size == 0:
        raise ValueError(
            f"sensitivity_at_specificity needs both classes, got {positives.size} positives and "
            f"{negatives.size} negatives."
        )
    needed = math.ceil(specificity * negatives.size - 1e-9)  # tolerance: 0.9 * 10 is 9.000000000000002
    threshold = -np.inf if needed <= 0 else negatives[needed - 1]
    return float(np.mean(positives > threshold))


def operating_point(binary_labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float],
                    sensitivity: float) -> dict:
    """The referral threshold that reaches `sensitivity`: the highest t such that positives with score >= t are at
    least that share of the positives (the rule "refer when score >= t"), with the sensitivity and specificity it
    has on these examples.

    Returns:
      {"threshold", "sensitivity", "specificity", "target_sensitivity", "num_positive", "num_negative"}.

    Raises:
      ValueError: without both classes.
    """
    labels, scores = _binary_inputs(binary_labels, scores)
    positives = np.sort(scores[labels])[::-1]
    negatives = scores[~labels]
    if positives.size == 0 or negatives.size == 0:
        raise ValueError(f"operating_point needs both classes, got {positives.size} positives and "
                         f"{negatives.size} negatives.")
    needed = max(1, math.ceil(sensitivity * positives.size - 1e-9))
    t = float(positives[needed - 1])
    return {"threshold": t, "sensitivity": float(np.mean(positives >= t)),
            "specificity": float(np.mean(negatives < t)), "target_sensitivity": float(sensitivity),
            "num_positive": int(positives.size), "num_negative": int(negatives.size)}


def _binary_task(binary_labels: np.ndarray, scores: np.ndarray) -> dict:
    num_pos = int(binary_labels.sum())
    num_neg = int(binary_labels.size - num_pos)
    both = num_pos > 0 and num_neg > 0
    task = {
        "auc": roc_auc(binary_labels, scores) if both else None,
        "accuracy": accuracy(binary_labels, (scores > 0.5).astype(binary_labels.dtype)),
    }
    for target in REPORTED_SPECIFICITIES:
        key = f"sensitivity_at_specificity_{round(target * 100)}"
        task[key] = sensitivity_at_specificity(binary_labels, scores, target) if both else None
    task["num_positive"] = num_pos
    task["num_negative"] = num_neg
    return task


def binary_tasks(labels: np.ndarray | Sequence[int], probs: np.ndarray) -> dict:
    """The two screening tasks derived from 5-grade predictions.

    normal vs abnormal: positive = grade 1-4, score = 1 - p0. referable vs non-referable: positive = grade 2-4,
    score = p2 + p3 + p4. For each: AUC, accuracy of `score > 0.5`, sensitivity at 90% and 95% specificity
    (`sensitivity_at_specificity`), and the class counts. Metrics undefined on the given set (AUC and sensitivity
    when one class is absent) are None.

    Args:
      labels: int[n] grades in [0, K).
      probs: float[n, K] grade probabilities, K >= 3.

    Returns:
      {"normal_vs_abnormal": {...}, "referable_vs_non_referable": {...}}, each with keys auc, accuracy,
      sensitivity_at_specificity_90, sensitivity_at_specificity_95, num_positive, num_negative.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 3:
        raise ValueError(f"probs must be [n, K] with K >= 3 grades, got shape {probs.shape}.")
    labels = _as_grades(labels, probs.shape[1], "labels")
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels ({labels.shape[0]}) and probs ({probs.shape[0]}) differ in length.")
    return {
        "normal_vs_abnormal": _binary_task((labels >= 1).astype(np.int64), 1.0 - probs[:, 0]),
        "referable_vs_non_referable": _binary_task((labels >= 2).astype(np.int64), probs[:, 2:].sum(axis=1)),
    }


# ---------------------------------------------------------------------------------------------------------------
# Reports.
# ---------------------------------------------------------------------------------------------------------------


def grading_report(
    labels: np.ndarray | Sequence[int], probs: np.ndarray, thresholds: np.ndarray | Sequence[float] | None = None
) -> dict:
    """All grading metrics of one evaluation, as plain Python values (json.dumps works on it).

    Args:
      labels: int[n] true grades in [0, K).
      probs: float[n, K] predicted grade probabilities.
      thresholds: optional float[K - 1] cut points on the expected grade (fitted on validation with
        `fit_thresholds`); when given, the report adds kappa and accuracy of the thresholded expected grade.

    Returns:
      {"num_examples", "kappa" (of the argmax), "accuracy", "confusion_matrix" (nested lists, rows = truth),
      optionally "kappa_thresholded", "accuracy_thresholded", "confusion_matrix_thresholded", "thresholds",
      and the two `binary_tasks` entries}.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [n, num_classes], got shape {probs.shape}.")
    num_classes = probs.shape[1]
    labels = _as_grades(labels, num_classes, "labels")
    predictions = np.argmax(probs, axis=1)
    report = {
        "num_examples": int(labels.size),
        "kappa": quadratic_weighted_kappa(labels, predictions, num_classes),
        "accuracy": accuracy(labels, predictions),
        "confusion_matrix": confusion_matrix(labels, predictions, num_classes).tolist(),
    }
    if thresholds is not None:
        thresholded = apply_thresholds(expected_grade(probs), thresholds)
        report["thresholds"] = [float(t) for t in np.asarray(thresholds)]
        report["kappa_thresholded"] = quadratic_weighted_kappa(labels, thresholded, num_classes)
        report["accuracy_thresholded"] = accuracy(labels, thresholded)
        report["confusion_matrix_thresholded"] = confusion_matrix(labels, thresholded, num_classes).tolist()
    report.update(binary_tasks(labels, probs))
    return report


ABLATION_COLUMNS = (
    ("kappa", ("kappa",)),
    ("kappa(thr)", ("kappa_thresholded",)),
    ("acc", ("accuracy",)),
    ("AUC normal", ("normal_vs_abnormal", "auc")),
    ("AUC referable", ("referable_vs_non_referable", "auc")),
)


def format_ablation_table(rows: Mapping[str, Mapping]) -> str:
    """An aligned text table of grading reports, one model variant per row.

    Args:
      rows: variant name (e.g. "M-Net", "M-Net + A-Net", "Zoom-in-Net") -> its `grading_report`, in display
        order. A missing or None value prints as "-".

    Returns:
      The table: a header line, a rule, one line per row; numbers with three decimals; a kappa(thr) from thresholds
      fitted on the same split (`thresholds_in_sample`) carries a * and a note under the table.
    """
    header = ["model"] + [name for name, _ in ABLATION_COLUMNS]
    lines, in_sample = [], False
    for name, report in rows.items():
        cells = [str(name)]
        for _, path in ABLATION_COLUMNS:
            value = report
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            star = path == ("kappa_thresholded",) and value is not None and report.get("thresholds_in_sample")
            in_sample |= bool(star)
            cells.append("-" if value is None else f"{float(value):.3f}" + ("*" if star else ""))
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    rule = "  ".join("-" * width for width in widths)
    note = ["* thresholds fitted on these same photographs (in-sample: optimistic)"] if in_sample else []
    return "\n".join([render(header), rule, *(render(cells) for cells in lines), *note])


# ---------------------------------------------------------------------------------------------------------------
# Lesion localisation.
# ---------------------------------------------------------------------------------------------------------------


def lesion_recall_at_k(
    pred_boxes: np.ndarray,
    lesion_boxes: np.ndarray,
    lesion_kinds: np.ndarray,
    lesion_valid: np.ndarray,
    ks: Iterable[int] = range(1, 9),
    kind_names: Sequence[str] = LESION_KINDS,
) -> dict:
    """Share of annotated lesions whose centre lies inside one of the top-k predicted boxes.

    Boxes are integer pixel coordinates (y0, x0, y1, x1), end exclusive. A lesion's centre is the pixel
    ((y0 + y1) // 2, (x0 + x1) // 2); it is inside a predicted box when py0 <= cy < py1 and px0 <= cx < px1. For
    integer boxes this is the same as the continuous centre lying in the half-open box, so a centre on a
    predicted box's end edge is outside it. When k exceeds the number of predicted boxes N, all N are used.

    Args:
      pred_boxes: int[B, N, 4] selected boxes per image, best first.
      lesion_boxes: int[B, L, 4] annotated lesion boxes, padded to L.
      lesion_kinds: int[B, L] index into `kind_names` of each lesion.
      lesion_valid: bool[B, L], False for padding.
      ks: the k values to report.
      kind_names: names of the lesion kind indices.

    Returns:
      A flat dict: "num_lesions" and "recall@k" for every k over all lesions, and "<kind>/num_lesions",
      "<kind>/recall@k" per kind. A recall is present only when its group has at least one lesion: kinds with no
      valid lesion are absent, and with no lesions at all only "num_lesions": 0 is returned.
    """
    pred_boxes = np.asarray(pred_boxes)
    lesion_boxes = np.asarray(lesion_boxes)
    lesion_kinds = np.asarray(lesion_kinds)
    lesion_valid = np.asarray(lesion_valid, dtype=bool)
    if pred_boxes.ndim != 3 or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes must be [B, N, 4], got shape {pred_boxes.shape}.")
    if lesion_boxes.ndim != 3 or lesion_boxes.shape[-1] != 4 or lesion_boxes.shape[0] != pred_boxes.shape[0]:
        raise ValueError(f"lesion_boxes must be [B, L, 4] with B = {pred_boxes.shape[0]}, got {lesion_boxes.shape}.")
    if lesion_kinds.shape != lesion_boxes.shape[:2] or lesion_valid.shape != lesion_boxes.shape[:2]:
        raise ValueError(
            f"lesion_kinds {lesion_kinds.shape} and lesion_valid {lesion_valid.shape} must be {lesion_boxes.shape[:2]}."
        )
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}.")
    valid_kinds = lesion_kinds[lesion_valid]
    if valid_kinds.size and (valid_kinds.min() < 0 or valid_kinds.max() >= len(kind_names)):
        raise ValueError(f"lesion kinds must index kind_names ({len(kind_names)} names), got {np.unique(valid_kinds)}.")

    centre_y = (lesion_boxes[..., 0] + lesion_boxes[..., 2]) // 2  # [B, L]
    centre_x = (lesion_boxes[..., 1] + lesion_boxes[..., 3]) // 2
    pred = pred_boxes[:, None, :, :]  # [B, 1, N, 4]
    inside = (
        (pred[..., 0] <= centre_y[..., None])
        & (centre_y[..., None] < pred[..., 2])
        & (pred[..., 1] <= centre_x[..., None])
        & (centre_x[..., None] < pred[..., 3])
    )  # [B, L, N]
    # first_hit[b, l]: 1-based rank of the first box containing the centre; above every k if none does.
    first_hit = np.where(inside.any(axis=-1), np.argmax(inside, axis=-1) + 1, np.iinfo(np.int64).max)

    def group(mask: np.ndarray, prefix: str) -> dict:
        hits = first_hit[mask]
        out = {f"{prefix}num_lesions": int(hits.size)}
        if hits.size:
            for k in ks:
                out[f"{prefix}recall@{k}"] = float(np.mean(hits <= k))
        return out

    result = group(lesion_valid, "")
    for index, name in enumerate(kind_names):
        mask = lesion_valid & (lesion_kinds == index)
        if mask.any():
            result.update(group(mask, f"{name}/"))
    return result


def _centres(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centre pixel (y, x) of integer boxes (..., 4), as `lesion_recall_at_k` defines it."""
    boxes = np.asarray(boxes, np.int64)
    return (boxes[..., 0] + boxes[..., 2]) // 2, (boxes[..., 1] + boxes[..., 3]) // 2


def random_box_hit_probability(points_y: np.ndarray, points_x: np.ndarray, fov_rows: np.ndarray,
                               patch_size: int) -> np.ndarray:
    """Probability that one random box contains each point, exactly (no sampling).

    The random box is the box a region selector would cut around a centre drawn uniformly from the field-of-view
    pixels: centre pixel c (continuous centre c + 0.5), top-left corner round_half_up(c + 0.5 - P/2) clipped into
    [0, S - P] per axis, side P (the rule of `regions.cell_boxes`, so the random boxes have the selected boxes'
    size and stay inside the image the same way). Because the corner is non-decreasing in c, the centres whose box
    holds a point form a rectangle of rows x columns; the probability is the FOV area inside that rectangle over
    the FOV area.

    Args:
      points_y, points_x: int (M,) pixel coordinates in [0, S).
      fov_rows: int (S, 2), the image's field of view as [x0, x1) per row (`zoomin_jax.data.fov`).
      patch_size: P, the boxes' side, 1 <= P <= S.

    Returns:
      float64 (M,) in [0, 1]; zeros when the FOV is empty.
    """
    fov_rows = np.asarray(fov_rows, np.int64)
    size = fov_rows.shape[0]
    if not 1 <= patch_size <= size:
        raise ValueError(f"patch_size {patch_size} must be between 1 and the image size {size}.")
    total = np.maximum(fov_rows[:, 1] - fov_rows[:, 0], 0).sum()
    py = np.asarray(points_y, np.int64).reshape(-1, 1)
    px = np.asarray(points_x, np.int64).reshape(-1, 1)
    if total == 0 or py.size == 0:
        return np.zeros(py.shape[0])
    corner = np.clip((2 * np.arange(size) + 2 - patch_size) // 2, 0, size - patch_size)[None]  # (1, S)
    rows = (corner <= py) & (py < corner + patch_size)  # (M, S): centre rows whose box spans the point's row
    cols = (corner <= px) & (px < corner + patch_size)  # an interval of centre columns
    has = cols.any(axis=1)
    xa = np.argmax(cols, axis=1)[:, None]
    xb = size - np.argmax(cols[:, ::-1], axis=1)[:, None]
    overlap = np.clip(np.minimum(xb, fov_rows[None, :, 1]) - np.maximum(xa, fov_rows[None, :, 0]), 0, None)
    favourable = np.where(has, (rows * overlap).sum(axis=1), 0)
    return favourable / total


def lesion_recall_chance(
    lesion_boxes: np.ndarray,
    lesion_kinds: np.ndarray,
    lesion_valid: np.ndarray,
    fov_rows: np.ndarray,
    patch_size: int,
    ks: Iterable[int] = range(1, 9),
    kind_names: Sequence[str] = LESION_KINDS,
) -> dict:
    """The recall@k that k random boxes would reach: the chance level of `lesion_recall_at_k`.

    Per image, k boxes of side `patch_size` are drawn independently, each centred on a pixel drawn uniformly from
    the image's field of view (`random_box_hit_probability`); a lesion is found when its centre (as in
    `lesion_recall_at_k`) lies in one of them. The expected recall is the mean over lesions of 1 - (1 - p)^k, p the
    probability that one random box holds the lesion's centre: computed exactly, not sampled. Independent boxes may
    overlap, which the model's boxes (suppressed above an IoU) rarely do, so this chance is slightly below that of
    k non-overlapping random boxes (by about the pairwise overlap, small while k P^2 is small against the FOV).

    Args:
      lesion_boxes, lesion_kinds, lesion_valid: as in `lesion_recall_at_k` ([B, L, 4], [B, L], [B, L]).
      fov_rows: int [B, S, 2], each image's field of view ([x0, x1) per row).
      patch_size: side of the selected boxes, in pixels.
      ks, kind_names: as in `lesion_recall_at_k`.

    Returns:
      "chance@k" over all lesions and "<kind>/chance@k" per kind present (keys absent where a group has no lesion).
    """
    lesion_boxes = np.asarray(lesion_boxes)
    lesion_kinds = np.asarray(lesion_kinds)
    lesion_valid = np.asarray(lesion_valid, bool)
    fov_rows = np.asarray(fov_rows)
    if fov_rows.ndim != 3 or fov_rows.shape[0] != lesion_boxes.shape[0] or fov_rows.shape[-1] != 2:
        raise ValueError(f"fov_rows must be [B, S, 2] with B = {lesion_boxes.shape[0]}, got {fov_rows.shape}.")
    cy, cx = _centres(lesion_boxes)
    p = np.zeros(lesion_valid.shape)
    for b in np.flatnonzero(lesion_valid.any(axis=1)):
        v = lesion_valid[b]
        p[b, v] = random_box_hit_probability(cy[b, v], cx[b, v], fov_rows[b], patch_size)
    ks = [int(k) for k in ks]
    out = {}

    def group(mask: np.ndarray, prefix: str) -> None:
        if mask.any():
            for k in ks:
                out[f"{prefix}chance@{k}"] = float(np.mean(1.0 - (1.0 - p[mask]) ** k))

    group(lesion_valid, "")
    for index, name in enumerate(kind_names):
        group(lesion_valid & (lesion_kinds == index), f"{name}/")
    return out


def optic_disc_first(
    pred_boxes: np.ndarray,
    optic_disc: np.ndarray,
    optic_disc_valid: np.ndarray,
    fov_rows: np.ndarray | None = None,
    patch_size: int | None = None,
) -> dict:
    """How often the first (best) selected box sits on the optic disc: a bright normal structure, not a lesion.

    Args:
      pred_boxes: int [B, N, 4] selected boxes, best first.
      optic_disc: int [B, 4] the optic disc's box (y0, x0, y1, x1) per image.
      optic_disc_valid: bool [B], False where the image has no optic-disc box.
      fov_rows, patch_size: when given, also the chance level: the probability that one random box
        (`random_box_hit_probability`) holds the disc's centre, averaged over the images.

    Returns:
      {"num_images": images with a disc box, "first_box": share whose first box contains the disc's centre pixel
      (`lesion_recall_at_k`'s centre and containment rule), "first_box_chance" (with fov_rows)}; only
      "num_images": 0 without any disc box.
    """
    pred_boxes = np.asarray(pred_boxes)
    valid = np.asarray(optic_disc_valid, bool)
    out: dict = {"num_images": int(valid.sum())}
    if not valid.any():
        return out
    cy, cx = _centres(np.asarray(optic_disc)[valid])
    first = pred_boxes[valid, 0]
    inside = (first[:, 0] <= cy) & (cy < first[:, 2]) & (first[:, 1] <= cx) & (cx < first[:, 3])
    out["first_box"] = float(inside.mean())
    if fov_rows is not None and patch_size is not None:
        rows = np.asarray(fov_rows)[valid]
        chance = [random_box_hit_probability(cy[i:i + 1], cx[i:i + 1], rows[i], patch_size)[0]
                  for i in range(len(rows))]
        out["first_box_chance"] = float(np.mean(chance))
    return out


def format_localisation(recall: Mapping | None, disc: Mapping | None, k: int = 4,
                        kind_names: Sequence[str] = LESION_KINDS) -> list[str]:
    """Summary lines of `lesion_recall_at_k` (+ `lesion_recall_chance` keys) and `optic_disc_first`.

    E.g. "lesion recall@4 0.291 (chance 0.270; 412 lesions); haemorrhage 0.300 (chance 0.281; 150), ..." and
    "optic disc centre in the first box: 0.301 of 83 photographs (chance 0.052)".
    """

    def one(prefix: str) -> str:
        value = recall.get(f"{prefix}recall@{k}")
        chance = recall.get(f"{prefix}chance@{k}")
        text = "-" if value is None else f"{value:.3f}"
        text += f" (chance {chance:.3f}; " if chance is not None else " ("
        return text + f"{recall.get(f'{prefix}num_lesions', 0)} lesions)"

    lines = []
    if recall:
        parts = [f"lesion recall@{k} {one('')}"]
        parts += [f"{name} {one(name + '/')}" for name in kind_names if f"{name}/num_lesions" in recall]
        lines.append("; ".join(parts))
    if disc and disc.get("num_images"):
        line = f"optic disc centre in the first box: {disc['first_box']:.3f} of {disc['num_images']} photographs"
        if "first_box_chance" in disc:
            line += f" (chance {disc['first_box_chance']:.3f})"
        lines.append(line)
    return lines
