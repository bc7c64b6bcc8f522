"""The one preparation of a fundus photograph: what the builders store and what `--mode=predict` grades.

    decode (draft-scaled, at least `min_side` px on the shorter side) -> cut to the eye disc -> resize to
    `image_size` -> field of view (before Graham, which greys the black bands) -> Graham (when asked)

Every real-dataset builder (EyePACS, IDRiD, Messidor) stores `image` (the JPEG of `stored`) and `fov_rows` from this
function, and predict prepares a user's photograph with it and the same JPEG round trip, so a photograph graded by
predict gets the evaluation's prediction for the same photograph (tests/test_predict.py checks it per layout).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from zoomin_jax.data import fov, preprocess

MIN_SIDE = 256  # photographs with a shorter side below this are refused ("too_small"), in builders and predict


@dataclasses.dataclass
class Photo:
    """A prepared photograph."""

    stored: np.ndarray  # uint8 (S, S, 3): the disc square, Graham-normalised when asked (what is stored)
    display: np.ndarray  # uint8 (S, S, 3): the disc square before Graham (for pictures)
    fov_rows: np.ndarray  # int32 (S, 2): the field of view, per row [x0, x1)
    transform: preprocess.CropTransform  # from the decoded frame to the disc square (maps boxes both ways)


def prepare(source: preprocess.PhotoSource, image_size: int, graham: bool, min_side: int = MIN_SIDE) -> Photo:
    """The preparation above.

    Raises:
      preprocess.BadPhoto: an unusable photograph (its reason: corrupt, truncated, grayscale, too_small, no_disc...).
    """
    square, transform = preprocess.disc_square(source, image_size, min_side=min_side)
    rows = fov.field_of_view(square, graham=graham)
    stored = preprocess.graham(square) if graham else square
    return Photo(stored, square, rows, transform)
