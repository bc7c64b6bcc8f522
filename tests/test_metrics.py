"""Tests of zoomin_jax.metrics against independent reference implementations and hand-computed values."""

import itertools
import json

import numpy as np
import pytest

from zoomin_jax import metrics

# ---------------------------------------------------------------------------------------------------------------
# Independent references, written differently from the library on purpose.
# ---------------------------------------------------------------------------------------------------------------


def _cohen_weighted_kappa_by_pairs(a, b, num_classes):
    """Cohen's weighted kappa as 1 - (mean disagreement of matched pairs) / (mean disagreement of all pairs)."""

    def weight(i, j):
        return (i - j) ** 2 / (num_classes - 1) ** 2

    n = len(a)
    observed = sum(weight(a[i], b[i]) for i in range(n)) / n
    chance = sum(weight(a[i], b[j]) for i in range(n) for j in range(n)) / (n * n)
    return 1.0 - observed / chance


def _auc_by_pairs(labels, scores):
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


# ---------------------------------------------------------------------------------------------------------------
# Kappa, confusion, accuracy.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_kappa_matches_pairwise_cohen_formula(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.integers(0, 5, n)
    # Correlated predictions so kappa is far from 0, with some examples fully random.
    predictions = np.clip(labels + rng.integers(-1, 2, n), 0, 4)
    noisy = rng.random(n) < 0.3
    predictions[noisy] = rng.integers(0, 5, noisy.sum())
    expected = _cohen_weighted_kappa_by_pairs(labels.tolist(), predictions.tolist(), 5)
    assert metrics.quadratic_weighted_kappa(labels, predictions) == pytest.approx(expected, abs=1e-12)


def test_kappa_is_symmetric():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    b[:120] = a[:120]
    forward = metrics.quadratic_weighted_kappa(a, b)
    assert forward == pytest.approx(metrics.quadratic_weighted_kappa(b, a), abs=1e-15)
    assert 0.3 < forward < 1.0


def test_kappa_hand_computed_values():
    assert metrics.quadratic_weighted_kappa([0, 1, 2, 3, 4, 2], [0, 1, 2, 3, 4, 2]) == 1.0
    # K=3, w = (i-j)^2/4. O: (0,0), (1,2), (2,2) -> sum wO = 1/4. Histograms [1,1,1] and [1,0,2]: sum wE = 5/4.
    assert metrics.quadratic_weighted_kappa([0, 1, 2], [0, 2, 2], num_classes=3) == pytest.approx(0.8)
    # Complete reversal of the extremes: sum wO = 2, sum wE = 1.
    assert metrics.quadratic_weighted_kappa([0, 4], [4, 0]) == pytest.approx(-1.0)


def test_kappa_scale_is_fixed_by_num_classes():
    # Kaggle's reference infers the scale from the data; here K is fixed, so the weights differ with K.
    k5 = metrics.quadratic_weighted_kappa([0, 1, 2], [0, 2, 2], num_classes=5)
    assert k5 == pytest.approx(_cohen_weighted_kappa_by_pairs([0, 1, 2], [0, 2, 2], 5))
    assert k5 == pytest.approx(0.8)  # kappa is invariant to the scale of the quadratic weights


