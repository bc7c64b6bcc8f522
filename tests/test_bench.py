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


def test_compare_table_ratio_is_peer_time_over_ours():
    ours = {"times": [1.0, 0.9, 1.2], "median_s": 1.0, "images_per_s": 2.0, "compile_s": 61.4, "init_s": 8.5,
            "peak_rss_gib": 7.5, "gflop_per_image": 514.0}
    peer = {"times": [2.5, 2.4, 2.6], "median_s": 2.5, "images_per_s": 0.8, "init_s": 0.9, "peak_rss_gib": 4.25}
    text = compare.table([("M-Net train step, 492 px", ours, peer),
                          ("default", ours, None),
                          ("broken", {"error": "exit 1: ['boom']"}, peer)])
    rows = text.splitlines()
    assert len(rows) == 5 and all(r.count("|") == rows[0].count("|") for r in rows)
    assert "| **2.50x** |" in rows[2] and "1 s (0.9-1.2), 2 img/s" in rows[2] and "| 61, 8.5 | 0.9 |" in rows[2]
    assert "| 7.50 / 4.25 | 514 |" in rows[2]
    assert "| - | - |" in rows[3]  # no peer: no ratio
    assert "failed (exit 1" in rows[4] and "**" not in rows[4]


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
