"""Broken checkpoints are never used silently, and storage faults stop with one line naming the path.

The faults are made on disk by the tests themselves (random bytes written over a file's middle, truncation,
deletion, garbled JSON), never through the code's own hashing; the expected values are the arrays the test saved.
Small trees of arrays through `Checkpointer`, no training; one cheap subprocess shows what `--mode=eval` prints.
"""

import gc
import json
import os
import shutil
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoomin_jax import checkpoint, paths

# Orbax's abandoned read coroutines (after a failed restore) are reported when garbage-collected, at a moment GC
# picks: the code drops those it can attribute to Orbax; one without frames must not fail an unrelated test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(k: float):
    """A model and an optimiser state whose values say which step they were saved at (k)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(96, 96)).astype(np.float32) + k  # ~36 KiB of incompressible data: room for 4 KiB of damage
    model = {"params": {"w": jnp.asarray(w), "b": jnp.full((16,), k, jnp.float32)},
             "batch_stats": {"mean": jnp.full((16,), -k, jnp.float32)}}
    opt = {"step": jnp.asarray(int(k), jnp.int32), "opt_state": {"mu": jnp.asarray(w * 0.5)}}
    return model, opt


def _target(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _iterator():
    return iter(grain.MapDataset.range(1000).to_iter_dataset())


def _save_steps(workdir, steps, keep=3):
    """Saves step k with values k and the iterator advanced k elements; returns the Checkpointer (closed)."""
    ckpt = checkpoint.Checkpointer(str(workdir), keep=keep)
    it = _iterator()
    done = 0
    for k in steps:
        for _ in range(k - done):
            next(it)
        done = k
        ckpt.save(k, *_tree(k), it)
    ckpt.close()
    return ckpt


def _biggest_data_file(step_dir: str, item: str = "model") -> str:
    """The largest file of an item's array data (in TensorStore's `d/` folders), found by walking the folder, not
    through the manifest."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, item)) for f in fs
             if os.path.basename(r) == "d"]
    return max(files, key=os.path.getsize)


