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


def localisation_features() -> dict:
    """Extra features for datasets that know more than lesion boxes (IDRiD with a boxes CSV).

    `optic_disc`: int32[4] the optic disc's box (y0, x0, y1, x1) in stored pixels, all zeros where unknown. The disc
    is a bright normal structure that attention maps like to pick; it is not a lesion, so it is kept out of
    `lesions` (recall counts lesions only) and measured on its own (`metrics.optic_disc_first`).
    `fov_rows`: int32[S, 2] the field of view (`zoomin_jax.data.fov`): per row of the stored image, the columns
    [x0, x1) that show the retina, taken before Graham normalisation (which would hide it).
    """
    return {
        "optic_disc": tfds.features.Tensor(shape=(4,), dtype=np.int32),
        "fov_rows": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
    }
