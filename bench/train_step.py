"""Train-step benchmark on in-memory arrays: compile time, step time, images per second, FLOPs per image, memory.

    python bench/train_step.py --config=configs/default.py [--stage=joint] [--steps=5] [--xla_cpu_flags=default]
    python bench/train_step.py --config=configs/full.py --stage=joint --steps=10   # on a GPU/TPU: paper scale, bf16
    python bench/train_step.py --config=configs/full.py --stage=joint --steps=1 --config.batch_size=2 \
        --config.model.dtype=float32 --config.mesh.data=1 \
        --config.cpu_xla_flags="--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
        --xla_cpu_opt_preset=FAST_COMPILE"                       # on a CPU: the paper's shapes compile and run

Feeds random uint8 images (no dataset, no tfds or grain needed), so it runs on a bare accelerator machine; the
network starts from random weights whatever `config.init_from` says. Stages given in epochs are sized for
`--num_train` examples. FLOPs per image are XLA's cost analysis of the compiled step (multiply-adds count 2) divided
by the rows each device computes. `--xla_cpu_flags=none` measures without the config's CPU compiler flags.
"""

import os
import resource
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.")
flags.DEFINE_string("stage", "joint", "Stage whose train step is timed (joint trains everything).")
flags.DEFINE_integer("steps", 5, "Timed steps after the first (compiling) one.")
flags.DEFINE_enum("xla_cpu_flags", "config", ["config", "none"], "Use the config's CPU XLA flags or none.")
flags.DEFINE_integer("num_train", 35126, "Training examples assumed for stages given in epochs (EyePACS' train).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = FLAGS.config
    if FLAGS.xla_cpu_flags == "config" and config.cpu_xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + config.cpu_xla_flags).strip()
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_default_prng_impl", config.prng_impl)
    from zoomin_jax import schedule, sharding
    from zoomin_jax import train_step as train
    from zoomin_jax.forward import build, init_variables

    config = schedule.resolve(config, FLAGS.num_train)
    mesh = sharding.make_mesh(config.mesh.data)
    model = build(config)
    stage = config.stages[FLAGS.stage]
    t0 = time.perf_counter()
    variables = init_variables(model, config, mesh, jax.random.PRNGKey(0))
    jax.block_until_ready(variables)
    t_init = time.perf_counter() - t0
    repl = sharding.replicated(mesh)
    tx = train.make_optimizer(config, stage, variables["params"])
    opt_state = jax.jit(tx.init, out_shardings=jax.tree_util.tree_map(lambda _: repl, jax.eval_shape(
        tx.init, variables["params"])))(variables["params"])
    state = train.TrainState(jax.device_put(jnp.asarray(0, jnp.int32), repl), variables["params"],
                             variables["batch_stats"], opt_state)
    state_sharding = jax.tree_util.tree_map(lambda _: repl, state)
    step = train.make_train_step(model, config, stage, tx, mesh, state_sharding)
    s, b = config.model.image_size, config.batch_size
    rng = np.random.default_rng(0)
    batch = sharding.to_global({"image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
                                "label": rng.integers(0, 5, (b,)).astype(np.int32)}, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    t_compile = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # a list of one dict in older JAX versions
    flops = float((cost or {}).get("flops", float("nan")))
    t0 = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / FLAGS.steps
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    peak_s = f"{peak / 2**30:.2f} GiB device" if peak else \
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB host RSS"
    print(f"device {dev.device_kind} x{mesh.size} | config image {s}/{config.model.low_res_size} "
          f"dtype {config.model.dtype} batch {b} stage {FLAGS.stage} | xla_cpu_flags {FLAGS.xla_cpu_flags}")
    per_device_rows = b // mesh.size  # the compiled program is one device's share of the batch
    print(f"init {t_init:.1f} s | compile {t_compile:.1f} s | first step {t_first:.1f} s | step {dt * 1000:.0f} ms | "
          f"{b / dt:.1f} images/s | peak {peak_s} | loss {float(m['loss']):.3f}")
    print(f"XLA cost analysis: {flops / per_device_rows / 1e9:.4g} GFLOP per image per train step "
          f"({flops / 1e12:.4g} TFLOP per device per step, {per_device_rows} rows per device)")


if __name__ == "__main__":
    app.run(main)
