"""Lesion mining's parts against hand-worked cases and planted structure (k-means, patch kinds, purity).

The end-to-end run of `--mode=mine` on a trained tiny checkpoint is in test_train.py (it shares that run).
"""

import itertools

import jax
import numpy as np
import pytest

from zoomin_jax import mine

BG, OD = mine.BACKGROUND, mine.OPTIC_DISC
HAEM, EXUDATE = mine.KIND_NAMES.index("haemorrhage"), mine.KIND_NAMES.index("hard_exudate")


def test_kmeans_finds_planted_blobs_exactly():
    """Five well-separated blobs (centres ~10 apart, spread 0.3) in 16-D: the partition found is the planted one."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 10
    truth = np.repeat(np.arange(5), [30, 10, 25, 40, 15])
    x = centres[truth] + 0.3 * rng.normal(size=(len(truth), 16))
    c, a, inertia = jax.device_get(mine.kmeans(x.astype(np.float32), 5, jax.random.PRNGKey(1), 30, 3))
    table = np.zeros((5, 5), int)
    np.add.at(table, (a, truth), 1)
    assert sorted((table > 0).sum(1).tolist()) == [1] * 5  # each cluster one blob, each blob one cluster
    optimum = sum(((x[truth == j] - x[truth == j].mean(0)) ** 2).sum() for j in range(5))
    np.testing.assert_allclose(inertia, optimum, rtol=1e-4)


def test_kmeans_hand_worked_line():
    """Points 0, 1, 10, 11, 12 on a line, k = 2: centres 0.5 and 11, inertia 0.25 * 2 + 1 + 0 + 1 = 2.5."""
    x = np.array([[0.0], [1.0], [10.0], [11.0], [12.0]], np.float32)
    c, a, inertia = jax.device_get(mine.kmeans(x, 2, jax.random.PRNGKey(0), 10, 4))
    assert a[0] == a[1] != a[2] == a[3] == a[4]
    assert sorted(c[:, 0].round(4).tolist()) == [0.5, 11.0]
    assert inertia == pytest.approx(2.5, rel=1e-5)


def test_patch_kinds_nearest_annotated_centre_wins():
    """One image, three patches (y0, x0, y1, x1) worked by hand against a haemorrhage, an exudate and the disc."""
    patches = np.array([[[0, 0, 20, 20], [40, 40, 60, 60], [100, 100, 120, 120]]])
    lesions = np.array([[[8, 8, 12, 12],  # haemorrhage, centre (10, 10): patch 0's centre exactly
                         [2, 2, 6, 6],  # exudate, centre (4, 4): also in patch 0, but farther from its centre
                         [58, 58, 62, 62],  # exudate, centre (60, 60): on patch 1's end edge -> outside it
                         [0, 0, 0, 0]]])  # padding
    kinds = np.array([[HAEM, EXUDATE, EXUDATE, HAEM]])
    valid = np.array([[True, True, True, False]])
    disc = np.array([[45, 45, 60, 60]])  # centre (52, 52): inside patch 1
    got = mine.patch_kinds(patches, lesions, kinds, valid, disc, np.array([True]))
    assert got.tolist() == [[HAEM, OD, BG]]
    # Without the disc patch 1 shows nothing; a disc marked unknown counts for nothing either.
    assert mine.patch_kinds(patches, lesions, kinds, valid).tolist() == [[HAEM, BG, BG]]
    assert mine.patch_kinds(patches, lesions, kinds, valid, disc, np.array([False])).tolist() == [[HAEM, BG, BG]]


def test_purity_hand_worked_and_its_references():
    # Cluster 0 holds kinds (a, a, b), cluster 1 (b, b): purities 2/3 and 1, overall 4/5.
    p = mine.purity(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1]), 2, 3)
    assert p["overall"] == pytest.approx(0.8)
    np.testing.assert_allclose(p["per_cluster"], [2 / 3, 1.0])
    assert p["majority"].tolist() == [0, 1] and p["sizes"].tolist() == [3, 2]
    labels = np.array([0, 0, 1, 1, 1, 2])
    # Singletons are pure whatever the labels; one cluster has the commonest label's share (3/6).
    assert mine.random_purity(np.arange(6), labels, 6, 3, trials=10) == 1.0
    assert mine.random_purity(np.zeros(6, int), labels, 1, 3, trials=10) == 0.5
    # Two clusters of 3: the exact mean over all 60 orderings of the labels, counted here by brute force.
    exact = np.mean([mine.purity(np.array([0, 0, 0, 1, 1, 1]), np.array(q), 2, 3)["overall"]
                     for q in itertools.permutations(labels)])
    assert mine.random_purity(np.array([0, 0, 0, 1, 1, 1]), labels, 2, 3, trials=4000) == pytest.approx(exact, abs=0.01)


def test_purity_counts_annotated_photographs_and_each_box_once():
    """Photograph 0 is annotated and chose box A twice (per-level selection): A counts once. Photograph 1 has no
    annotation at all (a real dataset's photograph outside the boxes CSV): its patches are unknown, not background."""
    a, b, c = [0, 0, 20, 20], [40, 40, 60, 60], [70, 70, 90, 90]
    boxes = np.array([[a, b, a], [a, b, c]])
    lesion_valid = np.array([[True, False], [False, False]])
    disc_valid = np.array([False, False])
    photos = mine.annotated_photographs("idrid", lesion_valid, disc_valid)
    assert photos.tolist() == [True, False]
    assert mine.counted_patches(boxes, photos).tolist() == [[True, True, False], [False, False, False]]
    # The synthetic dataset knows every lesion it draws: a photograph without any is annotated (lesion-free).
    assert mine.annotated_photographs("synthetic_fundus", lesion_valid, disc_valid).tolist() == [True, True]
    # IDRiD's CSV gives each photograph it covers an optic disc: a disc alone makes the photograph annotated.
    assert mine.annotated_photographs("idrid", lesion_valid, np.array([False, True])).tolist() == [True, True]