def _write_random_bytes(path: str, n: int = 4096) -> None:
    size = os.path.getsize(path)
    assert size > n, (path, size)
    with open(path, "r+b") as f:
        f.seek((size - n) // 2)
        old = f.read(n)
        new = os.urandom(n)
        assert new != old
        f.seek((size - n) // 2)
        f.write(new)


def _restored_values(ckpt, k_expected):
    model, _ = _tree(k_expected)
    step, variables, _ = ckpt.restore_newest_good(_target(model))
    it = _iterator()
    state, reason = ckpt.saved_position(step)
    assert reason is None, reason
    it.set_state(state)
    return step, variables, next(it)


@pytest.fixture
def two_steps(tmp_path):
    ckpt = _save_steps(tmp_path, [10, 20])
    assert ckpt.all_steps() == [10, 20]
    return tmp_path, os.path.join(ckpt.directory, "20")


def _assert_fell_back_to_10(workdir, capsys, reason_words):
    ckpt = checkpoint.Checkpointer(str(workdir))
    step, variables, next_element = _restored_values(ckpt, 10)
    want, _ = _tree(10)
    assert step == 10
    np.testing.assert_array_equal(np.asarray(variables["params"]["w"]), np.asarray(want["params"]["w"]))
    assert next_element == 10  # the data position of step 10, not 20's
    printed = [line for line in capsys.readouterr().out.splitlines() if "broken" in line]
    assert len(printed) == 1, printed
    assert printed[0].startswith("checkpoint step 20 is broken (") and "resuming from step 10" in printed[0]
    for w in reason_words:
        assert w in printed[0], (w, printed[0])
    # Out of Orbax's sight, kept for forensics; the same step number saves again and verifies.
    assert ckpt.all_steps() == [10]
    kept = os.listdir(os.path.join(workdir, "checkpoints_broken"))
    assert len(kept) == 1 and kept[0].startswith("20-")
    it = _iterator()
    ckpt.save(20, *_tree(21), it)
    ckpt.wait()
    assert ckpt.all_steps() == [10, 20] and ckpt.verify(20) is None
    np.testing.assert_array_equal(ckpt.restore(20, _target(want))["model"]["params"]["b"], np.full(16, 21.0))
    ckpt.close()
    return printed[0]


def test_random_bytes_in_the_latest_model_data_are_found_and_training_falls_back(two_steps, capsys):
    workdir, step_dir = two_steps
    victim = _biggest_data_file(step_dir)
    _write_random_bytes(victim)
    rel = os.path.relpath(victim, step_dir)
    reason = checkpoint.Checkpointer(str(workdir)).verify(20)
    assert reason is not None and rel in reason and "sha256" in reason
    _assert_fell_back_to_10(workdir, capsys, [rel, "sha256 mismatch"])


def _truncate(step_dir):
    victim = _biggest_data_file(step_dir)
    os.truncate(victim, os.path.getsize(victim) // 2)
    return os.path.relpath(victim, step_dir)


def _delete(step_dir):
    victim = _biggest_data_file(step_dir)
    os.remove(victim)
    return os.path.relpath(victim, step_dir)


def _garble_data_json(step_dir):
    [victim] = [os.path.join(step_dir, "data", f) for f in os.listdir(os.path.join(step_dir, "data"))
                if f.endswith(".json")]  # grain's iterator position: {"next_index": 20}
    with open(victim, "r+b") as f:
        f.write(b"{garbled")
    return os.path.relpath(victim, step_dir)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # Orbax's abandoned reads: quiet
@pytest.mark.parametrize("damage", [_truncate, _delete, _garble_data_json])
def test_truncated_deleted_or_garbled_latest_falls_back_in_one_line(two_steps, capsys, damage):
    """The manifest proves the damage and names the file: the step is moved aside, training falls back."""
    workdir, step_dir = two_steps
    rel = damage(step_dir)
    line = _assert_fell_back_to_10(workdir, capsys, [rel])
    assert "Traceback" not in line and len(line) < 600
    gc.collect()  # the failed restore's abandoned coroutines report (or not) now, inside this test


def _assert_stopped_moving_nothing(workdir, model, words):
    ckpt = checkpoint.Checkpointer(str(workdir))
    with pytest.raises(checkpoint.RestoreFailed) as e:
        ckpt.restore_newest_good(_target(model))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600 and msg.startswith("restoring checkpoint step 20 failed (")
    for w in words + ["nothing was moved", "re-run the same command", os.path.join(ckpt.directory, "20")]:
        assert w in msg, (w, msg)
    assert ckpt.all_steps() == [10, 20] and not os.path.exists(os.path.join(workdir, "checkpoints_broken"))
    ckpt.close()
    return msg


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", [_truncate, _delete])
def test_without_a_manifest_a_failed_restore_stops_and_moves_nothing(two_steps, damage):
    """An older step without a manifest: its bytes cannot be checked, so Orbax's error proves no damage."""
    workdir, step_dir = two_steps
    os.remove(os.path.join(step_dir, checkpoint.MANIFEST))
    damage(step_dir)
    model, _ = _tree(20)
    _assert_stopped_moving_nothing(workdir, model, ["reading its arrays: "])
    gc.collect()


def test_a_storage_or_memory_error_while_restoring_stops_and_moves_nothing(two_steps, monkeypatch):
    """Intact files that cannot be read now (an I/O error while hashing them; an out-of-memory while reading the
    arrays): the run stops naming the cause, both steps stay, and once the cause has passed the newest restores."""
    import orbax.checkpoint as ocp

    workdir, _ = two_steps
    model, _ = _tree(20)
    real_sha = checkpoint._sha256

    def eio(_):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint, "_sha256", eio)
    _assert_stopped_moving_nothing(workdir, model, ["reading its files: ", "Input/output error"])
    monkeypatch.setattr(checkpoint, "_sha256", real_sha)

    def oom(*_, **__):
        raise MemoryError("out of memory allocating 1.3 GB")

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "restore", oom)
    _assert_stopped_moving_nothing(workdir, model, ["reading its arrays: ", "out of memory allocating 1.3 GB"])
    monkeypatch.undo()
    step, variables, _ = checkpoint.Checkpointer(str(workdir)).restore_newest_good(_target(model))
    assert step == 20 and float(variables["params"]["b"][0]) == 20.0


def test_a_garbled_data_position_without_a_manifest_keeps_the_step(two_steps):
    """The data position is not the model: unreadable, it is reported for the caller to derive; the step's model
    and optimiser are used and nothing is moved."""
    workdir, step_dir = two_steps
    os.remove(os.path.join(step_dir, checkpoint.MANIFEST))
    _garble_data_json(step_dir)
    model, opt = _tree(20)
    ckpt = checkpoint.Checkpointer(str(workdir))
    step, variables, opt_state = ckpt.restore_newest_good(_target(model), lambda s: _target(opt))
    assert step == 20 and float(variables["params"]["b"][0]) == 20.0 and int(opt_state["step"]) == 20
    np.testing.assert_array_equal(np.asarray(opt_state["opt_state"]["mu"]), np.asarray(opt["opt_state"]["mu"]))
    state, reason = ckpt.saved_position(step)
    assert state is None and reason.startswith("unreadable: ")
    assert ckpt.saved_position(10) == ({"next_index": 10}, None)  # what grain saved at step 10
    assert ckpt.all_steps() == [10, 20] and not os.path.exists(os.path.join(workdir, "checkpoints_broken"))


def test_non_finite_values_are_refused_even_with_a_valid_manifest(tmp_path, capsys):
    ckpt = _save_steps(tmp_path, [10])
    model, opt = _tree(20)
    model["params"]["b"] = model["params"]["b"].at[3].set(jnp.nan)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(20, model, opt, None)
    ckpt.wait()
    assert ckpt.verify(20) is None  # the files are as written: only the finite rule can refuse it
    with pytest.raises(checkpoint.BrokenCheckpoint, match=r"step 20 is broken \(1 non-finite values.*'b'"):
        ckpt.restore(20, _target(model))
    ckpt.close()
    step, variables, _ = checkpoint.Checkpointer(str(tmp_path)).restore_newest_good(_target(model))
    assert step == 10 and np.isfinite(np.asarray(variables["params"]["b"])).all()
    assert "checkpoint step 20 is broken (1 non-finite values" in capsys.readouterr().out


def test_a_changed_config_is_a_mismatch_not_a_broken_checkpoint(tmp_path):
    """Intact files of another model (a config changed on an old workdir) must not be moved aside as broken."""
    _save_steps(tmp_path, [10, 20])
    model, _ = _tree(20)
    model["params"]["w"] = jnp.zeros((96, 95))
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"step 20 .* \['params'\]\['w'\]: \(96, 96\) saved, "
                                                            r"\(96, 95\) expected"):
        ckpt.restore_newest_good(_target(model))
    assert ckpt.all_steps() == [10, 20] and not os.path.exists(tmp_path / "checkpoints_broken")


