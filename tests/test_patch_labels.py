"""The patch loss's labels (config.patch_labels): every patch its image's grade, or multiple-instance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoomin_jax.train_step import _cross_entropy
from zoomin_jax.validate import ConfigError, validate_config

L2, L3, L4 = math.log(2), math.log(3), math.log(4)
# Two images of three patches, three grades. Image 0 (grade 2): patch 0 uniform (P(0) = 1/3), patch 1 sure of
# grade 0, patch 2 (1/4, 1/4, 1/2): the least like grade 0. Image 1 (grade 0): uniform, (1/2, 1/4, 1/4),
# (1/4, 1/4, 1/2).
LOGITS = jnp.asarray([[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, L2]],
                      [[0.0, 0.0, 0.0], [L2, 0.0, 0.0], [0.0, 0.0, L2]]])
LABELS = jnp.asarray([2, 0])


def test_every_patch_takes_its_images_grade_by_hand():
    # image 0, grade 2: -log(1/3), -log(1 / (e^5 + 2)), -log(1/2); image 1, grade 0: -log(1/3), -log(1/2), -log(1/4)
    want = (L3 + math.log(math.exp(5) + 2) + L2 + L3 + L2 + L4) / 6
    assert float(_cross_entropy(LOGITS, LABELS, "image")) == pytest.approx(want, rel=1e-6)


def test_multiple_instance_labels_by_hand_and_by_their_gradient():
    # image 0: its grade carried by patch 2 alone (-log(1/2)); image 1: all three patches grade 0, averaged
    want = (L2 + (L3 + L2 + L4) / 3) / 2
    assert float(_cross_entropy(LOGITS, LABELS, "most_lesion_like")) == pytest.approx(want, rel=1e-6)
    g = np.asarray(jax.grad(lambda x: _cross_entropy(x, LABELS, "most_lesion_like"))(LOGITS))
    assert np.all(g[0, :2] == 0) and np.all(np.abs(g[0, 2]) > 0)  # only the chosen patch of the graded image learns
    assert np.all(np.abs(g[1]).sum(-1) > 0)  # every patch of the grade-0 image learns grade 0
    # the chosen patch's gradient is softmax - one-hot over the batch of 2: (1/4, 1/4, -1/2) / 2
    np.testing.assert_allclose(g[0, 2], np.asarray([0.25, 0.25, -0.5]) / 2, atol=1e-6)


def test_image_logits_ignore_the_patch_labels():
    logits, labels = LOGITS[:, 2], LABELS
    assert float(_cross_entropy(logits, labels, "most_lesion_like")) == float(_cross_entropy(logits, labels, "image"))


def test_an_unknown_patch_label_is_refused():
    from tiny import tiny_config

    c = tiny_config()
    c.patch_labels = "max"
    with pytest.raises(ConfigError, match=r"patch_labels='max' must be one of \('image', 'most_lesion_like'\)"):
        validate_config(c, 8)
