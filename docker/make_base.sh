#!/usr/bin/env bash
# Build the CI stand-in for the CUDA PyTorch base image as a rootfs tarball:
# Debian bookworm minbase + python3 venv at /opt/venv + CPU torch from the machine's local wheel.
# Why a stand-in: CI has no image registry, so pytorch/pytorch cannot be pulled; this base offers the
# same contract (a `python` on PATH with torch importable), which is all docker/Dockerfile relies on.
# The host's extra CA certificates go in because the CI egress re-signs TLS and pip inside the image
# build must trust it. The host's own apt sources file is reused (no mirror is named here).
#
# usage: docker/make_base.sh OUT.tar     (env: TORCH_WHEEL, SOURCES)
set -euo pipefail
OUT=${1:?usage: make_base.sh OUT.tar}
SOURCES=${SOURCES:-/etc/apt/sources.list.d/debian.sources}  # host apt sources (deb822)
WHEEL=${TORCH_WHEEL:?set TORCH_WHEEL to a local CPU torch wheel, e.g. /opt/wheels/torch-2.13.0+cpu-*.whl}
[ -f "$WHEEL" ] || { echo "make_base.sh: torch wheel $WHEEL not found; set TORCH_WHEEL" >&2; exit 2; }
[ -f "$SOURCES" ] || { echo "make_base.sh: apt sources $SOURCES not found; set SOURCES" >&2; exit 2; }
mkdir -p "$(dirname "$OUT")"
tmp="$OUT.partial"   # --format=tar because the name does not end in .tar; written aside and renamed, so an interrupted run never leaves a bad cache
pip_torch='/opt/venv/bin/pip install -q --no-cache-dir --disable-pip-version-check /tmp/w/*.whl'
mmdebstrap --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates --skip=output/dev \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true; chroot "$1" update-ca-certificates >/dev/null' \
  --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
  --customize-hook="mkdir -p \"\$1/tmp/w\" && cp '$WHEEL' \"\$1/tmp/w/\"" \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root sh -c '$pip_torch' && rm -rf \"\$1/tmp/w\"" \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
  bookworm "$tmp" "$SOURCES"
mv "$tmp" "$OUT"
ls -la "$OUT"
