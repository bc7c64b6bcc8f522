"""The zoom-in model: one sharded program, consistent outputs, gradients, parameter counts, config checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from configs import default, full
from zoomin_jax import fusion_init, regions, sharding
from zoomin_jax.forward import abstract_variables, build, init_variables, make_forward
from zoomin_jax.models.zoom_in import ZoomInNet, cell_centres, param_counts
from zoomin_jax.train_step import stages
from zoomin_jax.validate import ConfigError, validate_config

pytestmark = pytest.mark.slow  # compiles the whole model


def tiny_config():
    c = tiny.tiny_config()
    c.model.image_size = 200  # the 80 px low-res view is then a real 2.5x reduction
    c.model.regions.patch_size, c.model.regions.num_regions = 80, 3
    return c


def centres(c):
    """The cell centres the model uses (tests/test_geometry.py checks them against the network's own fields)."""
    m = c.model
    return cell_centres(m.anet.endpoint, m.low_res_size, m.image_size, tuple(m.mnet.repeats))


@pytest.fixture(scope="module")
def setup():
    c = tiny_config()
    mesh = sharding.make_mesh(-1)
    model = build(c)
    variables = init_variables(model, c, mesh, jax.random.PRNGKey(0))
    images = np.random.default_rng(0).integers(0, 256, (8, 200, 200, 3), dtype=np.uint8)
    return c, mesh, model, variables, images


def test_sharded_forward_equals_single_device_and_is_consistent(setup):
    c, mesh, model, variables, images = setup
    assert mesh.size == 8
    batch = sharding.to_global(images, mesh)
    assert len(batch.addressable_shards) == 8 and batch.addressable_shards[0].data.shape[0] == 1
    out = jax.device_get(make_forward(model, mesh)(variables, batch))
    single = jax.device_get(jax.jit(lambda v, x: model.apply(v, x, train=False))(jax.device_get(variables), images))
    for k in ("logits", "mnet_logits", "anet_logits", "gated", "box_scores"):
        np.testing.assert_allclose(out[k], single[k], rtol=1e-4, atol=1e-5, err_msg=k)
    np.testing.assert_array_equal(out["boxes"], single["boxes"])

    assert out["logits"].shape == (8, 5) and out["gated"].shape == (8, 7, 7, 5)
    assert out["boxes"].shape == (8, 3, 4) and out["boxes"].dtype == np.int32
    # A-Net logits are the spatial sums of the gated maps, and attention sums to one per grade.
    np.testing.assert_allclose(out["anet_logits"], out["gated"].sum(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["attention"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
    # The boxes are the top-N of the configured map reduced (max) over lesion levels 1..4, inside the eye disc.
    r = c.model.regions
    want, want_scores = regions.select_boxes(out[r.map][..., 1:].max(-1), centres(c), 200, 80, 3, 0.25,
                                             r.disc_radius)
    np.testing.assert_array_equal(out["boxes"], want)
    np.testing.assert_allclose(out["box_scores"], want_scores, rtol=1e-6)


def test_optic_disc_radius_keeps_the_boxes_off_the_brightest_green_spot(setup):
    """`regions.optic_disc_radius`: a bright green cone planted on dark photographs, centred on a low-res pixel (the
    disc, hand-placed), must be what the model avoids: its boxes equal the selection on its own maps with that
    hand-worked point excluded (radius 0.3 of 200 px), and differ from the selection without it."""
    c, mesh, model, variables, images = setup
    yy, xx = np.mgrid[:200, :200] + 0.5
    spots = [(30, 40), (45, 28), (22, 50), (40, 40)] * 2  # low-res pixels (80 px view)
    dark = images // 4
    point = []
    for i, (py, px) in enumerate(spots):
        cy, cx = (py + 0.5) * 200 / 80, (px + 0.5) * 200 / 80
        cone = np.clip(255 * (1 - np.hypot(yy - cy, xx - cx) / 20), 0, 255).astype(np.uint8)
        dark[i, ..., 1] = np.maximum(dark[i, ..., 1], cone)
        point.append((cy, cx))
    disc_model = dataclasses.replace(model, region_optic_disc_radius=0.3)
    out = jax.device_get(jax.jit(lambda v, x: disc_model.apply(v, x, train=False))(variables, dark))
    r = c.model.regions
    maps = out[r.map][..., 1:].max(-1)
    want, _ = regions.select_boxes(maps, centres(c), 200, 80, 3, 0.25, r.disc_radius, avoid=jnp.asarray(point),
                                   avoid_radius=0.3)
    plain, _ = regions.select_boxes(maps, centres(c), 200, 80, 3, 0.25, r.disc_radius)
    np.testing.assert_array_equal(out["boxes"], want)
    assert not np.array_equal(out["boxes"], plain)


def test_eval_step_keeps_boxes_in_each_field_of_view_and_turns_it_with_the_image(setup):
    """`regions.fov`: the eval step takes each image's field of view; boxes sit on cells whose centre shows the
    retina, and a test-time flip flips the field of view with the image (oracle: mirrored inputs swap the terms of
    the test-time average)."""
    from zoomin_jax import eval_step

    c, mesh, model, variables, images = setup
    rows = np.zeros((8, 200, 2), np.int16)
    for i in range(8):  # a different band per image: only rows [lo, lo + 70) show the retina, left part only
        lo = 10 + 15 * i
        rows[i, lo:lo + 70] = (0, 150)
    step = eval_step.make_eval_step(model, mesh, ("identity", "flip_lr"), fov=True)
    index = np.arange(8, dtype=np.int32)
    out = jax.device_get(step(variables, *sharding.to_global((images, index, rows), mesh)))
    mask = np.asarray(regions.fov_mask(jnp.asarray(rows), 200))
    assert mask[0, 10, 149] and not mask[0, 10, 150] and not mask[0, 9, 0] and not mask[0, 80, 0]
    ys, xs = centres(c)
    boxes = np.asarray(regions.cell_boxes((ys, xs), 200, 80))  # (49, 4), row-major cells
    py, px = np.meshgrid([int(float(y)) for y in ys], [int(float(x)) for x in xs], indexing="ij")
    allowed = mask[:, py.reshape(-1), px.reshape(-1)]  # (8, 49): the centre pixel shows the retina

    def all_allowed(i, picked):
        return all(any(allowed[i, k] for k in np.flatnonzero((boxes == b).all(1))) for b in picked)
    assert all(all_allowed(i, out["boxes"][i]) for i in range(8))
    def run(imgs, r):  # the same compiled step throughout
        return jax.device_get(step(variables, *sharding.to_global((np.ascontiguousarray(imgs), index, r), mesh)))

    # Mirrored images with mirrored fields of view only swap the two terms of the identity + flip_lr average: the
    # same probabilities if, and only if, each variant's field of view is turned with its image.
    mirrored_rows = np.where(rows[..., 1:] > 0, 200 - rows[..., ::-1], 0).astype(np.int16)
    mirrored = run(images[:, :, ::-1], mirrored_rows)
    np.testing.assert_allclose(mirrored["probs"]["zoom_in"], out["probs"]["zoom_in"], rtol=1e-4, atol=1e-6)
    assert not np.allclose(run(images[:, :, ::-1], rows)["probs"]["zoom_in"], out["probs"]["zoom_in"], atol=1e-4)
    free = run(images, np.tile(np.array([0, 200], np.int16), (8, 200, 1)))["boxes"]  # all retina: plain choice
    assert not all(all_allowed(i, free[i]) for i in range(8))  # so the field of view did move boxes


def test_uint8_and_scaled_float_inputs_agree(setup):
    _, _, model, variables, images = setup
    apply = jax.jit(lambda x: model.apply(variables, x, train=False))
    a = apply(images[:2])
    b = apply(images[:2].astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-5)


def test_fused_head_gets_no_gradient_through_region_selection(setup):
    """The final logits depend on A-Net only through the boxes, so A-Net's gradient from them is exactly zero,
    while C-Net, the fusion head and M-Net all get gradients."""
    _, _, model, variables, images = setup
    x = images[:4]

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out["logits"] ** 2)

    g = jax.jit(jax.grad(loss))(variables["params"])
    norm = lambda t: float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree_util.tree_leaves(t)))  # noqa: E731
    assert norm(g["anet"]) == 0.0
    assert norm(g["cnet"]) > 0 and norm(g["fusion_head"]) > 0 and norm(g["mnet"]) > 0


def test_fused_head_from_m_nets_head_grades_as_m_net_and_still_learns_from_c_net(setup):
    """fusion_init "mnet_head": in evaluation Zoom-in-Net's logits become M-Net's own (the oracle is the model's M-Net
    head, not the formula), they differ before; C-Net's rows of the fused head still get a gradient, and so does
    C-Net."""
    _, _, model, variables, images = setup
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    before = apply(variables, images)
    assert np.abs(np.asarray(before["logits"]) - np.asarray(before["mnet_logits"])).max() > 1e-3
    params = jax.jit(fusion_init.from_mnet_head)(variables["params"])
    after = apply({**variables, "params": params}, images)
    np.testing.assert_allclose(after["logits"], after["mnet_logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after["mnet_logits"], before["mnet_logits"])  # M-Net itself untouched

    def loss(p):
        out, _ = model.apply({**variables, "params": p}, images[:4], train=True, mutable=["batch_stats"])
        return jnp.sum(jax.nn.log_softmax(out["logits"])[:, 2])

    g = jax.jit(jax.grad(loss))(params)
    d = params["mnet_head"]["kernel"].shape[0]
    assert float(jnp.abs(g["fusion_head"]["kernel"][d:]).sum()) > 0  # C-Net's rows grow from zero
    norm = lambda t: float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree_util.tree_leaves(t)))  # noqa: E731
    assert norm(g["cnet"]) == 0.0  # C-Net's rows are exactly zero: the fused loss reaches C-Net once they grow


@pytest.mark.parametrize("order,starts_at", [(("mnet", "anet", "cnet", "joint"), "cnet"),
                                             (("mnet", "joint"), "joint"), (("mnet", "anet"), None)])
def test_fusion_init_applies_once_at_the_first_stage_that_trains_c_net(order, starts_at):
    c = tiny.tiny_config()
    c.stage_order = order
    plan = stages(c)
    assert not any(fusion_init.applies(c, plan, s, s.begin) for s in plan)  # "fresh": never
    c.model.fusion_init = "mnet_head"
    hits = [s.name for s in plan if fusion_init.applies(c, plan, s, s.begin)]
    assert hits == ([starts_at] if starts_at else [])
    assert not any(fusion_init.applies(c, plan, s, s.begin + 1) for s in plan)  # resumed inside: restored as saved


@pytest.mark.parametrize(
    "reduce,pooling,region_map,n_out",
    [("per_level", "mean", "gated", 12), ("max", "max", "attention", 3)],  # each option of each field once
)
def test_region_options(reduce, pooling, region_map, n_out):
    c = tiny_config()
    c.model.regions.reduce, c.model.pooling, c.model.regions.map = reduce, pooling, region_map
    r = c.model.regions
    model = build(c)
    images = np.random.default_rng(1).integers(0, 256, (2, 200, 200, 3), dtype=np.uint8)
    out = jax.jit(lambda x: model.apply(model.init(jax.random.PRNGKey(1), x, train=False), x, train=False))(images)
    assert out["boxes"].shape == (2, n_out, 4)
    if reduce == "per_level":  # level by level: the third level's boxes come from G[..., 3] alone
        want, _ = regions.select_boxes(out["gated"][..., 3], centres(c), 200, 80, 3, 0.25, r.disc_radius)
        np.testing.assert_array_equal(out["boxes"][:, 6:9], want)
    else:  # the configured map, max over levels 1..4
        want, want_scores = regions.select_boxes(out[region_map][..., 1:].max(-1), centres(c), 200, 80, 3, 0.25,
                                                 r.disc_radius)
        np.testing.assert_array_equal(out["boxes"], want)
        np.testing.assert_allclose(out["box_scores"], want_scores, rtol=1e-6)
    # Every box centre lies inside the eye disc (the image's inscribed circle).
    centre = (np.asarray(out["boxes"])[..., :2] + 40) / 100.0 - 1.0
    assert np.all(np.hypot(centre[..., 0], centre[..., 1]) <= 1.0)


def test_full_config_builds_paper_scale_parameters_abstractly():
    c = full.get_config()
    validate_config(c, 8)
    shapes = abstract_variables(build(c), c)
    counts = param_counts(shapes["params"])
    # Keras' InceptionResNetV2 without top has 54,276,192 trainable parameters; M-Net adds a 1536x5 head.
    assert counts["mnet"] == 54_276_192 + 1536 * 5 + 5
    assert counts["cnet"] == 54_276_192 + 2 * 1536 * 5 + 5 + 1536 * 5 + 5  # fusion head + per-patch head
    assert counts["total"] == counts["mnet"] + counts["anet"] + counts["cnet"]
    assert shapes["params"]["anet"]["score"]["kernel"].shape == (1, 1, 1536, 5)


@pytest.mark.parametrize(
    "edit,num_devices,pattern",
    [
        (lambda c: setattr(c.model.regions, "patch_size", 500), 8, r"patch_size=500 is larger .*image_size=400"),
        (lambda c: setattr(c, "batch_size", 12), 8, r"batch_size=12 is not divisible by the 8 devices"),
        (lambda c: setattr(c.model.anet, "endpoint", "block17_20_ac"), 8,
         r"'block17_20_ac' does not exist .*\(1, 2, 1\)"),
        # 272 of the 17x17 cells have their receptive-field centre (13.5 + 8i px of 160) inside the disc.
        (lambda c: setattr(c.model.regions, "num_regions", 280), 8,
         r"num_regions=280 .* 272 cells inside disc_radius=1.0 of the 17x17 map"),
        (lambda c: setattr(c.model, "pooling", "attention"), 8, r"model.pooling='attention' must be one of"),
        (lambda c: setattr(c.model, "low_res_size", 60), 8, r"low_res_size=60 is below .* 75"),
        (lambda c: setattr(c.model.cnet, "input_size", 60), 8, r"cnet.input_size=60 .* minimum input 75"),
        (lambda c: setattr(c.model, "fusion_init", "mnet"), 8, r"fusion_init='mnet' must be one of .*mnet_head"),
    ],
)
def test_bad_configs_fail_before_compiling_with_the_numbers(edit, num_devices, pattern):
    c = default.get_config()
    validate_config(c, num_devices)  # the default itself is fine
    edit(c)
    with pytest.raises(ConfigError, match=pattern):
        validate_config(c, num_devices)


def test_zoom_in_net_takes_every_value_from_the_config():
    """No field of ZoomInNet has a default of its own: configs/default.py is the only source, and from_config sets
    every field from it."""
    fields = [f for f in dataclasses.fields(ZoomInNet) if f.name not in ("parent", "name")]
    assert [f.name for f in fields if f.default is not dataclasses.MISSING] == []
    c = default.get_config()
    model = ZoomInNet.from_config(c.model)
    m = c.model
    assert (model.region_map, model.region_disc_radius, model.pooling) == (m.regions.map, m.regions.disc_radius,
                                                                            m.pooling)
    assert (model.anet_endpoint, model.mnet_repeats, model.patch_size) == (m.anet.endpoint, tuple(m.mnet.repeats),
                                                                           m.regions.patch_size)


def test_host_init_draws_what_flax_would_without_compiling(setup):
    """`config.init_on_host`: the same tree, shapes and dtypes as flax's jitted init; constants equal to flax's;
    kernels with flax's spread (LeCun normal truncated at 2 sigma: std 1/sqrt(fan_in)) measured on flax's own draw;
    the same seed gives the same values on every call, another seed others."""
    c, mesh, model, variables, _ = setup
    c = c.copy_and_resolve_references()
    c.init_on_host = True
    host = init_variables(model, c, mesh, jax.random.PRNGKey(0))
    flax_leaves = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(variables)))
    host_leaves = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(host)))
    assert flax_leaves.keys() == host_leaves.keys()
    kernels = 0
    for path, f in flax_leaves.items():
        h = host_leaves[path]
        assert h.shape == f.shape and h.dtype == f.dtype, path
        if path[-1].key != "kernel":
            np.testing.assert_array_equal(h, f, err_msg=jax.tree_util.keystr(path))
        elif f.size >= 2000:
            kernels += 1
            assert abs(h.std() / f.std() - 1) < 0.1, jax.tree_util.keystr(path)
            bound = 2 / np.sqrt(np.prod(f.shape[:-1])) / 0.8796256610342398
            assert np.abs(h).max() <= bound * 1.0001 and np.abs(f).max() <= bound * 1.0001
    assert kernels > 20
    leaf = jax.tree_util.keystr(next(p for p in host_leaves if p[-1].key == "kernel"))
    again = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(init_variables(model, c, mesh, None))))
    c.seed = 1
    other = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(init_variables(model, c, mesh, None))))
    for p in host_leaves:
        if jax.tree_util.keystr(p) == leaf:
            np.testing.assert_array_equal(again[p], host_leaves[p])
            assert not np.array_equal(other[p], host_leaves[p])
    arr = jax.tree_util.tree_leaves(host)[0]
    assert arr.sharding.is_fully_replicated and len(arr.addressable_shards) == 8


