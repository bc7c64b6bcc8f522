#!/usr/bin/env bash
# Cloud TPU VM launcher for zoomin_jax: create a TPU VM, copy the code to every worker, set up a venv, run the
# same command on all workers (one log per worker, all stopped on the first failure), read logs, delete.
# Every gcloud command is printed before it runs; DRY_RUN=1 prints them without running anything.
# See launch/README.md for the full sequence. `launch/tpu_vm.sh help` lists the settings.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

TPU_NAME=${TPU_NAME:-zoomin-${USER:-me}}
ZONE=${ZONE:-us-central2-b}
PROJECT=${PROJECT:-}                       # empty: gcloud's configured project
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
SPOT=${SPOT:-0}
NUM_WORKERS=${NUM_WORKERS:-}               # empty: asked from gcloud (required with DRY_RUN=1)
CODE_DIR=${CODE_DIR:-'~/zoomin_jax'}       # on the workers; expanded there
VENV=${VENV:-'~/zoomin_venv'}
PYTHON=${PYTHON:-python3.11}               # jax 0.10 needs Python >= 3.11; Ubuntu 22.04 ships 3.10
GCLOUD=${GCLOUD:-gcloud}
EXTRA_SSH_FLAGS=${EXTRA_SSH_FLAGS:-}       # e.g. --tunnel-through-iap or --internal-ip
LOG_DIR='~/zoomin_logs'
LOG_FILE="$LOG_DIR/worker-\$(hostname).log"  # $(hostname) is expanded on the worker

