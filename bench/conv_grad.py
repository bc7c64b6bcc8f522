"""Where the M-Net train step's convolution time goes, layer by layer, ours (XLA's CPU backend) against PyTorch.

    python bench/conv_grad.py --peer_python=/path/to/venv/bin/python --size=492 --batch=2

Every convolution of the full Inception-ResNet-v2 (repeats 10 / 20 / 10, width 1.0) at `--size` pixels, grouped
into distinct shapes (input side, channels in and out, kernel, stride, padding) with how often each occurs; for each
shape the median seconds of its forward pass, its input gradient (dx) and its weight gradient (dW), ours under
`jax.jit` with configs/full.py's CPU XLA flags and the peer's `aten.convolution_backward` (what autograd calls),
channels-last, float32, each in its own process, one after the other. Prints per phase the network's total (each
shape's time x its count) on both sides and the ratio peer / ours (above 1: we are faster), then the shapes where
ours loses the most time. BatchNorm, the optimiser and everything else of the step are not here: the forward and
the two gradients of the convolutions are most of its FLOPs (bench/compare.py times the whole step).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
FLAGS = flags.FLAGS
PHASES = ("fwd", "dx", "dW")


def _median_s(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def conv_shapes(size: int, batch: int, repeats=(10, 20, 10), width: float = 1.0) -> list[dict]:
    """The network's convolutions as distinct shapes with their counts (traced with flax's interceptor, nothing
    computed): {"n", "h", "w", "cin", "cout", "kh", "kw", "stride", "padding" ("SAME" | "VALID"), "count"}."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from zoomin_jax.models.inception_resnet import InceptionResNetV2

    seen: dict[tuple, int] = {}

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            strides = m.strides if isinstance(m.strides, tuple) else (m.strides or 1,) * 2
            key = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], m.features, *m.kernel_size, strides[0],
                   m.padding if isinstance(m.padding, str) else "SAME")
            seen[key] = seen.get(key, 0) + 1
        return next_fun(*args, **kwargs)

    net = InceptionResNetV2(tuple(repeats), width, jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((batch, size, size, 3)), False))
    names = ("n", "h", "w", "cin", "cout", "kh", "kw", "stride", "padding")
    # init traces each convolution once; the counts are the network's
    return [dict(zip(names, k, strict=True), count=c) for k, c in sorted(seen.items(), key=lambda kv: -kv[0][1])]


def _pads(s: dict) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): flax's SAME at stride 1 puts the odd pixel after; VALID none."""
    if s["padding"] == "VALID":
        return 0, 0, 0, 0
    assert s["stride"] == 1, s
    return (s["kh"] - 1) // 2, s["kh"] // 2, (s["kw"] - 1) // 2, s["kw"] // 2


def run_jax(shapes: list[dict]) -> list[dict]:
    from configs import full

    cpu_flags = full.get_config().cpu_xla_flags if FLAGS.xla_cpu_flags == "config" else FLAGS.xla_cpu_flags
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + cpu_flags).strip()
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for s in shapes:
        t, b, left, right = _pads(s)

        def conv(x, w, s=s, pad=((t, b), (left, right))):
            return jax.lax.conv_general_dilated(x, w, (s["stride"],) * 2, pad,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        x = jnp.asarray(rng.standard_normal((s["n"], s["h"], s["w"], s["cin"])), jnp.float32)
        w = jnp.asarray(rng.standard_normal((s["kh"], s["kw"], s["cin"], s["cout"])) * 0.05, jnp.float32)
        y = jax.eval_shape(conv, x, w)
        dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
        fns = {"fwd": jax.jit(conv),
               "dx": jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]),
               "dW": jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])}
        args = {"fwd": (x, w), "dx": (x, w, dy), "dW": (x, w, dy)}
        out.append({**s, **{p: _median_s(lambda p=p, fns=fns, args=args: jax.block_until_ready(fns[p](*args[p])),
                                         FLAGS.reps)
                            for p in PHASES}})
    return out


def run_torch(shapes: list[dict]) -> list[dict]:
    import torch

    torch.manual_seed(0)
    out = []
    for s in shapes:
        t, b, left, right = _pads(s)
        x = torch.randn(s["n"], s["cin"], s["h"] + t + b, s["w"] + left + right)
        x = x.contiguous(memory_format=torch.channels_last)
        w = (torch.randn(s["cout"], s["cin"], s["kh"], s["kw"]) * 0.05).contiguous(memory_format=torch.channels_last)
        y = torch.nn.functional.conv2d(x, w, stride=s["stride"])  # the input padded as ours: same arithmetic
        dy = torch.randn_like(y).contiguous(memory_format=torch.channels_last)

        def backward(mask, x=x, w=w, dy=dy, stride=s["stride"]):
            return torch.ops.aten.convolution_backward(dy, x, w, None, [stride] * 2, [0, 0], [1, 1], False, [0, 0],
                                                       1, mask)

        fns = {"fwd": lambda x=x, w=w, st=s["stride"]: torch.nn.functional.conv2d(x, w, stride=st),
               "dx": lambda: backward([True, False, False]), "dW": lambda: backward([False, True, False])}
        with torch.no_grad():
            out.append({**s, **{p: _median_s(fns[p], FLAGS.reps) for p in PHASES}})
    return out