def test_the_pair_head_reads_each_rows_partner_and_nothing_else(setup):
    """Rows 2k and 2k + 1 are one patient's eyes. Replacing the photograph of row 3 changes the pair grading of rows 2
    and 3 (row 2's partner changed) and of no other row, and leaves row 2's own heads as they were; swapping the
    two patients swaps their rows. Predict and export (photographs one by one) build the model without it."""
    c, _, model, variables, images = setup
    c = c.copy_and_resolve_references()
    c.model.pair_eyes = True
    paired = build(c)
    params = dict(variables["params"])
    head = abstract_variables(paired, c)["params"]["pair_head"]  # shapes only: random values drawn here
    draw = np.random.default_rng(4)
    params["pair_head"] = jax.tree_util.tree_map(lambda s: jnp.asarray(draw.normal(size=s.shape), s.dtype), head)
    v = {"params": params, "batch_stats": variables["batch_stats"]}
    x = images[:4, :100, :100]
    apply = jax.jit(lambda v, x: paired.apply(v, x, train=False))
    out = jax.device_get(apply(v, x))
    changed = x.copy()
    changed[3] = images[5, :100, :100]
    out2 = jax.device_get(apply(v, changed))
    moved = np.abs(out2["pair_logits"] - out["pair_logits"]).max(-1)
    assert moved[0] == moved[1] == 0 and moved[2] > 1e-4 and moved[3] > 1e-4
    np.testing.assert_array_equal(out2["logits"][:3], out["logits"][:3])
    swapped = jax.device_get(apply(v, x[[2, 3, 0, 1]]))
    np.testing.assert_allclose(swapped["pair_logits"], out["pair_logits"][[2, 3, 0, 1]], atol=1e-5)
    plain = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)  # traced only: extra params unused
    assert "pair_logits" not in plain and plain["logits"].shape == (4, 5)