usage() {
  cat << EOF
usage: launch/tpu_vm.sh COMMAND [ARGS]

commands:
  create                      create the TPU VM (gcloud compute tpus tpu-vm create)
  copy                        tar the git-tracked files and unpack them in $CODE_DIR on every worker
  setup                       on every worker: $PYTHON venv in $VENV, pip install -c constraints.txt -e . jax[tpu]
  run CONFIG WORKDIR [FLAGS]  on every worker: kill stale zoomin_jax / libtpu lock, then
                              python -m zoomin_jax.main --config=CONFIG --workdir=WORKDIR --distributed FLAGS
                              (WORKDIR shared by all workers, e.g. gs://BUCKET/run1); stops all on first failure
  logs [N]                    last N (default 50) lines of each worker's log, prefixed with the worker index
  ssh N                       interactive shell on worker N
  stop                        stop zoomin_jax on every worker (SIGTERM: it saves and exits 75; SIGKILL after
                              STOP_GRACE_S s)
  delete                      delete the TPU VM
  manifest                    list the files copy would send
  help                        this text

settings (environment variables, current value):
  TPU_NAME=$TPU_NAME
  ZONE=$ZONE
  PROJECT=${PROJECT:-<gcloud default>}
  ACCELERATOR_TYPE=$ACCELERATOR_TYPE
  RUNTIME_VERSION=$RUNTIME_VERSION
  SPOT=$SPOT                      (1: create a Spot VM; cheaper, can be preempted -- re-run 'run' to resume)
  NUM_WORKERS=${NUM_WORKERS:-<from gcloud describe>}
  CODE_DIR=$CODE_DIR  VENV=$VENV  PYTHON=$PYTHON
  EXTRA_SSH_FLAGS=$EXTRA_SSH_FLAGS
  DRY_RUN=${DRY_RUN:-0}                    (1: print the commands, run nothing)
  POLL_S=${POLL_S:-5}                     (seconds between checks for a failed worker)
  STOP_GRACE_S=${STOP_GRACE_S:-60}               (stop: seconds between SIGTERM and SIGKILL)
exit status of run: 0 finished; 75 preempted (saved: run again to resume); other: failed
worker logs: $LOG_FILE on each worker
EOF
}

# Flags every `gcloud compute tpus tpu-vm` call takes.
common_flags() {
  printf '%s\n' "--zone=$ZONE"
  [[ -z $PROJECT ]] || printf '%s\n' "--project=$PROJECT"
}

tpu() {  # tpu SUBCOMMAND ARGS... -> gcloud compute tpus tpu-vm SUBCOMMAND ARGS... --zone --project
  local -a flags extra=()
  mapfile -t flags < <(common_flags)
  [[ -z $EXTRA_SSH_FLAGS || ($1 != ssh && $1 != scp) ]] || read -r -a extra <<< "$EXTRA_SSH_FLAGS"
  run_cmd "$GCLOUD" compute tpus tpu-vm "$@" "${flags[@]}" ${extra[@]+"${extra[@]}"}
}

on_all() {  # on_all REMOTE_COMMAND: one parallel ssh to every worker; fails if any worker fails
  tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

num_workers() {
  if [[ -n $NUM_WORKERS ]]; then echo "$NUM_WORKERS"; return; fi
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    echo "DRY_RUN=1 needs NUM_WORKERS (e.g. NUM_WORKERS=4 for a v4-32)" >&2
    return 2
  fi
  local -a flags
  mapfile -t flags < <(common_flags)
  echo "+ $(quote_cmd "$GCLOUD" compute tpus tpu-vm describe "$TPU_NAME" "${flags[@]}" \
    '--format=value(networkEndpoints[].ipAddress)')" >&2
  local ips
  ips=$("$GCLOUD" compute tpus tpu-vm describe "$TPU_NAME" "${flags[@]}" \
    '--format=value(networkEndpoints[].ipAddress)')
  [[ -n $ips ]] || { echo "TPU VM $TPU_NAME in $ZONE has no workers (does it exist? 'create' first)" >&2; return 1; }
  awk -F';' '{print NF}' <<< "$ips"
}

cmd_create() {
  local -a spot=()
  [[ $SPOT != 1 ]] || spot=(--spot)
  tpu create "$TPU_NAME" "--accelerator-type=$ACCELERATOR_TYPE" "--version=$RUNTIME_VERSION" ${spot[@]+"${spot[@]}"}
}

cmd_copy() {
  local tarball=/tmp/zoomin_jax-$$.tar.gz
  pack "$tarball"
  tpu scp "$tarball" "$TPU_NAME:~/zoomin_jax.tar.gz" --worker=all
  # Replace the code dir wholesale so files deleted locally disappear on the workers too. The venv lives
  # outside it, so the editable install (which points at this path) survives.
  on_all "rm -rf $CODE_DIR && mkdir -p $CODE_DIR && tar -xzf ~/zoomin_jax.tar.gz -C $CODE_DIR && rm ~/zoomin_jax.tar.gz"
  [[ ${DRY_RUN:-0} == 1 ]] || rm -f "$tarball"
}

cmd_setup() {
  local jax_version
  jax_version=$(sed -n 's/^jax==//p' "$REPO_ROOT/constraints.txt")
  [[ -n $jax_version ]] || { echo "no 'jax==' pin in $REPO_ROOT/constraints.txt" >&2; return 1; }
  # jax[tpu] pulls the TPU runtime as the `libtpu` package from the same package index as everything else,
  # so no extra index or find-links is needed. Its version is the one pinned for jax, so TPU and CPU runs use
  # the same jax. gcsfs lets Orbax / etils.epath read and write gs:// workdirs.
  local steps=(
    "sudo apt-get -o DPkg::Lock::Timeout=600 update -q"
    "sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q $PYTHON ${PYTHON}-venv"
    "$PYTHON -m venv $VENV"
    "$VENV/bin/pip install -q -U pip"
    "cd $CODE_DIR"
    "$VENV/bin/pip install -q -c constraints.txt -e . 'jax[tpu]==$jax_version' gcsfs"
    "$VENV/bin/python -c 'import jax; print(jax.__version__, jax.local_device_count(), jax.local_devices()[0].device_kind)'"
  )
  local joined
  joined=$(printf ' && %s' "${steps[@]}")
  on_all "${joined# && }"
}

# The command each worker runs for `run`. Stale holders first: a zoomin_jax left over from an earlier run (it
# keeps the TPU busy and the new run would fail to open it) and libtpu's lock file, which a killed process
# leaves behind. The log is appended to, so a resumed run keeps the earlier run's log above it.
remote_run() {
  local args="" a
  for a in "$@"; do args+=" $(printf '%q' "$a")"; done
  printf '%s' "$(kill_stale_cmd "sudo ")sudo rm -f /tmp/libtpu_lockfile; " \
    "mkdir -p $LOG_DIR && cd $CODE_DIR && source $VENV/bin/activate && " \
    "echo \"=== \$(date -u) start:${args}\" >> $LOG_FILE && " \
    "$(exec_run_cmd "$args") >> $LOG_FILE 2>&1"
}

RUN_ARGS=()
run_worker() { tpu ssh "$TPU_NAME" "--worker=$1" "--command=$(remote_run "${RUN_ARGS[@]}")"; }

cmd_run() {
  (($# >= 2)) || { echo "usage: launch/tpu_vm.sh run CONFIG WORKDIR [FLAGS...]" >&2; return 2; }
  local config=$1 workdir=$2
  shift 2
  # Every worker writes its shards of each checkpoint into the same workdir, so it must be one location all of
  # them see: a gs:// bucket path (Orbax writes there directly; no local copy) or a shared filesystem mount.
  if [[ $workdir != gs://* && $workdir != /* ]]; then
    echo "WORKDIR must be shared by all workers: gs://BUCKET/PATH (or an absolute path on a shared mount)," \
      "got '$workdir'" >&2
    return 2
  fi
  local n
  n=$(num_workers)
  RUN_ARGS=("--config=$config" "--workdir=$workdir" --distributed "$@")
  echo "running on $n workers of $TPU_NAME; logs: $LOG_FILE ('launch/tpu_vm.sh logs')" >&2
  supervise "$n" run_worker cmd_stop worker
}

cmd_logs() {
  local lines=${1:-50} n i
  n=$(num_workers)
  for ((i = 0; i < n; i++)); do
    tpu ssh "$TPU_NAME" "--worker=$i" "--command=tail -n $lines $LOG_DIR/worker-*.log" | sed "s/^/[worker $i] /"
  done
}

cmd_ssh() {
  (($# == 1)) || { echo "usage: launch/tpu_vm.sh ssh WORKER_INDEX" >&2; return 2; }
  tpu ssh "$TPU_NAME" "--worker=$1"
}

# SIGTERM first: the run saves at a step all workers agree on and exits 75 (resume with the same `run`); SIGKILL
# only for what is left after STOP_GRACE_S seconds.
cmd_stop() { on_all "$(stop_remote_cmd "sudo ")"; }

cmd_delete() { tpu delete "$TPU_NAME"; }

main() {
  local cmd=${1:-help}
  (($# == 0)) || shift
  case $cmd in
    create | copy | setup | run | logs | ssh | stop | delete) "cmd_$cmd" "$@" ;;
    manifest) manifest ;;
    help | -h | --help) usage ;;
    *) usage >&2; echo "unknown command: $cmd" >&2; return 2 ;;
  esac
}

main "$@"
