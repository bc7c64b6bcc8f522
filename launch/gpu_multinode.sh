#!/usr/bin/env bash
# Multi-node GPU launcher for a plain cluster without a scheduler (for SLURM see slurm_gpu.sbatch): runs one
# zoomin_jax process per host over ssh, all using every GPU of their host, joined by jax.distributed through a
# coordinator on the first host. One log per host; all hosts are stopped on the first failure.
# Every ssh/scp command is printed before it runs; DRY_RUN=1 prints them without running anything.
#
# jax.distributed.initialize() reads only the coordinator address from the environment
# (JAX_COORDINATOR_ADDRESS); the number of processes and this process's id have no environment variable outside
# a detected cluster (SLURM, Open MPI, k8s, Cloud TPU). So they are passed as flags of zoomin_jax.main:
# --coordinator_address, --num_processes, --process_id.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

HOSTS=${HOSTS:-}                            # space-separated, e.g. "gpu-a gpu-b"; process i runs on host i
read -r -a HOST_LIST <<< "$HOSTS"
COORDINATOR=${COORDINATOR:-${HOST_LIST[0]:-HOST0}:12345}  # host:port reachable from all hosts
CODE_DIR=${CODE_DIR:-'~/zoomin_jax'}        # on the hosts; expanded there
VENV=${VENV:-'~/zoomin_venv'}               # an existing venv on every host with: pip install -c constraints.txt -e . "jax[cuda12]"
SSH=${SSH:-ssh}
SCP=${SCP:-scp}
SSH_FLAGS=${SSH_FLAGS:--o BatchMode=yes}
read -r -a SSH_FLAG_LIST <<< "$SSH_FLAGS"
LOG_DIR='~/zoomin_logs'
LOG_FILE="$LOG_DIR/host-\$(hostname).log"   # $(hostname) is expanded on the host

usage() {
  cat << EOF
usage: launch/gpu_multinode.sh COMMAND [ARGS]

commands:
  copy                        tar the git-tracked files and unpack them in $CODE_DIR on every host
  run CONFIG WORKDIR [FLAGS]  on every host i: python -m zoomin_jax.main --config=CONFIG --workdir=WORKDIR
                              --distributed --coordinator_address=\$COORDINATOR --num_processes=N --process_id=i FLAGS
                              (WORKDIR on a filesystem all hosts share, or gs://...); stops all on first failure
  logs [N]                    last N (default 50) lines of each host's log, prefixed with the process index
  stop                        stop zoomin_jax on every host (SIGTERM: it saves and exits 75; SIGKILL after
                              STOP_GRACE_S s)
  help                        this text

settings (environment variables, current value):
  HOSTS=$HOSTS
  COORDINATOR=$COORDINATOR
  CODE_DIR=$CODE_DIR  VENV=$VENV
  SSH=$SSH  SCP=$SCP  SSH_FLAGS=$SSH_FLAGS
  DRY_RUN=${DRY_RUN:-0}                    (1: print the commands, run nothing)
  POLL_S=${POLL_S:-5}                     (seconds between checks for a failed host)
  STOP_GRACE_S=${STOP_GRACE_S:-60}               (stop: seconds between SIGTERM and SIGKILL)
exit status of run: 0 finished; 75 preempted (saved: run again to resume); other: failed
host logs: $LOG_FILE on each host
EOF
}

need_hosts() {
  ((${#HOST_LIST[@]} > 0)) || { echo "set HOSTS to the space-separated host names (process i runs on host i)" >&2; return 2; }
}

on_host() { run_cmd "$SSH" "${SSH_FLAG_LIST[@]}" "$1" "$2"; }

cmd_copy() {
  need_hosts
  local tarball=/tmp/zoomin_jax-$$.tar.gz h
  pack "$tarball"
  for h in "${HOST_LIST[@]}"; do
    run_cmd "$SCP" "${SSH_FLAG_LIST[@]}" "$tarball" "$h:zoomin_jax.tar.gz"
    on_host "$h" "rm -rf $CODE_DIR && mkdir -p $CODE_DIR && tar -xzf ~/zoomin_jax.tar.gz -C $CODE_DIR && rm ~/zoomin_jax.tar.gz"
  done
  [[ ${DRY_RUN:-0} == 1 ]] || rm -f "$tarball"
}

# The command host i runs: kill a stale zoomin_jax of an earlier run (it would hold the GPUs' memory), then
# run with the coordinator, the process count and this host's process id. The log is appended to.
remote_run() {
  local i=$1 args="" a
  shift
  for a in "$@" "--coordinator_address=$COORDINATOR" "--num_processes=${#HOST_LIST[@]}" "--process_id=$i"; do
    args+=" $(printf '%q' "$a")"
  done
  printf '%s' "$(kill_stale_cmd "")" \
    "mkdir -p $LOG_DIR && cd $CODE_DIR && source $VENV/bin/activate && " \
    "echo \"=== \$(date -u) start:${args}\" >> $LOG_FILE && " \
    "$(exec_run_cmd "$args") >> $LOG_FILE 2>&1"
}

RUN_ARGS=()
run_host() { on_host "${HOST_LIST[$1]}" "$(remote_run "$1" "${RUN_ARGS[@]}")"; }

cmd_run() {
  (($# >= 2)) || { echo "usage: launch/gpu_multinode.sh run CONFIG WORKDIR [FLAGS...]" >&2; return 2; }
  need_hosts
  local config=$1 workdir=$2
  shift 2
  # Every process writes its shards of each checkpoint into the same workdir: it must be one location all hosts see.
  if [[ $workdir != gs://* && $workdir != /* ]]; then
    echo "WORKDIR must be shared by all hosts: an absolute path on a shared filesystem or gs://BUCKET/PATH," \
      "got '$workdir'" >&2
    return 2
  fi
  RUN_ARGS=("--config=$config" "--workdir=$workdir" --distributed "$@")
  echo "running on ${#HOST_LIST[@]} hosts, coordinator $COORDINATOR; logs: $LOG_FILE" >&2
  supervise "${#HOST_LIST[@]}" run_host cmd_stop host
}

cmd_logs() {
  need_hosts
  local lines=${1:-50} i
  for i in "${!HOST_LIST[@]}"; do
    on_host "${HOST_LIST[$i]}" "tail -n $lines $LOG_DIR/host-*.log" | sed "s/^/[process $i] /"
  done
}

# SIGTERM first: the run saves at a step all hosts agree on and exits 75 (resume with the same `run`); SIGKILL
# only for what is left after STOP_GRACE_S seconds. In parallel so a hung host does not delay the others.
cmd_stop() {
  need_hosts
  local h
  for h in "${HOST_LIST[@]}"; do on_host "$h" "$(stop_remote_cmd "")" & done
  wait
}

main() {
  local cmd=${1:-help}
  (($# == 0)) || shift
  case $cmd in
    copy | run | logs | stop) "cmd_$cmd" "$@" ;;
    manifest) manifest ;;
    help | -h | --help) usage ;;
    *) usage >&2; echo "unknown command: $cmd" >&2; return 2 ;;
  esac
}

main "$@"
