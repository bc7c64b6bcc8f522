"""Two real processes on this machine (jax.distributed, coordinator on 127.0.0.1, 4 CPU devices each) against one
process with 8 devices, all through `python -m zoomin_jax.main` on the tiny config:

(a) the same training steps give the same parameters as one process with the same global batch (SGD, so that a
    float-sized difference cannot be amplified by Adam's normalisation of near-zero gradients);
(b) SIGTERM to both processes mid-run: both stop at the same step (JAX's preemption sync point), save it, exit 75;
    one process (8 devices) resumes there, deriving the data position (the one saved by two processes does not
    fit), and finishes with the parameters of (a);
(c) a two-process evaluation writes the same predictions CSV, row for row, as one process;
(d) a fault seen by one process only (no file locks on process 0; an I/O error reading the checkpoint on process
    1, made by tests/fault_shim.py): both processes stop, exit 1, with the same line; nothing is moved.

One tiny dataset is prepared here (12 validation photographs: with an eval batch of 8 the evaluation has two steps
and padding, which two processes lay out differently from one). The runs overlap, so both cores stay busy, and all
of them together have a timeout, so a hang fails the tests instead of blocking CI.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tiny import one_stage_config

from zoomin_jax import checkpoint, sharding
from zoomin_jax.forward import abstract_variables, build

pytestmark = pytest.mark.slow  # two real processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
# SIGTERM is sent when the pair logs its stage line, before the train step compiles: the two processes then agree
# at the first check after the compile (step 1 or 2), however loaded the machine is. Sent at "step 1/" (before) it
# could arrive after the last of 8 short steps on a loaded machine, and the run ended 0 instead of 75.
SIGTERM_AT = "Stage mnet: steps 1-"
TIMEOUT_S = 1200  # all runs (~10 min on a 2-core machine loaded by others); a hang in a collective fails here
OVERRIDES = ["--config=tests/tiny.py", "--config.stage_order=mnet", f"--config.stages.mnet.steps={STEPS}",
             "--config.optimizer.name=sgd", "--config.log_every=1", "--config.checkpoint_every=1000",
             "--config.data.synthetic.num_validation=12",
             # Test speed only (the same for every run compared): LLVM without optimisation compiles ~40% faster.
             "--config.cpu_xla_flags=--xla_backend_optimization_level=0"]


def _config(data_dir):
    return one_stage_config(data_dir, STEPS, 12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data_dir, workdir, log, devices, extra=(), process_id=None, port=None, fault=None):
    main = ["-m", "zoomin_jax.main"] if fault is None else [os.path.join(ROOT, "tests", "fault_shim.py"), fault]
    cmd = [sys.executable, *main, *OVERRIDES, f"--config.data.data_dir={data_dir}", f"--workdir={workdir}", *extra]
    if process_id is not None:
        cmd += ["--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                f"--process_id={process_id}"]
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _two(data_dir, workdir, logs, extra=(), faults=(None, None)):
    port = _free_port()
    return [_start(data_dir, workdir, logs[i], 4, extra, process_id=i, port=port, fault=faults[i]) for i in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs everything, each command as soon as what it needs has ended: the one-process run and the pair that gets
    SIGTERM (once training is under way, after jax.distributed installed its handler) start together; the pair
    evaluating the one-process checkpoint starts when that run ends, the resuming pair when the preempted one does.
    """
    from zoomin_jax.data import datasets

    tmp = tmp_path_factory.mktemp("multiprocess")
    data_dir = tmp / "tfds"
    datasets.open_builder(_config(data_dir))  # prepared once, here: the subprocesses only read it
    one, two, locked = tmp / "one", tmp / "two", tmp / "locked"
    log = {name: [tmp / f"{name}{i}.log" for i in range(2)]
           for name in ("one", "first", "again", "eval", "no_locks", "restore_eio")}
    out, start = {"data_dir": data_dir, "one": one, "two": two, "log": log}, time.monotonic()
    running = {"one": [_start(data_dir, one, log["one"][0], 8)], "first": _two(data_dir, two, log["first"])}
    then = {"one": ("eval", lambda: _two(data_dir, one, log["eval"], extra=["--mode=eval"])),
            # the preempted pair's run finished by one process with 8 devices: the data position saved by two
            # processes does not fit, the step's is derived
            "first": ("again", lambda: [_start(data_dir, two, log["again"][0], 8)]),
            # faults seen by one process of a pair only: every process must stop, with the same line
            "eval": ("no_locks", lambda: _two(data_dir, locked, log["no_locks"], faults=("no_locks", None))),
            "again": ("restore_eio", lambda: _two(data_dir, two, log["restore_eio"], faults=(None, "restore_eio")))}
    sigterm_sent = False
    try:
        while running:
            if not sigterm_sent and SIGTERM_AT in _text(log["first"][0]):
                for p in running["first"]:
                    p.send_signal(signal.SIGTERM)
                sigterm_sent = True
            for name, procs in list(running.items()):
                if all(p.poll() is not None for p in procs):
                    out[f"rc_{name}"] = [p.returncode for p in procs]
                    out[f"s_{name}"] = round(time.monotonic() - start)
                    del running[name]
                    if name in then:
                        running[then[name][0]] = then[name][1]()
            if time.monotonic() - start > TIMEOUT_S:
                pytest.fail(f"still running after {TIMEOUT_S} s: {sorted(running)}; log tails:\n"
                            + "\n".join(_text(x)[-2000:] for name in running for x in log[name] if x.exists()))
            time.sleep(0.2)
    finally:
        for procs in running.values():
            for p in procs:
                p.kill()
                p.wait()
    print("\nmultiprocess, seconds from the start when each ended: "
          + ", ".join(f"{k[2:]} {v}" for k, v in out.items() if k.startswith("s_")))
    return out


