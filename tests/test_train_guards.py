"""The trainer's guards: a non-finite loss stops the run naming the steps; SIGTERM is caught; replayed metrics rows
are replaced; progress has an ETA; bad batch sizes are refused before the workdir exists."""

import json
import os
import signal

import jax.numpy as jnp
import pytest

from zoomin_jax import preemption, train
from zoomin_jax.progress import MetricWriter, Progress
from zoomin_jax.validate import ConfigError, validate_config


def test_non_finite_loss_names_the_step_and_the_last_good_checkpoint():
    pending = [(10, {"loss": jnp.float32(1.0)}), (11, {"loss": jnp.float32(jnp.nan)}),
               (12, {"loss": jnp.float32(jnp.inf)})]
    expected = r"at step 12 \(checked steps 11-13\).*last good checkpoint is step 10"
    with pytest.raises(FloatingPointError, match=expected):
        train._check_finite(pending, last_good=10)
    fetched = train._check_finite(pending[:1], last_good=10)
    assert float(fetched[0]["loss"]) == 1.0


def test_sigterm_is_a_flag_read_at_check_points_and_the_old_handler_comes_back():
    previous = signal.getsignal(signal.SIGTERM)
    with preemption.Preemption() as p:  # one process, no jax.distributed: a Python handler
        assert p.mechanism == "SIGTERM flag"
        assert not p.check()
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
        assert p.requested and p.check() and p.checks == 2
    assert signal.getsignal(signal.SIGTERM) == previous


def test_metric_writer_drops_rows_of_steps_that_a_resume_replays(tmp_path):
    w = MetricWriter(str(tmp_path), resume_step=None)
    for step, kind in ((2, "train"), (4, "train"), (4, "eval"), (6, "train")):
        w.write(step, kind, {"loss": step})
    w.close()
    (tmp_path / "metrics.jsonl").open("a").write('{"step": 8, "kind": "tr')  # a row cut by kill -9
    w = MetricWriter(str(tmp_path), resume_step=4)  # resumed from the step-4 checkpoint: 5, 6, ... come again
    w.write(6, "train", {"loss": 60})
    w.drop(4, "eval")  # its evaluation is about to run again
    w.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(2, 2), (4, 4), (6, 60)]


def test_progress_line_has_rate_images_per_second_and_eta(monkeypatch):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr("zoomin_jax.progress.time.perf_counter", lambda: next(clock))
    p = Progress(total_steps=1000, global_batch=8, start_step=0)
    line = p.line(50, "mnet", {"loss": 0.5})
    # 50 steps in 10 s: 5 steps/s, 40 img/s, 950 steps left -> 190 s.
    assert "step 50/1000" in line and "5.00 steps/s" in line and "40.0 img/s" in line and "ETA 3m10s" in line


def test_rate_and_eta_when_nothing_is_done_yet_and_after_a_mark():
    """The first evaluation line can come at batch 0 (a first batch slower than the print interval): '?', not a
    ZeroDivisionError that would end process 0 of a pod while the others wait."""
    from zoomin_jax.progress import rate_and_eta

    assert rate_and_eta(0, 40, 0, since_time=100.0, now=135.0) == (0.0, "?")
    # 12 done since the mark (3 done), 6 s ago: 2 per second; 28 left -> 14 s.
    assert rate_and_eta(15, 43, 3, since_time=100.0, now=106.0) == (2.0, "0m14s")


@pytest.mark.parametrize("field,value,pattern", [
    ("batch_size", 0, r"batch_size=0 must be a positive integer"),
    ("batch_size", -8, r"batch_size=-8 must be a positive integer"),
    ("data.eval_batch_size", 12, r"data.eval_batch_size=12 is not divisible by the 8 devices"),
    ("mesh.data", 9, r"mesh.data=9 must be -1 \(all 8 devices\) or a device count in 1..8"),
    ("mine.clusters", 0, r"mine.clusters=0 must be a positive integer"),
    ("model.regions.optic_disc_radius", 1.5, r"optic_disc_radius=1.5 must be 0 \(off\) or in \(0, 1\]"),
    ("model.regions.optic_disc_window", 0.0, r"optic_disc_window=0.0 must be in \(0, 0.5\]"),
    ("data.cache_gb", -1.0, r"data.cache_gb=-1.0 must be >= 0"),
    ("data.augment.brightness", 1.5, r"data.augment.brightness=1.5 must lie in \[0, 1\)"),
])
def test_bad_batch_sizes_are_refused_before_the_workdir_is_touched(tmp_path, field, value, pattern):
    from tiny import tiny_config

    c = tiny_config(str(tmp_path / "tfds"))
    section, _, name = field.rpartition(".")
    setattr(c[section] if section else c, name, value)
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=pattern):
        train.train_and_evaluate(c, str(workdir))
    assert not workdir.exists() and not (tmp_path / "tfds").exists()