def test_kappa_degenerate_cases():
    # Both raters constant and equal: 0/0, defined as perfect agreement.
    assert metrics.quadratic_weighted_kappa([2, 2, 2], [2, 2, 2]) == 1.0
    # Both constant but different: sum wO = sum wE, kappa 0.
    assert metrics.quadratic_weighted_kappa([1, 1, 1], [3, 3, 3]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        metrics.quadratic_weighted_kappa([0, 5], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.quadratic_weighted_kappa([], [])


def test_confusion_matrix_and_accuracy():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert metrics.accuracy([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2]) == pytest.approx(4 / 6)


# ---------------------------------------------------------------------------------------------------------------
# Thresholds on the expected grade.
# ---------------------------------------------------------------------------------------------------------------


def test_expected_grade_and_apply_thresholds():
    probs = np.array([[1.0, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 1.0]])
    np.testing.assert_allclose(metrics.expected_grade(probs), [0.0, 1.5, 4.0])
    # A value equal to a threshold goes to the upper grade.
    np.testing.assert_array_equal(
        metrics.apply_thresholds([0.0, 0.5, 0.49, 1.5, 3.6, 9.0], [0.5, 1.5, 2.5, 3.5]), [0, 1, 0, 2, 4, 4]
    )


def _compressed_grades(seed, n=3000):
    """Expected grades from a known monotone but compressed mapping, so rounding cuts in the wrong places."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(5, size=n, p=[0.6, 0.1, 0.15, 0.08, 0.07])
    centres = np.array([0.0, 0.3, 0.7, 1.6, 2.5])
    return centres[labels] + rng.normal(0, 0.08, n), labels, centres


def test_fit_thresholds_beats_rounding_and_recovers_the_mapping():
    expected, labels, centres = _compressed_grades(0)
    thresholds = metrics.fit_thresholds(expected, labels)
    assert thresholds.shape == (4,) and np.all(np.diff(thresholds) > 0)
    fitted = metrics.quadratic_weighted_kappa(labels, metrics.apply_thresholds(expected, thresholds))
    rounded = metrics.quadratic_weighted_kappa(labels, np.clip(np.round(expected), 0, 4).astype(int))
    assert fitted >= rounded + 0.1
    assert fitted > 0.95
    # Each cut lies between the centres of the two grades it separates.
    assert np.all(thresholds > centres[:-1]) and np.all(thresholds < centres[1:])
    np.testing.assert_array_equal(thresholds, metrics.fit_thresholds(expected, labels))  # deterministic


@pytest.mark.parametrize("seed", range(3))
def test_fit_thresholds_is_coordinatewise_optimal(seed):
    # Guards the vectorised candidate scoring: no single-threshold move may improve the true kappa.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 300)
    expected = np.clip(labels * 0.7 + rng.normal(0, 0.8, 300), 0, 4)
    thresholds = metrics.fit_thresholds(expected, labels)
    best = metrics.quadratic_weighted_kappa(labels, metrics.apply_thresholds(expected, thresholds))
    rounded = metrics.quadratic_weighted_kappa(labels, metrics.apply_thresholds(expected, [0.5, 1.5, 2.5, 3.5]))
    assert best >= rounded
    for j in range(4):
        low = thresholds[j - 1] if j else -1.0
        high = thresholds[j + 1] if j < 3 else 5.0
        for value in np.unique(np.concatenate([np.linspace(low, high, 200)[1:-1], expected])):
            if not low < value < high:
                continue
            moved = thresholds.copy()
            moved[j] = value
            kappa = metrics.quadratic_weighted_kappa(labels, metrics.apply_thresholds(expected, moved))
            assert kappa <= best + 1e-12


# ---------------------------------------------------------------------------------------------------------------
# Binary tasks.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    labels[:2] = [0, 1]
    scores = np.round(rng.random(150) + 0.3 * labels, 1)  # coarse rounding: many ties within and across classes
    assert metrics.roc_auc(labels, scores) == pytest.approx(_auc_by_pairs(labels, scores), abs=1e-12)


def test_auc_known_values():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9]) == 1.0
    assert metrics.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.9]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # One positive above two negatives, tied with the third: (1 + 1 + 0.5) / 3.
    assert metrics.roc_auc([0, 0, 0, 1], [0.1, 0.2, 0.7, 0.7]) == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match="needs both classes"):
        metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_sensitivity_at_specificity_hand_example():
    negatives = list(range(1, 11))  # scores 1..10
    positives = [5, 9, 9.5, 10, 12]
    labels = [0] * 10 + [1] * 5
    scores = negatives + positives
    # 90%: 9 of 10 negatives must score <= t -> t = 9; the positive tied at 9 is missed.
    assert metrics.sensitivity_at_specificity(labels, scores, 0.9) == pytest.approx(3 / 5)
    # 95%: ceil(9.5) = 10 negatives -> t = 10 -> only 12 counts.
    assert metrics.sensitivity_at_specificity(labels, scores, 0.95) == pytest.approx(1 / 5)
    assert metrics.sensitivity_at_specificity(labels, scores, 0.8) == pytest.approx(4 / 5)
    assert metrics.sensitivity_at_specificity(labels, scores, 0.0) == 1.0
    # Tied negatives: 50% needs 2 of 4, t = 0.5 covers three of them (specificity 75%).
    assert metrics.sensitivity_at_specificity([0, 0, 0, 0, 1, 1], [0.1, 0.5, 0.5, 0.5, 0.5, 0.6], 0.5) == 0.5
    with pytest.raises(ValueError):
        metrics.sensitivity_at_specificity([1, 1], [0.1, 0.2], 0.9)


def test_binary_tasks_use_the_documented_scores():
    labels = np.array([0, 0, 1, 1, 2, 3, 4, 4])
    probs = np.array(
        [
            [0.9, 0.1, 0, 0, 0],
            [0.6, 0.1, 0.3, 0, 0],
            [0.3, 0.7, 0, 0, 0],
            [0.4, 0.2, 0.4, 0, 0],
            [0.1, 0.5, 0.4, 0, 0],
            [0.0, 0.0, 0.2, 0.8, 0],
            [0.0, 0.0, 0.0, 0.1, 0.9],
            [0.2, 0.2, 0.0, 0.0, 0.6],
        ]
    )
    tasks = metrics.binary_tasks(labels, probs)
    normal, referable = tasks["normal_vs_abnormal"], tasks["referable_vs_non_referable"]
    assert normal["auc"] == pytest.approx(_auc_by_pairs((labels >= 1).tolist(), (1 - probs[:, 0]).tolist()))
    assert normal["auc"] == 1.0
    referable_scores = probs[:, 2:].sum(axis=1)
    assert referable["auc"] == pytest.approx(_auc_by_pairs((labels >= 2).tolist(), referable_scores.tolist()))
    assert referable["auc"] < 1.0  # grade-1 example with p2 = 0.4 outranks the grade-2 example with 0.4 (tie)
    assert normal["accuracy"] == pytest.approx(1.0)
    assert referable["accuracy"] == pytest.approx(np.mean((referable_scores > 0.5) == (labels >= 2)))
    assert (normal["num_positive"], normal["num_negative"]) == (6, 2)
    assert (referable["num_positive"], referable["num_negative"]) == (4, 4)

    only_normal = metrics.binary_tasks([0, 0], probs[:2])["normal_vs_abnormal"]
    assert only_normal["auc"] is None and only_normal["sensitivity_at_specificity_90"] is None


# ---------------------------------------------------------------------------------------------------------------
# Reports.
# ---------------------------------------------------------------------------------------------------------------


def _random_probs(rng, labels, num_classes=5):
    logits = rng.normal(0, 1, (labels.size, num_classes))
    logits[np.arange(labels.size), labels] += 2.0
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def test_grading_report_is_strict_json_and_consistent():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 100)
    probs = _random_probs(rng, labels)
    thresholds = metrics.fit_thresholds(metrics.expected_grade(probs), labels)
    report = metrics.grading_report(labels, probs, thresholds)
    decoded = json.loads(json.dumps(report, allow_nan=False))
    assert decoded["kappa"] == pytest.approx(metrics.quadratic_weighted_kappa(labels, probs.argmax(1)))
    assert decoded["kappa_thresholded"] == pytest.approx(
        metrics.quadratic_weighted_kappa(labels, metrics.apply_thresholds(metrics.expected_grade(probs), thresholds))
    )
    assert np.sum(decoded["confusion_matrix"]) == 100
    assert decoded["normal_vs_abnormal"]["auc"] == pytest.approx(metrics.roc_auc(labels >= 1, 1 - probs[:, 0]))
    assert "kappa_thresholded" not in metrics.grading_report(labels, probs)
    # A set with one class only stays strict JSON (undefined AUCs are null).
    json.dumps(metrics.grading_report(np.zeros(4, int), probs[:4]), allow_nan=False)


def test_format_ablation_table():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, 60)
    full = metrics.grading_report(labels, _random_probs(rng, labels), thresholds=[0.5, 1.5, 2.5, 3.5])
    rows = {"M-Net": metrics.grading_report(labels, _random_probs(rng, labels)), "Zoom-in-Net": full}
    lines = metrics.format_ablation_table(rows).splitlines()
    assert lines[0].split() == ["model", "kappa", "kappa(thr)", "acc", "AUC", "normal", "AUC", "referable"]
    assert len({len(line) for line in lines}) == 1  # aligned
    assert lines[2].startswith("M-Net") and lines[2].split()[2] == "-"  # no thresholds for that row
    assert lines[3].split()[1:] == [
        f"{full['kappa']:.3f}",
        f"{full['kappa_thresholded']:.3f}",
        f"{full['accuracy']:.3f}",
        f"{full['normal_vs_abnormal']['auc']:.3f}",
        f"{full['referable_vs_non_referable']['auc']:.3f}",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Lesion recall.
# ---------------------------------------------------------------------------------------------------------------


def test_lesion_recall_hand_example():
    pred_boxes = np.array(
        [
            [[0, 0, 15, 15], [20, 20, 40, 40]],
            [[0, 0, 16, 16], [50, 50, 60, 60]],
        ]
    )
    lesion_boxes = np.array(
        [
            [[10, 10, 20, 20], [22, 22, 26, 26], [0, 0, 3, 3]],  # centres (15,15): on box 0's end edge; (24,24); (1,1)
            [[10, 10, 20, 20], [1, 1, 2, 2], [0, 0, 0, 0]],  # (15,15) inside a box ending at 16; padding; padding
        ]
    )
    lesion_kinds = np.array([[0, 1, 0], [0, 3, 3]])
    lesion_valid = np.array([[True, True, True], [True, False, False]])
    result = metrics.lesion_recall_at_k(pred_boxes, lesion_boxes, lesion_kinds, lesion_valid, ks=[1, 2, 3])
    assert result["num_lesions"] == 4
    assert result["recall@1"] == pytest.approx(2 / 4)  # (1,1) in image 0 and (15,15) in image 1
    assert result["recall@2"] == pytest.approx(3 / 4)  # + (24,24); (15,15) in image 0 is never covered
    assert result["recall@3"] == pytest.approx(3 / 4)  # k > N uses all N boxes
    assert result["microaneurysm/num_lesions"] == 3
    assert result["microaneurysm/recall@1"] == pytest.approx(2 / 3)
    assert result["microaneurysm/recall@2"] == pytest.approx(2 / 3)
    assert result["haemorrhage/recall@1"] == 0.0 and result["haemorrhage/recall@2"] == 1.0
    assert not any(key.startswith("cotton_wool_spot") for key in result)  # only padding has that kind
    nothing = metrics.lesion_recall_at_k(pred_boxes, lesion_boxes, lesion_kinds, np.zeros((2, 3), bool))
    assert nothing == {"num_lesions": 0}


@pytest.mark.parametrize(
    "lesion_box, found",
    [
        ((19, 14, 21, 16), False),  # centre (20, 15): on the predicted box's y end edge (exclusive)
        ((14, 19, 16, 21), False),  # centre (15, 20): on its x end edge
        ((9, 14, 11, 16), True),  # centre (10, 15): on its y start edge (inclusive)
        ((14, 9, 16, 11), True),  # centre (15, 10): on its x start edge
        ((18, 18, 21, 21), True),  # odd size, centre pixel (19, 19): the last pixel inside
        ((19, 19, 22, 22), False),  # odd size, centre (20.5, 20.5) -> pixel (20, 20): just outside
        ((8, 14, 10, 16), False),  # centre (9, 15): just above
    ],
)
def test_lesion_recall_box_edges(lesion_box, found):
    pred_boxes = np.array([[[10, 10, 20, 20]]])
    result = metrics.lesion_recall_at_k(pred_boxes, np.array([[lesion_box]]), np.zeros((1, 1), int), [[True]], ks=[1])
    assert result["recall@1"] == float(found)


def test_lesion_recall_matches_brute_force():
    rng = np.random.default_rng(5)
    b, n, num_lesions = 4, 5, 7
    y0, x0 = rng.integers(0, 80, (b, n)), rng.integers(0, 80, (b, n))
    pred_boxes = np.stack([y0, x0, y0 + 30, x0 + 30], axis=-1)
    ly, lx = rng.integers(0, 100, (b, num_lesions)), rng.integers(0, 100, (b, num_lesions))
    sizes = rng.integers(1, 9, (b, num_lesions))
    lesion_boxes = np.stack([ly, lx, ly + sizes, lx + sizes], axis=-1)
    kinds = rng.integers(0, 3, (b, num_lesions))
    valid = rng.random((b, num_lesions)) < 0.8
    result = metrics.lesion_recall_at_k(pred_boxes, lesion_boxes, kinds, valid, ks=range(1, n + 1))
    for k in range(1, n + 1):
        found = []
        for i, j in itertools.product(range(b), range(num_lesions)):
            if valid[i, j]:
                cy = (lesion_boxes[i, j, 0] + lesion_boxes[i, j, 2]) / 2  # continuous centre, half-open boxes
                cx = (lesion_boxes[i, j, 1] + lesion_boxes[i, j, 3]) / 2
                found.append(any(p[0] <= cy < p[2] and p[1] <= cx < p[3] for p in pred_boxes[i, :k]))
        assert result[f"recall@{k}"] == pytest.approx(np.mean(found))


# ---------------------------------------------------------------------------------------------------------------
# Chance level of lesion recall, and the optic disc under the first box.
# ---------------------------------------------------------------------------------------------------------------


def _band_rows(size, top, bottom):
    """A field of view of whole rows [top, bottom) (a photograph cut at top and bottom, without the disc)."""
    rows = np.zeros((size, 2), int)
    rows[top:bottom] = (0, size)
    return rows


def _one_lesion(centre_y, centre_x):
    return np.array([[[centre_y, centre_x, centre_y + 1, centre_x + 1]]]), np.zeros((1, 1), int), np.ones((1, 1), bool)


def test_chance_is_an_area_ratio_inside_the_image():
    # Rows 20-79 are the field of view: 60 x 100 = 6000 centres. A 10 px box holds the point (50, 50) for the 10 x 10
    # centres around it, all inside: p = 100 / 6000. Near the band, at (22, 50), only the window's rows 20-26 are in
    # the field of view (boxes centred on rows 17-26 reach row 22): p = 70 / 6000.
    rows = _band_rows(100, 20, 80)
    boxes, kinds, valid = _one_lesion(50, 50)
    got = metrics.lesion_recall_chance(boxes, kinds, valid, rows[None], patch_size=10, ks=[1, 4])
    assert got["chance@1"] == pytest.approx(100 / 6000)
    assert got["chance@4"] == pytest.approx(1 - (1 - 100 / 6000) ** 4)
    assert got["microaneurysm/chance@1"] == got["chance@1"]
    boxes, kinds, valid = _one_lesion(22, 50)
    assert metrics.lesion_recall_chance(boxes, kinds, valid, rows[None], 10, ks=[1])["chance@1"] == pytest.approx(
        70 / 6000)


def test_chance_at_the_image_edge_hand_worked():
    # S = 10, P = 4: the box of centre pixel c starts at clip(c - 1, 0, 6). Point (5, 5) is in the boxes of centres
    # 3-6 on each axis: 16 of 100. Point (0, 0) only in those starting at 0, centres 0-1: 4 of 100. Point (9, 9) in
    # those starting at 6, centres 7-9: 9 of 100.
    rows = _band_rows(10, 0, 10)
    for (cy, cx), p in (((5, 5), 0.16), ((0, 0), 0.04), ((9, 9), 0.09)):
        np.testing.assert_allclose(metrics.random_box_hit_probability([cy], [cx], rows, 4), [p])
    # With only rows 3-6 in the field of view, (5, 5) is held by all 4 x 4 of its centres among 40.
    np.testing.assert_allclose(metrics.random_box_hit_probability([5], [5], _band_rows(10, 3, 7), 4), [0.4])
    # No field of view: no chance (and no division by zero).
    np.testing.assert_allclose(metrics.random_box_hit_probability([5], [5], np.zeros((10, 2), int), 4), [0.0])
    with pytest.raises(ValueError, match="patch_size"):
        metrics.random_box_hit_probability([5], [5], rows, 11)


def test_chance_matches_enumerating_every_centre():
    rng = np.random.default_rng(3)
    size, patch = 37, 9
    x0 = rng.integers(0, 15, size)
    rows = np.stack([x0, x0 + rng.integers(0, 22, size)], axis=1)
    rows[:4] = 0  # black band
    ys, xs = rng.integers(0, size, 40), rng.integers(0, size, 40)
    got = metrics.random_box_hit_probability(ys, xs, rows, patch)
    centres = [(y, x) for y in range(size) for x in range(rows[y, 0], rows[y, 1])]

    def start(c):  # the box of a centre pixel: round half up of (c + 0.5) - P / 2, kept inside the image
        return min(max(int(np.floor(c + 0.5 - patch / 2 + 0.5)), 0), size - patch)

    for y, x, p in zip(ys, xs, got, strict=True):
        held = sum(start(cy) <= y < start(cy) + patch and start(cx) <= x < start(cx) + patch for cy, cx in centres)
        assert p == pytest.approx(held / len(centres))


def test_chance_at_k_matches_a_seeded_monte_carlo():
    """k independent random boxes, sampled (20,000 draws, seeded: the standard error is about 0.003)."""
    rng = np.random.default_rng(11)
    size, patch, k = 60, 14, 3
    yy, xx = np.mgrid[:size, :size] + 0.5
    fov_mask = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 29**2) & (yy > 8) & (yy < 52)  # a disc cut at top and bottom
    rows = np.stack([np.argmax(fov_mask, 1), size - np.argmax(fov_mask[:, ::-1], 1)], 1) * fov_mask.any(1)[:, None]
    boxes = np.array([[[10, 12, 13, 15], [30, 30, 31, 31], [45, 5, 50, 9], [0, 0, 0, 0]]])
    kinds, valid = np.array([[1, 2, 2, 0]]), np.array([[True, True, True, False]])
    got = metrics.lesion_recall_chance(boxes, kinds, valid, rows[None], patch, ks=[k])
    cy, cx = np.nonzero(fov_mask)
    draws = rng.integers(0, len(cy), (20000, k))
    start_y = np.clip(np.floor(cy[draws] + 1 - patch / 2).astype(int), 0, size - patch)
    start_x = np.clip(np.floor(cx[draws] + 1 - patch / 2).astype(int), 0, size - patch)
    found = []
    for y, x in ((11, 13), (30, 30), (47, 7)):
        found.append(((start_y <= y) & (y < start_y + patch) & (start_x <= x) & (x < start_x + patch)).any(1).mean())
    assert got[f"chance@{k}"] == pytest.approx(np.mean(found), abs=0.01)
    assert got[f"haemorrhage/chance@{k}"] == pytest.approx(found[0], abs=0.01)
    assert got[f"hard_exudate/chance@{k}"] == pytest.approx(np.mean(found[1:]), abs=0.01)
    assert not any(key.startswith("microaneurysm") for key in got)  # only padding has that kind


def test_optic_disc_first_box_hand_example():
    pred_boxes = np.array([
        [[0, 0, 10, 10], [20, 20, 30, 30]],  # disc centre (5, 5) in the first box
        [[20, 20, 30, 30], [0, 0, 10, 10]],  # disc centre (5, 5) only in the second box: does not count
        [[0, 0, 10, 10], [0, 0, 10, 10]],  # no disc box in this photograph
        [[0, 0, 10, 10], [0, 0, 10, 10]],  # disc centre (10, 5): on the first box's end edge, outside
    ])
    disc = np.array([[2, 2, 8, 8], [2, 2, 8, 8], [0, 0, 0, 0], [8, 3, 12, 7]])
    valid = np.array([True, True, False, True])
    got = metrics.optic_disc_first(pred_boxes, disc, valid)
    assert got == {"num_images": 3, "first_box": pytest.approx(1 / 3)}
    # Chance, on a 20 px image whose field of view is rows and columns 0-9 (100 centres), 4 px boxes starting at
    # clip(c - 1, 0, 16): (5, 5) is held by centres 3-6 x 3-6 (16 of 100); (10, 5) by centre rows 8-11, of which 8-9
    # are in the field of view, x columns 3-6 (8 of 100).
    rows = np.zeros((4, 20, 2), int)
    rows[:, :10] = (0, 10)
    got = metrics.optic_disc_first(pred_boxes, disc, valid, rows, patch_size=4)
    assert got["first_box_chance"] == pytest.approx((0.16 + 0.16 + 0.08) / 3)
    assert metrics.optic_disc_first(pred_boxes, disc, np.zeros(4, bool)) == {"num_images": 0}


def test_format_localisation_prints_recall_next_to_chance():
    recall = {"num_lesions": 12, "recall@4": 0.5, "chance@4": 0.25, "haemorrhage/num_lesions": 4,
              "haemorrhage/recall@4": 0.75, "haemorrhage/chance@4": 0.2}
    lines = metrics.format_localisation(recall, {"num_images": 8, "first_box": 0.125, "first_box_chance": 0.05})
    assert lines == ["lesion recall@4 0.500 (chance 0.250; 12 lesions); haemorrhage 0.750 (chance 0.200; 4 lesions)",
                     "optic disc centre in the first box: 0.125 of 8 photographs (chance 0.050)"]
    assert json.loads(json.dumps(recall)) == recall


def test_kappa_auc_and_confusion_agree_with_scikit_learn():
    """scikit-learn as a second oracle, on random grades with many ties in the scores."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(11)
    for n in (7, 60, 500):
        labels = rng.integers(0, 5, n)
        preds = np.clip(labels + rng.integers(-2, 3, n), 0, 4)
        assert metrics.quadratic_weighted_kappa(labels, preds, 5) == pytest.approx(
            skm.cohen_kappa_score(labels, preds, weights="quadratic", labels=range(5)), abs=1e-12)
        np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, 5),
                                      skm.confusion_matrix(labels, preds, labels=range(5)))
        binary = (labels >= 2).astype(int)
        scores = np.round(rng.random(n) + 0.3 * binary, 1)  # one decimal: ties everywhere
        if 0 < binary.sum() < n:
            assert metrics.roc_auc(binary, scores) == pytest.approx(skm.roc_auc_score(binary, scores), abs=1e-12)


def test_referral_operating_point_hand_worked():
    """Positives score 0.9, 0.8, 0.7, 0.2; negatives 0.75, 0.3, 0.1. To refer 75% of the positives (3 of 4) the
    highest threshold is 0.7 (refer when score >= 0.7): sensitivity 3/4, specificity 2/3 (0.75 is referred)."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.3, 0.1])
    op = metrics.operating_point(labels, scores, 0.75)
    assert op["threshold"] == 0.7 and op["sensitivity"] == 0.75 and op["specificity"] == pytest.approx(2 / 3)
    assert metrics.operating_point(labels, scores, 1.0)["threshold"] == 0.2  # every positive: down to 0.2
    assert metrics.operating_point(labels, scores, 0.1)["threshold"] == 0.9  # at least one positive
    with pytest.raises(ValueError, match="both classes"):
        metrics.operating_point(np.ones(3, int), np.ones(3), 0.9)
