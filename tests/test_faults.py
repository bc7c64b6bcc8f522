"""Fault injection (issue 11): the faults a hostile user or a scheduler causes, and what the run does about them.

Real subprocesses (`python -m zoomin_jax.main`) on the tiny config cut to one stage of STEPS steps with a checkpoint
every 2, one prepared dataset and one JAX persistent compilation cache shared by all of them (the reference run
compiles; the others load: measured 132 s -> 44 s per run on a loaded 2-core machine). The reference starts first;
once it has compiled its train step the two other lanes start, each command as soon as what it needs has ended:

  reference: one uninterrupted run, the oracle for every other lane;
  kill -9:   killed at a moment drawn from KILL_SEEDS (a step line, then a delay), re-run, killed again at the next
             seed's moment (drawn among the later steps and the stage-end evaluation); then 4 KiB of random bytes
             written into the newest checkpoint's model data: re-run to the end, falling back past the broken step
             (named), while `--mode=eval` on a copy refuses it (exit 1, one line with the fix);
  SIGTERM:   stopped with SIGSTOP after its first step while a second run on the same workdir is refused (naming the
             holder's pid; the workdir untouched), then SIGTERM: exit 75 within a few seconds; the re-run gets
             SIGTERM as its last step line appears (save / stage-end evaluation): exit 75 within a few seconds;
             re-run to the end.

Both interrupted lanes must end with parameters, batch statistics, optimiser state and the predictions CSV
bit-identical to the reference, and with one metrics row per step. A killed run's lock never blocks the re-run (the
kernel drops a flock with its holder). In-process: skip accounting on a damaged IDRiD download whose dropped set is
known by construction. Bad batch sizes are refused before the workdir exists: tests/test_train_guards.py (not
repeated here). Other checkpoint damage (truncated, deleted, garbled files) in-process:
tests/test_checkpoint_integrity.py.
"""

import csv
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import fixtures_real as fx
import jax
import numpy as np
import pytest
from tiny import one_stage_config

pytestmark = pytest.mark.slow  # real subprocesses killed and resumed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
KILL_SEEDS = (1, 2)  # each draws a kill moment (step line, delay), each after the previous: (3, 0.38 s), (6, 0.12 s)
TIMEOUT_S = 900  # all lanes together; a hang fails here instead of blocking CI
PROMPT_S = 20  # "within a few seconds" of SIGTERM, inside a usual 30 s grace period (measured: 0.4-8 s quiet, 12 s
# with two trainings beside the suite on 2 cores: mostly the last checkpoint write)
OVERRIDES = ["--config=tests/tiny.py", "--config.stage_order=mnet", f"--config.stages.mnet.steps={STEPS}",
             "--config.checkpoint_every=2", "--config.log_every=1", "--config.data.synthetic.num_validation=16",
             # Test speed only (the same for every run compared): LLVM without optimisation compiles ~40% faster.
             "--config.cpu_xla_flags=--xla_backend_optimization_level=0"]
PREDICTIONS = f"predictions/mnet_step{STEPS}_validation.csv"


def _config(data_dir):
    return one_stage_config(data_dir, STEPS, 16)


class _Runs:
    """Starts `python -m zoomin_jax.main` processes with the shared data and compilation cache; keeps their logs."""

    def __init__(self, tmp, data_dir):
        self.tmp, self.data_dir, self.start = tmp, data_dir, time.monotonic()
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                    # LLVM -O0 compiles faster; every run here is compared with another run made alike
                    "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_backend_optimization_level=0",
                    # the session's compilation cache (conftest.py), else this module's own
                    "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache")),
                    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        self.lock = threading.Lock()

    def popen(self, workdir, name, extra=()):
        log = self.tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "zoomin_jax.main", *OVERRIDES, f"--config.data.data_dir={self.data_dir}",
               f"--workdir={workdir}", *extra]
        p = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        p.log = log
        with self.lock:
            self.procs.append(p)
        return p

    def deadline_left(self) -> float:
        return TIMEOUT_S - (time.monotonic() - self.start)

    def wait(self, p, timeout=None):
        try:
            return p.wait(min(timeout or 1e9, max(self.deadline_left(), 1)))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{p.log.name} still running; log tail:\n{_text(p.log)[-3000:]}") from None

    def wait_step(self, p, step):
        """Blocks until `p` printed the progress line of `step` (or a later one); False if it ended first."""
        while self.deadline_left() > 0:
            if _last_step(_text(p.log)) >= step:
                return True
            if p.poll() is not None:
                return _last_step(_text(p.log)) >= step
            time.sleep(0.02)
        raise AssertionError(f"{p.log.name}: no step {step} within the time limit:\n{_text(p.log)[-3000:]}")

    def run(self, workdir, name):
        p = self.popen(workdir, name)
        self.wait(p)
        return p


