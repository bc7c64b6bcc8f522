"""`--mode=export`: the inference function serialised with jax.export runs in a process that has only jax and numpy
(not this project), for any batch size, and gives the live model's outputs."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from tiny import tiny_config

from zoomin_jax import export, sharding
from zoomin_jax.forward import build, init_variables

pytestmark = pytest.mark.slow  # a fresh interpreter loads the exported artefact

# Runs in a fresh interpreter: deserialises the artefact, calls it at two batch sizes, fails if anything of this
# project was imported.
LOADER = """
import sys, numpy as np
from jax import export
exported = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
images = np.load(sys.argv[2])
small, full = exported.call(images[:3]), exported.call(images)
assert not [m for m in sys.modules if m.startswith(("zoomin_jax", "flax", "configs"))], "project code imported"
np.savez(sys.argv[3], **{f"small_{k}": np.asarray(v) for k, v in small.items()},
         **{f"full_{k}": np.asarray(v) for k, v in full.items()})
"""


def test_exported_model_reloads_without_the_project_and_matches_the_live_model(tmp_path):
    c = tiny_config()
    mesh = sharding.make_mesh(1)
    model = build(c)
    variables = jax.device_get(init_variables(model, c, mesh, jax.random.PRNGKey(3)))
    exported = export.export_model(model, variables, c)
    assert str(exported.in_avals[0].shape[0]) == "b"  # symbolic batch
    (tmp_path / "model.jaxexport").write_bytes(exported.serialize())
    images = np.random.default_rng(0).integers(0, 256, (5, 100, 100, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    files = [str(tmp_path / name) for name in ("model.jaxexport", "images.npy", "out.npz")]
    proc = subprocess.run([sys.executable, "-c", LOADER, *files], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")

    live = jax.device_get(jax.jit(lambda x: model.apply(variables, x, train=False))(images))
    probs = np.asarray(jax.nn.softmax(live["logits"]))
    np.testing.assert_allclose(got["full_probabilities"], probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got["full_grade"], probs.argmax(-1))
    np.testing.assert_array_equal(got["full_boxes"], live["boxes"])
    np.testing.assert_allclose(got["full_gated"], live["gated"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["full_probabilities_mnet"], jax.nn.softmax(live["mnet_logits"]), rtol=1e-4,
                               atol=1e-6)
    # Another batch size through the same artefact: the same rows.
    np.testing.assert_allclose(got["small_probabilities"], probs[:3], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got["small_boxes"], live["boxes"][:3])