def test_keep_n_and_discovery_unaffected_by_manifests(tmp_path):
    ckpt = _save_steps(tmp_path, [1, 2, 3, 4], keep=2)
    assert ckpt.all_steps() == [3, 4]
    assert sorted(os.listdir(ckpt.directory)) == ["3", "4"]
    for step in (3, 4):
        manifest = json.load(open(os.path.join(ckpt.directory, str(step), checkpoint.MANIFEST)))
        on_disk = {os.path.relpath(os.path.join(r, f), os.path.join(ckpt.directory, str(step)))
                   for r, _, fs in os.walk(os.path.join(ckpt.directory, str(step))) for f in fs}
        # Every array and metadata file is fingerprinted; only Orbax's commit files and the manifest are not.
        assert on_disk - set(manifest["files"]) == {checkpoint.MANIFEST, "_CHECKPOINT_METADATA",
                                                    "commit_success.txt"}
        assert any("/d/" in f for f in manifest["files"])


def test_full_disk_refuses_the_save_and_keeps_the_previous_one(tmp_path, monkeypatch):
    ckpt = _save_steps(tmp_path, [10])
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    model, opt = _tree(20)
    arrays = sum(x.nbytes for x in jax.tree_util.tree_leaves((model, opt)))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=arrays // 2))
    with pytest.raises(paths.StorageError) as e:
        ckpt.save(20, model, opt, None)
    msg = str(e.value)
    assert "\n" not in msg and ckpt.directory in msg and "not enough free space" in msg
    assert paths.human_bytes(arrays // 2) in msg and "step 10" in msg
    assert sorted(os.listdir(ckpt.directory)) == ["10"]  # nothing started, nothing temporary
    ckpt.close()


def test_a_failing_save_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """An I/O error inside the asynchronous save (here: reading back the written files fails with ENOSPC)."""
    ckpt = _save_steps(tmp_path, [10])
    ckpt = checkpoint.Checkpointer(str(tmp_path))

    def failing_read(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_sha256", failing_read)
    ckpt.save(20, *_tree(20), None)
    with pytest.raises(paths.StorageError) as e:
        ckpt.close()
    msg = str(e.value)
    assert "\n" not in msg and "saving checkpoint step 20" in msg and "No space left on device" in msg
    assert sorted(os.listdir(ckpt.directory)) == ["10"]


def test_leftover_temporary_folder_is_removed_and_the_step_saves(tmp_path):
    ckpt = _save_steps(tmp_path, [10])
    left = os.path.join(ckpt.directory, "20.orbax-checkpoint-tmp")  # what a kill -9 mid-save leaves
    os.makedirs(os.path.join(left, "model"))
    open(os.path.join(left, "model", "junk"), "wb").write(b"x" * 100)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    assert ckpt.remove_temporary() == ["20.orbax-checkpoint-tmp"]
    ckpt.save(20, *_tree(20), None)
    ckpt.close()
    assert sorted(os.listdir(ckpt.directory)) == ["10", "20"] and ckpt.verify(20) is None


def test_unwritable_or_uncreatable_workdir_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(paths.StorageError, match=f"cannot create the folder {blocker}/run: .*free there"):
        paths.ensure_dir(blocker / "run")
    # An existing folder nobody may write in. Tests run as root, which ignores chmod: /sys refuses even root.
    if os.path.isdir("/sys/kernel"):
        with pytest.raises(paths.StorageError, match="cannot write in the folder /sys/kernel: "):
            paths.ensure_dir("/sys/kernel")
    run = paths.ensure_dir(tmp_path / "ok")
    assert os.listdir(run) == []


def _tiny_workdir(tmp_path):
    """Two checkpoints of the tiny config's model (random weights: no init compiled), the newer one damaged."""
    sys.path.insert(0, REPO)
    from tests.tiny import tiny_config
    from zoomin_jax.forward import abstract_variables, build

    config = tiny_config()
    abstract = abstract_variables(build(config), config)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    rng = np.random.default_rng(0)
    for step in (3, 6):
        model = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), abstract)
        ckpt.save(step, model, {"step": jnp.asarray(step, jnp.int32)}, None)
    ckpt.close()
    _write_random_bytes(_biggest_data_file(os.path.join(ckpt.directory, "6")), 1024)
    return ckpt


@pytest.mark.slow  # a subprocess
def test_eval_refuses_a_broken_checkpoint_with_one_line_and_a_non_zero_exit(tmp_path):
    ckpt = _tiny_workdir(tmp_path)
    cmd = [sys.executable, "-m", "zoomin_jax.main", "--config=tests/tiny.py", f"--workdir={tmp_path}", "--mode=eval"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ["XLA_FLAGS"]}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    print(len(lines), "stderr lines")
    ours = [line for line in lines if "broken" in line and not line.startswith(("I", "W"))]  # not absl's log
    assert ours == lines[-1:], proc.stderr[-3000:]  # one line, the last the user sees
    line = ours[0]
    assert line.startswith("zoomin_jax: checkpoint step 6 is broken (model/") and "sha256 mismatch" in line
    assert "--step=3" in line and os.path.join(ckpt.directory, "6") in line
    assert "Traceback" not in proc.stderr and "kappa" not in proc.stdout.lower()
    assert len(lines) < 40, proc.stderr  # absl's usual INFO lines, no traceback storm
    assert ckpt.all_steps() == [3, 6]  # eval moves nothing
