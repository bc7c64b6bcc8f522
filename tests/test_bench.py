"""The benchmarks' own arithmetic (hand-worked), and the accelerator check run at tiny shapes on the CPU so that it
cannot rot before a GPU is lent."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import compare  # noqa: E402
import peaks  # noqa: E402


def test_bf16_peaks_by_device_kind():
    assert peaks.bf16_peak_tflops("NVIDIA H200") == 989
    assert peaks.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert peaks.bf16_peak_tflops("TPU v5 lite") == 197  # not the v5p's 459: the longer name wins
    assert peaks.bf16_peak_tflops("TPU v5") == 459
    assert peaks.bf16_peak_tflops("cpu") is None


def _side(times, ips, rss, **extra):
    return {"times": times, "median_s": sorted(times)[len(times) // 2], "images_per_s": ips, "peak_rss_gib": rss,
            **extra}


def test_compare_table_ratio_is_the_median_of_the_rounds_peer_time_over_ours():
    # Three rounds, hand-worked: ratios 2.5/1.0 = 2.5, 2.0/1.0 = 2.0, 3.3/1.1 = 3.0 -> median 2.5, range 2.0-3.0.
    ours = [_side([1.0, 0.9, 1.2], 2.0, 7.5, compile_s=61.4, init_s=8.5, gflop_per_image=514.0),
            _side([1.0, 1.0, 1.0], 2.0, 7.0, compile_s=60.0, init_s=8.0, gflop_per_image=514.0),
            _side([1.1, 1.1, 1.1], 1.8, 7.2, compile_s=60.0, init_s=8.0, gflop_per_image=514.0)]
    peer = [_side([2.5, 2.4, 2.6], 0.8, 4.25, init_s=0.9), _side([2.0, 2.0, 2.0], 1.0, 4.0, init_s=0.9),
            _side([3.3, 3.3, 3.3], 0.6, 4.0, init_s=0.9)]
    text = compare.table([("M-Net train step, 492 px", ours, peer),
                          ("default", ours, None),
                          ("broken", [{"error": "exit 1: ['boom']"}] + ours[1:], peer)])
    rows = text.splitlines()
    assert len(rows) == 5 and all(r.count("|") == rows[0].count("|") for r in rows)
    assert "| **2.50x** (2.00-3.00, 3 rounds) |" in rows[2]
    # All nine timed steps pooled: median 1.0 of [0.9 .. 1.2]; images/s the rounds' median; the first round's costs
    assert "1 s (0.9-1.2), 2 img/s" in rows[2] and "| 61, 8.5 | 0.9 |" in rows[2]
    assert "| 7.50 / 4.25 | 514 |" in rows[2]  # the highest peak of the rounds
    assert "| - | - |" in rows[3]  # no peer: no ratio
    assert "failed (exit 1" in rows[4] and "(2.00-3.00, 2 rounds)" in rows[4]  # the failed round is left out
    # A failed round drops out of the ratios: rounds 2 and 3 remain -> median 2.5, range 2.0-3.0
    assert compare.ratios([{"error": "x"}] + ours[1:], peer) == pytest.approx([2.0, 3.0])


@pytest.mark.slow  # the whole device check, compiled at tiny shapes
def test_device_check_runs_at_tiny_shapes_on_the_cpu():
    env = {**os.environ, "TINY": "1", "PYTHONPATH": ROOT,  # the script calls `python`: this interpreter
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           # LLVM -O0 compiles faster; only the printed lines and their arithmetic are checked here
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"}
    proc = subprocess.run(["bash", "bench/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    step_ms = float(re.search(r"step (\d+) ms \| [\d.]+ images/s", out).group(1))
    assert "MFU n/a (no bf16 peak known for 'cpu')" in out and "peer: skipped (TINY=1)" in out
    sel_ms, share = (float(x) for x in re.search(r"alone .*: ([\d.]+) ms = ([\d.]+)% of the step", out).groups())
    assert 0 < sel_ms and share == pytest_approx(100 * sel_ms / max(step_ms, 1e-9), rel=0.05, abs=0.6)


def pytest_approx(value, rel, abs):  # noqa: A002
    import pytest

    return pytest.approx(value, rel=rel, abs=abs)


def test_conv_grad_counts_every_convolution_and_totals_each_phase_by_hand():
    import conv_grad
    import jax
    import jax.numpy as jnp

    from zoomin_jax.models.inception_resnet import InceptionResNetV2

    shapes = conv_grad.conv_shapes(75, 2, (1, 1, 1), 0.125)
    params = jax.eval_shape(lambda: InceptionResNetV2((1, 1, 1), 0.125, jnp.float32).init(
        jax.random.PRNGKey(0), jnp.zeros((2, 75, 75, 3)), False))["params"]
    kernels = [x for x in jax.tree.leaves(params) if x.ndim == 4]  # every convolution has one 4-d kernel
    assert sum(s["count"] for s in shapes) == len(kernels) and len(kernels) > 20
    assert shapes[0]["h"] == 75 and shapes[0]["cin"] == 3 and shapes[0]["stride"] == 2  # the stem's first
    # two shapes, hand-worked: ours fwd 1*2 + 2*1 = 4 ms, peer 2*2 + 1*1 = 5 ms -> 1.25x; dx 2 vs 4 ms -> 2.00x;
    # dW 10 vs 5 ms -> 0.50x; all 16 vs 14 ms -> 0.88x; ours loses most on the first shape's dW: (4 - 1) * 2 = 6 ms
    a = {"h": 9, "w": 9, "cin": 4, "cout": 8, "kh": 3, "kw": 3, "stride": 1, "padding": "SAME", "count": 2}
    b = {**a, "cin": 8, "count": 1}
    ours = [{**a, "fwd": 1e-3, "dx": 0.5e-3, "dW": 4e-3}, {**b, "fwd": 2e-3, "dx": 1e-3, "dW": 2e-3}]
    peer = [{**a, "fwd": 2e-3, "dx": 1e-3, "dW": 1e-3}, {**b, "fwd": 1e-3, "dx": 2e-3, "dW": 3e-3}]
    text = conv_grad.table(ours, peer, top=1)
    assert "| fwd | 0.004 | 0.005 | 1.25x |" in text and "| dx | 0.002 | 0.004 | 2.00x |" in text
    assert "| dW | 0.010 | 0.005 | 0.50x |" in text and "| all three | 0.016 | 0.014 | 0.88x |" in text
    assert text.splitlines()[-1] == "| 9x9, 4 -> 8, 3x3, /1, SAME x 2 | dW | 4.0 | 1.0 | +6 |"
