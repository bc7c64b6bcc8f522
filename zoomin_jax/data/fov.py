"""The field of view of a stored fundus image: which pixels show the retina, as one extent per row.

Real photographs are often cut at the top and bottom (IDRiD, many EyePACS cameras), so after the disc crop the
square's inscribed circle holds black bands; a lesion-finding chance level must spread its random boxes over the
retina actually shown, not over the circle. The field of view (FOV) is the largest connected region of non-black
pixels; with Graham normalisation only the part inside Graham's circle (`preprocess.graham_inside`), the rest being
overwritten there.

Representation: int (S, 2) per image, row y shows the retina in columns [x0, x1) (x0 = x1 = 0: none). A few bytes
per row, so it travels in eval batches and predictions at any size (a full mask at 1230 px would be 1.5 MB an image).
A row extent fills holes inside a row; the FOV is a disc cut by straight bands, so every row of it is one run and the
representation is exact (dark lesions or vessels inside the disc are not holes: they are above the black level).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from zoomin_jax.data import preprocess

# A pixel is black (outside the FOV) when its brightest channel is at or below this (JPEG noise in the black border
# stays under it; the darkest vignetted rims of IDRiD photographs are well above). The train step's brightness and
# contrast keep the same pixels black (`photometric.BLACK`).
BLACK_LEVEL = 12


def field_of_view(image: np.ndarray, *, graham: bool = False) -> np.ndarray:
    """The FOV of a stored image as per-row extents.

    Args:
      image: uint8 (S, S, 3), the stored image *before* Graham normalisation (Graham turns the black bands
        mid-grey); a Graham-normalised image gives the whole of Graham's circle.
      graham: the image will be (or was) Graham-normalised: keep only Graham's circle.

    Returns:
      int32 (S, 2): [x0, x1) per row.
    """
    m = np.asarray(image).max(axis=-1) > BLACK_LEVEL
    m = ndimage.binary_opening(m, iterations=1)  # lone noise pixels in the border are not retina
    labels, n = ndimage.label(m)
    if n > 1:  # text burnt into a corner, a reflex outside the disc: keep the eye
        sizes = ndimage.sum_labels(m, labels, index=np.arange(1, n + 1))
        m = labels == 1 + int(np.argmax(sizes))
    if graham:
        m &= preprocess.graham_inside(*m.shape)
    return mask_to_rows(m)


def mask_to_rows(mask: np.ndarray) -> np.ndarray:
    """bool (..., H, W) -> int32 (..., H, 2): first and one-past-last True column per row ((0, 0) where none)."""
    mask = np.asarray(mask, bool)
    w = mask.shape[-1]
    any_ = mask.any(axis=-1)
    x0 = np.argmax(mask, axis=-1)
    x1 = w - np.argmax(mask[..., ::-1], axis=-1)
    return np.stack([np.where(any_, x0, 0), np.where(any_, x1, 0)], axis=-1).astype(np.int32)


def rows_to_mask(rows: np.ndarray, width: int) -> np.ndarray:
    """int (..., H, 2) -> bool (..., H, width): True in [x0, x1) of each row."""
    rows = np.asarray(rows)
    x = np.arange(width)
    return (rows[..., 0:1] <= x) & (x < rows[..., 1:2])


def area(rows: np.ndarray) -> np.ndarray:
    """Pixels in the FOV: int64 (...,) from (..., H, 2)."""
    rows = np.asarray(rows, np.int64)
    return np.maximum(rows[..., 1] - rows[..., 0], 0).sum(axis=-1)