def test_cnet_input_size_enlarges_each_patch_as_pillow_does(setup):
    """`model.cnet.input_size`: C-Net sees each box's pixels enlarged to that side, bilinear; the oracle is Pillow's
    bilinear resize of the same box cut from the photograph by hand. The variables are those of the as-cut model
    (C-Net's weights do not depend on its input side)."""
    import flax.linen as nn
    from PIL import Image

    from zoomin_jax.models.inception_resnet import InceptionResNetV2

    c, _, _, variables, images = setup
    c = c.copy_and_resolve_references()
    c.model.cnet.input_size = 120
    validate_config(c, 8)
    seen = []

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, InceptionResNetV2) and m.name == "cnet" and context.method_name == "__call__":
            seen.append(np.asarray(args[0]))
        return next_fun(*args, **kwargs)

    x = images[:2]
    with nn.intercept_methods(record):
        out = build(c).apply(variables, x, train=False)
    boxes = np.asarray(out["boxes"])
    assert seen[0].shape == (2 * 3, 120, 120, 3) and boxes.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            y0, x0, y1, x1 = boxes[i, j]
            patch = x[i, y0:y1, x0:x1].astype(np.float32) / 127.5 - 1.0
            want = np.stack([np.asarray(Image.fromarray(patch[..., ch], mode="F").resize((120, 120), Image.BILINEAR))
                             for ch in range(3)], axis=-1)
            np.testing.assert_allclose(seen[0][i * 3 + j], want, atol=1e-4)
