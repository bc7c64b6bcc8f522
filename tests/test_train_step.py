"""The jitted train step: it learns, sharding does not change it, and frozen sub-networks stay bit-identical."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from zoomin_jax import sharding
from zoomin_jax.forward import build, init_variables
from zoomin_jax.train_step import TrainState, make_optimizer, make_train_step, stages

pytestmark = pytest.mark.slow  # compiles the train step of every stage


def _state_and_step(c, stage_name, mesh, variables=None):
    model = build(c)
    stage = c.stages[stage_name]
    variables = variables or init_variables(model, c, mesh, jax.random.PRNGKey(0))
    repl = sharding.replicated(mesh)
    variables = jax.device_put(jax.device_get(variables), repl)
    tx = make_optimizer(c, stage, variables["params"])
    opt_state = jax.jit(tx.init)(variables["params"])
    state = TrainState(jnp.asarray(0, jnp.int32), variables["params"], variables["batch_stats"], opt_state)
    state = jax.device_put(state, repl)
    return state, make_train_step(model, c, stage, tx, mesh, jax.tree_util.tree_map(lambda _: repl, state))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (8, 100, 100, 3), dtype=np.uint8),
            "label": np.arange(8, dtype=np.int32) % 5}


def test_stage_plan_covers_the_steps_in_order():
    c = tiny_config()
    plan = stages(c)
    assert [s.name for s in plan] == ["mnet", "anet", "cnet", "joint"]
    assert [(s.begin, s.end) for s in plan] == [(0, 4), (4, 6), (6, 8), (8, 10)]


def test_joint_step_lowers_the_loss_on_a_fixed_batch(batch):
    c = tiny_config()
    c.stages.joint.steps = 30
    c.stages.joint.lr = 3e-3
    mesh = sharding.make_mesh(-1)
    state, step = _state_and_step(c, "joint", mesh)
    b = sharding.to_global(batch, mesh)
    losses = []
    for _ in range(12):
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert int(state.step) == 12


def test_sharded_step_equals_single_device_step_and_applies_the_photometric_factors(batch):
    """Stage mnet (M-Net's loss only: XLA drops A-Net's and C-Net's work, so both programs compile in a third of
    the joint step's time); the sharded zoom-in forward itself is compared with one device in tests/test_model.py,
    and two processes with one in tests/test_multiprocess.py. The batch carries the host's (brightness, contrast)
    factors as the trainer's do; then, on the same compiled step: brightness 1.2 on image X must train exactly as
    brightness 1 on the image rint(1.2 X) made by hand (contrast 1; X in 20..200, so no pixel is background or
    clipped, and 1.2 v is never within 0.1 of a rounding tie), and differently from brightness 1 on X."""
    batch = {**batch, "photometric": np.random.default_rng(1).uniform(0.9, 1.1, (8, 2)).astype(np.float32)}
    c = tiny_config()
    # SGD: updates are linear in the gradients, so float reassociation across 8 devices stays float-sized
    # (Adam's normalisation turns a near-zero gradient's rounding into a full-size update of either sign).
    c.optimizer.name = "sgd"
    mesh8, mesh1 = sharding.make_mesh(-1), sharding.make_mesh(1)
    s8, step8 = _state_and_step(c, "mnet", mesh8)
    s1, step1 = _state_and_step(c, "mnet", mesh1, variables=jax.device_get({"params": s8.params,
                                                                            "batch_stats": s8.batch_stats}))
    for _ in range(2):
        s8, m8 = step8(s8, sharding.to_global(batch, mesh8))
        s1, m1 = step1(s1, sharding.to_global(batch, mesh1))
    np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
    # atol as tests/test_multiprocess.py: a bias ahead of a BatchNorm has a zero true gradient, so its few 1e-5
    # of movement are rounding, which the 8-device sum orders differently.
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(s8.params)),
                    jax.tree_util.tree_leaves(jax.device_get(s1.params)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(s8.batch_stats)),
                    jax.tree_util.tree_leaves(jax.device_get(s1.batch_stats)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    start = jax.device_get(s1)
    x = np.random.default_rng(2).integers(20, 201, batch["image"].shape, dtype=np.uint8)
    by_hand = np.rint(x.astype(np.float64) * 1.2).astype(np.uint8)
    ones = np.ones((8, 2), np.float32)

    def one_step(image, factors):
        state = jax.device_put(start, sharding.replicated(mesh1))
        new, m = step1(state, sharding.to_global({"image": image, "label": batch["label"], "photometric": factors},
                                                 mesh1))
        return float(m["loss"]), jax.device_get(new.params)

    brighter, params = one_step(x, np.tile(np.float32([1.2, 1.0]), (8, 1)))
    hand, hand_params = one_step(by_hand, ones)
    plain, _ = one_step(x, ones)
    assert brighter == hand and brighter != plain, (brighter, hand, plain)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(hand_params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stage,trained", [("anet", {"anet"}), ("cnet", {"cnet", "patch_head", "fusion_head"}),
                                           ("mnet", {"mnet", "mnet_head"})])
def test_freezing_keeps_frozen_parameters_and_statistics_bit_identical(batch, stage, trained):
    c = tiny_config()
    mesh = sharding.make_mesh(-1)
    state, step = _state_and_step(c, stage, mesh)
    before = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    for _ in range(2):
        state, _ = step(state, sharding.to_global(batch, mesh))
    after = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    for collection in ("params", "batch_stats"):  # only trained backbones update BatchNorm statistics
        for key in before[collection]:
            same = _unchanged(before[collection][key], after[collection][key])
            assert same == (key not in trained), f"{collection}/{key}: unchanged={same} in stage {stage}"


def _unchanged(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))
