"""`init_from_backbone`: another run's M-Net into M-Net, its backbone into C-Net by layer, everything else fresh.

The source is a checkpoint of another config (other image size, a deeper C-Net) written here with random values
(nothing trained or compiled); the oracle is the source's own saved arrays and the fresh init's, compared leaf by
leaf by name.
"""

import jax
import numpy as np
import pytest
from tiny import tiny_config

from zoomin_jax import checkpoint, init_from, sharding
from zoomin_jax.forward import abstract_variables, build


def _random(abstract, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A pretraining run's checkpoint: M-Net (1, 2, 1) at image 120 / 120, C-Net (1, 2, 1)."""
    c = tiny_config()
    c.model.image_size, c.model.low_res_size = 120, 120
    c.model.mnet.repeats, c.model.cnet.repeats = (1, 2, 1), (1, 2, 1)
    values = _random(abstract_variables(build(c), c), 0)
    workdir = tmp_path_factory.mktemp("pretrain")
    ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
    ckpt.save(40, values, {"step": np.int32(40)}, None)
    ckpt.close()
    return str(workdir), _flat(values)


def _load(c, path):
    c.init_from, c.init_from_backbone = path, True
    mesh = sharding.make_mesh(-1)
    abstract = abstract_variables(build(c), c)
    repl = sharding.replicated(mesh)
    target = checkpoint.abstract_with_sharding(abstract, jax.tree_util.tree_map(lambda _: repl, abstract))
    fresh = _random(abstract, 1)
    return _flat(init_from.load(path, target, c, lambda: fresh)), _flat(fresh)


def test_mnet_whole_cnet_by_layer_the_rest_fresh(source):
    path, src = source
    c = tiny_config()  # M-Net (1, 1, 1) would not fit: use the source's depth; C-Net stays (1, 1, 1)
    c.model.mnet.repeats = (1, 2, 1)
    got, fresh = _load(c, path)
    assert set(got) == set(fresh)
    taken = {k for k in got if k.startswith(("['params']['mnet", "['batch_stats']['mnet"))}
    assert taken and all(np.array_equal(got[k], src[k]) for k in taken)  # M-Net and its head: the source's
    cnet = [k for k in got if "['cnet']" in k]
    for k in cnet:  # every C-Net layer of (1, 1, 1) exists in the source's M-Net under the same name
        assert np.array_equal(got[k], src[k.replace("['cnet']", "['mnet']")]), k
    assert not any("block17_2" in k for k in cnet)  # the deeper source's extra block has nowhere to go
    rest = [k for k in got if k not in taken and k not in cnet]
    assert {k.split("]")[1] for k in rest} == {"['anet'", "['fusion_head'", "['patch_head'"}
    assert all(np.array_equal(got[k], fresh[k]) for k in rest)


def test_another_mnet_depth_is_refused_naming_a_layer(source):
    path, _ = source
    with pytest.raises(ValueError, match=r"init_from_backbone: params\['mnet'\]\['block17_2_.*absent here"):
        _load(tiny_config(), path)  # M-Net (1, 1, 1) here, (1, 2, 1) in the source
