"""One benchmark case of the Inception-ResNet-v2 backbone (M-Net / C-Net), ours or the PyTorch peer's, as JSON.

    python bench/backbone.py --framework=jax   --mode=train --size=492 --batch=2 --steps=5
    python bench/backbone.py --framework=torch --mode=infer --size=299 --batch=2 --steps=5   # needs the bench extra

`bench/compare.py` runs every case in its own process and prints the table; run this alone to look at one case.
Both sides: the full network (repeats 10 / 20 / 10, width 1.0) with a 5-class head, random weights, float32, random
inputs of `--size` pixels. train = forward, cross-entropy, backward and an AdamW update (BatchNorm in training mode);
infer = forward in inference mode. Ours is the project's module under `jax.jit`, the uint8 batch scaled on device
as the model does, with the XLA CPU flags of `configs/full.py` (the paper-scale config: the project's default for
this workload) unless `--xla_cpu_flags=none`. The peer is timm's `inception_resnet_v2` (the network a PyTorch port
of Zoom-in-Net would take), channels-last, `torch.optim.AdamW`, `torch.inference_mode` for inference, the threads
PyTorch chooses (one per core).

Prints one JSON line: framework, mode, size, batch, the per-step seconds of every timed step, their median,
images/s at the median, the first call's seconds (JAX: compile and run), init seconds, peak host RSS, and for JAX
XLA's FLOPs per image.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
flags.DEFINE_enum("framework", "jax", ["jax", "torch"], "Ours (jax) or the peer (torch + timm).")
flags.DEFINE_enum("mode", "train", ["train", "infer"], "A training step or an inference pass.")
flags.DEFINE_integer("size", 492, "Input side in pixels (M-Net: 492 at paper scale, 299 ImageNet's).")
flags.DEFINE_integer("batch", 2, "Images per step.")
flags.DEFINE_integer("steps", 5, "Timed steps after the warm-up ones.")
flags.DEFINE_integer("warmup", 1, "Untimed steps after the first call.")
flags.DEFINE_enum("xla_cpu_flags", "config", ["config", "none"], "jax: configs/full.py's CPU XLA flags or none.")
flags.DEFINE_string("repeats", "10,20,10", "Backbone repeats (a smaller network for the test of this script).")
flags.DEFINE_float("width", 1.0, "Backbone width multiplier (jax only; the peer is always full width).")
FLAGS = flags.FLAGS


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(fn, steps: int, warmup: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times


def run_jax() -> dict:
    from configs import full

    cpu_flags = full.get_config().cpu_xla_flags if FLAGS.xla_cpu_flags == "config" else ""
    if cpu_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + cpu_flags).strip()
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    jax.config.update("jax_default_prng_impl", "rbg")
    from zoomin_jax.forward import host_variables
    from zoomin_jax.models.inception_resnet import InceptionResNetV2

    repeats = tuple(int(x) for x in FLAGS.repeats.split(","))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, images, train):
            x = images.astype(jnp.float32) / 127.5 - 1.0
            return nn.Dense(5)(InceptionResNetV2(repeats, FLAGS.width, jnp.float32)(x, train)["pool"])

    net = Net()
    b, s = FLAGS.batch, FLAGS.size
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 5, (b,)), jnp.int32)
    t0 = time.perf_counter()  # as configs/full.py initialises: drawn on the host, nothing compiled
    variables = host_variables(jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), images, False)), 0)
    variables = jax.device_put(variables)
    t_init = time.perf_counter() - t0
    if FLAGS.mode == "infer":
        fn = jax.jit(lambda v, x: net.apply(v, x, False))
        t0 = time.perf_counter()
        compiled = fn.lower(variables, images).compile()
        t_compile = time.perf_counter() - t0

        def call():
            jax.block_until_ready(compiled(variables, images))
    else:
        tx = optax.adamw(1e-3, weight_decay=1e-4)
        state = [variables["params"], variables["batch_stats"], tx.init(variables["params"])]

        def step(params, stats, opt, x, y):
            def loss_fn(p):
                logits, upd = net.apply({"params": p, "batch_stats": stats}, x, True, mutable=["batch_stats"])
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd["batch_stats"]

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), stats, opt, loss

        t0 = time.perf_counter()
        compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state, images, labels).compile()
        t_compile = time.perf_counter() - t0

        def call():
            *new, loss = compiled(*state, images, labels)
            state[:] = new
            jax.block_until_ready(loss)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    first, times = _timed(call, FLAGS.steps, FLAGS.warmup)
    return {"init_s": t_init, "compile_s": t_compile, "first_s": first, "times": times, "xla_cpu_flags": cpu_flags,
            "gflop_per_image": float((cost or {}).get("flops", float("nan"))) / b / 1e9}


def run_torch() -> dict:
    import timm
    import torch

    torch.manual_seed(0)
    b, s = FLAGS.batch, FLAGS.size
    t0 = time.perf_counter()
    model = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=5)
    model = model.to(memory_format=torch.channels_last)
    t_init = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, 3, s, s), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 5, (b,), generator=g)
    prep = lambda x: (x.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)  # noqa: E731
    if FLAGS.mode == "infer":
        model.eval()

        def call():
            with torch.inference_mode():
                model(prep(images))
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

        def call():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(prep(images)), labels)
            loss.backward()
            opt.step()
    first, times = _timed(call, FLAGS.steps, FLAGS.warmup)
    return {"init_s": t_init, "first_s": first, "times": times, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "timm": timm.__version__}


def main(argv):
    del argv
    out = run_jax() if FLAGS.framework == "jax" else run_torch()
    median = statistics.median(out["times"])
    out.update(framework=FLAGS.framework, mode=FLAGS.mode, size=FLAGS.size, batch=FLAGS.batch, median_s=median,
               images_per_s=FLAGS.batch / median, peak_rss_gib=_peak_rss_gib())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    app.run(main)
