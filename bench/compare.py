"""This project against the PyTorch peer (timm's Inception-ResNet-v2), side by side on one machine, one table.

    python bench/compare.py                                   # both sides with this interpreter (bench extra)
    python bench/compare.py --peer_python=/path/to/venv/bin/python --out=bench/compare.md

Every case runs in its own process, ours then the peer's, one after the other (never two at once), and that pair
is repeated `--rounds` times, alternating, so a slow minute of a noisy machine falls on both sides: per case the
median seconds per step over all rounds' timed steps (`--steps` each, after a warm-up), their spread (min-max),
images per second, and the ratio peer time / our time (above 1: we are faster) as the median of the rounds' ratios
with their range. Quote the median and the range, never one round. Also our compile and initialisation seconds,
the peer's model-creation seconds, each process's peak host RSS, and XLA's FLOPs per image. Cases:

  M-Net train step and inference at 299 and 492 px (`bench/backbone.py`: the full backbone with a 5-class head)
  the full zoom-in train step at paper shapes, float32 (`bench/train_step.py --config=configs/full.py
      --stage=joint` / `bench/peer_zoomin.py`)
  the default config's train step (ours only: no peer network of that width)

Our side runs with the project's default settings for each workload (configs/full.py's CPU XLA flags and host
initialisation for paper width). The peer needs torch and timm (`pip install -e ".[bench]"`, or any interpreter that
has them: `--peer_python`). Figures move from machine to machine: only ratios from one run count.
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("peer_python", sys.executable, "Interpreter with torch and timm for the peer's cases.")
flags.DEFINE_integer("steps", 5, "Timed steps per case and round.")
flags.DEFINE_integer("rounds", 3, "Rounds per case, ours and the peer's alternating.")
flags.DEFINE_integer("batch", 2, "Images per step for the M-Net and full zoom-in cases.")
flags.DEFINE_list("only", [], "Run only the cases whose key is listed (mnet_train_299, mnet_train_492, "
                  "mnet_infer_299, mnet_infer_492, zoomin_joint, default_joint).")
flags.DEFINE_string("out", "", "Also write the table (markdown) to this file.")
flags.DEFINE_integer("timeout", 1800, "Seconds per process.")
flags.DEFINE_bool("tiny", False, "Tiny shapes and networks (the test of this script): nothing it prints is a figure.")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cases() -> list[tuple[str, str, list[str], list[str] | None]]:
    """(key, description, our command, the peer's command or None)."""
    b, n = str(FLAGS.batch), str(FLAGS.steps)
    tiny = ["--repeats=1,1,1", "--width=0.125", "--warmup=0"] if FLAGS.tiny else []
    out = []
    for mode in ("train", "infer"):
        for size in (299, 492) if not FLAGS.tiny else (75,):
            args = [f"--mode={mode}", f"--size={size}", f"--batch={b}", f"--steps={n}"]
            out.append((f"mnet_{mode}_{size}", f"M-Net {'train step' if mode == 'train' else 'inference'}, {size} px",
                        [sys.executable, "bench/backbone.py", "--framework=jax", *args, *tiny],
                        None if FLAGS.tiny else [FLAGS.peer_python, "bench/backbone.py", "--framework=torch", *args]))
    full = ["--config=configs/full.py", "--stage=joint", f"--config.batch_size={b}", "--config.model.dtype=float32",
            "--config.mesh.data=1", f"--steps={n}", "--json"]
    if FLAGS.tiny:
        full = ["--config=tests/tiny.py", "--stage=joint", "--config.mesh.data=1", "--steps=1", "--json"]
    out.append(("zoomin_joint", "full zoom-in train step, paper shapes (1230 / 492 px, 4 x 294 px patches)",
                [sys.executable, "bench/train_step.py", *full],
                None if FLAGS.tiny else [FLAGS.peer_python, "bench/peer_zoomin.py", f"--batch={b}", f"--steps={n}"]))
    if not FLAGS.tiny:
        out.append(("default_joint", "default config train step (joint stage, 400 / 160 px, batch 8)",
                    [sys.executable, "bench/train_step.py", "--config=configs/default.py", "--stage=joint",
                     f"--steps={max(5, int(n))}", "--json"], None))
    return [c for c in out if not FLAGS.only or c[0] in FLAGS.only]


def run(cmd: list[str]) -> dict:
    """One case in its own process; its last JSON line."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=FLAGS.timeout)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def pooled(rounds: list[dict]) -> dict:
    """One side's rounds as one result: every round's timed steps together (the first failure, if any)."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    times = [t for r in rounds for t in r["times"]]
    first = rounds[0]
    return {**first, "times": times, "median_s": statistics.median(times),
            "images_per_s": statistics.median(r["images_per_s"] for r in rounds),
            "peak_rss_gib": max(r["peak_rss_gib"] for r in rounds)}


def ratios(ours: list[dict], peer: list[dict] | None) -> list[float]:
    """Peer time / ours per round, where both sides of the round ran."""
    if not peer:
        return []
    return [p["median_s"] / o["median_s"] for o, p in zip(ours, peer, strict=True)
            if "error" not in o and "error" not in p]


def _time(r: dict | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return f"failed ({r['error']})"
    t = r["times"]
    return f"{statistics.median(t):.3g} s ({min(t):.3g}-{max(t):.3g}), {r['images_per_s']:.3g} img/s"


def _ratio(rs: list[float]) -> str:
    if not rs:
        return "-"
    spread = f" ({min(rs):.2f}-{max(rs):.2f}, {len(rs)} rounds)" if len(rs) > 1 else " (1 round)"
    return f"**{statistics.median(rs):.2f}x**{spread}"


def table(rows: list[tuple[str, list[dict], list[dict] | None]]) -> str:
    """rows: (description, our rounds, the peer's rounds or None)."""
    head = ("| case | ours: s/step median (min-max), img/s | peer (timm) | peer time / ours: median (range) | ours: "
            "compile s, init s | peer: model s | peak RSS ours / peer GiB | GFLOP per image (XLA) |")
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for desc, our_rounds, peer_rounds in rows:
        ours = pooled(our_rounds)
        peer = pooled(peer_rounds) if peer_rounds else None
        ours_ok, peer_ok = "error" not in ours, bool(peer) and "error" not in peer
        cost = f"{ours.get('compile_s', ours.get('first_s')):.0f}, {ours['init_s']:.1f}" if ours_ok else "-"
        peer_init = f"{peer['init_s']:.1f}" if peer_ok else "-"
        rss = (f"{ours['peak_rss_gib']:.2f}" if ours_ok else "-") + " / " + (
            f"{peer['peak_rss_gib']:.2f}" if peer_ok else "-")
        flops = f"{ours['gflop_per_image']:.4g}" if ours_ok else "-"
        lines.append(f"| {desc} | {_time(ours)} | {_time(peer)} | {_ratio(ratios(our_rounds, peer_rounds))} | "
                     f"{cost} | {peer_init} | {rss} | {flops} |")
    return "\n".join(lines)


def main(argv):
    del argv
    rows = []
    for key, desc, ours_cmd, peer_cmd in cases():
        ours, peer = [], [] if peer_cmd else None
        for r in range(FLAGS.rounds):
            print(f"[compare] {key} round {r + 1}/{FLAGS.rounds}: ours ...", flush=True)
            ours.append(run(ours_cmd))
            if peer_cmd:
                print(f"[compare] {key} round {r + 1}/{FLAGS.rounds}: peer ...", flush=True)
                peer.append(run(peer_cmd))
            print(json.dumps({"case": key, "round": r + 1, "ours": ours[-1], "peer": peer[-1] if peer else None}),
                  flush=True)
        rows.append((desc, ours, peer))
    text = table(rows)
    print(text)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
