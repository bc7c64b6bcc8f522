# Shared helpers for the launch scripts (sourced, not run): printing commands, DRY_RUN, the file manifest,
# and running one job per worker with stop-on-first-failure.
# shellcheck shell=bash

# Exit status of a zoomin_jax run stopped by SIGTERM after saving (sysexits EX_TEMPFAIL): "preempted, re-run the
# same command to resume"; 0 is "finished", anything else "failed".
EXIT_PREEMPTED=75

# The run's own pid file on each worker (expanded there). The remote shell writes its $$ into it just before
# `exec python -m zoomin_jax.main ...`, so it names exactly the run's process. Stopping a run, and clearing a
# stale run before a new one, signal that pid alone, and only while its command line is still zoomin_jax's (a
# pid reused by another program is left alone): never every matching process of every user on a shared host, as
# `pkill -f` would.
PID_FILE='~/zoomin_logs/run.pid'

# "run the body if the pid file names a live zoomin_jax" (remote shell code; $p is the pid).
own_run_cmd() {
  printf '%s' "p=\$(cat $PID_FILE 2> /dev/null) && grep -qa 'zoomin_jax[.]main' /proc/\$p/cmdline 2> /dev/null"
}

# The remote command `stop` runs on each worker (argument: "sudo " or ""): SIGTERM to the run's process, so that
# it saves at a step all processes agree on and exits 75; if it still runs after STOP_GRACE_S seconds (a process
# stuck in a collective whose peer died never reaches that check), SIGKILL.
stop_remote_cmd() {
  local sudo=$1
  printf '%s' "if $(own_run_cmd); then ${sudo}kill -TERM \$p; for _ in \$(seq ${STOP_GRACE_S:-60}); do" \
    " kill -0 \$p 2> /dev/null || exit 0; sleep 1; done; ${sudo}kill -9 \$p; fi; true"
}

# Before a new run on a worker: SIGKILL a previous run of ours still holding the accelerators (same pid rule).
kill_stale_cmd() {
  local sudo=$1
  printf '%s' "if $(own_run_cmd); then ${sudo}kill -9 \$p; sleep 2; fi; "
}

# The tail of the remote run command: record the pid, then become the program (same pid).
exec_run_cmd() {
  printf '%s' "echo \$\$ > $PID_FILE && exec python -m zoomin_jax.main$1"
}

# Repository root: the folder above launch/.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Prints a command the way you would type it: plain words as they are, anything else in single quotes.
quote_cmd() {
  local out="" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:@,+%-]+$ ]]; then
      out+=" $a"
    else
      out+=" '${a//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${out# }"
}

# Prints a command ("+ ...", on stderr like `set -x`) and runs it unless DRY_RUN=1.
run_cmd() {
  echo "+ $(quote_cmd "$@")" >&2
  [[ ${DRY_RUN:-0} == 1 ]] || "$@"
}

# The files `copy` ships: exactly the git-tracked files (working-tree contents, uncommitted edits included), so
# runs/, .venv/, caches and datasets never travel.
manifest() {
  git -C "$REPO_ROOT" ls-files
}

# Writes a gzipped tar of the tracked files to $1.
pack() {
  echo "+ git ls-files -z | tar --null -T - -czf $1   (in $REPO_ROOT)" >&2
  [[ ${DRY_RUN:-0} == 1 ]] || (cd "$REPO_ROOT" && git ls-files -z | tar --null -T - -czf "$1")
}

# supervise N JOB_FN STOP_FN LABEL
#   Runs `JOB_FN i` for i = 0..N-1 as parallel background jobs (each a blocking ssh that lasts as long as the
#   remote process) and returns when all have ended: 0 if all finished, EXIT_PREEMPTED (reported as "preempted",
#   not "failed") if the first to stop was preempted, else the first failure's code.
#
# Stop on first failure, and why it is done this way: `gcloud ... ssh --worker=all` only reports a failure after
# *every* worker has returned, and a JAX job whose peer died does not return promptly -- the survivors block in
# a collective until the coordination service's heartbeat timeout, or forever. So each worker gets its own ssh,
# each job records its exit code in a file when it ends, and a poll loop (bash 3.2 compatible, unlike
# `wait -n -p`) notices the first non-zero code, names the worker, and calls STOP_FN, which kills the program
# on *all* workers remotely. Killing only the local ssh clients would not be enough: the remote process has no
# terminal and writes to a log file, so it would outlive its ssh session. When the remote processes die, the
# remaining ssh jobs return and we exit with the first failure's code. Ctrl-C also stops all workers.
supervise() {
  local n=$1 job_fn=$2 stop_fn=$3 label=$4 i rc
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    for ((i = 0; i < n; i++)); do "$job_fn" "$i"; done
    return 0
  fi
  local rcdir
  rcdir=$(mktemp -d)
  local -a pids=()
  for ((i = 0; i < n; i++)); do
    ( set +e; "$job_fn" "$i"; echo $? > "$rcdir/$i.tmp"; mv "$rcdir/$i.tmp" "$rcdir/$i" ) &
    pids+=($!)
  done
  # shellcheck disable=SC2064  # expand now: the trap needs these values
  trap "echo 'interrupted: stopping all ${label}s' >&2; $stop_fn; wait; rm -rf '$rcdir'; exit 130" INT TERM
  local ended failed="" failed_rc=0
  while :; do
    ended=0
    for ((i = 0; i < n; i++)); do
      [[ -f $rcdir/$i ]] || continue
      ended=$((ended + 1))
      rc=$(< "$rcdir/$i")
      if [[ $rc != 0 && -z $failed ]]; then
        failed=$i failed_rc=$rc
        if [[ $rc == "$EXIT_PREEMPTED" ]]; then
          # The others stop at the same agreed step by themselves; SIGTERM (all `stop` sends) only hurries them.
          echo "$label $i was preempted (exit code $rc, its step saved): stopping all ${label}s" >&2
        else
          echo "$label $i failed (exit code $rc): stopping all ${label}s; see its log ('logs' subcommand)" >&2
        fi
        "$stop_fn" || true
      fi
    done
    ((ended == n)) && break
    sleep "${POLL_S:-5}"
  done
  wait "${pids[@]}" 2> /dev/null || true
  trap - INT TERM
  rm -rf "$rcdir"
  if [[ -n $failed && $failed_rc == "$EXIT_PREEMPTED" ]]; then
    echo "preempted: the run saved its last step and stopped (exit code $failed_rc); run the same 'run' command" \
      "again to resume" >&2
    return "$failed_rc"
  elif [[ -n $failed ]]; then
    echo "stopped after $label $failed failed (exit code $failed_rc)" >&2
    return "$failed_rc"
  fi
  echo "all $n ${label}s finished successfully" >&2
}
