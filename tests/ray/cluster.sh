#!/usr/bin/env bash
# Runs inside `unshare -m -n` (as root; tests/ray.rs): a network namespace with only loopback, so the
# Ray cluster started here (which binds every interface) is reachable from nowhere else, and a mount
# namespace in which the checkout is hidden, so the workers can only import the installed wheel.
#
#   cluster.sh CHECKOUT SHARED_SITE WORK BASE_PYTHON PIP_PYTHON WHEEL
#
# WORK holds demo/ (the demo model), set/ (the image set) and ref/ (`diffmine mine`'s report); the
# runs' outputs go to WORK/runs/. Every Ray process is stopped at exit, pass or fail: `ray stop
# --force`, then every process left in this network namespace killed by its PID.
set -euo pipefail
checkout=$1 shared_site=$2 work=$3 base_python=$4 pip_python=$5 wheel=$6
runs=$work/runs
mkdir -p "$runs"
ip link set lo up
netns=$(readlink /proc/self/ns/net)
echo "$netns" > "$runs/netns"

# The processes of this network namespace other than this shell and its parents.
namespace_pids() {
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$netns" ] || continue
    grep -q "^PPid:" "$p/status" 2>/dev/null || continue
    echo "$pid"
  done
}
stop_cluster() {
  set +e
  timeout 30 "$venv_python" -m ray.scripts.scripts stop --force >/dev/null 2>&1
  for pid in $(namespace_pids); do
    kill -9 "$pid" 2>/dev/null && echo "killed leftover $pid: $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-80)" >&2
  done
}
venv_python=$work/venv/bin/python
trap stop_cluster EXIT

mount --make-rprivate /
mkdir -p "$work/shared-site"
mount --bind "$shared_site" "$work/shared-site"
# The fresh venv: torch and the CUDA libraries as symlinks, everything else (ray too) through a .pth;
# pip checks the wheel's `ray` extra against what it sees, with no index.
"$base_python" -m venv --without-pip "$work/venv"
site=$("$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
ln -s "$work/shared-site/torch" "$site/torch"
ln -s "$work/shared-site/nvidia" "$site/nvidia"
echo "$work/shared-site" > "$site/shared-site.pth"
"$pip_python" -m pip --python "$venv_python" install -q --no-index --disable-pip-version-check "$wheel[ray]"
mount -t tmpfs -o size=1m hidden-checkout "$checkout"
cd "$work"
unset DIFFMINE_LIB PYTHONPATH

# Token authentication (Ray's default): every node reads the token from the same file.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$work/ray-token RAY_USAGE_STATS_ENABLED=0
"$venv_python" -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH"
ray() { timeout 120 "$venv_python" -m ray.scripts.scripts "$@"; }
node_options=(--num-cpus=2 --object-store-memory=100000000 --disable-usage-stats)
ray start --head --node-ip-address=127.0.0.1 --port=6379 --include-dashboard=false --temp-dir="$work/ray" "${node_options[@]}" >"$runs/head.log" 2>&1
ray start --address=127.0.0.1:6379 --node-ip-address=127.0.0.1 "${node_options[@]}" >"$runs/worker.log" 2>&1

mine_options=(--model demo/finetuned --base demo/pretrained --data set --samples 2 --batch 2 --patch 16 --per-image 2 --top 4
  --ensemble 1 --t-min 0.2 --t-max 0.6 --latent mean --antithetic --stratified --clusters 2 --restarts 2
  --address 127.0.0.1:6379 --actors-per-node 1)
# One run of the command: mine NAME WORKDIR [more options]; output in runs/NAME.out, status in runs/NAME.status.
mine() {
  local name=$1 workdir=$2
  shift 2
  set +e
  timeout 240 "$venv_python" -m diffmine.distributed mine "${mine_options[@]}" --out "$runs/$name" --workdir "$workdir" "$@" \
    >"$runs/$name.out" 2>"$runs/$name.err"
  echo $? > "$runs/$name.status"
  set -e
}
# Starts a run in the background: the PID of its bound (`timeout`) in $started, of the driver in $driver.
mine_in_background() {
  local name=$1 workdir=$2
  shift 2
  timeout 240 "$venv_python" -m diffmine.distributed mine "${mine_options[@]}" --out "$runs/$name" --workdir "$workdir" "$@" \
    >"$runs/$name.out" 2>"$runs/$name.err" &
  started=$!
  for _ in $(seq 100); do driver=$(cat "/proc/$started/task/$started/children" 2>/dev/null) && [ -n "$driver" ] && return 0; sleep 0.1; done
  echo "the driver of $name did not start" >&2
  return 1
}
# Waits (at most 180 s) until WORKDIR holds at least N result files.
wait_for_parts() {
  local workdir=$1 n=$2
  for _ in $(seq 1800); do
    [ "$(find "$workdir/typicality" -name '*.parquet' 2>/dev/null | wc -l)" -ge "$n" ] && return 0
    sleep 0.1
  done
  echo "no $n result files in $workdir after 180 s" >&2
  return 1
}

# The plain run, and the same working folder with other options (refused). One image per batch, so
# that each of the two actors (one per node) gets batches even where scoring an image is quick.
mine plain work-plain --batch-size 1
mine refused work-plain --samples 3
# A label none of whose images can be read (the test's CSV): refused, as diffmine mine refuses it.
mine unreadable-label work-unreadable-label --data unreadable-label.csv

# A typicality actor killed (SIGKILL) once it has written its first results.
mine_in_background actor-kill work-actor-kill --batch-size 1
wait_for_parts work-actor-kill 1
victim=""
for pid in $(namespace_pids); do
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "CandidatesWorker"; then victim=$pid; break; fi
done
[ -n "$victim" ] && kill -9 "$victim"
echo "$victim" > "$runs/actor-kill.victim"
set +e; wait "$started"; echo $? > "$runs/actor-kill.status"; set -e

# The driver killed (SIGKILL) once a few results are written, then the command run again.
mine_in_background driver-kill-first work-driver-kill --batch-size 1
wait_for_parts work-driver-kill 3
kill -9 "$driver"
set +e; wait "$started"; set -e
find work-driver-kill/typicality -name '*.parquet' | wc -l > "$runs/driver-kill.parts"
mine driver-kill work-driver-kill --batch-size 1
