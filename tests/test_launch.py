"""Launch scripts (launch/): syntax, the exact commands they would run (DRY_RUN=1), and stop-on-first-failure
with a fake gcloud / ssh. Needs bash and git only; never calls gcloud or ssh."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def sh(script, *args, env=None, cwd=ROOT, timeout=60):
    """Runs a launch script with a clean, gcloud-free environment; returns the CompletedProcess."""
    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "USER": "tester", "POLL_S": "0.1"}
    full_env.update(env or {})
    return subprocess.run([BASH, str(script), *args], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def printed_commands(proc):
    """The commands a script printed ('+ ...' lines), each split into its argv exactly as bash would."""
    return [shlex.split(line[2:]) for line in proc.stderr.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("name", ["_common.sh", "tpu_vm.sh", "gpu_multinode.sh", "slurm_gpu.sbatch"])
def test_scripts_parse(name):
    proc = subprocess.run([BASH, "-n", str(LAUNCH / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_help_lists_settings_with_current_values():
    out = sh(LAUNCH / "tpu_vm.sh", "help", env={"TPU_NAME": "fake-tpu", "ACCELERATOR_TYPE": "v4-64"}).stdout
    for var in ["TPU_NAME=fake-tpu", "ZONE=", "PROJECT=", "ACCELERATOR_TYPE=v4-64", "RUNTIME_VERSION=", "SPOT=",
                "DRY_RUN="]:
        assert var in out
    assert "RUNTIME_VERSION=tpu-ubuntu2204-base" in out  # the default


def test_tpu_run_dry_run_one_command_per_worker():
    proc = sh(LAUNCH / "tpu_vm.sh", "run", "configs/full.py", "gs://bucket/run1", "--config.batch_size=64",
              env={"DRY_RUN": "1", "TPU_NAME": "fake-tpu", "NUM_WORKERS": "4", "ZONE": "zz-1"})
    assert proc.returncode == 0, proc.stderr
    cmds = printed_commands(proc)
    assert len(cmds) == 4
    workers = []
    for argv in cmds:
        assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "fake-tpu"]
        assert "--zone=zz-1" in argv
        workers += [a for a in argv if a.startswith("--worker=")]
        (remote,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
        assert ("python -m zoomin_jax.main --config=configs/full.py --workdir=gs://bucket/run1 --distributed "
                "--config.batch_size=64") in remote
        assert "sudo kill -9 $p" in remote and "rm -f /tmp/libtpu_lockfile" in remote and "pkill" not in remote
        assert remote.index("sudo kill -9") < remote.index("libtpu_lockfile") < remote.index("python -m")
        assert "echo $$ > ~/zoomin_logs/run.pid && exec python -m zoomin_jax.main" in remote
        assert ">> ~/zoomin_logs/worker-$(hostname).log 2>&1" in remote
        subprocess.run([BASH, "-n", "-c", remote], check=True)  # the remote command is valid bash
    assert workers == [f"--worker={i}" for i in range(4)]


def test_tpu_run_refuses_a_workdir_the_workers_do_not_share():
    proc = sh(LAUNCH / "tpu_vm.sh", "run", "configs/full.py", "runs/full",
              env={"DRY_RUN": "1", "NUM_WORKERS": "4"})
    assert proc.returncode == 2 and "gs://" in proc.stderr
    assert printed_commands(proc) == []


def test_tpu_create_and_setup_commands():
    proc = sh(LAUNCH / "tpu_vm.sh", "create", env={"DRY_RUN": "1", "TPU_NAME": "t", "SPOT": "1", "PROJECT": "p"})
    (argv,) = printed_commands(proc)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "t"]
    assert {"--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot", "--project=p"} <= set(argv)
    proc = sh(LAUNCH / "tpu_vm.sh", "setup", env={"DRY_RUN": "1", "TPU_NAME": "t"})
    (argv,) = printed_commands(proc)
    assert "--worker=all" in argv
    jax_pin = re.search(r"^jax==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    remote = next(a for a in argv if a.startswith("--command="))
    assert "pip install -q -c constraints.txt -e . 'jax[tpu]==" + jax_pin + "'" in remote


def test_tpu_copy_ships_git_tracked_files_to_all_workers():
    proc = sh(LAUNCH / "tpu_vm.sh", "copy", env={"DRY_RUN": "1", "TPU_NAME": "t"})
    assert proc.returncode == 0, proc.stderr
    assert "git ls-files -z | tar --null -T - -czf" in proc.stderr
    scp, unpack = printed_commands(proc)[1:]
    assert scp[4] == "scp" and "--worker=all" in scp
    assert "--worker=all" in unpack
    assert "tar -xzf ~/zoomin_jax.tar.gz" in next(a for a in unpack if a.startswith("--command="))


def test_manifest_is_tracked_files_only(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(LAUNCH, repo / "launch")
    (repo / "tracked.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "tracked.py", "launch"], check=True)
    (repo / "untracked.py").write_text("y = 2\n")
    (repo / "runs").mkdir()
    (repo / "runs" / "ckpt").write_text("big\n")
    files = sh(repo / "launch" / "tpu_vm.sh", "manifest", cwd=tmp_path).stdout.split()
    assert "tracked.py" in files and "launch/tpu_vm.sh" in files
    assert "untracked.py" not in files and "runs/ckpt" not in files


def test_gpu_dry_run_one_ssh_per_host_with_distinct_process_ids():
    hosts = ["gpu-a", "gpu-b", "gpu-c"]
    proc = sh(LAUNCH / "gpu_multinode.sh", "run", "configs/full.py", "/shared/run1",
              env={"DRY_RUN": "1", "HOSTS": " ".join(hosts), "COORDINATOR": "gpu-a:4321"})
    assert proc.returncode == 0, proc.stderr
    cmds = printed_commands(proc)
    assert [argv[-2] for argv in cmds] == hosts and all(argv[0] == "ssh" for argv in cmds)
    ids = []
    for argv in cmds:
        remote = argv[-1]
        assert "python -m zoomin_jax.main --config=configs/full.py --workdir=/shared/run1 --distributed" in remote
        assert "--coordinator_address=gpu-a:4321" in remote and "--num_processes=3" in remote
        assert ">> ~/zoomin_logs/host-$(hostname).log 2>&1" in remote
        ids += re.findall(r"python -m .* --process_id=(\d+) >>", remote)
    assert ids == ["0", "1", "2"]


def _fake_zoomin(home, name):
    """A process whose command line is `python -m zoomin_jax.main ...` (a sleeping stand-in), in a new session."""
    pkg = home / name / "zoomin_jax"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text("import time\ntime.sleep(60)\n")
    return subprocess.Popen([sys.executable, "-m", "zoomin_jax.main", f"--workdir={name}"], cwd=pkg.parent,
                            start_new_session=True)


def test_stop_ends_the_runs_own_process_and_leaves_another_users_zoomin_jax_alone(tmp_path):
    """Two `python -m zoomin_jax.main` on one host: ours (its pid in the run's pid file, as the run command writes
    it) and someone else's. The stop command, run by bash as on a worker, must end ours alone; `pkill -f` ended both."""
    ours, theirs = _fake_zoomin(tmp_path, "ours"), _fake_zoomin(tmp_path, "theirs")
    (tmp_path / "zoomin_logs").mkdir()
    (tmp_path / "zoomin_logs" / "run.pid").write_text(f"{ours.pid}\n")
    try:
        time.sleep(0.3)
        proc = sh(LAUNCH / "gpu_multinode.sh", "stop", env={"DRY_RUN": "1", "HOSTS": "h0", "STOP_GRACE_S": "5"})
        (argv,) = printed_commands(proc)
        stop = subprocess.run([BASH, "-c", argv[-1]], env={**os.environ, "HOME": str(tmp_path)}, timeout=30)
        assert stop.returncode == 0
        assert ours.wait(10) == -signal.SIGTERM  # SIGTERM first: a real run saves and exits 75
        assert theirs.poll() is None  # still running
        # A pid file naming a process that is not zoomin_jax (a reused pid): nothing is signalled.
        (tmp_path / "zoomin_logs" / "run.pid").write_text(f"{os.getpid()}\n")
        assert subprocess.run([BASH, "-c", argv[-1]], env={**os.environ, "HOME": str(tmp_path)},
                              timeout=30).returncode == 0
        assert theirs.poll() is None
    finally:
        for p in (ours, theirs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


FAKE_REMOTE = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Fake gcloud/ssh: a run on the failing target exits 3 soon; other runs sleep until killed by "stop".
    args="$*"
    echo "$args" >> "$FAKE_DIR/calls"
    if [[ $args == *"kill -TERM"* ]]; then   # stop
      for f in "$FAKE_DIR"/pid.*; do kill "$(cat "$f")" 2>/dev/null || true; done
      exit 0
    fi
    if [[ $args == *"$FAKE_FAIL"* ]]; then sleep 0.3; exit "${FAKE_RC:-3}"; fi
    echo $$ > "$FAKE_DIR/pid.$RANDOM$RANDOM"
    exec sleep 60
""")


def _stop_on_first_failure(tmp_path, script, args, env, fail_marker, label, rc=3):
    fake = tmp_path / "fake"
    fake.write_text(FAKE_REMOTE)
    fake.chmod(0o755)
    env = {**env, "FAKE_DIR": str(tmp_path), "FAKE_FAIL": fail_marker, "FAKE_RC": str(rc), "STOP_GRACE_S": "1"}
    start = time.monotonic()
    try:
        proc = sh(script, *args, env={**env, "GCLOUD": str(fake), "SSH": str(fake)}, timeout=50)
    finally:
        for f in tmp_path.glob("pid.*"):  # never leave a fake session behind, even if the script misbehaved
            try:
                os.kill(int(f.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    elapsed = time.monotonic() - start
    assert proc.returncode == rc, proc.stderr
    if rc == 75:  # preempted: said so, and never called a failure
        assert f"{label} 1 was preempted (exit code 75" in proc.stderr and "run the same 'run' command" in proc.stderr
        assert "failed" not in proc.stderr
    else:
        assert f"{label} 1 failed (exit code {rc})" in proc.stderr
    assert elapsed < 30  # the survivors were stopped, not waited for (they sleep 60 s)
    calls = (tmp_path / "calls").read_text().splitlines()
    stops = [c for c in calls if "kill -TERM" in c]
    assert stops, calls  # the survivors were stopped remotely, which is what ended their sessions
    assert len(calls) - len(stops) == 3  # one run session per target


def test_tpu_run_stops_all_workers_on_first_failure(tmp_path):
    _stop_on_first_failure(tmp_path, LAUNCH / "tpu_vm.sh", ["run", "configs/full.py", "gs://b/r"],
                           {"NUM_WORKERS": "3", "TPU_NAME": "t"}, "--worker=1 ", "worker")


def test_gpu_run_stops_all_hosts_on_first_failure(tmp_path):
    _stop_on_first_failure(tmp_path, LAUNCH / "gpu_multinode.sh", ["run", "configs/full.py", "/shared/r"],
                           {"HOSTS": "h0 h1 h2"}, " h1 ", "host")


def test_tpu_run_reports_a_preempted_worker_as_preempted_and_exits_75(tmp_path):
    _stop_on_first_failure(tmp_path, LAUNCH / "tpu_vm.sh", ["run", "configs/full.py", "gs://b/r"],
                           {"NUM_WORKERS": "3", "TPU_NAME": "t"}, "--worker=1 ", "worker", rc=75)


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period():
    proc = sh(LAUNCH / "gpu_multinode.sh", "stop", env={"DRY_RUN": "1", "HOSTS": "h0", "STOP_GRACE_S": "7"})
    (argv,) = printed_commands(proc)
    remote = argv[-1]
    assert remote.index("kill -TERM $p") < remote.index("seq 7") < remote.index("kill -9 $p")
    assert "pkill" not in remote
    subprocess.run([BASH, "-n", "-c", remote], check=True)


@pytest.mark.parametrize("srun_rc,script_rc,requeued", [(0, 0, False), (75, 0, True), (3, 3, False)])
def test_slurm_requeues_a_preempted_run_only(tmp_path, srun_rc, script_rc, requeued):
    """Fake srun / scontrol on PATH: status 75 from srun requeues the job; 0 and failures do not."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    bin_dir.mkdir()
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    for name, body in (("srun", f'echo "$*" > "{tmp_path}/srun"; exit {srun_rc}'),
                       ("scontrol", f'echo "$*" >> "{tmp_path}/scontrol"')):
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    proc = sh(LAUNCH / "slurm_gpu.sbatch", "configs/full.py", "/shared/r",
              env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "VENV": str(venv), "SLURM_JOB_ID": "4242",
                   "SLURM_SUBMIT_DIR": str(ROOT)})
    assert proc.returncode == script_rc, proc.stderr
    assert "--workdir=/shared/r --distributed" in (tmp_path / "srun").read_text()
    calls = (tmp_path / "scontrol").read_text().split("\n") if (tmp_path / "scontrol").exists() else []
    assert ("requeue 4242" in calls) == requeued
    assert ("preempted" in proc.stdout) == requeued