def _text(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def _last_step(text):
    steps = [int(s) for s in re.findall(rf"^\[mnet\] step (\d+)/{STEPS} ", text, re.M)]
    return max(steps, default=0)


def _kill_moments():
    """(step line, delay in s) per seed; each later seed's step is drawn after the previous one (it must resume)."""
    out, after = [], 0
    for i, seed in enumerate(KILL_SEEDS):
        rng = np.random.default_rng(seed)
        step = int(rng.integers(after + 1, STEPS - (len(KILL_SEEDS) - 1 - i) + 1))  # room left for the later ones
        out.append((step, float(rng.uniform(0.0, 0.4))))
        after = step
    return out


def _reference(runs, out):
    out["reference_proc"] = p = runs.popen(runs.tmp / "reference", "reference")
    runs.wait(p)
    out["reference"] = p


def _kill_lane(runs, out):
    workdir, procs = runs.tmp / "killed", []
    for i, (step, delay) in enumerate(_kill_moments()):
        p = runs.popen(workdir, f"killed{i}")
        runs.wait_step(p, step)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        runs.wait(p)
        procs.append(p)
    out["killed"] = procs
    # Random bytes in the newest checkpoint's model data: the re-run falls back past it, an eval (on a copy, taken
    # before the re-run moves the broken step aside) refuses it.
    out["broken_step"] = _break_latest_checkpoint(workdir)
    shutil.copytree(workdir, runs.tmp / "broken_eval")
    evaluation = runs.popen(runs.tmp / "broken_eval", "broken_eval", ["--mode=eval"])
    out["killed_final"] = runs.run(workdir, "killed_final")
    runs.wait(evaluation)
    out["broken_eval"] = evaluation


def _break_latest_checkpoint(workdir) -> int:
    """Overwrites 4 KiB inside the largest model data file of the newest committed step; returns the step."""
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    step = steps[-1]
    files = [f for f in (workdir / "checkpoints" / str(step) / "model").rglob("*") if f.is_file() and "d" in f.parts]
    target = max(files, key=lambda f: f.stat().st_size)
    size = target.stat().st_size
    with open(target, "r+b") as f:
        f.seek(size // 4)
        f.write(np.random.default_rng(11).integers(0, 256, min(4096, size // 2), dtype=np.uint8).tobytes())
    return step


def _sigterm_lane(runs, out):
    workdir = runs.tmp / "sigterm"
    p = runs.popen(workdir, "sigterm_training")
    runs.wait_step(p, 1)
    p.send_signal(signal.SIGSTOP)  # alive and holding the workdir, at a known point
    before = _snapshot(workdir)
    second = runs.run(workdir, "second")
    out["second"], out["untouched"] = second, _snapshot(workdir) == before
    p.send_signal(signal.SIGTERM)
    t = time.monotonic()
    p.send_signal(signal.SIGCONT)
    runs.wait(p, 120)
    out["sigterm_training"], out["s_training"] = p, time.monotonic() - t
    # Resumed with an input worker (the others run without): the saved data position does not fit this pipeline,
    # so the run continues from the position the step implies; sigterm_final resumes the other way round.
    p = runs.popen(workdir, "sigterm_eval", ["--config.data.num_workers=1"])
    runs.wait_step(p, STEPS)  # printed after the last step's check: what follows is the save and the evaluation
    t = time.monotonic()
    p.send_signal(signal.SIGTERM)
    runs.wait(p, 120)
    out["sigterm_eval"], out["s_eval"] = p, time.monotonic() - t
    out["sigterm_final"] = runs.run(workdir, "sigterm_final")


def _snapshot(workdir):
    """What a second run must not change: the checkpoint folders and the metrics file."""
    ckpts = sorted(os.listdir(workdir / "checkpoints")) if (workdir / "checkpoints").exists() else []
    return ckpts, _text(workdir / "metrics.jsonl")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from zoomin_jax.data import datasets

    tmp = tmp_path_factory.mktemp("faults")
    data_dir = tmp / "tfds"
    datasets.open_builder(_config(data_dir))  # prepared once, here: the subprocesses only read it
    r, out, errors = _Runs(tmp, data_dir), {"tmp": tmp}, []

    def lane(fn):
        try:
            fn(r, out)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(f"{fn.__name__}: {e}")

    threads = [threading.Thread(target=lane, args=(_reference,))]
    threads[0].start()
    # The other lanes start once the reference has compiled its train step: they load it from the cache instead
    # of compiling it again alongside (~50 s of CPU each on a loaded 2-core machine).
    while "reference_proc" not in out and not errors:
        time.sleep(0.05)
    if not errors:
        r.wait_step(out["reference_proc"], 1)
    for fn in (_kill_lane, _sigterm_lane):
        threads.append(threading.Thread(target=lane, args=(fn,)))
        threads[-1].start()
    try:
        for t in threads:
            t.join(max(r.deadline_left(), 1))
    finally:
        for p in r.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out["wall_s"] = round(time.monotonic() - r.start)
    print(f"\nfaults: {len(r.procs)} runs in {out['wall_s']} s; SIGTERM to exit: training "
          f"{out.get('s_training', float('nan')):.2f} s, evaluation {out.get('s_eval', float('nan')):.2f} s")
    if errors or any(t.is_alive() for t in threads):
        pytest.fail("; ".join(errors) or "a lane did not finish")
    return out


@functools.cache
def _tree(workdir):
    """{item/path: array} of the final checkpoint's model and optimiser items, as saved."""
    import orbax.checkpoint as ocp

    leaves = {}
    for item in ("model", "opt"):
        with ocp.StandardCheckpointer() as c:
            tree = c.restore(os.path.join(workdir, "checkpoints", str(STEPS), item))
        leaves.update({f"{item}{jax.tree_util.keystr(k)}": np.asarray(v)
                       for k, v in jax.tree_util.tree_leaves_with_path(tree)})
    return leaves


def _assert_identical_to_reference(out, workdir):
    ref, got = _tree(out["tmp"] / "reference"), _tree(workdir)
    assert sorted(got) == sorted(ref)
    differ = [k for k in ref if not np.array_equal(ref[k], got[k])]
    assert not differ, f"{len(differ)} of {len(ref)} arrays differ from the uninterrupted run, e.g. {differ[:3]}"
    assert _text(workdir / PREDICTIONS) == _text(out["tmp"] / "reference" / PREDICTIONS)
    rows = [line for line in _text(workdir / "metrics.jsonl").splitlines() if '"kind": "train"' in line]
    assert sorted(int(re.search(r'"step": (\d+)', r).group(1)) for r in rows) == list(range(1, STEPS + 1))


def test_kill_9_at_random_moments_then_rerun_is_bit_identical(runs):
    assert runs["reference"].returncode == 0, _text(runs["reference"].log)[-3000:]
    for p in runs["killed"]:
        assert p.returncode == -signal.SIGKILL, (p.log.name, p.returncode, _text(p.log)[-2000:])
    final = runs["killed_final"]
    assert final.returncode == 0, _text(final.log)[-3000:]
    assert "in use" not in _text(final.log)  # the killed runs' locks went with them
    _assert_identical_to_reference(runs, runs["tmp"] / "killed")


def test_a_run_shows_its_own_lines_and_warnings_not_the_libraries_info_logging(runs):
    """Without --library_logs, no INFO record of Orbax (its checkpoint internals) reaches the output, while the
    project's own INFO lines and a library's warnings do."""
    lines = _text(runs["reference"].log).splitlines()
    info = [x for x in lines if re.match(r"I\d{4} ", x)]
    assert any("train.py" in x and "Stage mnet" in x for x in info), lines[:40]
    assert not [x for x in info if "orbax" in x or "checkpoint_manager.py" in x or "atomicity.py" in x], info[:20]
    assert any(re.match(r"W\d{4} .*dataset_builder.py", x) for x in lines)  # tfds's warning stays
    assert len(lines) < 120, len(lines)


def test_second_run_on_a_workdir_in_use_is_refused_naming_the_holder(runs):
    second, holder = runs["second"], runs["sigterm_training"]
    text = _text(second.log)
    assert second.returncode not in (0, 75), text[-2000:]
    line = [x for x in text.splitlines() if "is in use by" in x]
    assert len(line) == 1 and f"pid {holder.pid} on host " in line[0], text[-2000:]
    assert f"--workdir={runs['tmp'] / 'sigterm'}" in line[0]  # the holder's command line
    assert "another --workdir" in line[0]  # and what to do
    assert "Traceback" not in text
    assert runs["untouched"]  # checkpoints and metrics as the holder left them


def test_sigterm_during_training_and_during_evaluation_exit_75_promptly_and_resume_identical(runs):
    training, evaluation = runs["sigterm_training"], runs["sigterm_eval"]
    assert training.returncode == 75, _text(training.log)[-3000:]
    assert re.search(r"^Preempted: SIGTERM in stage mnet: step \d is saved", _text(training.log), re.M)
    assert evaluation.returncode == 75, _text(evaluation.log)[-3000:]
    said = [x for x in _text(evaluation.log).splitlines() if x.startswith("Preempted:")]
    assert len(said) == 1 and "evaluation" in said[0], said
    assert runs["s_training"] < PROMPT_S and runs["s_eval"] < PROMPT_S, (runs["s_training"], runs["s_eval"])
    final = runs["sigterm_final"]
    assert final.returncode == 0, _text(final.log)[-3000:]
    _assert_identical_to_reference(runs, runs["tmp"] / "sigterm")


def test_a_changed_worker_count_resumes_the_step_from_its_derived_position_moving_nothing(runs):
    """sigterm_eval resumed with 1 input worker from a step saved with none, sigterm_final with none from a step
    saved with 1: each continues from its step (not from scratch), says so once, and the run still ends
    bit-identical to the reference (test above); no checkpoint was taken for broken."""
    step = int(re.search(r"^Preempted: SIGTERM in stage mnet: step (\d+) is saved",
                         _text(runs["sigterm_training"].log), re.M).group(1))
    for name, resumed in (("sigterm_eval", step), ("sigterm_final", STEPS)):
        text = _text(runs[name].log)
        said = [x for x in text.splitlines() if x.startswith("data position saved with step")]
        assert said == [f"data position saved with step {resumed} not used: saved by a pipeline of another layout "
                        f"(another data.num_workers?); continuing from the position step {resumed} implies (the same "
                        "batches)"], text[-3000:]
        assert "broken" not in text and "starting afresh" not in text
        assert _last_step(text) == STEPS or name == "sigterm_final"
        first = re.search(rf"^\[mnet\] step (\d+)/{STEPS} ", text, re.M)
        assert first is None or int(first.group(1)) > resumed, (name, resumed, first)
    assert not (runs["tmp"] / "sigterm" / "checkpoints_broken").exists()


def test_random_bytes_in_the_latest_checkpoint_training_falls_back_eval_refuses(runs):
    step = runs["broken_step"]
    final = _text(runs["killed_final"].log)
    said = [x for x in final.splitlines() if x.startswith(f"checkpoint step {step} is broken (")]
    assert len(said) == 1 and ("resuming from step" in said[0] or "starting afresh" in said[0]), final[-3000:]
    # ... and the run still ends exactly as the uninterrupted one: test_kill_9_at_random_moments_then_rerun_....
    evaluation, text = runs["broken_eval"], _text(runs["broken_eval"].log)
    assert evaluation.returncode == 1, text[-3000:]
    line = [x for x in text.splitlines() if x.startswith(f"zoomin_jax: checkpoint step {step} is broken (")]
    assert len(line) == 1, text[-3000:]  # the step, the reason, and the fix: an intact step if any, or removing it
    assert ("--step=" in line[0] or "no other step is intact" in line[0]) and ", or remove " in line[0], line
    assert "Traceback" not in text and "[eval" not in text  # refused, nothing evaluated


# --- skip accounting on a damaged download (in-process) ---------------------------------------------------------


def _damaged_idrid(root):
    """An IDRiD training set with one photo of each damage the issue's probe used; returns (kept, dropped) as
    {name: grade} and {name: reason}, known from the construction alone."""
    img = root / fx.IDRID_GRADED / "1. Original Images" / "a. Training Set"
    img.mkdir(parents=True)
    kept, dropped, rows = {}, {}, []
    for i, grade in enumerate((0, 2, 4)):
        name = f"IDRiD_00{i + 1}"
        (img / f"{name}.jpg").write_bytes(fx.jpeg_bytes(fx.fundus_photo(seed=700 + i)))
        rows.append([name, grade, 0])
        kept[name] = grade
    rows.append(["IDRiD_002", 2, 0])  # an exact repeat: merged, the photo kept
    fx.write_bad_photos(img, {"IDRiD_004": "truncated", "IDRiD_007": "grayscale"}, ext=".jpg")
    (img / "IDRiD_005.jpg").write_bytes(b"")  # zero bytes
    (img / "IDRiD_006.jpg").write_bytes(b"<html>404 Not Found</html>\n")  # text saved as a JPEG
    dropped.update({"IDRiD_004": "truncated", "IDRiD_005": "corrupt", "IDRiD_006": "corrupt",
                    "IDRiD_007": "grayscale"})
    rows += [["IDRiD_004", 1, 0], ["IDRiD_005", 1, 0], ["IDRiD_006", 1, 0], ["IDRiD_007", 1, 0]]
    (img / "IDRiD_008.jpg").write_bytes(fx.jpeg_bytes(fx.fundus_photo(seed=708)))
    rows.append(["IDRiD_008", 7, 0])  # grade 7
    dropped["IDRiD_008"] = "bad_label"
    (img / "IDRiD_009.jpg").write_bytes(fx.jpeg_bytes(fx.fundus_photo(seed=709)))
    rows += [["IDRiD_009", 1, 0], ["IDRiD_009", 3, 0]]  # two rows that disagree: no guessed label
    dropped["IDRiD_009"] = "conflicting_rows"
    rows.append(["IDRiD_010", 2, 1])  # its photo is missing
    dropped["IDRiD_010"] = "missing_image"
    (img / "IDRiD_011.jpg").write_bytes(fx.jpeg_bytes(fx.fundus_photo(seed=711)))  # a photo without a row
    dropped["IDRiD_011"] = "no_label"
    csv_path = root / fx.IDRID_GRADED / "2. Groundtruths" / "a. IDRiD_Disease Grading_Training Labels.csv"
    csv_path.parent.mkdir(parents=True)
    with open(csv_path, "w", newline="", encoding="utf-8-sig") as f:  # with a byte-order mark
        w = csv.writer(f)
        w.writerow(["Image name", "Retinopathy grade", "Risk of macular edema "])
        w.writerows(rows)
    return kept, dropped


def test_each_dropped_photo_of_a_damaged_download_is_counted_once(tmp_path):
    from zoomin_jax.data import idrid

    kept, dropped = _damaged_idrid(tmp_path / "manual")
    builder = idrid.prepare(tmp_path / "manual", tmp_path / "tfds", 64, False, min_side=fx.MIN_SIDE, num_workers=1)
    stored = {ex["id"].decode(): int(ex["label"]) for ex in builder.as_data_source("train")}
    assert stored == kept  # nothing mislabelled, nothing damaged stored
    skipped = builder.info.metadata["skipped"]["train"]
    assert sum(skipped.values()) == len(dropped) == 8  # the printed total is the number of photos dropped
    want: dict[str, int] = {}
    for reason in dropped.values():
        want[reason] = want.get(reason, 0) + 1
    assert skipped == want
    assert builder.info.metadata["duplicate_rows"] == {"train": 1}  # reported, but nothing was dropped for it


# --- SIGTERM while compiling (in-process) -----------------------------------------------------------------------


def test_sigterm_while_compiling_is_honoured_without_waiting_for_the_compile():
    import jax.numpy as jnp

    from zoomin_jax import preemption

    x = jnp.ones((32, 32))
    compiles = []

    def listen(event, secs, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    # Without SIGTERM the compile finishes in its thread and fills jit's cache: the call after it compiles nothing.
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with preemption.Preemption() as preempt:
            fn = jax.jit(lambda v: jnp.tanh(v) @ v + 1.0)
            preemption.compile_promptly(fn, (x,), preempt, "a small function")
            assert len(compiles) == 1
            fn(x).block_until_ready()
            assert len(compiles) == 1
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)

    def slow_to_compile(v):  # ~300 fused ops: seconds of XLA compile, well above the poll interval
        for i in range(300):
            v = jnp.sin(v) @ v + i
        return v

    with preemption.Preemption() as preempt:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        start = time.perf_counter()
        timer.start()
        with pytest.raises(preemption.Preempted, match="while compiling the slow function"):
            preemption.compile_promptly(jax.jit(slow_to_compile), (x,), preempt, "the slow function")
        waited = time.perf_counter() - start
        still_compiling = preemption.abandoned_compiles()
    assert waited < 0.5 + 3 * preemption.POLL_S, waited  # honoured within a poll or so of the signal
    assert still_compiling == ["compile the slow function"]  # it did not wait for the compile to end
