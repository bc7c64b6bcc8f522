"""probe_patches: which patches hold a lesion centre, and the summary of the patch head's answers, by hand."""

import numpy as np

from zoomin_jax.probe_patches import patch_rows, summary

# Two images, two boxes each. Image 0 (grade 1): a lesion centred at (12, 12) inside box 0 only; a second lesion
# centred at (20, 12), on box 0's end edge (end exclusive: outside) and inside box 1; an invalid lesion inside
# box 0 (not counted). Image 1 (grade 0): no lesions.
BOXES = np.asarray([[[0, 0, 20, 20], [20, 0, 40, 20]], [[0, 0, 20, 20], [20, 20, 40, 40]]])
LESIONS = np.asarray([[[10, 10, 14, 14], [18, 10, 22, 14], [2, 2, 4, 4]], [[0, 0, 0, 0]] * 3])
VALID = np.asarray([[True, True, False], [False, False, False]])
P = np.asarray([[0.9, 0.6], [0.1, 0.3]])


def test_patch_rows_by_hand():
    rows = patch_rows(np.asarray([1, 0]), BOXES, LESIONS, VALID, P)
    assert rows["grade"].tolist() == [1, 1, 0, 0]
    assert rows["lesions"].tolist() == [1, 1, 0, 0]
    assert rows["image"].tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(rows["p"], [0.9, 0.6, 0.1, 0.3])


def test_summary_by_hand():
    valid = VALID.copy()
    valid[0, 1] = False  # now box 1 of image 0 holds nothing
    lines = summary(patch_rows(np.asarray([1, 0]), BOXES, LESIONS, valid, P))
    assert lines == [
        "grade 0 patches without a lesion centre: 2, mean P(patch grade >= 1) 0.200",
        "grade 1 patches without a lesion centre: 1, mean P(patch grade >= 1) 0.600",
        "grade 1 patches with a lesion centre: 1, mean P(patch grade >= 1) 0.900",
        "grade-1 images: AUC of P >= 1, patches with a lesion vs without: 1.000",  # 0.9 > 0.6
        "patches with a lesion in grade-1 images vs patches of grade-0 images: 1.000",  # 0.9 > 0.1, 0.3
        "grade-1 images with a lesion centre in a box: 1 of 1",
    ]