def _params(workdir, c, step=None):
    ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
    step = ckpt.latest_step() if step is None else step
    repl = sharding.replicated(sharding.make_mesh(-1))  # onto this process's 8 devices, whoever saved it
    abstract = abstract_variables(build(c), c)
    target = checkpoint.abstract_with_sharding(abstract, jax.tree_util.tree_map(lambda _: repl, abstract))
    params = ckpt.restore(step, target)["model"]["params"]
    ckpt.close()
    return step, jax.device_get(params)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _text(path):
    return open(path).read()


def test_sigterm_stops_both_processes_at_the_same_saved_step_and_the_rerun_finishes(runs):
    first = [_text(x) for x in runs["log"]["first"]]
    assert runs["rc_one"] == [0], _text(runs["log"]["one"][0])[-3000:]
    assert runs["rc_first"] == [75, 75], [t[-3000:] for t in first]
    saved = [[line for line in t.splitlines() if line.startswith("Preempted:")] for t in first]
    assert all(len(s) == 1 for s in saved) and saved[0] == saved[1], saved  # the same step, said by both
    step = int(saved[0][0].split("step ")[1].split(" ")[0])
    assert 1 <= step <= STEPS
    assert "Preemption: jax preemption sync manager" in first[0]  # not a per-process flag
    again = _text(runs["log"]["again"][0])  # one process
    assert runs["rc_again"] == [0], again[-3000:]
    assert f"Resuming from {runs['two'] / 'checkpoints'} step {step}" in again
    said = [line for line in again.splitlines() if line.startswith("data position")]
    assert said == [f"data position saved with step {step} not used: saved by 2 process(es), this run has 1; "
                    f"continuing from the position step {step} implies (the same batches)"], again[-3000:]
    assert "broken" not in again and not (runs["two"] / "checkpoints_broken").exists()
    rows = [json.loads(x) for x in open(runs["two"] / "metrics.jsonl")]
    assert sorted(r["step"] for r in rows if r["kind"] == "train") == list(range(1, STEPS + 1))
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [STEPS]