def table(ours: list[dict], peer: list[dict], top: int) -> str:
    """Per phase the network's totals and the ratio peer / ours; then the shapes where ours loses most."""
    lines = ["| phase | ours: s per step (network) | peer | peer / ours |", "|---|---|---|---|"]
    total_o = total_p = 0.0
    for p in PHASES:
        o = sum(s[p] * s["count"] for s in ours)
        q = sum(s[p] * s["count"] for s in peer)
        total_o, total_p = total_o + o, total_p + q
        lines.append(f"| {p} | {o:.3f} | {q:.3f} | {q / o:.2f}x |")
    lines.append(f"| all three | {total_o:.3f} | {total_p:.3f} | {total_p / total_o:.2f}x |")
    pairs = zip(ours, peer, strict=True)
    lost = sorted((((so[p] - sp[p]) * so["count"], p, so, sp) for so, sp in pairs for p in PHASES),
                  key=lambda row: -row[0])
    lines += ["", "| shape (side, in -> out, kernel, stride, padding) x count | phase | ours ms | peer ms | "
              "ours' loss per step, ms |", "|---|---|---|---|---|"]
    for loss, p, so, sp in lost[:top]:
        lines.append(f"| {so['h']}x{so['w']}, {so['cin']} -> {so['cout']}, {so['kh']}x{so['kw']}, /{so['stride']}, "
                     f"{so['padding']} x {so['count']} | {p} | {so[p] * 1e3:.1f} | {sp[p] * 1e3:.1f} | "
                     f"{loss * 1e3:+.0f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.framework != "both":
        shapes = json.load(open(FLAGS.shapes)) if FLAGS.shapes else conv_shapes(
            FLAGS.size, FLAGS.batch, *(((1, 1, 1), 0.125) if FLAGS.tiny else ()))
        res = run_jax(shapes) if FLAGS.framework == "jax" else run_torch(shapes)
        text = json.dumps(res)
        if FLAGS.out:
            open(FLAGS.out, "w").write(text)
        else:
            print(text)
        return
    with tempfile.TemporaryDirectory() as d:
        base = [f"--size={FLAGS.size}", f"--batch={FLAGS.batch}", f"--reps={FLAGS.reps}",
                f"--xla_cpu_flags={FLAGS.xla_cpu_flags}"] + (
            ["--tiny"] if FLAGS.tiny else [])
        subprocess.run([sys.executable, __file__, "--framework=jax", f"--out={d}/jax.json", *base], check=True)
        ours = json.load(open(f"{d}/jax.json"))
        json.dump([{k: v for k, v in s.items() if k not in PHASES} for s in ours], open(f"{d}/shapes.json", "w"))
        subprocess.run([FLAGS.peer_python, __file__, "--framework=torch", f"--shapes={d}/shapes.json",
                        f"--out={d}/torch.json", *base], check=True)
        peer = json.load(open(f"{d}/torch.json"))
    print(f"{len(ours)} distinct convolution shapes, {sum(s['count'] for s in ours)} convolutions, {FLAGS.size} px, "
          f"batch {FLAGS.batch}, float32, median of {FLAGS.reps} calls each")
    print(table(ours, peer, FLAGS.top))


def define_flags():
    """Flags only when run as a script: tests import this module beside compare.py, whose names overlap."""
    flags.DEFINE_enum("framework", "both", ["both", "jax", "torch"], "Run both sides (a process each) or one.")
    flags.DEFINE_string("peer_python", sys.executable, "Interpreter with torch, for the peer's side.")
    flags.DEFINE_integer("size", 492, "Input side in pixels.")
    flags.DEFINE_integer("batch", 2, "Images per step.")
    flags.DEFINE_integer("reps", 5, "Timed calls per shape and phase (after one untimed).")
    flags.DEFINE_string("shapes", "", "torch: JSON file of the shapes the jax side found.")
    flags.DEFINE_string("out", "", "One side's JSON results go here.")
    flags.DEFINE_string("xla_cpu_flags", "config", "jax: 'config' (configs/full.py's CPU XLA flags) or the flags "
                        "to use instead (to try others).")
    flags.DEFINE_integer("top", 8, "Shapes listed where ours loses most.")
    flags.DEFINE_bool("tiny", False, "Tiny network and shapes (the test of this script): nothing it prints is a "
                      "figure.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
