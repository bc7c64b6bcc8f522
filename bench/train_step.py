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
import math
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
flags.DEFINE_float("input_warmup_epochs", 3.0, "With --input_wait: epochs of batches drawn (no step) before the "
                   "steady-state measurement, so the decoded-image cache is as full as for most of a run.")
flags.DEFINE_integer("input_rounds", 20, "With --input_wait: alternated rounds of fixed-batch and pipeline runs "
                     "of --steps steps each.")
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
    # As the trainer's batches: the host's (brightness, contrast) factors ride along and the step applies them.
    batch = sharding.to_global({"image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
                                "label": rng.integers(0, 5, (b,)).astype(np.int32),
                                "photometric": rng.uniform(0.9, 1.1, (b, 2)).astype(np.float32)}, mesh)
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
        input_wait(compiled, state, batch, config, mesh, max(FLAGS.steps, 10))
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
    """How long the steps wait on the input pipeline. Rounds of `steps` steps fed one fixed in-memory batch, each
    followed by `steps` steps fed by the real pipeline (decode, augment, balanced sampling:
    `input_pipeline.train_iterator`), one batch per step, dispatched as the trainer dispatches them (asynchronously,
    metrics fetched every `log_every` steps), after `--input_warmup_epochs` epochs of batches (the decoded-image
    cache filled, as for most of a run); one more round from the pipeline's start (cold cache). The wait is the
    real runs' extra time over the fixed runs, as a share of the real runs, summed over the rounds (this machine's
    step time moves by 10% from run to run, so single runs mislead; the standard error of the rounds' mean is
    printed). On a CPU the wait is the cores the input work takes from the step itself, so the CPU share is printed
    too: the pipeline's CPU per batch alone over that plus the step's. (Time blocked in `next()` is no measure of it:
    with asynchronous dispatch the loop runs ahead and blocks there while the device is still busy.)"""
    import jax

    from zoomin_jax import sharding
    from zoomin_jax.data import input_pipeline

    def to_global(host):
        return sharding.to_global({k: host[k] for k in batch}, mesh)  # the fields the step was compiled for

    def real_batch():
        return to_global(next(it))  # one batch per step, as the trainer takes it

    def run(next_batch):
        """(wall seconds, process CPU seconds) of `steps` steps."""
        nonlocal state
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(steps):
            state, m = compiled(state, next_batch())
            if (k + 1) % config.log_every == 0:
                jax.device_get(m)
        jax.block_until_ready(m)
        return time.perf_counter() - t0, time.process_time() - c0

    it = input_pipeline.train_iterator(config)
    next(it)  # the pipeline's start-up (opening the split, sampler) is not a per-step cost
    first_fixed, _ = run(lambda: batch)
    cold, _ = run(real_batch)
    # Then as for most of a run: after the first epochs, the decoded-image cache (data.cache_gb) holds the split.
    warm_batches = math.ceil(FLAGS.input_warmup_epochs * input_pipeline.num_train_examples(config) / config.batch_size)
    t0 = time.perf_counter()
    for _ in range(warm_batches):
        next(it)
    t_warm = time.perf_counter() - t0
    c0 = time.process_time()
    for _ in range(steps):  # the pipeline alone, no step running: its CPU per batch
        next(it)
    host_cpu = (time.process_time() - c0) / steps
    fixed, real, step_cpu = [], [], []
    for _ in range(FLAGS.input_rounds):  # alternated and paired: the machine's background load moves every run
        wall, cpu = run(lambda: batch)
        fixed.append(wall)
        step_cpu.append(cpu / steps)
        real.append(run(real_batch)[0])
    wait = max(sum(real) - sum(fixed), 0.0) / sum(real)
    pairs = [(r - f) / r for f, r in zip(fixed, real, strict=True)]
    stderr = statistics.stdev(pairs) / math.sqrt(len(pairs)) if len(pairs) > 1 else float("nan")
    share = host_cpu / (host_cpu + statistics.median(step_cpu))
    setting = (f"{config.data.num_workers} workers, {config.data.read_threads} read threads, prefetch "
               f"{config.data.prefetch}, cache_gb {config.data.cache_gb}")
    print(f"input wait ({setting}): {FLAGS.input_rounds} rounds of {steps} steps fed one in-memory batch, each "
          f"followed by {steps} fed by the pipeline (after {warm_batches} batches, {FLAGS.input_warmup_epochs:g} "
          f"epochs, {t_warm:.0f} s): the steps wait on data {wait:.1%} of the time (+-{stderr:.1%} standard error "
          f"of the rounds' mean; {sum(fixed) / len(fixed) / steps * 1000:.0f} ms vs "
          f"{sum(real) / len(real) / steps * 1000:.0f} ms per step); from the pipeline's start (cold cache, one "
          f"round) {max(cold - first_fixed, 0) / cold:.1%}. CPU: the pipeline alone {host_cpu * 1000:.1f} ms per "
          f"batch, the step {statistics.median(step_cpu) * 1000:.0f} ms: the input's share {share:.1%}")


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
