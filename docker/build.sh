#!/usr/bin/env bash
# Build the hw5 image from this checkout, labelled with the commit it holds. This is the rebuild the
# launcher's preflight names when an image's revision is not the checkout's HEAD.
#
#   bash docker/build.sh                     # -> hw5:latest, from the checkout's HEAD
#   bash docker/build.sh -t hw5:v2           # another tag
#   bash docker/build.sh --sif hw5.sif       # ... then the Apptainer image from it (apptainer build docker-daemon://)
#
# env: DOCKER (the client; default docker), BASE_IMAGE (another PyTorch base: any image with python
#      and torch), DOCKER_BUILDKIT (1 by default), BUILD_ARGS (more `docker build` options, e.g. --network host),
#      SIF_COMPRESSION (mksquashfs compressor for --sif, e.g. lz4: bigger, faster to build; default gzip)
# A checkout with uncommitted changes to its code builds an image labelled dirty, which the launcher
# refuses to run for `container.code: image`: commit first.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TAG=hw5:latest
SIF=""
while [ $# -gt 0 ]; do
    case $1 in
        -t|--tag) TAG=${2:?-t needs a tag}; shift 2 ;;
        --sif) SIF=${2:?--sif needs a file name}; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
DOCKER=${DOCKER:-docker}

sha=$(git -C "$REPO" rev-parse --verify -q HEAD) || { echo "build.sh: $REPO is not a git checkout with a commit" >&2; exit 2; }
# dirty: uncommitted changes to what the image holds of the tree (jobs/container.py's CODE_PATHS, the
# same paths the launcher's preflight looks at); a changed README or experiments file is not code
mapfile -t code_paths < <(cd "$REPO" && python3 -c 'from jobs.container import CODE_PATHS; print(*CODE_PATHS, sep="\n")')
dirty=false
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no -- "${code_paths[@]}")" ] || dirty=true
version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
args=(--build-arg GIT_SHA="$sha" --build-arg GIT_DIRTY="$dirty" --build-arg VERSION="$version")
[ -z "${BASE_IMAGE:-}" ] || args+=(--build-arg BASE_IMAGE="$BASE_IMAGE")
# shellcheck disable=SC2086  # BUILD_ARGS is a list of options on purpose
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-1} "$DOCKER" build -f "$REPO/docker/Dockerfile" -t "$TAG" "${args[@]}" ${BUILD_ARGS:-} "$REPO"
echo "built $TAG from $sha (dirty: $dirty)"

if [ -n "$SIF" ]; then
    # apptainer reads the image straight from the Docker engine (DOCKER_HOST is honoured); podman's
    # images go through a docker archive. The OCI labels, the revision among them, survive either way.
    comp=(); [ -z "${SIF_COMPRESSION:-}" ] || comp=(--mksquashfs-args "-comp $SIF_COMPRESSION")
    if [ "$(basename "$DOCKER")" = podman ]; then
        tar=$(mktemp --suffix=.tar)
        trap 'rm -f "$tar"' EXIT
        "$DOCKER" save "$TAG" -o "$tar"
        apptainer build --force "${comp[@]}" "$SIF" "docker-archive://$tar"
    else
        apptainer build --force "${comp[@]}" "$SIF" "docker-daemon://$TAG"
    fi
    echo "built $SIF from $TAG"
fi