def test_two_processes_train_the_same_parameters_as_one(runs):
    c = _config(runs["data_dir"])
    step_1, params_1 = _params(runs["one"], c)
    step_2, params_2 = _params(runs["two"], c)
    assert step_1 == step_2 == STEPS
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params_1)]
    leaves_1, leaves_2 = jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_2)
    # Float reassociation of the cross-process sums (BatchNorm statistics, gradients) only: measured max 3.6e-7
    # (8 steps, same flags, all variables). Brightness and contrast moved into the step once made it 6e-5 to 1.8e-4:
    # photometric.jitter's rint turned last-bit differences of its mean and products into whole grey levels; its
    # arithmetic is exact now (photometric.py), and without the jitter the figure was 1.3e-6.
    for path, a, b in zip(paths, leaves_1, leaves_2, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=path)
    # ... while the steps since the preempted run's checkpoint moved them far more (1.5e-3 over 5 steps): other
    # examples, or the same in another order, would not match.
    differ = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves_1, leaves_2, strict=True))
    saved = sorted(checkpoint.Checkpointer(str(runs["two"]), async_save=False).all_steps())
    _, params_early = _params(runs["two"], c, step=saved[0])
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves_2, jax.tree_util.tree_leaves(params_early),
                                                             strict=True))
    assert saved[0] < STEPS and moved > 10 * max(differ, 1e-7), (saved, moved, differ)


def test_two_process_evaluation_writes_the_one_process_predictions_row_for_row(runs):
    from zoomin_jax.data import datasets

    assert runs["rc_eval"] == [0, 0], [_text(x)[-3000:] for x in runs["log"]["eval"]]
    one = _rows(runs["one"] / "predictions" / f"mnet_step{STEPS}_validation.csv")  # the one-process stage eval
    two = _rows(runs["one"] / "predictions" / f"eval_step{STEPS}_validation.csv")  # two processes, same checkpoint
    source = datasets.open_split(_config(runs["data_dir"]), "validation")
    records = [source[i] for i in range(len(source))]
    assert [(r["id"], int(r["label"])) for r in two] == [(x["id"].decode(), int(x["label"])) for x in records]
    common = [k for k in one[0] if k in two[0]]  # the stage eval thresholds M-Net's grades only
    assert {"id", "label", "grade_mnet", "grade_mnet_thresholded", "p0", "box0_y0"} <= set(common)
    assert len(one) == len(two) == 12
    probs = [k for k in common if k.startswith("p") or "_p" in k]  # every head's, at float32's 9 digits
    assert len(probs) == 15
    for r1, r2 in zip(one, two, strict=True):
        assert {k: r1[k] for k in common if k not in probs} == {k: r2[k] for k in common if k not in probs}
        # the same grades and boxes; probabilities to float reassociation of the cross-device sums
        np.testing.assert_allclose([float(r2[k]) for k in probs], [float(r1[k]) for k in probs], atol=2e-7)


def _last_lines(name, runs):
    """Each process's last line of output (main's one-line message comes last)."""
    return [_text(x).strip().splitlines()[-1] for x in runs["log"][name]]


def test_no_file_locks_on_process_0_stops_both_processes_with_its_line(runs):
    assert runs["rc_no_locks"] == [1, 1], [_text(x)[-2000:] for x in runs["log"]["no_locks"]]
    lines = _last_lines("no_locks", runs)
    assert lines[0] == lines[1], lines
    assert lines[0].startswith(f"zoomin_jax: cannot lock {runs['data_dir'].parent / 'locked' / 'run.lock'} (No locks "
                               "available): ") and "--workdir" in lines[0], lines
    assert not (runs["data_dir"].parent / "locked" / "checkpoints").exists()  # stopped before any checkpoint


def test_a_restore_that_fails_on_one_process_stops_both_with_the_same_line_moving_nothing(runs):
    assert runs["rc_restore_eio"] == [1, 1], [_text(x)[-2000:] for x in runs["log"]["restore_eio"]]
    lines = _last_lines("restore_eio", runs)
    assert lines[0] == lines[1], lines
    assert lines[0].startswith(f"zoomin_jax: restoring checkpoint step {STEPS} failed (reading its arrays on process "
                               "1: [Errno 5] Input/output error); nothing was moved."), lines
    assert not any("Traceback" in _text(x) for x in runs["log"]["restore_eio"])
    assert not (runs["two"] / "checkpoints_broken").exists()
    assert str(STEPS) in os.listdir(runs["two"] / "checkpoints")
