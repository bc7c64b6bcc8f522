"""The one example schema every dataset builder writes, so the input pipeline reads all datasets alike.

Images are stored as encoded JPEG bytes in a plain `Tensor(dtype=object)` feature, not `tfds.features.Image`:
TFDS encodes and decodes `Image` with TensorFlow, and nothing here may need TensorFlow at run time. The pipeline
decodes the bytes itself (PIL), which also lets it use reduced ("draft") JPEG decoding.

Every stored image is square, cropped to the eye disc and resized to the builder's `image_size` (the model's
high-resolution input). Lesion boxes are integer pixel coordinates of that stored image, (y0, x0, y1, x1), end
exclusive — the same convention as `zoomin_jax.regions.select_boxes`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from zoomin_jax.lesions import LESION_KINDS  # re-exported: the schema's kind names

NUM_GRADES = 5


def example_features(extra: dict | None = None) -> tfds.features.FeaturesDict:
    """The feature spec of one example.

    Args:
      extra: dataset-specific features added beside the common ones (e.g. EyePACS patient id and eye side).

    Returns:
      A FeaturesDict with `image` (JPEG bytes), `label` (grade 0-4), `id` (the file stem in the user's download)
      and `lesions` (a sequence of `box` int32[4] and `kind`, one of LESION_KINDS).
    """
    spec = {
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
        "label": tfds.features.ClassLabel(num_classes=NUM_GRADES),
        "id": tfds.features.Text(),
        "lesions": tfds.features.Sequence(
            {
                "box": tfds.features.Tensor(shape=(4,), dtype=np.int32),
                "kind": tfds.features.ClassLabel(names=list(LESION_KINDS)),
            }
        ),
    }
    spec.update(extra or {})
    return tfds.features.FeaturesDict(spec)
