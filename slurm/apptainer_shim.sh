#!/usr/bin/env bash
# apptainer_shim.sh - TEST ONLY: the `apptainer` of slurm/local_cluster.sh's node (SLURM_APPTAINER=1).
#
# Debian 12 has no apptainer package; Debian sid has the real one. local_cluster.sh puts it in a sid
# root filesystem ($HW5_APPTAINER_ROOT, made with mmdebstrap) and installs this script as the node's
# `apptainer`. Each call enters that root filesystem in a private mount namespace (pivot_root) with
# the host's own folders at the same paths (by default every top-level folder that is not part of the
# operating system: /tmp, /home, /work, /opt, /srv, ... so any path a job names exists, as on a real
# node; HW5_APPTAINER_BINDS, colon-separated, narrows it) and the host's users (/etc/passwd,
# /etc/group), then runs the real apptainer as the caller.
#
# - Entering a mount namespace needs root, so a user's call goes through `sudo -n` (local_cluster.sh
#   writes the NOPASSWD rule); the caller's uid/gid come from sudo's SUDO_UID/SUDO_GID, never from
#   a variable the caller could set.
# - sudo cleans the environment (it drops PYTHONPATH, LD_*, ...), a real apptainer sees the caller's
#   whole environment: it travels in a file the caller writes and apptainer gets exactly it back.
# - Every step is an exec, so the PID srun signals ends up as apptainer's starter, which passes the
#   signal to the container's process (Python).
# - Real root on this machine cannot run containers (it lacks CAP_SYS_RESOURCE): `build` and `inspect`
#   work as root, `exec` needs an ordinary user, as on a cluster.
# Nothing of this is part of a site's setup: there `apptainer` is the real program.
set -euo pipefail
ROOT=${HW5_APPTAINER_ROOT:-/tmp/hw5-apptainer/rootfs}
BINDS=${HW5_APPTAINER_BINDS:-auto}
if [ "$(id -u)" != 0 ]; then
    saved=$(mktemp "${TMPDIR:-/tmp}/hw5-apptainer-env.XXXXXX")
    env -0 > "$saved"
    exec sudo -n HW5_SHIM_ENV="$saved" "$0" "$@"
fi
U=${SUDO_UID:-0} G=${SUDO_GID:-0}
[ -d "$ROOT/usr/bin" ] || { echo "apptainer_shim.sh: no root filesystem at $ROOT (bash slurm/local_cluster.sh start with SLURM_APPTAINER=1)" >&2; exit 1; }
if [ "$BINDS" = auto ]; then
    # the rootfs brings its own system folders; everything else a path may point into is the host's
    BINDS=$(for d in /*/; do d=${d%/}; case $d in
        /bin|/boot|/dev|/etc|/lib|/lib32|/lib64|/libx32|/lost+found|/proc|/run|/sbin|/sys|/usr|/var) ;;
        *) printf '%s:' "$d" ;; esac; done)
fi
command=(apptainer "$@")
if [ "$U" != 0 ]; then
    saved=${HW5_SHIM_ENV:?no environment file from the caller}
    [ "$(stat -c %u "$saved")" = "$U" ] || { echo "apptainer_shim.sh: $saved is not the caller's" >&2; exit 1; }
    mapfile -d '' caller_env < "$saved"
    rm -f "$saved"
    command=(env -i "${caller_env[@]}" setpriv --reuid="$U" --regid="$G" --init-groups apptainer "$@")
fi
exec unshare --mount --propagation private bash -euo pipefail -c '
  R=$1 B=$2 D=$3; shift 3
  mount --bind "$R" "$R"; mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"; mount --rbind /dev "$R/dev"
  mount --bind /etc/passwd "$R/etc/passwd"; mount --bind /etc/group "$R/etc/group"
  IFS=: read -ra dirs <<< "$B"
  for d in "${dirs[@]}"; do [ -d "$d" ] || continue; mkdir -p "$R$d"; mount --rbind "$d" "$R$d"; done
  mkdir -p "$R/.oldroot"; cd "$R"; pivot_root . .oldroot; umount -l /.oldroot
  cd "$D" 2>/dev/null || cd /
  exec "$@"
' _ "$ROOT" "$BINDS" "$PWD" "${command[@]}"
