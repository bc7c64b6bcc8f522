"""Brightness x contrast applied in the train step (`zoomin_jax.photometric`), against hand-worked pixel values."""

import numpy as np

from zoomin_jax import photometric


def _scaled(values):
    return np.asarray(values, np.float32) / 127.5 - 1.0


def test_jitter_hand_worked_values():
    """A 32 px image: a uniform disc (100, 60, 30) over rows/columns 8-23, so the disc mean on every 8th row and
    column is exactly that colour; two spots off that grid and a dark pixel. Brightness 1.2, contrast 1.5:
    v -> ((v - m) * 1.5 + m) * 1.2, values at or below 12 only times 1.2, clipped to [0, 255]."""
    image = np.zeros((2, 32, 32, 3), np.uint8)
    image[0, 8:24, 8:24] = (100, 60, 30)
    image[0, 9, 9] = (200, 5, 250)
    image[0, 10, 11] = (80, 40, 20)
    image[0, 1, 1] = (10, 10, 10)
    image[1] = image[0]
    factors = np.array([[1.2, 1.5], [1.0, 1.0]], np.float32)
    out = np.asarray(photometric.jitter(image, factors))
    assert out.dtype == np.float32 and out.shape == image.shape
    first = out[0]
    np.testing.assert_allclose(first[12, 20], _scaled((120, 72, 36)), atol=1e-6)  # at its mean: brightness only
    np.testing.assert_allclose(first[9, 9], _scaled((255, 6, 255)), atol=1e-6)  # 300 and 432 clip; 5 is dark
    np.testing.assert_allclose(first[10, 11], _scaled((84, 36, 18)), atol=1e-6)  # (70, 30, 15) * 1.2
    np.testing.assert_allclose(first[1, 1], _scaled((12, 12, 12)), atol=1e-6)  # dark: brightness only
    np.testing.assert_allclose(first[0, 0], _scaled((0, 0, 0)), atol=1e-6)  # black stays black
    # factors are per image: (1, 1) gives the model's plain scaling of the unchanged image
    np.testing.assert_allclose(out[1], _scaled(image[1]), atol=1e-6)


def test_jitter_identity_and_all_black():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    image[2] = rng.integers(0, 13, (24, 24, 3))  # nothing above the background level: no disc to take a mean of
    out = np.asarray(photometric.jitter(image, np.array([[1.0, 1.0], [1.0, 1.0], [1.1, 0.9]], np.float32)))
    np.testing.assert_allclose(out[:2], _scaled(image[:2]), atol=1e-6)
    np.testing.assert_allclose(out[2], _scaled(np.rint(image[2] * np.float32(1.1))), atol=1e-6)
    assert np.isfinite(out).all()
