"""Boxes are centred where the network looks: the derived cell geometry against the field measured on the network.

The oracle does not use `endpoint_geometry`: it measures, on the backbone itself, the centroid of |d cell / d input|
(summed over channels and over a batch of random images) for every cell of one endpoint of each stage, at the tiny
(80), default (160) and paper (492) low-res sizes, and compares it with the box centre the zoom-in uses.

How it is measured cheaply: every kernel is set to a uniform non-negative average (all taps equal) and the input is
positive, so every ReLU passes, every path from an input pixel to a cell has a non-negative weight and the Jacobian
J >= 0 (`test_jacobian_is_non_negative_so_two_jvps_give_the_centroid` checks it with a VJP). Then the centroid of
|J| along y is (J . y) / (J . 1): two forward-mode products, for all cells at once, instead of one VJP per cell.
Uniform kernels also keep random kernel asymmetries (a random 3x3 kernel's own centroid is off-centre) from moving
the field; the one thing left random is where each max-pool routes, which the random images average out. Geometry
does not depend on widths or block repeats (residual blocks are stride-1 SAME), so a 1-channel-per-branch network
with repeats (1, 1, 1) keeps this to seconds.

Which cells are "inside": with kernels that each sum to one, every cell whose paths all stay in the image has the
same total gradient mass; a path that reaches a SAME layer's zero padding is lost. A row (column) of cells is inside
when its best cell loses under 0.2% of the full mass (the full mass: an unclipped cell at 492, where every stage has
some). So little lost mass moves a centroid by at most 0.2% of half the field (< 0.4 px here). Cells that lose more
are border cells; their rule is stated in `zoomin_jax/regions.py` and tested below.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from configs import default, full
from zoomin_jax import regions
from zoomin_jax.models.inception_resnet import InceptionResNetV2, endpoint_geometries, endpoint_geometry, stage_sizes
from zoomin_jax.models.zoom_in import ZoomInNet, cell_centres

pytestmark = pytest.mark.slow  # receptive fields measured through compiled networks

ENDPOINTS = ("block35_1_ac", "block17_1_ac", "conv_7b_ac")  # one per stage (17x17, 8x8, 3x3 at 160)
REPEATS, WIDTH = (1, 1, 1), 0.01  # every branch one channel wide: the geometry is the same as the full network's
# Random input images averaged over (where each max-pool routes is the only randomness). conv_7b's cells route
# through 8- and 16-px pools, so at 492 it needs more images to bring that noise to about +-0.3 px.
IMAGES = {80: 32, 160: 32, 492: 96}
LOST_INSIDE = 2e-3  # a cell whose field loses less than this share of its mass to zero padding is "inside"
# Each measured low-res size with the config whose M-Net sees it: (image_size, patch_size) of its boxes.
CONFIGS = {80: tiny.tiny_config().model, 160: default.get_config().model, 492: full.get_config().model}


def _uniform_variables(net: InceptionResNetV2, size: int):
    """Every kernel an average over its taps and input channels, BatchNorm the identity (up to 1/sqrt(1 + eps))."""
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))

    def fill(path, s):
        name = path[-1].key
        if name == "kernel":
            return jnp.full(s.shape, 1.0 / np.prod(s.shape[:-1]), s.dtype)
        return jnp.full(s.shape, 1.0 if name == "var" else 0.0, s.dtype)  # BN var 1; BN mean, biases 0

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _images(size: int) -> np.ndarray:
    """Positive random images (fixed seed), so that with non-negative kernels every ReLU passes."""
    return np.random.default_rng(size).uniform(0.1, 1.0, (IMAGES[size], size, size, 3)).astype(np.float32)


@functools.cache
def measured(size: int) -> dict[str, np.ndarray]:
    """Endpoint -> (3, h, w): per cell J.1 (mass), J.y and J.x, summed over channels, averaged over the images."""
    net = InceptionResNetV2(REPEATS, WIDTH)
    variables = _uniform_variables(net, size)
    x = _images(size)
    pos = np.arange(size, dtype=np.float32) + 0.5  # continuous pixel centres: pixel k spans [k, k + 1)
    tangents = np.stack([np.ones((size, size)), np.repeat(pos[:, None], size, 1), np.repeat(pos[None, :], size, 0)])

    @jax.jit
    def products(x, tangents):
        def f(z):
            out = net.apply(variables, z)
            return [out[k].sum(-1).sum(0) for k in ENDPOINTS]

        def along(t):  # the same tangent for every image and input channel
            return jax.jvp(f, (x,), (jnp.broadcast_to(t[None, :, :, None], x.shape),))[1]

        return jax.vmap(along)(tangents.astype(np.float32))

    return {k: v / len(x) for k, v in zip(ENDPOINTS, jax.device_get(products(x, tangents)), strict=True)}


def full_mass(endpoint: str) -> float:
    """Gradient mass of an unclipped cell: the largest at 492, where the central cells' fields stay in the image."""
    mass = measured(492)[endpoint][0]
    h = mass.shape[0]
    centre = mass[h // 2 - 1: h // 2 + 2, h // 2 - 1: h // 2 + 2]
    np.testing.assert_allclose(centre, mass.max(), rtol=1e-5)  # a plateau: these cells lose nothing
    return float(mass.max())


def centroids(size: int, endpoint: str):
    """Measured centre of each row (y) and column (x) of cells in low-res pixels, and the mass share each loses.

    A row's centre is the centroid of the summed field of its cells (the field's y-extent does not depend on the
    column), which also averages the max-pool routing of more images."""
    mass, jy, jx = measured(size)[endpoint]
    m = full_mass(endpoint)
    return jy.sum(1) / mass.sum(1), jx.sum(0) / mass.sum(0), 1 - mass.max(1) / m, 1 - mass.max(0) / m


def derived(size: int, endpoint: str) -> np.ndarray:
    g = endpoint_geometry(endpoint, size, REPEATS)
    return g.offset + g.stride * np.arange(g.side)


def test_derived_geometry_hand_worked():
    """Worked by hand from Keras' layer list: stem conv3/2, conv3, conv3 SAME, pool3/2, conv1, conv3, pool3/2 puts
    block35's cell 0 over input pixels 0..30, centre 15 - 1.5 = 13.5 (continuous), and one cell every 8 px; each
    VALID 3/2 reduction doubles the stride and moves cell 0 by one old stride: 13.5 + 8 = 21.5, 21.5 + 16 = 37.5."""
    for size, sides in ((80, (7, 3, 1)), (160, (17, 8, 3)), (299, (35, 17, 8)), (492, (59, 29, 14))):
        for name, side, stride, offset in zip(ENDPOINTS, sides, (8, 16, 32), (13.5, 21.5, 37.5), strict=True):
            g = endpoint_geometry(name, size)  # full repeats: same side, stride and offset as repeats (1, 1, 1)
            assert (g.side, g.stride, g.offset) == (side, stride, offset), (size, name, g)
            assert g[:3] == endpoint_geometry(name, size, REPEATS)[:3]
        assert tuple(stage_sizes(size).values()) == sides
    with pytest.raises(ValueError, match="too small"):
        endpoint_geometry("mixed_5b", 74)
    # Every endpoint a config may name has its stage's geometry (the ones measured below).
    stage_of = {"mixed_5b": 0, "block35": 0, "mixed_6a": 1, "block17": 1, "mixed_7a": 2, "block8": 2, "conv": 2}
    for name, g in endpoint_geometries(492).items():
        stage = stage_of[name if name.startswith("mixed") else name.split("_")[0]]
        assert g[:3] == endpoint_geometry(ENDPOINTS[stage], 492)[:3], name


@pytest.mark.parametrize("size", [80, 160, 492])
def test_inside_cells_are_centred_where_the_network_looks(size):
    for endpoint in ENDPOINTS:
        want = derived(size, endpoint)
        cy, cx, lost_y, lost_x = centroids(size, endpoint)
        for centre, lost in ((cy, lost_y), (cx, lost_x)):
            inside = lost < LOST_INSIDE
            err = np.abs(centre - want)[inside]
            assert np.all(err <= 1.0), f"{endpoint} at {size}: cells {np.flatnonzero(inside)} off by {err.round(2)}"
    # Enough cells are checked: every stage at 492, block35 and block17 at 160, the central block35 cell at 80.
    counts = {e: int((centroids(size, e)[2] < LOST_INSIDE).sum()) for e in ENDPOINTS}
    least = {80: (1, 0, 0), 160: (11, 2, 0), 492: (53, 23, 10)}[size]
    assert all(c >= n for c, n in zip(counts.values(), least, strict=True)), counts


@pytest.mark.parametrize("size", [80, 160, 492])
def test_border_cells_follow_the_stated_rule(size):
    """regions.py: a border cell's box is centred on its unclipped geometric centre, then shifted inside the image.
    Its clipped field's centroid lies between that centre and the image centre, and inside the box the configs
    (tiny at 80, default at 160, full at 492) cut for it."""
    m = CONFIGS[size]
    scale = m.image_size / size
    for endpoint in ENDPOINTS:
        want = derived(size, endpoint)
        cy, cx, lost_y, lost_x = centroids(size, endpoint)
        centres = cell_centres(endpoint, size, m.image_size, REPEATS)  # what the model uses
        boxes = np.asarray(regions.cell_boxes(centres, m.image_size, m.regions.patch_size))
        boxes = boxes.reshape(len(want), len(want), 4)
        for centre, lost, a0 in ((cy, lost_y, boxes[:, 0, 0]), (cx, lost_x, boxes[0, :, 1])):
            border = lost >= LOST_INSIDE
            inward = (centre - want) * np.sign(size / 2 - want)  # > 0: pulled towards the image centre
            assert np.all(inward[border] >= -1.0), (endpoint, size, inward[border])
            beyond = (centre - size / 2) * np.sign(size / 2 - want)  # > 0: past the image centre
            assert np.all(beyond[border] <= 1.0), (endpoint, size, beyond[border])
            hr = centre * scale
            assert np.all((hr >= a0) & (hr < a0 + m.regions.patch_size)), (endpoint, size, hr, a0)
        if size == 492:
            assert lost_y[0] > 0.1 and cy[0] - want[0] > 3.5  # the rule is exercised: cell 0 is clipped and pulled


def test_jacobian_is_non_negative_so_two_jvps_give_the_centroid():
    """The premise of the fast oracle, checked with a VJP on one cell: |d cell / d input| is d cell / d input, and
    its centroid is the ratio of the forward products."""
    size, endpoint, (i, j) = 80, "block35_1_ac", (3, 2)
    net = InceptionResNetV2(REPEATS, WIDTH)
    variables = _uniform_variables(net, size)
    x = _images(size)
    grad = jax.jit(jax.grad(lambda z: net.apply(variables, z)[endpoint][:, i, j].sum()))(x)
    g = np.asarray(grad).sum(axis=(0, 3))  # (80, 80)
    assert np.asarray(grad).min() >= 0 and g.sum() > 0
    mass, jy, jx = measured(size)[endpoint][:, i, j]
    pos = np.arange(size) + 0.5
    np.testing.assert_allclose(g.sum() / len(x), mass, rtol=1e-4)  # measured() averages over the images
    np.testing.assert_allclose((g.sum(1) * pos).sum() / g.sum(), jy / mass, atol=1e-3)
    np.testing.assert_allclose((g.sum(0) * pos).sum() / g.sum(), jx / mass, atol=1e-3)


def test_zoom_in_boxes_for_a_one_hot_map_land_where_the_network_looks():
    """End to end through ZoomInNet's selection (default config: block35_1_ac at 160, boxes at 400): a map that is
    one-hot at cell (i, j) gives the box around that cell's measured centre."""
    m = default.get_config().model
    model = ZoomInNet.from_config(m)
    cy, cx, lost_y, lost_x = centroids(m.low_res_size, m.anet.endpoint)
    side, scale, half = len(cy), m.image_size / m.low_res_size, m.regions.patch_size / 2
    cells = [(8, 8), (4, 12), (11, 5), (0, 8), (8, 16), (16, 4)]  # interior, off-centre, borders inside the disc
    maps = np.zeros((len(cells), side, side, m.num_classes), np.float32)
    for b, (i, j) in enumerate(cells):
        maps[b, i, j, 2] = 1.0
    boxes, _ = model.apply({}, maps, method=lambda mod, x: mod._select(x))
    boxes = np.asarray(boxes)[:, 0]
    for (i, j), (y0, x0, _, _) in zip(cells, boxes, strict=True):
        for c, lost, a0 in ((cy[i], lost_y[i], y0), (cx[j], lost_x[j], x0)):
            hr = c * scale
            assert a0 <= hr < a0 + m.regions.patch_size
            if lost < LOST_INSIDE and 0 < a0 < m.image_size - m.regions.patch_size:  # not shifted: centred
                assert abs(a0 + half - hr) <= scale + 0.5, ((i, j), a0 + half, hr)
