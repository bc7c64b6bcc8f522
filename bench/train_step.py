"""Train-step benchmark on in-memory arrays: compile time, step time, images per second, FLOPs per image, memory.

    python bench/train_step.py --config=configs/default.py [--stage=joint] [--steps=5] [--xla_cpu_flags=none] [--json]
    python bench/train_step.py --config=configs/full.py --stage=joint --steps=10   # on a GPU/TPU: paper scale, bf16
    python bench/train_step.py --config=configs/full.py --stage=joint --steps=1 --config.batch_size=2 \
        --config.model.dtype=float32 --config.mesh.data=1      # on a CPU: the paper's shapes compile and run
                                                                 # (configs/full.py carries its CPU XLA flags)

Feeds random uint8 images (no dataset, no tfds or grain needed), so it runs on a bare accelerator machine; the
network starts from random weights whatever `config.init_from` says. Stages given in epochs are sized for
`--num_train` examples. FLOPs per image are XLA's cost analysis of the compiled step (multiply-adds count 2) divided
by the rows each device computes. `--xla_cpu_flags=none` measures without the config's CPU compiler flags.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from peaks import bf16_peak_tflops  # noqa: E402  (bench/, beside this file)

config_flags.DEFINE_config_file("config", "configs/default.py", "Config file.")
flags.DEFINE_string("stage", "joint", "Stage whose train step is timed (joint trains everything).")
flags.DEFINE_integer("steps", 5, "Timed steps after the first (compiling) one.")
flags.DEFINE_enum("xla_cpu_flags", "config", ["config", "none"], "Use the config's CPU XLA flags or none.")
flags.DEFINE_bool("input_wait", False, "Also measure the share of time the steps wait on the real input pipeline "
                  "(needs the prepared dataset, tfds and grain).")
flags.DEFINE_bool("selection", False, "Also time the region selection and crops alone: their share of the step.")
flags.DEFINE_bool("json", False, "Also print the figures as one JSON line (bench/compare.py reads it).")
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
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
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
    if FLAGS.input_wait:
        input_wait(compiled, state, batch, config, mesh, max(FLAGS.steps, 20))
    peak_tflops = bf16_peak_tflops(dev.device_kind)
    mfu = flops / dt / (peak_tflops * 1e12) if peak_tflops else None
    print(f"MFU {mfu:.1%} of the {dev.device_kind}'s dense bf16 peak {peak_tflops:g} TFLOP/s" if mfu is not None
          else f"MFU n/a (no bf16 peak known for {dev.device_kind!r})")
    share = None
    if FLAGS.selection:
        sel = selection_seconds(model, config, b // mesh.size, FLAGS.steps)
        share = sel / dt
        print(f"region selection + crops alone (top-{config.model.regions.num_regions} on the "
              f"{config.model.anet.endpoint} map, {config.model.regions.patch_size} px crops, one device's rows): "
              f"{sel * 1000:.2f} ms = {share:.2%} of the step")
    if FLAGS.json:  # one line for bench/compare.py
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps({"framework": "jax", "init_s": t_init, "compile_s": t_compile, "first_s": t_first,
                          "times": times, "median_s": dt, "images_per_s": b / dt, "batch": b,
                          "peak_rss_gib": rss, "peak_device_gib": (peak or 0) / 2**30,
                          "gflop_per_image": flops / per_device_rows / 1e9, "mfu": mfu, "selection_share": share,
                          "device": dev.device_kind,
                          "xla_cpu_flags": config.cpu_xla_flags if FLAGS.xla_cpu_flags == "config" else ""}))


def input_wait(compiled, state, batch, config, mesh, steps: int) -> None:
    """How long the steps wait on the input pipeline: `steps` steps fed one fixed in-memory batch, then `steps` steps
    fed by the real pipeline (decode, augment, balanced sampling: `input_pipeline.train_iterator`), one batch per
    step, dispatched as the trainer dispatches them (asynchronously, metrics fetched every `log_every` steps). The
    wait is the real run's extra time over the fixed one, as a share of the real run; on a CPU it includes the cores
    the input work takes from the step itself. (Time blocked in `next()` is no measure of it: with asynchronous
    dispatch the loop runs ahead and blocks there while the device is still busy.)"""
    import jax

    from zoomin_jax import sharding
    from zoomin_jax.data import input_pipeline

    def real_batch():
        host = next(it)  # one batch per step, as the trainer takes it
        return sharding.to_global({k: host[k] for k in ("image", "label")}, mesh)

    def run(next_batch):
        nonlocal state
        t0 = time.perf_counter()
        for k in range(steps):
            state, m = compiled(state, next_batch())
            if (k + 1) % config.log_every == 0:
                jax.device_get(m)
        jax.block_until_ready(m)
        return time.perf_counter() - t0

    it = input_pipeline.train_iterator(config)
    warm = next(it)  # the pipeline's start-up (opening the split, sampler) is not a per-step cost
    fixed = run(lambda: batch)
    real = run(real_batch)
    del warm
    print(f"input wait: {steps} steps fed by the pipeline {real:.2f} s, fed one in-memory batch {fixed:.2f} s: the "
          f"steps wait on data {max(real - fixed, 0) / real:.1%} of the time ({config.data.num_workers} workers, "
          f"{config.data.read_threads} read threads, prefetch {config.data.prefetch})")


def selection_seconds(model, config, rows: int, steps: int) -> float:
    """Median seconds of the zoom-in's own work alone for `rows` images: the model's own region selection
    (`ZoomInNet._select`, on random A-Net maps of the configured endpoint's shape) and the crops from the high-res
    images. Timed apart from the step (a profile of the fused step cannot split it out reliably on every backend)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from zoomin_jax import regions
    from zoomin_jax.models.inception_resnet import endpoint_geometry

    m = config.model
    side = endpoint_geometry(m.anet.endpoint, m.low_res_size, tuple(m.mnet.repeats)).side

    @jax.jit
    def zoom(maps, images):
        boxes, _ = model._select(maps)
        return regions.crop(images.astype(jnp.float32) / 127.5 - 1.0, boxes, m.regions.patch_size)

    rng = np.random.default_rng(0)
    maps = jnp.asarray(rng.random((rows, side, side, m.num_classes), np.float32))
    images = jnp.asarray(rng.integers(0, 256, (rows, m.image_size, m.image_size, 3), dtype=np.uint8))
    jax.block_until_ready(zoom(maps, images))
    times = []
    for _ in range(max(3, steps)):
        t0 = time.perf_counter()
        jax.block_until_ready(zoom(maps, images))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    app.run(main)