def test_two_processes_are_checked_with_their_share_of_rows():
    from tiny import tiny_config

    c = tiny_config()
    c.batch_size = 4  # 2 rows per process, 4 devices each
    with pytest.raises(ConfigError, match=r"batch_size=4 is not divisible by the 8 devices of the data axis \(each "
                                          r"of 2 processes would feed 2 rows to 4 devices\)"):
        validate_config(c, 8, 2, 4)
    c.batch_size, c.mesh.data = 8, 4
    with pytest.raises(ConfigError, match=r"mesh.data=4 uses 4 of the 8 devices.*use mesh.data=-1"):
        validate_config(c, 8, 2, 4)


def test_a_missing_weight_file_is_refused_before_the_workdir_is_touched(tmp_path):
    from tiny import tiny_config

    c = tiny_config(str(tmp_path / "tfds"))
    c.init_from = str(tmp_path / "nowhere")  # a workdir to start from that does not exist
    workdir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train.train_and_evaluate(c, str(workdir))
    assert not workdir.exists() and not (tmp_path / "tfds").exists()


def test_a_stage_order_naming_no_stage_is_refused_with_the_tuple_syntax(tmp_path):
    from tiny import tiny_config

    c = tiny_config(str(tmp_path / "tfds"))
    c.stage_order = ("mnet,cnet",)  # what --config.stage_order=mnet,cnet gives
    with pytest.raises(ConfigError, match=r"names \['mnet,cnet'\]: choose from the defined stages \['anet', 'cnet', "
                                          r"'joint', 'mnet', 'pair'\] \(on the command line a tuple is written"):
        train.train_and_evaluate(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a subprocess
def test_a_config_that_cannot_work_is_one_message_naming_every_problem_and_exit_status_2(tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "zoomin_jax.main", "--config=tests/tiny.py", f"--workdir={tmp_path / 'run'}",
           "--config.data.eval_batch_size=12", "--config.mine.clusters=0"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ["XLA_FLAGS"]}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ours = proc.stderr[proc.stderr.index("zoomin_jax: Config cannot work:"):].strip().splitlines()
    assert ours == ["zoomin_jax: Config cannot work:", "  - mine.clusters=0 must be a positive integer",
                    "  - data.eval_batch_size=12 is not divisible by the 8 devices of the data axis; use a multiple of "
                    "8 (e.g. 16)"], ours
    assert not (tmp_path / "run").exists()  # nothing started


def test_pair_eyes_needs_whole_patients_on_every_process():
    from tiny import tiny_config

    from zoomin_jax.validate import validate_config

    c = tiny_config()
    c.model.pair_eyes = True
    validate_config(c, 8, num_processes=2)  # 8 rows: 4 a process, two patients each
    c.batch_size, c.data.eval_batch_size = 8, 24
    with pytest.raises(ConfigError, match=r"data.eval_batch_size=24 gives 3 rows per process: model.pair_eyes needs "
                                          r"an even number"):
        validate_config(c, 8, num_processes=8)


def test_pair_eyes_without_a_stage_training_the_pair_head_is_refused_and_so_is_the_converse(tmp_path):
    from tiny import tiny_config

    from zoomin_jax.validate import validate_stages

    c = tiny_config(str(tmp_path / "tfds"))
    c.model.pair_eyes, c.stage_order = True, ("mnet", "cnet")  # no pair stage: the pair head would stay random
    with pytest.raises(ConfigError, match=r"model.pair_eyes=True but no stage of stage_order=\('mnet', 'cnet'\) "
                                          r"trains the pair head.*--config.stage_order=\"\('mnet', 'cnet', 'pair'\)\""):
        train.train_and_evaluate(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    c.stage_order = ("mnet", "pair")
    validate_stages(c)  # both: accepted
    c.model.pair_eyes = False
    with pytest.raises(ConfigError, match=r"stage\(s\) \['pair'\] train the pair head, which exists only with "
                                          r"--config.model.pair_eyes=True"):
        validate_stages(c)
