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
    # brightness 1.1 is applied as 1126 / 1024 (factors rounded to 1/1024): 5 -> 5.498 -> 5, where 1.1 gave 6
    np.testing.assert_allclose(out[2], _scaled(np.rint(image[2] * (1126 / 1024))), atol=1e-6)
    assert np.isfinite(out).all()


def test_jitter_is_exact_whatever_the_compile():
    """The rule worked in float64 by numpy (the disc mean from integer sums, rounded to 1/16; factors to 1/1024)
    gives the device's pixels exactly, and a batch sharded over 8 devices gives the one-device pixels to the bit."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from zoomin_jax import sharding

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (8, 48, 48, 3), dtype=np.uint8)
    image[:, :6] = rng.integers(0, 13, (8, 6, 48, 3))  # a dark band: the background rule
    factors = rng.uniform(0.85, 1.15, (8, 2)).astype(np.float32)
    one = np.asarray(jax.jit(photometric.jitter)(image, factors))
    mesh = sharding.make_mesh(8)
    spread = NamedSharding(mesh, PartitionSpec("data"))
    eight = np.asarray(jax.jit(photometric.jitter)(jax.device_put(image, spread), jax.device_put(factors, spread)))
    np.testing.assert_array_equal(eight, one)
    sub = image[:, ::8, ::8].astype(np.int64)
    disc = (sub.max(-1) > photometric.BLACK)[..., None]
    mean = np.float32((sub * disc).sum((1, 2))) / np.float32(disc.sum((1, 2)))
    m = np.round(mean * 16) / 16
    b, c = (np.round(factors.astype(np.float64) * 1024) / 1024).T
    v = image.astype(np.float64)
    out = np.where(v <= 12, v * b[:, None, None, None],
                   ((v - m[:, None, None, :]) * c[:, None, None, None] + m[:, None, None, :]) * b[:, None, None, None])
    levels = np.rint((one.astype(np.float64) + 1.0) * 127.5)  # the grey levels the device computed
    np.testing.assert_allclose((levels / 127.5 - 1.0), one, atol=1e-6)
    np.testing.assert_array_equal(levels, np.clip(np.rint(out), 0, 255))
